# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D nodes: orbital model loader, 4D-aware orbital video diffusion, motion magnitude, coarse views.

Public API:
    OrbitalModelLoader      node ``Gen4D_OrbitalModelLoader``: folder under models/gen4d/diffusion4d
                            -> GEN4D_ORBITAL_MODEL
    OrbitalVideoDiffusion   node ``Gen4D_OrbitalVideoDiffusion``: prompt / image / static orbit -> 4D orbit,
                            static orbit, orbit cameras, info text (Diffusion4D §3.1, §3.3, eq. 3)
    MotionMagnitude         node ``Gen4D_MotionMagnitude``: 4D orbit + static orbit -> m(V) (eq. 1)
    OrbitCoarseViews        node ``Gen4D_OrbitCoarseViews``: static orbit + 4D orbit + cameras -> the coarse
                            stage's posed images (§3.4) for Gen4D_StaticGaussians
    OrbitalModelHandle      the GEN4D_ORBITAL_MODEL payload (model + device / offload choice)

Design notes:
    The maths (eq. 1, eq. 3, the orbit's frame matching) lives in core.diffusion4d.orbital, the network and
    sampler in backends.orbital. The orbit is the paper's as its official render script made the training
    videos: elevation 0, distance 2, fovy 39.6°, frame i of T at azimuth 360·i/(T-1) and time i/(T-1), so
    the last frame returns to the first view (core.engine.cameras.diffusion4d_orbit; orbit_convention
    "open_loop" spaces the views 360/T instead); elevation, distance, fovy and convention only shape the
    cameras output and must match what the model was trained on. The
    coarse stage fits static Gaussians to the static orbit (time 0) and the 4D orbit together,
    the fine stage the 4D orbit alone (Gen4D_DeformationFit with the orbit cameras).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from ..backends.model_folders import resolve_model
from ..core.diffusion4d.orbital import OrbitalConfig, check_magnitude, motion_magnitude, orbit_frame_index
from ..core.engine.cameras import DIFFUSION4D_FOVY_DEG, ORBIT_CONVENTIONS, Cameras, diffusion4d_orbit
from ..core.formats.convert import check_image, to_image
from . import host
from . import types as T
from .placement import device_in, dtype_in, model_in, placement, validate_model
from .widgets import combo_in, float_in, int_in, seed_in, socket_in, str_in

__all__ = ["OrbitalModelLoader", "OrbitalVideoDiffusion", "MotionMagnitude", "OrbitCoarseViews",
           "OrbitalModelHandle", "NODES"]

logger = logging.getLogger(__name__)

_C = OrbitalConfig()
OFFLOAD = ("after_use", "keep")
_LAYOUT_TEXT = (
    "Folder layout (models/gen4d/diffusion4d/<name>/): model_index.json + vae/, text_encoder/, tokenizer/, unet/, "
    "scheduler/ = the base 3D-aware video model in diffusers layout (I2VGenXLPipeline with image_encoder/ and "
    "feature_extractor/ for image or static-3D conditions, e.g. VideoMV's image-to-3D model converted to "
    "diffusers; TextToVideoSDPipeline for text); optional unet_4d/ = your 4D-finetuned UNet (same class as unet/, "
    "config.json + diffusion_pytorch_model.safetensors); optional motion_magnitude/ = config.json (embed_dim, "
    "freq_dim, hidden_dim, scale, max_period) + model.safetensors of the magnitude MLP. Without unet_4d/ the "
    "model runs in base mode: magnitude and w2 have no effect. Safetensors only; nothing is downloaded "
    "(Diffusion4D published no weights)."
)


@dataclass
class OrbitalModelHandle:
    """GEN4D_ORBITAL_MODEL payload: ``model`` (backends.orbital.OrbitalModel), fixed device or None, offload."""

    model: object
    device: torch.device | None = None
    offload: str = "after_use"

    def torch_device(self) -> torch.device:
        """Where to run, looked up now (ComfyUI's device can change between runs)."""
        return self.device if self.device is not None else host.compute_device()


class OrbitalModelLoader:
    DESCRIPTION = ("Loads a Diffusion4D 4D-aware orbital video model. " + _LAYOUT_TEXT
                   + " Loaded once and kept for later runs.")
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.ORBITAL_MODEL,)
    RETURN_NAMES = ("orbital_model",)
    OUTPUT_TOOLTIPS = ("The orbital model, for Gen4D Orbital Video Diffusion.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": model_in("orbital", "Model folder under models/gen4d/diffusion4d (or an absolute path). "
                                  + _LAYOUT_TEXT),
                "device": device_in(),
                "dtype": dtype_in(),
                "offload": combo_in(OFFLOAD, "'after_use': move the networks back to the CPU after each run; "
                                    "'keep': leave them on the GPU."),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model=None):
        return validate_model("orbital", "Gen4D_OrbitalModelLoader", model)

    def load(self, model, device="auto", dtype="auto", offload="after_use"):
        from ..backends.orbital import load_orbital_model

        node = "Gen4D_OrbitalModelLoader"
        if offload not in OFFLOAD:
            raise ValueError(f"{node}: offload must be one of {list(OFFLOAD)}, got {offload!r}")
        path = resolve_model("orbital", model, ("model_index.json",))
        fixed, weights_dtype = placement(node, device, dtype)
        try:
            with torch.inference_mode(False):
                loaded = load_orbital_model(path, weights_dtype)
        except ValueError as exc:
            raise ValueError(f"{node}: {exc}") from exc
        if loaded.mode == "base":
            logger.warning("%s: %s has no unet_4d/: base mode, magnitude and w2 will have no effect", node, path)
        return (OrbitalModelHandle(loaded, fixed, offload),)


