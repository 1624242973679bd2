# SPDX-License-Identifier: Apache-2.0
"""SAM2 / SAM2.1 single ``.safetensors`` files in the original facebookresearch/sam2 naming, read into
transformers' ``Sam2VideoModel``.

Public API:
    SAM2_VARIANTS                   size name -> the settings a checkpoint does not store (heads, windows, ...)
    sam2_rules(mask_down_layers)    the name rules original -> transformers (``backends.key_maps.KeyRule``)
    is_sam2_file(shapes)            True when a header looks like an original SAM2 checkpoint
    sam2_file_config(shapes, what)  (variant name, ``Sam2VideoConfig``) derived from the tensor shapes
    check_sam2_file(path)           the variant name of a file, or ValueError naming the file and what was expected
    load_sam2_file(path, dtype)     the ``Sam2VideoModel`` of a file, built on the meta device, loaded in ``dtype``

Design notes:
    The files ComfyUI users keep in ``models/sam2`` (``sam2.1_hiera_{tiny,small,base_plus,large}`` and
    ``sam2_hiera_*``, fp32 / fp16 / bf16, as ComfyUI-segment-anything-2 downloads them) hold the
    ``SAM2Base`` state dict of the original code under its own names (``image_encoder.trunk.*``,
    ``sam_mask_decoder.*``, ``memory_attention.*``, ``memory_encoder.*``, ``maskmem_tpos_enc``, ...), no
    prefix. The rules below rename them to transformers' names; the prompt encoder's four
    ``point_embeddings.N`` become one ``point_embed`` table and its random Fourier matrix also fills the
    model-level ``shared_image_embedding``.

    Sizes come from the shapes: the Hiera width and blocks per stage (the first block of a stage carries
    the ``proj`` that widens it) pick the variant; the window-embedding sizes, decoder and memory
    widths, layer counts and memory length are read off the tensors. What a checkpoint does not store
    (attention heads, global-attention blocks, window sizes, the 1024-pixel input) comes from
    :data:`SAM2_VARIANTS`, the settings of the released configurations. SAM2.1 files are told from SAM2.0
    ones by the tensors only 2.1 has (``no_obj_embed_spatial``, ``obj_ptr_tpos_proj``).

    Pre-processing with a single file: there is no processor config beside it, and none is needed —
    ``backends.sam2_video`` resizes frames to the model's square ``image_size`` (1024 for every released
    variant, from :data:`SAM2_VARIANTS`) and normalises with ImageNet mean/std, the original SAM2 and
    transformers ``Sam2VideoProcessor`` defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .key_maps import KeyRule, build_on_meta, load_planned, plan_names
from .wan import shard_shapes

__all__ = ["SAM2_VARIANTS", "Sam2Variant", "sam2_rules", "is_sam2_file", "sam2_file_config", "check_sam2_file",
           "load_sam2_file", "SAM2_MARKERS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sam2Variant:
    """Settings of a SAM2 size that its weights do not store."""

    hidden: int                               # Hiera width of stage 1 (selects the variant with ``blocks``)
    blocks: tuple[int, ...]                   # blocks per stage
    heads: tuple[int, ...] = (1, 2, 4, 8)     # attention heads per stage
    global_blocks: tuple[int, ...] = ()       # blocks with global attention
    windows: tuple[int, ...] = (8, 4, 14, 7)  # attention window per stage
    image_size: int = 1024
    decoder_heads: int = 8                    # mask decoder attention heads
    memory_heads: int = 1                     # memory attention heads


SAM2_VARIANTS: dict[str, Sam2Variant] = {
    "tiny": Sam2Variant(96, (1, 2, 7, 2), (1, 2, 4, 8), (5, 7, 9)),
    "small": Sam2Variant(96, (1, 2, 11, 2), (1, 2, 4, 8), (7, 10, 13)),
    "base_plus": Sam2Variant(112, (2, 3, 16, 3), (2, 4, 8, 16), (12, 16, 20)),
    "large": Sam2Variant(144, (2, 6, 36, 4), (2, 4, 8, 16), (23, 33, 43), (8, 4, 16, 8)),
}

# Tensors every original SAM2 checkpoint holds (the family check).
SAM2_MARKERS = ("image_encoder.trunk.patch_embed.proj.weight", "sam_mask_decoder.iou_token.weight",
                "memory_attention.layers.0.self_attn.q_proj.weight", "maskmem_tpos_enc")


def _mlp3(original: str, ours: str) -> list[KeyRule]:
    """A three-layer MLP: ``layers.0/1/2`` -> ``proj_in`` / ``layers.0`` / ``proj_out``."""
    return [KeyRule((f"{original}.layers.0.",), (f"{ours}.proj_in.",)),
            KeyRule((f"{original}.layers.1.",), (f"{ours}.layers.0.",)),
            KeyRule((f"{original}.layers.2.",), (f"{ours}.proj_out.",))]


def _attention(original: str, ours: str) -> list[KeyRule]:
    return [KeyRule((f"{original}.{p}.",), (f"{ours}.{p}.",)) for p in ("q_proj", "k_proj", "v_proj")] + \
        [KeyRule((f"{original}.out_proj.",), (f"{ours}.o_proj.",))]


def sam2_rules(mask_down_layers: int = 4) -> list[KeyRule]:
    """Original SAM2 names -> ``Sam2VideoModel`` names. ``mask_down_layers``: conv + norm pairs of the memory
    encoder's mask down-sampler (4 in every release), whose final 1x1 conv follows them."""
    trunk, vis, mdt = "image_encoder.trunk", "vision_encoder.backbone", "mask_decoder.transformer"
    pe, md, ma, me = "sam_prompt_encoder", "sam_mask_decoder", "memory_attention", "memory_encoder"
    rules = [
        # image encoder: Hiera trunk and FPN neck
        KeyRule((f"{trunk}.patch_embed.proj.",), (f"{vis}.patch_embed.projection.",)),
        KeyRule((f"{trunk}.pos_embed",), (f"{vis}.pos_embed",)),
        KeyRule((f"{trunk}.pos_embed_window",), (f"{vis}.pos_embed_window",)),
        KeyRule((f"{trunk}.blocks.{{i}}.norm1.",), (f"{vis}.blocks.{{i}}.layer_norm1.",)),
        KeyRule((f"{trunk}.blocks.{{i}}.norm2.",), (f"{vis}.blocks.{{i}}.layer_norm2.",)),
        KeyRule((f"{trunk}.blocks.{{i}}.attn.qkv.",), (f"{vis}.blocks.{{i}}.attn.qkv.",)),
        KeyRule((f"{trunk}.blocks.{{i}}.attn.proj.",), (f"{vis}.blocks.{{i}}.attn.proj.",)),
        KeyRule((f"{trunk}.blocks.{{i}}.mlp.layers.0.",), (f"{vis}.blocks.{{i}}.mlp.proj_in.",)),
        KeyRule((f"{trunk}.blocks.{{i}}.mlp.layers.1.",), (f"{vis}.blocks.{{i}}.mlp.proj_out.",)),
        KeyRule((f"{trunk}.blocks.{{i}}.proj.",), (f"{vis}.blocks.{{i}}.proj.",)),
        KeyRule(("image_encoder.neck.convs.{i}.conv.",), ("vision_encoder.neck.convs.{i}.",)),
        # prompt encoder
        KeyRule((f"{pe}.pe_layer.positional_encoding_gaussian_matrix",),
                ("prompt_encoder.shared_embedding.positional_embedding",
                 "shared_image_embedding.positional_embedding")),
        KeyRule(tuple(f"{pe}.point_embeddings.{n}.weight" for n in range(4)), ("prompt_encoder.point_embed.weight",)),
        KeyRule((f"{pe}.not_a_point_embed.",), ("prompt_encoder.not_a_point_embed.",)),
        KeyRule((f"{pe}.no_mask_embed.",), ("prompt_encoder.no_mask_embed.",)),
        KeyRule((f"{pe}.mask_downscaling.0.",), ("prompt_encoder.mask_embed.conv1.",)),
        KeyRule((f"{pe}.mask_downscaling.1.",), ("prompt_encoder.mask_embed.layer_norm1.",)),
        KeyRule((f"{pe}.mask_downscaling.3.",), ("prompt_encoder.mask_embed.conv2.",)),
        KeyRule((f"{pe}.mask_downscaling.4.",), ("prompt_encoder.mask_embed.layer_norm2.",)),
        KeyRule((f"{pe}.mask_downscaling.6.",), ("prompt_encoder.mask_embed.conv3.",)),
        # mask decoder
        *[KeyRule((f"{md}.{n}.",), (f"mask_decoder.{n}.",))
          for n in ("iou_token", "mask_tokens", "obj_score_token", "conv_s0", "conv_s1")],
        KeyRule((f"{md}.output_upscaling.0.",), ("mask_decoder.upscale_conv1.",)),
        KeyRule((f"{md}.output_upscaling.1.",), ("mask_decoder.upscale_layer_norm.",)),
        KeyRule((f"{md}.output_upscaling.3.",), ("mask_decoder.upscale_conv2.",)),
        *_mlp3(f"{md}.output_hypernetworks_mlps.{{i}}", "mask_decoder.output_hypernetworks_mlps.{i}"),
        *_mlp3(f"{md}.iou_prediction_head", "mask_decoder.iou_prediction_head"),
        *_mlp3(f"{md}.pred_obj_score_head", "mask_decoder.pred_obj_score_head"),
        *[r for a in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
          for r in _attention(f"{md}.transformer.layers.{{i}}.{a}", f"{mdt}.layers.{{i}}.{a}")],
        *[KeyRule((f"{md}.transformer.layers.{{i}}.norm{n}.",), (f"{mdt}.layers.{{i}}.layer_norm{n}.",))
          for n in range(1, 5)],
        KeyRule((f"{md}.transformer.layers.{{i}}.mlp.layers.0.",), (f"{mdt}.layers.{{i}}.mlp.proj_in.",)),
        KeyRule((f"{md}.transformer.layers.{{i}}.mlp.layers.1.",), (f"{mdt}.layers.{{i}}.mlp.proj_out.",)),
        *_attention(f"{md}.transformer.final_attn_token_to_image", f"{mdt}.final_attn_token_to_image"),
        KeyRule((f"{md}.transformer.norm_final_attn.",), (f"{mdt}.layer_norm_final_attn.",)),
        # memory attention
        *[r for a in ("self_attn", "cross_attn_image")
          for r in _attention(f"{ma}.layers.{{i}}.{a}", f"memory_attention.layers.{{i}}.{a}")],
        KeyRule((f"{ma}.layers.{{i}}.linear1.",), ("memory_attention.layers.{i}.linear1.",)),
        KeyRule((f"{ma}.layers.{{i}}.linear2.",), ("memory_attention.layers.{i}.linear2.",)),
        *[KeyRule((f"{ma}.layers.{{i}}.norm{n}.",), (f"memory_attention.layers.{{i}}.layer_norm{n}.",))
          for n in range(1, 4)],
        KeyRule((f"{ma}.norm.",), ("memory_attention.layer_norm.",)),
        # memory encoder
        KeyRule((f"{me}.pix_feat_proj.",), ("memory_encoder.feature_projection.",)),
        KeyRule((f"{me}.out_proj.",), ("memory_encoder.projection.",)),
        KeyRule((f"{me}.fuser.layers.{{i}}.dwconv.",), ("memory_encoder.memory_fuser.layers.{i}.depthwise_conv.",)),
        KeyRule((f"{me}.fuser.layers.{{i}}.norm.",), ("memory_encoder.memory_fuser.layers.{i}.layer_norm.",)),
        KeyRule((f"{me}.fuser.layers.{{i}}.pwconv1.",), ("memory_encoder.memory_fuser.layers.{i}.pointwise_conv1.",)),
        KeyRule((f"{me}.fuser.layers.{{i}}.pwconv2.",), ("memory_encoder.memory_fuser.layers.{i}.pointwise_conv2.",)),
        KeyRule((f"{me}.fuser.layers.{{i}}.gamma",), ("memory_encoder.memory_fuser.layers.{i}.scale",)),
        # model-level tensors
        KeyRule(("maskmem_tpos_enc",), ("memory_temporal_positional_encoding",)),
        KeyRule(("no_mem_embed",), ("no_memory_embedding",)),
        KeyRule(("no_mem_pos_enc",), ("no_memory_positional_encoding",)),
        KeyRule(("no_obj_ptr",), ("no_object_pointer",)),
        KeyRule(("no_obj_embed_spatial",), ("occlusion_spatial_embedding_parameter",)),
        KeyRule(("mask_downsample.",), ("mask_downsample.",)),
        *_mlp3("obj_ptr_proj", "object_pointer_proj"),
        KeyRule(("obj_ptr_tpos_proj.",), ("temporal_positional_encoding_projection_layer.",)),
    ]
    # the mask down-sampler's Sequential: (conv, norm, GELU) per layer, then the final conv
    for k in range(mask_down_layers):
        rules.append(KeyRule((f"{me}.mask_downsampler.encoder.{3 * k}.",),
                             (f"memory_encoder.mask_downsampler.layers.{k}.conv.",)))
        rules.append(KeyRule((f"{me}.mask_downsampler.encoder.{3 * k + 1}.",),
                             (f"memory_encoder.mask_downsampler.layers.{k}.layer_norm.",)))
    rules.append(KeyRule((f"{me}.mask_downsampler.encoder.{3 * mask_down_layers}.",),
                         ("memory_encoder.mask_downsampler.final_conv.",)))
    return rules


