# SPDX-License-Identifier: Apache-2.0
"""Gen4D_ToSplat / Gen4D_FromSplat: our scenes to and from ComfyUI core's ``SPLAT`` socket.

The nodes are registered only when the running ComfyUI has the socket (``host.splat_class()``
finds ``comfy_api.latest.Types.SPLAT``); on older releases they are left out, so nothing in
the node list promises a type the host cannot carry. The conversion itself lives in
``core/formats/splat_batch.py``.
"""

from __future__ import annotations

import logging
import math

from ..core.engine.scene import Scene4D
from ..core.formats.splat_batch import (
    batch_from_payload,
    batch_to_gaussians,
    frames_to_scene,
    gaussians_to_batch,
)
from ..core.moge4d.tracks import Tracks
from ..core.moge4d.vism import VismConfig, tracks_to_scene
from . import host
from . import types as T
from .widgets import float_in, int_in, socket_in, str_in

logger = logging.getLogger(__name__)


def parse_times(text: str, who: str) -> list[float] | None:
    """``"0, 0.5, 1"`` -> ``[0.0, 0.5, 1.0]`` (normalised times); blank -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        times = [float(p) for p in text.replace(";", ",").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{who}: times must be comma-separated numbers in [0, 1], got {text!r}") from None
    bad = [t for t in times if not math.isfinite(t) or not 0.0 <= t <= 1.0]
    if not times or bad:
        raise ValueError(f"{who}: times must be comma-separated numbers in [0, 1], got {text!r}")
    return times


class ToSplat:
    DESCRIPTION = (
        "Convert a GEN4D scene, Gaussian set or dense tracks into ComfyUI's own SPLAT type, one batch item per "
        "frame, for the core splat nodes (Render Splat, Save/Preview Splat, Transform Splat, ...). Sizes, "
        "opacities and rotations are converted to SPLAT's activated form (linear scales, opacity 0..1, wxyz)."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = (T.SPLAT,)
    RETURN_NAMES = ("splat",)
    OUTPUT_TOOLTIPS = ("One batch item per frame; counts hold each item's splat count when they differ.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "num_frames": int_in(0, 0, 10000, "Frames to bake, evenly spaced over the clip; 0 uses the scene's "
                                     "own frame count (a Gaussian set gives one item)."),
                "times": str_in("", "Optional comma-separated normalised times in [0, 1] (e.g. '0, 0.5, 1'); "
                                "when set they replace num_frames."),
            },
            "optional": {
                "scene": socket_in(T.SCENE, "The 4D scene to convert."),
                "gaussians": socket_in(T.GAUSSIANS, "A static Gaussian set (used when no scene is connected)."),
                "tracks": socket_in(T.TRACKS, "Dense 4D tracks, as their 4D-ViSM surface splats (used when neither "
                                    "a scene nor Gaussians are connected)."),
            },
        }

    def convert(self, num_frames, times, scene=None, gaussians=None, tracks=None):
        node = "Gen4D_ToSplat"
        cls = host.splat_class()
        if cls is None:
            raise RuntimeError(f"{node}: this ComfyUI has no SPLAT type (comfy_api.latest.Types.SPLAT); update "
                               f"ComfyUI to use the core splat nodes")
        if scene is None and gaussians is not None:
            scene = Scene4D.static(gaussians)
        elif scene is None and tracks is not None:
            if not isinstance(tracks, Tracks):
                raise ValueError(f"{node}: tracks must be GEN4D_TRACKS, got {type(tracks).__name__}")
            scene = tracks_to_scene(tracks.to("cpu"), VismConfig(), oriented=True)
        if not isinstance(scene, Scene4D):
            raise ValueError(f"{node}: connect a scene, gaussians or tracks input")
        chosen = parse_times(times, node)
        if chosen is None:
            chosen = scene.frame_times(int(num_frames) or scene.num_frames).tolist()
        progress = host.Progress(len(chosen))
        frames = []
        for i, t in enumerate(chosen):
            host.raise_if_interrupted()
            frames.append(scene.at(float(t)).detach().to("cpu"))
            progress(i + 1)
        batch = gaussians_to_batch(frames, node)
        return (cls(batch.positions, batch.scales, batch.rotations, batch.opacities, batch.sh, batch.counts),)


class FromSplat:
    DESCRIPTION = (
        "Convert ComfyUI's SPLAT type into GEN4D sockets: a batch of several items becomes a scene with one frame "
        "per item (explicit per-frame motion; every item must hold the same splats, matched by index), and one "
        "item comes out as a Gaussian set."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = (T.SCENE, T.GAUSSIANS)
    RETURN_NAMES = ("scene", "gaussians")
    OUTPUT_TOOLTIPS = ("A scene whose frame i is batch item i (a single item gives a static scene).",
                       "Batch item `item` as a static Gaussian set.")
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "splat": socket_in(T.SPLAT, "A SPLAT from the core splat nodes (File3DToSplat, TransformSplat, ...)."),
                "fps": float_in(24.0, 0.1, 240.0, "Playback rate of the scene made from the batch.", step=0.1),
                "item": int_in(0, 0, 100000, "Which batch item comes out as the Gaussian set."),
            }
        }

    def convert(self, splat, fps=24.0, item=0):
        node = "Gen4D_FromSplat"
        batch = batch_from_payload(splat, node)
        if not 0 <= int(item) < len(batch):
            raise ValueError(f"{node}: item {item} is outside the batch of {len(batch)} items (0..{len(batch) - 1})")
        frames = batch_to_gaussians(batch, node)
        gaussians = frames[int(item)]
        notes = []
        if len({len(g) for g in frames}) > 1:
            notes.append(f"batch items hold different splat counts {[len(g) for g in frames[:8]]}; a per-frame scene "
                         f"needs the same splats in every item, so the scene output is item {int(item)} alone")
            scene = Scene4D.static(gaussians, 1, float(fps), "splat")
        else:
            scene = frames_to_scene(frames, float(fps), "splat", node)
        return host.with_notes(node, (scene, gaussians), notes)


def available_nodes() -> dict:
    """The nodes of this module when the host has the SPLAT socket, else none (see the module notes)."""
    if host.splat_class() is None:
        logger.info("ComfyUI has no SPLAT type: Gen4D To Splat / From Splat are not registered")
        return {}
    return {
        "Gen4D_ToSplat": (ToSplat, "Gen4D To Splat (core SPLAT)"),
        "Gen4D_FromSplat": (FromSplat, "Gen4D From Splat (core SPLAT)"),
    }


NODES = available_nodes()
