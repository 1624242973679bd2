# SPDX-License-Identifier: Apache-2.0
"""Where the images handed to a model were seen from: an optional hint for pose-aware backends.

Public API:
    Viewpoint                 cameras (one per image or frame) + what the images show
    seen_from(cameras, content="scene")   context manager declaring the viewpoint of model calls inside it
    current_viewpoint()       the innermost declared viewpoint, or None

Design notes:
    Pipelines know the pose of every image they send to a depth model or an inpainter (the
    reference view, an outpaint pose). Image models do not need it and ignore it; ground-truth
    oracle backends (``synthetic.oracles``) answer from the world at exactly that pose, so the same
    pipeline code runs on real models and on oracles. ``content`` says whether the images show the
    whole scene or only its background (CoCo4D's background branch, foreground removed). A context
    variable keeps the hint local to the call stack (threads and nested pipelines do not leak).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from .cameras import Cameras

__all__ = ["Viewpoint", "seen_from", "current_viewpoint", "CONTENTS"]

CONTENTS = ("scene", "background")


@dataclass(frozen=True)
class Viewpoint:
    """Cameras of the images of a model call (one camera, or one per image/frame) and their content."""

    cameras: Cameras
    content: str = "scene"


_CURRENT: ContextVar[Viewpoint | None] = ContextVar("gen4d_viewpoint", default=None)


@contextmanager
def seen_from(cameras: Cameras, content: str = "scene") -> Iterator[Viewpoint]:
    """Declare that model calls inside the block see images from ``cameras`` showing ``content``."""
    if not isinstance(cameras, Cameras):
        raise TypeError(f"seen_from: cameras must be Cameras, got {type(cameras).__name__}")
    if content not in CONTENTS:
        raise ValueError(f"seen_from: content must be one of {CONTENTS}, got {content!r}")
    view = Viewpoint(cameras, content)
    token = _CURRENT.set(view)
    try:
        yield view
    finally:
        _CURRENT.reset(token)


def current_viewpoint() -> Viewpoint | None:
    """The innermost viewpoint declared with :func:`seen_from`, or None."""
    return _CURRENT.get()
