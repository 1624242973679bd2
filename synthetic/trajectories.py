# SPDX-License-Identifier: Apache-2.0
"""Ground-truth dense 3D point trajectories of a synthetic world.

Public API:
    trajectories(world, cameras, times=None) -> dict   per-pixel 3D tracks of the first frame's surface points

Design notes:
    Every pixel of the first frame (camera 0 at ``times[0]``) is ray-cast; a hit fixes a part id
    and a point in that part's local frame, and the track is that local point carried by the
    part's rigid motion to every time. Per-time visibility re-casts a ray through the track's exact
    (sub-pixel) projection in the camera of that time: the point is visible when it lies in front
    of the camera, inside the image, and the ray's nearest hit is the same part at the same depth.
    The result is the ground truth for dense trajectory methods such as MoGe4D's 4D-STraG.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..core.engine.cameras import Cameras
from .motion import check_times
from .raycast import (
    World,
    albedo,
    cast_rays,
    check_cameras,
    check_stop,
    check_world,
    move_points,
    pixel_centers,
    pixel_rays,
)

__all__ = ["trajectories"]

_DT = torch.float64


def _trajectory_times(cameras: Cameras, times) -> Tensor:
    if times is None:
        return check_times(cameras.times, "cameras.times", cameras.device)
    t = check_times(times, "times", cameras.device)
    if len(cameras) not in (1, t.numel()):
        raise ValueError(f"trajectories: cameras must hold 1 camera (static) or one per time ({t.numel()}), "
                         f"got {len(cameras)}")
    return t


def _project(viewmat: Tensor, K: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates ``[N,2]`` and camera z ``[N]`` of world ``points [N,3]``."""
    cam = points @ viewmat[:3, :3].to(_DT).T + viewmat[:3, 3].to(_DT)
    z = cam[:, 2]
    pix = cam @ K.to(_DT).T
    return pix[:, :2] / z.clamp_min(1e-12)[:, None], z


def _visible(world: World, cameras: Cameras, k: int, time: float, part: Tensor, points: Tensor,
             uv: Tensor, z: Tensor) -> Tensor:
    """Which of the tracked ``points [N,3]`` are seen, unoccluded, by camera ``k`` at ``time``."""
    w, h = cameras.width, cameras.height
    inside = (part >= 0) & (z > cameras.near) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    vis = torch.zeros_like(inside)
    idx = torch.nonzero(inside).reshape(-1)
    if idx.numel() == 0:
        return vis
    o, d = pixel_rays(cameras.viewmats[k], cameras.Ks[k], uv[idx])
    hits = cast_rays(world, o, d, time, near=cameras.near, far=cameras.far)
    same = (hits.part == part[idx]) & ((hits.s - z[idx]).abs() <= 1e-5 * (1.0 + z[idx].abs()))
    vis[idx] = same
    return vis


def trajectories(world: World, cameras: Cameras, times=None,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, Tensor]:
    """Dense 3D trajectories of the surface points seen in the first frame.

    Args:
        world: the world.
        cameras: one camera (static for all times) or ``T`` cameras, camera ``k`` observing
            ``times[k]``; camera 0 defines the tracked pixels.
        times: ``[T]`` normalised times; defaults to ``cameras.times``.
        should_stop: polled before each frame; raises ``InterruptedError`` when it returns True.

    Returns:
        dict with
        ``points [T,H,W,3]`` float32 world positions (zeros where not ``valid``),
        ``valid [H,W]`` bool (the first-frame pixel hits a surface),
        ``visible [T,H,W]`` bool (in front of camera ``k``, inside its image, not occluded at ``times[k]``),
        ``part_ids [H,W]`` int64 (-1 where not valid),
        ``colors [H,W,3]`` float32 first-frame albedo (the world's background where not valid),
        ``uv [T,H,W,2]`` float32 pixel position of the point in camera ``k`` (centre of pixel
        ``(i, j)`` is ``(j+0.5, i+0.5)``),
        ``depth [T,H,W]`` float32 camera-z of the point in camera ``k``,
        ``times [T]`` float32.

    Raises:
        ValueError: for a wrong world / cameras type, times outside ``[0, 1]`` or a camera count
            that is neither 1 nor ``T``.
    """
    check_world(world)
    check_cameras(cameras)
    t = _trajectory_times(cameras, times)
    h, w, nt = int(cameras.height), int(cameras.width), t.numel()
    o, d = pixel_rays(cameras.viewmats[0], cameras.Ks[0], pixel_centers(w, h, cameras.device))
    first = cast_rays(world, o, d, float(t[0]), near=cameras.near, far=cameras.far)
    points, _ = move_points(world, first.part, first.local_points, t)  # [T,HW,3]
    valid = first.hit
    uv_all, z_all, vis_all = [], [], []
    for k in range(nt):
        check_stop(should_stop, "trajectories")
        cam = k if len(cameras) == nt else 0
        uv, z = _project(cameras.viewmats[cam], cameras.Ks[cam], points[k])
        vis_all.append(_visible(world, cameras, cam, float(t[k]), first.part, points[k], uv, z))
        uv_all.append(uv)
        z_all.append(z)
    mask = valid[None, :, None]
    return {
        "points": torch.where(mask, points, torch.zeros_like(points)).reshape(nt, h, w, 3).float(),
        "valid": valid.reshape(h, w),
        "visible": (torch.stack(vis_all) & valid[None]).reshape(nt, h, w),
        "part_ids": first.part.reshape(h, w),
        "colors": albedo(world, first.part, first.local_points, first.local_normals).reshape(h, w, 3).float(),
        "uv": torch.where(mask, torch.stack(uv_all), torch.zeros(())).reshape(nt, h, w, 2).float(),
        "depth": torch.where(valid[None], torch.stack(z_all), torch.zeros(())).reshape(nt, h, w).float(),
        "times": t.float(),
    }
