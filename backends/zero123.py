# SPDX-License-Identifier: Apache-2.0
"""Zero123 / Stable-Zero123 score distillation: novel-view guidance from one condition image.

Public API:
    Zero123Guidance          ``sds_loss(images BHWC, cameras, t, step_ratio) -> scalar`` (core.guidance.Guidance)
    Zero123Components        the loaded networks of a stable-zero123-diffusers folder
    load_zero123(path)       load (and cache) a model folder, with clear errors for broken folders
    camera_embedding(...)    the 4-vector Zero123 conditions on, per target camera
    ZERO123_COMPONENTS       sub-folders a model folder must hold
    CameraProjection         the ``Linear(E+4, E)`` from CLIP embedding and camera to the context token
    sds_from_latents(...)    the classifier-free-guided SDS surrogate in latent space (shared with SD)
    sample_timesteps(...)    integer noise levels from the annealed range, drawn with a generator

Design notes:
    Zero123 is not a diffusers pipeline, so the guidance is assembled here from its parts, read
    from the folder layout of ``ashawkey/stable-zero123-diffusers`` (same as ``zero123-xl-diffusers``):
    ``unet/`` (diffusers ``UNet2DConditionModel`` with 8 input channels), ``vae/`` (``AutoencoderKL``),
    ``image_encoder/`` (transformers ``CLIPVisionModelWithProjection``), ``feature_extractor/``
    (CLIP preprocessing constants), ``clip_camera_projection/`` (one ``Linear(E+4, E)``, weights
    ``proj.weight`` / ``proj.bias``) and ``scheduler/`` (noise schedule).

    Conditioning (learned from DreamGaussian's ``guidance/zero123_utils.py`` and the zero123
    diffusers pipeline it loads, and cross-checked with threestudio's zero123 guidance):

    * Relative camera: target minus condition view. Zero123 uses the *polar* angle (measured from
      the up axis), so with our elevation (positive above the object) Δpolar = -(el - el_cond).
      The embedding is ``[Δpolar (rad), sin Δaz, cos Δaz, Δradius]`` for Zero123 / Zero123-XL; the
      Stable-Zero123 variant replaces the last entry by the condition view's absolute polar angle
      ``deg2rad(90 - el_cond)``. Azimuth grows counter-clockwise about the up axis seen from above,
      as in threestudio (our ``orbit_poses`` turns the same way).
    * The CLIP image embedding (``image_embeds``, the projected pooled output, ``[1, E]``) of the
      condition image is concatenated with the camera 4-vector and projected back to ``E`` (768
      for the real model); that single token is the UNet's cross-attention context.
    * The VAE latent of the condition image *without* the scaling factor (posterior mean) is
      concatenated to the noisy latent along channels: 4 + 4 = 8 UNet input channels.
    * Classifier-free guidance: the unconditional branch zeroes both the context token and the
      concatenated latent; ``eps = eps_u + s (eps_c - eps_u)`` with ``s = 5`` (DreamGaussian).
    * The rendered images are resized to the model's resolution (``unet.sample_size`` times the
      VAE's down-scaling, 256 for the real model), mapped to [-1, 1], encoded to the VAE mean and
      multiplied by ``vae.config.scaling_factor``.

    SDS (DreamFusion, Poole et al. 2022, eq. 3; CoCo4D eq. 2 applies it per timestamp): with
    ``t ~ U[t_lo, t_hi]`` from :func:`core.guidance.annealed_timestep_range`, ``x_t = sqrt(ᾱ) z +
    sqrt(1-ᾱ) ε``, the direction is ``w(t) (ε̂ - ε)`` with ``w(t) = 1 - ᾱ_t`` (DreamGaussian), and
    the loss ``0.5 ||z - sg(z - grad)||² / B`` (:func:`core.guidance.sds_surrogate`) carries it to
    the latents and through the VAE encoder to the images. Timesteps and noise come from the
    guidance's own ``torch.Generator`` (CPU), so a fixed seed repeats a run exactly.

    For 4D (CoCo4D eq. 2), the condition may be a video: the frame nearest the scene time ``t``
    (times spread evenly over [0, 1]) conditions that step. Networks are loaded once per
    (folder, dtype) and shared; they follow the device of the rendered images (or a fixed device)
    and :meth:`Zero123Guidance.offload` parks them on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.engine.cameras import Cameras
from ..core.engine.guidance import annealed_timestep_range, orbit_angles, sds_surrogate
from .graphed_backward import GraphedBackward
from .graphed_forward import GraphedForward
from .loading import cached, check_diffusers_folder, folder_key, load_component
from .memory import make_room, park
from .model_folders import preferred_dtype

__all__ = [
    "Zero123Guidance",
    "Zero123Components",
    "load_zero123",
    "camera_embedding",
    "ZERO123_COMPONENTS",
    "CameraProjection",
    "sds_from_latents",
    "sample_timesteps",
    "condition_frames",
]

logger = logging.getLogger(__name__)

ZERO123_COMPONENTS = ("unet", "vae", "image_encoder", "clip_camera_projection", "scheduler")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# Latent token count up to which the VAE encoder's attention runs as plain matrix products. Its mid-block
# attention is one head 512 wide, too wide for the flash kernels, so the fused choice is the memory-efficient
# kernel's generic path: its backward took 1.5 ms of a Zero123 SDS step's 28.6 ms of kernels on one H100
# (32x32 latents, batch 4, bf16); with the matrix products the step's kernels took 27.7 ms. Their scores
# hold tokens^2 values per image, small up to this size; larger latents (Stable Diffusion's 64x64 and
# 96x96) keep the fused kernel.
MATH_ATTENTION_MAX_TOKENS = 32 * 32


def encoder_attention(vae, images: Tensor):
    """The attention backend context for encoding ``images`` with ``vae`` (see
    :data:`MATH_ATTENTION_MAX_TOKENS`)."""
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    tokens = (images.shape[-2] // down) * (images.shape[-1] // down)
    if tokens > MATH_ATTENTION_MAX_TOKENS:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


# --------------------------------------------------------------------------- SDS core (shared)


def sample_timesteps(generator: torch.Generator, batch: int, step_ratio: float, num_train_timesteps: int,
                     t_range: tuple[float, float] = (0.02, 0.98)) -> Tensor:
    """Integer timesteps ``[B]`` uniform in the annealed range (DreamGaussian), drawn on the CPU."""
    lo, hi = annealed_timestep_range(step_ratio, t_min=t_range[0], t_max=t_range[1])
    first = min(int(round(lo * num_train_timesteps)), num_train_timesteps - 1)
    last = min(max(int(round(hi * num_train_timesteps)), first), num_train_timesteps - 1)
    return torch.randint(first, last + 1, (batch,), generator=generator)


def host_schedule(alphas_cumprod: Tensor) -> Tensor:
    """``ᾱ`` as float32 on the host, where each SDS step indexes it with host timesteps: kept on a GPU, that
    indexing would read it back every step and make the host wait for the device."""
    return alphas_cumprod.detach().float().cpu()


def sds_from_latents(latents: Tensor, predict: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
                     alphas_cumprod: Tensor, timesteps: Tensor, noise: Tensor, guidance_scale: float,
                     prediction_type: str = "epsilon") -> Tensor:
    """The CFG score-distillation surrogate on latents (DreamFusion eq. 3).

    Args:
        latents: ``[B,C,h,w]`` scaled latents, attached to the graph of the images.
        predict: ``(x_t, t) -> (out_cond, out_uncond)`` network outputs for the noisy latents.
        alphas_cumprod: ``ᾱ`` of the noise schedule (on the host, where it is indexed).
        timesteps: ``[B]`` integer timesteps, drawn on the host.
        noise: ``[B,C,h,w]`` the ε added.
        guidance_scale: classifier-free guidance scale ``s``.
        prediction_type: "epsilon" or "v_prediction" (SD 2.1 768); v is converted to ε.

    Returns:
        scalar ``0.5 ||z - sg(z - w(t)(ε̂ - ε))||² / B``, ``w(t) = 1 - ᾱ_t``.

    Host inputs reach the device without waiting for its queue (``non_blocking``), so a fit step that
    calls this keeps the GPU fed.
    """
    device = latents.device
    steps = timesteps.cpu()
    a = alphas_cumprod.cpu().float()[steps].view(-1, 1, 1, 1).to(device, non_blocking=True)
    noise = noise.to(device, non_blocking=True)
    with torch.no_grad():
        z = latents.detach().float()
        x_t = a.sqrt() * z + (1 - a).sqrt() * noise
        cond, uncond = predict(x_t.to(latents.dtype), steps.to(device, non_blocking=True))
        cond, uncond = cond.float(), uncond.float()
        if prediction_type == "v_prediction":
            cond = a.sqrt() * cond + (1 - a).sqrt() * x_t
            uncond = a.sqrt() * uncond + (1 - a).sqrt() * x_t
        elif prediction_type != "epsilon":
            raise ValueError(f"SDS: unsupported scheduler prediction_type {prediction_type!r}")
        eps = uncond + guidance_scale * (cond - uncond)
        grad = torch.nan_to_num((1 - a) * (eps - noise))
    return sds_surrogate(latents.float(), grad)


def to_model_images(images: Tensor, resolution: int, what: str) -> Tensor:
    """Check BHWC images in 0..1 and return ``[B,3,R,R]`` in [-1, 1] (differentiable)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what}: images must be [B,H,W,3] (BHWC, values 0..1), got {shape}")
    if images.shape[0] == 0 or images.shape[1] < 2 or images.shape[2] < 2:
        raise ValueError(f"{what}: images are empty or too small, shape {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2)
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, (resolution, resolution), mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0


def resolve_device_dtype(fixed_device, fixed_dtype, images: Tensor) -> tuple[torch.device, torch.dtype]:
    device = torch.device(fixed_device) if fixed_device is not None else images.device
    if device.type == "cuda" and device.index is None:  # "cuda" is the current device: name it
        device = torch.device("cuda", torch.cuda.current_device())
    return device, (fixed_dtype if fixed_dtype is not None else preferred_dtype(device))


def _placed(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> bool:
    p = next(module.parameters())
    return p.device == device and p.dtype == dtype


def move_modules(modules, device: torch.device, dtype: torch.dtype) -> None:
    """Put modules on ``device`` in ``dtype``, through the host's model manager where there is one (no move
    when they are there already)."""
    make_room(modules, device)
    for module in modules:
        if not _placed(module, device, dtype):
            module.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------- Zero123


class CameraProjection(torch.nn.Module):
    """``Linear(E + 4, E)`` mapping [CLIP embedding, camera 4-vector] to the context token."""

    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4):
        super().__init__()
        self.proj = torch.nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def _load_projection(folder: Path, dtype: torch.dtype) -> CameraProjection:
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    module = CameraProjection(int(config.get("embedding_dim", 768)), int(config.get("additional_embeddings", 4)))
    files = sorted(folder.glob("*.safetensors"))
    state = load_file(str(files[0])) if files else torch.load(next(folder.glob("*.bin")), weights_only=True)
    module.load_state_dict(state)
    return module.to(dtype)


@dataclass
class Zero123Components:
    """The networks of one Zero123 folder (frozen, eval mode)."""

    path: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    projection: CameraProjection
    alphas_cumprod: Tensor
    num_train_timesteps: int
    prediction_type: str
    clip_mean: tuple[float, ...] = CLIP_MEAN
    clip_std: tuple[float, ...] = CLIP_STD
    clip_size: int = 224
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.alphas_cumprod = host_schedule(self.alphas_cumprod)

    @property
    def resolution(self) -> int:
        """Image size the model works at: latent size times the VAE's down-scaling (256 for Zero123)."""
        return int(self.unet.config.sample_size) * 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.unet, self.vae, self.image_encoder, self.projection)


