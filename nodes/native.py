# SPDX-License-Identifier: Apache-2.0
"""Adaptor nodes from ComfyUI's native model sockets to the pack's model handles.

Public API:
    NativeVideoInpaintModel   node ``Gen4D_NativeVideoInpaintModel``: Wan VACE / Fun-InP MODEL + VAE + CONDITIONING
                              (+ CLIP_VISION_OUTPUT) -> GEN4D_VIDEO_INPAINT_MODEL
    NativeInpaintModel        node ``Gen4D_NativeInpaintModel``: SD 1.x / 2.x / SDXL MODEL + VAE + CONDITIONING
                              -> GEN4D_INPAINT_MODEL
    NativeZero123Guidance     node ``Gen4D_NativeZero123Guidance``: Stable Zero123 MODEL + CLIP_VISION + VAE
                              -> GEN4D_GUIDANCE_MODEL
    NativeSDGuidance          node ``Gen4D_NativeSDGuidance``: SD MODEL + VAE + CONDITIONING -> GEN4D_GUIDANCE_MODEL

Design notes:
    The outputs plug into the same sockets as our folder loaders' outputs, so a workflow switches
    between the two paths by replacing the loader node and nothing else. Sampling, LoRAs, model
    patches and memory management are ComfyUI's (:mod:`backends.comfy_native`). The sockets are
    checked when the node runs, before any sampling: a MODEL of the wrong family, a VAE that does not
    match it, or CONDITIONING from another text encoder is refused with the socket named.
"""

from __future__ import annotations

import logging

import torch

from ..core.coco4d.reference import zero123_condition
from ..core.formats.convert import check_image, check_mask
from . import types as T
from .widgets import combo_in, float_in, int_in, seed_in, socket_in

__all__ = ["NativeVideoInpaintModel", "NativeInpaintModel", "NativeZero123Guidance", "NativeSDGuidance", "NODES"]

logger = logging.getLogger(__name__)

MODEL, VAE, CONDITIONING = T.MODEL, T.VAE, T.CONDITIONING
CLIP_VISION, CLIP_VISION_OUTPUT = T.CLIP_VISION, T.CLIP_VISION_OUTPUT

_FALLBACK_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "ddim")
_FALLBACK_SCHEDULERS = ("simple", "normal", "karras", "exponential", "sgm_uniform", "beta")


def _names():
    """ComfyUI's sampler and scheduler names (a short fixed list outside ComfyUI)."""
    try:
        import comfy.samplers

        return tuple(comfy.samplers.KSampler.SAMPLERS), tuple(comfy.samplers.KSampler.SCHEDULERS)
    except ImportError:
        return _FALLBACK_SAMPLERS, _FALLBACK_SCHEDULERS


def _sampling_inputs(sampler: str, scheduler: str) -> dict:
    samplers, schedulers = _names()
    return {
        "sampler_name": combo_in(samplers, "ComfyUI sampler used for every inpainting call.", sampler),
        "scheduler": combo_in(schedulers, "ComfyUI scheduler; the run starts at its first step whose noise level "
                              "is at most the stage's strength.", scheduler),
    }


def _checked(node: str, make):
    try:
        return make()
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if message.startswith("Native"):  # the backend's own name: the node's is the one users see
            message = message.split(": ", 1)[-1]
        raise ValueError(message if message.startswith(node) else f"{node}: {message}") from None


_TEXT_NOTE = ("The text comes from the positive / negative CONDITIONING; the prompt widgets of the Gen4D stage "
              "nodes are not used with it.")


