# SPDX-License-Identifier: Apache-2.0
"""Gen4D_Render: a scene or Gaussian set seen along a camera path -> IMAGE, MASK, depth IMAGE.

Screen-space trajectories: a part that still carries one (the object-centred foreground straight
out of Gen4D_DeformationFit) is rendered as it is, object-centred, with a warning. A 2D warp is
right only at the seen view, so it is not applied here; Gen4D_Compose turns the trajectory into a
3D placement (``core.coco4d.compose``), after which every camera sees the object where it belongs.
"""

from __future__ import annotations

import logging

import torch

from ..backends.render import BACKENDS, RenderOutput, render_scene
from ..core.formats.convert import DEPTH_MODES, depth_to_image, parse_color, to_image, to_mask
from . import host
from . import types as T
from .widgets import color_error, combo_in, int_in, socket_in, str_in

logger = logging.getLogger(__name__)


class Render:
    DESCRIPTION = (
        "Render a dynamic scene (each camera sees the scene at its own time) or a static Gaussian set "
        "along a camera path. Uses gsplat on CUDA and the built-in torch rasterizer elsewhere; both give "
        "the same pixels. Outputs a video as an IMAGE batch, the alpha as a MASK and the depth. A foreground "
        "that still carries its screen trajectory is shown object-centred: compose it first (Gen4D Compose)."
    )
    CATEGORY = f"{T.CATEGORY}/render"
    RETURN_TYPES = (T.IMAGE, T.MASK, T.IMAGE)
    RETURN_NAMES = ("images", "alpha", "depth")
    OUTPUT_TOOLTIPS = (
        "Rendered colour, one image per camera.",
        "Accumulated opacity per pixel (1 = fully covered).",
        "Depth per pixel, encoded as chosen in depth_mode.",
    )
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "cameras": socket_in(T.CAMERAS, "Camera path; camera i renders the scene at its time."),
                "background": str_in("#000000", "Background colour as #rrggbb or r,g,b."),
                "depth_mode": combo_in(DEPTH_MODES, "inverse_normalized: near = white, 0..1 (ControlNet style); "
                                       "normalized: far = white; metric: raw z-depth in scene units."),
                "backend": combo_in(BACKENDS, "auto: gsplat on CUDA, torch rasterizer otherwise."),
                "batch_size": int_in(8, 1, 1024, "Cameras rendered per step; lower it if memory runs out."),
            },
            "optional": {
                "scene": socket_in(T.SCENE, "A dynamic 4D scene (takes precedence over gaussians)."),
                "gaussians": socket_in(T.GAUSSIANS, "A static Gaussian set, used when no scene is connected."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background=None):
        return color_error(background)

    def render(self, cameras, background, depth_mode, backend, batch_size, scene=None, gaussians=None):
        source = scene if scene is not None else gaussians
        if source is None:
            raise ValueError("Gen4D_Render: connect a scene or a gaussians input")
        _warn_screen_trajectories(source)
        bg = parse_color(background)
        device = host.compute_device()
        progress = host.Progress(len(cameras))
        parts = []
        with torch.no_grad():
            for start in range(0, len(cameras), batch_size):
                host.raise_if_interrupted()
                chunk = cameras[start : start + batch_size]
                parts.append(_to_cpu(render_scene(source, chunk, bg, backend, device=device)))
                progress(start + len(chunk), preview=parts[-1].rgb[-1].clamp(0, 1))
        out = RenderOutput.cat(parts)
        return to_image(out.rgb), to_mask(out.alpha), depth_to_image(out.depth, depth_mode, out.alpha)


def _warn_screen_trajectories(source) -> None:
    names = [p.name for p in getattr(source, "parts", ()) if p.trajectory]
    if names:
        logger.warning("Gen4D_Render: part(s) %s carry a screen-space trajectory, which is not applied here; they "
                       "render object-centred. Connect them through Gen4D_Compose to place them in the scene.", names)


def _to_cpu(out: RenderOutput) -> RenderOutput:
    return RenderOutput(out.rgb.cpu(), out.alpha.cpu(), out.depth.cpu())


NODES = {"Gen4D_Render": (Render, "Gen4D Render")}
