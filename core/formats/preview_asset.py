# SPDX-License-Identifier: Apache-2.0
"""The compact 4D preview asset (``.g4d``) read by the in-node WebGL viewer (web/gen4d_viewer.js).

Public API:
    MAGIC, VERSION, SUFFIX          file signature, format version, file extension
    DEFAULT_MAX_SPLATS              default subsampling cap (200k)
    importance(gaussians) -> [N]    opacity x projected-area score used for subsampling
    select_splats(gaussians, cap)   deterministic indices of the ``cap`` most important splats
    encode_frames(frames, fps, max_splats) -> bytes    per-frame Gaussians -> asset bytes
    encode_scene(scene, max_splats, num_frames, background) -> bytes   a Scene4D baked at its frame times,
                                    starting the viewer at the scene's recorded reference camera
    camera_view(cameras) -> dict    the header's ``view`` entry for a camera (frame 0 of ``cameras``)
    encode_tracks(points, colors, visibility, fps, max_splats) -> bytes   point trajectories
    decode_asset(data) -> PreviewAsset   parse + validate (tests, tools); ValueError if corrupt

File layout (all little-endian)::

    bytes 0..3   magic  b"G4DP"
    bytes 4..7   uint32 header length H (the JSON is space-padded so 8 + H is a multiple of 8)
    bytes 8..    UTF-8 JSON header
    8 + H ..     binary blocks, each starting at a multiple of 8 from the file start

JSON header::

    {"format": "gen4d-preview", "version": 1, "num_frames": T, "num_splats": N, "fps": float,
     "bounds": [[xmin, ymin, zmin], [xmax, ymax, zmax]],
     "layout": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}   offset from file start

    optional: "view": {"viewmat": [16 floats, world-to-camera, row-major], "fovy_deg": float,
              "width": int, "height": int}   the camera the viewer starts at (the scene's recorded
              reference camera); "background": "#rrggbb"   the viewer's initial background colour.
              Readers ignore keys they do not know, so these need no version change.

Blocks (``layout`` names, in this order):

    positions   uint16  [T,N,3]  per-frame centres, ``q = round((p - min) / (max - min) * 65535)``
    color       uint8   [N,4]    DC colour RGB in 0..255 and opacity in 0..255 (canonical)
    scales      float16 [N,3]    activated standard deviations (canonical)
    rotations   int8    [N,4]    unit quaternions wxyz times 127, rounded (canonical)

Design notes:
    Only positions move per frame. Rotations, scales, colours and opacities come from frame 0:
    a deformation field's per-frame rotation/scale changes are ignored by the preview (they are
    small for the pack's motions; the saved scene and PLY sequence keep them). The quantisation
    error of a position is at most ``(max - min) / 131070`` per axis. Subsampling keeps the
    ``max_splats`` splats with the largest ``opacity * mean_scale**2`` (ties by index), in their
    original order, so the same scene always gives the same bytes. 200k splats x 24 frames is
    about 31 MB, which the viewer loads in one fetch.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..engine.gaussians import Gaussians

__all__ = [
    "MAGIC",
    "VERSION",
    "SUFFIX",
    "FORMAT",
    "DEFAULT_MAX_SPLATS",
    "PreviewAsset",
    "importance",
    "select_splats",
    "encode_frames",
    "encode_scene",
    "camera_view",
    "encode_tracks",
    "decode_asset",
]

log = logging.getLogger(__name__)

MAGIC = b"G4DP"
VERSION = 1
SUFFIX = ".g4d"
FORMAT = "gen4d-preview"
DEFAULT_MAX_SPLATS = 200_000
MAX_FRAMES = 10_000
_ALIGN = 8
_BLOCKS = (
    ("positions", "uint16", 3, True),
    ("color", "uint8", 4, False),
    ("scales", "float16", 3, False),
    ("rotations", "int8", 4, False),
)
_DTYPES = {"uint16": np.dtype("<u2"), "uint8": np.dtype("u1"), "float16": np.dtype("<f2"), "int8": np.dtype("i1")}


@dataclass(frozen=True)
class PreviewAsset:
    """A decoded asset (float arrays, dequantised).

    Attributes:
        header: the JSON header.
        positions: ``[T,N,3]`` float32 centres.
        colors: ``[N,3]`` float32 RGB in 0..1.
        opacities: ``[N]`` float32 in 0..1.
        scales: ``[N,3]`` float32 standard deviations.
        rotations: ``[N,4]`` float32 unit quaternions wxyz.
    """

    header: dict
    positions: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_splats(self) -> int:
        return int(self.positions.shape[1])


def importance(gaussians: Gaussians) -> Tensor:
    """``[N]`` subsampling score: opacity times mean scale squared (a projected-area proxy)."""
    with torch.no_grad():
        scale = gaussians.scales.float().mean(dim=-1)
        return (gaussians.opacities.float() * scale * scale).cpu()


def select_splats(gaussians: Gaussians, max_splats: int) -> Tensor:
    """Indices (ascending) of at most ``max_splats`` splats, the most important first-kept.

    Deterministic: a stable sort on the descending score, so ties keep the lower index.

    Raises:
        ValueError: if ``max_splats`` < 1.
    """
    if isinstance(max_splats, bool) or not isinstance(max_splats, int) or max_splats < 1:
        raise ValueError(f"select_splats: max_splats must be an int >= 1, got {max_splats!r}")
    n = len(gaussians)
    if n <= max_splats:
        return torch.arange(n)
    score = importance(gaussians)
    score = torch.nan_to_num(score, nan=0.0, posinf=0.0, neginf=0.0)
    order = torch.argsort(-score, stable=True)[:max_splats]
    return torch.sort(order).values


def _check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"preview asset: fps must be a positive number, got {fps!r}")
    return float(fps)


def _pack(header: dict, blocks: list[tuple[str, np.ndarray]]) -> bytes:
    """Lay out header + aligned blocks; fills ``header['layout']``."""
    layout: list[dict] = []
    # The header length depends on the offsets and the offsets on the header length: iterate
    # until the layout is a fixed point (two or three rounds; digits only ever grow).
    for _ in range(16):
        header["layout"] = layout
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        offset = 8 + len(text) + (-(8 + len(text)) % _ALIGN)
        new_layout = []
        for name, array in blocks:
            new_layout.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                               "offset": offset, "nbytes": int(array.nbytes)})
            offset += int(array.nbytes)
            offset += -offset % _ALIGN
        if new_layout == layout:
            break
        layout = new_layout
    else:
        raise RuntimeError("preview asset: header layout did not converge")
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGN)
    out = bytearray(MAGIC + struct.pack("<I", len(text)) + text)
    for entry, (_, array) in zip(layout, blocks):
        out += b"\0" * (entry["offset"] - len(out))
        out += np.ascontiguousarray(array).tobytes()
    out += b"\0" * (-len(out) % _ALIGN)
    return bytes(out)


def _encode(positions: np.ndarray, rgb: np.ndarray, opacity: np.ndarray, scales: np.ndarray,
            quats: np.ndarray, fps: float, extra: dict | None = None) -> bytes:
    """Quantise float arrays (``[T,N,3]``, ``[N,3]``, ``[N]``, ``[N,3]``, ``[N,4]``) into asset bytes."""
    t, n = positions.shape[:2]
    finite = np.isfinite(positions).all(axis=(0, 2)) if n else np.zeros(0, bool)
    if n and not finite.all():
        log.warning("preview asset: dropping %d splats with non-finite positions", int((~finite).sum()))
        positions, rgb, opacity = positions[:, finite], rgb[finite], opacity[finite]
        scales, quats = scales[finite], quats[finite]
        n = positions.shape[1]
    if n:
        lo = positions.reshape(-1, 3).min(axis=0).astype(np.float64)
        hi = positions.reshape(-1, 3).max(axis=0).astype(np.float64)
    else:
        lo, hi = np.zeros(3), np.ones(3)
    span = np.maximum(hi - lo, 1e-6)
    hi = lo + span
    q = np.rint((positions.astype(np.float64) - lo) / span * 65535.0)
    q_pos = np.clip(q, 0, 65535).astype("<u2")
    color = np.empty((n, 4), np.uint8)
    color[:, :3] = np.clip(np.rint(np.nan_to_num(rgb) * 255.0), 0, 255)
    color[:, 3] = np.clip(np.rint(np.nan_to_num(opacity) * 255.0), 0, 255)
    s = np.clip(np.nan_to_num(scales, nan=1e-4, posinf=1e3, neginf=1e-4), 1e-7, 6e4).astype("<f2")
    quats = np.nan_to_num(quats.astype(np.float64))
    norm = np.linalg.norm(quats, axis=-1, keepdims=True)
    quats = np.where(norm > 1e-12, quats / np.maximum(norm, 1e-12), np.array([1.0, 0, 0, 0]))
    rot = np.clip(np.rint(quats * 127.0), -127, 127).astype("i1")
    header = {"format": FORMAT, "version": VERSION, "num_frames": int(t), "num_splats": int(n),
              "fps": float(fps), "bounds": [lo.tolist(), hi.tolist()], **(extra or {})}
    return _pack(header, [("positions", q_pos), ("color", color), ("scales", s), ("rotations", rot)])


def camera_view(cameras) -> dict:
    """The header's ``view`` entry for the first camera of ``cameras`` (``core.engine.cameras.Cameras``)."""
    vm = cameras.viewmats[0].detach().double().cpu().reshape(-1).tolist()
    return {"viewmat": [float(v) for v in vm], "fovy_deg": float(cameras.fovy_deg[0]),
            "width": int(cameras.width), "height": int(cameras.height)}


