# SPDX-License-Identifier: Apache-2.0
"""Stable Diffusion (2.1) text-conditioned score distillation, for scenes.

Public API:
    SDGuidance            ``sds_loss(images BHWC, cameras, t, step_ratio) -> scalar`` (core.guidance.Guidance)
    SDComponents          the loaded networks of a diffusers SD folder
    load_sd_guidance(path)   load (and cache) a diffusers Stable Diffusion folder with clear errors
    SD_COMPONENTS         sub-folders a model folder must hold

Design notes:
    Reads the diffusers layout of ``stabilityai/stable-diffusion-2-1(-base)``: ``unet/``, ``vae/``,
    ``text_encoder/`` (transformers ``CLIPTextModel``), ``tokenizer/`` (``CLIPTokenizer``) and
    ``scheduler/``; only the parts SDS needs are loaded (no pipeline, no safety checker).

    SDS follows DreamFusion (Poole et al. 2022, eq. 3; applied per timestamp as CoCo4D eq. 2):
    renders are resized to the model's resolution (``unet.sample_size`` times the VAE's
    down-scaling: 512 for SD 2.1-base, 768 for SD 2.1), encoded to the scaled VAE mean, noised at
    ``t`` drawn from :func:`core.guidance.annealed_timestep_range`, and the classifier-free-guided
    prediction ``ε̂ = ε_u + s (ε_c - ε_u)`` (``ε_u`` with the negative prompt, empty by default)
    gives the direction ``(1 - ᾱ_t)(ε̂ - ε)`` carried back by :func:`core.guidance.sds_surrogate`.
    v-prediction checkpoints (SD 2.1 768) are converted to ε first. The default guidance scale is
    DreamFusion's 100: SDS needs a far larger scale than sampling (7.5) to give sharp results;
    lower it (e.g. 7.5-30) for softer, more diverse guidance.

    The prompt is encoded once per device/dtype and kept; the networks are loaded once per
    (folder, dtype) and shared (the cache and the safetensors checks are :mod:`backends.loading`'s;
    the SDS core, which both guidances use, is in :mod:`backends.zero123`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..core.engine.cameras import Cameras
from .graphed_backward import GraphedBackward
from .graphed_forward import GraphedForward
from .loading import cached, check_diffusers_folder, folder_key, load_component
from .zero123 import (
    GuidanceLifecycle,
    host_schedule,
    resolve_device_dtype,
    sample_timesteps,
    sds_from_latents,
    to_model_images,
)

__all__ = ["SDGuidance", "SDComponents", "load_sd_guidance", "SD_COMPONENTS"]

logger = logging.getLogger(__name__)

SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SDComponents:
    """The networks of one Stable Diffusion folder (frozen, eval mode)."""

    path: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    alphas_cumprod: Tensor
    num_train_timesteps: int
    prediction_type: str
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.alphas_cumprod = host_schedule(self.alphas_cumprod)

    @property
    def resolution(self) -> int:
        """Image size of the model: latent size times the VAE's down-scaling (512 for SD 2.1-base)."""
        return int(self.unet.config.sample_size) * 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.unet, self.vae, self.text_encoder)


def load_sd_guidance(path: str | Path, dtype: torch.dtype = torch.float32) -> SDComponents:
    """Load the SDS parts of a diffusers Stable Diffusion folder (cached; on the CPU).

    Raises:
        ValueError: missing sub-folders or config files, unreadable or truncated weights, or a
            text encoder whose width does not match the UNet's cross-attention.
    """
    path = Path(path)
    what = f"sd_guidance model {str(path)!r}"
    check_diffusers_folder(path, SD_COMPONENTS, what)
    return cached(("sd", *folder_key(path), str(dtype)), lambda: _load_sd(path, dtype, what))


