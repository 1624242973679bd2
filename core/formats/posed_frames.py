# SPDX-License-Identifier: Apache-2.0
"""Posed-frame datasets in the ``transforms*.json`` family: D-NeRF, nerfstudio and instant-ngp layouts.

Public API:
    SPLITS                                   the split selector's choices: train, val, test, all
    PosedFrames                              images [N,H,W,3], masks [N,H,W], Cameras, files, layout, ignore
    find_datasets(root)                      sub-folders of ``root`` holding a transforms file
    dataset_folder(root, name, who)          a user-given relative folder resolved strictly inside ``root``
    available_splits(folder)                 the splits a dataset folder offers
    read_posed_frames(folder, split, ...)    one split (or all) as composited images, alpha masks, cameras
    opengl_to_opencv(c2w)                    file camera-to-world (OpenGL axes) -> OpenCV world-to-camera
    opencv_to_opengl(viewmats)               the inverse
    write_dnerf_split(folder, split, ...)    RGBA PNG frames + ``transforms_<split>.json`` in D-NeRF layout

Design notes:
    The three layouts share one scheme: a JSON object whose ``frames`` list holds, per image, a
    ``file_path`` (relative to the JSON's folder; D-NeRF / Blender names carry no extension and
    mean ``.png``) and a 4x4 ``transform_matrix``, the camera-to-world pose in the OpenGL / Blender
    camera convention (x right, y up, z pointing back, away from the view direction).

    - D-NeRF (and the static Blender set): ``transforms_{train,val,test}.json`` with
      ``camera_angle_x`` (horizontal field of view, radians) and a per-frame ``time`` in [0, 1].
    - nerfstudio: one ``transforms.json`` with ``camera_model``, ``fl_x``, ``fl_y``, ``cx``, ``cy``,
      ``w``, ``h`` at the top and/or per frame (per-frame values win, as instant-ngp reads them;
      nerfstudio's own reader would keep a top-level value, but its tools write one level or the
      other, never both), optional ``*_filenames`` split lists (each must name frames; without
      ``train_filenames`` the train split is the frames the other lists leave out; without any
      list, nerfstudio's default split: of the frames sorted by ``file_path``, ``ceil(0.9 N)``
      evenly spaced ones from the first to the last train, the rest are ``val`` and ``test``; fewer
      than 10 frames leave none to hold out); ``ply_file_path`` names the capture's
      structure-from-motion points (in the poses' world frame), read as ``points`` /
      ``point_colors`` to start a fit from; a frame's ``mask_path`` names a one-channel image of its
      own size whose 0 marks pixels to leave out of training (passers-by, the capture rig) and whose
      other values keep them (0/255 and 0/1 images alike, as nerfstudio reads them), read as ``ignore``.
    - instant-ngp: one ``transforms.json`` with ``camera_angle_x`` / ``camera_angle_y`` and/or
      ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``; ``aabb_scale``, ``scale``, ``offset`` and
      ``sharpness`` describe its own scene box and are ignored. A ``dynamic_mask_<image name>.png``
      beside an image (colmap2nerf's ``--mask_categories``) marks with any nonzero colour the pixels
      to leave out, read as ``ignore``.

    Intrinsics per frame: focal lengths from ``fl_x`` / ``fl_y`` (pixels) or from the angles
    (``f = size / (2 tan(angle / 2))``: ``camera_angle_x`` / ``_y`` in radians, else instant-ngp's
    ``x_fov`` / ``y_fov`` in degrees); a missing one copies the other (square pixels); the
    principal point defaults to the image centre. Pixel coordinates follow the pack's convention
    (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, centre at ``+0.5``), which is the one these
    files' ``cx = w / 2`` means. Camera models: the perspective ones (PINHOLE, SIMPLE_PINHOLE,
    SIMPLE_RADIAL, RADIAL, OPENCV; and distortion given without a model, as instant-ngp writes it)
    take radial-tangential coefficients ``k1..k4``, ``p1``, ``p2`` where given (by name or as
    nerfstudio's ``distortion_params`` list), OPENCV_FISHEYE ``k1..k4``, with nerfstudio's meaning
    of the coefficients (:mod:`core.formats.lens`). Distorted images are resampled to the pinhole
    of their own K (``undistort``, on by default); pixels the capture does not cover come out
    transparent. With ``undistort`` off, the radial-tangential coefficients are ignored with a
    logged warning and a fisheye is refused. instant-ngp's ``is_fisheye`` and other models are refused.

    Conversion: the OpenCV camera-to-world is the file's with the camera y and z axes negated,
    ``c2w_cv = c2w_gl diag(1, -1, -1, 1)``, and the pack's viewmat is its inverse. The world
    frame is kept as the file gives it (Blender scenes are z-up; the pack's own worlds are -y up).

    Order and time: a single ``transforms.json``'s frames come sorted by ``file_path`` in natural
    order (``frame_2`` before ``frame_10``), as nerfstudio and instant-ngp order them; a split file's
    keep their listing order. Per-frame ``time`` where every selected frame has one (values in
    [0, 1]), else even spacing ``i / (N - 1)`` by the frame's place ``i`` in that order among the
    ``N`` frames its file lists, so a split's frames keep the times they have in the whole capture.
    Alpha: an image with an alpha channel gives it as the mask and is composited on the background
    colour; an opaque image gives a mask of ones.

    Ignore: 1 where a frame's mask leaves the pixel out (above), and 1 where an undistorted frame's
    pinhole sees past the capture's edge (those pixels are also transparent); None when no frame
    has either, so datasets without them cost no memory.

    Safety: the dataset folder and every image must resolve (symlinks followed) inside ``root``
    (ComfyUI's input folder for the node); absolute paths are refused. Sizes are checked before
    anything large is allocated: the JSON file's byte size, each image's header dimensions, and
    the total bytes of the result. Every problem is a ``ValueError`` naming the file and the
    field. Reading never writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..engine.cameras import Cameras
from . import lens as lenses
from .paths import atomic_writer

__all__ = [
    "SPLITS",
    "PosedFrames",
    "find_datasets",
    "dataset_folder",
    "available_splits",
    "read_posed_frames",
    "opengl_to_opencv",
    "opencv_to_opengl",
    "write_dnerf_split",
    "MAX_JSON_BYTES",
    "MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_BYTES",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")
SPLIT_FILES = {"train": "transforms_train.json", "val": "transforms_val.json", "test": "transforms_test.json"}
SINGLE_FILE = "transforms.json"
MAX_JSON_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 2**27  # 134 M pixels: a 16k x 8k panorama still loads, a lying header does not
DEFAULT_MAX_BYTES = 16 * 2**30
MAX_POINT_CLOUD_BYTES = 2**31  # 2 GiB: some 70 M coloured points

_DRIVE = re.compile(r"^[A-Za-z]:")
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
# COLMAP's perspective models as nerfstudio reads them: radial-tangential with the coefficients given (none: pinhole)
_PERSPECTIVE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
_CAMERA_MODELS = (*_PERSPECTIVE_MODELS, "OPENCV_FISHEYE")
_DISTORTION = lenses.LENS_COEFFICIENTS["OPENCV"]
# nerfstudio's distortion_params list: the coefficients in this order
_DISTORTION_LIST = ("k1", "k2", "k3", "k4", "p1", "p2")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "x_fov", "y_fov",
                   "camera_model", "is_fisheye", "distortion_params", *_DISTORTION)
_DYNAMIC_MASK = "dynamic_mask_{}.png"  # instant-ngp: beside the image, nonzero marks pixels to leave out


@dataclass(frozen=True)
class PosedFrames:
    """A loaded split of a posed-frame dataset.

    Args:
        images: ``[N,H,W,3]`` float32 in 0..1, composited on the background colour.
        masks: ``[N,H,W]`` float32 in 0..1, the images' alpha (ones for opaque images).
        cameras: ``N`` cameras (OpenCV world-to-camera viewmats, pixel Ks, times).
        files: the image files, relative to the dataset folder (posix).
        layout: ``"dnerf"``, ``"blender"``, ``"nerfstudio"`` or ``"instant-ngp"`` (of the first file).
        has_alpha: whether any image had an alpha channel.
        undistorted: how many images were resampled from a distorted lens to their pinhole.
        points: ``[P,3]`` float32 point cloud the dataset names (nerfstudio's ``ply_file_path``), or None.
        point_colors: ``[P,3]`` its colours in 0..1, or None.
        ignore: ``[N,H,W]`` float32 in 0..1, pixels to leave out of training (nerfstudio's
            ``mask_path`` inverted; the parts of an undistorted frame the capture does not cover), or
            None when no frame has such pixels.
    """

    images: Tensor
    masks: Tensor
    cameras: Cameras
    files: tuple[str, ...]
    layout: str
    has_alpha: bool
    undistorted: int = 0
    points: Tensor | None = None
    point_colors: Tensor | None = None
    ignore: Tensor | None = None


# -- conventions ---------------------------------------------------------------------------------


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """World-to-camera viewmats ``[...,4,4]`` (OpenCV axes) from camera-to-world ``[...,4,4]`` (OpenGL axes).

    The camera's y and z axes flip (``c2w diag(1,-1,-1,1)``), then the rigid transform is inverted.
    Computed in float64; returns float32.
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    return torch.linalg.inv(c2w @ _GL_TO_CV.to(c2w.device)).float()


def opencv_to_opengl(viewmats: Tensor) -> Tensor:
    """Camera-to-world ``[...,4,4]`` in OpenGL axes (float64) from OpenCV world-to-camera viewmats."""
    vm = torch.as_tensor(viewmats, dtype=torch.float64)
    return torch.linalg.inv(vm) @ _GL_TO_CV.to(vm.device)


# -- folders -------------------------------------------------------------------------------------


def _is_transforms_name(name: str) -> bool:
    return name == SINGLE_FILE or name in SPLIT_FILES.values()


def find_datasets(root: str | os.PathLike, max_depth: int = 4, max_folders: int = 20000) -> list[str]:
    """Sub-folders of ``root`` (relative, posix) that hold ``transforms.json`` or ``transforms_<split>.json``.

    Hidden folders are skipped, symlinked folders are not entered, the walk stops ``max_depth``
    levels down or after ``max_folders`` folders, so a large input folder lists quickly. ``root``
    itself is not listed. A missing ``root`` gives an empty list.
    """
    base = Path(root)
    if not base.is_dir():
        return []
    found, seen = [], 0
    for current, dirs, files in os.walk(base, followlinks=False):
        rel = Path(current).relative_to(base)
        depth = len(rel.parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
        seen += 1
        if depth and any(_is_transforms_name(f) for f in files):
            found.append(rel.as_posix())
        if seen >= max_folders:
            log.warning("find_datasets: stopped after %d folders under %s", seen, base)
            break
    return sorted(found)


def _relative_parts(name: str, who: str, what: str) -> list[str]:
    """Components of a user-given relative path, or ValueError for absolute / drive / NUL names."""
    if not isinstance(name, str):
        raise ValueError(f"{who}: {what}: must be a string, got {type(name).__name__}")
    if "\x00" in name:
        raise ValueError(f"{who}: {what}: must not contain NUL bytes, got {name!r}")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or _DRIVE.match(name):
        raise ValueError(f"{who}: {what}: must be relative to the input folder; absolute path {name!r} refused")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if any(_DRIVE.match(p) for p in parts):
        raise ValueError(f"{who}: {what}: must not contain a drive letter, got {name!r}")
    return parts


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def dataset_folder(root: str | os.PathLike, name: str, who: str = "dataset_folder") -> Path:
    """Resolve a dataset folder ``name`` (relative, ``/`` or ``\\`` separated) strictly inside ``root``.

    Raises:
        ValueError: naming ``who``, for empty or absolute names, ``..`` components, a folder that
            resolves outside ``root`` (symlinks followed), a missing folder, or one without a
            transforms file.
    """
    parts = _relative_parts(name, who, "dataset folder")
    if not parts:
        raise ValueError(f"{who}: dataset folder must name a sub-folder of the input folder, got {name!r}")
    if ".." in parts:
        raise ValueError(f"{who}: dataset folder must not contain '..' components, got {name!r}")
    base = Path(root).resolve()
    folder = base.joinpath(*parts).resolve()
    if folder == base or not _inside(folder, base):
        raise ValueError(f"{who}: dataset folder {name!r} resolves to {str(folder)!r}, outside the input folder "
                         f"{str(base)!r} (symlinks are followed)")
    if not folder.is_dir():
        raise ValueError(f"{who}: dataset folder {name!r} does not exist under the input folder {str(base)!r}")
    if not available_splits(folder):
        raise ValueError(f"{who}: dataset folder {name!r} holds no {SINGLE_FILE} or "
                         f"{'/'.join(SPLIT_FILES.values())}")
    return folder


def _split_files(folder: Path) -> dict[str, Path]:
    return {s: folder / f for s, f in SPLIT_FILES.items() if (folder / f).is_file()}


def available_splits(folder: str | os.PathLike) -> list[str]:
    """The splits ``folder`` offers: those with a ``transforms_<split>.json``; with only a
    ``transforms.json``, ``train`` and the splits its ``<split>_filenames`` lists name, or without any
    list nerfstudio's default split (``val`` and ``test`` where it holds frames out), and ``all``.
    Empty when there is no transforms file."""
    folder = Path(folder)
    files = _split_files(folder)
    if files:
        return [s for s in SPLITS if s in files] + ["all"]
    single = folder / SINGLE_FILE
    if not single.is_file():
        return []
    splits = ["train"]
    try:
        if single.stat().st_size <= MAX_JSON_BYTES:
            data = json.loads(single.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                if any(f"{s}_filenames" in data for s in SPLIT_FILES):
                    splits += [s for s in ("val", "test") if isinstance(data.get(f"{s}_filenames"), list)]
                elif isinstance(data.get("frames"), list) and _default_split(data["frames"])[1]:
                    splits += ["val", "test"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass  # reported with file and field when the split is read
    return splits + ["all"]


# -- parsing -------------------------------------------------------------------------------------


@dataclass
class _Frame:
    source: Path  # the JSON file
    shown: str  # the JSON file as shown in messages
    index: int  # position in its file's frames list
    file_path: str
    c2w: Tensor  # [4,4] float64, OpenGL axes
    fields: dict  # intrinsic fields: top level overridden by the frame's own
    own_keys: frozenset  # the intrinsic fields the frame itself sets
    time: float | None
    image: Path | None = None
    width: int = 0
    height: int = 0
    has_alpha: bool = False
    lens: tuple[str, tuple[tuple[str, float], ...]] | None = None  # (model, nonzero coefficients) of a distorted lens
    mask_name: str | None = None  # nerfstudio's mask_path as written
    mask_keeps: bool = True  # a mask's nonzero pixels are kept (nerfstudio) or left out (instant-ngp's dynamic mask)
    listed: int = 1  # how many frames its file lists
    order: int = 0  # its place in time: by file name in a single transforms.json, else its place in its file
    layout: str = "blender"
    names_depth: bool = False  # nerfstudio's depth_file_path, which the fits do not use
    mask: Path | None = None


class _Reader:
    def __init__(self, who: str, root: Path, folder: Path):
        self.who, self.root, self.folder = who, root, folder

    def shown(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def fail(self, shown: str, field: str, problem: str) -> ValueError:
        return ValueError(f"{self.who}: {shown}: {field}: {problem}")

    def number(self, value, shown: str, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(shown, field, f"must be a finite number, got {value!r}")
        return float(value)

    def load_json(self, path: Path) -> tuple[dict, list]:
        shown = self.shown(path)
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise self.fail(shown, "(file)", f"is {size} bytes; transforms files over {MAX_JSON_BYTES} bytes are "
                                             "refused")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.fail(shown, "(file)", f"is not valid UTF-8 JSON ({exc})") from None
        if not isinstance(data, dict):
            raise self.fail(shown, "(top level)", f"must be a JSON object, got {type(data).__name__}")
        frames = data.get("frames")
        if frames is None:
            raise self.fail(shown, "frames", "missing; expected a list of frames with file_path and "
                                             "transform_matrix")
        if not isinstance(frames, list) or not frames:
            raise self.fail(shown, "frames", f"must be a non-empty list, got {_brief(frames)}")
        return data, frames

    def matrix(self, value, shown: str, field: str) -> Tensor:
        if value is None:
            raise self.fail(shown, field, "missing; expected a 4x4 camera-to-world matrix")
        rows = value if isinstance(value, list) else None
        if rows is None or len(rows) not in (3, 4) or not all(isinstance(r, list) and len(r) == 4 for r in rows):
            raise self.fail(shown, field, f"must be a 4x4 (or 3x4) list of numbers, got {_brief(value)}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for r in rows for v in r):
            raise self.fail(shown, field, "must hold only numbers")
        m = torch.tensor(rows, dtype=torch.float64)
        if not torch.isfinite(m).all():
            raise self.fail(shown, field, "holds non-finite values (NaN or infinity)")
        if m.shape[0] == 3:
            m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
        if (m[3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().max() > 1e-6:
            raise self.fail(shown, field, f"last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        r = m[:3, :3]
        err = (r.T @ r - torch.eye(3, dtype=torch.float64)).abs().max().item()
        if err > 1e-2 or torch.linalg.det(r).item() <= 0:
            raise self.fail(shown, field, f"rotation part is not a rotation (|R^T R - I| = {err:.3g}, det "
                                          f"{torch.linalg.det(r).item():.3g}); expected a rigid camera-to-world pose")
        return m

    def parse_file(self, path: Path, keep: set[str] | None) -> tuple[list[_Frame], str, object]:
        """Frames of one transforms file (only those whose normalised file_path is in ``keep``), its layout
        and the point cloud it names (``ply_file_path``, unchecked; None when absent)."""
        shown = self.shown(path)
        data, frames = self.load_json(path)
        top = {k: data[k] for k in _INTRINSIC_KEYS if k in data}
        layout = _layout(data, frames)
        order = _name_order(frames) if path.name == SINGLE_FILE else {}
        out = []
        for i, frame in enumerate(frames):
            where = f"frames[{i}]"
            if not isinstance(frame, dict):
                raise self.fail(shown, where, f"must be an object, got {_brief(frame)}")
            file_path = frame.get("file_path")
            if not isinstance(file_path, str) or not file_path.strip():
                raise self.fail(shown, f"{where}.file_path", f"missing or empty, got {_brief(file_path)}")
            if keep is not None and _norm(file_path) not in keep:
                continue
            c2w = self.matrix(frame.get("transform_matrix"), shown, f"{where}.transform_matrix")
            time = None
            if "time" in frame:
                time = self.number(frame["time"], shown, f"{where}.time")
                if not 0.0 <= time <= 1.0:
                    raise self.fail(shown, f"{where}.time", f"must lie in [0, 1], got {time}")
            mask_name = frame.get("mask_path")
            if mask_name is not None and (not isinstance(mask_name, str) or not mask_name.strip()):
                raise self.fail(shown, f"{where}.mask_path", f"must name an image file, got {_brief(mask_name)}")
            own = frozenset(k for k in _INTRINSIC_KEYS if k in frame)
            out.append(_Frame(path, shown, i, file_path, c2w, {**top, **{k: frame[k] for k in own}}, own, time,
                              mask_name=mask_name, listed=len(frames), names_depth="depth_file_path" in frame,
                              order=order.get(i, i), layout=layout))
        if keep is not None and not out:
            raise self.fail(shown, "frames", "none of the frames is listed in the selected split's *_filenames")
        out.sort(key=lambda f: f.order)
        return out, layout, data.get("ply_file_path")

    def confined(self, path: Path, shown: str, field: str, name: str) -> Path:
        """``path`` resolved (symlinks followed), refused when it leaves the input folder."""
        resolved = path.resolve()
        if not _inside(resolved, self.root):
            raise self.fail(shown, field, f"{name!r} resolves to {str(resolved)!r}, outside the input folder "
                                          f"{str(self.root)!r} (symlinks are followed)")
        return resolved

    def point_cloud(self, path: Path, name) -> tuple[Tensor, Tensor] | None:
        """The points and colours of the PLY named ``name`` by the transforms file ``path``, or None."""
        from .ply import load_points_ply

        if name is None:
            return None
        shown = self.shown(path)
        parts = _relative_parts(name, f"{self.who}: {shown}", "ply_file_path")
        resolved = self.confined(path.parent.joinpath(*parts), shown, "ply_file_path", name)
        if not resolved.is_file():
            raise self.fail(shown, "ply_file_path", f"point cloud not found ({self.shown(resolved)})")
        if resolved.stat().st_size > MAX_POINT_CLOUD_BYTES:
            limit = MAX_POINT_CLOUD_BYTES >> 20
            raise self.fail(shown, "ply_file_path", f"{self.shown(resolved)} is over {limit} MiB; thin the point "
                                                    "cloud first")
        try:
            points, colors = load_points_ply(resolved)
        except (OSError, ValueError) as exc:
            raise self.fail(shown, "ply_file_path", f"{self.shown(resolved)} is not a readable point cloud "
                                                    f"({exc})") from None
        points, colors = torch.from_numpy(points).float(), torch.from_numpy(colors).float()
        if len(points) == 0 or not torch.isfinite(points).all():
            raise self.fail(shown, "ply_file_path", f"{self.shown(resolved)} holds no points or non-finite ones")
        return points, colors.clamp(0.0, 1.0)

    def image_path(self, frame: _Frame) -> Path:
        field = f"frames[{frame.index}].file_path"
        parts = _relative_parts(frame.file_path, f"{self.who}: {frame.shown}", field)
        if not parts:
            raise self.fail(frame.shown, field, f"must name an image file, got {frame.file_path!r}")
        raw = frame.source.parent.joinpath(*parts)
        tried = []
        for candidate in (raw, raw.with_name(raw.name + ".png")):
            resolved = self.confined(candidate, frame.shown, field, frame.file_path)
            if resolved.is_file():
                return resolved
            tried.append(self.shown(candidate))
        raise self.fail(frame.shown, field, f"image not found (tried {', '.join(tried)})")

    def mask_path(self, frame: _Frame) -> Path | None:
        """The frame's mask file, checked to be a readable image of the frame's size: nerfstudio's ``mask_path``,
        or in an instant-ngp dataset the ``dynamic_mask_<image name>.png`` beside the image when there is one."""
        if frame.mask_name is None:
            if frame.layout != "instant-ngp" or frame.image is None:
                return None
            field = f"frames[{frame.index}].file_path (its {_DYNAMIC_MASK.format('<name>')})"
            candidate = frame.image.with_name(_DYNAMIC_MASK.format(frame.image.stem))
            if not candidate.is_file():
                return None
            resolved = self.confined(candidate, frame.shown, field, candidate.name)
            frame.mask_keeps = False
        else:
            field = f"frames[{frame.index}].mask_path"
            parts = _relative_parts(frame.mask_name, f"{self.who}: {frame.shown}", field)
            resolved = self.confined(frame.source.parent.joinpath(*parts), frame.shown, field, frame.mask_name)
            if not resolved.is_file():
                raise self.fail(frame.shown, field, f"mask not found ({self.shown(resolved)})")
        width, height, _ = self.opened(resolved, frame.shown, field)
        if (width, height) != (frame.width, frame.height):
            raise self.fail(frame.shown, field, f"{self.shown(resolved)} is {width}x{height} but its image "
                                                f"{self.shown(frame.image)} is {frame.width}x{frame.height}")
        return resolved

    def opened(self, path: Path, shown: str, field: str) -> tuple[int, int, bool]:
        """An image file's width, height and whether it has alpha, from its header (pixels not decoded)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller checks the size
                with Image.open(path) as im:
                    return int(im.size[0]), int(im.size[1]), _has_alpha(im)
        except Image.DecompressionBombError as exc:
            raise self.fail(shown, field, f"{self.shown(path)} claims too many pixels ({exc})") from None
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise self.fail(shown, field, f"{self.shown(path)} is not a readable image ({exc})") from None

    def header(self, frame: _Frame) -> None:
        """Image size and alpha from the file header, without decoding the pixels."""
        field = f"frames[{frame.index}].file_path"
        frame.width, frame.height, frame.has_alpha = self.opened(frame.image, frame.shown, field)
        if frame.width * frame.height > MAX_IMAGE_PIXELS or min(frame.width, frame.height) < 1:
            raise self.fail(frame.shown, field, f"{self.shown(frame.image)} claims {frame.width}x{frame.height} "
                                                f"pixels; images over {MAX_IMAGE_PIXELS} pixels are refused")

    def intrinsics(self, frame: _Frame, warned: set[str], undistorting: bool) -> tuple[float, float, float, float]:
        """The frame's ``fx, fy, cx, cy``; sets ``frame.lens`` where its lens distorts and ``undistorting``."""
        shown, f, w, h = frame.shown, frame.fields, frame.width, frame.height
        where = f"frames[{frame.index}]"

        def field_name(key: str) -> str:
            return f"{where}.{key}" if key in frame.own_keys else key

        model = f.get("camera_model")
        if model is not None and model not in _CAMERA_MODELS:
            raise self.fail(shown, field_name("camera_model"), f"camera model {model!r} is not supported; expected one "
                                                               f"of {_CAMERA_MODELS}")
        if f.get("is_fisheye"):
            raise self.fail(shown, field_name("is_fisheye"), "instant-ngp's fisheye cameras are not supported; "
                                                             "expected a pinhole or OPENCV camera (undistort the "
                                                             "images first, or describe the lens as nerfstudio's "
                                                             "OPENCV_FISHEYE)")
        for key, size in (("w", w), ("h", h)):
            if key in f:
                declared = self.number(f[key], shown, field_name(key))
                if declared != size:
                    raise self.fail(shown, field_name(key), f"says {declared:g} but the image "
                                                            f"{self.shown(frame.image)} is {w}x{h}; sizes are "
                                                            "inconsistent")
        distortion = {}
        if "distortion_params" in f:  # nerfstudio's list form; a coefficient also given by name wins
            listed = f["distortion_params"]
            if not isinstance(listed, list) or len(listed) > len(_DISTORTION_LIST):
                raise self.fail(shown, field_name("distortion_params"), f"must be a list of at most "
                                                                        f"{len(_DISTORTION_LIST)} numbers "
                                                                        f"({', '.join(_DISTORTION_LIST)}), got "
                                                                        f"{_brief(listed)}")
            distortion = {k: self.number(v, shown, f"{field_name('distortion_params')}[{j}]")
                          for j, (k, v) in enumerate(zip(_DISTORTION_LIST, listed))}
        distortion.update({k: self.number(f[k], shown, field_name(k)) for k in _DISTORTION if k in f})
        distortion = {k: v for k, v in distortion.items() if v != 0.0}
        # instant-ngp gives OpenCV's coefficients without a model; COLMAP's perspective models distort as OPENCV
        lens_model = "OPENCV" if model is None or model in _PERSPECTIVE_MODELS else model
        if distortion or lens_model == "OPENCV_FISHEYE":  # a fisheye distorts with every coefficient zero too
            extra = sorted(set(distortion) - set(lenses.LENS_COEFFICIENTS[lens_model]))
            if extra:
                raise self.fail(shown, field_name(extra[0]), f"{lens_model} has no coefficient {extra[0]} (it takes "
                                                             f"{', '.join(lenses.LENS_COEFFICIENTS[lens_model])})")
            if undistorting:
                frame.lens = (lens_model, tuple(sorted(distortion.items())))
            elif lens_model == "OPENCV_FISHEYE":
                raise self.fail(shown, field_name("camera_model"), "a fisheye image cannot be used as a pinhole one; "
                                                                   "turn undistort on")
            elif shown not in warned:
                warned.add(shown)
                log.warning("%s: %s: distortion %s ignored (undistort is off); the images are used as if "
                            "undistorted", self.who, shown, distortion)

        def focal(fl_key: str, angle_key: str, degrees_key: str, size: int) -> float | None:
            if fl_key in f:
                value = self.number(f[fl_key], shown, field_name(fl_key))
                if value <= 0:
                    raise self.fail(shown, field_name(fl_key), f"focal length must be positive, got {value}")
                return value
            for key, unit, half_turn in ((angle_key, "radians", math.pi), (degrees_key, "degrees", 180.0)):
                if key in f:
                    angle = self.number(f[key], shown, field_name(key))
                    if not 0.0 < angle < half_turn:
                        raise self.fail(shown, field_name(key), f"field of view must lie in (0, {half_turn:g}) "
                                                                f"{unit}, got {angle}")
                    return 0.5 * size / math.tan(0.5 * angle * math.pi / half_turn)
            return None

        fx, fy = focal("fl_x", "camera_angle_x", "x_fov", w), focal("fl_y", "camera_angle_y", "y_fov", h)
        if fx is None and fy is None:
            raise self.fail(shown, f"{where}: fl_x / camera_angle_x", "missing; the frame and the file top level give "
                                                                      "no focal length (fl_x, fl_y, camera_angle_x, "
                                                                      "camera_angle_y, x_fov or y_fov)")
        fx = fy if fx is None else fx
        fy = fx if fy is None else fy
        cx = self.number(f["cx"], shown, field_name("cx")) if "cx" in f else w / 2.0
        cy = self.number(f["cy"], shown, field_name("cy")) if "cy" in f else h / 2.0
        return fx, fy, cx, cy


def _natural_key(name: str) -> list:
    """``name`` split into text and numbers, so that ``frame_2`` sorts before ``frame_10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def _name_order(frames: list) -> dict[int, int]:
    """Each frame's place (by its index in ``frames``) when the frames are sorted by ``file_path`` in natural
    order, as nerfstudio and instant-ngp order a ``transforms.json``'s frames (capture apps do not always list
    them in time order); entries without a usable ``file_path`` are left to the parser to report."""
    named = [(i, _norm(f["file_path"])) for i, f in enumerate(frames)
             if isinstance(f, dict) and isinstance(f.get("file_path"), str) and f["file_path"].strip()]
    ranked = sorted(named, key=lambda item: (_natural_key(item[1]), item[0]))
    return {i: place for place, (i, _) in enumerate(ranked)}


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _norm(file_path: str) -> str:
    return posixpath.normpath(file_path.replace("\\", "/"))


def _layout(data: dict, frames: list) -> str:
    first = frames[0] if isinstance(frames[0], dict) else {}
    if "time" in first:
        return "dnerf"
    if "camera_model" in data or "camera_model" in first:
        return "nerfstudio"
    if "aabb_scale" in data or "fl_x" in data or "camera_angle_y" in data:
        return "instant-ngp"
    return "blender"


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info


def _selected_files(folder: Path, split: str, reader: _Reader) -> list[tuple[Path, set[str] | None]]:
    """(file, kept file paths or None for all) for the split."""
    files = _split_files(folder)
    offered = available_splits(folder)
    if split not in offered:
        raise ValueError(f"{reader.who}: split {split!r} is not available in {reader.shown(folder) or folder.name!r}; "
                         f"it offers {offered}")
    if files:
        if split == "all":
            return [(files[s], None) for s in SPLIT_FILES if s in files]
        return [(files[split], None)]
    single = folder / SINGLE_FILE
    if split == "all":
        return [(single, None)]
    data, frames = reader.load_json(single)
    lists = {s: data[f"{s}_filenames"] for s in SPLIT_FILES if f"{s}_filenames" in data}
    if not lists:
        train, held_out = _default_split(frames)
        return [(single, set(train if split == "train" else held_out))]
    shown = reader.shown(single)
    present = {_norm(f["file_path"]) for f in frames
               if isinstance(f, dict) and isinstance(f.get("file_path"), str) and f["file_path"].strip()}
    listed: dict[str, set[str]] = {}
    for name, names in lists.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise reader.fail(shown, f"{name}_filenames", f"must be a list of file paths, got {_brief(names)}")
        listed[name] = {_norm(n) for n in names}
        unknown = sorted(listed[name] - present)
        if unknown:
            raise reader.fail(shown, f"{name}_filenames", f"names {len(unknown)} file(s) no frame has, e.g. "
                                                          f"{unknown[:3]}; the lists must name frames' file_path")
    if split in listed:
        return [(single, listed[split])]
    # only "train" gets here without its list: the frames no other list holds out, so none leaks into training
    held_out = set().union(*listed.values())
    rest = present - held_out
    if not rest:
        raise reader.fail(shown, "train_filenames", f"missing, and the other lists ({', '.join(sorted(listed))}) "
                                                    "hold every frame: nothing is left to train on")
    log.info("%s: %s has no train_filenames: training on the %d frames its %s lists leave out", reader.who, shown,
             len(rest), "/".join(f"{n}_filenames" for n in sorted(listed)))
    return [(single, rest)]


def _default_split(frames: list) -> tuple[list[str], list[str]]:
    """nerfstudio's split of a file without split lists (its ``fraction`` mode, 0.9): the normalised file
    paths of the train frames and of the held-out ones. Frames are ordered by ``file_path`` first, as
    nerfstudio orders them; entries without a usable ``file_path`` are left to the parser to report."""
    names = sorted({_norm(f["file_path"]) for f in frames
                    if isinstance(f, dict) and isinstance(f.get("file_path"), str) and f["file_path"].strip()})
    n = len(names)
    count = math.ceil(n * 0.9)
    step = (n - 1) / (count - 1) if count > 1 else 0.0
    picked = {int(i * step) for i in range(count - 1)} | ({n - 1} if n else set())  # numpy.linspace, as ints
    return [m for i, m in enumerate(names) if i in picked], [m for i, m in enumerate(names) if i not in picked]


def read_posed_frames(
    folder: str | os.PathLike,
    split: str = "train",
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    downscale: int = 1,
    root: str | os.PathLike | None = None,
    who: str = "read_posed_frames",
    max_bytes: int = DEFAULT_MAX_BYTES,
    callback: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    undistort: bool = True,
) -> PosedFrames:
    """Read one split of a posed-frame dataset.

    Args:
        folder: the dataset folder (holding ``transforms.json`` or ``transforms_<split>.json``).
        split: one of :data:`SPLITS`; ``all`` joins train, val and test in that order.
        background: rgb in 0..1 behind transparent pixels.
        downscale: integer factor; images are area-averaged to ``(W // f, H // f)`` and the
            intrinsics scaled to match.
        root: the folder no path may leave (ComfyUI's input folder); defaults to ``folder``.
        who: the caller named in errors (e.g. the node id).
        max_bytes: refuse a result (images + masks, float32) larger than this.
        callback: ``callback(done, total)`` after each decoded image, in frame order; an exception it
            raises (an interruption) stops the read, the images not yet decoded are dropped.
        workers: threads decoding images at once (Pillow decodes without holding the GIL); ``None``: up
            to 8, as the CPUs allow.
        undistort: resample images taken through a distorted lens (OPENCV, OPENCV_FISHEYE) to the
            pinhole of their own intrinsics, at full size before ``downscale``; off, OPENCV's
            coefficients are ignored (with a warning) and a fisheye is refused.

    Returns:
        :class:`PosedFrames` on the CPU.

    Raises:
        ValueError: naming the file and the field, for missing or malformed fields, missing or
            unreadable images, inconsistent sizes, non-finite or non-rigid matrices, unsupported
            camera models, paths leaving ``root``, or a result over ``max_bytes``.
    """
    folder_p = Path(folder).resolve()
    root_p = folder_p if root is None else Path(root).resolve()
    if not _inside(folder_p, root_p):
        raise ValueError(f"{who}: dataset folder {str(folder_p)!r} lies outside {str(root_p)!r}")
    if split not in SPLITS:
        raise ValueError(f"{who}: split must be one of {SPLITS}, got {split!r}")
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise ValueError(f"{who}: downscale must be an integer >= 1, got {downscale!r}")
    if not isinstance(undistort, bool):
        raise ValueError(f"{who}: undistort must be True or False, got {undistort!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"{who}: workers must be an integer >= 1 or None, got {workers!r}")
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(-1)
    if bg.shape != (3,) or not torch.isfinite(bg).all() or (bg < 0).any() or (bg > 1).any():
        raise ValueError(f"{who}: background must be 3 numbers in 0..1, got {background!r}")
    reader = _Reader(who, root_p, folder_p)
    if not available_splits(folder_p):
        raise ValueError(f"{who}: {reader.shown(folder_p)!r} holds no {SINGLE_FILE} or "
                         f"{'/'.join(SPLIT_FILES.values())}")

    frames: list[_Frame] = []
    layout, cloud = None, None
    for path, keep in _selected_files(folder_p, split, reader):
        parsed, file_layout, cloud_name = reader.parse_file(path, keep)
        frames += parsed
        layout = layout or file_layout
        cloud = cloud or reader.point_cloud(path, cloud_name)

    timed = [f.time is not None for f in frames]
    if any(timed) and not all(timed):
        bad = frames[timed.index(False)]
        raise reader.fail(bad.shown, f"frames[{bad.index}].time", "missing while other frames have a time; give "
                                                                   "every frame a time or none")

    for frame in frames:
        frame.image = reader.image_path(frame)
        reader.header(frame)
        frame.mask = reader.mask_path(frame)
    first = frames[0]
    for frame in frames[1:]:
        if (frame.width, frame.height) != (first.width, first.height):
            raise reader.fail(frame.shown, f"frames[{frame.index}].file_path",
                              f"{reader.shown(frame.image)} is {frame.width}x{frame.height} but "
                              f"{reader.shown(first.image)} is {first.width}x{first.height}; all images must share "
                              "one size")
    warned: set[str] = set()
    Ks = torch.zeros(len(frames), 3, 3)
    for i, frame in enumerate(frames):
        fx, fy, cx, cy = reader.intrinsics(frame, warned, undistort)
        Ks[i] = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    lens_keys = [None if f.lens is None else (f.lens, tuple(Ks[i].flatten().tolist())) for i, f in enumerate(frames)]
    grids = _LensGrids(lens_keys, frames, Ks)

    w, h = first.width, first.height
    if downscale > min(w, h):
        raise ValueError(f"{who}: downscale {downscale} is larger than the images ({w}x{h})")
    wd, hd = w // downscale, h // downscale
    n = len(frames)
    tracked = any(f.mask is not None or key is not None for f, key in zip(frames, lens_keys))
    need = n * hd * wd * 4 * (5 if tracked else 4)
    if need > max_bytes:
        raise ValueError(f"{who}: {n} images of {wd}x{hd} need {need / 2**30:.2f} GiB as float32, over the limit of "
                         f"{max_bytes / 2**30:.2f} GiB; raise downscale or pick a smaller split")

    viewmats = opengl_to_opencv(torch.stack([f.c2w for f in frames]))
    times = torch.tensor([f.time if f.time is not None else f.order / max(f.listed - 1, 1) for f in frames],
                         dtype=torch.float32)
    cameras = Cameras(viewmats, Ks, w, h, times)
    if downscale > 1:
        cameras = cameras.resized(wd, hd)

    images = torch.empty(n, hd, wd, 3)
    masks = torch.empty(n, hd, wd)
    ignore = torch.empty(n, hd, wd) if tracked else None

    def load(i: int) -> None:
        rgb, alpha, keep = _decode(frames[i], reader, hd, wd, grids.get(i), tracked)
        images[i] = rgb + (1.0 - alpha[..., None]) * bg
        masks[i] = alpha
        if ignore is not None:
            ignore[i] = 1.0 - keep

    with ThreadPoolExecutor(max_workers=min(workers or min(8, os.cpu_count() or 1), n)) as pool:
        pending = [pool.submit(load, i) for i in range(n)]
        try:
            for done, job in enumerate(pending, 1):  # in frame order: the first bad image is the one named
                job.result()
                if callback is not None:
                    callback(done, n)
        except BaseException:
            for job in pending:
                job.cancel()
            raise
    files = tuple(f.image.relative_to(folder_p).as_posix() if _inside(f.image, folder_p) else reader.shown(f.image)
                  for f in frames)
    log.info("%s: %d frames of %dx%d (%s layout, split %s) from %s", who, n, wd, hd, layout, split,
             reader.shown(folder_p))
    undistorted = sum(key is not None for key in lens_keys)
    if undistorted:
        log.info("%s: %d of %d frames resampled from their distorted lens to its pinhole", who, undistorted, n)
    if any(f.names_depth for f in frames):
        log.info("%s: %d of %d frames name a depth map (depth_file_path); the fits take no depth supervision, so "
                 "the maps are not read", who, sum(f.names_depth for f in frames), n)
    if any(f.mask is not None for f in frames):
        log.info("%s: %d of %d frames have a mask of pixels to leave out of training", who,
                 sum(f.mask is not None for f in frames), n)
    return PosedFrames(images.clamp_(0.0, 1.0), masks.clamp_(0.0, 1.0), cameras, files, layout or "blender",
                       any(f.has_alpha for f in frames), undistorted, *(cloud or (None, None)),
                       ignore=None if ignore is None else ignore.clamp_(0.0, 1.0))


class _LensGrids:
    """The undistortion grid of each frame, made once for intrinsics that several frames share (a capture
    usually has one camera) and on demand for the others, so per-frame intrinsics hold no grid per frame."""

    def __init__(self, keys: list[tuple | None], frames: list[_Frame], Ks: Tensor):
        self.keys, self.frames, self.Ks = keys, frames, Ks
        first: dict[tuple, int] = {}
        counts = Counter(k for k in keys if k is not None)
        for i, k in enumerate(keys):
            if k is not None and counts[k] > 1:
                first.setdefault(k, i)
        self.cache = {k: self._make(i) for k, i in first.items()}

    def _make(self, i: int) -> Tensor:
        frame = self.frames[i]
        return lenses.undistortion_grid(self.Ks[i], frame.lens[0], dict(frame.lens[1]), frame.width, frame.height)

    def get(self, i: int) -> Tensor | None:
        key = self.keys[i]
        if key is None:
            return None
        return self.cache[key] if key in self.cache else self._make(i)


def _decode(frame: _Frame, reader: _Reader, hd: int, wd: int, grid: Tensor | None = None,
            tracked: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Premultiplied rgb ``[hd,wd,3]``, alpha ``[hd,wd]`` and, when ``tracked``, the share of each pixel to
    train on ``[hd,wd]`` (the frame's mask image, ones without one) of one image, resampled through
    ``grid`` (a distorted lens's, at the image's own size) when given, then area-averaged to the target
    size. Resampling gives 0 past the capture's edge in every channel: transparent and not trained on."""
    import numpy as np

    def read(im):
        if _is_16_bit(im):
            return np.repeat((np.asarray(im).astype(np.float32) / 65535.0)[..., None], 3, axis=-1)
        return np.asarray(im.convert("RGBA" if frame.has_alpha else "RGB"), dtype=np.uint8).astype(np.float32) / 255.0

    pixels = _pixels(frame, reader, frame.image, f"frames[{frame.index}].file_path", read)
    if frame.has_alpha and pixels.shape[-1] == 4:
        alpha = pixels[..., 3]
        rgb = pixels[..., :3] * alpha[..., None]
    else:
        alpha = torch.ones(pixels.shape[:2])
        rgb = pixels[..., :3]
    channels = [rgb, alpha[..., None]]
    if tracked:
        channels.append((_read_mask(frame, reader) if frame.mask is not None else torch.ones_like(alpha))[..., None])
    stacked = torch.cat(channels, dim=-1)
    if grid is not None:  # premultiplied, so a pixel the capture does not cover comes out transparent
        stacked = lenses.undistort(stacked, grid)
    if (hd, wd) != tuple(stacked.shape[:2]):
        stacked = torch.nn.functional.interpolate(stacked.permute(2, 0, 1)[None], size=(hd, wd), mode="area")
        stacked = stacked[0].permute(1, 2, 0)
    return stacked[..., :3], stacked[..., 3], stacked[..., 4] if tracked else None


def _read_mask(frame: _Frame, reader: _Reader) -> Tensor:
    """A frame's mask image as ``[H,W]`` of 1 (train on the pixel) and 0 (leave it out), read as the layout's
    own reader reads it: nerfstudio keeps the pixels whose value is not 0 (so a 0/1 label image and a 0/255
    one mean the same; a palette image by its indices), instant-ngp's dynamic mask leaves out those whose
    red, green or blue is not 0."""
    import numpy as np

    def read(im):
        if im.mode in ("1", "L", "P", "F") or _is_16_bit(im):
            marked = np.asarray(im) != 0
        elif frame.mask_keeps:
            marked = np.asarray(im.getchannel(0)) != 0
        else:
            marked = (np.asarray(im.convert("RGB")) != 0).any(axis=-1)
        keep = marked if frame.mask_keeps else ~marked
        return keep.astype(np.float32)

    field = f"frames[{frame.index}].mask_path" if frame.mask_keeps else f"frames[{frame.index}].file_path"
    return _pixels(frame, reader, frame.mask, field, read)


def _is_16_bit(im) -> bool:
    return im.mode.startswith("I;16") or im.mode == "I"


def _pixels(frame: _Frame, reader: _Reader, path: Path, field: str, read: Callable) -> Tensor:
    """``read(image)`` of the file at ``path`` as a float tensor, checked to still have the frame's size (the
    header was read before, so a file replaced in between is caught)."""
    import numpy as np
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked from the header already
            with Image.open(path) as im:
                size = (int(im.size[0]), int(im.size[1]))
                array = read(im) if size == (frame.width, frame.height) else None
    except (OSError, SyntaxError, ValueError) as exc:
        raise reader.fail(frame.shown, field, f"{reader.shown(path)} could not be decoded ({exc})") from None
    if array is None:
        raise reader.fail(frame.shown, field, f"{reader.shown(path)} changed while being read")
    return torch.from_numpy(np.ascontiguousarray(array))


# -- writing -------------------------------------------------------------------------------------


def write_dnerf_split(
    folder: str | os.PathLike,
    split: str,
    cameras: Cameras,
    frame_fn: Callable[[int], Tensor],
    prefix: str = "r_",
) -> Path:
    """Write one split in D-NeRF layout: ``<split>/r_000.png`` ... and ``transforms_<split>.json``.

    Args:
        folder: the dataset folder (created if missing).
        split: ``train``, ``val`` or ``test``.
        cameras: ``N`` cameras sharing one centred, square-pixel intrinsic matrix (the layout
            stores a single ``camera_angle_x``); their times become each frame's ``time``.
        frame_fn: ``frame_fn(i)`` -> ``[H,W,4]`` straight (not premultiplied) RGBA in 0..1 of
            camera ``i``; called once per camera, in order, so frames need not all be in memory.
        prefix: image file name prefix.

    Returns:
        The JSON file's path. Every file is written atomically; the JSON last.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"write_dnerf_split: split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
    cams = cameras.to("cpu")
    w, h = int(cams.width), int(cams.height)
    K = cams.Ks[0].double()
    expected = torch.tensor([[K[0, 0], 0.0, w / 2.0], [0.0, K[0, 0], h / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    if (cams.Ks.double() - expected).abs().max() > 1e-3 * max(1.0, float(K[0, 0])):
        raise ValueError("write_dnerf_split: the D-NeRF layout needs one centred, square-pixel pinhole for all "
                         "cameras (a single camera_angle_x)")
    folder = Path(folder)
    digits = max(3, len(str(len(cams) - 1)))
    c2w = opencv_to_opengl(cams.viewmats)
    entries = []
    for i in range(len(cams)):
        rgba = torch.as_tensor(frame_fn(i)).detach().float().cpu()
        if rgba.shape != (h, w, 4):
            raise ValueError(f"write_dnerf_split: frame {i} must be [{h},{w},4] RGBA, got {tuple(rgba.shape)}")
        name = f"{prefix}{i:0{digits}d}"
        _write_png(folder / split / f"{name}.png", rgba)
        entries.append({"file_path": f"./{split}/{name}", "time": float(cams.times[i]),
                        "transform_matrix": c2w[i].tolist()})
    data = {"camera_angle_x": 2.0 * math.atan(0.5 * w / float(K[0, 0])), "frames": entries}
    path = folder / SPLIT_FILES[split]
    with atomic_writer(path, "w") as fh:
        json.dump(data, fh, indent=1)
    return path


def _write_png(path: Path, rgba: Tensor) -> None:
    import numpy as np
    from PIL import Image

    array = (rgba.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    with atomic_writer(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(array), "RGBA").save(fh, format="PNG")
