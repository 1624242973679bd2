# SPDX-License-Identifier: Apache-2.0
"""Gen4D_TrajectoryModelLoader and Gen4D_TrajectoryDiT: MoGe4D's 4D Scene Trajectory Generator.

Public API:
    TrajectoryModelLoader   node ``Gen4D_TrajectoryModelLoader``: a MoGe4D folder -> GEN4D_TRAJECTORY_MODEL
    TrajectoryDiT           node ``Gen4D_TrajectoryDiT``: image + metric depth (a depth model or a depth
                            IMAGE) + prompt -> GEN4D_TRACKS, RGB motion maps, depth
    TrajectoryModelHandle   the GEN4D_TRAJECTORY_MODEL payload (cached model + device choice)
    clear_cache()           forget loaded trajectory models

Design notes:
    The maths lives in ``core.moge4d.strag`` (back-projection, eq. 1, MAdaNorm, depth lifting) and
    the model in ``backends.trajectory_dit``; these nodes only check inputs, bind progress / interrupt
    and move tensors to ComfyUI's conventions. The input image is centre-cropped to
    ``width / height`` and resized (never stretched).

    Depth: MoGe4D lifts *metric* depth (UniDepthV2, §4.2 / §4.4). The node takes exactly one of
    ``depth_model`` (a GEN4D_DEPTH_MODEL, which says its own kind; it sees the working image) or
    ``depth`` (a depth IMAGE from any node, e.g. a metric Depth Anything or MoGe node; its kind is
    ``depth_kind``, metres by default; it must show the image's view, same aspect ratio, and gets
    the same centre crop). ``core.moge4d.strag.lift_depth`` turns it into metric z-depth: a relative
    disparity is refused unless ``relative_depth`` is ``align_scale_shift``, which assumes the
    nearest surface at ``align_near`` and the farthest at ``align_far`` metres.

    Motion: ``motion_denormalisation`` = ``paper`` (default) reverses eq. 1 before adding the
    decoded motion to the initial points, as the paper states; ``official`` adds it as it is, as
    the official inference script does (``core.moge4d.strag.fuse_motion``).

    The camera is the official fixed pinhole unless ``fov`` (horizontal, degrees) is set. The
    tracks live in the input camera's frame (viewmat = identity), like the official inference;
    pixels without depth (sky, 0) carry ``valid = False`` and stay in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..backends.memory import require
from ..backends.model_folders import preferred_dtype, resolve_model
from ..core.formats.convert import check_image, depth_to_image, to_image
from ..core.formats.depth import DEPTH_KINDS, METRIC_DEPTH, depth_from_image
from ..core.moge4d.strag import MOTION_DENORMALISATIONS, RELATIVE_DEPTH_CHOICES, check_depth_for_lift, lift_depth
from . import host
from . import types as T
from .placement import DEVICES, DTYPES, device_in, dtype_in, model_in
from .widgets import combo_in, float_in, int_in, seed_in, socket_in, str_in

__all__ = ["TrajectoryModelLoader", "TrajectoryDiT", "TrajectoryModelHandle", "clear_cache", "NODES"]

logger = logging.getLogger(__name__)

_LOADER = "Gen4D_TrajectoryModelLoader"
_NODE = "Gen4D_TrajectoryDiT"


@dataclass
class TrajectoryModelHandle:
    """GEN4D_TRAJECTORY_MODEL payload: ``model`` (backends.trajectory_dit.TrajectoryModel) and placement."""

    model: object
    device: str = "auto"

    def torch_device(self) -> torch.device:
        return host.compute_device() if self.device == "auto" else torch.device(self.device)


def clear_cache() -> None:
    """Forget every loaded trajectory model."""
    from ..backends.trajectory_dit import clear_cache as clear

    clear()


class TrajectoryModelLoader:
    DESCRIPTION = (
        "Loads MoGe4D's 4D Scene Trajectory Generator from ComfyUI's models/gen4d/moge4d folder: the official "
        "release (Yanran21/MoGe4D: 4D-STraG/, VAE/) together with the alibaba-pai/Wan2.1-Fun-V1.1-14B-Control "
        "base (in a sub-folder, or its files next to 4D-STraG/), plus OmniMAE's vitb_pretrain.torch when the "
        "4D-STraG file does not carry it. Weights are read once and kept on the CPU between runs."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.TRAJECTORY_MODEL,)
    RETURN_NAMES = ("trajectory_model",)
    OUTPUT_TOOLTIPS = ("The trajectory model, for Gen4D Trajectory DiT.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("trajectory",
                                  "MoGe4D folder under models/gen4d/moge4d (4D-STraG/, VAE/ and the Wan2.1-Fun "
                                  "Control base)."),
                "device": device_in(),
                "dtype": dtype_in(),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model=None):
        if model is None:
            return True
        from ..backends.trajectory_dit import find_layout

        try:
            find_layout(resolve_model("trajectory", model))
        except ValueError as exc:
            return f"{_LOADER}: {exc}"
        return True

    def load(self, model, device="auto", dtype="auto"):
        from ..backends.trajectory_dit import load_trajectory_model

        if device not in DEVICES:
            raise ValueError(f"{_LOADER}: device must be one of {DEVICES}, got {device!r}")
        if dtype not in DTYPES:
            raise ValueError(f"{_LOADER}: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        path = resolve_model("trajectory", model)
        target = host.compute_device() if device == "auto" else torch.device("cpu")
        try:
            loaded = load_trajectory_model(path, DTYPES[dtype] or preferred_dtype(target))
        except ValueError as exc:
            raise ValueError(f"{_LOADER}: {exc}") from exc
        return (TrajectoryModelHandle(loaded, device),)


def _defaults():
    from ..backends.trajectory_dit import SamplerConfig

    return SamplerConfig()


class TrajectoryDiT:
    DESCRIPTION = (
        "MoGe4D 4D-STraG: lifts the image with metric depth (from a depth model, or a depth IMAGE in metres from "
        "another node) to a point cloud (the official fixed pinhole, or a field of view you set), and generates "
        "dense 4D point trajectories with a Wan-based DiT (depth latents, Motion Perception Module, flow matching). "
        "A relative depth is refused unless you choose an explicit alignment. The motion is de-normalised (eq. 1, "
        "as the paper states; or added as it is, as the official script does) and added to the initial points. "
        "Outputs tracks for Gen4D ViSM Render, the RGB motion maps the model decoded, and the depth."
    )
    CATEGORY = f"{T.CATEGORY}/generate"
    RETURN_TYPES = (T.TRACKS, T.IMAGE, T.IMAGE)
    RETURN_NAMES = ("tracks", "motion_preview", "depth")
    OUTPUT_TOOLTIPS = (
        "Dense trajectories [T,H,W,3] of every pixel in the input camera's frame, with the image's colours.",
        "The RGB motion maps decoded by the VAE (the model's intermediate representation), one per frame.",
        "The z-depth used for the initial points, as an 'inverse_normalized' picture (near = white).",
    )
    FUNCTION = "generate"
    INPUT_RANGES = {"depth": (0.0, None)}  # metric depth or disparity, not 0..1

    @classmethod
    def INPUT_TYPES(cls):
        d = _defaults()
        return {
            "required": {
                "trajectory_model": socket_in(T.TRAJECTORY_MODEL, "A model from Gen4D Trajectory Model Loader."),
                "image": socket_in(T.IMAGE, "The input image (the first one of a batch is used); centre-cropped to "
                                   "width/height and resized."),
                "prompt": str_in("", "What moves and how.", multiline=True),
                "negative_prompt": str_in("", "What to avoid (classifier-free guidance).", multiline=True),
                "num_frames": int_in(d.num_frames, 5, 161, "Frames of the motion; the Wan VAE takes 4k+1 (49 = "
                                     "the paper's length).", step=4),
                "width": int_in(d.width, 16, 2048, "Working width (multiple of 16; 512 = the paper's).", step=16),
                "height": int_in(d.height, 16, 2048, "Working height (multiple of 16; 368 = the paper's).",
                                 step=16),
                "steps": int_in(d.steps, 1, 200, "Flow-matching sampling steps (50 in the paper)."),
                "guidance_scale": float_in(d.guidance_scale, 1.0, 20.0, "Classifier-free guidance on the prompt "
                                           "(6 in the paper; 1 = off, half the compute).", step=0.1),
                "shift": float_in(d.shift, 0.1, 20.0, "Timestep shift of the flow-matching schedule (3 in the "
                                  "paper; the official Euler path used its config's 5).", step=0.1),
                "seed": seed_in(),
            },
            "optional": {
                "depth_model": socket_in(T.DEPTH_MODEL, "A depth model (Gen4D Depth Loader, or any GEN4D_DEPTH_MODEL) "
                                         "run on the working image. MoGe4D lifts metric depth: pick a metric model "
                                         "(e.g. Depth-Anything-V2-Metric-*-hf); a relative one is refused unless "
                                         "relative_depth says how to align it. Connect this or depth, not both."),
                "fov": float_in(0.0, 0.0, 179.0, "Horizontal field of view in degrees for lifting the depth; 0 = "
                                "the official fixed pinhole of MoGe4D's inference.", step=0.5),
                "depth": socket_in(T.IMAGE, "A depth IMAGE from another node (a metric Depth Anything, MoGe...) "
                                   "showing the same view as image (same aspect ratio): z-depth in metres in every "
                                   "channel, 0 = no surface, unless depth_kind says otherwise. Connect this or "
                                   "depth_model, not both."),
                "depth_kind": combo_in(DEPTH_KINDS, "What the depth IMAGE holds (an IMAGE carries no unit): "
                                       "metric_depth = z in metres; relative_disparity = affine-invariant disparity, "
                                       "near = bright (relative Depth Anything, ControlNet-style depth pictures), "
                                       "which needs relative_depth = align_scale_shift. A depth_model says its own "
                                       "kind.", METRIC_DEPTH),
                "relative_depth": combo_in(RELATIVE_DEPTH_CHOICES, "What to do with a relative depth (unknown scale "
                                           "and shift, which distort the lifted geometry): refuse = stop with an error "
                                           "(default); align_scale_shift = assume the nearest surface lies at "
                                           "align_near and the farthest at align_far metres, and make the disparity "
                                           "metric from that assumption (exact only if it holds).", "refuse"),
                "align_near": float_in(1.0, 0.01, 10000.0, "align_scale_shift only: assumed distance in metres of "
                                       "the nearest surface in the picture (the pixel of largest disparity).",
                                       step=0.1),
                "align_far": float_in(10.0, 0.02, 100000.0, "align_scale_shift only: assumed distance in metres of "
                                      "the farthest surface with a depth (the pixel of smallest positive "
                                      "disparity; a sky the model does not zero counts).", step=0.1),
                "motion_denormalisation": combo_in(MOTION_DENORMALISATIONS, "How the decoded motion joins the "
                                                   "initial points: paper = reverse eq. 1 (motion x depth / "
                                                   "focal factor), as MoGe4D §4.2/§4.4 state (default); official = "
                                                   "add the decoder output as it is, as the official inference "
                                                   "script does. Real weights decide which is right.", "paper"),
                "parallel": socket_in(T.PARALLEL, "Gen4D Parallel Options: sample on several GPUs of this machine "
                                      "(sequence parallel). Unconnected: one GPU."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, num_frames=None, width=None, height=None, relative_depth=None, align_near=None,
                        align_far=None):
        from ..backends.trajectory_dit import check_frames, check_size

        try:
            if num_frames is not None:
                check_frames(num_frames, _NODE)
            if width is not None and height is not None:
                check_size(width, height, _NODE)
        except ValueError as exc:
            return str(exc)
        if relative_depth == "align_scale_shift" and align_near is not None and align_far is not None \
                and not 0 < float(align_near) < float(align_far):
            return f"{_NODE}: align_near ({align_near}) must be below align_far ({align_far})"
        return True

    def generate(self, trajectory_model, image, prompt, negative_prompt="", num_frames=49, width=512, height=368,
                 steps=50, guidance_scale=6.0, shift=3.0, seed=0, depth_model=None, fov=0.0, depth=None,
                 depth_kind=METRIC_DEPTH, relative_depth="refuse", align_near=1.0, align_far=10.0,
                 motion_denormalisation="paper", parallel=None):
        from ..backends import trajectory_dit as td
        from ..backends.sequence_parallel import ParallelOptions

        if not isinstance(trajectory_model, TrajectoryModelHandle):
            raise TypeError(f"{_NODE}: trajectory_model must be a GEN4D_TRAJECTORY_MODEL from "
                            f"{_LOADER}, got {type(trajectory_model).__name__}")
        if parallel is not None and not isinstance(parallel, ParallelOptions):
            raise TypeError(f"{_NODE}: parallel must be a GEN4D_PARALLEL from Gen4D Parallel Options, got "
                            f"{type(parallel).__name__}")
        if depth_model is None and depth is None:
            raise ValueError(f"{_NODE}: no depth; connect depth_model (a metric model from Gen4D Depth Loader) or "
                             "depth (a z-depth IMAGE in metres from another node)")
        if depth_model is not None and depth is not None:
            raise ValueError(f"{_NODE}: both depth_model and depth are connected; connect one of them")
        if depth_model is not None and not all(hasattr(depth_model, a) for a in ("predict", "kind", "offload")):
            raise TypeError(f"{_NODE}: depth_model must be a GEN4D_DEPTH_MODEL, got {type(depth_model).__name__}")
        if motion_denormalisation not in MOTION_DENORMALISATIONS:
            raise ValueError(f"{_NODE}: motion_denormalisation must be one of {MOTION_DENORMALISATIONS}, "
                             f"got {motion_denormalisation!r}")
        # tracks, colours, visibility, motion maps and depth picture: about 16 floats a pixel, held twice
        require(_NODE, int(num_frames) * int(width) * int(height) * 16 * 4 * 2, trajectory_model.torch_device(),
                f"{num_frames} frame(s) at {width}x{height}", "num_frames or width/height")
        source = f"{_NODE}.depth_model" if depth_model is not None else f"{_NODE}.depth"
        kind = depth_model.kind if depth_model is not None else depth_kind
        check_depth_for_lift(kind, relative_depth, source)
        images = check_image(image, f"{_NODE}.image")
        try:
            td.check_frames(num_frames, _NODE)
            td.check_size(width, height, _NODE)
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
        if images.shape[1] < td.MULTIPLE or images.shape[2] < td.MULTIPLE:
            raise ValueError(f"{_NODE}: image is {images.shape[2]}x{images.shape[1]}; it must be at least "
                             f"{td.MULTIPLE}x{td.MULTIPLE} pixels (one latent patch)")
        work = td.fit_image(images[0], int(width), int(height))
        host.raise_if_interrupted()
        if depth_model is not None:
            try:
                raw = depth_model.predict(work[None], batch_size=1)[0]
            finally:
                depth_model.offload()
        else:
            raw = self._depth_image(depth, kind, images.shape[1:3], int(width), int(height))
        if relative_depth == "align_scale_shift" and kind != METRIC_DEPTH:
            logger.warning("%s: %s is a relative depth, made metric by assuming its nearest surface at %g m and its "
                           "farthest at %g m", _NODE, source, float(align_near), float(align_far))
        z = lift_depth(raw, kind, relative_depth, align_near, align_far, source)
        K = td.fov_intrinsics(int(height), int(width), fov) if fov and float(fov) > 0 else None
        device = trajectory_model.torch_device()
        progress = host.Progress(int(steps))
        try:
            result = td.generate_tracks(
                trajectory_model.model, work, z, str(prompt), str(negative_prompt), num_frames=int(num_frames),
                steps=int(steps), guidance_scale=float(guidance_scale), shift=float(shift), seed=int(seed), K=K,
                device=device, callback=progress, should_stop=host.should_stop,
                motion_denormalisation=motion_denormalisation, parallel=parallel)
        except InterruptedError:
            host.raise_if_interrupted()
            raise
        except ValueError as exc:
            raise ValueError(f"{_NODE}: {exc}") from exc
        finally:
            trajectory_model.model.offload()
            host.soft_empty_cache()
        depth_img = depth_to_image(result.depth[None, ..., None], "inverse_normalized")
        return (result.tracks, to_image(result.motion_maps), depth_img)

    @staticmethod
    def _depth_image(depth, kind: str, image_hw, width: int, height: int):
        """The depth IMAGE's values of ``kind``, centre-cropped like the image (same view required)."""
        from ..backends.trajectory_dit import crop_to_aspect

        values = depth_from_image(depth, kind, f"{_NODE}.depth")
        (ih, iw), (dh, dw) = image_hw, values.shape
        if abs(dw / dh - iw / ih) > 0.01 * (iw / ih):
            raise ValueError(f"{_NODE}.depth: the depth IMAGE is {dw}x{dh} and the image {iw}x{ih}; a depth map "
                             "must show the image's view (the same aspect ratio)")
        return crop_to_aspect(values, width, height)


NODES = {
    _LOADER: (TrajectoryModelLoader, "Gen4D Trajectory Model Loader"),
    _NODE: (TrajectoryDiT, "Gen4D Trajectory DiT"),
}
