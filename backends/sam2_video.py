# SPDX-License-Identifier: Apache-2.0
"""SAM2 video segmentation with transformers' ``Sam2VideoModel``, driven without its processor.

Public API:
    Sam2VideoSegmenter          a loaded model: ``load(path, device, dtype)``, ``segment(...)``,
                                ``segment_logits(...)``, ``offload()``
    SegmentationStopped         raised when ``should_stop()`` interrupts ``segment``
    REQUIRED_FILES              files a model folder must hold besides its weights
    check_model_folder(path)    the weight file of a folder, or ValueError naming what is missing/corrupt
    check_model(path)           a folder's weight file, or an original SAM2 single file (its header checked)
    preprocess_frames(frames, size)   ``[T,H,W,3]`` 0..1 -> ``[T,3,S,S]`` ImageNet-normalised
    upsample_logits(low_res, size, height, width)   mask logits -> ``[.., H, W]``

Design notes:
    Weights: a local transformers folder (``config.json`` + ``model.safetensors`` or a sharded
    ``model.safetensors.index.json``), e.g. ``facebook/sam2.1-hiera-*`` downloaded into
    ``models/sam2/<name>``, or a single ``.safetensors`` file in the original facebookresearch/sam2
    naming (``models/sam2/sam2.1_hiera_large.safetensors``, as ComfyUI-segment-anything-2 keeps it),
    read by ``backends.sam2_file`` (sizes from the weights, built on the meta device). Nothing is
    downloaded here; loading is ``local_files_only``.

    transformers' ``Sam2VideoProcessor`` / ``Sam2VideoVideoProcessor`` need torchvision (the video
    processor base class resizes with it); the model does not. So this module builds the
    ``Sam2VideoInferenceSession`` itself and reproduces the processor's steps in plain torch:
    frames are resized to the model's square ``config.image_size`` (bilinear, antialiased) and
    normalised with ImageNet mean/std; prompt coordinates are scaled from frame pixels to that
    square exactly like ``Sam2VideoProcessor._normalize_coordinates``; a box becomes two corner
    points with labels 2 and 3 placed before the clicks; an initial mask is resized to the square
    and binarised at 0.5. Output logits are upsampled like ``post_process_masks`` (to the
    square, then to ``H x W``, bilinear) and thresholded at ``threshold`` (0 = SAM's default).

    Frames are propagated forward from frame 0 through the whole video with the model's memory
    (``model(inference_session, frame_idx=t)`` for ``t = 0..T-1``, the same calls as
    ``propagate_in_video_iterator``). Pre-processed frames are stored on the CPU, features and
    memories live on the compute device. The model waits on the CPU between calls: ``segment``
    moves it to the device (bf16 on CUDA by default) and ``offload()`` moves it back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.coco4d.segmentation import points_to_prompt
from .memory import make_room, park
from .model_folders import preferred_dtype

__all__ = [
    "Sam2VideoSegmenter",
    "SegmentationStopped",
    "REQUIRED_FILES",
    "check_model_folder",
    "check_model",
    "preprocess_frames",
    "upsample_logits",
]

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
MODEL_TYPES = ("sam2_video", "sam2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OBJECT_ID = 1


class SegmentationStopped(InterruptedError):
    """Raised by :meth:`Sam2VideoSegmenter.segment` when ``should_stop()`` turned true."""


def preprocess_frames(frames: Tensor, size: int) -> Tensor:
    """``[T,H,W,3]`` float 0..1 -> ``[T,3,size,size]`` float32, resized and ImageNet-normalised."""
    x = frames.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def upsample_logits(low_res: Tensor, size: int, height: int, width: int) -> Tensor:
    """Mask logits ``[B,C,h,w]`` -> ``[B,C,H,W]`` float32 (to the model square, then to the frame)."""
    x = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def check_model(path: Path) -> Path:
    """A model folder's weight file (:func:`check_model_folder`), or a single original SAM2 ``.safetensors``
    file itself, its header checked (family, size); ValueError naming what is wrong."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"SAM2 model {str(path)!r} is not a .safetensors file; expected an original SAM2 / "
                             "SAM2.1 checkpoint such as sam2.1_hiera_large.safetensors, or a transformers folder")
        from .sam2_file import check_sam2_file

        check_sam2_file(path)
        return path
    return check_model_folder(path)


