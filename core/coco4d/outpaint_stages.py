# SPDX-License-Identifier: Apache-2.0
"""The stages of CoCo4D's progressive outpaint (§3.2), each a function over one :class:`OutpaintState`.

Public API:
    start_outpaint(...)             check the inputs and build the state of a run
    fill_reference_holes(state)     stage 1: eq. 7 on the seen view
    lift_reference(state)           stage 2: frame 0 back-projected with the depth model
    refine_seen_view(state)         stage 3: static refit at the seen view (eqs. 5-6)
    fit_reference_motion(state)     stage 4: the deformation field on the reference video
    outpaint_pose(state, ...)       stage 5, once per pose: render, eq. 7, project, refit
    refit_first_frames(state, ...), refit_motion(state, ...)   the two refits of stage 5
    finish(state, stopped)          the scene and report so far as an :class:`OutpaintResult`
    OutpaintState, OutpaintModels   what the stages share
    OutpaintResult, OutpaintReport, PoseReport, PoseVideo   what a run returns
    outpaint_cameras(reference, poses, radius, times)       the cameras of one pose set

Stages that fit return True when a stop was requested during them; the caller then ends the run
with ``finish(state, stopped=True)``. ``core.coco4d.outpaint`` explains each stage against the paper.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..engine.cameras import Cameras, clip_cameras, orbit_poses
from ..engine.deformation import Deformation, DeformationMotion, time_samples_for
from ..engine.fit_dynamic import fit_deformation
from ..engine.fit_static import RenderFn, fit_static
from ..engine.gaussians import Gaussians, from_depth
from ..engine.guidance import Guidance, PoseSampling, orbit_angles
from ..engine.losses import ReconstructionLoss
from ..engine.scene import Scene4D, ScenePart
from ..engine.viewpoint import seen_from
from ..engine.views import PosedImages
from ..formats.depth import DEPTH_KINDS, METRIC_DEPTH, to_z_depth
from .copy_paste import StageStopped, dilate_mask, fill_video_holes, resize_images
from .depth_align import DepthInpaintFn, inpaint_depth
from .outpaint_config import OutpaintConfig, Pose

__all__ = [
    "OutpaintModels",
    "OutpaintState",
    "OutpaintResult",
    "OutpaintReport",
    "PoseReport",
    "PoseVideo",
    "start_outpaint",
    "fill_reference_holes",
    "lift_reference",
    "refine_seen_view",
    "fit_reference_motion",
    "outpaint_pose",
    "refit_first_frames",
    "refit_motion",
    "finish",
    "outpaint_cameras",
]

logger = logging.getLogger(__name__)

# Eqs. 5-6: L2 on the seen view for the first refinement, L1 for the refits after each pose.
SEEN_VIEW_LOSS = ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0, mask=0.0)
REFIT_LOSS = ReconstructionLoss(l1=1.0, l2=0.0, dssim=0.0, mask=0.0)


@dataclass
class PoseReport:
    """What happened at one outpaint pose."""

    loop: int
    index: int
    elevation: float
    azimuth: float
    hole_before: float
    hole_after: float | None = None
    skipped: bool = False
    note: str = ""
    new_gaussians: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class OutpaintReport:
    """Per-pose hole fractions, skips, Gaussian counts and stage timings of one run."""

    poses: list[PoseReport] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reference_hole_fraction: float = 0.0
    lift_gaussians: int = 0
    final_gaussians: int = 0
    radius: float = 0.0
    depth_kind: str = ""
    stopped: bool = False

    def add_time(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + float(seconds)

    def warn(self, message: str) -> None:
        logger.warning(message)
        self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "poses": [vars(p) | {"seconds": dict(p.seconds)} for p in self.poses],
            "stages": dict(self.stages), "warnings": list(self.warnings),
            "reference_hole_fraction": self.reference_hole_fraction, "lift_gaussians": self.lift_gaussians,
            "final_gaussians": self.final_gaussians, "radius": self.radius, "depth_kind": self.depth_kind,
            "stopped": self.stopped,
        }

    def to_text(self) -> str:
        lines = [f"CoCo4D progressive outpaint{' (stopped early)' if self.stopped else ''}",
                 f"reference hole fraction {self.reference_hole_fraction:.4f}; depth kind {self.depth_kind}; "
                 f"orbit radius {self.radius:.4g}",
                 f"Gaussians: {self.lift_gaussians} lifted -> {self.final_gaussians} final"]
        for p in self.poses:
            head = f"loop {p.loop} pose {p.index} (el {p.elevation:g}, az {p.azimuth:g}): hole {p.hole_before:.4f}"
            if p.skipped:
                lines.append(f"{head} -> skipped ({p.note})")
            else:
                after = "n/a" if p.hole_after is None else f"{p.hole_after:.4f}"
                lines.append(f"{head} -> {after}, +{p.new_gaussians} Gaussians"
                             f"{'; ' + p.note if p.note else ''}; {sum(p.seconds.values()):.1f} s")
        lines.append("stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.stages.items()))
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class PoseVideo:
    """A curated pose video (eq. 7's output) with its cameras and the holes that were filled."""

    frames: Tensor
    cameras: Cameras
    holes: Tensor
    loop: int
    elevation: float
    azimuth: float


@dataclass
class OutpaintResult:
    """Output of :func:`progressive_outpaint`.

    Attributes:
        scene: ``Scene4D`` with one part "background" moved by a ``DeformationMotion``.
        report: :class:`OutpaintReport`.
        pose_videos: the curated videos in the order they were made.
        reference: ``[T,H,W,3]`` the reference background video with its holes filled.
        cameras: the reference cameras used.
        stopped: True when ``should_stop`` (or an interrupted model) ended the run early.
    """

    scene: Scene4D
    report: OutpaintReport
    pose_videos: list[PoseVideo]
    reference: Tensor
    cameras: Cameras
    stopped: bool = False



def _relative_orbit(poses: Sequence[Pose], radius: float) -> Tensor:
    """``[P,4,4]`` transforms from the seen camera's frame to each pose's camera frame.

    The pivot sits ``radius`` ahead of the seen camera; pose (0, 0) is the identity.
    """
    el = [p[0] for p in poses]
    az = [p[1] for p in poses]
    center = (0.0, 0.0, float(radius))
    vm = orbit_poses(el, az, float(radius), center)
    ref = orbit_poses([0.0], [0.0], float(radius), center)[0]
    return vm @ torch.linalg.inv(ref)


def outpaint_cameras(reference: Cameras, poses: Sequence[Pose], radius: float, times: Tensor | None = None) -> list[
        Cameras]:
    """For each ``(elevation, azimuth)``: cameras at that pose about the pivot, one per time.

    Args:
        reference: the seen view (its first camera defines the pose frame, size and intrinsics).
        poses: angles in degrees relative to the seen view.
        radius: pivot distance ahead of the seen camera.
        times: ``[T]`` times (default: ``reference.times``).
    """
    times = reference.times if times is None else times
    rel = _relative_orbit(poses, radius)
    base = reference.viewmats[0].cpu()
    out = []
    for i in range(len(poses)):
        vm = (rel[i] @ base).expand(len(times), 4, 4).clone()
        out.append(Cameras(vm, reference.Ks[0].cpu().expand(len(times), 3, 3).clone(), reference.width,
                           reference.height, times.cpu().float(), reference.near, reference.far))
    return out



class Progress:
    """Maps stage-local progress onto one bar over the whole run."""

    def __init__(self, callback: Callable | None, total: int):
        self.callback, self.total, self.offset = callback, max(int(total), 1), 0

    def stage(self) -> Callable | None:
        if self.callback is None:
            return None
        base = self.offset

        def report(step: int, _total: int | None = None, preview: Tensor | None = None) -> None:
            self.callback(min(base + int(step), self.total), self.total, preview)

        return report

    def advance(self, length: int, preview: Tensor | None = None) -> None:
        self.offset = min(self.offset + int(length), self.total)
        if self.callback is not None:
            self.callback(self.offset, self.total, preview)


def _check_inputs(frames: Any, holes: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"progressive_outpaint: frames must be a non-empty [T,H,W,3] video, got {got}")
    if not torch.isfinite(frames).all():
        raise ValueError("progressive_outpaint: frames hold NaN or inf values")
    t, h, w = frames.shape[:3]
    if not isinstance(holes, Tensor) or holes.dim() != 3:
        got = tuple(holes.shape) if isinstance(holes, Tensor) else type(holes).__name__
        raise ValueError(f"progressive_outpaint: hole_masks must be [T,H,W] (1 = unknown), got {got}")
    if tuple(holes.shape[1:]) != (h, w):
        raise ValueError(f"progressive_outpaint: hole_masks are {holes.shape[2]}x{holes.shape[1]} but frames are "
                         f"{w}x{h}; give masks of the frames' size")
    if holes.shape[0] not in (1, t):
        raise ValueError(f"progressive_outpaint: {t} frames but {holes.shape[0]} hole masks; expected one mask "
                         f"per frame (or a single mask for all)")
    if not torch.isfinite(holes).all():
        raise ValueError("progressive_outpaint: hole_masks hold NaN or inf values")
    holes = (holes.detach().float().cpu() > 0.5).expand(t, h, w).clone()
    if bool(holes[0].all()):
        raise ValueError("progressive_outpaint: hole_masks cover all of frame 0, so nothing of the background is "
                         "known to lift; expected 1 only where the foreground was removed")
    return frames.detach().float().cpu().clamp(0.0, 1.0), holes


def _lift(image: Tensor, camera: Cameras, depth_model, kind: str, cfg: OutpaintConfig,
          report: OutpaintReport) -> tuple[Gaussians, Tensor]:
    """Back-project frame 0 at lift resolution; returns the Gaussians and the valid depths."""
    h, w = image.shape[:2]
    lh, lw = min(cfg.lift_size, h), min(cfg.lift_size, w)
    small = resize_images(image[None], lh, lw)[0].clamp(0, 1)
    cam = camera.resized(lw, lh)
    with seen_from(cam, content="background"):
        raw = depth_model.predict(small[None])
    raw = torch.as_tensor(raw).detach().float().cpu()
    raw = raw.reshape(-1, *raw.shape[-2:])[0]
    if tuple(raw.shape) != (lh, lw):
        raw = resize_images(raw[None], lh, lw, mode="bilinear")[0]
    finite = torch.isfinite(raw)
    valid = finite & (raw > 0)
    bad_values = int((~finite).sum())
    if bad_values:
        report.warn(f"depth model returned {bad_values} NaN/inf pixels of {lh * lw} on the reference frame; "
                    f"they are left out of the lift")
    empty = int((finite & (raw <= 0)).sum())
    if empty:
        logger.info("lift: %d pixels without depth (sky / infinitely far) are left out", empty)
    if not valid.any():
        raise ValueError("progressive_outpaint: the depth model gave no finite positive depth on the reference "
                         "frame; nothing can be lifted (check the depth model and the frames)")
    z = torch.where(valid, to_z_depth(raw, kind), torch.ones_like(raw))
    if kind != METRIC_DEPTH:
        z = z * (cfg.relative_depth_median / z[valid].median())
    c2w = cam.camtoworlds[0]
    gaussians = from_depth(z, cam.Ks[0], small, camtoworld=c2w, mask=valid, scale_factor=cfg.lift_scale_factor)
    return gaussians, z[valid]


def _field_bounds(means: Tensor, depths: Tensor, pose_cameras: list[Cameras], margin: float = 0.1):
    """Box around the lifted centres and every pose frustum between the lift's near and far depth."""
    near = float(torch.quantile(depths, 0.02)) if depths.numel() > 1 else float(depths.max())
    far = float(depths.max())
    pts = [means.detach().cpu()]
    for cams in pose_cameras:
        K, c2w = cams.Ks[0], cams.camtoworlds[0]
        w, h = cams.width, cams.height
        corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]])
        rays = torch.stack([(corners[:, 0] - K[0, 2]) / K[0, 0], (corners[:, 1] - K[1, 2]) / K[1, 1],
                            torch.ones(4)], -1)
        for z in (near, far):
            pts.append((rays * z) @ c2w[:3, :3].T + c2w[:3, 3])
    allp = torch.cat(pts)
    lo, hi = allp.min(0).values, allp.max(0).values
    pad = margin * float((hi - lo).max())
    return tuple((lo - pad).tolist()), tuple((hi + pad).tolist())


