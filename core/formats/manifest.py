# SPDX-License-Identifier: Apache-2.0
"""Per-frame splat files in several formats, and the JSON manifest that lists them.

Public API:
    FRAME_FORMATS                    ("ply", "spz", "glb"): the per-frame formats
    MANIFEST_FORMAT, MANIFEST_VERSION
    save_frame_files(scene, root, stem, formats, ...) -> FrameFiles
    save_bundle_frames(scene, root, scene_file, formats, ply_files, ...) -> (manifest path, FrameFiles)
    write_manifest(path, scene, files, ...) -> Path
    read_manifest(path) -> dict      checked document (paths stay relative to the manifest)
    load_frame(manifest_path, index, fmt) -> Gaussians

Layout next to a scene file ``<stem>.gen4d.safetensors``: ``<stem>_<fmt>/frame_00000.<fmt>`` per
frame and format, and ``<stem>.frames.json``::

    {"format": "gen4d-frames", "version": 1, "scene_file": "<name>.gen4d.safetensors" | null,
     "fps": 24.0, "num_frames": T, "frame_axes": "opencv (x right, y down, z forward)",
     "formats": {"ply": {...}, "spz": {"version": 3, "precision": {...}}, "glb": {...}},
     "frames": [{"index": i, "t": i/(T-1), "time_s": i/fps, "splats": N_i,
                 "files": {"ply": "<stem>_ply/frame_00000.ply", ...}}, ...],
     "complete": true}

There is no ratified 4D splat format, so a sequence of per-frame files at listed times is the
interoperable form; ``t`` is the scene's normalised time, ``time_s`` the playback time. Every
file is written atomically; an interrupted save lists only the frames written and sets
``complete`` to false.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..engine.gaussians import Gaussians
from ..engine.scene import Scene4D
from .gltf_splat import KHR_GS, gaussians_from_glb_bytes, gaussians_to_glb_bytes
from .paths import atomic_write_bytes, safe_output_path
from .ply import gaussians_from_ply_bytes, gaussians_to_ply_bytes
from .spz import SPZ_PRECISION, gaussians_from_spz_bytes, gaussians_to_spz_bytes

__all__ = [
    "FRAME_FORMATS",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MANIFEST_SUFFIX",
    "FrameFiles",
    "save_frame_files",
    "write_manifest",
    "read_manifest",
    "load_frame",
    "save_bundle_frames",
]

log = logging.getLogger(__name__)

FRAME_FORMATS = ("ply", "spz", "glb")
MANIFEST_FORMAT = "gen4d-frames"
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".frames.json"
SPZ_VERSION = 3
_ENCODERS = {"ply": gaussians_to_ply_bytes, "spz": lambda g: gaussians_to_spz_bytes(g, version=SPZ_VERSION),
             "glb": gaussians_to_glb_bytes}
_DECODERS = {"ply": gaussians_from_ply_bytes, "spz": gaussians_from_spz_bytes, "glb": gaussians_from_glb_bytes}
_FORMAT_NOTES = {
    "ply": {"layout": "standard 3DGS binary PLY (log scales, logit opacity, wxyz rot, channel-major f_rest)",
            "precision": "float32, exact"},
    "spz": {"version": SPZ_VERSION, "precision": SPZ_PRECISION},
    "glb": {"extension": KHR_GS, "node_rotation_wxyz": [0.0, 0.0, 0.0, 1.0],
            "precision": "float32; positions and SH exact, scales/opacities/rotations to float32 rounding of "
                         "their activated values"},
}


@dataclass
class FrameFiles:
    """What :func:`save_frame_files` wrote: absolute paths per format, frame times and splat counts."""

    files: dict[str, list[Path]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    complete: bool = True


def _check_formats(formats: Sequence[str], who: str) -> list[str]:
    out = []
    for fmt in formats:
        if fmt not in FRAME_FORMATS:
            raise ValueError(f"{who}: frame format must be one of {FRAME_FORMATS}, got {fmt!r}")
        if fmt not in out:
            out.append(fmt)
    return out


def save_frame_files(
    scene: Scene4D,
    root: str | os.PathLike,
    stem: str,
    formats: Sequence[str],
    num_frames: int | None = None,
    callback: Callable[[int, int, None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FrameFiles:
    """Bake ``scene`` at its frame times and write ``<stem>_<fmt>/frame_<i>.<fmt>`` for each format.

    Args:
        scene: the scene to bake.
        root: output folder every file must stay inside.
        stem: relative stem (e.g. ``"gen4d/scene_00001"``), checked by ``safe_output_path``.
        formats: any of :data:`FRAME_FORMATS`.
        num_frames: frames to bake (default: the scene's own).
        callback: ``callback(step, total, None)`` after each frame (all formats of it written).
        should_stop: polled before each frame; True stops with the whole frames written so far.

    Raises:
        ValueError: unknown formats, an unsafe stem, or a frame a format cannot hold (NaN values).
    """
    who = "save_frame_files"
    if not isinstance(scene, Scene4D):
        raise ValueError(f"{who}: scene must be a Scene4D, got {type(scene).__name__}")
    formats = _check_formats(formats, who)
    folders = {fmt: safe_output_path(root, f"{stem}_{fmt}") for fmt in formats}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    times = scene.frame_times(num_frames).tolist()
    out = FrameFiles(files={fmt: [] for fmt in formats})
    for i, t in enumerate(times):
        if should_stop is not None and should_stop():
            log.info("%s: stopped after %d of %d frames", who, i, len(times))
            out.complete = False
            break
        g = scene.at(float(t)).detach().to("cpu")
        for fmt in formats:
            try:
                data = _ENCODERS[fmt](g)
            except ValueError as exc:
                raise ValueError(f"{who}: frame {i} (t={t:.4f}) as {fmt}: {exc}") from exc
            out.files[fmt].append(atomic_write_bytes(folders[fmt] / f"frame_{i:05d}.{fmt}", data))
        out.times.append(float(t))
        out.counts.append(len(g))
        if callback is not None:
            callback(i + 1, len(times), None)
    return out


def write_manifest(path: str | os.PathLike, scene: Scene4D, files: dict[str, Sequence[Path]],
                   times: Sequence[float], counts: Sequence[int], scene_file: str | os.PathLike | None = None,
                   complete: bool = True) -> Path:
    """Write the manifest (atomically) listing ``files[fmt][i]`` relative to the manifest's folder."""
    target = Path(path)
    base = target.parent.resolve()
    n = len(times)
    frames = []
    for i in range(n):
        entry = {"index": i, "t": float(times[i]), "time_s": i / scene.fps, "splats": int(counts[i]), "files": {}}
        for fmt, paths in files.items():
            if i < len(paths):
                entry["files"][fmt] = os.path.relpath(Path(paths[i]).resolve(), base).replace(os.sep, "/")
        frames.append(entry)
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "scene_file": None if scene_file is None else os.path.relpath(Path(scene_file).resolve(), base)
        .replace(os.sep, "/"),
        "fps": scene.fps,
        "num_frames": n,
        "frame_axes": "opencv (x right, y down, z forward)",
        "formats": {fmt: _FORMAT_NOTES[fmt] for fmt in files},
        "frames": frames,
        "complete": bool(complete),
    }
    return atomic_write_bytes(target, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def read_manifest(path: str | os.PathLike) -> dict:
    """Load and check a manifest written by :func:`write_manifest`.

    Raises:
        ValueError: missing file, not JSON, another format/version, or frames that do not fit.
    """
    src = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"read_manifest: {src!r} does not exist") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"read_manifest: {src!r} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
        raise ValueError(f"read_manifest: {src!r} is not a {MANIFEST_FORMAT} manifest of version {MANIFEST_VERSION}")
    frames = doc.get("frames")
    if not isinstance(frames, list) or len(frames) != doc.get("num_frames"):
        raise ValueError(f"read_manifest: {src!r} lists {len(frames) if isinstance(frames, list) else 'no'} frames, "
                         f"num_frames says {doc.get('num_frames')!r}")
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or f.get("index") != i or not isinstance(f.get("files"), dict) \
                or not isinstance(f.get("t"), (int, float)) or not math.isfinite(f["t"]):
            raise ValueError(f"read_manifest: {src!r}: frame entry {i} is malformed")
        for fmt, rel in f["files"].items():
            if fmt not in FRAME_FORMATS or not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/"):
                raise ValueError(f"read_manifest: {src!r}: frame {i} lists an unsafe or unknown file {fmt}: {rel!r}")
    return doc


