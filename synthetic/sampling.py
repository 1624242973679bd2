# SPDX-License-Identifier: Apache-2.0
"""Gaussians sampled on a synthetic world's surfaces, with their exact motion.

Public API:
    SurfaceSamples     points fixed on the parts' surfaces: ``at(times)`` and ``gaussians(t)``
    SurfaceMotion      a canonical Gaussian set plus per-time means ``[T,N,3]`` and quats ``[T,N,4]``
    sample_surface     area-weighted surface samples (deterministic by seed)
    sample_gaussians   flat disc Gaussians on every surface at one time
    surface_motion     the same Gaussians at several times (for a 4D scene with exact motion)

Design notes:
    Points are drawn once in each part's local frame (counts proportional to area x the part's
    ``density``, allocated by largest remainder so the total is exact), coloured by the part's
    texture and carried by the part's rigid motion, so the means and rotations at any time are
    exact and a 4D Gaussian scene built from them moves exactly like the ray-cast ground truth.
    Each Gaussian is a flat disc: its local frame has the surface normal as third axis, the
    in-plane std is ``scale_factor`` times the part's mean point spacing ``sqrt(area / n)`` and
    the normal std is ``normal_ratio`` times that. Unbounded primitives cannot be sampled.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.gaussians import Gaussians, quat_multiply, rotmat_to_quat
from .motion import check_times
from .raycast import World, _check_world, albedo, move_points

__all__ = ["SurfaceMotion", "SurfaceSamples", "sample_gaussians", "sample_surface", "surface_motion"]


@dataclass(frozen=True)
class SurfaceSamples:
    """``N`` points fixed on the surfaces of a world's parts.

    Args:
        world: the world they were drawn from.
        part_ids: ``[N]`` int64 object ids.
        local_points: ``[N,3]`` float64 points in their part's frame.
        local_frames: ``[N,3,3]`` float64 local frames (columns: tangent, tangent, normal).
        colors: ``[N,3]`` float32 albedo.
        scales: ``[N,3]`` float32 standard deviations along the frame's columns.
        opacity: opacity of every Gaussian.
    """

    world: World
    part_ids: Tensor
    local_points: Tensor
    local_frames: Tensor
    colors: Tensor
    scales: Tensor
    opacity: float

    def __len__(self) -> int:
        return self.part_ids.shape[0]

    def at(self, times) -> tuple[Tensor, Tensor]:
        """Means ``[T,N,3]`` and unit wxyz quats ``[T,N,4]`` (float32) at normalised ``times [T]``."""
        t = check_times(times, "SurfaceSamples.at: times")
        means, poses = move_points(self.world, self.part_ids, self.local_points, t)
        part_quats = rotmat_to_quat(poses[..., :3, :3])  # [P,T,4]
        local_quats = rotmat_to_quat(self.local_frames)  # [N,4]
        quats = quat_multiply(part_quats[self.part_ids].transpose(0, 1), local_quats[None].expand(t.numel(), -1, -1))
        return means.float(), torch.nn.functional.normalize(quats, dim=-1).float()

    def gaussians(self, t: float, sh_degree: int = 0) -> Gaussians:
        """The samples as a ``Gaussians`` set of ``N`` flat discs at time ``t``."""
        means, quats = self.at([t])
        return Gaussians.from_colors(means[0], self.colors, self.scales, self.opacity, quats[0], sh_degree)


@dataclass(frozen=True)
class SurfaceMotion:
    """Gaussians at ``times[0]`` plus their exact motion: ``means [T,N,3]``, ``quats [T,N,4]``,
    ``times [T]`` and ``part_ids [N]``. Scales, opacities and colours do not change over time."""

    gaussians: Gaussians
    means: Tensor
    quats: Tensor
    times: Tensor
    part_ids: Tensor


def _allocate(weights: list[float], total: int) -> list[int]:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder, ties by index)."""
    s = sum(weights)
    exact = [total * w / s for w in weights]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _check_sampling_args(world: World, num_points: int, seed: int, scale_factor: float, normal_ratio: float,
                         opacity: float) -> None:
    _check_world(world)
    if isinstance(num_points, bool) or not isinstance(num_points, numbers.Integral) or num_points <= 0:
        raise ValueError(f"num_points: expected a positive int, got {num_points!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    if not (scale_factor > 0 and normal_ratio > 0):
        raise ValueError(f"scale_factor and normal_ratio must be positive, got {scale_factor}, {normal_ratio}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity: expected a value strictly inside (0, 1), got {opacity}")
    for p in world.primitives:
        if not math.isfinite(p.area()):
            raise ValueError(f"world: primitive {p.name!r} is unbounded and cannot be sampled; bound it")
        if not p.density >= 0:
            raise ValueError(f"world: primitive {p.name!r} has density {p.density}; expected >= 0")


def sample_surface(world: World, num_points: int, seed: int = 0, scale_factor: float = 0.8,
                   normal_ratio: float = 0.05, opacity: float = 0.95) -> SurfaceSamples:
    """Draw ``num_points`` points on the world's surfaces, area x density weighted.

    Args:
        world: the world (all primitives bounded).
        num_points: total number of points ``N``.
        seed: seed of the ``torch.Generator`` used for the draw.
        scale_factor: in-plane std as a fraction of the part's mean point spacing.
        normal_ratio: normal std as a fraction of the in-plane std.
        opacity: opacity of every Gaussian, in (0, 1).

    Returns:
        ``SurfaceSamples`` with ``N`` points (on CPU).
    """
    _check_sampling_args(world, num_points, seed, scale_factor, normal_ratio, opacity)
    areas = [p.area() for p in world.primitives]
    weights = [a * p.density for a, p in zip(areas, world.primitives)]
    if sum(weights) <= 0:
        raise ValueError("world: every primitive has zero sampling density")
    counts = _allocate(weights, int(num_points))
    gen = torch.Generator().manual_seed(int(seed))
    ids, pts, frames, scales = [], [], [], []
    for k, (prim, n) in enumerate(zip(world.primitives, counts)):
        if n == 0:
            continue
        p, f = prim.sample(n, gen)
        std = scale_factor * math.sqrt(areas[k] / n)
        ids.append(torch.full((n,), k, dtype=torch.long))
        pts.append(p)
        frames.append(f)
        scales.append(torch.tensor([std, std, std * normal_ratio]).expand(n, 3))
    part_ids, local_points, local_frames = torch.cat(ids), torch.cat(pts), torch.cat(frames)
    colors = albedo(world, part_ids, local_points, local_frames[:, :, 2]).float()
    return SurfaceSamples(world, part_ids, local_points, local_frames, colors,
                          torch.cat(scales).float().contiguous(), float(opacity))


def sample_gaussians(world: World, t: float, num_points: int, seed: int = 0, **kwargs) -> Gaussians:
    """Flat disc Gaussians on every surface of ``world`` at time ``t``.

    Args:
        world: the world.
        t: normalised time in ``[0, 1]``.
        num_points: number of Gaussians ``N``.
        seed: sampling seed.
        **kwargs: ``scale_factor``, ``normal_ratio``, ``opacity`` as in ``sample_surface``.

    Returns:
        ``Gaussians`` with ``N`` entries (SH degree 0).
    """
    check_times(t, "t")
    return sample_surface(world, num_points, seed, **kwargs).gaussians(float(t))


def surface_motion(world: World, times, num_points: int, seed: int = 0, **kwargs) -> SurfaceMotion:
    """The same surface Gaussians at several times.

    Args:
        world: the world.
        times: ``[T]`` normalised times.
        num_points: number of Gaussians ``N``.
        seed: sampling seed.
        **kwargs: ``scale_factor``, ``normal_ratio``, ``opacity`` as in ``sample_surface``.

    Returns:
        ``SurfaceMotion``: Gaussians at ``times[0]``, means ``[T,N,3]``, quats ``[T,N,4]``, times ``[T]``.
    """
    t = check_times(times, "times")
    samples = sample_surface(world, num_points, seed, **kwargs)
    means, quats = samples.at(t)
    g = Gaussians.from_colors(means[0], samples.colors, samples.scales, samples.opacity, quats[0])
    return SurfaceMotion(g, means, quats, t.float(), samples.part_ids)