def _render_video(canonical: Gaussians, motion: DeformationMotion, cameras: Cameras, render_fn: RenderFn,
                  device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Un-premultiplied rgb ``[T,H,W,3]``, alpha ``[T,H,W]``, depth ``[T,H,W]`` of the deformed scene (CPU)."""
    cams = cameras.to(device)
    bg = torch.zeros(3, device=device)
    with torch.no_grad():
        deformed = motion.apply_batch(canonical, cams.times)
        outs = [render_fn(g, cams[i: i + 1], bg) for i, g in enumerate(deformed)]
    rgb = torch.cat([o.rgb for o in outs]).float().cpu()
    alpha = torch.cat([o.alpha for o in outs])[..., 0].float().cpu()
    depth = torch.cat([o.depth for o in outs])[..., 0].float().cpu()
    rgb = (rgb / alpha[..., None].clamp_min(1e-6)).clamp(0, 1)
    rgb = torch.where(alpha[..., None] > 1e-4, rgb, torch.zeros_like(rgb))
    return rgb, alpha, depth


def _to_canonical(means: Tensor, motion: DeformationMotion, t: float) -> Tensor:
    """Invert the field's displacement at time ``t`` by fixed-point iteration (``x = c + Δ(c, t)``)."""
    field_ = motion.deformation
    if "position" not in field_.heads:
        return means
    with torch.no_grad():
        c = means
        for _ in range(3):
            c = means - field_.deltas(c, float(t))["position"].to(means.dtype)
    return c


def _project_pose(canonical: Gaussians, motion: DeformationMotion, frame0: Tensor, camera: Cameras,
                  depth_model, kind: str, render_fn: RenderFn, cfg: OutpaintConfig, device: torch.device,
                  depth_inpaint_fn: DepthInpaintFn | None, report: OutpaintReport,
                  pose: PoseReport) -> Gaussians | None:
    """New Gaussians for the hole pixels of a curated frame 0 (depth continuous with the render)."""
    h, w = frame0.shape[:2]
    lh, lw = min(cfg.lift_size, h), min(cfg.lift_size, w)
    cam = camera[0:1].resized(lw, lh)
    image = resize_images(frame0[None], lh, lw)[0].clamp(0, 1)
    _, alpha, depth = _render_video(canonical, motion, cam, render_fn, device)
    alpha, depth = alpha[0], depth[0]
    hole = alpha < cfg.hole_alpha
    if not hole.any():
        pose.note = "no hole at lift resolution"
        return None
    known = (alpha >= cfg.known_alpha) & (depth > 0)
    rendered = torch.where(known, depth, torch.zeros_like(depth))
    if depth_inpaint_fn is not None:
        z = torch.as_tensor(depth_inpaint_fn(image, rendered, known)).float().cpu().reshape(lh, lw)
        valid = torch.isfinite(z) & (z > 0)
    else:
        with seen_from(cam, content="background"):
            raw = depth_model.predict(image[None])
        raw = torch.as_tensor(raw).detach().float().cpu()
        raw = raw.reshape(-1, *raw.shape[-2:])[0]
        if tuple(raw.shape) != (lh, lw):
            raw = resize_images(raw[None], lh, lw, mode="bilinear")[0]
        aligned = inpaint_depth(raw, kind, rendered, known, cfg.seam_width)
        if aligned.fallback:
            report.warn(f"loop {pose.loop} pose {pose.index}: depth alignment fell back ({aligned.fallback})")
        z, valid = aligned.depth, aligned.valid
    new = hole & valid
    dropped = int((hole & ~valid).sum())
    if dropped:
        logger.info("loop %d pose %d: %d hole pixels have no usable depth (sky / invalid) and get no Gaussian",
                    pose.loop, pose.index, dropped)
    if not new.any():
        pose.note = "the hole pixels have no usable depth"
        return None
    fresh = from_depth(torch.where(new, z, torch.ones_like(z)), cam.Ks[0], image, camtoworld=cam.camtoworlds[0],
                       mask=new, scale_factor=cfg.lift_scale_factor).to(device)
    means = _to_canonical(fresh.means, motion, float(camera.times[0]))
    return replace(fresh, means=means.detach().clone())


def _clamp_scales(gaussians: Gaussians, max_scale: float) -> Gaussians:
    return replace(gaussians, log_scales=gaussians.log_scales.clamp(max=math.log(max_scale)))


def _sampling(reference: Cameras, radius: float, elevations: Sequence[float]) -> PoseSampling:
    """Guidance poses as orbit poses about the pivot: the seen view (and the given relative elevations)."""
    r = max(float(radius), 1e-3)
    c2w = reference.camtoworlds[0]
    pivot = c2w[:3, 3] + r * c2w[:3, 2]
    el0, az0, _ = orbit_angles(reference[0:1], tuple(pivot.tolist()))
    el0, az0 = float(el0[0]), float(az0[0])
    lo = max(min([el0 + e for e in elevations] + [el0]), -89.0)
    hi = min(max([el0 + e for e in elevations] + [el0]), 89.0)
    fovy = float(reference.fovy_deg[0])
    return PoseSampling(batch=1, radius=r, azimuth_interval_deg=360.0, elevation_range_deg=(lo, hi), fovy_deg=fovy,
                        width=reference.width, height=reference.height, center=tuple(pivot.tolist()),
                        reference_elevation_deg=el0, reference_azimuth_deg=az0)


# -- the state of a run ----------------------------------------------------------------------------


@dataclass
class OutpaintModels:
    """The models and texts a run calls (see :func:`core.coco4d.outpaint.progressive_outpaint`)."""

    depth_model: Any
    image_inpainter: Any
    video_inpainter: Any
    render_fn: RenderFn
    depth_kind: str
    guidance: Guidance | None = None
    depth_inpaint_fn: DepthInpaintFn | None = None
    prompt: str = ""
    negative_prompt: str = ""


@dataclass
class OutpaintState:
    """Everything the stages of one run share: inputs, models, the scene so far and the bookkeeping.

    Attributes:
        frames: ``[T,H,W,3]`` background video in 0..1 (CPU); ``holes``: bool ``[T,H,W]``.
        ref: the seen-view cameras, one per frame.
        reference: ``frames`` with the reference holes filled (stage 1).
        canonical, motion: the Gaussians and their deformation so far (stages 2-5).
        radius, loop_cameras, bounds: the pivot distance, each loop's pose cameras and the field's box (stage 2).
        pose_videos, used_elevations: the curated videos and their elevations (stage 5).
    """

    cfg: OutpaintConfig
    models: OutpaintModels
    frames: Tensor
    holes: Tensor
    ref: Cameras
    device: torch.device
    generator: torch.Generator
    report: OutpaintReport
    progress: Progress
    stop: Callable[[], bool]
    reference: Tensor | None = None
    canonical: Gaussians | None = None
    motion: DeformationMotion | None = None
    radius: float = 0.0
    loop_cameras: list[list[Cameras]] = field(default_factory=list)
    bounds: tuple | None = None
    pose_videos: list[PoseVideo] = field(default_factory=list)
    used_elevations: list[float] = field(default_factory=list)

    @property
    def time_resolution(self) -> int:
        return time_samples_for(self.frames.shape[0], self.cfg.hexplane.time_resolution)

    @property
    def reference_views(self) -> PosedImages:
        return PosedImages(self.reference, self.ref)


def start_outpaint(
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
) -> OutpaintState:
    """Check the inputs of a run (arguments as :func:`progressive_outpaint`) and build its state."""
    cfg = config or OutpaintConfig()
    frames, holes = _check_inputs(frames, hole_masks)
    t_frames, height, width = frames.shape[:3]
    ref = clip_cameras(cameras, t_frames, width, height, cfg.fovy_deg, "progressive_outpaint")
    kind = depth_kind if depth_kind is not None else getattr(depth_model, "kind", None)
    if kind not in DEPTH_KINDS:
        raise ValueError(f"progressive_outpaint: depth model kind must be one of {DEPTH_KINDS}, got {kind!r}")
    for name, model, method in (("depth_model", depth_model, "predict"), ("image_inpainter", image_inpainter,
                                                                           "inpaint"),
                                ("video_inpainter", video_inpainter, "inpaint")):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"progressive_outpaint: {name} must have a {method}() method, got {type(model).__name__}")
    report = OutpaintReport(depth_kind=kind)
    state = OutpaintState(
        cfg=cfg, frames=frames, holes=holes, ref=ref, reference=frames, report=report,
        models=OutpaintModels(depth_model, image_inpainter, video_inpainter, render_fn, kind, guidance,
                              depth_inpaint_fn, prompt, negative_prompt),
        device=torch.device(device) if device is not None else torch.device("cpu"),
        generator=torch.Generator().manual_seed(cfg.seed), progress=Progress(callback, cfg.total_steps()),
        stop=should_stop or (lambda: False))
    report.reference_hole_fraction = float(holes.float().mean())
    if report.reference_hole_fraction > 0.9:
        report.warn(f"hole_masks cover {report.reference_hole_fraction:.0%} of the reference video; the lift will "
                    f"be mostly inpainted content")
    return state


