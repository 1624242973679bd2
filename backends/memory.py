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
    available_bytes(device)         memory this process can still use on ``device`` (free GPU memory, or
                                    the host's available memory capped by the address-space limit)
    require(who, need, device, lower)   refuse up front (ValueError) when ``need`` bytes cannot fit

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

__all__ = ["require_time", "set_host_hook", "set_host_loader", "make_room", "park", "host_managed", "pipeline_modules",
           "modules_on", "available_bytes", "require", "GIB"]

GIB = 1024**3

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


def _host_available() -> int:
    """MemAvailable of the host, capped by this process's address-space limit (RLIMIT_AS) when set."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            import os

            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * resource.getpagesize()
            avail = min(avail, max(soft - used, 0))
    except (ImportError, OSError, ValueError):
        pass
    return int(avail)


def available_bytes(device: torch.device | str) -> int:
    """Bytes this process can still allocate on ``device``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return _host_available()


def require(who: str, need: float, device: torch.device | str, what: str, lower: str) -> None:
    """Raise ``ValueError`` before any work when ``need`` bytes exceed what ``device`` has.

    Args:
        who: the node or function, first in the message.
        need: estimated peak bytes of the work.
        what: how the estimate was made (e.g. ``"1024 cameras at 8192x8192"``).
        lower: the settings to lower (e.g. ``"batch_size, or the camera width/height"``).
    """
    have = available_bytes(device)
    if need > have:
        raise ValueError(f"{who}: {what} needs about {need / GIB:.1f} GiB on {torch.device(device)}, but about "
                         f"{have / GIB:.1f} GiB is available; lower {lower}")


def require_time(who: str, seconds: float, limit: float, what: str, lower: str) -> None:
    """Raise ``ValueError`` before any work when an estimated duration ``seconds`` exceeds ``limit``.

    Args:
        who: the node or function, first in the message.
        seconds: the estimate; ``what`` says what it covers (e.g. ``"one step of 1,000,000 Gaussians"``).
        limit: the longest acceptable duration in seconds.
        lower: the settings to lower.
    """
    if seconds > limit:
        raise ValueError(f"{who}: {what} would take about {seconds:,.0f} s, and at most {limit:,.0f} s is "
                         f"accepted; lower {lower}")
