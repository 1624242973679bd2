# SPDX-License-Identifier: Apache-2.0
"""Gen4D_Compose: CoCo4D depth-aware composition of the foreground object into the background (§3.3).

Public API:
    Compose                 node ``Gen4D_Compose``
    NODES

Design notes:
    The node predicts the depth of reference frame 0 with the depth model of the background branch
    inside ``core.engine.viewpoint.seen_from(reference camera, "scene")`` (the frame shows the whole
    scene), turns it into z-depth like ``Gen4D_Depth`` does (relative disparity -> ``1/d``;
    NaN/inf kept as NaN so the core masks them out and counts them), and hands everything to
    ``core.coco4d.compose.compose`` (eqs. 8-10 and the 3D placement). The result is one GEN4D_SCENE with
    parts "foreground" and "background"; the reference render shows it at the reference view for a
    quick check against the input video.

    Cameras travel with the scenes: the seen view is the one the foreground part records (the fit's),
    the reference cameras those the background part records (the outpaint's); the ``cameras`` input
    overrides the latter and the seen-view widgets are fallbacks for scenes saved before parts recorded
    cameras (``core.coco4d.compose.composition_cameras``). Fallbacks and overrides are shown on the node.
"""

from __future__ import annotations

import logging

import torch

from ..backends.render import render, render_scene
from ..core.coco4d.compose import ComposeConfig, compose, composition_cameras
from ..core.engine.cameras import Cameras
from ..core.engine.scene import Scene4D
from ..core.engine.viewpoint import seen_from
from ..core.formats.convert import check_image, check_mask, parse_color, to_image
from ..core.formats.depth import to_z_depth
from . import host
from . import types as T
from .widgets import background_in, bool_in, color_error, float_in, int_in, socket_in

__all__ = ["Compose", "NODES"]

logger = logging.getLogger(__name__)

_C = ComposeConfig()
NODE = "Gen4D_Compose"


