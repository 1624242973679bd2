# SPDX-License-Identifier: Apache-2.0
"""Gen4D_DepthLoader and Gen4D_Depth: monocular depth (Depth Anything V2) as ComfyUI nodes.

Public API:
    DepthLoader     node ``Gen4D_DepthLoader``: a model from ``models/gen4d/depth`` (or an original Depth Anything V2
                    single file from ``models/depthanything``) -> GEN4D_DEPTH_MODEL
    Depth           node ``Gen4D_Depth``: IMAGE + GEN4D_DEPTH_MODEL -> depth IMAGE and a MASK-compatible map
    load_depth_model(model_name, device, dtype)     the cached estimator the loader returns
    clear_cache()                   forget every cached estimator

Design notes:
    The loader validates the folder (config.json, safetensors headers) but reads weights lazily, on
    the first Gen4D_Depth run; estimators are cached per (folder, device, dtype, file stamps), so the
    same choice returns the same object and weights are read once. The device is looked up when the
    loader runs ("auto" = ComfyUI's torch device); "auto" dtype is bf16 on CUDA where supported, else
    float32. Gen4D_Depth moves the model to its device, runs in batches with progress and interrupt
    checks, and offloads it to the CPU afterwards.

    Any object with ``kind``, ``predict``, ``offload`` (``backends.depth.DepthEstimator``) can feed
    Gen4D_Depth. A relative model's disparity is turned into a pseudo z-depth ``1/disparity`` (0 where
    the disparity is 0: sky / infinitely far; ``core.formats.depth.to_z_depth``), so ``depth_to_image``
    gives the usual encodings:
    "inverse_normalized" is the normalised disparity (near = white), "normalized" the normalised
    pseudo-depth (far = white), "metric" the raw pseudo-depth, which for a relative model has no unit.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch

from ..backends.depth import DepthAnythingV2
from ..backends.model_folders import preferred_dtype, resolve_model
from ..core.formats.convert import DEPTH_MODES, check_image, depth_to_image
from ..core.formats.depth import RELATIVE_DISPARITY, to_z_depth
from . import host
from . import types as T
from .placement import DEVICES, DTYPES, device_in, dtype_in, model_in
from .widgets import combo_in, int_in, socket_in

__all__ = ["DepthLoader", "Depth", "load_depth_model", "clear_cache", "NODES"]

logger = logging.getLogger(__name__)

_CACHE_SIZE = 3
_CACHE: OrderedDict[tuple, DepthAnythingV2] = OrderedDict()


def _file_stamps(path: Path) -> tuple:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files
                 if p.suffix in (".json", ".safetensors"))


def _resolve(model_name: str, device: str, dtype: str) -> tuple[Path, torch.device, torch.dtype]:
    if device not in DEVICES:
        raise ValueError(f"Gen4D_DepthLoader: device must be one of {DEVICES}, got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"Gen4D_DepthLoader: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    path = resolve_model("depth", model_name, required=("config.json",))
    torch_device = host.compute_device() if device == "auto" else torch.device("cpu")
    torch_dtype = DTYPES[dtype] or preferred_dtype(torch_device)
    if torch_device.type == "cpu" and torch_dtype != torch.float32:
        logger.warning("Gen4D_DepthLoader: %s on the CPU is slow and less accurate; fp32 is advised there", dtype)
    return path, torch_device, torch_dtype


def load_depth_model(model_name: str, device: str = "auto", dtype: str = "auto") -> DepthAnythingV2:
    """The estimator of ``model_name`` for the given device / dtype choice, cached (weights read lazily).

    Raises:
        ValueError: unknown choices, a missing model (naming the folders searched and the files
            expected), or a corrupt model folder.
    """
    path, torch_device, torch_dtype = _resolve(model_name, device, dtype)
    key = (str(path), str(torch_device), str(torch_dtype), _file_stamps(path))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    estimator = DepthAnythingV2.load(path, torch_device, torch_dtype, lazy=True)
    _CACHE[key] = estimator
    while len(_CACHE) > _CACHE_SIZE:
        _, old = _CACHE.popitem(last=False)
        old.unload()
    return estimator


def clear_cache() -> None:
    """Forget every cached estimator (their weights are freed once nothing else holds them)."""
    for estimator in _CACHE.values():
        estimator.unload()
    _CACHE.clear()


class DepthLoader:
    DESCRIPTION = (
        "Loads a monocular depth model (Depth Anything V2): a transformers folder with config.json and "
        "model.safetensors in ComfyUI's models/gen4d/depth folder (e.g. a copy of "
        "depth-anything/Depth-Anything-V2-Small-hf), or an original single file in models/depthanything such as "
        "depth_anything_v2_vitl_fp32.safetensors (size read from the weights; metric when the name says "
        "hypersim or vkitti). Relative models give disparity (near = large), metric models metres. Weights are "
        "read on first use and kept for later runs."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.DEPTH_MODEL,)
    RETURN_NAMES = ("depth_model",)
    OUTPUT_TOOLTIPS = ("The depth model, for Gen4D_Depth and the stages that lift images to 3D.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": model_in("depth",
                                       "Model folder under models/gen4d/depth (config.json + model.safetensors), or "
                                       "a depth_anything_v2_*.safetensors file from models/depthanything."),
                "device": device_in(),
                "dtype": dtype_in(),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        if model_name is None:
            return True
        try:
            resolve_model("depth", model_name, required=("config.json",))
        except ValueError as exc:
            return f"Gen4D_DepthLoader: {exc}"
        return True

    @classmethod
    def IS_CHANGED(cls, model_name, device, dtype):
        try:
            path = resolve_model("depth", model_name)
        except ValueError:
            return ""
        return repr((str(path), device, dtype, _file_stamps(path)))

    def load(self, model_name, device, dtype):
        try:
            return (load_depth_model(model_name, device, dtype),)
        except ValueError as exc:
            if str(exc).startswith("Gen4D_DepthLoader"):
                raise
            # the folder was found (or given as a path) but does not hold a loadable model
            raise ValueError(f"Gen4D_DepthLoader: model_name {model_name!r}: {exc}") from exc


class Depth:
    DESCRIPTION = (
        "Estimates depth for every image of a batch (a video is a batch) with a loaded depth model. "
        "Outputs a depth picture in the chosen encoding and the normalised disparity as a MASK (near = 1). "
        "Relative models have no unit: their depth is known up to scale and shift."
    )
    CATEGORY = f"{T.CATEGORY}/perception"
    RETURN_TYPES = (T.IMAGE, T.MASK)
    RETURN_NAMES = ("depth", "disparity")
    OUTPUT_TOOLTIPS = (
        "Depth as an IMAGE: 'inverse_normalized' near = white (ControlNet style), 'normalized' far = white, "
        "'metric' raw values (metres for metric models, 1/disparity for relative ones). Empty / sky = 0.",
        "Disparity normalised to 0..1 over the whole batch as a MASK [B,H,W]: near = 1, far or sky = 0.",
    )
    FUNCTION = "estimate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": socket_in(T.IMAGE, "RGB images or video frames [B,H,W,3]."),
                "depth_model": socket_in(T.DEPTH_MODEL, "A depth model from Gen4D Depth Loader."),
                "depth_mode": combo_in(DEPTH_MODES, "Encoding of the depth IMAGE output.", "inverse_normalized"),
                "input_size": int_in(518, 14, 2800, "Short side the model sees, rounded to a multiple of 14 "
                                     "(518 = Depth Anything's training size; larger = finer, slower).", step=14),
                "batch_size": int_in(4, 1, 256, "Images per forward pass; lower it if memory runs out."),
            },
        }

    def estimate(self, images, depth_model, depth_mode, input_size=518, batch_size=4):
        images = check_image(images, "Gen4D_Depth.images")
        if depth_mode not in DEPTH_MODES:
            raise ValueError(f"Gen4D_Depth: depth_mode must be one of {DEPTH_MODES}, got {depth_mode!r}")
        if not all(hasattr(depth_model, a) for a in ("predict", "kind", "offload")):
            raise ValueError(f"Gen4D_Depth: depth_model must be a depth model (GEN4D_DEPTH_MODEL), "
                             f"got {type(depth_model).__name__}")
        host.raise_if_interrupted()
        total = images.shape[0]
        progress = host.Progress(total)
        try:
            raw = depth_model.predict(images, input_size=int(input_size), batch_size=int(batch_size),
                                      callback=progress, should_stop=host.should_stop)
        finally:
            depth_model.offload()
            host.soft_empty_cache()
        host.raise_if_interrupted()
        if raw.shape[0] != total:
            raise ValueError(f"Gen4D_Depth: the depth model returned {raw.shape[0]} maps for {total} images")
        if depth_mode == "metric" and depth_model.kind == RELATIVE_DISPARITY:
            logger.warning("Gen4D_Depth: a relative model has no metric output; 'metric' gives 1/disparity "
                           "(no unit)")
        z = to_z_depth(raw, depth_model.kind)[..., None]
        return depth_to_image(z, depth_mode), depth_to_image(z, "inverse_normalized")[..., 0].contiguous()


NODES = {
    "Gen4D_DepthLoader": (DepthLoader, "Gen4D Depth Loader"),
    "Gen4D_Depth": (Depth, "Gen4D Depth"),
}