def encode_frames(frames: Sequence[Gaussians], fps: float = 24.0,
                  max_splats: int = DEFAULT_MAX_SPLATS, view: dict | None = None,
                  background: str | None = None) -> bytes:
    """Encode per-frame Gaussian sets (same ``N`` in every frame) as asset bytes.

    Args:
        frames: ``T >= 1`` Gaussian sets; frame 0 supplies the canonical attributes.
        fps: playback rate stored in the header.
        max_splats: subsampling cap (see :func:`select_splats`).
        view: optional starting camera (:func:`camera_view`).
        background: optional initial background colour ``#rrggbb``.

    Raises:
        ValueError: for no frames, mismatched splat counts, a bad fps or cap.
    """
    fps = _check_fps(fps)
    if not frames:
        raise ValueError("encode_frames: frames is empty; expected at least one Gaussian set")
    if len(frames) > MAX_FRAMES:
        raise ValueError(f"encode_frames: at most {MAX_FRAMES} frames, got {len(frames)}")
    n = len(frames[0])
    for i, g in enumerate(frames):
        if not isinstance(g, Gaussians):
            raise ValueError(f"encode_frames: frame {i} is a {type(g).__name__}, expected Gaussians")
        if len(g) != n:
            raise ValueError(f"encode_frames: frame {i} has {len(g)} splats, frame 0 has {n}")
    index = select_splats(frames[0], max_splats)
    with torch.no_grad():
        first = frames[0].subset(index.to(frames[0].device))
        positions = np.stack([g.means.detach()[index.to(g.device)].float().cpu().numpy() for g in frames])
        extra = {"source_splats": int(n)}
        if view is not None:
            extra["view"] = view
        if background is not None:
            extra["background"] = str(background)
        return _encode(positions, first.colors.float().cpu().numpy(), first.opacities.float().cpu().numpy(),
                       first.scales.float().cpu().numpy(), first.rotations.float().cpu().numpy(), fps, extra)


