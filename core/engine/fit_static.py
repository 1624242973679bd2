# SPDX-License-Identifier: Apache-2.0
"""Static 3D Gaussian fitting: posed images (one seen view or many) plus optional score distillation.

Public API:
    GaussianLearningRates     CoCo4D Table 3 per-parameter learning rates
    StaticFitConfig           iterations, losses, densification, SDS weight and pose sampling
    FitResult                 the fitted set, per-step history, how the fit ended
    FitDivergedError          a loss went NaN/inf: names the loss and step, carries the last good state
    fit_static(init, views, config, guidance=None, callback=None, should_stop=None) -> FitResult

Design notes:
    CoCo4D §3.1 eqs. (1)-(2): the seen view is fit with an L2 reconstruction loss while SDS
    (Zero123 for objects, Stable Diffusion for scenes; ``core.engine.guidance.Guidance``) shapes unseen
    views rendered from poses around the object. Diffusion4D §3.4's coarse stage is the same
    loop over many posed views and no guidance. Adam with CoCo4D's per-parameter learning rates
    (position decays exponentially), densification every 100 steps (``core.engine.densify``) and an
    optional activated-scale clamp (CoCo4D background: 0.2). ``core`` never imports
    ``backends``, so the renderer is injected (``render_fn``; the nodes pass
    ``backends.render.training_render``), which also lets tests swap it. A loss without a depth term
    makes the fits use ``render_fn.without_depth`` where the renderer has one (:func:`renderer_for`): the
    same colour with one channel less to composite and differentiate every step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor

from . import densify as dens
from .cameras import Cameras
from .fit_monitor import FitDivergedError, FitMonitor
from .gaussians import Gaussians
from .graphed_loss import GraphedLoss
from .graphed_update import GraphedUpdate, capturable_adam
from .guidance import Guidance, PoseSampling, guidance_released, restart_guidance, sample_guidance_cameras
from .joint_render import render_together, screen_gradients
from .losses import ReconstructionLoss, psnr
from .views import PosedImages, keep_ignored

__all__ = [
    "GaussianLearningRates",
    "COCO4D_SPHERE_LEARNING_RATES",
    "rates_for_given_start",
    "StaticFitConfig",
    "FitResult",
    "FitDivergedError",
    "RenderFn",
    "fit_static",
    "evaluate",
    "scene_extent",
    "make_optimizer",
    "memory_guard",
    "masked_targets",
    "composited_targets",
    "view_schedule",
    "renderer_for",
    "set_learning_rate",
]

logger = logging.getLogger(__name__)

# render_fn(gaussians, cameras, background [3]) -> object with rgb [C,H,W,3], alpha [C,H,W,1],
# depth [C,H,W,1] (None from a render_fn.without_depth), means2d [C,N,2] (retain_grad set) and radii [C,N,2].
RenderFn = Callable[[Gaussians, Cameras, Tensor], object]
PARAM_NAMES = ("means", "quats", "log_scales", "logit_opacities", "sh")


@dataclass(frozen=True)
class GaussianLearningRates:
    """Adam learning rates per parameter (CoCo4D App. A Table 3).

    ``position`` decays log-linearly to ``position * position_final_ratio`` over ``position_decay_steps``
    steps (``None``: the whole fit) and stays there (3DGS / DreamGaussian ``position_lr_max_steps``).
    """

    feature: float = 0.01
    position: float = 0.001
    position_final_ratio: float = 0.01
    scaling: float = 0.005
    opacity: float = 0.05
    rotation: float = 0.005
    position_decay_steps: int | None = None

    def __post_init__(self) -> None:
        if self.position_decay_steps is not None and (not isinstance(self.position_decay_steps, int)
                                                      or self.position_decay_steps < 1):
            raise ValueError(f"GaussianLearningRates: position_decay_steps must be an integer >= 1 or None, got "
                             f"{self.position_decay_steps!r}")


# DreamGaussian's sphere initialisation gives the positions a spatial_lr_scale of 10 (gs_renderer.py:
# create_from_pcd(pcd, 10)); a point cloud given as the start keeps 1.
SPHERE_POSITION_SCALE = 10.0

COCO4D_SPHERE_LEARNING_RATES = GaussianLearningRates(position=0.001 * SPHERE_POSITION_SCALE,
                                                     position_final_ratio=0.02, position_decay_steps=500)
"""CoCo4D's static stage as it runs from its 5000-point sphere. App. A Table 3 repeats DreamGaussian's
configs/image.yaml (position_lr 1e-3, final 2e-5 at position_lr_max_steps 500), whose code scales both
position rates by the sphere's spatial_lr_scale of 10: 1e-2 decaying to 2e-4 by step 500, held after."""


