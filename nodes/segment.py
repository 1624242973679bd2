# SPDX-License-Identifier: Apache-2.0
"""Gen4D_SAM2Loader and Gen4D_SAM2Split: SAM2 video segmentation into foreground and background videos.

Public API:
    SAM2Loader      node ``Gen4D_SAM2Loader``: a model from ``models/sam2`` (or a local folder)
                    -> GEN4D_SEGMENTER_MODEL
    SAM2Split       node ``Gen4D_SAM2Split``: IMAGE + segmenter + prompt on frame 0
                    -> foreground IMAGE, background IMAGE (object removed), MASK per frame
    load_segmenter(model_name, device, dtype, local_folder)   the cached segmenter the loader returns
    clear_cache()   forget every cached segmenter

Design notes:
    Models are transformers SAM2 video checkpoints (``facebook/sam2.1-hiera-*``: ``config.json`` +
    ``model.safetensors``) in ComfyUI's ``models/sam2`` folder, the original SAM2 / SAM2.1 single files
    ComfyUI users keep there (``sam2.1_hiera_large.safetensors``, any precision), or any local folder or
    file given as an absolute path. Loaded segmenters are cached per (folder, device, dtype, file stamps). With
    device "auto" the compute device is looked up each time Gen4D_SAM2Split runs (ComfyUI's torch
    device); "auto" dtype is bf16 on CUDA where supported and float32 elsewhere. The split node
    moves the model to the device, segments frame by frame with progress and interrupt checks,
    and offloads it to the CPU afterwards.

    Any object with ``segment(frames, points=, labels=, box=, mask=, callback=, should_stop=,
    device=)`` returning ``[T,H,W]`` masks (and optionally ``offload()``) can feed Gen4D_SAM2Split.
    The split itself (``core.coco4d.segmentation.split_video``) is documented there: the background video
    has the object's pixels filled from the nearest frame where they are visible ("temporal"), with
    the frame's mean colour, or with a fixed colour.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from ..backends.model_folders import resolve_model
from ..backends.sam2_video import REQUIRED_FILES, Sam2VideoSegmenter, SegmentationStopped, check_model
from ..core.coco4d.segmentation import FILL_MODES, parse_box, parse_points, points_to_prompt, split_video
from ..core.formats.convert import check_image, check_mask, parse_color, to_image, to_mask
from . import host
from . import types as T
from .placement import DEVICES, DTYPES, device_in, dtype_in, model_in
from .widgets import color_error, combo_in, socket_in, str_in

__all__ = ["SAM2Loader", "SAM2Split", "load_segmenter", "clear_cache", "NODES"]

logger = logging.getLogger(__name__)

MIN_SIDE = 8
_CACHE_SIZE = 2
_CACHE: OrderedDict[tuple, Sam2VideoSegmenter] = OrderedDict()


def _file_stamps(path: Path) -> tuple:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files
                 if p.suffix in (".json", ".safetensors"))


def _model_path(model_name: str, local_folder: str = "") -> Path:
    folder = (local_folder or "").strip()
    if folder:
        path = Path(folder).expanduser()
        if not path.is_absolute():
            raise ValueError(f"local_folder must be an absolute path to a transformers SAM2 folder or an original "
                             f"SAM2 .safetensors file, got {folder!r}")
        return resolve_model("sam2", str(path), required=REQUIRED_FILES)
    return resolve_model("sam2", model_name, required=REQUIRED_FILES)


def load_segmenter(model_name: str, device: str = "auto", dtype: str = "auto",
                   local_folder: str = "") -> Sam2VideoSegmenter:
    """The segmenter of ``model_name`` (or ``local_folder``) for a device / dtype choice, cached.

    Raises:
        ValueError: unknown choices, a missing model (naming the folders searched and the files
            expected), missing files or corrupt weights.
    """
    if device not in DEVICES:
        raise ValueError(f"Gen4D_SAM2Loader: device must be one of {DEVICES}, got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"Gen4D_SAM2Loader: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    try:
        path = _model_path(model_name, local_folder)
    except ValueError as exc:
        raise ValueError(f"Gen4D_SAM2Loader: {exc}") from None
    key = (str(path), device, dtype, _file_stamps(path))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    segmenter = Sam2VideoSegmenter.load(path, device=None if device == "auto" else device, dtype=DTYPES[dtype])
    _CACHE[key] = segmenter
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return segmenter


def clear_cache() -> None:
    """Forget every cached segmenter."""
    _CACHE.clear()


class SAM2Loader:
    DESCRIPTION = (
        "Loads a SAM2 video segmentation model from ComfyUI's models/sam2 folder: a transformers folder with "
        "config.json and model.safetensors (e.g. facebook/sam2.1-hiera-tiny / -small / -base-plus / -large), or "
        "an original SAM2 / SAM2.1 single file such as sam2.1_hiera_large.safetensors (fp32, fp16 or bf16; the "
        "size is read from the weights). A folder or file elsewhere can be given as an absolute path in "
        "local_folder. Runs without torchvision."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.SEGMENTER_MODEL,)
    RETURN_NAMES = ("segmenter",)
    OUTPUT_TOOLTIPS = ("The SAM2 video segmenter, for Gen4D SAM2 Split.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": model_in("sam2",
                                       "Model under models/sam2: a transformers folder (config.json + "
                                       "model.safetensors of a facebook/sam2.1-hiera-* checkpoint) or an "
                                       "original single file such as sam2.1_hiera_large.safetensors."),
                "device": device_in(),
                "dtype": dtype_in(),
            },
            "optional": {
                "local_folder": str_in("", "Absolute path of a local transformers SAM2 folder or original SAM2 "
                                       ".safetensors file; when set it is used instead of model_name."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None, local_folder=None):
        if model_name is None and not local_folder:
            return True
        try:
            check_model(_model_path(model_name or "", local_folder or ""))
        except ValueError as exc:
            return f"Gen4D_SAM2Loader: {exc}"
        return True

    @classmethod
    def IS_CHANGED(cls, model_name, device, dtype, local_folder=""):
        try:
            path = _model_path(model_name, local_folder)
        except ValueError:
            return ""
        return repr((str(path), device, dtype, _file_stamps(path)))

    def load(self, model_name, device, dtype, local_folder=""):
        return (load_segmenter(model_name, device, dtype, local_folder),)


# SAM2 takes a few clicks per object; thousands only cost memory in the prompt encoder.
MAX_POINTS = 256


def _prompt_error(points, box) -> str | None:
    try:
        clicks, _labels = parse_points(points)
        parse_box(box)
        if len(clicks) > MAX_POINTS:
            return (f"Gen4D_SAM2Split: points has {len(clicks)} clicks; at most {MAX_POINTS} are taken "
                    "(a few per object)")
    except ValueError as exc:
        return f"Gen4D_SAM2Split: {exc}"
    return None


class SAM2Split:
    DESCRIPTION = (
        "Segments one object through a video with SAM2, prompted on the first frame by clicks (points), a box, "
        "or an initial mask from any node, and splits the video: the object on a plain background, the scene "
        "with the object removed (its pixels filled from frames where they are visible), and the mask per frame."
    )
    CATEGORY = f"{T.CATEGORY}/perception"
    RETURN_TYPES = (T.IMAGE, T.IMAGE, T.MASK)
    RETURN_NAMES = ("foreground", "background", "mask")
    OUTPUT_TOOLTIPS = (
        "The object per frame over foreground_background (frames * mask + colour * (1 - mask)).",
        "The video with the object removed: masked pixels filled as chosen in background_fill (not inpainted; "
        "feed it to an inpainting model for a clean plate).",
        "The object's mask per frame, 0..1.",
    )
    FUNCTION = "split"
    PAIRED_INPUTS = (("images", "init_mask"),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": socket_in(T.IMAGE, "Video frames [T,H,W,3]; frame 0 carries the prompt."),
                "segmenter": socket_in(T.SEGMENTER_MODEL, "A segmenter from Gen4D SAM2 Loader."),
                "points": str_in("", "Clicks on frame 0 as JSON in pixels: [[x, y], ...] or [[x, y, label], ...] "
                                 "with label 1 = on the object, 0 = not on it; [{\"x\": x, \"y\": y}, ...] from "
                                 "points-editor nodes also works (connect it as an input). Empty = none."),
                "box": str_in("", "Box around the object on frame 0 in pixels: x0,y0,x1,y1. Empty = none."),
                "foreground_background": str_in("#ffffff", "Colour behind the object in the foreground output "
                                                "(#rrggbb or r,g,b)."),
                "background_fill": combo_in(FILL_MODES, "How the object's pixels are filled in the background "
                                            "output: 'temporal' = the same pixel from the nearest frame where it "
                                            "is visible (else the frame mean), 'mean' = the frame's mean colour, "
                                            "'color' = fill_color."),
                "fill_color": str_in("#000000", "Fill colour for background_fill 'color' (#rrggbb or r,g,b)."),
            },
            "optional": {
                "init_mask": socket_in(T.MASK, "Initial object mask of frame 0 instead of points/box (one mask, "
                                       "or one per frame: the first is used)."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, points=None, box=None, foreground_background=None, fill_color=None):
        error = _prompt_error(points, box)
        if error:
            return error
        for value in (foreground_background, fill_color):
            ok = color_error(value)
            if ok is not True:
                return f"Gen4D_SAM2Split: {ok}"
        return True

    def split(self, images, segmenter, points, box, foreground_background, background_fill, fill_color,
              init_mask=None):
        frames = check_image(images, "Gen4D_SAM2Split.images", channels=(3, 4))[..., :3].contiguous()
        t_count, height, width = frames.shape[:3]
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"Gen4D_SAM2Split.images: frames of {width}x{height} are too small; SAM2 needs at "
                             f"least {MIN_SIDE}x{MIN_SIDE} pixels")
        if background_fill not in FILL_MODES:
            raise ValueError(f"Gen4D_SAM2Split: background_fill must be one of {FILL_MODES}, got {background_fill!r}")
        if not callable(getattr(segmenter, "segment", None)):
            raise ValueError(f"Gen4D_SAM2Split: segmenter must be a GEN4D_SEGMENTER_MODEL, got "
                             f"{type(segmenter).__name__}")
        fg_colour = parse_color(foreground_background).tolist()
        fill_colour = parse_color(fill_color).tolist()
        error = _prompt_error(points, box)
        if error:
            raise ValueError(error)
        pts, labels = parse_points(points)
        try:
            prompt = points_to_prompt(pts, labels, parse_box(box), width, height)
        except ValueError as exc:
            raise ValueError(f"Gen4D_SAM2Split: {exc} (frame 0 is {width}x{height})") from None
        mask0 = None
        if init_mask is not None:
            mask0 = check_mask(init_mask, "Gen4D_SAM2Split.init_mask", like=frames)[0]
            if not prompt.empty:
                raise ValueError("Gen4D_SAM2Split: init_mask is connected and points/box are set; clear the points "
                                 "and box widgets or disconnect init_mask")
        elif prompt.empty:
            raise ValueError("Gen4D_SAM2Split: no prompt; give points, a box or connect init_mask (frame 0)")

        device = getattr(segmenter, "device", None) or host.compute_device()
        host.raise_if_interrupted()
        progress = host.Progress(t_count)
        try:
            masks = segmenter.segment(frames, points=prompt.points if len(prompt.points) else None,
                                      labels=prompt.labels if len(prompt.points) else None, box=prompt.box,
                                      mask=mask0, callback=progress, should_stop=host.should_stop, device=device)
        except SegmentationStopped:
            host.raise_if_interrupted()
            raise
        finally:
            offload = getattr(segmenter, "offload", None)
            if callable(offload):
                offload()
            host.soft_empty_cache()
        masks = masks.detach().float().cpu()
        if tuple(masks.shape) != (t_count, height, width):
            raise ValueError(f"Gen4D_SAM2Split: the segmenter returned masks {tuple(masks.shape)} for frames "
                             f"{(t_count, height, width)}")
        foreground, background, mask = split_video(frames, masks, fg_background=fg_colour, fill=background_fill,
                                                   fill_color=fill_colour)
        return to_image(foreground), to_image(background), to_mask(mask)


NODES = {
    "Gen4D_SAM2Loader": (SAM2Loader, "Gen4D SAM2 Loader"),
    "Gen4D_SAM2Split": (SAM2Split, "Gen4D SAM2 Split"),
}
