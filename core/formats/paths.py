# SPDX-License-Identifier: Apache-2.0
"""Safe output paths and atomic file writes.

Public API:
    safe_output_path(root, name, suffix=None) -> Path   a user-given relative name resolved under root
    atomic_writer(path, mode="wb")                      context manager yielding an open temp file
    atomic_path(path)                                   context manager yielding a temp path (for libraries
                                                        that write by file name)
    atomic_write_bytes(path, data) -> Path              write bytes in one atomic step

Design notes:
    Names come from node widgets, so they are untrusted: absolute paths, drive letters, ``..``
    components, NUL bytes and anything that resolves outside ``root`` (through symlinks too) are
    rejected before a single byte is written. Both ``/`` and ``\\`` separate folders, so a name
    typed on Windows means the same on every system.

    Writes go to a uniquely named temp file in the target's folder, are flushed and fsynced, then
    moved over the target with ``os.replace`` (atomic on POSIX and Windows). On any exception,
    KeyboardInterrupt included, the temp file is removed, so a reader sees either the old file or
    the complete new one, never a half-written one. Temp files are created with mode 0o666 minus
    the umask, like a plain ``open``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from pathlib import Path
from typing import IO, Iterator

__all__ = ["safe_output_path", "atomic_writer", "atomic_path", "atomic_write_bytes"]

log = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_output_path(root: str | os.PathLike, name: str, suffix: str | None = None) -> Path:
    """Resolve a user-given relative ``name`` (may contain sub-folders) strictly inside ``root``.

    Args:
        root: the output folder (e.g. ComfyUI's output directory); need not exist yet.
        name: relative file name such as ``"scenes/run1"``; ``/`` and ``\\`` both separate folders.
        suffix: extension such as ``".ply"``, appended unless ``name`` already ends with it
            (case-insensitive).

    Returns:
        The resolved absolute path. Folders are not created here.

    Raises:
        ValueError: naming the argument, for empty names, absolute paths, drive letters, ``..``
            components, NUL bytes, a bad suffix, or a path that resolves outside ``root``.
    """
    if not isinstance(name, str):
        raise ValueError(f"safe_output_path: name must be a str, got {type(name).__name__}")
    if "\x00" in name:
        raise ValueError(f"safe_output_path: name must not contain NUL bytes, got {name!r}")
    if not name.strip():
        raise ValueError(f"safe_output_path: name must be a non-empty relative path, got {name!r}")
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        raise ValueError(f"safe_output_path: name must be relative, got absolute path {name!r}")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise ValueError(f"safe_output_path: name must not contain '..' components, got {name!r}")
        if _DRIVE.match(part):
            raise ValueError(f"safe_output_path: name must not contain a drive letter, got {name!r}")
    if not parts or name.rstrip().endswith(("/", "\\")):
        raise ValueError(f"safe_output_path: name must end in a file name, got {name!r}")
    if suffix is not None:
        if not isinstance(suffix, str) or not re.fullmatch(r"\.[A-Za-z0-9_.-]+", suffix):
            raise ValueError(f"safe_output_path: suffix must look like '.ext', got {suffix!r}")
        if not parts[-1].lower().endswith(suffix.lower()):
            parts[-1] += suffix
    if root is None or str(root) == "" or "\x00" in str(root):
        raise ValueError(f"safe_output_path: root must be a folder path, got {root!r}")
    root_resolved = Path(root).resolve()
    target = root_resolved.joinpath(*parts).resolve()
    if target == root_resolved or not target.is_relative_to(root_resolved):
        raise ValueError(
            f"safe_output_path: name {name!r} resolves to {str(target)!r}, outside the output folder "
            f"{str(root_resolved)!r} (symlinks are followed)"
        )
    return target


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the OS allows opening folders (POSIX)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.debug("fsync of folder %s failed", folder)
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(16):
        tmp = _temp_name(path)
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise OSError(f"could not create a temp file next to {path}")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temp file next to ``path``; on clean exit fsync it and move it over ``path``.

    Args:
        path: the final file; its folder is created if missing.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, ``encoding``).
        encoding: text encoding for mode ``"w"``.

    Raises:
        ValueError: for another mode.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temp(path)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path`` for a writer that takes a file name.

    The temp file exists (empty) when yielded; whatever the writer leaves there is fsynced and
    moved over ``path`` on clean exit, and removed on an exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temp(path)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)