def rates_for_given_start(rates: GaussianLearningRates) -> GaussianLearningRates:
    """``rates`` for Gaussians given as the start instead of the sphere: the sphere schedule without its
    spatial scale (DreamGaussian's 1 for a given point cloud); other rates unchanged."""
    sphere = COCO4D_SPHERE_LEARNING_RATES
    if (rates.position, rates.position_final_ratio, rates.position_decay_steps) != (
            sphere.position, sphere.position_final_ratio, sphere.position_decay_steps):
        return rates
    return replace(rates, position=rates.position / SPHERE_POSITION_SCALE)


@dataclass(frozen=True)
class StaticFitConfig:
    """Settings of :func:`fit_static` (defaults: CoCo4D foreground, App. A Table 3).

    Args:
        iterations: optimisation steps (CoCo4D foreground 1000, background 300).
        views_per_step: posed images rendered per step (all of them when fewer).
        learning_rates: per-parameter Adam learning rates (:data:`COCO4D_SPHERE_LEARNING_RATES`, the
            sphere start's; :func:`rates_for_given_start` for another start).
        loss: reconstruction loss on posed views (CoCo4D eq. 1 is L2; with masks, a silhouette
            term keeps the object's outline).
        densify: adaptive density control; ``None`` turns it off.
        max_scale: clamp on activated scales after each step (CoCo4D background: 0.2).
        sds_weight: weight of the guidance loss (eq. 2) against the mean-reduced reference loss;
            1e-4 is DreamGaussian's balance (reference ×10^4, SDS ×1), whose code CoCo4D builds on.
        sds_every: take an SDS step every this many iterations.
        pose_sampling: where SDS views are rendered from (radius 2.5, 10° azimuth grid, batch 4).
        background: colour behind the splats, and behind masked targets.
        preview_every: send a preview image to the callback this often (0 = never).
        seed: seed of view and pose sampling and of densification.
        lr_scale_with_extent: multiply the position rate by the scene extent (:func:`scene_extent`),
            as 3DGS / 4DGS do (``spatial_lr_scale``); off for CoCo4D's rates, which are absolute.
        graphed_loss: on a CUDA device, replay the reconstruction loss and its backward as CUDA graphs
            (:class:`~core.engine.graphed_loss.GraphedLoss`; eager where a capture fails). On one H100
            ``bench/fit_bench.py --case static`` took 4.3 to 5.0 s against 5.1 to 7.4 s eager (three runs
            each), at 30.4 to 30.9 dB against 30.2 to 31.0 dB. Ignored off CUDA.
        graphed_update: on a CUDA device, replay the work after the backward (gradient repair,
            densification's accumulation, the Adam step) as a CUDA graph between refinements
            (:class:`~core.engine.graphed_update.GraphedUpdate`; eager where a capture fails). On one
            H100 ``bench/fit_bench.py --case static`` ran at 315 to 326 it/s against 265 to 277 it/s
            eager (three runs each, one sitting), at 30.8 to 31.1 dB against 30.4 to 31.0 dB. Ignored off
            CUDA.
    """

    iterations: int = 1000
    views_per_step: int = 1
    learning_rates: GaussianLearningRates = COCO4D_SPHERE_LEARNING_RATES
    loss: ReconstructionLoss = field(default_factory=lambda: ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0,
                                                                                mask=1.0))
    densify: dens.DensifyConfig | None = field(default_factory=dens.DensifyConfig)
    max_scale: float | None = None
    sds_weight: float = 1e-4
    sds_every: int = 1
    pose_sampling: PoseSampling = field(default_factory=PoseSampling)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    preview_every: int = 50
    seed: int = 0
    lr_scale_with_extent: bool = False
    graphed_loss: bool = True
    graphed_update: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.views_per_step < 1 or self.sds_every < 1:
            raise ValueError(f"StaticFitConfig: iterations, views_per_step and sds_every must be >= 1, got "
                             f"{self.iterations}, {self.views_per_step}, {self.sds_every}")
        if self.max_scale is not None and self.max_scale <= 0:
            raise ValueError(f"StaticFitConfig: max_scale must be positive or None, got {self.max_scale}")
        if not math.isfinite(self.sds_weight) or self.sds_weight < 0:
            raise ValueError(f"StaticFitConfig: sds_weight must be a finite number >= 0, got {self.sds_weight}")


