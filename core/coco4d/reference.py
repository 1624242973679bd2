# SPDX-License-Identifier: Apache-2.0
"""Turn a reference video (or a set of posed images) into the supervision of the fit stages.

Public API:
    seen_view_cameras(num, width, height, radius=2.5, fovy_deg=49.1)   the object's seen view over time
    ReferenceClip                                  posed views + the screen trajectory undoing centring
    reference_clip(frames, masks, cameras, center, ...) -> ReferenceClip

Design notes:
    CoCo4D §3.1 reconstructs the foreground object-centric: the seen view is the orbit pose
    (elevation 0, azimuth 0) at radius 2.5 with Zero123's 49.1° field of view, and the object is
    moved to the image centre in every frame (one zoom for the clip). The same deterministic
    centring is applied by both fit stages, so a static fit and the deformation fit that follows
    it see the object at the same place. Without masks, or with ``center=False``, frames are
    used as they are. Given cameras (posed multi-view images) are never centred: the frames are
    fitted where those cameras see them; a centring asked for there is dropped and said so in
    ``ReferenceClip.notes``, for the node to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from ..engine.views import PosedImages
from .screen_trajectory import ScreenTrajectory, center_object

__all__ = ["seen_view_cameras", "ReferenceClip", "reference_clip"]


def seen_view_cameras(num_frames: int, width: int, height: int, radius: float = 2.5, fovy_deg: float = 49.1
                      ) -> Cameras:
    """The object's seen view (elevation 0, azimuth 0, looking at the origin) at times 0..1."""
    if num_frames < 1:
        raise ValueError(f"seen_view_cameras: num_frames must be >= 1, got {num_frames}")
    vm = orbit_poses([0.0], [0.0], radius).expand(num_frames, 4, 4).clone()
    K = intrinsics_from_fov(fovy_deg, width, height).expand(num_frames, 3, 3).clone()
    times = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
    return Cameras(vm, K, width, height, times, 0.01, 100.0)


@dataclass
class ReferenceClip:
    """Supervision for the fit stages.

    Attributes:
        views: the frames as fitted (centred when a trajectory exists) with their cameras.
        trajectory: places centred renders back into the original frames; None without centring.
        frames, masks: the original frames ``[T,H,W,3]`` and masks ``[T,H,W]`` (masks may be None).
        notes: options asked for but not applied, with the reason (plain sentences).
    """

    views: PosedImages
    trajectory: ScreenTrajectory | None
    frames: Tensor
    masks: Tensor | None
    notes: list[str] = field(default_factory=list)


def reference_clip(
    frames: Tensor,
    masks: Tensor | None = None,
    cameras: Cameras | None = None,
    center: bool = True,
    background=(1.0, 1.0, 1.0),
    radius: float = 2.5,
    fovy_deg: float = 49.1,
) -> ReferenceClip:
    """Build the posed views of a reference video.

    Args:
        frames: ``[T,H,W,3]`` in 0..1.
        masks: optional ``[T,H,W]`` object masks.
        cameras: ``T`` cameras; default: the seen view over time (:func:`seen_view_cameras`).
        center: centre the object (needs masks; ignored when cameras are given, since posed
            multi-view images are already where their cameras see them).
        background: fill colour of centred frames.
        radius, fovy_deg: seen-view camera when ``cameras`` is None.

    Raises:
        ValueError: mismatched counts or sizes, empty masks.
    """
    t, h, w = frames.shape[:3]
    cams = cameras if cameras is not None else seen_view_cameras(t, w, h, radius, fovy_deg)
    trajectory = None
    fitted, fitted_masks = frames, masks
    notes = []
    if center and masks is not None and cameras is None:
        fitted, fitted_masks, trajectory = center_object(frames, masks, background)
    elif center and cameras is not None:
        notes.append("center_object is on but not applied: cameras are connected, so the images are fitted where "
                     "those cameras see them (posed views are never moved). Turn center_object off to silence "
                     "this, or disconnect the cameras for CoCo4D's object-centred fit at the seen view.")
    elif center:
        notes.append("center_object is on but not applied: it needs masks (connect the object masks, e.g. from "
                     "SAM2), so the frames are fitted as they are.")
    return ReferenceClip(PosedImages(fitted, cams, fitted_masks), trajectory, frames, masks, notes)
