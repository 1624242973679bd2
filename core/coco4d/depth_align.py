# SPDX-License-Identifier: Apache-2.0
"""Depth inpainting by alignment: a monocular prediction made continuous with a rendered depth map.

Public API:
    RELATIVE_DISPARITY, METRIC_DEPTH       estimator output kinds (defined in ``core.formats.depth``)
    robust_scale_shift(pred, target, valid)     robust least-squares ``target ≈ s * pred + b``
    align_to_rendered(pred, kind, rendered, known)   prediction -> z-depth in the rendered scene's units
    blend_seam(depth, rendered, known, width)   pull the aligned depth onto the rendered depth across the seam
    inpaint_depth(pred, kind, rendered, known, seam_width)   alignment + seam blend (CoCo4D §3.2)
    DepthAlignment                          the result: depth, validity, scale, shift, inlier count
    DepthInpaintFn                          signature of a learned depth-inpainting backend

Design notes:
    CoCo4D §3.2 projects the newly inpainted pixels of an outpaint pose with "a depth inpainting
    model that fills the depth map rendered from the Gaussians at that pose" (Invisible Stitch in
    the paper). Without such a model the same goal -- depth that agrees with the rendered depth where
    the scene is already known and continues it smoothly into the hole -- is reached in two steps:

    1. *Alignment in the estimator's native space.* A relative estimator gives affine-invariant
       disparity, a metric one z-depth up to its own scale error. On the known pixels (rendered
       alpha high, rendered depth > 0, finite prediction) the rendered depth is mapped to the same
       space (``1/z`` for disparity) and ``s, b`` of ``target ≈ s·pred + b`` are estimated by
       iteratively reweighted least squares with Tukey's biweight. The start point is a median /
       MAD estimate (50 % breakdown), the residual scale is ``1.4826·MAD`` floored at the inputs'
       rounding level times the target's magnitude, so exact data gives the exact ordinary least-squares
       solution and gross outliers (wrong depth at silhouettes, reflections) get weight 0.
    2. *Seam blend.* The remaining log-depth residual ``log z_render - log z_aligned`` on the known
       pixels is propagated into the hole ring by ring (each pass fills the pixels next to the
       filled region with the mean of their filled 3x3 neighbours: a distance-ordered diffusion),
       and applied with a weight falling linearly from 1 at the seam to 0 at ``width`` pixels.
       Known pixels keep the rendered depth exactly; new pixels next to them match it up to the
       local residual mean, far ones keep the aligned prediction. Multiplicative (log) residuals
       keep the correction meaningful across large depth ranges.

    Everything is vectorised over pixels; the only loops run over IRLS iterations and seam rings.
    A learned depth-inpainting backend plugs in through :data:`DepthInpaintFn` (the outpaint
    pipeline calls it instead of :func:`inpaint_depth` when given).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..formats.depth import DEPTH_KINDS, METRIC_DEPTH, RELATIVE_DISPARITY

__all__ = [
    "RELATIVE_DISPARITY",
    "METRIC_DEPTH",
    "DEPTH_KINDS",
    "DepthAlignment",
    "DepthInpaintFn",
    "robust_scale_shift",
    "align_to_rendered",
    "blend_seam",
    "inpaint_depth",
]

logger = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826
_TUKEY_C = 4.685

# fn(image [H,W,3], rendered_depth [H,W] (0 = unknown), known [H,W] bool) -> z-depth [H,W] (<= 0 / nan = invalid)
DepthInpaintFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class DepthAlignment:
    """Outcome of :func:`inpaint_depth` / :func:`align_to_rendered`.

    Attributes:
        depth: ``[H,W]`` z-depth in the rendered scene's units (0 where invalid).
        valid: ``[H,W]`` bool, where ``depth`` is usable (finite and positive).
        scale, shift: the native-space affine map ``s·pred + b`` that was applied.
        inliers: known pixels with non-zero final weight; ``known`` the known pixels used.
        fallback: why no alignment could be estimated (None when it was).
    """

    depth: Tensor
    valid: Tensor
    scale: float
    shift: float
    inliers: int
    known: int
    fallback: str | None = None


def _check_maps(who: str, **maps: Tensor) -> tuple[int, int]:
    shape = None
    for name, value in maps.items():
        if not isinstance(value, Tensor) or value.dim() != 2 or 0 in value.shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{who}: {name} must be a non-empty [H,W] tensor, got {got}")
        if shape is None:
            shape = tuple(value.shape)
        elif tuple(value.shape) != shape:
            raise ValueError(f"{who}: {name} is {tuple(value.shape)} but the other maps are {shape}")
    return shape  # type: ignore[return-value]


def _median(x: Tensor) -> Tensor:
    return x.median() if x.numel() else x.new_zeros(())


def _weighted_affine(p: Tensor, t: Tensor, w: Tensor, scale_only: bool) -> tuple[Tensor, Tensor] | None:
    """Closed-form weighted least squares of ``t ≈ s p + b``; None when degenerate."""
    sw = w.sum()
    if sw <= 0:
        return None
    if scale_only:
        den = (w * p * p).sum()
        if den <= 0:
            return None
        return (w * p * t).sum() / den, p.new_zeros(())
    mp, mt = (w * p).sum() / sw, (w * t).sum() / sw
    var = (w * (p - mp) ** 2).sum()
    if var <= 1e-20 * sw * (mp.abs() + 1.0) ** 2:
        return None
    s = (w * (p - mp) * (t - mt)).sum() / var
    return s, mt - s * mp


def robust_scale_shift(pred: Tensor, target: Tensor, valid: Tensor | None = None, iterations: int = 30,
                       scale_only: bool = False, tukey_c: float = _TUKEY_C) -> tuple[float, float, Tensor]:
    """Robust fit of ``target ≈ s * pred + b`` (IRLS with Tukey's biweight).

    Args:
        pred: ``[...]`` predicted values (any shape).
        target: ``[...]`` target values, same shape.
        valid: optional bool ``[...]`` of the entries to use (non-finite entries are always dropped).
        iterations: IRLS iterations (stops early once ``s, b`` no longer change).
        scale_only: fit ``target ≈ s * pred`` (``b = 0``).
        tukey_c: Tukey constant in units of the robust residual scale (4.685: 95 % efficiency).

    Returns:
        ``(s, b, weights)`` with the final IRLS weights on the used entries (``[M]``).

    Raises:
        ValueError: shape mismatch, or fewer than two usable entries.
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor) or pred.shape != target.shape:
        raise ValueError(f"robust_scale_shift: pred and target must be tensors of one shape, got "
                         f"{getattr(pred, 'shape', type(pred).__name__)} and "
                         f"{getattr(target, 'shape', type(target).__name__)}")
    use = torch.isfinite(pred) & torch.isfinite(target)
    if valid is not None:
        if valid.shape != pred.shape:
            raise ValueError(f"robust_scale_shift: valid must be {tuple(pred.shape)}, got {tuple(valid.shape)}")
        use &= valid.bool()
    eps = max(torch.finfo(pred.dtype).eps if pred.is_floating_point() else 0.0,
              torch.finfo(target.dtype).eps if target.is_floating_point() else 0.0, 1e-15)
    p, t = pred[use].double(), target[use].double()
    if p.numel() < 2:
        raise ValueError(f"robust_scale_shift: need at least 2 usable entries, got {p.numel()}")
    # Start: 50 %-breakdown median / MAD estimate.
    mad_p = _median((p - _median(p)).abs())
    mad_t = _median((t - _median(t)).abs())
    s = mad_t / mad_p if mad_p > 0 else torch.ones((), dtype=p.dtype)
    if scale_only:
        ratio = t / p
        s = _median(ratio[torch.isfinite(ratio)]) if torch.isfinite(ratio).any() else s
        b = p.new_zeros(())
    else:
        b = _median(t - s * p)
    # Residuals at the inputs' rounding level count as exact fits (weight 1).
    floor = 16.0 * eps * (mad_t + t.abs().mean() + 1e-12)
    w = torch.ones_like(p)
    for _ in range(max(int(iterations), 1)):
        r = t - (s * p + b)
        sigma = torch.clamp(_MAD_TO_SIGMA * _median(r.abs()), min=floor)
        u = r / (tukey_c * sigma)
        w = torch.where(u.abs() < 1.0, (1.0 - u * u) ** 2, torch.zeros_like(u))
        solved = _weighted_affine(p, t, w, scale_only)
        if solved is None:
            break
        s_new, b_new = solved
        done = (s_new - s).abs() <= 1e-12 * (s.abs() + 1e-12) and (b_new - b).abs() <= 1e-12 * (b.abs() + 1.0)
        s, b = s_new, b_new
        if done:
            break
    return float(s), float(b), w.float()


