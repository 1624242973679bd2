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
    place(modules, device)          put modules on ``device`` the way memory allows (host-managed full load,
                                    full move, or weights streamed block by block); usable as a context
    modules_on(device, *modules)    ``place`` for a ``with`` block, parking the modules afterwards
    placement_mode(modules, device) ``(mode, reason)`` that :func:`place` would choose
    streamed_blocks(blocks)         iterate a block list, loading each streamed block around the loop body
    set_host_low_memory(fn)         install ``fn() -> bool``: the host runs in a low-memory mode (--lowvram)
    set_host_release(fn)            install ``fn(modules)``: the host's model manager lets go of them
    set_offload_policy(policy)      ``"auto"`` (default), ``"full"`` or ``"stream"``
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

    ComfyUI streams weights under ``--lowvram`` only for layers built from its own ``comfy.ops``;
    ours are plain torch / diffusers / transformers modules, which its loader either loads whole or
    leaves on the CPU. So :func:`place` streams them itself when the host reports a low-memory mode
    or the modules do not fit the free device memory with a margin: the repeated blocks of each large
    model (its biggest ``ModuleList``) stay on the CPU (pinned on CUDA) and each is copied to the
    device just before it runs, the next one prefetched on a side CUDA stream, and dropped after it
    ran; everything outside the blocks (embeddings, heads, norms) stays on the device while placed.
    Peak device memory is then the non-block weights, two blocks and the activations. Blocks are
    loaded by a forward pre-hook on each block, and by :func:`streamed_blocks` for models that call a
    block's submodules directly instead of the block. Diffusers' group offloading is not used: its
    block level only groups top-level block lists (transformers models nest theirs), it keeps the
    rest behind the top-level ``forward`` (which ``encode``/``decode`` and helper methods bypass),
    and its block hooks do not fire for models that call a block's submodules themselves. Parking
    removes the hooks and moves every tensor back to the CPU, so a module is never left split.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["require_time", "set_host_hook", "set_host_loader", "make_room", "park", "host_managed", "pipeline_modules",
           "modules_on", "available_bytes", "require", "GIB", "place", "placement_mode", "streamed_blocks",
           "set_host_low_memory", "set_host_release", "set_offload_policy", "streaming"]

logger = logging.getLogger(__name__)

GIB = 1024**3

_hook: Callable[[int, torch.device], None] | None = None
_loader: Callable[[list, torch.device], bool] | None = None
_managed: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
_low_memory: Callable[[], bool] | None = None
_release: Callable[[list], None] | None = None
_policy = "auto"
POLICIES = ("auto", "full", "stream")


def set_host_hook(fn: Callable[[int, torch.device], None] | None) -> None:
    global _hook
    _hook = fn


def set_host_loader(fn: Callable[[list, torch.device], bool] | None) -> None:
    global _loader
    _loader = fn


def set_host_low_memory(fn: Callable[[], bool] | None) -> None:
    global _low_memory
    _low_memory = fn


def set_host_release(fn: Callable[[list], None] | None) -> None:
    global _release
    _release = fn


def set_offload_policy(policy: str) -> None:
    """``"auto"``: stream when memory is low; ``"full"``: never stream; ``"stream"``: always stream large models."""
    global _policy
    if policy not in POLICIES:
        raise ValueError(f"set_offload_policy: policy must be one of {POLICIES}, got {policy!r}")
    _policy = policy


def host_managed(module: torch.nn.Module) -> bool:
    return module in _managed


def park(modules: Iterable[torch.nn.Module | None]) -> None:
    """Move ``modules`` to the CPU, except those the host's model manager places (it decides for them)."""
    for module in modules:
        if module is None:
            continue
        streamer = _streamers.get(module)
        if streamer is not None:
            streamer.detach()
        elif module not in _managed:
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


def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _block_lists(module: torch.nn.Module, share: float = 0.25) -> list[torch.nn.ModuleList]:
    """The outermost ``ModuleList``/``Sequential`` of two or more blocks holding at least ``share`` of the
    module's weights (a DiT's ``blocks``, UMT5's ``encoder.block``, CLIP's ``encoder.layers``)."""
    total = _nbytes(_tensors(module))
    found: list[torch.nn.ModuleList] = []

    def walk(m: torch.nn.Module) -> None:
        for child in m.children():
            if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)) and len(child) >= 2 and total \
                    and _nbytes(_tensors(child)) >= share * total:
                found.append(child)
            else:
                walk(child)

    walk(module)
    return found


