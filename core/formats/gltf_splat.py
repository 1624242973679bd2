# SPDX-License-Identifier: Apache-2.0
"""Binary glTF (.glb) with the ratified ``KHR_gaussian_splatting`` extension.

Public API:
    KHR_GS                               "KHR_gaussian_splatting"
    TO_GLTF_ROTATION                     wxyz node rotation from our frame to glTF's +Y-up frame
    gaussians_to_glb_bytes(g) -> bytes
    gaussians_from_glb_bytes(data, source) -> Gaussians
    save_glb(g, path, root=None) -> Path     atomic write
    load_glb(path) -> Gaussians

What is written: one scene, one node, one mesh with one ``POINTS`` primitive whose
attributes are float32 accessors in one buffer: ``POSITION`` (with min/max),
``KHR_gaussian_splatting:ROTATION`` (unit quaternion, x y z w), ``:SCALE`` (linear standard
deviations, ``exp`` of our log-scales), ``:OPACITY`` (activated, in [0, 1]),
``:SH_DEGREE_0_COEF_0`` and ``:SH_DEGREE_l_COEF_n`` (RGB per coefficient, l = 1..degree,
n = 0..2l), plus ``COLOR_0`` (normalised u8 RGBA: DC colour and opacity) for viewers that fall
back to points. The primitive's extension object names the ``ellipse`` kernel and the
``srgb_rec709_display`` colour space.

Frames: mesh data are our own values (OpenCV axes: x right, y down, z forward), bit for bit;
the node carries :data:`TO_GLTF_ROTATION`, a 180-degree turn about z, so a glTF viewer shows
the scene with up = +Y, as PlayCanvas's splat-transform does when it converts a 3DGS PLY.

Reading: float, normalised (u)byte and (u)short accessors are accepted as the extension
allows. The node's transform (rotation, translation, uniform scale; one level, no parent)
takes the data to glTF's world, and the inverse of :data:`TO_GLTF_ROTATION` back to our
frame, so our files read back exactly and other writers' files (whose data sit in glTF's
world) land in our frame. A net rotation other than a 180-degree turn about a coordinate axis
is accepted for SH degree 0 only (higher SH bands would need rotating). Errors are
``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..engine.gaussians import Gaussians
from .paths import atomic_write_bytes, read_file_bytes, safe_output_path

__all__ = [
    "KHR_GS",
    "TO_GLTF_ROTATION",
    "sh_attribute_names",
    "gaussians_to_glb_bytes",
    "gaussians_from_glb_bytes",
    "save_glb",
    "load_glb",
]

log = logging.getLogger(__name__)

KHR_GS = "KHR_gaussian_splatting"
TO_GLTF_ROTATION = (0.0, 0.0, 0.0, 1.0)  # wxyz: 180 degrees about z
_GLB_MAGIC, _JSON, _BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _TYPES = 5126, {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
_COMPONENTS = {5120: ("i1", 127.0), 5121: ("u1", 255.0), 5122: ("<i2", 32767.0), 5123: ("<u2", 65535.0),
               5126: ("<f4", None)}
_MAX_JSON = 64 << 20

# Parity (x, y, z exponents mod 2) of each real SH basis function in the 3DGS order, bands 1..3;
# a turn by 180 degrees about an axis multiplies coefficient k by sx^a sy^b sz^c.
_SH_PARITY = [(0, 0, 0),
              (0, 1, 0), (0, 0, 1), (1, 0, 0),
              (1, 1, 0), (0, 1, 1), (0, 0, 0), (1, 0, 1), (0, 0, 0),
              (0, 1, 0), (1, 1, 1), (0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 0, 1), (1, 0, 0)]


def sh_attribute_names(degree: int) -> list[str]:
    """Attribute names of the SH coefficients up to ``degree``, in our coefficient order."""
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"glTF: SH degree must be 0..3, got {degree!r}")
    return [f"{KHR_GS}:SH_DEGREE_{band}_COEF_{n}" for band in range(degree + 1) for n in range(2 * band + 1)]


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def gaussians_to_glb_bytes(gaussians: Gaussians) -> bytes:
    """Encode ``gaussians`` as a .glb with one ``KHR_gaussian_splatting`` primitive.

    Raises:
        ValueError: NaN/inf values or zero-length quaternions (the format has no room for them).
    """
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"glTF: gaussians must be Gaussians, got {type(gaussians).__name__}")
    try:
        gaussians.validate(check_finite=True)
    except ValueError as exc:
        raise ValueError(f"glTF: cannot encode: {exc}") from exc
    n = len(gaussians)
    if n == 0:
        raise ValueError("glTF: cannot write an empty Gaussian set (an accessor needs count >= 1)")
    norm = gaussians.quats.detach().norm(dim=-1)
    if (norm <= 1e-12).any():
        raise ValueError(f"glTF: {int((norm <= 1e-12).sum())} quaternions have zero length")
    means = _f32(gaussians.means)
    xyzw = _f32(gaussians.rotations)[:, [1, 2, 3, 0]]
    sh = _f32(gaussians.sh)
    opacity = _f32(gaussians.opacities)
    rgba = np.concatenate([np.clip(sh[:, 0, :] * 0.28209479177387814 + 0.5, 0, 1), opacity[:, None]], axis=1)
    columns = [("POSITION", means, "VEC3"), (f"{KHR_GS}:ROTATION", xyzw, "VEC4"),
               (f"{KHR_GS}:SCALE", _f32(gaussians.scales), "VEC3"), (f"{KHR_GS}:OPACITY", opacity, "SCALAR")]
    columns += [(name, sh[:, i, :], "VEC3") for i, name in enumerate(sh_attribute_names(gaussians.sh_degree))]
    columns.append(("COLOR_0", np.round(rgba * 255.0).astype(np.uint8), "VEC4"))
    blob, views, accessors, attributes = bytearray(), [], [], {}
    for index, (name, array, kind) in enumerate(columns):
        data = np.ascontiguousarray(array).tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)})
        blob += data + b"\0" * (-len(data) % 4)
        acc = {"bufferView": index, "componentType": _FLOAT if array.dtype == np.float32 else 5121,
               "count": n, "type": kind}
        if name == "COLOR_0":
            acc["normalized"] = True
        if name == "POSITION":
            acc["min"] = [float(v) for v in means.min(0)]
            acc["max"] = [float(v) for v in means.max(0)]
        accessors.append(acc)
        attributes[name] = index
    w, x, y, z = TO_GLTF_ROTATION
    doc = {
        "asset": {"version": "2.0", "generator": "ComfyUI-Gen4D"},
        "extensionsUsed": [KHR_GS],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "rotation": [x, y, z, w], "name": "gaussians"}],
        "meshes": [{"primitives": [{"attributes": attributes, "mode": 0, "extensions": {
            KHR_GS: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}}}]}],
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(text), _JSON), text,
                     struct.pack("<II", len(blob), _BIN), bytes(blob)])


# -- reading ------------------------------------------------------------------------------


def _split_glb(data: bytes, source: str) -> tuple[dict, bytes]:
    if len(data) < 20:
        raise ValueError(f"{source}: too short for a .glb file ({len(data)} bytes)")
    magic, version, total = struct.unpack_from("<III", data)
    if magic != _GLB_MAGIC:
        raise ValueError(f"{source}: not a binary glTF file (bad magic); .glb is expected")
    if version != 2:
        raise ValueError(f"{source}: glTF container version {version} is not supported (2)")
    if total > len(data):
        raise ValueError(f"{source}: truncated .glb: header says {total} bytes, file has {len(data)}")
    at, doc, blob = 12, None, b""
    while at + 8 <= total:
        length, kind = struct.unpack_from("<II", data, at)
        chunk = data[at + 8: at + 8 + length]
        if len(chunk) < length:
            raise ValueError(f"{source}: truncated .glb chunk at byte {at}")
        if kind == _JSON and doc is None:
            if length > _MAX_JSON:
                raise ValueError(f"{source}: glTF JSON chunk of {length} bytes is too large")
            try:
                doc = json.loads(chunk.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{source}: glTF JSON chunk is not valid JSON: {exc}") from exc
        elif kind == _BIN and not blob:
            blob = chunk
        at += 8 + length + (-length % 4 if at + 8 + length < total else 0)
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: .glb has no JSON chunk")
    return doc, blob


def _accessor(doc: dict, blob: bytes, index, want: str, source: str, name: str) -> np.ndarray:
    try:
        acc = doc["accessors"][index]
        view = doc["bufferViews"][acc["bufferView"]]
        if view.get("buffer", 0) != 0 or "uri" in doc["buffers"][0]:
            raise ValueError("data outside the .glb's binary chunk is not supported")
        code, norm = _COMPONENTS[acc["componentType"]]
        width = _TYPES[acc["type"]]
        count = int(acc["count"])
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{source}: attribute {name!r}: malformed accessor/bufferView ({exc!r})") from exc
    except ValueError as exc:
        raise ValueError(f"{source}: attribute {name!r}: {exc}") from exc
    if acc["type"] != want:
        raise ValueError(f"{source}: attribute {name!r} must be {want}, got {acc['type']}")
    if acc.get("sparse") is not None:
        raise ValueError(f"{source}: attribute {name!r}: sparse accessors are not supported")
    item = np.dtype(code).itemsize * width
    stride = int(view.get("byteStride") or item)
    start = int(view.get("byteOffset", 0)) + int(acc.get("byteOffset", 0))
    end = start + (stride * (count - 1) + item if count else 0)
    if count and (end > len(blob) or end > int(view.get("byteOffset", 0)) + int(view["byteLength"])):
        raise ValueError(f"{source}: attribute {name!r}: {count} elements run past the end of their buffer")
    raw = np.frombuffer(blob, np.uint8, end - start, start) if count else np.zeros(0, np.uint8)
    rows = np.lib.stride_tricks.as_strided(raw, (count, item), (stride, 1)) if count else raw.reshape(0, item)
    values = np.ascontiguousarray(rows).view(code).reshape(count, width).astype(np.float64)
    if norm is not None and acc.get("normalized", False):
        values = np.maximum(values / norm, -1.0)
    return values


def _net_rotation(doc: dict, mesh_index: int, source: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(wxyz rotation from file data to our frame, translation in our frame, uniform scale)."""
    nodes = [nd for nd in doc.get("nodes", []) if isinstance(nd, dict) and nd.get("mesh") == mesh_index]
    node = nodes[0] if nodes else {}
    if "matrix" in node:
        raise ValueError(f"{source}: node matrices are not supported; use rotation/translation/scale")
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    scale = node.get("scale", [1.0, 1.0, 1.0])
    if not np.allclose(scale, scale[0]) or scale[0] <= 0:
        raise ValueError(f"{source}: node scale {scale} is not uniform and positive")
    tw, tx, ty, tz = TO_GLTF_ROTATION  # its inverse is itself (a half turn)
    a, b = np.array([tw, -tx, -ty, -tz], np.float64), np.array([w, x, y, z], np.float64)
    q = np.array([a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
                  a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
                  a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
                  a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0]])
    q = q / np.linalg.norm(q)
    t = _rotate(a, np.asarray(node.get("translation", [0.0, 0.0, 0.0]), np.float64)[None])
    return q, t[0], float(scale[0])


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    w, u = q[0], q[1:]
    return v + 2.0 * np.cross(u, np.cross(u, v) + w * v)


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=1)


