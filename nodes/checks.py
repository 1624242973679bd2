# SPDX-License-Identifier: Apache-2.0
"""The one input-checking layer at the node edge, driven by each node's ``INPUT_TYPES``.

Public API:
    guard(node_id, cls)             wrap ``cls.FUNCTION`` so every call checks inputs first and outputs after
    check_inputs(node_id, cls, kw)  the checks alone (raises ValueError/TypeError naming the input)
    check_outputs(node_id, cls, r)  IMAGE/MASK outputs must be finite (a model's NaN never travels on)
    SOCKET_CHECKS                   socket type -> checker, declared once for every node

Node classes may refine the defaults with two optional attributes:
    INPUT_RANGES = {"depth": (0.0, None)}       value range of an IMAGE/MASK input (default 0..1)
    PAIRED_INPUTS = (("images", "masks", "cameras"),)
        inputs that describe the same frames: IMAGE/MASK/GEN4D_CAMERAS counts must agree (a single
        mask may stand for every frame) and IMAGE/MASK sizes must match.

Design notes:
    Widgets are checked the way ComfyUI's own validation does (type, INT/FLOAT within min..max, combos
    in their list unless the node's ``VALIDATE_INPUTS`` takes the combo over), then ``VALIDATE_INPUTS``
    itself runs, so the headless runner and direct calls get the same refusals as the UI. Nothing is
    clamped: a value outside its range is refused with what was received and what is expected.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import torch

from ..core.engine.cameras import Cameras
from ..core.engine.fit_options import FitOptions
from ..core.engine.gaussians import Gaussians
from ..core.engine.scene import Scene4D
from . import types as T

__all__ = ["guard", "check_inputs", "check_outputs", "SOCKET_CHECKS", "InputTypeError"]

class InputTypeError(TypeError, ValueError):
    """An input of the wrong kind: a TypeError, and a ValueError as the pack's other input errors are."""


