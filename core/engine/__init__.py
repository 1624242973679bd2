# SPDX-License-Identifier: Apache-2.0
"""The shared 4D Gaussian engine every pipeline runs on.

Gaussians and spherical harmonics, cameras and camera paths, the pure-torch rasterizer, adaptive
density control, the HexPlane deformation field and its regularisers, image losses, score-distillation
hooks, static and dynamic fitting, and the dynamic scene (``Scene4D``, the GEN4D_SCENE payload).
Imports torch and numpy, and from the rest of ``core`` only ``formats.paths`` / ``formats.ply`` for
the scene file.
"""

# Motion kinds defined outside scene.py register when their module is imported; importing them here
# makes every kind known wherever a scene file is read.
from . import deformation  # noqa: E402, F401
