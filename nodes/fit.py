# SPDX-License-Identifier: Apache-2.0
"""Gen4D_StaticGaussians and Gen4D_DeformationFit: the optimisation stages of all three pipelines."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..backends.memory import require_time
from ..backends.render import cpu_step_seconds, render, training_render
from ..core.coco4d.reference import reference_clip
from ..core.coco4d.screen_trajectory import refine_trajectory
from ..core.engine.cameras import gaze_sphere
from ..core.engine.densify import DensifyConfig
from ..core.engine.fit_dynamic import DeformationFitConfig, fine_stage_densify, fit_deformation
from ..core.engine.fit_options import FitOptions
from ..core.engine.fit_static import StaticFitConfig, fit_static, rates_for_given_start
from ..core.engine.gaussians import sphere_init
from ..core.engine.guidance import PoseSampling
from ..core.engine.scene import Scene4D, ScenePart
from ..core.engine.views import PosedImages
from ..core.formats.convert import check_image, check_mask, parse_color
from . import host
from . import types as T
from .widgets import background_in, bool_in, color_error, combo_in, float_in, int_in, seed_in, socket_in

logger = logging.getLogger(__name__)

_S = StaticFitConfig()
_D = DeformationFitConfig()

_OPTIONS_IN = socket_in(T.FIT_OPTIONS, "Fit options (Gen4D Fit Options): a paper preset of loss weights, learning "
                        "rates and HexPlane field with overrides. Unconnected: CoCo4D's foreground setting.")

# Appended after every other optional socket: saved workflows link inputs by position.
_IGNORE_IN = socket_in(T.MASK, "Pixels to leave out of the fit (1 = ignore): people or cars passing through a "
                       "capture, a watermark, a lens's uncovered corners (Load Posed Frames' ignore output). The "
                       "scene there is learned from the other views.")

_COMMON_OPTIONAL = {
    "masks": socket_in(T.MASK, "Object masks per frame (e.g. from SAM2): add a silhouette loss and let the "
                       "object be centred like CoCo4D."),
    "cameras": socket_in(T.CAMERAS, "Cameras of the images (posed multi-view or orbit videos), fitted as they "
                         "are (no centring). Default: CoCo4D's seen view, elevation 0 at radius 2.5, fovy 49.1. "
                         "Deformation Fit records the cameras it used in the scene for Compose, Render and Preview."),
    "guidance": socket_in(T.GUIDANCE_MODEL, "Score-distillation guidance (Zero123 for objects, SD for scenes) "
                          "for the views the images do not show."),
}


def _setup(images, masks, cameras, center, background, ignore_mask=None):
    # Inputs are data, never part of the fit's graph: an IMAGE that carries autograd history from an
    # upstream node would otherwise be backpropagated through again at every step.
    images = images.detach() if isinstance(images, torch.Tensor) else images
    masks = masks.detach() if isinstance(masks, torch.Tensor) else masks
    ignore_mask = ignore_mask.detach() if isinstance(ignore_mask, torch.Tensor) else ignore_mask
    frames = check_image(images, "images")
    mask_t = None if masks is None else check_mask(masks, "masks", like=frames)
    ignore = None if ignore_mask is None else check_mask(ignore_mask, "ignore_mask", like=frames).clamp(0.0, 1.0)
    if ignore is not None and not (ignore > 0).any():  # an empty mask (Load Posed Frames' default) ignores nothing
        ignore = None
    return reference_clip(frames, mask_t, cameras, center, tuple(parse_color(background).tolist()), ignore=ignore)


def _stopped_or_done(result) -> None:
    if result.stopped:
        host.raise_if_interrupted()


class StaticGaussians:
    DESCRIPTION = (
        "Fit static 3D Gaussians: to the first frame of a reference video from the seen view (CoCo4D §3.1, "
        "eq. 1, with optional SDS guidance for unseen views, eq. 2) or to posed multi-view images such as an "
        "orbit video (Diffusion4D coarse stage). Starts from a sphere of Gaussians or from given Gaussians."
    )
    CATEGORY = f"{T.CATEGORY}/optimize"
    RETURN_TYPES = (T.GAUSSIANS,)
    RETURN_NAMES = ("gaussians",)
    OUTPUT_TOOLTIPS = ("The fitted static Gaussians.",)
    FUNCTION = "fit"
    PAIRED_INPUTS = (("images", "masks", "cameras"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": socket_in(T.IMAGE, "Reference video or posed images (orbit videos)."),
                "fit_frames": combo_in(("first", "all"), "first: the seen view of frame 0 (CoCo4D); all: every "
                                       "image with its camera (multi-view / orbit fits, Diffusion4D coarse stage)."),
                "iterations": int_in(_S.iterations, 1, 100000, "Optimisation steps (CoCo4D foreground 1000, "
                                     "background 300, Diffusion4D coarse 5000)."),
                "num_points": int_in(5000, 100, 1_000_000, "Gaussians of the sphere init (CoCo4D: 5000). On the CPU "
                                     "a fit whose steps would each take over 30 s (about 600,000 Gaussians x "
                                     "rendered views) is refused up front."),
                "sphere_radius": float_in(0.5, 0.0, 100.0, "Radius of the sphere init in scene units; 0 = fit it to "
                                          "the cameras: centred where their optical axes meet, sized to stay in every "
                                          "view (for posed frames whose object is not at the origin)."),
                "views_per_step": int_in(4, 1, 64, "Posed images rendered per step (multi-view fits)."),
                "sds_weight": float_in(_S.sds_weight, 0.0, 1000.0, "Weight of the guidance (SDS) loss relative to the "
                                      "reference loss (1e-4 = DreamGaussian's 1 : 10^4 balance).", step=1e-5),
                "densify": bool_in(True, "Clone/split/prune Gaussians every 100 steps (3DGS density control)."),
                "max_scale": float_in(0.0, 0.0, 100.0, "Clamp Gaussian scales (CoCo4D background: 0.2); 0 = off."),
                "center_object": bool_in(True, "With masks and no cameras: move the object to the image centre "
                                         "(CoCo4D). Use the same setting in Deformation Fit. Not applied with "
                                         "cameras connected or without masks (the node says so)."),
                "background": background_in("Background colour behind the object (#rrggbb)."),
                "preview_every": int_in(_S.preview_every, 0, 100000, "Show a preview this often (0 = never)."),
                "seed": seed_in(),
            },
            "optional": {
                **_COMMON_OPTIONAL,
                "init": socket_in(T.GAUSSIANS, "Start from these Gaussians instead of a sphere (e.g. lifted depth); "
                                  "their positions then train at a tenth of the sphere's rate, as "
                                  "DreamGaussian trains a given point cloud."),
                "options": _OPTIONS_IN,
                "ignore_mask": _IGNORE_IN,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background=None):
        return color_error(background)

    def fit(self, images, fit_frames, iterations, num_points, sphere_radius, views_per_step, sds_weight, densify,
            max_scale, center_object, background, preview_every, seed, masks=None, cameras=None, guidance=None,
            init=None, options=None, ignore_mask=None):
        clip = _setup(images, masks, cameras, center_object, background, ignore_mask)
        views = clip.views if fit_frames == "all" else clip.views.subset([0])
        gen = torch.Generator().manual_seed(seed)
        start = init if init is not None else _sphere(num_points, sphere_radius, clip.views, gen)
        config = static_fit_config(views, iterations, views_per_step, sds_weight, densify, max_scale, background,
                                   preview_every, seed, options, given_start=init is not None)
        device = host.compute_device()
        if device.type == "cpu":
            _cpu_step_check(len(start), min(config.views_per_step, len(views))
                            + (config.pose_sampling.batch if guidance is not None and config.sds_weight > 0 else 0),
                            iterations)
        progress = host.Progress(iterations)
        with torch.inference_mode(False), torch.enable_grad():
            result = fit_static(_fresh(start), views, training_render, config, guidance, progress,
                                host.should_stop, device)
            _stopped_or_done(result)
            gaussians = result.gaussians.to("cpu")
        return host.with_notes("Gen4D_StaticGaussians", (gaussians,), clip.notes)


class DeformationFit:
    DESCRIPTION = (
        "Animate static Gaussians with a HexPlane deformation field fitted to a reference video (CoCo4D §3.1, "
        "eqs. 3-4: frozen canonical Gaussians, rigidity loss, optional SDS per timestamp) or to a 4D orbit "
        "video (Diffusion4D fine stage). With masks, the object's screen-space trajectory (shift and scale "
        "per frame) is refined against the video. Outputs a 4D scene."
    )
    CATEGORY = f"{T.CATEGORY}/optimize"
    RETURN_TYPES = (T.SCENE,)
    RETURN_NAMES = ("scene",)
    OUTPUT_TOOLTIPS = ("The animated scene: canonical Gaussians + deformation field (+ screen trajectory).",)
    FUNCTION = "fit"
    PAIRED_INPUTS = (("images", "masks", "cameras"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "gaussians": socket_in(T.GAUSSIANS, "Canonical Gaussians (from Static Gaussians)."),
                "images": socket_in(T.IMAGE, "Reference video, one frame per time step (or posed frames)."),
                "iterations": int_in(_D.iterations, 1, 100000, "Optimisation steps (CoCo4D 800, Diffusion4D "
                                     "fine 2000)."),
                "times_per_step": int_in(_D.times_per_step, 1, 64, "Timestamps per step (CoCo4D batch 4)."),
                "rigidity_weight": float_in(_D.rigidity_weight, 0.0, 1000.0, "Local rigidity between neighbouring "
                                            "Gaussians (Luiten et al.); 0 = off."),
                "sds_weight": float_in(_D.sds_weight, 0.0, 1000.0, "Weight of the guidance (SDS) loss relative to the "
                                      "reference loss (1e-4 = DreamGaussian's 1 : 10^4 balance).", step=1e-5),
                "freeze_canonical": bool_in(_D.freeze_canonical, "Keep the canonical Gaussians fixed (CoCo4D); "
                                            "off also refines them (4DGS / Diffusion4D fine stage)."),
                "center_object": bool_in(True, "With masks and no cameras: centre the object like Static "
                                         "Gaussians did, then learn the screen trajectory. Not applied with "
                                         "cameras connected or without masks (the node says so)."),
                "trajectory_iterations": int_in(50, 0, 10000, "Screen-trajectory refinement steps "
                                                "(CoCo4D: 50 at lr 0.1); 0 keeps the centring trajectory."),
                "fps": float_in(8.0, 0.1, 240.0, "Frame rate stored with the scene."),
                "background": background_in("Background colour behind the object (#rrggbb)."),
                "preview_every": int_in(_D.preview_every, 0, 100000, "Show a preview this often (0 = never)."),
                "seed": seed_in(),
                # Appended last: saved workflows list widget values by position.
                "densify": bool_in(False, "Grow and prune the canonical Gaussians during the fit (4DGS's fine "
                                   "stage: clone/split/prune every 100 steps from step 200 to 80 % of the fit). "
                                   "Needs freeze_canonical off."),
            },
            "optional": {**_COMMON_OPTIONAL, "options": _OPTIONS_IN, "ignore_mask": _IGNORE_IN},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background=None, densify=None, freeze_canonical=None):
        if densify is True and freeze_canonical is True:
            return "densify grows the canonical Gaussians, which freeze_canonical keeps fixed; turn one of them off"
        return color_error(background)

    def fit(self, gaussians, images, iterations, times_per_step, rigidity_weight, sds_weight, freeze_canonical,
            center_object, trajectory_iterations, fps, background, preview_every, seed, densify=False, masks=None,
            cameras=None, guidance=None, options=None, ignore_mask=None):
        clip = _setup(images, masks, cameras, center_object, background, ignore_mask)
        config = deformation_fit_config(clip.views, iterations, times_per_step, rigidity_weight, sds_weight,
                                        freeze_canonical, background, preview_every, seed, options, densify)
        progress = host.Progress(iterations + trajectory_iterations)
        device = host.compute_device()
        with torch.inference_mode(False), torch.enable_grad():
            result = fit_deformation(_fresh(gaussians), clip.views, training_render, config, guidance, progress,
                                     host.should_stop, device)
            _stopped_or_done(result)
            canonical, motion = result.gaussians, result.extra["motion"]
            trajectory = clip.trajectory
            if trajectory is not None and trajectory_iterations > 0:
                trajectory = _refine(canonical, motion, clip, trajectory_iterations)
                progress(iterations + trajectory_iterations)
            # Built outside inference mode, so later stages can still optimise through the scene. The part
            # records the cameras it was fitted with (the seen view when centred), read by Compose/Render/Preview.
            part = ScenePart("foreground", canonical.to("cpu"), motion.to("cpu"),
                             None if trajectory is None else trajectory.as_dict(), clip.views.cameras.to("cpu"))
            scene = Scene4D([part], num_frames=len(clip.frames), fps=fps)
        return host.with_notes("Gen4D_DeformationFit", (scene,), clip.notes)


# Longest estimated CPU step: progress and cancel come between steps, so a longer one leaves the node
# unresponsive for minutes (and the fit would take hours); the shipped workflows take well under a second.
CPU_STEP_LIMIT_S = 30.0


def _cpu_step_check(num_gaussians: int, views: int, iterations: int) -> None:
    step = cpu_step_seconds(num_gaussians, views)
    most = int(CPU_STEP_LIMIT_S / cpu_step_seconds(1, views))
    require_time("Gen4D_StaticGaussians", step, CPU_STEP_LIMIT_S,
                 f"on the CPU, one step of {num_gaussians:,} Gaussians x {views} rendered view(s) (about "
                 f"{step * iterations / 3600:,.1f} h for {iterations} iterations; cancel waits for a step)",
                 f"num_points (at most {most:,} Gaussians per step at {views} view(s) here) or views_per_step, "
                 "or fit on a GPU")


def _pose_sampling(views: PosedImages) -> PoseSampling:
    return PoseSampling(width=min(views.cameras.width, 256), height=min(views.cameras.height, 256))


def _sphere(num_points: int, radius: float, views: PosedImages, gen: torch.Generator):
    """The sphere init: at the origin with ``radius``, or (radius 0) where the cameras look, sized to their views."""
    if radius > 0:
        return sphere_init(num_points, radius, generator=gen)
    try:
        center, fitted = gaze_sphere(views.cameras)
    except ValueError as exc:
        why = str(exc).removeprefix("gaze_sphere: ")
        raise ValueError(f"Gen4D_StaticGaussians: sphere_radius 0 fits the init to the cameras, but {why}") from exc
    return sphere_init(num_points, fitted, center=center, generator=gen)


def static_fit_config(views: PosedImages, iterations, views_per_step, sds_weight, densify, max_scale, background,
                      preview_every, seed, options=None, given_start: bool = False) -> StaticFitConfig:
    """The ``StaticFitConfig`` Gen4D_StaticGaussians fits ``views`` with, from its widget values and options
    (benches build a shipped workflow's coarse stage with it); ``given_start``: the fit starts from given
    Gaussians, not the sphere, so the sphere's position schedule runs without its spatial scale."""
    loss = _S.loss if views.masks is not None else replace(_S.loss, mask=0.0)
    config = replace(
        _S, iterations=iterations, views_per_step=views_per_step, sds_weight=sds_weight, seed=seed,
        densify=DensifyConfig(total_iterations=iterations) if densify else None, loss=loss,
        max_scale=max_scale or None, background=tuple(parse_color(background).tolist()),
        preview_every=preview_every, pose_sampling=_pose_sampling(views))
    if options is not None:
        config = _options(options, "Gen4D_StaticGaussians").static_config(config, views.masks is not None)
    return replace(config, learning_rates=rates_for_given_start(config.learning_rates)) if given_start else config


def deformation_fit_config(views: PosedImages, iterations, times_per_step, rigidity_weight, sds_weight,
                           freeze_canonical, background, preview_every, seed, options=None,
                           densify: bool = False) -> DeformationFitConfig:
    """The ``DeformationFitConfig`` Gen4D_DeformationFit fits ``views`` with, from its widget values and options.

    Raises:
        ValueError: ``densify`` with ``freeze_canonical`` (a frozen set cannot grow).
    """
    if densify and freeze_canonical:
        raise ValueError("Gen4D_DeformationFit: densify grows the canonical Gaussians, which freeze_canonical keeps "
                         "fixed; turn one of them off")
    loss = _D.loss if views.masks is not None else replace(_D.loss, mask=0.0)
    config = replace(
        _D, iterations=iterations, times_per_step=times_per_step, rigidity_weight=rigidity_weight,
        sds_weight=sds_weight, freeze_canonical=freeze_canonical, loss=loss, seed=seed,
        background=tuple(parse_color(background).tolist()), preview_every=preview_every,
        pose_sampling=_pose_sampling(views),
        densify=fine_stage_densify(iterations) if densify else None)
    if options is None:
        return config
    return _options(options, "Gen4D_DeformationFit").deformation_config(config, views.masks is not None)


def _options(options, node: str) -> FitOptions:
    if not isinstance(options, FitOptions):
        raise ValueError(f"{node}: options must come from Gen4D Fit Options (GEN4D_FIT_OPTIONS), got "
                         f"{type(options).__name__}")
    return options


def _fresh(gaussians):
    """A copy outside ComfyUI's inference mode (tensors made there cannot be trained)."""
    return gaussians.map(lambda t: t.detach().clone())


def _refine(canonical, motion, clip, iterations):
    """Render the centred object at every frame (black background = premultiplied) and refine."""
    with torch.no_grad():
        frames = [render(motion.apply(canonical, float(t)), clip.views.cameras[i])
                  for i, t in enumerate(clip.views.times.tolist())]
    alpha = torch.cat([f.alpha for f in frames])[..., 0].cpu()
    rgb = torch.cat([f.rgb for f in frames]).cpu() / alpha[..., None].clamp_min(1e-6)
    refined, losses = refine_trajectory(rgb, alpha, clip.frames, clip.masks, clip.trajectory, iterations,
                                        ignore=clip.ignore)
    logger.info("screen trajectory refined: loss %.3g -> %.3g", losses[0], losses[-1])
    return refined


NODES = {
    "Gen4D_StaticGaussians": (StaticGaussians, "Gen4D Static Gaussians"),
    "Gen4D_DeformationFit": (DeformationFit, "Gen4D Deformation Fit"),
}
