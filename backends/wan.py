# SPDX-License-Identifier: Apache-2.0
"""What the Wan2.1 backends share: latent statistics, release file names, the partial-noise start
(CoCo4D eq. 7), and reading Wan2.1 release checkpoints (VAE, UMT5, CLIP, sharded transformers) into diffusers /
transformers modules.

Public API:
    WAN_LATENT_MEAN, WAN_LATENT_STD     the Wan2.1 VAE's published latent statistics (16 channels)
    normalise_latents(latents, mean, std, inverse=False)   ``(z - mean) / std`` per channel of ``[B,C,T,h,w]``
    flow_sigmas(scheduler, what)        the σ of each step of a flow-matching scheduler (refuses any other)
    first_step(sigmas, noise_level)     index of the first step whose σ is at most ``noise_level``
    latent_cells(mask, latent_shape)    pixel mask -> latent cells holding any masked pixel
    start_latents(clean, noise, ...)    the first step's latents: partial noise, or eq. 7's pasted-region noise
    SPATIAL, TEMPORAL, PATCH            Wan VAE spatial / temporal compression, DiT spatial patch
    BASE_VAE, BASE_T5, BASE_T5_TOKENIZER, BASE_CLIP   file names of a Wan2.1(-Fun) release folder
    WAN_KEEP_FP32                       parameters of the Wan transformer kept in float32
    CLIP_MEAN, CLIP_STD                 the CLIP image normalisation
    params_on_meta()                    context manager: build modules with parameters on the meta device
    weight_dtype(name, dtype, keep_fp32), cast_weight(name, tensor, dtype, keep_fp32)   the load dtype rule
    assign_weights(module, state, dtype, what, keep_fp32)   load a state dict exactly (names the misfits)
    read_weights(path, dtype, skip), torch_load_state(path)   tensors of a safetensors / torch checkpoint file
    shard_shapes(shard), shard_index(shards)     tensor shapes from safetensors headers; our names -> shards
                                        (release shards or one ComfyUI single file, fp8 "scaled" included)
    DIT_PREFIXES, dit_key(key)          ComfyUI's key prefixes of a transformer, and a key without one
    wan_dit_shapes(path), wan_dit_config(shapes, cfg)   a single transformer file's shapes (refusing other
                                        families) and the Wan config they imply
    SafetensorsReader(path)             tensors of a safetensors file by plain reads (no memory map)
    read_indexed(index, dtype, keep_fp32)  tensors of our names from safetensors files, cast (and fp8 scales
                                        applied) as they are read
    vit_heads(dim)                      attention heads of a ViT of width ``dim``
    read_component(source, dtype, skip)   tensors of a single weight file or a component folder
    vae_state, umt5_state, clip_vision_state   any supported key layout -> the diffusers / transformers names
    dequantize_scaled(state, dtype)     ComfyUI fp8 "scaled" weights -> ``weight * scale`` in ``dtype``
    WAN_COMPONENTS, find_wan_component(base, which, release)   a component's file or folder: release,
                                        diffusers sub-folder, or ComfyUI single file
    load_wan_vae(base_vae, finetuned), load_umt5(t5, tokenizer, dtype), load_wan_clip(clip, dtype)
                                        each from a release file, a ComfyUI single file or a diffusers folder
    find_umt5_tokenizer(base, t5), umt5_tokenizer(source), TOKENIZER_HINT   the UMT5 tokenizer: a folder,
                                        or the SentencePiece model a ComfyUI umt5 file stores

Design notes:
    Users are ``backends.video_inpaint`` (Wan VACE, diffusers layout), ``backends.video_inpaint_fun``
    (Wan2.1-Fun InP, release layout) and ``backends.trajectory_dit`` (MoGe4D, release layout over
    Wan2.1-Fun Control). Release checkpoints use the original Wan names, mapped with
    ``backends.trajectory_dit_names``; weights are read with safetensors or
    ``torch.load(weights_only=True)`` only, into modules built on the meta device, so a 14B model
    costs its memory once.

    Partial-noise start (CoCo4D §3.2 eq. 7, "refine ... from the lowered noise level τ"): the start
    is a *noise level* σ of the flow-matching forward process ``x_σ = (1 - σ) z + σ ε``, not a
    fraction of steps. Of a run of ``steps`` scheduler steps (shifted schedule, as a full run),
    sampling starts at the first step whose σ is at most the requested level and runs the rest
    (:func:`first_step`); the realised σ is therefore the requested one or at most one step below
    it (0.7 gives 0.697 with VACE's UniPC at shift 3 and 30 steps, 0.696 with the Fun InP Euler
    sampler at shift 5). A fraction of steps would start much higher on a shifted schedule: the
    last 21 of 30 steps ("strength 0.7") begin at σ = 0.875 (shift 3), 0.921 (shift 5). Noise
    level 1 is pure noise.

    Two kinds of start (:func:`start_latents`):
      * plain partial noise (no paste mask): every latent at the start level, the img2img /
        SDEdit convention (4D-ViSM, the generic video-inpaint node);
      * eq. 7 (a paste mask): the latent cells holding copy-pasted pixels are noised to the
        paste level ``r`` (§4.1: 0.5, at most the start level), other masked cells to the start
        level, and the known cells are the clean latents, re-imposed after every step so the
        model always sees them clean (the paper noises only the pasted region). A latent cell
        (8 x 8 pixels, frame 0 alone then groups of 4 frames) belongs to a region when any of
        its pixels does, so no masked pixel is ever frozen.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from .trajectory_dit_names import MappingError, name_map, official_vae_to_diffusers, wan_clip_to_hf, wan_t5_to_umt5

__all__ = [
    "WAN_LATENT_MEAN",
    "WAN_LATENT_STD",
    "normalise_latents",
    "flow_sigmas",
    "first_step",
    "latent_cells",
    "start_latents",
    "SPATIAL",
    "TEMPORAL",
    "PATCH",
    "BASE_VAE",
    "BASE_T5",
    "BASE_T5_TOKENIZER",
    "BASE_CLIP",
    "WAN_KEEP_FP32",
    "CLIP_MEAN",
    "CLIP_STD",
    "params_on_meta",
    "weight_dtype",
    "cast_weight",
    "assign_weights",
    "read_weights",
    "torch_load_state",
    "shard_shapes",
    "read_indexed",
    "SafetensorsReader",
    "shard_index",
    "DIT_PREFIXES",
    "dit_key",
    "wan_dit_shapes",
    "wan_dit_config",
    "vit_heads",
    "read_component",
    "dequantize_scaled",
    "vae_state",
    "umt5_state",
    "clip_vision_state",
    "WAN_COMPONENTS",
    "find_wan_component",
    "load_wan_vae",
    "load_umt5",
    "find_umt5_tokenizer",
    "umt5_tokenizer",
    "TOKENIZER_HINT",
    "load_wan_clip",
]

# Wan2.1 VAE latent statistics (the VAE's published normalisation).
WAN_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                   0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                  3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

SPATIAL = 8  # Wan VAE spatial compression
TEMPORAL = 4  # Wan VAE temporal compression
PATCH = 2  # DiT spatial patch

BASE_VAE = "Wan2.1_VAE.pth"
BASE_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
BASE_T5_TOKENIZER = "google/umt5-xxl"
BASE_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
WAN_KEEP_FP32 = ("scale_shift_table", "norm1", "norm2", "norm3", "time_embedder")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------- latents and sampling


def normalise_latents(latents: Tensor, mean, std, inverse: bool = False) -> Tensor:
    """``(latents - mean) / std`` per channel of ``[B,C,T,h,w]`` latents (``inverse``: ``latents * std + mean``);
    ``mean`` / ``std`` give one value per channel."""
    m = torch.tensor(mean, device=latents.device, dtype=torch.float32).view(1, -1, 1, 1, 1)
    s = torch.tensor(std, device=latents.device, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return latents * s + m if inverse else (latents - m) / s


def flow_sigmas(scheduler, what: str) -> Tensor:
    """The noise level σ of each of the scheduler's current steps (``set_timesteps`` first), float32 on the CPU.

    Raises:
        ValueError: a scheduler that is not flow matching (``x = (1 - σ) z + σ ε``) or not of order 1
            (the start point is then not a plain index into its steps).
    """
    name = type(scheduler).__name__
    config = getattr(scheduler, "config", {})
    flow = "FlowMatch" in name or bool(config.get("use_flow_sigmas", False))
    if not flow or int(getattr(scheduler, "order", 1)) != 1:
        raise ValueError(f"{what}: the partial-noise start needs a first-order flow-matching scheduler "
                         f"(x = (1 - σ) z + σ ε); got {name} (order {getattr(scheduler, 'order', '?')}, "
                         f"use_flow_sigmas={config.get('use_flow_sigmas', None)})")
    count = len(scheduler.timesteps)
    return scheduler.sigmas[:count].detach().float().cpu()


def first_step(sigmas: Tensor, noise_level: float) -> int:
    """Index of the first step whose σ is at most ``noise_level`` (``len(sigmas)`` when none is:
    nothing to run). ``sigmas`` decrease; a level of 1 starts at step 0 (pure noise)."""
    return int((sigmas > float(noise_level) + 1e-6).sum())


def latent_cells(mask: Tensor, latent_shape) -> Tensor:
    """Bool ``[F,h,w]``: the latent cells of a Wan latent ``[.., F, h, w]`` holding any set pixel of
    ``mask [T,H,W]`` (``T = 4(F-1) + 1``; cell = 8 x 8 pixels of frame 0, then of 4 frames each)."""
    frames, h, w = (int(v) for v in latent_shape[-3:])
    m = (mask > 0.5).float()
    if m.shape[0] != TEMPORAL * (frames - 1) + 1 or tuple(m.shape[1:]) != (h * SPATIAL, w * SPATIAL):
        raise ValueError(f"latent_cells: mask {tuple(m.shape)} does not fit latents of {frames} frames, {h}x{w}")
    grouped = torch.cat([m[:1].expand(TEMPORAL, -1, -1), m[1:]]).reshape(frames, TEMPORAL, h * SPATIAL, w * SPATIAL)
    return torch.nn.functional.max_pool2d(grouped.amax(1, keepdim=True), SPATIAL)[:, 0] > 0.5


def start_latents(clean: Tensor, noise: Tensor, sigma: float, hole: Tensor | None = None,
                  paste: Tensor | None = None, paste_sigma: float | None = None) -> Tensor:
    """The latents of the first denoising step (see the module notes).

    Args:
        clean: ``[B,C,F,h,w]`` clean (normalised) latents ``z`` of the given frames.
        noise: standard normal ``ε`` of the same shape.
        sigma: the start level σ (the first step's).
        hole, paste: bool ``[F,h,w]`` cells to regenerate / holding pasted pixels (``paste`` within
            ``hole``); without ``paste`` every cell starts at ``sigma``.
        paste_sigma: noise level of the pasted cells (default ``sigma``).

    Returns:
        ``(1 - σ) z + σ ε`` everywhere, or with ``paste``: pasted cells ``(1 - r) z + r ε``, other
        hole cells at ``sigma``, known cells ``z`` exactly.
    """
    sigma = float(sigma)
    start = (1.0 - sigma) * clean + sigma * noise
    if paste is None:
        return start
    r = sigma if paste_sigma is None else float(paste_sigma)
    pasted = (1.0 - r) * clean + r * noise
    regen = paste if hole is None else hole | paste
    return torch.where(paste, pasted, torch.where(regen, start, clean))


# --------------------------------------------------------------------------- meta-device construction


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device (buffers stay real), so a 14B model
    costs no memory until ``load_state_dict(..., assign=True)`` or an explicit materialisation."""
    original = nn.Module.register_parameter

    def register(self, name, param):
        original(self, name, param)
        if param is not None:
            kwargs = {"requires_grad": param.requires_grad}
            self._parameters[name] = nn.Parameter(self._parameters[name].to("meta"), **kwargs)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def weight_dtype(name: str, dtype: torch.dtype | None, keep_fp32: tuple[str, ...] = ()) -> torch.dtype:
    """The dtype a floating tensor ``name`` is loaded in: float32 without ``dtype`` or when a pattern of
    ``keep_fp32`` occurs in the name, else ``dtype``."""
    return torch.float32 if (dtype is None or any(p in name for p in keep_fp32)) else dtype


def cast_weight(name: str, tensor: Tensor, dtype: torch.dtype | None, keep_fp32: tuple[str, ...] = ()) -> Tensor:
    """``tensor`` in :func:`weight_dtype` (integer tensors untouched; no copy when the dtype already fits)."""
    return tensor.to(weight_dtype(name, dtype, keep_fp32)) if tensor.is_floating_point() else tensor


def assign_weights(module: nn.Module, state: dict[str, Tensor], dtype: torch.dtype | None, what: str,
                   keep_fp32: tuple[str, ...] = ()) -> None:
    """Load ``state`` into a (meta-parameter) module exactly: every parameter / persistent buffer
    present, no extra keys, shapes equal. Tensors are cast one by one, each replacing its entry of
    ``state`` (so a source tensor held nowhere else is freed at once, and tensors shared by several
    names are cast once); afterwards no parameter or buffer of ``module`` is left on the meta device.
    """
    expected = module.state_dict(keep_vars=True)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if extra:
            parts.append(f"unexpected {len(extra)}: {', '.join(extra[:12])}{' ...' if len(extra) > 12 else ''}")
        if bad:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in bad[:6]))
        raise ValueError(f"{what}: checkpoint does not fit the model ({'; '.join(parts)})")
    del expected
    done: dict[tuple[int, torch.dtype], Tensor] = {}
    for k in list(state):
        v = state[k]
        target = weight_dtype(k, dtype, keep_fp32) if v.is_floating_point() else v.dtype
        key = (id(v), target)
        if key not in done:
            done[key] = v.to(target)
        state[k] = done[key]
        del v
    done.clear()
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"{what}: {len(left)} tensor(s) left unloaded: {', '.join(left[:8])}")


