# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D's official orbit, written out from its render script (VITA-Group/Diffusion4D rendering/blender.py,
``--mode_multi``) in Blender's own conventions, then turned into OpenCV world-to-camera matrices of this pack's world.

Kept apart from ``core.engine.cameras`` on purpose: nothing here calls the pack's camera helpers, so a test that
compares the two checks the pack against the script, not against itself.

The script, frame ``i`` of ``T`` (Blender: world ``+Z`` up, a camera looks along its local ``-Z`` with ``+Y`` up):
    t = i / max(T - 1, 1); the animation is at Blender frame i
    angle = 2 pi - 2 pi t + 2 pi f                                  (f = --azimuth, a fraction of a turn)
    d = normalize(sin(angle), cos(angle), -e)                       (e = --elevation / 180)
    camera location = -distance * d; rotation = d.to_track_quat("-Z", "Y") (local -Z along d, local +Y towards +Z)
    the camera is Blender's default one: 50 mm lens on a 36 mm sensor (sensor fit auto, square images)

This pack's world shares the script's front view and up direction: Blender ``(X, Y, Z)`` is ``(x, z, -y)`` here
(front camera on ``-Y`` there, on ``-z`` here; up ``+Z`` there, ``-y`` here).
"""

from __future__ import annotations

import math

import torch

LENS_MM, SENSOR_MM = 50.0, 36.0
# columns: where Blender's X, Y, Z axes point in this pack's world
BLENDER_TO_PACK = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def blender_camera(i: int, frames: int, distance: float = 2.0, elevation_arg: int = 0, azimuth_frac: float = 0.0):
    """(location [3], camera-to-world rotation [3,3] with columns = the camera's local X, Y, Z) in Blender's world."""
    t = i / max(frames - 1, 1)
    angle = (2.0 * math.pi - t * 2.0 * math.pi) + azimuth_frac * 2.0 * math.pi
    d = _normalize(torch.tensor([math.sin(angle), math.cos(angle), -elevation_arg / 180.0], dtype=torch.float64))
    location = -distance * d
    z_local = -d                                   # the camera's -Z axis points along d
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    y_local = _normalize(world_up - (world_up @ z_local) * z_local)  # +Y as close to world +Z as possible
    x_local = torch.linalg.cross(y_local, z_local)
    return location, torch.stack([x_local, y_local, z_local], dim=1)


def script_orbit(frames: int, size: int, distance: float = 2.0, elevation_arg: int = 0, azimuth_frac: float = 0.0):
    """The script's ``frames`` views as pack cameras: ``(viewmats [T,4,4], K [3,3], times [T])``, float64."""
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # Blender camera axes -> OpenCV
    mats = []
    for i in range(frames):
        location, cam_to_world = blender_camera(i, frames, distance, elevation_arg, azimuth_frac)
        rot_w2c = flip @ cam_to_world.T @ BLENDER_TO_PACK.T   # pack world -> Blender world -> OpenCV camera
        eye = BLENDER_TO_PACK @ location
        vm = torch.eye(4, dtype=torch.float64)
        vm[:3, :3] = rot_w2c
        vm[:3, 3] = -rot_w2c @ eye
        mats.append(vm)
    focal = LENS_MM / SENSOR_MM * size
    K = torch.tensor([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    times = torch.tensor([i / max(frames - 1, 1) for i in range(frames)], dtype=torch.float64)
    return torch.stack(mats), K, times
