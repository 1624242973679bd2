# SPDX-License-Identifier: Apache-2.0
"""Gen4D_VideoModelLoader and Gen4D_I2VReference: the reference video of a 4D scene from image and/or text.

Public API:
    VideoModelLoader    node ``Gen4D_VideoModelLoader``: diffusers folder under models/diffusers -> GEN4D_VIDEO_MODEL
    I2VReference        node ``Gen4D_I2VReference``: model + prompt (+ image) -> IMAGE frames, FLOAT fps
    VideoModel          the GEN4D_VIDEO_MODEL payload: a cached generator plus the device / dtype / offload choice
    clear_cache()       forget every loaded video pipeline

Design notes:
    The loader checks the folder (model_index.json, every component's config, safetensors headers)
    and loads the pipeline once per (folder, dtype, file stamps); the device is looked up when
    Gen4D_I2VReference runs ("auto" = ComfyUI's torch device). "auto" dtype is bf16 on CUDA where
    supported, fp32 otherwise. After a run the pipeline is moved back to the CPU ("after_use"), or
    with "model_cpu_offload" diffusers' ``enable_model_cpu_offload`` keeps only the running
    sub-model on the GPU (needs ``accelerate``; slower, for GPUs that cannot hold the whole model).

    The stage is replaceable: any IMAGE batch of video frames works downstream, e.g. the output of
    ComfyUI's core Wan / CogVideoX / SVD nodes (WanImageToVideo + KSampler + VAE Decode, SVD_img2vid_Conditioning)
    or community wrappers (ComfyUI-WanVideoWrapper, ComfyUI-CogVideoXWrapper). Width, height and
    frame count of 0 mean the model's native values; the condition image is centre-cropped to the
    output aspect ratio and then resized (never stretched).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..backends.memory import require
from ..backends.model_folders import preferred_dtype, resolve_model
from ..core.formats.convert import check_image, to_image
from . import host
from . import types as T
from .placement import DEVICES, DTYPES, device_in, dtype_in, model_in
from .widgets import combo_in, float_in, int_in, seed_in, socket_in, str_in

__all__ = ["VideoModelLoader", "I2VReference", "VideoModel", "clear_cache", "NODES"]

logger = logging.getLogger(__name__)

OFFLOAD = ("after_use", "model_cpu_offload", "keep")


@dataclass
class VideoModel:
    """GEN4D_VIDEO_MODEL payload: ``generator`` (backends.video_generation.VideoGenerator) and placement."""

    generator: object
    device: str = "auto"
    offload: str = "after_use"

    def torch_device(self) -> torch.device:
        """Where to run, looked up now (ComfyUI's device can change between runs)."""
        return host.compute_device() if self.device == "auto" else torch.device(self.device)


def clear_cache() -> None:
    """Forget every loaded video pipeline."""
    from ..backends.video_generation import clear_cache as clear

    clear()


class VideoModelLoader:
    DESCRIPTION = (
        "Loads a diffusers video pipeline from ComfyUI's models/diffusers folder (or an absolute path to a local "
        "diffusers folder): Wan2.1 I2V (e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers), CogVideoX T2V / I2V or Stable "
        "Video Diffusion. The pipeline type is read from the folder's model_index.json. Nothing is downloaded."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.VIDEO_MODEL,)
    RETURN_NAMES = ("video_model",)
    OUTPUT_TOOLTIPS = ("The video model, for Gen4D I2V Reference.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("video", "Diffusers pipeline folder under models/diffusers (model_index.json "
                                  "plus one sub-folder per component)."),
                "device": device_in(),
                "dtype": dtype_in(),
                "offload": combo_in(OFFLOAD, "'after_use': move the model back to the CPU after each run; "
                                    "'model_cpu_offload': only the running sub-model sits on the GPU (needs "
                                    "accelerate; for GPUs that cannot hold the whole model); 'keep': stay on the GPU."),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model=None):
        if model is None:
            return True
        try:
            resolve_model("video", model, required=("model_index.json",))
        except ValueError as exc:
            return f"Gen4D_VideoModelLoader: {exc}"
        return True

    def load(self, model, device="auto", dtype="auto", offload="after_use"):
        from ..backends.video_generation import load_video_generator

        if device not in DEVICES:
            raise ValueError(f"Gen4D_VideoModelLoader: device must be one of {DEVICES}, got {device!r}")
        if dtype not in DTYPES:
            raise ValueError(f"Gen4D_VideoModelLoader: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        if offload not in OFFLOAD:
            raise ValueError(f"Gen4D_VideoModelLoader: offload must be one of {OFFLOAD}, got {offload!r}")
        path = resolve_model("video", model, required=("model_index.json",))
        target = host.compute_device() if device == "auto" else torch.device("cpu")
        weights_dtype = DTYPES[dtype] or preferred_dtype(target)
        try:
            generator = load_video_generator(path, weights_dtype)
        except ValueError as exc:
            raise ValueError(f"Gen4D_VideoModelLoader: {exc}") from exc
        return (VideoModel(generator, device, offload),)


class I2VReference:
    DESCRIPTION = (
        "Generates the reference video of a 4D scene from an image and/or a prompt with a loaded video model "
        "(Wan2.1 I2V, CogVideoX, SVD). The frames come out as an IMAGE batch. Any ComfyUI video output can replace "
        "this node: core Wan / CogVideoX / SVD nodes or community wrappers, decoded to IMAGE frames."
    )
    CATEGORY = f"{T.CATEGORY}/generate"
    RETURN_TYPES = (T.IMAGE, T.FLOAT)
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = (
        "The video as an IMAGE batch [T,H,W,3] at the generated size and frame count.",
        "Frame rate of the video (the fps input, or the model's native rate when that is 0).",
    )
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_model": socket_in(T.VIDEO_MODEL, "A video model from Gen4D Video Model Loader."),
                "prompt": str_in("", "What happens in the video (ignored by SVD).", multiline=True),
                "negative_prompt": str_in("", "What to avoid (classifier-free guidance; ignored by SVD).",
                                          multiline=True),
                "num_frames": int_in(0, 0, 257, "Frames to generate; 0 = the model's native count (Wan 81, "
                                     "CogVideoX 49, SVD 14/25). Wan / CogVideoX round to 4k+1."),
                "fps": float_in(0.0, 0.0, 120.0, "Frame rate; 0 = native (Wan 16, CogVideoX 8, SVD 7). SVD is "
                                "conditioned on it; for the others it only labels the output.", step=1.0),
                "steps": int_in(30, 1, 1000, "Denoising steps (Wan 40-50, CogVideoX 50, SVD 25)."),
                "guidance_scale": float_in(5.0, 0.0, 30.0, "Classifier-free guidance (Wan 5, CogVideoX 6; SVD: "
                                           "maximum of its per-frame ramp, 3). <= 1 turns it off.", step=0.1),
                "width": int_in(0, 0, 4096, "Output width; 0 = native (rounded down to the model's multiple).",
                                step=8),
                "height": int_in(0, 0, 4096, "Output height; 0 = native (rounded down to the model's multiple).",
                                 step=8),
                "seed": seed_in("Seed of the initial noise; the same seed gives the same video."),
            },
            "optional": {
                "image": socket_in(T.IMAGE, "First frame / condition image (the first of a batch is used). "
                                   "Centre-cropped to the output aspect, then resized. Required for I2V and SVD."),
            },
        }

    def generate(self, video_model, prompt, negative_prompt, num_frames, fps, steps, guidance_scale, width, height,
                 seed, image=None):
        if not isinstance(video_model, VideoModel):
            raise ValueError(f"Gen4D_I2VReference: video_model must come from Gen4D Video Model Loader "
                             f"(GEN4D_VIDEO_MODEL), got {type(video_model).__name__}")
        from ..backends.video_generation import GenerationInterrupted

        condition = None
        if image is not None:
            condition = check_image(image, "Gen4D_I2VReference.image")
            if condition.shape[0] > 1:
                logger.info("Gen4D_I2VReference: %d images given; the first conditions the video", condition.shape[0])
            condition = condition[0]
        generator = video_model.generator
        _require_memory(generator, num_frames, width, height, video_model.torch_device())
        host.raise_if_interrupted()
        progress = host.Progress(int(steps))
        try:
            frames = generator.generate(condition, str(prompt), str(negative_prompt), num_frames=int(num_frames),
                                        fps=float(fps), steps=int(steps), guidance_scale=float(guidance_scale),
                                        seed=int(seed), width=int(width), height=int(height), callback=progress,
                                        should_stop=host.should_stop, device=video_model.torch_device(),
                                        offload=video_model.offload)
        except GenerationInterrupted:
            host.raise_if_interrupted()
            raise
        except ValueError as exc:
            raise ValueError(f"Gen4D_I2VReference: {exc}") from exc
        finally:
            host.soft_empty_cache()
        out_fps = float(fps) if fps and fps > 0 else float(generator.native()[3])
        return to_image(frames), out_fps



def _require_memory(generator, num_frames: int, width: int, height: int, device) -> None:
    """Refuse before sampling when the decoded video (three float copies) and the VAE's decode of a chunk of
    up to 8 frames (about 512 bytes a pixel) cannot fit."""
    native_w, native_h, native_t, _fps = generator.native()
    w, h, t = int(width) or native_w, int(height) or native_h, int(num_frames) or native_t
    pixels = w * h
    need = t * pixels * 36 + min(t, 8) * pixels * 512
    require("Gen4D_I2VReference", need, device, f"{t} frame(s) at {w}x{h}", "num_frames or width/height")


NODES = {
    "Gen4D_VideoModelLoader": (VideoModelLoader, "Gen4D Video Model Loader"),
    "Gen4D_I2VReference": (I2VReference, "Gen4D I2V Reference"),
}
