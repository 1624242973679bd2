# SPDX-License-Identifier: Apache-2.0
"""Video segmentation maths: prompt parsing/validation and foreground/background splitting.

Public API:
    FILL_MODES                  ways to fill the object's pixels in the background video
    Prompt                      validated prompt of frame 0: points ``[N,2]``, labels ``[N]``, box ``[4]``
    parse_points(text)          "[[x,y],...]" / "[[x,y,label],...]" / '[{"x":..,"y":..}]' -> (points, labels)
    parse_box(text)             "x0,y0,x1,y1" / "[x0,y0,x1,y1]" / "" -> box or None
    points_to_prompt(points, labels, box, width, height)   validated :class:`Prompt` (pixels of frame 0)
    split_video(frames, masks, fg_background, fill, fill_color, threshold)
                                -> (foreground [T,H,W,3], background [T,H,W,3], masks [T,H,W])
    temporal_fill_source(hard) index of the nearest frame where each pixel is not masked

Design notes:
    Pure torch (and ``json``); no model code. Coordinates are pixels of frame 0, x to the right
    and y down, in the continuous range ``[0, W) x [0, H)`` for points and ``[0, W] x [0, H]`` for
    box corners. Labels follow SAM: 1 = on the object, 0 = not on the object.

    The background video is the input with the object *removed*, not inpainted: every pixel
    where the mask is set (``mask > threshold``) is replaced by

    * ``"temporal"`` (default): the same pixel in the nearest frame (in time; the earlier one on a
      tie) where it is not masked, which is the true background for a static camera and static
      background; pixels masked in every frame fall back to ``"mean"``;
    * ``"mean"``: the mean colour of that frame's unmasked pixels (``fill_color`` if the whole
      frame is masked);
    * ``"color"``: ``fill_color``.

    The foreground is ``frames * m + fg_background * (1 - m)`` with the soft mask ``m`` (``None``
    gives black, i.e. the object premultiplied by its mask). The returned masks are the input
    masks clamped to 0..1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "FILL_MODES",
    "Prompt",
    "parse_points",
    "parse_box",
    "points_to_prompt",
    "split_video",
    "temporal_fill_source",
]

FILL_MODES = ("temporal", "mean", "color")


@dataclass(frozen=True)
class Prompt:
    """A validated prompt on frame 0, in pixels of that frame.

    Attributes:
        points: ``[N,2]`` float32 (x, y), ``N`` may be 0.
        labels: ``[N]`` int32, 1 = object, 0 = not object.
        box: ``[4]`` float32 (x0, y0, x1, y1) or ``None``.
        width: frame width in pixels.
        height: frame height in pixels.
    """

    points: Tensor
    labels: Tensor
    box: Tensor | None
    width: int
    height: int

    @property
    def empty(self) -> bool:
        """True when the prompt has neither points nor a box."""
        return self.points.shape[0] == 0 and self.box is None


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def parse_points(text) -> tuple[list[list[float]], list[int]]:
    """Parse the points widget.

    Args:
        text: JSON list of ``[x, y]`` or ``[x, y, label]`` in pixels of frame 0 (label 1 = on the
            object, 0 = not on it; default 1), or of ``{"x": x, "y": y}`` objects as points-editor
            nodes write them. Empty / blank / ``"[]"`` means no points. A single point may be
            written ``[x, y]``.

    Returns:
        ``(points, labels)``: lists of ``[x, y]`` floats and int labels.

    Raises:
        ValueError: not JSON, not a list of pairs/triples, non-numeric values or a label not 0/1.
    """
    s = "" if text is None else str(text).strip()
    if not s:
        return [], []
    try:
        data = json.loads(s)
    except json.JSONDecodeError as exc:
        raise ValueError(f"points: expected a JSON list like [[x, y], ...] or [[x, y, 1], ...], got {s!r} "
                         f"({exc.msg})") from None
    if not isinstance(data, list):
        raise ValueError(f"points: expected a JSON list like [[x, y], ...], got {s!r}")
    if len(data) in (2, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        data = [data]
    points, labels = [], []
    for i, item in enumerate(data):
        if isinstance(item, dict) and "x" in item and "y" in item:  # points-editor nodes: {"x": .., "y": ..}
            item = [item["x"], item["y"], *([item["label"]] if "label" in item else [])]
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            raise ValueError(f"points: entry {i} must be [x, y], [x, y, label] or {{\"x\": x, \"y\": y}}, "
                             f"got {item!r}")
        x = _number(item[0], f"points: entry {i} x")
        y = _number(item[1], f"points: entry {i} y")
        label = 1
        if len(item) == 3:
            if item[2] not in (0, 1) or isinstance(item[2], bool):
                raise ValueError(f"points: entry {i} label must be 1 (object) or 0 (not object), got {item[2]!r}")
            label = int(item[2])
        points.append([x, y])
        labels.append(label)
    return points, labels


def parse_box(text) -> list[float] | None:
    """Parse the box widget: ``"x0,y0,x1,y1"`` or ``"[x0, y0, x1, y1]"`` in pixels; blank means no box.

    Raises:
        ValueError: not four numbers.
    """
    s = "" if text is None else str(text).strip()
    if not s:
        return None
    body = s[1:-1] if s.startswith("[") and s.endswith("]") else s
    parts = [p.strip() for p in body.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"box: expected 'x0,y0,x1,y1' (four numbers, pixels of frame 0), got {s!r}")
    return values


def points_to_prompt(points, labels=None, box=None, width: int = 0, height: int = 0) -> Prompt:
    """Validate a prompt against the frame size.

    Args:
        points: ``None`` or a sequence / ``[N,2]`` tensor of (x, y) pixels of frame 0.
        labels: ``None`` (all 1) or ``N`` labels in {0, 1}.
        box: ``None`` or (x0, y0, x1, y1) pixels with ``x0 < x1``, ``y0 < y1``.
        width: frame width ``W``.
        height: frame height ``H``.

    Returns:
        :class:`Prompt`.

    Raises:
        ValueError: naming the point or box that lies outside ``[0, W) x [0, H)`` (box corners:
            ``[0, W] x [0, H]``), a malformed shape, or labels that do not match the points.
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"points_to_prompt: frame size must be positive, got {width}x{height}")
    pts = torch.zeros(0, 2) if points is None else torch.as_tensor(points, dtype=torch.float32)
    if pts.numel() == 0:
        pts = torch.zeros(0, 2)
    if pts.dim() == 1 and pts.shape[0] == 2:
        pts = pts[None]
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ValueError(f"points: expected N points [x, y], got shape {tuple(pts.shape)}")
    if not torch.isfinite(pts).all():
        raise ValueError("points: coordinates must be finite numbers")
    if labels is None:
        lab = torch.ones(pts.shape[0], dtype=torch.int32)
    else:
        lab = torch.as_tensor(labels).reshape(-1).to(torch.int32)
        if lab.shape[0] != pts.shape[0]:
            raise ValueError(f"labels: {lab.shape[0]} labels for {pts.shape[0]} points")
        if not bool(((lab == 0) | (lab == 1)).all()):
            raise ValueError(f"labels: must be 1 (object) or 0 (not object), got {lab.tolist()}")
    for i, (x, y) in enumerate(pts.tolist()):
        if not (0.0 <= x < width and 0.0 <= y < height):
            raise ValueError(f"points: point {i} ({x:g}, {y:g}) lies outside the {width}x{height} image "
                             f"(x must be in [0, {width}), y in [0, {height}))")
    box_t = None
    if box is not None:
        box_t = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
        if box_t.shape[0] != 4 or not torch.isfinite(box_t).all():
            raise ValueError(f"box: expected four finite numbers x0,y0,x1,y1, got {box!r}")
        x0, y0, x1, y1 = box_t.tolist()
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) needs x0 < x1 and y0 < y1")
        if not (0.0 <= x0 and x1 <= width and 0.0 <= y0 and y1 <= height):
            raise ValueError(f"box: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image")
    return Prompt(pts.contiguous(), lab.contiguous(), box_t, width, height)


