# SPDX-License-Identifier: Apache-2.0
"""Dense per-pixel 3D point trajectories: the GEN4D_TRACKS payload.

Public API:
    Tracks                 points [T,H,W,3] + colours [H,W,3] + visibility [T,H,W] + source camera
    Tracks.from_world_dict build from ``synthetic.trajectories``' dict (ground-truth tracks)

Design notes:
    One track per pixel of the source image (frame 0). Points are in world coordinates; for
    MoGe4D the world is the source camera's frame (``viewmat`` = identity), as in the official
    inference. ``valid`` marks pixels that carry a track at all (a surface was hit / depth was
    finite); ``visible`` is per-frame visibility in the source camera where known (all ones for
    generated tracks, which have no occlusion reasoning). Torch only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["Tracks"]


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
        if not torch.isfinite(p[:, self.valid]).all():
            raise ValueError("Tracks: points of valid pixels must be finite")
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

    @classmethod
    def from_world_dict(cls, tracks: dict, K: Tensor, viewmat: Tensor, fps: float = 16.0) -> Tracks:
        """Tracks from ``synthetic.trajectories(world, cameras)`` (``K``/``viewmat`` of camera 0)."""
        return cls(points=tracks["points"].float(), colors=tracks["colors"].float(), valid=tracks["valid"],
                   visible=tracks["visible"], K=K.float(), viewmat=viewmat.float(), fps=float(fps))