# Float round-off a producer may leave past 0 or 1 (a VAE decode, a resize) is not an error.
RANGE_SLACK = 1e-3


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _tensor(node: str, name: str, value, kind: str, ranks: tuple[int, ...], layout: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{node}: {name} must be an {kind} tensor {layout}, got {_describe(value)}")
    if not value.is_floating_point():
        raise InputTypeError(f"{node}: {name} must be a float {kind} with values in 0..1, got {_describe(value)}"
                        f"; convert it to float (uint8 images: divide by 255)")
    if value.dim() not in ranks:
        raise ValueError(f"{node}: {name} must be a {kind} {layout}, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{node}: {name} is empty (shape {tuple(value.shape)})")
    return value


def _range(node: str, name: str, value: torch.Tensor, bounds: tuple[float | None, float | None], kind: str):
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{node}: {name} holds {bad} NaN or inf value(s); every {kind} value must be finite")
    lo, hi = bounds
    vmin, vmax = (float(v) for v in torch.aminmax(value.detach().float()))
    if (lo is not None and vmin < lo - RANGE_SLACK) or (hi is not None and vmax > hi + RANGE_SLACK):
        want = f"{'-inf' if lo is None else f'{lo:g}'}..{'inf' if hi is None else f'{hi:g}'}"
        hint = " (it looks like 0..255: divide by 255)" if hi == 1.0 and vmax > 1.5 else ""
        raise ValueError(f"{node}: {name} has values in {vmin:.4g}..{vmax:.4g}, expected {want}{hint}")


def _image(node: str, name: str, value, bounds) -> torch.Tensor:
    x = _tensor(node, name, value, "IMAGE", (4,), "[B,H,W,C]")
    if x.shape[-1] not in (3, 4):
        raise ValueError(f"{node}: {name} must be an IMAGE [B,H,W,C] with C in (3, 4) (RGB or RGBA), "
                         f"got shape {tuple(x.shape)}")
    _range(node, name, x, bounds, "IMAGE")
    return x


def _mask(node: str, name: str, value, bounds) -> torch.Tensor:
    x = _tensor(node, name, value, "MASK", (2, 3), "[B,H,W]")
    _range(node, name, x, bounds, "MASK")
    return x


def _cameras(node: str, name: str, value, _bounds) -> Cameras:
    if not isinstance(value, Cameras):
        raise InputTypeError(f"{node}: {name} must be a camera path (GEN4D_CAMERAS), got {_describe(value)}")
    for field in ("viewmats", "Ks"):
        tensor = getattr(value, field)
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{node}: {name} has NaN or inf {field}; every camera must be finite")
    times = value.times
    if not bool(torch.isfinite(times).all()) or (len(times) and (float(times.min()) < 0 or float(times.max()) > 1)):
        lo, hi = float(times.nan_to_num().min()), float(times.nan_to_num().max())
        raise ValueError(f"{node}: {name} has camera times in {lo:.4g}..{hi:.4g} (or NaN); times are "
                         f"normalised scene times in 0..1")
    return value


def _instance(cls: type, label: str) -> Callable:
    def check(node: str, name: str, value, _bounds):
        if not isinstance(value, cls):
            raise InputTypeError(f"{node}: {name} {label}, got {_describe(value)}")
        gaussians = value if isinstance(value, Gaussians) else None
        if gaussians is not None and not bool(torch.isfinite(gaussians.means).all()):
            raise ValueError(f"{node}: {name} has NaN or inf Gaussian positions")
        return value
    return check


def _handle(node: str, name: str, kind: str, value):
    """Payload sockets without one payload class (model handles, tracks): refuse plain data."""
    plain = (str, bytes, int, float, bool, list, tuple, torch.Tensor) + ((dict,) if kind.endswith("_MODEL") else ())
    if isinstance(value, plain):
        raise InputTypeError(f"{node}: {name} must be a {kind} (connect the node that outputs it), got "
                        f"{_describe(value)}")
    return value


SOCKET_CHECKS: dict[str, Callable] = {
    T.IMAGE: _image,
    T.MASK: _mask,
    T.CAMERAS: _cameras,
    T.GAUSSIANS: _instance(Gaussians, "must be a Gaussian set (GEN4D_GAUSSIANS)"),
    T.SCENE: _instance(Scene4D, "must be a 4D scene (GEN4D_SCENE)"),
    T.FIT_OPTIONS: _instance(FitOptions, "must come from Gen4D Fit Options (GEN4D_FIT_OPTIONS)"),
}


_WIDGETS = (T.INT, T.FLOAT, T.STRING, T.BOOLEAN)
# File and model pickers: their lists follow the disk (a loader also takes a folder path), the node checks them.
_PICKERS = ("model", "model_name", "file", "folder")


def _widget(node: str, name: str, kind, opts: dict, value, own: bool) -> None:
    """Type and declared range always; combo membership unless the node's VALIDATE_INPUTS owns the input
    (``own``: a loader also takes a folder path that is not in its list)."""
    if isinstance(kind, (list, tuple)):
        if not own and name not in _PICKERS and value not in kind:
            shown = ", ".join(repr(k) for k in list(kind)[:8]) + (", ..." if len(kind) > 8 else "")
            raise ValueError(f"{node}: {name} must be one of {shown}; got {value!r}")
        return
    if kind == T.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputTypeError(f"{node}: {name} must be an integer, got {_describe(value)} {value!r}")
    elif kind == T.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputTypeError(f"{node}: {name} must be a number, got {_describe(value)} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{node}: {name} must be a finite number, got {value!r}")
    elif kind == T.STRING:
        if not isinstance(value, str):
            raise InputTypeError(f"{node}: {name} must be text, got {_describe(value)}")
        return
    elif kind == T.BOOLEAN:
        if not isinstance(value, bool):
            raise InputTypeError(f"{node}: {name} must be true or false, got {_describe(value)} {value!r}")
        return
    else:
        return
    lo, hi = opts.get("min"), opts.get("max")
    if ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ValueError(f"{node}: {name} is {value!r}, outside its range {lo}..{hi}")


def _validate(node: str, cls, inputs: dict) -> None:
    """Run the node's own VALIDATE_INPUTS (as ComfyUI does before a run), naming the input it refuses."""
    fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return
    given = {k: inputs[k] for k in inspect.signature(fn).parameters if inputs.get(k) is not None}
    for name, value in given.items():
        answer = fn(**{name: value})
        if answer is not True:
            text = str(answer).removeprefix(f"{node}: ")
            raise ValueError(f"{node}: {text}" if text.startswith(name) else f"{node}: {name}: {text}")
    answer = fn(**given)
    if answer is not True:
        raise ValueError(f"{node}: {str(answer).removeprefix(f'{node}: ')}")


def _self_validated(cls) -> set[str]:
    """Inputs the node's VALIDATE_INPUTS takes over (ComfyUI then skips its own checks for them)."""
    fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return set()
    return set(inspect.signature(fn).parameters)


def _count(value) -> int | None:
    if isinstance(value, Cameras):
        return len(value)
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() >= 3 else 1
    return None


def _size(value) -> tuple[int, int] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[1:3]) if value.dim() == 4 else tuple(value.shape[-2:])
    return None