_CONVENTION_TIP = ("How the orbit's T views are spaced. render_script: view i at azimuth 360·i/(T-1), the last "
                   "view back at the first, as Diffusion4D's official render script (rendering/blender.py) made "
                   "the training videos; open_loop: 360·i/T, no repeated view.")


def _orbit_frames(frames: torch.Tensor, count: int, node: str, name: str, convention: str) -> torch.Tensor:
    """The ``count`` frames of ``frames`` at the poses of a ``count``-view orbit (every k-th frame)."""
    if frames.shape[0] == count:
        return frames
    n = frames.shape[0]
    closed = convention == "render_script"
    fits = n > count and ((n - 1) % (count - 1) == 0 if closed else n % count == 0)
    if not fits:
        hint = (f"{count} frames (one per view) or k·{count - 1}+1 frames (render_script orbits: the last frame "
                f"returns to the first view)" if closed else f"{count} frames (one per view) or a multiple of {count}")
        raise ValueError(f"{node}: {name} has {n} frames, which do not divide into the orbit's {count} views "
                         f"({convention}); give {hint}")
    return frames[orbit_frame_index(count, n, f"{node}.{name}", convention)]


def orbit_convention_of(cameras: Cameras) -> str:
    """``"render_script"`` when the orbit's last camera is back at its first, else ``"open_loop"``."""
    if len(cameras) < 2:
        return "render_script"
    same = torch.allclose(cameras.viewmats[0], cameras.viewmats[-1], atol=1e-4, rtol=0.0)
    return "render_script" if same else "open_loop"


