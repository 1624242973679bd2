# SPDX-License-Identifier: Apache-2.0
"""Gen4D_Render: a scene or Gaussian set seen along a camera path -> IMAGE, MASK, depth IMAGE.

Cameras. Without a camera path the node renders the cameras the scene records (the view its
reference video was seen from: the seen view of an object fit, the reference cameras of an
outpainted background or a composite), and says so on the node.

Screen-space trajectories. A part that still carries one (the object-centred foreground straight
out of Gen4D_DeformationFit, CoCo4D §3.1) is put where the reference video has it by the 2D
shift and scale of its trajectory, at the cameras that are the view the trajectory was measured in
(the part's recorded seen view; ``core.coco4d.screen_trajectory.screen_placement``). Such a part is
rendered alone, moved, and composited with the other parts by per-pixel depth. At any other camera
a 2D warp would be wrong: the part renders object-centred there and the node says why;
Gen4D_Compose turns the trajectory into a 3D placement (``core.coco4d.compose``), after which every
camera sees the object where it belongs.
"""

from __future__ import annotations

import logging

import torch

from ..backends.memory import require
from ..backends.render import BACKENDS, RenderOutput, render_placed, render_scene
from ..core.coco4d.reference import seen_view_cameras
from ..core.coco4d.screen_trajectory import ScreenTrajectory, screen_placement
from ..core.engine.cameras import Cameras
from ..core.engine.scene import Scene4D
from ..core.formats.convert import DEPTH_MODES, depth_to_image, parse_color, to_image, to_mask
from . import host
from . import types as T
from .widgets import background_in, color_error, combo_in, int_in, socket_in

logger = logging.getLogger(__name__)

NODE = "Gen4D_Render"


