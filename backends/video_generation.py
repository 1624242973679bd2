# SPDX-License-Identifier: Apache-2.0
"""Reference-video generation with diffusers pipelines: Wan2.1 I2V, CogVideoX T2V / I2V, Stable Video Diffusion.

Public API:
    VideoGenerator              one loaded pipeline behind ``generate(image, prompt, ...) -> [T,H,W,3]``
    load_video_generator(path, dtype)   validate a diffusers folder and return its (cached) generator
    check_video_folder(path)    the pipeline family of a folder, or ValueError naming what is missing
    prepare_image(image, width, height)  the explicit crop / resize policy for the condition image
    GenerationInterrupted       raised from inside the denoising loop when ``should_stop()`` turns true
    PIPELINE_FAMILIES           ``model_index.json`` ``_class_name`` -> family name
    clear_cache()               forget every cached generator

Design notes:
    The pipeline class is read from ``model_index.json`` (``_class_name``), never guessed from the
    folder name; each family lists the components it needs and the folder is checked before
    anything is loaded (every component's config file, every ``.safetensors`` header and length via
    :func:`backends.loading.check_weights`), so a broken download fails with a message naming the
    folder and the file. Loading goes through ``DiffusionPipeline.from_pretrained`` with
    ``local_files_only=True``: nothing is ever fetched.

    Sizes: ``width`` / ``height`` / ``num_frames`` of 0 mean the model's native values (Wan2.1 480P:
    832x480, 81 frames, 16 fps; CogVideoX: the transformer's sample size x 8, its sample frames, 8 fps;
    SVD: the UNet's sample size x 8, its ``num_frames``, 7 fps). Given values are rounded *down* to
    the multiple the model needs (Wan / CogVideoX: 16 px; SVD: VAE factor x UNet down-sampling, at least 8) and
    frame counts to the nearest ``4k + 1`` for the causal video VAEs (Wan, CogVideoX); a rounding is
    logged. The output always has exactly the size and frame count that were generated.

    Condition image policy: the image ``[H,W,3]`` is centre-cropped to the target aspect ratio
    (the largest centred window with ``width/height``), then resized to exactly ``width x height``
    with antialiased bilinear filtering, then handed to the pipeline as an 8-bit PIL image (the
    pipelines' own preprocessing then sees an image of the right size and does not stretch it).

    Guidance: Wan / CogVideoX use ``guidance_scale`` as classifier-free guidance (CFG off at <= 1);
    SVD ramps its guidance over the frames from 1 to ``guidance_scale`` (its ``max_guidance_scale``).
    ``fps`` conditions SVD (micro-conditioning) and is otherwise only passed on with the frames.
    SVD and the I2V families need an image; CogVideoX T2V ignores one (logged); SVD has no prompt.

    Randomness: one CPU ``torch.Generator`` seeded with ``seed`` drives all noise, so a seed gives the
    same video on any device (up to the device's arithmetic). Progress and interruption use
    ``callback_on_step_end``: the callback reports ``(step, total)`` and raises
    :class:`GenerationInterrupted` when ``should_stop()`` is true, which ends the loop at once (no
    VAE decode of a half-denoised video). Pipelines are cached per (folder, dtype, file stamps):
    one load serves every call. ``generate`` moves the pipeline to the requested device and, with
    ``offload="after_use"``, back to the CPU afterwards; ``offload="model_cpu_offload"`` uses
    diffusers' ``enable_model_cpu_offload`` on CUDA (needs ``accelerate``; each sub-model visits the GPU
    only while it runs, for GPUs too small for the 14B Wan transformer plus its T5 encoder).
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .loading import check_component_weights, file_stamps, load_diffusers_model, missing_config_files, needs_manual_load
from .memory import park, pipeline_modules, place

__all__ = [
    "VideoGenerator",
    "load_video_generator",
    "check_video_folder",
    "prepare_image",
    "GenerationInterrupted",
    "PIPELINE_FAMILIES",
    "OFFLOAD_MODES",
    "clear_cache",
]

logger = logging.getLogger(__name__)

PIPELINE_FAMILIES: dict[str, str] = {
    "WanImageToVideoPipeline": "wan_i2v",
    "CogVideoXPipeline": "cogvideox_t2v",
    "CogVideoXImageToVideoPipeline": "cogvideox_i2v",
    "StableVideoDiffusionPipeline": "svd",
}
_COMPONENTS: dict[str, tuple[str, ...]] = {
    "wan_i2v": ("tokenizer", "text_encoder", "vae", "scheduler", "image_encoder", "image_processor", "transformer"),
    "cogvideox_t2v": ("tokenizer", "text_encoder", "vae", "scheduler", "transformer"),
    "cogvideox_i2v": ("tokenizer", "text_encoder", "vae", "scheduler", "transformer"),
    "svd": ("vae", "image_encoder", "unet", "scheduler", "feature_extractor"),
}
_NEEDS_IMAGE = {"wan_i2v", "cogvideox_i2v", "svd"}
OFFLOAD_MODES = ("after_use", "model_cpu_offload", "keep")
_CACHE_SIZE = 1
_CACHE: OrderedDict[tuple, "VideoGenerator"] = OrderedDict()


class GenerationInterrupted(RuntimeError):
    """The user asked to stop while the video was being denoised."""


# --------------------------------------------------------------------------- folder checks


def check_video_folder(path: str | Path) -> str:
    """Validate a diffusers video-model folder and return its family (a value of :data:`PIPELINE_FAMILIES`).

    Raises:
        ValueError: not a folder, no / unreadable ``model_index.json``, an unsupported pipeline class,
            a component's config file missing, or a missing / corrupt / truncated safetensors file;
            the message names the folder, the file and what was expected.
    """
    path = Path(path)
    what = "video model"
    if not path.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is not a folder; expected a diffusers pipeline folder with "
                         f"model_index.json")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"{what}: {str(path)!r} has no model_index.json; expected a diffusers pipeline folder "
                         f"(e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers) with model_index.json and one sub-folder per "
                         f"component")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        class_name = index["_class_name"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: unreadable {str(index_file)!r} ({type(exc).__name__}: {exc})") from None
    family = PIPELINE_FAMILIES.get(class_name)
    if family is None:
        raise ValueError(f"{what}: {str(path)!r} holds a {class_name!r}; supported pipelines are "
                         f"{sorted(PIPELINE_FAMILIES)}")
    components = _COMPONENTS[family]
    missing = missing_config_files(path, components)
    if missing:
        raise ValueError(f"{what}: {class_name} folder {str(path)!r} is missing {missing}; expected the diffusers "
                         f"layout with sub-folders {list(components)}")
    check_component_weights(path, components, what)
    return family


# --------------------------------------------------------------------------- image policy


def prepare_image(image: Tensor, width: int, height: int):
    """Centre-crop ``image [H,W,3]`` (0..1) to the aspect ``width/height``, resize to exactly that size.

    Returns:
        a PIL RGB image of ``width x height`` (8-bit), ready for any of the pipelines.
    """
    from PIL import Image

    h, w = image.shape[0], image.shape[1]
    target = width / height
    if w / h > target:  # too wide: crop the sides
        cw, ch = max(1, round(h * target)), h
    else:  # too tall: crop top and bottom
        cw, ch = w, max(1, round(w / target))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = image[top : top + ch, left : left + cw].permute(2, 0, 1)[None].float()
    if (ch, cw) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    array = (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def _check_image(image, what: str) -> Tensor:
    if not isinstance(image, Tensor):
        raise ValueError(f"{what}: image must be a tensor [H,W,3], got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"{what}: image must be one RGB image [H,W,3] with values 0..1, got shape "
                         f"{tuple(image.shape)}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"{what}: image of {image.shape[1]}x{image.shape[0]} pixels is too small (at least 8x8)")
    if not torch.isfinite(image).all():
        raise ValueError(f"{what}: image holds NaN or inf values")
    return image.detach().float().cpu()


# --------------------------------------------------------------------------- generator


class VideoGenerator:
    """A loaded diffusers video pipeline of one family with one ``generate`` interface.

    Attributes:
        path: the model folder.
        family: "wan_i2v", "cogvideox_t2v", "cogvideox_i2v" or "svd".
        dtype: weight dtype.
        pipe: the diffusers pipeline (on the CPU between calls unless ``offload="keep"``).
    """

    def __init__(self, path: Path, family: str, dtype: torch.dtype, pipe):
        self.path, self.family, self.dtype, self.pipe = Path(path), family, dtype, pipe
        self._offload_hooked = False
        pipe.set_progress_bar_config(disable=True)

    @property
    def needs_image(self) -> bool:
        return self.family in _NEEDS_IMAGE

    @property
    def uses_prompt(self) -> bool:
        return self.family != "svd"

    # ----------------------------------------------------------------- native sizes

    def native(self) -> tuple[int, int, int, float]:
        """``(width, height, num_frames, fps)`` the model was trained for."""
        p = self.pipe
        if self.family == "wan_i2v":
            if "720" in self.path.name:
                return 1280, 720, 81, 16.0
            return 832, 480, 81, 16.0
        if self.family.startswith("cogvideox"):
            c = p.transformer.config
            s = p.vae_scale_factor_spatial
            return int(c.sample_width * s), int(c.sample_height * s), int(c.sample_frames), 8.0
        c = p.unet.config
        size = int(c.sample_size * p.vae_scale_factor)
        return size, size, int(c.num_frames), 7.0

    def _multiple(self) -> int:
        p = self.pipe
        if self.family == "wan_i2v":
            return int(p.vae_scale_factor_spatial * p.transformer.config.patch_size[1])
        if self.family.startswith("cogvideox"):
            return int(p.vae_scale_factor_spatial * p.transformer.config.patch_size)
        # the SVD pipeline itself also insists on multiples of 8
        return math.lcm(8, int(p.vae_scale_factor * 2 ** (len(p.unet.config.block_out_channels) - 1)))

    def _frame_count(self, n: int) -> int:
        if self.family == "svd":
            return max(1, n)
        k = 4 if self.family == "wan_i2v" else int(self.pipe.vae_scale_factor_temporal)
        valid = max(1, int(round((n - 1) / k)) * k + 1)
        if self.family.startswith("cogvideox"):
            pt = self.pipe.transformer.config.patch_size_t
            if pt:  # CogVideoX 1.5: latent frames must be a multiple of patch_size_t
                latent = (valid - 1) // k + 1
                latent = max(pt, int(math.ceil(latent / pt)) * pt)
                valid = (latent - 1) * k + 1
        return valid

    def resolve_size(self, width: int, height: int, num_frames: int) -> tuple[int, int, int]:
        """Replace 0 by native values and round to what the model accepts (logged when changed)."""
        nw, nh, nf, _ = self.native()
        m = self._multiple()
        w, h, f = int(width) or nw, int(height) or nh, int(num_frames) or nf
        rw, rh, rf = max(m, w // m * m), max(m, h // m * m), self._frame_count(f)
        if (rw, rh, rf) != (w, h, f):
            logger.warning("video model %s: size %dx%d, %d frames rounded to %dx%d, %d frames (width/height multiple "
                           "of %d%s)", self.path.name, w, h, f, rw, rh, rf, m,
                           "" if self.family == "svd" else ", frames 4k+1")
        return rw, rh, rf

    # ----------------------------------------------------------------- placement

    def _place(self, device: torch.device, offload: str) -> None:
        if offload == "model_cpu_offload" and device.type == "cuda":
            if not self._offload_hooked:
                try:
                    self.pipe.enable_model_cpu_offload(device=device)
                    self._offload_hooked = True
                except (ImportError, ValueError, RuntimeError) as exc:
                    logger.warning("video model: enable_model_cpu_offload unavailable (%s); moving the whole "
                                   "pipeline to %s instead", exc, device)
            if self._offload_hooked:
                return
        if self._offload_hooked:
            self.pipe.remove_all_hooks()
            self._offload_hooked = False
        place(pipeline_modules(self.pipe), device)

    def offload(self) -> None:
        """Park the weights on the CPU (no-op under diffusers' model CPU offload, which does it itself)."""
        if not self._offload_hooked:
            park(pipeline_modules(self.pipe))

    # ----------------------------------------------------------------- generation

    def _wan_prompt(self, args: dict, device: torch.device) -> None:
        """Replace Wan's text prompts by UMT5 embeddings computed here.

        The pipeline's own prompt cleaning needs ``ftfy``; this encodes exactly as the pipeline does
        (padding to ``max_sequence_length``, embeddings past each prompt's length zeroed) after a
        light cleaning (HTML entities, runs of white space), so ``ftfy`` is not required.
        """
        p, length = self.pipe, args.pop("max_sequence_length")
        texts = [args.pop("prompt"), args.pop("negative_prompt")]
        texts = [re.sub(r"\s+", " ", html.unescape(html.unescape(t))).strip() for t in texts]
        tokens = p.tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        encoder_device = next(p.text_encoder.parameters()).device
        if self._offload_hooked:
            encoder_device = device
        hidden = p.text_encoder(tokens.input_ids.to(encoder_device),
                                tokens.attention_mask.to(encoder_device)).last_hidden_state
        keep = tokens.attention_mask.to(hidden.device).gt(0)[..., None]
        hidden = torch.where(keep, hidden, torch.zeros_like(hidden)).to(device, p.transformer.dtype)
        args["prompt_embeds"] = hidden[:1]
        args["negative_prompt_embeds"] = hidden[1:] if args["guidance_scale"] > 1.0 else None

    def generate(self, image: Tensor | None, prompt: str, negative_prompt: str = "", num_frames: int = 0,
                 fps: float = 0.0, steps: int = 30, guidance_scale: float = 5.0, seed: int = 0, width: int = 0,
                 height: int = 0, callback: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, device: torch.device | str | None = None,
                 offload: str = "after_use") -> Tensor:
        """Generate a video.

        Args:
            image: condition image ``[H,W,3]`` (or ``[1,H,W,3]``) float 0..1, or None (text-to-video).
            prompt / negative_prompt: text conditioning (ignored by SVD).
            num_frames, width, height: 0 = native; rounded to valid values (see the module notes).
            fps: frame rate (SVD conditioning); 0 = native.
            steps: denoising steps.
            guidance_scale: CFG scale (SVD: the maximum of its per-frame ramp).
            seed: seeds the CPU generator of all noise.
            callback: ``callback(step, total)`` after every denoising step.
            should_stop: polled after every step; True raises :class:`GenerationInterrupted`.
            device: where to run (default: CUDA if available, else CPU); looked up by the caller per call.
            offload: one of :data:`OFFLOAD_MODES`.

        Returns:
            frames ``[T,H,W,3]`` float32 in 0..1 on the CPU.

        Raises:
            ValueError: bad arguments, or an image missing for an image-to-video model.
            GenerationInterrupted: ``should_stop()`` became true.
        """
        what = f"video model {self.path.name!r} ({self.family})"
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"{what}: offload must be one of {OFFLOAD_MODES}, got {offload!r}")
        if int(steps) < 1:
            raise ValueError(f"{what}: steps must be >= 1, got {steps}")
        if image is None and self.needs_image:
            raise ValueError(f"{what}: this is an image-to-video model; connect an image")
        if image is not None and not self.needs_image:
            logger.warning("%s is text-to-video: the image input is ignored", what)
            image = None
        if image is not None:
            image = _check_image(image, what)
        if prompt and not self.uses_prompt:
            logger.warning("%s has no text conditioning: the prompt is ignored", what)
        w, h, n = self.resolve_size(width, height, num_frames)
        fps = float(fps) if fps and fps > 0 else self.native()[3]
        device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        generator = torch.Generator("cpu").manual_seed(int(seed) % (2**63))
        total = int(steps)

        def on_step_end(pipe, i, t, kwargs):
            if callback is not None:
                callback(i + 1, total)
            if should_stop is not None and should_stop():
                raise GenerationInterrupted(f"{what}: interrupted at step {i + 1}/{total}")
            return {}

        args = dict(num_frames=n, width=w, height=h, num_inference_steps=total, generator=generator,
                    output_type="np", callback_on_step_end=on_step_end, return_dict=True)
        if image is not None:
            args["image"] = prepare_image(image, w, h)
        if self.family == "svd":
            args.update(max_guidance_scale=float(guidance_scale), min_guidance_scale=min(1.0, float(guidance_scale)),
                        fps=max(1, int(round(fps))), decode_chunk_size=8)
        else:
            args.update(prompt=str(prompt), negative_prompt=str(negative_prompt or ""),
                        guidance_scale=float(guidance_scale))
            if self.family == "wan_i2v":
                length = int(min(512, self.pipe.tokenizer.model_max_length))
                args["max_sequence_length"] = length
            else:
                args["max_sequence_length"] = int(self.pipe.transformer.config.max_text_seq_length)
        self._place(device, offload)
        try:
            with torch.inference_mode():
                if self.family == "wan_i2v":
                    self._wan_prompt(args, device)
                out = self.pipe(**args)
        finally:
            if offload == "after_use":
                self.offload()
        frames = torch.from_numpy(out.frames[0]).float()
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{what}: the pipeline returned frames of shape {tuple(frames.shape)}, expected "
                             f"[T,H,W,3]")
        if not torch.isfinite(frames).all():
            bad = int((~torch.isfinite(frames)).flatten(1).any(1).sum())
            raise ValueError(f"{what}: the pipeline returned {bad} of {frames.shape[0]} frames with NaN or inf "
                             "values (weights or dtype overflowed; try dtype float32 or bf16 in the loader)")
        if frames.shape[0] != n:
            logger.warning("%s: asked for %d frames, the pipeline returned %d; passing on what it returned",
                           what, n, frames.shape[0])
        return frames.clamp(0.0, 1.0).contiguous()


