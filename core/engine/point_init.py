# SPDX-License-Identifier: Apache-2.0
"""Gaussians started from a coloured point cloud (a capture's structure-from-motion points).

Public API:
    from_points(points, colors, opacity, neighbours, sh_degree)   one isotropic Gaussian per point

Design notes:
    3D Gaussian Splatting (Kerbl et al. 2023, §5) starts from the SfM points: each Gaussian is
    isotropic with a standard deviation of the root of the mean squared distance to its three
    nearest neighbours, opacity 0.1, the point's colour as its SH DC term. Dense clusters get
    small Gaussians and sparse regions large ones, so the first renders already cover the scene.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gaussians import Gaussians
from .regularizers import knn

__all__ = ["from_points"]

MIN_VARIANCE = 1e-7  # coincident points would give a zero scale, whose log is -inf


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
    k = min(int(neighbours), points.shape[0] - 1)
    index = knn(points, k)
    variance = (points[index] - points[:, None]).square().sum(-1).mean(-1).clamp_min(MIN_VARIANCE)
    return Gaussians.from_colors(points, colors, variance.sqrt(), opacity, sh_degree=sh_degree)
