# SPDX-License-Identifier: Apache-2.0
"""Model handles built from ComfyUI's own sockets (MODEL, VAE, CONDITIONING, CLIP_VISION, CLIP_VISION_OUTPUT).

Public API:
    NativeVideoInpainter    GEN4D_VIDEO_INPAINT_MODEL from a Wan 2.1 VACE or Wan2.1-Fun InP / I2V MODEL + Wan VAE
    NativeImageInpainter    GEN4D_INPAINT_MODEL from an SD 1.x / 2.x / SDXL (inpainting) MODEL + VAE
    NativeZero123Guidance   GEN4D_GUIDANCE_MODEL (SDS) from a Stable Zero123 MODEL + CLIP_VISION + VAE
    NativeSDGuidance        GEN4D_GUIDANCE_MODEL (SDS) from an SD MODEL + VAE + CONDITIONING
    describe_model(model)   what a MODEL socket holds: ``(family, model class, config class)``
    check_video_inpaint_inputs(...), check_image_inpaint_inputs(...), check_zero123_inputs(...),
    check_sd_guidance_inputs(...)   the up-front socket checks (wrong family, VAE, text encoder)
    eq7_noise(noise, clean, sigma, paste_cells, paste_sigma)   the noise that makes ComfyUI's start eq. 7's

Design notes:
    These objects satisfy the interfaces the stages call on our diffusers-backed handles
    (``inpaint(frames, masks, prompt, negative_prompt, noise_level, steps, guidance_scale, seed,
    callback, should_stop, *, paste_mask, paste_noise_level)`` of :mod:`backends.video_inpaint`,
    ``inpaint(image, mask, ...)`` of :mod:`backends.inpaint`, ``sds_loss(images, cameras, t,
    step_ratio)`` of :mod:`core.engine.guidance`), but every network call goes through ComfyUI:
    ``comfy.sample.sample`` / ``sample_custom`` with ComfyUI's samplers and schedulers, the
    MODEL's patches and LoRAs (whatever ``model_options`` and weight patches the graph added),
    ComfyUI's model management (``load_models_gpu`` inside sampling, the VAE's own encode/decode).
    ``comfy`` is imported inside the calls only, so the pack imports without ComfyUI.

    Inference mode: ComfyUI creates weights inside ``torch.inference_mode`` (its loaders run there), and
    the fitting stages call the handles with autograd enabled, where such weights cannot take part in
    recorded operations. Every ComfyUI call (VAE encode / decode, sampling) therefore runs inside
    ``torch.inference_mode`` and its results are cloned out as ordinary tensors.

    Text: the conditioning comes from the CONDITIONING sockets; the ``prompt`` / ``negative_prompt``
    strings the stages pass are not used (the adaptor node says so).

    Checks before any sampling: the MODEL's family from ComfyUI's model class and its detected
    config (``model.model``, ``model.model.model_config.unet_config``), the VAE's latent channels
    and dimensionality against the MODEL's latent format (for Wan also the VAE network's family, as
    other video VAEs share its 16-channel 3D latents), the CONDITIONING's cross-attention
    width against what the MODEL's text input takes (umt5-xxl 4096 for Wan, CLIP 768 / 1024 /
    2048 for SD 1.x / 2.x / SDXL), and the CLIP_VISION's embedding width against Stable Zero123's
    camera projection (768). Errors name the socket and what it expected.

    CoCo4D eq. 7 with ComfyUI's samplers (flow models: ``x_σ = (1 - σ) z + σ ε``): the start is the
    first step of ``calculate_sigmas(model_sampling, scheduler, steps)`` whose σ is at most
    ``noise_level`` and sampling runs the rest of those sigmas. ComfyUI noises every latent cell to
    the first σ; for the pasted cells (level ``l`` <= σ) the noise handed to it is
    ``ε' = (l ε + (σ - l) z) / σ``, which ComfyUI turns into exactly ``(1 - l) z + l ε`` there
    (:func:`eq7_noise`). Known cells are kept by ComfyUI's own denoise mask (they follow the clean
    latents' trajectory and are the clean latents at the end). Without ``paste_mask`` the whole
    latent starts at σ (the img2img convention), as in the diffusers backend.

    SDS through ComfyUI: one model evaluation per step by a one-call sampler handed to
    ``comfy.sample.sample_custom`` (so conditioning is processed, patches applied and the model
    loaded by ComfyUI), at ``σ`` of integer timesteps drawn as in :mod:`backends.zero123`; with
    ``x = z + σ ε`` (ComfyUI's ε / v parametrisation), ``ε̂ = (x - D(x, σ)) / σ`` and the weight
    ``1 - ᾱ = σ² / (1 + σ²)``; :func:`backends.zero123.sds_from_latents`' surrogate carries
    it back. The gradient reaches the rendered images through a copy of the VAE's encoder whose
    weights are plain (non-inference) tensors: ComfyUI loads weights inside inference mode, and
    autograd cannot save inference tensors.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.engine.cameras import Cameras
from ..core.engine.guidance import orbit_angles, sds_surrogate
from .inpaint import (
    check_frames_and_masks,
    check_paste,
    check_sampling,
    composite,
    cpu_generator,
    model_size,
    video_to_model_size,
)
from .wan import first_step
from .zero123 import camera_embedding, condition_frames, sample_timesteps, to_model_images

__all__ = [
    "NativeVideoInpainter",
    "NativeImageInpainter",
    "NativeZero123Guidance",
    "NativeSDGuidance",
    "describe_model",
    "check_video_inpaint_inputs",
    "check_image_inpaint_inputs",
    "check_zero123_inputs",
    "check_sd_guidance_inputs",
    "eq7_noise",
]

logger = logging.getLogger(__name__)

WAN_TEXT_WIDTH = 4096      # umt5-xxl hidden size, Wan 2.1's text input
ZERO123_CLIP_WIDTH = 768   # Stable Zero123's CLIP image embedding (ViT-L/14 projection)
WAN21_VAE_MODULE = "comfy.ldm.wan.vae"  # where ComfyUI's Wan 2.1 VAE network lives (VAE.first_stage_model)


# --------------------------------------------------------------------------- socket checks


def _class_names(obj) -> list[str]:
    return [c.__name__ for c in type(obj).__mro__]


def describe_model(model) -> tuple[str, str, str]:
    """``(family, model class, config class)`` of a ComfyUI MODEL (a ModelPatcher).

    family: "wan_vace", "wan_inp" (Wan 2.1 with mask + image latents concatenated: Fun-InP, I2V),
    "wan" (other Wan 2.1), "wan22", "zero123", "sdxl", "sd2", "sd1", or "other".

    Raises:
        TypeError: not a ComfyUI MODEL (no ``.model`` with a ``model_config``).
    """
    inner = getattr(model, "model", None)
    config = getattr(inner, "model_config", None)
    if inner is None or config is None:
        raise TypeError(f"expected a ComfyUI MODEL (a ModelPatcher from a core or community loader), got "
                        f"{type(model).__name__}")
    names, cfg_names = _class_names(inner), _class_names(config)
    unet = dict(getattr(config, "unet_config", {}) or {})
    if "WAN22" in names or any(n.startswith("WAN22") for n in cfg_names):
        family = "wan22"
    elif "WAN21" in names:
        if unet.get("model_type") == "vace" or "WAN21_Vace" in names:
            family = "wan_vace"
        elif int(unet.get("in_dim", 16)) == 36:
            family = "wan_inp"
        else:
            family = "wan"
    elif "Stable_Zero123" in names:
        family = "zero123"
    elif "SDXL" in names or any(n.startswith("SDXL") for n in cfg_names):
        family = "sdxl"
    elif cfg_names[0].startswith("SD2") or int(unet.get("context_dim", 0) or 0) == 1024:
        family = "sd2"
    elif cfg_names[0].startswith("SD15") or int(unet.get("context_dim", 0) or 0) == 768 and "BaseModel" == names[0]:
        family = "sd1"
    else:
        family = "other"
    return family, names[0], cfg_names[0]


def _model_label(model) -> str:
    try:
        _, cls, cfg = describe_model(model)
    except TypeError:
        return type(model).__name__
    return f"{cls} ({cfg})"


def _check_vae(node: str, vae, channels: int, dims: int, expected: str, family: str | None = None):
    """Latent channels and dimensionality of a ComfyUI VAE; with ``family``, the module its network comes
    from (other video VAEs, e.g. Cosmos or HunyuanVideo, also give 16-channel 3D latents)."""
    got_channels = getattr(vae, "latent_channels", None)
    got_dims = getattr(vae, "latent_dim", None)
    if got_channels is None or not callable(getattr(vae, "encode", None)):
        raise TypeError(f"{node}: vae: expected a ComfyUI VAE ({expected}), got {type(vae).__name__}")
    if int(got_channels) != channels or int(got_dims) != dims:
        kind = "a video" if int(got_dims) == 3 else "an image"
        raise ValueError(f"{node}: vae: got {kind} VAE with {got_channels} latent channels; the model expects "
                         f"{expected} ({channels} channels, {'video' if dims == 3 else 'image'} latents)")
    network = getattr(vae, "first_stage_model", None)
    where = type(network).__module__ if network is not None else None
    if family is not None and where is not None and where != family:
        raise ValueError(f"{node}: vae: got a {type(network).__name__} VAE ({where}) with {got_channels}-channel "
                         f"latents; the model expects {expected} (e.g. wan_2.1_vae.safetensors from VAELoader)")


def _check_conditioning(node: str, socket: str, conditioning, width: int, expected: str,
                        needs: tuple[str, ...] = ()) -> None:
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise TypeError(f"{node}: {socket}: expected CONDITIONING (from CLIPTextEncode or similar), got "
                        f"{type(conditioning).__name__}")
    for i, entry in enumerate(conditioning):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], Tensor)
                and isinstance(entry[1], dict)):
            raise TypeError(f"{node}: {socket}: entry {i} is not a ComfyUI conditioning pair [tensor, dict]")
        if entry[0].dim() != 3 or int(entry[0].shape[-1]) != width:
            raise ValueError(f"{node}: {socket}: text embedding of shape {tuple(entry[0].shape)} (width "
                             f"{int(entry[0].shape[-1])}); the model takes {expected} of width {width}. Encode the "
                             f"prompt with the text encoder that belongs to this model")
        for key in needs:
            if entry[1].get(key) is None:
                raise ValueError(f"{node}: {socket}: conditioning has no {key!r}; the model needs {expected} "
                                 f"(CLIPTextEncode with the model's own CLIP provides it)")


def _wan_text_width(model) -> int:
    emb = getattr(model.model.diffusion_model, "text_embedding", None)
    try:
        return int(emb[0].weight.shape[1])
    except (TypeError, AttributeError, IndexError):
        return WAN_TEXT_WIDTH


def check_video_inpaint_inputs(node: str, model, vae, positive, negative, clip_vision_output=None) -> str:
    """Check the sockets of the native video inpainter; returns the family ("wan_vace" or "wan_inp")."""
    try:
        family, cls, cfg = describe_model(model)
    except TypeError as exc:
        raise TypeError(f"{node}: model: {exc}") from None
    if family not in ("wan_vace", "wan_inp"):
        raise ValueError(f"{node}: model: got a {cls} ({cfg}) MODEL; expected a Wan 2.1 VACE model (e.g. "
                         f"wan2.1_vace_1.3B / 14B) or a Wan2.1-Fun InP / Wan 2.1 I2V model (36 input channels) from "
                         f"UNETLoader")
    _check_vae(node, vae, int(model.model.latent_format.latent_channels), 3, "the Wan 2.1 VAE", WAN21_VAE_MODULE)
    width = _wan_text_width(model)
    for socket, cond in (("positive", positive), ("negative", negative)):
        _check_conditioning(node, socket, cond, width, "umt5-xxl text embeddings (CLIPLoader type 'wan')")
    needs_clip = getattr(model.model.diffusion_model, "img_emb", None) is not None
    if needs_clip and clip_vision_output is None:
        raise ValueError(f"{node}: clip_vision_output: this {cls} model takes a CLIP vision embedding of the "
                         f"first frame (CLIPVisionEncode with clip_vision_h); connect one")
    if clip_vision_output is not None and getattr(clip_vision_output, "penultimate_hidden_states", None) is None:
        raise TypeError(f"{node}: clip_vision_output: expected CLIP_VISION_OUTPUT (from CLIPVisionEncode), got "
                        f"{type(clip_vision_output).__name__}")
    return family


def check_image_inpaint_inputs(node: str, model, vae, positive, negative) -> str:
    """Check the sockets of the native image inpainter; returns the family ("sd1", "sd2" or "sdxl")."""
    try:
        family, cls, cfg = describe_model(model)
    except TypeError as exc:
        raise TypeError(f"{node}: model: {exc}") from None
    if family not in ("sd1", "sd2", "sdxl"):
        raise ValueError(f"{node}: model: got a {cls} ({cfg}) MODEL; expected a Stable Diffusion 1.x / 2.x / SDXL "
                         f"(inpainting) checkpoint from CheckpointLoaderSimple")
    _check_vae(node, vae, int(model.model.latent_format.latent_channels), 2, "the SD / SDXL VAE")
    width = int(model.model.model_config.unet_config.get("context_dim") or 0)
    needs = ("pooled_output",) if family == "sdxl" else ()
    for socket, cond in (("positive", positive), ("negative", negative)):
        _check_conditioning(node, socket, cond, width, f"{family.upper()} CLIP text embeddings", needs)
    return family


def _zero123_embedding_width(model) -> int | None:
    """Image-embedding width Stable Zero123's camera projection takes (its input minus the 4 camera values)."""
    weight = getattr(getattr(model.model, "cc_projection", None), "weight", None)
    return int(weight.shape[1]) - 4 if isinstance(weight, Tensor) and weight.dim() == 2 else None


