# SPDX-License-Identifier: Apache-2.0
"""CoCo4D's screen-space foreground trajectory: per-frame shift (Δx, Δy) and scale s.

Public API:
    ScreenTrajectory            shift ``[T,2]`` (pixels) and scale ``[T]``; ``warp`` applies it
    center_object(frames, masks, fill)       object-centred frames + the trajectory that undoes it
    refine_trajectory(rendered, frames, masks, trajectory, ...)   CoCo4D App. A refinement

Design notes:
    CoCo4D §3.1 (and App. A): the foreground is reconstructed from frames in which the object is
    translated and scaled to the image centre, so its deformation is object-centric; a per-frame
    shift and scale then put the rendered object back where the reference video has it, and are
    refined against the reference frames with the RGB alignment loss (eq. 3) for ~50 iterations
    at learning rate 0.1. Here a trajectory maps a centred image ``I_c`` to the frame:
    ``I(p) = I_c((p - c - shift) / scale + c)`` with ``c`` the image centre, implemented with a
    differentiable ``grid_sample``. Centring uses one zoom for the whole clip (from the largest
    mask extent) so articulation is not mistaken for size changes; only depth-driven changes of
    size remain for the per-frame scale. The shift is in pixels (Adam lr 0.1 moves it ~0.1 px a
    step); the scale is optimised in log space at ``scale_lr`` (0.1 would change it by ~10% a step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ScreenTrajectory", "center_object", "refine_trajectory"]


@dataclass
class ScreenTrajectory:
    """Per-frame placement of a centred render in the reference frames.

    Attributes:
        shift: ``[T,2]`` pixel offset of the object centre from the image centre.
        scale: ``[T]`` size factor (rendered object size -> frame object size).
    """

    shift: Tensor
    scale: Tensor

    def __post_init__(self) -> None:
        if self.shift.dim() != 2 or self.shift.shape[1] != 2 or self.scale.shape != (self.shift.shape[0],):
            raise ValueError(f"ScreenTrajectory: need shift [T,2] and scale [T], got {tuple(self.shift.shape)} "
                             f"and {tuple(self.scale.shape)}")
        if not (self.scale > 0).all() or not torch.isfinite(self.shift).all():
            raise ValueError("ScreenTrajectory: scales must be positive and shifts finite")

    def __len__(self) -> int:
        return self.shift.shape[0]

    def as_dict(self) -> dict[str, Tensor]:
        """The form ``core.engine.scene.ScenePart.trajectory`` stores."""
        return {"shift": self.shift.detach().clone(), "scale": self.scale.detach().clone()}

    def warp(self, images: Tensor, index: Tensor | None = None) -> Tensor:
        """Place centred images ``[B,H,W,C]`` (frames ``index``, default all) into the frame."""
        shift = self.shift if index is None else self.shift[index]
        scale = self.scale if index is None else self.scale[index]
        return _warp(images, shift, scale)


def _warp(images: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``out(p) = images((p - c - shift) / scale + c)`` with bilinear sampling, zeros outside."""
    b, h, w, _ = images.shape
    ys = torch.arange(h, dtype=images.dtype, device=images.device) + 0.5
    xs = torch.arange(w, dtype=images.dtype, device=images.device) + 0.5
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy = w / 2.0, h / 2.0
    sx = (px[None] - cx - shift[:, 0, None, None]) / scale[:, None, None] + cx
    sy = (py[None] - cy - shift[:, 1, None, None]) / scale[:, None, None] + cy
    grid = torch.stack([sx / w * 2.0 - 1.0, sy / h * 2.0 - 1.0], dim=-1)  # align_corners=False coords
    out = F.grid_sample(images.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.permute(0, 2, 3, 1)


def center_object(frames: Tensor, masks: Tensor, fill=(1.0, 1.0, 1.0), fraction: float = 0.8
                  ) -> tuple[Tensor, Tensor, ScreenTrajectory]:
    """Translate each frame's object to the image centre and zoom the clip so it fills ``fraction``.

    Args:
        frames: ``[T,H,W,3]`` reference frames.
        masks: ``[T,H,W]`` object masks.
        fill: colour outside the object in the centred frames.
        fraction: target share of the image the largest object extent of the clip takes.

    Returns:
        ``(centred_frames [T,H,W,3], centred_masks [T,H,W], trajectory)`` where
        ``trajectory.warp(centred)`` reproduces the object in the original frames.

    Raises:
        ValueError: a mask is empty, or shapes disagree.
    """
    if frames.dim() != 4 or masks.shape != frames.shape[:3]:
        raise ValueError(f"center_object: frames [T,H,W,3] and masks [T,H,W] must match, got "
                         f"{tuple(frames.shape)} and {tuple(masks.shape)}")
    t, h, w = masks.shape
    binary = masks > 0.5
    empty = ~binary.flatten(1).any(dim=1)
    if empty.any():
        bad = torch.nonzero(empty).flatten().tolist()
        raise ValueError(f"center_object: the mask is empty in frame(s) {bad[:8]}; the object must be visible")
    ys = torch.arange(h, dtype=torch.float32)
    xs = torch.arange(w, dtype=torch.float32)
    rows, cols = binary.any(dim=2), binary.any(dim=1)  # [T,H], [T,W]
    y0 = torch.where(rows, ys, torch.inf).amin(1)
    y1 = torch.where(rows, ys, -torch.inf).amax(1) + 1
    x0 = torch.where(cols, xs, torch.inf).amin(1)
    x1 = torch.where(cols, xs, -torch.inf).amax(1) + 1
    center = torch.stack([(x0 + x1) / 2.0, (y0 + y1) / 2.0], dim=-1)  # [T,2] pixels
    extent = torch.maximum(x1 - x0, y1 - y0).max()
    zoom = fraction * min(h, w) / extent
    shift = center - torch.tensor([w / 2.0, h / 2.0])
    trajectory = ScreenTrajectory(shift, torch.full((t,), 1.0 / float(zoom)))
    # Inverse placement: centred(q) = frame((q - c) / zoom + c + shift).
    inverse_shift = -shift * zoom
    rgba = torch.cat([frames * masks[..., None], masks[..., None]], dim=-1)
    moved = _warp(rgba, inverse_shift, torch.full((t,), float(zoom)))
    fill_t = torch.as_tensor(fill, dtype=frames.dtype)
    alpha = moved[..., 3:].clamp(0, 1)
    centred = moved[..., :3] + (1.0 - alpha) * fill_t
    return centred.clamp(0, 1), alpha[..., 0], trajectory


def refine_trajectory(
    rendered_rgb: Tensor,
    rendered_alpha: Tensor,
    frames: Tensor,
    masks: Tensor,
    trajectory: ScreenTrajectory,
    iterations: int = 50,
    shift_lr: float = 0.1,
    scale_lr: float = 0.01,
) -> tuple[ScreenTrajectory, list[float]]:
    """Refine shift and scale so the warped renders match the frames (CoCo4D App. A: 50 steps, lr 0.1).

    Args:
        rendered_rgb: ``[T,H,W,3]`` centred renders of the fitted object (fixed).
        rendered_alpha: ``[T,H,W]`` their alpha.
        frames: ``[T,H,W,3]`` reference frames.
        masks: ``[T,H,W]`` object masks of the frames.
        trajectory: starting point (from :func:`center_object`).
        iterations: Adam steps.
        shift_lr: learning rate of the shift in pixels.
        scale_lr: learning rate of the log-scale.

    Returns:
        ``(refined trajectory, loss per step)``; the loss compares premultiplied colour and alpha.
    """
    if rendered_rgb.shape != frames.shape or rendered_alpha.shape != masks.shape or frames.shape[:3] != masks.shape:
        raise ValueError("refine_trajectory: renders, frames and masks must share [T,H,W]")
    shift = trajectory.shift.detach().clone().float().requires_grad_(True)
    log_scale = trajectory.scale.detach().clone().float().log().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [shift], "lr": shift_lr}, {"params": [log_scale], "lr": scale_lr}])
    source = torch.cat([rendered_rgb * rendered_alpha[..., None], rendered_alpha[..., None]], dim=-1).detach()
    target = torch.cat([frames * masks[..., None], masks[..., None]], dim=-1)
    losses = []
    with torch.enable_grad():
        for _ in range(iterations):
            warped = _warp(source, shift, log_scale.exp())
            loss = ((warped - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return ScreenTrajectory(shift.detach(), log_scale.detach().exp()), losses
