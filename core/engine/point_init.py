# SPDX-License-Identifier: Apache-2.0
"""Gaussians started from a coloured point cloud (a capture's structure-from-motion points).

Public API:
    from_points(points, colors, opacity, neighbours, sh_degree)   one isotropic Gaussian per point

Design notes:
    3D Gaussian Splatting (Kerbl et al. 2023, §5) starts from the SfM points: each Gaussian is
    isotropic with a standard deviation of the root of the mean squared distance to its three
    nearest neighbours, opacity 0.1, the point's colour as its SH DC term. Dense clusters get
    small Gaussians and sparse regions large ones, so the first renders already cover the scene.

    Up to :data:`EXACT_POINTS` points the neighbours are exact (blocked distances, quadratic).
    Beyond, as 3DGS's own ``simple_knn`` does, they are searched among points close in Morton
    (Z-curve) order: each point's :data:`WINDOW` predecessors and successors on the curve of the
    grid and of the grid shifted by a third and two thirds of its cell, which finds nearly every
    true neighbour in time linear in the points (a scale off by a little is harmless in a start).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gaussians import Gaussians
from .regularizers import knn

__all__ = ["from_points", "neighbour_variance"]

MIN_VARIANCE = 1e-7  # coincident points would give a zero scale, whose log is -inf
EXACT_POINTS = 50_000
WINDOW = 16
_CHUNK = 1 << 18
_BITS = 21  # per axis: three interleave into a 63-bit code


def _spread_bits(v: Tensor) -> Tensor:
    """Insert two zero bits after each of the low 21 bits of ``v`` (int64)."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    v = (v | (v << 2)) & 0x1249249249249249
    return v


def _z_curves(points: Tensor) -> list[tuple[Tensor, Tensor]]:
    """``(order, rank)`` of the points along the Z-curves of three shifted grids."""
    n = points.shape[0]
    lo = points.min(0).values
    extent = (points.max(0).values - lo).max().clamp_min(1e-12)
    cells = (1 << _BITS) - 1
    grid = ((points - lo) / extent * (cells - 2)).long()
    curves = []
    for shift in (0, cells // 3, 2 * cells // 3):  # different cells split different neighbours
        q = (grid + shift) & cells
        order = torch.argsort(_spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << 1) | (_spread_bits(q[:, 2]) << 2))
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=points.device)
        curves.append((order, rank))
    return curves


def neighbour_variance(points: Tensor, neighbours: int = 3) -> Tensor:
    """``[N]`` mean squared distance of each point to its ``neighbours`` nearest others (see the notes)."""
    n = points.shape[0]
    k = min(int(neighbours), n - 1)
    if n <= EXACT_POINTS:
        index = knn(points, k)
        return (points[index] - points[:, None]).square().sum(-1).mean(-1)
    curves = _z_curves(points)
    offsets = torch.cat([torch.arange(-WINDOW, 0), torch.arange(1, WINDOW + 1)]).to(points.device)
    out = torch.empty(n, dtype=points.dtype, device=points.device)
    for start in range(0, n, _CHUNK):  # rows in chunks: memory stays ~100 candidates x _CHUNK
        rows = torch.arange(start, min(n, start + _CHUNK), device=points.device)
        candidates = torch.cat([order[(rank[rows, None] + offsets).clamp(0, n - 1)] for order, rank in curves], 1)
        candidates = candidates.sort(dim=1).values
        d2 = (points[candidates] - points[rows, None]).square().sum(-1)
        repeated = torch.zeros_like(candidates, dtype=torch.bool)
        repeated[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
        d2[repeated | (candidates == rows[:, None])] = float("inf")
        out[rows] = torch.topk(d2, k, dim=1, largest=False).values.mean(-1)
    return out


def from_points(points: Tensor, colors: Tensor, opacity: float = 0.1, neighbours: int = 3,
                sh_degree: int = 0) -> Gaussians:
    """One Gaussian per point, scaled by its neighbours' distances (3DGS's start).

    Args:
        points: ``[N,3]`` positions, finite, ``N >= 2``.
        colors: ``[N,3]`` rgb in 0..1.
        opacity: initial opacity in (0, 1).
        neighbours: how many nearest points set a Gaussian's scale (3DGS: 3); fewer when ``N`` is small.
        sh_degree: SH degree of the set (higher bands start at zero).

    Raises:
        ValueError: wrong shapes, fewer than two points, non-finite positions, colours outside 0..1.
    """
    points = torch.as_tensor(points, dtype=torch.float32)
    colors = torch.as_tensor(colors, dtype=torch.float32, device=points.device)
    if points.dim() != 2 or points.shape[1] != 3 or points.shape[0] < 2:
        raise ValueError(f"from_points: points must be [N,3] with N >= 2, got {tuple(points.shape)}")
    if colors.shape != points.shape:
        raise ValueError(f"from_points: colors must be {list(points.shape)}, got {list(colors.shape)}")
    if not torch.isfinite(points).all():
        raise ValueError("from_points: points hold NaN or infinite values")
    if not torch.isfinite(colors).all() or (colors < 0).any() or (colors > 1).any():
        raise ValueError("from_points: colors must lie in 0..1")
    variance = neighbour_variance(points, neighbours).clamp_min(MIN_VARIANCE)
    return Gaussians.from_colors(points, colors, variance.sqrt(), opacity, sh_degree=sh_degree)
