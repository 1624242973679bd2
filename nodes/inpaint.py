# SPDX-License-Identifier: Apache-2.0
"""Image and video inpainting nodes (CoCo4D §3.2 progressive outpainting, eq. 7).

Public API:
    InpaintModelLoader       node ``Gen4D_InpaintModelLoader`` -> GEN4D_INPAINT_MODEL (SD 2.x / SDXL inpainting)
    Inpaint                  node ``Gen4D_Inpaint``: IMAGE + MASK + prompt -> IMAGE
    VideoInpaintModelLoader  node ``Gen4D_VideoInpaintModelLoader`` -> GEN4D_VIDEO_INPAINT_MODEL (Wan VACE)
    VideoInpaint             node ``Gen4D_VideoInpaint``: frames IMAGE + masks MASK + prompt -> IMAGE frames

Design notes:
    Models come from ComfyUI's ``models/diffusers`` folder (kinds "inpaint" and "video_inpaint") or
    an absolute path to a local diffusers folder. Loaders check the folder and return the cached
    backend object (:mod:`backends.inpaint`, :mod:`backends.video_inpaint`); the device is looked
    up when a stage node runs ("auto" = ComfyUI's device), and the networks go back to the CPU
    after each run. The video node's ``strength`` (name kept for saved workflows) is the noise level
    σ of the start point: denoising starts from the given frames' latents noised to the first
    scheduler step whose σ is at most it (CoCo4D's τ = 0.7 for the refinement), not from pure
    noise; it is not a fraction of the steps.
"""

from __future__ import annotations

import logging

import torch

from ..backends.model_folders import resolve_model
from ..core.formats.convert import check_image, check_mask
from . import host
from . import types as T
from .placement import device_in, dtype_in, model_in, placement, validate_model
from .widgets import float_in, int_in, seed_in, socket_in, str_in

__all__ = ["InpaintModelLoader", "Inpaint", "VideoInpaintModelLoader", "VideoInpaint", "NODES"]

logger = logging.getLogger(__name__)

def _run_interruptible(fn):
    host.raise_if_interrupted()
    try:
        return fn()
    except InterruptedError:
        host.raise_if_interrupted()
        raise
    finally:
        host.soft_empty_cache()


class InpaintModelLoader:
    DESCRIPTION = (
        "Loads an image inpainting model: a diffusers Stable Diffusion 2.x or SDXL inpainting folder under "
        "models/diffusers (model_index.json, unet, vae, text_encoder, tokenizer, scheduler; SDXL also "
        "text_encoder_2, tokenizer_2), e.g. stabilityai/stable-diffusion-2-inpainting. Loaded once, kept for "
        "later runs."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.INPAINT_MODEL,)
    RETURN_NAMES = ("inpaint_model",)
    OUTPUT_TOOLTIPS = ("The image inpainter, for Gen4D Inpaint and the CoCo4D outpainting stage.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("inpaint", "Diffusers inpainting folder under models/diffusers, or an "
                                  "absolute path to one."),
                "device": device_in(),
                "dtype": dtype_in(),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model=None):
        return validate_model("inpaint", "Gen4D_InpaintModelLoader", model)

    def load(self, model, device="auto", dtype="auto"):
        from ..backends.inpaint import load_image_inpainter

        path = resolve_model("inpaint", model, ("model_index.json",))
        fixed, weights_dtype = placement("Gen4D_InpaintModelLoader", device, dtype)
        with torch.inference_mode(False):
            inpainter = load_image_inpainter(path, weights_dtype)
        inpainter.device, inpainter.device_fn = fixed, host.compute_device
        return (inpainter,)


