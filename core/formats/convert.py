# SPDX-License-Identifier: Apache-2.0
"""Tensor layout conversions used at the ComfyUI edges (IMAGE, MASK) and nowhere else.

Public API:
    check_image(x, name)            validate a ComfyUI IMAGE ``[B,H,W,C]`` float in 0..1
    check_mask(x, name, like=None)  validate / normalise a MASK to ``[B,H,W]``
    to_image(rgb)                   ``[B,H,W,3]`` -> IMAGE (clamped, float32, contiguous)
    to_mask(alpha)                  ``[B,H,W,1]`` / ``[B,H,W]`` -> MASK
    depth_to_image(depth, mode)     z-depth ``[B,H,W,1]`` -> IMAGE for viewing or depth nodes
    bhwc_to_bchw / bchw_to_bhwc     channel moves
    parse_color(text)               "#rrggbb" / "r,g,b" -> ``[3]`` in 0..1
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_image",
    "check_mask",
    "to_image",
    "to_mask",
    "depth_to_image",
    "DEPTH_MODES",
    "bhwc_to_bchw",
    "bchw_to_bhwc",
    "parse_color",
]

DEPTH_MODES = ("inverse_normalized", "normalized", "metric")


def check_image(x, name: str = "image", channels: tuple[int, ...] = (3,)) -> Tensor:
    """Validate a ComfyUI IMAGE and return it as float32 ``[B,H,W,C]``.

    Raises:
        ValueError: wrong rank, channel count, empty size or non-finite values.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected an IMAGE tensor [B,H,W,C], got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[-1] not in channels:
        raise ValueError(f"{name}: expected an IMAGE [B,H,W,C] with C in {channels}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name}: image is empty, shape {tuple(x.shape)}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: image holds NaN or inf values")
    return x


def check_mask(x, name: str = "mask", like: Tensor | None = None) -> Tensor:
    """Validate a MASK (``[B,H,W]``, ``[H,W]`` or a 1/3-channel IMAGE) and return ``[B,H,W]`` float32.

    With ``like`` (an IMAGE ``[B,H,W,C]``), the mask must match its size; a single mask is
    broadcast over the batch.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a MASK tensor [B,H,W], got {type(x).__name__}")
    if x.dim() == 2:
        x = x[None]
    elif x.dim() == 4 and x.shape[-1] in (1, 3):
        x = x[..., 0]
    if x.dim() != 3 or 0 in x.shape:
        raise ValueError(f"{name}: expected a MASK [B,H,W], got shape {tuple(x.shape)}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: mask holds NaN or inf values")
    if like is not None:
        b, h, w = like.shape[:3]
        if tuple(x.shape[1:]) != (h, w):
            raise ValueError(f"{name}: mask size {tuple(x.shape[1:])} does not match the image size {(h, w)}")
        if x.shape[0] == 1 and b > 1:
            x = x.expand(b, h, w)
        elif x.shape[0] != b:
            raise ValueError(f"{name}: {x.shape[0]} masks for {b} images; give one mask or one per image")
    return x


def to_image(rgb: Tensor) -> Tensor:
    """Rendered colour ``[B,H,W,3]`` -> IMAGE: float32, clamped to 0..1, on the CPU."""
    return rgb.detach().float().clamp(0.0, 1.0).cpu().contiguous()


def to_mask(alpha: Tensor) -> Tensor:
    """Alpha ``[B,H,W,1]`` or ``[B,H,W]`` -> MASK ``[B,H,W]`` float32 on the CPU."""
    if alpha.dim() == 4:
        alpha = alpha[..., 0]
    return alpha.detach().float().clamp(0.0, 1.0).cpu().contiguous()


def depth_to_image(depth: Tensor, mode: str = "inverse_normalized", alpha: Tensor | None = None) -> Tensor:
    """z-depth ``[B,H,W,1]`` -> 3-channel IMAGE.

    Modes:
        inverse_normalized: disparity scaled to 0..1 over the whole batch, near = white, empty = 0
            (the convention of ControlNet depth and Depth Anything previews).
        normalized: depth scaled to 0..1 over the batch, far = white, empty = 0.
        metric: raw z-depth in scene units in every channel (not clamped; for numeric use).
    """
    if mode not in DEPTH_MODES:
        raise ValueError(f"depth_to_image: mode must be one of {DEPTH_MODES}, got {mode!r}")
    d = depth.detach().float().cpu()
    if d.dim() == 3:
        d = d[..., None]
    valid = d > 0 if alpha is None else (alpha.detach().float().cpu().reshape(d.shape) > 1e-3) & (d > 0)
    if mode == "metric":
        out = torch.where(valid, d, torch.zeros_like(d))
    else:
        values = 1.0 / d.clamp_min(1e-8) if mode == "inverse_normalized" else d
        if valid.any():
            lo, hi = values[valid].min(), values[valid].max()
            scaled = (values - lo) / (hi - lo).clamp_min(1e-8) if hi > lo else torch.ones_like(values)
        else:
            scaled = torch.zeros_like(values)
        out = torch.where(valid, scaled.clamp(0, 1), torch.zeros_like(values))
    return out.expand(*out.shape[:-1], 3).contiguous()


def bhwc_to_bchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def bchw_to_bhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def parse_color(text: str) -> Tensor:
    """Parse "#rrggbb", "#rgb" or "r,g,b" (0..1 floats or 0..255 ints) into a ``[3]`` tensor in 0..1."""
    s = str(text).strip()
    try:
        if s.startswith("#"):
            h = s[1:]
            if len(h) == 3:
                h = "".join(c * 2 for c in h)
            if len(h) != 6:
                raise ValueError
            values = [int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4)]
        else:
            parts = [float(p) for p in s.replace(" ", "").split(",")]
            if len(parts) != 3:
                raise ValueError
            values = [p / 255.0 for p in parts] if any(p > 1.0 for p in parts) else parts
    except ValueError:
        raise ValueError(f"color: expected '#rrggbb' or 'r,g,b', got {text!r}") from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"color: components must lie in 0..1 (or 0..255), got {text!r}")
    return torch.tensor(values, dtype=torch.float32)