class Render:
    DESCRIPTION = (
        "Render a dynamic scene (each camera sees the scene at its own time) or a static Gaussian set "
        "along a camera path (default: the cameras the scene records). Uses gsplat on CUDA and the built-in "
        "torch rasterizer elsewhere; both give the same pixels. Outputs a video as an IMAGE batch, the alpha as "
        "a MASK and the depth. A foreground that still carries its screen trajectory (Deformation Fit) is placed "
        "where its reference video has it at the view it was fitted from; other cameras show it object-centred "
        "(the node says so): compose it (Gen4D Compose) to place it in 3D."
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
                "background": background_in("Background colour as #rrggbb or r,g,b."),
                "depth_mode": combo_in(DEPTH_MODES, "inverse_normalized: near = white, 0..1 (ControlNet style); "
                                       "normalized: far = white; metric: raw z-depth in scene units."),
                "backend": combo_in(BACKENDS, "auto: gsplat on CUDA, torch rasterizer otherwise."),
                "batch_size": int_in(8, 1, 1024, "Cameras rendered per step; lower it if memory runs out."),
            },
            "optional": {
                "cameras": socket_in(T.CAMERAS, "Camera path; camera i renders the scene at its time. Default: the "
                                     "cameras the scene records (the view its reference video was seen from)."),
                "scene": socket_in(T.SCENE, "A dynamic 4D scene (takes precedence over gaussians)."),
                "gaussians": socket_in(T.GAUSSIANS, "A static Gaussian set, used when no scene is connected."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background=None):
        return color_error(background)

    def render(self, background, depth_mode, backend, batch_size, cameras=None, scene=None, gaussians=None):
        source = scene if scene is not None else gaussians
        if source is None:
            raise ValueError(f"{NODE}: connect a scene or a gaussians input")
        notes: list[str] = []
        cameras = _cameras(source, cameras, notes)
        bg = parse_color(background)
        device = host.compute_device()
        _require_memory(cameras, batch_size, device)
        progress = host.Progress(len(cameras))
        parts = []
        try:
            with torch.no_grad():
                plans = _placements(source, cameras, notes)
                for start in range(0, len(cameras), batch_size):
                    host.raise_if_interrupted()
                    chunk = cameras[start : start + batch_size]
                    if plans is None:
                        out = render_scene(source, chunk, bg, backend, device=device, should_stop=host.should_stop)
                    else:
                        out = render_placed(source, chunk, slice(start, start + len(chunk)), plans, bg, backend,
                                            device, should_stop=host.should_stop)
                    parts.append(_to_cpu(out))
                    progress(start + len(chunk), preview=parts[-1].rgb[-1].clamp(0, 1))
        except InterruptedError:
            host.raise_if_interrupted()
            raise
        out = RenderOutput.cat(parts)
        result = (to_image(out.rgb), to_mask(out.alpha), depth_to_image(out.depth, depth_mode, out.alpha))
        return host.with_notes(NODE, result, notes)


def _cameras(source, cameras, notes: list[str]) -> Cameras:
    """The connected cameras, else the scene's recorded ones (noted)."""
    if cameras is not None:
        if not isinstance(cameras, Cameras):
            raise TypeError(f"{NODE}: cameras must be a GEN4D_CAMERAS, got {type(cameras).__name__}")
        return cameras
    recorded = source.reference_cameras if isinstance(source, Scene4D) else None
    if recorded is None:
        what = "a Gaussian set" if not isinstance(source, Scene4D) \
            else "this scene (made without cameras, or saved before scenes recorded them)"
        raise ValueError(f"{NODE}: no cameras connected, and {what} records none; connect a camera path "
                         "(e.g. Gen4D Camera Path)")
    notes.append(f"no cameras connected: rendering the {len(recorded)} reference camera(s) the scene records "
                 f"({recorded.width}x{recorded.height}, fovy {float(recorded.fovy_deg[0]):.4g}°).")
    return recorded


# Bytes per pixel: the batch being rasterised (colour, alpha, depth and the rasterizer's per-pixel working set)
# and every camera's finished colour, alpha and depth kept on the CPU until the batch is joined (twice: parts + cat).
_BATCH_BYTES_PER_PIXEL = 96
_KEPT_BYTES_PER_PIXEL = 2 * 4 * (3 + 1 + 3)


def _require_memory(cameras: Cameras, batch_size: int, device) -> None:
    pixels = int(cameras.width) * int(cameras.height)
    batch = min(int(batch_size), len(cameras))
    what = f"rendering {len(cameras)} camera(s) at {cameras.width}x{cameras.height} in batches of {batch}"
    require(NODE, batch * pixels * _BATCH_BYTES_PER_PIXEL, device, what, "batch_size or the camera width/height")
    require(NODE, len(cameras) * pixels * _KEPT_BYTES_PER_PIXEL, "cpu", what + " (the finished frames)",
            "the number of cameras or their width/height")


def _placements(source, cameras: Cameras, notes: list[str]) -> dict | None:
    """Per trajectory part, where its render may be moved by the trajectory; None when no part has one."""
    if not isinstance(source, Scene4D) or not any(p.trajectory for p in source.parts):
        return None
    plans = {}
    for part in source.parts:
        if not part.trajectory:
            continue
        trajectory = ScreenTrajectory.from_dict(part.trajectory, source.num_frames)
        recorded = part.reference_cameras
        if recorded is None:
            recorded = seen_view_cameras(len(trajectory), cameras.width, cameras.height)
            notes.append(f"part {part.name!r} carries a screen trajectory but records no seen view (a file from "
                         "before scenes recorded their cameras): CoCo4D's default seen view (distance 2.5, fovy "
                         "49.1°) at the render size is assumed.")
        plan = screen_placement(trajectory, recorded.to("cpu"), cameras.to("cpu"), part.name)
        notes.extend(plan.notes)
        plans[part.name] = plan
    return plans


def _to_cpu(out: RenderOutput) -> RenderOutput:
    return RenderOutput(out.rgb.cpu(), out.alpha.cpu(), out.depth.cpu())


NODES = {NODE: (Render, "Gen4D Render")}