def encode_scene(scene, max_splats: int = DEFAULT_MAX_SPLATS, num_frames: int | None = None,
                 background: str | None = None, callback: Callable[[int, int, None], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> bytes:
    """Bake a ``Scene4D`` at ``num_frames`` evenly spaced times (default: its own) and encode it.

    The viewer starts at the scene's recorded reference camera (``Scene4D.reference_cameras``) when it
    has one; ``background`` (``#rrggbb``) sets its initial background colour. Splats are picked on the
    first frame; later frames keep only those splats' positions, so memory grows with the kept splats,
    not the scene. ``callback(step, total, None)`` follows the frames; ``should_stop`` is polled before
    each frame and raises ``InterruptedError`` when it returns True.
    """
    frames = num_frames or scene.num_frames
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"encode_scene: num_frames must be 1..{MAX_FRAMES}, got {frames!r}")
    fps = _check_fps(scene.fps)
    with torch.no_grad():
        times = scene.frame_times(frames).tolist()
        first, index, first_count, positions = None, None, 0, []
        for i, t in enumerate(times):
            if should_stop is not None and should_stop():
                raise InterruptedError(f"encode_scene: stopped after {i} of {frames} frames")
            g = scene.at(float(t))
            if first is None:
                index, first_count = select_splats(g, max_splats), len(g)
                first = g.subset(index.to(g.device))
            elif len(g) != first_count:
                raise ValueError(f"encode_scene: frame {i} has {len(g)} splats, frame 0 has {first_count}")
            positions.append(g.means.detach()[index.to(g.device)].float().cpu().numpy())
            if callback is not None:
                callback(i + 1, frames, None)
    cams = getattr(scene, "reference_cameras", None)
    extra = {"source_splats": int(first_count)}
    if cams is not None:
        extra["view"] = camera_view(cams)
    if background is not None:
        extra["background"] = str(background)
    return _encode(np.stack(positions), first.colors.float().cpu().numpy(), first.opacities.float().cpu().numpy(),
                   first.scales.float().cpu().numpy(), first.rotations.float().cpu().numpy(), fps, extra)


def encode_tracks(points: Tensor, colors: Tensor, visibility: Tensor | None = None, fps: float = 24.0,
                  max_splats: int = DEFAULT_MAX_SPLATS, scale: float | None = None,
                  background: str | None = None) -> bytes:
    """Encode dense point trajectories as isotropic splats.

    Args:
        points: ``[T,H,W,3]`` or ``[T,N,3]`` world positions.
        colors: ``[H,W,3]``/``[N,3]`` (or per frame ``[T,...,3]``; frame 0 is used) RGB in 0..1.
        visibility: optional ``[T,H,W]``/``[T,N]``; points never visible are dropped (per-frame
            visibility is otherwise ignored by the preview).
        fps: playback rate.
        max_splats: subsampling cap (a regular stride, deterministic).
        scale: splat standard deviation; default half the median neighbour spacing at frame 0.
        background: optional initial background colour of the viewer, ``#rrggbb``.

    Raises:
        ValueError: for mismatched shapes.
    """
    fps = _check_fps(fps)
    if not isinstance(points, Tensor) or points.dim() not in (3, 4) or points.shape[-1] != 3:
        raise ValueError(f"encode_tracks: points must be [T,H,W,3] or [T,N,3], got "
                         f"{tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__}")
    t = points.shape[0]
    pts = points.detach().float().cpu().reshape(t, -1, 3)
    n = pts.shape[1]
    col = colors.detach().float().cpu()
    if col.dim() == points.dim():
        col = col[0]
    col = col.reshape(-1, 3)
    if col.shape[0] != n:
        raise ValueError(f"encode_tracks: colors hold {col.shape[0]} points, points hold {n}")
    keep = torch.ones(n, dtype=torch.bool)
    if visibility is not None:
        vis = visibility.detach().cpu().reshape(t, -1)
        if vis.shape[1] != n:
            raise ValueError(f"encode_tracks: visibility holds {vis.shape[1]} points, points hold {n}")
        keep = (vis > 0.5).any(dim=0)
    idx = torch.nonzero(keep).flatten()
    if idx.numel() > max_splats:
        idx = idx[torch.linspace(0, idx.numel() - 1, max_splats).round().long()]
    pts, col = pts[:, idx], col[idx]
    if scale is None:
        if points.dim() == 4 and points.shape[2] > 1:
            grid = points[0].detach().float().cpu()
            step = (grid[:, 1:] - grid[:, :-1]).norm(dim=-1)
            scale = 0.5 * float(step[torch.isfinite(step)].median()) if step.numel() else 0.01
        else:
            extent = float((pts[0].amax(0) - pts[0].amin(0)).norm()) if pts.shape[1] else 1.0
            scale = 0.5 * extent / max(pts.shape[1], 1) ** (1 / 3)
    scale = max(float(scale), 1e-6)
    m = pts.shape[1]
    scales = np.full((m, 3), scale, np.float32)
    quats = np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (m, 1))
    extra = {"source_splats": int(n)}
    if background is not None:
        extra["background"] = str(background)
    return _encode(pts.numpy(), col.clamp(0, 1).numpy(), np.ones(m, np.float32), scales, quats, fps, extra)


