# SPDX-License-Identifier: Apache-2.0
"""Analytic ground-truth worlds: a small ray caster independent of any Gaussian renderer.

Public API:
    object_world, scene_world, articulated_object        the built-in worlds (deterministic by seed)
    World, render, cast_rays, pixel_rays, pixel_centers  worlds and exact ray casting
    albedo, move_points, surface_distance                textures, rigid part motion, distances
    trajectories                                         dense ground-truth 3D point tracks
    OracleGuidance                                       SDS guidance answering from the ground truth
    OracleDepth, OracleSegmenter, OracleImageInpainter, OracleVideoInpainter, OracleVideoGenerator
                                                         model stand-ins answering from the ground truth
    background_world                                     a world without its foreground group
    sample_surface, sample_gaussians, surface_motion     Gaussians on the surfaces, with exact motion
    SurfaceSamples, SurfaceMotion                        their containers
    export_dnerf, random_cameras                         a world as a D-NeRF-layout posed-frame dataset
    Primitive, Rectangle, Sphere, Box                    analytic primitives
    Motion, Fixed, Swing, Bob, Travel, Chain             rigid motions over normalised time
    Texture, Solid, Checker, Stripes, Gradient, Waves, Shaded   procedural local textures

Design notes:
    Imports only torch and the pack's ``core``. Used by tests, benchmarks, the oracle backends and
    the demo as ground truth: rgb, z-depth, alpha, part ids, group masks and trajectories are
    exact for any camera at any time, and renders are view independent (unshaded albedo with
    shading baked into the parts' local frames).
"""

from __future__ import annotations

from .export_posed import export_dnerf, random_cameras
from .motion import Bob, Chain, Fixed, Motion, Swing, Travel, check_times
from .oracles import (
    OracleDepth,
    OracleGuidance,
    OracleImageInpainter,
    OracleSegmenter,
    OracleVideoGenerator,
    OracleVideoInpainter,
    background_world,
)
from .primitives import Box, Primitive, Rectangle, Sphere
from .raycast import World, albedo, cast_rays, move_points, pixel_centers, pixel_rays, render, surface_distance
from .sampling import SurfaceMotion, SurfaceSamples, sample_gaussians, sample_surface, surface_motion
from .textures import Checker, Gradient, Shaded, Solid, Stripes, Texture, Waves
from .trajectories import trajectories
from .worlds import articulated_object, object_world, scene_world

__all__ = [
    "OracleDepth",
    "OracleGuidance",
    "OracleImageInpainter",
    "OracleSegmenter",
    "OracleVideoGenerator",
    "OracleVideoInpainter",
    "background_world",
    "Bob",
    "Box",
    "Chain",
    "Checker",
    "Fixed",
    "Gradient",
    "Motion",
    "Primitive",
    "Rectangle",
    "Shaded",
    "Solid",
    "Sphere",
    "Stripes",
    "SurfaceMotion",
    "SurfaceSamples",
    "Swing",
    "Texture",
    "Travel",
    "Waves",
    "World",
    "albedo",
    "articulated_object",
    "cast_rays",
    "check_times",
    "export_dnerf",
    "move_points",
    "object_world",
    "pixel_centers",
    "pixel_rays",
    "random_cameras",
    "render",
    "sample_gaussians",
    "sample_surface",
    "scene_world",
    "surface_distance",
    "surface_motion",
    "trajectories",
]