# --------------------------------------------------------------------------- checkpoint files


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class SafetensorsReader:
    """Tensors of a ``.safetensors`` file read one at a time with plain file reads into fresh memory.

    Unlike a memory map, reading this way leaves no file pages mapped into the process, so the
    resident memory of a load is the tensors kept plus the one being read, whatever the file's size.
    Use as a context manager; :meth:`get` raises ValueError for truncated or malformed entries.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "rb")
        try:
            n = int.from_bytes(self._fh.read(8), "little")
            size = self.path.stat().st_size
            if n <= 1 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(self._fh.read(n))
            self._base = 8 + n
            self._buf: Tensor | None = None
            self._entries = {k: v for k, v in header.items() if k != "__metadata__"}
        except Exception:
            self._fh.close()
            raise

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()
        self._buf = None

    def keys(self) -> list[str]:
        return list(self._entries)

    def dtype(self, name: str) -> torch.dtype:
        stored = _ST_DTYPES.get(self._entries[name]["dtype"])
        if stored is None:
            raise ValueError(f"{name}: unsupported dtype {self._entries[name]['dtype']}")
        return stored

    def get(self, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """Tensor ``name``; with ``dtype``, converted while it is read, in pieces of at most
        :attr:`CHUNK` bytes (a tensor never exists whole in the file's dtype)."""
        entry = self._entries[name]
        stored = _ST_DTYPES.get(entry["dtype"])
        if stored is None:
            raise ValueError(f"{name}: unsupported dtype {entry['dtype']}")
        start, end = (int(x) for x in entry["data_offsets"])
        shape = [int(d) for d in entry["shape"]]
        self._fh.seek(self._base + start)
        if end - start != math.prod(shape) * stored.itemsize:
            raise ValueError(f"{name}: {end - start} bytes do not hold {shape} of {entry['dtype']}")
        if dtype is None or dtype == stored:
            return self._read(name, end - start).view(stored).reshape(shape)
        # converted through one reused buffer of at most CHUNK bytes: no allocation per tensor but the result
        # (freed buffers of varying sizes would fragment the heap and keep memory resident)
        out = torch.empty(shape, dtype=dtype)
        flat = out.view(-1)
        size = stored.itemsize
        step = max(self.CHUNK // size, 1)
        for i in range(0, flat.numel(), step):
            n = min(step, flat.numel() - i)
            flat[i:i + n] = self._read_into(name, n * size).view(stored)
        return out

    CHUNK = 64 * 2**20

    def _read_into(self, name: str, nbytes: int) -> Tensor:
        """The next ``nbytes`` of the file in the reader's reused buffer (valid until the next call)."""
        if self._buf is None or self._buf.numel() < nbytes:
            self._buf = torch.empty(max(nbytes, min(self.CHUNK, 2**20)), dtype=torch.uint8)
        view = self._buf[:nbytes]
        if nbytes and self._fh.readinto(memoryview(view.numpy())) != nbytes:
            raise ValueError(f"{name}: the file ends inside this tensor (truncated download?)")
        return view

    def _read(self, name: str, nbytes: int) -> Tensor:
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes and self._fh.readinto(memoryview(buf.numpy())) != nbytes:
            raise ValueError(f"{name}: the file ends inside this tensor (truncated download?)")
        return buf


def torch_load_state(path: Path) -> dict[str, Tensor]:
    """A state dict read with ``torch.load(weights_only=True)`` (unwrapping ``{"state_dict": ...}``),
    memory-mapped where the file format allows it (tensors are paged in as they are used)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) checkpoints cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable / unsafe pickles
        raise ValueError(f"could not read {path} with torch.load(weights_only=True): {type(exc).__name__}: {exc}") \
            from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def read_weights(path: Path, dtype: torch.dtype | None = None, skip: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, or of a torch checkpoint (:func:`torch_load_state`).

    With ``dtype``, floating tensors are read straight into it one at a time (never a whole copy in the
    file's dtype), except fp8 weights and their ``scale_weight`` / ``scale_input`` factors, kept as
    stored for :func:`dequantize_scaled`; keys in ``skip`` (e.g. a tokenizer blob stored beside the
    weights) are not read.
    """
    if path.suffix == ".safetensors":
        try:
            state: dict[str, Tensor] = {}
            with SafetensorsReader(path) as fh:
                for k in fh.keys():
                    if k not in skip:
                        state[k] = fh.get(k, _read_dtype(k, fh.dtype(k), dtype))
            return state
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"could not read {path}: {type(exc).__name__}: {exc}") from exc
    state = {k: v for k, v in torch_load_state(path).items() if k not in skip}
    for k, v in state.items():
        state[k] = _read_cast(k, v, dtype)
    return state


_FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def _read_dtype(name: str, stored: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a tensor is read in: ``dtype`` for floating tensors, except fp8 weights and their scales
    (kept for :func:`dequantize_scaled`); everything else as stored."""
    if dtype is None or not stored.is_floating_point or stored in _FP8:
        return stored
    if name.endswith((".scale_weight", ".scale_input")):
        return stored
    return dtype


def _read_cast(name: str, t: Tensor, dtype: torch.dtype | None) -> Tensor:
    return t.to(_read_dtype(name, t.dtype, dtype))


def shard_shapes(shard: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, read from its header only (clear error when corrupt)."""
    from safetensors import safe_open

    try:
        with safe_open(str(shard), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"could not read {shard}: {type(exc).__name__}: {exc}") from exc


# Prefixes a Wan transformer's keys carry in single files saved from ComfyUI (checkpoint / model saves).
DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_SCALE_SUFFIXES = (".scale_weight", ".scale_input")
_SCALED_MARKER = "scaled_fp8"


def dit_key(key: str) -> str:
    """A transformer key without a ComfyUI prefix of :data:`DIT_PREFIXES` (the original Wan name)."""
    for prefix in DIT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def shard_index(shards) -> dict[str, tuple[Path, str, tuple[int, ...], str | None]]:
    """Our name -> (file, name in the file, shape, name of its fp8 ``scale_weight`` or None) for every
    tensor of a transformer checkpoint in the original Wan naming (``trajectory_dit_names.name_map``), from
    the files' headers (no data read). The files are release shards or one ComfyUI single file: keys
    optionally prefixed (:data:`DIT_PREFIXES`), fp16 / bf16 / fp32 / fp8, fp8 "scaled" ones with a
    ``<m>.scale_weight`` per weight (``<m>.scale_input`` and the ``scaled_fp8`` marker are not weights)."""

    index: dict[str, tuple[Path, str, tuple[int, ...], str | None]] = {}
    for shard in shards:
        shapes = shard_shapes(shard)
        plain = {dit_key(k): k for k in shapes if k != _SCALED_MARKER and not k.endswith(_SCALE_SUFFIXES)}
        try:
            mapped = name_map({k: k for k in plain})  # names only
        except MappingError as exc:
            raise ValueError(f"{shard}: not a Wan2.1 transformer in the original Wan / ComfyUI naming; {exc}") \
                from exc
        for ours_k, off_k in mapped.items():
            key = plain[off_k]
            scale = key[: -len("weight")] + "scale_weight" if key.endswith(".weight") else None
            index[ours_k] = (shard, key, shapes[key], scale if scale in shapes else None)
    return index


def wan_dit_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Original Wan name -> shape of the transformer in a single ``.safetensors`` file (prefix stripped,
    scales left out), from its header.

    Raises:
        ValueError: naming the file, when it holds no Wan2.1 transformer (no 5-D ``patch_embedding.weight``
            or no ``blocks.N.self_attn`` weights), e.g. a VAE, a text encoder or another model family.
    """
    shapes = {dit_key(k): v for k, v in shard_shapes(path).items()
              if k != _SCALED_MARKER and not k.endswith(_SCALE_SUFFIXES)}
    patch = shapes.get("patch_embedding.weight")
    if patch is None or len(patch) != 5 or "blocks.0.self_attn.q.weight" not in shapes:
        some = ", ".join(sorted(shapes)[:6])
        raise ValueError(f"{path}: not a Wan2.1 transformer (expected patch_embedding.weight [dim, in, 1, 2, 2] and "
                         f"blocks.N.self_attn.* in the original Wan / ComfyUI naming; the file holds {some}, ...)")
    return shapes


def wan_dit_config(shapes: dict[str, tuple[int, ...]], cfg: dict | None = None) -> dict:
    """A Wan ``config.json``-style dict (``dim``, ``ffn_dim``, ``num_heads``, ``num_layers``, ``in_dim``,
    ``out_dim``, ``text_dim``, ``freq_dim``, ``eps``, ``text_len``) of a transformer, from the shapes of
    :func:`wan_dit_shapes` (which are authoritative), over ``cfg`` (a folder's ``config.json``, if any).
    Heads are not stored in a checkpoint: ``cfg``'s, else Wan's 128-wide heads (1.3B: 12, 14B: 40)."""
    out = dict(cfg or {})
    patch = shapes["patch_embedding.weight"]
    dim = int(patch[0])
    out.update(dim=dim, in_dim=int(patch[1]),
               num_layers=len({k.split(".")[1] for k in shapes if k.startswith("blocks.")}))
    if "blocks.0.ffn.0.weight" in shapes:
        out["ffn_dim"] = int(shapes["blocks.0.ffn.0.weight"][0])
    if "text_embedding.0.weight" in shapes:
        out["text_dim"] = int(shapes["text_embedding.0.weight"][1])
    if "time_embedding.0.weight" in shapes:
        out["freq_dim"] = int(shapes["time_embedding.0.weight"][1])
    if "head.head.weight" in shapes:
        out["out_dim"] = int(shapes["head.head.weight"][0]) // (PATCH * PATCH)
    if "num_heads" not in out or dim % int(out["num_heads"]):
        out["num_heads"] = max(dim // 128, 1)
    out.setdefault("eps", 1e-6)
    out.setdefault("text_len", 512)
    return out


def read_indexed(index: dict[str, tuple], dtype: torch.dtype | None,
                 keep_fp32: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Our name -> tensor, for ``index`` (our name -> (safetensors file, name in the file[, name of an fp8
    ``scale_weight`` or None])), each tensor read and cast (:func:`cast_weight`, by our name) before the next
    is read: peak memory is the result in its load dtypes plus one tensor (in float32 for a scaled one).
    A scaled fp8 weight is ``weight * scale`` computed in float32; an unscaled fp8 one is upcast."""
    by_file: dict[Path, list[tuple[str, str, str | None]]] = {}
    for ours, entry in index.items():
        by_file.setdefault(Path(entry[0]), []).append((ours, entry[1], entry[2] if len(entry) > 2 else None))
    state: dict[str, Tensor] = {}
    for file, triples in by_file.items():
        try:
            with SafetensorsReader(file) as fh:
                for ours, name, scale in triples:
                    stored = fh.dtype(name)
                    target = weight_dtype(ours, dtype, keep_fp32) if stored.is_floating_point else stored
                    if scale is not None:
                        w = fh.get(name, torch.float32)
                        w.mul_(fh.get(scale, torch.float32))
                        state[ours] = w.to(target)
                        del w
                    else:
                        state[ours] = fh.get(name, target)
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"could not read {file}: {type(exc).__name__}: {exc}") from exc
    return state


# --------------------------------------------------------------------------- component loaders


def vit_heads(dim: int) -> int:
    """Attention heads of a ViT of width ``dim`` (not stored in checkpoints): 64-wide heads, as ViT-B
    (768 / 12) and ViT-L (1024 / 16); ViT-H/14 (1280) uses 16 heads of 80."""
    if dim == 1280:
        return 16
    return max(1, dim // 64)


def read_component(source: Path, dtype: torch.dtype | None = None, skip: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The tensors of one model component: a single weight file (``.safetensors`` / ``.pth``), or a
    diffusers / transformers component folder (every ``.safetensors`` file in it), read as
    :func:`read_weights` does."""
    source = Path(source)
    if source.is_dir():
        files = sorted(source.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{source}: no .safetensors weights in this folder")
        state: dict[str, Tensor] = {}
        for f in files:
            state.update(read_weights(f, dtype, skip))
        return state
    return read_weights(source, dtype, skip)


# Non-weight entries of ComfyUI's repackaged single files: the tokenizer model stored beside the UMT5
# weights, and the marker of an fp8 "scaled" file.
_T5_SKIP = ("spiece_model", "scaled_fp8")


def dequantize_scaled(state: dict[str, Tensor], dtype: torch.dtype | None) -> dict[str, Tensor]:
    """ComfyUI's fp8 "scaled" single files store ``<m>.weight`` in fp8 with a ``<m>.scale_weight`` factor
    (and an activation ``<m>.scale_input``): give each weight as ``weight * scale`` in ``dtype`` (float32
    without one) and drop the scales. A state dict without scales is returned unchanged."""
    scales = [k for k in state if k.endswith(".scale_weight")]
    for k in scales:
        w = k[: -len("scale_weight")] + "weight"
        scale = state.pop(k)
        if w in state:
            state[w] = (state[w].to(torch.float32) * scale.to(torch.float32)).to(dtype or torch.float32)
    for k in [k for k in state if k.endswith(".scale_input")]:
        del state[k]
    for k, v in state.items():  # fp8 tensors without a scale still need a computing dtype
        if v.dtype in _FP8:
            state[k] = v.to(dtype or torch.float32)
    return state


def vae_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Wan VAE state dict in diffusers ``AutoencoderKLWan`` names, from the original Wan naming (the
    release ``Wan2.1_VAE.pth`` and ComfyUI's single file ``wan_2.1_vae.safetensors`` share it,
    optionally ``model.``-prefixed) or from diffusers' own (kept)."""
    if "encoder.conv_in.weight" in state:
        return state
    return official_vae_to_diffusers(state)


# Where a Wan component is found besides a release folder's own file: the diffusers sub-folder of the
# same folder, then a single file of ComfyUI's models folders (folder, name patterns in order).
WAN_COMPONENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "vae": ("vae", "vae", ("wan_2.1_vae*.safetensors", "wan2.1_vae*.safetensors", "Wan2.1_VAE*.safetensors")),
    "t5": ("text_encoder", "text_encoders", ("umt5_xxl*.safetensors", "umt5-xxl*.safetensors", "umt5*.safetensors")),
    "clip": ("image_encoder", "clip_vision", ("clip_vision_h*.safetensors", "open_clip*vit_h*.safetensors")),
}


def find_wan_component(base: Path, which: str, release: tuple[str, ...] = ()) -> Path | None:
    """A Wan VAE / UMT5 / CLIP vision (``which``: a key of :data:`WAN_COMPONENTS`) for the model folder
    ``base``: a release file of ``release`` in it, else its diffusers sub-folder (``config.json`` and
    ``.safetensors``), else a single file of ComfyUI's ``models/vae``, ``text_encoders`` or
    ``clip_vision`` (:func:`backends.model_folders.find_single_file`); None when there is none."""
    from .model_folders import find_single_file

    for name in release:
        if (base / name).is_file():
            return base / name
    sub, folder, patterns = WAN_COMPONENTS[which]
    d = base / sub
    if (d / "config.json").is_file() and any(d.glob("*.safetensors")):
        return d
    return find_single_file(folder, patterns)


def load_wan_vae(base_vae: Path, finetuned: Path | None = None):
    """The Wan VAE (float32, eval) of a release ``Wan2.1_VAE.pth``, a ComfyUI single file
    (``models/vae/wan_2.1_vae.safetensors``) or a diffusers ``vae`` folder, built on the meta device and
    filled from the file; its decoder optionally replaced by a fine-tuned checkpoint in the same naming."""
    from diffusers import AutoencoderKLWan

    state = vae_state(read_component(base_vae, torch.float32))
    if finetuned is not None:
        state.update(vae_state(read_component(finetuned, torch.float32)))
    base_dim = int(state["encoder.conv_in.weight"].shape[0])
    z = int(state["post_quant_conv.weight"].shape[0])
    with params_on_meta():
        vae = AutoencoderKLWan(base_dim=base_dim, z_dim=z, latents_mean=list(WAN_LATENT_MEAN[:z]),
                               latents_std=list(WAN_LATENT_STD[:z]))
    assign_weights(vae, state, None, f"Wan VAE {base_vae}")
    return vae.eval().requires_grad_(False)


def umt5_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A UMT5 encoder state dict in transformers ``UMT5EncoderModel`` names, from Wan's release naming
    (``token_embedding``, ``blocks.i.attn``...) or from the transformers naming that ComfyUI's single
    files (``models/text_encoders/umt5_xxl_*.safetensors``) and diffusers ``text_encoder`` folders use
    (the tied embedding given under both of its names)."""
    if "token_embedding.weight" in state:
        return wan_t5_to_umt5(state)
    emb = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if emb is None:
        raise MappingError("UMT5 text encoder (no token embedding: neither token_embedding.weight nor "
                           "shared.weight)", sorted(state)[:20])
    state["shared.weight"] = state["encoder.embed_tokens.weight"] = emb
    unknown = [k for k in state if not (k.startswith("encoder.") or k == "shared.weight")]
    if unknown:
        raise MappingError("UMT5 text encoder", unknown)
    return state


def load_umt5(t5: Path, tokenizer: Path, dtype: torch.dtype):
    """``(tokenizer, UMT5 encoder)`` (eval) of a release UMT5 checkpoint, a ComfyUI single file (fp16,
    bf16 or fp8 "scaled") or a diffusers ``text_encoder`` folder, and a tokenizer folder or a ComfyUI file
    storing one (:func:`umt5_tokenizer`); the weights are read straight into ``dtype`` into a model built on
    the meta device."""
    from transformers import UMT5Config, UMT5EncoderModel

    raw = dequantize_scaled(read_component(t5, dtype, _T5_SKIP), dtype)
    try:
        state = umt5_state(raw)
    except MappingError as exc:
        raise ValueError(f"{t5}: {exc}") from exc
    del raw
    emb = state["encoder.embed_tokens.weight"]
    heads = int(state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1])
    config = UMT5Config(
        vocab_size=int(emb.shape[0]), d_model=int(emb.shape[1]),
        d_kv=int(state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]) // heads,
        d_ff=int(state["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]),
        num_layers=len({k.split(".")[2] for k in state if k.startswith("encoder.block.")}), num_heads=heads,
        relative_attention_num_buckets=int(
            state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[0]),
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0)
    with params_on_meta():
        model = UMT5EncoderModel(config)
    assign_weights(model, state, dtype, f"UMT5 {t5}")
    return umt5_tokenizer(tokenizer), model.eval().requires_grad_(False)


_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


def find_umt5_tokenizer(base: Path, t5: Path | None) -> Path | None:
    """Where the UMT5 tokenizer of a Wan model folder ``base`` with text encoder ``t5`` comes from: the
    release's ``google/umt5-xxl/`` folder, a diffusers ``tokenizer/`` folder (beside ``base``'s components or
    beside a diffusers ``text_encoder`` folder ``t5``), else a ComfyUI single file ``t5`` that stores the
    SentencePiece model beside its weights (``spiece_model``); None when there is none."""
    places = [base / BASE_T5_TOKENIZER, base / "tokenizer"]
    if t5 is not None and t5.is_dir():
        places.append(t5.parent / "tokenizer")
    for d in places:
        if d.is_dir() and any((d / f).is_file() for f in _TOKENIZER_FILES):
            return d
    if t5 is not None and t5.is_file() and t5.suffix == ".safetensors":
        with SafetensorsReader(t5) as fh:
            if "spiece_model" in fh.keys():
                return t5
    return None


TOKENIZER_HINT = (f"the UMT5 tokenizer: put google/umt5-xxl's tokenizer files (spiece.model, tokenizer.json, "
                  f"tokenizer_config.json) into {BASE_T5_TOKENIZER}/ or tokenizer/ of the model folder, or use a "
                  f"ComfyUI umt5_xxl_*.safetensors that stores its tokenizer (Comfy-Org's files do)")


def umt5_tokenizer(source: Path):
    """The UMT5 tokenizer of a tokenizer folder, or of a ComfyUI single file's ``spiece_model`` entry (built
    offline by :func:`backends.spiece.spiece_tokenizer`)."""
    source = Path(source)
    if source.is_file():
        from .spiece import spiece_tokenizer

        with SafetensorsReader(source) as fh:
            if "spiece_model" not in fh.keys():
                raise ValueError(f"{source}: holds no tokenizer (spiece_model); expected {TOKENIZER_HINT}")
            blob = fh.get("spiece_model").numpy().tobytes()
        return spiece_tokenizer(blob, f"UMT5 tokenizer stored in {source}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def clip_vision_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CLIP vision tower in transformers ``CLIPVisionModel`` names (``vision_model.*``), from Wan's
    release open-clip checkpoint, or from the transformers naming of ComfyUI's single files
    (``models/clip_vision/clip_vision_h.safetensors``) and diffusers ``image_encoder`` folders, whose
    projection and position ids are dropped (the features used are the tower's hidden states)."""
    if "embeddings.patch_embedding.weight" in state:  # saved by transformers >= 5, without the prefix
        state = {"vision_model." + k: v for k, v in state.items()}
    if "vision_model.embeddings.patch_embedding.weight" not in state:
        return wan_clip_to_hf(state)
    return {k: v for k, v in state.items() if k.startswith("vision_model.") and not k.endswith("position_ids")}


def load_wan_clip(clip: Path | None, dtype: torch.dtype):
    """The CLIP vision tower of a release open-clip checkpoint, a ComfyUI single file or a diffusers
    ``image_encoder`` folder as a transformers ``CLIPVisionModel`` (eval; weights read straight into
    ``dtype``, the model built on the meta device), or None without a file."""
    if clip is None:
        return None
    from transformers import CLIPVisionConfig, CLIPVisionModel

    state = clip_vision_state(read_component(clip, dtype))
    patch = state["vision_model.embeddings.patch_embedding.weight"]
    hidden, p = int(patch.shape[0]), int(patch.shape[-1])
    n = int(state["vision_model.embeddings.position_embedding.weight"].shape[0]) - 1
    layers = len({k.split(".")[3] for k in state if k.startswith("vision_model.encoder.layers.")})
    config = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=int(state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=layers, num_attention_heads=vit_heads(hidden),
        image_size=int(round(math.sqrt(n))) * p, patch_size=p, hidden_act="gelu", layer_norm_eps=1e-5)
    with params_on_meta():
        model = CLIPVisionModel(config)
    expected = model.state_dict()
    if not any(k.startswith("vision_model.") for k in expected):  # transformers >= 5 drops the prefix
        state = {k[len("vision_model."):]: v for k, v in state.items()}
    for k in expected:
        if k.endswith("position_ids"):
            state[k] = torch.arange(n + 1)[None]
    assign_weights(model, state, dtype, f"CLIP {clip}")
    return model.eval().requires_grad_(False)