def _to_native(depth: Tensor, kind: str) -> Tensor:
    if kind == METRIC_DEPTH:
        return depth
    return torch.where(depth > 0, 1.0 / depth.clamp_min(1e-12), torch.zeros_like(depth))


def _from_native(values: Tensor, kind: str) -> Tensor:
    if kind == METRIC_DEPTH:
        z = values
    else:
        z = torch.where(values > 0, 1.0 / values.clamp_min(1e-12), torch.zeros_like(values))
    return torch.where(torch.isfinite(z) & (z > 0), z, torch.zeros_like(z))


def _check_kind(kind: str, who: str) -> None:
    if kind not in DEPTH_KINDS:
        raise ValueError(f"{who}: depth kind must be one of {DEPTH_KINDS}, got {kind!r}")


def align_to_rendered(pred: Tensor, kind: str, rendered: Tensor, known: Tensor, min_known: int = 16,
                      iterations: int = 30) -> DepthAlignment:
    """Map a depth-model prediction into the rendered scene's depth units.

    Args:
        pred: ``[H,W]`` estimator output: disparity for :data:`RELATIVE_DISPARITY`, z-depth for
            :data:`METRIC_DEPTH`; non-finite values are invalid.
        kind: the estimator's kind.
        rendered: ``[H,W]`` rendered z-depth (0 where nothing was rendered).
        known: ``[H,W]`` bool, pixels whose rendered depth is trusted (alpha high).
        min_known: fewer usable known pixels than this -> no alignment (``fallback`` says why);
            metric predictions are then used as they are, disparity as ``1/pred`` scaled to the
            median rendered depth (or left unscaled when nothing is rendered).
        iterations: IRLS iterations.

    Returns:
        :class:`DepthAlignment` over the whole image.
    """
    _check_kind(kind, "align_to_rendered")
    _check_maps("align_to_rendered", pred=pred, rendered=rendered, known=known)
    pred = pred.float()
    rendered = rendered.float()
    finite = torch.isfinite(pred)
    usable = known.bool() & finite & (rendered > 0) & torch.isfinite(rendered)
    if kind == METRIC_DEPTH:
        usable &= pred > 0
    count = int(usable.sum())
    if count >= max(int(min_known), 2):
        target = _to_native(rendered, kind)
        try:
            s, b, w = robust_scale_shift(pred, target, usable, iterations)
        except ValueError:
            s, b, w = None, None, None
        if s is not None and s > 0:
            z = _from_native(s * torch.where(finite, pred, torch.zeros_like(pred)) + b, kind)
            z = torch.where(finite, z, torch.zeros_like(z))
            return DepthAlignment(z, z > 0, s, b, int((w > 0).sum()), count)
        reason = "the robust fit was degenerate or gave a non-positive scale"
    else:
        reason = f"only {count} known pixels with valid depth (need {max(int(min_known), 2)})"
    clean = torch.where(finite, pred, torch.zeros_like(pred))
    z = _from_native(clean, kind)
    s = 1.0
    if kind == RELATIVE_DISPARITY:
        ref = rendered[(rendered > 0) & torch.isfinite(rendered)]
        if ref.numel() and (z > 0).any():
            s = float(_median(z[z > 0]) / _median(ref))  # disparity scale that maps median z onto it
            z = z / s
    logger.warning("depth alignment: %s; using the prediction %s", reason,
                   "as metric depth" if kind == METRIC_DEPTH else "as 1/disparity")
    return DepthAlignment(z, z > 0, s, 0.0, 0, count, fallback=reason)