def check_model_folder(path: Path) -> Path:
    """The weight file of a model folder; ValueError naming what is missing or broken."""
    if not path.is_dir():
        raise ValueError(f"SAM2 model {str(path)!r} is not a folder; expected a transformers folder with "
                         f"config.json and model.safetensors (e.g. facebook/sam2.1-hiera-tiny) or an original "
                         f"SAM2 .safetensors file")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        missing.append("model.safetensors")
    if missing:
        raise ValueError(f"SAM2 model folder {str(path)!r} is missing {missing}; expected config.json and "
                         f"model.safetensors from a facebook/sam2.1-hiera-* transformers checkpoint")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"SAM2 model folder {str(path)!r}: config.json is not valid JSON ({exc})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        raise ValueError(f"SAM2 model folder {str(path)!r}: config.json has model_type {model_type!r}, expected "
                         f"one of {MODEL_TYPES} (a transformers SAM2 checkpoint)")
    if weights.name.endswith(".index.json"):
        try:
            index = json.loads(weights.read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise ValueError(f"SAM2 model folder {str(path)!r}: {weights.name} is not a valid shard index "
                             f"({exc})") from None
        files = [path / s for s in shards]
    else:
        files = [weights]
    for file in files:
        _check_safetensors(file)
    return weights


def _check_safetensors(file: Path) -> None:
    """Read a safetensors header and check the file holds every tensor it declares."""
    from safetensors import safe_open

    if not file.is_file():
        raise ValueError(f"SAM2 weights file {str(file)!r} is missing")
    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, OSError)
        raise ValueError(f"SAM2 weights file {str(file)!r} is not a readable safetensors file (truncated or "
                         f"corrupt?): {exc}") from None


