# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D's 4D-aware orbital video model on diffusers building blocks (§3.3, eqs. 1-3).

Public API:
    OrbitalModel                one loaded model: base 3D-aware video model (+ 4D-finetuned UNet + magnitude MLP)
    OrbitalModel.sample(...)    DDIM sampling of the 4D orbit (3D-aware CFG, eq. 3) and of the static orbit
    OrbitalSample               the result: ``orbit_4d [T,S,S,3]``, ``static_orbit [T,S,S,3]``, mode, info text
    AddedTimeEmbedding          wraps a UNet's timestep embedding so ``timestep_cond`` is *added* to it
    time_embed_dim(unet)        width of a diffusers UNet's timestep embedding (the magnitude MLP's output)
    load_orbital_model(path, dtype)   validate a model folder and return its (cached) :class:`OrbitalModel`
    check_orbital_folder(path)  the family ("image" / "text") and optional parts of a folder, or ValueError
    OrbitalInterrupted          raised between denoising steps when ``should_stop()`` turns true
    MODES                       "4d", "4d_no_magnitude", "base"
    clear_cache()               forget the cached model
    check_steps(scheduler, steps)   set a DDIM schedule, refusing step counts it cannot index

Model folder (``models/gen4d/diffusion4d/<name>/``, also shown in the loader's description)::

    model_index.json        the base 3D-aware video model in diffusers layout; "_class_name" is
                            "I2VGenXLPipeline" (image and static-3D conditions, e.g. VideoMV's
                            image-to-3D model converted to diffusers) or "TextToVideoSDPipeline"
                            (text condition, a ModelScope-T2V-based model)
    vae/                    AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)
    text_encoder/           transformers CLIPTextModel (config.json + model.safetensors)
    tokenizer/              CLIPTokenizer (vocab.json, merges.txt, tokenizer_config.json)
    unet/                   the base UNet: I2VGenXLUNet or UNet3DConditionModel
    scheduler/              scheduler_config.json (read as a DDIMScheduler)
    image_encoder/          I2VGenXL only: CLIPVisionModelWithProjection
    feature_extractor/      I2VGenXL only: preprocessor_config.json (crop size, image mean / std)
    unet_4d/                optional: the user's 4D-finetuned UNet, same class as unet/
    motion_magnitude/       optional: config.json {"embed_dim", "freq_dim", "hidden_dim", "scale",
                            "max_period"} + model.safetensors (linear_1.*, linear_2.*) of the
                            magnitude MLP (core.diffusion4d.MotionMagnitudeEmbedding)

