# SPDX-License-Identifier: Apache-2.0
"""Image inpainting with diffusers Stable Diffusion 2.x / SDXL inpainting pipelines.

Public API:
    ImageInpainter          ``inpaint(image [H,W,3], mask [H,W], prompt, ...) -> [H,W,3]``
    load_image_inpainter(path, dtype)   load (and cache) a diffusers inpainting folder with clear errors
    inpaint_components(path)            the sub-folders a folder's ``model_index.json`` asks for
    model_size(h, w, multiple)          the explicit resize policy (nearest multiple, at least one)
    video_to_model_size(...)            frames + masks resized to model_size and padded to 4k+1 frames
    composite(original, generated, mask)   keep every pixel outside the mask exactly
    check_frames_and_masks(...)         shared input validation of the image / video inpainters
    check_sampling(...), check_paste(...)   sampling settings; CoCo4D eq. 7's paste arguments of video inpainters
    cpu_generator(seed)                 the CPU noise generator the inpainters share

Design notes:
    CoCo4D (§3.2, eq. 7) inpaints the holes of a video rendered at a new pose: frame 0 with an
    image inpainter (SDXL in the paper), copy-paste of that region into every frame, then
    refinement with a video inpainter that noises the pasted region in its latent space (level
    0.5) and starts at noise level 0.7 (see :mod:`backends.wan` and :mod:`backends.video_inpaint`).
    This module is the image half.

    The folder is read in the diffusers layout (``model_index.json`` + ``unet/``, ``vae/``,
    ``text_encoder/``, ``tokenizer/``, ``scheduler/``; SDXL adds ``text_encoder_2/`` and
    ``tokenizer_2/``). The family comes from ``model_index.json``'s ``_class_name`` (a name with
    "XL" is SDXL). A 9-channel UNet is a real inpainting model; a 4-channel one is run by the same
    pipeline with latent blending (weaker seams) and logged.

    Resize policy: the image is resized (bilinear; the mask nearest-neighbour) to the nearest
    multiple of the VAE's down-scaling (8) in each direction, inpainted there, resized back to the
    input size, and composited: pixels where ``mask == 0`` are the input's, bit for bit. Pipelines
    are cached per (folder, file stamps, dtype) and never reloaded per call; the device is looked up
    at call time, the networks move there for the call and back to the CPU afterwards. The noise
    generator lives on the CPU, so a seed gives the same result on every device. Progress and
    interrupt run through diffusers' ``callback_on_step_end``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .loading import cached, check_diffusers_folder, folder_key, load_component
from .memory import make_room, park, pipeline_modules

__all__ = [
    "ImageInpainter",
    "load_image_inpainter",
    "inpaint_components",
    "model_size",
    "video_to_model_size",
    "composite",
    "check_frames_and_masks",
    "check_sampling",
    "check_paste",
    "default_device",
    "SD_INPAINT_COMPONENTS",
    "SDXL_INPAINT_COMPONENTS",
]

logger = logging.getLogger(__name__)

SD_INPAINT_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SDXL_INPAINT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


def default_device() -> torch.device:
    """CUDA when present, else the CPU (the node layer passes ComfyUI's device instead)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- shared helpers


def model_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The size a model runs at: each side rounded to the nearest multiple of ``multiple`` (>= one)."""
    def snap(n: int) -> int:
        return max(multiple, int(round(n / multiple)) * multiple)

    return snap(height), snap(width)


def video_to_model_size(frames: Tensor, masks: Tensor, paste: Tensor | None, multiple: int,
                        temporal: int) -> tuple[Tensor, Tensor]:
    """Frames ``[T,H,W,3]`` and masks ``[T,H,W]`` (plus an optional paste mask) at the size a video model
    runs at: sides at :func:`model_size` (bilinear frames, nearest masks), frames padded with the last
    one to ``k * temporal + 1``.

    Returns:
        ``x [T',3,H',W']`` and ``m [T',1 or 2,H',W']`` (hole mask, then the paste mask when given).
    """
    count, height, width = frames.shape[:3]
    mh, mw = model_size(height, width, multiple)
    padded = (count - 1 + temporal - 1) // temporal * temporal + 1
    x = frames.permute(0, 3, 1, 2)
    m = masks[:, None] if paste is None else torch.stack([masks, paste], 1)
    if (mh, mw) != (height, width):
        x = F.interpolate(x, (mh, mw), mode="bilinear", align_corners=False)
        m = F.interpolate(m, (mh, mw), mode="nearest")
    if padded > count:
        x = torch.cat([x, x[-1:].expand(padded - count, -1, -1, -1)])
        m = torch.cat([m, m[-1:].expand(padded - count, -1, -1, -1)])
    return x, m


def composite(original: Tensor, generated: Tensor, mask: Tensor) -> Tensor:
    """Blend ``generated`` into ``original`` (``[...,H,W,3]``) with ``mask`` (``[...,H,W]``, 1 = fill).

    Where the mask is 0 the result is ``original`` exactly; a soft mask blends linearly.
    """
    m = mask[..., None].to(original.dtype)
    blended = original + m * (generated.to(original.dtype) - original)
    return torch.where(m > 0, blended, original)


def check_frames_and_masks(frames, masks, what: str, video: bool) -> tuple[Tensor, Tensor]:
    """Validate ``frames [T,H,W,3]`` / ``masks [T,H,W]`` (or ``[H,W,3]`` / ``[H,W]`` without ``video``).

    Returns float32 CPU tensors with values clamped to 0..1.

    Raises:
        ValueError: wrong types, ranks, channel counts, sizes, frame counts or non-finite values.
    """
    lead = "[T,H,W,3]" if video else "[H,W,3]"
    rank = 4 if video else 3
    if not isinstance(frames, Tensor) or frames.dim() != rank or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"{what}: expected RGB {'frames' if video else 'image'} {lead} (3 channels, values "
                         f"0..1), got {shape}")
    if not isinstance(masks, Tensor) or masks.dim() != rank - 1:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"{what}: expected a mask {'[T,H,W]' if video else '[H,W]'} (1 = fill), got {shape}")
    if frames.shape[-3] < 2 or frames.shape[-2] < 2 or (video and frames.shape[0] == 0):
        raise ValueError(f"{what}: input is empty or too small, shape {tuple(frames.shape)}")
    if video and masks.shape[0] != frames.shape[0]:
        raise ValueError(f"{what}: {masks.shape[0]} masks for {frames.shape[0]} frames; give one mask per frame")
    if tuple(masks.shape[-2:]) != tuple(frames.shape[-3:-1]):
        raise ValueError(f"{what}: mask size {tuple(masks.shape[-2:])} does not match the image size "
                         f"{tuple(frames.shape[-3:-1])}")
    frames, masks = frames.detach().float().cpu(), masks.detach().float().cpu()
    if not (torch.isfinite(frames).all() and torch.isfinite(masks).all()):
        raise ValueError(f"{what}: input holds NaN or inf values")
    return frames.clamp(0, 1), masks.clamp(0, 1)


def check_sampling(what: str, strength: float, steps: int, guidance_scale: float, name: str = "strength") -> None:
    """``strength`` (called ``name`` in errors) in [0, 1], ``steps >= 1``, ``guidance_scale >= 0``."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"{what}: {name} must be in [0, 1], got {strength}")
    if int(steps) < 1:
        raise ValueError(f"{what}: steps must be >= 1, got {steps}")
    if not float(guidance_scale) >= 0.0:
        raise ValueError(f"{what}: guidance_scale must be >= 0, got {guidance_scale}")


def check_paste(what: str, masks: Tensor, paste_mask, paste_noise_level, noise_level: float
                ) -> tuple[Tensor | None, float | None]:
    """Validate CoCo4D eq. 7's paste arguments of a video inpainter.

    Args:
        masks: the checked ``[T,H,W]`` masks (1 = regenerate).
        paste_mask: None, or ``[T,H,W]`` (1 = copy-pasted pixels), inside the masks (both at 0.5).
        paste_noise_level: None (the start level) or the pasted region's level in ``[0, noise_level]``.

    Returns:
        ``(paste_mask as float32 on the CPU or None, paste_noise_level or None)``.
    """
    if paste_mask is None:
        if paste_noise_level is not None:
            raise ValueError(f"{what}: paste_noise_level={paste_noise_level} given without a paste_mask; pass the "
                             f"mask of the copy-pasted pixels (CoCo4D eq. 7) or leave both out")
        return None, None
    if not isinstance(paste_mask, Tensor) or tuple(paste_mask.shape) != tuple(masks.shape):
        shape = tuple(paste_mask.shape) if isinstance(paste_mask, Tensor) else type(paste_mask).__name__
        raise ValueError(f"{what}: paste_mask must be {tuple(masks.shape)} like the masks (1 = pasted), got {shape}")
    paste = paste_mask.detach().float().cpu()
    if not torch.isfinite(paste).all():
        raise ValueError(f"{what}: paste_mask holds NaN or inf values")
    outside = int(((paste >= 0.5) & (masks < 0.5)).sum())
    if outside:
        raise ValueError(f"{what}: paste_mask marks {outside} pixels outside the masks; the pasted region must lie "
                         f"inside the region the inpainter regenerates")
    level = None
    if paste_noise_level is not None:
        level = float(paste_noise_level)
        if not (math.isfinite(level) and 0.0 <= level <= float(noise_level)):
            raise ValueError(f"{what}: paste_noise_level must be in [0, noise_level={noise_level}], got "
                             f"{paste_noise_level}")
    return paste.clamp(0, 1), level


def read_model_index(path: Path, what: str) -> dict:
    """``model_index.json`` of a diffusers folder, or a ValueError saying what is missing."""
    index = path / "model_index.json"
    if not path.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is not a model folder (expected a diffusers folder with "
                         f"model_index.json)")
    if not index.is_file():
        raise ValueError(f"{what}: model folder {str(path)!r} is missing model_index.json; expected a diffusers "
                         f"pipeline folder (save_pretrained layout)")
    try:
        return json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: unreadable model_index.json in {str(path)!r}: {exc}") from None


def step_callback(total: int, callback: Callable | None, should_stop: Callable[[], bool] | None, state: dict):
    """A diffusers ``callback_on_step_end`` reporting ``callback(step, total)`` and honouring ``should_stop``."""
    def on_step_end(pipe, i, t, kwargs):
        if callback is not None:
            callback(i + 1, total, None)
        if should_stop is not None and should_stop():
            state["stopped"] = True
            pipe._interrupt = True  # diffusers' pipelines skip the remaining steps
        return {}

    return on_step_end


def cpu_generator(seed: int) -> torch.Generator:
    """The noise generator of ``seed``, on the CPU so a seed gives the same noise on every device."""
    return torch.Generator("cpu").manual_seed(int(seed) % (2**63))


# --------------------------------------------------------------------------- image inpainter


def inpaint_components(path: Path, what: str) -> tuple[str, tuple[str, ...]]:
    """The family ("sd" or "sdxl") and required sub-folders of the inpainting folder ``path``."""
    name = str(read_model_index(path, what).get("_class_name", ""))
    if "XL" in name:
        return "sdxl", SDXL_INPAINT_COMPONENTS
    if name.startswith("StableDiffusion") and "Upscale" not in name and "Depth" not in name:
        return "sd", SD_INPAINT_COMPONENTS
    raise ValueError(f"{what}: model_index.json names {name!r}; expected a Stable Diffusion 2.x or SDXL "
                     f"(inpainting) pipeline folder")


def load_image_inpainter(path: str | Path, dtype: torch.dtype = torch.float32) -> "ImageInpainter":
    """Load (cached per folder and dtype, on the CPU) a diffusers SD 2.x / SDXL inpainting folder.

    Raises:
        ValueError: not a folder, missing ``model_index.json`` or component files, corrupt or
            truncated safetensors, or components the libraries cannot read.
    """
    path = Path(path)
    what = f"inpaint model {str(path)!r}"
    family, components = inpaint_components(path, what)
    check_diffusers_folder(path, components, what)
    return cached(("inpaint", *folder_key(path), str(dtype)), lambda: _load_pipeline(path, family, dtype, what))


def _load_pipeline(path: Path, family: str, dtype: torch.dtype, what: str) -> "ImageInpainter":
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    if family == "sdxl":
        pipe = load_component(what, "pipeline", lambda: StableDiffusionXLInpaintPipeline.from_pretrained(
            path, dtype=dtype))
    else:
        pipe = load_component(what, "pipeline", lambda: StableDiffusionInpaintPipeline.from_pretrained(
            path, dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False))
    pipe.set_progress_bar_config(disable=True)
    channels = int(pipe.unet.config.in_channels)
    latent = int(pipe.vae.config.latent_channels)
    if channels == latent:
        logger.info("%s: a %d-channel UNet is not an inpainting UNet; using latent blending", what, channels)
    elif channels != 2 * latent + 1:
        raise ValueError(f"{what}: unet takes {channels} input channels; an inpainting model takes "
                         f"{2 * latent + 1} (latents + mask + masked-image latents)")
    logger.info("loaded %s inpainter %s (%s)", family, path, dtype)
    return ImageInpainter(pipe, path, family, dtype)


@dataclass
class ImageInpainter:
    """A loaded SD 2.x / SDXL inpainting pipeline.

    Args:
        pipe: the diffusers pipeline (kept on the CPU between calls).
        path: its folder.
        family: "sd" or "sdxl".
        dtype: weights dtype.
        device: a fixed compute device; ``None`` asks ``device_fn`` at every call.
        device_fn: the call-time device lookup (the node layer binds ComfyUI's).
    """

    pipe: object
    path: Path
    family: str
    dtype: torch.dtype
    device: torch.device | None = None
    device_fn: Callable[[], torch.device] = field(default=default_device, repr=False)

    @property
    def multiple(self) -> int:
        """Sides must be multiples of this (the VAE's down-scaling)."""
        return int(self.pipe.vae_scale_factor)

    def offload(self) -> None:
        """Park the networks on the CPU (those ComfyUI's model manager places stay where it put them)."""
        park(pipeline_modules(self.pipe))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def inpaint(self, image: Tensor, mask: Tensor, prompt: str = "", negative_prompt: str = "",
                strength: float = 1.0, steps: int = 30, guidance_scale: float = 7.5, seed: int = 0,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None) -> Tensor:
        """Fill the masked region of one image.

        Args:
            image: ``[H,W,3]`` float in 0..1.
            mask: ``[H,W]`` in 0..1, 1 = fill (values > 0.5 are filled by the model; soft edges blend).
            prompt, negative_prompt: text conditions.
            strength: 1 = the masked region starts from pure noise; lower keeps more of the input there.
            steps: scheduler steps at strength 1 (about ``steps * strength`` run).
            guidance_scale: classifier-free guidance scale.
            seed: seed of the CPU noise generator.
            callback: ``callback(step, total, preview)`` after each denoising step.
            should_stop: polled after each step; when True the run stops and InterruptedError is raised.

        Returns:
            ``[H,W,3]`` float32 on the CPU in 0..1; pixels with ``mask == 0`` equal the input exactly.

        Raises:
            ValueError: bad shapes, sizes or sampling settings.
            InterruptedError: ``should_stop`` returned True.
        """
        what = "ImageInpainter.inpaint"
        image, mask = check_frames_and_masks(image, mask, what, video=False)
        check_sampling(what, strength, steps, guidance_scale)
        if not (mask > 0).any():
            return image.clone()
        height, width = image.shape[:2]
        mh, mw = model_size(height, width, self.multiple)
        x = F.interpolate(image.permute(2, 0, 1)[None], (mh, mw), mode="bilinear", align_corners=False)
        m = F.interpolate(mask[None, None], (mh, mw), mode="nearest")
        device = torch.device(self.device) if self.device is not None else self.device_fn()
        total = max(int(int(steps) * float(strength)), 1)
        state = {"stopped": False}
        make_room(pipeline_modules(self.pipe), device)
        self.pipe.to(device)
        try:
            out = self.pipe(prompt=prompt, negative_prompt=negative_prompt or None, image=x.clamp(0, 1),
                            mask_image=m, height=mh, width=mw, strength=float(strength),
                            num_inference_steps=int(steps), guidance_scale=float(guidance_scale),
                            generator=cpu_generator(seed), output_type="pt",
                            callback_on_step_end=step_callback(total, callback, should_stop, state)).images
        finally:
            self.offload()
        if state["stopped"]:
            raise InterruptedError(f"{what}: stopped by the user")
        out = out.float().cpu()
        if out.shape[-2:] != (height, width):
            out = F.interpolate(out, (height, width), mode="bilinear", align_corners=False)
        return composite(image, out[0].permute(1, 2, 0).clamp(0, 1), mask)
