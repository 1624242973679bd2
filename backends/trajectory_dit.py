# SPDX-License-Identifier: Apache-2.0
"""MoGe4D's 4D Scene Trajectory Generator (4D-STraG): loading the official release, sampling
normalised relative motion with flow matching, and turning it into dense trajectories.

Public API:
    TrajectoryModel             the loaded model: DiT, Wan VAE, trajectory decoder (+ encoder), UMT5, CLIP
    load_trajectory_model(path, dtype)   cached loader of a MoGe4D model folder (official layout)
    find_layout(path)           the files of a MoGe4D model folder, or ValueError naming what is missing
    find_fun_control_file()     a Wan2.1-Fun Control single file of ComfyUI's models/diffusion_models (or None)
    generate_tracks(model, image, depth, prompt, ...)   image + z-depth + prompt -> TrajectoryResult
    TrajectoryResult            tracks (core.tracks.Tracks), motion maps, normalised motion, depth
    SamplerConfig               the paper / official inference defaults (49 frames, 512x368, 50 steps,
                                guidance 6, shift 3)
    check_size(width, height), check_frames(n)      ValueError naming the valid values
    fit_image(image, width, height)  centre-crop + resize to the working size (never stretched)
    crop_to_aspect(x, width, height) the centre crop ``fit_image`` takes (for maps that go with the image)
    fov_intrinsics(h, w, fov)   square-pixel pinhole from a horizontal field of view
    clear_cache()

Design notes:
    Folder layout (the official ``./models`` folder of the MoGe4D README): ``4D-STraG/
    diffusion_pytorch_model.safetensors`` (the fine-tuned transformer in the original Wan /
    VideoX-Fun naming, mapped by ``trajectory_dit_names.name_map``), ``VAE/decoder_prompt/
    pytorch_model.bin`` (Trajectory Decoder), optionally ``VAE/encoder_prompt/pytorch_model.bin``
    (Trajectory Encoder) and ``VAE/vae/pytorch_model.bin`` (the fine-tuned Wan VAE, ``model.``
    prefixed), plus the base model ``alibaba-pai/Wan2.1-Fun-V1.1-14B-Control`` in its release
    layout, either in a sub-folder (any depth up to 3) or at the root: ``config.json`` +
    ``diffusion_pytorch_model*.safetensors``, ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``
    + ``google/umt5-xxl`` (tokenizer), ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``.
    Without that base folder the base transformer is a single file of ComfyUI's ``models/diffusion_models``
    (``find_fun_control_file``: original / ComfyUI naming, fp16 / bf16 / fp8, fp8 "scaled" included), its
    config implied by its shapes; the VAE, UMT5 (and its tokenizer) and CLIP then come from the folder's
    own files or ComfyUI's ``models/vae``, ``text_encoders`` and ``clip_vision`` (``backends.wan``).
    Weights are read with safetensors / ``torch.load(weights_only=True)`` only; the Wan VAE, UMT5
    and CLIP loaders, shared with ``backends.video_inpaint_fun``, are ``backends.wan``'s. The transformer
    is built with its parameters on the meta device and filled from the 4D-STraG file first; only
    parameters that file lacks are read from the base checkpoint (lazily, by name); any parameter
    still missing is an error naming it. The OmniMAE weights come from the 4D-STraG file
    (``omnimae_extractor.*``) or, when absent, from ``vitb_pretrain.torch`` in the folder.

    Inference follows the official ``scripts/inference/infer.py`` (stage 1): control video = the
    input image repeated over all frames, reference latent = the image, start-image latents = 0,
    depth condition = ``core.moge4d.depth_condition`` of the z-depth repeated over all frames; the
    CLIP image is a mid-grey frame (as the official script passes); UMT5 prompt (512 tokens),
    classifier-free guidance on the prompt only (``v_u + w (v_c - v_u)``), flow-matching Euler steps
    (diffusers ``FlowMatchEulerDiscreteScheduler`` with ``shift``). The sampled latents are
    un-normalised with MoGe4D's trajectory latent statistics and then Wan's (``use_traj_norm``, the
    official decode), decoded by the VAE to an RGB motion map in ``[-1,1]`` and by the Trajectory
    Decoder to eq. 1's normalised motion, which ``core.moge4d.fuse_motion`` adds to the back-projected
    points: de-normalised with the model's training ``α`` (``motion_intrinsics``) as the paper states
    (``motion_denormalisation="paper"``, default), or as it is, as the official inference script does
    (``"official"``); see ``core.moge4d.strag``. The depth handed in is taken as metric z-depth (the
    paper lifts UniDepthV2's); ``core.moge4d.strag.lift_depth`` makes it from a depth of a declared kind.

    Note on ``shift``: the official "Flow" sampler builds its scheduler from the YAML config
    (``shift: 5.0``) and passes ``mu=1`` with dynamic shifting off, so its ``--shift 3`` only reaches
    the UniPC / DPM++ samplers. We use the ``shift`` argument (default 3, as the paper states).

    Devices are chosen per call; each sub-model moves to the device just for its part (text and
    CLIP encoders, VAE encode, DiT sampling, VAE decode) and back to the CPU afterwards, asking the
    host (``backends.memory.make_room``) for room first. On CUDA weights are bf16 (VAE and
    trajectory decoder fp32) and attention uses PyTorch SDPA.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.moge4d.strag import (
    MOTION_DENORMALISATIONS,
    backproject,
    depth_condition,
    fuse_motion,
    motion_intrinsics,
    official_pinhole,
)
from ..core.moge4d.tracks import Tracks
from .memory import modules_on, park
from .model_folders import FUN_CONTROL_PATTERNS, single_files
from .sequence_parallel import ParallelOptions, Session, active_session, guided_velocity, launch
from .trajectory_dit_modules import (
    LATENT_CHANNELS,
    DiTConfig,
    OmniMAEFeatures,
    TrajectoryDecoder,
    TrajectoryDiT,
    TrajectoryEncoder,
)
from .trajectory_dit_names import adaptor_name_map, name_map
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
    find_umt5_tokenizer,
    find_wan_component,
    load_umt5,
    load_wan_clip,
    load_wan_vae,
    params_on_meta,
    read_indexed,
    read_weights,
    shard_index,
    torch_load_state,
    vit_heads,
    wan_dit_config,
    wan_dit_shapes,
)

__all__ = [
    "TrajectoryModel",
    "TrajectoryResult",
    "SamplerConfig",
    "load_trajectory_model",
    "find_layout",
    "generate_tracks",
    "check_size",
    "check_frames",
    "fit_image",
    "crop_to_aspect",
    "fov_intrinsics",
    "clear_cache",
    "find_fun_control_file",
    "TRAJ_LATENT_MEAN",
    "TRAJ_LATENT_STD",
]

logger = logging.getLogger(__name__)

# MoGe4D's second normalisation of motion latents (``traj_mean`` / ``traj_std`` of the official VAE).
TRAJ_LATENT_MEAN = (0.9336646795272827, -1.5638998746871948, 0.09716760367155075, -0.0003718015505000949,
                    -0.4085753560066223, 2.252105474472046, -1.7826536893844604, 1.4354853630065918,
                    -0.9819669127464294, -0.7372986078262329, 1.0731526613235474, -1.6012202501296997,
                    -1.4650976657867432, -0.640479326248169, -0.23738965392112732, -1.252833604812622)
TRAJ_LATENT_STD = (0.4107, 0.5508, 0.2565, 0.3021, 0.2372, 0.5350, 0.3000, 0.4359,
                   0.2033, 0.4194, 0.2107, 0.3985, 0.3314, 0.4098, 0.3906, 0.2863)

MULTIPLE = SPATIAL * PATCH  # sides of the working size are multiples of this

STRAG_FILE = "4D-STraG/diffusion_pytorch_model.safetensors"
OMNIMAE_FILE = "vitb_pretrain.torch"


@dataclass(frozen=True)
class SamplerConfig:
    """Official inference defaults (``infer.sh``; paper §5.1)."""

    num_frames: int = 49
    width: int = 512
    height: int = 368
    steps: int = 50
    guidance_scale: float = 6.0
    shift: float = 3.0
    fps: float = 8.0


# --------------------------------------------------------------------------- checks


def check_size(width: int, height: int, what: str = "generate_tracks") -> None:
    """Width and height must be multiples of 16 (VAE 8 x patch 2) and at least one latent patch.

    Raises:
        ValueError: naming the nearest valid sizes.
    """
    for name, v in (("width", int(width)), ("height", int(height))):
        if v < MULTIPLE:
            raise ValueError(f"{what}: {name} {v} is smaller than one latent patch ({MULTIPLE} pixels = VAE "
                             f"{SPATIAL} x DiT patch {PATCH}); use at least {MULTIPLE}")
        if v % MULTIPLE:
            lo = v // MULTIPLE * MULTIPLE
            raise ValueError(f"{what}: {name} {v} must be a multiple of {MULTIPLE}; nearest valid: {lo} or "
                             f"{lo + MULTIPLE}")


def check_frames(n: int, what: str = "generate_tracks") -> None:
    """The Wan VAE takes ``4k + 1`` frames (``k >= 1``).

    Raises:
        ValueError: naming the valid counts nearest to ``n``.
    """
    n = int(n)
    if n >= 1 + TEMPORAL and (n - 1) % TEMPORAL == 0:
        return
    below = max((n - 1) // TEMPORAL * TEMPORAL + 1, 1 + TEMPORAL)
    above = below + TEMPORAL if below <= n else below
    options = sorted({below, above})
    raise ValueError(f"{what}: num_frames {n} cannot be taken by the Wan VAE (4k+1 frames, at least 5); "
                     f"nearest valid: {' or '.join(str(o) for o in options)}")


# --------------------------------------------------------------------------- folder layout


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _find_base(root: Path) -> Path | None:
    def ok(d: Path) -> bool:
        return (d / "config.json").is_file() and (d / BASE_VAE).is_file()

    if ok(root):
        return root
    frontier = [root]
    for _ in range(3):
        nxt = []
        for d in frontier:
            for sub in sorted(p for p in d.iterdir() if p.is_dir()):
                if ok(sub):
                    return sub
                nxt.append(sub)
        frontier = nxt
    return None


@dataclass(frozen=True)
class Layout:
    """The files of a MoGe4D model folder."""

    root: Path
    strag: Path
    decoder: Path
    encoder: Path | None
    vae_finetuned: Path | None
    base: Path
    base_transformer: tuple[Path, ...]
    base_vae: Path
    t5: Path
    tokenizer: Path
    clip: Path | None
    omnimae: Path | None


def _vae_dir(root: Path) -> Path:
    vae = root / "VAE"
    if (vae / "decoder_prompt").is_dir():
        return vae
    checkpoints = sorted((p for p in vae.glob("checkpoint-*") if p.is_dir()),
                         key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    return checkpoints[-1] if checkpoints else vae


def find_layout(path: str | Path) -> Layout:
    """Locate every file of a MoGe4D model folder (see the module notes).

    Raises:
        ValueError: listing what is missing and where it was looked for.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"trajectory model {str(root)!r} is not a folder; expected the MoGe4D models folder with "
                         f"4D-STraG/, VAE/ and the Wan2.1-Fun-V1.1-14B-Control base")
    missing = []
    strag = root / STRAG_FILE
    if not strag.is_file():
        missing.append(STRAG_FILE)
    vae = _vae_dir(root)
    decoder = _first(vae, ("decoder_prompt/pytorch_model.bin", "decoder_prompt/model.safetensors",
                           "decoder_prompt/diffusion_pytorch_model.safetensors"))
    if decoder is None:
        missing.append("VAE/decoder_prompt/pytorch_model.bin (Trajectory Decoder)")
    encoder = _first(vae, ("encoder_prompt/pytorch_model.bin", "encoder_prompt/model.safetensors"))
    vae_ft = _first(vae, ("vae/pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors", "vae/model.safetensors"))
    base = _find_base(root)
    shards: tuple[Path, ...] = ()
    if base is not None:
        shards = tuple(sorted(base.glob("diffusion_pytorch_model*.safetensors")))
    else:
        single = find_fun_control_file()
        if single is None:
            missing.append(f"the Wan2.1-Fun-V1.1-14B-Control base (a folder with config.json and {BASE_VAE}, at the "
                           f"root or in a sub-folder, or a single file named like {FUN_CONTROL_PATTERNS[0]} in "
                           f"ComfyUI's models/diffusion_models)")
        base, shards = root, (() if single is None else (single,))
    base_vae = find_wan_component(base, "vae", (BASE_VAE,))
    if base_vae is None:
        missing.append(f"{BASE_VAE} (or vae/, or wan_2.1_vae.safetensors in ComfyUI's models/vae)")
    t5 = find_wan_component(base, "t5", (BASE_T5, "models_t5_umt5-xxl-enc-fp32.pth"))
    if t5 is None:
        missing.append(f"{base.name}/{BASE_T5} (or text_encoder/, or umt5_xxl_*.safetensors in ComfyUI's "
                       f"models/text_encoders)")
    tok = find_umt5_tokenizer(base, t5)
    if tok is None and t5 is not None:
        missing.append(TOKENIZER_HINT)
    clip = find_wan_component(base, "clip", (BASE_CLIP,))
    if missing:
        raise ValueError(f"trajectory model {str(root)!r} is incomplete; missing: {'; '.join(missing)}. Put the "
                         f"MoGe4D release (Yanran21/MoGe4D) and alibaba-pai/Wan2.1-Fun-V1.1-14B-Control there")
    omni = _first(root, (OMNIMAE_FILE, f"OmniMAE/{OMNIMAE_FILE}"))
    return Layout(root, strag, decoder, encoder, vae_ft, base, shards, base_vae, t5, tok, clip, omni)


