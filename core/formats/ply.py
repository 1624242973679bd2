# SPDX-License-Identifier: Apache-2.0
"""Gaussian splat PLY files in the standard 3DGS layout, and plain coloured point clouds.

Public API:
    ply_property_names(num_sh_bases) -> list[str]   the standard 3DGS vertex properties, in order
    gaussians_to_ply_bytes(gaussians) -> bytes      binary little-endian 3DGS PLY
    save_ply(gaussians, path, root=None) -> Path    atomic write of the above
    gaussians_from_ply_bytes(data, source) -> Gaussians
    load_ply(path) -> Gaussians
    save_points_ply(points, colors, path, root=None) -> Path   x,y,z float + red,green,blue uchar
    load_points_ply(path) -> (points [N,3] float32, colors [N,3] float32 0..1)

Design notes:
    The writer produces exactly what the reference 3DGS code (via plyfile) writes and what splat
    viewers (SuperSplat, antimatter15/splat, the inria viewer, ComfyUI's splat loader) read:
    ``binary_little_endian 1.0``, one ``vertex`` element of float properties x, y, z, nx, ny, nz,
    f_dc_0..2, f_rest_0..f_rest_{3(K-1)-1}, opacity, scale_0..2, rot_0..3. ``f_rest`` is
    channel-major (index ``c*(K-1) + (k-1)`` for coefficient ``k`` and channel ``c``); opacity is
    the logit, scales are logs and rot is the raw wxyz quaternion, i.e. our storage unchanged,
    so a float32 set round-trips bit for bit. Normals are written as zeros.

    The reader looks properties up by name, so any order and extra properties are fine; it
    accepts float or double Gaussian properties, binary little/big endian and ascii bodies, and
    skips elements before ``vertex`` when their row size is fixed (elements with list properties
    there are rejected; elements after ``vertex`` are ignored). Everything is vectorised with
    numpy structured dtypes. NaN values load as they are; ``Gaussians.validate(check_finite=True)``
    reports them. All errors are ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..engine.gaussians import Gaussians
from .paths import atomic_write_bytes, read_file_bytes, safe_output_path

__all__ = [
    "ply_property_names",
    "gaussians_to_ply_bytes",
    "save_ply",
    "gaussians_from_ply_bytes",
    "load_ply",
    "save_points_ply",
    "load_points_ply",
]

log = logging.getLogger(__name__)

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_VALID_REST = (0, 9, 24, 45)
_MAX_HEADER = 1 << 20


def ply_property_names(num_sh_bases: int) -> list[str]:
    """Standard 3DGS vertex property names for ``K = num_sh_bases`` SH coefficients per channel."""
    if num_sh_bases not in (1, 4, 9, 16):
        raise ValueError(f"ply_property_names: num_sh_bases must be 1, 4, 9 or 16, got {num_sh_bases}")
    rest = [f"f_rest_{i}" for i in range(3 * (num_sh_bases - 1))]
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def _header(element: str, count: int, props: list[tuple[str, str]]) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element {element} {count}"]
    lines += [f"property {ptype} {name}" for ptype, name in props]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _np32(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def gaussians_to_ply_bytes(gaussians: Gaussians) -> bytes:
    """Serialise to a binary little-endian 3DGS PLY (tensors are cast to float32 on the CPU).

    Args:
        gaussians: ``N`` Gaussians with ``sh [N,K,3]``.

    Returns:
        The whole file: header followed by ``N`` rows of ``14 + 3K`` little-endian float32.
    """
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"gaussians_to_ply_bytes: gaussians must be Gaussians, got {type(gaussians).__name__}")
    n, k = len(gaussians), gaussians.sh.shape[1]
    sh = _np32(gaussians.sh)
    columns = [
        _np32(gaussians.means),
        np.zeros((n, 3), np.float32),
        sh[:, 0, :],
        sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),  # channel-major f_rest
        _np32(gaussians.logit_opacities).reshape(n, 1),
        _np32(gaussians.log_scales),
        _np32(gaussians.quats),
    ]
    body = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    header = _header("vertex", n, [("float", name) for name in ply_property_names(k)])
    return header + body.tobytes()


def save_ply(gaussians: Gaussians, path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Write ``gaussians`` as a 3DGS PLY atomically.

    Args:
        gaussians: the set to write.
        path: target file; with ``root`` it is a user-given relative name checked by
            :func:`~.paths.safe_output_path` (``.ply`` appended if missing).
        root: optional output folder that ``path`` must stay inside.

    Returns:
        The path written.
    """
    target = safe_output_path(root, str(path), ".ply") if root is not None else Path(path)
    data = gaussians_to_ply_bytes(gaussians)
    atomic_write_bytes(target, data)
    log.info("wrote %d Gaussians to %s", len(gaussians), target)
    return target


# -- reading ------------------------------------------------------------------------------


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str]] = field(default_factory=list)  # (name, numpy code)
    has_list: bool = False


