# SPDX-License-Identifier: Apache-2.0
"""Let the host make room on an accelerator before one of our models moves there.

Public API:
    set_host_hook(fn)               install ``fn(num_bytes, device)`` (the node layer binds ComfyUI's)
    set_host_loader(fn)             install ``fn(modules, device) -> bool``: the host's model manager places them
    make_room(modules, device)      hand the modules to the host's model manager, or ask the hook for the
                                    bytes they still need on ``device``
    park(modules)                   move modules to the CPU, except those the host's model manager places
    host_managed(module)            True when the host's model manager places ``module``
    pipeline_modules(pipe)          the ``nn.Module`` components of a diffusers pipeline

Design notes:
    Backends never import ComfyUI. The node layer installs a hook that calls ComfyUI's model
    manager (``free_memory``), which unloads ComfyUI's own models (checkpoints, VAEs, other packs'
    models) until our model fits. Without a hook, or for CPU targets, nothing happens.

    With a host loader (inside ComfyUI: each module wrapped in a ``ModelPatcher`` and loaded with
    ``load_models_gpu``) our models are registered with the host's model manager like its own: it
    evicts others to make room, "Unload models" moves ours off the accelerator, and :func:`park`
    leaves where they live to it (the next run finds them loaded unless memory was needed).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["set_host_hook", "set_host_loader", "make_room", "park", "host_managed", "pipeline_modules",
           "modules_on"]

_hook: Callable[[int, torch.device], None] | None = None
_loader: Callable[[list, torch.device], bool] | None = None
_managed: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def set_host_hook(fn: Callable[[int, torch.device], None] | None) -> None:
    global _hook
    _hook = fn


def set_host_loader(fn: Callable[[list, torch.device], bool] | None) -> None:
    global _loader
    _loader = fn


def host_managed(module: torch.nn.Module) -> bool:
    return module in _managed


def park(modules: Iterable[torch.nn.Module | None]) -> None:
    """Move ``modules`` to the CPU, except those the host's model manager places (it decides for them)."""
    for module in modules:
        if module is not None and module not in _managed:
            module.to("cpu")


def pipeline_modules(pipe) -> list[torch.nn.Module]:
    components = getattr(pipe, "components", {}) or {}
    return [m for m in components.values() if isinstance(m, torch.nn.Module)]


def make_room(modules: Iterable[torch.nn.Module | None], device: torch.device | str) -> int:
    """Hand ``modules`` to the host's model manager for ``device``, or ask the host to free what they still
    need there; returns the bytes they still needed."""
    device = torch.device(device)
    modules = [m for m in modules if m is not None]
    needed = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()]
                 if t.device.type != device.type)
    if _loader is not None and modules and _loader(modules, device):
        _managed.update(modules)
        return needed
    if _hook is None or device.type == "cpu":
        return 0
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
            park(mods)
