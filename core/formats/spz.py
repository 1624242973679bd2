# SPDX-License-Identifier: Apache-2.0
"""Niantic SPZ files (versions 2 and 3): gzip-compressed, quantised Gaussian splats.

Public API:
    SPZ_MAGIC, SPZ_VERSIONS         0x5053474E ("NGSP" little-endian), (2, 3)
    SPZ_PRECISION                   the worst-case error of one round trip, per field
    gaussians_to_spz_bytes(g, version=3, fractional_bits=None) -> bytes
    gaussians_from_spz_bytes(data, source) -> Gaussians
    save_spz(g, path, root=None, version=3) -> Path     atomic write
    load_spz(path) -> Gaussians

Layout (all little-endian, the whole stream gzip-compressed):
    16-byte header: magic u32, version u32, count u32, SH degree u8, fractional bits u8,
    flags u8 (bit 0: antialiased; written 0), reserved u8 (0). Then one block per attribute,
    each over all splats in order: positions (3 x 24-bit signed fixed point, ``x * 2^bits``),
    alphas (u8, ``opacity * 255``), colours (3 x u8, ``(dc * 0.15 + 0.5) * 255``, ``dc`` being
    the SH DC coefficient), scales (3 x u8, ``(log scale + 10) * 16``), rotations, then SH
    (u8 ``coef * 128 + 128``; coefficient-major, channel-minor; degree 1..3 only).
    Rotations, version 2: 3 x u8 ``(q + 1) * 127.5`` of x, y, z of the unit quaternion with
    ``w >= 0`` (w is recomputed). Version 3 ("smallest three"): one u32, the top 2 bits hold
    the index (x, y, z, w = 0..3) of the largest-magnitude component, made positive; the other
    three follow from the highest index down to the lowest in 10-bit fields starting at bit 0,
    each a 9-bit magnitude ``round(|v| / sqrt(1/2) * 511)`` and a sign bit above it.

Design notes:
    Values are stored in the pack's own frame (OpenCV axes, the frame of our PLY files),
    without axis conversion, the way ComfyUI's splat nodes, Spark and splat-transform read
    SPZ. ``fractional_bits`` defaults to the largest value in 0..16 that keeps every position
    inside the 24-bit range. Values outside a field's range are clamped on write (the range is
    part of :data:`SPZ_PRECISION`). NaN or infinite input is refused. The reader accepts
    versions 2 and 3; version 1 (float16 positions) and version 4 (zstd container) are refused
    with a ``ValueError`` naming the version.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..engine.gaussians import Gaussians
from .paths import atomic_write_bytes, read_file_bytes, safe_output_path

__all__ = [
    "SPZ_MAGIC",
    "SPZ_VERSIONS",
    "SPZ_PRECISION",
    "gaussians_to_spz_bytes",
    "gaussians_from_spz_bytes",
    "save_spz",
    "load_spz",
]

log = logging.getLogger(__name__)

SPZ_MAGIC = 0x5053474E
SPZ_VERSIONS = (2, 3)
_HEADER = struct.Struct("<IIIBBBB")
_COLOR_SCALE = 0.15
_SQRT_HALF = math.sqrt(0.5)
_MAX_BITS = 16
_MAX_POINTS = 1 << 28  # refuse headers that would need more than a few GiB

# Worst-case absolute error of one write/read, inside each field's range.
SPZ_PRECISION = {
    "means": "2^-(fractional_bits+1) per coordinate; |x| < 2^(23-fractional_bits)",
    "log_scales": 1.0 / 32.0,          # range [-10, 5.94]
    "opacities": 1.0 / 510.0,          # activated opacity, range [0, 1]
    "sh_dc": 1.0 / (2 * 255 * _COLOR_SCALE),  # range [-3.33, 3.33]
    "sh_rest": 1.0 / 256.0,            # range [-1, 127/128]
    "quats_v2": 0.12,                  # per component (sign-aligned); w is recomputed, so the error grows as w -> 0
    "quats_v3": _SQRT_HALF / 1022.0 * 2.0,  # per component, after renormalisation
}


def _np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _auto_bits(means: np.ndarray) -> int:
    extent = float(np.abs(means).max()) if means.size else 0.0
    if extent == 0.0:
        return _MAX_BITS
    bits = 22 - int(math.ceil(math.log2(extent)))
    if bits < 0:
        raise ValueError(f"SPZ: positions reach {extent:.4g}; the 24-bit fixed-point range holds |x| < 2^23")
    return min(bits, _MAX_BITS)


def _pack_v3(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[N,4]`` in xyzw -> u32 smallest-three codes ``[N]``."""
    largest = np.argmax(np.abs(q), axis=1)
    sign = np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)
    q = q * sign[:, None]
    code = largest.astype(np.uint32) << np.uint32(30)
    shift = np.zeros(len(q), np.uint32)
    for j in (3, 2, 1, 0):  # the highest index sits in the lowest bits
        keep = largest != j
        v = q[:, j]
        mag = np.minimum(np.round(np.abs(v) / _SQRT_HALF * 511.0), 511).astype(np.uint32)
        field = mag | ((v < 0).astype(np.uint32) << np.uint32(9))
        code = np.where(keep, code | (field << shift), code)
        shift = np.where(keep, shift + np.uint32(10), shift)
    return code