class OrbitalVideoDiffusion:
    DESCRIPTION = (
        "Diffusion4D (§3.3): generates the orbital video of a moving 3D object: T views at elevation 0 and distance "
        "2 with the azimuth turning 0→360° while time runs 0→1 (frame i at azimuth 360·i/(T-1) and time i/(T-1), "
        "as the official render script made the training videos), from a prompt, a front-view image or a static 3D "
        "orbit video. The 4D model is conditioned on the motion magnitude (eq. 1) and guided by 3D-aware CFG "
        "(eq. 3: w1 towards prompt and magnitude, w2 away from the base 3D-aware model). Also returns the static "
        "orbit of the base model (time 0) for the coarse stage and the orbit cameras. In base mode (no 4D UNet in "
        "the folder) magnitude and w2 have no effect; the info output says which mode ran."
    )
    CATEGORY = f"{T.CATEGORY}/generate"
    RETURN_TYPES = (T.IMAGE, T.IMAGE, T.CAMERAS, T.STRING)
    RETURN_NAMES = ("orbit_4d", "static_orbit", "cameras", "info")
    OUTPUT_TOOLTIPS = (
        "The 4D orbit [T,S,S,3]: frame i at azimuth 360·i/(T-1) (open_loop: 360·i/T) and time i/(T-1).",
        "The static orbit at time 0 (base 3D-aware model, or the static orbit condition itself) for the coarse "
        "stage; same views as orbit_4d.",
        "Cameras of the 4D orbit (per-frame pose and time), for the fit and render nodes.",
        "Which mode ran (4D / base mode), the condition used and what had no effect.",
    )
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "orbital_model": socket_in(T.ORBITAL_MODEL, "A model from Gen4D Orbital Model Loader."),
                "prompt": str_in("", "Text condition (cross-attention). Text models need it; image models use it "
                                 "alongside the image.", multiline=True),
                "magnitude": float_in(_C.magnitude, 0.0, 1e7, "Motion magnitude m (eq. 1: mean over frames of the "
                                      "squared difference to the static orbit, 0..1 RGB at the output size); "
                                      "larger = more motion. Measure one with Gen4D Motion Magnitude. No effect "
                                      "in base mode.", step=1.0),
                "w1": float_in(_C.w1, -1.0, 50.0, "Eq. 3 guidance towards prompt and magnitude (paper 7.0).",
                               step=0.1),
                "w2": float_in(_C.w2, -1.0, 50.0, "Eq. 3 guidance away from the base 3D-aware model, i.e. towards "
                               "more motion (paper 0.5). No effect in base mode.", step=0.05),
                "steps": int_in(_C.steps, 1, 999, "DDIM steps (paper 50). At most 999: the usual schedule of 1000 "
                                "training timesteps with offset 1 has no room for more."),
                "num_frames": int_in(_C.num_frames, 2, 256, "Orbit views T, one per timestamp (paper 24)."),
                "size": int_in(_C.size, 8, 2048, "Square image size (paper 256); a multiple of the model's "
                               "down-sampling. Condition images must have this size.", step=8),
                "elevation": float_in(_C.elevation_deg, -89.0, 89.0, "Orbit elevation of the cameras output "
                                      "(paper 0; must match the model's training orbit).", step=0.5),
                "distance": float_in(_C.distance, 0.01, 1000.0, "Camera distance of the cameras output (paper 2).",
                                     step=0.01),
                "seed": seed_in("Seed of the initial noise; the same seed gives the same orbit."),
            },
            "optional": {
                "image": socket_in(T.IMAGE, "Front-view condition image, size x size (the first of a batch is "
                                   "used). Needed by image models unless a static orbit is given."),
                "static_orbit": socket_in(T.IMAGE, "Static 3D orbit video to animate (static-3D condition): T frames "
                                          "(or a longer orbit sharing their poses) at size x size, starting at the "
                                          "front view."),
                "orbit_convention": combo_in(ORBIT_CONVENTIONS, _CONVENTION_TIP + " Shapes the cameras output and "
                                             "how a longer static_orbit is matched.", "render_script"),
                "fovy_deg": float_in(DIFFUSION4D_FOVY_DEG, 1.0, 179.0, "Vertical field of view of the cameras "
                                     "output; the official renders use Blender's default camera (50 mm lens, "
                                     "36 mm sensor) = 39.6°.", step=0.1),
            },
        }

    def generate(self, orbital_model, prompt, magnitude, w1, w2, steps, num_frames, size, elevation, distance, seed,
                 image=None, static_orbit=None, orbit_convention="render_script", fovy_deg=DIFFUSION4D_FOVY_DEG):
        from ..backends.orbital import OrbitalInterrupted

        node = "Gen4D_OrbitalVideoDiffusion"
        if not isinstance(orbital_model, OrbitalModelHandle):
            raise ValueError(f"{node}: orbital_model must come from Gen4D Orbital Model Loader "
                             f"(GEN4D_ORBITAL_MODEL), got {type(orbital_model).__name__}")
        m = check_magnitude(magnitude, f"{node}.magnitude")
        if orbit_convention not in ORBIT_CONVENTIONS:
            raise ValueError(f"{node}: orbit_convention must be one of {list(ORBIT_CONVENTIONS)}, "
                             f"got {orbit_convention!r}")
        num_frames, size = int(num_frames), int(size)
        if num_frames < 2:
            raise ValueError(f"{node}: num_frames must be >= 2 (an orbit needs several views), got {num_frames}")
        condition = None
        if image is not None:
            frames = check_image(image, f"{node}.image")
            if frames.shape[0] > 1:
                logger.info("%s: %d images given; the first is the front view", node, frames.shape[0])
            condition = frames[0]
            if tuple(condition.shape[:2]) != (size, size):
                raise ValueError(f"{node}: the condition image is {condition.shape[1]}x{condition.shape[0]} pixels but "
                                 f"the orbit is generated at size {size}, so a {size}x{size} front view is expected; "
                                 f"resize or crop it (e.g. ImageScale) or change size")
        video = None
        if static_orbit is not None:
            video = check_image(static_orbit, f"{node}.static_orbit")
            if tuple(video.shape[1:3]) != (size, size):
                raise ValueError(f"{node}: static_orbit frames are {video.shape[2]}x{video.shape[1]} pixels but the "
                                 f"orbit is generated at size {size}; {size}x{size} frames are expected")
            video = _orbit_frames(video, num_frames, node, "static_orbit", orbit_convention)
        model = orbital_model.model
        passes = 2 if (model.mode != "base" and video is None) else 1
        progress = host.Progress(int(steps) * passes)
        host.raise_if_interrupted()
        try:
            out = model.sample(str(prompt), condition, video, m, float(w1), float(w2), int(steps), num_frames, size,
                               int(seed), callback=progress, should_stop=host.should_stop,
                               device=orbital_model.torch_device(), offload=orbital_model.offload)
        except OrbitalInterrupted:
            host.raise_if_interrupted()
            raise
        except ValueError as exc:
            raise ValueError(f"{node}: {exc}") from exc
        finally:
            host.soft_empty_cache()
        cameras = diffusion4d_orbit(size, size, num_frames, float(elevation), float(distance), float(fovy_deg),
                                    dynamic=True, convention=orbit_convention)
        return to_image(out.orbit_4d), to_image(out.static_orbit), cameras, out.info


