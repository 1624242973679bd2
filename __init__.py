# SPDX-License-Identifier: Apache-2.0
"""ComfyUI-Gen4D: generative 4D scenes (CoCo4D, Diffusion4D, MoGe4D) as ComfyUI nodes."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
