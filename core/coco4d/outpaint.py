# SPDX-License-Identifier: Apache-2.0
"""CoCo4D's dynamic background: depth lift, seen-view refinement and progressive outpaint (§3.2).

Public API:
    OutpaintConfig                  settings with the paper's defaults (App. A, Table 4)
    progressive_outpaint(...)       background video + hole masks -> OutpaintResult (Scene4D + report + videos)
    OutpaintResult, OutpaintReport, PoseReport, PoseVideo   what it returns
    outpaint_cameras(reference, poses, radius, times)       the cameras of one pose set about the scene centre
    parse_pose_sets(text) / format_pose_sets(sets)          "0,30; 0,-30 | 15,30" <-> ((el, az), ...) per loop
    DEFAULT_POSE_SETS               App. A: loop 1 (0,±30), (±15,0); loop 2 (±15,±30)
    fill_video_holes(...)           eq. 7: image-inpaint frame 0, copy-paste, noise, video-inpaint
    hole_mask(alpha, threshold, dilation)   rendered coverage -> hole mask (1 = unknown)

Design notes:
    Stages (every model call sits inside ``core.viewpoint.seen_from(cameras, "background")``):

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
       (``core.depth_align``: robust scale/shift alignment of the depth model's prediction on the
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

    Eq. 7's two noise levels: the pasted regions of the pseudo video are noised to
    ``paste_noise_ratio`` (0.5) -- in pixel space, ``x' = (1 - r) x + r ε`` on ``x = 2p - 1`` with
    standard normal ``ε`` from the seeded generator, the forward process the video backend uses in
    latent space -- and the video inpainter then refines the pseudo video starting from noise ratio
    ``video_inpaint_strength`` (0.7, its ``strength``). Known pixels are never changed.

    Score distillation (eq. 6) goes through ``fit_static``'s pose sampling, which draws orbit
    poses about a centre: the seen view is reproduced exactly as the orbit pose of the reference
    camera about the pivot (roll-free cameras); refits sample the elevations the curated poses
    span at the reference azimuth.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import densify as dens
from ..engine.cameras import COCO4D_LOOPS, Cameras, clip_cameras, orbit_poses
from ..engine.deformation import COCO4D_BACKGROUND_LR, Deformation, DeformationMotion, HexPlaneConfig
from ..engine.fit_dynamic import DeformationFitConfig, fit_deformation
from ..engine.fit_static import GaussianLearningRates, RenderFn, StaticFitConfig, fit_static
from ..engine.gaussians import Gaussians, from_depth
from ..engine.guidance import Guidance, PoseSampling, orbit_angles
from ..engine.losses import ReconstructionLoss
from ..engine.scene import Scene4D, ScenePart
from ..engine.viewpoint import seen_from
from ..engine.views import PosedImages
from .depth_align import DEPTH_KINDS, METRIC_DEPTH, DepthInpaintFn, inpaint_depth

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

logger = logging.getLogger(__name__)

Pose = tuple[float, float]
DEFAULT_POSE_SETS: tuple[tuple[Pose, ...], ...] = (COCO4D_LOOPS[1], COCO4D_LOOPS[2])
_BLACK = (0.0, 0.0, 0.0)


# -- pose sets ------------------------------------------------------------------------------------


def parse_pose_sets(text: str) -> tuple[tuple[Pose, ...], ...]:
    """Parse ``"el,az; el,az | el,az; ..."`` (degrees; ``|`` separates loops) into pose sets.

    Raises:
        ValueError: naming the offending part; elevations must lie strictly inside (-90, 90).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"pose_sets: expected text like '0,30; 0,-30 | 15,30', got {text!r}")
    loops = []
    for li, chunk in enumerate(text.split("|"), start=1):
        poses = []
        for item in (p.strip() for p in chunk.split(";")):
            if not item:
                continue
            parts = [v.strip() for v in item.split(",")]
            if len(parts) != 2:
                raise ValueError(f"pose_sets: loop {li} has {item!r}; each pose is 'elevation,azimuth' in degrees")
            try:
                el, az = float(parts[0]), float(parts[1])
            except ValueError:
                raise ValueError(f"pose_sets: loop {li} has {item!r}; elevation and azimuth must be numbers") \
                    from None
            if not (math.isfinite(el) and math.isfinite(az)) or abs(el) >= 90.0:
                raise ValueError(f"pose_sets: loop {li} has {item!r}; elevation must lie in (-90, 90) and "
                                 f"both angles must be finite")
            poses.append((el, az))
        if not poses:
            raise ValueError(f"pose_sets: loop {li} is empty; give at least one 'elevation,azimuth' pose per loop")
        loops.append(tuple(poses))
    return tuple(loops)