class MotionMagnitude:
    DESCRIPTION = (
        "Diffusion4D's 3D-to-4D motion magnitude m(V) (eq. 1): the mean over frames of the squared difference "
        "between a 4D orbit and the static orbit seen from the same poses. Use it to pick the magnitude of Gen4D "
        "Orbital Video Diffusion from reference material (same image size). An orbit with fewer views is compared "
        "with the other at the poses they share (render_script orbits of n and T views share them when n-1 divides "
        "T-1; open_loop orbits when n divides T)."
    )
    CATEGORY = f"{T.CATEGORY}/generate"
    RETURN_TYPES = (T.FLOAT,)
    RETURN_NAMES = ("magnitude",)
    OUTPUT_TOOLTIPS = ("m(V) >= 0: squared differences summed over pixels and channels (0..1 RGB), averaged over "
                       "frames.",)
    FUNCTION = "measure"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "orbit_4d": socket_in(T.IMAGE, "The orbit around the moving object (time advancing with the view)."),
                "static_orbit": socket_in(T.IMAGE, "The orbit around the object frozen at time 0, same poses and "
                                          "size."),
            },
            "optional": {
                "orbit_convention": combo_in(ORBIT_CONVENTIONS, _CONVENTION_TIP + " Only matters when the two "
                                             "orbits have different view counts.", "render_script"),
            },
        }

    def measure(self, orbit_4d, static_orbit, orbit_convention="render_script"):
        node = "Gen4D_MotionMagnitude"
        dyn = check_image(orbit_4d, f"{node}.orbit_4d")
        sta = check_image(static_orbit, f"{node}.static_orbit")
        if dyn.shape[1:] != sta.shape[1:]:
            raise ValueError(f"{node}: orbit_4d frames are {dyn.shape[2]}x{dyn.shape[1]} but static_orbit frames are "
                             f"{sta.shape[2]}x{sta.shape[1]}; both orbits must have the same size")
        t, s = dyn.shape[0], sta.shape[0]
        if s <= t:
            dyn = dyn[orbit_frame_index(s, t, f"{node}: static_orbit", orbit_convention)]
        else:
            sta = sta[orbit_frame_index(t, s, f"{node}: orbit_4d", orbit_convention)]
        return (float(motion_magnitude(dyn, sta)),)