# -- stages ----------------------------------------------------------------------------------------


def fill_reference_holes(state: OutpaintState) -> None:
    """Stage 1: eq. 7 on the seen view, so the lift sees a complete background.

    Raises:
        InterruptedError: stopped here, before any scene exists.
    """
    tic = time.perf_counter()
    cfg, m = state.cfg, state.models
    state.reference = state.frames
    if state.holes.any() and cfg.fill_reference_holes:
        try:
            state.reference, _ = fill_video_holes(state.frames, state.holes, state.ref, m.image_inpainter,
                                                  m.video_inpainter, m.prompt, m.negative_prompt, cfg,
                                                  state.generator, state.stop)
        except StageStopped:
            raise InterruptedError("progressive_outpaint: stopped while filling the reference holes; no scene "
                                   "exists yet") from None
    elif not state.holes.any():
        logger.info("progressive_outpaint: the reference video has no holes; nothing to fill")
    state.report.add_time("reference_fill", time.perf_counter() - tic)


def lift_reference(state: OutpaintState) -> None:
    """Stage 2: frame 0 lifted into Gaussians; sets the pivot radius, the pose cameras and the field's box."""
    tic = time.perf_counter()
    cfg, report = state.cfg, state.report
    lifted, depths = _lift(state.reference[0], state.ref[0:1], state.models.depth_model, state.models.depth_kind,
                           cfg, report)
    report.lift_gaussians = len(lifted)
    median = float(depths.median())
    state.radius = cfg.orbit_radius if cfg.orbit_radius is not None else cfg.orbit_radius_fraction * median
    report.radius = float(state.radius)
    state.loop_cameras = [outpaint_cameras(state.ref, poses, state.radius) for poses in cfg.active_pose_sets]
    state.bounds = _field_bounds(lifted.means, depths, [c for cams in state.loop_cameras for c in cams])
    report.add_time("lift", time.perf_counter() - tic)
    state.canonical = _clamp_scales(lifted.to(state.device), cfg.max_scale)


