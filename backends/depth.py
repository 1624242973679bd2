# SPDX-License-Identifier: Apache-2.0
"""Monocular depth: a small estimator interface and Depth Anything V2 (transformers) behind it.

Public API:
    DepthEstimator                  interface every depth model implements (``predict``, ``kind``, ``to``,
                                    ``offload``)
    RELATIVE_DISPARITY, METRIC_DEPTH, DEPTH_KINDS    the output kinds (defined in ``core.formats.depth``)
    DepthAnythingV2                 Depth Anything V2 (``DepthAnythingForDepthEstimation``) from a local folder
    DepthAnythingV2.load(path, device, dtype, lazy=False)
    check_model_folder(path)        validate a transformers Depth Anything folder, return its config dict
    check_model(path)               a folder (as ``check_model_folder``) or an original single file: its config dict
    resize_for_model(h, w, size)    the processing size: short side ``size``, both sides multiples of 14
    preprocess(images, size)        IMAGE ``[B,H,W,3]`` -> normalised ``[B,3,h,w]``

Design notes:
    Output kinds: a *relative* Depth Anything model predicts affine-invariant **disparity** (inverse
    depth up to an unknown scale and shift): larger = nearer, 0 = infinitely far (sky). A *metric*
    model (``depth_estimation_type == "metric"``) predicts z-depth in metres (larger = farther).
    ``DepthEstimator.kind`` says which one a caller holds; nothing converts silently.

    Pre/post-processing is our own, so transformers' image processor (whose fast path needs
    torchvision) is never used: bicubic resize (anti-aliased when shrinking) so the short side is
    ``input_size`` (518 by default, as Depth Anything V2 was trained) and both sides are multiples of the
    patch size 14, keeping the aspect ratio ("lower bound" resize of the original code), ImageNet
    normalisation, then bilinear upsampling of the prediction back to the input size.

    Weights load only from safetensors: a local transformers folder (``config.json`` +
    ``model.safetensors`` or a sharded ``model.safetensors.index.json``, ``local_files_only=True``), or a
    single file in the original Depth Anything V2 naming (``depth_anything_v2_vitl_fp32.safetensors`` as
    ComfyUI-DepthAnythingV2 keeps it in ``models/depthanything``), read by ``backends.depth_file``
    (sizes from the weights, built on the meta device, read straight into the compute dtype). The
    pre-processing above is the one every V2 variant was trained with, so a single file needs no
    processor config. Nothing is downloaded.
    The DINOv2 backbone uses SDPA attention where torch provides it (transformers' default). On GPU
    the model runs in bf16 / fp16 as asked; outputs are always float32 on the CPU.
    ``transformers`` is imported inside functions, so the pack imports without it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.formats.convert import check_image
from ..core.formats.depth import DEPTH_KINDS, METRIC_DEPTH, RELATIVE_DISPARITY
from .memory import make_room, park

__all__ = [
    "DepthEstimator",
    "RELATIVE_DISPARITY",
    "METRIC_DEPTH",
    "DEPTH_KINDS",
    "DepthAnythingV2",
    "check_model_folder",
    "check_model",
    "resize_for_model",
    "preprocess",
    "REQUIRED_FILES",
    "PATCH_SIZE",
    "DEFAULT_INPUT_SIZE",
]

logger = logging.getLogger(__name__)

PATCH_SIZE = 14
DEFAULT_INPUT_SIZE = 518
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE)
# Resized images above this many pixels are refused (about 2900 x 2900): an extreme aspect ratio or an
# oversized input_size would otherwise allocate without bound.
MAX_MODEL_PIXELS = 2900 * 2900


class DepthEstimator:
    """Interface of a monocular depth model.

    Attributes:
        kind: :data:`RELATIVE_DISPARITY` (larger = nearer, unknown scale and shift; 0 = infinitely
            far) or :data:`METRIC_DEPTH` (z-depth in metres, larger = farther).
        device: the device :meth:`predict` runs on.
    """

    kind: str = RELATIVE_DISPARITY
    device: torch.device = torch.device("cpu")

    def predict(self, images: Tensor, *, input_size: int | None = None, batch_size: int = 4,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None) -> Tensor:
        """Depth or disparity of every image.

        Args:
            images: ``[B,H,W,3]`` float RGB in 0..1 (a ComfyUI IMAGE).
            input_size: processing resolution (short side) where the model has one; ``None`` = its default.
            batch_size: images per forward pass.
            callback: ``callback(done, total, None)`` after every batch.
            should_stop: polled before every batch; when it returns True the images done so far are
                returned (fewer than ``B``).

        Returns:
            ``[B,H,W]`` float32 on the CPU, of :attr:`kind`.
        """
        raise NotImplementedError

    def to(self, device: torch.device | str) -> DepthEstimator:
        """Run on ``device`` from now on (moves loaded weights there)."""
        self.device = torch.device(device)
        return self

    def offload(self) -> DepthEstimator:
        """Move weights off the compute device (to the CPU) to free its memory."""
        return self


# --------------------------------------------------------------------------- pre/post-processing


def resize_for_model(height: int, width: int, input_size: int = DEFAULT_INPUT_SIZE,
                     multiple: int = PATCH_SIZE) -> tuple[int, int]:
    """Processing size of an ``height x width`` image: aspect kept, short side about ``input_size``.

    Both sides are multiples of ``multiple`` and at least ``input_size`` rounded to it (the "lower
    bound" resize of Depth Anything).

    Raises:
        ValueError: the resized image would exceed :data:`MAX_MODEL_PIXELS`.
    """
    if int(input_size) < multiple:
        raise ValueError(f"depth: input_size must be >= {multiple}, got {input_size}")
    scale = float(input_size) / min(height, width)
    lower = round(input_size / multiple) * multiple

    def fit(value: float) -> int:
        out = round(value / multiple) * multiple
        return out if out >= lower else math.ceil(value / multiple) * multiple

    size = (max(fit(height * scale), multiple), max(fit(width * scale), multiple))
    if size[0] * size[1] > MAX_MODEL_PIXELS:
        raise ValueError(f"depth: a {height}x{width} image at input_size {input_size} would be processed at "
                         f"{size[0]}x{size[1]}, more than the {MAX_MODEL_PIXELS} pixel limit; lower input_size "
                         "or crop the image to a less extreme aspect ratio")
    return size


def preprocess(images: Tensor, input_size: int = DEFAULT_INPUT_SIZE, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> Tensor:
    """IMAGE ``[B,H,W,3]`` in 0..1 -> ImageNet-normalised ``[B,3,h,w]`` at :func:`resize_for_model` size."""
    x = images.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
    h, w = resize_for_model(x.shape[-2], x.shape[-1], input_size)
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype).contiguous()


def _check_images(images, where: str) -> Tensor:
    return check_image(images, f"{where}: images")


# --------------------------------------------------------------------------- model folders


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder (single file or shards of an index)."""
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return [single]
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"depth model: unreadable weight index {str(index)!r}: {exc}") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ValueError(f"depth model: {str(folder)!r} lacks the weight shards {missing} named in {WEIGHTS_INDEX}")
        return [folder / s for s in shards]
    raise ValueError(f"depth model: {str(folder)!r} has no weights; expected {WEIGHTS_FILE} (or a sharded "
                     f"{WEIGHTS_INDEX}) next to config.json, as in depth-anything/Depth-Anything-V2-Small-hf")


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("it holds no tensors")
    except Exception as exc:  # safetensors raises its own SafetensorError (not an OSError / ValueError)
        raise ValueError(f"depth model: corrupt or truncated safetensors file {str(path)!r} ({exc}); "
                         "download it again") from None


