# SPDX-License-Identifier: Apache-2.0
"""Where model weights live: ComfyUI model folders per kind, listing and resolution with clear errors.

Public API:
    MODEL_KINDS                 kind -> sub-folder of ComfyUI's ``models/`` directory
    register_model_folders()    make every kind known to ComfyUI's ``folder_paths`` (idempotent)
    model_roots(kind)           the folders searched for a kind
    list_models(kind)           names a loader's picker shows (model folders and single weight files)
    resolve_model(kind, name, required=())   absolute path, or ValueError naming folders and files
    HUB_IDS                     the published model ids of each kind (named in errors)
    EXPECTED_FILES              kind -> what a model of that kind looks like on disk (named in errors)
    preferred_dtype(device)     bf16 on CUDA devices that support it, else float32
    COMFY_FOLDERS               ComfyUI's own model folders single weight files are picked from
    single_file_roots(folder)   where ComfyUI's ``models/<folder>`` lives (``folder_paths`` or the pack's root)
    find_single_file(folder, patterns)   the first ``.safetensors`` file of such a folder matching a pattern
    single_files(folder, patterns)       every such file, in pattern order
    FUN_INP_PATTERNS, FUN_CONTROL_PATTERNS   names of Wan2.1-Fun InP / Control single files
    SAM2_PATTERNS, DEPTH_ANYTHING_V2_PATTERNS   names of SAM2 / Depth Anything V2 single files
    SINGLE_FILE_SOURCES         kind -> ComfyUI folders and name patterns whose single files a loader lists too

Design notes:
    With ComfyUI, folders come from ``folder_paths`` (so ``extra_model_paths.yaml`` works); without
    it, from ``$GEN4D_MODELS_DIR/<sub-folder>`` (default ``./models``). A model is either a folder
    in diffusers / transformers layout (``config.json`` or ``model_index.json`` inside) or a single
    ``.safetensors`` file. Nothing is ever downloaded: a missing model is an error that says which
    folder to put it in, which files it must hold, and which published ids fit.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from pathlib import Path

import torch

__all__ = [
    "MODEL_KINDS",
    "register_model_folders",
    "model_roots",
    "list_models",
    "resolve_model",
    "preferred_dtype",
    "NO_MODELS",
    "HUB_IDS",
    "EXPECTED_FILES",
    "COMFY_FOLDERS",
    "single_file_roots",
    "find_single_file",
    "single_files",
    "SINGLE_FILE_SOURCES",
    "FUN_INP_PATTERNS",
    "FUN_CONTROL_PATTERNS",
    "SAM2_PATTERNS",
    "DEPTH_ANYTHING_V2_PATTERNS",
]

MODEL_KINDS: dict[str, str] = {
    "depth": "gen4d/depth",
    "sam2": "sam2",
    "video": "diffusers",
    "inpaint": "diffusers",
    "video_inpaint": "diffusers",
    "zero123": "gen4d/zero123",
    "sd_guidance": "diffusers",
    "orbital": "gen4d/diffusion4d",
    "trajectory": "gen4d/moge4d",
    "lpips": "gen4d/lpips",
}
HUB_IDS: dict[str, tuple[str, ...]] = {
    "depth": ("depth-anything/Depth-Anything-V2-Small-hf", "depth-anything/Depth-Anything-V2-Large-hf",
              "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf",
              "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"),
    "sam2": ("facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-small", "facebook/sam2.1-hiera-large"),
    "video": ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "THUDM/CogVideoX-5b-I2V", "THUDM/CogVideoX-5b",
              "stabilityai/stable-video-diffusion-img2vid-xt"),
    "inpaint": ("stabilityai/stable-diffusion-2-inpainting", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
    "video_inpaint": ("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "Wan-AI/Wan2.1-VACE-14B-diffusers",
                      "alibaba-pai/Wan2.1-Fun-V1.1-14B-InP"),
    "zero123": ("ashawkey/stable-zero123-diffusers",),
    "sd_guidance": ("stabilityai/stable-diffusion-2-1-base",),
    "orbital": (),
    "trajectory": ("Yanran21/MoGe4D",),
    "lpips": (),
}
_DIFFUSERS = "a diffusers folder: model_index.json plus one sub-folder per component, weights as .safetensors"
EXPECTED_FILES: dict[str, str] = {
    "depth": "a transformers folder: config.json and model.safetensors (or sharded, with its index), or an original "
             "Depth Anything V2 single file such as models/depthanything/depth_anything_v2_vitl_fp32.safetensors",
    "sam2": "a transformers SAM2 video folder: config.json and model.safetensors, or an original SAM2 / SAM2.1 single "
            "file such as models/sam2/sam2.1_hiera_large.safetensors",
    "video": _DIFFUSERS,
    "inpaint": _DIFFUSERS,
    "video_inpaint": _DIFFUSERS + " (or a Wan2.1-Fun release folder)",
    "zero123": _DIFFUSERS + " (unet, vae, image_encoder, clip_camera_projection, scheduler)",
    "sd_guidance": _DIFFUSERS + " (unet, vae, text_encoder, tokenizer, scheduler)",
    "orbital": _DIFFUSERS + " (vae, text_encoder, tokenizer, unet, scheduler of the base model; optionally "
                            "unet_4d and motion_magnitude)",
    "trajectory": "the MoGe4D release folder (4D-STraG/diffusion_pytorch_model.safetensors and its config) "
                  "next to the Wan2.1-Fun base folders",
    "lpips": "a single .safetensors file with the AlexNet LPIPS state dict",
}
_FOLDER_KEY = "gen4d_{kind}"
NO_MODELS = "(no models found)"
WEIGHT_SUFFIXES = (".safetensors",)
LAYOUT_MARKERS = ("config.json", "model_index.json")
# Releases in their own layouts, recognised by a file inside (kind -> extra markers).
KIND_MARKERS: dict[str, tuple[str, ...]] = {"trajectory": ("4D-STraG/diffusion_pytorch_model.safetensors",)}


def _folder_paths():
    try:
        return importlib.import_module("folder_paths")
    except ImportError:
        return None


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")


def register_model_folders() -> None:
    """Register ``models/<sub-folder>`` of every kind with ComfyUI (no-op without ComfyUI)."""
    fp = _folder_paths()
    if fp is None:
        return
    base = Path(fp.models_dir)
    for kind, sub in MODEL_KINDS.items():
        key = _FOLDER_KEY.format(kind=kind)
        existing = fp.folder_names_and_paths.get(key, ([], set()))[0]
        path = str(base / sub)
        if path not in existing:
            fp.add_model_folder_path(key, path)


def model_roots(kind: str) -> list[Path]:
    """Folders searched for models of ``kind``, in priority order."""
    _check_kind(kind)
    fp = _folder_paths()
    if fp is not None:
        register_model_folders()
        return [Path(p) for p in fp.get_folder_paths(_FOLDER_KEY.format(kind=kind))]
    return [Path(os.environ.get("GEN4D_MODELS_DIR", "models")).resolve() / MODEL_KINDS[kind]]


def _is_model_dir(path: Path, kind: str = "") -> bool:
    markers = LAYOUT_MARKERS + KIND_MARKERS.get(kind, ())
    return path.is_dir() and any((path / marker).is_file() for marker in markers)


def list_models(kind: str) -> list[str]:
    """Model folders (diffusers/transformers layout) and ``.safetensors`` files of ``kind``, by name, then
    the single files of ComfyUI's folders that :data:`SINGLE_FILE_SOURCES` names for the kind (by their
    path inside that folder, as ComfyUI's own loaders list them)."""
    names: list[str] = []
    for root in model_roots(kind):
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if _is_model_dir(path, kind) or (path.is_file() and path.suffix in WEIGHT_SUFFIXES):
                if path.name not in names:
                    names.append(path.name)
    for folder, patterns in SINGLE_FILE_SOURCES.get(kind, ()):
        for root in single_file_roots(folder):
            for path in single_files(folder, patterns, roots=[root]):
                name = path.relative_to(root).as_posix()
                if name not in names:
                    names.append(name)
    return names


