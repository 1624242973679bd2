# SPDX-License-Identifier: Apache-2.0
"""CoCo4D eq. 7, the noisy copy-paste refinement that fills the holes of a video.

Public API:
    fill_video_holes(...)           image-inpaint frame 0, paste its fill into every frame, refine with the
                                    video inpainter from the pasted region noised in its latent space
    hole_mask(alpha, threshold, dilation)   rendered coverage -> hole mask (1 = unknown)
    dilate_mask(mask, pixels), resize_images(x, height, width)   the image helpers the outpaint stages share
    StageStopped                    raised when a model call was interrupted or a stop was requested

Design notes:
    Eq. 7's noise lives in the video model's latent space, so it is the video inpainter's job: this
    module hands it the clean pseudo video, the hole masks as ``paste_mask`` with
    ``paste_noise_level`` (§4.1: 0.5) and the start ``noise_level`` τ (§4.1: 0.7), through the
    ``inpaint(frames, masks, prompt, negative_prompt, noise_level, steps, guidance_scale, seed,
    callback, should_stop, *, paste_mask, paste_noise_level)`` interface; the backends noise the
    pasted latent cells, keep the known ones clean and start at the first scheduler step whose
    noise level is at most τ (``backends.wan``). No pixel is noised or clamped here.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.cameras import Cameras
from ..engine.viewpoint import seen_from
from .outpaint_config import OutpaintConfig

__all__ = ["fill_video_holes", "hole_mask", "dilate_mask", "resize_images", "StageStopped"]


class StageStopped(Exception):
    """A stage was interrupted (a model raised InterruptedError or ``should_stop`` turned True)."""


def resize_images(x: Tensor, height: int, width: int, mode: str = "area") -> Tensor:
    """Resize ``[B,H,W,C]`` or ``[B,H,W]`` (area when shrinking, bilinear when growing)."""
    squeeze = x.dim() == 3
    y = (x[..., None] if squeeze else x).permute(0, 3, 1, 2).float()
    if tuple(y.shape[-2:]) != (height, width):
        grow = height > y.shape[-2] or width > y.shape[-1]
        y = F.interpolate(y, size=(height, width), mode="bilinear" if grow else mode,
                          **({"align_corners": False} if grow else {}))
    y = y.permute(0, 2, 3, 1)
    return y[..., 0] if squeeze else y


def dilate_mask(mask: Tensor, pixels: int) -> Tensor:
    """Binary dilation of ``[B,H,W]`` bool masks by ``pixels`` (square structuring element)."""
    if pixels <= 0:
        return mask
    k = 2 * int(pixels) + 1
    return F.max_pool2d(mask.float()[:, None], k, stride=1, padding=pixels)[:, 0] > 0.5


def hole_mask(alpha: Tensor, threshold: float = 0.5, dilation: int = 0) -> Tensor:
    """Pixels the render does not cover: ``alpha < threshold``, grown by ``dilation`` pixels.

    Args:
        alpha: ``[B,H,W]`` or ``[B,H,W,1]`` rendered alpha.

    Returns:
        bool ``[B,H,W]`` (True = hole).
    """
    a = alpha[..., 0] if alpha.dim() == 4 else alpha
    if a.dim() != 3:
        raise ValueError(f"hole_mask: alpha must be [B,H,W] or [B,H,W,1], got {tuple(alpha.shape)}")
    return dilate_mask(a < threshold, dilation)


def _call_model(fn: Callable, stopped: Callable[[], bool] | None):
    try:
        return fn()
    except InterruptedError as exc:
        raise StageStopped(str(exc)) from exc
    finally:
        if stopped is not None and stopped():
            raise StageStopped("stop requested")


def fill_video_holes(frames: Tensor, holes: Tensor, cameras: Cameras, image_inpainter, video_inpainter,
                     prompt: str = "", negative_prompt: str = "", config: OutpaintConfig | None = None,
                     generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None,
                     timings: dict[str, float] | None = None) -> tuple[Tensor, Tensor]:
    """Eq. 7: fill the holes of a video the CoCo4D way.

    Frame 0 is inpainted by the image inpainter with the prompt; its result is pasted into every
    frame's holes (the pseudo video), and the video inpainter refines the holes starting at noise
    level ``video_inpaint_strength`` (τ) with the pasted region noised to ``paste_noise_ratio`` in
    its latent space (see the module notes). Known pixels are returned unchanged. Models are
    called inside ``seen_from(cameras, "background")``.

    Args:
        frames: ``[T,H,W,3]`` in 0..1.
        holes: bool ``[T,H,W]`` (True = fill).
        cameras: ``T`` cameras of the frames (their poses and times).
        generator: draws the video inpainter's seed (a fresh one per call, so the poses of a run get
            independent noise); default: seeded from ``config.seed``.

    Returns:
        ``(filled [T,H,W,3], frame0 [H,W,3])``: the curated video and the image-inpainted frame 0.
    """
    cfg = config or OutpaintConfig()
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    frames = frames.detach().float().cpu()
    holes = holes.detach().bool().cpu()
    first = frames[0]
    t0 = time.perf_counter()
    if holes[0].any():
        with seen_from(cameras[0:1], content="background"):
            first = _call_model(lambda: image_inpainter.inpaint(
                frames[0], holes[0].float(), prompt, negative_prompt, strength=1.0, steps=cfg.inpaint_steps,
                guidance_scale=cfg.inpaint_guidance_scale, seed=cfg.seed, should_stop=should_stop),
                should_stop)
        first = torch.where(holes[0][..., None], first.float().cpu().clamp(0, 1), frames[0])
    t1 = time.perf_counter()
    pseudo = torch.where(holes[..., None], first.expand_as(frames), frames)
    out = pseudo
    if cfg.video_inpaint_strength > 0 and holes.any():
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with seen_from(cameras, content="background"):
            out = _call_model(lambda: video_inpainter.inpaint(
                pseudo, holes.float(), prompt, negative_prompt, noise_level=cfg.video_inpaint_strength,
                steps=cfg.video_inpaint_steps, guidance_scale=cfg.video_inpaint_guidance_scale, seed=seed,
                should_stop=should_stop, paste_mask=holes.float(), paste_noise_level=cfg.paste_noise_ratio),
                should_stop)
        out = out.float().cpu().clamp(0, 1)
        if tuple(out.shape) != tuple(frames.shape):
            raise ValueError(f"fill_video_holes: the video inpainter returned {tuple(out.shape)} for "
                             f"{tuple(frames.shape)} frames")
    filled = torch.where(holes[..., None], out, frames)
    if timings is not None:
        timings["inpaint"] = timings.get("inpaint", 0.0) + t1 - t0
        timings["video_inpaint"] = timings.get("video_inpaint", 0.0) + time.perf_counter() - t1
    return filled, first