# --------------------------------------------------------------------------- component loaders


def find_fun_control_file() -> Path | None:
    """A Wan2.1-Fun Control transformer single file of ComfyUI's ``models/diffusion_models`` (names of
    ``model_folders.FUN_CONTROL_PATTERNS``, any case, a ``14B`` one first: 4D-STraG is fine-tuned from the
    14B model); None when there is none (files that are no Wan transformer are passed over)."""
    files = single_files("diffusion_models", FUN_CONTROL_PATTERNS)
    files.sort(key=lambda p: "14b" not in p.name.lower())
    for f in files:
        try:
            wan_dit_shapes(f)
        except ValueError:
            continue
        return f
    return None


def _base_config(layout: Layout) -> dict:
    """The base transformer's Wan config: the release ``config.json``, or, for a single file, the one its
    shapes imply (``backends.wan.wan_dit_config``)."""
    files = layout.base_transformer
    if len(files) == 1 and files[0].parent != layout.base:  # a single file from ComfyUI's folder
        return wan_dit_config(wan_dit_shapes(files[0]))
    return json.loads((layout.base / "config.json").read_text())


def _config_from_shapes(cfg: dict, shapes: dict[str, tuple[int, ...]]) -> DiTConfig:
    def dim_of(key: str, axis: int, default: int) -> int:
        return int(shapes[key][axis]) if key in shapes else default

    emb = "wan.condition_embedder."
    return DiTConfig.from_wan_config(
        cfg,
        in_channels=dim_of("wan.patch_embedding.weight", 1, 4 * LATENT_CHANNELS),
        text_dim=dim_of(emb + "text_embedder.linear_1.weight", 1, int(cfg.get("text_dim", 4096))),
        freq_dim=dim_of(emb + "time_embedder.linear_1.weight", 1, int(cfg.get("freq_dim", 256))),
        image_dim=dim_of(emb + "image_embedder.norm1.weight", 0, 1280),
        motion_dim=dim_of("motion_adapter.0.weight", 0, 768))