def load_zero123(path: str | Path, dtype: torch.dtype = torch.float32) -> Zero123Components:
    """Load a stable-zero123-diffusers folder (cached per folder contents and dtype; on the CPU).

    Raises:
        ValueError: missing sub-folders or config files, unreadable or truncated weights, or
            components that do not fit together (names the part).
    """
    path = Path(path)
    what = f"zero123 model {str(path)!r}"
    check_diffusers_folder(path, ZERO123_COMPONENTS, what)
    return cached(("zero123", *folder_key(path), str(dtype)), lambda: _load_zero123(path, dtype, what))


def _load_zero123(path: Path, dtype: torch.dtype, what: str) -> Zero123Components:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    unet = load_component(what, "unet", lambda: UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype))
    vae = load_component(what, "vae", lambda: AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype))
    encoder = load_component(what, "image_encoder",
                             lambda: CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder", dtype=dtype))
    projection = load_component(what, "clip_camera_projection",
                                lambda: _load_projection(path / "clip_camera_projection", dtype))
    scheduler = load_component(what, "scheduler", lambda: DDPMScheduler.from_pretrained(path / "scheduler"))
    embed = projection.proj.out_features
    if unet.config.in_channels != 2 * vae.config.latent_channels:
        raise ValueError(f"{what}: unet takes {unet.config.in_channels} input channels, Zero123 needs noisy + "
                         f"condition latents = {2 * vae.config.latent_channels}")
    if encoder.config.projection_dim != embed or unet.config.cross_attention_dim != embed:
        raise ValueError(f"{what}: widths do not match: image_encoder projection_dim "
                         f"{encoder.config.projection_dim}, clip_camera_projection {embed}, unet cross_attention_dim "
                         f"{unet.config.cross_attention_dim}")
    mean, std, size = CLIP_MEAN, CLIP_STD, int(encoder.config.image_size)
    prep = path / "feature_extractor" / "preprocessor_config.json"
    if prep.is_file():
        cfg = json.loads(prep.read_text(encoding="utf-8"))
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    for module in (unet, vae, encoder, projection):
        module.eval().requires_grad_(False)
    logger.info("loaded zero123 model %s (%s)", path, dtype)
    return Zero123Components(path, unet, vae, encoder, projection, scheduler.alphas_cumprod.float(),
                             int(scheduler.config.num_train_timesteps), scheduler.config.prediction_type,
                             mean, std, size, dtype)


def camera_embedding(elevation: Tensor, azimuth: Tensor, radius: Tensor, condition: tuple[float, float, float],
                     variant: str = "zero123") -> Tensor:
    """Zero123's relative-camera vector ``[B,4]`` (see the module notes).

    Args:
        elevation, azimuth, radius: ``[B]`` target view (degrees, degrees, scene units), elevation
            positive above the object.
        condition: (elevation, azimuth, radius) of the condition view.
        variant: "zero123" (``Δradius`` last) or "stable" (condition polar angle last).
    """
    el_c, az_c, r_c = (float(v) for v in condition)
    d_polar = torch.deg2rad(-(elevation - el_c))
    d_az = torch.deg2rad(azimuth - az_c)
    if variant == "stable":
        last = torch.full_like(d_polar, math.radians(90.0 - el_c))
    elif variant == "zero123":
        last = radius - r_c
    else:
        raise ValueError(f"camera_embedding: variant must be 'zero123' or 'stable', got {variant!r}")
    return torch.stack([d_polar, torch.sin(d_az), torch.cos(d_az), last], dim=-1)


def mix_seeds(a: int, b: int) -> int:
    """One 63-bit seed from two (an odd-multiplier hash, so (a, b) and (b, a) differ)."""
    return (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 63)


class GuidanceLifecycle:
    """``reseed``, ``end_fit``, ``offload``, placement and the UNet and encoder calls of the SDS guidances
    (fields: components, seed, cuda_graphs, torch_compile, _placement, _generator, _embeds, _graphed,
    _graphed_encoder)."""

    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move the networks to ``device`` in ``dtype``.

        The host's model manager is asked on a fit's first call (``reseed`` starts a fit) and whenever the
        networks are not where the last call left them (another model's load moved them away), not on
        every step: ComfyUI's own samplers ask it once per run.
        """
        c = self.components
        if self._placement != (device, dtype) or not all(_placed(m, device, dtype) for m in c.modules):
            move_modules(c.modules, device, dtype)
            self._placement = (device, dtype)

    def unet_forward(self) -> GraphedForward:
        """``(latents, timesteps, context) -> prediction`` of the UNet, replayed from CUDA graphs on a GPU
        (an SDS step runs it at the same shapes every time; eager, its launches pace the fit)."""
        if self._graphed is None:
            unet = self.components.unet
            self._graphed = GraphedForward(lambda x, t, context: unet(x, t, encoder_hidden_states=context).sample,
                                           unet, enabled=self.cuda_graphs, compiled=self.torch_compile,
                                           label=f"{type(self).__name__} UNet")
        return self._graphed

    def encode_latents(self) -> GraphedBackward:
        """``images [B,3,R,R] in [-1,1] -> scaled latent means`` of the VAE encoder, differentiable in the images;
        on a GPU its forward and backward replay from CUDA graphs (an SDS step runs both at the same shapes
        every time; eager, they are a few hundred of the 717 kernel launches that a profiled guided fit step made
        on one H100)."""
        if self._graphed_encoder is None:
            vae = self.components.vae
            scale = float(vae.config.scaling_factor)

            def encode(x: Tensor) -> Tensor:
                with encoder_attention(vae, x):
                    return vae.encode(x).latent_dist.mean * scale

            self._graphed_encoder = GraphedBackward(encode, vae, enabled=self.cuda_graphs, compiled=self.torch_compile,
                                                    label=f"{type(self).__name__} VAE encoder")
        return self._graphed_encoder

    def end_fit(self) -> None:
        """A fit ended: drop the encoder's graphs. They hold the activations its backward reads, a whole
        encoder pass over the batch (growing with the square of the view size), memory that other nodes'
        models may need between fits; the next fit captures them again. The UNet's graphs stay: a no-grad
        forward keeps no activations, only its working memory."""
        if self._graphed_encoder is not None:
            self._graphed_encoder.clear()

    def reseed(self, run_seed: int | None = None) -> None:
        """Restart the timestep/noise stream: at the constructor's seed, or (``run_seed`` given, as every
        fit does when it starts) at a seed mixed from both, so the same pair repeats a fit exactly and
        changing either changes the noise."""
        seed = int(self.seed) if run_seed is None else mix_seeds(int(self.seed), int(run_seed))
        self._generator.manual_seed(seed)
        self._placement = None  # a new fit: the first step asks the host for the networks again

    def offload(self) -> None:
        """Move the networks to the CPU and drop cached condition embeddings."""
        park(self.components.modules)
        self._placement = None
        self._embeds.clear()
        for graphed in (self._graphed, self._graphed_encoder):
            if graphed is not None:
                graphed.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class Zero123Guidance(GuidanceLifecycle):
    """Zero123 SDS guidance for novel views of the object in ``condition_image``.

    Args:
        components: from :func:`load_zero123`.
        condition_image: ``[H,W,3]`` or ``[T,H,W,3]`` (a video: frame nearest the scene time), 0..1,
            object centred on a white background; 4 channels are composited over white.
        condition_elevation, condition_azimuth, condition_radius: the seen view's orbit pose.
        guidance_scale: CFG scale (DreamGaussian: 5).
        seed: seed of timesteps and noise.
        center: orbit centre of the object (where :func:`core.guidance.orbit_angles` measures from).
        variant: camera embedding, "auto" (Stable-Zero123 when the folder name contains "stable"),
            "zero123" or "stable".
        device, dtype: fixed compute device / dtype; ``None`` follows the images (bf16 on CUDA).
        t_range: noise-level range before annealing.
        cuda_graphs: replay the UNet, and the VAE encoder's forward and backward, from CUDA graphs on a GPU
            (eager when off, on a CPU, or where a capture fails). On one H100 a Zero123 SDS step at batch 4
            took 31 ms with the UNet graphed, 45 ms eager (the encoder's graphs came later, not yet timed).
        torch_compile: capture those graphs from the passes as ``torch.compile`` builds them (fused kernels;
            ``backends.graph_cache``): on one H100 real-size Zero123 SDS steps (batch 4, 256 px, bf16) queued
            back to back took 20.0 ms each against 28.8 ms with the uncompiled passes' graphs. The first step
            of a process compiles both passes (about 80 s on that machine's 16 cores, less once inductor's
            on-disk cache holds them); the uncompiled passes are captured where compiling fails. GPU graphs only.
    """

    components: Zero123Components
    condition_image: Tensor
    condition_elevation: float = 0.0
    condition_azimuth: float = 0.0
    condition_radius: float = 2.5
    guidance_scale: float = 5.0
    seed: int = 0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    variant: str = "auto"
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None
    t_range: tuple[float, float] = (0.02, 0.98)
    cuda_graphs: bool = True
    torch_compile: bool = True
    _placement: tuple | None = field(init=False, repr=False, default=None)
    _frames: Tensor = field(init=False, repr=False)
    _embeds: dict = field(init=False, repr=False, default_factory=dict)
    _generator: torch.Generator = field(init=False, repr=False)
    _graphed: GraphedForward | None = field(init=False, repr=False, default=None)
    _graphed_encoder: GraphedBackward | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._frames = condition_frames(self.condition_image)
        if self.variant == "auto":
            self.variant = "stable" if "stable" in self.components.path.name.lower() else "zero123"
        if self.variant not in ("zero123", "stable"):
            raise ValueError(f"Zero123Guidance: variant must be 'auto', 'zero123' or 'stable', got {self.variant!r}")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"Zero123Guidance: guidance_scale must be a finite number >= 0, got {self.guidance_scale}")
        if not self.condition_radius > 0:
            raise ValueError(f"Zero123Guidance: condition_radius must be > 0, got {self.condition_radius}")
        self._generator = torch.Generator().manual_seed(int(self.seed))

    def _condition(self, index: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (index, str(device), str(dtype))
        if key not in self._embeds:
            c = self.components
            frame = self._frames[index : index + 1].to(device, torch.float32)  # [1,3,H,W] 0..1
            with torch.no_grad():
                clip_in = F.interpolate(frame, (c.clip_size, c.clip_size), mode="bilinear", align_corners=False,
                                        antialias=True)
                mean = torch.tensor(c.clip_mean, device=device).view(1, 3, 1, 1)
                std = torch.tensor(c.clip_std, device=device).view(1, 3, 1, 1)
                clip = c.image_encoder(pixel_values=((clip_in - mean) / std).to(dtype)).image_embeds  # [1,E]
                vae_in = F.interpolate(frame, (c.resolution, c.resolution), mode="bilinear", align_corners=False,
                                       antialias=True) * 2 - 1
                latent = c.vae.encode(vae_in.to(dtype)).latent_dist.mode()  # unscaled (Zero123 convention)
            self._embeds[key] = (clip, latent)
        return self._embeds[key]

    def sds_loss(self, images: Tensor, cameras: Cameras, t: float, step_ratio: float) -> Tensor:
        """SDS loss of rendered ``images [B,H,W,3]`` seen from ``cameras`` at scene time ``t``.

        Raises:
            ValueError: images not ``[B,H,W,3]``, or a camera count that differs from the batch.
        """
        c = self.components
        x = to_model_images(images, c.resolution, "Zero123Guidance.sds_loss")
        batch = x.shape[0]
        if len(cameras) != batch:
            raise ValueError(f"Zero123Guidance.sds_loss: {batch} images but {len(cameras)} cameras")
        device, dtype = resolve_device_dtype(self.device, self.dtype, images)
        self.place(device, dtype)
        frames = self._frames.shape[0]
        index = int(round(min(max(float(t), 0.0), 1.0) * (frames - 1))) if frames > 1 else 0
        clip, cond_latent = self._condition(index, device, dtype)
        el, az, radius = orbit_angles(cameras, self.center)
        # On the cameras' device: reading the angles back to the host would wait for the render.
        cam = camera_embedding(el.float(), az.float(), radius.float(),
                               (self.condition_elevation, self.condition_azimuth, self.condition_radius),
                               self.variant).to(device, dtype)
        with torch.no_grad():
            token = c.projection(torch.cat([clip.expand(batch, -1), cam], dim=-1))[:, None]  # [B,1,E]
        context = torch.cat([token, torch.zeros_like(token)])
        image_latent = cond_latent.expand(batch, -1, -1, -1)
        image_latent = torch.cat([image_latent, torch.zeros_like(image_latent)])
        latents = self.encode_latents()(x.to(device, dtype))

        unet = self.unet_forward()

        def predict(x_t: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
            x_in = torch.cat([torch.cat([x_t, x_t]), image_latent], dim=1)
            return unet(x_in, torch.cat([steps, steps]), context).chunk(2)

        steps = sample_timesteps(self._generator, batch, step_ratio, c.num_train_timesteps, self.t_range)
        noise = torch.randn(latents.shape, generator=self._generator)  # host generator: same noise on any device
        return sds_from_latents(latents, predict, c.alphas_cumprod, steps, noise, self.guidance_scale,
                                c.prediction_type)


def condition_frames(image) -> Tensor:
    """``[T,3,H,W]`` float frames from an IMAGE; alpha is composited over white."""
    if not isinstance(image, Tensor):
        raise ValueError(f"Zero123Guidance: condition_image must be an IMAGE tensor, got {type(image).__name__}")
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[-1] not in (3, 4):
        raise ValueError(f"Zero123Guidance: condition_image must be [B,H,W,3] (RGB) or [B,H,W,4] (RGBA), got shape "
                         f"{tuple(image.shape)}")
    if 0 in x.shape or x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"Zero123Guidance: condition_image is empty or too small, shape {tuple(image.shape)}")
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("Zero123Guidance: condition_image holds NaN or inf values")
    if x.shape[-1] == 4:
        x = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
    return x.clamp(0, 1).permute(0, 3, 1, 2).contiguous()
