# SPDX-License-Identifier: Apache-2.0
"""Adaptive density control of 3D Gaussians (Kerbl et al. 2023 §5.2), gsplat "strategy" style.

Public API:
    DensifyConfig        frozen schedule and thresholds (CoCo4D App. A Tables 3-4 defaults)
    DensifyState         per-Gaussian accumulators: screen-space gradient sum, count, max radius
    accumulate           add one backward pass's ``means2d`` gradients to the state
    step                 clone / split / prune / opacity reset / scale clamp, rebuilding Adam state
    clamp_scales         the ``max_scale`` projection on ``log_scales`` alone
    exponential_lr       log-linear learning-rate decay of the 3DGS position parameter

Design notes:
    The loop this module expects (one iteration, ``step`` = optimizer steps done so far)::

        loss.backward()
        densify.accumulate(state, proj.means2d.grad, proj.radii, width, height)
        optimizer.step(); optimizer.zero_grad()
        densify.step(params, optimizer, state, it + 1, config, scene_extent, generator)

    ``params`` maps "means", "quats", "log_scales", "logit_opacities", "sh" (and optionally any
    other per-Gaussian ``[N,...]`` parameter, which is copied along) to ``nn.Parameter``s that
    one ``torch.optim.Adam`` optimises. When the set changes, every parameter is replaced by a
    new ``nn.Parameter`` in ``params`` *and* in the optimizer's ``param_groups`` (same group,
    same position, same hyper-parameters), and the Adam moments follow the rows: surviving
    rows keep theirs, pruned rows are dropped, and new rows (clone copies, split children)
    start at zero, as in the reference 3DGS code and gsplat. (``copy_moments=True`` gives new
    rows their source's moments instead.) Adam's scalar ``step`` counter is kept.

    Gradients: as gsplat, the pixel-space gradient of ``means2d`` is scaled to NDC units,
    ``g * [W/2, H/2]``, and multiplied by the number of cameras ``C`` in the batch (a loss that
    averages over ``C`` images divides each view's gradient by ``C``); its norm is summed over
    the views in which the Gaussian is visible (``radii > 0``) and divided by that count at a
    refinement step. ``grad_threshold = 0.0002`` is the 3DGS value for that normalisation.

    Growth: a Gaussian whose mean gradient exceeds the threshold is *cloned* when its largest
    scale is ``<= grow_scale3d * scene_extent`` and *split* otherwise: two children sampled from
    ``N(mean, R diag(s)^2 R^T)``, scales divided by 1.6, the parent removed (Kerbl et al. §5.2).
    Pruning removes opacity ``< prune_opacity`` and, when set, Gaussians larger than
    ``prune_scale3d * scene_extent`` or whose screen radius exceeded ``prune_scale2d`` of the
    image's larger side (3DGS applies the size tests only after the first opacity reset; short
    CoCo4D fits never reset, so here they apply whenever enabled). A prune that would remove
    every Gaussian is skipped with a warning.

    ``max_gaussians``: we *stop growing* rather than fail. When growth would take the count
    above the cap, only the candidates with the largest gradients are grown (possibly none),
    and this is logged once. A node fitting for minutes should not die at its last refinement.

    Schedule: refinement runs when ``refine_start <= step < refine_stop`` and
    ``step % refine_every == 0``; ``refine_stop`` defaults to 80 % of ``total_iterations``.
    Opacity reset (to ``min(o, 0.01)``, with the opacity moments zeroed) runs every
    ``reset_every`` steps before ``refine_stop``; ``reset_every=None`` means 3000 when
    ``total_iterations >= 3000`` and off otherwise (CoCo4D fits are 300-1000 iterations).
    ``max_scale`` (CoCo4D background: 0.2 after activation) clamps ``log_scales`` at
    ``log(max_scale)`` on every call to :func:`step`, refinement step or not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .gaussians import quat_to_rotmat

__all__ = [
    "DensifyConfig",
    "DensifyState",
    "accumulate",
    "step",
    "clamp_scales",
    "exponential_lr",
    "REQUIRED_KEYS",
]

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("means", "quats", "log_scales", "logit_opacities", "sh")
_LOGGED: set[str] = set()


def _log_once(message: str, level: int = logging.INFO) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.log(level, message)


# -- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DensifyConfig:
    """Adaptive density control settings.

    Attributes:
        total_iterations: length of the fit; sets the defaults of ``refine_stop`` and ``reset_every``.
        refine_start: first step that may refine (CoCo4D fits are short: 100, not 3DGS's 500).
        refine_stop: refinement and resets run only below this step; ``None`` -> 80 % of
            ``total_iterations``.
        refine_every: refinement interval (CoCo4D Tables 3-4: ``densification_interval`` 100).
        grad_threshold: mean NDC-scaled screen-space gradient norm above which a Gaussian grows.
        grow_scale3d: clone if ``max(scale) <= grow_scale3d * extent``, else split.
        split_factor: children's scales are the parent's divided by this (3DGS: ``0.8 * 2``).
        prune_opacity: remove Gaussians with opacity below this.
        prune_scale3d: remove Gaussians with ``max(scale) > prune_scale3d * extent``; ``None`` off.
        prune_scale2d: remove Gaussians whose screen radius exceeded this fraction of
            ``max(W, H)`` since the last refinement; ``None`` off (3DGS: 20 px).
        reset_every: opacity-reset interval; ``None`` -> 3000 if ``total_iterations >= 3000``
            else off; ``0`` off.
        reset_opacity: value opacities are clamped to at a reset (3DGS: 0.01).
        max_scale: clamp on activated scales (CoCo4D background: 0.2); ``None`` off.
        max_gaussians: cap on the count; growth stops at the cap (never an error). ``None`` off.
        copy_moments: give new rows the Adam moments of their source Gaussian instead of zeros.
    """

    total_iterations: int = 1000
    refine_start: int = 100
    refine_stop: int | None = None
    refine_every: int = 100
    grad_threshold: float = 0.0002
    grow_scale3d: float = 0.01
    split_factor: float = 1.6
    prune_opacity: float = 0.005
    prune_scale3d: float | None = 0.1
    prune_scale2d: float | None = None
    reset_every: int | None = None
    reset_opacity: float = 0.01
    max_scale: float | None = None
    max_gaussians: int | None = None
    copy_moments: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"DensifyConfig: {name} must be {expected}, got {getattr(self, name)!r}")

        for name in ("total_iterations", "refine_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if not isinstance(self.refine_start, int) or self.refine_start < 0:
            raise bad("refine_start", "an integer >= 0")
        if self.refine_stop is not None and (not isinstance(self.refine_stop, int) or self.refine_stop < 0):
            raise bad("refine_stop", "None or an integer >= 0")
        if self.reset_every is not None and (not isinstance(self.reset_every, int) or self.reset_every < 0):
            raise bad("reset_every", "None or an integer >= 0 (0 = off)")
        for name in ("grad_threshold", "grow_scale3d", "prune_opacity"):
            if not getattr(self, name) >= 0:
                raise bad(name, "a number >= 0")
        if not self.split_factor > 0:
            raise bad("split_factor", "a number > 0")
        if not 0 < self.reset_opacity < 1:
            raise bad("reset_opacity", "in (0, 1)")
        for name in ("prune_scale3d", "prune_scale2d", "max_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise bad(name, "None or a number > 0")
        if self.max_gaussians is not None and (not isinstance(self.max_gaussians, int) or self.max_gaussians < 1):
            raise bad("max_gaussians", "None or an integer >= 1")

    @property
    def stop(self) -> int:
        """Effective ``refine_stop``."""
        return self.refine_stop if self.refine_stop is not None else int(0.8 * self.total_iterations)

    @property
    def reset_interval(self) -> int:
        """Effective opacity-reset interval (0 = off)."""
        if self.reset_every is not None:
            return self.reset_every
        return 3000 if self.total_iterations >= 3000 else 0

    def is_refine_step(self, step: int) -> bool:
        return self.refine_start <= step < self.stop and step % self.refine_every == 0

    def is_reset_step(self, step: int) -> bool:
        r = self.reset_interval
        return r > 0 and step > 0 and step < self.stop and step % r == 0


@dataclass
class DensifyState:
    """Accumulators since the last refinement (mutable; sized lazily on the first accumulate).

    Attributes:
        grad2d: ``[N]`` sum of NDC-scaled screen-space gradient norms over visible views.
        count: ``[N]`` number of views in which each Gaussian was visible.
        max_radii: ``[N]`` largest screen radius seen, as a fraction of ``max(W, H)``.
    """

    grad2d: Tensor | None = None
    count: Tensor | None = None
    max_radii: Tensor | None = None

    @property
    def n(self) -> int | None:
        return None if self.grad2d is None else self.grad2d.shape[0]

    def reset(self, n: int, device: torch.device | str = "cpu") -> None:
        """Zero the accumulators for ``n`` Gaussians."""
        self.grad2d = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)


# -- accumulation ------------------------------------------------------------------------------
@torch.no_grad()
def accumulate(state: DensifyState, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
    """Add one backward pass's screen-space gradients to ``state`` (call after ``backward``).

    Args:
        state: accumulators; (re)sized when empty.
        means2d_grad: ``[C,N,2]`` (or ``[N,2]``) gradient of the loss w.r.t. the projected
            centres in pixels (``Projection.means2d.grad`` after ``retain_grad()``).
        radii: ``[C,N,2]`` (or ``[C,N]`` / ``[N,2]``) pixel radii; ``> 0`` marks visible.
        width, height: image size in pixels.

    Raises:
        ValueError: shapes disagree or the state was sized for another count.
    """
    if means2d_grad is None:
        raise ValueError("densify.accumulate: means2d_grad is None; call means2d.retain_grad() before backward")
    g = means2d_grad.detach()
    if g.dim() == 2:
        g = g[None]
    if g.dim() != 3 or g.shape[-1] != 2:
        raise ValueError(f"densify.accumulate: means2d_grad must be [C,N,2], got {tuple(means2d_grad.shape)}")
    c, n = g.shape[:2]
    r = radii.detach()
    if r.dim() == 2 and r.shape == (n, 2) and c == 1:
        r = r[None]
    if r.dim() == 3:
        if r.shape[-1] != 2:
            raise ValueError(f"densify.accumulate: radii must be [C,N,2] or [C,N], got {tuple(radii.shape)}")
        r = r.amax(-1)
    if tuple(r.shape) != (c, n):
        raise ValueError(f"densify.accumulate: radii {tuple(radii.shape)} do not match means2d_grad {tuple(g.shape)}")
    if state.grad2d is None:
        state.reset(n, g.device)
    if state.n != n:
        raise ValueError(f"densify.accumulate: state holds {state.n} Gaussians but the gradient has {n}; "
                         f"call state.reset({n}) after changing the set outside densify.step")
    norms = torch.hypot(g[..., 0] * (width / 2.0 * c), g[..., 1] * (height / 2.0 * c))  # [C,N]
    vis = r > 0
    state.grad2d += (norms * vis).sum(0).to(state.grad2d.dtype)
    state.count += vis.sum(0).to(state.count.dtype)
    frac = r.to(state.max_radii.dtype) / float(max(width, height))
    # In place: a CUDA graph of this update keeps writing to the buffers it was captured with.
    torch.maximum(state.max_radii, frac.amax(0), out=state.max_radii)


# -- parameter / optimizer surgery ------------------------------------------------------------
def _find_in_optimizer(optimizer: torch.optim.Optimizer, p: Tensor) -> tuple[int, int] | None:
    for gi, group in enumerate(optimizer.param_groups):
        for pi, q in enumerate(group["params"]):
            if q is p:
                return gi, pi
    return None


def _rebuild(
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    param_fn: Callable[[str, Tensor], Tensor],
    moment_fn: Callable[[Tensor], Tensor],
) -> None:
    """Replace every per-Gaussian parameter and its optimizer state row-wise."""
    n = params["means"].shape[0]
    for name in list(params):
        p = params[name]
        if not isinstance(p, Tensor) or p.dim() == 0 or p.shape[0] != n:
            continue
        new = torch.nn.Parameter(param_fn(name, p.detach()), requires_grad=p.requires_grad)
        where = _find_in_optimizer(optimizer, p)
        if where is not None:
            gi, pi = where
            old_state = optimizer.state.pop(p, None)
            optimizer.param_groups[gi]["params"][pi] = new
            if old_state:
                new_state = {}
                for key, value in old_state.items():
                    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
                        new_state[key] = moment_fn(value)
                    else:
                        new_state[key] = value
                optimizer.state[new] = new_state
        params[name] = new


def _check_params(params: dict[str, torch.nn.Parameter]) -> int:
    missing = [k for k in REQUIRED_KEYS if k not in params]
    if missing:
        raise ValueError(f"densify.step: params lacks {missing}; expected keys {list(REQUIRED_KEYS)}")
    n = params["means"].shape[0]
    for k in REQUIRED_KEYS:
        if params[k].shape[0] != n:
            raise ValueError(f"densify.step: params[{k!r}] has {params[k].shape[0]} rows, means has {n}")
    return n


def _grow(
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    clone: Tensor,
    split: Tensor,
    config: DensifyConfig,
    generator: torch.Generator | None,
) -> None:
    """Append clones, then split children, and drop split parents, in one rebuild."""
    clone_idx = torch.where(clone)[0]
    split_idx = torch.where(split)[0]
    keep = ~split
    n_split = split_idx.numel()
    if n_split:
        means = params["means"].detach()
        scales = torch.exp(params["log_scales"].detach()[split_idx])  # [S,3]
        rot = quat_to_rotmat(params["quats"].detach()[split_idx])  # [S,3,3]
        # Drawn on the CPU generator (reproducible on any device), then moved.
        noise = torch.randn((2, n_split, 3), generator=generator).to(device=means.device, dtype=means.dtype)
        offsets = torch.einsum("sij,ksj->ksi", rot, noise * scales[None])  # [2,S,3]
        children_means = (means[split_idx][None] + offsets).reshape(2 * n_split, 3)
    src = torch.cat([clone_idx, split_idx, split_idx])  # rows the new entries come from
    shrink = math.log(config.split_factor)

    def param_fn(name: str, p: Tensor) -> Tensor:
        new_rows = p[src]
        if n_split:
            if name == "means":
                new_rows = torch.cat([new_rows[: clone_idx.numel()], children_means])
            elif name == "log_scales":
                new_rows = new_rows.clone()
                new_rows[clone_idx.numel():] -= shrink
        return torch.cat([p[keep], new_rows])

    def moment_fn(v: Tensor) -> Tensor:
        extra = v[src] if config.copy_moments else v.new_zeros((src.numel(), *v.shape[1:]))
        return torch.cat([v[keep], extra])

    _rebuild(params, optimizer, param_fn, moment_fn)


def _prune(params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, remove: Tensor) -> None:
    keep = ~remove
    _rebuild(params, optimizer, lambda _name, p: p[keep], lambda v: v[keep])


@torch.no_grad()
def sanitize_grads(params: dict[str, torch.nn.Parameter]) -> int:
    """Zero non-finite gradients of per-Gaussian parameters in place (a rasterizer can return NaN for a
    degenerate splat); returns how many Gaussians had one, so one bad splat cannot poison Adam's state."""
    return int(zero_non_finite_grads(params))


def zero_non_finite_grads(params: dict[str, torch.nn.Parameter], extra=()) -> Tensor:
    """:func:`sanitize_grads` without waiting for the device: the count comes back as a 0-d tensor.

    ``extra`` are more parameters (a deformation field's) whose non-finite gradients are zeroed too;
    they are not counted, having no rows per Gaussian.
    """
    # A row holding NaN or inf sums to NaN or inf: one reduction per parameter finds the bad rows
    # (a fit step is bound by its kernel launches, and this runs every step).
    sums = [p.grad.reshape(p.shape[0], -1).sum(-1) for p in params.values() if p.grad is not None]
    for p in (*params.values(), *extra):
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
    if not sums:
        return torch.zeros((), dtype=torch.int64)
    return torch.isfinite(torch.stack(sums).sum(0)).logical_not_().sum()


@torch.no_grad()
def prune_non_finite(params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> int:
    """Remove Gaussians with any non-finite parameter (keeping the optimizer state aligned); returns the count."""
    bad = torch.zeros(params["means"].shape[0], dtype=torch.bool, device=params["means"].device)
    for p in params.values():
        bad |= ~torch.isfinite(p.reshape(p.shape[0], -1)).all(-1)
    count = int(bad.sum())
    if count and count < bad.numel():
        _prune(params, optimizer, bad)
    return count


@torch.no_grad()
def clamp_scales(params: dict[str, torch.nn.Parameter], max_scale: float, count: bool = True) -> int:
    """Project ``log_scales`` onto ``<= log(max_scale)`` in place (CoCo4D App. A: 0.2).

    Returns:
        Number of Gaussians that had at least one axis clamped (0 without ``count``, which spares
        the fit loop a wait for the device).
    """
    if not max_scale > 0:
        raise ValueError(f"densify.clamp_scales: max_scale must be > 0, got {max_scale!r}")
    ls = params["log_scales"]
    limit = math.log(max_scale)
    hit = int((ls > limit).any(-1).sum()) if count else 0
    ls.data.clamp_(max=limit)
    return hit


@torch.no_grad()
def _reset_opacity(params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, value: float) -> None:
    p = params["logit_opacities"]
    p.data.clamp_(max=math.log(value / (1.0 - value)))
    for v in optimizer.state.get(p, {}).values():
        if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == p.shape[0]:
            v.zero_()


# -- the step ----------------------------------------------------------------------------------
@torch.no_grad()
def step(
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    state: DensifyState,
    step: int,
    config: DensifyConfig,
    scene_extent: float,
    generator: torch.Generator | None = None,
) -> dict[str, int]:
    """Run adaptive density control for one iteration (call after ``optimizer.step()``).

    Args:
        params: ``{"means": [N,3], "quats": [N,4], "log_scales": [N,3], "logit_opacities": [N],
            "sh": [N,K,3], ...}`` ``nn.Parameter``s; replaced in place when the set changes.
        optimizer: the Adam optimiser over (some of) ``params``; its ``param_groups`` and state
            are updated in place.
        state: accumulators from :func:`accumulate`; zeroed (resized) after a refinement.
        step: optimizer steps done so far (1 after the first update).
        config: schedule and thresholds.
        scene_extent: scene radius in world units (3DGS: 1.1 x the camera-centre radius).
        generator: random source for split sampling (same generator state, same result).

    Returns:
        ``{"cloned", "split", "pruned", "reset", "clamped", "n"}`` counts (``n`` after the step;
        ``clamped`` is counted on refinement steps only).

    Raises:
        ValueError: missing keys, inconsistent row counts, or a state sized for another count.
    """
    n = _check_params(params)
    if not scene_extent > 0:
        raise ValueError(f"densify.step: scene_extent must be > 0, got {scene_extent!r}")
    out = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0, "clamped": 0, "n": n}
    if config.is_refine_step(step):
        if state.grad2d is None:
            state.reset(n, params["means"].device)
        if state.n != n:
            raise ValueError(f"densify.step: state holds {state.n} Gaussians, params hold {n}; "
                             f"call state.reset({n}) after changing the set outside densify.step")
        avg = state.grad2d / state.count.clamp_min(1)
        high = avg > config.grad_threshold
        big = torch.exp(params["log_scales"]).amax(-1) > config.grow_scale3d * scene_extent
        clone, split = high & ~big, high & big
        growth = int(clone.sum() + split.sum())  # a split adds two and removes one
        if config.max_gaussians is not None and n + growth > config.max_gaussians:
            budget = max(config.max_gaussians - n, 0)
            _log_once(f"densify: max_gaussians={config.max_gaussians} reached; growth is limited to the "
                      "highest-gradient candidates from now on (raise the cap for more detail)")
            chosen = torch.zeros_like(high)
            if budget:
                score = torch.where(high, avg, torch.full_like(avg, -1.0))
                chosen[torch.topk(score, budget).indices] = True
            clone, split = clone & chosen, split & chosen
        out["cloned"], out["split"] = int(clone.sum()), int(split.sum())
        if out["cloned"] or out["split"]:
            _grow(params, optimizer, clone, split, config, generator)
        m = params["means"].shape[0]
        remove = torch.sigmoid(params["logit_opacities"]) < config.prune_opacity
        if config.prune_scale3d is not None:
            remove |= torch.exp(params["log_scales"]).amax(-1) > config.prune_scale3d * scene_extent
        if config.prune_scale2d is not None:
            # Rows after growth: survivors, clone copies (their source's radius), split children (0).
            r = state.max_radii
            radii = torch.cat([r[~split], r[clone], r.new_zeros(2 * out["split"])])
            remove |= radii > config.prune_scale2d
        n_remove = int(remove.sum())
        if n_remove == m:
            _log_once("densify: pruning would remove every Gaussian; skipped (check the thresholds, "
                      "scene_extent and the learning rates)", logging.WARNING)
        elif n_remove:
            _prune(params, optimizer, remove)
            out["pruned"] = n_remove
        state.reset(params["means"].shape[0], params["means"].device)
    if config.is_reset_step(step):
        _reset_opacity(params, optimizer, config.reset_opacity)
        out["reset"] = 1
    if config.max_scale is not None:
        out["clamped"] = clamp_scales(params, config.max_scale, count=config.is_refine_step(step))
    out["n"] = params["means"].shape[0]
    return out


# -- learning rate -----------------------------------------------------------------------------
def exponential_lr(
    step: int,
    lr_init: float,
    lr_final: float,
    max_steps: int,
    delay_steps: int = 0,
    delay_mult: float = 1.0,
) -> float:
    """Log-linear decay from ``lr_init`` (step 0) to ``lr_final`` (``max_steps`` and after).

    ``lr = exp((1 - t) log lr_init + t log lr_final)``, ``t = clip(step / max_steps, 0, 1)``, the
    3DGS position schedule (e.g. CoCo4D's 0.001 -> 0.00001), optionally multiplied by 3DGS's
    warm-up ``delay_mult + (1 - delay_mult) sin(pi/2 clip(step / delay_steps, 0, 1))``.

    Raises:
        ValueError: non-positive learning rates or ``max_steps < 1``.
    """
    if not (lr_init > 0 and lr_final > 0):
        raise ValueError(f"exponential_lr: lr_init and lr_final must be > 0, got {lr_init!r}, {lr_final!r}")
    if max_steps < 1:
        raise ValueError(f"exponential_lr: max_steps must be >= 1, got {max_steps!r}")
    t = min(max(step / max_steps, 0.0), 1.0)
    lr = math.exp((1.0 - t) * math.log(lr_init) + t * math.log(lr_final))
    if delay_steps > 0:
        lr *= delay_mult + (1.0 - delay_mult) * math.sin(0.5 * math.pi * min(max(step / delay_steps, 0.0), 1.0))
    return lr