class OrbitCoarseViews:
    DESCRIPTION = (
        "Diffusion4D coarse stage (§3.4): puts the static orbit (time 0) and the 4D orbit together as posed images "
        "with their cameras, for Gen4D Static Gaussians (fit_frames = all). The fine stage then fits the 4D orbit "
        "alone with Gen4D Deformation Fit and the orbit cameras. A static orbit with fewer views takes the poses it "
        "shares with the 4D orbit; the cameras say how the orbit is spaced (last camera back at the first: "
        "render_script, else open_loop)."
    )
    CATEGORY = f"{T.CATEGORY}/generate"
    RETURN_TYPES = (T.IMAGE, T.CAMERAS)
    RETURN_NAMES = ("images", "cameras")
    OUTPUT_TOOLTIPS = (
        "Static orbit frames followed by the 4D orbit frames.",
        "One camera per image: the static orbit's poses at time 0, then the 4D orbit cameras.",
    )
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "orbit_4d": socket_in(T.IMAGE, "The 4D orbit (from Gen4D Orbital Video Diffusion or a synthetic "
                                      "world)."),
                "static_orbit": socket_in(T.IMAGE, "The static orbit at time 0; T frames, or fewer views at every "
                                          "k-th pose of the 4D orbit."),
                "cameras": socket_in(T.CAMERAS, "Cameras of the 4D orbit, one per frame."),
            }
        }

    def combine(self, orbit_4d, static_orbit, cameras):
        node = "Gen4D_OrbitCoarseViews"
        dyn = check_image(orbit_4d, f"{node}.orbit_4d")
        sta = check_image(static_orbit, f"{node}.static_orbit")
        if not isinstance(cameras, Cameras):
            raise ValueError(f"{node}: cameras must be GEN4D_CAMERAS, got {type(cameras).__name__}")
        if len(cameras) != dyn.shape[0]:
            raise ValueError(f"{node}: orbit_4d has {dyn.shape[0]} frames but there are {len(cameras)} cameras; give "
                             f"one camera per frame")
        if (cameras.width, cameras.height) != (dyn.shape[2], dyn.shape[1]):
            raise ValueError(f"{node}: cameras are {cameras.width}x{cameras.height} but orbit_4d frames are "
                             f"{dyn.shape[2]}x{dyn.shape[1]}")
        if sta.shape[1:] != dyn.shape[1:]:
            raise ValueError(f"{node}: static_orbit frames are {sta.shape[2]}x{sta.shape[1]} but orbit_4d frames are "
                             f"{dyn.shape[2]}x{dyn.shape[1]}")
        convention = orbit_convention_of(cameras)
        if sta.shape[0] > dyn.shape[0]:
            sta = sta[orbit_frame_index(dyn.shape[0], sta.shape[0], f"{node}: orbit_4d", convention)]
        index = orbit_frame_index(sta.shape[0], dyn.shape[0], f"{node}: static_orbit", convention)
        static_cams = cameras[index]
        static_cams = replace(static_cams, times=torch.zeros_like(static_cams.times))
        return torch.cat([sta, dyn]).contiguous(), Cameras.cat([static_cams, cameras])


NODES = {
    "Gen4D_OrbitalModelLoader": (OrbitalModelLoader, "Gen4D Orbital Model Loader"),
    "Gen4D_OrbitalVideoDiffusion": (OrbitalVideoDiffusion, "Gen4D Orbital Video Diffusion"),
    "Gen4D_MotionMagnitude": (MotionMagnitude, "Gen4D Motion Magnitude"),
    "Gen4D_OrbitCoarseViews": (OrbitCoarseViews, "Gen4D Orbit Coarse Views"),
}
