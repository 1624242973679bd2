# SPDX-License-Identifier: Apache-2.0
"""Numbered scene bundles in an output folder: one compact scene file plus per-frame PLYs.

Public API:
    SCENE_SUFFIX                    ".gen4d.safetensors"
    next_free_stem(root, prefix)    "<prefix>_00001"-style stem not used yet under ``root``
    save_ply_sequence(scene, ...)   one 3DGS PLY per frame, ``prefix_00000.ply`` …, each atomically
    save_scene_bundle(...)          write ``<stem>.gen4d.safetensors`` and ``<stem>_ply/frame_*.ply``

Design notes:
    Every file goes through ``safe_output_path`` (no ``..``, no absolute names, no escape
    through links) and is written atomically, so an interrupted save leaves only whole files.
    The scene file is ``Scene4D.save``'s (format version ``SCENE_VERSION``, 2: parts keep the
    reference cameras they were reconstructed from; ``Scene4D.load`` still reads version 1 files);
    the PLY frames carry Gaussians only.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..engine.scene import Scene4D
from .paths import safe_output_path
from .ply import save_ply

log = logging.getLogger(__name__)

__all__ = ["SCENE_SUFFIX", "SceneBundle", "next_free_stem", "save_ply_sequence", "save_scene_bundle"]

SCENE_SUFFIX = ".gen4d.safetensors"


@dataclass
class SceneBundle:
    """What :func:`save_scene_bundle` wrote (paths are absolute)."""

    scene_file: Path
    ply_files: list[Path] = field(default_factory=list)
    complete: bool = True


def next_free_stem(root: str | os.PathLike, prefix: str) -> str:
    """The relative stem ``<prefix>_<n:05d>`` with ``n`` one past the highest already in use."""
    probe = safe_output_path(root, f"{prefix}_00000")
    folder, base = probe.parent, probe.name[: -len("_00000")]
    pattern = re.compile(re.escape(base) + r"_(\d{5})(?:_ply|\.|$)")
    used = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else []) if (m := pattern.match(p.name))]
    rel_parent = probe.parent.relative_to(Path(root).resolve())
    stem = f"{base}_{max(used, default=0) + 1:05d}"
    return str(rel_parent / stem) if str(rel_parent) != "." else stem


def save_scene_bundle(
    scene: Scene4D,
    root: str | os.PathLike,
    prefix: str,
    write_ply_frames: bool = True,
    num_frames: int | None = None,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SceneBundle:
    """Save ``scene`` under ``root`` as a new numbered bundle.

    Args:
        scene: the scene to save.
        root: the output folder every file must stay inside.
        prefix: user-given relative name, e.g. ``"gen4d/scene"``.
        write_ply_frames: also bake one standard 3DGS PLY per frame.
        num_frames: frames to bake (default: the scene's own count).
        callback, should_stop: progress and interruption hooks of the PLY loop.

    Raises:
        ValueError: for an unsafe prefix or an invalid scene.
    """
    if not isinstance(scene, Scene4D):
        raise ValueError(f"save_scene_bundle: scene must be a Scene4D, got {type(scene).__name__}")
    stem = next_free_stem(root, prefix)
    scene_file = scene.save(stem + SCENE_SUFFIX, root=root)
    bundle = SceneBundle(scene_file)
    if write_ply_frames:
        frames = scene.num_frames if num_frames is None else int(num_frames)
        bundle.ply_files = save_ply_sequence(scene, stem + "_ply", "frame", frames, root=root,
                                             callback=callback, should_stop=should_stop)
        bundle.complete = len(bundle.ply_files) == frames
    return bundle


def save_ply_sequence(
    scene: Scene4D,
    folder: str | os.PathLike,
    prefix: str = "frame",
    num_frames: int | None = None,
    root: str | os.PathLike | None = None,
    callback: Callable[[int, int, None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Path]:
    """Write the scene as one 3DGS PLY per frame, ``{prefix}_{i:05d}.ply``, each atomically.

    Args:
        scene: the scene to bake.
        folder: output folder (created); with ``root``, a relative name checked against ``root``.
        prefix: file name prefix, no path separators.
        num_frames: frames to write (default: ``scene.num_frames``).
        root: optional output folder that ``folder`` must stay inside.
        callback: called as ``callback(step, total, None)`` after each file.
        should_stop: polled before each frame; when it returns True the files written so far
            (all complete) are returned.

    Returns:
        The paths written, in frame order.
    """
    if not isinstance(scene, Scene4D):
        raise ValueError(f"save_ply_sequence: scene must be a Scene4D, got {type(scene).__name__}")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\\x00") or prefix in (".", ".."):
        raise ValueError(f"save_ply_sequence: prefix must be a plain file name prefix, got {prefix!r}")
    out = safe_output_path(root, str(folder)) if root is not None else Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    times = scene.frame_times(num_frames)
    written: list[Path] = []
    for i, t in enumerate(times.tolist()):
        if should_stop is not None and should_stop():
            log.info("save_ply_sequence: stopped after %d of %d frames", i, len(times))
            break
        written.append(save_ply(scene.at(t), out / f"{prefix}_{i:05d}.ply"))
        if callback is not None:
            callback(i + 1, len(times), None)
    return written