def resolve_model(kind: str, name: str, required: tuple[str, ...] = ()) -> Path:
    """The path of model ``name`` of ``kind``, checked for the files a loader needs.

    Args:
        kind: a key of :data:`MODEL_KINDS`.
        name: a folder or file name as listed by :func:`list_models`, or an absolute path to a
            local diffusers / transformers folder.
        required: files that must exist inside a model folder (e.g. ``("config.json",)``).

    Raises:
        ValueError: naming the folders searched and the files expected.
    """
    _check_kind(kind)
    if not name or name == NO_MODELS:
        roots = ", ".join(str(r) for r in model_roots(kind))
        raise ValueError(f"no {kind} model selected; put a model folder or .safetensors file into {roots}"
                         + _hub_hint(kind))
    roots = model_roots(kind) + [r for folder, _ in SINGLE_FILE_SOURCES.get(kind, ())
                                 for r in single_file_roots(folder)]
    candidates = [Path(name)] if Path(name).is_absolute() else [root / name for root in roots]
    for path in candidates:
        if path.exists():
            missing = [f for f in required if not (path / f).is_file()] if path.is_dir() else []
            if missing:
                raise ValueError(f"{kind} model {str(path)!r} is missing {missing}; expected a complete folder "
                                 f"with {list(required)}")
            return path.resolve()
    searched = ", ".join(str(p) for p in candidates)
    raise ValueError(f"{kind} model {name!r} not found (looked at {searched}); put the model folder there"
                     + _hub_hint(kind))


