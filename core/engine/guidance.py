# SPDX-License-Identifier: Apache-2.0
"""The score-distillation hook of the fit loops, and the pose sampling around it.

Public API:
    Guidance                  protocol: ``sds_loss(images BHWC, cameras, t, step_ratio) -> scalar``
    PoseSampling              CoCo4D's SDS pose distribution (radius 2.5, 10° azimuth grid, batch 4)
    sample_guidance_cameras   a batch of cameras drawn from a PoseSampling
    orbit_angles              (elevation, azimuth, radius) of cameras about a centre
    annealed_timestep_range   DreamGaussian-style shrinking noise-level range for SDS
    sds_surrogate             a loss whose gradient w.r.t. the image is a given direction
    restart_guidance          restart a guidance's random stream at the start of a fit
    finish_guidance           let a guidance release per-fit resources when a fit ends
    guidance_released         a fit loop's context: ``finish_guidance`` on the way out, however it exits

Design notes:
    A guidance object is anything with ``sds_loss``. It receives the rendered images in ComfyUI's
    BHWC layout (values 0..1), the cameras they were rendered from (with the scene time), the
    scene time ``t`` and ``step_ratio`` in [0,1] (progress of the fit) for annealing. The real
    models (Zero123, Stable Diffusion) live in ``backends/``; tests use an oracle built on the
    synthetic worlds. Poses are expressed as an orbit around the object centre so a guidance can
    recover relative angles with :func:`orbit_angles` (Zero123 needs Δelevation, Δazimuth, Δradius).

    A guidance that draws random timesteps and noise may also have ``reseed(run_seed)``; every fit
    calls it with its own seed before the first step (:func:`restart_guidance`), so a graph queued
    again with the same seeds gives the same scene, however many fits used the guidance before. It may
    also have ``end_fit()``, which every fit calls when it stops, however it stops
    (:func:`finish_guidance`): the real guidances give back the memory their CUDA graphs hold there.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .cameras import DEFAULT_UP, Cameras, intrinsics_from_fov, orbit_poses

__all__ = [
    "Guidance",
    "PoseSampling",
    "sample_guidance_cameras",
    "orbit_angles",
    "annealed_timestep_range",
    "sds_surrogate",
    "restart_guidance",
    "finish_guidance",
    "guidance_released",
]


def restart_guidance(guidance, seed: int) -> None:
    """Call ``guidance.reseed(seed)`` where the guidance has it (no-op for ``None`` or stateless ones)."""
    reseed = getattr(guidance, "reseed", None)
    if callable(reseed):
        reseed(int(seed))


def finish_guidance(guidance) -> None:
    """Call ``guidance.end_fit()`` where the guidance has it (no-op for ``None`` or guidances without one)."""
    end_fit = getattr(guidance, "end_fit", None)
    if callable(end_fit):
        end_fit()


@contextmanager
def guidance_released(guidance):
    """Run a fit's loop, then :func:`finish_guidance` however the loop exits (done, stopped or failed)."""
    try:
        yield
    finally:
        finish_guidance(guidance)


@runtime_checkable
class Guidance(Protocol):
    """What the fit loops call for score distillation (SDS, Poole et al. 2022, eq. 3)."""

    def sds_loss(self, images: Tensor, cameras: Cameras, t: float, step_ratio: float) -> Tensor:
        """Scalar loss whose gradient w.r.t. ``images [B,H,W,3]`` is the guidance direction."""
        ...


