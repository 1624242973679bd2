# SPDX-License-Identifier: Apache-2.0
"""Regularisers for deformation fields: plane TV, time smoothness, time L1, local rigidity.

Public API:
    plane_tv_loss(field, which)         total variation of the HexPlane planes (K-planes / 4DGS)
    time_smoothness_loss(field)         second differences along time of the space-time planes
    time_l1_loss(field)                 mean |1 - P| of the space-time planes (1 = static)
    knn(points, k)                      [N,k] nearest neighbours, self excluded, in row blocks
    knn_weights(means, index, lambda_w) exp(-lambda_w d^2) neighbour weights (Luiten et al.)
    rigidity_loss(...)                  local rigidity ("rigid") or isometry ("isometry") loss

Design notes:
    Every loss returns a 0-dim tensor that keeps the autograd graph. The plane losses accept a
    :class:`HexPlaneField` or a :class:`Deformation` and sum over planes and resolutions (the
    scale the 4DGS weights were tuned for); inside one plane they average. Suggested weights are
    in each docstring: 4DGS (Wu et al. 2024) uses ``plane_tv_weight = 2e-4``,
    ``time_smoothness_weight = 1e-3``, ``l1_time_planes = 1e-4`` (D-NeRF configs: 1e-4, 1e-2,
    1e-4); CoCo4D (§3.1, Eq. 4) adds the rigidity loss of Luiten et al. (Dynamic 3D Gaussians,
    3DV 2024; their weight 4, isometry 2, k = 20, lambda_w = 2000) and, for the background,
    a total-variation term (§3.2). CoCo4D gives no weight for either; callers choose.

    Rigidity here compares each time with the canonical set (the field deforms a canonical
    set), not consecutive frames as in Luiten et al.: for Gaussian ``i`` with neighbour ``j``,
    ``r_ij(t) = (μ_j,t − μ_i,t) − R_i,t R_i,0^{-1} (μ_j,0 − μ_i,0)`` and the loss is the
    (weighted) mean of ``||r_ij(t)||``; the isometry form is the mean of
    ``| ||μ_j,t − μ_i,t|| − ||μ_j,0 − μ_i,0|| |``. Both vanish for any rigid motion of the set.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any

import torch
from torch import Tensor

from .deformation import Deformation, HexPlaneField
from .gaussians import quat_to_rotmat

__all__ = [
    "plane_tv_loss",
    "time_smoothness_loss",
    "time_l1_loss",
    "knn",
    "knn_weights",
    "rigidity_loss",
]

log = logging.getLogger(__name__)

_KNN_BLOCK_ELEMENTS = 1 << 24  # distance-matrix entries per block (64 MiB in float32)


def _field(field: Any, who: str) -> HexPlaneField:
    if isinstance(field, Deformation):
        return field.field
    if isinstance(field, HexPlaneField):
        return field
    raise ValueError(f"{who}: field must be a HexPlaneField or a Deformation, got {type(field).__name__}")


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _zero(field: HexPlaneField) -> Tensor:
    p = next(field.parameters())
    return p.new_zeros(())


def _stacked_planes(field: HexPlaneField, which: str) -> list[Tensor]:
    """The chosen planes concatenated by shape, ``[K,F,A,B]`` per group (one kernel per group, not per plane)."""
    groups: dict[tuple[int, ...], list[Tensor]] = {}
    for _, plane in field.planes(which):
        groups.setdefault(tuple(plane.shape), []).append(plane)
    return [torch.cat(planes) for planes in groups.values()]


def _sum_of_plane_means(values: Tensor) -> Tensor:
    """``Σ_k mean(values[k])`` for a ``[K,...]`` stack: per-plane means summed, as the losses define."""
    return values.mean() * values.shape[0]


def plane_tv_loss(field: HexPlaneField | Deformation, which: str = "all") -> Tensor:
    """Total variation of the planes (K-planes, Fridovich-Keil et al. 2023, Eq. 5; 4DGS).

    For a plane ``P [1,F,A,B]``: ``mean((P[a+1,b] − P[a,b])²) + mean((P[a,b+1] − P[a,b])²)``,
    summed over the chosen planes and all resolutions. Suggested weight: 2e-4 (4DGS
    ``plane_tv_weight``; 1e-4 in its D-NeRF configs). 4DGS regularises only the spatial planes
    (``which="spatial"``); the default includes the space-time planes too.

    Args:
        field: a HexPlaneField or a Deformation.
        which: "all", "spatial" (xy, xz, yz) or "time" (xt, yt, zt).

    Returns:
        0-dim tensor, zero iff every chosen plane is constant along both axes.
    """
    f = _field(field, "plane_tv_loss")
    total = _zero(f)
    for p in _stacked_planes(f, which):
        total = total + _sum_of_plane_means((p[:, :, 1:, :] - p[:, :, :-1, :]).square()) \
            + _sum_of_plane_means((p[:, :, :, 1:] - p[:, :, :, :-1]).square())
    return total


def time_smoothness_loss(field: HexPlaneField | Deformation) -> Tensor:
    """Second-order smoothness along time of the space-time planes (K-planes Eq. 6; 4DGS).

    ``mean((P[..., τ+1] − 2 P[..., τ] + P[..., τ−1])²)`` per plane (time is the last axis),
    summed over xt, yt, zt and resolutions. Suggested weight: 1e-3 (4DGS
    ``time_smoothness_weight``; 1e-2 in its D-NeRF configs). Zero for planes linear in time.

    Returns:
        0-dim tensor.
    """
    f = _field(field, "time_smoothness_loss")
    total = _zero(f)
    for p in _stacked_planes(f, "time"):
        if p.shape[-1] >= 3:
            total = total + _sum_of_plane_means((p[..., 2:] - 2.0 * p[..., 1:-1] + p[..., :-2]).square())
    return total


def time_l1_loss(field: HexPlaneField | Deformation) -> Tensor:
    """Sparsity of motion: ``mean(|1 − P|)`` over the space-time planes (K-planes Eq. 7; 4DGS).

    Time planes equal to 1 make the Hadamard-product feature time-independent, i.e. static.
    Summed over xt, yt, zt and resolutions. Suggested weight: 1e-4 (4DGS ``l1_time_planes``).
    Zero at initialisation.

    Returns:
        0-dim tensor.
    """
    f = _field(field, "time_l1_loss")
    total = _zero(f)
    for p in _stacked_planes(f, "time"):
        total = total + _sum_of_plane_means((1.0 - p).abs())
    return total


def knn(points: Tensor, k: int, block_rows: int | None = None) -> Tensor:
    """Indices of the ``k`` nearest other points of every point, nearest first.

    Distances are computed with ``torch.cdist`` in blocks of rows, so memory is
    ``block_rows × N`` (about 2^24 entries by default) and never ``N × N`` for large ``N``; the
    point itself is excluded by index (duplicates of it are still valid neighbours).

    Args:
        points: ``[N,3]`` (any ``[N,D]``) float positions, finite.
        k: neighbours per point, ``1 <= k <= N-1``.
        block_rows: rows per block (default: ``max(1, 2^24 // N)``).

    Returns:
        ``[N,k]`` int64 indices.
    """
    if not isinstance(points, Tensor) or points.dim() != 2 or not points.is_floating_point():
        raise ValueError(f"knn: points must be a float tensor [N,3], got {_shape(points)}")
    n = points.shape[0]
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise ValueError(f"knn: k must be an integer in [1, N-1={n - 1}], got {k!r}")
    pts = points.detach()
    if not torch.isfinite(pts).all():
        raise ValueError("knn: points holds NaN/inf values")
    rows = block_rows if block_rows is not None else max(1, _KNN_BLOCK_ELEMENTS // max(n, 1))
    if not isinstance(rows, numbers.Integral) or isinstance(rows, bool) or rows < 1:
        raise ValueError(f"knn: block_rows must be a positive integer, got {block_rows!r}")
    out = torch.empty(n, int(k), dtype=torch.long, device=pts.device)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = torch.cdist(pts[start:stop], pts)  # [b,N]
        r = torch.arange(stop - start, device=pts.device)
        d[r, r + start] = float("inf")
        out[start:stop] = torch.topk(d, int(k), dim=1, largest=False, sorted=True).indices
    return out


def _check_index(knn_index: Any, n: int, who: str) -> Tensor:
    if not isinstance(knn_index, Tensor) or knn_index.dim() != 2 or knn_index.shape[0] != n \
            or knn_index.dtype not in (torch.int64, torch.int32) or knn_index.shape[1] < 1:
        raise ValueError(f"{who}: knn_index must be an integer tensor [N={n},k], got {_shape(knn_index)}")
    if knn_index.numel() and (int(knn_index.min()) < 0 or int(knn_index.max()) >= n):
        raise ValueError(f"{who}: knn_index values must lie in [0, {n - 1}]")
    return knn_index.long()


def knn_weights(canonical_means: Tensor, knn_index: Tensor, lambda_w: float = 2000.0) -> Tensor:
    """Neighbour weights ``w_ij = exp(−λ_w ||μ_j,0 − μ_i,0||²)`` (Luiten et al. 2024, λ_w = 2000).

    λ_w depends on the scene's scale (Luiten et al. used metric multi-camera captures); for a
    unit-sized object a smaller value (or no weights) is usually right.

    Args:
        canonical_means: ``[N,3]``.
        knn_index: ``[N,k]`` from :func:`knn`.
        lambda_w: falloff, >= 0.

    Returns:
        ``[N,k]`` weights in (0, 1].
    """
    if not isinstance(canonical_means, Tensor) or canonical_means.dim() != 2 or canonical_means.shape[1] != 3:
        raise ValueError(f"knn_weights: canonical_means must be [N,3], got {_shape(canonical_means)}")
    idx = _check_index(knn_index, canonical_means.shape[0], "knn_weights")
    if not isinstance(lambda_w, numbers.Real) or isinstance(lambda_w, bool) or not lambda_w >= 0:
        raise ValueError(f"knn_weights: lambda_w must be a number >= 0, got {lambda_w!r}")
    m = canonical_means.detach()
    d2 = (m[idx] - m[:, None, :]).square().sum(-1)
    return torch.exp(-float(lambda_w) * d2)


def rigidity_loss(
    canonical_means: Tensor,
    deformed_means: Tensor,
    knn_index: Tensor,
    weights: Tensor | None = None,
    canonical_quats: Tensor | None = None,
    deformed_quats: Tensor | None = None,
    mode: str | None = None,
    check_values: bool = True,
) -> Tensor:
    """Local rigidity of Luiten et al. (Dynamic 3D Gaussians), against the canonical set.

    ``rigid``: mean over ``b, i, j∈knn(i)`` of
    ``w_ij ||(μ_j,t − μ_i,t) − R_i,t R_i,0^{-1} (μ_j,0 − μ_i,0)||`` with ``R`` from the
    (normalised) quaternions — neighbours move with Gaussian ``i``'s own rotation.
    ``isometry``: mean of ``w_ij | ||μ_j,t − μ_i,t|| − ||μ_j,0 − μ_i,0|| |`` — neighbour
    distances are preserved, rotations not needed. CoCo4D §3.1 (Eq. 4) uses this loss on the
    foreground; suggested weights: 4 (rigid), 2 (isometry), Luiten et al.

    Args:
        canonical_means: ``[N,3]`` centres at the canonical time.
        deformed_means: ``[N,3]`` or ``[B,N,3]`` centres at one or ``B`` times.
        knn_index: ``[N,k]`` canonical neighbours (:func:`knn`).
        weights: optional ``[N,k]`` (:func:`knn_weights`); uniform if None.
        canonical_quats: ``[N,4]`` wxyz, needed by ``rigid``.
        deformed_quats: ``[N,4]`` or ``[B,N,4]`` wxyz matching ``deformed_means``, needed by ``rigid``.
        mode: "rigid", "isometry", or None = "rigid" when ``deformed_quats`` is given, else "isometry".
        check_values: refuse NaN/inf centres and out-of-range indices (reads values back).

    Returns:
        0-dim tensor (zero for a rigid motion of the whole set).
    """
    who = "rigidity_loss"
    if not isinstance(canonical_means, Tensor) or canonical_means.dim() != 2 or canonical_means.shape[1] != 3:
        raise ValueError(f"{who}: canonical_means must be [N,3], got {_shape(canonical_means)}")
    n = canonical_means.shape[0]
    if not isinstance(deformed_means, Tensor) or deformed_means.dim() not in (2, 3) \
            or tuple(deformed_means.shape[-2:]) != (n, 3):
        raise ValueError(f"{who}: deformed_means must be [N={n},3] or [B,N={n},3], got {_shape(deformed_means)}")
    if check_values:  # reads values back; a fit loop passes indices it built and repairs NaN itself
        for name, value in (("canonical_means", canonical_means), ("deformed_means", deformed_means)):
            if not torch.isfinite(value.detach()).all():
                raise ValueError(f"{who}: {name} holds NaN/inf values")
        idx = _check_index(knn_index, n, who)
    else:
        idx = knn_index.long()
    k = idx.shape[1]
    if weights is not None and (not isinstance(weights, Tensor) or tuple(weights.shape) != (n, k)):
        raise ValueError(f"{who}: weights must be [N={n},k={k}] like knn_index, got {_shape(weights)}")
    if mode is None:
        mode = "rigid" if deformed_quats is not None else "isometry"
    if mode not in ("rigid", "isometry"):
        raise ValueError(f"{who}: mode must be 'rigid' or 'isometry', got {mode!r}")

    mt = deformed_means if deformed_means.dim() == 3 else deformed_means.unsqueeze(0)  # [B,N,3]
    m0 = canonical_means.to(mt.dtype)
    off0 = m0[idx] - m0[:, None, :]  # [N,k,3]
    offt = mt[:, idx] - mt[:, :, None, :]  # [B,N,k,3]
    if mode == "isometry":
        err = (torch.linalg.vector_norm(offt, dim=-1) - torch.linalg.vector_norm(off0, dim=-1)).abs()
    else:
        if not isinstance(canonical_quats, Tensor) or tuple(canonical_quats.shape) != (n, 4):
            raise ValueError(f"{who}: mode 'rigid' needs canonical_quats [N={n},4], got {_shape(canonical_quats)}")
        if not isinstance(deformed_quats, Tensor) or tuple(deformed_quats.shape) != (*deformed_means.shape[:-1], 4):
            raise ValueError(f"{who}: mode 'rigid' needs deformed_quats {list(deformed_means.shape[:-1]) + [4]} "
                             f"matching deformed_means, got {_shape(deformed_quats)}")
        qt = deformed_quats if deformed_quats.dim() == 3 else deformed_quats.unsqueeze(0)
        r0 = quat_to_rotmat(canonical_quats.to(mt.dtype))  # [N,3,3]
        rt = quat_to_rotmat(qt.to(mt.dtype))  # [B,N,3,3]
        rel = rt @ r0.transpose(-1, -2)  # R_t R_0^{-1}, [B,N,3,3]
        pred = torch.einsum("bnij,nkj->bnki", rel, off0)
        err = torch.linalg.vector_norm(offt - pred, dim=-1)  # [B,N,k]
    if weights is not None:
        err = err * weights.to(err.dtype)
    return err.mean()
