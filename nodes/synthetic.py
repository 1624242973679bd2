# SPDX-License-Identifier: Apache-2.0
"""Gen4D_SyntheticWorld: a ground-truth world as ordinary video, masks, depth, cameras, a 4D twin,
ground-truth tracks and oracle model handles (weight-free stand-ins for every generative model)."""

from __future__ import annotations

import torch

from ..backends.memory import require
from ..core.engine.cameras import Cameras
from ..core.engine.scene import KeyframeMotion, Scene4D, ScenePart
from ..core.formats.convert import DEPTH_MODES, depth_to_image, to_image, to_mask
from ..core.moge4d.tracks import Tracks
from ..synthetic import (
    OracleDepth,
    OracleGuidance,
    OracleImageInpainter,
    OracleSegmenter,
    OracleVideoGenerator,
    OracleVideoInpainter,
    object_world,
    render,
    scene_world,
    surface_motion,
    trajectories,
)
from . import host
from . import types as T
from .video import VideoModel
from .widgets import combo_in, float_in, int_in, seed_in, socket_in

WORLDS = {"object": object_world, "scene": scene_world}


class SyntheticWorld:
    DESCRIPTION = (
        "A synthetic world with exact ground truth, rendered by an analytic ray caster: 'object' is an "
        "articulated figure on an empty background, 'scene' a textured room with props, a drifting balloon and "
        "the figure walking through. Gives a weight-free twin of every workflow: reference video, foreground "
        "masks, depth, cameras, the world as a 4D Gaussian scene, its static (time 0) views, ground-truth point "
        "tracks, and oracle model handles (video model, segmenter, depth model, image and video inpainters) that "
        "answer from the world's ground truth, so the real pipelines run unchanged without weights."
    )
    CATEGORY = f"{T.CATEGORY}/synthetic"
    RETURN_TYPES = (T.IMAGE, T.MASK, T.IMAGE, T.CAMERAS, T.SCENE, T.GUIDANCE_MODEL, T.IMAGE, T.TRACKS,
                    T.VIDEO_MODEL, T.SEGMENTER_MODEL, T.DEPTH_MODEL, T.INPAINT_MODEL, T.VIDEO_INPAINT_MODEL)
    RETURN_NAMES = ("images", "foreground_mask", "depth", "cameras", "gaussian_twin", "oracle_guidance",
                    "static_images", "tracks", "video_model", "segmenter", "depth_model", "inpaint_model",
                    "video_inpaint_model")
    OUTPUT_TOOLTIPS = (
        "The world seen by the cameras, one image per camera at its time.",
        "Foreground (moving object) mask per image.",
        "Depth per image, encoded as chosen in depth_mode.",
        "The cameras used (the world's reference view over time unless cameras were given).",
        "The world as 4D Gaussians sampled on its surfaces, moving exactly like the world.",
        "Score-distillation guidance answering from the world's ground truth (a weight-free stand-in for "
        "Zero123 / SD guidance).",
        "The same cameras seeing the world frozen at time 0 (e.g. the static 3D orbit of Diffusion4D).",
        "Ground-truth 3D tracks of the first camera's pixels over the cameras' times (MoGe4D's target).",
        "Video model returning the world's reference video (stand-in for Gen4D Video Model Loader).",
        "Segmenter returning the true foreground masks (stand-in for SAM2).",
        "Metric depth model answering with the true depth (stand-in for Depth Anything / UniDepth).",
        "Image inpainter filling holes with the world's true background at the pose the pipeline declares; it "
        "keeps the unmasked pixels and refuses an image they show from elsewhere (wrong pose, inverted mask).",
        "Video inpainter filling holes with the world's true background at the declared per-frame poses.",
    )
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "world": combo_in(list(WORLDS), "Which world."),
                "width": int_in(256, 16, 2048, "Image width of the reference view.", step=8),
                "height": int_in(256, 16, 2048, "Image height of the reference view.", step=8),
                "num_frames": int_in(16, 1, 512, "Frames of the reference video (times 0..1)."),
                "seed": seed_in("Seed of the world's layout and of the Gaussian twin's sampling."),
                "twin_points": int_in(20000, 100, 2_000_000, "Gaussians in the 4D twin."),
                "fps": float_in(8.0, 0.1, 240.0, "Frame rate stored with the twin scene.", step=0.1),
                "supersample": int_in(3, 1, 7, "Sub-pixel rays per axis (odd) for anti-aliased colour.", step=2),
                "depth_mode": combo_in(DEPTH_MODES, "Depth encoding of the depth output.", "metric"),
            },
            "optional": {
                "cameras": socket_in(T.CAMERAS, "Render from these cameras (at their times) instead of the "
                                     "world's reference view."),
            },
        }

    def build(self, world, width, height, num_frames, seed, twin_points, fps, supersample, depth_mode,
              cameras=None):
        if supersample % 2 == 0:
            raise ValueError(f"Gen4D_SyntheticWorld: supersample must be odd, got {supersample}")
        w = WORLDS[world](seed=seed)
        cams = cameras if cameras is not None else w.reference_cameras(width, height, num_frames)
        # ray-cast working set per sub-pixel ray, plus about 20 floats of outputs per pixel, plus the twin's
        # per-frame positions and rotations
        pixels = len(cams) * int(cams.width) * int(cams.height)
        need = pixels * (80 + 64 * supersample**2) + twin_points * max(len(cams), 2) * 7 * 4
        require("Gen4D_SyntheticWorld", need, "cpu", f"{len(cams)} frame(s) at {cams.width}x{cams.height} with "
                f"supersample {supersample} and {twin_points} twin points", "num_frames, width/height or supersample")
        stop = host.should_stop
        try:
            host.raise_if_interrupted()
            views = render(w, cams, supersample=supersample, should_stop=stop)
            host.raise_if_interrupted()
            twin = build_twin(w, num_frames, twin_points, seed, fps, reference_cameras=cams)
            alpha = views["alpha"]
            host.raise_if_interrupted()
            static = static_views(w, cams, views["rgb"], supersample, should_stop=stop)
            raw_tracks = trajectories(w, cams, should_stop=stop)
        except InterruptedError:
            host.raise_if_interrupted()
            raise
        tracks = Tracks.from_world_dict(raw_tracks, cams.Ks[0], cams.viewmats[0], fps)
        video = VideoModel(OracleVideoGenerator(w, int(cams.width), int(cams.height), len(cams), fps, supersample,
                                                cams))
        oracles = (OracleSegmenter(w, supersample, cams), OracleDepth(w, supersample, cams),
                   OracleImageInpainter(w, supersample, cams), OracleVideoInpainter(w, supersample, cams))
        return (to_image(views["rgb"]), to_mask(views["foreground"]),
                depth_to_image(views["depth"][..., None], depth_mode, alpha[..., None]), cams, twin,
                OracleGuidance(w), to_image(static), tracks, video, *oracles)


