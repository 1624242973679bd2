# SPDX-License-Identifier: Apache-2.0
"""Let the host make room on an accelerator before one of our models moves there.

Public API:
    set_host_hook(fn)               install ``fn(num_bytes, device)`` (the node layer binds ComfyUI's)
    make_room(modules, device)      ask the hook for the bytes the modules still need on ``device``
    pipeline_modules(pipe)          the ``nn.Module`` components of a diffusers pipeline

Design notes:
    Backends never import ComfyUI. The node layer installs a hook that calls ComfyUI's model
    manager (``free_memory``), which unloads ComfyUI's own models (checkpoints, VAEs, other packs'
    models) until our model fits. Without a hook, or for CPU targets, nothing happens.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["set_host_hook", "make_room", "pipeline_modules", "modules_on"]

_hook: Callable[[int, torch.device], None] | None = None


def set_host_hook(fn: Callable[[int, torch.device], None] | None) -> None:
    global _hook
    _hook = fn


def pipeline_modules(pipe) -> list[torch.nn.Module]:
    components = getattr(pipe, "components", {}) or {}
    return [m for m in components.values() if isinstance(m, torch.nn.Module)]


def make_room(modules: Iterable[torch.nn.Module | None], device: torch.device | str) -> int:
    """Ask the host to free what ``modules`` still need on ``device``; returns the bytes asked for."""
    device = torch.device(device)
    if _hook is None or device.type == "cpu":
        return 0
    needed = 0
    for module in modules:
        if module is None:
            continue
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.device.type != device.type:
                needed += tensor.numel() * tensor.element_size()
    if needed:
        _hook(needed, device)
    return needed


@contextlib.contextmanager
def modules_on(device: torch.device, *modules: torch.nn.Module | None) -> Iterator[None]:
    """Run ``modules`` on ``device`` for the block (after asking the host for room), then park them on the CPU."""
    mods = [m for m in modules if m is not None]
    make_room(mods, device)
    for m in mods:
        m.to(device)
    try:
        yield
    finally:
        if torch.device(device).type != "cpu":
            for m in mods:
                m.to("cpu")
