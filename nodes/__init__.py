# SPDX-License-Identifier: Apache-2.0
"""ComfyUI nodes of the pack; each module exports ``NODES = {node_id: (class, display name)}``."""

from __future__ import annotations

from ..backends.loading import set_cache_owner
from ..backends.memory import set_host_hook, set_host_loader, set_host_low_memory, set_host_release
from . import (
    cameras,
    checks,
    compose,
    depth,
    diffusion4d,
    fit,
    fit_options,
    guidance,
    host,
    inpaint,
    moge4d,
    native,
    outpaint,
    parallel,
    posed_frames,
    preview,
    render,
    scene_io,
    segment,
    splat,
    synthetic,
    video,
    vism,
)

_MODULES = (cameras, synthetic, video, segment, depth, guidance, inpaint, fit, fit_options, outpaint, compose,
            diffusion4d, moge4d, vism, native, parallel, render, scene_io, posed_frames, preview, splat)

# Our models ask ComfyUI's model manager for room before they move to the GPU; inside ComfyUI they are
# loaded by it (ModelPatcher), and its node cache, not ours, decides how long they stay in memory.
set_host_hook(host.free_memory_for)
set_host_loader(host.load_with_comfy)
set_host_low_memory(host.low_vram)
set_host_release(host.release_from_comfy)
set_cache_owner(host.in_comfy)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in _MODULES:
    for _node_id, (_cls, _display) in _module.NODES.items():
        checks.guard(_node_id, _cls)  # inputs checked per socket type on the way in, outputs on the way out
        NODE_CLASS_MAPPINGS[_node_id] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_node_id] = _display