def gaussians_from_glb_bytes(data: bytes, source: str = "<bytes>") -> Gaussians:
    """Decode the first ``KHR_gaussian_splatting`` primitive of a .glb into float32 CPU Gaussians (our frame)."""
    doc, blob = _split_glb(bytes(data), source)
    found = None
    for m, mesh in enumerate(doc.get("meshes", [])):
        for prim in mesh.get("primitives", []) if isinstance(mesh, dict) else []:
            if isinstance(prim, dict) and KHR_GS in (prim.get("extensions") or {}):
                found = (m, prim)
                break
        if found:
            break
    if found is None:
        raise ValueError(f"{source}: no mesh primitive uses the {KHR_GS} extension")
    mesh_index, prim = found
    if prim.get("mode", 4) != 0:
        raise ValueError(f"{source}: a {KHR_GS} primitive must have mode 0 (POINTS), got {prim.get('mode', 4)}")
    attrs = prim.get("attributes") or {}
    need = ["POSITION", f"{KHR_GS}:ROTATION", f"{KHR_GS}:SCALE", f"{KHR_GS}:OPACITY", f"{KHR_GS}:SH_DEGREE_0_COEF_0"]
    missing = [a for a in need if a not in attrs]
    if missing:
        raise ValueError(f"{source}: {KHR_GS} primitive lacks attributes {missing}")
    degree = 0
    while degree < 3 and f"{KHR_GS}:SH_DEGREE_{degree + 1}_COEF_0" in attrs:
        degree += 1
    names = sh_attribute_names(degree)
    partial = [a for a in names if a not in attrs]
    extra = [a for a in attrs if a.startswith(f"{KHR_GS}:SH_DEGREE_") and a not in names]
    if partial or extra:
        raise ValueError(f"{source}: spherical harmonics are partially defined (missing {partial}, "
                         f"unexpected {extra}); each degree 1..3 needs all its coefficients")
    get = lambda name, kind: _accessor(doc, blob, attrs[name], kind, source, name)  # noqa: E731
    means = get("POSITION", "VEC3")
    n = len(means)
    xyzw = get(f"{KHR_GS}:ROTATION", "VEC4")
    scales = get(f"{KHR_GS}:SCALE", "VEC3")
    opacity = get(f"{KHR_GS}:OPACITY", "SCALAR")[:, 0]
    sh = np.stack([get(name, "VEC3") for name in names], axis=1)
    for name, arr in (("ROTATION", xyzw), ("SCALE", scales), ("OPACITY", opacity), ("SH", sh)):
        if len(arr) != n:
            raise ValueError(f"{source}: attribute {name} has {len(arr)} elements, POSITION has {n}")
    if not all(np.isfinite(a).all() for a in (means, xyzw, scales, opacity, sh)):
        raise ValueError(f"{source}: {KHR_GS} attributes hold NaN or infinite values")
    if (scales <= 0).any():
        raise ValueError(f"{source}: {int((scales <= 0).sum())} SCALE values are not positive (scales are linear)")
    if ((opacity < 0) | (opacity > 1)).any():
        raise ValueError(f"{source}: OPACITY values must lie in [0, 1]")
    wxyz = xyzw[:, [3, 0, 1, 2]]
    wxyz = wxyz / np.maximum(np.linalg.norm(wxyz, axis=1, keepdims=True), 1e-12)
    q, shift, s = _net_rotation(doc, mesh_index, source)
    if not np.allclose(q, [1.0, 0.0, 0.0, 0.0], atol=1e-7) or np.any(shift) or s != 1.0:
        flips = None
        for axis in range(3):
            if abs(abs(q[axis + 1]) - 1.0) < 1e-7:
                flips = [-1.0, -1.0, -1.0]
                flips[axis] = 1.0
        identity = abs(abs(q[0]) - 1.0) < 1e-7
        if identity:
            flips = [1.0, 1.0, 1.0]
        if flips is None and degree > 0:
            raise ValueError(f"{source}: the node's rotation is not a half turn about an axis; rotating SH of "
                             f"degree {degree} is not supported")
        means = _rotate(q, means) * s + shift
        wxyz = _qmul(q, wxyz)
        scales = scales * s
        if flips is not None and degree > 0:
            parity = _SH_PARITY[: (degree + 1) ** 2]
            sign = np.array([flips[0] ** a * flips[1] ** b * flips[2] ** c for a, b, c in parity])
            sh = sh * sign[None, :, None]
    half = 0.5 / 65535.0
    opacity = np.clip(opacity, half, 1.0 - half)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return Gaussians(t(means), t(wxyz), t(np.log(scales)), t(np.log(opacity / (1.0 - opacity))), t(sh))


def save_glb(gaussians: Gaussians, path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Write ``gaussians`` as a .glb atomically (``path`` checked against ``root`` when given)."""
    target = safe_output_path(root, str(path), ".glb") if root is not None else Path(path)
    atomic_write_bytes(target, gaussians_to_glb_bytes(gaussians))
    log.info("wrote %d Gaussians to %s", len(gaussians), target)
    return target


def load_glb(path: str | os.PathLike) -> Gaussians:
    """Read a .glb (see :func:`gaussians_from_glb_bytes`)."""
    return gaussians_from_glb_bytes(read_file_bytes(path, "load_glb", "a .glb file"), source=str(path))
