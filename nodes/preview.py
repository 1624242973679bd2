# SPDX-License-Identifier: Apache-2.0
"""Gen4D_Preview4D: an interactive 4D splat viewer on the node (web/gen4d_preview.js).

The node writes a compact ``.g4d`` asset (core/formats/preview_asset.py) into ComfyUI's temp folder and
returns ``{"ui": {"gen4d_preview": [{"filename", "subfolder", "type": "temp"}]}}``; the web
extension fetches it through ComfyUI's ``/view`` route and plays it in a WebGL2 widget. The viewer
starts at the camera the scene records (the view its reference video was seen from) and on the
``background`` colour; a scene without recorded cameras is framed from its bounds, and the node says so.
"""

from __future__ import annotations

import logging
import secrets

from ..core.engine.scene import Scene4D
from ..core.formats.convert import parse_color
from ..core.formats.paths import atomic_write_bytes, safe_output_path
from ..core.formats.preview_asset import DEFAULT_MAX_SPLATS, SUFFIX, encode_scene, encode_tracks
from ..core.moge4d.tracks import Tracks
from . import host
from . import types as T
from .widgets import DEFAULT_BACKGROUND, background_in, color_error, int_in, socket_in

logger = logging.getLogger(__name__)

SUBFOLDER = "gen4d_preview"


def _tracks_fields(tracks):
    """``(points, colors, visibility, fps)`` from a GEN4D_TRACKS payload (object or dict)."""
    if isinstance(tracks, Tracks):
        # pixels without a track carry placeholder points: never show them
        return tracks.points, tracks.colors, tracks.visible & tracks.valid, float(tracks.fps)
    get = tracks.get if isinstance(tracks, dict) else (lambda k, d=None: getattr(tracks, k, d))
    points = get("points")
    if points is None:
        points = get("positions")
    colors = get("colors")
    if points is None or colors is None:
        raise ValueError(f"Gen4D_Preview4D: tracks must carry 'points' [T,H,W,3] and 'colors', got a "
                         f"{type(tracks).__name__} without them")
    return points, colors, get("visibility"), float(get("fps", 24.0) or 24.0)


class Preview4D:
    DESCRIPTION = (
        "Interactive 4D preview on the node: orbit (left drag), pan (right/middle drag or shift+drag), zoom "
        "(wheel), play/pause, time scrubber, frame rate, background colour and reset view. The scene is "
        "baked per frame, subsampled to max_splats by opacity and size, quantised and written to ComfyUI's "
        "temp folder (positions move per frame; rotations, scales and colours come from the first frame)."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "max_splats": int_in(DEFAULT_MAX_SPLATS, 1, 2_000_000, "Largest number of splats sent to the "
                                     "viewer; the most opaque and largest are kept (deterministic).", step=1000),
                "num_frames": int_in(0, 0, 1000, "Frames to bake for the viewer; 0 uses the scene's own count."),
                "background": background_in("Background colour the viewer starts with (#rrggbb or r,g,b); the "
                                            "viewer's colour picker changes it afterwards."),
            },
            "optional": {
                "scene": socket_in(T.SCENE, "The 4D scene to preview."),
                "gaussians": socket_in(T.GAUSSIANS, "A static Gaussian set to preview (when no scene is connected)."),
                "tracks": socket_in(T.TRACKS, "Dense point trajectories to preview as splats (when no scene or "
                                    "gaussians are connected)."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background=None):
        return color_error(background)

    def preview(self, max_splats, num_frames, background=DEFAULT_BACKGROUND, scene=None, gaussians=None,
                tracks=None):
        bg = "#" + "".join(f"{round(float(v) * 255):02x}" for v in parse_color(background).tolist())
        notes = []
        if scene is not None or gaussians is not None:
            # one source is shown: scene, else gaussians, else tracks; a connected one left out is noted
            unused = [name for name, value in (("gaussians", gaussians if scene is not None else None),
                                               ("tracks", tracks)) if value is not None]
            if unused:
                notes.append(f"{' and '.join(unused)} connected but not shown: the viewer shows one input, the "
                             f"{'scene' if scene is not None else 'gaussians'} here (order: scene, gaussians, "
                             f"tracks); disconnect the others to preview them.")
            source = scene if scene is not None else Scene4D.static(gaussians)
            progress = host.Progress(int(num_frames) or source.num_frames)
            try:
                data = encode_scene(source, int(max_splats), int(num_frames) or None, bg, callback=progress,
                                    should_stop=host.should_stop)
            except InterruptedError:
                host.raise_if_interrupted()
                raise
            if scene is not None and scene.reference_cameras is None:
                notes.append("the scene records no cameras (it was made without any, or saved before scenes "
                             "recorded them): the viewer frames its bounds instead of starting at the reference "
                             "view.")
        elif tracks is not None:
            points, colors, visibility, fps = _tracks_fields(tracks)
            data = encode_tracks(points, colors, visibility, fps, int(max_splats), background=bg)
        else:
            raise ValueError("Gen4D_Preview4D: connect a scene, gaussians or tracks input")
        host.raise_if_interrupted()
        root = host.temp_directory()
        name = f"preview_{secrets.token_hex(8)}{SUFFIX}"
        path = safe_output_path(root, f"{SUBFOLDER}/{name}")
        atomic_write_bytes(path, data)
        logger.info("Gen4D_Preview4D: wrote %s (%.1f MB)", path, len(data) / 1e6)
        for note in notes:
            logger.warning("Gen4D_Preview4D: %s", note)
        return {"ui": {"gen4d_preview": [{"filename": name, "subfolder": SUBFOLDER, "type": "temp"}], "text": notes}}


NODES = {"Gen4D_Preview4D": (Preview4D, "Gen4D Preview 4D")}