def _load_dit(layout: Layout, dtype: torch.dtype) -> TrajectoryDiT:

    cfg = _base_config(layout)
    # The 4D-STraG file and the base shards are read tensor by tensor, each cast on read.
    strag = {k: (v[0], v[1], v[3]) for k, v in shard_index([layout.strag]).items()}
    omni = read_indexed({k[len("motion_extractor."):]: v for k, v in strag.items()
                         if k.startswith("motion_extractor.")}, dtype)
    ours = read_indexed({k: v for k, v in strag.items() if not k.startswith("motion_extractor.")}, dtype,
                        WAN_KEEP_FP32)
    if not omni and layout.omnimae is not None:
        raw = {"omnimae_extractor." + k: v for k, v in torch_load_state(layout.omnimae).items()}
        omni = {k[len("motion_extractor."):]: v for k, v in name_map(raw).items() if k.startswith("motion_extractor.")}
    index = shard_index(layout.base_transformer)
    shapes = {k: tuple(v[2]) for k, v in index.items()}
    shapes.update({k: tuple(v.shape) for k, v in ours.items()})
    config = _config_from_shapes(cfg, shapes)
    with params_on_meta():
        model = TrajectoryDiT(config)
    need = sorted(set(model.state_dict()) - set(ours))
    ours.update(read_indexed({k: (index[k][0], index[k][1], index[k][3]) for k in need if k in index}, dtype,
                             WAN_KEEP_FP32))
    patch = ours.get("wan.patch_embedding.weight")
    if patch is not None and patch.shape[1] != config.in_channels:
        raise ValueError(f"{layout.strag}: patch_embedding takes {patch.shape[1]} channels; 4D-STraG needs "
                         f"{config.in_channels} (noise, image, start image, depth latents)")
    assign_weights(model, ours, dtype, f"4D-STraG transformer ({layout.strag} over {layout.base.name})",
                   keep_fp32=WAN_KEEP_FP32)
    if omni:
        dim = int(omni["patch_embed.weight"].shape[0])
        depth = len({k.split(".")[1] for k in omni if k.startswith("blocks.")})
        table = int(omni["pos_embed"].shape[1]) if "pos_embed" in omni else 8 * 196
        patch_size = int(omni["patch_embed.weight"].shape[-1])
        grid2 = (224 // patch_size) ** 2
        with params_on_meta():
            extractor = OmniMAEFeatures(dim=dim, depth=depth, heads=vit_heads(dim), patch=patch_size,
                                        table_frames=max(table // grid2, 1))
        assign_weights(extractor, omni, dtype, "OmniMAE motion-feature extractor")
        model.motion_extractor = extractor.eval().requires_grad_(False)
    else:
        logger.warning("%s: no OmniMAE weights (neither in the 4D-STraG file nor %s); the Motion Perception "
                       "Module is off", layout.root, OMNIMAE_FILE)
    return model.eval().requires_grad_(False)


def _load_adaptor(path: Path | None, which: str):
    if path is None:
        return None
    state = adaptor_name_map(read_weights(path), which)
    width = int(state["conv_in.weight"].shape[0])
    blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    groups = 32 if width % 32 == 0 else math.gcd(width, 32)
    module = (TrajectoryEncoder if which == "encoder" else TrajectoryDecoder)(width, blocks, groups)
    assign_weights(module, state, None, f"trajectory {which} {path}")
    return module.eval().requires_grad_(False)


# --------------------------------------------------------------------------- the model


class TrajectoryModel:
    """A loaded 4D-STraG model (held on the CPU between runs).

    Attributes:
        dit, vae, decoder, encoder (or None), tokenizer, text_encoder, image_encoder (or None), path, dtype.
    """

    def __init__(self, dit: TrajectoryDiT, vae, decoder: TrajectoryDecoder, encoder: TrajectoryEncoder | None,
                 tokenizer, text_encoder, image_encoder, path: Path, dtype: torch.dtype, text_len: int = 512):
        self.dit, self.vae, self.decoder, self.encoder = dit, vae, decoder, encoder
        self.tokenizer, self.text_encoder, self.image_encoder = tokenizer, text_encoder, image_encoder
        self.path, self.dtype, self.text_len = Path(path), dtype, int(text_len)
        z = LATENT_CHANNELS
        self._stats = {name: torch.tensor(v[:z], dtype=torch.float32).view(1, z, 1, 1, 1) for name, v in (
            ("mean", WAN_LATENT_MEAN), ("std", WAN_LATENT_STD), ("traj_mean", TRAJ_LATENT_MEAN),
            ("traj_std", TRAJ_LATENT_STD))}
        self._clip_cache: dict[tuple, Tensor] = {}

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.dit, self.vae, self.decoder, self.encoder, self.text_encoder, self.image_encoder)
                if m is not None]

    def offload(self) -> None:
        """Move every sub-model to the CPU."""
        park(self.modules())

    def on(self, device: torch.device, *modules: nn.Module | None):
        """Run ``modules`` on ``device`` for the block, then move them back to the CPU."""
        return modules_on(device, *modules)

    def _stat(self, name: str, like: Tensor) -> Tensor:
        return self._stats[name].to(device=like.device, dtype=like.dtype)

    # ----------------------------------------------------------------- encoders

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], device: torch.device) -> Tensor:
        """UMT5 embeddings ``[B,512,C]``, zero past each prompt's tokens (as the official pipeline)."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.text_len, truncation=True,
                             add_special_tokens=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        with self.on(device, self.text_encoder):
            out = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return out * mask[..., None].to(out.dtype)

    @torch.no_grad()
    def clip_context(self, height: int, width: int, device: torch.device) -> Tensor:
        """CLIP tokens ``[1,257,C]`` of the mid-grey frame the official inference conditions on
        (penultimate layer, as Wan's ``use_31_block``); zeros without an image encoder."""
        key = (int(height), int(width), str(device))
        if key in self._clip_cache:
            return self._clip_cache[key]
        cfg_dim = self.dit.config.image_dim
        if self.image_encoder is None:
            out = torch.zeros(1, 257, cfg_dim, device=device)
        else:
            grey = torch.full((1, 3, int(height), int(width)), 127.0 / 255.0, device=device)
            size = self.image_encoder.config.image_size
            x = F.interpolate(grey, size=(size, size), mode="bicubic", align_corners=False)
            mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
            std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
            x = ((x - mean) / std).to(self.image_encoder.dtype)
            with self.on(device, self.image_encoder):
                out = self.image_encoder(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        self._clip_cache = {key: out}
        return out

    @torch.no_grad()
    def encode_video(self, frames: Tensor) -> Tensor:
        """``[B,3,T,H,W]`` in ``[-1,1]`` -> Wan-normalised latents (posterior mode) ``[B,16,T',h,w]``."""
        mu = self.vae.encode(frames.to(self.vae.dtype)).latent_dist.mode()
        return (mu - self._stat("mean", mu)) / self._stat("std", mu)

    @torch.no_grad()
    def decode_motion(self, latents: Tensor, use_traj_norm: bool = True) -> tuple[Tensor, Tensor]:
        """Latents ``[B,16,T',h,w]`` -> (normalised motion ``[B,3,T,H,W]``, RGB motion map in ``[-1,1]``)."""
        z = latents.float()
        if use_traj_norm:
            z = z * self._stat("traj_std", z) + self._stat("traj_mean", z)
        z = z * self._stat("std", z) + self._stat("mean", z)
        rgb = self.vae.decode(z.to(self.vae.dtype)).sample.clamp(-1, 1)
        return self.decoder(rgb.to(self.decoder.conv_in.weight.dtype)), rgb

    @torch.no_grad()
    def encode_motion(self, motion: Tensor, use_traj_norm: bool = True) -> Tensor:
        """Training direction: normalised motion ``[B,3,T,H,W]`` -> Trajectory Encoder -> RGB map -> VAE
        -> latents in the DiT's space (raises without a Trajectory Encoder)."""
        if self.encoder is None:
            raise ValueError(f"{self.path}: no Trajectory Encoder (VAE/encoder_prompt) in this model folder")
        rgb = self.encoder(motion.to(self.encoder.conv_in.weight.dtype)) * 2 - 1
        z = self.encode_video(rgb)
        if use_traj_norm:
            z = (z - self._stat("traj_mean", z)) / self._stat("traj_std", z)
        return z


# --------------------------------------------------------------------------- loading / caching

_CACHE: OrderedDict[tuple, TrajectoryModel] = OrderedDict()
_CACHE_SIZE = 1


def _stamp(layout: Layout) -> tuple:
    files = [layout.strag, layout.decoder, layout.encoder, layout.vae_finetuned, *layout.base_transformer,
             layout.base_vae, layout.t5, layout.clip, layout.omnimae]
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files if p is not None)


def load_trajectory_model(path: str | Path, dtype: torch.dtype = torch.float32) -> TrajectoryModel:
    """Load (once per folder, file stamps and dtype; kept on the CPU) a MoGe4D model folder.

    Raises:
        ValueError: incomplete folder (naming the missing files), unreadable files, or checkpoints
            whose names / shapes do not fit (naming the keys).
    """
    layout = find_layout(path)
    key = (str(layout.root.resolve()), str(dtype), _stamp(layout))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    dit = _load_dit(layout, dtype)
    decoder = _load_adaptor(layout.decoder, "decoder")
    encoder = _load_adaptor(layout.encoder, "encoder")
    vae = load_wan_vae(layout.base_vae, layout.vae_finetuned)
    tokenizer, text = load_umt5(layout.t5, layout.tokenizer, dtype)
    clip = load_wan_clip(layout.clip, dtype)
    cfg = _base_config(layout)
    model = TrajectoryModel(dit, vae, decoder, encoder, tokenizer, text, clip, layout.root, dtype,
                            text_len=min(int(cfg.get("text_len", 512)), 512))
    _CACHE[key] = model
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    logger.info("loaded MoGe4D trajectory model %s (%s)", layout.root, dtype)
    return model


def clear_cache() -> None:
    """Forget every loaded trajectory model."""
    _CACHE.clear()


# --------------------------------------------------------------------------- pipeline


def crop_to_aspect(x: Tensor, width: int, height: int) -> Tensor:
    """The centre crop of ``x [H,W,...]`` with the aspect ``width/height`` (the crop ``fit_image`` takes)."""
    h, w = int(x.shape[0]), int(x.shape[1])
    target = width / height
    if w / h > target:
        cw, ch = max(1, round(h * target)), h
    else:
        cw, ch = w, max(1, round(w / target))
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[top:top + ch, left:left + cw]


def fit_image(image: Tensor, width: int, height: int) -> Tensor:
    """Centre-crop ``image [H,W,3]`` to the aspect ``width/height`` and resize (bilinear, antialiased) to
    exactly ``height x width`` (never stretched). Returns ``[height,width,3]`` float32 in 0..1."""
    x = crop_to_aspect(image, width, height)
    ch, cw = int(x.shape[0]), int(x.shape[1])
    x = x.permute(2, 0, 1)[None].float()
    if (ch, cw) != (height, width):
        x = F.interpolate(x, size=(int(height), int(width)), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).clamp(0, 1).contiguous()


def fov_intrinsics(height: int, width: int, fov_degrees: float) -> Tensor:
    """Square-pixel pinhole with horizontal field of view ``fov_degrees`` and the principal point at the
    image centre: ``f = (W / 2) / tan(fov / 2)``.

    Raises:
        ValueError: ``fov_degrees`` outside (0, 180).
    """
    if not 0.0 < float(fov_degrees) < 180.0:
        raise ValueError(f"fov must be in (0, 180) degrees, got {fov_degrees}")
    f = 0.5 * width / math.tan(math.radians(float(fov_degrees)) / 2)
    return torch.tensor([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]], dtype=torch.float32)


