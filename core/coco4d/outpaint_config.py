# SPDX-License-Identifier: Apache-2.0
"""Settings of CoCo4D's progressive outpaint (§3.2, App. A, Table 4) and its pose-set text format.

Public API:
    OutpaintConfig                  settings with the paper's defaults
    parse_pose_sets(text) / format_pose_sets(sets)   "0,30; 0,-30 | 15,30" <-> ((el, az), ...) per loop
    DEFAULT_POSE_SETS               App. A: loop 1 (0,±30), (±15,0); loop 2 (±15,±30)
    Pose                            ``(elevation, azimuth)`` in degrees relative to the seen view
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from ..engine import densify as dens
from ..engine.cameras import COCO4D_LOOPS
from ..engine.deformation import COCO4D_BACKGROUND_LR, HexPlaneConfig
from ..engine.fit_dynamic import DeformationFitConfig
from ..engine.fit_static import GaussianLearningRates, StaticFitConfig
from ..engine.guidance import PoseSampling
from ..engine.losses import ReconstructionLoss

__all__ = ["OutpaintConfig", "parse_pose_sets", "format_pose_sets", "DEFAULT_POSE_SETS", "Pose"]

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
            (bounds: lift + pose frustums; time: the frame count, at most ``hexplane.time_resolution``).
        deformation_lr, grid_lr: field rates (Table 4: 0.0064, 0.064).
        max_scale: clamp on activated Gaussian scales (App. A: 0.2).
        densify_interval: densification interval (Table 4: 100); 0 turns it off.
        tv_weight, time_smoothness_weight, time_l1_weight: 4DGS plane regularisers.
        sds_weight: guidance weight against the mean-reduced reconstruction loss (with a guidance).
        paste_noise_ratio: noise ratio r of the pasted regions of the pseudo video (eq. 7, §4.1: 0.5),
            applied by the video inpainter in its latent space: ``(1 - r) z + r ε`` on the pasted
            latents, the known latents kept clean; at most ``video_inpaint_strength``.
        video_inpaint_strength: noise level σ (τ of eq. 7, §4.1: 0.7) at which the video inpainter's
            refinement starts: the first of ``video_inpaint_steps`` scheduler steps whose σ is at most
            this (a noise level, not a fraction of steps); 0 skips the refinement.
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
        if self.video_inpaint_strength > 0 and self.paste_noise_ratio > self.video_inpaint_strength:
            raise ValueError(f"OutpaintConfig: paste_noise_ratio ({self.paste_noise_ratio}) must not exceed "
                             f"video_inpaint_strength ({self.video_inpaint_strength}), the noise level the "
                             f"refinement starts at (eq. 7: 0.5 and 0.7)")
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

