# SPDX-License-Identifier: Apache-2.0
"""Gen4D_Zero123GuidanceLoader and Gen4D_SDGuidanceLoader: score-distillation guidance for the fits."""

from __future__ import annotations

import logging

import torch

from ..backends.model_folders import resolve_model
from ..core.coco4d.reference import zero123_condition
from ..core.formats.convert import check_image, check_mask
from . import types as T
from .placement import device_in, dtype_in, model_in, placement
from .widgets import bool_in, float_in, seed_in, socket_in, str_in

logger = logging.getLogger(__name__)

class Zero123GuidanceLoader:
    DESCRIPTION = (
        "Load Zero123 / Stable-Zero123 (stable-zero123-diffusers folder layout) as score-distillation guidance "
        "for object fits: the condition image is the seen view; unseen views rendered during the fit are pulled "
        "towards what Zero123 predicts for their camera relative to it (DreamFusion SDS, CoCo4D eqs. 2 and 4). "
        "Connect condition_masks (the masks the fits get) to condition on the fits' centred seen view."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.GUIDANCE_MODEL,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Zero123 SDS guidance for Static Gaussians / Deformation Fit.",)
    FUNCTION = "load"
    PAIRED_INPUTS = (("condition_image", "condition_masks"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("zero123", "Model folder under models/gen4d/zero123 (e.g. "
                                  "stable-zero123-diffusers; a name containing 'stable' selects Stable-Zero123's "
                                  "camera embedding)."),
                "condition_image": socket_in(T.IMAGE, "The seen view: object centred on a white background "
                                             "(RGBA is composited over white). A video conditions each scene time "
                                             "on its nearest frame."),
                "condition_elevation": float_in(0.0, -89.0, 89.0, "Elevation of the seen view in degrees "
                                                "(positive = above the object).", step=0.5),
                "condition_azimuth": float_in(0.0, -360.0, 360.0, "Azimuth of the seen view in degrees.", step=0.5),
                "condition_radius": float_in(2.5, 0.01, 100.0, "Camera distance of the seen view (CoCo4D: 2.5)."),
                "guidance_scale": float_in(5.0, 0.0, 200.0, "Classifier-free guidance scale (DreamGaussian: 5).",
                                           step=0.1),
                "device": device_in(),
                "dtype": dtype_in(),
                "seed": seed_in("Seed of the SDS timesteps and noise; the same seed repeats a fit."),
            },
            "optional": {
                "condition_masks": socket_in(T.MASK, "Object masks of condition_image, the same masks the fits get "
                                             "(e.g. SAM2's): the condition becomes what the fits see, each frame's "
                                             "object centred and zoomed as Static Gaussians / Deformation Fit centre "
                                             "it (center_object), on white, framed as a square of the frame height. "
                                             "Without it condition_image is used as given."),
                "torch_compile": bool_in(True, "GPU: compile the UNet and VAE encoder passes with torch.compile "
                                         "before their CUDA graphs are captured (fused kernels: an SDS step took "
                                         "20 ms instead of 29 ms on one H100). The first fit step of a ComfyUI "
                                         "session waits while they compile (about 80 s there, less when "
                                         "inductor's cache holds them); where compiling fails the uncompiled "
                                         "passes run. Off: no compile wait."),
            },
        }

    def load(self, model, condition_image, condition_elevation, condition_azimuth, condition_radius, guidance_scale,
             device, dtype, seed, condition_masks=None, torch_compile=True):
        from ..backends.zero123 import ZERO123_COMPONENTS, Zero123Guidance, load_zero123

        image = check_image(condition_image, "condition_image", channels=(3, 4))
        if condition_masks is not None:
            image = _centred_condition(image, condition_masks)
        path = resolve_model("zero123", model, tuple(f"{c}/config.json" for c in ZERO123_COMPONENTS
                                                     if c != "scheduler"))
        fixed, weights_dtype = placement("Gen4D guidance loader", device, dtype)
        with torch.inference_mode(False):  # parameters must not be inference tensors: the fit backprops
            components = load_zero123(path, weights_dtype)
            guidance = Zero123Guidance(components, image.clone(), condition_elevation, condition_azimuth,
                                       condition_radius, guidance_scale, seed, device=fixed, dtype=weights_dtype,
                                       torch_compile=bool(torch_compile))
        logger.info("Zero123 guidance from %s (%s camera embedding)", path, guidance.variant)
        return (guidance,)


def _centred_condition(image: torch.Tensor, condition_masks) -> torch.Tensor:
    """The fits' centred seen view of ``image`` (RGBA composited over white first), square."""
    if image.shape[-1] == 4:
        image = image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])
    try:
        masks = check_mask(condition_masks, "condition_masks", like=image)
    except ValueError as exc:
        raise ValueError(f"Gen4D_Zero123GuidanceLoader: {exc}") from exc
    try:
        return zero123_condition(image, masks)
    except ValueError as exc:
        raise ValueError(f"Gen4D_Zero123GuidanceLoader: condition_masks: {exc}") from exc


class SDGuidanceLoader:
    DESCRIPTION = (
        "Load Stable Diffusion (2.1, diffusers folder) as text-conditioned score-distillation guidance for scene "
        "fits: rendered views are pulled towards images matching the prompt (DreamFusion SDS)."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.GUIDANCE_MODEL,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Stable Diffusion SDS guidance for Static Gaussians / Deformation Fit.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("sd_guidance", "Diffusers Stable Diffusion folder under models/diffusers "
                                  "(e.g. stable-diffusion-2-1-base)."),
                "prompt": str_in("", "What the scene should look like from the unseen views.", multiline=True),
                "negative_prompt": str_in("", "What to steer away from (the unconditional branch).", multiline=True),
                "guidance_scale": float_in(100.0, 0.0, 200.0, "Classifier-free guidance scale: DreamFusion's 100 "
                                           "for sharp SDS; 7.5-30 is softer.", step=0.5),
                "device": device_in(),
                "dtype": dtype_in(),
                "seed": seed_in("Seed of the SDS timesteps and noise; the same seed repeats a fit."),
            }
        }

    def load(self, model, prompt, negative_prompt, guidance_scale, device, dtype, seed):
        from ..backends.sd_guidance import SDGuidance, load_sd_guidance

        path = resolve_model("sd_guidance", model, ("unet/config.json", "vae/config.json",
                                                    "text_encoder/config.json"))
        fixed, weights_dtype = placement("Gen4D guidance loader", device, dtype)
        with torch.inference_mode(False):
            components = load_sd_guidance(path, weights_dtype)
            guidance = SDGuidance(components, prompt, negative_prompt, guidance_scale, seed, device=fixed,
                                  dtype=weights_dtype)
        return (guidance,)


NODES = {
    "Gen4D_Zero123GuidanceLoader": (Zero123GuidanceLoader, "Gen4D Zero123 Guidance Loader"),
    "Gen4D_SDGuidanceLoader": (SDGuidanceLoader, "Gen4D SD Guidance Loader"),
}