class Compose:
    DESCRIPTION = (
        "CoCo4D depth-aware composition (§3.3, eqs. 8-10): puts the object-centred foreground (from "
        "Deformation Fit, with its screen trajectory) into the background scene. The depth model of the "
        "background branch measures the object's depth in reference frame 0 (range-matched to the background, "
        "eq. 9), a joint render gives the bounding-box width scale, the trajectory is rescaled (eq. 10) and "
        "baked into a per-frame 3D placement, so the composite renders correctly from any camera."
    )
    CATEGORY = f"{T.CATEGORY}/compose"
    RETURN_TYPES = (T.SCENE, T.IMAGE, T.STRING)
    RETURN_NAMES = ("scene", "reference_render", "report")
    OUTPUT_TOOLTIPS = (
        "One scene with parts 'foreground' (placed in 3D) and 'background'; render it with any camera path.",
        "The composite at the reference view, one image per frame: compare it with the reference video.",
        "Measured depth range factor (eq. 9), foreground depth (eq. 8), width scale and object scale.",
    )
    FUNCTION = "compose"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "foreground": socket_in(T.SCENE, "Foreground object scene from Deformation Fit (object-centred, "
                                        "with its screen-space trajectory)."),
                "background": socket_in(T.SCENE, "Background scene from Progressive Outpaint (same frame count)."),
                "reference_images": socket_in(T.IMAGE, "The reference video (or its first frame); frame 0, which "
                                              "shows foreground and background, gives the depth."),
                "foreground_mask": socket_in(T.MASK, "Foreground masks of the reference video, one per frame."),
                "depth_model": socket_in(T.DEPTH_MODEL, "The depth model the background branch used (the same "
                                         "model keeps the two depth ranges comparable)."),
                "seen_radius": float_in(_C.seen_radius, 0.01, 1000.0, "Fallback camera distance of the "
                                        "foreground's seen view, used only when the foreground scene records none "
                                        "(files saved before scenes recorded their cameras; CoCo4D 2.5)."),
                "seen_fovy": float_in(_C.seen_fovy_deg, 1.0, 179.0, "Fallback vertical field of view of the "
                                      "foreground's seen view in degrees, used only when the foreground scene "
                                      "records none (Zero123's 49.1)."),
                "measure_width": bool_in(_C.measure_width, "Rescale the object by the bounding-box width ratio "
                                         "between the reference masks and the composite rendered at the reference "
                                         "view (§3.3)."),
                "rescale_motion": bool_in(_C.rescale_motion, "Eq. 10 (shift part): also scale the steps of the "
                                          "screen trajectory by the width ratio. Off (default) keeps the reference "
                                          "video's positions, which the 3D placement already converts."),
                "depth_input_size": int_in(518, 14, 2800, "Short side the depth model sees (518 = Depth Anything's "
                                           "training size).", step=14),
                "background_color": background_in("Colour behind the scene in the reference render "
                                                  "(#rrggbb)."),
            },
            "optional": {
                "cameras": socket_in(T.CAMERAS, "Reference view (one camera, or one per frame) in the background's "
                                     "world, overriding the cameras the background scene records; default: the "
                                     "recorded ones (CoCo4D's identity camera with fovy 60 if none)."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background_color=None):
        return color_error(background_color)

    def compose(self, foreground, background, reference_images, foreground_mask, depth_model, seen_radius,
                seen_fovy, measure_width, rescale_motion, depth_input_size, background_color, cameras=None):
        for name, scene in (("foreground", foreground), ("background", background)):
            if not isinstance(scene, Scene4D):
                raise TypeError(f"{NODE}: {name} must be a GEN4D_SCENE, got {type(scene).__name__}")
        if not all(hasattr(depth_model, a) for a in ("predict", "kind", "offload")):
            raise TypeError(f"{NODE}: depth_model must be a GEN4D_DEPTH_MODEL, got {type(depth_model).__name__}")
        images = check_image(reference_images, f"{NODE}.reference_images")
        masks = check_mask(foreground_mask, f"{NODE}.foreground_mask")
        h, w = images.shape[1:3]
        if tuple(masks.shape[1:]) != (h, w):
            raise ValueError(f"{NODE}: foreground_mask is {masks.shape[2]}x{masks.shape[1]} but the reference "
                             f"images are {w}x{h}")
        n = foreground.num_frames
        if background.num_frames != n or masks.shape[0] != n:
            raise ValueError(f"{NODE}: frame counts differ: foreground {n}, background {background.num_frames}, "
                             f"foreground_mask {masks.shape[0]}; all must be the reference video's")
        if images.shape[0] not in (1, n):
            logger.warning("%s: %d reference images for %d frames; only frame 0 is used", NODE, images.shape[0], n)
        config = ComposeConfig(seen_radius=float(seen_radius), seen_fovy_deg=float(seen_fovy),
                               measure_width=bool(measure_width), rescale_motion=bool(rescale_motion))
        views = composition_cameras(foreground, background, cameras, n, w, h, config, who=NODE)
        ref_cams = views.reference
        device = host.compute_device()
        progress = host.Progress(6)
        host.raise_if_interrupted()
        depth = self._depth(depth_model, images[:1], ref_cams[0], int(depth_input_size))
        progress(1)
        host.raise_if_interrupted()
        # Built outside inference mode, so later stages can still optimise through the scene.
        try:
            with torch.inference_mode(False):
                result = compose(foreground, background, ref_cams, depth, masks, render, config,
                                 seen_cameras=views.seen, device=device,
                                 callback=lambda step, total, preview: progress(1 + step))
        except ValueError as exc:
            if cameras is None:
                raise
            # the reference view is the connected one: the likeliest cause is a view that misses the scene
            raise ValueError(f"{NODE}: {exc}. The reference view comes from the connected cameras input "
                             f"({len(cameras)} camera(s)), overriding the one the background scene records: "
                             "check that it looks at the background, or disconnect cameras to compose at the "
                             "recorded view") from exc
        host.raise_if_interrupted()
        bg = parse_color(background_color)
        with torch.no_grad():
            out = render_scene(result.scene, ref_cams, bg, device=device)
        progress(6)
        return host.with_notes(NODE, (result.scene, to_image(out.rgb), result.report.text()), views.notes)

    @staticmethod
    def _depth(depth_model, image, camera: Cameras, input_size: int) -> torch.Tensor:
        """``[H,W]`` z-depth of reference frame 0 (NaN where the model gave NaN/inf)."""
        try:
            with seen_from(camera, "scene"):
                raw = depth_model.predict(image, input_size=input_size, batch_size=1, should_stop=host.should_stop)
        finally:
            depth_model.offload()
            host.soft_empty_cache()
        host.raise_if_interrupted()
        if not isinstance(raw, torch.Tensor) or raw.dim() != 3 or raw.shape[0] != 1 \
                or tuple(raw.shape[1:]) != tuple(image.shape[1:3]):
            got = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise ValueError(f"{NODE}: the depth model returned {got}; expected [1,{image.shape[1]},"
                             f"{image.shape[2]}]")
        raw = raw[0].float()
        finite = torch.isfinite(raw)
        if not finite.all():
            logger.warning("%s: the depth model returned %d NaN/inf pixels; they are masked out", NODE,
                           int((~finite).sum()))
        z = to_z_depth(torch.where(finite, raw, torch.zeros_like(raw))[None], depth_model.kind)[0]
        return torch.where(finite, z, torch.full_like(z, float("nan")))


NODES = {NODE: (Compose, "Gen4D Compose")}