def is_sam2_file(shapes: dict[str, tuple[int, ...]]) -> bool:
    return all(k in shapes for k in SAM2_MARKERS)


def _family_error(shapes: dict, what: str) -> ValueError:
    names = sorted(shapes)
    hint = ""
    if any(k.startswith("vision_encoder.") for k in names):
        hint = (" It looks like a transformers SAM2 checkpoint: put it in a folder with its config.json "
                "(e.g. facebook/sam2.1-hiera-tiny) instead.")
    elif any(k.startswith("image_encoder.blocks.") for k in names):
        hint = " It looks like a SAM (v1) checkpoint, which has no video memory."
    more = ", ..." if len(names) > 5 else ""
    return ValueError(f"{what}: not a SAM2 checkpoint in the original facebookresearch/sam2 naming (expected "
                      f"{', '.join(SAM2_MARKERS)}; the file holds {', '.join(names[:5])}{more})." + hint)


def _count(shapes: dict, prefix: str) -> int:
    """How many ``prefix<N>.`` indices the names have (N from 0)."""
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes
             if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    return max(found) + 1 if found else 0


def _stages(shapes: dict, what: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks per stage, width per stage) of the Hiera trunk: a stage starts at block 0 and at every block
    with a ``proj`` (the layer that widens the features)."""
    trunk = "image_encoder.trunk.blocks."
    n = _count(shapes, trunk)
    starts = [0] + [i for i in range(1, n) if f"{trunk}{i}.proj.weight" in shapes]
    blocks = tuple(b - a for a, b in zip(starts, starts[1:] + [n]))
    widths = tuple(int(shapes[f"{trunk}{i}.attn.qkv.weight"][0]) // 3 for i in starts)
    if n == 0 or any(b <= 0 for b in blocks):
        raise ValueError(f"{what}: the SAM2 image encoder has no blocks")
    return blocks, widths


def sam2_file_config(shapes: dict[str, tuple[int, ...]], what: str = "SAM2 file"):
    """(variant name, ``Sam2VideoConfig``) of an original SAM2 checkpoint from its tensor shapes.

    Raises:
        ValueError: naming ``what``: another family, or a size none of :data:`SAM2_VARIANTS` has.
    """
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
        Sam2VisionConfig,
    )

    if not is_sam2_file(shapes):
        raise _family_error(shapes, what)
    hidden = int(shapes["image_encoder.trunk.patch_embed.proj.weight"][0])
    blocks, widths = _stages(shapes, what)
    name = next((n for n, v in SAM2_VARIANTS.items() if v.hidden == hidden and v.blocks == blocks), None)
    if name is None:
        known = "; ".join(f"{n}: width {v.hidden}, blocks {list(v.blocks)}" for n, v in SAM2_VARIANTS.items())
        raise ValueError(f"{what}: a SAM2 image encoder of width {hidden} with blocks per stage {list(blocks)} is "
                         f"not a known SAM2 / SAM2.1 size (expected {known})")
    v = SAM2_VARIANTS[name]
    s = v.image_size
    window0 = int(shapes["image_encoder.trunk.pos_embed_window"][-1])
    if window0 != v.windows[0]:
        raise ValueError(f"{what}: window embedding {window0} does not match the {name} SAM2 ({v.windows[0]})")
    backbone = Sam2HieraDetConfig(
        hidden_size=hidden, num_attention_heads=v.heads[0], image_size=[s, s], blocks_per_stage=list(blocks),
        embed_dim_per_stage=list(widths), num_attention_heads_per_stage=list(v.heads),
        window_size_per_stage=list(v.windows), global_attention_blocks=list(v.global_blocks),
        window_positional_embedding_background_size=list(shapes["image_encoder.trunk.pos_embed"][-2:]),
        mlp_ratio=shapes["image_encoder.trunk.blocks.0.mlp.layers.0.weight"][0] / hidden,
    )
    fpn = int(shapes["image_encoder.neck.convs.0.conv.weight"][0])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=list(widths[::-1]),
                              backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
                              fpn_hidden_size=fpn)
    dec = int(shapes["sam_mask_decoder.iou_token.weight"][1])
    prompt = Sam2VideoPromptEncoderConfig(
        hidden_size=int(shapes["sam_prompt_encoder.no_mask_embed.weight"][1]), image_size=s, patch_size=16,
        mask_input_channels=int(shapes["sam_prompt_encoder.mask_downscaling.3.weight"][0]))
    decoder = Sam2VideoMaskDecoderConfig(
        hidden_size=dec, num_hidden_layers=_count(shapes, "sam_mask_decoder.transformer.layers."),
        mlp_dim=int(shapes["sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight"][0]),
        num_attention_heads=v.decoder_heads,
        attention_downsample_rate=dec // int(
            shapes["sam_mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"][0]),
        iou_head_hidden_dim=int(shapes["sam_mask_decoder.iou_prediction_head.layers.0.weight"][0]))
    mem = "memory_encoder"
    config = Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder, image_size=s,
        num_maskmem=int(shapes["maskmem_tpos_enc"][0]),
        memory_attention_hidden_size=int(shapes["memory_attention.norm.weight"][0]),
        memory_attention_num_layers=_count(shapes, "memory_attention.layers."),
        memory_attention_num_attention_heads=v.memory_heads,
        memory_attention_feed_forward_hidden_size=int(shapes["memory_attention.layers.0.linear1.weight"][0]),
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=int(shapes[f"{mem}.pix_feat_proj.weight"][0]),
        memory_encoder_output_channels=int(shapes[f"{mem}.out_proj.weight"][0]),
        mask_downsampler_embed_dim=int(
            shapes[f"{mem}.mask_downsampler.encoder.{3 * _mask_down_layers(shapes)}.weight"][0]),
        mask_downsampler_stride=2, mask_downsampler_total_stride=2 ** _mask_down_layers(shapes),
        memory_fuser_num_layers=_count(shapes, f"{mem}.fuser.layers."),
        memory_fuser_embed_dim=int(shapes[f"{mem}.fuser.layers.0.dwconv.weight"][0]),
        memory_fuser_intermediate_dim=int(shapes[f"{mem}.fuser.layers.0.pwconv1.weight"][0]),
        enable_occlusion_spatial_embedding="no_obj_embed_spatial" in shapes,
        enable_temporal_pos_encoding_for_object_pointers="obj_ptr_tpos_proj.weight" in shapes,
    )
    return name, config


def _mask_down_layers(shapes: dict) -> int:
    """Conv + norm pairs of the mask down-sampler: the Sequential's last index is the final conv (3 per pair)."""
    last = _count(shapes, "memory_encoder.mask_downsampler.encoder.") - 1
    return max(last // 3, 0)


def _plan(shapes: dict, what: str):
    return plan_names(sam2_rules(_mask_down_layers(shapes)), shapes, what)


def check_sam2_file(path: str | Path) -> str:
    """The SAM2 variant of a single file, from its header only (names and shapes checked, nothing loaded).

    Raises:
        ValueError: naming the file: unreadable, another family, an unknown size, or tensors of no known name.
    """
    path = Path(path)
    what = f"SAM2 file {str(path)!r}"
    shapes = shard_shapes(path)
    name, _ = sam2_file_config(shapes, what)
    _plan(shapes, what)
    return name


def load_sam2_file(path: str | Path, dtype: torch.dtype = torch.float32):
    """The ``Sam2VideoModel`` of an original SAM2 single file (eval mode, no gradients), built on the meta
    device and filled tensor by tensor in ``dtype``.

    Raises:
        ValueError: naming the file, as :func:`check_sam2_file`, or weights that do not fit the derived config.
    """
    from transformers import Sam2VideoModel

    path = Path(path)
    what = f"SAM2 file {str(path)!r}"
    shapes = shard_shapes(path)
    name, config = sam2_file_config(shapes, what)
    plan = _plan(shapes, what)
    model = build_on_meta(lambda: Sam2VideoModel(config))
    load_planned(model, path, plan, dtype, what)
    model.eval().requires_grad_(False)
    logger.info("loaded SAM2 %s from the single file %s (%s)", name, path.name, dtype)
    return model
