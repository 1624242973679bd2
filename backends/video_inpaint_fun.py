# SPDX-License-Identifier: Apache-2.0
"""Video inpainting with Wan2.1-Fun InP (original Wan layout) and MoGe4D's 4D-ViSM LoRA (App. F.2).

Public API:
    FunInpainter            ``inpaint(frames [T,H,W,3], masks [T,H,W], prompt, ...) -> [T,H,W,3]``;
                            ``apply_vism_lora(strength) -> bool``
    load_fun_inpainter(path, dtype)   load (and cache) a Wan2.1-Fun InP folder, with its ViSM LoRA if present
    find_fun_inp_layout(path)         the files of such a folder, or ValueError naming what is missing
    find_fun_inp_base(path)           the Wan2.1-Fun InP base folder under ``path`` (or None)
    find_fun_inp_file()               a Wan2.1-Fun InP single file of ComfyUI's models/diffusion_models (or None)
    find_vism_lora(root, base)        the 4D-ViSM LoRA file next to the model (or None)
    inp_condition_mask(mask, latent_hw)   binary hole mask -> the 4 mask channels of the InP input
    masked_video(video, mask)         frames in [-1,1] with the holes set to 0 (0.5 grey)
    lora_deltas(state, targets)       parse an official (kohya-style) LoRA state dict
    FunInpLayout, VISM_LORA_DIR, VISM_LORA_FILE, VISM_LORA_ALT, VISM_LORA_STRENGTH, VISM_SHIFT, LORA_PREFIX

Design notes:
    Model folder. ``alibaba-pai/Wan2.1-Fun-V1.1-14B-InP`` in its release layout (``config.json``
    with ``in_dim`` 36, ``diffusion_pytorch_model*.safetensors`` in the original Wan naming,
    ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/`` tokenizer,
    ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``), given either directly or as
    any folder holding it up to 3 levels down (e.g. MoGe4D's ``./models`` folder, which also holds
    the Control base: the InP base is the one whose ``config.json`` says ``in_dim: 36``). Names
    are mapped to diffusers' ``WanTransformer3DModel`` with ``backends.trajectory_dit_names``;
    the VAE, UMT5 and CLIP loaders are those of ``backends.wan`` (shared with ``backends.trajectory_dit``).

    Single files (ComfyUI layout). The transformer may instead be one file of ComfyUI's
    ``models/diffusion_models`` in the original Wan naming (optionally ``model.diffusion_model.``
    prefixed; fp16, bf16, fp32, fp8 e4m3fn, or fp8 "scaled" with a ``scale_weight`` per weight, applied
    in float32 while reading), chosen directly or found by name (``find_fun_inp_file``) when the given
    folder has no InP base (e.g. a MoGe4D folder holding only ``4D-ViSM``); its config comes from its
    shapes (heads 128 wide, as Wan). The VAE, UMT5 (+ tokenizer, also the SentencePiece model ComfyUI's
    umt5 file stores) and CLIP then come from the folder or ComfyUI's ``models/vae``, ``text_encoders``,
    ``clip_vision``; a LoRA not beside the model from ``models/loras`` (``*vism*.safetensors``).

    ViSM LoRA location (first found): ``<folder>/4D-ViSM/lora_diffusion_pytorch_model.safetensors``
    (the MoGe4D release file), ``<folder>/vism_lora.safetensors``, the same two inside the InP
    base folder, then ``<InP base>/../4D-ViSM/...`` (MoGe4D's ``./models`` layout, where the
    base and ``4D-ViSM`` are siblings). A ``4D-ViSM`` folder holding one other ``.safetensors``
    file is accepted too. Without any, ``apply_vism_lora`` returns False.

    LoRA naming (official ``MoGe4D/utils/lora_utils.py``, kohya style): one entry per ``nn.Linear``
    of the original-naming transformer, ``lora_unet__<module path with '.' -> '_'>.{lora_down.weight,
    lora_up.weight, alpha}`` (e.g. ``lora_unet__blocks_0_self_attn_q``; one underscore after
    ``lora_unet`` is accepted as well). The merge is the official one:
    ``W = W_0 + s * (alpha / rank) * (up @ down)`` with rank = ``up.shape[1]`` (scale 1 without
    ``alpha``), computed in float32 and stored in the weight's dtype. ``W_0`` is the loaded
    weight: while no LoRA is merged it is the current weight; afterwards it is read again from
    the checkpoint (exact, no second copy of the 14B weights in memory), so a new strength never
    stacks on the previous one. Keys that match no Linear of the model are an error listing them.

    Inpainting (official ``pipeline_wan_fun_inpaint.py`` / ``infer.py`` stage 2, App. F.2 eq.
    ``z = concat(z_t, z_rendered, m_latent)``): the transformer input is ``[noisy latents (16) |
    mask (4) | masked-video latents (16)]`` = 36 channels. The masked video is the frames in
    [-1,1] with holes set to 0 (0.5 grey); its latents are the Wan VAE posterior mode,
    normalised with Wan's latent mean / std. The mask channel is ``1 - hole`` (binarised at
    0.5), the first frame repeated 4 times so that every latent frame owns 4 video frames, those
    4 stacked as channels, then bilinearly resized to the latent grid. When every pixel is a
    hole both conditions are zeros (as the official pipeline). CLIP condition: the official
    stage 2 passes no image, i.e. zero CLIP features (``clip_condition="zeros"``, default);
    ``"first_frame"`` encodes the first input frame (open-clip ViT-H/14, penultimate layer), the
    kind of condition the LoRA saw in 90% of its training steps (there: the true first frame).
    Sampler: diffusers' flow-matching Euler scheduler with shift 5 (the official stage-2
    scheduler is built from ``wan_civitai.yaml``, shift 5; its ``shift=3`` argument only reaches
    the UniPC / DPM++ samplers), classifier-free guidance ``v_u + w (v_c - v_u)`` on the prompt,
    50 steps, guidance 6, noise level 1 (pure noise) by default. ``noise_level`` σ < 1 starts from
    the encoded frames noised to the first scheduler step whose σ is at most that level
    (``x_σ = (1 - σ) x_0 + σ ε``); with ``paste_mask`` (CoCo4D eq. 7) only the pasted latent cells
    are noised (to ``paste_noise_level``) and the known cells stay clean, as
    ``backends.video_inpaint`` (shared code: ``backends.wan.first_step`` / ``start_latents``).

    Resize policy (as ``backends.video_inpaint``): sides resized to the nearest multiple of 16
    (VAE 8 x patch 2), the frame count padded to ``4k + 1`` by repeating the last frame, the
    result cropped and resized back; pixels with ``mask == 0`` are returned exactly. Networks stay
    on the CPU between calls and move to the call-time device per stage (text / image encoders,
    VAE, transformer); weights in ``dtype`` (bf16 on CUDA from the loader node), VAE in float32,
    attention through PyTorch SDPA. Noise comes from a CPU generator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.moge4d.vism import VISM_INPAINT_DEFAULTS
from .inpaint import (
    check_frames_and_masks,
    check_paste,
    check_sampling,
    composite,
    cpu_generator,
    default_device,
    video_to_model_size,
)
from .memory import modules_on, park
from .model_folders import FUN_INP_PATTERNS, find_single_file, single_files
from .sequence_parallel import (
    ParallelOptions,
    Session,
    active_session,
    guided_velocity,
    launch,
    wan_context_parallel,
)
from .wan import (
    BASE_CLIP,
    BASE_T5,
    BASE_VAE,
    CLIP_MEAN,
    CLIP_STD,
    PATCH,
    SPATIAL,
    TEMPORAL,
    TOKENIZER_HINT,
    WAN_KEEP_FP32,
    WAN_LATENT_MEAN,
    WAN_LATENT_STD,
    assign_weights,
    dit_key,
    find_umt5_tokenizer,
    find_wan_component,
    first_step,
    flow_sigmas,
    latent_cells,
    load_umt5,
    load_wan_clip,
    load_wan_vae,
    normalise_latents,
    params_on_meta,
    read_indexed,
    read_weights,
    shard_index,
    start_latents,
    wan_dit_config,
    wan_dit_shapes,
)

__all__ = [
    "FunInpainter",
    "FunInpLayout",
    "load_fun_inpainter",
    "find_fun_inp_layout",
    "find_fun_inp_base",
    "find_fun_inp_file",
    "VISM_LORA_PATTERNS",
    "find_vism_lora",
    "inp_condition_mask",
    "masked_video",
    "lora_deltas",
    "clear_cache",
    "INP_IN_CHANNELS",
    "VISM_LORA_DIR",
    "VISM_LORA_FILE",
    "VISM_LORA_ALT",
    "VISM_LORA_STRENGTH",
    "VISM_SHIFT",
    "LORA_PREFIX",
]

logger = logging.getLogger(__name__)

LATENT = 16
INP_IN_CHANNELS = 2 * LATENT + 4  # noise | mask (4) | masked-video latents
VISM_LORA_DIR = "4D-ViSM"
VISM_LORA_FILE = "lora_diffusion_pytorch_model.safetensors"
VISM_LORA_ALT = "vism_lora.safetensors"
_DEFAULTS = {k: float(v) for k, v in VISM_INPAINT_DEFAULTS.items()}
VISM_LORA_STRENGTH = _DEFAULTS["lora_strength"]
VISM_SHIFT = 5.0
CLIP_TOKENS = 257
LORA_PREFIX = "lora_unet"
_LORA_ELEMS = {"lora_up.weight", "lora_down.weight", "alpha"}


# --------------------------------------------------------------------------- layout


def _inp_config(folder: Path) -> dict | None:
    """The folder's Wan ``config.json`` when it describes an InP transformer (``in_dim`` 36) beside the
    release VAE or the transformer's weights."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return None
    if not (folder / BASE_VAE).is_file() and not any(folder.glob("diffusion_pytorch_model*.safetensors")):
        return None
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    try:
        in_dim = int(cfg.get("in_dim", cfg.get("in_channels", -1)))
    except (TypeError, ValueError):
        return None
    return cfg if in_dim == INP_IN_CHANNELS else None


