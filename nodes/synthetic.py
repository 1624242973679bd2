# SPDX-License-Identifier: Apache-2.0
"""Gen4D_SyntheticWorld: a ground-truth world as ordinary video, masks, depth, cameras and a 4D twin."""

from __future__ import annotations

from ..core.convert import DEPTH_MODES, depth_to_image, to_image, to_mask
from ..core.scene import KeyframeMotion, Scene4D, ScenePart
from ..synthetic import OracleGuidance, object_world, render, scene_world, surface_motion
from . import host
from . import types as T
from .widgets import combo_in, float_in, int_in, seed_in, socket_in

WORLDS = {"object": object_world, "scene": scene_world}


class SyntheticWorld:
    DESCRIPTION = (
        "A synthetic world with exact ground truth, rendered by an analytic ray caster: 'object' is an "
        "articulated figure on an empty background, 'scene' a textured room with props, a drifting balloon and "
        "the figure walking through. Gives a weight-free twin of every workflow: reference video, foreground "
        "masks, depth, cameras, and the world as a 4D Gaussian scene."
    )
    CATEGORY = f"{T.CATEGORY}/synthetic"
    RETURN_TYPES = (T.IMAGE, T.MASK, T.IMAGE, T.CAMERAS, T.SCENE, T.GUIDANCE_MODEL)
    RETURN_NAMES = ("images", "foreground_mask", "depth", "cameras", "gaussian_twin", "oracle_guidance")
    OUTPUT_TOOLTIPS = (
        "The world seen by the cameras, one image per camera at its time.",
        "Foreground (moving object) mask per image.",
        "Depth per image, encoded as chosen in depth_mode.",
        "The cameras used (the world's reference view over time unless cameras were given).",
        "The world as 4D Gaussians sampled on its surfaces, moving exactly like the world.",
        "Score-distillation guidance answering from the world's ground truth (a weight-free stand-in for "
        "Zero123 / SD guidance).",
    )
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "world": combo_in(list(WORLDS), "Which world."),
                "width": int_in(256, 16, 2048, "Image width of the reference view.", step=8),
                "height": int_in(256, 16, 2048, "Image height of the reference view.", step=8),
                "num_frames": int_in(16, 1, 1024, "Frames of the reference video (times 0..1)."),
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
        host.raise_if_interrupted()
        views = render(w, cams, supersample=supersample)
        twin = build_twin(w, num_frames, twin_points, seed, fps)
        alpha = views["alpha"]
        return (to_image(views["rgb"]), to_mask(views["foreground"]),
                depth_to_image(views["depth"][..., None], depth_mode, alpha[..., None]), cams, twin,
                OracleGuidance(w))


def build_twin(world, num_frames: int, num_points: int, seed: int, fps: float, cameras=None) -> Scene4D:
    """The world as a 4D Gaussian scene: surface samples with exact per-frame motion.

    With ``cameras``, points go where those cameras see the world (about one per pixel), which
    makes renders from them much sharper.
    """
    frames = max(int(num_frames), 2)
    times = [i / (frames - 1) for i in range(frames)]
    motion = surface_motion(world, times, num_points, seed, cameras=cameras)
    part = ScenePart(world.name, motion.gaussians, KeyframeMotion(motion.means, motion.quats))
    return Scene4D([part], num_frames=frames, fps=fps)


NODES = {"Gen4D_SyntheticWorld": (SyntheticWorld, "Gen4D Synthetic World")}