def _load_sd(path: Path, dtype: torch.dtype, what: str) -> SDComponents:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = load_component(what, "unet", lambda: UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype))
    vae = load_component(what, "vae", lambda: AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype))
    text = load_component(what, "text_encoder",
                          lambda: CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype))
    tokenizer = load_component(what, "tokenizer", lambda: CLIPTokenizer.from_pretrained(path / "tokenizer"))
    scheduler = load_component(what, "scheduler", lambda: DDPMScheduler.from_pretrained(path / "scheduler"))
    if unet.config.in_channels != vae.config.latent_channels:
        raise ValueError(f"{what}: unet takes {unet.config.in_channels} input channels but the vae makes "
                         f"{vae.config.latent_channels} (an inpainting or depth model is not a text-to-image model)")
    if text.config.hidden_size != unet.config.cross_attention_dim:
        raise ValueError(f"{what}: text_encoder width {text.config.hidden_size} does not match unet "
                         f"cross_attention_dim {unet.config.cross_attention_dim}")
    for module in (unet, vae, text):
        module.eval().requires_grad_(False)
    logger.info("loaded sd guidance model %s (%s)", path, dtype)
    return SDComponents(path, unet, vae, text, tokenizer, scheduler.alphas_cumprod.float(),
                        int(scheduler.config.num_train_timesteps), scheduler.config.prediction_type, dtype)


@dataclass
class SDGuidance(GuidanceLifecycle):
    """Text-conditioned SDS guidance (DreamFusion) with Stable Diffusion.

    Args:
        components: from :func:`load_sd_guidance`.
        prompt: what the rendered views should look like.
        negative_prompt: the unconditional branch's text (empty = plain classifier-free guidance).
        guidance_scale: CFG scale (DreamFusion: 100).
        seed: seed of timesteps and noise.
        device, dtype: fixed compute device / dtype; ``None`` follows the images (bf16 on CUDA).
        t_range: noise-level range before annealing.
        cuda_graphs: replay the UNet, and the VAE encoder's forward and backward, from CUDA graphs on a GPU
            (eager when off, on a CPU, or where a capture fails). Zero123's step, which runs the same code,
            took 31 ms with the UNet graphed against 45 ms eager on one H100 (batch 4); this guidance's
            step has not been timed graphed.
        torch_compile: capture the graphs from compiled passes, as :class:`~.zero123.Zero123Guidance` does by
            default; off here until timed at Stable Diffusion's latent sizes (64x64 and 96x96).
    """

    components: SDComponents
    prompt: str
    negative_prompt: str = ""
    guidance_scale: float = 100.0
    seed: int = 0
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None
    t_range: tuple[float, float] = (0.02, 0.98)
    cuda_graphs: bool = True
    torch_compile: bool = False
    _placement: tuple | None = field(init=False, repr=False, default=None)
    _embeds: dict = field(init=False, repr=False, default_factory=dict)
    _generator: torch.Generator = field(init=False, repr=False)
    _graphed: GraphedForward | None = field(init=False, repr=False, default=None)
    _graphed_encoder: GraphedBackward | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("SDGuidance: the prompt is empty; describe the scene the views should show")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"SDGuidance: guidance_scale must be a finite number >= 0, got {self.guidance_scale}")
        self._generator = torch.Generator().manual_seed(int(self.seed))

    def _context(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (str(device), str(dtype))
        if key not in self._embeds:
            c = self.components
            tokens = c.tokenizer([self.prompt, self.negative_prompt], padding="max_length", truncation=True,
                                 max_length=c.tokenizer.model_max_length, return_tensors="pt")
            with torch.no_grad():
                hidden = c.text_encoder(tokens.input_ids.to(device))[0]
            self._embeds[key] = hidden.to(dtype)  # [2, L, D]: prompt, negative prompt
        return self._embeds[key]

    def sds_loss(self, images: Tensor, cameras: Cameras, t: float, step_ratio: float) -> Tensor:
        """SDS loss of rendered ``images [B,H,W,3]`` (cameras and scene time are not used by SD).

        Raises:
            ValueError: images not ``[B,H,W,3]``.
        """
        c = self.components
        x = to_model_images(images, c.resolution, "SDGuidance.sds_loss")
        batch = x.shape[0]
        device, dtype = resolve_device_dtype(self.device, self.dtype, images)
        self.place(device, dtype)
        text = self._context(device, dtype)
        context = torch.cat([text[:1].expand(batch, -1, -1), text[1:].expand(batch, -1, -1)])
        latents = self.encode_latents()(x.to(device, dtype))

        unet = self.unet_forward()

        def predict(x_t: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
            return unet(torch.cat([x_t, x_t]), torch.cat([steps, steps]), context).chunk(2)

        steps = sample_timesteps(self._generator, batch, step_ratio, c.num_train_timesteps, self.t_range)
        noise = torch.randn(latents.shape, generator=self._generator)  # host generator: same noise on any device
        return sds_from_latents(latents, predict, c.alphas_cumprod, steps, noise, self.guidance_scale,
                                c.prediction_type)