# ComfyUI's folders of single-file weights (folder_paths names; the same sub-folders of ``models/``), and
# the folders of the community packs most users have for SAM2 and Depth Anything.
COMFY_FOLDERS = ("diffusion_models", "text_encoders", "vae", "clip_vision", "loras", "sam2", "depthanything")

# Wan2.1-Fun single files as ComfyUI users name them (Comfy-Org's ``wan2.1_fun_inp_*``, Kijai's
# ``Wan2_1-Fun-V1_1-14B-InP_*``); matched without regard to case.
FUN_INP_PATTERNS = ("*fun*inp*.safetensors",)
FUN_CONTROL_PATTERNS = ("*fun*control*.safetensors",)
# SAM2 / SAM2.1 files as ComfyUI-segment-anything-2 names them (``sam2.1_hiera_large.safetensors``), and Depth
# Anything V2 files as ComfyUI-DepthAnythingV2 names them (``depth_anything_v2_vitl_fp32.safetensors``).
SAM2_PATTERNS = ("*sam2*.safetensors",)
DEPTH_ANYTHING_V2_PATTERNS = ("*depth*anything*v2*.safetensors",)
SINGLE_FILE_SOURCES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "video_inpaint": (("diffusion_models", FUN_INP_PATTERNS),),
    "sam2": (("sam2", SAM2_PATTERNS),),
    "depth": (("depthanything", DEPTH_ANYTHING_V2_PATTERNS),),
}


def single_file_roots(folder: str) -> list[Path]:
    """The folders of ComfyUI's ``models/<folder>`` (one of :data:`COMFY_FOLDERS`): from ``folder_paths``
    inside ComfyUI (``extra_model_paths.yaml`` included; a folder it does not know is its ``models_dir``'s
    sub-folder), else ``$GEN4D_MODELS_DIR/<folder>``."""
    if folder not in COMFY_FOLDERS:
        raise ValueError(f"single-file folder must be one of {list(COMFY_FOLDERS)}, got {folder!r}")
    fp = _folder_paths()
    if fp is not None:
        try:
            return [Path(p) for p in fp.get_folder_paths(folder)]
        except (KeyError, AttributeError):
            base = getattr(fp, "models_dir", None)
            return [Path(base) / folder] if base else []
    return [Path(os.environ.get("GEN4D_MODELS_DIR", "models")).resolve() / folder]


def single_files(folder: str, patterns: tuple[str, ...], roots: list[Path] | None = None) -> list[Path]:
    """Every ``.safetensors`` file (sub-folders included) of :func:`single_file_roots` ``(folder)`` whose
    name matches a glob pattern (case-insensitive), in pattern order, names sorted within one pattern."""
    found: list[Path] = []
    for pattern in patterns:
        for root in roots if roots is not None else single_file_roots(folder):
            if not root.is_dir():
                continue
            hits = sorted(p for p in root.rglob("*") if p.suffix == ".safetensors"
                          and fnmatch.fnmatch(p.name.lower(), pattern.lower()) and p.is_file())
            found.extend(p for p in hits if p not in found)
    return found


def find_single_file(folder: str, patterns: tuple[str, ...]) -> Path | None:
    """The first file :func:`single_files` gives; None when none matches."""
    hits = single_files(folder, patterns)
    return hits[0] if hits else None


def _hub_hint(kind: str) -> str:
    files = EXPECTED_FILES.get(kind)
    hint = f"; it must be {files}" if files else ""
    ids = HUB_IDS.get(kind, ())
    if ids:
        hint += (f". Published models of this kind: {', '.join(ids)} (download one yourself, e.g. with "
                 "huggingface-cli, into that folder; the loaders never download)")
    return hint


def preferred_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA devices that support it (numerically safe for inference), float32 elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
