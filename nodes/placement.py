# SPDX-License-Identifier: Apache-2.0
"""Shared widgets and checks of the model loader nodes: model picker, device, precision.

Public API:
    DEVICES, DTYPES                 widget options ("auto" = ComfyUI's device / bf16 where supported)
    model_in(kind, tooltip)         the model picker of a kind (lists what is present)
    device_in(), dtype_in()         the device and precision widgets
    placement(node, device, dtype)  (fixed device or None for "ask at run time", torch dtype)
    validate_model(kind, node, model, required)   VALIDATE_INPUTS answer for a model picker
"""

from __future__ import annotations

import torch

from ..backends.model_folders import NO_MODELS, list_models, preferred_dtype, resolve_model
from . import host
from .widgets import combo_in

__all__ = ["DEVICES", "DTYPES", "MODEL_KIND_KEY", "model_in", "device_in", "dtype_in", "placement", "validate_model"]

DEVICES = ("auto", "cpu")
DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE_TIP = "'auto': ComfyUI's compute device when the stage runs (the GPU when present); 'cpu': always the CPU."
_DTYPE_TIP = "Weight precision: 'auto' = bf16 on GPUs that support it, fp32 on the CPU."


MODEL_KIND_KEY = "gen4d_model_kind"


def model_in(kind: str, tooltip: str) -> tuple:
    """The model picker of ``kind``: the models present, marked so the frontend (web/gen4d_models.js) and the
    workflow checker know a saved name is the user's file, not one of a fixed set of choices."""
    choices, opts = combo_in(list_models(kind) or [NO_MODELS], tooltip)
    return choices, {**opts, MODEL_KIND_KEY: kind}


def device_in() -> tuple:
    return combo_in(DEVICES, _DEVICE_TIP)


def dtype_in() -> tuple:
    return combo_in(tuple(DTYPES), _DTYPE_TIP)


def placement(node: str, device: str, dtype: str) -> tuple[torch.device | None, torch.dtype]:
    """Where and in which precision a model runs; ``None`` device = look ComfyUI's up at run time."""
    if device not in DEVICES:
        raise ValueError(f"{node}: device must be one of {list(DEVICES)}, got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"{node}: dtype must be one of {list(DTYPES)}, got {dtype!r}")
    fixed = torch.device("cpu") if device == "cpu" else None
    return fixed, DTYPES[dtype] or preferred_dtype(fixed or host.compute_device())


def validate_model(kind: str, node: str, model, required: tuple[str, ...] = ("model_index.json",)) -> bool | str:
    """True, or the message ComfyUI shows; a linked (``None``) value is checked when the node runs."""
    if model is None:
        return True
    try:
        resolve_model(kind, model, required)
    except ValueError as exc:
        return f"{node}: {exc}"
    return True
