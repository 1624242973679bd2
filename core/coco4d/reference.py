# SPDX-License-Identifier: Apache-2.0
"""Turn a reference video (or a set of posed images) into the supervision of the fit stages.

Public API:
    seen_view_cameras(num, width, height, radius=2.5, fovy_deg=49.1)   the object's seen view over time
    ReferenceClip                                  posed views + the screen trajectory undoing centring
    reference_clip(frames, masks, cameras, center, ...) -> ReferenceClip
    square_view(images, fill)                      a seen-view image framed as a square of its height
    zero123_condition(frames, masks)               Zero123's condition views: the fits' centred seen view, square

Design notes:
    CoCo4D §3.1 reconstructs the foreground object-centric: the seen view is the orbit pose
    (elevation 0, azimuth 0) at radius 2.5 with Zero123's 49.1° field of view, and the object is
    moved to the image centre in every frame (one zoom for the clip). The same deterministic
    centring is applied by both fit stages, so a static fit and the deformation fit that follows
    it see the object at the same place. Without masks, or with ``center=False``, frames are
    used as they are. Given cameras (posed multi-view images) are never centred: the frames are
    fitted where those cameras see them; a centring asked for there is dropped and said so in
    ``ReferenceClip.notes``, for the node to show.

    Zero123 conditions on the seen view (CoCo4D eq. 2: the first frame; eq. 4: the frame of each
    timestamp) as its training renders show an object: centred, on white, in a square image
    whose field of view is 49.1°. The fits' seen view has that field of view across its height,
    so :func:`zero123_condition` takes the centred frames the fits supervise with (the same
    :func:`reference_clip` call, white fill) and frames each as a square of the frame height
    around the image centre: wider frames lose columns that hold only fill (the centring zoom
    keeps the object within ``0.8 * min(H, W)``), narrower ones gain white columns. The object
    then has, in the square, the size the fit renders it at in its square SDS views.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from ..engine.views import PosedImages
from .screen_trajectory import ScreenTrajectory, center_object

__all__ = ["seen_view_cameras", "ReferenceClip", "reference_clip", "square_view", "zero123_condition"]


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
        ignore: the original pixels to leave out of the loss ``[T,H,W]`` (None: every pixel counts).
        notes: options asked for but not applied, with the reason (plain sentences).
    """

    views: PosedImages
    trajectory: ScreenTrajectory | None
    frames: Tensor
    masks: Tensor | None
    notes: list[str] = field(default_factory=list)
    ignore: Tensor | None = None


def reference_clip(
    frames: Tensor,
    masks: Tensor | None = None,
    cameras: Cameras | None = None,
    center: bool = True,
    background=(1.0, 1.0, 1.0),
    radius: float = 2.5,
    fovy_deg: float = 49.1,
    ignore: Tensor | None = None,
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
        ignore: optional ``[T,H,W]`` pixels to leave out of the loss (1 = ignore); centred with the
            frames, so it marks the same content in the fitted views.

    Raises:
        ValueError: mismatched counts or sizes, empty masks.
    """
    t, h, w = frames.shape[:3]
    cams = cameras if cameras is not None else seen_view_cameras(t, w, h, radius, fovy_deg)
    trajectory = None
    fitted, fitted_masks, fitted_ignore = frames, masks, ignore
    notes = []
    if center and masks is not None and cameras is None:
        fitted, fitted_masks, trajectory = center_object(frames, masks, background)
        if ignore is not None:
            fitted_ignore = trajectory.centred(ignore).clamp(0.0, 1.0)
    elif center and cameras is not None:
        notes.append("center_object is on but not applied: cameras are connected, so the images are fitted where "
                     "those cameras see them (posed views are never moved). Turn center_object off to silence "
                     "this, or disconnect the cameras for CoCo4D's object-centred fit at the seen view.")
    elif center:
        notes.append("center_object is on but not applied: it needs masks (connect the object masks, e.g. from "
                     "SAM2), so the frames are fitted as they are.")
    return ReferenceClip(PosedImages(fitted, cams, fitted_masks, fitted_ignore), trajectory, frames, masks, notes,
                         ignore)


def square_view(images: Tensor, fill=(1.0, 1.0, 1.0)) -> Tensor:
    """Frame ``[T,H,W,3]`` images as ``[T,H,H,3]`` squares around the image centre.

    Columns beyond the square are cropped, missing columns are ``fill``; the square's left edge
    is column ``(W - H) // 2`` (to the nearest pixel when ``W - H`` is odd). The field of view
    across the height, and so the object's pixel size, is unchanged.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[-1] != 3 or 0 in images.shape:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"square_view: images must be a non-empty [T,H,W,3] tensor, got {got}")
    t, h, w, _ = images.shape
    if w >= h:
        left = (w - h) // 2
        return images[:, :, left:left + h].clone()
    left = (h - w) // 2
    out = torch.as_tensor(fill, dtype=images.dtype, device=images.device).expand(t, h, h, 3).clone()
    out[:, :, left:left + w] = images
    return out


def zero123_condition(frames: Tensor, masks: Tensor | None = None) -> Tensor:
    """Zero123's condition views of a reference video (CoCo4D eqs. 2 and 4).

    Args:
        frames: ``[T,H,W,3]`` reference frames in 0..1.
        masks: ``[T,H,W]`` object masks; with them the object is centred and zoomed exactly as the
            fit stages centre it (:func:`reference_clip` with ``center=True``) over white. Without
            them the frames are taken as already centred on white.

    Returns:
        ``[T,H,H,3]``: frame ``t``'s centred seen view on white, square (:func:`square_view`).
        Frame 0 conditions the static fit (eq. 2); frame ``t`` the motion stage at time ``t``.

    Raises:
        ValueError: mismatched shapes, or a mask that is empty in some frame.
    """
    clip = reference_clip(frames, masks, None, masks is not None, (1.0, 1.0, 1.0))
    return square_view(clip.views.images)
