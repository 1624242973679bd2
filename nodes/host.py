# SPDX-License-Identifier: Apache-2.0
"""The one bridge between the pack and the ComfyUI process it may run in.

Public API:
    in_comfy()                  True when ComfyUI's modules are importable
    Progress(total)             progress bar (ComfyUI's when present) with optional preview images
    set_progress_sink(fn)       where progress goes without ComfyUI (the headless runner logs it)
    should_stop()               True once the user pressed "Cancel" in ComfyUI
    raise_if_interrupted()      raise ComfyUI's interrupt exception, if the user cancelled
    output_directory()          ComfyUI's output folder (or ``$GEN4D_OUTPUT_DIR`` / ``./outputs``)
    temp_directory()            ComfyUI's temp folder (or a ``temp`` folder beside the outputs)
    compute_device()            the device ComfyUI assigns to models (or CUDA if present, else CPU)
    intermediate_device()       where IMAGE/MASK tensors travel between nodes
    soft_empty_cache()          release cached GPU memory
    free_memory_for(n, device)  ask ComfyUI's model manager to unload its models until ``n`` bytes fit
    load_with_comfy(modules, device)   register our modules with ComfyUI's model manager and load them there
    release_from_comfy(modules)   have ComfyUI's model manager unload and forget those modules
    low_vram()                  True when ComfyUI runs with --lowvram or --novram
    with_notes(node, result, notes)   a node's return value carrying notes shown on the node
    splat_class()               ComfyUI core's SPLAT payload class, or None where the host has none

Design notes:
    ``comfy`` and ``folder_paths`` are imported lazily inside each call, so the pack imports and
    runs without ComfyUI (tests, the headless runner). Without ComfyUI every function falls back
    to plain, predictable behaviour.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import torch

__all__ = [
    "in_comfy",
    "Progress",
    "set_progress_sink",
    "should_stop",
    "raise_if_interrupted",
    "output_directory",
    "input_directory",
    "temp_directory",
    "compute_device",
    "intermediate_device",
    "soft_empty_cache",
    "free_memory_for",
    "load_with_comfy",
    "release_from_comfy",
    "low_vram",
    "with_notes",
    "splat_class",
]

logger = logging.getLogger(__name__)


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def in_comfy() -> bool:
    return _module("comfy.model_management") is not None and _module("folder_paths") is not None


_progress_sink = None


def set_progress_sink(sink) -> None:
    """Send progress ``sink(step, total)`` outside ComfyUI (None: nowhere)."""
    global _progress_sink
    _progress_sink = sink


# Least seconds between two updates of ComfyUI's bar: each update sends messages to every open browser
# tab (and redraws the node there), and a fit steps a few hundred times a second.
PROGRESS_INTERVAL_S = 0.1


class Progress:
    """Progress reporting bound to ComfyUI's ProgressBar when it exists.

    Use as the ``callback(step, total, preview)`` of core loops: ``preview`` is an optional
    ``[H,W,3]`` float image in 0..1 shown on the node. ComfyUI's bar gets at most one update every
    :data:`PROGRESS_INTERVAL_S` seconds, besides the last step and every preview; the sink outside
    ComfyUI gets every step.
    """

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        utils = _module("comfy.utils")
        self._bar = utils.ProgressBar(self.total) if utils is not None else None
        self.step = 0
        self._shown_at = -float("inf")

    def __call__(self, step: int, total: int | None = None, preview: torch.Tensor | None = None) -> None:
        self.step = int(step)
        if self._bar is None:
            if _progress_sink is not None:
                _progress_sink(self.step, self.total if total is None else int(total))
            return
        total = self.total if total is None else int(total)
        now = time.monotonic()
        if preview is None and self.step < total and now - self._shown_at < PROGRESS_INTERVAL_S:
            return
        self._shown_at = now
        image = None
        if preview is not None:
            from PIL import Image

            array = (preview.detach().float().clamp(0, 1).cpu().numpy() * 255).astype("uint8")
            image = ("JPEG", Image.fromarray(array), 512)
        self._bar.update_absolute(self.step, total, image)


def should_stop() -> bool:
    mm = _module("comfy.model_management")
    return bool(mm is not None and mm.processing_interrupted())


def raise_if_interrupted() -> None:
    mm = _module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def output_directory() -> Path:
    fp = _module("folder_paths")
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(os.environ.get("GEN4D_OUTPUT_DIR", "outputs")).resolve()


def input_directory() -> Path:
    fp = _module("folder_paths")
    if fp is not None:
        return Path(fp.get_input_directory())
    return Path(os.environ.get("GEN4D_INPUT_DIR", "inputs")).resolve()


def temp_directory() -> Path:
    fp = _module("folder_paths")
    if fp is not None:
        return Path(fp.get_temp_directory())
    return Path(os.environ.get("GEN4D_TEMP_DIR", output_directory().parent / "temp")).resolve()


def compute_device() -> torch.device:
    mm = _module("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    mm = _module("comfy.model_management")
    if mm is not None and hasattr(mm, "intermediate_device"):
        return mm.intermediate_device()
    return torch.device("cpu")


def soft_empty_cache() -> None:
    mm = _module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_memory_for(num_bytes: int, device: torch.device) -> None:
    """Let ComfyUI unload its own models until ``num_bytes`` (plus a working margin) fit on ``device``."""
    mm = _module("comfy.model_management")
    if mm is None or not hasattr(mm, "free_memory"):
        return
    margin = 1.2  # activations and allocator slack on top of the weights
    mm.free_memory(int(num_bytes * margin), torch.device(device))


class _Holder(torch.nn.Module):
    """What a ComfyUI ``ModelPatcher`` owns for one of our modules: the patcher writes ``.device`` on its
    model, which diffusers and transformers models expose read-only."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def load_with_comfy(modules: Sequence[torch.nn.Module], device: torch.device) -> bool:
    """Load ``modules`` on ``device`` through ComfyUI's model manager, each as a ``ModelPatcher``.

    ComfyUI then evicts other models to make room, counts ours among its loaded models (so "Unload
    models" and free-memory requests move them to its offload device) and, under ``--lowvram``, frees
    what it can for them. The patcher is kept on the module, so every run reuses the same one.
    Returns False (nothing done) outside ComfyUI.
    """
    mm, patching = _module("comfy.model_management"), _module("comfy.model_patcher")
    if mm is None or patching is None or not hasattr(mm, "load_models_gpu"):
        return False
    offload = mm.unet_offload_device() if hasattr(mm, "unet_offload_device") else torch.device("cpu")
    patchers = []
    for module in modules:
        patcher = module.__dict__.get("_gen4d_patcher")
        if patcher is None or not _same_device(patcher.load_device, device):
            holder = _Holder(module, next(iter(module.parameters()), torch.empty(0)).device)
            patcher = patching.ModelPatcher(holder, load_device=torch.device(device), offload_device=offload)
            module.__dict__["_gen4d_patcher"] = patcher
        patchers.append(patcher)
    mm.load_models_gpu(patchers)
    return True