def format_pose_sets(sets: Sequence[Sequence[Pose]]) -> str:
    """Inverse of :func:`parse_pose_sets` (angles written compactly)."""
    fmt = lambda v: f"{float(v):g}"  # noqa: E731
    return " | ".join("; ".join(f"{fmt(el)},{fmt(az)}" for el, az in loop) for loop in sets)


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutpaintConfig:
    """Settings of :func:`progressive_outpaint` (defaults: CoCo4D §3.2, §4.1 and App. A / Table 4).

    Args:
        pose_sets: ``(elevation, azimuth)`` poses in degrees per loop, relative to the seen view.
        loops: loops to run (inpaint-project-optimize iterations, paper: 2); at most ``len(pose_sets)``.
        fovy_deg: vertical field of view of the default reference camera (App. A: 60°).
        lift_size: frame 0 is lifted at most at ``lift_size``² pixels (App. A: 256); new pixels of a
            pose are lifted at the same resolution.
        lift_scale_factor: lifted Gaussians' std in pixel footprints (0.5: neighbours overlap without
            blurring the start image).
        orbit_radius: distance from the seen view to the pivot the poses turn about (world units);
            None: ``orbit_radius_fraction`` times the median lifted depth.
        orbit_radius_fraction: see ``orbit_radius`` (0 = turn the camera in place).
        static_iterations: seen-view refinement steps (Table 4: 300).
        deformation_iterations: first deformation fit on the reference video (Table 4: 300).
        static_iterations_per_pose, deformation_iterations_per_pose: refits after each curated pose
            (Table 4: 300 per camera pose).
        static_views_per_step: images per static refit step; times_per_step: frames per field step.
        learning_rates: Gaussian Adam rates (Table 4; position decays to 1 %).
        hexplane: field settings (4DGS defaults); its bounds and time resolution are set by the run
            (bounds: lift + pose frustums; time: the frame count, at most 64).
        deformation_lr, grid_lr: field rates (Table 4: 0.0064, 0.064).
        max_scale: clamp on activated Gaussian scales (App. A: 0.2).
        densify_interval: densification interval (Table 4: 100); 0 turns it off.
        tv_weight, time_smoothness_weight, time_l1_weight: 4DGS plane regularisers.
        sds_weight: guidance weight against the mean-reduced reconstruction loss (with a guidance).
        paste_noise_ratio: noise ratio of the pasted regions of the pseudo video (eq. 7: 0.5).
        video_inpaint_strength: noise ratio the video inpainter starts from (§4.1: 0.7).
        inpaint_steps, inpaint_guidance_scale: image inpainter sampling.
        video_inpaint_steps, video_inpaint_guidance_scale: video inpainter sampling.
        hole_alpha: rendered alpha below this is a hole.
        known_alpha: rendered alpha at or above this counts as known depth for the alignment.
        hole_dilation: pixels the inpainting masks grow by (blends the seam; 0 = off).
        skip_hole_fraction: poses whose render has at most this hole fraction are skipped.
        seam_width: depth seam blend width in lift pixels.
        relative_depth_median: median z given to a relative (disparity) model's lift.
        fill_reference_holes: fill the reference video's holes first; False uses the frames as they
            are (e.g. already inpainted upstream).
        fps: frame rate stored in the scene.
        preview_every: preview interval of the fits (0 = never).
        seed: seed of every random choice.
    """

    pose_sets: tuple[tuple[Pose, ...], ...] = DEFAULT_POSE_SETS
    loops: int = 2
    fovy_deg: float = 60.0
    lift_size: int = 256
    lift_scale_factor: float = 0.5
    orbit_radius: float | None = None
    orbit_radius_fraction: float = 0.25
    static_iterations: int = 300
    deformation_iterations: int = 300
    static_iterations_per_pose: int = 300
    deformation_iterations_per_pose: int = 300
    static_views_per_step: int = 2
    times_per_step: int = 4
    learning_rates: GaussianLearningRates = field(default_factory=GaussianLearningRates)
    hexplane: HexPlaneConfig = field(default_factory=HexPlaneConfig)
    deformation_lr: float = COCO4D_BACKGROUND_LR[0]
    grid_lr: float = COCO4D_BACKGROUND_LR[1]
    max_scale: float = 0.2
    densify_interval: int = 100
    tv_weight: float = 2e-4
    time_smoothness_weight: float = 1e-3
    time_l1_weight: float = 1e-4
    sds_weight: float = 1e-4
    paste_noise_ratio: float = 0.5
    video_inpaint_strength: float = 0.7
    inpaint_steps: int = 30
    inpaint_guidance_scale: float = 7.5
    video_inpaint_steps: int = 30
    video_inpaint_guidance_scale: float = 5.0
    hole_alpha: float = 0.5
    known_alpha: float = 0.95
    hole_dilation: int = 1
    skip_hole_fraction: float = 1e-3
    seam_width: int = 8
    relative_depth_median: float = 3.0
    fill_reference_holes: bool = True
    fps: float = 8.0
    preview_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"OutpaintConfig: {name} must be {expected}, got {getattr(self, name)!r}")

        sets = self.pose_sets
        if not isinstance(sets, (tuple, list)) or not sets or any(not loop for loop in sets):
            raise bad("pose_sets", "a non-empty sequence of non-empty pose lists")
        clean = []
        for loop in sets:
            poses = []
            for pose in loop:
                try:
                    el, az = (float(v) for v in pose)
                except (TypeError, ValueError):
                    raise bad("pose_sets", "(elevation, azimuth) pairs of numbers") from None
                if not (math.isfinite(el) and math.isfinite(az)) or abs(el) >= 90.0:
                    raise bad("pose_sets", "finite angles with elevations inside (-90, 90)")
                poses.append((el, az))
            clean.append(tuple(poses))
        object.__setattr__(self, "pose_sets", tuple(clean))
        if not isinstance(self.loops, int) or not 0 <= self.loops <= len(clean):
            raise bad("loops", f"an integer in 0..{len(clean)} (the number of pose sets)")
        if not 0.0 < self.fovy_deg < 180.0:
            raise bad("fovy_deg", "in (0, 180)")
        if self.lift_size < 8:
            raise bad("lift_size", ">= 8")
        if self.orbit_radius is not None and not (math.isfinite(self.orbit_radius) and self.orbit_radius >= 0):
            raise bad("orbit_radius", "None or a finite number >= 0")
        if not (math.isfinite(self.orbit_radius_fraction) and self.orbit_radius_fraction >= 0):
            raise bad("orbit_radius_fraction", "a finite number >= 0")
        for name in ("static_iterations", "deformation_iterations", "static_iterations_per_pose",
                     "deformation_iterations_per_pose", "densify_interval", "hole_dilation", "seam_width",
                     "preview_every"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        for name in ("static_views_per_step", "times_per_step", "inpaint_steps", "video_inpaint_steps"):
            if getattr(self, name) < 1:
                raise bad(name, ">= 1")
        for name in ("paste_noise_ratio", "video_inpaint_strength", "hole_alpha", "known_alpha",
                     "skip_hole_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise bad(name, "in [0, 1]")
        if not 0.0 < self.hole_alpha <= self.known_alpha <= 1.0:
            raise ValueError(f"OutpaintConfig: need 0 < hole_alpha <= known_alpha <= 1, got "
                             f"{self.hole_alpha}, {self.known_alpha}")
        if not isinstance(self.hexplane, HexPlaneConfig):
            raise bad("hexplane", "a HexPlaneConfig")
        for name in ("max_scale", "lift_scale_factor", "relative_depth_median", "fps", "deformation_lr", "grid_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise bad(name, "a finite number > 0")
        for name in ("tv_weight", "time_smoothness_weight", "time_l1_weight", "sds_weight",
                     "inpaint_guidance_scale", "video_inpaint_guidance_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(name, "a finite number >= 0")

    @property
    def active_pose_sets(self) -> tuple[tuple[Pose, ...], ...]:
        return self.pose_sets[: self.loops]

    def total_steps(self) -> int:
        poses = sum(len(s) for s in self.active_pose_sets)
        return (self.static_iterations + self.deformation_iterations
                + poses * (self.static_iterations_per_pose + self.deformation_iterations_per_pose))

    def static_config(self, iterations: int, loss: ReconstructionLoss, sampling: PoseSampling,
                      views_per_step: int) -> StaticFitConfig:
        densify = None
        if self.densify_interval > 0 and iterations > 0:
            # The scale clamp replaces the size-based prune (App. A truncates scales at 0.2).
            densify = dens.DensifyConfig(total_iterations=iterations, refine_every=self.densify_interval,
                                         refine_start=min(self.densify_interval, iterations),
                                         prune_scale3d=None)
        return StaticFitConfig(iterations=max(iterations, 1), views_per_step=views_per_step,
                               learning_rates=self.learning_rates, loss=loss, densify=densify,
                               max_scale=self.max_scale, sds_weight=self.sds_weight, pose_sampling=sampling,
                               background=_BLACK, preview_every=self.preview_every, seed=self.seed)

    def field_config(self, bounds, time_resolution: int) -> HexPlaneConfig:
        return replace(self.hexplane, bounds=bounds, time_resolution=int(time_resolution))

    def deformation_config(self, iterations: int, time_resolution: int) -> DeformationFitConfig:
        return DeformationFitConfig(
            iterations=max(iterations, 1), times_per_step=self.times_per_step, deformation_lr=self.deformation_lr,
            grid_lr=self.grid_lr, hexplane=self.field_config(None, time_resolution),
            adapt_time_resolution=False, loss=ReconstructionLoss(l1=1.0, l2=0.0, dssim=0.0, mask=0.0),
            rigidity_weight=0.0, tv_weight=self.tv_weight, time_smoothness_weight=self.time_smoothness_weight,
            time_l1_weight=self.time_l1_weight, freeze_canonical=False, canonical_learning_rates=self.learning_rates,
            sds_weight=0.0, background=_BLACK, preview_every=self.preview_every, seed=self.seed)


# -- results --------------------------------------------------------------------------------------


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


class _Stopped(Exception):
    """Internal: a stage was interrupted."""


# -- cameras ---------------------------------------------------------------------------------------


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


# -- image helpers ---------------------------------------------------------------------------------


def _resize(x: Tensor, height: int, width: int, mode: str = "area") -> Tensor:
    """Resize ``[B,H,W,C]`` or ``[B,H,W]`` (area when shrinking, bilinear when growing)."""
    squeeze = x.dim() == 3
    y = (x[..., None] if squeeze else x).permute(0, 3, 1, 2).float()
    if tuple(y.shape[-2:]) != (height, width):
        grow = height > y.shape[-2] or width > y.shape[-1]
        y = F.interpolate(y, size=(height, width), mode="bilinear" if grow else mode,
                          **({"align_corners": False} if grow else {}))
    y = y.permute(0, 2, 3, 1)
    return y[..., 0] if squeeze else y


def _dilate(mask: Tensor, pixels: int) -> Tensor:
    """Binary dilation of ``[B,H,W]`` bool masks by ``pixels`` (square structuring element)."""
    if pixels <= 0:
        return mask
    k = 2 * int(pixels) + 1
    return F.max_pool2d(mask.float()[:, None], k, stride=1, padding=pixels)[:, 0] > 0.5


def hole_mask(alpha: Tensor, threshold: float = 0.5, dilation: int = 0) -> Tensor:
    """Pixels the render does not cover: ``alpha < threshold``, grown by ``dilation`` pixels.

    Args:
        alpha: ``[B,H,W]`` or ``[B,H,W,1]`` rendered alpha.

    Returns:
        bool ``[B,H,W]`` (True = hole).
    """
    a = alpha[..., 0] if alpha.dim() == 4 else alpha
    if a.dim() != 3:
        raise ValueError(f"hole_mask: alpha must be [B,H,W] or [B,H,W,1], got {tuple(alpha.shape)}")
    return _dilate(a < threshold, dilation)


def _paste_noise(frames: Tensor, masks: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """Noise the masked pixels to ``ratio``: ``x' = (1 - r) x + r ε`` on ``x = 2p - 1`` (eq. 7)."""
    if ratio <= 0 or not masks.any():
        return frames
    eps = torch.randn(frames.shape, generator=generator)
    x = frames * 2.0 - 1.0
    noised = (((1.0 - ratio) * x + ratio * eps) + 1.0) * 0.5
    return torch.where(masks[..., None], noised.clamp(0.0, 1.0), frames)


def _call_model(fn: Callable, stopped: Callable[[], bool] | None):
    try:
        return fn()
    except InterruptedError as exc:
        raise _Stopped(str(exc)) from exc
    finally:
        if stopped is not None and stopped():
            raise _Stopped("stop requested")


def fill_video_holes(frames: Tensor, holes: Tensor, cameras: Cameras, image_inpainter, video_inpainter,
                     prompt: str = "", negative_prompt: str = "", config: OutpaintConfig | None = None,
                     generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None,
                     timings: dict[str, float] | None = None) -> tuple[Tensor, Tensor]:
    """Eq. 7: fill the holes of a video the CoCo4D way.

    Frame 0 is inpainted by the image inpainter with the prompt; its result is pasted into every
    frame's holes (the pseudo video), the pasted pixels are noised to ``paste_noise_ratio`` and the
    video inpainter refines the holes from noise ratio ``video_inpaint_strength``. Known pixels are
    returned unchanged. Models are called inside ``seen_from(cameras, "background")``.

    Args:
        frames: ``[T,H,W,3]`` in 0..1.
        holes: bool ``[T,H,W]`` (True = fill).
        cameras: ``T`` cameras of the frames (their poses and times).

    Returns:
        ``(filled [T,H,W,3], frame0 [H,W,3])``: the curated video and the image-inpainted frame 0.
    """
    cfg = config or OutpaintConfig()
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    frames = frames.detach().float().cpu()
    holes = holes.detach().bool().cpu()
    first = frames[0]
    t0 = time.perf_counter()
    if holes[0].any():
        with seen_from(cameras[0:1], content="background"):
            first = _call_model(lambda: image_inpainter.inpaint(
                frames[0], holes[0].float(), prompt, negative_prompt, strength=1.0, steps=cfg.inpaint_steps,
                guidance_scale=cfg.inpaint_guidance_scale, seed=cfg.seed, should_stop=should_stop),
                should_stop)
        first = torch.where(holes[0][..., None], first.float().cpu().clamp(0, 1), frames[0])
    t1 = time.perf_counter()
    pseudo = torch.where(holes[..., None], first.expand_as(frames), frames)
    pseudo = _paste_noise(pseudo, holes, cfg.paste_noise_ratio, gen)
    out = pseudo
    if cfg.video_inpaint_strength > 0 and holes.any():
        with seen_from(cameras, content="background"):
            out = _call_model(lambda: video_inpainter.inpaint(
                pseudo, holes.float(), prompt, negative_prompt, strength=cfg.video_inpaint_strength,
                steps=cfg.video_inpaint_steps, guidance_scale=cfg.video_inpaint_guidance_scale, seed=cfg.seed,
                should_stop=should_stop), should_stop)
        out = out.float().cpu().clamp(0, 1)
        if tuple(out.shape) != tuple(frames.shape):
            raise ValueError(f"fill_video_holes: the video inpainter returned {tuple(out.shape)} for "
                             f"{tuple(frames.shape)} frames")
    filled = torch.where(holes[..., None], out, frames)
    if timings is not None:
        timings["inpaint"] = timings.get("inpaint", 0.0) + t1 - t0
        timings["video_inpaint"] = timings.get("video_inpaint", 0.0) + time.perf_counter() - t1
    return filled, first


# -- the pipeline ----------------------------------------------------------------------------------


class _Progress:
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
    small = _resize(image[None], lh, lw)[0].clamp(0, 1)
    cam = camera.resized(lw, lh)
    with seen_from(cam, content="background"):
        raw = depth_model.predict(small[None])
    raw = torch.as_tensor(raw).detach().float().cpu()
    raw = raw.reshape(-1, *raw.shape[-2:])[0]
    if tuple(raw.shape) != (lh, lw):
        raw = _resize(raw[None], lh, lw, mode="bilinear")[0]
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
    if kind == METRIC_DEPTH:
        z = torch.where(valid, raw, torch.ones_like(raw))
    else:
        z = torch.where(valid, 1.0 / raw.clamp_min(1e-12), torch.ones_like(raw))
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
    image = _resize(frame0[None], lh, lw)[0].clamp(0, 1)
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
            raw = _resize(raw[None], lh, lw, mode="bilinear")[0]
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
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(cfg.seed)
    report = OutpaintReport(depth_kind=kind)
    progress = _Progress(callback, cfg.total_steps())
    stop = should_stop or (lambda: False)
    report.reference_hole_fraction = float(holes.float().mean())
    if report.reference_hole_fraction > 0.9:
        report.warn(f"hole_masks cover {report.reference_hole_fraction:.0%} of the reference video; the lift will "
                    f"be mostly inpainted content")

    # 1. Reference holes (eq. 7 on the seen view).
    tic = time.perf_counter()
    reference = frames
    if holes.any() and cfg.fill_reference_holes:
        try:
            reference, _ = fill_video_holes(frames, holes, ref, image_inpainter, video_inpainter, prompt,
                                            negative_prompt, cfg, gen, stop)
        except _Stopped:
            raise InterruptedError("progressive_outpaint: stopped while filling the reference holes; no scene "
                                   "exists yet") from None
    elif not holes.any():
        logger.info("progressive_outpaint: the reference video has no holes; nothing to fill")
    report.add_time("reference_fill", time.perf_counter() - tic)

    # 2. Lift frame 0.
    tic = time.perf_counter()
    lifted, depths = _lift(reference[0], ref[0:1], depth_model, kind, cfg, report)
    report.lift_gaussians = len(lifted)
    median = float(depths.median())
    radius = cfg.orbit_radius if cfg.orbit_radius is not None else cfg.orbit_radius_fraction * median
    report.radius = float(radius)
    loop_cameras = [outpaint_cameras(ref, poses, radius) for poses in cfg.active_pose_sets]
    bounds = _field_bounds(lifted.means, depths, [c for cams in loop_cameras for c in cams])
    report.add_time("lift", time.perf_counter() - tic)
    lifted = _clamp_scales(lifted.to(dev), cfg.max_scale)

    ref_views = PosedImages(reference, ref)
    l2 = ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0, mask=0.0)
    l1 = ReconstructionLoss(l1=1.0, l2=0.0, dssim=0.0, mask=0.0)
    time_res = int(min(max(t_frames, 2), 64))
    pose_videos: list[PoseVideo] = []
    canonical, motion = lifted, None

    def finish(stopped: bool) -> OutpaintResult:
        nonlocal motion
        report.stopped = stopped
        if motion is None:
            deformation = Deformation(cfg.field_config(bounds, time_res), canonical.detach(),
                                      generator=torch.Generator().manual_seed(cfg.seed))
            motion = DeformationMotion(deformation.to(dev).eval())
        report.final_gaussians = len(canonical)
        scene = Scene4D([ScenePart("background", canonical.detach(), motion)], num_frames=t_frames, fps=cfg.fps)
        return OutpaintResult(scene, report, pose_videos, reference, ref, stopped)

    # 3. Seen-view refinement (eqs. 5-6).
    tic = time.perf_counter()
    if cfg.static_iterations > 0:
        res = fit_static(canonical, ref_views.subset([0]), render_fn,
                         cfg.static_config(cfg.static_iterations, l2, _sampling(ref, radius, []), 1), guidance,
                         progress.stage(), stop, dev)
        canonical = res.gaussians
        if res.stopped:
            return finish(True)
    progress.advance(cfg.static_iterations)
    report.add_time("static_refine", time.perf_counter() - tic)

    # 4. Deformation field on the reference video.
    tic = time.perf_counter()
    deformation = Deformation(cfg.field_config(bounds, time_res), canonical.detach(),
                              generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.deformation_iterations > 0:
        res = fit_deformation(canonical, ref_views, render_fn,
                              cfg.deformation_config(cfg.deformation_iterations, time_res), None,
                              progress.stage(), stop, dev, deformation=deformation)
        canonical, motion = _clamp_scales(res.gaussians, cfg.max_scale), res.extra["motion"]
        if res.stopped:
            return finish(True)
    else:
        motion = DeformationMotion(deformation.to(dev).eval())
    progress.advance(cfg.deformation_iterations)
    report.add_time("deformation_fit", time.perf_counter() - tic)

    # 5. Progressive outpaint loops.
    per_pose = cfg.static_iterations_per_pose + cfg.deformation_iterations_per_pose
    used_elevations: list[float] = []
    for li, (poses, cams_list) in enumerate(zip(cfg.active_pose_sets, loop_cameras), start=1):
        for pi, ((el, az), cams) in enumerate(zip(poses, cams_list), start=1):
            if stop():
                return finish(True)
            entry = PoseReport(li, pi, el, az, hole_before=0.0)
            report.poses.append(entry)
            tic = time.perf_counter()
            rgb, alpha, _ = _render_video(canonical, motion, cams, render_fn, dev)
            holes_pose = alpha < cfg.hole_alpha
            entry.hole_before = float(holes_pose.float().mean())
            entry.seconds["render"] = time.perf_counter() - tic
            if entry.hole_before <= cfg.skip_hole_fraction:
                entry.skipped, entry.hole_after = True, entry.hole_before
                entry.note = (f"render already complete (hole fraction {entry.hole_before:.4f} <= "
                              f"{cfg.skip_hole_fraction:g})")
                logger.info("progressive_outpaint: loop %d pose %d (el %g, az %g) skipped: %s", li, pi, el, az,
                            entry.note)
                progress.advance(per_pose)
                continue
            fill = _dilate(holes_pose, cfg.hole_dilation)
            try:
                video, first = fill_video_holes(rgb, fill, cams, image_inpainter, video_inpainter, prompt,
                                                negative_prompt, cfg, gen, stop, entry.seconds)
            except _Stopped:
                report.poses.pop()
                return finish(True)
            pose_videos.append(PoseVideo(video, cams, fill, li, el, az))
            used_elevations.append(el)
            tic = time.perf_counter()
            fresh = _project_pose(canonical, motion, video[0], cams, depth_model, kind, render_fn, cfg, dev,
                                  depth_inpaint_fn, report, entry)
            if fresh is not None:
                entry.new_gaussians = len(fresh)
                canonical = Gaussians.cat([canonical, _clamp_scales(fresh, cfg.max_scale)])
            entry.seconds["project"] = time.perf_counter() - tic
            if stop():
                return finish(True)

            # Static refit on frame 0 of the reference and of every curated video (eqs. 5-6, L1).
            tic = time.perf_counter()
            if cfg.static_iterations_per_pose > 0:
                firsts = PosedImages(torch.stack([reference[0]] + [v.frames[0] for v in pose_videos]),
                                     Cameras.cat([ref[0:1]] + [v.cameras[0:1] for v in pose_videos]))
                res = fit_static(canonical, firsts, render_fn,
                                 cfg.static_config(cfg.static_iterations_per_pose, l1,
                                                   _sampling(ref, radius, used_elevations),
                                                   cfg.static_views_per_step),
                                 guidance, progress.stage(), stop, dev)
                canonical = res.gaussians
                if res.stopped:
                    return finish(True)
            progress.advance(cfg.static_iterations_per_pose, first)
            entry.seconds["static_refit"] = time.perf_counter() - tic

            # Deformation refit on the reference video plus every curated video, continuing the field.
            tic = time.perf_counter()
            if cfg.deformation_iterations_per_pose > 0:
                views = PosedImages.cat([ref_views] + [PosedImages(v.frames, v.cameras) for v in pose_videos])
                res = fit_deformation(canonical, views, render_fn,
                                      cfg.deformation_config(cfg.deformation_iterations_per_pose, time_res), None,
                                      progress.stage(), stop, dev,
                                      deformation=motion.deformation)
                canonical, motion = _clamp_scales(res.gaussians, cfg.max_scale), res.extra["motion"]
                if res.stopped:
                    return finish(True)
            progress.advance(cfg.deformation_iterations_per_pose)
            entry.seconds["deformation_refit"] = time.perf_counter() - tic

            _, alpha_after, _ = _render_video(canonical, motion, cams, render_fn, dev)
            entry.hole_after = float((alpha_after < cfg.hole_alpha).float().mean())
            for key, value in entry.seconds.items():
                report.add_time(key, value)
            logger.info("progressive_outpaint: loop %d pose %d (el %g, az %g): holes %.4f -> %.4f, +%d Gaussians",
                        li, pi, el, az, entry.hole_before, entry.hole_after, entry.new_gaussians)
    return finish(False)
