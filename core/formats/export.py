# SPDX-License-Identifier: Apache-2.0
"""Numbered scene bundles in an output folder: one compact scene file plus per-frame PLYs.

Public API:
    SCENE_SUFFIX                    ".gen4d.safetensors"
    next_free_stem(root, prefix)    "<prefix>_00001"-style stem not used yet under ``root``
    save_ply_sequence(scene, ...)   one 3DGS PLY per frame, ``prefix_00000.ply`` …, each atomically
    save_scene_bundle(...)          write ``<stem>.gen4d.safetensors`` and ``<stem>_ply/frame_*.ply``
    save_numbered_folder(...)       a numbered (or named) folder of files, written by a callback, as a whole

Design notes:
    Every file goes through ``safe_output_path`` (no ``..``, no absolute names, no escape
    through links). Numbers have at least five digits and grow as needed (``_99999``,
    ``_100000``, ``_100001``). A bundle is written into a hidden staging folder inside the target
    folder (:class:`~.paths.StagedSave`) and renamed into place as a whole, the scene file last;
    nothing existing is replaced (if another save took the number meanwhile, the next one is used).
    A cancel (``should_stop``) or an error removes the staging folder and leaves nothing behind:
    the save raises ``InterruptedError`` when stopped.
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
from .paths import StagedSave, check_name_lengths, safe_output_path
from .ply import save_ply

log = logging.getLogger(__name__)

__all__ = ["SCENE_SUFFIX", "NUMBERED_RESERVE", "SceneBundle", "next_free_stem", "save_ply_sequence",
           "save_scene_bundle", "save_numbered_folder"]

_COMMIT_TRIES = 16  # numbers tried when concurrent saves keep taking the next free one

SCENE_SUFFIX = ".gen4d.safetensors"
# Bytes a numbered save appends to the prefix's last part: "_" + up to 10 digits + the longest suffix
# (".gen4d.safetensors"; ".frames.json", "_ply", "_spz" and "_glb" are shorter), rounded up; the room
# for an atomic write's temp name comes on top (paths.check_name_lengths).
NUMBERED_RESERVE = 32


@dataclass
class SceneBundle:
    """What :func:`save_scene_bundle` wrote (paths are absolute)."""

    scene_file: Path
    ply_files: list[Path] = field(default_factory=list)
    complete: bool = True


def next_free_stem(root: str | os.PathLike, prefix: str) -> str:
    """The relative stem ``<prefix>_<n:05d>`` with ``n`` one past the highest already in use.

    Numbers of any length count (``_100000`` is above ``_99999``); five digits is the minimum width.

    Raises:
        ValueError: for an unsafe prefix, or one whose last part leaves no room within the 255-byte name
            limit for the number and extension (:data:`NUMBERED_RESERVE` bytes).
    """
    check_name_lengths(prefix, NUMBERED_RESERVE)
    probe = safe_output_path(root, f"{prefix}_00000")
    folder, base = probe.parent, probe.name[: -len("_00000")]
    pattern = re.compile(re.escape(base) + r"_(\d{5,})(?:_ply|\.|$)")
    used = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else []) if (m := pattern.match(p.name))]
    rel_parent = probe.parent.relative_to(Path(root).resolve())
    stem = f"{base}_{max(used, default=0) + 1:05d}"
    return str(rel_parent / stem) if str(rel_parent) != "." else stem


def _stopped(should_stop: Callable[[], bool] | None) -> bool:
    return should_stop is not None and bool(should_stop())


def save_scene_bundle(
    scene: Scene4D,
    root: str | os.PathLike,
    prefix: str,
    write_ply_frames: bool = True,
    num_frames: int | None = None,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SceneBundle:
    """Save ``scene`` under ``root`` as a new numbered bundle, all of it or nothing.

    Args:
        scene: the scene to save.
        root: the output folder every file must stay inside.
        prefix: user-given relative name, e.g. ``"gen4d/scene"``.
        write_ply_frames: also bake one standard 3DGS PLY per frame.
        num_frames: frames to bake (default: the scene's own count).
        callback, should_stop: progress and interruption hooks of the PLY loop.

    Raises:
        ValueError: for an unsafe prefix or an invalid scene.
        InterruptedError: when ``should_stop`` returned True; nothing was written.
    """
    if not isinstance(scene, Scene4D):
        raise ValueError(f"save_scene_bundle: scene must be a Scene4D, got {type(scene).__name__}")
    frames = scene.num_frames if num_frames is None else int(num_frames)
    stem = next_free_stem(root, prefix)
    parent = safe_output_path(root, stem).parent
    if _stopped(should_stop):
        raise InterruptedError("save_scene_bundle: stopped before writing anything")
    with StagedSave(parent) as stage:
        staged = Path(stem).name
        ply_files: list[Path] = []
        if write_ply_frames:
            ply_files = save_ply_sequence(scene, stage.path(staged + "_ply"), "frame", frames,
                                          callback=callback, should_stop=should_stop)
            if len(ply_files) < frames or _stopped(should_stop):
                raise InterruptedError(f"save_scene_bundle: stopped after {len(ply_files)} of {frames} PLY frames; "
                                       "nothing was kept")
        scene.save(stage.path(staged + SCENE_SUFFIX))
        for _ in range(_COMMIT_TRIES):
            final = Path(stem).name
            names = {staged + "_ply": final + "_ply"} if write_ply_frames else {}
            names[staged + SCENE_SUFFIX] = final + SCENE_SUFFIX  # last: its presence marks a whole bundle
            try:
                stage.commit(names)
                break
            except FileExistsError as exc:
                log.info("save_scene_bundle: %s; trying the next number", exc)
                stem = next_free_stem(root, prefix)
        else:
            raise FileExistsError(f"save_scene_bundle: no free number for {prefix!r} after {_COMMIT_TRIES} tries")
    final_ply = parent / (final + "_ply")
    return SceneBundle(parent / (final + SCENE_SUFFIX), [final_ply / p.name for p in ply_files])


def save_numbered_folder(
    root: str | os.PathLike,
    prefix: str,
    write: Callable[[Path], list[Path]],
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Path, list[Path]]:
    """Write a folder of files under ``root`` as a whole: ``<prefix>_NNNNN/`` (or ``<prefix>/``).

    Args:
        root: the output folder every file must stay inside.
        prefix: user-given relative name, e.g. ``"gen4d/tracks"``.
        write: ``write(folder) -> files`` fills the (staging) folder it is given; it may stop early
            when ``should_stop`` turns True.
        overwrite: write ``<prefix>`` itself, replacing a folder of that name once the new one is
            complete, instead of a new numbered folder.
        should_stop: polled before and after ``write``.

    Returns:
        ``(folder, files)``: the final folder and the files in it, as ``write`` listed them.

    Raises:
        ValueError: for an unsafe prefix, or ``<prefix>`` naming an existing file with ``overwrite``.
        InterruptedError: when stopped; nothing was written or replaced.
    """
    check_name_lengths(prefix, NUMBERED_RESERVE)
    stem = prefix if overwrite else next_free_stem(root, prefix)
    target = safe_output_path(root, stem)
    if overwrite and target.exists() and not target.is_dir():
        raise ValueError(f"save_numbered_folder: {stem!r} exists and is not a folder; refusing to replace it")
    if _stopped(should_stop):
        raise InterruptedError("save_numbered_folder: stopped before writing anything")
    with StagedSave(target.parent) as stage:
        staged = target.name
        staged_dir = stage.path(staged)
        files = [Path(f).relative_to(staged_dir) for f in write(staged_dir)]
        if _stopped(should_stop):
            raise InterruptedError(f"save_numbered_folder: stopped after {len(files)} files; nothing was kept")
        for _ in range(_COMMIT_TRIES):
            try:
                stage.commit({staged: target.name}, overwrite=overwrite)
                break
            except FileExistsError as exc:
                log.info("save_numbered_folder: %s; trying the next number", exc)
                target = safe_output_path(root, next_free_stem(root, prefix))
        else:
            raise FileExistsError(f"save_numbered_folder: no free number for {prefix!r} after {_COMMIT_TRIES} tries")
    return target, [target / f for f in files]


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