def _unpack_v3(code: np.ndarray) -> np.ndarray:
    """u32 smallest-three codes ``[N]`` -> unit quaternions ``[N,4]`` in xyzw."""
    code = code.astype(np.uint32)
    largest = (code >> np.uint32(30)).astype(np.int64)
    q = np.zeros((len(code), 4), np.float64)
    rest = code.copy()
    for j in (3, 2, 1, 0):
        take = largest != j
        mag = (rest & np.uint32(511)).astype(np.float64)
        neg = ((rest >> np.uint32(9)) & np.uint32(1)).astype(bool)
        v = _SQRT_HALF * mag / 511.0
        q[:, j] = np.where(take, np.where(neg, -v, v), 0.0)
        rest = np.where(take, rest >> np.uint32(10), rest)
    q[np.arange(len(code)), largest] = np.sqrt(np.maximum(0.0, 1.0 - (q * q).sum(1)))
    return q


def gaussians_to_spz_bytes(gaussians: Gaussians, version: int = 3, fractional_bits: int | None = None) -> bytes:
    """Encode as an SPZ file (gzip stream) of ``version`` 2 or 3.

    Args:
        gaussians: ``N`` Gaussians, SH degree 0..3.
        version: 3 (smallest-three rotations, the default) or 2.
        fractional_bits: fixed-point fraction bits of the positions (default: automatic).

    Raises:
        ValueError: an unsupported version, NaN/inf values, or positions outside the 24-bit range.
    """
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"SPZ: gaussians must be Gaussians, got {type(gaussians).__name__}")
    if version not in SPZ_VERSIONS:
        raise ValueError(f"SPZ: version must be one of {SPZ_VERSIONS}, got {version!r}")
    try:
        gaussians.validate(check_finite=True)
    except ValueError as exc:
        raise ValueError(f"SPZ: cannot encode: {exc}") from exc
    n, k = len(gaussians), gaussians.sh.shape[1]
    degree = gaussians.sh_degree
    means = _np32(gaussians.means)
    bits = _auto_bits(means) if fractional_bits is None else int(fractional_bits)
    if not 0 <= bits <= 23:
        raise ValueError(f"SPZ: fractional_bits must lie in 0..23, got {fractional_bits!r}")
    fixed = np.round(means * float(1 << bits))
    if n and (fixed.min() < -(1 << 23) or fixed.max() > (1 << 23) - 1):
        raise ValueError(f"SPZ: positions up to {np.abs(means).max():.4g} do not fit 24 bits with "
                         f"{bits} fractional bits")
    fixed = fixed.astype(np.int64) & 0xFFFFFF
    pos = np.stack([(fixed >> s) & 0xFF for s in (0, 8, 16)], axis=-1).astype(np.uint8).reshape(n, 9)
    opacity = 1.0 / (1.0 + np.exp(-_np32(gaussians.logit_opacities)))
    alpha = np.clip(np.round(opacity * 255.0), 0, 255).astype(np.uint8)
    sh = _np32(gaussians.sh)
    color = np.clip(np.round((sh[:, 0, :] * _COLOR_SCALE + 0.5) * 255.0), 0, 255).astype(np.uint8)
    scale = np.clip(np.round((_np32(gaussians.log_scales) + 10.0) * 16.0), 0, 255).astype(np.uint8)
    wxyz = _np32(gaussians.quats)
    norm = np.linalg.norm(wxyz, axis=1, keepdims=True)
    if n and (norm <= 1e-12).any():
        raise ValueError(f"SPZ: {int((norm <= 1e-12).sum())} quaternions have zero length")
    xyzw = (wxyz / np.where(norm > 0, norm, 1.0))[:, [1, 2, 3, 0]]
    if version == 2:
        xyzw = xyzw * np.where(xyzw[:, 3:4] < 0, -1.0, 1.0)
        rot = np.clip(np.round((xyzw[:, :3] + 1.0) * 127.5), 0, 255).astype(np.uint8).tobytes()
    else:
        rot = _pack_v3(xyzw).astype("<u4").tobytes()
    rest = sh[:, 1:, :].reshape(n, 3 * (k - 1))  # coefficient-major, channel-minor
    rest = np.clip(np.round(rest * 128.0) + 128.0, 0, 255).astype(np.uint8)
    header = _HEADER.pack(SPZ_MAGIC, version, n, degree, bits, 0, 0)
    raw = b"".join([header, pos.tobytes(), alpha.tobytes(), color.tobytes(), scale.tobytes(), rot, rest.tobytes()])
    return gzip.compress(raw, compresslevel=6, mtime=0)