class NativeVideoInpaintModel:
    DESCRIPTION = (
        "Video inpainter from models loaded by ComfyUI: a Wan 2.1 VACE model, or a Wan2.1-Fun InP / Wan 2.1 I2V "
        "model (36 input channels; connect clip_vision_output when the model has an image embedding), from "
        "UNETLoader (or GGUF / fp8 loaders), with the Wan 2.1 VAE and CONDITIONING from the umt5 text encoder "
        "(CLIPLoader type 'wan'). Sampling runs through ComfyUI's sampler, so LoRAs and model patches applied "
        "to the MODEL take effect. Starts from the given frames at the stage's noise level (CoCo4D eq. 7: pasted "
        "region at its own level, known region kept). " + _TEXT_NOTE
    )
    CATEGORY = f"{T.CATEGORY}/loaders/native"
    RETURN_TYPES = (T.VIDEO_INPAINT_MODEL,)
    RETURN_NAMES = ("video_inpaint_model",)
    OUTPUT_TOOLTIPS = ("Video inpainter for Progressive Outpaint, ViSM Render and Gen4D Video Inpaint.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": socket_in(MODEL, "Wan 2.1 VACE, or Wan2.1-Fun InP / I2V, from UNETLoader (LoRAs allowed)."),
                "vae": socket_in(VAE, "The Wan 2.1 VAE (VAELoader, wan_2.1_vae)."),
                "positive": socket_in(CONDITIONING, "What the filled regions should show (CLIPTextEncode with the "
                                      "umt5 text encoder)."),
                "negative": socket_in(CONDITIONING, "What to avoid (CLIPTextEncode with the umt5 text encoder)."),
                **_sampling_inputs("uni_pc", "simple"),
                "vace_strength": float_in(1.0, 0.0, 10.0, "VACE control strength (WanVaceToVideo's strength); "
                                          "ignored by InP models."),
            },
            "optional": {
                "clip_vision_output": socket_in(CLIP_VISION_OUTPUT, "CLIPVisionEncode of the first frame "
                                                "(clip_vision_h), for Wan models with an image embedding."),
            },
        }

    def build(self, model, vae, positive, negative, sampler_name="uni_pc", scheduler="simple", vace_strength=1.0,
              clip_vision_output=None):
        from ..backends.comfy_native import NativeVideoInpainter

        node = "Gen4D_NativeVideoInpaintModel"
        handle = _checked(node, lambda: NativeVideoInpainter(model, vae, positive, negative, clip_vision_output,
                                                             sampler_name, scheduler, float(vace_strength)))
        logger.info("%s: %s video inpainter", node, handle.family)
        return (handle,)


class NativeInpaintModel:
    DESCRIPTION = (
        "Image inpainter from a Stable Diffusion 1.x / 2.x / SDXL checkpoint loaded by ComfyUI "
        "(CheckpointLoaderSimple; an inpainting checkpoint gets the masked-image conditioning, a plain one the "
        "denoise mask alone), sampled with ComfyUI's KSampler. " + _TEXT_NOTE
    )
    CATEGORY = f"{T.CATEGORY}/loaders/native"
    RETURN_TYPES = (T.INPAINT_MODEL,)
    RETURN_NAMES = ("inpaint_model",)
    OUTPUT_TOOLTIPS = ("Image inpainter for Progressive Outpaint and Gen4D Inpaint.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": socket_in(MODEL, "SD 1.x / 2.x / SDXL (inpainting) MODEL from CheckpointLoaderSimple."),
                "vae": socket_in(VAE, "The checkpoint's VAE."),
                "positive": socket_in(CONDITIONING, "What the filled region should show (CLIPTextEncode with the "
                                      "checkpoint's CLIP)."),
                "negative": socket_in(CONDITIONING, "What to avoid."),
                **_sampling_inputs("euler", "normal"),
            }
        }

    def build(self, model, vae, positive, negative, sampler_name="euler", scheduler="normal"):
        from ..backends.comfy_native import NativeImageInpainter

        node = "Gen4D_NativeInpaintModel"
        return (_checked(node, lambda: NativeImageInpainter(model, vae, positive, negative, sampler_name,
                                                            scheduler)),)


