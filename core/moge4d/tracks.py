# SPDX-License-Identifier: Apache-2.0
"""Dense per-pixel 3D point trajectories: the GEN4D_TRACKS payload.

Public API:
    Tracks                 points [T,H,W,3] + colours [H,W,3] + visibility [T,H,W] + source camera
    Tracks.from_world_dict build from ``synthetic.trajectories``' dict (ground-truth tracks)
    Tracks.frame_times()   ``[T]`` normalised times ``i/(T-1)`` of the frames
    Tracks.at(t)           ``[H,W,3]`` points at normalised time ``t`` (linear between frames)
    Tracks.source_depth()  ``[H,W]`` z-depth of the frame-0 points in the source camera
    save_tracks_ply_sequence(tracks, folder, ...)   one coloured point PLY per frame (valid pixels)
    load_tracks_ply_sequence(paths)                 read such a sequence back: points [T,N,3], colours [N,3]

Design notes:
    One track per pixel of the source image (frame 0). Points are in world coordinates; for
    MoGe4D the world is the source camera's frame (``viewmat`` = identity), as in the official
    inference. ``valid`` marks pixels that carry a track at all (a surface was hit / depth was
    finite); ``visible`` is per-frame visibility in the source camera where known (all ones for
    generated tracks, which have no occlusion reasoning). Torch only.

    Time follows ``core.engine.scene``: frame ``i`` of ``T`` sits at ``t = i/(T-1)``, and :meth:`Tracks.at`
    interpolates linearly between frames exactly like ``KeyframeMotion``, so a scene built from the
    tracks and the tracks themselves agree at every time.

    The PLY export writes, per frame, the valid pixels in row-major order as ``x, y, z`` float +
    ``red, green, blue`` uchar (``core.formats.ply.save_points_ply``): every file has the same points in the
    same order, so point ``n`` of every frame is one track and any point-cloud viewer plays the
    sequence. Files are written atomically under the given root (``core.formats.paths``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..formats.paths import safe_output_path
from ..formats.ply import load_points_ply, save_points_ply

__all__ = ["Tracks", "save_tracks_ply_sequence", "load_tracks_ply_sequence"]

log = logging.getLogger(__name__)


@dataclass
class Tracks:
    """Dense trajectories of the source image's pixels.

    Attributes:
        points: ``[T,H,W,3]`` float32 world positions per frame.
        colors: ``[H,W,3]`` float32 RGB in 0..1 (the source image).
        valid: ``[H,W]`` bool, pixels that carry a track.
        visible: ``[T,H,W]`` bool, visible from the source camera at frame ``t``.
        K: ``[3,3]`` pixel intrinsics of the source image.
        viewmat: ``[4,4]`` world-to-camera of the source camera.
        fps: frame rate of the motion.
    """

    points: Tensor
    colors: Tensor
    valid: Tensor
    visible: Tensor
    K: Tensor
    viewmat: Tensor
    fps: float = 16.0

    def __post_init__(self) -> None:
        p = self.points
        if p.dim() != 4 or p.shape[-1] != 3:
            raise ValueError(f"Tracks: points must be [T,H,W,3], got {tuple(p.shape)}")
        t, h, w = p.shape[:3]
        if tuple(self.colors.shape) != (h, w, 3):
            raise ValueError(f"Tracks: colors must be [{h},{w},3], got {tuple(self.colors.shape)}")
        if tuple(self.valid.shape) != (h, w):
            raise ValueError(f"Tracks: valid must be [{h},{w}], got {tuple(self.valid.shape)}")
        if tuple(self.visible.shape) != (t, h, w):
            raise ValueError(f"Tracks: visible must be [{t},{h},{w}], got {tuple(self.visible.shape)}")
        if tuple(self.K.shape) != (3, 3) or tuple(self.viewmat.shape) != (4, 4):
            raise ValueError(f"Tracks: K must be [3,3] and viewmat [4,4], got {tuple(self.K.shape)} and "
                             f"{tuple(self.viewmat.shape)}")
        if not torch.isfinite(p[:, self.valid.bool()]).all():
            raise ValueError("Tracks: points of valid pixels must be finite")
        if not torch.isfinite(self.K).all() or not torch.isfinite(self.viewmat).all():
            raise ValueError("Tracks: K and viewmat must be finite")
        if float(self.K[0, 0]) <= 0 or float(self.K[1, 1]) <= 0:
            raise ValueError(f"Tracks: focal lengths in K must be positive, got fx={float(self.K[0, 0])}, "
                             f"fy={float(self.K[1, 1])}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not math.isfinite(self.fps) \
                or self.fps <= 0:
            raise ValueError(f"Tracks: fps must be a finite number > 0, got {self.fps!r}")
        self.valid = self.valid.bool()
        self.visible = self.visible.bool()

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def height(self) -> int:
        return int(self.points.shape[1])

    @property
    def width(self) -> int:
        return int(self.points.shape[2])

    @property
    def device(self) -> torch.device:
        return self.points.device

    def to(self, device) -> Tracks:
        return replace(self, points=self.points.to(device), colors=self.colors.to(device),
                       valid=self.valid.to(device), visible=self.visible.to(device), K=self.K.to(device),
                       viewmat=self.viewmat.to(device))

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def frame_times(self) -> Tensor:
        """``[T]`` float64 normalised times ``i/(T-1)`` of the frames (``[0]`` for one frame)."""
        t = self.num_frames
        return torch.linspace(0.0, 1.0, t, dtype=torch.float64) if t > 1 else torch.zeros(1, dtype=torch.float64)

    def at(self, t: float) -> Tensor:
        """``[H,W,3]`` points at normalised time ``t`` in ``[0,1]``, linear between neighbouring frames.

        Matches ``core.engine.scene.KeyframeMotion``: exact frames at ``t = i/(T-1)``.
        """
        value = float(t)
        if not (math.isfinite(value) and -1e-6 <= value <= 1.0 + 1e-6):
            raise ValueError(f"Tracks.at: t must lie in [0, 1], got {t!r}")
        last = self.num_frames - 1
        if last == 0:
            return self.points[0]
        s = min(max(value, 0.0), 1.0) * last
        if abs(s - round(s)) < 1e-6:
            return self.points[int(round(s))]
        i0 = min(int(math.floor(s)), last - 1)
        return torch.lerp(self.points[i0], self.points[i0 + 1], s - i0)

    def camera_points(self, t: float | None = None) -> Tensor:
        """``[H,W,3]`` points in the source camera's frame at time ``t`` (default: frame 0)."""
        p = self.points[0] if t is None else self.at(t)
        vm = self.viewmat.to(p.dtype)
        return p @ vm[:3, :3].T + vm[:3, 3]

    def source_depth(self) -> Tensor:
        """``[H,W]`` z-depth of the frame-0 points in the source camera (0 where not ``valid``)."""
        z = self.camera_points()[..., 2]
        return torch.where(self.valid, z, torch.zeros_like(z))

    @classmethod
    def from_world_dict(cls, tracks: dict, K: Tensor, viewmat: Tensor, fps: float = 16.0) -> Tracks:
        """Tracks from ``synthetic.trajectories(world, cameras)`` (``K``/``viewmat`` of camera 0)."""
        return cls(points=tracks["points"].float(), colors=tracks["colors"].float(), valid=tracks["valid"],
                   visible=tracks["visible"], K=K.float(), viewmat=viewmat.float(), fps=float(fps))


