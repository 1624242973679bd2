# SPDX-License-Identifier: Apache-2.0
"""Dynamic fitting: a HexPlane deformation on canonical Gaussians, fit to posed frames over time.

Public API:
    DeformationFitConfig      CoCo4D foreground defaults (800 iterations, batch of 4 timestamps)
    fit_deformation(...)      the deformation fit (CoCo4D §3.1 eqs. 3-4; Diffusion4D fine stage)
    fine_stage_densify(n)     4DGS-style density control for an n-step deformation fit

Design notes:
    Each step draws ``times_per_step`` frames, deforms the canonical set to all their times in one
    pass of the field (``Deformation.forward_batch``), renders each at its own camera and adds:
    the reconstruction loss (CoCo4D eq. 3, L2 on the frames, plus a silhouette term with masks),
    the rigidity loss of Luiten et al. on k canonical neighbours (eq. 4), the HexPlane plane TV,
    time-smoothness and time-plane L1 regularisers of 4DGS, and, with a guidance object, score
    distillation at one of the drawn timestamps from poses around the object (eq. 4's SDS term).
    The canonical Gaussians are frozen by default (CoCo4D: "we freeze parameters of the static
    3D Gaussians"); Diffusion4D's fine stage trains them too (``freeze_canonical=False``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from . import densify as dens
from . import regularizers as reg
from .cameras import Cameras
from .deformation import (
    COCO4D_FOREGROUND_LR,
    Deformation,
    DeformationMotion,
    HexPlaneConfig,
    param_groups,
    time_samples_for,
)
from .fit_monitor import FitMonitor
from .fit_static import (
    FitDivergedError,
    FitResult,
    GaussianLearningRates,
    RenderFn,
    adam,
    composited_targets,
    make_optimizer,
    memory_guard,
    renderer_for,
    scene_extent,
    set_learning_rate,
    view_schedule,
)
from .gaussians import GaussianBatch, Gaussians
from .graphed_deformation import graphed_batch_deltas, graphed_plane_terms, graphs_supported
from .graphed_loss import GraphedLoss
from .graphed_update import GraphedUpdate, capturable_adam
from .guidance import Guidance, PoseSampling, guidance_released, restart_guidance, sample_guidance_cameras
from .joint_render import same_image_plane, screen_gradients, split_render
from .losses import ReconstructionLoss
from .views import PosedImages, keep_ignored

__all__ = [
    "DeformationFitConfig",
    "fit_deformation",
    "fine_stage_densify",
    "FitDivergedError",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeformationFitConfig:
    """Settings of :func:`fit_deformation` (defaults: CoCo4D foreground, App. A Table 3).

    Args:
        iterations: optimisation steps (CoCo4D foreground 800).
        times_per_step: timestamps per step (CoCo4D batch 4).
        deformation_lr, grid_lr: Adam rates of the MLPs and the HexPlane planes.
        hexplane: field settings.
        adapt_time_resolution: sample time once per distinct frame time, at most
            ``hexplane.time_resolution`` times (:func:`~.deformation.time_samples_for`); False uses
            ``hexplane.time_resolution`` as given.
        loss: reconstruction loss on the frames (eq. 3: L2; masks add a silhouette term).
        rigidity_weight: weight of the local-rigidity loss (0 off); ``rigidity_k`` neighbours.
        tv_weight, time_smoothness_weight, time_l1_weight: 4DGS plane regularisers.
        tv_planes: planes the total variation covers: "all", or "spatial" as 4DGS does (its D-NeRF
            configs: TV 1e-4 on the spatial planes, time smoothness 1e-2).
        freeze_canonical: keep the canonical Gaussians fixed (CoCo4D); False also trains them
            at ``canonical_learning_rates`` (4DGS / Diffusion4D fine stage).
        sds_weight, sds_every, pose_sampling: per-timestamp score distillation (eq. 4; weight 1e-4
            against the mean-reduced reference loss, as in :class:`StaticFitConfig`). CoCo4D gives no
            number; DreamGaussian4D, whose 4D learning rates App. A Table 3 repeats, weighs Zero123
            1 : 10^4 against its reference MSE in its Consistent4D setting and 4 : 10^4 in its default
            4D setting. 1e-4 keeps the static stage's balance.
        background: colour behind the splats and behind masked targets.
        preview_every: preview interval for the callback (0 = never).
        seed: seed of the field initialisation and of frame / pose sampling.
        lr_scale_with_extent: multiply the deformation, grid and canonical position rates by the
            scene extent (``fit_static.scene_extent``), as 4DGS does (``spatial_lr_scale``); off for
            CoCo4D's absolute rates.
        lr_final_ratio: decay the deformation, grid and canonical position rates log-linearly to
            this fraction of their start over the fit (4DGS: 0.1 for the field's rates); ``None``
            keeps them constant (CoCo4D).
        densify: adaptive density control of the canonical set during the fit, driven by the
            screen-space gradients of the deformed Gaussians (4DGS densifies in its fine stage);
            needs ``freeze_canonical=False``. ``None`` off.
        cuda_graphs: on a CUDA device, replay the field's pass, the plane regularisers and their
            backward as CUDA graphs (``graphed_deformation``), which saves their launches from Python
            every step: on the posed-frames bench (H100, one sitting) 400 fine steps of 8 frames took
            10.1 ms each against 19.7 ms eager, at the same PSNR. A graph replays fixed shapes, so a fit
            that densifies captures the pass again whenever the Gaussian count changes (every
            ``refine_every`` steps at most); a capture that fails (out of memory, an operation that
            cannot be captured) falls back to the eager field with a logged warning. Ignored off CUDA.
        graphed_loss: on a CUDA device, replay the image loss and its backward as CUDA graphs too
            (:class:`~core.engine.graphed_loss.GraphedLoss`, one capture for the fit: its shapes do
            not change; eager where a capture fails). On one H100 the CoCo4D foreground case of
            ``bench/fit_bench.py`` took 9.1 s against 10.0 s eager and the Diffusion4D construction
            41.7 s against 44.9 s, at PSNRs within the run-to-run spread.
        graphed_update: on a CUDA device, replay the work after the backward (gradient repair,
            densification's accumulation, the field's and the Gaussians' Adam steps) as a CUDA graph
            between refinements (:class:`~core.engine.graphed_update.GraphedUpdate`; eager where a
            capture fails). Off by default: on one H100 PosedFrames4D's 7000-step fine stage took 10.0 ms a
            step with it against 9.8 eager (its steps are bound by the GPU, not by launches). Ignored off CUDA.
    """

    iterations: int = 800
    times_per_step: int = 4
    deformation_lr: float = COCO4D_FOREGROUND_LR[0]
    grid_lr: float = COCO4D_FOREGROUND_LR[1]
    hexplane: HexPlaneConfig = field(default_factory=lambda: HexPlaneConfig(time_resolution=25))
    adapt_time_resolution: bool = True
    loss: ReconstructionLoss = field(default_factory=lambda: ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0,
                                                                                mask=1.0))
    rigidity_weight: float = 1.0
    rigidity_k: int = 8
    tv_weight: float = 2e-4
    time_smoothness_weight: float = 1e-3
    time_l1_weight: float = 1e-4
    tv_planes: str = "all"
    freeze_canonical: bool = True
    canonical_learning_rates: GaussianLearningRates = field(
        default_factory=lambda: GaussianLearningRates(position=0.00016))
    sds_weight: float = 1e-4
    sds_every: int = 1
    pose_sampling: PoseSampling = field(default_factory=PoseSampling)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    preview_every: int = 50
    seed: int = 0
    lr_scale_with_extent: bool = False
    lr_final_ratio: float | None = None
    densify: dens.DensifyConfig | None = None
    cuda_graphs: bool = True
    graphed_loss: bool = True
    graphed_update: bool = False

    def __post_init__(self) -> None:
        if self.densify is not None and self.freeze_canonical:
            raise ValueError("DeformationFitConfig: densify grows the canonical set, which needs "
                             "freeze_canonical=False")
        if self.lr_final_ratio is not None and not 0 < self.lr_final_ratio <= 1:
            raise ValueError(f"DeformationFitConfig: lr_final_ratio must be in (0, 1] or None, got "
                             f"{self.lr_final_ratio}")
        if self.iterations < 1 or self.times_per_step < 1 or self.sds_every < 1 or self.rigidity_k < 1:
            raise ValueError("DeformationFitConfig: iterations, times_per_step, sds_every and rigidity_k must be "
                             f">= 1, got {self.iterations}, {self.times_per_step}, {self.sds_every}, "
                             f"{self.rigidity_k}")
        if self.tv_planes not in ("all", "spatial"):
            raise ValueError(f"DeformationFitConfig: tv_planes must be 'all' or 'spatial', got {self.tv_planes!r}")
        for name in ("rigidity_weight", "tv_weight", "time_smoothness_weight", "time_l1_weight", "sds_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"DeformationFitConfig: {name} must be a finite number >= 0, got {value}")


def _field_config(cfg: DeformationFitConfig, views: PosedImages) -> HexPlaneConfig:
    if not cfg.adapt_time_resolution:
        return cfg.hexplane
    frames = int(torch.unique(views.times.detach().cpu()).numel())
    return replace(cfg.hexplane, time_resolution=time_samples_for(frames, cfg.hexplane.time_resolution))


def fit_deformation(
    canonical: Gaussians,
    views: PosedImages,
    render_fn: RenderFn,
    config: DeformationFitConfig | None = None,
    guidance: Guidance | None = None,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    deformation: Deformation | None = None,
    on_checkpoint: Callable[[FitResult], None] | None = None,
    checkpoint_every: int = 0,
) -> FitResult:
    """Fit a HexPlane deformation of ``canonical`` to frames seen at their cameras and times.

    Args:
        canonical: the static Gaussians to animate.
        views: frames with cameras; ``cameras.times`` say which time each frame shows.
        render_fn: renderer (``backends.render.render`` with ``screen_grads=True``).
        config: settings (CoCo4D foreground defaults).
        guidance: optional SDS guidance, evaluated at one drawn timestamp per SDS step.
        callback: ``callback(step, total, preview)``.
        should_stop: polled every step; True ends the fit early.
        device: where to optimise (default: the canonical set's device).
        deformation: continue from this module instead of a fresh (identity) one.
        on_checkpoint: called every ``checkpoint_every`` steps (not after the last) with the fit so
            far, a :class:`FitResult` holding copies, e.g. to score a long fit along the way; the
            fit itself is unchanged by it.

    Returns:
        :class:`FitResult` with ``gaussians`` = the canonical set (refined unless frozen) and
        ``extra["motion"]`` = a :class:`DeformationMotion` ready for a ``Scene4D``.

    Raises:
        FitDivergedError: a loss went NaN/inf (names it and the step; carries the last good state).
        ValueError: invalid inputs or out of memory.
    """
    cfg = config or DeformationFitConfig()
    if not isinstance(views, PosedImages):
        raise ValueError(f"fit_deformation: views must be PosedImages, got {type(views).__name__}")
    if len(canonical) == 0:
        raise ValueError("fit_deformation: the canonical Gaussian set is empty")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"fit_deformation: checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
    canonical.validate(check_finite=True)
    dev = torch.device(device) if device is not None else canonical.device
    views = views.to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    restart_guidance(guidance, cfg.seed)
    if deformation is None:
        deformation = Deformation(_field_config(cfg, views), canonical.detach(), generator=gen)
    deformation = deformation.to(dev).train()
    scale = scene_extent(views, canonical) if cfg.lr_scale_with_extent else 1.0
    groups = param_groups(deformation, cfg.deformation_lr * scale, cfg.grid_lr * scale)
    graphed_update = cfg.graphed_update and dev.type == "cuda"
    optimizers = [capturable_adam(groups, eps=1e-15) if graphed_update else adam(groups, eps=1e-15)]
    params = {k: torch.nn.Parameter(v.detach().clone().float().to(dev)) for k, v in canonical.tensors().items()}
    if cfg.freeze_canonical:
        for p in params.values():
            p.requires_grad_(False)
    else:
        lrs = cfg.canonical_learning_rates
        optimizers.append(make_optimizer(params, replace(lrs, position=lrs.position * scale),
                                         capturable=graphed_update))
    field_params = [p for group in groups for p in group["params"]]
    schedules = [(group, float(group["lr"])) for opt in optimizers for group in opt.param_groups
                 if group.get("name") in ("grid", "deformation", "means")]
    dcfg = cfg.densify
    if dcfg is not None and dcfg.total_iterations != cfg.iterations:
        dcfg = replace(dcfg, total_iterations=cfg.iterations)
    densify_state, extent = dens.DensifyState(), scene_extent(views, canonical)
    background = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
    knn_index = reg.knn(params["means"].detach(), min(cfg.rigidity_k, len(canonical) - 1)) \
        if cfg.rigidity_weight > 0 and len(canonical) > 1 else None
    schedule_host = view_schedule(len(views), cfg.times_per_step, cfg.iterations, gen)
    schedule, times_host = schedule_host.to(dev), views.times.detach().cpu()
    render_fn = renderer_for(render_fn, cfg.loss)
    render_each = getattr(render_fn, "each", None)
    regularisers = [term for term in (("tv", cfg.tv_weight, lambda d: reg.plane_tv_loss(d, cfg.tv_planes)),
                                      ("time_smoothness", cfg.time_smoothness_weight, reg.time_smoothness_loss),
                                      ("time_l1", cfg.time_l1_weight, reg.time_l1_loss)) if term[1] > 0]

    def eager_plane_terms() -> dict[str, torch.Tensor]:
        return {name: weight * fn(deformation) for name, weight, fn in regularisers}

    batch_deltas, plane_terms = None, eager_plane_terms

    def capture_field() -> bool:
        """Capture the field's pass for the current Gaussian count (and the plane terms, once); False when the
        capture fails, after which the fit runs the eager field."""
        nonlocal batch_deltas, plane_terms
        try:
            batch_deltas = graphed_batch_deltas(deformation, params["means"], schedule.shape[1], views.times.dtype)
            if regularisers and plane_terms is eager_plane_terms:
                plane_terms = graphed_plane_terms(deformation, regularisers)
            return True
        except RuntimeError as exc:  # out of memory, or an operation that cannot be captured
            # The eager field computes the same fit, only slower: nothing is lost by going on without.
            logger.warning("fit_deformation: the field's CUDA graphs could not be captured (%s); the fit runs the "
                           "eager field (set cuda_graphs off to skip the attempt)", exc)
            batch_deltas, plane_terms = None, eager_plane_terms
            return False

    graphed = cfg.cuda_graphs and graphs_supported(dev) and capture_field()

    def snapshot(step: int) -> tuple[int, dict, dict]:
        """The state after ``step`` steps, copied on the device (the module is rebuilt only when needed)."""
        return (step, {k: v.detach().clone() for k, v in params.items()},
                {k: v.detach().clone() for k, v in deformation.state_dict().items()})

    def materialise(snap: tuple[int, dict, dict]) -> FitResult:
        step, tensors, state = snap
        module = Deformation(deformation.config)
        module.load_state_dict(state)
        return FitResult(Gaussians(**tensors), steps=step, extra={"motion": DeformationMotion(module.to(dev))})

    result, last_good = FitResult(canonical.detach().clone()), snapshot(0)
    monitor = FitMonitor("fit_deformation", result, cfg.iterations, callback, cfg.preview_every)
    loss_fn = GraphedLoss(cfg.loss, enabled=cfg.graphed_loss)
    update = GraphedUpdate(params, optimizers, densify_state if dcfg is not None else None, extra=field_params,
                           enabled=graphed_update)
    targets = composited_targets(views, background)
    # The sets a joint render draws when frame k's guidance views join the step's frames: made once, on the device.
    frames = schedule_host.shape[1]
    frame_then_guidance = [] if guidance is None else [
        torch.cat([torch.arange(frames), torch.full((cfg.pose_sampling.batch,), k)]).to(dev) for k in range(frames)]
    with memory_guard("fit_deformation", lambda: len(canonical)), guidance_released(guidance):
        for step in range(cfg.iterations):
            if should_stop is not None and should_stop():
                result.stopped = True
                break
            if cfg.lr_final_ratio is not None:
                for group, lr0 in schedules:
                    set_learning_rate(group, dens.exponential_lr(step, lr0, lr0 * cfg.lr_final_ratio, cfg.iterations))
            index = schedule[step]
            times = views.times[index]
            base = Gaussians(**params)
            deformed = deformation.forward_batch(base, times, check_values=False, deltas=batch_deltas)
            cams = views.cameras[index]
            guided = guidance is not None and cfg.sds_weight > 0 and step % cfg.sds_every == 0
            joint = None
            if guided:
                k = int(torch.randint(0, len(deformed), (1,), generator=gen))
                t = float(times_host[schedule_host[step, k]])
                sds_cams = sample_guidance_cameras(cfg.pose_sampling, t, gen).to(dev, non_blocking=True)
                if render_each is not None and isinstance(deformed, GaussianBatch) and same_image_plane(cams, sds_cams):
                    # the frames and frame k's guidance views in one rasterization
                    joint = render_each(deformed.select(frame_then_guidance[k]), Cameras.cat([cams, sds_cams]),
                                        background, screen_grads=dcfg is not None)
                    frames, sds_out = split_render(joint, len(cams))
                    outs = [frames]
            if joint is None and render_each is not None:
                out = render_each(deformed, cams, background, screen_grads=dcfg is not None)
                outs = out.parts or [out]
            elif joint is None:
                outs = [render_fn(g, cams[i: i + 1], background) for i, g in enumerate(deformed)]
            rendered = {key: torch.cat([getattr(o, key) for o in outs]) for key in ("rgb", "alpha", "depth")
                        if getattr(outs[0], key) is not None}
            target, masks = targets[index], None if views.masks is None else views.masks[index]
            rendered = keep_ignored(rendered, target, masks, None if views.ignore is None else views.ignore[index])
            total, parts = loss_fn(rendered, target, masks)
            terms = dict(parts)
            if knn_index is not None:
                stacked_means, stacked_quats = deformed.stacked("means"), deformed.stacked("quats")
                rigid = cfg.rigidity_weight * reg.rigidity_loss(
                    base.means, stacked_means, knn_index, canonical_quats=base.quats, deformed_quats=stacked_quats,
                    check_values=False)
                terms["rigidity"] = rigid.detach()
                total = total + rigid
            for name, value in plane_terms().items():
                terms[name] = value.detach()  # a graphed buffer: the monitor copies what it keeps
                total = total + value
            if guided:
                if joint is None:
                    sds_out = render_fn(deformed[k], sds_cams, background)
                sds = cfg.sds_weight * guidance.sds_loss(sds_out.rgb, sds_cams, t, step / max(cfg.iterations - 1, 1))
                terms["sds"] = sds.detach()
                total = total + sds
            if not total.requires_grad:
                raise ValueError(f"fit_deformation: no Gaussian is visible from the training cameras at step "
                                 f"{step}, so nothing can be fitted: the initial Gaussians (init / gaussians "
                                 "input) lie outside every camera's view. Check that the cameras look at them "
                                 "(their centre, scale and the cameras' near/far planes)")
            for opt in optimizers:  # a graphed update needs the gradients where the last backward left them
                opt.zero_grad(set_to_none=not graphed_update)
            total.backward()
            drawn = outs if joint is None else getattr(joint, "parts", None) or [joint]
            screen = [] if dcfg is None else _screen_grads(drawn, rendered["rgb"].shape[2], rendered["rgb"].shape[1],
                                                           len(cams))
            monitor.add_repaired(update(screen))
            if dcfg is not None:
                count = params["means"].shape[0]
                dens.step(params, optimizers[-1], densify_state, step + 1, dcfg, extent, gen)
                if params["means"].shape[0] != count:
                    if knn_index is not None:
                        knn_index = reg.knn(params["means"].detach(),
                                            min(cfg.rigidity_k, params["means"].shape[0] - 1))
                    if graphed:  # a graph replays fixed shapes: capture the pass again for the new count
                        graphed = capture_field()
            monitor.record(step, terms, total, rendered["rgb"], count=params["means"].shape[0])
            if monitor.due():
                try:
                    monitor.flush(FitResult(Gaussians(**last_good[1]), steps=last_good[0]))
                except FitDivergedError as exc:
                    raise FitDivergedError(str(exc), materialise(last_good)) from None
                last_good = snapshot(result.steps)
            if on_checkpoint is not None and checkpoint_every > 0 and result.steps % checkpoint_every == 0 \
                    and result.steps < cfg.iterations:
                checkpoint = materialise(snapshot(result.steps))
                checkpoint.extra["motion"].deformation.eval()
                on_checkpoint(checkpoint)
    try:
        monitor.flush(FitResult(Gaussians(**last_good[1]), steps=last_good[0]))
    except FitDivergedError as exc:
        raise FitDivergedError(str(exc), materialise(last_good)) from None
    final = materialise(snapshot(result.steps))
    result.gaussians, result.extra = final.gaussians, final.extra
    result.extra["motion"].deformation.eval()
    return result


def _screen_grads(outs: list, width: int, height: int,
                  cameras: int) -> list[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """This step's screen-space gradients for densification, ``[(grad [B,N,2], radii, width, height)]`` of
    the first ``cameras`` views, the fitted frames (one batched render, or one render per set, together,
    since the loss averages over the B sets; a joint render's guidance views after them are left out);
    empty when a render has none (a custom ``render_fn``)."""
    entries = [entry for out in outs for entry in screen_gradients(out)]
    if not outs or len(entries) != len(outs):
        return []
    grads = torch.cat([grad.reshape(-1, *grad.shape[-2:]) for grad, _, _, _ in entries])
    radii = torch.cat([r.reshape(-1, *r.shape[-2:]) for _, r, _, _ in entries])
    return [(grads[:cameras], radii[:cameras], width, height)]


def fine_stage_densify(iterations: int) -> dens.DensifyConfig:
    """4DGS-style density control of the canonical set during a deformation fit: clone, split and prune every
    100 steps from step 200 until 80 % of the fit (the coarse stage's thresholds)."""
    return dens.DensifyConfig(total_iterations=iterations, refine_start=200, refine_every=100)
