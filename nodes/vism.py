# SPDX-License-Identifier: Apache-2.0
"""MoGe4D 4D-ViSM nodes: render tracks (or a scene) along a camera path with a hole mask, inpaint the
holes; save tracks as a per-frame PLY point sequence.

Public API:
    ViSMRender     node ``Gen4D_ViSMRender``: tracks | scene + cameras -> frames, raw render, hole mask, depth
    SaveTracks     node ``Gen4D_SaveTracks``: tracks -> ``<prefix>_NNNNN/frame_*.ply`` under the output folder

Design notes:
    The maths is ``core.moge4d.vism``; this layer binds the renderer (``backends.render.render_scene``:
    gsplat on CUDA, the torch rasterizer elsewhere), ComfyUI's progress bar and interrupt, and the
    video inpainter. Inpainting defaults are the official 4D-ViSM stage 2 (strength 1 = from pure
    noise, 50 steps, guidance 6, LoRA weight 0.55).

    ViSM LoRA: the official stage 2 is Wan2.1-Fun-14B-InP with the 4D-ViSM LoRA merged at 0.55. A
    video-inpaint model that carries it exposes ``apply_vism_lora(strength) -> bool`` (True when the
    LoRA was found and applied); the node calls it with ``lora_strength``. Any other model (Wan
    VACE, the synthetic oracle) is used as it is, and the node logs this fallback once per model:
    holes are then filled by the base video-inpainting model, without the ViSM fine-tune.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from ..backends.render import render_scene
from ..backends.sequence_parallel import ParallelOptions
from ..core.engine.cameras import Cameras
from ..core.engine.scene import Scene4D
from ..core.formats.convert import DEPTH_MODES, depth_to_image, to_image, to_mask
from ..core.formats.export import save_numbered_folder, save_ply_sequence
from ..core.moge4d.tracks import Tracks, save_tracks_ply_sequence
from ..core.moge4d.vism import VISM_INPAINT_DEFAULTS, VismConfig, inpaint_holes, render_vism, tracks_to_scene
from . import host
from . import types as T
from .widgets import bool_in, combo_in, float_in, int_in, seed_in, shown_name, socket_in, str_in

__all__ = ["ViSMRender", "SaveTracks", "NODES"]

logger = logging.getLogger(__name__)

_DEFAULTS = VismConfig()
_WARNED: set[int] = set()


def _apply_lora(model, strength: float) -> bool:
    """Apply the ViSM LoRA through the model's ``apply_vism_lora`` hook; log the fallback otherwise."""
    hook = getattr(model, "apply_vism_lora", None)
    applied = bool(hook(float(strength))) if callable(hook) else False
    if not applied and id(model) not in _WARNED:
        _WARNED.add(id(model))
        logger.warning("Gen4D_ViSMRender: video_inpaint_model %s carries no 4D-ViSM LoRA (the official one is for "
                       "Wan2.1-Fun-14B-InP); inpainting the holes with the model as it is", type(model).__name__)
    return applied