def check_model(path: str | Path) -> dict:
    """The config dict of a transformers folder (:func:`check_model_folder`) or of an original Depth Anything
    V2 single ``.safetensors`` file (derived from its header; ``variant`` names its encoder).

    Raises:
        ValueError: naming the folder or file and what is wrong.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"depth model: {str(path)!r} is not a .safetensors file; expected an original Depth "
                             "Anything V2 checkpoint such as depth_anything_v2_vitl_fp32.safetensors, or a "
                             "transformers folder")
        from .depth_file import check_depth_file

        return check_depth_file(path)
    return check_model_folder(path)


def check_model_folder(path: str | Path) -> dict:
    """Validate a transformers Depth Anything folder without loading weights.

    Checks ``config.json`` (readable, ``model_type`` ``depth_anything``) and the safetensors headers
    (which also catches truncated files).

    Returns:
        the parsed ``config.json``.

    Raises:
        ValueError: naming the folder or file and what is wrong or missing.
    """
    folder = Path(path)
    if folder.is_file():
        raise ValueError(f"depth model: {str(folder)!r} is a single file; check it with check_model (a transformers "
                         f"folder holds {list(REQUIRED_FILES)}, e.g. depth-anything/Depth-Anything-V2-Small-hf)")
    if not folder.is_dir():
        raise ValueError(f"depth model: folder {str(folder)!r} does not exist")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"depth model: {str(folder)!r} is missing config.json; expected a transformers folder "
                         f"with {list(REQUIRED_FILES)}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"depth model: cannot read {str(config_file)!r}: {exc}") from None
    if not isinstance(config, dict) or config.get("model_type") != "depth_anything":
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"depth model: {str(config_file)!r} has model_type {found!r}; expected 'depth_anything' "
                         "(transformers DepthAnythingForDepthEstimation)")
    if config.get("depth_estimation_type", "relative") not in ("relative", "metric"):
        raise ValueError(f"depth model: {str(config_file)!r} has depth_estimation_type "
                         f"{config.get('depth_estimation_type')!r}; expected 'relative' or 'metric'")
    for file in _weight_files(folder):
        _check_safetensors(file)
    return config


# --------------------------------------------------------------------------- Depth Anything V2


class DepthAnythingV2(DepthEstimator):
    """Depth Anything V2 (transformers ``DepthAnythingForDepthEstimation``) as a :class:`DepthEstimator`.

    Relative checkpoints output disparity (:data:`RELATIVE_DISPARITY`, larger = nearer); metric
    checkpoints output metres (:data:`METRIC_DEPTH`). Build with :meth:`load`.
    """

    def __init__(self, path: Path, config: dict, device: torch.device, dtype: torch.dtype):
        self.path = Path(path)
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.kind = METRIC_DEPTH if config.get("depth_estimation_type") == "metric" else RELATIVE_DISPARITY
        self.model = None

    def __repr__(self) -> str:
        state = "loaded" if self.model is not None else "not loaded"
        return f"DepthAnythingV2({str(self.path)!r}, {self.kind}, {self.device}, {self.dtype}, {state})"

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             lazy: bool = False) -> DepthAnythingV2:
        """Open a local transformers folder (``config.json`` + ``model.safetensors``) or an original single file.

        Args:
            path: the model folder, or a Depth Anything V2 ``.safetensors`` file in the original naming.
            device: where :meth:`predict` runs.
            dtype: weight and compute dtype (float32, bfloat16 or float16).
            lazy: only validate the folder now; read the weights on first use.

        Raises:
            ValueError: missing or unreadable files, a corrupt safetensors file, or weights that do
                not fit the config.
        """
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"DepthAnythingV2.load: dtype must be float32, bfloat16 or float16, got {dtype}")
        folder = Path(path)
        estimator = cls(folder, check_model(folder), torch.device(device), dtype)
        if not lazy:
            estimator.materialize()
        return estimator

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def materialize(self) -> DepthAnythingV2:
        """Read the weights (on the CPU) if not done yet."""
        if self.model is not None:
            return self
        if self.path.is_file():
            from .depth_file import load_depth_file

            self.model = load_depth_file(self.path, self.dtype)
            return self
        from transformers import DepthAnythingForDepthEstimation

        try:
            model, info = DepthAnythingForDepthEstimation.from_pretrained(
                str(self.path), local_files_only=True, use_safetensors=True, dtype=self.dtype,
                output_loading_info=True)
        except Exception as exc:  # transformers / safetensors / torch raise many types for bad files
            raise ValueError(f"depth model: cannot load {str(self.path)!r}: {type(exc).__name__}: {exc}") from None
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise ValueError(f"depth model: {str(self.path)!r} lacks {len(missing)} weights of its config, e.g. "
                             f"{missing[:3]}; the weights do not belong to this config.json")
        self.model = model.eval().requires_grad_(False)
        logger.info("loaded %s (%s, backbone attention %s)", self.path.name, self.kind,
                    getattr(model.backbone.config, "_attn_implementation", "?"))
        return self

    def unload(self) -> None:
        """Drop the weights; the next :meth:`predict` reads them again."""
        self.model = None

    def to(self, device: torch.device | str) -> DepthAnythingV2:
        self.device = torch.device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self

    def offload(self) -> DepthAnythingV2:
        if self.model is not None and self._model_device().type != "cpu":
            park([self.model])
        return self

    def _model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, images: Tensor, *, input_size: int | None = None, batch_size: int = 4,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None) -> Tensor:
        images = _check_images(images, "DepthAnythingV2.predict")
        if int(batch_size) < 1:
            raise ValueError(f"DepthAnythingV2.predict: batch_size must be >= 1, got {batch_size}")
        size = DEFAULT_INPUT_SIZE if input_size is None else int(input_size)
        total, (height, width) = images.shape[0], images.shape[1:3]
        resize_for_model(height, width, size)  # size errors before any weights move
        self.materialize()
        if self._model_device() != self.device:
            make_room([self.model], self.device)
            self.model.to(self.device)
        outputs: list[Tensor] = []
        with torch.inference_mode():
            for start in range(0, total, int(batch_size)):
                if should_stop is not None and should_stop():
                    break
                chunk = images[start : start + int(batch_size)]
                pixels = preprocess(chunk, size, self.dtype, self.device)
                pred = self.model(pixel_values=pixels).predicted_depth.float()
                pred = F.interpolate(pred[:, None], size=(height, width), mode="bilinear", align_corners=False)
                outputs.append(pred[:, 0].clamp_min(0.0).cpu())
                if callback is not None:
                    callback(start + chunk.shape[0], total, None)
        if not outputs:
            return images.new_zeros((0, height, width))
        return torch.cat(outputs).contiguous()
