# SPDX-License-Identifier: Apache-2.0
"""A synthetic world as a posed-frame dataset in D-NeRF layout (the format dynamic-scene fitters read).

Public API:
    DNERF_SPLITS                          default frames per split: 100 train, 20 test
    random_cameras(world, times, ...)     cameras at random viewpoints around the world's subject
    export_dnerf(world, folder, ...)      train / test PNG RGBA frames + transforms_<split>.json

Design notes:
    As in D-NeRF's scenes, every training frame has its own random camera and the time advances
    with the frame (``i / (N - 1)``); test frames sit at other random cameras and at times between
    the training ones (``(i + 0.5) / M``). The object world is seen from a sphere around the
    origin (elevation -15° to 60°, any azimuth), the scene world from arcs around the walking
    figure in front of its reference camera. Frames are ray-cast exactly (``supersample`` odd,
    anti-aliased rgb and alpha) in row bands, so 800x800 with supersampling stays within a few
    hundred MB, and written as straight-alpha RGBA: transparent where no surface is hit, so a
    reader composites them on the background it wants (white in D-NeRF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from ..core.formats.posed_frames import write_dnerf_split
from .raycast import World, check_world, render

__all__ = ["DNERF_SPLITS", "ViewSphere", "VIEW_SPHERES", "random_cameras", "export_dnerf"]

DNERF_SPLITS = {"train": 100, "test": 20}


@dataclass(frozen=True)
class ViewSphere:
    """Where random cameras go: on a sphere of ``radius`` about ``center``, looking at it.

    Elevations are drawn uniformly in area between the two bounds (degrees; positive looks down
    from above, the worlds' up being -y), azimuths uniformly between theirs.
    """

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 2.5
    elevation_deg: tuple[float, float] = (-15.0, 60.0)
    azimuth_deg: tuple[float, float] = (0.0, 360.0)


VIEW_SPHERES = {
    "object": ViewSphere(),
    # In front of the scene world's reference camera (origin, looking along +z) around the walker.
    "scene": ViewSphere(center=(0.0, 0.4, 3.6), radius=3.6, elevation_deg=(0.0, 15.0), azimuth_deg=(-25.0, 25.0)),
}


def random_cameras(world: World, times: Tensor, size: int, fov_deg: float = 40.0,
                   generator: torch.Generator | None = None, sphere: ViewSphere | None = None) -> Cameras:
    """``len(times)`` square cameras of ``size`` pixels at random viewpoints (``VIEW_SPHERES[world.name]``).

    Args:
        world: the world (its name picks the view sphere unless ``sphere`` is given).
        times: ``[N]`` the time each camera sees.
        size: image width and height.
        fov_deg: field of view (both axes).
        generator: source of the random viewpoints.
        sphere: override of the view sphere.
    """
    check_world(world)
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    n = times.numel()
    if n < 1 or int(size) < 1:
        raise ValueError(f"random_cameras: need at least one time and a positive size, got {n} and {size}")
    s = sphere or VIEW_SPHERES.get(world.name, ViewSphere())
    lo, hi = (math.sin(math.radians(e)) for e in s.elevation_deg)
    el = torch.rad2deg(torch.asin(lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64))).float()
    az = (s.azimuth_deg[0] + (s.azimuth_deg[1] - s.azimuth_deg[0])
          * torch.rand(n, generator=generator, dtype=torch.float64)).float()
    viewmats = orbit_poses(el, az, s.radius, s.center)
    K = intrinsics_from_fov(fov_deg, int(size), int(size))
    return Cameras(viewmats, K.expand(n, 3, 3).clone(), int(size), int(size), times, 0.01, 1000.0)


def _rgba(world: World, cameras: Cameras, i: int, supersample: int, band_rows: int) -> Tensor:
    """Straight-alpha RGBA ``[H,W,4]`` of camera ``i``, ray-cast in bands of ``band_rows`` rows."""
    cam = cameras[i]
    rows = []
    for top in range(0, cam.height, band_rows):
        bottom = min(top + band_rows, cam.height)
        K = cam.Ks.clone()
        K[:, 1, 2] -= top  # the band is the window [top, bottom) of the full image
        band = Cameras(cam.viewmats, K, cam.width, bottom - top, cam.times, cam.near, cam.far)
        out = render(world, band, background=(0.0, 0.0, 0.0), supersample=supersample)
        rows.append(torch.cat([out["rgb"][0], out["alpha"][0][..., None]], dim=-1))
    premultiplied = torch.cat(rows).cpu()
    alpha = premultiplied[..., 3:]
    rgb = torch.where(alpha > 0, premultiplied[..., :3] / alpha.clamp_min(1e-8), torch.zeros_like(alpha))
    return torch.cat([rgb.clamp(0.0, 1.0), alpha], dim=-1)


def export_dnerf(
    world: World,
    folder: str | Path,
    num_train: int = DNERF_SPLITS["train"],
    num_test: int = DNERF_SPLITS["test"],
    size: int = 800,
    fov_deg: float = 40.0,
    seed: int = 0,
    supersample: int = 3,
    device: torch.device | str | None = None,
    callback: Callable[[int, int], None] | None = None,
    band_rows: int = 64,
) -> dict[str, Cameras]:
    """Render ``world`` into ``folder`` as a D-NeRF dataset (``train/``, ``test/``, ``transforms_*.json``).

    Args:
        world: a synthetic world.
        folder: target folder (created; existing files of the same names are replaced atomically).
        num_train: training frames, camera ``i`` at time ``i / (num_train - 1)``.
        num_test: test frames at other cameras, times ``(i + 0.5) / num_test``; 0 writes no test split.
        size: image width and height (800 in D-NeRF).
        fov_deg: field of view of every camera.
        seed: seed of the viewpoints.
        supersample: odd sub-pixel grid per axis for anti-aliased rgb and alpha.
        device: where to ray-cast (CUDA makes 800x800 exports fast).
        callback: ``callback(done, total)`` after every frame.
        band_rows: image rows ray-cast at once (bounds the memory).

    Returns:
        ``{"train": Cameras, "test": Cameras}`` (CPU): exactly the cameras the files describe.
    """
    if num_train < 1 or num_test < 0:
        raise ValueError(f"export_dnerf: need num_train >= 1 and num_test >= 0, got {num_train}, {num_test}")
    g = torch.Generator().manual_seed(int(seed))
    train_times = torch.linspace(0.0, 1.0, num_train) if num_train > 1 else torch.zeros(1)
    test_times = (torch.arange(num_test, dtype=torch.float32) + 0.5) / max(num_test, 1)
    splits = {"train": random_cameras(world, train_times, size, fov_deg, g)}
    if num_test:
        splits["test"] = random_cameras(world, test_times, size, fov_deg, g)
    total, done = num_train + num_test, 0
    for split, cams in splits.items():
        on_device = cams.to(device) if device is not None else cams

        def frame(i: int, on_device=on_device) -> Tensor:
            nonlocal done
            rgba = _rgba(world, on_device, i, supersample, band_rows)
            done += 1
            if callback is not None:
                callback(done, total)
            return rgba

        write_dnerf_split(folder, split, cams, frame)
    return splits
