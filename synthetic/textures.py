# SPDX-License-Identifier: Apache-2.0
"""Procedural textures evaluated in a primitive's local coordinates.

Public API:
    Texture     base class: ``texture(points [M,3], normals [M,3]) -> [M,3]`` albedo in [0, 1]
    Solid       one colour
    Checker     3D checkerboard of two colours or textures
    Stripes     parallel stripes of two colours or textures along a direction
    Gradient    linear blend between two colours along a direction (clamped)
    Waves       smooth sinusoidal colour field, one wave vector per channel
    Shaded      a texture times a Lambertian factor baked in local coordinates

Design notes:
    Textures read local points and local normals only, so they move rigidly with their part and
    are view independent (what an SH-degree-0 Gaussian scene can represent exactly). ``Shaded``
    bakes its light direction into the part's frame for the same reason: the shading rides with
    the part and never changes over time or with the camera. Colours are plain tuples; ``Checker``
    and ``Stripes`` accept textures in place of colours so patterns can be layered. Primitives snap
    hit points exactly onto their surface before texturing, which keeps ``floor`` decisions on
    faces (e.g. ``x = +half_size``) deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Checker", "Gradient", "Shaded", "Solid", "Stripes", "Texture", "Waves", "evaluate"]

Vec3 = tuple[float, float, float]


class Texture:
    """Base class: albedo as a function of local surface points and normals."""

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        """Evaluate the albedo.

        Args:
            points: ``[M,3]`` local surface points.
            normals: ``[M,3]`` local unit normals.

        Returns:
            ``[M,3]`` colours in ``[0, 1]`` (dtype of ``points``).
        """
        raise NotImplementedError


ColorLike = Vec3 | Texture


def evaluate(color: ColorLike, points: Tensor, normals: Tensor) -> Tensor:
    """``[M,3]`` colour of a constant colour tuple or a texture at local ``points [M,3]``."""
    if isinstance(color, Texture):
        return color(points, normals)
    c = torch.as_tensor(color, dtype=points.dtype, device=points.device).reshape(1, 3)
    return c.expand(points.shape[0], 3)


def _dir(v: Vec3, like: Tensor) -> Tensor:
    d = torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(3)
    return d / d.norm().clamp_min(1e-12)


def _choose(mask: Tensor, a: ColorLike, b: ColorLike, points: Tensor, normals: Tensor) -> Tensor:
    return torch.where(mask[:, None], evaluate(a, points, normals), evaluate(b, points, normals))


@dataclass(frozen=True)
class Solid(Texture):
    """One colour everywhere."""

    color: Vec3 = (0.5, 0.5, 0.5)

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        return evaluate(self.color, points, normals)


@dataclass(frozen=True)
class Checker(Texture):
    """3D checkerboard with cubic cells of edge ``size``: ``a`` where the cell parity is even."""

    a: ColorLike = (0.9, 0.9, 0.9)
    b: ColorLike = (0.2, 0.2, 0.2)
    size: float = 0.1
    offset: Vec3 = (0.0, 0.0, 0.0)

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        off = torch.as_tensor(self.offset, dtype=points.dtype, device=points.device)
        cells = torch.floor((points + off) / self.size).sum(-1)
        return _choose(torch.remainder(cells, 2.0) < 0.5, self.a, self.b, points, normals)


@dataclass(frozen=True)
class Stripes(Texture):
    """Stripes of width ``period / 2`` across ``direction``: ``a`` on even half-periods."""

    a: ColorLike = (0.9, 0.9, 0.9)
    b: ColorLike = (0.2, 0.2, 0.2)
    period: float = 0.2
    direction: Vec3 = (1.0, 0.0, 0.0)
    phase: float = 0.0

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        u = points @ _dir(self.direction, points) / self.period + self.phase
        return _choose(torch.remainder(torch.floor(2.0 * u), 2.0) < 0.5, self.a, self.b, points, normals)


@dataclass(frozen=True)
class Gradient(Texture):
    """Linear blend from ``a`` at ``start`` to ``b`` at ``end`` (positions along ``direction``)."""

    a: Vec3 = (0.1, 0.2, 0.8)
    b: Vec3 = (0.9, 0.6, 0.1)
    direction: Vec3 = (0.0, 1.0, 0.0)
    start: float = -1.0
    end: float = 1.0

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        u = ((points @ _dir(self.direction, points) - self.start) / (self.end - self.start)).clamp(0.0, 1.0)
        a, b = evaluate(self.a, points, normals), evaluate(self.b, points, normals)
        return a + u[:, None] * (b - a)


@dataclass(frozen=True)
class Waves(Texture):
    """Smooth colour field ``base_c + amplitude * sin(2pi (k_c . p) + phase_c)`` per channel ``c``."""

    base: Vec3 = (0.5, 0.5, 0.5)
    amplitude: float = 0.3
    wave_vectors: tuple[Vec3, Vec3, Vec3] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    phases: Vec3 = (0.0, 0.0, 0.0)

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        k = torch.as_tensor(self.wave_vectors, dtype=points.dtype, device=points.device)  # [3(channel),3]
        ph = torch.as_tensor(self.phases, dtype=points.dtype, device=points.device)
        base = torch.as_tensor(self.base, dtype=points.dtype, device=points.device)
        return (base + self.amplitude * torch.sin(2.0 * math.pi * (points @ k.T) + ph)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Shaded(Texture):
    """``inner`` times ``ambient + (1 - ambient) * max(0, n . light)`` with ``light`` in local axes."""

    inner: ColorLike = (0.8, 0.8, 0.8)
    light: Vec3 = (0.3, -1.0, -0.5)
    ambient: float = 0.55

    def __call__(self, points: Tensor, normals: Tensor) -> Tensor:
        lam = (normals @ _dir(self.light, points)).clamp_min(0.0)
        factor = self.ambient + (1.0 - self.ambient) * lam
        return (evaluate(self.inner, points, normals) * factor[:, None]).clamp(0.0, 1.0)
