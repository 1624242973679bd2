# SPDX-License-Identifier: Apache-2.0
"""Named camera paths behind the ``Gen4D_CameraPath`` node.

Public API:
    CAMERA_PRESETS          the preset names, in menu order
    PathSettings            every knob a preset may read, with defaults
    camera_path(preset, settings) -> Cameras

Design notes:
    One dispatcher over the path builders of ``core.engine.cameras`` so the node stays thin and a
    workflow file names a path by a stable string. Presets ignore knobs they do not use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import torch

from .cameras import (
    DIFFUSION4D_FOVY_DEG,
    MOGE4D_PATHS,
    ORBIT_CONVENTIONS,
    Cameras,
    coco4d_outpaint_poses,
    diffusion4d_orbit,
    intrinsics_from_fov,
    keyframe_path,
    moge4d_path,
    orbit_poses,
)

__all__ = ["CAMERA_PRESETS", "PathSettings", "camera_path", "orbit_path"]

CAMERA_PRESETS = (
    "orbit",
    "diffusion4d_orbit",
    "diffusion4d_static_orbit",
    "coco4d_outpaint_loop1",
    "coco4d_outpaint_loop2",
    *(f"moge4d_{name}" for name in MOGE4D_PATHS),
    "keyframes",
)


@dataclass(frozen=True)
class PathSettings:
    """Knobs shared by the presets.

    Args:
        num_frames: cameras in the path (pose sets of CoCo4D have their own count: 4).
        width, height: image size in pixels.
        fovy_deg: vertical field of view; 0 takes the preset's paper default (CoCo4D and MoGe4D 60°,
            the generic orbit 49.1°, Zero123's Objaverse render camera; Diffusion4D 39.6°, the Blender
            default camera of its render script).
        radius: orbit distance to the centre (CoCo4D outpaint: 0 turns in place).
        elevation_deg: orbit elevation.
        azimuth_start_deg, azimuth_end_deg: orbit sweep; an end 360° past the start is a full
            loop without a repeated last view.
        pivot_depth: MoGe4D paths turn about a point this far in front of the input camera.
        keyframes: JSON list of ``{"t", "elevation", "azimuth", "radius", "fovy"}`` for "keyframes".
        near, far: clipping distances; 0 takes the preset's default (CoCo4D: 0.1 and 10000).
        orbit_convention: spacing of the Diffusion4D orbits' views (``ORBIT_CONVENTIONS``):
            "render_script" = azimuth ``360 i/(T-1)`` as the official render script, "open_loop" =
            ``360 i/T`` (see ``cameras.diffusion4d_orbit``).
    """

    num_frames: int = 24
    width: int = 256
    height: int = 256
    fovy_deg: float = 0.0
    radius: float = 2.0
    elevation_deg: float = 0.0
    azimuth_start_deg: float = 0.0
    azimuth_end_deg: float = 360.0
    pivot_depth: float = 2.0
    keyframes: str = ""
    near: float = 0.0
    far: float = 0.0
    orbit_convention: str = "render_script"


# Paper defaults per preset family: (fovy_deg, near, far).
_PRESET_DEFAULTS = {
    "orbit": (49.1, 0.01, 1000.0),
    "diffusion4d": (DIFFUSION4D_FOVY_DEG, 0.01, 1000.0),
    "coco4d": (60.0, 0.1, 10000.0),
    "moge4d": (60.0, 0.01, 10000.0),
    "keyframes": (60.0, 0.01, 10000.0),
}


def _with_defaults(preset: str, s: PathSettings) -> PathSettings:
    fovy, near, far = _PRESET_DEFAULTS[preset.split("_")[0]]
    return replace(s, fovy_deg=s.fovy_deg or fovy, near=s.near or near, far=s.far or far)


def _frame_times(n: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(n)


def orbit_path(s: PathSettings) -> Cameras:
    """Orbit around the origin at fixed elevation, sweeping azimuth while time advances 0→1."""
    n = s.num_frames
    sweep = s.azimuth_end_deg - s.azimuth_start_deg
    full_loop = abs(abs(sweep) - 360.0) < 1e-6
    steps = torch.arange(n, dtype=torch.float32) / (n if full_loop else max(n - 1, 1))
    az = s.azimuth_start_deg + sweep * steps
    vm = orbit_poses(torch.full((n,), s.elevation_deg), az, s.radius)
    K = intrinsics_from_fov(s.fovy_deg, s.width, s.height).expand(n, 3, 3).clone()
    return Cameras(vm, K, s.width, s.height, _frame_times(n), s.near, s.far)


def camera_path(preset: str, settings: PathSettings | None = None) -> Cameras:
    """Build the named camera path.

    Raises:
        ValueError: unknown preset, bad settings, or malformed keyframes JSON.
    """
    s = settings or PathSettings()
    if preset not in CAMERA_PRESETS:
        raise ValueError(f"camera_path: preset must be one of {CAMERA_PRESETS}, got {preset!r}")
    if s.num_frames < 1:
        raise ValueError(f"camera_path: num_frames must be >= 1, got {s.num_frames}")
    s = _with_defaults(preset, s)
    if preset == "orbit":
        return orbit_path(s)
    if preset in ("diffusion4d_orbit", "diffusion4d_static_orbit"):
        if s.orbit_convention not in ORBIT_CONVENTIONS:
            raise ValueError(f"camera_path: orbit_convention must be one of {ORBIT_CONVENTIONS}, "
                             f"got {s.orbit_convention!r}")
        return diffusion4d_orbit(s.width, s.height, s.num_frames, s.elevation_deg, s.radius, s.fovy_deg,
                                 s.azimuth_start_deg, dynamic=preset == "diffusion4d_orbit", near=s.near, far=s.far,
                                 convention=s.orbit_convention)
    if preset.startswith("coco4d_outpaint_loop"):
        return coco4d_outpaint_poses(int(preset[-1]), s.width, s.height, radius=s.radius, fovy_deg=s.fovy_deg,
                                     near=s.near, far=s.far)
    if preset.startswith("moge4d_"):
        return moge4d_path(preset[len("moge4d_"):], s.num_frames, s.width, s.height, s.pivot_depth, s.fovy_deg,
                           near=s.near, far=s.far)
    return keyframe_path(_parse_keyframes(s.keyframes), s.num_frames, s.width, s.height, s.fovy_deg,
                         near=s.near, far=s.far)


def _parse_keyframes(text: str) -> list[dict]:
    if not text.strip():
        raise ValueError('camera_path: the "keyframes" preset needs keyframes, e.g. '
                         '[{"t": 0, "azimuth": 0}, {"t": 1, "azimuth": 90}]')
    try:
        frames = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"camera_path: keyframes are not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise ValueError("camera_path: keyframes must be a JSON list of objects")
    return frames