def _gunzip(data: bytes, source: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        if len(data) >= 4 and struct.unpack_from("<I", data)[0] == SPZ_MAGIC:
            version = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else "?"
            raise ValueError(f"{source}: SPZ version {version} (an uncompressed/zstd container) is not "
                             f"supported; versions {SPZ_VERSIONS} are read")
        raise ValueError(f"{source}: not an SPZ file (no gzip stream)")
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{source}: corrupt SPZ gzip stream: {exc}") from exc


def gaussians_from_spz_bytes(data: bytes, source: str = "<bytes>") -> Gaussians:
    """Decode an SPZ file of version 2 or 3 into float32 CPU Gaussians.

    Raises:
        ValueError: not SPZ, an unsupported version or SH degree, or a truncated body.
    """
    raw = _gunzip(bytes(data), source)
    if len(raw) < _HEADER.size:
        raise ValueError(f"{source}: SPZ data shorter than its 16-byte header")
    magic, version, n, degree, bits, _flags, _reserved = _HEADER.unpack_from(raw)
    if magic != SPZ_MAGIC:
        raise ValueError(f"{source}: bad SPZ magic 0x{magic:08x}, expected 0x{SPZ_MAGIC:08x}")
    if version not in SPZ_VERSIONS:
        raise ValueError(f"{source}: SPZ version {version} is not supported; versions {SPZ_VERSIONS} are read")
    if degree > 3:
        raise ValueError(f"{source}: SPZ SH degree {degree} is not supported (0..3)")
    if n > _MAX_POINTS:
        raise ValueError(f"{source}: SPZ header claims {n} splats, more than the {_MAX_POINTS} accepted")
    k = (degree + 1) ** 2
    rot_bytes = 3 if version == 2 else 4
    sizes = [9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * (k - 1) * n]
    need = _HEADER.size + sum(sizes)
    if len(raw) < need:
        raise ValueError(f"{source}: truncated SPZ body: {n} splats of SH degree {degree} need {need} bytes, "
                         f"found {len(raw)}")
    blocks, at = [], _HEADER.size
    for size in sizes:
        blocks.append(np.frombuffer(raw, np.uint8, size, at))
        at += size
    pos, alpha, color, scale, rot, rest = blocks
    p = pos.reshape(n, 3, 3).astype(np.int64)
    fixed = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.astype(np.float64) / float(1 << bits)
    half = 0.5 / 255.0
    opacity = np.clip(alpha.astype(np.float64) / 255.0, half, 1.0 - half)
    dc = (color.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / _COLOR_SCALE
    log_scales = scale.reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    if version == 2:
        xyz = rot.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(1)))
        xyzw = np.concatenate([xyz, w[:, None]], axis=1)
    else:
        xyzw = _unpack_v3(np.frombuffer(rot.tobytes(), "<u4"))
    xyzw = xyzw / np.maximum(np.linalg.norm(xyzw, axis=1, keepdims=True), 1e-12)
    sh_rest = (rest.reshape(n, k - 1, 3).astype(np.float64) - 128.0) / 128.0
    sh = np.concatenate([dc[:, None, :], sh_rest], axis=1)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return Gaussians(t(means), t(xyzw[:, [3, 0, 1, 2]]), t(log_scales),
                     t(np.log(opacity / (1.0 - opacity))), t(sh))


def save_spz(gaussians: Gaussians, path: str | os.PathLike, root: str | os.PathLike | None = None,
             version: int = 3) -> Path:
    """Write ``gaussians`` as an SPZ file atomically (``path`` checked against ``root`` when given)."""
    target = safe_output_path(root, str(path), ".spz") if root is not None else Path(path)
    atomic_write_bytes(target, gaussians_to_spz_bytes(gaussians, version=version))
    log.info("wrote %d Gaussians to %s", len(gaussians), target)
    return target


def load_spz(path: str | os.PathLike) -> Gaussians:
    """Read an SPZ file (see :func:`gaussians_from_spz_bytes`)."""
    return gaussians_from_spz_bytes(read_file_bytes(path, "load_spz", "a .spz file"), source=str(path))