def static_views(world, cameras: Cameras, rgb, supersample: int, should_stop=None):
    """The cameras seeing the world frozen at time 0; ``rgb`` is their render at their own times.

    A fixed camera whose first time is 0 (a reference video) already shows it in frame 0.
    """
    fixed = bool((cameras.viewmats == cameras.viewmats[:1]).all() and (cameras.Ks == cameras.Ks[:1]).all())
    if fixed and float(cameras.times[0]) == 0.0:
        return rgb[:1].expand_as(rgb).clone()
    return render(world, cameras, times=torch.zeros(len(cameras)), supersample=supersample,
                  should_stop=should_stop)["rgb"]


def build_twin(world, num_frames: int, num_points: int, seed: int, fps: float, cameras=None,
               reference_cameras: Cameras | None = None) -> Scene4D:
    """The world as a 4D Gaussian scene: surface samples with exact per-frame motion.

    With ``cameras``, points go where those cameras see the world (about one per pixel), which
    makes renders from them much sharper. ``reference_cameras`` (the views the node rendered) are
    recorded in the scene, so a renderer or the 4D preview without cameras of its own starts there.
    """
    frames = max(int(num_frames), 2)
    times = [i / (frames - 1) for i in range(frames)]
    motion = surface_motion(world, times, num_points, seed, cameras=cameras)
    recorded = None if reference_cameras is None else reference_cameras.to("cpu")
    part = ScenePart(world.name, motion.gaussians, KeyframeMotion(motion.means, motion.quats),
                     reference_cameras=recorded)
    return Scene4D([part], num_frames=frames, fps=fps)


NODES = {"Gen4D_SyntheticWorld": (SyntheticWorld, "Gen4D Synthetic World")}
