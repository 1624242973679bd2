# SPDX-License-Identifier: Apache-2.0
"""Tiny random-weight models in the real folder layouts, for tests and weight-free demos.

Public API:
    tiny_builder(kind)              decorator registering ``fn(folder: Path, seed: int) -> Path``
    build_tiny(kind, root, seed=0)  write the tiny model of ``kind`` under ``root`` and return its folder
    load_builders()                 import every builder module, so that :data:`TINY_KINDS` is complete
    TINY_KINDS                      kinds with a registered builder

Design notes:
    Every backend has a builder that creates its components from small configs (a couple of
    layers, widths 8-32), seeds them, and saves them with ``save_pretrained`` / safetensors into
    exactly the layout its loader reads. Tests then load them back through the real loader code, so
    nothing is ever fetched from a hub. The builders live in this package, one module per backend
    family (``depth``, ``sam2``, ``sd``: Zero123 / SD guidance / SD inpainting, ``video``: video
    generation, ``wan``: Wan VACE / Wan2.1-Fun InP / MoGe4D trajectory, ``orbital``); they import the
    backends, never the other way round, so production code carries no test-model code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

__all__ = ["tiny_builder", "build_tiny", "load_builders", "TINY_KINDS"]

_BUILDERS: dict[str, Callable[[Path, int], Path]] = {}
# Modules of this package that register builders; imported on demand so the pack imports fast.
_BUILDER_MODULES = ("depth", "sam2", "sd", "video", "wan", "orbital")
TINY_KINDS = _BUILDERS


def tiny_builder(kind: str):
    """Register the tiny-model builder of ``kind``."""

    def register(fn: Callable[[Path, int], Path]) -> Callable[[Path, int], Path]:
        _BUILDERS[kind] = fn
        return fn

    return register


def load_builders() -> None:
    """Import every builder module (registering its kinds in :data:`TINY_KINDS`)."""
    for name in _BUILDER_MODULES:
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise


def build_tiny(kind: str, root: str | Path, seed: int = 0) -> Path:
    """Write the tiny model of ``kind`` into ``root/<kind>-tiny`` and return that folder.

    Raises:
        ValueError: no builder for ``kind``.
    """
    load_builders()
    if kind not in _BUILDERS:
        raise ValueError(f"build_tiny: no tiny builder for {kind!r}; known: {sorted(_BUILDERS)}")
    folder = Path(root) / f"{kind}-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    return _BUILDERS[kind](folder, seed)
