# SPDX-License-Identifier: Apache-2.0
"""MoGe4D building blocks: depth lifting, depth-guided motion normalisation and MAdaNorm.

Public API:
    official_pinhole      the fixed pinhole the official MoGe4D inference assumes (pixel K [3,3])
    backproject           z-depth [H,W] -> camera-space points [H,W,3] (pixel centres at +0.5)
    normalize_motion      trajectories [T,H,W,3] -> depth-normalised relative motion (paper eq. 1)
    denormalize_motion    exact inverse of ``normalize_motion``
    motion_tokens         motion features [B,C_m,h,w] resized onto a DiT token grid -> [B,N,C_m]
    MAdaNorm              motion-aware adaptive normalisation (paper eqs. 4-6)
    OFFICIAL_REFERENCE_HW   (540, 960): reference aspect of the official back-projection pinhole
    TRAINING_NORMALIZATION_HW  (720, 960): reference aspect of the official eq. 1 training targets
    motion_intrinsics     pixel K whose f/W, f/H are eq. 1's alpha for the released model
    depth_condition       z-depth [H,W] -> the DiT's depth condition image in [-1,1] (official min-max)
    valid_frame_counts    frame counts near a request that a Wan VAE takes (4k+1)
    fuse_motion           normalised motion [T,H,W,3] -> trajectories (eq. 1 inverse + initial points);
                          ``denormalisation="paper"`` (default) or ``"official"``
    MOTION_DENORMALISATIONS   ("paper", "official"): the two ways of fusing the decoded motion
    RELATIVE_DEPTH_CHOICES    ("refuse", "align_scale_shift"): what lifting does with a relative depth
    lift_depth            a depth map of a declared kind -> the metric z-depth MoGe4D lifts (§4.2, §4.4)
    check_depth_for_lift  the refusal of ``lift_depth``, before any depth is computed

Design notes:
    Camera axes follow ``core.engine.cameras`` (OpenCV: x right, y down, z forward); intrinsics are pixel
    intrinsics and the centre of pixel ``(i, j)`` is ``(j + 0.5, i + 0.5)``. Everything lives in the
    input image's camera frame (camera = identity), as in the official inference.

    Eq. 1 (MoGe4D §4.2): with ``ΔP_t = P_t - P_0`` and ``z = P_0^(z)`` (frame-0 depth of the point),
    ``Δx~ = α_x Δx / z``, ``Δy~ = α_y Δy / z``, ``Δz~ = Δz / z`` where ``α_x = f_x / W`` and
    ``α_y = f_y / H`` (focal lengths in pixels over the image size, i.e. the normalised focal
    lengths). ``P_0`` is the *reference* frame-0 point cloud handed in (points, or depth lifted
    with ``K``), not ``tracks[0]``: the paper's decoder outputs relative motion that is "fused with
    the initial point cloud", so both directions use the same reference and the inverse is exact.
    This matches the official ``normalize_track_z`` mode (x divided by ``z / f_x_norm`` etc.).

    MAdaNorm (§4.2, eqs. 4-6) is implemented as one modulated normalisation; a DiT block uses two
    instances (the attention input of eq. 5 and the MLP input of eq. 6). One Linear producing all
    four of ``α_1, α_2, β_1, β_2`` (eq. 4) is the same as two Linears producing two each. The gates
    ``γ`` are zero-initialised and the modulation is applied as a gated residual on the wrapped
    normalisation, ``y = LN(F) + γ ⊙ (α ⊙ LN(F) + β) = LN(F) ⊙ (1 + γ α) + γ β``, so a fresh module
    returns exactly ``LN(F)`` and a pretrained block is unchanged at the start of fine-tuning (see
    ``MAdaNorm``). This is the form of the official ``SpatialGuidanceModule``: there the Linear reads
    ``SiLU(S)`` (our default ``activation="silu"``), the result is split ``[α | β]`` in that order,
    and in a Wan block "LN(F)" is the block's timestep-modulated LayerNorm output
    (``LN(F)(1 + scale_t) + shift_t``), so ``MAdaNorm.modulate`` is applied after the AdaLN.

    Two reference sizes appear in the official code, and they differ: the inference back-projects
    depth with a pinhole derived from a 540 x 960 reference (``OFFICIAL_REFERENCE_HW``), while the
    training targets of eq. 1 were normalised with the focal lengths of a 720 x 960 reference at
    368 x 512 (``TRAINING_NORMALIZATION_HW``). The model therefore predicts motion in the 720 x 960
    normalisation; ``motion_intrinsics`` gives that K for denormalising. The official back-projection
    samples pixels at ``linspace(0, 1, W)`` (first and last pixel at the image borders); we keep
    pixel centres ``(j + 0.5) / W``, which differ by under half a pixel and keep ``K`` exact for
    reprojection.

    Paper and official inference disagree on the last step. The paper (§4.2, §4.4) de-normalises
    the decoded motion by reversing eq. 1 and fuses it with the initial points:
    ``P_t = P_0 + (Δx~ z / α_x, Δy~ z / α_y, Δz~ z)``. The official inference script, run with its
    ``normalize_track_z`` flag (the mode whose training targets are eq. 1), adds the decoder output
    to the back-projected points as it is, ``P_t = P_0 + (Δx~, Δy~, Δz~)``, while its training and
    VAE scripts do normalise with eq. 1. ``fuse_motion`` offers both (``denormalisation``); the
    paper's is the default until runs of the released weights settle which gives the right motion.
    Either way frame 0 is ``P_0``. In the official mode the motion does not grow with depth, so the
    scene's metric scale sets how large the motion looks; in the paper's mode eq. 1 is
    scale-invariant and only the depth's shape matters.

    MoGe4D lifts *metric* depth (UniDepthV2, §4.2 / §4.4). ``lift_depth`` takes a depth of a
    declared kind (``core.formats.depth``): metric depth is used as it is; a relative disparity
    (affine-invariant: unknown scale *and shift*) is refused, because ``1/d`` distorts the lifted
    geometry when the shift is not 0 (depth stretched unevenly, angles between surfaces changed;
    see ``core.formats.depth``) and eq. 1 removes only a scale. It is accepted only through the
    explicit ``align_scale_shift`` choice, which assumes the nearest and farthest surfaces lie at
    given distances (``core.formats.depth.align_disparity_near_far``).

    Torch only; no comfy / diffusers / transformers imports.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..formats.depth import METRIC_DEPTH, RELATIVE_DISPARITY, align_disparity_near_far, check_depth_kind, to_z_depth

__all__ = [
    "OFFICIAL_REFERENCE_HW",
    "official_pinhole",
    "backproject",
    "normalize_motion",
    "denormalize_motion",
    "motion_tokens",
    "MAdaNorm",
    "TRAINING_NORMALIZATION_HW",
    "motion_intrinsics",
    "depth_condition",
    "valid_frame_counts",
    "fuse_motion",
    "MOTION_DENORMALISATIONS",
    "RELATIVE_DEPTH_CHOICES",
    "lift_depth",
    "check_depth_for_lift",
]

OFFICIAL_REFERENCE_HW = (540, 960)
"""``(height, width)`` of the reference aspect the official inference derives its pinhole from."""

TRAINING_NORMALIZATION_HW = (720, 960)
"""``(height, width)`` of the reference aspect the official training used for eq. 1's focal lengths."""

