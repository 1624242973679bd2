# SPDX-License-Identifier: Apache-2.0
"""Small builders for V1 input specs, so every input carries a tooltip and defaults stay in one place."""

from __future__ import annotations

# The one default colour behind objects and scenes, for every node with such a widget (fit, render,
# compose, preview, the SAM2 foreground frames): white, the background CoCo4D's object fit and
# Zero123 use (and Objaverse renders), so an object rendered alone looks like the frames it was fitted to.
DEFAULT_BACKGROUND = "#ffffff"


def int_in(default: int, lo: int, hi: int, tooltip: str, step: int = 1, **extra) -> tuple:
    return ("INT", {"default": int(default), "min": lo, "max": hi, "step": step, "tooltip": tooltip, **extra})


def float_in(default: float, lo: float, hi: float, tooltip: str, step: float = 0.01, **extra) -> tuple:
    return ("FLOAT", {"default": float(default), "min": lo, "max": hi, "step": step, "tooltip": tooltip, **extra})


def bool_in(default: bool, tooltip: str) -> tuple:
    return ("BOOLEAN", {"default": bool(default), "tooltip": tooltip})


def str_in(default: str, tooltip: str, multiline: bool = False) -> tuple:
    return ("STRING", {"default": default, "multiline": multiline, "tooltip": tooltip})


def background_in(tooltip: str) -> tuple:
    """A background colour widget (#rrggbb or r,g,b) defaulting to :data:`DEFAULT_BACKGROUND`."""
    return str_in(DEFAULT_BACKGROUND, tooltip)


def combo_in(options, tooltip: str, default: str | None = None) -> tuple:
    options = list(options)
    return (options, {"default": default if default is not None else options[0], "tooltip": tooltip})


def socket_in(type_name: str, tooltip: str) -> tuple:
    return (type_name, {"tooltip": tooltip})


def seed_in(tooltip: str = "Seed of every random choice in this node; the same seed gives the same result.") -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": tooltip})


def color_error(value) -> bool | str:
    """``VALIDATE_INPUTS`` answer for a colour widget: True, or the message shown in ComfyUI.

    A linked input arrives as ``None`` before execution and is checked when the node runs.
    """
    if value is None:
        return True
    from ..core.formats.convert import parse_color

    try:
        parse_color(value)
    except ValueError as exc:
        return str(exc)
    return True


def shown_name(text, limit: int = 60) -> str:
    """``repr(text)``, cut to about ``limit`` characters with its full length, for error messages about names."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
