# SPDX-License-Identifier: Apache-2.0
"""Rigid motions of world parts as functions of normalised time.

Public API:
    Motion            base class: ``matrices(times [T]) -> [T,4,4]`` local-to-world rigid transforms
    Fixed             a constant pose (rotation about an axis, then a translation)
    Swing             rotation about a hinge axis through a pivot, sinusoidal in time
    Bob               translation along a direction, sinusoidal in time
    Travel            eased straight-line translation from a start to an end point
    Chain             composition parent -> child: ``M(t) = M_0(t) @ M_1(t) @ ...``
    rotation_matrix   axis-angle -> ``[T,3,3]``
    check_times       validate a time argument and return ``[T]`` float64

Design notes:
    Motions are frozen dataclasses of plain Python numbers, so a world is hashable, printable and
    exactly reproducible; they are evaluated in float64 on the caller's device. Every transform is
    rigid (rotation + translation, no scale), so ray parameters, depths, normals and surface areas
    carry over unchanged between a part's local frame and the world. Periodic motions use
    ``sin(2*pi*(cycles*t + phase))`` with ``t`` in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Bob", "Chain", "Fixed", "Motion", "Swing", "Travel", "check_times", "rotation_matrix"]

Vec3 = tuple[float, float, float]
_DT = torch.float64


def check_times(times, name: str = "times", device: torch.device | str | None = None) -> Tensor:
    """Validate normalised times and return them as a float64 vector.

    Args:
        times: a number, a sequence or a tensor of shape ``[T]`` (or a scalar tensor).
        name: the argument name used in error messages.
        device: device of the result (defaults to the input's, or CPU).

    Returns:
        ``[T]`` float64 tensor with values in ``[0, 1]``.

    Raises:
        ValueError: if the values are not finite, not a vector, empty, or outside ``[0, 1]``.
    """
    try:
        t = torch.as_tensor(times, dtype=_DT, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: expected a number or a [T] sequence of numbers in [0, 1], got {times!r}") from exc
    if t.dim() > 1:
        raise ValueError(f"{name}: expected a scalar or a [T] vector, got shape {tuple(t.shape)}")
    t = t.reshape(-1)
    if t.numel() == 0:
        raise ValueError(f"{name}: expected at least one time, got an empty tensor")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: times must be finite, got {t.tolist()}")
    if (t < -1e-6).any() or (t > 1.0 + 1e-6).any():
        bad = t[(t < -1e-6) | (t > 1.0 + 1e-6)][0].item()
        raise ValueError(f"{name}: times must lie in [0, 1], got {bad}")
    return t.clamp(0.0, 1.0)


def rotation_matrix(axis: Sequence[float], angle: Tensor) -> Tensor:
    """Rotation matrices about a fixed axis (Rodrigues' formula).

    Args:
        axis: 3 numbers, the rotation axis (normalised here; must be non-zero).
        angle: ``[T]`` angles in radians.

    Returns:
        ``[T,3,3]`` rotation matrices, same dtype and device as ``angle``.
    """
    a = torch.as_tensor(axis, dtype=angle.dtype, device=angle.device).reshape(3)
    norm = a.norm()
    if norm <= 0:
        raise ValueError(f"rotation_matrix: axis must be non-zero, got {tuple(axis)}")
    a = a / norm
    k = torch.zeros(3, 3, dtype=angle.dtype, device=angle.device)
    k[0, 1], k[0, 2], k[1, 0], k[1, 2], k[2, 0], k[2, 1] = -a[2], a[1], a[2], -a[0], -a[1], a[0]
    eye = torch.eye(3, dtype=angle.dtype, device=angle.device)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return eye + s * k + (1.0 - c) * (k @ k)


def _homogeneous(rot: Tensor | None, trans: Tensor | None, n: int, like: Tensor) -> Tensor:
    """Stack ``[T,3,3]`` rotations and ``[T,3]`` translations into ``[T,4,4]``."""
    m = torch.eye(4, dtype=like.dtype, device=like.device).repeat(n, 1, 1)
    if rot is not None:
        m[:, :3, :3] = rot
    if trans is not None:
        m[:, :3, 3] = trans
    return m


def _vec(v: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(3)


def _wave(times: Tensor, cycles: float, phase: float) -> Tensor:
    return torch.sin(2.0 * math.pi * (cycles * times + phase))


class Motion:
    """Base class of rigid motions: a local-to-world transform for every time."""

    def matrices(self, times: Tensor) -> Tensor:
        """Local-to-world transforms.

        Args:
            times: ``[T]`` float64 normalised times (already validated).

        Returns:
            ``[T,4,4]`` rigid transforms (same dtype and device as ``times``).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Motion):
    """A constant pose: rotate by ``angle_deg`` about ``axis``, then translate by ``translation``."""

    translation: Vec3 = (0.0, 0.0, 0.0)
    axis: Vec3 = (0.0, 1.0, 0.0)
    angle_deg: float = 0.0

    def matrices(self, times: Tensor) -> Tensor:
        angle = torch.full_like(times, math.radians(self.angle_deg))
        rot = rotation_matrix(self.axis, angle)
        return _homogeneous(rot, _vec(self.translation, times).expand(times.numel(), 3), times.numel(), times)


@dataclass(frozen=True)
class Swing(Motion):
    """Hinge rotation about ``axis`` through ``pivot`` by ``offset + amplitude * sin(2pi(cycles t + phase))``."""

    pivot: Vec3 = (0.0, 0.0, 0.0)
    axis: Vec3 = (0.0, 0.0, 1.0)
    amplitude_deg: float = 30.0
    cycles: float = 1.0
    phase: float = 0.0
    offset_deg: float = 0.0

    def angles(self, times: Tensor) -> Tensor:
        """``[T]`` hinge angles in radians."""
        deg = self.offset_deg + self.amplitude_deg * _wave(times, self.cycles, self.phase)
        return deg * (math.pi / 180.0)

    def matrices(self, times: Tensor) -> Tensor:
        rot = rotation_matrix(self.axis, self.angles(times))
        p = _vec(self.pivot, times)
        trans = p - rot @ p  # x -> R (x - p) + p
        return _homogeneous(rot, trans, times.numel(), times)


@dataclass(frozen=True)
class Bob(Motion):
    """Translation ``amplitude * sin(2pi(cycles t + phase)) * direction`` (direction used as given)."""

    direction: Vec3 = (0.0, -1.0, 0.0)
    amplitude: float = 0.05
    cycles: float = 1.0
    phase: float = 0.0

    def matrices(self, times: Tensor) -> Tensor:
        offset = (self.amplitude * _wave(times, self.cycles, self.phase))[:, None] * _vec(self.direction, times)
        return _homogeneous(None, offset, times.numel(), times)


@dataclass(frozen=True)
class Travel(Motion):
    """Straight-line translation from ``start`` (t=0) to ``end`` (t=1), smoothstep-eased if ``ease``."""

    start: Vec3 = (0.0, 0.0, 0.0)
    end: Vec3 = (1.0, 0.0, 0.0)
    ease: bool = True

    def matrices(self, times: Tensor) -> Tensor:
        u = times * times * (3.0 - 2.0 * times) if self.ease else times
        a, b = _vec(self.start, times), _vec(self.end, times)
        return _homogeneous(None, a + u[:, None] * (b - a), times.numel(), times)


@dataclass(frozen=True)
class Chain(Motion):
    """Composition of motions, parent first: ``M(t) = motions[0](t) @ motions[1](t) @ ...``."""

    motions: tuple[Motion, ...] = ()

    def matrices(self, times: Tensor) -> Tensor:
        out = torch.eye(4, dtype=times.dtype, device=times.device).repeat(times.numel(), 1, 1)
        for m in self.motions:
            out = out @ m.matrices(times)
        return out
