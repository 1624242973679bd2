# SPDX-License-Identifier: Apache-2.0
"""Depth Anything V2 single ``.safetensors`` files in the original naming, read into transformers'
``DepthAnythingForDepthEstimation``.

Public API:
    DEPTH_VARIANTS                  encoder name -> (width, layers, the layers the head reads)
    depth_rules(layers, swiglu)     the name rules original -> transformers (``backends.key_maps.KeyRule``)
    is_depth_file(shapes)           True when a header looks like an original Depth Anything checkpoint
    depth_file_config(shapes, file_name, what)   (variant name, ``DepthAnythingConfig``) from the shapes
    check_depth_file(path)          the config dict (``config.json`` style) of a file, or ValueError
    load_depth_file(path, dtype)    the model, built on the meta device and loaded in ``dtype``

Design notes:
    The files ComfyUI users keep in ``models/depthanything`` (``depth_anything_v2_vit{s,b,l}_fp32`` /
    ``_fp16``, ``depth_anything_v2_metric_{hypersim,vkitti}_vitl_fp32``, as ComfyUI-DepthAnythingV2
    downloads them) hold the state dict of the original ``DepthAnythingV2`` module: the DINOv2 encoder
    under ``pretrained.`` (fused ``attn.qkv``, layer scales ``ls1/ls2.gamma``; the giant encoder's
    SwiGLU ``mlp.w12`` / ``mlp.w3``) and the DPT head under ``depth_head.`` (``projects``,
    ``resize_layers``, ``scratch.layerN_rn``, ``scratch.refinenetN``, ``scratch.output_conv1/2``). The
    fused ``qkv`` is split into the query/key/value projections, ``w12`` into the gate and up
    projections; ``refinenet4`` is the first fusion layer.

    Sizes come from the shapes (encoder width and depth, patch size, position grid, head widths); the
    encoder width and depth name the variant, whose intermediate layers (which the head reads; not
    stored) come from :data:`DEPTH_VARIANTS`. Attention heads are DINOv2's 64 channels wide.
    Relative and metric checkpoints have the same tensors: a file is metric when its name says
    ``metric`` / ``hypersim`` / ``vkitti``; Hypersim (indoor) models reach 20 m, Virtual KITTI
    (outdoor) ones 80 m, as they were trained.

    Pre-processing: every Depth Anything V2 variant was trained at 518 pixels (a 37 x 37 grid of
    14-pixel patches, which the checkpoint's position embedding confirms) with ImageNet mean/std —
    what ``backends.depth.preprocess`` does for folders and single files alike.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from .key_maps import KeyRule, build_on_meta, load_planned, plan_names
from .wan import shard_shapes

__all__ = ["DEPTH_VARIANTS", "depth_rules", "is_depth_file", "depth_file_config", "check_depth_file",
           "load_depth_file", "DEPTH_MARKERS", "HEAD_WIDTH"]

logger = logging.getLogger(__name__)

# encoder -> (width, layers, the 1-based layers whose outputs the DPT head reads)
DEPTH_VARIANTS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "vits": (384, 12, (3, 6, 9, 12)),
    "vitb": (768, 12, (3, 6, 9, 12)),
    "vitl": (1024, 24, (5, 12, 18, 24)),
    "vitg": (1536, 40, (10, 20, 30, 40)),
}
HEAD_WIDTH = 64  # DINOv2 attention head width
DEPTH_MARKERS = ("pretrained.cls_token", "pretrained.pos_embed", "pretrained.patch_embed.proj.weight",
                 "depth_head.scratch.output_conv1.weight")
_METRIC_RANGES = (("hypersim", 20), ("indoor", 20), ("vkitti", 80), ("outdoor", 80))


def depth_rules(swiglu: bool = False) -> list[KeyRule]:
    """Original Depth Anything V2 names -> ``DepthAnythingForDepthEstimation`` names."""
    blk, lay = "pretrained.blocks.{i}", "backbone.encoder.layer.{i}"
    rules = [
        KeyRule(("pretrained.cls_token",), ("backbone.embeddings.cls_token",)),
        KeyRule(("pretrained.mask_token",), ("backbone.embeddings.mask_token",)),
        KeyRule(("pretrained.pos_embed",), ("backbone.embeddings.position_embeddings",)),
        KeyRule(("pretrained.patch_embed.proj.",), ("backbone.embeddings.patch_embeddings.projection.",)),
        KeyRule((f"{blk}.norm1.",), (f"{lay}.norm1.",)),
        KeyRule((f"{blk}.norm2.",), (f"{lay}.norm2.",)),
        KeyRule((f"{blk}.attn.qkv.",), (f"{lay}.attention.q_proj.", f"{lay}.attention.k_proj.",
                                        f"{lay}.attention.v_proj."), split=True),
        KeyRule((f"{blk}.attn.proj.",), (f"{lay}.attention.o_proj.",)),
        KeyRule((f"{blk}.ls1.gamma",), (f"{lay}.layer_scale1.lambda1",)),
        KeyRule((f"{blk}.ls2.gamma",), (f"{lay}.layer_scale2.lambda1",)),
        KeyRule(("pretrained.norm.",), ("backbone.layernorm.",)),
        KeyRule(("depth_head.projects.{i}.",), ("neck.reassemble_stage.layers.{i}.projection.",)),
        KeyRule(("depth_head.resize_layers.{i}.",), ("neck.reassemble_stage.layers.{i}.resize.",)),
        KeyRule(("depth_head.scratch.output_conv1.",), ("head.conv1.",)),
        KeyRule(("depth_head.scratch.output_conv2.0.",), ("head.conv2.",)),
        KeyRule(("depth_head.scratch.output_conv2.2.",), ("head.conv3.",)),
    ]
    if swiglu:
        rules += [KeyRule((f"{blk}.mlp.w12.",), (f"{lay}.mlp.gate_proj.", f"{lay}.mlp.up_proj."), split=True),
                  KeyRule((f"{blk}.mlp.w3.",), (f"{lay}.mlp.down_proj.",))]
    else:
        rules += [KeyRule((f"{blk}.mlp.fc1.",), (f"{lay}.mlp.fc1.",)),
                  KeyRule((f"{blk}.mlp.fc2.",), (f"{lay}.mlp.fc2.",))]
    for n in range(1, 5):  # scratch.layer1_rn .. layer4_rn; refinenet4 (deepest) is the first fusion layer
        rules.append(KeyRule((f"depth_head.scratch.layer{n}_rn.",), (f"neck.convs.{n - 1}.",)))
        fused, ours = f"depth_head.scratch.refinenet{n}", f"neck.fusion_stage.layers.{4 - n}"
        rules.append(KeyRule((f"{fused}.out_conv.",), (f"{ours}.projection.",)))
        for unit in (1, 2):
            for conv in (1, 2):
                rules.append(KeyRule((f"{fused}.resConfUnit{unit}.conv{conv}.",),
                                     (f"{ours}.residual_layer{unit}.convolution{conv}.",)))
    return rules


def is_depth_file(shapes: dict[str, tuple[int, ...]]) -> bool:
    return all(k in shapes for k in DEPTH_MARKERS)


def _family_error(shapes: dict, what: str) -> ValueError:
    names = sorted(shapes)
    hint = ""
    if any(k.startswith("backbone.embeddings.") for k in names):
        hint = (" It looks like a transformers checkpoint: put it in a folder with its config.json (e.g. "
                "depth-anything/Depth-Anything-V2-Small-hf) instead.")
    return ValueError(f"{what}: not a Depth Anything V2 checkpoint in the original naming (expected "
                      f"{', '.join(DEPTH_MARKERS)}; the file holds {', '.join(names[:5])}"
                      f"{', ...' if len(names) > 5 else ''}).{hint}")


def _metric(file_name: str, what: str) -> tuple[str, int]:
    name = file_name.lower()
    ranges = [depth for word, depth in _METRIC_RANGES if word in name]
    if ranges:
        return "metric", ranges[0]
    if "metric" in name:
        raise ValueError(f"{what}: a metric Depth Anything V2 file must name its training set, which fixes its depth "
                         "range: 'hypersim' (indoor, 20 m) or 'vkitti' (outdoor, 80 m), e.g. "
                         "depth_anything_v2_metric_hypersim_vitl_fp32.safetensors")
    return "relative", 1


def depth_file_config(shapes: dict[str, tuple[int, ...]], file_name: str = "", what: str = "depth file"):
    """(variant name, ``DepthAnythingConfig``) of an original Depth Anything V2 checkpoint from its shapes
    (and, for relative vs metric, its file name).

    Raises:
        ValueError: naming ``what``: another family, an unknown size, a head that is not DPT's.
    """
    from transformers import DepthAnythingConfig, Dinov2Config

    if not is_depth_file(shapes):
        raise _family_error(shapes, what)
    width = int(shapes["pretrained.cls_token"][-1])
    layers = len({k.split(".")[2] for k in shapes if k.startswith("pretrained.blocks.")})
    name = next((n for n, (w, d, _) in DEPTH_VARIANTS.items() if (w, d) == (width, layers)), None)
    if name is None:
        known = "; ".join(f"{n}: width {w}, {d} layers" for n, (w, d, _) in DEPTH_VARIANTS.items())
        raise ValueError(f"{what}: a DINOv2 encoder of width {width} with {layers} layers is not a Depth Anything "
                         f"V2 size (expected {known})")
    out_indices = DEPTH_VARIANTS[name][2]
    patch = int(shapes["pretrained.patch_embed.proj.weight"][-1])
    grid = math.isqrt(int(shapes["pretrained.pos_embed"][1]) - 1)
    projects = [int(shapes[f"depth_head.projects.{i}.weight"][0]) for i in range(4)
                if f"depth_head.projects.{i}.weight" in shapes]
    resize = [f"depth_head.resize_layers.{i}.weight" in shapes for i in range(4)]
    if len(projects) != 4 or resize != [True, True, False, True]:
        raise ValueError(f"{what}: the depth head is not Depth Anything's DPT head (4 projections, resize layers 0, 1 "
                         f"and 3); found {len(projects)} projections")
    swiglu = "pretrained.blocks.0.mlp.w12.weight" in shapes
    if swiglu:  # SwiGLU keeps 2/3 of ratio x width, rounded up to a multiple of 8: find the ratio
        inner = int(shapes["pretrained.blocks.0.mlp.w3.weight"][1])
        ratios = [r for r in range(1, 9) if (int(r * width * 2 / 3) + 7) // 8 * 8 == inner]
        hidden_ffn = ratios[0] * width if ratios else inner
    else:
        hidden_ffn = int(shapes["pretrained.blocks.0.mlp.fc1.weight"][0])
    if hidden_ffn % width:
        raise ValueError(f"{what}: MLP width {hidden_ffn} is not a multiple of the encoder width {width}")
    kind, max_depth = _metric(file_name, what)
    backbone = Dinov2Config(
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=max(width // HEAD_WIDTH, 1),
        mlp_ratio=hidden_ffn // width, patch_size=patch, image_size=grid * patch, use_swiglu_ffn=swiglu,
        out_indices=list(out_indices), apply_layernorm=True, reshape_hidden_states=False, layerscale_value=1.0)
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=patch, reassemble_hidden_size=width, reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=projects, fusion_hidden_size=int(shapes["depth_head.scratch.layer1_rn.weight"][0]),
        head_hidden_size=int(shapes["depth_head.scratch.output_conv2.0.weight"][0]),
        depth_estimation_type=kind, max_depth=max_depth)
    return name, config


def _plan(shapes: dict, what: str):
    return plan_names(depth_rules("pretrained.blocks.0.mlp.w12.weight" in shapes), shapes, what)


def check_depth_file(path: str | Path) -> dict:
    """The ``config.json``-style dict (``model_type`` ``depth_anything``, ``depth_estimation_type``, ...) of a
    single file, from its header only.

    Raises:
        ValueError: naming the file: unreadable, another family, an unknown size, tensors of no known name.
    """
    path = Path(path)
    what = f"depth file {str(path)!r}"
    shapes = shard_shapes(path)
    name, config = depth_file_config(shapes, path.name, what)
    _plan(shapes, what)
    out = config.to_dict()
    out["variant"] = name
    return out


def load_depth_file(path: str | Path, dtype: torch.dtype = torch.float32):
    """The ``DepthAnythingForDepthEstimation`` of an original single file (eval mode, no gradients), built on
    the meta device and filled tensor by tensor in ``dtype``."""
    from transformers import DepthAnythingForDepthEstimation

    path = Path(path)
    what = f"depth file {str(path)!r}"
    shapes = shard_shapes(path)
    name, config = depth_file_config(shapes, path.name, what)
    plan = _plan(shapes, what)
    model = build_on_meta(lambda: DepthAnythingForDepthEstimation(config))
    load_planned(model, path, plan, dtype, what)
    model.eval().requires_grad_(False)
    logger.info("loaded Depth Anything V2 %s (%s) from the single file %s (%s)", name,
                config.depth_estimation_type, path.name, dtype)
    return model