@dataclass
class FitResult:
    """Outcome of a fit.

    Attributes:
        gaussians: the fitted set (detached).
        history: one dict per step with the loss terms (floats) and the Gaussian count.
        steps: steps completed.
        stopped: True when ``should_stop`` ended the fit early.
        extra: fit-specific outputs (a deformation module, trajectories, ...).
        repaired: Gaussians whose non-finite gradients were zeroed or that were removed for non-finite values.
    """

    gaussians: Gaussians
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    repaired: int = 0
    stopped: bool = False
    extra: dict = field(default_factory=dict)


def renderer_for(render_fn: RenderFn, loss) -> RenderFn:
    """``render_fn``, or its variant without the depth channel (``render_fn.without_depth``, as
    ``backends.render.training_render`` has) when ``loss`` reads no depth: the same colour, with a
    channel less to composite and differentiate on every step."""
    if getattr(loss, "needs_depth", True):
        return render_fn
    return getattr(render_fn, "without_depth", render_fn)


def make_optimizer(params: dict[str, torch.nn.Parameter], lrs: GaussianLearningRates,
                   capturable: bool = False) -> torch.optim.Adam:
    """Adam over the Gaussian parameters, one group per parameter with its learning rate; ``capturable``
    gives the CUDA-graph-capturable one of :func:`~core.engine.graphed_update.capturable_adam`."""
    rate = {"means": lrs.position, "quats": lrs.rotation, "log_scales": lrs.scaling,
            "logit_opacities": lrs.opacity, "sh": lrs.feature}
    groups = [{"params": [params[name]], "lr": rate[name], "name": name} for name in PARAM_NAMES]
    if capturable:
        return capturable_adam(groups, eps=1e-15)
    return adam(groups, lr=lrs.position, eps=1e-15)


def set_learning_rate(group: dict, value: float) -> None:
    """Set a parameter group's rate, in place where it is a tensor (a captured Adam step reads it there)."""
    if isinstance(group["lr"], Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def adam(groups, **kwargs) -> torch.optim.Adam:
    """Adam with its fused CUDA kernel when every parameter is on a GPU (one launch per step instead
    of several per tensor), the plain one elsewhere."""
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.is_cuda for p in tensors)
    return torch.optim.Adam(groups, fused=fused or None, **kwargs)


def view_schedule(n: int, k: int, steps: int, generator: torch.Generator) -> Tensor:
    """``[steps, min(k, n)]`` view indices, each row ``k`` distinct views (a random order of all of them
    when ``k >= n``), drawn up front so the fit moves them to its device once and a step never waits
    for a copy."""
    rows = [torch.randperm(n, generator=generator)[: min(k, n)] for _ in range(steps)]
    return torch.stack(rows) if rows else torch.zeros(0, min(k, n), dtype=torch.int64)


def _as_params(gaussians: Gaussians) -> dict[str, torch.nn.Parameter]:
    return {name: torch.nn.Parameter(getattr(gaussians, name).detach().clone().float()) for name in PARAM_NAMES}


def _to_gaussians(params: dict[str, torch.nn.Parameter]) -> Gaussians:
    return Gaussians(**{name: params[name] for name in PARAM_NAMES})


def scene_extent(views: PosedImages, gaussians: Gaussians) -> float:
    """Radius of the camera centres around their mean, or of the Gaussians when cameras coincide."""
    centers = views.cameras.centers
    radius = (centers - centers.mean(0)).norm(dim=-1).max().item()
    if radius < 1e-6:
        means = gaussians.means.detach()
        radius = (means - means.mean(0)).norm(dim=-1).max().item()
    return max(radius * 1.1, 1e-3)


