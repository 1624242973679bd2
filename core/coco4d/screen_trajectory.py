# SPDX-License-Identifier: Apache-2.0
"""CoCo4D's screen-space foreground trajectory: per-frame shift (Δx, Δy) and scale s.

Public API:
    ScreenTrajectory            shift ``[T,2]`` (pixels) and scale ``[T]``; ``warp`` applies it, ``at`` samples it
    center_object(frames, masks, fill)       object-centred frames + the trajectory that undoes it
    refine_trajectory(rendered, frames, masks, trajectory, ...)   CoCo4D App. A refinement
    ScreenPlacement / screen_placement(...)  where a render may be put back into the reference video
    place_layer(rgb, alpha, depth, shift, scale)   a premultiplied render layer moved by the trajectory
    composite_layers(layers, background)     premultiplied layers composited front to back per pixel

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

    Rendering with the trajectory. The warp is a 2D operation: it is right only for a camera that is
    the view the trajectory was measured in (the seen view the object was fitted from, recorded in
    the scene part's ``reference_cameras``). :func:`screen_placement` tells which cameras of a path are
    that view (same pose and intrinsics as the recorded camera of their time, up to a small
    tolerance, at any image size: shifts scale with the image) and why the others are not;
    :func:`place_layer` moves such a render; :func:`composite_layers` merges it with the other
    parts' renders by per-pixel depth. The depth of a placed layer is the seen view's depth (object
    units): a 2D warp has no depth of its own. Any other camera needs the 3D placement of
    composition (``core.coco4d.compose``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.cameras import Cameras, view_difference

__all__ = ["ScreenTrajectory", "center_object", "refine_trajectory", "ScreenPlacement", "screen_placement",
           "place_layer", "composite_layers", "SAME_VIEW_TOLERANCE"]

# A camera counts as the recorded view within these limits (rotation in degrees, centre offset
# relative to the view's distance from the origin, intrinsics as relative image fractions): far
# below a pixel at the sizes the pack renders, far above float round-off of a rebuilt camera.
SAME_VIEW_TOLERANCE = (0.05, 1e-3, 1e-3)


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

    @classmethod
    def from_dict(cls, trajectory: dict[str, Tensor], num_frames: int | None = None) -> "ScreenTrajectory":
        """From the form a scene part stores (a missing shift is 0, a missing scale 1)."""
        shift, scale = trajectory.get("shift"), trajectory.get("scale")
        n = num_frames if shift is None and scale is None else (shift if shift is not None else scale).shape[0]
        shift = torch.zeros(n, 2) if shift is None else shift.detach().float().cpu()
        scale = torch.ones(n) if scale is None else scale.detach().float().cpu()
        return cls(shift, scale)

    def at(self, times: Tensor) -> tuple[Tensor, Tensor]:
        """``(shift [C,2], scale [C])`` at normalised times (frame ``i`` at ``i/(T-1)``).

        Between frames the shift is interpolated linearly and the scale geometrically.
        """
        t = times.detach().float().cpu().clamp(0.0, 1.0)
        last = len(self) - 1
        if last == 0:
            return self.shift[:1].expand(len(t), 2).clone(), self.scale[:1].expand(len(t)).clone()
        pos = t * last
        i0 = pos.floor().long().clamp(max=last - 1)
        w = (pos - i0.float())
        shift = torch.lerp(self.shift[i0], self.shift[i0 + 1], w[:, None])
        scale = torch.lerp(self.scale[i0].log(), self.scale[i0 + 1].log(), w).exp()
        return shift, scale

    def warp(self, images: Tensor, index: Tensor | None = None) -> Tensor:
        """Place centred images ``[B,H,W,C]`` (frames ``index``, default all) into the frame."""
        shift = self.shift if index is None else self.shift[index]
        scale = self.scale if index is None else self.scale[index]
        return _warp(images, shift, scale)

    def centred(self, images: Tensor) -> Tensor:
        """The inverse of :meth:`warp` for all frames: frame-space images ``[T,H,W,C]`` (or ``[T,H,W]``)
        moved as :func:`center_object` moves the frames, zeros where the frame shows nothing."""
        flat = images.dim() == 3
        stacked = images[..., None] if flat else images
        out = _warp(stacked, -self.shift / self.scale[:, None], 1.0 / self.scale)
        return out[..., 0] if flat else out


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
    ignore: Tensor | None = None,
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
        ignore: optional ``[T,H,W]`` frame pixels left out of the loss (1 = ignore).

    Returns:
        ``(refined trajectory, loss per step)``; the loss compares premultiplied colour and alpha.
    """
    if rendered_rgb.shape != frames.shape or rendered_alpha.shape != masks.shape or frames.shape[:3] != masks.shape:
        raise ValueError("refine_trajectory: renders, frames and masks must share [T,H,W]")
    if ignore is not None and ignore.shape != masks.shape:
        raise ValueError(f"refine_trajectory: ignore must be {list(masks.shape)} like the masks, got "
                         f"{list(ignore.shape)}")
    keep = None if ignore is None else (1.0 - ignore.float())[..., None]
    shift = trajectory.shift.detach().clone().float().requires_grad_(True)
    log_scale = trajectory.scale.detach().clone().float().log().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [shift], "lr": shift_lr}, {"params": [log_scale], "lr": scale_lr}])
    source = torch.cat([rendered_rgb * rendered_alpha[..., None], rendered_alpha[..., None]], dim=-1).detach()
    target = torch.cat([frames * masks[..., None], masks[..., None]], dim=-1)
    losses = []
    with torch.enable_grad():
        for _ in range(iterations):
            warped = _warp(source, shift, log_scale.exp())
            error = (warped - target) ** 2
            loss = (error if keep is None else error * keep).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return ScreenTrajectory(shift.detach(), log_scale.detach().exp()), losses