MOTION_DENORMALISATIONS = ("paper", "official")
"""``fuse_motion`` modes: ``"paper"`` reverses eq. 1 (§4.2, §4.4); ``"official"`` adds the decoded motion as it is."""

RELATIVE_DEPTH_CHOICES = ("refuse", "align_scale_shift")
"""``lift_depth`` choices for a relative disparity: refuse it, or align it to an assumed near / far range."""


def official_pinhole(height: int, width: int, reference_hw: Sequence[int] = OFFICIAL_REFERENCE_HW) -> Tensor:
    """The fixed pinhole of the official MoGe4D inference, as pixel intrinsics.

    Reading of the official code (anchors §1.3): the camera is written in *normalised* image units
    (image spans ``[0, 1]`` on both axes) with principal point ``(0.5, 0.5)``. With a reference
    size ``H_r x W_r`` (540 x 960) and the working size ``H x W``:

    * if ``W_r / W > H_r / H``: ``fx_n = 1`` and ``fy_n = (W_r / H_r) / (W / H)``;
    * otherwise:               ``fx_n = (H_r / W_r) / (H / W)`` and ``fy_n = 1``.

    So the focal length equals the full image extent along the axis that the reference aspect
    "fills", and the other axis is rescaled by the ratio of the two aspects. In pixels this is
    ``fx = fx_n * W``, ``fy = fy_n * H``, ``cx = W / 2``, ``cy = H / 2``. For a working size with
    the reference aspect (e.g. 540 x 960) both ``fx_n`` and ``fy_n`` are 1 and ``fx = W``,
    ``fy = H``; for other aspects the pixels are not square (``fx != fy``), exactly as in the
    official code. ``α_x = fx_n`` and ``α_y = fy_n`` are then eq. 1's scaling factors.

    Args:
        height: working image height ``H`` in pixels.
        width: working image width ``W`` in pixels.
        reference_hw: ``(H_r, W_r)`` of the reference aspect; default ``(540, 960)``.

    Returns:
        ``[3,3]`` float32 pixel intrinsics.

    Raises:
        ValueError: for a non-positive size.
    """
    h, w = int(height), int(width)
    hr, wr = (float(v) for v in reference_hw)
    if h <= 0 or w <= 0 or hr <= 0 or wr <= 0:
        raise ValueError(f"official_pinhole: sizes must be positive, got {h}x{w} and reference {hr}x{wr}")
    if wr / w > hr / h:
        fx_n, fy_n = 1.0, (wr / hr) / (w / h)
    else:
        fx_n, fy_n = (hr / wr) / (h / w), 1.0
    return torch.tensor([[fx_n * w, 0.0, 0.5 * w], [0.0, fy_n * h, 0.5 * h], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _check_K(K: Tensor) -> None:
    if not isinstance(K, Tensor) or K.shape != (3, 3):
        got = tuple(K.shape) if isinstance(K, Tensor) else type(K).__name__
        raise ValueError(f"K must be a [3,3] tensor, got {got}")
    if not bool(torch.isfinite(K).all()) or float(K[0, 0]) <= 0 or float(K[1, 1]) <= 0:
        raise ValueError("K must be finite with positive focal lengths")


def _check_depth(depth: Tensor, name: str, valid: Tensor | None = None) -> None:
    bad = ~(torch.isfinite(depth) & (depth > 0))
    if valid is not None:
        bad = bad & valid
    n = int(bad.sum())
    if n:
        raise ValueError(f"{name}: {n} pixel(s) with non-positive or non-finite depth")


def backproject(depth: Tensor, K: Tensor | None = None) -> Tensor:
    """Lift a z-depth map to camera-space points (OpenCV axes).

    Pixel ``(i, j)`` is sampled at its centre ``(u, v) = (j + 0.5, i + 0.5)`` and mapped to
    ``X = (u - cx) z / fx``, ``Y = (v - cy) z / fy``, ``Z = z``.

    Args:
        depth: ``[H,W]`` z-depth (distance along the optical axis), any sign is accepted here.
        K: ``[3,3]`` pixel intrinsics; ``None`` uses ``official_pinhole(H, W)``.

    Returns:
        ``[H,W,3]`` points in the camera frame, dtype/device of ``depth``.

    Raises:
        ValueError: for a depth that is not 2-D or a malformed ``K``.
    """
    if not isinstance(depth, Tensor) or depth.dim() != 2:
        got = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise ValueError(f"backproject: depth must be an [H,W] tensor, got {got}")
    h, w = depth.shape
    K = official_pinhole(h, w) if K is None else K
    _check_K(K)
    K = K.to(device=depth.device, dtype=depth.dtype)
    v = torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5
    u = torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5
    x = (u[None, :] - K[0, 2]) / K[0, 0] * depth
    y = (v[:, None] - K[1, 2]) / K[1, 1] * depth
    return torch.stack([x, y, depth], dim=-1)


def _reference(reference: Tensor, K: Tensor | None, valid: Tensor | None, name: str):
    """Frame-0 points ``[H,W,3]``, their depth ``[H,W]`` and eq. 1's ``(α_x, α_y, 1)`` ``[3]``."""
    if (
        not isinstance(reference, Tensor)
        or reference.dim() not in (2, 3)
        or (reference.dim() == 3 and reference.shape[-1] != 3)
    ):
        got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"{name}: reference must be depth0 [H,W] or points0 [H,W,3], got {got}")
    h, w = reference.shape[:2]
    if valid is not None and (not isinstance(valid, Tensor) or valid.shape != (h, w)):
        raise ValueError(f"{name}: valid must be an [H,W]=({h},{w}) bool tensor")
    K = official_pinhole(h, w) if K is None else K
    _check_K(K)
    if reference.dim() == 2:
        _check_depth(reference, f"{name}: depth0", valid)
        points0 = backproject(reference, K)
    else:
        _check_depth(reference[..., 2], f"{name}: points0 z", valid)
        points0 = reference
    one = torch.ones((), dtype=torch.float64)
    alpha = torch.stack([K[0, 0].double() / w, K[1, 1].double() / h, one]).to(reference.dtype)
    return points0, points0[..., 2], alpha.to(reference.device)


def _check_tracks(tracks: Tensor, hw, name: str) -> None:
    if not isinstance(tracks, Tensor) or tracks.dim() != 4 or tracks.shape[1:] != (*hw, 3):
        got = tuple(tracks.shape) if isinstance(tracks, Tensor) else type(tracks).__name__
        raise ValueError(f"{name}: expected a [T,{hw[0]},{hw[1]},3] tensor, got {got}")


def normalize_motion(tracks: Tensor, reference: Tensor, K: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
    """Depth-guided motion normalisation, MoGe4D eq. 1.

    ``ΔP_t = P_t - P_0``; ``(Δx~, Δy~, Δz~) = (α_x Δx / z, α_y Δy / z, Δz / z)`` with
    ``z = P_0^(z)``, ``α_x = f_x / W``, ``α_y = f_y / H``.

    Args:
        tracks: ``[T,H,W,3]`` camera-frame positions ``P_t`` of the frame-0 pixels.
        reference: frame-0 geometry, either ``depth0 [H,W]`` (lifted with ``backproject(depth0, K)``)
            or ``points0 [H,W,3]`` (used as ``P_0`` directly; ``K`` then only supplies ``α``).
        K: ``[3,3]`` pixel intrinsics; ``None`` uses ``official_pinhole(H, W)``.
        valid: optional ``[H,W]`` bool; pixels outside it are not validated and come out as 0.

    Returns:
        ``[T,H,W,3]`` normalised relative motion.

    Raises:
        ValueError: for malformed shapes, or a reference with non-positive / non-finite depth at
            (valid) pixels; the message names the number of offending pixels.
    """
    points0, z, alpha = _reference(reference, K, valid, "normalize_motion")
    _check_tracks(tracks, points0.shape[:2], "normalize_motion: tracks")
    z = z if valid is None else torch.where(valid, z, torch.ones_like(z))
    out = (tracks - points0) * alpha / z[..., None]
    return out if valid is None else torch.where(valid[..., None], out, torch.zeros_like(out))


def denormalize_motion(
    normalized: Tensor, reference: Tensor, K: Tensor | None = None, valid: Tensor | None = None
) -> Tensor:
    """Inverse of ``normalize_motion``: ``P_t = P_0 + (Δx~ z / α_x, Δy~ z / α_y, Δz~ z)``.

    Args:
        normalized: ``[T,H,W,3]`` normalised relative motion.
        reference: ``depth0 [H,W]`` or ``points0 [H,W,3]``, the same one used to normalise.
        K: ``[3,3]`` pixel intrinsics; ``None`` uses ``official_pinhole(H, W)``.
        valid: optional ``[H,W]`` bool; pixels outside it are returned as ``P_0`` (no motion).

    Returns:
        ``[T,H,W,3]`` trajectories in the camera frame.

    Raises:
        ValueError: as ``normalize_motion``.
    """
    points0, z, alpha = _reference(reference, K, valid, "denormalize_motion")
    _check_tracks(normalized, points0.shape[:2], "denormalize_motion: normalized")
    delta = normalized * z[..., None] / alpha
    if valid is not None:
        delta = torch.where(valid[..., None], delta, torch.zeros_like(delta))
    return points0 + delta


def motion_tokens(motion_features: Tensor, grid: Sequence[int]) -> Tensor:
    """Resize image motion features onto a DiT token grid (the "spatial alignment" before eq. 4).

    The features of the single input image are bilinearly resized (``align_corners=False``) to the
    token grid's ``hh x ww`` and repeated over its ``f`` latent frames; tokens are flattened
    frame-major, ``n = (t * hh + y) * ww + x``, the order of a DiT patchifier over ``(f, h, w)``.

    Args:
        motion_features: ``[B,C_m,h,w]`` patch-level motion features ``S``.
        grid: ``(f, hh, ww)`` token grid.

    Returns:
        ``[B, f*hh*ww, C_m]``.

    Raises:
        ValueError: for a malformed tensor or grid.
    """
    if not isinstance(motion_features, Tensor) or motion_features.dim() != 4:
        got = tuple(motion_features.shape) if isinstance(motion_features, Tensor) else type(motion_features).__name__
        raise ValueError(f"motion_features must be a [B,C_m,h,w] tensor, got {got}")
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be three positive ints (f, hh, ww), got {tuple(grid)}")
    f, hh, ww = (int(g) for g in grid)
    s = motion_features
    if s.shape[-2:] != (hh, ww):
        s = F.interpolate(s, size=(hh, ww), mode="bilinear", align_corners=False)
    s = s.flatten(2).transpose(1, 2)  # [B, hh*ww, C_m]
    return s.repeat(1, f, 1)


def motion_intrinsics(height: int, width: int) -> Tensor:
    """Pixel K whose ``f_x / W`` and ``f_y / H`` are eq. 1's ``α`` for the released 4D-STraG model.

    The official training targets were normalised with the pinhole rule of ``official_pinhole``
    applied to a 720 x 960 reference (``TRAINING_NORMALIZATION_HW``); this returns that K, to pass
    as ``K`` to ``normalize_motion`` / ``denormalize_motion`` / ``fuse_motion`` together with the
    back-projected ``points0`` as the reference (``K`` then only supplies ``α``).

    Args:
        height: working image height ``H``.
        width: working image width ``W``.

    Returns:
        ``[3,3]`` float32.
    """
    return official_pinhole(height, width, TRAINING_NORMALIZATION_HW)


def depth_condition(depth: Tensor) -> Tensor:
    """The depth image the 4D-STraG DiT is conditioned on (eq. 2's ``z_depth`` before the VAE).

    As the official training and inference: non-finite or tiny (``< 1e-5``) depths are set to 1,
    depths are clipped to ``[0, 10000]``, then min-max normalised over the image to ``[-1, 1]``
    (``2 (z - min) / (max - min + 1e-8) - 1``).

    Args:
        depth: ``[H,W]`` z-depth.

    Returns:
        ``[H,W]`` float32 in ``[-1, 1]``.

    Raises:
        ValueError: for a tensor that is not ``[H,W]``.
    """
    if not isinstance(depth, Tensor) or depth.dim() != 2:
        got = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise ValueError(f"depth_condition: depth must be an [H,W] tensor, got {got}")
    z = depth.float()
    bad = ~torch.isfinite(z) | (z < 1e-5)
    z = torch.where(bad, torch.ones_like(z), z.clamp(0.0, 10000.0))
    lo, hi = z.min(), z.max()
    return 2.0 * (z - lo) / (hi - lo + 1e-8) - 1.0


def valid_frame_counts(requested: int, temporal_compression: int = 4) -> tuple[int, int]:
    """The frame counts ``k * c + 1`` nearest below and above ``requested`` (``c`` = 4 for Wan).

    Returns:
        ``(below, above)``; equal to ``(requested, requested)`` when ``requested`` is valid.
    """
    c = int(temporal_compression)
    n = max(int(requested), 1)
    below = (n - 1) // c * c + 1
    above = below if below == n else below + c
    return below, above


def fuse_motion(
    normalized: Tensor,
    points0: Tensor,
    K: Tensor | None = None,
    valid: Tensor | None = None,
    denormalisation: str = "paper",
) -> Tensor:
    """Decoded normalised relative motion -> trajectories fused with the initial point cloud (§4.4).

    ``denormalisation`` picks how the decoded motion ``(Δx~, Δy~, Δz~)`` becomes a displacement:

    * ``"paper"`` (default; MoGe4D §4.2 / §4.4, "de-normalized by reversing our depth-guided
      motion normalization"): ``P_t = P_0 + (Δx~ z / α_x, Δy~ z / α_y, Δz~ z)`` with
      ``z = P_0^(z)`` and ``α`` from ``K`` (``denormalize_motion``).
    * ``"official"`` (the official inference script with ``normalize_track_z``):
      ``P_t = P_0 + (Δx~, Δy~, Δz~)``, the decoder output added as it is.

    In both, frame 0 is the initial point cloud itself, as in the official inference, whatever the
    model predicted for it, and pixels outside ``valid`` stay at ``P_0``.

    Args:
        normalized: ``[T,H,W,3]`` normalised relative motion.
        points0: ``[H,W,3]`` back-projected initial points (camera frame).
        K: pixel K supplying eq. 1's ``α`` (``motion_intrinsics(H, W)`` for the released model);
            ``None`` = ``official_pinhole(H, W)``.
        valid: optional ``[H,W]`` bool; pixels outside stay at ``P_0``.
        denormalisation: one of :data:`MOTION_DENORMALISATIONS`.

    Returns:
        ``[T,H,W,3]`` trajectories.

    Raises:
        ValueError: as ``denormalize_motion``, or an unknown ``denormalisation``.
    """
    if denormalisation not in MOTION_DENORMALISATIONS:
        raise ValueError(f"fuse_motion: denormalisation must be one of {MOTION_DENORMALISATIONS}, "
                         f"got {denormalisation!r}")
    if denormalisation == "paper":
        tracks = denormalize_motion(normalized, points0, K, valid)
    else:
        points, _z, _alpha = _reference(points0, K, valid, "fuse_motion")
        _check_tracks(normalized, points.shape[:2], "fuse_motion: normalized")
        delta = normalized.to(points.dtype)
        if valid is not None:
            delta = torch.where(valid[..., None], delta, torch.zeros_like(delta))
        tracks = points + delta
    if tracks.shape[0] > 0:
        tracks = torch.cat([points0[None].to(tracks.dtype), tracks[1:]], dim=0)
    return tracks


def lift_depth(
    raw: Tensor,
    kind: str,
    relative: str = "refuse",
    near: float = 1.0,
    far: float = 10.0,
    name: str = "depth",
) -> Tensor:
    """The metric z-depth MoGe4D lifts to the initial point cloud, from a depth map of a declared kind.

    MoGe4D back-projects metric depth (UniDepthV2, §4.2 / §4.4). A :data:`METRIC_DEPTH` map is used
    as it is (negative values become 0 = no surface). A :data:`RELATIVE_DISPARITY` map has an
    unknown scale and shift; ``1/d`` distorts the geometry whenever the shift is not 0, and eq. 1
    removes only a scale. So with ``relative="refuse"`` (default) it is refused, and with
    ``relative="align_scale_shift"`` it is made metric by assuming that its nearest pixel lies at
    ``near`` and its farthest pixel with a surface at ``far`` metres
    (``core.formats.depth.align_disparity_near_far``): exact when that holds, wrong by exactly
    that assumption otherwise.

    Args:
        raw: ``[H,W]`` depth map of ``kind``.
        kind: ``METRIC_DEPTH`` or ``RELATIVE_DISPARITY``.
        relative: one of :data:`RELATIVE_DEPTH_CHOICES`.
        near, far: metres of the assumed nearest / farthest surface (``align_scale_shift`` only).
        name: how errors name the input (e.g. ``"Gen4D_TrajectoryDiT.depth_model"``).

    Returns:
        ``[H,W]`` float32 z-depth in metres (0 = no surface).

    Raises:
        ValueError: naming ``name``: a relative disparity under ``"refuse"``, an unknown kind or
            choice, or an alignment that cannot be made.
    """
    check_depth_for_lift(kind, relative, name)
    if kind == METRIC_DEPTH:
        return to_z_depth(raw, kind)
    return align_disparity_near_far(raw, near, far, name).depth


def check_depth_for_lift(kind: str, relative: str = "refuse", name: str = "depth") -> None:
    """Raise what ``lift_depth`` would raise for a depth of ``kind`` under ``relative``, without the depth.

    Raises:
        ValueError: naming ``name``: an unknown kind or choice, or a relative disparity under ``"refuse"``.
    """
    check_depth_kind(kind, name)
    if relative not in RELATIVE_DEPTH_CHOICES:
        raise ValueError(f"{name}: relative_depth must be one of {RELATIVE_DEPTH_CHOICES}, got {relative!r}")
    if kind == RELATIVE_DISPARITY and relative == "refuse":
        raise ValueError(
            f"{name}: got a {RELATIVE_DISPARITY} depth (affine-invariant disparity, unknown scale and shift, e.g. a "
            f"relative Depth Anything V2 model); MoGe4D lifts metric depth (UniDepthV2 in the paper), and 1/disparity "
            f"distorts the geometry (depth stretched unevenly, angles between surfaces changed) when the unknown "
            f"shift is not 0. Give a {METRIC_DEPTH} depth (a metric model such "
            f"as Depth-Anything-V2-Metric-*-hf, or a z-depth IMAGE in metres from another node), or set "
            f"relative_depth to 'align_scale_shift' with align_near / align_far, the assumed distances in metres of "
            f"the nearest and farthest surface")


_ACTIVATIONS = ("silu", "none")


class MAdaNorm(nn.Module):
    """Motion-aware adaptive normalisation, MoGe4D eqs. 4-6.

    Eq. 4: ``α, β = Linear(act(S))`` token-wise (``S`` = motion features resized to the token grid,
    ``motion_tokens``; ``act`` = SiLU as in the official module, or none). Eqs. 5/6 feed
    ``γ α ⊙ LN(F) + γ β`` to the attention / MLP. Read literally, a zero gate would feed zeros to a
    pretrained block; like the official code we apply the gated term as a residual on the
    normalisation the module wraps:

        ``y = LN(F) + γ ⊙ (α ⊙ LN(F) + β) = LN(F) ⊙ (1 + γ α) + γ β``,   ``γ ∈ R^C``, initialised to 0,

    so a freshly built module returns exactly ``LN(F)`` (the plain normalisation) while gradients
    still reach ``γ`` (the Linear keeps its default, non-zero initialisation; the official code
    zero-initialises it too, which only matters for training from scratch). One instance serves
    one of eqs. 5 / 6; a block uses two. In a Wan block ``LN(F)`` is the timestep-modulated
    LayerNorm output and the block calls ``modulate`` on it.

    Args:
        dim: token width ``C``.
        motion_dim: motion feature width ``C_m``.
        norm: the normalisation to wrap, mapping ``[B,N,C] -> [B,N,C]``; default
            ``nn.LayerNorm(dim, eps=eps, elementwise_affine=False)``.
        eps: LayerNorm epsilon for the default ``norm``.
        activation: ``"silu"`` (official) or ``"none"``, applied to ``S`` before the Linear.
    """

    def __init__(
        self,
        dim: int,
        motion_dim: int,
        norm: nn.Module | None = None,
        eps: float = 1e-6,
        activation: str = "silu",
    ):
        super().__init__()
        if int(dim) < 1 or int(motion_dim) < 1:
            raise ValueError(f"MAdaNorm: dim and motion_dim must be positive, got {dim}, {motion_dim}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MAdaNorm: activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.dim, self.motion_dim, self.activation = int(dim), int(motion_dim), activation
        self.norm = norm if norm is not None else nn.LayerNorm(self.dim, eps=eps, elementwise_affine=False)
        self.linear = nn.Linear(self.motion_dim, 2 * self.dim)  # eq. 4: [α | β]
        self.gate = nn.Parameter(torch.zeros(self.dim))  # γ, zero-initialised

    def scale_shift(self, motion_tokens_: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 4: token-wise ``(α, β)``, each ``[B,N_s,C]``, from ``[B,N_s,C_m]`` motion tokens."""
        s = F.silu(motion_tokens_) if self.activation == "silu" else motion_tokens_
        alpha, beta = self.linear(s.to(self.linear.weight.dtype)).chunk(2, dim=-1)
        return alpha, beta

    def modulate(self, normed: Tensor, motion_tokens_: Tensor) -> Tensor:
        """``normed ⊙ (1 + γ α) + γ β`` on already-normalised tokens (eqs. 5 / 6 without the LN).

        Args:
            normed: ``[B,N,C]`` normalised (in a Wan block: AdaLN-modulated) tokens.
            motion_tokens_: ``[B,N_s,C_m]`` with ``N_s <= N``; tokens past ``N_s`` are left
                unchanged (zero ``α``, ``β``), as the official module pads them.

        Returns:
            ``[B,N,C]`` in the dtype of ``normed``.

        Raises:
            ValueError: for mismatched shapes.
        """
        if normed.dim() != 3 or normed.shape[-1] != self.dim:
            raise ValueError(f"MAdaNorm: tokens must be [B,N,{self.dim}], got {tuple(normed.shape)}")
        if (
            motion_tokens_.dim() != 3
            or motion_tokens_.shape[0] not in (1, normed.shape[0])
            or motion_tokens_.shape[-1] != self.motion_dim
            or motion_tokens_.shape[1] > normed.shape[1]
        ):
            raise ValueError(
                f"MAdaNorm: motion tokens must be [{normed.shape[0]},<= {normed.shape[1]},{self.motion_dim}], "
                f"got {tuple(motion_tokens_.shape)}"
            )
        alpha, beta = self.scale_shift(motion_tokens_)
        gate = self.gate.to(alpha.dtype)
        scale, shift = (gate * alpha).to(normed.dtype), (gate * beta).to(normed.dtype)
        n_s = motion_tokens_.shape[1]
        if n_s == normed.shape[1]:
            return normed * (1 + scale) + shift
        head = normed[:, :n_s] * (1 + scale) + shift
        return torch.cat([head, normed[:, n_s:]], dim=1)

    def forward(self, tokens: Tensor, motion_features: Tensor, grid: Sequence[int]) -> Tensor:
        """Normalise and modulate the tokens.

        Args:
            tokens: ``[B,N,C]`` block input ``F`` with ``N = f*hh*ww``.
            motion_features: ``[B,C_m,h,w]`` motion features ``S``.
            grid: ``(f, hh, ww)`` token grid of ``tokens``.

        Returns:
            ``[B,N,C]`` ``LN(F) + γ ⊙ (α ⊙ LN(F) + β)``.

        Raises:
            ValueError: for mismatched shapes.
        """
        if not isinstance(tokens, Tensor) or tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"MAdaNorm: tokens must be [B,N,{self.dim}], got {got}")
        if (
            isinstance(motion_features, Tensor)
            and motion_features.dim() == 4
            and (motion_features.shape[0] != tokens.shape[0] or motion_features.shape[1] != self.motion_dim)
        ):
            raise ValueError(
                f"MAdaNorm: motion_features must be [{tokens.shape[0]},{self.motion_dim},h,w], "
                f"got {tuple(motion_features.shape)}"
            )
        s = motion_tokens(motion_features, grid)
        if s.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"MAdaNorm: grid {tuple(grid)} has {s.shape[1]} tokens but tokens have N={tokens.shape[1]}"
            )
        return self.modulate(self.norm(tokens), s)