def decode_asset(data: bytes | bytearray | memoryview) -> PreviewAsset:
    """Parse and validate asset bytes (the JS viewer does the same checks).

    Raises:
        ValueError: for a bad magic, a truncated file, a bad header or inconsistent blocks.
    """
    data = bytes(data)
    if len(data) < 8:
        raise ValueError(f"preview asset: truncated, {len(data)} bytes is shorter than the 8-byte preamble")
    if data[:4] != MAGIC:
        raise ValueError(f"preview asset: bad magic {data[:4]!r}, expected {MAGIC!r}")
    (head_len,) = struct.unpack("<I", data[4:8])
    if 8 + head_len > len(data):
        raise ValueError(f"preview asset: truncated header ({head_len} bytes announced, {len(data) - 8} present)")
    try:
        header = json.loads(data[8:8 + head_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"preview asset: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"preview asset: header format is not {FORMAT!r}")
    if header.get("version") != VERSION:
        raise ValueError(f"preview asset: unsupported version {header.get('version')!r}, expected {VERSION}")
    try:
        t, n = int(header["num_frames"]), int(header["num_splats"])
        layout = {b["name"]: b for b in header["layout"]}
        bounds = np.asarray(header["bounds"], np.float64).reshape(2, 3)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"preview asset: header is missing or has bad fields ({exc})") from exc
    if t < 1 or n < 0:
        raise ValueError(f"preview asset: bad counts num_frames={t}, num_splats={n}")
    arrays = {}
    for name, dtype, width, per_frame in _BLOCKS:
        if name not in layout:
            raise ValueError(f"preview asset: block {name!r} missing from layout")
        block = layout[name]
        shape = [t, n, width] if per_frame else [n, width]
        dt = _DTYPES[dtype]
        nbytes = int(np.prod(shape)) * dt.itemsize
        offset = block.get("offset")
        if block.get("dtype") != dtype or list(block.get("shape", [])) != shape or block.get("nbytes") != nbytes:
            raise ValueError(f"preview asset: block {name!r} is {block.get('dtype')} {block.get('shape')}, "
                             f"expected {dtype} {shape}")
        if not isinstance(offset, int) or offset < 8 + head_len or offset % dt.itemsize:
            raise ValueError(f"preview asset: block {name!r} has a bad offset {offset!r}")
        if offset + nbytes > len(data):
            raise ValueError(f"preview asset: truncated, block {name!r} needs bytes up to {offset + nbytes}, "
                             f"file has {len(data)}")
        arrays[name] = np.frombuffer(data, dt, count=int(np.prod(shape)), offset=offset).reshape(shape)
    lo, hi = bounds
    positions = (arrays["positions"].astype(np.float64) / 65535.0 * (hi - lo) + lo).astype(np.float32)
    color = arrays["color"].astype(np.float32) / 255.0
    rot = arrays["rotations"].astype(np.float32) / 127.0
    rot /= np.maximum(np.linalg.norm(rot, axis=-1, keepdims=True), 1e-12)
    return PreviewAsset(header=header, positions=positions, colors=color[:, :3], opacities=color[:, 3],
                        scales=arrays["scales"].astype(np.float32), rotations=rot)
