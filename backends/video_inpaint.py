# SPDX-License-Identifier: Apache-2.0
"""Video inpainting with diffusers Wan VACE, with partial-noise refinement (CoCo4D eq. 7).

Public API:
    VideoInpainter          ``inpaint(frames [T,H,W,3], masks [T,H,W], prompt, ...) -> [T,H,W,3]``
    load_video_inpainter(path, dtype)   load (and cache) a diffusers Wan VACE folder with clear errors
    WAN_VACE_COMPONENTS                 sub-folders a model folder must hold

Design notes:
    CoCo4D §3.2 refines the copy-pasted pseudo video of a new pose with a video inpainter
    (COCOCO in the paper) *from the given frames* (eq. 7). Wan VACE's diffusers pipeline only
    starts from noise, so the sampling loop is run here with the pipeline's own pieces (prompt
    encoder, VACE condition latents and mask packing, transformer, scheduler). ``noise_level`` is
    the noise level σ of the start point (flow matching, ``x_σ = (1 - σ) z + σ ε`` on the clean
    latents ``z`` of the frames): sampling starts at the first of ``steps`` scheduler steps whose
    σ is at most ``noise_level`` and runs the rest (``backends.wan.first_step``; 0.7 starts at
    0.697 with Wan's UniPC at shift 3 and 30 steps). ``noise_level = 1`` is plain VACE inpainting
    from noise; 0 returns the input.

    Two starts (``backends.wan.start_latents``): without ``paste_mask`` the whole latent is noised
    to the start level (the img2img convention); with ``paste_mask`` (CoCo4D eq. 7: the
    copy-pasted pixels) only the latent cells of the pasted region are noised, to
    ``paste_noise_level`` (§4.1: 0.5; at most the realised start level), other masked cells start
    at the start level, and the known cells are the clean latents, re-imposed after every step.
    The frames are never noised in pixel space.

    VACE conditioning: the frames with the holes blanked (inactive) and the holes' content
    (reactive) are encoded separately, and the mask is packed per latent pixel; the model fills the
    holes consistently with the rest of the video. The mask is binarised at 0.5 for the model;
    the final composite uses the soft mask and keeps every pixel where ``mask == 0`` exactly.

    Resize policy: frames are resized (bilinear; masks nearest) to the nearest multiple of the VAE
    down-scaling times the transformer patch (8 x 2 = 16) and the frame count is padded to
    ``4k + 1`` (Wan's temporal compression) by repeating the last frame; the result is cropped
    back to T frames and resized to the input size. Networks are cached per (folder, stamps, dtype),
    moved to the call-time device for a call and back to the CPU afterwards; the VAE runs in float32
    (Wan's VAE is not reliable in half precision). Noise comes from a CPU generator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .inpaint import (
    check_frames_and_masks,
    check_paste,
    check_sampling,
    composite,
    cpu_generator,
    default_device,
    read_model_index,
    video_to_model_size,
)
from .loading import cached, check_diffusers_folder, folder_key, load_component, load_diffusers_model
from .memory import park, pipeline_modules, place
from .video_inpaint_fun import VISM_LORA_DIR, FunInpainter, find_fun_inp_base, load_fun_inpainter
from .wan import first_step, flow_sigmas, latent_cells, normalise_latents, start_latents

__all__ = ["VideoInpainter", "load_video_inpainter", "WAN_VACE_COMPONENTS"]

logger = logging.getLogger(__name__)

WAN_VACE_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


def load_video_inpainter(path: str | Path, dtype: torch.dtype = torch.float32) -> "VideoInpainter | FunInpainter":
    """Load (cached per folder and dtype, on the CPU) a diffusers Wan VACE folder, or a Wan2.1-Fun InP
    folder in its release layout (``backends.video_inpaint_fun``: ``config.json`` with ``in_dim`` 36,
    at the root or up to 3 levels down, e.g. MoGe4D's models folder; its ``4D-ViSM`` LoRA is picked
    up from ``4D-ViSM/lora_diffusion_pytorch_model.safetensors`` beside it), or a Wan2.1-Fun InP single
    file (ComfyUI's ``models/diffusion_models``; also used for a MoGe4D folder without the InP base).

    Raises:
        ValueError: not a folder, missing ``model_index.json`` or component files, a pipeline other
            than Wan VACE, corrupt or truncated safetensors, or unreadable components.
    """
    path = Path(path)
    if path.is_file() or (not (path / "model_index.json").is_file()
                          and (find_fun_inp_base(path) is not None or (path / VISM_LORA_DIR).is_dir())):
        return load_fun_inpainter(path, dtype)
    what = f"video_inpaint model {str(path)!r}"
    name = str(read_model_index(path, what).get("_class_name", ""))
    if name != "WanVACEPipeline":
        raise ValueError(f"{what}: model_index.json names {name!r}; expected 'WanVACEPipeline' (a Wan VACE "
                         f"diffusers folder, e.g. Wan-AI/Wan2.1-VACE-1.3B-diffusers)")
    check_diffusers_folder(path, WAN_VACE_COMPONENTS, what)
    return cached(("video_inpaint", *folder_key(path), str(dtype)), lambda: _load_vace(path, dtype, what))


def _load_vace(path: Path, dtype: torch.dtype, what: str) -> "VideoInpainter":
    from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel

    vae = load_component(what, "vae", lambda: AutoencoderKLWan.from_pretrained(path / "vae", dtype=torch.float32))
    # without accelerate diffusers refuses models with fp32-kept modules: then built by hand (same weights)
    transformer = load_component(what, "transformer", lambda: load_diffusers_model(
        WanVACETransformer3DModel, path / "transformer", dtype))
    pipe = load_component(what, "pipeline", lambda: WanVACEPipeline.from_pretrained(
        path, vae=vae, transformer=transformer, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.transformer, pipe.transformer_2, pipe.text_encoder, pipe.vae):
        if module is not None:
            module.eval().requires_grad_(False)
    logger.info("loaded Wan VACE video inpainter %s (%s)", path, dtype)
    return VideoInpainter(pipe, path, dtype)


@dataclass
class VideoInpainter:
    """A loaded Wan VACE pipeline used as a masked video inpainter with partial noise.

    Args:
        pipe: the diffusers ``WanVACEPipeline`` (kept on the CPU between calls).
        path: its folder.
        dtype: transformer / text-encoder dtype (the VAE stays float32).
        device: a fixed compute device; ``None`` asks ``device_fn`` at every call.
        device_fn: the call-time device lookup (the node layer binds ComfyUI's).
        max_sequence_length: prompt tokens (Wan: 512).
    """

    pipe: object
    path: Path
    dtype: torch.dtype
    device: torch.device | None = None
    device_fn: Callable[[], torch.device] = field(default=default_device, repr=False)
    max_sequence_length: int = 512

    @property
    def multiple(self) -> int:
        """Sides must be multiples of this (VAE down-scaling x transformer patch)."""
        return int(self.pipe.vae_scale_factor_spatial) * int(self.pipe.transformer.config.patch_size[1])

    @property
    def temporal(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    def offload(self) -> None:
        """Park the networks on the CPU (those ComfyUI's model manager places stay where it put them)."""
        park(pipeline_modules(self.pipe))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _place(self, device: torch.device) -> None:
        modules = (self.pipe.transformer, self.pipe.transformer_2, self.pipe.text_encoder, self.pipe.vae)
        place(modules, device)

    def _normalise(self, latents: Tensor, inverse: bool = False) -> Tensor:
        cfg = self.pipe.vae.config
        return normalise_latents(latents, cfg.latents_mean, cfg.latents_std, inverse)

    def inpaint(self, frames: Tensor, masks: Tensor, prompt: str = "", negative_prompt: str = "",
                noise_level: float = 0.7, steps: int = 30, guidance_scale: float = 5.0, seed: int = 0,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None, *,
                paste_mask: Tensor | None = None, paste_noise_level: float | None = None) -> Tensor:
        """Inpaint the masked regions of a video, starting from the given frames at noise level ``noise_level``.

        Args:
            frames: ``[T,H,W,3]`` float in 0..1 (e.g. CoCo4D's copy-pasted pseudo video, not noised).
            masks: ``[T,H,W]`` in 0..1, 1 = regenerate.
            prompt, negative_prompt: text conditions.
            noise_level: noise level σ of the start point (CoCo4D τ: 0.7); the first scheduler step whose
                σ is at most this starts the run; 1 = from pure noise, 0 = return the input.
            steps: scheduler steps of a full run (the steps below the start level are run).
            guidance_scale: classifier-free guidance scale (<= 1 disables the unconditional pass).
            seed: seed of the CPU noise generator.
            callback: ``callback(step, total, preview)`` after each denoising step.
            should_stop: polled before each step; when True, InterruptedError is raised.
            paste_mask: ``[T,H,W]`` copy-pasted pixels inside ``masks`` (CoCo4D eq. 7); then only the
                masked latent cells are noised and the known ones stay clean (see the module notes).
            paste_noise_level: noise level of the pasted cells (CoCo4D: 0.5; default: the start level).

        Returns:
            ``[T,H,W,3]`` float32 on the CPU in 0..1; pixels with ``mask == 0`` equal the input exactly.

        Raises:
            ValueError: bad shapes, frame/mask count mismatch, sizes, sampling or paste settings, or a
                scheduler that is not first-order flow matching.
            InterruptedError: ``should_stop`` returned True.
        """
        what = "VideoInpainter.inpaint"
        frames, masks = check_frames_and_masks(frames, masks, what, video=True)
        check_sampling(what, noise_level, steps, guidance_scale, "noise_level")
        paste, paste_level = check_paste(what, masks, paste_mask, paste_noise_level, noise_level)
        self.pipe.scheduler.set_timesteps(int(steps))
        if not (masks > 0).any() or first_step(flow_sigmas(self.pipe.scheduler, what), noise_level) >= int(steps):
            return frames.clone()
        device = torch.device(self.device) if self.device is not None else self.device_fn()
        self._place(device)
        try:
            out = self._run(frames, masks, paste, paste_level, prompt, negative_prompt, float(noise_level),
                            int(steps), float(guidance_scale), int(seed), device, callback, should_stop)
        finally:
            self.offload()
        return composite(frames, out, masks)

    def _encode_text(self, texts: list[str], device: torch.device) -> Tensor:
        """UMT5 hidden states ``[B, L, D]``, zero past each prompt's tokens (Wan's convention).

        Done here rather than with the pipeline's ``encode_prompt``, which needs ``ftfy`` for text
        clean-up; only whitespace is normalised.
        """
        pipe = self.pipe
        texts = [" ".join(str(t).split()) for t in texts]
        tokens = pipe.tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, attention = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        hidden = pipe.text_encoder(ids, attention).last_hidden_state
        return hidden * attention[..., None].to(hidden.dtype)

    @torch.no_grad()
    def _run(self, frames, masks, paste, paste_level, prompt, negative_prompt, noise_level, steps, guidance_scale,
             seed, device, callback, should_stop) -> Tensor:
        pipe = self.pipe
        count, height, width = frames.shape[:3]
        x, m = video_to_model_size(frames, masks, paste, self.multiple, self.temporal)
        mh, mw = x.shape[-2:]
        m, pasted = m[:, :1], (None if paste is None else m[:, 1] > 0.5)
        video = (x * 2 - 1).permute(1, 0, 2, 3)[None].to(device)          # [1,3,T',H',W'] in [-1,1]
        mask = (m > 0.5).float().permute(1, 0, 2, 3)[None].expand(1, 3, -1, -1, -1).to(device)
        generator = cpu_generator(seed)
        cfg = guidance_scale > 1.0
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        tdtype = self.dtype

        embeds = self._encode_text([prompt], device).to(tdtype)
        negative = self._encode_text([negative_prompt or ""], device).to(tdtype) if cfg else None
        condition = pipe.prepare_video_latents(video, mask, [[]], None, device)
        condition = torch.cat([condition, pipe.prepare_masks(mask, [[]], None)], dim=1).to(tdtype)
        scale = torch.ones(len(transformer.config.vace_layers), device=device, dtype=tdtype)

        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=device)
        sigmas = flow_sigmas(scheduler, "VideoInpainter.inpaint")
        first = first_step(sigmas, noise_level)
        timesteps = scheduler.timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        sigma = float(sigmas[first])
        clean = self._normalise(pipe.vae.encode(video.float()).latent_dist.mode().float())
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(device)
        known = None
        if pasted is not None:
            hole = latent_cells(m[:, 0] > 0.5, clean.shape).to(device)
            paste_cells = latent_cells(pasted, clean.shape).to(device)
            level = sigma if paste_level is None else min(paste_level, sigma)
            latents = start_latents(clean, noise, sigma, hole, paste_cells, level)
            known = ~(hole | paste_cells)
        elif first == 0:
            latents = noise * float(getattr(scheduler, "init_noise_sigma", 1.0))
        else:
            latents = start_latents(clean, noise, sigma)
        logger.info("Wan VACE refinement from noise level %.4f (asked %.4f): %d of %d steps%s", sigma, noise_level,
                    len(timesteps), steps, "" if known is None else f", pasted region at {level:.4f}")
        boundary = pipe.config.boundary_ratio
        boundary_t = None if boundary is None else boundary * scheduler.config.num_train_timesteps
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise InterruptedError("VideoInpainter.inpaint: stopped by the user")
            model = pipe.transformer if boundary_t is None or t >= boundary_t or pipe.transformer_2 is None \
                else pipe.transformer_2
            step_t = t.expand(1)
            kwargs = dict(hidden_states=latents.to(tdtype), timestep=step_t, control_hidden_states=condition,
                          control_hidden_states_scale=scale, return_dict=False)
            pred = model(encoder_hidden_states=embeds, **kwargs)[0].float()
            if cfg:
                uncond = model(encoder_hidden_states=negative, **kwargs)[0].float()
                pred = uncond + guidance_scale * (pred - uncond)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            if known is not None:
                latents = torch.where(known, clean, latents)
            if callback is not None:
                callback(i + 1, total, None)
        decoded = pipe.vae.decode(self._normalise(latents.float(), inverse=True), return_dict=False)[0]
        out = (decoded.float()[0].permute(1, 0, 2, 3)[:count] / 2 + 0.5).clamp(0, 1).cpu()   # [T,3,H',W']
        if (mh, mw) != (height, width):
            out = F.interpolate(out, (height, width), mode="bilinear", align_corners=False)
        return out.permute(0, 2, 3, 1).contiguous()