def _clip_vision_width(clip_vision) -> int | None:
    """Width of a ComfyUI CLIP_VISION's ``image_embeds`` (its projection's output), when it has a projection."""
    weight = getattr(getattr(getattr(clip_vision, "model", None), "visual_projection", None), "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.dim() == 2 else None


def check_zero123_inputs(node: str, model, clip_vision, vae) -> None:
    try:
        family, cls, cfg = describe_model(model)
    except TypeError as exc:
        raise TypeError(f"{node}: model: {exc}") from None
    if family != "zero123":
        raise ValueError(f"{node}: model: got a {cls} ({cfg}) MODEL; expected Stable Zero123 "
                         f"(stable_zero123.ckpt from Image Only Checkpoint Loader)")
    if not callable(getattr(clip_vision, "encode_image", None)):
        raise TypeError(f"{node}: clip_vision: expected CLIP_VISION (the checkpoint's, or CLIPVisionLoader's "
                        f"ViT-L/14), got {type(clip_vision).__name__}")
    takes, gives = _zero123_embedding_width(model), _clip_vision_width(clip_vision)
    if takes is not None and gives is not None and takes != gives:
        raise ValueError(f"{node}: clip_vision: got a CLIP vision model with {gives}-wide image embeddings; this "
                         f"Stable Zero123 model takes {takes} (the checkpoint's own ViT-L/14, not clip_vision_h or "
                         f"clip_vision_g)")
    _check_vae(node, vae, int(model.model.latent_format.latent_channels), 2, "the SD VAE of the checkpoint")


def check_sd_guidance_inputs(node: str, model, vae, positive, negative) -> str:
    family = check_image_inpaint_inputs(node, model, vae, positive, negative)
    channels = int(model.model.model_config.unet_config.get("in_channels") or 4)
    if channels != int(model.model.latent_format.latent_channels):
        raise ValueError(f"{node}: model: an inpainting or depth model ({channels} input channels); SDS needs a "
                         f"text-to-image Stable Diffusion checkpoint")
    return family


# --------------------------------------------------------------------------- shared sampling helpers


def eq7_noise(noise: Tensor, clean: Tensor, sigma: float, paste_cells: Tensor | None, paste_sigma: float) -> Tensor:
    """Noise for ComfyUI's flow start ``σ ε' + (1 - σ) z`` so that pasted cells start at ``(1 - l) z + l ε``.

    Args:
        noise: ``ε`` ``[B,C,F,h,w]``; clean: ``z`` in the model's (processed) latent space.
        sigma: the start level σ > 0; paste_cells: bool ``[F,h,w]`` or None; paste_sigma: ``l`` <= σ.
    """
    if paste_cells is None or sigma <= 0:
        return noise
    mixed = (paste_sigma * noise + (sigma - paste_sigma) * clean) / sigma
    return torch.where(paste_cells.to(noise.device), mixed, noise)


def _with_values(conditioning, values: dict) -> list:
    """A copy of CONDITIONING with ``values`` set in every entry's dict (the input is left untouched)."""
    return [[c[0], {**c[1], **values}] for c in conditioning]


def _cfg(guidance_scale: float) -> float:
    # our contract: <= 1 runs without the unconditional pass; ComfyUI skips it at exactly 1
    return float(guidance_scale) if guidance_scale > 1.0 else 1.0


def _step_callback(total: int, callback, should_stop, what: str):
    def on_step(step, _x0, _x, _total):
        if should_stop is not None and should_stop():
            raise InterruptedError(f"{what}: stopped by the user")
        if callback is not None:
            callback(min(int(step) + 1, total), total, None)

    return on_step


def _cell_mask(mask: Tensor, latent_shape) -> Tensor:
    """``[T,H,W]`` pixel mask (T = 4(F-1)+1) -> float ``[F,h,w]``: a cell is set when any of its pixels is."""
    from .wan import latent_cells

    return latent_cells(mask, latent_shape).float()


# --------------------------------------------------------------------------- video inpainting


@dataclass
class NativeVideoInpainter:
    """Wan 2.1 VACE / Fun-InP video inpainting through ComfyUI's sampling (CoCo4D eq. 7, MoGe4D 4D-ViSM).

    Args:
        model: ComfyUI MODEL (Wan 2.1 VACE, or 36-channel Fun-InP / I2V).
        vae: ComfyUI VAE (Wan 2.1 VAE).
        positive, negative: CONDITIONING from the Wan text encoder.
        clip_vision_output: CLIP_VISION_OUTPUT for models with an image embedding (I2V / Fun-InP 14B).
        sampler_name, scheduler: ComfyUI sampler and scheduler names.
        vace_strength: VACE control strength (WanVaceToVideo's ``strength``).
    """

    model: object
    vae: object
    positive: list
    negative: list
    clip_vision_output: object = None
    sampler_name: str = "uni_pc"
    scheduler: str = "simple"
    vace_strength: float = 1.0
    family: str = field(init=False)

    def __post_init__(self) -> None:
        self.family = check_video_inpaint_inputs("NativeVideoInpainter", self.model, self.vae, self.positive,
                                                 self.negative, self.clip_vision_output)

    multiple = 16   # VAE down-scaling 8 x transformer patch 2
    temporal = 4

    def offload(self) -> None:
        """ComfyUI's model manager decides where the networks live; nothing to do."""

    def apply_vism_lora(self, strength: float) -> bool:
        """The 4D-ViSM LoRA is applied in the graph (LoraLoaderModelOnly), not by this handle."""
        return False

    def start_index(self, noise_level: float, steps: int) -> tuple[Tensor, int]:
        """ComfyUI's sigmas of a full run and the index of the first step at most ``noise_level``."""
        import comfy.samplers

        sampling = self.model.get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(sampling, self.scheduler, int(steps)).float().cpu()
        return sigmas, first_step(sigmas[:-1], noise_level)

    def inpaint(self, frames: Tensor, masks: Tensor, prompt: str = "", negative_prompt: str = "",
                noise_level: float = 0.7, steps: int = 30, guidance_scale: float = 5.0, seed: int = 0,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None, *,
                paste_mask: Tensor | None = None, paste_noise_level: float | None = None) -> Tensor:
        """Same contract as :meth:`backends.video_inpaint.VideoInpainter.inpaint` (text from the CONDITIONING)."""
        what = "NativeVideoInpainter.inpaint"
        frames, masks = check_frames_and_masks(frames, masks, what, video=True)
        check_sampling(what, noise_level, steps, guidance_scale, "noise_level")
        paste, paste_level = check_paste(what, masks, paste_mask, paste_noise_level, noise_level)
        sigmas, first = self.start_index(noise_level, steps)
        if not (masks > 0).any() or first >= int(steps):
            return frames.clone()
        with torch.inference_mode():
            out = self._run(frames, masks, paste, paste_level, sigmas, first, float(guidance_scale), int(seed),
                            callback, should_stop, what)
        return composite(frames, out.clone(), masks)

    def _run(self, frames, masks, paste, paste_level, sigmas, first, guidance_scale, seed, callback, should_stop,
             what) -> Tensor:
        import comfy.sample
        import comfy.samplers

        count, height, width = frames.shape[:3]
        x, m = video_to_model_size(frames, masks, paste, self.multiple, self.temporal)
        mh, mw = x.shape[-2:]
        video = x.permute(0, 2, 3, 1).contiguous()             # [T',H',W',3] 0..1
        hole = (m[:, 0] > 0.5).float()                           # [T',H',W']
        clean = self.vae.encode(video).float().cpu()             # raw latents [1,16,F,h,w]
        if clean.dim() != 5:
            raise ValueError(f"{what}: the VAE returned latents of shape {tuple(clean.shape)}; expected video "
                             f"latents [1,C,F,h,w] (a Wan 2.1 VAE)")
        positive, negative = self._conditioning(video, hole, clean.shape)
        sigma = float(sigmas[first])
        noise = torch.randn(clean.shape, generator=cpu_generator(seed), dtype=torch.float32)
        noise_mask = None
        level = None
        if paste is not None:
            hole_cells = _cell_mask(hole, clean.shape).bool()
            paste_cells = _cell_mask((m[:, 1] > 0.5).float(), clean.shape).bool()
            level = sigma if paste_level is None else min(paste_level, sigma)
            processed = self.model.model.process_latent_in(clean.clone())
            noise = eq7_noise(noise, processed, sigma, paste_cells, level)
            noise_mask = (hole_cells | paste_cells).float()[None, None]
        run = sigmas[first:]
        logger.info("native %s refinement from noise level %.4f: %d of %d steps (%s, %s)%s", self.family, sigma,
                    len(run) - 1, len(sigmas) - 1, self.sampler_name, self.scheduler,
                    "" if level is None else f", pasted region at {level:.4f}")
        sampler = comfy.samplers.sampler_object(self.sampler_name)
        samples = comfy.sample.sample_custom(
            self.model, noise, _cfg(guidance_scale), sampler, run, positive, negative, clean, noise_mask=noise_mask,
            callback=_step_callback(len(run) - 1, callback, should_stop, what), disable_pbar=True, seed=seed)
        decoded = self.vae.decode(samples).float().cpu()
        out = decoded.reshape(-1, *decoded.shape[-3:])[:count]   # [T,H',W',3]
        out = out.permute(0, 3, 1, 2)
        if (mh, mw) != (height, width):
            out = F.interpolate(out, (height, width), mode="bilinear", align_corners=False)
        return out.permute(0, 2, 3, 1).clamp(0, 1).contiguous()

    def _conditioning(self, video: Tensor, hole: Tensor, latent_shape) -> tuple[list, list]:
        """positive / negative with the model's inpainting inputs (VACE control or InP concat latents)."""
        frames_f, lh, lw = (int(v) for v in latent_shape[-3:])
        if self.family == "wan_vace":
            # VACE: inactive (holes blanked to grey) and reactive (holes only) videos, mask packed per 8x8 cell
            centred = video - 0.5
            mk = hole[..., None]
            inactive = self.vae.encode(centred * (1 - mk) + 0.5).float().cpu()
            reactive = self.vae.encode(centred * mk + 0.5).float().cpu()
            control = torch.cat([inactive, reactive], dim=1)
            t = hole.shape[0]
            packed = hole.view(t, lh, 8, lw, 8).permute(2, 4, 0, 1, 3).reshape(64, t, lh, lw)
            packed = F.interpolate(packed[None], size=(frames_f, lh, lw), mode="nearest-exact")
            values = {"vace_frames": [control], "vace_mask": [packed], "vace_strength": [float(self.vace_strength)]}
        else:
            # InP / I2V: masked video latents + 4 mask channels per latent frame (frame 0 owns 4 video frames)
            masked = video * (1 - hole[..., None]) + 0.5 * hole[..., None]
            image = self.vae.encode(masked).float().cpu()
            cells = F.max_pool2d(hole[:, None], 8)[:, 0]                       # [T',h,w]
            cells = torch.cat([cells[:1].expand(self.temporal, -1, -1), cells[1:]])
            mask = cells.view(1, frames_f, self.temporal, lh, lw).transpose(1, 2)
            values = {"concat_latent_image": image, "concat_mask": mask}
            if self.clip_vision_output is not None:
                values["clip_vision_output"] = self.clip_vision_output
        return _with_values(self.positive, values), _with_values(self.negative, values)


# --------------------------------------------------------------------------- image inpainting


@dataclass
class NativeImageInpainter:
    """SD 1.x / 2.x / SDXL (inpainting) image inpainting through ComfyUI's KSampler.

    A 9-channel inpainting UNet gets ComfyUI's inpaint conditioning (masked-image latents + mask, as
    core InpaintModelConditioning makes them); a 4-channel model is run with the denoise mask alone.
    """

    model: object
    vae: object
    positive: list
    negative: list
    sampler_name: str = "euler"
    scheduler: str = "normal"
    family: str = field(init=False)

    multiple = 8

    def __post_init__(self) -> None:
        self.family = check_image_inpaint_inputs("NativeImageInpainter", self.model, self.vae, self.positive,
                                                 self.negative)

    def offload(self) -> None:
        """ComfyUI's model manager decides where the networks live; nothing to do."""

    @property
    def inpainting_unet(self) -> bool:
        unet = self.model.model.model_config.unet_config
        return int(unet.get("in_channels") or 4) > int(self.model.model.latent_format.latent_channels)

    def inpaint(self, image: Tensor, mask: Tensor, prompt: str = "", negative_prompt: str = "",
                strength: float = 1.0, steps: int = 30, guidance_scale: float = 7.5, seed: int = 0,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None) -> Tensor:
        """Same contract as :meth:`backends.inpaint.ImageInpainter.inpaint` (text from the CONDITIONING)."""
        what = "NativeImageInpainter.inpaint"
        image, mask = check_frames_and_masks(image, mask, what, video=False)
        check_sampling(what, strength, steps, guidance_scale)
        if not (mask > 0).any() or float(strength) <= 0:
            return image.clone()
        with torch.inference_mode():
            out = self._run(image, mask, strength, steps, guidance_scale, seed, callback, should_stop, what)
        return composite(image, out.clone(), mask)

    def _run(self, image, mask, strength, steps, guidance_scale, seed, callback, should_stop, what) -> Tensor:
        import comfy.sample

        height, width = image.shape[:2]
        mh, mw = model_size(height, width, self.multiple)
        x = F.interpolate(image.permute(2, 0, 1)[None], (mh, mw), mode="bilinear", align_corners=False)
        m = F.interpolate(mask[None, None], (mh, mw), mode="nearest")
        pixels = x.permute(0, 2, 3, 1).clamp(0, 1).contiguous()             # [1,H,W,3]
        latent = self.vae.encode(pixels).float().cpu()
        positive, negative = self.positive, self.negative
        if self.inpainting_unet:
            hard = (m[:, 0] > 0.5).float()[..., None]
            masked = (pixels - 0.5) * (1 - hard) + 0.5
            values = {"concat_latent_image": self.vae.encode(masked).float().cpu(), "concat_mask": m}
            positive, negative = _with_values(positive, values), _with_values(negative, values)
        noise = comfy.sample.prepare_noise(latent, int(seed))
        total = max(int(int(steps) * float(strength)), 1)
        samples = comfy.sample.sample(
            self.model, noise, int(steps), _cfg(guidance_scale), self.sampler_name, self.scheduler, positive, negative,
            latent, denoise=float(strength), noise_mask=m, callback=_step_callback(total, callback, should_stop, what),
            disable_pbar=True, seed=int(seed))
        out = self.vae.decode(samples).float().cpu().reshape(-1, mh, mw, 3)[:1].permute(0, 3, 1, 2)
        if (mh, mw) != (height, width):
            out = F.interpolate(out, (height, width), mode="bilinear", align_corners=False)
        return out[0].permute(1, 2, 0).clamp(0, 1)


# --------------------------------------------------------------------------- SDS guidance


def _one_eval_sampler(sigma: Tensor):
    """A ComfyUI Sampler that evaluates the guided model once at per-item ``sigma`` and keeps ``(x, D(x))``."""
    import comfy.samplers

    class OneEval(comfy.samplers.Sampler):
        result = None

        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            s = sigma.to(noise.device, noise.dtype)
            x = latent_image + noise * s.view(-1, *([1] * (noise.dim() - 1)))
            denoised = model_wrap(x, s, **extra_args)
            self.result = (x.float(), denoised.float())
            return latent_image

    return OneEval()


class _NativeSDS:
    """SDS through a ComfyUI MODEL; subclasses give the conditioning of a batch."""

    model: object
    vae: object
    guidance_scale: float
    seed: int
    t_range: tuple[float, float]
    resolution: int

    def _init_sds(self) -> None:
        self._generator = torch.Generator().manual_seed(int(self.seed))
        self._encoder = None
        self._embeds: dict = {}

    def reseed(self, seed: int | None = None) -> None:
        self._generator.manual_seed(int(self.seed if seed is None else seed))

    def offload(self) -> None:
        self._encoder = None
        self._embeds.clear()

    def _differentiable_encoder(self, device: torch.device) -> torch.nn.Module:
        """A copy of the VAE's first stage with plain tensors (ComfyUI's may be inference tensors)."""
        if self._encoder is None:
            with torch.inference_mode(False):
                stage = copy.deepcopy(self.vae.first_stage_model)
                for module in stage.modules():
                    for name, p in list(module.named_parameters(recurse=False)):
                        setattr(module, name, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
                    for name, b in list(module.named_buffers(recurse=False)):
                        module._buffers[name] = b.detach().clone()
            self._encoder = stage.eval().float()
        return self._encoder.to(device)

    def _latents(self, x: Tensor) -> Tensor:
        """Scaled (processed) latents of ``x [B,3,R,R]`` in [-1, 1], differentiable w.r.t. ``x``."""
        encoder = self._differentiable_encoder(x.device)
        raw = encoder.encode(x.float())
        return self.model.model.process_latent_in(raw)

    def _sds(self, latents: Tensor, positive, negative) -> Tensor:
        import comfy.sample

        batch = latents.shape[0]
        sampling = self.model.get_model_object("model_sampling")
        steps = sample_timesteps(self._generator, batch, self._step_ratio, len(sampling.sigmas), self.t_range)
        sigma = sampling.sigmas.float().cpu()[steps]
        noise = torch.randn(latents.shape, generator=self._generator)
        sampler = _one_eval_sampler(sigma)
        raw = self.model.model.process_latent_out(latents.detach().float().cpu())
        with torch.inference_mode():
            comfy.sample.sample_custom(self.model, noise, float(self.guidance_scale), sampler,
                                       torch.stack([sigma.max(), torch.zeros(())]), positive, negative, raw,
                                       disable_pbar=True, seed=int(self.seed))
        x, denoised = sampler.result
        s = sigma.view(-1, 1, 1, 1).to(x.device)
        eps = (x - denoised) / s
        w = s**2 / (1 + s**2)
        grad = torch.nan_to_num(w * (eps - noise.to(x.device))).to(latents.device)
        return sds_surrogate(latents.float(), grad)


@dataclass
class NativeZero123Guidance(_NativeSDS):
    """Stable Zero123 SDS through ComfyUI (condition as core StableZero123_Conditioning builds it, per camera).

    Args mirror :class:`backends.zero123.Zero123Guidance`; the camera embedding is Stable Zero123's
    (``camera_embedding(..., variant="stable")``).
    """

    model: object
    clip_vision: object
    vae: object
    condition_image: Tensor
    condition_elevation: float = 0.0
    condition_azimuth: float = 0.0
    condition_radius: float = 2.5
    guidance_scale: float = 5.0
    seed: int = 0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    t_range: tuple[float, float] = (0.02, 0.98)
    resolution: int = 256

    def __post_init__(self) -> None:
        check_zero123_inputs("NativeZero123Guidance", self.model, self.clip_vision, self.vae)
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"NativeZero123Guidance: guidance_scale must be a finite number >= 0, got "
                             f"{self.guidance_scale}")
        self._frames = condition_frames(self.condition_image)   # [T,3,H,W]
        self._init_sds()

    def _condition(self, index: int) -> tuple[Tensor, Tensor]:
        if index not in self._embeds:
            return self._encode_condition(index)
        return self._embeds[index]

    @torch.no_grad()
    def _encode_condition(self, index: int) -> tuple[Tensor, Tensor]:
        frame = self._frames[index : index + 1].permute(0, 2, 3, 1)     # [1,H,W,3]
        embeds = self.clip_vision.encode_image(frame).image_embeds.float().cpu()   # [1,768]
        pixels = F.interpolate(frame.permute(0, 3, 1, 2), (self.resolution, self.resolution), mode="bilinear",
                               align_corners=False).permute(0, 2, 3, 1)
        self._embeds[index] = (embeds, self.vae.encode(pixels).float().cpu())
        return self._embeds[index]

    def sds_loss(self, images: Tensor, cameras: Cameras, t: float, step_ratio: float) -> Tensor:
        what = "NativeZero123Guidance.sds_loss"
        x = to_model_images(images, self.resolution, what)
        batch = x.shape[0]
        if len(cameras) != batch:
            raise ValueError(f"{what}: {batch} images but {len(cameras)} cameras")
        frames = self._frames.shape[0]
        index = int(round(min(max(float(t), 0.0), 1.0) * (frames - 1))) if frames > 1 else 0
        embeds, latent = self._condition(index)
        el, az, radius = orbit_angles(cameras, self.center)
        cam = camera_embedding(el.float().cpu(), az.float().cpu(), radius.float().cpu(),
                               (self.condition_elevation, self.condition_azimuth, self.condition_radius), "stable")
        cond = torch.cat([embeds.expand(batch, -1), cam], dim=-1)[:, None]                # [B,1,772]
        positive = [[cond, {"concat_latent_image": latent}]]
        negative = [[torch.zeros(batch, 1, embeds.shape[-1]), {"concat_latent_image": torch.zeros_like(latent)}]]
        self._step_ratio = float(step_ratio)
        return self._sds(self._latents(x), positive, negative)


@dataclass
class NativeSDGuidance(_NativeSDS):
    """Text SDS (DreamFusion) with an SD MODEL + VAE + CONDITIONING through ComfyUI."""

    model: object
    vae: object
    positive: list
    negative: list
    guidance_scale: float = 100.0
    seed: int = 0
    t_range: tuple[float, float] = (0.02, 0.98)
    resolution: int = 512

    def __post_init__(self) -> None:
        check_sd_guidance_inputs("NativeSDGuidance", self.model, self.vae, self.positive, self.negative)
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"NativeSDGuidance: guidance_scale must be a finite number >= 0, got "
                             f"{self.guidance_scale}")
        self._init_sds()

    def sds_loss(self, images: Tensor, cameras: Cameras, t: float, step_ratio: float) -> Tensor:
        x = to_model_images(images, self.resolution, "NativeSDGuidance.sds_loss")
        self._step_ratio = float(step_ratio)
        return self._sds(self._latents(x), self.positive, self.negative)