def _check_video(frames, masks) -> tuple[Tensor, Tensor]:
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"split_video: frames must be a [T,H,W,3] tensor, got {got}")
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"split_video: masks must be a [T,H,W] tensor, got {got}")
    if tuple(masks.shape) != tuple(frames.shape[:3]):
        raise ValueError(f"split_video: {tuple(masks.shape)} masks do not match frames {tuple(frames.shape[:3])} "
                         "(one mask per frame, same size)")
    return frames.float(), masks.float().clamp(0.0, 1.0)


def _rgb(value, what: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.shape[0] != 3 or not torch.isfinite(t).all():
        raise ValueError(f"split_video: {what} must be three numbers (rgb in 0..1), got {value!r}")
    return t


def temporal_fill_source(hard: Tensor) -> Tensor:
    """For every pixel, the nearest frame (in time) where it is not masked.

    Args:
        hard: ``[T,H,W]`` bool, True where masked.

    Returns:
        ``[T,H,W]`` int64 frame index; ``-1`` where the pixel is masked in every frame. Unmasked
        pixels point at their own frame; ties go to the earlier frame.
    """
    t_count = hard.shape[0]
    big = t_count + 1  # "no source" marker larger than any distance
    prev = torch.full(hard.shape, -1, dtype=torch.long)
    nxt = torch.full(hard.shape, -1, dtype=torch.long)
    last = torch.full(hard.shape[1:], -1, dtype=torch.long)
    for t in range(t_count):
        last = torch.where(hard[t], last, torch.full_like(last, t))
        prev[t] = last
    last = torch.full(hard.shape[1:], -1, dtype=torch.long)
    for t in range(t_count - 1, -1, -1):
        last = torch.where(hard[t], last, torch.full_like(last, t))
        nxt[t] = last
    times = torch.arange(t_count).view(-1, 1, 1)
    d_prev = torch.where(prev >= 0, times - prev, torch.full_like(prev, big))
    d_next = torch.where(nxt >= 0, nxt - times, torch.full_like(nxt, big))
    return torch.where(d_prev <= d_next, prev, nxt)


def split_video(frames: Tensor, masks: Tensor, fg_background=(1.0, 1.0, 1.0), fill: str = "temporal",
                fill_color=(0.0, 0.0, 0.0), threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Split a video into the masked object and the scene without it.

    Args:
        frames: ``[T,H,W,3]`` float in 0..1.
        masks: ``[T,H,W]`` float in 0..1 (soft masks allowed), 1 = object.
        fg_background: rgb behind the object in the foreground video, or ``None`` for black
            (the object premultiplied by its mask).
        fill: one of :data:`FILL_MODES` (see the module notes).
        fill_color: rgb used by ``"color"`` and by ``"mean"`` on fully masked frames.
        threshold: a pixel counts as masked (removed from the background) where ``mask > threshold``.

    Returns:
        ``(foreground [T,H,W,3], background [T,H,W,3], masks [T,H,W])``, float32 on the frames'
        device.

    Raises:
        ValueError: shapes that do not match, an unknown fill mode or a malformed colour.
    """
    frames, m = _check_video(frames, masks)
    if fill not in FILL_MODES:
        raise ValueError(f"split_video: fill must be one of {FILL_MODES}, got {fill!r}")
    device = frames.device
    fg_bg = torch.zeros(3) if fg_background is None else _rgb(fg_background, "fg_background")
    color = _rgb(fill_color, "fill_color").to(device)
    foreground = frames * m[..., None] + fg_bg.to(device) * (1.0 - m[..., None])

    hard = m > float(threshold)
    keep = (~hard).float()[..., None]
    count = keep.sum(dim=(1, 2))  # [T,1]
    frame_mean = torch.where(count > 0, (frames * keep).sum(dim=(1, 2)) / count.clamp_min(1.0), color)
    mean_fill = frame_mean[:, None, None, :].expand_as(frames)
    if fill == "color":
        filler = color.expand_as(frames)
    elif fill == "mean":
        filler = mean_fill
    else:
        source = temporal_fill_source(hard.cpu()).to(device)
        gathered = torch.gather(frames, 0, source.clamp_min(0)[..., None].expand_as(frames))
        filler = torch.where((source >= 0)[..., None], gathered, mean_fill)
    background = torch.where(hard[..., None], filler, frames)
    return foreground.contiguous(), background.contiguous(), m.contiguous()