class _Streamer:
    """Streams the blocks of ``module`` to ``device`` one at a time; the rest stays on ``device``."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.module, self.device = module, device
        self.blocks = [block for blocks in _block_lists(module) for block in blocks]
        self.index = {id(b): i for i, b in enumerate(self.blocks)}
        outside = self._outside()
        seen = {id(t) for t in outside}
        self.groups: list[list[torch.Tensor]] = []
        for block in self.blocks:
            group = [t for t in _tensors(block) if id(t) not in seen]
            seen.update(id(t) for t in group)
            self.groups.append(group)
        self.resident = outside
        self.cpu: dict[int, torch.Tensor] = {}
        self.loaded: dict[int, object] = {}  # block index -> CUDA event of its pending copy, or None
        self.stream = None
        self.handles: list = []
        self.loads = 0

    def _outside(self) -> list[torch.Tensor]:
        blocks = {id(b) for b in self.blocks}
        out: dict[int, torch.Tensor] = {}

        def walk(m: torch.nn.Module) -> None:
            for t in [*m._parameters.values(), *m._buffers.values()]:
                if t is not None:
                    out.setdefault(id(t), t)
            for child in m.children():
                if id(child) not in blocks:
                    walk(child)

        walk(self.module)
        return list(out.values())

    @property
    def block_bytes(self) -> int:
        return max((_nbytes(g) for g in self.groups), default=0)

    @property
    def resident_bytes(self) -> int:
        return _nbytes(self.resident)

    def attach(self) -> None:
        try:
            if self.device.type == "cuda":
                self.stream = torch.cuda.Stream(self.device)
            for t in self.resident:
                t.data = t.data.to(self.device)
            pin = self.stream is not None
            for group in self.groups:
                for t in group:
                    master = t.data.to("cpu")
                    if pin:
                        try:
                            master = master.pin_memory()
                        except RuntimeError:  # pinned memory exhausted: pageable copies still work
                            pin = False
                    t.data = master
                    self.cpu[id(t)] = master
            for i, block in enumerate(self.blocks):
                self.handles.append(block.register_forward_pre_hook(lambda _m, _a, i=i: self.enter(i)))
                self.handles.append(block.register_forward_hook(lambda _m, _a, _o, i=i: self.leave(i)))
        except BaseException:
            self.detach()
            raise
        _streamers[self.module] = self
        for blocks in _block_lists(self.module):
            _lists[blocks] = self

    def _load(self, i: int) -> None:
        if i in self.loaded:
            return
        self.loads += 1
        if self.stream is None:
            for t in self.groups[i]:
                t.data = self.cpu[id(t)].to(self.device, copy=True)
            self.loaded[i] = None
            return
        with torch.cuda.stream(self.stream):
            for t in self.groups[i]:
                t.data = self.cpu[id(t)].to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.loaded[i] = event

    def enter(self, i: int) -> None:
        self._load(i)
        event = self.loaded[i]
        if event is not None:  # wait for the side stream's copy; keep its memory until this stream used it
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in self.groups[i]:
                t.data.record_stream(current)
            self.loaded[i] = None
        following = (i + 1) % len(self.blocks)
        if following != i and self.stream is not None:
            self._load(following)

    def leave(self, i: int) -> None:
        if i in self.loaded and self.loaded[i] is None:
            for t in self.groups[i]:
                t.data = self.cpu[id(t)]
            del self.loaded[i]

    def detach(self) -> None:
        """Remove the hooks and put every tensor of the module on the CPU."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.stream is not None:
            self.stream.synchronize()
        for group in self.groups:
            for t in group:
                t.data = self.cpu.get(id(t), t.data.to("cpu"))
        for t in self.resident:
            t.data = t.data.to("cpu")
        self.loaded.clear()
        if _streamers.get(self.module) is self:
            del _streamers[self.module]
        for blocks in [b for b, s in _lists.items() if s is self]:
            del _lists[blocks]


_streamers: "weakref.WeakKeyDictionary[torch.nn.Module, _Streamer]" = weakref.WeakKeyDictionary()
_lists: "weakref.WeakKeyDictionary[torch.nn.Module, _Streamer]" = weakref.WeakKeyDictionary()
_logged: set = set()


def streaming(module: torch.nn.Module) -> bool:
    """True while ``module``'s blocks are streamed to a device by :func:`place`."""
    return module in _streamers