def _parse_header(data: bytes, source: str) -> tuple[str, list[_Element], int]:
    """Return (format, elements, body offset)."""
    if not data.startswith((b"ply\n", b"ply\r\n")):
        raise ValueError(f"{source}: not a PLY file (it does not start with the 'ply' magic line)")
    end = data.find(b"end_header", 0, _MAX_HEADER)
    if end < 0:
        raise ValueError(f"{source}: PLY header has no 'end_header' line (truncated or not a PLY file)")
    after = end + len(b"end_header")
    if data[after:after + 1] == b"\n":
        body = after + 1
    elif data[after:after + 2] == b"\r\n":
        body = after + 2
    else:
        raise ValueError(f"{source}: PLY header does not end with a newline after 'end_header'")
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: PLY header is not ASCII text") from exc
    fmt, elements = None, []
    for lineno, line in enumerate(text.splitlines()[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3:
            if words[1] not in _FORMATS or words[2] not in ("1.0", "1"):
                raise ValueError(f"{source}: unsupported PLY format {' '.join(words[1:])!r}; expected "
                                 f"ascii, binary_little_endian or binary_big_endian, version 1.0")
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            if not words[2].isdigit():
                raise ValueError(f"{source}: header line {lineno}: element count must be an integer, got {words[2]!r}")
            elements.append(_Element(words[1], int(words[2])))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list":
            elements[-1].has_list = True
            elements[-1].props.append((words[4], "list"))
        elif words[0] == "property" and elements and len(words) == 3:
            if words[1] not in _TYPES:
                raise ValueError(f"{source}: header line {lineno}: unknown property type {words[1]!r}")
            if any(p == words[2] for p, _ in elements[-1].props):
                raise ValueError(f"{source}: element {elements[-1].name!r} declares property {words[2]!r} twice")
            elements[-1].props.append((words[2], _TYPES[words[1]]))
        else:
            raise ValueError(f"{source}: malformed PLY header line {lineno}: {line!r}")
    if fmt is None:
        raise ValueError(f"{source}: PLY header has no 'format' line")
    return fmt, elements, body


def _read_vertices(data: bytes, source: str) -> dict[str, np.ndarray]:
    """Columns of the ``vertex`` element by property name (each ``[N]``, its declared dtype)."""
    fmt, elements, offset = _parse_header(data, source)
    names = [e.name for e in elements]
    if "vertex" not in names:
        raise ValueError(f"{source}: PLY has no 'vertex' element (elements: {names})")
    index = names.index("vertex")
    vertex = elements[index]
    for e in elements[: index + 1]:
        if e.has_list:
            raise ValueError(f"{source}: element {e.name!r} has list properties, which are not supported "
                             f"in or before the vertex element")
    n = vertex.count
    if not vertex.props:
        raise ValueError(f"{source}: the vertex element declares no properties")
    if fmt == "ascii":
        # Every row holds one value of at least one character per property, each followed by a space or a
        # newline (the last row may end the file): check the counts the header claims before parsing.
        rows_before = elements[:index + 1]
        least = sum(e.count * 2 * len(e.props) for e in rows_before) - 1
        body = len(data) - offset
        if least > body:
            raise ValueError(f"{source}: the PLY header promises {n} vertices"
                             + (f" (and {sum(e.count for e in elements[:index])} rows before them)" if index else "")
                             + f", which need at least {least} bytes of ascii rows; the file has {body} bytes "
                             "after its header (truncated or a corrupt header)")
        skip = sum(e.count for e in elements[:index])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                rows = np.loadtxt(io.StringIO(data[offset:].decode("ascii")), dtype=np.float64, comments=None,
                                  skiprows=skip, max_rows=n, ndmin=2) if n else np.zeros((0, len(vertex.props)))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source}: cannot parse the ascii vertex rows: {exc}") from exc
        if rows.shape[0] < n:
            raise ValueError(f"{source}: truncated PLY body: header promises {n} vertices, found {rows.shape[0]} rows")
        if rows.shape[1] != len(vertex.props):
            raise ValueError(f"{source}: ascii vertex rows have {rows.shape[1]} values, header declares "
                             f"{len(vertex.props)} properties")
        return {name: rows[:, i].astype(code) for i, (name, code) in enumerate(vertex.props)}
    endian = _FORMATS[fmt]
    for e in elements[:index]:
        offset += e.count * np.dtype([(p, endian + c) for p, c in e.props]).itemsize
    dtype = np.dtype([(p, endian + c) for p, c in vertex.props])
    needed = offset + n * dtype.itemsize
    if len(data) < needed:
        raise ValueError(f"{source}: truncated PLY body: header promises {n} vertices of {dtype.itemsize} bytes "
                         f"({needed} bytes in all), file has {len(data)} bytes")
    arr = np.frombuffer(data, dtype=dtype, count=n, offset=offset) if n else np.zeros(0, dtype)
    return {name: arr[name] for name in dtype.names}


def _stack(cols: dict[str, np.ndarray], names: list[str], n: int) -> np.ndarray:
    if not names:
        return np.zeros((n, 0), np.float32)
    return np.stack([cols[name].astype(np.float32) for name in names], axis=1)


def gaussians_from_ply_bytes(data: bytes, source: str = "<bytes>") -> Gaussians:
    """Parse a 3DGS PLY from memory.

    Args:
        data: the whole file.
        source: name used in error messages (the file path).

    Returns:
        float32 CPU Gaussians with ``K = 1 + (#f_rest)/3`` SH coefficients.

    Raises:
        ValueError: not a PLY, unsupported format, truncated body, missing or non-float
            properties, or an f_rest count other than 0, 9, 24 or 45.
    """
    data = bytes(data)
    cols = _read_vertices(data, source)
    n = len(next(iter(cols.values()))) if cols else 0
    rest = sorted((p for p in cols if p.startswith("f_rest_")), key=lambda p: (len(p), p))
    if len(rest) not in _VALID_REST:
        raise ValueError(f"{source}: found {len(rest)} f_rest_* properties; expected 0, 9, 24 or 45 "
                         f"(SH degree 0..3)")
    k = 1 + len(rest) // 3
    required = [p for p in ply_property_names(k) if p not in ("nx", "ny", "nz")]
    missing = [p for p in required if p not in cols]
    if missing:
        raise ValueError(f"{source}: PLY vertex element lacks required 3DGS properties {missing}")
    not_float = [p for p in required if cols[p].dtype.kind != "f"]
    if not_float:
        raise ValueError(f"{source}: properties {not_float} must be float or double")
    dc = _stack(cols, ["f_dc_0", "f_dc_1", "f_dc_2"], n)
    rest_arr = _stack(cols, [f"f_rest_{i}" for i in range(3 * (k - 1))], n).reshape(n, 3, k - 1)
    sh = np.concatenate([dc[:, None, :], rest_arr.transpose(0, 2, 1)], axis=1)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return Gaussians(
        means=t(_stack(cols, ["x", "y", "z"], n)),
        quats=t(_stack(cols, ["rot_0", "rot_1", "rot_2", "rot_3"], n)),
        log_scales=t(_stack(cols, ["scale_0", "scale_1", "scale_2"], n)),
        logit_opacities=t(cols["opacity"].astype(np.float32)),
        sh=t(sh),
    )


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY file (see :func:`gaussians_from_ply_bytes`)."""
    return gaussians_from_ply_bytes(read_file_bytes(path, "load_ply", "a .ply file"), source=str(path))


# -- point clouds -------------------------------------------------------------------------


def save_points_ply(points, colors, path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Write a coloured point cloud (x, y, z float; red, green, blue uchar) atomically.

    Args:
        points: ``[N,3]`` positions (tensor or array).
        colors: ``[N,3]`` colours in [0,1]; clipped, then rounded to 0..255.
        path: target file (a relative name under ``root`` when ``root`` is given).
        root: optional output folder that ``path`` must stay inside.
    """
    pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float32)
    col = np.asarray(colors.detach().cpu().float() if isinstance(colors, Tensor) else colors, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"save_points_ply: points must be [N,3], got {tuple(pts.shape)}")
    if col.shape != pts.shape:
        raise ValueError(f"save_points_ply: colors must be [{pts.shape[0]},3] to match points, got {tuple(col.shape)}")
    names = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rows = np.empty(pts.shape[0], dtype=np.dtype(names))
    for i, axis in enumerate("xyz"):
        rows[axis] = pts[:, i]
    rgb = np.round(np.clip(np.nan_to_num(col, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        rows[channel] = rgb[:, i]
    header = _header("vertex", len(rows), [("float", "x"), ("float", "y"), ("float", "z"),
                                           ("uchar", "red"), ("uchar", "green"), ("uchar", "blue")])
    target = safe_output_path(root, str(path), ".ply") if root is not None else Path(path)
    return atomic_write_bytes(target, header + rows.tobytes())


def load_points_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read x, y, z and red, green, blue (uchar as /255, float as is) of any PLY point cloud.

    Returns:
        ``points [N,3]`` float32 and ``colors [N,3]`` float32 in [0,1].
    """
    cols = _read_vertices(read_file_bytes(path, "load_points_ply", "a .ply file"), str(path))
    missing = [p for p in ("x", "y", "z", "red", "green", "blue") if p not in cols]
    if missing:
        raise ValueError(f"{path}: PLY vertex element lacks properties {missing}")
    n = len(cols["x"])
    rgb = _stack(cols, ["red", "green", "blue"], n)
    if cols["red"].dtype == np.uint8:
        rgb = rgb / np.float32(255.0)
    return _stack(cols, ["x", "y", "z"], n), rgb