class Sam2VideoSegmenter:
    """A loaded SAM2 video model.

    Attributes:
        model: the ``transformers.Sam2VideoModel`` (on the CPU between calls).
        path: the model folder.
        device: default compute device, or ``None`` to decide at call time.
        dtype: compute dtype, or ``None`` for bf16 on CUDA / float32 elsewhere (decided at call time).
    """

    def __init__(self, model, path: Path, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.model = model
        self.path = Path(path)
        self.device = None if device is None else torch.device(device)
        self.dtype = dtype
        self._rounded = False  # True once the weights were cast below float32 (they are then re-read for fp32)

    def __repr__(self) -> str:
        return f"Sam2VideoSegmenter({self.path.name!r}, image_size={self.image_size}, device={self.device})"

    @property
    def image_size(self) -> int:
        """Side of the square the model sees (``config.image_size``)."""
        return int(self.model.config.image_size)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None,
             dtype: torch.dtype | None = None) -> Sam2VideoSegmenter:
        """Load a transformers SAM2 video checkpoint from a local folder.

        Args:
            path: folder with ``config.json`` and ``model.safetensors`` (or a sharded index), or an
                original SAM2 / SAM2.1 single ``.safetensors`` file.
            device: compute device for :meth:`segment`; ``None`` decides at call time.
            dtype: compute dtype; ``None`` gives bf16 on CUDA and float32 elsewhere.

        Raises:
            ValueError: missing files, a config of another model type, a corrupt or truncated
                safetensors file, or weights that do not fit the architecture.
        """
        path = Path(path).expanduser()
        return cls(_read_model(path), path, device, dtype)

    # ------------------------------------------------------------------ inference

    def _placement(self, device) -> tuple[torch.device, torch.dtype]:
        dev = torch.device(device) if device is not None else (self.device or torch.device("cpu"))
        dtype = self.dtype if self.dtype is not None else preferred_dtype(dev)
        if dev.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            logger.info("SAM2: %s on the CPU is slow and imprecise; using float32", dtype)
            dtype = torch.float32
        return dev, dtype

    def segment(self, frames: Tensor, points=None, labels=None, box=None, mask: Tensor | None = None,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                device: torch.device | str | None = None, threshold: float | None = 0.0) -> Tensor:
        """Segment one object through a video, prompted on frame 0.

        Args:
            frames: ``[T,H,W,3]`` float in 0..1.
            points: ``None`` or ``N`` (x, y) pixels of frame 0.
            labels: ``None`` (all 1) or ``N`` labels, 1 = object, 0 = not object.
            box: ``None`` or (x0, y0, x1, y1) pixels of frame 0.
            mask: ``None`` or ``[H,W]`` (or ``[1,H,W]``) initial mask of frame 0 in 0..1; cannot be
                combined with points or a box.
            callback: ``callback(step, total, preview)`` after every frame (preview: ``[H,W,3]``
                frame with the object tinted).
            should_stop: polled before every frame; when true, :class:`SegmentationStopped` is raised.
            device: compute device for this call (default: the segmenter's, else CPU).
            threshold: binarise logits at this value (SAM: 0); ``None`` returns sigmoid probabilities.

        Returns:
            ``[T,H,W]`` float32 masks in 0..1 on the CPU.
        """
        logits = self.segment_logits(frames, points, labels, box, mask, callback, should_stop, device)
        if threshold is None:
            return torch.sigmoid(logits)
        return (logits > float(threshold)).float()

    def segment_logits(self, frames: Tensor, points=None, labels=None, box=None, mask: Tensor | None = None,
                       callback: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                       device: torch.device | str | None = None) -> Tensor:
        """Like :meth:`segment` but return the upsampled mask logits ``[T,H,W]`` float32 on the CPU."""
        frames = _check_frames(frames)
        t_count, height, width = frames.shape[:3]
        prompt = points_to_prompt(points, labels, box, width, height)
        mask_t = _check_init_mask(mask, height, width)
        if mask_t is not None and not prompt.empty:
            raise ValueError("SAM2 segment: give either an initial mask or points/box, not both")
        if mask_t is None and prompt.empty:
            raise ValueError("SAM2 segment: no prompt; give points, a box or an initial mask for frame 0")
        dev, dtype = self._placement(device)
        size = self.image_size
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        self._place(dev, dtype)
        out = torch.empty(t_count, height, width, dtype=torch.float32)
        with torch.inference_mode():
            session = Sam2VideoInferenceSession(video_height=height, video_width=width, inference_device=dev,
                                                inference_state_device=dev, video_storage_device="cpu",
                                                dtype=dtype)
            for t in range(t_count):
                pixels = preprocess_frames(frames[t : t + 1].to(dev), size)
                session.add_new_frame(pixels, frame_idx=t)
            obj_idx = session.obj_id_to_idx(OBJECT_ID)
            if mask_t is not None:
                session.add_mask_inputs(obj_idx, 0, _mask_input(mask_t, size).to(dev))
            else:
                session.add_point_inputs(obj_idx, 0, _point_inputs(prompt, size))
            session.obj_with_new_inputs = [OBJECT_ID]
            for t in range(t_count):
                if should_stop is not None and should_stop():
                    raise SegmentationStopped(f"SAM2 segment: stopped before frame {t} of {t_count}")
                result = self.model(inference_session=session, frame_idx=t)
                logits = upsample_logits(result.pred_masks[:1], size, height, width)[0, 0]
                out[t] = logits.cpu()
                if callback is not None:
                    callback(t + 1, t_count, _preview(frames[t], out[t]))
            session.reset_inference_session()
        return out

    def _place(self, device: torch.device, dtype: torch.dtype) -> None:
        if dtype == torch.float32 and self._rounded:
            logger.info("SAM2: re-reading %s in float32 (the weights in memory were rounded to a lower precision)",
                        self.path)
            self.model = _read_model(self.path)
            self._rounded = False
        if dtype != torch.float32:
            self._rounded = True
        make_room([self.model], device)
        self.model.to(device=device, dtype=dtype)

    def offload(self) -> None:
        """Move the weights to the CPU (in their compute dtype) and release cached accelerator memory."""
        park([self.model])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _read_model(path: Path):
    """Check ``path`` and read its ``Sam2VideoModel`` in float32 on the CPU (eval mode, no gradients)."""
    if path.is_file():
        check_model(path)
        from .sam2_file import load_sam2_file

        return load_sam2_file(path, torch.float32)
    check_model_folder(path)
    try:
        from transformers import Sam2VideoConfig, Sam2VideoModel
    except ImportError as exc:
        raise ImportError("SAM2 needs transformers >= 4.56 with Sam2VideoModel (pip install -U transformers); "
                          f"import failed: {exc}") from exc
    try:
        config = Sam2VideoConfig.from_pretrained(str(path), local_files_only=True)
        model, info = Sam2VideoModel.from_pretrained(str(path), config=config, local_files_only=True,
                                                     dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise ValueError(f"SAM2 model folder {str(path)!r} could not be loaded: {exc}") from exc
    missing = sorted(info.get("missing_keys", ()))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        problem = f"missing weights {missing[:5]}" if missing else f"weights of the wrong shape {mismatched[:3]}"
        raise ValueError(f"SAM2 model folder {str(path)!r}: {problem}{' ...' if len(missing) > 5 else ''}; "
                         "the checkpoint does not match its config.json")
    model.eval().requires_grad_(False)
    logger.info("loaded SAM2 video model %s (image size %d)", path, model.config.image_size)
    return model


def _check_frames(frames) -> Tensor:
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"SAM2 segment: frames must be [T,H,W,3] RGB in 0..1, got {got}")
    frames = frames.float()
    if not torch.isfinite(frames).all():
        raise ValueError("SAM2 segment: frames hold NaN or inf values")
    return frames