class ViSMRender:
    DESCRIPTION = (
        "MoGe4D 4D-ViSM. Renders dense 4D tracks as one small Gaussian per pixel and frame (footprint from depth "
        "and focal length, lying flat in the local surface and turning with it) along a camera path, each camera "
        "seeing the frame at its time; finds the holes (pixels no tracked surface covers, where the view looks "
        "into space hidden from the input view, found with shadow quads at the input view's depth edges, or where "
        "a surface is seen from behind, its unseen side); then fills the holes with a video-inpainting model "
        "(holes handed over at 0.5 grey, as the official Wan2.1-Fun InP + ViSM LoRA expects). Any 4D scene can "
        "replace the tracks (holes are then the uncovered pixels only). Without an inpainter, frames is the raw "
        "render."
    )
    CATEGORY = f"{T.CATEGORY}/moge4d"
    RETURN_TYPES = (T.IMAGE, T.IMAGE, T.MASK, T.IMAGE)
    RETURN_NAMES = ("frames", "raw_render", "hole_mask", "depth")
    OUTPUT_TOOLTIPS = (
        "The novel-view video: the render with its holes inpainted (the raw render when no inpainter is connected).",
        "The splat render before inpainting (black where nothing is covered).",
        "Holes, 1 = to be generated, one mask per frame.",
        "Rendered depth, encoded as chosen in depth_mode.",
    )
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "cameras": socket_in(T.CAMERAS, "Camera path; camera i shows the tracks at its time (frame i of a "
                                     "MoGe4D path)."),
                "prompt": str_in("", "What the scene shows, for the video inpainter.", multiline=True),
                "negative_prompt": str_in("", "What the inpainted holes should avoid.", multiline=True),
                "strength": float_in(VISM_INPAINT_DEFAULTS["strength"], 0.0, 1.0, "Noise level σ the inpainting "
                                     "starts from (the first scheduler step at or below it, not a fraction of the "
                                     "steps); 1 (official) generates the holes from pure noise."),
                "steps": int_in(VISM_INPAINT_DEFAULTS["steps"], 1, 200, "Denoising steps (official: 50)."),
                "guidance_scale": float_in(VISM_INPAINT_DEFAULTS["guidance_scale"], 0.0, 30.0,
                                           "Classifier-free guidance scale (official: 6).", step=0.1),
                "lora_strength": float_in(VISM_INPAINT_DEFAULTS["lora_strength"], 0.0, 2.0,
                                          "Weight of the 4D-ViSM LoRA when the inpainting model carries it "
                                          "(official: 0.55)."),
                "footprint_scale": float_in(_DEFAULTS.footprint_scale, 0.05, 4.0, "Splat size in input-image pixels "
                                            "(std = scale x depth / focal). Raise it for paths that move closer "
                                            "to the scene.", step=0.05),
                "edge_threshold": float_in(_DEFAULTS.edge_threshold, 0.001, 1.0, "Relative depth jump between "
                                           "neighbouring pixels that counts as an occlusion edge.", step=0.005),
                "alpha_threshold": float_in(_DEFAULTS.alpha_threshold, 0.05, 0.99, "Pixels covered by less splat "
                                            "opacity than this are holes.", step=0.05),
                "depth_mode": combo_in(DEPTH_MODES, "Depth encoding of the depth output."),
                "seed": seed_in("Seed of the inpainting noise."),
            },
            "optional": {
                "tracks": socket_in(T.TRACKS, "Dense 4D tracks (from Gen4D Trajectory DiT or a synthetic world)."),
                "scene": socket_in(T.SCENE, "Any 4D scene, used when no tracks are connected."),
                "video_inpaint_model": socket_in(T.VIDEO_INPAINT_MODEL, "Fills the holes; leave empty for the raw "
                                                 "render."),
                "parallel": socket_in(T.PARALLEL, "Gen4D Parallel Options: inpaint on several GPUs of this machine "
                                      "(sequence parallel; Wan2.1-Fun InP models). Unconnected: one GPU."),
            },
        }

    def render(self, cameras, prompt, negative_prompt, strength, steps, guidance_scale, lora_strength,
               footprint_scale, edge_threshold, alpha_threshold, depth_mode, seed, tracks=None, scene=None,
               video_inpaint_model=None, parallel=None):
        node = "Gen4D_ViSMRender"
        if not isinstance(cameras, Cameras):
            raise ValueError(f"{node}: cameras must be GEN4D_CAMERAS, got {type(cameras).__name__}")
        if tracks is not None and not isinstance(tracks, Tracks):
            raise ValueError(f"{node}: tracks must be GEN4D_TRACKS, got {type(tracks).__name__}")
        if tracks is None and scene is not None and not isinstance(scene, Scene4D):
            raise ValueError(f"{node}: scene must be GEN4D_SCENE, got {type(scene).__name__}")
        source = tracks if tracks is not None else scene
        if source is None:
            raise ValueError(f"{node}: connect tracks (GEN4D_TRACKS) or a scene (GEN4D_SCENE)")
        if video_inpaint_model is not None and not callable(getattr(video_inpaint_model, "inpaint", None)):
            raise ValueError(f"{node}: video_inpaint_model must be a GEN4D_VIDEO_INPAINT_MODEL, got "
                             f"{type(video_inpaint_model).__name__}")
        if parallel is not None and not isinstance(parallel, ParallelOptions):
            raise ValueError(f"{node}: parallel must be a GEN4D_PARALLEL from Gen4D Parallel Options, got "
                             f"{type(parallel).__name__}")
        runs_parallel = getattr(video_inpaint_model, "run_parallel", None)
        if parallel is not None and parallel.enabled and video_inpaint_model is not None and runs_parallel is None:
            logger.warning("%s: %s cannot sample on several GPUs; parallel is ignored", node,
                           type(video_inpaint_model).__name__)
        try:
            config = VismConfig(footprint_scale=float(footprint_scale), edge_threshold=float(edge_threshold),
                                alpha_threshold=float(alpha_threshold))
        except ValueError as exc:
            raise ValueError(f"{node}: {exc}") from exc
        device = host.compute_device()
        if tracks is not None:
            source = tracks.to(device)
        inpaint_total = max(int(round(int(steps) * float(strength))), 1) if video_inpaint_model is not None else 0
        total = len(cameras) + inpaint_total
        progress = host.Progress(total)

        def render_fn(scene_, cams):
            out = render_scene(scene_, cams.to(device), device=device)
            return out.rgb, out.alpha, out.depth

        host.raise_if_interrupted()
        with torch.no_grad():
            try:
                result = render_vism(source, cameras.to(device), render_fn, config,
                                     callback=lambda step, _n, preview: progress(step, total, preview),
                                     should_stop=host.should_stop)
            except InterruptedError:
                host.raise_if_interrupted()
                raise
        raw = to_image(result.rgb)
        holes = to_mask(result.holes.float())
        depth = depth_to_image(result.depth[..., None], depth_mode, result.alpha[..., None])
        frames = raw
        if video_inpaint_model is not None:
            _apply_lora(video_inpaint_model, lora_strength)

            def report(step, steps_total=None, preview=None):
                done = int(step) if not steps_total else round(inpaint_total * int(step) / int(steps_total))
                progress(len(cameras) + min(done, inpaint_total), total, preview)

            sharded = runs_parallel(parallel) if runs_parallel is not None else contextlib.nullcontext()
            try:
                with sharded:
                    frames = inpaint_holes(video_inpaint_model, result, cameras.to("cpu"), prompt, negative_prompt,
                                           float(strength), int(steps), float(guidance_scale), int(seed), report,
                                           host.should_stop)
            except InterruptedError:
                host.raise_if_interrupted()
                raise
            finally:
                host.soft_empty_cache()
            frames = to_image(frames)
        return (frames, raw, holes, depth)


