# SPDX-License-Identifier: Apache-2.0
"""Socket types of the pack (DESIGN §3), declared once.

Payloads are core dataclasses: GEN4D_GAUSSIANS carries ``core.engine.gaussians.Gaussians``,
GEN4D_SCENE ``core.engine.scene.Scene4D``, GEN4D_CAMERAS ``core.engine.cameras.Cameras``,
GEN4D_FIT_OPTIONS ``core.engine.fit_options.FitOptions``.
"""

from __future__ import annotations

GAUSSIANS = "GEN4D_GAUSSIANS"
SCENE = "GEN4D_SCENE"
CAMERAS = "GEN4D_CAMERAS"
TRACKS = "GEN4D_TRACKS"
FIT_OPTIONS = "GEN4D_FIT_OPTIONS"

VIDEO_MODEL = "GEN4D_VIDEO_MODEL"
SEGMENTER_MODEL = "GEN4D_SEGMENTER_MODEL"
DEPTH_MODEL = "GEN4D_DEPTH_MODEL"
INPAINT_MODEL = "GEN4D_INPAINT_MODEL"
VIDEO_INPAINT_MODEL = "GEN4D_VIDEO_INPAINT_MODEL"
GUIDANCE_MODEL = "GEN4D_GUIDANCE_MODEL"
ORBITAL_MODEL = "GEN4D_ORBITAL_MODEL"
TRAJECTORY_MODEL = "GEN4D_TRAJECTORY_MODEL"
PARALLEL = "GEN4D_PARALLEL"  # backends.sequence_parallel.ParallelOptions

# ComfyUI core types used at the edges.
IMAGE = "IMAGE"
MASK = "MASK"
STRING = "STRING"
INT = "INT"
FLOAT = "FLOAT"
BOOLEAN = "BOOLEAN"
# ComfyUI core's Gaussian-splat socket (releases from mid-2026; see nodes/splat.py).
SPLAT = "SPLAT"
# ComfyUI core model sockets, taken by the native adaptor nodes.
MODEL = "MODEL"
VAE = "VAE"
CONDITIONING = "CONDITIONING"
CLIP_VISION = "CLIP_VISION"
CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"

CATEGORY = "Gen4D"