def save_tracks_ply_sequence(
    tracks: Tracks,
    folder: str | os.PathLike,
    prefix: str = "frame",
    root: str | os.PathLike | None = None,
    callback: Callable[[int, int, None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Path]:
    """Write the tracks as one coloured point PLY per frame, ``{prefix}_{i:05d}.ply``, each atomically.

    Args:
        tracks: the tracks; only ``valid`` pixels are written (row-major, the same order every frame).
        folder: output folder (created); with ``root``, a relative name checked against ``root``.
        prefix: file name prefix, no path separators.
        root: optional output folder that ``folder`` must stay inside.
        callback: ``callback(step, total, None)`` after each file.
        should_stop: polled before each frame; when it returns True the files written so far (all
            complete) are returned.

    Returns:
        The paths written, in frame order.

    Raises:
        ValueError: not Tracks, no valid pixel, a bad prefix or an unsafe folder name.
    """
    if not isinstance(tracks, Tracks):
        raise ValueError(f"save_tracks_ply_sequence: tracks must be Tracks, got {type(tracks).__name__}")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\\x00") or prefix in (".", ".."):
        raise ValueError(f"save_tracks_ply_sequence: prefix must be a plain file name prefix, got {prefix!r}")
    if tracks.num_valid == 0:
        raise ValueError("save_tracks_ply_sequence: the tracks have no valid pixel; nothing to write")
    out = safe_output_path(root, str(folder)) if root is not None else Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    valid = tracks.valid.cpu()
    colors = tracks.colors.detach().cpu()[valid]
    written: list[Path] = []
    total = tracks.num_frames
    for i in range(total):
        if should_stop is not None and should_stop():
            log.info("save_tracks_ply_sequence: stopped after %d of %d frames", i, total)
            break
        written.append(save_points_ply(tracks.points[i].detach().cpu()[valid], colors, out / f"{prefix}_{i:05d}.ply"))
        if callback is not None:
            callback(i + 1, total, None)
    return written


def load_tracks_ply_sequence(paths: Sequence[str | os.PathLike]) -> tuple[Tensor, Tensor]:
    """Read a sequence written by :func:`save_tracks_ply_sequence`.

    Returns:
        ``points [T,N,3]`` float32 and the first file's ``colors [N,3]`` float32 in 0..1.

    Raises:
        ValueError: no paths, unreadable files, or frames with different point counts.
    """
    if not paths:
        raise ValueError("load_tracks_ply_sequence: need at least one PLY path")
    frames, colors = [], None
    for path in paths:
        pts, col = load_points_ply(path)
        if frames and pts.shape != frames[0].shape:
            raise ValueError(f"load_tracks_ply_sequence: {str(path)!r} holds {pts.shape[0]} points, the first frame "
                             f"{frames[0].shape[0]}; frames of one track sequence must match")
        frames.append(pts)
        colors = col if colors is None else colors
    return torch.from_numpy(np.stack(frames)), torch.from_numpy(colors)