def release_from_comfy(modules: Sequence[torch.nn.Module]) -> None:
    """Unload ``modules`` through ComfyUI's model manager (back to its offload device) and drop them from
    its loaded models, so it neither counts them nor moves them while they are streamed by the pack."""
    mm = _module("comfy.model_management")
    loaded = getattr(mm, "current_loaded_models", None) if mm is not None else None
    if loaded is None:
        return
    patchers = [m.__dict__.get("_gen4d_patcher") for m in modules]
    for i in range(len(loaded) - 1, -1, -1):
        if any(p is not None and loaded[i].model is p for p in patchers):
            loaded[i].model_unload()
            loaded.pop(i)


def low_vram() -> bool:
    """True when ComfyUI's VRAM state is LOW_VRAM or NO_VRAM (``--lowvram`` / ``--novram``)."""
    mm = _module("comfy.model_management")
    state = getattr(mm, "vram_state", None) if mm is not None else None
    return getattr(state, "name", None) in ("LOW_VRAM", "NO_VRAM")


def with_notes(node: str, result: tuple, notes: Sequence[str]) -> dict:
    """``{"ui": {"text": notes}, "result": result}``, each note logged as a warning naming ``node``.

    An empty ``notes`` still returns the dict, so a node run without notes clears the ones an earlier
    run left on the node.
    """
    notes = [str(n) for n in notes]
    for note in notes:
        logger.warning("%s: %s", node, note)
    return {"ui": {"text": notes}, "result": tuple(result)}


def splat_class():
    """ComfyUI core's ``SPLAT`` payload class (``comfy_api.latest.Types.SPLAT``), or None.

    Feature detection, no version check: releases from mid-2026 expose it; older ones (and runs
    without ComfyUI) return None.
    """
    api = _module("comfy_api.latest")
    return getattr(getattr(api, "Types", None), "SPLAT", None) if api is not None else None
