# SPDX-License-Identifier: Apache-2.0
"""Tiny Diffusion4D orbital models in the folder layout ``backends.orbital`` loads (native 16x16).

Public API:
    build_tiny_orbital(folder, seed)        kind "orbital": I2VGen-XL base + 4D UNet + magnitude MLP
    build_tiny_orbital_base(folder, seed)   kind "orbital_base": I2VGen-XL base only (base mode)
    build_tiny_orbital_text(folder, seed)   kind "orbital_text": ModelScope UNet3D text model + 4D UNet + MLP
    tiny_i2vgenxl_unet(), tiny_unet3d()     the two-level video UNets at latent size 8
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ...core.diffusion4d.orbital import MotionMagnitudeEmbedding
from ..orbital import MAGNITUDE_MLP, UNET_4D, time_embed_dim
from . import tiny_builder
from .sd import clip_processor, tiny_clip_text, tiny_clip_vision, tiny_vae, write_tiny_tokenizer

__all__ = [
    "build_tiny_orbital",
    "build_tiny_orbital_base",
    "build_tiny_orbital_text",
    "tiny_i2vgenxl_unet",
    "tiny_unet3d",
]


def tiny_i2vgenxl_unet():
    """A two-level I2VGenXLUNet at latent size 8 (cross-attention width 16)."""
    from diffusers import I2VGenXLUNet

    return I2VGenXLUNet(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1, norm_num_groups=4,
                        cross_attention_dim=16, attention_head_dim=4)


def tiny_unet3d():
    """A two-level ModelScope UNet3DConditionModel at latent size 8 (cross-attention width 16)."""
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1,
                                norm_num_groups=4, cross_attention_dim=16, attention_head_dim=4)


def _write_orbital(folder: Path, seed: int, family: str, with_4d: bool) -> Path:
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file
    from transformers import CLIPTokenizer

    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    make_unet = tiny_i2vgenxl_unet if family == "image" else tiny_unet3d
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = tiny_vae()
        text = tiny_clip_text()
        unet = make_unet()
        image_encoder = tiny_clip_vision(True, hidden=16, image_size=32, projection_dim=16)
        unet_4d = make_unet() if with_4d else None
        mlp = None
        if with_4d:
            mlp = MotionMagnitudeEmbedding(embed_dim=time_embed_dim(unet_4d), freq_dim=32, hidden_dim=32,
                                           scale=1.0)
            # A trained MLP is not zero at its output layer: stand in for training with random weights.
            nn.init.normal_(mlp.linear_2.weight, std=0.5)
            nn.init.normal_(mlp.linear_2.bias, std=0.1)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    if family == "image":
        from diffusers import I2VGenXLPipeline

        pipe = I2VGenXLPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, image_encoder=image_encoder,
                                feature_extractor=clip_processor(32), unet=unet, scheduler=scheduler)
    else:
        from diffusers import TextToVideoSDPipeline

        pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    if with_4d:
        unet_4d.save_pretrained(folder / UNET_4D, safe_serialization=True)
        (folder / MAGNITUDE_MLP).mkdir(exist_ok=True)
        (folder / MAGNITUDE_MLP / "config.json").write_text(json.dumps(
            {"embed_dim": mlp.embed_dim, "freq_dim": mlp.freq_dim, "hidden_dim": mlp.linear_1.out_features,
             "scale": mlp.scale, "max_period": mlp.max_period}, indent=2), encoding="utf-8")
        save_file({k: v.contiguous() for k, v in mlp.state_dict().items()},
                  str(folder / MAGNITUDE_MLP / "model.safetensors"))
    return folder


@tiny_builder("orbital")
def build_tiny_orbital(folder: Path, seed: int) -> Path:
    """Tiny I2VGen-XL orbital model (base + 4D UNet + magnitude MLP), native 16x16."""
    return _write_orbital(Path(folder), seed, "image", with_4d=True)


@tiny_builder("orbital_base")
def build_tiny_orbital_base(folder: Path, seed: int) -> Path:
    """Tiny I2VGen-XL base 3D-aware model only (base mode), native 16x16."""
    return _write_orbital(Path(folder), seed, "image", with_4d=False)


@tiny_builder("orbital_text")
def build_tiny_orbital_text(folder: Path, seed: int) -> Path:
    """Tiny ModelScope (UNet3D) text orbital model (base + 4D UNet + magnitude MLP), native 16x16."""
    return _write_orbital(Path(folder), seed, "text", with_4d=True)
