# SPDX-License-Identifier: Apache-2.0
"""Analytic surface primitives in their own local frames.

Public API:
    Primitive   base: name, texture, motion, group, sampling density; intersect / area / sample / distance
    Rectangle   the plane ``z = 0`` (local), bounded by ``|x| <= hx, |y| <= hy`` or infinite; two-sided
    Sphere      a sphere of ``radius`` about the local origin
    Box         an axis-aligned (local) box ``|p_i| <= half_size_i``; oriented through its motion
    frame_from_normal   right-handed frames ``[M,3,3]`` whose third column is a given normal

Design notes:
    Intersections are exact closed forms, vectorised over rays: ``intersect(o, d, near)`` takes
    local ray origins/directions ``[R,3]`` and returns the ray parameter ``s [R]`` (``inf`` on a
    miss), the local hit point snapped exactly onto the surface and the outward local normal.
    Directions need not be unit length: the caller uses directions whose camera-z component is 1,
    so ``s`` is the z-depth directly. The sphere uses the closest-approach form of the quadratic,
    which stays accurate at grazing rays. Primitives are frozen keyword-only dataclasses; their
    pose over time is ``motion`` (local -> world, rigid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .motion import Fixed, Motion
from .textures import ColorLike, Solid

__all__ = ["Box", "Primitive", "Rectangle", "Sphere", "frame_from_normal"]

_TINY = 1e-18


def frame_from_normal(normals: Tensor) -> Tensor:
    """Right-handed orthonormal frames with the given normals as third column.

    Args:
        normals: ``[M,3]`` unit normals.

    Returns:
        ``[M,3,3]`` matrices with columns ``(t1, t2, n)``.
    """
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=normals.dtype, device=normals.device).expand_as(normals)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=normals.dtype, device=normals.device).expand_as(normals)
    helper = torch.where((normals[:, :1].abs() < 0.9), ex, ey)
    t1 = torch.nn.functional.normalize(torch.cross(helper, normals, dim=-1), dim=-1)
    t2 = torch.cross(normals, t1, dim=-1)
    return torch.stack([t1, t2, normals], dim=-1)


@dataclass(frozen=True, kw_only=True)
class Primitive:
    """A textured surface with a rigid motion.

    Args:
        name: unique name within a world.
        texture: a colour tuple or a ``Texture`` evaluated in local coordinates.
        motion: local-to-world pose over time.
        group: mask group (e.g. ``"foreground"`` / ``"background"``).
        density: relative sampling density for ``sample_surface`` (area x density decides counts).
    """

    name: str = "part"
    texture: ColorLike = field(default_factory=Solid)
    motion: Motion = field(default_factory=Fixed)
    group: str = "background"
    density: float = 1.0

    def intersect(self, origins: Tensor, dirs: Tensor, near: float) -> tuple[Tensor, Tensor, Tensor]:
        """Nearest hit with parameter ``s > near`` of local rays ``o + s d``.

        Args:
            origins: ``[R,3]`` local ray origins.
            dirs: ``[R,3]`` local ray directions (any non-zero length).
            near: smallest accepted ray parameter.

        Returns:
            ``s [R]`` (``inf`` on a miss), local hit points ``[R,3]``, outward local normals ``[R,3]``.
        """
        raise NotImplementedError

    def area(self) -> float:
        """Surface area in world units squared (``inf`` for unbounded primitives)."""
        raise NotImplementedError

    def sample(self, num: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Uniform (area-weighted) surface samples in float64 on CPU.

        Returns:
            local points ``[num,3]`` and local frames ``[num,3,3]`` (columns: tangent, tangent, normal).
        """
        raise NotImplementedError

    def distance(self, points: Tensor) -> Tensor:
        """``[M]`` unsigned distance from local ``points [M,3]`` to the surface."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Rectangle(Primitive):
    """The local plane ``z = 0`` with normal ``+z``; ``half_size=None`` makes it infinite."""

    half_size: tuple[float, float] | None = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.half_size is not None and (len(self.half_size) != 2 or min(self.half_size) <= 0):
            raise ValueError(f"Rectangle {self.name!r}: half_size must be two positive numbers or None, "
                             f"got {self.half_size}")

    def intersect(self, origins: Tensor, dirs: Tensor, near: float) -> tuple[Tensor, Tensor, Tensor]:
        dz = dirs[:, 2]
        ok = dz.abs() > _TINY
        s = -origins[:, 2] / torch.where(ok, dz, torch.ones_like(dz))
        p = origins + s[:, None] * dirs
        hit = ok & (s > near)
        if self.half_size is not None:
            hx, hy = self.half_size
            hit &= (p[:, 0].abs() <= hx) & (p[:, 1].abs() <= hy)
        p = torch.cat([p[:, :2], torch.zeros_like(p[:, 2:])], dim=-1)
        normals = torch.zeros_like(p)
        normals[:, 2] = 1.0
        return torch.where(hit, s, torch.full_like(s, math.inf)), p, normals

    def area(self) -> float:
        if self.half_size is None:
            return math.inf
        return 4.0 * self.half_size[0] * self.half_size[1]

    def sample(self, num: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.half_size is None:
            raise ValueError(f"Rectangle {self.name!r}: an infinite plane has no finite area to sample; "
                             "give it a half_size")
        u = torch.rand(num, 2, generator=generator, dtype=torch.float64) * 2.0 - 1.0
        h = torch.tensor(self.half_size, dtype=torch.float64)
        p = torch.cat([u * h, torch.zeros(num, 1, dtype=torch.float64)], dim=-1)
        return p, torch.eye(3, dtype=torch.float64).expand(num, 3, 3).clone()

    def distance(self, points: Tensor) -> Tensor:
        if self.half_size is None:
            return points[:, 2].abs()
        h = torch.tensor(self.half_size, dtype=points.dtype, device=points.device)
        outside = (points[:, :2].abs() - h).clamp_min(0.0)
        return torch.sqrt((outside * outside).sum(-1) + points[:, 2] ** 2)


@dataclass(frozen=True, kw_only=True)
class Sphere(Primitive):
    """A sphere of ``radius`` centred on the local origin."""

    radius: float = 0.5

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ValueError(f"Sphere {self.name!r}: radius must be positive, got {self.radius}")

    def intersect(self, origins: Tensor, dirs: Tensor, near: float) -> tuple[Tensor, Tensor, Tensor]:
        a = (dirs * dirs).sum(-1)
        s_closest = -(origins * dirs).sum(-1) / a
        q = origins + s_closest[:, None] * dirs
        h2 = self.radius**2 - (q * q).sum(-1)
        half = torch.sqrt(h2.clamp_min(0.0) / a)
        s0, s1 = s_closest - half, s_closest + half
        s = torch.where(s0 > near, s0, s1)
        hit = (h2 >= 0) & (s > near)
        p = origins + s[:, None] * dirs
        normals = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        return torch.where(hit, s, torch.full_like(s, math.inf)), normals * self.radius, normals

    def area(self) -> float:
        return 4.0 * math.pi * self.radius**2

    def sample(self, num: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n = torch.nn.functional.normalize(torch.randn(num, 3, generator=generator, dtype=torch.float64), dim=-1)
        return n * self.radius, frame_from_normal(n)

    def distance(self, points: Tensor) -> Tensor:
        return (points.norm(dim=-1) - self.radius).abs()


@dataclass(frozen=True, kw_only=True)
class Box(Primitive):
    """A box ``|x| <= hx, |y| <= hy, |z| <= hz`` in local coordinates."""

    half_size: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if len(self.half_size) != 3 or min(self.half_size) <= 0:
            raise ValueError(f"Box {self.name!r}: half_size must be three positive numbers, got {self.half_size}")

    def intersect(self, origins: Tensor, dirs: Tensor, near: float) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.tensor(self.half_size, dtype=origins.dtype, device=origins.device)
        d = torch.where(dirs.abs() < _TINY, torch.full_like(dirs, _TINY), dirs)
        t1, t2 = (-h - origins) / d, (h - origins) / d
        t_min, face_in = torch.minimum(t1, t2).max(dim=-1)
        t_max, face_out = torch.maximum(t1, t2).min(dim=-1)
        entering = t_min > near
        hit = (t_max >= t_min) & (t_max > near)
        s = torch.where(entering, t_min, t_max)
        face = torch.where(entering, face_in, face_out)
        p = origins + s[:, None] * dirs
        p = torch.maximum(torch.minimum(p, h), -h)
        onehot = torch.nn.functional.one_hot(face, 3).to(p.dtype)
        sign = torch.where((p * onehot).sum(-1) >= 0, 1.0, -1.0).to(p.dtype)[:, None]
        p = p * (1.0 - onehot) + onehot * sign * h  # snap onto the face exactly
        return torch.where(hit, s, torch.full_like(s, math.inf)), p, onehot * sign

    def area(self) -> float:
        hx, hy, hz = self.half_size
        return 8.0 * (hx * hy + hy * hz + hx * hz)

    def _face_areas(self) -> Tensor:
        hx, hy, hz = self.half_size
        a = torch.tensor([hy * hz, hx * hz, hx * hy], dtype=torch.float64) * 4.0
        return torch.cat([a, a])  # faces +x,+y,+z,-x,-y,-z

    def sample(self, num: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        face = torch.multinomial(self._face_areas(), num, replacement=True, generator=generator)
        axis, sign = face % 3, torch.where(face < 3, 1.0, -1.0).to(torch.float64)
        h = torch.tensor(self.half_size, dtype=torch.float64)
        p = (torch.rand(num, 3, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * h
        onehot = torch.nn.functional.one_hot(axis, 3).to(torch.float64)
        p = p * (1.0 - onehot) + onehot * sign[:, None] * h
        normals = onehot * sign[:, None]
        t1 = torch.nn.functional.one_hot((axis + 1) % 3, 3).to(torch.float64)
        t2 = torch.cross(normals, t1, dim=-1)
        return p, torch.stack([t1, t2, normals], dim=-1)

    def distance(self, points: Tensor) -> Tensor:
        h = torch.tensor(self.half_size, dtype=points.dtype, device=points.device)
        q = points.abs() - h
        outside = q.clamp_min(0.0).norm(dim=-1)
        inside = q.max(dim=-1).values.clamp_max(0.0)
        return (outside + inside).abs()