def find_fun_inp_base(path: str | Path) -> Path | None:
    """The Wan2.1-Fun InP base folder: ``path`` itself or a sub-folder up to 3 levels down whose
    ``config.json`` has ``in_dim`` 36 next to ``Wan2.1_VAE.pth`` or the transformer's weights; None when
    there is none."""
    root = Path(path)
    if not root.is_dir():
        return None
    frontier = [root]
    for depth in range(4):
        nxt = []
        for d in frontier:
            if _inp_config(d) is not None:
                return d
            if depth < 3:
                try:
                    nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
                except OSError:
                    continue
        frontier = nxt
    return None


def find_vism_lora(root: Path, base: Path) -> Path | None:
    """The 4D-ViSM LoRA file for a model folder ``root`` whose InP base is ``base`` (see the notes).

    Raises:
        ValueError: a ``4D-ViSM`` folder holds several ``.safetensors`` files and none is the release file.
    """
    places: list[Path] = []
    for d in (root, base, base.parent):
        if d not in places:
            places.append(d)
    for d in places:
        for candidate in (d / VISM_LORA_DIR / VISM_LORA_FILE, d / VISM_LORA_ALT):
            if candidate.is_file():
                return candidate
        folder = d / VISM_LORA_DIR
        if folder.is_dir():
            files = sorted(folder.glob("*.safetensors"))
            if len(files) == 1:
                return files[0]
            if len(files) > 1:
                raise ValueError(f"video_inpaint model {str(root)!r}: {folder} holds {len(files)} .safetensors files "
                                 f"({', '.join(f.name for f in files)}); expected the 4D-ViSM release file "
                                 f"{VISM_LORA_FILE} (or a single LoRA file)")
    return None