def _check_init_mask(mask, height: int, width: int) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ValueError(f"SAM2 segment: mask must be a [H,W] tensor, got {type(mask).__name__}")
    m = mask.float()
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or tuple(m.shape) != (height, width):
        raise ValueError(f"SAM2 segment: initial mask must be [H,W] = [{height},{width}] like the frames, "
                         f"got {tuple(mask.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("SAM2 segment: initial mask holds NaN or inf values")
    if not bool((m > 0.5).any()):
        raise ValueError("SAM2 segment: initial mask is empty (no pixel above 0.5)")
    return m


def _mask_input(mask: Tensor, size: int) -> Tensor:
    """``[H,W]`` -> ``[1,1,S,S]`` binary float (as ``Sam2VideoProcessor.process_new_mask_for_video_frame``)."""
    m = mask[None, None].float()
    if tuple(m.shape[-2:]) != (size, size):
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (m >= 0.5).float()


def _point_inputs(prompt, size: int) -> dict[str, Tensor]:
    """Prompt in frame pixels -> ``point_coords [1,1,N,2]`` in model-square pixels, ``point_labels [1,1,N]``."""
    scale = torch.tensor([size / prompt.width, size / prompt.height])
    coords = prompt.points * scale
    labels = prompt.labels.to(torch.int32)
    if prompt.box is not None:
        corners = prompt.box.view(2, 2) * scale
        coords = torch.cat([corners, coords], dim=0)
        labels = torch.cat([torch.tensor([2, 3], dtype=torch.int32), labels])
    return {"point_coords": coords.view(1, 1, -1, 2).float(), "point_labels": labels.view(1, 1, -1)}


def _preview(frame: Tensor, logits: Tensor) -> Tensor:
    tint = torch.tensor([1.0, 0.25, 0.25])
    m = (logits > 0).float()[..., None]
    return frame.cpu() * (1.0 - 0.5 * m) + tint * 0.5 * m