class NativeZero123Guidance:
    DESCRIPTION = (
        "Stable Zero123 score-distillation guidance from models loaded by ComfyUI (Image Only Checkpoint Loader "
        "with stable_zero123.ckpt gives MODEL, CLIP_VISION and VAE). Each sampled view is conditioned as core "
        "StableZero123_Conditioning does, at its camera relative to the seen view; the gradient reaches the "
        "rendered images through the VAE encoder (DreamFusion SDS, CoCo4D eqs. 2 and 4)."
    )
    CATEGORY = f"{T.CATEGORY}/loaders/native"
    RETURN_TYPES = (T.GUIDANCE_MODEL,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Stable Zero123 SDS guidance for Static Gaussians / Deformation Fit.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": socket_in(MODEL, "Stable Zero123 MODEL (Image Only Checkpoint Loader)."),
                "clip_vision": socket_in(CLIP_VISION, "Its CLIP vision model (the checkpoint's third output)."),
                "vae": socket_in(VAE, "Its VAE."),
                "condition_image": socket_in(T.IMAGE, "The seen view: object centred on white (RGBA composited "
                                             "over white); a video conditions each scene time on its nearest "
                                             "frame."),
                "condition_elevation": float_in(0.0, -89.0, 89.0, "Elevation of the seen view in degrees.", step=0.5),
                "condition_azimuth": float_in(0.0, -360.0, 360.0, "Azimuth of the seen view in degrees.", step=0.5),
                "condition_radius": float_in(2.5, 0.01, 100.0, "Camera distance of the seen view (CoCo4D: 2.5)."),
                "guidance_scale": float_in(5.0, 0.0, 200.0, "Classifier-free guidance scale (DreamGaussian: 5).",
                                           step=0.1),
                "seed": seed_in("Seed of the SDS timesteps and noise; the same seed repeats a fit."),
            },
            "optional": {
                "condition_masks": socket_in(T.MASK, "Object masks of condition_image (the fits' masks): the "
                                             "condition becomes the fits' centred seen view."),
            },
        }

    def build(self, model, clip_vision, vae, condition_image, condition_elevation, condition_azimuth,
              condition_radius, guidance_scale, seed, condition_masks=None):
        from ..backends.comfy_native import NativeZero123Guidance as Guidance

        node = "Gen4D_NativeZero123Guidance"
        image = check_image(condition_image, f"{node}.condition_image", channels=(3, 4))
        if condition_masks is not None:
            if image.shape[-1] == 4:
                image = image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])
            image = _checked(node, lambda: zero123_condition(image, check_mask(condition_masks, "condition_masks",
                                                                                like=image)))
        with torch.inference_mode(False):
            guidance = _checked(node, lambda: Guidance(model, clip_vision, vae, image.clone(),
                                                       float(condition_elevation), float(condition_azimuth),
                                                       float(condition_radius), float(guidance_scale), int(seed)))
        return (guidance,)


class NativeSDGuidance:
    DESCRIPTION = (
        "Stable Diffusion text score-distillation guidance from a checkpoint loaded by ComfyUI (MODEL + VAE from "
        "CheckpointLoaderSimple, CONDITIONING from CLIPTextEncode with its CLIP): rendered views are pulled "
        "towards images matching the positive conditioning (DreamFusion SDS)."
    )
    CATEGORY = f"{T.CATEGORY}/loaders/native"
    RETURN_TYPES = (T.GUIDANCE_MODEL,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Stable Diffusion SDS guidance for Static Gaussians / Deformation Fit / Progressive Outpaint.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": socket_in(MODEL, "Text-to-image SD 1.x / 2.x / SDXL MODEL (not an inpainting one)."),
                "vae": socket_in(VAE, "The checkpoint's VAE."),
                "positive": socket_in(CONDITIONING, "What the scene should look like from unseen views."),
                "negative": socket_in(CONDITIONING, "The unconditional branch (an empty prompt for plain CFG)."),
                "guidance_scale": float_in(100.0, 0.0, 200.0, "Classifier-free guidance scale: DreamFusion's 100 "
                                           "for sharp SDS; 7.5-30 is softer.", step=0.5),
                "resolution": int_in(512, 64, 2048, "Size the renders are resized to before encoding (SD 1.5 / "
                                     "2.1-base 512, SD 2.1 768, SDXL 1024).", step=8),
                "seed": seed_in("Seed of the SDS timesteps and noise; the same seed repeats a fit."),
            }
        }

    def build(self, model, vae, positive, negative, guidance_scale, resolution, seed):
        from ..backends.comfy_native import NativeSDGuidance as Guidance

        node = "Gen4D_NativeSDGuidance"
        with torch.inference_mode(False):
            guidance = _checked(node, lambda: Guidance(model, vae, positive, negative, float(guidance_scale),
                                                       int(seed), resolution=int(resolution)))
        return (guidance,)


NODES = {
    "Gen4D_NativeVideoInpaintModel": (NativeVideoInpaintModel, "Gen4D Video Inpaint Model (native MODEL)"),
    "Gen4D_NativeInpaintModel": (NativeInpaintModel, "Gen4D Inpaint Model (native MODEL)"),
    "Gen4D_NativeZero123Guidance": (NativeZero123Guidance, "Gen4D Zero123 Guidance (native MODEL)"),
    "Gen4D_NativeSDGuidance": (NativeSDGuidance, "Gen4D SD Guidance (native MODEL)"),
}