def blend_seam(depth: Tensor, rendered: Tensor, known: Tensor, width: int = 8,
               valid: Tensor | None = None) -> Tensor:
    """Make ``depth`` continuous with ``rendered`` across the border of ``known``.

    Args:
        depth: ``[H,W]`` aligned z-depth (> 0 where valid).
        rendered: ``[H,W]`` rendered z-depth.
        known: ``[H,W]`` bool, where ``rendered`` is trusted.
        width: seam width in pixels: the correction decays linearly to 0 over this distance.
        valid: ``[H,W]`` bool where ``depth`` is usable (default ``depth > 0``).

    Returns:
        ``[H,W]`` depth: ``rendered`` on known pixels, the aligned depth times
        ``exp(w(d) · r(d))`` in the hole (``r`` = log residual propagated from the seam,
        ``w(d) = 1 - d/(width+1)`` at ring distance ``d``), unchanged beyond ``width``.
    """
    h, w_ = _check_maps("blend_seam", depth=depth, rendered=rendered, known=known)
    if width < 0:
        raise ValueError(f"blend_seam: width must be >= 0, got {width}")
    valid = (depth > 0) if valid is None else valid.bool() & (depth > 0)
    known = known.bool() & (rendered > 0) & torch.isfinite(rendered)
    both = known & valid
    out = torch.where(known, rendered, torch.where(valid, depth, torch.zeros_like(depth)))
    if width == 0 or not both.any():
        return out
    residual = torch.where(both, rendered.clamp_min(1e-12).log() - depth.clamp_min(1e-12).log(),
                           torch.zeros_like(depth))
    filled = both.clone()
    ring = torch.zeros(h, w_, dtype=torch.long, device=depth.device)
    kernel = torch.ones(1, 1, 3, 3, dtype=depth.dtype, device=depth.device)
    for d in range(1, int(width) + 1):
        f = filled.to(depth.dtype)[None, None]
        num = F.conv2d((residual * filled)[None, None], kernel, padding=1)[0, 0]
        den = F.conv2d(f, kernel, padding=1)[0, 0]
        new = (~filled) & (den > 0)
        if not new.any():
            break
        residual = torch.where(new, num / den.clamp_min(1e-12), residual)
        ring = torch.where(new, torch.full_like(ring, d), ring)
        filled |= new
    weight = torch.where(ring > 0, 1.0 - ring.to(depth.dtype) / (width + 1.0), torch.zeros_like(depth))
    hole = valid & ~known
    blended = depth * torch.exp(weight * residual)
    return torch.where(hole, blended, out)


def inpaint_depth(pred: Tensor, kind: str, rendered: Tensor, known: Tensor, seam_width: int = 8,
                  min_known: int = 16) -> DepthAlignment:
    """Depth for an outpainted view that agrees with the rendered depth (CoCo4D §3.2 depth inpainting).

    Aligns ``pred`` to ``rendered`` on ``known`` (:func:`align_to_rendered`) and blends the seam
    (:func:`blend_seam`). Known pixels get the rendered depth, hole pixels the aligned and blended
    prediction; ``valid`` marks pixels with a usable depth.
    """
    aligned = align_to_rendered(pred, kind, rendered, known, min_known)
    depth = blend_seam(aligned.depth, rendered.float(), known, seam_width, aligned.valid)
    aligned.depth = depth
    aligned.valid = torch.isfinite(depth) & (depth > 0)
    return aligned