class memory_guard:
    """Turn an out-of-memory error into a ``ValueError`` with the Gaussian count and a suggested cap."""

    def __init__(self, what: str, count: Callable[[], int]):
        self.what, self.count = what, count

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        oom = isinstance(exc, torch.cuda.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
        if oom:
            n = self.count()
            raise ValueError(f"{self.what}: ran out of memory with {n} Gaussians; cap the count "
                             f"(max_gaussians about {max(n // 2, 1)}), lower the resolution or the "
                             f"views per step") from exc
        return False


def _composite(images: Tensor, masks: Tensor, background: Tensor) -> Tensor:
    return images * masks[..., None] + background * (1.0 - masks[..., None])


def composited_targets(views: PosedImages, background: Tensor) -> Tensor:
    """Every view's target image, masked-out pixels replaced by the background (the render's
    background); a fit composites them once and indexes them per step."""
    return views.images if views.masks is None else _composite(views.images, views.masks, background)


def masked_targets(views: PosedImages, index: Tensor, background: Tensor) -> tuple[Tensor, Tensor | None]:
    """Target images of the views at ``index``, composited as :func:`composited_targets` does, and their masks."""
    images = views.images[index]
    if views.masks is None:
        return images, None
    masks = views.masks[index]
    return _composite(images, masks, background), masks


def fit_static(
    init: Gaussians,
    views: PosedImages,
    render_fn: RenderFn,
    config: StaticFitConfig | None = None,
    guidance: Guidance | None = None,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
) -> FitResult:
    """Fit static Gaussians to posed images, optionally with score distillation.

    Args:
        init: initial Gaussians (sphere init for objects, back-projected depth for scenes).
        views: supervision; a single seen view is the CoCo4D setting, an orbit the Diffusion4D one.
        render_fn: renderer (``backends.render.render`` with ``screen_grads=True``).
        config: settings; defaults are CoCo4D's foreground.
        guidance: optional SDS guidance (``core.engine.guidance.Guidance``).
        callback: ``callback(step, total, preview)`` with an optional ``[H,W,3]`` preview.
        should_stop: polled every step; True ends the fit early with the current state.
        device: where to optimise (default: where ``init`` lives).

    Returns:
        :class:`FitResult`.

    Raises:
        FitDivergedError: a loss went NaN/inf (names it and the step; carries the last good state).
        ValueError: invalid inputs, or out of memory (with the count and a suggested cap).
    """
    cfg = config or StaticFitConfig()
    if not isinstance(views, PosedImages):
        raise ValueError(f"fit_static: views must be PosedImages, got {type(views).__name__}")
    if len(init) == 0:
        raise ValueError("fit_static: the initial Gaussian set is empty")
    init.validate(check_finite=True)
    dev = torch.device(device) if device is not None else init.device
    views = views.to(dev)
    render_fn = renderer_for(render_fn, cfg.loss)
    params = {k: torch.nn.Parameter(v.to(dev)) for k, v in _as_params(init).items()}
    extent = scene_extent(views, init)
    lrs = cfg.learning_rates
    if cfg.lr_scale_with_extent:
        lrs = replace(lrs, position=lrs.position * extent)
    graphed_update = cfg.graphed_update and dev.type == "cuda"
    optimizer = make_optimizer(params, lrs, capturable=graphed_update)
    gen = torch.Generator().manual_seed(cfg.seed)
    schedule_host = view_schedule(len(views), cfg.views_per_step, cfg.iterations,
                                  torch.Generator().manual_seed(cfg.seed + 1))
    schedule, times_host = schedule_host.to(dev), views.times.detach().cpu()
    restart_guidance(guidance, cfg.seed)
    background = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
    dcfg = cfg.densify
    if dcfg is not None and dcfg.total_iterations != cfg.iterations:
        dcfg = dens.DensifyConfig(**{**dcfg.__dict__, "total_iterations": cfg.iterations})
    state = dens.DensifyState()
    lr0 = lrs.position
    result = FitResult(init.detach().clone())
    last_good = FitResult(init.detach().clone())
    monitor = FitMonitor("fit_static", result, cfg.iterations, callback, cfg.preview_every)
    loss_fn = GraphedLoss(cfg.loss, enabled=cfg.graphed_loss)
    targets = composited_targets(views, background)
    update = GraphedUpdate(params, optimizer, state if dcfg is not None else None, enabled=graphed_update)
    with memory_guard("fit_static", lambda: params["means"].shape[0]), guidance_released(guidance):
        for step in range(cfg.iterations):
            if should_stop is not None and should_stop():
                result.stopped = True
                break
            lr = dens.exponential_lr(step, lr0, lr0 * lrs.position_final_ratio,
                                     lrs.position_decay_steps or cfg.iterations)
            for group in optimizer.param_groups:
                if group.get("name") == "means":
                    set_learning_rate(group, lr)
            gaussians = _to_gaussians(params)
            index = schedule[step]
            target, masks = targets[index], None if views.masks is None else views.masks[index]
            guided = guidance is not None and cfg.sds_weight > 0 and step % cfg.sds_every == 0
            if guided:  # the seen views and the guidance views in one rasterization
                t = float(times_host[schedule_host[step, 0]])
                cams = sample_guidance_cameras(cfg.pose_sampling, t, gen).to(dev, non_blocking=True)
                joint = render_together(render_fn, gaussians, views.cameras[index], cams, background)
                out, sds_out = joint.first, joint.second
            else:
                out = render_fn(gaussians, views.cameras[index], background)
            rendered = {k: v for k, v in (("rgb", out.rgb), ("alpha", out.alpha), ("depth", out.depth))
                        if v is not None}
            rendered = keep_ignored(rendered, target, masks, None if views.ignore is None else views.ignore[index])
            total, parts = loss_fn(rendered, target, masks)
            terms = {**parts}
            if guided:
                sds = cfg.sds_weight * guidance.sds_loss(sds_out.rgb, cams, t, step / max(cfg.iterations - 1, 1))
                total = total + sds
                terms["sds"] = sds.detach()
            if not total.requires_grad:
                raise ValueError(f"fit_static: no Gaussian is visible from the training cameras at step {step}, so "
                                 "nothing can be fitted: the initial Gaussians (init / gaussians input) lie outside "
                                 "every camera's view. Check that the cameras look at them (their centre, scale "
                                 "and the cameras' near/far planes)")
            # A graphed update needs the gradients where the last backward left them.
            optimizer.zero_grad(set_to_none=not graphed_update)
            total.backward()
            if dcfg is None:
                screen = []
            elif guided:
                screen = joint.screen_gradients()
            else:
                screen = screen_gradients(out)
            monitor.add_repaired(update(screen))
            if dcfg is not None:
                dens.step(params, optimizer, state, step + 1, dcfg, extent, gen)
            if cfg.max_scale is not None:
                dens.clamp_scales(params, cfg.max_scale, count=False)
            monitor.record(step, terms, total, out.rgb, count=params["means"].shape[0])
            if monitor.due():
                monitor.flush(last_good)
                monitor.add_repaired(dens.prune_non_finite(params, optimizer))
                last_good = FitResult(_to_gaussians(params).detach().clone(), steps=result.steps)
    monitor.flush(last_good)
    dens.prune_non_finite(params, optimizer)
    result.gaussians = _to_gaussians(params).detach()
    return result


def evaluate(gaussians: Gaussians, views: PosedImages, render_fn: RenderFn,
             background=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """PSNR (and mask IoU when views have masks) of a Gaussian set against posed images."""
    bg = torch.tensor(background, dtype=torch.float32, device=gaussians.device)
    with torch.no_grad():
        out = render_fn(gaussians, views.cameras.to(gaussians.device), bg)
        target, masks = masked_targets(views.to(gaussians.device), torch.arange(len(views)), bg)
        scores = {"psnr": float(psnr(out.rgb.clamp(0, 1), target))}
        if masks is not None:
            pred, truth = out.alpha[..., 0] > 0.5, masks > 0.5
            scores["mask_iou"] = float((pred & truth).sum() / (pred | truth).sum().clamp_min(1))
    return scores
