# SPDX-License-Identifier: Apache-2.0
"""Tiny random SAM2 video model in the transformers folder layout ``backends.sam2_video`` loads.

Public API:
    tiny_config(image_size)         the smallest ``Sam2VideoConfig`` transformers runs
    build_tiny_sam2_video(folder, seed)   kind "sam2_video": a tiny random ``Sam2VideoModel`` (``tiny_builder``)
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import tiny_builder

__all__ = ["tiny_config", "build_tiny_sam2_video"]


def tiny_config(image_size: int = 64):
    """The smallest ``Sam2VideoConfig`` transformers runs: a 5-block Hiera, 128-wide heads, one memory layer.

    Constraints found in transformers' code: the memory cross-attention key width is fixed at
    64 (``kv_in_dim=64``), so ``memory_encoder_output_channels`` is 64; the object pointers are
    split into ``hidden / 64`` tokens and the model only handles ``hidden > 64``, so the shared
    hidden size is 128; a global-attention block cannot be the first block of a pooled stage.
    ``initializer_range`` 0.1 (instead of 0.02) gives logits of order 0.1-1 rather than 1e-4, so
    the random masks are not all decided by rounding noise.
    """
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
        Sam2VisionConfig,
    )

    s = int(image_size)
    if s % 32:
        raise ValueError(f"tiny_config: image_size must be a multiple of 32, got {s}")
    hidden = 128
    # Sub-configs as objects, not dicts: some transformers 5.x releases map dict sub-configs wrongly.
    backbone = Sam2HieraDetConfig(
        hidden_size=8, num_attention_heads=1, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4], mlp_ratio=2.0,
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]], fpn_hidden_size=hidden,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=hidden, image_size=s, patch_size=16,
                                                           mask_input_channels=8),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=hidden, mlp_dim=64, num_hidden_layers=1,
                                                       num_attention_heads=2, iou_head_hidden_dim=16),
        image_size=s, num_maskmem=7, initializer_range=0.1,
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden,
        memory_fuser_num_layers=1, memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64,
    )


@tiny_builder("sam2_video")
def build_tiny_sam2_video(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random ``Sam2VideoModel`` (safetensors + config.json) into ``folder`` and return it."""
    from transformers import Sam2VideoModel

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = Sam2VideoModel(tiny_config()).eval()
    model.save_pretrained(str(folder))
    return folder
