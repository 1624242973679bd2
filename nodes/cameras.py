# SPDX-License-Identifier: Apache-2.0
"""Gen4D_CameraPath: named camera paths of the three papers, as a GEN4D_CAMERAS socket."""

from __future__ import annotations

from dataclasses import fields

from ..core.engine.camera_presets import CAMERA_PRESETS, PathSettings, camera_path
from ..core.engine.cameras import ORBIT_CONVENTIONS
from . import types as T
from .widgets import combo_in, float_in, int_in, str_in

_D = PathSettings()


class CameraPath:
    DESCRIPTION = (
        "A camera path: a generic orbit, the Diffusion4D 24-view orbit (time advances with the view), "
        "the CoCo4D outpaint pose sets (App. A), the MoGe4D paths relative to the input camera, or your "
        "own keyframes. Each camera carries the scene time it sees."
    )
    CATEGORY = f"{T.CATEGORY}/cameras"
    RETURN_TYPES = (T.CAMERAS,)
    RETURN_NAMES = ("cameras",)
    OUTPUT_TOOLTIPS = ("Per-frame world-to-camera matrices, intrinsics, image size and scene times.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": combo_in(CAMERA_PRESETS, "Which path. orbit: around the origin at fixed elevation; "
                                   "diffusion4d_*: 24 views at distance 2, elevation 0, fovy 39.6 (the official "
                                   "render script's orbit, see orbit_convention); coco4d_outpaint_loop*: "
                                   "the 4 outpaint poses of a loop (fovy 60, near 0.1, far 10000 in the paper); "
                                   "moge4d_*: paths starting at the input camera; keyframes: your own."),
                "num_frames": int_in(_D.num_frames, 1, 4096, "Number of cameras (CoCo4D pose sets always have 4)."),
                "width": int_in(_D.width, 8, 8192, "Image width in pixels.", step=8),
                "height": int_in(_D.height, 8, 8192, "Image height in pixels.", step=8),
                "fovy_deg": float_in(_D.fovy_deg, 0.0, 179.0, "Vertical field of view in degrees; 0 takes the "
                                     "preset's paper default (CoCo4D/MoGe4D 60, orbit 49.1, Diffusion4D 39.6).",
                                     step=0.1),
                "radius": float_in(_D.radius, 0.0, 10000.0, "Orbit distance to the centre in scene units "
                                   "(0 for CoCo4D poses turns the camera in place).", step=0.01),
                "elevation_deg": float_in(_D.elevation_deg, -89.0, 89.0, "Orbit elevation; positive looks down.",
                                          step=0.5),
                "azimuth_start_deg": float_in(_D.azimuth_start_deg, -720.0, 720.0, "Orbit start azimuth.", step=1.0),
                "azimuth_end_deg": float_in(_D.azimuth_end_deg, -720.0, 720.0,
                                            "Orbit end azimuth; 360° past the start is a closed loop.", step=1.0),
                "pivot_depth": float_in(_D.pivot_depth, 0.01, 10000.0, "MoGe4D paths turn about a point this "
                                        "far in front of the input camera (use the scene's median depth).",
                                        step=0.01),
                "near": float_in(_D.near, 0.0, 100.0, "Near clipping distance; 0 takes the preset's default "
                                 "(CoCo4D 0.1).", step=0.001),
                "far": float_in(_D.far, 0.0, 1e6, "Far clipping distance; 0 takes the preset's default "
                                "(CoCo4D 10000).", step=1.0),
            },
            "optional": {
                "keyframes": str_in(_D.keyframes, 'For preset "keyframes": a JSON list such as '
                                    '[{"t": 0, "azimuth": 0}, {"t": 1, "azimuth": 90, "elevation": 20}]; '
                                    "keys t (0..1), elevation, azimuth, radius, fovy.", multiline=True),
                "orbit_convention": combo_in(ORBIT_CONVENTIONS, "For the diffusion4d_* presets: render_script = "
                                             "view i at azimuth 360·i/(T-1), the last view back at the first, as "
                                             "Diffusion4D's official render script made its training videos "
                                             "(default); open_loop = 360·i/T, no repeated view.",
                                             "render_script"),
            },
        }

    def build(self, preset, **kwargs):
        names = {f.name for f in fields(PathSettings)}
        settings = PathSettings(**{k: v for k, v in kwargs.items() if k in names})
        return (camera_path(preset, settings),)


NODES = {"Gen4D_CameraPath": (CameraPath, "Gen4D Camera Path")}
