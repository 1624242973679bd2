# SPDX-License-Identifier: Apache-2.0
"""Depth maps: what their numbers mean (the depth kinds) and the conversions between kinds.

Public API:
    RELATIVE_DISPARITY, METRIC_DEPTH, DEPTH_KINDS   the kinds a depth map can be of
    check_depth_kind(kind, who)         ValueError naming ``who`` for an unknown kind
    to_z_depth(raw, kind)               a map of ``kind`` -> z-depth-like map (0 = no surface)
    align_disparity_near_far(disparity, near, far)   relative disparity -> metric z-depth, under a
                                        stated assumption about the nearest and farthest surface
    DisparityAlignment                  its result: z-depth, the scale and shift used, the disparity range
    depth_from_image(image, kind, name) a depth IMAGE (from any node) -> ``[H,W]`` values of ``kind``

Design notes:
    Two kinds exist, and every stage that lifts an image to 3D says which one it holds:

    * :data:`METRIC_DEPTH`: z-depth (distance along the optical axis) in metres, larger = farther.
      Metric estimators (Depth Anything V2 metric checkpoints, UniDepth, MoGe) give this.
    * :data:`RELATIVE_DISPARITY`: affine-invariant disparity, ``1/z = s·d + b`` with an unknown
      scale ``s > 0`` and shift ``b``, larger = nearer (relative Depth Anything V2 and the
      "near = white" depth pictures of ControlNet-style nodes). A value ``<= 0`` marks a pixel
      without a surface (sky, infinitely far), the convention of Depth Anything's clamped output.

    ``to_z_depth`` of a relative disparity is ``1/d``: correct up to scale only when the shift ``b``
    is 0. Lifting ``1/d`` gives ``P' = P / (s + b·z)``: a projective distortion of the scene about
    the camera centre. Planes stay planes, but depth is stretched or squashed by an amount that
    changes with distance (with ``b > 0`` everything is pulled in front of ``1/b``), so angles
    between surfaces and proportions come out wrong, and no rescaling undoes that. Consumers that
    need true geometry either require :data:`METRIC_DEPTH` or align the disparity explicitly
    (``align_disparity_near_far``, CoCo4D's ``depth_align``).

    Torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "RELATIVE_DISPARITY",
    "METRIC_DEPTH",
    "DEPTH_KINDS",
    "check_depth_kind",
    "to_z_depth",
    "DisparityAlignment",
    "align_disparity_near_far",
    "depth_from_image",
]

RELATIVE_DISPARITY = "relative_disparity"
METRIC_DEPTH = "metric_depth"
DEPTH_KINDS = (RELATIVE_DISPARITY, METRIC_DEPTH)


def check_depth_kind(kind: str, who: str) -> None:
    """Raise ``ValueError`` naming ``who`` unless ``kind`` is one of :data:`DEPTH_KINDS`."""
    if kind not in DEPTH_KINDS:
        raise ValueError(f"{who}: depth kind must be one of {DEPTH_KINDS}, got {kind!r}")


def to_z_depth(raw: Tensor, kind: str) -> Tensor:
    """A depth map of ``kind`` -> z-depth-like map of the same shape, 0 marking no surface.

    Metric depth passes through (negative values become 0). Relative disparity becomes ``1/d``
    where ``d > 0`` and 0 elsewhere: a pseudo-depth with no unit, exact only up to the disparity's
    unknown shift (see the module notes).

    Raises:
        ValueError: an unknown ``kind``.
    """
    check_depth_kind(kind, "to_z_depth")
    if kind == METRIC_DEPTH:
        return raw.float().clamp_min(0.0)
    disparity = raw.float()
    return torch.where(disparity > 0, 1.0 / disparity.clamp_min(1e-12), torch.zeros_like(disparity))


@dataclass
class DisparityAlignment:
    """Result of :func:`align_disparity_near_far`.

    Attributes:
        depth: ``[H,W]`` metric z-depth (0 where the disparity had no surface).
        scale, shift: the ``s``, ``b`` of ``1/z = s·d + b`` that were applied.
        disparity_range: ``(d_min, d_max)`` over the pixels with a surface.
    """

    depth: Tensor
    scale: float
    shift: float
    disparity_range: tuple[float, float]


def align_disparity_near_far(disparity: Tensor, near: float, far: float, name: str = "disparity") -> DisparityAlignment:
    """Affine-invariant disparity -> metric z-depth, assuming where the nearest and farthest surface lie.

    A relative disparity ``d`` satisfies ``1/z = s·d + b`` with ``s > 0`` and ``b`` unknown; two
    metric facts fix them. With no metric reference in the picture, this takes them from the
    caller: **the pixel of largest disparity lies at ``near`` metres and the pixel of smallest
    positive disparity at ``far`` metres**. Then ``s = (1/near - 1/far) / (d_max - d_min)`` and
    ``b = 1/far - s·d_min``, and every pixel gets ``z = 1 / (s·d + b)``, which lies in
    ``[near, far]``. The result is exact when the assumption holds; when it does not, the error
    is the assumption's: a wrong overall distance only scales the scene, a wrong ratio
    ``far / near`` distorts it (depth stretched or squashed unevenly, angles changed). The
    extremes are single pixels, so an outlier disparity (a speck of sky the model did not zero)
    sets ``far``; pixels with ``d <= 0`` keep no surface (0).

    Args:
        disparity: ``[H,W]`` (or any shape) relative disparity.
        near: metres of the nearest surface, ``> 0``.
        far: metres of the farthest surface, ``> near``.
        name: how errors name the input.

    Returns:
        :class:`DisparityAlignment`.

    Raises:
        ValueError: ``near`` / ``far`` out of range, a disparity with no positive finite value,
            or a constant one (no range to align).
    """
    near, far = float(near), float(far)
    if not (near > 0 and far > near and far < float("inf")):
        raise ValueError(f"{name}: alignment needs 0 < near < far (metres), got near={near}, far={far}")
    d = disparity.detach().float()
    valid = torch.isfinite(d) & (d > 0)
    if not bool(valid.any()):
        raise ValueError(f"{name}: the disparity has no positive finite value; nothing to align")
    d_min, d_max = float(d[valid].min()), float(d[valid].max())
    if not d_max > d_min:
        raise ValueError(f"{name}: the disparity is constant ({d_min:g}) over every pixel with a surface; "
                         f"a scale and shift cannot be fixed from near={near}, far={far}")
    s = (1.0 / near - 1.0 / far) / (d_max - d_min)
    b = 1.0 / far - s * d_min
    inv = (s * d.double() + b).float()
    z = torch.where(valid, 1.0 / inv.clamp_min(1e-12), torch.zeros_like(d))
    return DisparityAlignment(z, s, b, (d_min, d_max))


def depth_from_image(image: Tensor, kind: str, name: str = "depth") -> Tensor:
    """A depth IMAGE from another node -> ``[H,W]`` float32 values of ``kind`` (the first image).

    The IMAGE carries no unit, so its kind is the caller's statement. Checks that it is a depth map
    and not a picture of one: every channel must hold the same value (a colour-mapped depth
    picture is refused), and a map declared :data:`METRIC_DEPTH` whose values span exactly 0..1
    is refused as a min-max normalised depth picture (the "inverse_normalized" / "normalized"
    previews of depth nodes), which has lost its metres.

    Raises:
        ValueError: naming ``name``: not an IMAGE, channels that differ, a normalised picture
            declared metric, or an unknown ``kind``.
    """
    check_depth_kind(kind, name)
    if not isinstance(image, Tensor) or image.dim() not in (3, 4):
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected a depth IMAGE [B,H,W,C], got {got}")
    x = image if image.dim() == 4 else image[None]
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected a depth IMAGE [B,H,W,C] with C in (1, 3, 4), got {tuple(x.shape)}")
    x = x[0].detach().float()
    channels = x[..., :3] if x.shape[-1] >= 3 else x
    spread = float((channels.amax(-1) - channels.amin(-1)).abs().max())
    if spread > 1e-5 * max(1.0, float(channels.abs().max())):
        raise ValueError(f"{name}: the channels of the depth IMAGE differ (by up to {spread:.3g}); expected a "
                         "depth map with the same value in every channel, not a colour-mapped picture")
    values = channels[..., 0].contiguous()
    if kind == METRIC_DEPTH and bool(torch.isfinite(values).all()) and float(values.min()) == 0.0 \
            and float(values.max()) == 1.0:
        raise ValueError(f"{name}: the depth IMAGE spans exactly 0..1, the signature of a min-max normalised "
                         "depth picture, which has no metres; give z-depth in metres (e.g. Gen4D Depth with "
                         "depth_mode 'metric' and a metric model), or declare it relative_disparity if it is "
                         "a 'near = white' disparity picture")
    return values