def load_frame(manifest_path: str | os.PathLike, index: int, fmt: str) -> Gaussians:
    """Read frame ``index`` in format ``fmt`` listed by a manifest."""
    doc = read_manifest(manifest_path)
    if not 0 <= index < len(doc["frames"]):
        raise ValueError(f"load_frame: frame {index} outside 0..{len(doc['frames']) - 1}")
    rel = doc["frames"][index]["files"].get(fmt)
    if rel is None:
        have = sorted(doc["frames"][index]["files"])
        raise ValueError(f"load_frame: frame {index} has no {fmt!r} file; it has {have}")
    path = Path(manifest_path).parent / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"load_frame: {str(path)!r} listed in the manifest does not exist") from exc
    return _DECODERS[fmt](data, str(path))


def save_bundle_frames(
    scene: Scene4D,
    root: str | os.PathLike,
    scene_file: str | os.PathLike,
    formats: Sequence[str],
    ply_files: Sequence[Path] = (),
    num_frames: int | None = None,
    callback: Callable[[int, int, None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Path, FrameFiles]:
    """Next to a saved scene file, write the non-PLY frame formats and the manifest of all of them.

    ``ply_files`` are the PLY frames already written for the bundle (when ``"ply"`` is among
    ``formats``); the others go to ``<stem>_<fmt>/``. Returns the manifest path and what was written.
    """
    who = "save_bundle_frames"
    formats = _check_formats(formats, who)
    name = Path(scene_file).resolve()
    root_path = Path(root).resolve()
    suffix = ".gen4d.safetensors"
    stem_abs = str(name)[: -len(suffix)] if str(name).endswith(suffix) else str(name.with_suffix(""))
    stem = os.path.relpath(stem_abs, root_path).replace(os.sep, "/")
    others = [f for f in formats if f != "ply"]
    written = save_frame_files(scene, root, stem, others, num_frames, callback, should_stop) if others \
        else FrameFiles()
    files = {}
    if "ply" in formats:
        files["ply"] = list(ply_files)
    files.update(written.files)
    times = scene.frame_times(num_frames).tolist()
    n = min(len(v) for v in files.values()) if files else 0
    counts = written.counts or [scene.num_gaussians] * n
    complete = n == len(times) and written.complete
    manifest = write_manifest(safe_output_path(root, stem + MANIFEST_SUFFIX), scene, files, times[:n], counts[:n],
                              scene_file=name, complete=complete)
    return manifest, FrameFiles(files, times[:n], list(counts[:n]), complete)