class Inpaint:
    DESCRIPTION = (
        "Fills the masked region of each image with a loaded inpainting model, guided by the prompt. Pixels "
        "outside the mask are returned unchanged. Images are processed at the nearest multiple of 8 and "
        "resized back."
    )
    CATEGORY = f"{T.CATEGORY}/inpaint"
    RETURN_TYPES = (T.IMAGE,)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The inpainted images [B,H,W,3], same size as the input.",)
    FUNCTION = "inpaint"
    PAIRED_INPUTS = (("images", "mask"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "inpaint_model": socket_in(T.INPAINT_MODEL, "An inpainter from Gen4D Inpaint Model Loader."),
                "images": socket_in(T.IMAGE, "RGB images [B,H,W,3]."),
                "mask": socket_in(T.MASK, "Where to fill (1 = fill), one mask or one per image."),
                "prompt": str_in("", "What the filled region should show.", multiline=True),
                "negative_prompt": str_in("", "What to avoid in the filled region.", multiline=True),
                "strength": float_in(1.0, 0.0, 1.0, "1 = fill from pure noise; lower keeps more of the input "
                                     "inside the mask."),
                "steps": int_in(30, 1, 200, "Denoising steps at strength 1."),
                "guidance_scale": float_in(7.5, 0.0, 30.0, "Classifier-free guidance scale.", step=0.1),
                "seed": seed_in(),
            }
        }

    def inpaint(self, inpaint_model, images, mask, prompt, negative_prompt="", strength=1.0, steps=30,
                guidance_scale=7.5, seed=0):
        node = "Gen4D_Inpaint"
        images = check_image(images, f"{node}.images")
        masks = check_mask(mask, f"{node}.mask", like=images)
        if not hasattr(inpaint_model, "inpaint") or not hasattr(inpaint_model, "multiple"):
            raise ValueError(f"{node}: inpaint_model must be a GEN4D_INPAINT_MODEL, got {type(inpaint_model).__name__}")
        batch = images.shape[0]
        total = batch * max(int(int(steps) * float(strength)), 1)
        progress = host.Progress(total)

        def run():
            out = []
            for b in range(batch):
                def report(step, steps_total, preview=None, _b=b):
                    progress(_b * (total // batch) + step, total, preview)

                out.append(inpaint_model.inpaint(images[b], masks[b], prompt, negative_prompt, float(strength),
                                                 int(steps), float(guidance_scale), int(seed) + b, report,
                                                 host.should_stop))
            return torch.stack(out)

        return (_run_interruptible(run).float().clamp(0, 1).contiguous(),)


class VideoInpaintModelLoader:
    DESCRIPTION = (
        "Loads a video inpainting model from models/diffusers: a diffusers Wan VACE folder (model_index.json "
        "naming WanVACEPipeline), e.g. Wan-AI/Wan2.1-VACE-1.3B-diffusers, or a Wan2.1-Fun-V1.1 InP folder in its "
        "original layout (alibaba-pai/Wan2.1-Fun-V1.1-14B-InP), optionally with MoGe4D's 4D-ViSM LoRA in a "
        "'4D-ViSM' sub-folder (Gen4D ViSM Render merges it at 0.55). Loaded once, kept for later runs."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.VIDEO_INPAINT_MODEL,)
    RETURN_NAMES = ("video_inpaint_model",)
    OUTPUT_TOOLTIPS = ("The video inpainter, for Gen4D Video Inpaint and the CoCo4D outpainting stage.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("video_inpaint", "Wan VACE (diffusers) or Wan2.1-Fun InP folder under "
                                  "models/diffusers, or an absolute path to one."),
                "device": device_in(),
                "dtype": dtype_in(),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model=None):
        return validate_model("video_inpaint", "Gen4D_VideoInpaintModelLoader", model, required=())

    def load(self, model, device="auto", dtype="auto"):
        from ..backends.video_inpaint import load_video_inpainter

        # the backend tells the two layouts apart and names what is missing
        path = resolve_model("video_inpaint", model)
        fixed, weights_dtype = placement("Gen4D_VideoInpaintModelLoader", device, dtype)
        with torch.inference_mode(False):
            inpainter = load_video_inpainter(path, weights_dtype)
        inpainter.device, inpainter.device_fn = fixed, host.compute_device
        return (inpainter,)


class VideoInpaint:
    DESCRIPTION = (
        "Inpaints the masked regions of a video (frames as an IMAGE batch) with a loaded video inpainter. "
        "strength is the noise level σ of the start point: denoising starts from the given frames' latents "
        "noised to that level (0.7 refines a copy-pasted pseudo video as CoCo4D's τ, 1.0 generates the holes "
        "from pure noise). Pixels outside the masks are returned unchanged."
    )
    CATEGORY = f"{T.CATEGORY}/inpaint"
    RETURN_TYPES = (T.IMAGE,)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The inpainted frames [T,H,W,3], same size and count as the input.",)
    FUNCTION = "inpaint"
    PAIRED_INPUTS = (("frames", "masks"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_inpaint_model": socket_in(T.VIDEO_INPAINT_MODEL, "A video inpainter from Gen4D Video "
                                                 "Inpaint Model Loader."),
                "frames": socket_in(T.IMAGE, "Video frames [T,H,W,3]."),
                "masks": socket_in(T.MASK, "Regions to regenerate (1 = fill), one mask per frame (or one for all)."),
                "prompt": str_in("", "What the filled regions should show.", multiline=True),
                "negative_prompt": str_in("", "What to avoid.", multiline=True),
                "strength": float_in(0.7, 0.0, 1.0, "Noise level σ of the start point (CoCo4D eq. 7 τ: 0.7): "
                                     "the run starts at the first scheduler step whose σ is at most this. A noise "
                                     "level, no longer a fraction of the steps (on Wan's shifted schedule the old "
                                     "0.7 started at σ 0.875). 1 = from pure noise, small = stay close to the "
                                     "given frames, 0 = no step runs: the frames come back unchanged."),
                "steps": int_in(30, 1, 200, "Scheduler steps of a full (strength 1) run; those below the start "
                                "level run."),
                "guidance_scale": float_in(5.0, 0.0, 30.0, "Classifier-free guidance scale (Wan: 5).", step=0.1),
                "seed": seed_in(),
            }
        }

    def inpaint(self, video_inpaint_model, frames, masks, prompt, negative_prompt="", strength=0.7, steps=30,
                guidance_scale=5.0, seed=0):
        node = "Gen4D_VideoInpaint"
        frames = check_image(frames, f"{node}.frames")
        masks = check_mask(masks, f"{node}.masks", like=frames)
        if not hasattr(video_inpaint_model, "inpaint") or not hasattr(video_inpaint_model, "temporal"):
            raise ValueError(f"{node}: video_inpaint_model must be a GEN4D_VIDEO_INPAINT_MODEL, got "
                             f"{type(video_inpaint_model).__name__}")
        progress = host.Progress(int(steps))  # the inpainter reports the steps it runs below the start level
        out = _run_interruptible(lambda: video_inpaint_model.inpaint(
            frames, masks.contiguous(), prompt, negative_prompt, noise_level=float(strength), steps=int(steps),
            guidance_scale=float(guidance_scale), seed=int(seed), callback=progress, should_stop=host.should_stop))
        return (out.float().clamp(0, 1).contiguous(),)


NODES = {
    "Gen4D_InpaintModelLoader": (InpaintModelLoader, "Gen4D Inpaint Model Loader"),
    "Gen4D_Inpaint": (Inpaint, "Gen4D Inpaint"),
    "Gen4D_VideoInpaintModelLoader": (VideoInpaintModelLoader, "Gen4D Video Inpaint Model Loader"),
    "Gen4D_VideoInpaint": (VideoInpaint, "Gen4D Video Inpaint"),
}