@dataclass
class TrajectoryResult:
    """Output of ``generate_tracks``.

    Attributes:
        tracks: ``core.tracks.Tracks`` in the input camera's frame (viewmat = identity).
        motion_maps: ``[T,H,W,3]`` the decoded RGB motion maps in 0..1.
        normalized: ``[T,H,W,3]`` eq. 1's normalised relative motion from the Trajectory Decoder.
        depth: ``[H,W]`` z-depth used (invalid pixels 0).
    """

    tracks: Tracks
    motion_maps: Tensor
    normalized: Tensor
    depth: Tensor


def _prepare_depth(depth: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    if not isinstance(depth, Tensor) or depth.dim() != 2:
        got = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise ValueError(f"generate_tracks: depth must be a z-depth [H,W] tensor, got {got}")
    z = depth.detach().float().cpu()
    finite = torch.isfinite(z)
    if bool((finite & (z < 0)).any()):
        n = int((finite & (z < 0)).sum())
        raise ValueError(f"generate_tracks: depth has {n} negative value(s); expected a z-depth (distance along "
                         f"the optical axis, > 0; 0 or inf = no surface)")
    valid = finite & (z > 0)
    if not bool(valid.any()):
        raise ValueError("generate_tracks: depth has no positive finite value; expected a z-depth map with "
                         "at least one surface pixel")
    if tuple(z.shape) != (height, width):
        fill = torch.where(valid, z, torch.zeros_like(z))
        w = F.interpolate(valid.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        s = F.interpolate(fill[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        valid = w > 0.5
        z = torch.where(valid, s / w.clamp_min(1e-6), torch.zeros_like(s))
    far = z[valid].max()
    return torch.where(valid, z, far), valid


@torch.no_grad()
def denoise_motion(session: Session | None, dit: TrajectoryDiT, latents: Tensor, text: Tensor, clip: Tensor,
                   cond: Tensor, ref: Tensor, motion: Tensor | None, steps: int, shift: float, guidance_scale: float,
                   dtype: torch.dtype, callback: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                   device: torch.device | None = None) -> Tensor:
    """The flow-matching sampling loop of 4D-STraG (Euler, ``shift``; guidance on the prompt).

    Args:
        session: a ``backends.sequence_parallel.Session`` to run sequence-parallel on (its device),
            or None for this process alone on ``device``.
        latents: ``[1,16,F,h,w]`` initial noise; text ``[B,512,C]`` (B = 2: negative, positive; 1 = no
            guidance); clip ``[1,257,C]``; cond ``[1,48,F,h,w]``; ref ``[1,16,h,w]``; motion ``[1,C_m,h',w']``
            or None.

    Returns:
        ``[1,16,F,h,w]`` sampled latents on the compute device (every rank of a session returns them).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if session is not None:
        device = session.device
        dit.to(device)
    b = int(text.shape[0])
    layout = session.layout(b) if session is not None else None
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift))
    scheduler.set_timesteps(int(steps), device=device)
    latents = latents.to(device)
    text = text.to(device)
    cond_b = cond.to(device, dtype).expand(b, *cond.shape[1:])
    ref_b = ref.to(device, dtype).expand(b, *ref.shape[1:])
    clip_b = clip.to(device).expand(b, *clip.shape[1:])
    motion_b = None if motion is None else motion.to(device).expand(b, *motion.shape[1:])
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise InterruptedError("generate_tracks: interrupted")
        x = latents.expand(b, *latents.shape[1:]).to(dtype)

        def predict(rows: slice, x: Tensor = x, t: Tensor = t) -> Tensor:
            n = rows.stop - rows.start
            return dit(x[rows], t.expand(n).to(device), text[rows], clip_b[rows], cond_b[rows], ref_b[rows],
                       None if motion_b is None else motion_b[rows], layout=layout)

        v = guided_velocity(predict, b, guidance_scale, layout)
        latents = scheduler.step(v, t, latents, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, total, None)
    return latents


@torch.no_grad()
def generate_tracks(
    model: TrajectoryModel,
    image: Tensor,
    depth: Tensor,
    prompt: str,
    negative_prompt: str = "",
    num_frames: int = SamplerConfig.num_frames,
    steps: int = SamplerConfig.steps,
    guidance_scale: float = SamplerConfig.guidance_scale,
    shift: float = SamplerConfig.shift,
    seed: int = 0,
    K: Tensor | None = None,
    device: torch.device | str | None = None,
    fps: float = SamplerConfig.fps,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    motion_denormalisation: str = "paper",
    parallel: ParallelOptions | None = None,
) -> TrajectoryResult:
    """Image + metric z-depth + prompt -> dense 4D trajectories (MoGe4D §4.4 / App. F.3).

    Args:
        model: a loaded ``TrajectoryModel``.
        image: ``[H,W,3]`` RGB in 0..1 at the working size (``H``, ``W`` multiples of 16).
        depth: ``[H',W']`` metric z-depth of the image (``core.moge4d.strag.lift_depth``; resized to
            ``H x W`` if needed; 0 / inf / NaN = no surface, those pixels get ``valid = False`` and
            keep their initial position).
        prompt, negative_prompt: text.
        num_frames: ``4k + 1`` frames.
        steps, guidance_scale, shift: flow-matching sampler settings.
        seed: seed of the initial noise (CPU generator, so results match across devices).
        K: ``[3,3]`` pixel intrinsics for back-projection; ``None`` = ``official_pinhole(H, W)``.
        device: where to run; ``None`` = CUDA when present, else CPU.
        fps: frame rate stored in the tracks.
        callback: ``callback(step, steps, None)`` after every sampling step.
        should_stop: polled before every step; when True an ``InterruptedError`` is raised.
        motion_denormalisation: ``"paper"`` (default: eq. 1 reversed, §4.2 / §4.4) or
            ``"official"`` (the decoded motion added as it is, as the official inference script);
            ``core.moge4d.strag.fuse_motion``.
        parallel: ``backends.sequence_parallel.ParallelOptions`` listing two or more local devices: the
            DiT sampling runs sequence-parallel in one worker process per device (text / image encoding
            and the VAE stay here). Under ``torchrun`` the process group's session is used instead.

    Returns:
        ``TrajectoryResult``.

    Raises:
        ValueError: bad sizes (naming valid ones), frame counts the VAE cannot take (naming the
            nearest valid), negative or all-invalid depth, malformed inputs.
        InterruptedError: ``should_stop`` returned True.
        RuntimeError: a parallel worker failed (naming its rank and device).
    """
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[-1] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"generate_tracks: image must be [H,W,3] RGB in 0..1, got {got}")
    h, w = int(image.shape[0]), int(image.shape[1])
    check_size(w, h)
    check_frames(num_frames)
    if int(steps) < 1:
        raise ValueError(f"generate_tracks: steps must be >= 1, got {steps}")
    if motion_denormalisation not in MOTION_DENORMALISATIONS:
        raise ValueError(f"generate_tracks: motion_denormalisation must be one of {MOTION_DENORMALISATIONS}, "
                         f"got {motion_denormalisation!r}")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                          else "cpu")
    z, valid = _prepare_depth(depth, h, w)
    K_bp = official_pinhole(h, w) if K is None else K.float().cpu()
    points0 = backproject(z, K_bp)
    img = image.detach().float().cpu().clamp(0, 1)
    dit, dtype = model.dit, model.dtype

    # conditions (eq. 2): control image video, start-image zeros, depth video; reference latent
    t_lat = (int(num_frames) - 1) // TEMPORAL + 1
    rgb = (img.permute(2, 0, 1)[None, :, None] * 2 - 1).to(device)  # [1,3,1,H,W]
    dcond = depth_condition(torch.where(valid, z, torch.zeros_like(z)))[None, None, None].expand(1, 3, 1, h, w)
    with model.on(device, model.vae):
        control = model.encode_video(rgb.expand(1, 3, int(num_frames), h, w))
        depth_lat = model.encode_video(dcond.to(device).expand(1, 3, int(num_frames), h, w))
        ref = model.encode_video(rgb)[:, :, 0]
    cond = torch.cat([control, torch.zeros_like(control), depth_lat], dim=1)

    prompts = [str(negative_prompt), str(prompt)] if guidance_scale > 1.0 else [str(prompt)]
    text = model.encode_prompt(prompts, device)
    clip = model.clip_context(h, w, device)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    latents = torch.randn((1, LATENT_CHANNELS, t_lat, h // SPATIAL, w // SPATIAL), generator=gen).to(device)
    motion = None
    if dit.motion_extractor is not None:
        with model.on(device, dit.motion_extractor, dit.motion_adapter):
            motion = dit.motion_features(img.permute(2, 0, 1)[None].to(device))
    sampling = (latents, text, clip, cond, ref, motion, int(steps), float(shift), float(guidance_scale), dtype)
    session = active_session()
    if session is not None:  # torchrun: every rank runs this call, each on its share of the tokens
        with model.on(session.device, dit):
            latents = denoise_motion(session, dit, *sampling, callback, should_stop)
    elif parallel is not None and parallel.enabled:
        dit.to("cpu")
        cpu = tuple(x.cpu() if isinstance(x, Tensor) else x for x in sampling)
        latents = launch(parallel, denoise_motion, (dit, *cpu), "generate_tracks", callback, should_stop).to(device)
    else:
        with model.on(device, dit):
            latents = denoise_motion(None, dit, *sampling, callback, should_stop, device=device)
    with model.on(device, model.vae, model.decoder):
        normalized, rgb_maps = model.decode_motion(latents)
    normalized = normalized[0].permute(1, 2, 3, 0).float().cpu()[: int(num_frames)]  # [T,H,W,3]
    maps = ((rgb_maps[0].permute(1, 2, 3, 0).float().cpu() + 1) / 2).clamp(0, 1)[: int(num_frames)]
    points = fuse_motion(normalized, points0, motion_intrinsics(h, w), valid, motion_denormalisation)
    t_count = points.shape[0]
    tracks = Tracks(points=points.float(), colors=img, valid=valid, visible=torch.ones(t_count, h, w, dtype=torch.bool),
                    K=K_bp.float(), viewmat=torch.eye(4), fps=float(fps))
    return TrajectoryResult(tracks, maps, normalized, torch.where(valid, z, torch.zeros_like(z)))