Design notes:
    Diffusion4D has no public weights; this is the architecture, loading user-supplied weights.
    Conditions (§3.3): text enters by cross-attention (CLIP text); a front-view image by
    cross-attention (CLIP image embedding) *and* by latent concatenation on the UNet's input
    channels (I2VGen-XL: the image latent in frame 0, then the frame-position ramp ``k/(T-1)`` of
    the I2VGen-XL pipeline); a static 3D orbit video V̄ by latent concatenation of all its frames'
    VAE latents (its first frame also gives the CLIP image embedding). The unconditional
    prediction drops the text (empty prompt), the CLIP image embedding (zeros, as the I2VGen-XL
    pipeline does) and the magnitude; the concatenated latents stay.

    Magnitude (§3.3): the MLP's output is added to the timestep embedding. The 4D UNet's
    ``time_embedding`` module is wrapped by :class:`AddedTimeEmbedding`, which adds whatever the
    UNet forwards as ``timestep_cond`` (both diffusers UNets hand ``timestep_cond`` to their time
    embedding); the sampler passes ``emb(m)`` for conditional rows and zeros for unconditional
    ones, so one batched call serves both. The wrapper goes on after loading (UNet weights keep
    their diffusers names; the MLP lives in its own file).

    Sampling: DDIM (the folder's scheduler config read as ``DDIMScheduler``; 50 steps, eta 0).
    4D mode, per step: the 4D UNet on ``[cond, uncond]`` in one batched call and the base UNet on
    ``cond`` (a second network, so a second call); eq. 3 (:func:`core.diffusion4d.aware_cfg`)
    combines the three outputs. For v-prediction schedulers the same combination is applied to the
    v outputs: v is affine in eps at fixed ``z_t`` and the coefficients of eq. 3 sum to one, so
    this is exactly eq. 3 on eps. The static orbit for the coarse stage (§3.4, V̄') is the base
    model sampled with the same noise and plain CFG; with a static-orbit condition that video is
    V̄ itself and is returned as is. Base mode (no ``unet_4d/``): only the base model runs, with
    plain CFG (eq. 3 with ``w2 = 0``); magnitude and w2 have no effect, which the info text and log
    say, and the static orbit is the same video.

    Weights load from safetensors only (``use_safetensors=True``); a folder is checked before
    loading (configs present, safetensors headers and lengths). Loaded models are cached per
    (folder, dtype, file stamps); the device is chosen per call, the networks move there for the
    call (after asking the host for room) and back to the CPU afterwards unless ``offload="keep"``.
    Noise comes from a CPU generator seeded by ``seed``. Latents stay float32 between steps; the
    networks run in their dtype (bf16 on CUDA by the loader's choice) with diffusers' default SDPA
    attention.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.diffusion4d.orbital import (
    DEFAULT_W1,
    DEFAULT_W2,
    MotionMagnitudeEmbedding,
    OrbitalConfig,
    aware_cfg,
    base_mode_cfg,
    check_magnitude,
)
from .loading import check_weights, file_stamps, holds_weights, missing_config_files, read_folder_weights
from .memory import park, place

__all__ = [
    "OrbitalModel",
    "OrbitalSample",
    "AddedTimeEmbedding",
    "time_embed_dim",
    "load_orbital_model",
    "check_orbital_folder",
    "OrbitalInterrupted",
    "MODES",
    "PIPELINE_FAMILIES",
    "UNET_4D",
    "MAGNITUDE_MLP",
    "FOLDER_LAYOUT",
    "clear_cache",
]

logger = logging.getLogger(__name__)

PIPELINE_FAMILIES = {"I2VGenXLPipeline": "image", "TextToVideoSDPipeline": "text"}
_COMPONENTS = {
    "image": ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "image_encoder", "feature_extractor"),
    "text": ("vae", "text_encoder", "tokenizer", "unet", "scheduler"),
}
UNET_4D = "unet_4d"
MAGNITUDE_MLP = "motion_magnitude"
MODES = ("4d", "4d_no_magnitude", "base")
FOLDER_LAYOUT = (
    "model_index.json + vae/, text_encoder/, tokenizer/, unet/, scheduler/ (the base 3D-aware model in diffusers "
    "layout: I2VGenXLPipeline with image_encoder/ + feature_extractor/ for image / static-3D conditions, or "
    "TextToVideoSDPipeline for text), optionally unet_4d/ (your 4D-finetuned UNet, same class as unet/) and "
    "motion_magnitude/ (config.json + model.safetensors of the magnitude MLP)"
)
_CACHE: OrderedDict[tuple, "OrbitalModel"] = OrderedDict()


def check_steps(scheduler, steps: int, device=None) -> None:
    """``scheduler.set_timesteps(steps)``, refusing step counts the schedule cannot index.

    DDIM's "leading" spacing adds ``steps_offset`` to every timestep, so with the common 1000 training
    timesteps and offset 1, 1000 steps would ask for timestep 1000 of 0..999 (the scheduler then fails
    with an IndexError in its first step). The most steps such a model can take is
    ``num_train_timesteps - steps_offset``.
    """
    cfg = scheduler.config
    train = int(cfg.num_train_timesteps)
    if not 1 <= int(steps) <= train:
        raise ValueError(f"orbital diffusion: steps must be 1..{train} for this model's scheduler, got {steps}")
    scheduler.set_timesteps(int(steps), device=device)
    highest = int(scheduler.timesteps.max())
    if highest >= train:
        most = train - int(getattr(cfg, "steps_offset", 0))
        raise ValueError(f"orbital diffusion: steps={steps} is more than this model's DDIM schedule takes: its "
                         f"{train} training timesteps with steps_offset {cfg.steps_offset} and "
                         f"{cfg.timestep_spacing!r} spacing allow at most {most} steps (the paper uses 50)")
_VAE_CHUNK = 8  # frames per VAE encode / decode call


class OrbitalInterrupted(RuntimeError):
    """The user asked to stop while an orbit was being denoised."""


# --------------------------------------------------------------------------- magnitude hook


class AddedTimeEmbedding(nn.Module):
    """A UNet's timestep embedding plus an additive embedding handed in as ``timestep_cond``.

    ``forward(t_code, condition)`` returns ``inner(t_code) + condition``: with ``condition = emb(m)``
    (``[B, D]``, :class:`core.diffusion4d.MotionMagnitudeEmbedding`) the UNet's time embedding
    becomes ``temb(t) + emb(m)`` as in Diffusion4D §3.3; ``condition=None`` leaves it unchanged.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        if getattr(inner, "cond_proj", None) is not None:
            raise ValueError("AddedTimeEmbedding: this UNet already uses timestep_cond (time_cond_proj_dim is set); "
                             "the magnitude embedding cannot be added through it")
        self.inner = inner

    def forward(self, sample: Tensor, condition: Tensor | None = None) -> Tensor:
        out = self.inner(sample)
        if condition is None:
            return out
        if condition.shape != out.shape:
            raise ValueError(f"AddedTimeEmbedding: condition {tuple(condition.shape)} does not match the timestep "
                             f"embedding {tuple(out.shape)}")
        return out + condition.to(out.dtype)


def time_embed_dim(unet: nn.Module) -> int:
    """Width ``D`` of a diffusers UNet's timestep embedding."""
    emb = unet.time_embedding
    inner = emb.inner if isinstance(emb, AddedTimeEmbedding) else emb
    return int(inner.linear_2.out_features)


# --------------------------------------------------------------------------- folder checks


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: unreadable {str(path)!r} ({type(exc).__name__}: {exc})") from None


def check_orbital_folder(path: str | Path) -> tuple[str, bool, bool]:
    """Validate an orbital model folder (layout in the module docstring).

    Returns:
        ``(family, has_unet_4d, has_magnitude_mlp)``, family "image" (I2VGen-XL) or "text" (ModelScope).

    Raises:
        ValueError: not a folder, no / unreadable ``model_index.json``, an unsupported pipeline class,
            a missing config or weight file, a corrupt / truncated safetensors file, or a magnitude MLP
            without a 4D UNet; the message names the folder, the file and the expected layout.
    """
    path = Path(path)
    what = "orbital model"
    if not path.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is not a folder; expected {FOLDER_LAYOUT}")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"{what}: {str(path)!r} has no model_index.json; expected {FOLDER_LAYOUT}")
    class_name = _read_json(index_file, what).get("_class_name")
    family = PIPELINE_FAMILIES.get(class_name)
    if family is None:
        raise ValueError(f"{what}: {str(path)!r} holds a {class_name!r}; the base 3D-aware model must be one of "
                         f"{sorted(PIPELINE_FAMILIES)}")
    parts = list(_COMPONENTS[family])
    has_4d, has_mlp = (path / UNET_4D).is_dir(), (path / MAGNITUDE_MLP).is_dir()
    if has_mlp and not has_4d:
        raise ValueError(f"{what}: {str(path)!r} has {MAGNITUDE_MLP}/ but no {UNET_4D}/; the magnitude MLP belongs "
                         f"to a 4D-finetuned UNet, put that UNet into {UNET_4D}/")
    if has_4d:
        parts.append(UNET_4D)
    missing = missing_config_files(path, parts)
    if has_mlp and not (path / MAGNITUDE_MLP / "config.json").is_file():
        missing.append(f"{MAGNITUDE_MLP}/config.json")
    if missing:
        raise ValueError(f"{what}: {class_name} folder {str(path)!r} is missing {missing}; expected {FOLDER_LAYOUT}")
    for c in parts:
        if holds_weights(c):
            _check_safetensors(path / c, f"{what} {c}")
    if has_mlp:
        _check_safetensors(path / MAGNITUDE_MLP, f"{what} {MAGNITUDE_MLP}")
    return family, has_4d, has_mlp


def _check_safetensors(folder: Path, what: str) -> None:
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{what}: no .safetensors weights in {str(folder)!r} (only safetensors files are loaded)")
    check_weights(folder, what)


# --------------------------------------------------------------------------- conditions


@dataclass
class _Context:
    """Per-row conditioning of a UNet call (B rows).

    text ``[B,L,D]``; image_embeds ``[B,1,D]`` or None; image_latents ``[B,4,T,h,w]`` or None;
    added ``[B,Dt]`` (magnitude embedding) or None.
    """

    text: Tensor
    image_embeds: Tensor | None = None
    image_latents: Tensor | None = None
    added: Tensor | None = None

    @staticmethod
    def cat(parts: list["_Context"]) -> "_Context":
        def join(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        return _Context(join("text"), join("image_embeds"), join("image_latents"), join("added"))


@dataclass
class OrbitalSample:
    """Result of :meth:`OrbitalModel.sample`.

    Attributes:
        orbit_4d: ``[T,S,S,3]`` in 0..1, frame ``i`` at azimuth ``360 i/T`` and time ``i/(T-1)``.
        static_orbit: ``[T',S,S,3]`` in 0..1 at time 0 (the base model's orbit, or the static-orbit
            condition itself, which may have ``T'`` dividing ``T`` views).
        mode: one of :data:`MODES`.
        info: human-readable summary (mode, condition, what had no effect).
    """

    orbit_4d: Tensor
    static_orbit: Tensor
    mode: str
    info: str


# --------------------------------------------------------------------------- model


class OrbitalModel:
    """The 4D-aware orbital video model of Diffusion4D (§3.3) with its base 3D-aware model.

    Args:
        family: "image" (I2VGenXLUNet; image / static-orbit conditions) or "text" (UNet3DConditionModel).
        vae: AutoencoderKL (4 latent channels for "image").
        text_encoder, tokenizer: CLIP text encoder and its tokenizer.
        unet: the base 3D-aware UNet (eps-bar of eq. 3).
        scheduler_config: diffusers scheduler config, read as a DDIMScheduler.
        image_encoder: CLIPVisionModelWithProjection ("image" family only).
        clip_size, clip_mean, clip_std: the image encoder's input size and normalisation.
        unet_4d: the 4D-finetuned UNet (None = base mode).
        magnitude: the magnitude MLP (None = the 4D model has no magnitude input).
        path: the folder it came from (for messages).
    """

    def __init__(self, family: str, vae, text_encoder, tokenizer, unet, scheduler_config: dict,
                 image_encoder=None, clip_size: int = 224, clip_mean=(0.48145466, 0.4578275, 0.40821073),
                 clip_std=(0.26862954, 0.26130258, 0.27577711), unet_4d=None,
                 magnitude: MotionMagnitudeEmbedding | None = None, path: Path | None = None) -> None:
        if family not in _COMPONENTS:
            raise ValueError(f"OrbitalModel: family must be 'image' or 'text', got {family!r}")
        if family == "image" and image_encoder is None:
            raise ValueError("OrbitalModel: the image family needs a CLIP image encoder")
        if magnitude is not None and unet_4d is None:
            raise ValueError("OrbitalModel: a magnitude MLP needs the 4D-finetuned UNet it was trained with")
        self.family, self.vae, self.text_encoder, self.tokenizer = family, vae, text_encoder, tokenizer
        self.unet, self.unet_4d, self.magnitude = unet, unet_4d, magnitude
        self.image_encoder = image_encoder
        self.scheduler_config = dict(scheduler_config)
        self.clip_size = int(clip_size)
        self.clip_mean = torch.tensor(clip_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(clip_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.path = Path(path) if path is not None else None
        if family == "image" and int(vae.config.latent_channels) != 4:
            raise ValueError(f"OrbitalModel: I2VGen-XL concatenates 4-channel VAE latents, but the VAE makes "
                             f"{vae.config.latent_channels}")
        for name, net in (("unet", unet), (UNET_4D, unet_4d)):
            if net is not None and int(net.config.in_channels) != int(vae.config.latent_channels):
                raise ValueError(f"OrbitalModel: {name} takes {net.config.in_channels} latent channels but the VAE "
                                 f"makes {vae.config.latent_channels}")
        if unet_4d is not None and type(unet_4d) is not type(unet):
            raise ValueError(f"OrbitalModel: {UNET_4D} is a {type(unet_4d).__name__} but the base unet is a "
                             f"{type(unet).__name__}; the 4D model is finetuned from the base, so they must match")
        if magnitude is not None:
            if magnitude.embed_dim != time_embed_dim(unet_4d):
                raise ValueError(f"OrbitalModel: the magnitude MLP makes {magnitude.embed_dim}-d embeddings but the "
                                 f"4D UNet's timestep embedding is {time_embed_dim(unet_4d)}-d")
            if not isinstance(unet_4d.time_embedding, AddedTimeEmbedding):
                unet_4d.time_embedding = AddedTimeEmbedding(unet_4d.time_embedding)
        for module in self.modules():
            module.eval().requires_grad_(False)

    # ----------------------------------------------------------------- properties

    @property
    def mode(self) -> str:
        if self.unet_4d is None:
            return "base"
        return "4d" if self.magnitude is not None else "4d_no_magnitude"

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE down-scaling x UNet down-sampling)."""
        return self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        sample = self.unet.config.sample_size
        return int(sample * self.vae_factor) if sample else OrbitalConfig().size

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.vae, self.text_encoder, self.image_encoder, self.unet, self.unet_4d, self.magnitude)
                if m is not None]

    def place(self, device: torch.device) -> None:
        place(self.modules(), device)

    def offload(self) -> None:
        park(self.modules())

    # ----------------------------------------------------------------- encoders

    def _encode_text(self, prompts: list[str], device: torch.device) -> Tensor:
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(device))[0]

    def _encode_clip_image(self, image: Tensor, device: torch.device) -> Tensor:
        """``image [H,W,3]`` 0..1 -> CLIP image embedding ``[1,1,D]``."""
        x = image.permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(self.clip_size, self.clip_size), mode="bicubic", align_corners=False,
                          antialias=True).clamp(0, 1)
        x = (x - self.clip_mean) / self.clip_std
        dtype = next(self.image_encoder.parameters()).dtype
        return self.image_encoder(x.to(device, dtype)).image_embeds[:, None]

    def _encode_frames(self, frames: Tensor, device: torch.device) -> Tensor:
        """``[N,S,S,3]`` 0..1 -> scaled VAE latents ``[N,c,h,w]`` float32 (posterior mean: deterministic)."""
        out = []
        for chunk in frames.split(_VAE_CHUNK):
            x = (chunk.permute(0, 3, 1, 2).float() * 2.0 - 1.0).to(device, self.vae.dtype)
            out.append(self.vae.encode(x).latent_dist.mode().float())
        return torch.cat(out) * float(self.vae.config.scaling_factor)

    def _decode(self, latents: Tensor) -> Tensor:
        """``[1,c,T,h,w]`` latents -> ``[T,S,S,3]`` 0..1 on the CPU."""
        z = latents[0].permute(1, 0, 2, 3) / float(self.vae.config.scaling_factor)
        out = []
        for chunk in z.split(_VAE_CHUNK):
            out.append(self.vae.decode(chunk.to(self.vae.dtype)).sample.float().cpu())
        frames = torch.cat(out)
        if not torch.isfinite(frames).all():
            raise ValueError("orbital diffusion: the VAE decoded non-finite (NaN or inf) frames; the model's "
                             "weights or its dtype overflowed (try dtype float32 or bf16 in the loader)")
        return ((frames + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).contiguous()

    # ----------------------------------------------------------------- UNet calls

    def _predict(self, unet, z: Tensor, t: Tensor, ctx: _Context, fps: int) -> Tensor:
        """One batched UNet call: ``z [B,c,T,h,w]`` float32 -> prediction ``[B,c,T,h,w]`` float32."""
        dtype = unet.dtype
        args = dict(encoder_hidden_states=ctx.text.to(dtype), return_dict=False)
        if ctx.added is not None:
            args["timestep_cond"] = ctx.added.to(dtype)
        if self.family == "image":
            args.update(fps=torch.full((z.shape[0],), int(fps), device=z.device),
                        image_latents=ctx.image_latents.to(dtype), image_embeddings=ctx.image_embeds.to(dtype))
        return unet(z.to(dtype), t, **args)[0].float()

    def _denoise(self, noise: Tensor, steps: int, eta: float, guide: Callable[[Tensor, Tensor], Tensor],
                 generator: torch.Generator, report: Callable[[], None], should_stop) -> Tensor:
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        check_steps(scheduler, steps, noise.device)
        z = noise * float(scheduler.init_noise_sigma)
        for t in scheduler.timesteps:
            if should_stop is not None and should_stop():
                raise OrbitalInterrupted("orbital diffusion: interrupted")
            model_in = scheduler.scale_model_input(z, t)
            out = guide(model_in, t)
            kwargs = {"eta": float(eta)}
            if eta > 0:
                kwargs["generator"] = generator
            z = scheduler.step(out, t, z, **kwargs).prev_sample
            report()
        return z

    # ----------------------------------------------------------------- sampling

    def sample(self, prompt: str = "", image: Tensor | None = None, static_video: Tensor | None = None,
               magnitude: float = OrbitalConfig.magnitude, w1: float = DEFAULT_W1, w2: float = DEFAULT_W2,
               steps: int = OrbitalConfig.steps, num_frames: int = OrbitalConfig.num_frames,
               size: int = OrbitalConfig.size, seed: int = 0, negative_prompt: str = "",
               fps: int = OrbitalConfig.fps, eta: float = OrbitalConfig.eta,
               callback: Callable | None = None, should_stop: Callable[[], bool] | None = None,
               device: torch.device | str | None = None, offload: str = "after_use") -> OrbitalSample:
        """Sample the 4D orbit (eq. 3 guidance) and the static orbit of the coarse stage (§3.4).

        Args:
            prompt: text condition (cross-attention; with an image model it is used as well).
            image: ``[S,S,3]`` front-view condition image in 0..1 ("image" family).
            static_video: ``[T,S,S,3]`` static 3D orbit V̄ in 0..1 ("image" family; takes precedence
                over ``image``), frame ``i`` at azimuth ``360 i/T``.
            magnitude: eq. 1 motion magnitude ``m >= 0`` (0..1 RGB at ``size``).
            w1, w2: eq. 3 guidance scales.
            steps: DDIM steps.
            num_frames: ``T >= 2`` orbit views.
            size: ``S``, a multiple of :attr:`size_multiple`.
            seed: seeds the initial noise (CPU generator).
            negative_prompt: the unconditional text (empty by default, as in eq. 3's ``eps(z_t, t)``).
            fps: I2VGen-XL frame-rate micro-condition.
            eta: DDIM eta.
            callback: ``callback(step, total, None)`` after each denoising step of every pass.
            should_stop: polled before each step; True raises :class:`OrbitalInterrupted`.
            device: where to run (default CUDA when present).
            offload: "after_use" moves the networks back to the CPU afterwards; "keep" leaves them.

        Returns:
            :class:`OrbitalSample`.

        Raises:
            ValueError: bad magnitude, weights, sizes, frame counts or missing / mismatched conditions.
            OrbitalInterrupted: ``should_stop()`` returned True.
        """
        what = "orbital diffusion"
        m = check_magnitude(magnitude, f"{what}: magnitude")
        for name, w in (("w1", w1), ("w2", w2), ("eta", eta)):
            if not math.isfinite(float(w)):
                raise ValueError(f"{what}: {name} must be finite, got {w}")
        if int(steps) < 1:
            raise ValueError(f"{what}: steps must be >= 1, got {steps}")
        if int(num_frames) < 2:
            raise ValueError(f"{what}: num_frames must be >= 2 (an orbit needs several views), got {num_frames}")
        if offload not in ("after_use", "keep"):
            raise ValueError(f"{what}: offload must be 'after_use' or 'keep', got {offload!r}")
        size, t_frames = int(size), int(num_frames)
        mult = self.size_multiple
        if size < mult or size % mult:
            raise ValueError(f"{what}: size {size} must be a positive multiple of {mult} for this model "
                             f"(VAE x UNet down-sampling); it was trained at {self.native_size}")
        notes: list[str] = []
        condition = self._condition_kind(image, static_video, notes)
        if image is not None:
            image = _check_frames(image[None] if image.dim() == 3 else image, size, what, "image")[0]
        if static_video is not None:
            static_video = _check_frames(static_video, size, what, "static orbit video")
            if static_video.shape[0] != t_frames:
                raise ValueError(f"{what}: the static orbit video has {static_video.shape[0]} frames but the orbit "
                                 f"has num_frames={t_frames} views (one frame per view, azimuth step "
                                 f"{360.0 / t_frames:g}°)")
        device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        mode = self.mode
        sample_static = condition != "static_video" and mode != "base"
        total = int(steps) * (2 if sample_static else 1)
        done = [0]

        def report():
            done[0] += 1
            if callback is not None:
                callback(done[0], total, None)

        generator = torch.Generator("cpu").manual_seed(int(seed) % (2**63))
        h = size // self.vae_factor
        shape = (1, int(self.vae.config.latent_channels), t_frames, h, h)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        self.place(device)
        try:
            with torch.inference_mode():
                cond, uncond = self._contexts(prompt, negative_prompt, image, static_video, condition, t_frames,
                                              device)
                noise = noise.to(device)
                pair = _Context.cat([cond, uncond])
                if mode == "base":
                    def guide(z, t):
                        c, u = self._predict(self.unet, torch.cat([z, z]), t, pair, fps).chunk(2)
                        return base_mode_cfg(c, u, w1)
                else:
                    added = None
                    if self.magnitude is not None:
                        emb = self.magnitude(torch.tensor([m], device=device))
                        added = torch.cat([emb, torch.zeros_like(emb)])
                    pair_4d = _Context(pair.text, pair.image_embeds, pair.image_latents, added)

                    def guide(z, t):
                        c, u = self._predict(self.unet_4d, torch.cat([z, z]), t, pair_4d, fps).chunk(2)
                        eps_3d = self._predict(self.unet, z, t, cond, fps)
                        return aware_cfg(c, u, eps_3d, w1, w2)

                latents = self._denoise(noise, steps, eta, guide, generator, report, should_stop)
                orbit = self._decode(latents)
                if condition == "static_video":
                    static = static_video.clone()
                elif sample_static:
                    def guide_static(z, t):
                        c, u = self._predict(self.unet, torch.cat([z, z]), t, pair, fps).chunk(2)
                        return base_mode_cfg(c, u, w1)

                    static = self._decode(self._denoise(noise, steps, eta, guide_static, generator, report,
                                                        should_stop))
                else:
                    static = orbit.clone()
        finally:
            if offload == "after_use":
                self.offload()
        info = self._info(mode, m, w1, w2, condition, notes)
        logger.info("%s", info)
        return OrbitalSample(orbit, static, mode, info)

    def _condition_kind(self, image, static_video, notes: list[str]) -> str:
        what = "orbital diffusion"
        if self.family == "text":
            if image is not None or static_video is not None:
                note = ("this is a text model (ModelScope UNet3D): the image / static orbit inputs are ignored; "
                        "load an I2VGen-XL orbital model for image or static-3D conditions")
                logger.warning("%s: %s", what, note)
                notes.append(note)
            return "text"
        if static_video is not None:
            if image is not None:
                note = "both an image and a static orbit video were given: the static orbit video conditions"
                logger.warning("%s: %s", what, note)
                notes.append(note)
            return "static_video"
        if image is None:
            raise ValueError(f"{what}: this orbital model is image-conditioned (I2VGen-XL); connect a front-view image "
                             f"or a static orbit video, or load a text orbital model (TextToVideoSDPipeline layout)")
        return "image"

    def _contexts(self, prompt, negative_prompt, image, static_video, condition, t_frames, device):
        text = self._encode_text([str(prompt), str(negative_prompt or "")], device)
        if condition == "text":
            return _Context(text[:1]), _Context(text[1:])
        if condition == "image":
            clip = self._encode_clip_image(image, device)
            first = self._encode_frames(image[None], device)[:, :, None]  # [1,4,1,h,w]
            ramp = torch.arange(1, t_frames, device=device, dtype=torch.float32) / (t_frames - 1)
            rest = torch.ones_like(first).expand(-1, -1, t_frames - 1, -1, -1) * ramp.view(1, 1, -1, 1, 1)
            latents = torch.cat([first, rest], dim=2)
        else:
            clip = self._encode_clip_image(static_video[0], device)
            latents = self._encode_frames(static_video, device).permute(1, 0, 2, 3)[None]  # [1,4,T,h,w]
        cond = _Context(text[:1], clip, latents)
        uncond = _Context(text[1:], torch.zeros_like(clip), latents)
        return cond, uncond

    def _info(self, mode, m, w1, w2, condition, notes) -> str:
        where = f" ({self.path.name})" if self.path is not None else ""
        if mode == "base":
            head = (f"Diffusion4D BASE MODE{where}: no {UNET_4D}/ found, only the base 3D-aware model ran, with plain "
                    f"CFG w1={w1:g} (eq. 3 without its 3D-aware term). magnitude ({m:g}) and w2 ({w2:g}) have no "
                    f"effect; orbit_4d is the base model's static-object orbit and static_orbit is the same video.")
        else:
            mag = (f"motion magnitude m={m:g} (eq. 1)" if mode == "4d" else
                   f"no {MAGNITUDE_MLP}/ MLP, so magnitude ({m:g}) has no effect")
            head = (f"Diffusion4D 4D mode{where}: 4D-finetuned UNet, {mag}, 3D-aware CFG w1={w1:g}, w2={w2:g} "
                    f"(eq. 3).")
        static = {"static_video": "static_orbit is the static orbit condition itself (§3.4).",
                  "image": "", "text": ""}[condition]
        if not static and mode != "base":
            static = "static_orbit: the base 3D-aware model with the same noise and plain CFG (§3.4)."
        label = {"text": "text", "image": "front-view image", "static_video": "static orbit video"}[condition]
        parts = [head, f"Condition: {label}.", static, *(n[0].upper() + n[1:] + "." for n in notes)]
        return " ".join(p for p in parts if p)


def _check_frames(frames, size: int, what: str, name: str) -> Tensor:
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"{what}: {name} must be RGB frames [N,H,W,3] in 0..1, got {got}")
    if tuple(frames.shape[1:3]) != (size, size):
        raise ValueError(f"{what}: {name} is {frames.shape[2]}x{frames.shape[1]} pixels but the orbit is generated at "
                         f"{size}x{size}; resize or crop it to {size}x{size} or set size to match")
    if not torch.isfinite(frames).all():
        raise ValueError(f"{what}: {name} holds NaN or inf values")
    return frames.detach().float().cpu().clamp(0, 1)


# --------------------------------------------------------------------------- loading


def load_orbital_model(path: str | Path, dtype: torch.dtype = torch.float32) -> OrbitalModel:
    """Load (or return the cached) :class:`OrbitalModel` of a folder, on the CPU.

    Raises:
        ValueError: the folder is incomplete or corrupt (see :func:`check_orbital_folder`), a library
            failed to read a component, or the parts do not fit together (the message names them).
    """
    path = Path(path).resolve()
    family, has_4d, has_mlp = check_orbital_folder(path)
    key = (str(path), str(dtype), file_stamps(path))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    _CACHE.clear()  # one orbital model at a time
    what = f"orbital model {str(path)!r}"

    def load(component: str, fn):
        try:
            return fn()
        except Exception as exc:  # diffusers / transformers / safetensors raise many types for broken files
            raise ValueError(f"{what}: could not load {component}/: {type(exc).__name__}: {exc}") from exc

    from diffusers import AutoencoderKL, I2VGenXLUNet, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    unet_cls = I2VGenXLUNet if family == "image" else UNet3DConditionModel
    vae = load("vae", lambda: AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype, use_safetensors=True))
    text_encoder = load("text_encoder", lambda: CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype,
                                                                              use_safetensors=True))
    tokenizer = load("tokenizer", lambda: CLIPTokenizer.from_pretrained(path / "tokenizer"))
    unet = load("unet", lambda: unet_cls.from_pretrained(path / "unet", torch_dtype=dtype, use_safetensors=True))
    unet_4d = None
    if has_4d:
        unet_4d = load(UNET_4D, lambda: unet_cls.from_pretrained(path / UNET_4D, torch_dtype=dtype,
                                                                 use_safetensors=True))
    magnitude = load(MAGNITUDE_MLP, lambda: _load_magnitude(path / MAGNITUDE_MLP, dtype)) if has_mlp else None
    scheduler_config = _read_json(path / "scheduler" / "scheduler_config.json", what)
    extra = {}
    if family == "image":
        extra["image_encoder"] = load("image_encoder", lambda: CLIPVisionModelWithProjection.from_pretrained(
            path / "image_encoder", dtype=dtype, use_safetensors=True))
        extra.update(_clip_preprocessing(path / "feature_extractor" / "preprocessor_config.json", what))
    try:
        model = OrbitalModel(family, vae, text_encoder, tokenizer, unet, scheduler_config, unet_4d=unet_4d,
                             magnitude=magnitude, path=path, **extra)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc
    _CACHE[key] = model
    logger.info("orbital model %s loaded (%s family, mode %s, %s)", path, family, model.mode, dtype)
    if model.mode == "base":
        logger.warning("orbital model %s: no %s/ found, running in base mode (magnitude and w2 have no effect)",
                       path, UNET_4D)
    return model


def _load_magnitude(folder: Path, dtype: torch.dtype) -> MotionMagnitudeEmbedding:
    config = _read_json(folder / "config.json", str(folder))
    allowed = {"embed_dim", "freq_dim", "hidden_dim", "scale", "max_period"}
    unknown = sorted(set(config) - allowed - {"_class_name"})
    if unknown or "embed_dim" not in config:
        raise ValueError(f"config.json must give embed_dim (and optionally {sorted(allowed - {'embed_dim'})}); "
                         f"got keys {sorted(config)}")
    mlp = MotionMagnitudeEmbedding(**{k: v for k, v in config.items() if k in allowed})
    result = mlp.load_state_dict(read_folder_weights(folder), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights do not match the config: missing {result.missing_keys}, unexpected "
                         f"{result.unexpected_keys}")
    return mlp.to(dtype)


def _clip_preprocessing(file: Path, what: str) -> dict:
    config = _read_json(file, what)
    crop = config.get("crop_size", 224)
    size = crop.get("height", 224) if isinstance(crop, dict) else crop
    mean = config.get("image_mean", (0.48145466, 0.4578275, 0.40821073))
    std = config.get("image_std", (0.26862954, 0.26130258, 0.27577711))
    if len(mean) != 3 or len(std) != 3 or int(size) < 1:
        raise ValueError(f"{what}: {str(file)!r} must give crop_size and 3-channel image_mean / image_std")
    return {"clip_size": int(size), "clip_mean": tuple(mean), "clip_std": tuple(std)}


def clear_cache() -> None:
    """Forget the cached model."""
    _CACHE.clear()