def refine_seen_view(state: OutpaintState) -> bool:
    """Stage 3 (eqs. 5-6): static refit on frame 0 at the seen view, L2 plus optional SDS. True if stopped."""
    tic = time.perf_counter()
    cfg, m = state.cfg, state.models
    if cfg.static_iterations > 0:
        res = fit_static(state.canonical, state.reference_views.subset([0]), m.render_fn,
                         cfg.static_config(cfg.static_iterations, SEEN_VIEW_LOSS,
                                           _sampling(state.ref, state.radius, []), 1),
                         m.guidance, state.progress.stage(), state.stop, state.device)
        state.canonical = res.gaussians
        if res.stopped:
            return True
    state.progress.advance(cfg.static_iterations)
    state.report.add_time("static_refine", time.perf_counter() - tic)
    return False


def fit_reference_motion(state: OutpaintState) -> bool:
    """Stage 4: a HexPlane field (and the canonical set) fitted to the whole reference video. True if stopped."""
    tic = time.perf_counter()
    cfg = state.cfg
    deformation = Deformation(cfg.field_config(state.bounds, state.time_resolution), state.canonical.detach(),
                              generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.deformation_iterations > 0:
        res = fit_deformation(state.canonical, state.reference_views, state.models.render_fn,
                              cfg.deformation_config(cfg.deformation_iterations, state.time_resolution), None,
                              state.progress.stage(), state.stop, state.device, deformation=deformation)
        state.canonical, state.motion = _clamp_scales(res.gaussians, cfg.max_scale), res.extra["motion"]
        if res.stopped:
            return True
    else:
        state.motion = DeformationMotion(deformation.to(state.device).eval())
    state.progress.advance(cfg.deformation_iterations)
    state.report.add_time("deformation_fit", time.perf_counter() - tic)
    return False


def outpaint_pose(state: OutpaintState, loop: int, index: int, pose: Pose, cams: Cameras) -> bool:
    """Stage 5 at one pose: render, skip if complete, eq. 7, project the new pixels, refit. True if stopped."""
    cfg, m, report = state.cfg, state.models, state.report
    el, az = pose
    if state.stop():
        return True
    entry = PoseReport(loop, index, el, az, hole_before=0.0)
    report.poses.append(entry)
    tic = time.perf_counter()
    rgb, alpha, _ = _render_video(state.canonical, state.motion, cams, m.render_fn, state.device)
    holes_pose = alpha < cfg.hole_alpha
    entry.hole_before = float(holes_pose.float().mean())
    entry.seconds["render"] = time.perf_counter() - tic
    if entry.hole_before <= cfg.skip_hole_fraction:
        entry.skipped, entry.hole_after = True, entry.hole_before
        entry.note = f"render already complete (hole fraction {entry.hole_before:.4f} <= {cfg.skip_hole_fraction:g})"
        logger.info("progressive_outpaint: loop %d pose %d (el %g, az %g) skipped: %s", loop, index, el, az,
                    entry.note)
        state.progress.advance(cfg.static_iterations_per_pose + cfg.deformation_iterations_per_pose)
        return False
    fill = dilate_mask(holes_pose, cfg.hole_dilation)
    try:
        video, first = fill_video_holes(rgb, fill, cams, m.image_inpainter, m.video_inpainter, m.prompt,
                                        m.negative_prompt, cfg, state.generator, state.stop, entry.seconds)
    except StageStopped:
        report.poses.pop()
        return True
    state.pose_videos.append(PoseVideo(video, cams, fill, loop, el, az))
    state.used_elevations.append(el)
    tic = time.perf_counter()
    fresh = _project_pose(state.canonical, state.motion, video[0], cams, m.depth_model, m.depth_kind, m.render_fn,
                          cfg, state.device, m.depth_inpaint_fn, report, entry)
    if fresh is not None:
        entry.new_gaussians = len(fresh)
        state.canonical = Gaussians.cat([state.canonical, _clamp_scales(fresh, cfg.max_scale)])
    entry.seconds["project"] = time.perf_counter() - tic
    if state.stop() or refit_first_frames(state, entry, first) or refit_motion(state, entry):
        return True
    _, alpha_after, _ = _render_video(state.canonical, state.motion, cams, m.render_fn, state.device)
    entry.hole_after = float((alpha_after < cfg.hole_alpha).float().mean())
    for key, value in entry.seconds.items():
        report.add_time(key, value)
    logger.info("progressive_outpaint: loop %d pose %d (el %g, az %g): holes %.4f -> %.4f, +%d Gaussians",
                loop, index, el, az, entry.hole_before, entry.hole_after, entry.new_gaussians)
    return False


def refit_first_frames(state: OutpaintState, entry: PoseReport, preview: Tensor | None = None) -> bool:
    """Static refit (eqs. 5-6, L1 + optional SDS) on frame 0 of the reference and of every curated video."""
    tic = time.perf_counter()
    cfg, m = state.cfg, state.models
    if cfg.static_iterations_per_pose > 0:
        firsts = PosedImages(torch.stack([state.reference[0]] + [v.frames[0] for v in state.pose_videos]),
                             Cameras.cat([state.ref[0:1]] + [v.cameras[0:1] for v in state.pose_videos]))
        res = fit_static(state.canonical, firsts, m.render_fn,
                         cfg.static_config(cfg.static_iterations_per_pose, REFIT_LOSS,
                                           _sampling(state.ref, state.radius, state.used_elevations),
                                           cfg.static_views_per_step),
                         m.guidance, state.progress.stage(), state.stop, state.device)
        state.canonical = res.gaussians
        if res.stopped:
            return True
    state.progress.advance(cfg.static_iterations_per_pose, preview)
    entry.seconds["static_refit"] = time.perf_counter() - tic
    return False


def refit_motion(state: OutpaintState, entry: PoseReport) -> bool:
    """The field refit on the reference plus every curated video, continuing the field (§4 "resume training")."""
    tic = time.perf_counter()
    cfg = state.cfg
    if cfg.deformation_iterations_per_pose > 0:
        views = PosedImages.cat([state.reference_views] + [PosedImages(v.frames, v.cameras) for v in state.pose_videos])
        res = fit_deformation(state.canonical, views, state.models.render_fn,
                              cfg.deformation_config(cfg.deformation_iterations_per_pose, state.time_resolution),
                              None, state.progress.stage(), state.stop, state.device,
                              deformation=state.motion.deformation)
        state.canonical, state.motion = _clamp_scales(res.gaussians, cfg.max_scale), res.extra["motion"]
        if res.stopped:
            return True
    state.progress.advance(cfg.deformation_iterations_per_pose)
    entry.seconds["deformation_refit"] = time.perf_counter() - tic
    return False


def finish(state: OutpaintState, stopped: bool) -> OutpaintResult:
    """The scene so far (an untrained field if no motion was fitted yet) with its report."""
    cfg = state.cfg
    state.report.stopped = stopped
    if state.motion is None:
        deformation = Deformation(cfg.field_config(state.bounds, state.time_resolution), state.canonical.detach(),
                                  generator=torch.Generator().manual_seed(cfg.seed))
        state.motion = DeformationMotion(deformation.to(state.device).eval())
    state.report.final_gaussians = len(state.canonical)
    # The part records the reference cameras it was reconstructed from (read by Compose, Render, Preview).
    scene = Scene4D([ScenePart("background", state.canonical.detach(), state.motion,
                               reference_cameras=state.ref.to("cpu"))],
                    num_frames=state.frames.shape[0], fps=cfg.fps)
    return OutpaintResult(scene, state.report, state.pose_videos, state.reference, state.ref, stopped)
