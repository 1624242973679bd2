# SPDX-License-Identifier: Apache-2.0
"""CoCo4D's dynamic background: depth lift, seen-view refinement and progressive outpaint (§3.2).

Public API:
    OutpaintConfig                  settings with the paper's defaults (App. A, Table 4)
    progressive_outpaint(...)       background video + hole masks -> OutpaintResult (Scene4D + report + videos)
    OutpaintResult, OutpaintReport, PoseReport, PoseVideo   what it returns
    outpaint_cameras(reference, poses, radius, times)       the cameras of one pose set about the scene centre
    parse_pose_sets(text) / format_pose_sets(sets)          "0,30; 0,-30 | 15,30" <-> ((el, az), ...) per loop
    DEFAULT_POSE_SETS               App. A: loop 1 (0,±30), (±15,0); loop 2 (±15,±30)
    fill_video_holes(...)           eq. 7: image-inpaint frame 0, copy-paste, latent-noised video-inpaint
    hole_mask(alpha, threshold, dilation)   rendered coverage -> hole mask (1 = unknown)

Design notes:
    Stages (every model call sits inside ``core.engine.viewpoint.seen_from(cameras, "background")``):

    1. *Reference holes.* The background frames lack the removed foreground. Their holes are filled
       with the same eq. 7 procedure as the outpaint poses (image-inpaint frame 0, paste its fill
       into every frame's hole, noise the pasted pixels, video-inpaint), so the lift sees a complete
       background.
    2. *Lift* (§3.2 "3D Background Scene Initialization", App. A). Frame 0 is resized to at most
       ``lift_size``² (256², the paper's memory bound), its depth predicted at that size and every
       pixel back-projected into one Gaussian (``gaussians.from_depth``). Metric depth is used as it
       is; relative disparity becomes ``1/d`` scaled so its median is ``relative_depth_median``.
       NaN/inf or non-positive depth pixels are left out with a warning (an error if none is left).
    3. *Seen-view refinement*, eqs. 5–6: ``fit_static`` on frame 0 at full resolution, L2 plus
       optional SDS at the seen view, Table 4 rates, scale clamp 0.2, densification every 100.
    4. *Deformation* (§3.2 first iteration): a HexPlane field fitted to the whole reference video
       with L1 + the 4DGS plane regularisers (TV, time smoothness, time L1); canonical Gaussians
       train too (Table 4: deformation lr 0.0064, grid lr 0.064). The field's bounds cover the lift
       *and* the frustums of every outpaint pose between the lift's near and far depth, so the
       Gaussians added later stay inside the planes.
    5. *Progressive outpaint.* For each loop and each pose of its set: render the deformed scene at
       the pose for every frame time (video + hole mask where alpha < ``hole_alpha``); skip the pose
       when its hole fraction is below ``skip_hole_fraction`` (reported); otherwise eq. 7 gives the
       curated pose video; frame 0's hole pixels are lifted with depth continuous with the render
       (``core.coco4d.depth_align``: robust scale/shift alignment of the depth model's prediction on the
       known pixels in its native space + seam blend, or a learned ``depth_inpaint_fn``), moved to
       canonical space by inverting the field at ``t0``, and appended; then the static set is refit
       (L1 + optional SDS, eq. 5–6 with the curated frames as references) on frame 0 of the reference
       and of every curated video, and the field (continued, not restarted: §4 "resume training")
       on the reference video plus every curated video: ``*_iterations_per_pose`` (Table 4: 300).

    Outpaint poses: CoCo4D turns the camera "with a default radius around the coordinate centre".
    Here the centre is a pivot on the reference camera's optical axis at distance ``radius`` and
    the pose (elevation 0, azimuth 0) is the reference camera itself; ``radius`` is
    ``orbit_radius`` when given, else ``orbit_radius_fraction`` times the median lifted depth
    (default 0.25: a quarter of the way to the typical surface, enough parallax to uncover
    disocclusions while the camera stays well inside the lifted scene; 0 turns the camera in place).

    Eq. 7's two noise levels (§4.1), both in the video model's latent space and both noise levels
    σ of its flow-matching forward process ``(1 - σ) z + σ ε``: the pasted regions of the pseudo
    video are noised to ``paste_noise_ratio`` (0.5) while the known latents stay clean, and the
    refinement starts at noise level ``video_inpaint_strength`` (τ = 0.7: the first scheduler step
    whose σ is at most τ). The pseudo video itself is handed over clean (``copy_paste``; the
    backends do the noising: ``backends.wan``). Known pixels are never changed.

    Score distillation (eq. 6) goes through ``fit_static``'s pose sampling, which draws orbit
    poses about a centre: the seen view is reproduced exactly as the orbit pose of the reference
    camera about the pivot (roll-free cameras); refits sample the elevations the curated poses
    span at the reference azimuth.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..engine.cameras import Cameras
from ..engine.fit_static import RenderFn
from ..engine.guidance import Guidance
from .copy_paste import fill_video_holes, hole_mask
from .depth_align import DepthInpaintFn
from .outpaint_config import DEFAULT_POSE_SETS, OutpaintConfig, format_pose_sets, parse_pose_sets
from .outpaint_stages import (
    OutpaintReport,
    OutpaintResult,
    PoseReport,
    PoseVideo,
    fill_reference_holes,
    finish,
    fit_reference_motion,
    lift_reference,
    outpaint_cameras,
    outpaint_pose,
    refine_seen_view,
    start_outpaint,
)

__all__ = [
    "OutpaintConfig",
    "OutpaintResult",
    "OutpaintReport",
    "PoseReport",
    "PoseVideo",
    "progressive_outpaint",
    "outpaint_cameras",
    "parse_pose_sets",
    "format_pose_sets",
    "fill_video_holes",
    "hole_mask",
    "DEFAULT_POSE_SETS",
]

def progressive_outpaint(
    frames: Tensor,
    hole_masks: Tensor,
    depth_model,
    image_inpainter,
    video_inpainter,
    render_fn: RenderFn,
    cameras: Cameras | None = None,
    guidance: Guidance | None = None,
    prompt: str = "",
    negative_prompt: str = "",
    config: OutpaintConfig | None = None,
    depth_kind: str | None = None,
    depth_inpaint_fn: DepthInpaintFn | None = None,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
) -> OutpaintResult:
    """CoCo4D §3.2: a dynamic, outpainted 3D background from a background video with holes.

    Args:
        frames: ``[T,H,W,3]`` background frames in 0..1 (the foreground removed).
        hole_masks: ``[T,H,W]`` (or ``[1,H,W]``), 1 where the content is unknown (the removed foreground).
        depth_model: ``predict(images [B,H,W,3]) -> [B,H,W]`` with ``kind`` relative disparity or metric.
        image_inpainter: ``inpaint(image [H,W,3], mask [H,W], prompt, negative_prompt, strength, steps,
            guidance_scale, seed) -> [H,W,3]``.
        video_inpainter: ``inpaint(frames, masks, prompt, negative_prompt, strength, steps, guidance_scale,
            seed) -> [T,H,W,3]``.
        render_fn: the fits' renderer (``backends.render.training_render``).
        cameras: the seen view (one camera or one per frame); default identity pose, fovy ``config.fovy_deg``.
        guidance: optional SDS guidance (Stable Diffusion in the paper, eq. 6).
        prompt, negative_prompt: inpainting text.
        config: settings (paper defaults).
        depth_kind: overrides ``depth_model.kind``.
        depth_inpaint_fn: a learned depth-inpainting backend replacing alignment + seam blend.
        callback: ``callback(step, total, preview)`` over the whole run.
        should_stop: polled by every fit step and between stages.
        device: where to optimise (default CPU).

    Returns:
        :class:`OutpaintResult`.

    Raises:
        ValueError: bad frames / masks / cameras, a mask covering all of frame 0, a depth model
            without a usable depth, a diverged fit.
        InterruptedError: stopped before any scene existed (while filling the reference holes); a
            later stop returns the partial result with ``stopped=True``.
    """
    state = start_outpaint(frames, hole_masks, depth_model, image_inpainter, video_inpainter, render_fn, cameras,
                           guidance, prompt, negative_prompt, config, depth_kind, depth_inpaint_fn, callback,
                           should_stop, device)
    fill_reference_holes(state)
    lift_reference(state)
    if refine_seen_view(state) or fit_reference_motion(state):
        return finish(state, stopped=True)
    for loop, (poses, cams_list) in enumerate(zip(state.cfg.active_pose_sets, state.loop_cameras), start=1):
        for index, (pose, cams) in enumerate(zip(poses, cams_list), start=1):
            if outpaint_pose(state, loop, index, pose, cams):
                return finish(state, stopped=True)
    return finish(state, stopped=False)