@dataclass(frozen=True)
class PoseSampling:
    """Where SDS views are rendered from (CoCo4D §4.1: radius 2.5, azimuth interval 10°, batch 4).

    Args:
        batch: views per SDS step.
        radius: camera distance to ``center``.
        azimuth_interval_deg: azimuths are drawn on this grid (0 for continuous).
        elevation_range_deg: uniform elevation range (DreamGaussian: -30..30).
        fovy_deg: field of view of the SDS cameras (Zero123 renders: 49.1°).
        width, height: SDS render size (Zero123: 256).
        center: orbit centre (the object's).
        reference_elevation_deg, reference_azimuth_deg: the seen view, so sampled poses are
            spread around it.
    """

    batch: int = 4
    radius: float = 2.5
    azimuth_interval_deg: float = 10.0
    elevation_range_deg: tuple[float, float] = (-30.0, 30.0)
    fovy_deg: float = 49.1
    width: int = 256
    height: int = 256
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reference_elevation_deg: float = 0.0
    reference_azimuth_deg: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.elevation_range_deg
        if self.batch < 1 or self.radius <= 0 or not (-90.0 < lo <= hi < 90.0):
            raise ValueError(f"PoseSampling: need batch >= 1, radius > 0, -90 < elevation range < 90; got {self}")


def sample_guidance_cameras(sampling: PoseSampling, t: float, generator: torch.Generator | None = None) -> Cameras:
    """Draw ``sampling.batch`` cameras looking at the centre, all seeing scene time ``t``."""
    lo, hi = sampling.elevation_range_deg
    el = lo + (hi - lo) * torch.rand(sampling.batch, generator=generator)
    if sampling.azimuth_interval_deg > 0:
        steps = int(round(360.0 / sampling.azimuth_interval_deg))
        az = torch.randint(0, steps, (sampling.batch,), generator=generator).float() * sampling.azimuth_interval_deg
    else:
        az = 360.0 * torch.rand(sampling.batch, generator=generator)
    az = az + sampling.reference_azimuth_deg
    viewmats = orbit_poses(el, az, sampling.radius, sampling.center)
    K = intrinsics_from_fov(sampling.fovy_deg, sampling.width, sampling.height)
    return Cameras(viewmats, K.expand(sampling.batch, 3, 3).clone(), sampling.width, sampling.height,
                   torch.full((sampling.batch,), float(t)), 0.01, 100.0)


def orbit_angles(cameras: Cameras, center=(0.0, 0.0, 0.0), up=DEFAULT_UP) -> tuple[Tensor, Tensor, Tensor]:
    """Elevation and azimuth (degrees) and radius of camera centres about ``center``.

    The inverse of :func:`core.engine.cameras.orbit_poses` for the default up axis (-y).
    """
    if tuple(up) != tuple(DEFAULT_UP):
        raise ValueError(f"orbit_angles: only the default up axis {DEFAULT_UP} is supported, got {up}")
    origin = torch.as_tensor(center, dtype=cameras.viewmats.dtype)
    offset = cameras.centers - origin.to(cameras.device, non_blocking=True)
    radius = offset.norm(dim=-1)
    direction = offset / radius.clamp_min(1e-12)[:, None]
    elevation = torch.rad2deg(torch.asin((-direction[:, 1]).clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(direction[:, 0], -direction[:, 2]))
    return elevation, azimuth, radius


def annealed_timestep_range(step_ratio: float, t_min: float = 0.02, t_max: float = 0.98,
                            t_max_final: float = 0.5) -> tuple[float, float]:
    """Noise-level range for SDS at ``step_ratio``: the upper bound shrinks linearly from ``t_max``
    to ``t_max_final`` (DreamGaussian, Tang et al. 2024), so late steps refine detail."""
    if not 0.0 <= step_ratio <= 1.0 or math.isnan(step_ratio):
        raise ValueError(f"annealed_timestep_range: step_ratio must be in [0, 1], got {step_ratio}")
    upper = t_max - (t_max - t_max_final) * step_ratio
    return t_min, max(upper, t_min)


def sds_surrogate(images: Tensor, direction: Tensor) -> Tensor:
    """``0.5 * ||images - sg(images - direction)||^2`` summed over pixels, divided by the batch:
    its gradient w.r.t. ``images`` is exactly ``direction / B`` (the SDS reparameterisation)."""
    target = (images - direction).detach()
    return 0.5 * ((images - target) ** 2).sum() / images.shape[0]