def _pairs(node: str, cls, inputs: dict, spec: dict) -> None:
    for group in getattr(cls, "PAIRED_INPUTS", ()):
        present = [(n, inputs[n]) for n in group if inputs.get(n) is not None]
        frames = [(n, _count(v)) for n, v in present if spec.get(n) != T.MASK]
        masks = [(n, _count(v)) for n, v in present if spec.get(n) == T.MASK]
        for (a, ca), (b, cb) in zip(frames, frames[1:]):
            if ca != cb:
                raise ValueError(f"{node}: {a} has {ca} frame(s) but {b} has {cb}; they must describe the "
                                 f"same frames")
        if frames:
            ref, n = frames[0]
            for name, c in masks:
                if c not in (1, n):
                    raise ValueError(f"{node}: {name}: {c} masks for {n} images in {ref}; give one mask or "
                                     f"one per image")
        sized = [(n, _size(v)) for n, v in present if spec.get(n) in (T.IMAGE, T.MASK)]
        for (a, sa), (b, sb) in zip(sized, sized[1:]):
            if sa != sb:
                raise ValueError(f"{node}: {b} size {sb} (height, width) does not match the image size {sa} of "
                                 f"{a}; they must have the same size")


def check_inputs(node: str, cls, inputs: dict) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad input of ``cls`` (a node class)."""
    declared = cls.INPUT_TYPES()
    ranges = getattr(cls, "INPUT_RANGES", {})
    skip = _self_validated(cls)
    kinds: dict[str, Any] = {}
    for section in ("required", "optional"):
        for name, entry in declared.get(section, {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            kinds[name] = kind
            value = inputs.get(name)
            if value is None:
                # a widget left out of a direct call takes the function's own default
                if section == "required" and isinstance(kind, str) and kind.isupper() and kind not in _WIDGETS:
                    raise ValueError(f"{node}: {name} is required and was not given")
                continue
            if isinstance(kind, str) and kind in SOCKET_CHECKS:
                SOCKET_CHECKS[kind](node, name, value, ranges.get(name, (0.0, 1.0)))
            elif isinstance(kind, str) and kind.startswith("GEN4D_"):
                _handle(node, name, kind, value)
            else:
                _widget(node, name, kind, opts, value, name in skip)
    _validate(node, cls, inputs)
    _pairs(node, cls, inputs, kinds)


def check_outputs(node: str, cls, result):
    """IMAGE and MASK outputs must be finite: a NaN frame from a model is an error here, not downstream."""
    values = result.get("result") if isinstance(result, dict) else result
    if not isinstance(values, tuple):
        return result
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    for kind, name, value in zip(cls.RETURN_TYPES, names, values):
        if kind in (T.IMAGE, T.MASK) and isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{node}: output '{name}' came out with NaN or inf values (the model or the "
                                 f"settings diverged); try fewer steps, another seed or fp32")
    return result


def guard(node: str, cls) -> None:
    """Wrap ``cls.FUNCTION`` once so each call is checked on the way in and out."""
    fn = getattr(cls, cls.FUNCTION)
    if getattr(fn, "_gen4d_checked", False):
        return
    params = inspect.signature(fn)

    @functools.wraps(fn)
    def checked(self, *args, **kwargs):
        bound = params.bind(self, *args, **kwargs)
        bound.apply_defaults()
        inputs = {}
        for key, value in bound.arguments.items():
            kind = params.parameters[key].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                inputs.update(value)
            elif key != "self" and kind is not inspect.Parameter.VAR_POSITIONAL:
                inputs[key] = value
        check_inputs(node, cls, inputs)
        return check_outputs(node, cls, fn(self, *args, **kwargs))

    checked._gen4d_checked = True
    setattr(cls, cls.FUNCTION, checked)
