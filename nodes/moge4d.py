# SPDX-License-Identifier: Apache-2.0
"""Gen4D_TrajectoryModelLoader and Gen4D_TrajectoryDiT: MoGe4D's 4D Scene Trajectory Generator.

Public API:
    TrajectoryModelLoader   node ``Gen4D_TrajectoryModelLoader``: a MoGe4D folder -> GEN4D_TRAJECTORY_MODEL
    TrajectoryDiT           node ``Gen4D_TrajectoryDiT``: image + depth model + prompt -> GEN4D_TRACKS,
                            RGB motion maps, depth
    TrajectoryModelHandle   the GEN4D_TRAJECTORY_MODEL payload (cached model + device choice)
    clear_cache()           forget loaded trajectory models

Design notes:
    The maths lives in ``core.moge4d.strag`` (back-projection, eq. 1, MAdaNorm) and the model in
    ``backends.trajectory_dit``; these nodes only check inputs, bind progress / interrupt and move
    tensors to ComfyUI's conventions. The input image is centre-cropped to ``width / height`` and
    resized (never stretched); the depth model sees that working image and its output becomes a
    z-depth with ``core.formats.depth.to_z_depth`` (a relative model's ``1 / disparity`` is fine: eq. 1 is
    scale-invariant). The camera is the official fixed pinhole unless ``fov`` (horizontal, degrees)
    is set. The tracks live in the input camera's frame (viewmat = identity), like the official
    inference; pixels without depth (sky, 0 / inf) carry ``valid = False`` and stay in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..backends.model_folders import NO_MODELS, list_models, preferred_dtype, resolve_model
from ..core.formats.convert import check_image, depth_to_image, to_image
from ..core.formats.depth import to_z_depth
from . import host
from . import types as T
from .placement import DEVICES, DTYPES, device_in, dtype_in
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
                "model": combo_in(list_models("trajectory") or [NO_MODELS],
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
        "MoGe4D 4D-STraG: estimates the image's depth, lifts it to a point cloud (the official fixed pinhole, or a "
        "field of view you set), and generates dense 4D point trajectories with a Wan-based DiT (depth latents, "
        "Motion Perception Module, flow matching). The motion is de-normalised (eq. 1) and added to the initial "
        "points. Outputs tracks for Gen4D ViSM Render, the RGB motion maps the model decoded, and the depth."
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

    @classmethod
    def INPUT_TYPES(cls):
        d = _defaults()
        return {
            "required": {
                "trajectory_model": socket_in(T.TRAJECTORY_MODEL, "A model from Gen4D Trajectory Model Loader."),
                "image": socket_in(T.IMAGE, "The input image (the first one of a batch is used); centre-cropped to "
                                   "width/height and resized."),
                "depth_model": socket_in(T.DEPTH_MODEL, "A depth model (Gen4D Depth Loader, or any "
                                         "GEN4D_DEPTH_MODEL); its output is turned into z-depth."),
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
                "fov": float_in(0.0, 0.0, 179.0, "Horizontal field of view in degrees for lifting the depth; 0 = "
                                "the official fixed pinhole of MoGe4D's inference.", step=0.5),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, num_frames=None, width=None, height=None):
        from ..backends.trajectory_dit import check_frames, check_size

        try:
            if num_frames is not None:
                check_frames(num_frames, _NODE)
            if width is not None and height is not None:
                check_size(width, height, _NODE)
        except ValueError as exc:
            return str(exc)
        return True

    def generate(self, trajectory_model, image, depth_model, prompt, negative_prompt="", num_frames=49, width=512,
                 height=368, steps=50, guidance_scale=6.0, shift=3.0, seed=0, fov=0.0):
        from ..backends import trajectory_dit as td

        if not isinstance(trajectory_model, TrajectoryModelHandle):
            raise TypeError(f"{_NODE}: trajectory_model must be a GEN4D_TRAJECTORY_MODEL from "
                            f"{_LOADER}, got {type(trajectory_model).__name__}")
        if not all(hasattr(depth_model, a) for a in ("predict", "kind", "offload")):
            raise TypeError(f"{_NODE}: depth_model must be a GEN4D_DEPTH_MODEL, got {type(depth_model).__name__}")
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
        try:
            raw = depth_model.predict(work[None], batch_size=1)
        finally:
            depth_model.offload()
        z = to_z_depth(raw, depth_model.kind)[0]
        K = td.fov_intrinsics(int(height), int(width), fov) if fov and float(fov) > 0 else None
        device = trajectory_model.torch_device()
        progress = host.Progress(int(steps))
        try:
            result = td.generate_tracks(
                trajectory_model.model, work, z, str(prompt), str(negative_prompt), num_frames=int(num_frames),
                steps=int(steps), guidance_scale=float(guidance_scale), shift=float(shift), seed=int(seed), K=K,
                device=device, callback=progress, should_stop=host.should_stop)
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


NODES = {
    _LOADER: (TrajectoryModelLoader, "Gen4D Trajectory Model Loader"),
    _NODE: (TrajectoryDiT, "Gen4D Trajectory DiT"),
}