# --------------------------------------------------------------------------- loading


def load_video_generator(path: str | Path, dtype: torch.dtype = torch.float32) -> VideoGenerator:
    """Load (or return the cached) :class:`VideoGenerator` of a diffusers folder, on the CPU.

    Raises:
        ValueError: the folder is incomplete or corrupt (see :func:`check_video_folder`), or a
            library failed to read a component (the message names it).
    """
    path = Path(path).resolve()
    family = check_video_folder(path)
    key = (str(path), str(dtype), file_stamps(path))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    while _CACHE:  # one big video model at a time: drop the old one before loading the next
        _CACHE.popitem(last=False)
    import diffusers

    class_name = next(k for k, v in PIPELINE_FAMILIES.items() if v == family)
    cls = getattr(diffusers, class_name)
    try:
        overrides = _manual_components(path, dtype)
        pipe = cls.from_pretrained(str(path), dtype=dtype, local_files_only=True, **overrides)
    except Exception as exc:  # diffusers / transformers / safetensors raise many types for broken files
        raise ValueError(f"video model: could not load {class_name} from {str(path)!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    generator = VideoGenerator(path, family, dtype, pipe)
    _CACHE[key] = generator
    logger.info("video model %s loaded (%s, %s)", path, class_name, dtype)
    return generator


def _manual_components(path: Path, dtype: torch.dtype) -> dict:
    """Diffusers models that ``from_pretrained`` cannot read without ``accelerate``, loaded by hand.

    Models with ``_keep_in_fp32_modules`` (the Wan transformer) demand ``low_cpu_mem_usage``, which
    needs ``accelerate``; without it they are built by :func:`backends.loading.load_diffusers_model`
    (config, then every weight of their safetensors files, those modules kept in float32).
    """
    import diffusers

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    overrides = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] != "diffusers":
            continue
        cls = getattr(diffusers, str(spec[1]), None)
        if cls is not None and needs_manual_load(cls):
            overrides[name] = load_diffusers_model(cls, path / name, dtype)
    return overrides


def clear_cache() -> None:
    """Forget every cached generator."""
    _CACHE.clear()