def streamed_blocks(blocks: torch.nn.ModuleList) -> Iterator[torch.nn.Module]:
    """Iterate ``blocks``; when they are streamed, each block is on the device during its loop body.

    For models that call a block's submodules (or read its parameters) themselves instead of calling
    the block, whose forward hooks then never run."""
    streamer = _lists.get(blocks)
    for block in blocks:
        i = streamer.index.get(id(block)) if streamer is not None and streamer.handles else None
        if i is not None:
            streamer.enter(i)
        yield block
        if i is not None:
            streamer.leave(i)


def placement_mode(modules: Iterable[torch.nn.Module | None], device: torch.device | str) -> tuple[str, str]:
    """``(mode, reason)``: ``"stream"``, ``"host"`` (the host's model manager loads them whole) or ``"move"``.

    Streams when some module has a block list and the policy is ``"stream"``, or, for an accelerator
    under the ``"auto"`` policy, when the host reports a low-memory
    mode (ComfyUI's ``--lowvram`` / ``--novram``), or the weights still to move (after the host freed
    what it could) do not fit the free device memory with a margin (10%, at least 1 GiB).
    """
    device = torch.device(device)
    mods = [m for m in modules if m is not None]
    full = "host" if _loader is not None else "move"
    streamable = any(_block_lists(m) for m in mods)
    if _policy == "stream" and streamable:
        return "stream", "offload policy 'stream'"
    if device.type == "cpu":
        return "move", "the device is the CPU"
    if not streamable:
        return full, "no module has a block list to stream"
    if _policy == "full":
        return full, "offload policy 'full'"
    if _low_memory is not None and _low_memory():
        return "stream", "the host runs in a low-VRAM mode (--lowvram / --novram)"
    need = _nbytes(t for m in mods if m not in _streamers for t in _tensors(m) if t.device.type != device.type)
    if need and _hook is not None:
        _hook(need, device)
    have = available_bytes(device)
    margin = max(GIB, need // 10)
    if need + margin > have:
        return "stream", f"the weights need {need / GIB:.1f} GiB and {have / GIB:.1f} GiB is free"
    return full, f"the weights fit ({need / GIB:.1f} GiB needed, {have / GIB:.1f} GiB free)"


class _Placement(contextlib.AbstractContextManager):
    def __init__(self, modules: list[torch.nn.Module], device: torch.device, mode: str):
        self.modules, self.device, self.mode = modules, device, mode

    def release(self) -> None:
        if self.device.type != "cpu":
            park(self.modules)
        else:
            for m in self.modules:
                if m in _streamers:
                    _streamers[m].detach()

    def __exit__(self, *exc) -> None:
        self.release()


def place(modules: Iterable[torch.nn.Module | None], device: torch.device | str) -> _Placement:
    """Put ``modules`` on ``device`` as memory allows (:func:`placement_mode`); returns a context whose exit
    (or ``release()``) parks them. Streamed modules stay streamed until parked."""
    device = torch.device(device)
    mods = [m for m in modules if m is not None]
    mode, reason = placement_mode(mods, device)
    key = (mode, reason, tuple(type(m).__name__ for m in mods))
    if key not in _logged:
        _logged.add(key)
        how = {"stream": "weights streamed block by block", "host": "loaded whole by the host's model manager",
               "move": "moved whole"}[mode]
        logger.info("placing %s on %s: %s, because %s", ", ".join(key[2]) or "nothing", device, how, reason)
    if mode != "stream":
        for m in mods:  # a module streamed earlier goes back to one piece before a whole load
            if m in _streamers:
                _streamers[m].detach()
        make_room(mods, device)
        for m in mods:
            m.to(device)
        return _Placement(mods, device, mode)
    held = [m for m in mods if m in _managed]
    if held:
        if _release is not None:
            _release(held)
        for m in held:
            _managed.discard(m)
    streamed = [m for m in mods if _block_lists(m)]
    whole = [m for m in mods if m not in streamed]
    try:
        make_room(whole, device)
        for m in whole:
            m.to(device)
        for m in streamed:
            if m in _streamers and _streamers[m].device == device:
                continue
            if m in _streamers:
                _streamers[m].detach()
            streamer = _Streamer(m, device)
            if _hook is not None:
                _hook(streamer.resident_bytes + 2 * streamer.block_bytes, device)
            streamer.attach()
    except BaseException:
        park(mods)
        raise
    return _Placement(mods, device, mode)


@contextlib.contextmanager
def modules_on(device: torch.device, *modules: torch.nn.Module | None) -> Iterator[None]:
    """Run ``modules`` on ``device`` for the block (placed by :func:`place`), then park them on the CPU."""
    with place(modules, device):
        yield


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
