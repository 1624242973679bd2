# SPDX-License-Identifier: Apache-2.0
"""Gen4D_ProgressiveOutpaint: CoCo4D's dynamic background (§3.2) as one node.

Public API:
    ProgressiveOutpaint     node ``Gen4D_ProgressiveOutpaint``: background video + hole masks + models
                            -> background GEN4D_SCENE, curated pose videos, report
    NODES

Design notes:
    A thin wrapper of :func:`core.coco4d.outpaint.progressive_outpaint`: widgets map onto
    :class:`core.coco4d.outpaint.OutpaintConfig` (defaults read from it), the fits render with
    ``backends.render.training_render`` on ComfyUI's compute device, progress covers every fit step
    of every stage with previews, and the ComfyUI interrupt stops the run within a step.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..backends.render import training_render
from ..core.coco4d.outpaint import OutpaintConfig, format_pose_sets, parse_pose_sets, progressive_outpaint
from ..core.engine.cameras import Cameras
from ..core.formats.convert import check_image, check_mask
from . import host
from . import types as T
from .widgets import float_in, int_in, seed_in, socket_in, str_in

__all__ = ["ProgressiveOutpaint", "NODES"]

logger = logging.getLogger(__name__)

NODE = "Gen4D_ProgressiveOutpaint"
_C = OutpaintConfig()


def _pose_error(pose_sets, loops) -> bool | str:
    if pose_sets is None:
        return True
    try:
        sets = parse_pose_sets(pose_sets)
    except ValueError as exc:
        return f"{NODE}: {exc}"
    if loops is not None and int(loops) > len(sets):
        return f"{NODE}: loops is {loops} but pose_sets defines {len(sets)} loop(s) (separate loops with '|')"
    return True


class ProgressiveOutpaint:
    DESCRIPTION = (
        "CoCo4D dynamic background (§3.2): fills the holes the removed foreground left in the background video, "
        "lifts frame 0 into 3D Gaussians with the depth model (at lift_size²), refines them at the seen view, "
        "animates them with a deformation field fitted to the video, then runs inpaint-project-optimize loops: "
        "at each outpaint pose the animated scene is rendered, its holes are filled (image inpaint of frame 0 "
        "with the prompt, copy-paste into every frame, refined by the video inpainter from the pasted region noised "
        "in its latent space), the new pixels "
        "become Gaussians with depth aligned to the rendered depth, and the scene is refit on the reference "
        "and every curated video. Poses whose render is already complete are skipped (see the report)."
    )
    CATEGORY = f"{T.CATEGORY}/coco4d"
    RETURN_TYPES = (T.SCENE, T.IMAGE, T.STRING)
    RETURN_NAMES = ("background", "pose_videos", "report")
    OUTPUT_TOOLTIPS = (
        "The outpainted, animated background: one part 'background' (canonical Gaussians + deformation field).",
        "Every curated pose video (eq. 7's output), concatenated in the order they were made; the filled "
        "reference video when no pose needed outpainting.",
        "Per pose: hole fraction before/after, skipped or not, Gaussians added; timings per stage; warnings.",
    )
    FUNCTION = "outpaint"
    PAIRED_INPUTS = (("background", "hole_mask"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "background": socket_in(T.IMAGE, "Background video [T,H,W,3] with the foreground removed (e.g. "
                                        "SAM2 Split's background frames)."),
                "hole_mask": socket_in(T.MASK, "Where the background is unknown, one mask per frame (1 = hole: "
                                       "where the foreground was removed)."),
                "depth_model": socket_in(T.DEPTH_MODEL, "Monocular depth model (relative or metric) for the lift "
                                         "and the projection of new pixels."),
                "inpaint_model": socket_in(T.INPAINT_MODEL, "Image inpainter (SD / SDXL inpainting) for frame 0 "
                                           "of every outpaint pose."),
                "video_inpaint_model": socket_in(T.VIDEO_INPAINT_MODEL, "Video inpainter refining the pasted "
                                                 "pseudo videos (eq. 7)."),
                "prompt": str_in("", "What the outpainted background should show.", multiline=True),
                "negative_prompt": str_in("", "What to avoid in the outpainted regions.", multiline=True),
                "loops": int_in(_C.loops, 0, 16, "Inpaint-project-optimize loops (CoCo4D: 2); each uses the next "
                                "pose set."),
                "pose_sets": str_in(format_pose_sets(_C.pose_sets), "Outpaint poses 'elevation,azimuth' in degrees "
                                    "relative to the seen view, ';' between poses, '|' between loops (CoCo4D App. A "
                                    "default)."),
                "static_iterations": int_in(_C.static_iterations, 0, 100000, "Seen-view refinement steps after "
                                            "the lift (CoCo4D Tab. 4: 300)."),
                "deformation_iterations": int_in(_C.deformation_iterations, 0, 100000, "First deformation fit on "
                                                 "the reference video (Tab. 4: 300)."),
                "static_iterations_per_pose": int_in(_C.static_iterations_per_pose, 0, 100000, "Static refit "
                                                     "steps after each curated pose (Tab. 4: 300)."),
                "deformation_iterations_per_pose": int_in(_C.deformation_iterations_per_pose, 0, 100000,
                                                          "Deformation refit steps after each curated pose "
                                                          "(Tab. 4: 300 per camera pose)."),
                "paste_noise_ratio": float_in(_C.paste_noise_ratio, 0.0, 1.0, "Noise ratio r of the pasted "
                                              "regions of the pseudo video (eq. 7: 0.5), added by the video "
                                              "inpainter in its latent space ((1-r)·latent + r·noise) while the "
                                              "known regions stay clean; at most video_inpaint_strength."),
                "video_inpaint_strength": float_in(_C.video_inpaint_strength, 0.0, 1.0, "Noise level σ the video "
                                                   "inpainter's refinement starts at (CoCo4D τ: 0.7): the first "
                                                   "scheduler step whose σ is at most this. A noise level, no "
                                                   "longer a fraction of the steps (on Wan's shifted schedule the "
                                                   "old 0.7 started at σ 0.875). 0 skips the refinement."),
                "inpaint_steps": int_in(_C.inpaint_steps, 1, 200, "Denoising steps of the image inpainter."),
                "video_inpaint_steps": int_in(_C.video_inpaint_steps, 1, 200, "Scheduler steps of a full video "
                                              "inpainter run (from pure noise); those below the start level run."),
                "fov": float_in(_C.fovy_deg, 1.0, 179.0, "Vertical field of view of the default seen view in "
                                "degrees (CoCo4D: 60); ignored when cameras are given (the node says so when "
                                "they differ). The scene records the cameras used.", step=0.1),
                "lift_size": int_in(_C.lift_size, 8, 4096, "Frame 0 and new pixels are lifted at most at this "
                                    "size² (CoCo4D: 256, bounding the Gaussian count); training uses full size."),
                "orbit_radius_fraction": float_in(_C.orbit_radius_fraction, 0.0, 10.0, "The poses turn about a "
                                                  "pivot this fraction of the median scene depth ahead of the seen "
                                                  "view (0 = turn the camera in place)."),
                "sds_weight": float_in(_C.sds_weight, 0.0, 1000.0, "Weight of the guidance (SDS, eq. 6) when a "
                                       "guidance model is connected.", step=1e-5),
                "fps": float_in(_C.fps, 0.1, 240.0, "Frame rate stored with the scene.", step=0.1),
                "seed": seed_in(),
            },
            "optional": {
                "guidance": socket_in(T.GUIDANCE_MODEL, "Score-distillation guidance (Stable Diffusion in CoCo4D) "
                                      "for the static refinements."),
                "cameras": socket_in(T.CAMERAS, "The seen view (one camera or one per frame). Default: identity "
                                     "pose, vertical field of view 'fov'."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, pose_sets=None, loops=None):
        return _pose_error(pose_sets, loops)

    def outpaint(self, background, hole_mask, depth_model, inpaint_model, video_inpaint_model, prompt,
                 negative_prompt, loops, pose_sets, static_iterations, deformation_iterations,
                 static_iterations_per_pose, deformation_iterations_per_pose, paste_noise_ratio,
                 video_inpaint_strength, inpaint_steps, video_inpaint_steps, fov, lift_size, orbit_radius_fraction,
                 sds_weight, fps, seed, guidance=None, cameras=None):
        frames = check_image(background, f"{NODE}.background")
        masks = check_mask(hole_mask, f"{NODE}.hole_mask")
        if masks.shape[0] not in (1, frames.shape[0]):
            raise ValueError(f"{NODE}: background has {frames.shape[0]} frames but hole_mask has {masks.shape[0]} "
                             f"masks; expected one mask per frame (or one for all)")
        if tuple(masks.shape[1:]) != tuple(frames.shape[1:3]):
            raise ValueError(f"{NODE}: hole_mask is {masks.shape[2]}x{masks.shape[1]} but background is "
                             f"{frames.shape[2]}x{frames.shape[1]}")
        if cameras is not None and not isinstance(cameras, Cameras):
            raise TypeError(f"{NODE}: cameras must be a GEN4D_CAMERAS, got {type(cameras).__name__}")
        error = _pose_error(pose_sets, loops)
        if error is not True:
            raise ValueError(error)
        try:
            config = replace(
                _C, pose_sets=parse_pose_sets(pose_sets), loops=int(loops), static_iterations=int(static_iterations),
                deformation_iterations=int(deformation_iterations),
                static_iterations_per_pose=int(static_iterations_per_pose),
                deformation_iterations_per_pose=int(deformation_iterations_per_pose),
                paste_noise_ratio=float(paste_noise_ratio), video_inpaint_strength=float(video_inpaint_strength),
                inpaint_steps=int(inpaint_steps), video_inpaint_steps=int(video_inpaint_steps), fovy_deg=float(fov),
                lift_size=int(lift_size), orbit_radius_fraction=float(orbit_radius_fraction),
                sds_weight=float(sds_weight), fps=float(fps), seed=int(seed) % (2**63))
        except ValueError as exc:
            raise ValueError(f"{NODE}: {exc}") from exc
        host.raise_if_interrupted()
        progress = host.Progress(config.total_steps())
        device = host.compute_device()
        if callable(getattr(depth_model, "to", None)):
            depth_model.to(device)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                try:
                    result = progressive_outpaint(
                        frames, masks, depth_model, inpaint_model, video_inpaint_model, training_render,
                        cameras=cameras, guidance=guidance, prompt=prompt, negative_prompt=negative_prompt,
                        config=config, callback=progress, should_stop=host.should_stop, device=device)
                except InterruptedError:
                    host.raise_if_interrupted()
                    raise
                if result.stopped:
                    host.raise_if_interrupted()
                scene = result.scene.to("cpu")
        finally:
            if callable(getattr(depth_model, "offload", None)):
                depth_model.offload()
            host.soft_empty_cache()
        videos = [v.frames for v in result.pose_videos] or [result.reference]
        pose_videos = torch.cat(videos).float().clamp(0, 1).contiguous()
        report = result.report.to_text()
        logger.info("%s\n%s", NODE, report)
        return host.with_notes(NODE, (scene, pose_videos, report), _fov_notes(cameras, float(fov)))


def _fov_notes(cameras: Cameras | None, fov: float) -> list[str]:
    """Say so when the ``fov`` widget was dropped for connected cameras of another field of view."""
    if cameras is None:
        return []
    given = cameras.fovy_deg
    if (given - fov).abs().max() <= 0.05:
        return []
    return [f"fov {fov:g}° is not used: the connected cameras set the field of view ({float(given[0]):.4g}°); the "
            "scene records those cameras, so Compose, Render and Preview use them too."]


NODES = {
    NODE: (ProgressiveOutpaint, "Gen4D Progressive Outpaint (CoCo4D background)"),
}
