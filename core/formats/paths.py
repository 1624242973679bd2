# SPDX-License-Identifier: Apache-2.0
"""Safe output paths and atomic file writes.

Public API:
    safe_output_path(root, name, suffix=None) -> Path   a user-given relative name resolved under root
    check_name_lengths(name, reserve=0)                 every part of a name within NAME_MAX bytes
                                                        (the last with room for an atomic write's temp name)
    NAME_MAX                                            255, the longest file or folder name in bytes
    atomic_writer(path, mode="wb")                      context manager yielding an open temp file
    atomic_path(path)                                   context manager yielding a temp path (for libraries
                                                        that write by file name)
    atomic_write_bytes(path, data) -> Path              write bytes in one atomic step
    StagedSave(parent)                                  a multi-file save built in a hidden folder inside
                                                        ``parent`` and moved into place as a whole
    STAGING_PREFIX                                      name prefix of those hidden folders

Design notes:
    Names come from node widgets, so they are untrusted: absolute paths, drive letters, ``..``
    components, NUL bytes and anything that resolves outside ``root`` (through symlinks too) are
    rejected before a single byte is written. Both ``/`` and ``\\`` separate folders, so a name
    typed on Windows means the same on every system. Each part of a name must fit the file
    systems' 255-byte name limit (UTF-8), so a long name is refused up front instead of failing
    half-way through a save with the system's "File name too long".

    Writes go to a uniquely named temp file in the target's folder, are flushed and fsynced, then
    moved over the target with ``os.replace`` (atomic on POSIX and Windows). On any exception,
    KeyboardInterrupt included, the temp file is removed, so a reader sees either the old file or
    the complete new one, never a half-written one. Temp files are created with mode 0o666 minus
    the umask, like a plain ``open``, and keep that mode whatever the writer does to the file
    (some libraries create their output with mode 0600).

    A save of several files (a scene file plus a folder of per-frame PLYs) is written into a hidden
    ``.gen4d-staging-*`` folder inside the target folder, then each top-level entry is renamed into
    place without replacing anything already there (``FileExistsError`` otherwise), the entry that
    marks the save complete last. On an exception or a cancel the staging folder is removed, so an
    interrupted save leaves nothing behind, not even its first file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator

__all__ = ["safe_output_path", "check_name_lengths", "NAME_MAX", "TEMP_NAME_EXTRA", "atomic_writer", "atomic_path",
           "atomic_write_bytes", "read_file_bytes", "StagedSave", "STAGING_PREFIX"]

STAGING_PREFIX = ".gen4d-staging-"

log = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")

NAME_MAX = 255  # bytes per file or folder name on ext4, XFS, btrfs, APFS and NTFS (there 255 UTF-16 units)
TEMP_NAME_EXTRA = len(".") + len(".") + 12 + len(".tmp")  # what _temp_name adds around a name


def check_name_lengths(name: str, reserve: int = 0) -> None:
    """Raise ``ValueError`` when a part of ``name`` (split at ``/`` and ``\\``) exceeds :data:`NAME_MAX`
    bytes in UTF-8. The last part must also leave room for the temp name of an atomic write
    (:data:`TEMP_NAME_EXTRA` bytes) and ``reserve`` more bytes for what a save appends (a number, an
    extension)."""
    parts = [p for p in re.split(r"[/\\]", str(name)) if p not in ("", ".")]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        limit = NAME_MAX - ((TEMP_NAME_EXTRA + int(reserve)) if last else 0)
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > limit:
            shown = part if len(part) <= 24 else part[:20] + "..."
            why = (" (room is kept for the temporary name of an atomic write"
                   + (" and the number and extension a save appends)" if reserve else ")")) if last else ""
            raise ValueError(f"the {'file' if last else 'folder'} name {shown!r} is {size} bytes long (UTF-8); file "
                             f"systems allow {NAME_MAX} bytes per name, so at most {limit} here{why}; shorten it")


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
    try:
        check_name_lengths(name)
    except ValueError as exc:
        raise ValueError(f"safe_output_path: {exc}") from None
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


def _mode_of(fd: int) -> int | None:
    """Permission bits of an open file (None where the OS has no POSIX modes)."""
    if not hasattr(os, "fchmod"):
        return None
    return os.fstat(fd).st_mode & 0o7777


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
    mode = _mode_of(fd)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            if mode is not None and _mode_of(fd) != mode:
                os.fchmod(fd, mode)  # the writer may have recreated the file with its own mode
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def read_file_bytes(path: str | os.PathLike, who: str, kind: str) -> bytes:
    """The bytes of the file at ``path``; a missing file or a folder is a ``ValueError`` naming ``who``
    and the ``kind`` of file expected (e.g. "a .spz file")."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"{who}: file {str(path)!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise ValueError(f"{who}: {str(path)!r} is a folder, expected {kind}") from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


class StagedSave:
    """Build a multi-file save in a hidden folder inside ``parent``; move it into place as a whole.

    Use as a context manager::

        with StagedSave(folder) as stage:
            write(stage.path("scene_00001_ply"))
            write(stage.path("scene_00001.gen4d.safetensors"))
            final = stage.commit({"scene_00001_ply": "scene_00001_ply",
                                  "scene_00001.gen4d.safetensors": "scene_00001.gen4d.safetensors"})

    ``commit`` renames the staged entries to their final names in ``parent``, in the order given
    (put the entry that marks the save complete last). It never replaces an existing file or folder
    unless ``overwrite`` is set; when a final name is taken it raises ``FileExistsError`` after moving
    back whatever it had already moved, so the caller may pick new names and commit again. On leaving
    the block the staging folder is removed with everything left in it (all of it on an exception
    or an interrupt). Folders are created with mode 0o777 minus the umask.
    """

    def __init__(self, parent: str | os.PathLike):
        self.parent = Path(parent)
        self.folder: Path | None = None

    def __enter__(self) -> "StagedSave":
        self.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(16):
            folder = self.parent / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
            try:
                os.mkdir(folder, 0o777)
            except FileExistsError:
                continue
            self.folder = folder
            return self
        raise OSError(f"could not create a staging folder in {self.parent}")

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def path(self, name: str) -> Path:
        """Where to write the staged entry ``name`` (a plain name, no separators)."""
        if self.folder is None:
            raise RuntimeError("StagedSave.path: use the staging inside its 'with' block")
        if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
            raise ValueError(f"StagedSave.path: name must be a plain file or folder name, got {name!r}")
        return self.folder / name

    def commit(self, names: dict[str, str], overwrite: bool = False) -> list[Path]:
        """Rename staged ``names`` (staged -> final, in order) into ``parent``; returns the final paths."""
        moved: list[tuple[Path, Path]] = []
        replaced: list[tuple[Path, Path]] = []
        try:
            for staged, final in names.items():
                self.path(final)  # the final name is a plain name too
                src, dst = self.path(staged), self.parent / final
                if not src.exists():
                    raise FileNotFoundError(f"StagedSave.commit: nothing was staged as {staged!r}")
                if os.path.lexists(dst):
                    if not overwrite:
                        raise FileExistsError(f"{dst} already exists")
                    old = self.path(f"replaced-{secrets.token_hex(4)}")
                    os.rename(dst, old)  # kept until the whole save is in place, then removed with the stage
                    replaced.append((old, dst))
                _move_no_replace(src, dst)
                moved.append((src, dst))
        except BaseException:
            for src, dst in reversed(moved):
                with contextlib.suppress(OSError):
                    os.rename(dst, src)
            for old, dst in reversed(replaced):
                with contextlib.suppress(OSError):
                    os.rename(old, dst)
            raise
        _fsync_dir(self.parent)
        return [dst for _, dst in moved]


def _move_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, refusing (FileExistsError) when ``dst`` appeared in the meantime."""
    if src.is_file():
        try:
            os.link(src, dst)  # fails atomically when dst exists
        except FileExistsError:
            raise
        except OSError:  # file systems without hard links: check, then rename
            if os.path.lexists(dst):
                raise FileExistsError(f"{dst} already exists") from None
            os.rename(src, dst)
            return
        os.unlink(src)
        return
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} already exists")
    os.rename(src, dst)