@dataclass(frozen=True)
class FunInpLayout:
    """The files of a Wan2.1-Fun InP model folder (+ optional 4D-ViSM LoRA)."""

    root: Path
    base: Path
    shards: tuple[Path, ...]
    vae: Path
    t5: Path
    tokenizer: Path
    clip: Path | None
    lora: Path | None

    def files(self) -> list[Path]:
        return [p for p in (*self.shards, self.vae, self.t5, self.clip, self.lora) if p is not None]


VISM_LORA_PATTERNS = ("*4d*vism*.safetensors", "*vism*.safetensors")


def find_fun_inp_file() -> Path | None:
    """A Wan2.1-Fun InP transformer single file of ComfyUI's ``models/diffusion_models`` (names of
    ``model_folders.FUN_INP_PATTERNS``, any case; the first whose header says 36 input channels, a
    ``14B`` one first, as the 4D-ViSM LoRA is made for it); None when there is none."""
    files = single_files("diffusion_models", FUN_INP_PATTERNS)
    files.sort(key=lambda p: "14b" not in p.name.lower())
    for f in files:
        try:
            if wan_dit_shapes(f)["patch_embedding.weight"][1] == INP_IN_CHANNELS:
                return f
        except ValueError:
            continue
    return None


def _check_inp_file(path: Path, what: str) -> None:
    patch = wan_dit_shapes(path)["patch_embedding.weight"]
    if patch[1] != INP_IN_CHANNELS:
        raise ValueError(f"{what}: {path} is a Wan transformer with {patch[1]} input channels; expected a "
                         f"Wan2.1-Fun InP one with {INP_IN_CHANNELS} (noise 16 | mask 4 | masked video 16), "
                         f"e.g. wan2.1_fun_inp_14B_bf16.safetensors")


def find_fun_inp_layout(path: str | Path) -> FunInpLayout:
    """Locate every file of a Wan2.1-Fun InP model (see the module notes): a release folder, a folder
    holding one (e.g. MoGe4D's models folder), or a single transformer file (ComfyUI layout); components
    the folder lacks come from ComfyUI's ``models/diffusion_models``, ``vae``, ``text_encoders``,
    ``clip_vision`` and ``loras``.

    Raises:
        ValueError: not a folder or file, no InP transformer (neither a folder whose ``config.json`` says
            ``in_dim`` 36 nor an InP single file), a single file of another kind, or missing VAE /
            text-encoder / tokenizer files.
    """
    given = Path(path)
    what = f"video_inpaint model {str(given)!r}"
    single: Path | None = None
    if given.is_file():
        single, root = given, given.parent
        _check_inp_file(single, what)
    elif given.is_dir():
        root = given
    else:
        raise ValueError(f"{what} is not a folder or file; expected alibaba-pai/Wan2.1-Fun-V1.1-14B-InP (release "
                         f"layout), a folder holding it (e.g. MoGe4D's models folder), or a Wan2.1-Fun InP single "
                         f"file in ComfyUI's models/diffusion_models")
    base = find_fun_inp_base(root) if single is None else None
    shards = tuple(sorted(base.glob("diffusion_pytorch_model*.safetensors"))) if base is not None else ()
    if base is None:
        base = root
    if not shards:
        single = single or find_fun_inp_file()
        if single is None:
            raise ValueError(f"{what}: no Wan2.1-Fun InP transformer found: neither a base folder (at most 3 "
                             f"levels down, config.json saying in_dim {INP_IN_CHANNELS}, diffusion_pytorch_model"
                             f"*.safetensors) nor a single file named like {FUN_INP_PATTERNS[0]} in ComfyUI's "
                             f"models/diffusion_models; put alibaba-pai/Wan2.1-Fun-V1.1-14B-InP there, or "
                             f"wan2.1_fun_inp_14B_bf16.safetensors into models/diffusion_models")
        shards = (single,)
    missing = []
    vae = find_wan_component(base, "vae", (BASE_VAE,))
    if vae is None:
        missing.append(f"{BASE_VAE} (or vae/, or wan_2.1_vae.safetensors in ComfyUI's models/vae)")
    t5 = find_wan_component(base, "t5", (BASE_T5, "models_t5_umt5-xxl-enc-fp32.pth"))
    if t5 is None:
        missing.append(f"{BASE_T5} (or text_encoder/, or umt5_xxl_*.safetensors in ComfyUI's models/text_encoders)")
    tokenizer = find_umt5_tokenizer(base, t5)
    if tokenizer is None and t5 is not None:
        missing.append(TOKENIZER_HINT)
    if missing:
        raise ValueError(f"{what}: the Wan2.1-Fun InP model in {str(base)!r} is incomplete; missing: "
                         f"{'; '.join(missing)}")
    clip = find_wan_component(base, "clip", (BASE_CLIP,))
    lora = find_vism_lora(root, base) or find_single_file("loras", VISM_LORA_PATTERNS)
    return FunInpLayout(root, base, shards, vae, t5, tokenizer, clip, lora)


