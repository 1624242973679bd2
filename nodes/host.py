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
    with_notes(node, result, notes)   a node's return value carrying notes shown on the node

Design notes:
    ``comfy`` and ``folder_paths`` are imported lazily inside each call, so the pack imports and
    runs without ComfyUI (tests, the headless runner). Without ComfyUI every function falls back
    to plain, predictable behaviour.
"""

from __future__ import annotations

import importlib
import logging
import os
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
    "with_notes",
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


class Progress:
    """Progress reporting bound to ComfyUI's ProgressBar when it exists.

    Use as the ``callback(step, total, preview)`` of core loops: ``preview`` is an optional
    ``[H,W,3]`` float image in 0..1 shown on the node.
    """

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        utils = _module("comfy.utils")
        self._bar = utils.ProgressBar(self.total) if utils is not None else None
        self.step = 0

    def __call__(self, step: int, total: int | None = None, preview: torch.Tensor | None = None) -> None:
        self.step = int(step)
        if self._bar is None:
            if _progress_sink is not None:
                _progress_sink(self.step, self.total if total is None else int(total))
            return
        total = self.total if total is None else int(total)
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


def with_notes(node: str, result: tuple, notes: Sequence[str]) -> dict:
    """``{"ui": {"text": notes}, "result": result}``, each note logged as a warning naming ``node``.

    An empty ``notes`` still returns the dict, so a node run without notes clears the ones an earlier
    run left on the node.
    """
    notes = [str(n) for n in notes]
    for note in notes:
        logger.warning("%s: %s", node, note)
    return {"ui": {"text": notes}, "result": tuple(result)}