class SaveTracks:
    DESCRIPTION = (
        "Save dense 4D tracks under ComfyUI's output folder as a numbered folder of per-frame PLY files: coloured "
        "points (x, y, z + rgb; point n of every file is the same track) that any point-cloud viewer plays, or "
        "the 4D-ViSM splats as standard 3DGS PLYs for splat viewers. The folder is written as a whole (a cancelled "
        "or failed save leaves nothing behind) and never replaces an existing one unless overwrite is on."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = (T.STRING,)
    RETURN_NAMES = ("folder",)
    OUTPUT_TOOLTIPS = ("The folder written, relative to the output folder.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tracks": socket_in(T.TRACKS, "The tracks to save."),
                "filename_prefix": str_in("gen4d/tracks", "Relative name under the output folder; sub-folders "
                                          "allowed, '..' and absolute paths are refused. Each part at most 255 "
                                          "bytes (UTF-8), the last with room for the number."),
                "format": combo_in(("points", "gaussians"), "points: coloured point PLYs; gaussians: the "
                                   "4D-ViSM splats (flat in the local surface) as 3DGS PLYs."),
                "footprint_scale": float_in(_DEFAULTS.footprint_scale, 0.05, 4.0, "Splat size for the gaussians "
                                            "format (std = scale x depth / focal).", step=0.05),
                "overwrite": bool_in(False, "Write <prefix> itself instead of a new numbered folder, replacing a "
                                    "folder of that name once the new one is complete."),
            }
        }

    def save(self, tracks, filename_prefix, format="points", footprint_scale=_DEFAULTS.footprint_scale,
             overwrite=False):
        node = "Gen4D_SaveTracks"
        if not isinstance(tracks, Tracks):
            raise ValueError(f"{node}: tracks must be GEN4D_TRACKS, got {type(tracks).__name__}")
        if format not in ("points", "gaussians"):
            raise ValueError(f"{node}: format must be 'points' or 'gaussians', got {format!r}")
        root = host.output_directory()
        progress = host.Progress(tracks.num_frames)
        if format == "points":
            def write(folder):
                return save_tracks_ply_sequence(tracks.to("cpu"), folder, callback=progress,
                                                should_stop=host.should_stop)
        else:
            scene = tracks_to_scene(tracks.to("cpu"), VismConfig(footprint_scale=float(footprint_scale)),
                                    oriented=True)

            def write(folder):
                return save_ply_sequence(scene, folder, callback=progress, should_stop=host.should_stop)
        try:
            folder, files = save_numbered_folder(root, filename_prefix, write, overwrite=bool(overwrite),
                                                 should_stop=host.should_stop)
        except InterruptedError:
            host.raise_if_interrupted()
            raise
        except ValueError as exc:
            raise ValueError(f"{node}: filename_prefix {shown_name(filename_prefix)}: {exc}") from exc
        rel = os.path.relpath(folder, root)
        text = f"saved {len(files)} PLY frames of {tracks.num_valid} tracks to {rel}"
        logger.info(text)
        return {"ui": {"text": [text]}, "result": (rel,)}


NODES = {
    "Gen4D_ViSMRender": (ViSMRender, "Gen4D ViSM Render (MoGe4D)"),
    "Gen4D_SaveTracks": (SaveTracks, "Gen4D Save Tracks"),
}