# --------------------------------------------------------------------------- conditions


def masked_video(video: Tensor, mask: Tensor) -> Tensor:
    """Frames ``video [B,3,T,H,W]`` in [-1,1] with the holes (``mask [B,1,T,H,W]`` binary, 1 = hole) set
    to 0, i.e. 0.5 grey (the Wan InP / ViSM training convention)."""
    return video * (1.0 - mask)


def inp_condition_mask(hole: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """The 4 mask channels of the Wan-Fun InP input (App. F.2's ``m_latent``).

    Args:
        hole: ``[T,H,W]`` binary (1 = hole), ``T = 4k + 1``.
        latent_hw: the latent grid ``(h, w)``.

    Returns:
        ``[4, k + 1, h, w]``: ``1 - hole`` with the first frame repeated 4 times, each group of 4
        consecutive frames stacked as the channels of one latent frame, bilinearly resized
        (``align_corners=False``) to the latent grid.
    """
    keep = 1.0 - hole.float()
    t, hh, ww = keep.shape
    if (t - 1) % TEMPORAL:
        raise ValueError(f"inp_condition_mask: {t} frames; expected 4k+1")
    keep = torch.cat([keep[:1].expand(TEMPORAL, hh, ww), keep[1:]])  # [4(k+1), H, W]
    keep = keep.reshape(-1, TEMPORAL, hh, ww)  # [k+1, 4, H, W]
    keep = F.interpolate(keep, size=tuple(int(s) for s in latent_hw), mode="bilinear", align_corners=False)
    return keep.permute(1, 0, 2, 3).contiguous()


# --------------------------------------------------------------------------- LoRA


def _lora_module_name(layer: str) -> str | None:
    """``lora_unet__blocks_0_self_attn_q`` (or ``lora_unet_blocks_...``) -> ``blocks_0_self_attn_q``."""
    if not layer.startswith(LORA_PREFIX + "_"):
        return None
    return layer[len(LORA_PREFIX):].lstrip("_")


def lora_deltas(state: dict[str, Tensor], targets: dict[str, tuple[str, tuple[int, int]]],
                what: str = "4D-ViSM LoRA") -> dict[str, tuple[Tensor, Tensor, float]]:
    """Parse an official (kohya-style) LoRA state dict.

    Args:
        state: ``{"lora_unet__<official module, '.' -> '_'>.{lora_down.weight,lora_up.weight,alpha}": tensor}``.
        targets: ``{"<official module, '.' -> '_'>": (our module name, (out_features, in_features))}``.
        what: name used in errors.

    Returns:
        ``{our module name: (up [out,r], down [r,in], alpha / r)}`` (scale 1 without ``alpha``).

    Raises:
        ValueError: keys that name no Linear of the model (all listed), text-encoder entries,
            incomplete entries, or factor shapes that do not fit the layer.
    """
    groups: dict[str, dict[str, Tensor]] = defaultdict(dict)
    for key, value in state.items():
        layer, _, elem = key.partition(".")
        groups[layer][elem] = value
    unknown: list[str] = []
    problems: list[str] = []
    out: dict[str, tuple[Tensor, Tensor, float]] = {}
    for layer, elems in groups.items():
        name = _lora_module_name(layer)
        if name is None or name not in targets:
            unknown.append(layer + (" (text-encoder LoRA: not supported)" if layer.startswith("lora_te") else ""))
            continue
        extra = sorted(set(elems) - _LORA_ELEMS)
        if extra or "lora_up.weight" not in elems or "lora_down.weight" not in elems:
            problems.append(f"{layer}: has {sorted(elems)}; expected lora_down.weight, lora_up.weight (+ alpha)")
            continue
        up, down = elems["lora_up.weight"], elems["lora_down.weight"]
        ours, (n_out, n_in) = targets[name]
        if up.dim() != 2 or down.dim() != 2 or up.shape[1] != down.shape[0] or tuple(up.shape[:1]) != (n_out,) \
                or down.shape[1] != n_in:
            problems.append(f"{layer}: up {tuple(up.shape)} / down {tuple(down.shape)} do not fit the layer "
                            f"[{n_out}, {n_in}]")
            continue
        rank = int(up.shape[1])
        scale = float(elems["alpha"].float().item()) / rank if "alpha" in elems else 1.0
        out[ours] = (up, down, scale)
    if unknown:
        shown = ", ".join(sorted(unknown)[:20]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 20 else "")
        raise ValueError(f"{what}: {len(unknown)} LoRA layer(s) match no Linear layer of the Wan2.1-Fun InP "
                         f"transformer: {shown}. Expected the official naming lora_unet__<module>, e.g. "
                         f"lora_unet__blocks_0_self_attn_q")
    if problems:
        raise ValueError(f"{what}: malformed LoRA entries: {'; '.join(problems[:10])}")
    if not out:
        raise ValueError(f"{what}: the file holds no LoRA layers")
    return out


# --------------------------------------------------------------------------- loading


def _shard_index(layout: FunInpLayout) -> tuple[dict[str, tuple], dict[str, tuple[int, ...]]]:
    """diffusers parameter name -> (file, name in the file, fp8 scale name or None), and shapes, for the
    whole transformer."""

    index: dict[str, tuple] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    skipped: list[str] = []
    for ours, (shard, official, shape, scale) in shard_index(layout.shards).items():
        if not ours.startswith("wan."):
            skipped.append(official)
            continue
        index[ours[len("wan."):]] = (shard, official, scale)
        shapes[ours[len("wan."):]] = shape
    if skipped:
        logger.info("%s: %d tensor(s) unused for inpainting (e.g. %s)", layout.base, len(skipped), skipped[0])
    return index, shapes


def _load_transformer(layout: FunInpLayout, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    what = f"Wan2.1-Fun InP transformer {layout.shards[0] if len(layout.shards) == 1 else layout.base}"
    index, shapes = _shard_index(layout)
    cfg = _config(layout)
    patch = shapes.get("patch_embedding.weight")
    if patch is None or patch[1] != INP_IN_CHANNELS:
        got = "no patch_embedding" if patch is None else f"{patch[1]} input channels"
        raise ValueError(f"{what}: {got}; Wan2.1-Fun InP takes {INP_IN_CHANNELS} (noise 16 | mask 4 | masked "
                         f"video 16)")
    dim, heads = int(cfg.get("dim", patch[0])), int(cfg.get("num_heads", 40))
    if dim % heads:
        raise ValueError(f"{what}: dim {dim} is not divisible by num_heads {heads}")
    emb = "condition_embedder."
    image = shapes.get(emb + "image_embedder.norm1.weight")
    with params_on_meta():
        model = WanTransformer3DModel(
            patch_size=(1, PATCH, PATCH), num_attention_heads=heads, attention_head_dim=dim // heads,
            in_channels=INP_IN_CHANNELS, out_channels=int(cfg.get("out_dim", LATENT)),
            text_dim=int(shapes.get(emb + "text_embedder.linear_1.weight", (0, cfg.get("text_dim", 4096)))[1]),
            freq_dim=int(shapes.get(emb + "time_embedder.linear_1.weight", (0, cfg.get("freq_dim", 256)))[1]),
            ffn_dim=int(cfg.get("ffn_dim", 13824)), num_layers=int(cfg.get("num_layers", 40)), cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=float(cfg.get("eps", 1e-6)),
            image_dim=None if image is None else int(image[0]), added_kv_proj_dim=None if image is None else dim)
    state = read_indexed(index, dtype, WAN_KEEP_FP32)
    assign_weights(model, state, dtype, what, keep_fp32=WAN_KEEP_FP32)
    return model.eval().requires_grad_(False), index


def _config(layout: FunInpLayout) -> dict:
    """The transformer's Wan config: the base folder's ``config.json`` (release layout), completed and
    checked against the weights' shapes (the only source for a single file)."""
    cfg = _inp_config(layout.base) or {}
    if len(layout.shards) == 1:
        cfg = wan_dit_config(wan_dit_shapes(layout.shards[0]), cfg)
    return cfg


_CACHE: OrderedDict[tuple, FunInpainter] = OrderedDict()
_CACHE_SIZE = 1


def load_fun_inpainter(path: str | Path, dtype: torch.dtype = torch.float32) -> FunInpainter:
    """Load (once per folder, file stamps and dtype; kept on the CPU) a Wan2.1-Fun InP folder.

    The 4D-ViSM LoRA is found (see the notes) but not merged: call ``apply_vism_lora(strength)``.

    Raises:
        ValueError: incomplete folder (naming the missing files), unreadable files, or checkpoints
            whose names / shapes do not fit (naming the keys).
    """
    layout = find_fun_inp_layout(path)
    stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in layout.files())
    key = (str(layout.root.resolve()), str(dtype), stamps)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    _CACHE.clear()  # one model of this size at a time
    transformer, index = _load_transformer(layout, dtype)
    vae = load_wan_vae(layout.vae)
    tokenizer, text = load_umt5(layout.t5, layout.tokenizer, dtype)
    cfg = _config(layout)
    model = FunInpainter(transformer=transformer, vae=vae, tokenizer=tokenizer, text_encoder=text, layout=layout,
                         dtype=dtype, weight_index=index, max_sequence_length=min(int(cfg.get("text_len", 512)), 512))
    _CACHE[key] = model
    logger.info("loaded Wan2.1-Fun InP video inpainter %s (%s); 4D-ViSM LoRA: %s", layout.base, dtype,
                layout.lora if layout.lora is not None else "none")
    return model


def clear_cache() -> None:
    """Forget every loaded Wan2.1-Fun InP model."""
    _CACHE.clear()


# --------------------------------------------------------------------------- the inpainter


@dataclass(eq=False)
class FunInpainter:
    """A loaded Wan2.1-Fun InP model used as a masked video inpainter (4D-ViSM's backbone).

    Args:
        transformer: diffusers ``WanTransformer3DModel`` with 36 input channels.
        vae: diffusers ``AutoencoderKLWan`` (float32).
        tokenizer, text_encoder: UMT5.
        layout: the model's files (``layout.lora``: the 4D-ViSM LoRA or None).
        dtype: transformer / encoder dtype.
        weight_index: diffusers parameter name -> (shard, official name), to re-read original weights.
        device: a fixed compute device; ``None`` asks ``device_fn`` at every call.
        device_fn: the call-time device lookup (the node layer binds ComfyUI's).
        shift: flow-matching shift of the sampler (official stage 2: 5).
        clip_condition: ``"zeros"`` (official stage-2 inference) or ``"first_frame"``.
        max_sequence_length: prompt tokens (Wan: 512).
        parallel: ``backends.sequence_parallel.ParallelOptions`` with two or more local devices: the
            transformer's sampling runs sequence-parallel in one worker per device (``run_parallel``
            sets it for a block); under ``torchrun`` the process group's session is used instead.
    """

    transformer: nn.Module
    vae: nn.Module
    tokenizer: object
    text_encoder: nn.Module
    layout: FunInpLayout
    dtype: torch.dtype
    weight_index: dict[str, tuple[Path, str]] = field(repr=False)
    device: torch.device | None = None
    device_fn: Callable[[], torch.device] = field(default=default_device, repr=False)
    shift: float = VISM_SHIFT
    clip_condition: str = "zeros"
    max_sequence_length: int = 512
    image_encoder: nn.Module | None = field(default=None, repr=False)
    _lora: dict[str, tuple[Tensor, Tensor, float]] | None = field(default=None, repr=False)
    _lora_strength: float = 0.0
    parallel: ParallelOptions | None = None

    @property
    def multiple(self) -> int:
        """Sides must be multiples of this (VAE down-scaling x transformer patch)."""
        return SPATIAL * int(self.transformer.config.patch_size[1])

    @property
    def temporal(self) -> int:
        return TEMPORAL

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def lora_path(self) -> Path | None:
        """The 4D-ViSM LoRA file, or None."""
        return self.layout.lora

    @property
    def lora_strength(self) -> float:
        """The strength currently merged (0 = base weights)."""
        return self._lora_strength

    def _modules(self) -> list[nn.Module]:
        return [m for m in (self.transformer, self.vae, self.text_encoder, self.image_encoder) if m is not None]

    def offload(self) -> None:
        """Park the networks on the CPU."""
        park(self._modules())
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


    @contextlib.contextmanager
    def run_parallel(self, options: ParallelOptions | None):
        """Within the block, ``inpaint`` samples on ``options``' devices (None or one device: as usual)."""
        previous, self.parallel = self.parallel, options
        try:
            yield self
        finally:
            self.parallel = previous

    def _device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else self.device_fn()

    # ----------------------------------------------------------------- LoRA

    def _lora_targets(self) -> dict[str, tuple[str, tuple[int, int]]]:
        targets = {}
        for name, module in self.transformer.named_modules():
            if isinstance(module, nn.Linear) and name + ".weight" in self.weight_index:
                official = dit_key(self.weight_index[name + ".weight"][1])[: -len(".weight")]
                targets[official.replace(".", "_")] = (name, (module.out_features, module.in_features))
        return targets

    def _read_original(self, name: str) -> Tensor:
        """The checkpoint's weight of Linear ``name`` in float32 (fp8 scales applied), read alone."""
        return read_indexed({"w": self.weight_index[name + ".weight"]}, torch.float32)["w"]

    @torch.no_grad()
    def apply_vism_lora(self, strength: float = VISM_LORA_STRENGTH) -> bool:
        """Merge the 4D-ViSM LoRA at ``strength`` (official 0.55): ``W = W_0 + s (alpha/r) up @ down``.

        Repeated calls are exact: the weights always become ``W_0`` plus the new strength's update
        (``strength = 0`` restores ``W_0``), never the sum of several calls.

        Returns:
            True when the LoRA file exists and is merged; False when the model has none.

        Raises:
            ValueError: non-finite strength, or a LoRA file whose keys / shapes do not fit the model
                (naming them; the weights are then left unchanged).
        """
        if self.layout.lora is None:
            return False
        s = float(strength)
        if not math.isfinite(s):
            raise ValueError(f"apply_vism_lora: strength must be a finite number, got {strength}")
        if self._lora is None:
            what = f"4D-ViSM LoRA {self.layout.lora}"
            self._lora = lora_deltas(read_weights(self.layout.lora), self._lora_targets(), what)
        if s == self._lora_strength:
            return True
        names = list(self._lora)
        device = self._device()
        for name in names:  # one layer at a time: the originals are never all in memory together
            module = self.transformer.get_submodule(name)
            weight = module.weight
            base = self._read_original(name) if self._lora_strength != 0.0 else weight.data
            if s == 0.0:
                weight.data.copy_(base.to(weight.dtype))
                continue
            up, down, scale = self._lora[name]
            merged = base.to(device, torch.float32) + (s * scale) * (up.to(device, torch.float32)
                                                                     @ down.to(device, torch.float32))
            weight.data.copy_(merged.to(weight.dtype))
        self._lora_strength = s
        logger.info("4D-ViSM LoRA %s merged at strength %g (%d layers)", self.layout.lora, s, len(names))
        return True

    # ----------------------------------------------------------------- encoders

    def _encode_text(self, texts: list[str], device: torch.device) -> Tensor:
        """UMT5 hidden states ``[B,512,C]``, zero past each prompt's tokens (Wan's convention)."""
        texts = [" ".join(str(t).split()) for t in texts]
        tok = self.tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, attention = tok.input_ids.to(device), tok.attention_mask.to(device)
        with modules_on(device, self.text_encoder):
            hidden = self.text_encoder(input_ids=ids, attention_mask=attention).last_hidden_state
        return hidden * attention[..., None].to(hidden.dtype)

    def _image_dim(self) -> int:
        emb = self.transformer.condition_embedder.image_embedder
        if emb is None:
            raise ValueError(f"{self.layout.base}: the transformer has no CLIP image embedder (expected model_type "
                             f"i2v for Wan2.1-Fun InP)")
        return int(emb.norm1.normalized_shape[0])

    def _clip_tokens(self, first: Tensor, device: torch.device) -> Tensor:
        """``[1,257,C]`` CLIP condition: zeros (official stage 2) or the first frame's penultimate-layer tokens."""
        if self.clip_condition == "zeros":
            return torch.zeros(1, CLIP_TOKENS, self._image_dim(), device=device)
        if self.clip_condition != "first_frame":
            raise ValueError(f"FunInpainter: clip_condition must be 'zeros' or 'first_frame', got "
                             f"{self.clip_condition!r}")
        if self.image_encoder is None:
            if self.layout.clip is None:
                raise ValueError(f"{self.layout.base}: clip_condition 'first_frame' needs {BASE_CLIP}, which is "
                                 f"missing; use 'zeros' (the official 4D-ViSM inference) or add the file")
            self.image_encoder = load_wan_clip(self.layout.clip, self.dtype)
        enc = self.image_encoder
        size = int(enc.config.image_size)
        x = F.interpolate(first.permute(2, 0, 1)[None].to(device), size=(size, size), mode="bicubic",
                          align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
        with modules_on(device, enc):
            out = enc(pixel_values=((x - mean) / std).to(enc.dtype), output_hidden_states=True).hidden_states[-2]
        return out.float()

    def _normalise(self, latents: Tensor, inverse: bool = False) -> Tensor:
        z = latents.shape[1]
        return normalise_latents(latents, WAN_LATENT_MEAN[:z], WAN_LATENT_STD[:z], inverse)

    def _encode(self, video: Tensor) -> Tensor:
        return self._normalise(self.vae.encode(video.float()).latent_dist.mode().float())

    # ----------------------------------------------------------------- inpainting

    def inpaint(self, frames: Tensor, masks: Tensor, prompt: str = "", negative_prompt: str = "",
                noise_level: float = _DEFAULTS["strength"], steps: int = int(_DEFAULTS["steps"]),
                guidance_scale: float = _DEFAULTS["guidance_scale"], seed: int = 0,
                callback: Callable | None = None, should_stop: Callable[[], bool] | None = None, *,
                paste_mask: Tensor | None = None, paste_noise_level: float | None = None) -> Tensor:
        """Inpaint the masked regions of a video with Wan2.1-Fun InP (+ the ViSM LoRA when merged).

        Args:
            frames: ``[T,H,W,3]`` float in 0..1 (e.g. a 4D-ViSM render; hole pixels are ignored unless pasted).
            masks: ``[T,H,W]`` in 0..1, 1 = regenerate (binarised at 0.5 for the model).
            prompt, negative_prompt: text conditions.
            noise_level: noise level σ of the start point; the first scheduler step whose σ is at most this
                starts the run; 1 = from pure noise (official 4D-ViSM), 0 = return the input.
            steps: scheduler steps of a full run (the steps below the start level are run; official 50).
            guidance_scale: classifier-free guidance scale (official 6; <= 1 disables the unconditional pass).
            seed: seed of the CPU noise generator.
            callback: ``callback(step, total, None)`` after each denoising step.
            should_stop: polled before each step; when True, InterruptedError is raised.
            paste_mask: ``[T,H,W]`` copy-pasted pixels inside ``masks`` (CoCo4D eq. 7): only the masked
                latent cells are noised, the known ones stay clean (see the module notes).
            paste_noise_level: noise level of the pasted cells (CoCo4D: 0.5; default: the start level).

        Returns:
            ``[T,H,W,3]`` float32 on the CPU in 0..1; pixels with ``mask == 0`` equal the input exactly.

        Raises:
            ValueError: bad shapes, frame/mask count mismatch, sizes, sampling or paste settings.
            InterruptedError: ``should_stop`` returned True.
        """
        what = "FunInpainter.inpaint"
        frames, masks = check_frames_and_masks(frames, masks, what, video=True)
        check_sampling(what, noise_level, steps, guidance_scale, "noise_level")
        paste, paste_level = check_paste(what, masks, paste_mask, paste_noise_level, noise_level)
        scheduler = self._scheduler(int(steps), torch.device("cpu"))
        if not (masks > 0).any() or first_step(flow_sigmas(scheduler, what), noise_level) >= int(steps):
            return frames.clone()
        device = self._device()
        try:
            out = self._run(frames, masks, paste, paste_level, prompt, negative_prompt, float(noise_level), int(steps),
                            float(guidance_scale), int(seed), device, callback, should_stop)
        finally:
            self.offload()
        return composite(frames, out, masks)

    def _scheduler(self, steps: int, device: torch.device):
        """The official stage-2 sampler: flow-matching Euler at ``shift``, ``steps`` steps set."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(self.shift))
        scheduler.set_timesteps(steps, device=device)
        return scheduler

    @torch.no_grad()
    def _run(self, frames, masks, paste, paste_level, prompt, negative_prompt, noise_level, steps, guidance_scale,
             seed, device, callback, should_stop) -> Tensor:
        count, height, width = frames.shape[:3]
        x, m = video_to_model_size(frames, masks, paste, self.multiple, TEMPORAL)
        (mh, mw), padded = x.shape[-2:], x.shape[0]
        hole = (m[:, 0] >= 0.5).float()                                     # [T',H',W'] binary, 1 = hole
        pasted = None if paste is None else m[:, 1] >= 0.5
        video = (x * 2 - 1).permute(1, 0, 2, 3)[None]                       # [1,3,T',H',W'] in [-1,1]
        lat_shape = (1, LATENT, (padded - 1) // TEMPORAL + 1, mh // SPATIAL, mw // SPATIAL)
        cfg = guidance_scale > 1.0
        tdtype = self.dtype

        prompts = [str(negative_prompt or ""), str(prompt)] if cfg else [str(prompt)]
        text = self._encode_text(prompts, device).to(tdtype)
        clip = self._clip_tokens(x[0].permute(1, 2, 0), device).to(tdtype)

        scheduler = self._scheduler(steps, device)
        sigmas = flow_sigmas(scheduler, "FunInpainter.inpaint")
        first = first_step(sigmas, noise_level)
        with modules_on(device, self.vae):
            if bool(hole.all()):
                cond = torch.zeros(1, 4 + LATENT, *lat_shape[2:], device=device)
            else:
                hole_v = hole[None, None].to(device)
                masked = self._encode(masked_video(video.to(device), hole_v))
                cond = torch.cat([inp_condition_mask(hole, lat_shape[3:])[None].to(device), masked], dim=1)
            clean = self._encode(video.to(device)) if first > 0 or pasted is not None else None

        timesteps = scheduler.timesteps[first:]
        sigma = float(sigmas[first])
        noise = torch.randn(lat_shape, generator=cpu_generator(seed), dtype=torch.float32).to(device)
        known = None
        if pasted is not None:
            hole_cells = latent_cells(hole, lat_shape).to(device)
            paste_cells = latent_cells(pasted, lat_shape).to(device)
            level = sigma if paste_level is None else min(paste_level, sigma)
            latents = start_latents(clean, noise, sigma, hole_cells, paste_cells, level)
            known = ~(hole_cells | paste_cells)
        elif clean is None:
            latents = noise
        else:
            latents = start_latents(clean, noise, sigma)
        logger.info("Wan-Fun InP inpainting from noise level %.4f (asked %.4f): %d of %d steps%s", sigma,
                    noise_level, len(timesteps), steps, "" if known is None else f", pasted region at {level:.4f}")
        sampling = (latents, cond, text, clip, int(steps), float(self.shift), first, float(guidance_scale), known,
                    clean if known is not None else None, tdtype)
        session = active_session()
        if session is not None:  # torchrun: every rank runs this call, each on its share of the tokens
            with modules_on(session.device, self.transformer):
                latents = denoise_inpaint(session, self.transformer, *sampling, callback, should_stop)
        elif self.parallel is not None and self.parallel.enabled:
            self.transformer.to("cpu")
            cpu = tuple(x.cpu() if isinstance(x, Tensor) else x for x in sampling)
            latents = launch(self.parallel, denoise_inpaint, (self.transformer, *cpu), "FunInpainter.inpaint",
                             callback, should_stop).to(device)
        else:
            with modules_on(device, self.transformer):
                latents = denoise_inpaint(None, self.transformer, *sampling, callback, should_stop, device=device)
        with modules_on(device, self.vae):
            decoded = self.vae.decode(self._normalise(latents.float(), inverse=True), return_dict=False)[0]
        out = (decoded.float()[0].permute(1, 0, 2, 3)[:count] / 2 + 0.5).clamp(0, 1).cpu()   # [T,3,H',W']
        if (mh, mw) != (height, width):
            out = F.interpolate(out, (height, width), mode="bilinear", align_corners=False)
        return out.permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def denoise_inpaint(session: Session | None, transformer: nn.Module, latents: Tensor, cond: Tensor, text: Tensor,
                    clip: Tensor, steps: int, shift: float, first: int, guidance_scale: float, known: Tensor | None,
                    clean: Tensor | None, dtype: torch.dtype, callback: Callable | None = None,
                    should_stop: Callable[[], bool] | None = None, device: torch.device | None = None) -> Tensor:
    """The Wan2.1-Fun InP sampling loop: flow-matching Euler at ``shift`` from step ``first`` of ``steps``.

    Args:
        session: a ``backends.sequence_parallel.Session`` to run sequence-parallel on (its device), or None
            for this process alone on ``device``.
        latents: ``[1,16,F,h,w]`` start latents; cond ``[1,20,F,h,w]`` mask + masked-video latents; text
            ``[B,512,C]`` (B = 2: negative, positive; 1 = no guidance); clip ``[1,257,C]``.
        known, clean: latent cells kept at ``clean`` after every step (CoCo4D eq. 7), or None.

    Returns:
        ``[1,16,F,h,w]`` latents on the compute device (every rank of a session returns them).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if session is not None:
        device = session.device
        transformer.to(device)
    b = int(text.shape[0])
    layout = session.layout(b) if session is not None else None
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift))
    scheduler.set_timesteps(int(steps), device=device)
    timesteps = scheduler.timesteps[int(first):]
    scheduler.set_begin_index(int(first))
    latents = latents.to(device)
    text = text.to(device, dtype)
    cond_b = cond.to(device, dtype).expand(b, *cond.shape[1:])
    clip_b = clip.to(device, dtype).expand(b, *clip.shape[1:])
    if known is not None:
        known, clean = known.to(device), clean.to(device)
    patch = transformer.config.patch_size
    tokens = (latents.shape[2] // patch[0]) * (latents.shape[3] // patch[1]) * (latents.shape[4] // patch[2])
    total = len(timesteps)
    with wan_context_parallel(transformer, layout, tokens, device):
        for i, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise InterruptedError("FunInpainter.inpaint: stopped by the user")
            inp = torch.cat([latents.to(dtype).expand(b, *latents.shape[1:]), cond_b], dim=1)

            def predict(rows: slice, inp: Tensor = inp, t: Tensor = t) -> Tensor:
                return transformer(hidden_states=inp[rows], timestep=t.expand(rows.stop - rows.start),
                                   encoder_hidden_states=text[rows], encoder_hidden_states_image=clip_b[rows],
                                   return_dict=False)[0]

            v = guided_velocity(predict, b, guidance_scale, layout)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if known is not None:
                latents = torch.where(known, clean, latents)
            if callback is not None:
                callback(i + 1, total, None)
    return latents
