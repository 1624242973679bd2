# SPDX-License-Identifier: Apache-2.0
"""Gen4D_FitOptions: the papers' fit presets (loss, learning rates, HexPlane) with overrides, for the fit nodes."""

from __future__ import annotations

import logging

from ..backends.model_folders import list_models, resolve_model
from ..core.engine import fit_options as fo
from ..core.engine.fit_options import FIT_PRESETS, LEARNING_RATES, LOSS_TERMS
from . import types as T
from .widgets import combo_in, float_in, int_in, str_in

logger = logging.getLogger(__name__)

NO_LPIPS = "none"
_PRESET_TIP = "Which paper setting. " + " ".join(f"{name}: {p.source}." for name, p in FIT_PRESETS.items())
_LOSS_TIPS = {
    "l1": "L1 colour loss weight (Diffusion4D, 4DGS, CoCo4D background).",
    "l2": "L2 colour loss weight (CoCo4D foreground, eqs. 1 and 3).",
    "dssim": "(1 - SSIM)/2 weight (3DGS uses 0.4 with L1 0.8).",
    "lpips": "LPIPS weight (Diffusion4D §3.4); needs lpips_weights, else the term is off (logged).",
    "mask": "Silhouette (rendered alpha vs mask) weight; used only when the fit gets masks.",
    "depth_smoothness": "Depth smoothness weight (Diffusion4D §3.4, RegNeRF form: squared neighbour depth "
                        "differences where the render covers both pixels).",
}
_LR_TIPS = {
    "position_lr": "Gaussian position learning rate (decays to 1 % over the fit).",
    "feature_lr": "Gaussian colour (SH) learning rate.",
    "opacity_lr": "Gaussian opacity learning rate.",
    "scaling_lr": "Gaussian scale learning rate.",
    "rotation_lr": "Gaussian rotation learning rate.",
    "deformation_lr": "Deformation MLP learning rate (Deformation Fit).",
    "grid_lr": "HexPlane plane learning rate (Deformation Fit).",
}


class FitOptions:
    DESCRIPTION = (
        "Fit settings for Gen4D Static Gaussians and Gen4D Deformation Fit: a paper preset (reconstruction loss, "
        "Adam learning rates, HexPlane deformation field and its regularisers) plus overrides. -1 (or 0 / empty "
        "for the HexPlane values) keeps the preset's value. Iterations, SDS, rigidity and the background stay on "
        "the fit nodes. Without this node the fit nodes use CoCo4D's foreground setting."
    )
    CATEGORY = f"{T.CATEGORY}/optimize"
    RETURN_TYPES = (T.FIT_OPTIONS,)
    RETURN_NAMES = ("options",)
    OUTPUT_TOOLTIPS = ("Fit options for the 'options' input of Static Gaussians / Deformation Fit.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        required = {"preset": combo_in(list(FIT_PRESETS), _PRESET_TIP, "coco4d_foreground")}
        for name in LOSS_TERMS:
            required[name] = float_in(-1.0, -1.0, 1000.0, _LOSS_TIPS[name] + " -1 = the preset's.", step=0.01)
        required["lpips_weights"] = combo_in(
            [NO_LPIPS, *list_models("lpips")], "LPIPS network weights (.safetensors holding a whole "
            "lpips.LPIPS(net='alex') state dict) from models/gen4d/lpips; nothing is downloaded. 'none' turns the "
            "LPIPS term off with a logged note.", NO_LPIPS)
        for name in LEARNING_RATES:
            required[name] = float_in(-1.0, -1.0, 10.0, _LR_TIPS[name] + " -1 = the preset's.", step=1e-6,
                                      round=False)
        required["hexplane_resolution"] = int_in(0, 0, 1024, "HexPlane spatial plane resolution at multiplier 1 "
                                                 "(4DGS 64); 0 = the preset's.")
        required["hexplane_multires"] = str_in("", "HexPlane spatial resolution multipliers, e.g. '1,2' (4DGS "
                                               "D-NeRF: 1,2 = planes of 64 and 128); empty = the preset's.")
        required["time_resolution"] = int_in(0, 0, 1024, "HexPlane samples along time; 0 = one per frame time, "
                                             "at most 25 (4DGS on D-NeRF): a coarser grid interpolates "
                                             "better between frames each seen from one camera.")
        # Appended last: saved workflows list widget values by position.
        required["lr_final_ratio"] = float_in(-1.0, -1.0, 1.0, "Deformation Fit: decay the field's learning rates "
                                              "(and the canonical positions') log-linearly to this fraction "
                                              "of their start over the fit (4DGS: 0.1); 1 = constant "
                                              "(CoCo4D); -1 = the preset's.", step=0.01)
        return {"required": required}

    @classmethod
    def VALIDATE_INPUTS(cls, hexplane_multires=None, hexplane_resolution=None, time_resolution=None):
        for name, value in (("hexplane_resolution", hexplane_resolution), ("time_resolution", time_resolution)):
            # 0 stands for the preset's value; a plane needs at least 2 samples to interpolate between.
            if isinstance(value, int) and value == 1:
                return f"{name} is 1; use 0 (the preset's) or at least 2 (a plane interpolates between 2 samples)"
        if hexplane_multires is None:
            return True
        try:
            _multires(hexplane_multires)
        except ValueError as exc:
            return str(exc)
        return True

    def build(self, preset, lpips_weights=NO_LPIPS, hexplane_multires="", hexplane_resolution=0, time_resolution=0,
              lr_final_ratio=-1.0, **values):
        node = "Gen4D_FitOptions"
        given = {name: float(values[name]) for name in (*LOSS_TERMS, *LEARNING_RATES)
                 if name in values and float(values[name]) >= 0}
        path = None
        if lpips_weights and lpips_weights != NO_LPIPS:
            try:
                path = str(resolve_model("lpips", lpips_weights))
            except ValueError as exc:
                raise ValueError(f"{node}.lpips_weights: {exc}") from exc
        try:
            options = fo.FitOptions(
                preset=preset, lpips_path=path, hexplane_resolution=int(hexplane_resolution) or None,
                hexplane_multires=_multires(hexplane_multires), time_resolution=int(time_resolution) or None,
                lr_final_ratio=None if float(lr_final_ratio) < 0 else float(lr_final_ratio), **given)
        except ValueError as exc:
            raise ValueError(f"{node}: {exc}") from exc
        loss = options.loss()
        if loss.lpips > 0 and path is None:
            logger.warning("%s: preset %s asks for LPIPS (weight %g) but lpips_weights is 'none'; the LPIPS term is "
                           "off (put a .safetensors lpips.LPIPS state dict into models/gen4d/lpips)", node, preset,
                           loss.lpips)
        logger.info("%s: %s", node, options.describe())
        return (options,)


def _multires(text) -> tuple[int, ...] | None:
    """``"1,2"`` -> ``(1, 2)``; empty -> None."""
    text = str(text or "").strip()
    if not text:
        return None
    try:
        levels = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        levels = ()
    if not levels or any(level < 1 for level in levels):
        raise ValueError(f"Gen4D_FitOptions.hexplane_multires: expected integers >= 1 separated by commas, e.g. "
                         f"'1,2', got {text!r}")
    return levels


NODES = {"Gen4D_FitOptions": (FitOptions, "Gen4D Fit Options")}