@dataclass
class ScreenPlacement:
    """Which cameras may show a screen-trajectory part where the reference video has it.

    Attributes:
        placed: ``[C]`` bool, the camera is the recorded view of its time.
        shift: ``[C,2]`` trajectory shifts at the cameras' times, in pixels of the cameras' image size.
        scale: ``[C]`` trajectory scales at the cameras' times.
        notes: why cameras are not placed (plain sentences for the user), or what was assumed.
    """

    placed: Tensor
    shift: Tensor
    scale: Tensor
    notes: list[str] = field(default_factory=list)


def screen_placement(trajectory: ScreenTrajectory, recorded: Cameras, cameras: Cameras, name: str = "part",
                     tolerance: tuple[float, float, float] = SAME_VIEW_TOLERANCE) -> ScreenPlacement:
    """Decide, per camera, whether the trajectory can put the part's render into the reference video.

    Args:
        trajectory: the part's screen trajectory (shifts in pixels of ``recorded``'s image size).
        recorded: the view the trajectory was measured in (the part's reference cameras).
        cameras: the cameras to render.
        name: the part's name, for the notes.
        tolerance: ``(angle_deg, offset, focal)`` limits of :func:`core.engine.cameras.view_difference`.
    """
    angle, offset, focal = view_difference(cameras, recorded)
    placed = (angle <= tolerance[0]) & (offset <= tolerance[1]) & (focal <= tolerance[2])
    shift, scale = trajectory.at(cameras.times)
    shift = shift * torch.tensor([cameras.width / recorded.width, cameras.height / recorded.height])
    notes = []
    off = (~placed).nonzero().flatten().tolist()
    if off:
        worst = max(off, key=lambda i: (float(angle[i]), float(offset[i]), float(focal[i])))
        notes.append(
            f"part {name!r} carries a screen trajectory measured at its recorded view (CoCo4D's seen view); "
            f"{len(off)} of {len(cameras)} camera(s) are not that view (the farthest, camera {worst}, is turned "
            f"{float(angle[worst]):.3g}°, moved {float(offset[worst]):.3g} of its distance, intrinsics off by "
            f"{float(focal[worst]):.3g}), and a 2D shift is right only at that view, so the part renders "
            "object-centred there. Compose it (Gen4D Compose) to place it in 3D for any camera.")
    return ScreenPlacement(placed, shift, scale, notes)


def place_layer(rgb: Tensor, alpha: Tensor, depth: Tensor, shift: Tensor, scale: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Move a premultiplied render layer (``rgb [C,H,W,3]`` over black, ``alpha``/``depth [C,H,W,1]``).

    ``out(p) = in((p - c - shift) / scale + c)`` per camera; depth is carried alpha-weighted, so
    its edges stay the layer's depth (0 where the moved layer is empty).
    """
    stack = torch.cat([rgb, alpha, depth * alpha], dim=-1)
    moved = _warp(stack, shift.to(stack), scale.to(stack))
    a = moved[..., 3:4].clamp(0.0, 1.0)
    d = torch.where(a > 1e-6, moved[..., 4:5] / a.clamp_min(1e-6), torch.zeros_like(a))
    return moved[..., :3], a, d


def composite_layers(layers: list[tuple[Tensor, Tensor, Tensor]], background: Tensor | None = None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Composite premultiplied layers ``(rgb [C,H,W,3], alpha, depth [C,H,W,1])`` front to back per pixel.

    At every pixel the layers are ordered by their depth (empty ones last) and combined with the
    "over" operator; ``background [3]`` fills what stays uncovered. Returns ``(rgb, alpha, depth)``
    with depth the blend weights' mean of the layer depths (0 where nothing is covered).
    """
    rgb = torch.stack([layer[0] for layer in layers])
    alpha = torch.stack([layer[1] for layer in layers]).clamp(0.0, 1.0)
    depth = torch.stack([layer[2] for layer in layers])
    key = torch.where(alpha > 1e-6, depth, torch.full_like(depth, float("inf")))
    order = key.argsort(dim=0)
    rgb = rgb.gather(0, order.expand_as(rgb))
    alpha, depth = alpha.gather(0, order), depth.gather(0, order)
    clear = torch.cumprod(1.0 - alpha, dim=0)
    before = torch.cat([torch.ones_like(clear[:1]), clear[:-1]])
    weight = before * alpha
    out_rgb = (before * rgb).sum(0)
    out_alpha = 1.0 - clear[-1]
    out_depth = (weight * depth).sum(0) / out_alpha.clamp_min(1e-6)
    out_depth = torch.where(out_alpha > 1e-6, out_depth, torch.zeros_like(out_depth))
    if background is not None:
        out_rgb = out_rgb + (1.0 - out_alpha) * background.to(out_rgb).reshape(1, 1, 1, 3)
    return out_rgb, out_alpha, out_depth
