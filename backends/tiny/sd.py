# SPDX-License-Identifier: Apache-2.0
"""Tiny Stable-Diffusion-family models (Zero123, SD guidance, SD inpainting) and the UNet / VAE / CLIP
parts the other tiny builders share.

Public API:
    build_tiny_zero123(folder, seed)        kind "guidance_zero123": stable-zero123-diffusers layout
    build_tiny_sd(folder, seed)             kind "guidance_sd": diffusers Stable Diffusion layout
    build_tiny_sd_inpaint(folder, seed)     kind "inpaint_sd": diffusers SD 2.x inpainting layout
    tiny_unet(in_channels, cross_attention_dim)   two-level UNet2DConditionModel at latent size 16
    tiny_vae()                              two-level AutoencoderKL (down-scaling 2, 4 latent channels)
    tiny_clip_text()                        CLIPTextModel of width 16 over :func:`write_tiny_tokenizer`'s vocabulary
    tiny_clip_vision(projection, hidden, image_size, projection_dim)   two-layer CLIP vision tower
    clip_processor(size)                    CLIPImageProcessor resizing and cropping to ``size``
    write_tiny_tokenizer(folder)            CLIP BPE tokenizer over letters and a few words
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..zero123 import CLIP_MEAN, CLIP_STD, CameraProjection
from . import tiny_builder

__all__ = [
    "build_tiny_zero123",
    "build_tiny_sd",
    "build_tiny_sd_inpaint",
    "tiny_unet",
    "tiny_vae",
    "tiny_clip_text",
    "tiny_clip_vision",
    "clip_processor",
    "write_tiny_tokenizer",
]

_TINY_WORDS = ("a", "photo", "of", "cat", "dog", "forest", "city", "at", "night", "red", "blue", "car")


# --------------------------------------------------------------------------- shared parts


def tiny_unet(in_channels: int, cross_attention_dim: int):
    """A two-level UNet2DConditionModel at latent size 16 (shared by the tiny guidance builders)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=4)


def tiny_vae():
    """A two-level AutoencoderKL (down-scaling 2, 4 latent channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=4, sample_size=32)


def tiny_clip_text():
    """A two-layer CLIPTextModel of width 16 over the 128-entry vocabulary of :func:`write_tiny_tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))


def tiny_clip_vision(projection: bool, hidden: int, image_size: int, projection_dim: int = 8):
    """A two-layer CLIP vision tower of width ``hidden`` on ``image_size`` images (4 x 4 patches)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                              num_attention_heads=2, image_size=image_size, patch_size=image_size // 4,
                              projection_dim=projection_dim)
    return (CLIPVisionModelWithProjection if projection else CLIPVisionModel)(config)


def clip_processor(size: int):
    """A CLIPImageProcessor that resizes the short side to ``size`` and centre-crops ``size x size``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def write_tiny_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over letters plus a few whole words, written as vocab.json / merges.txt."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    letters = [chr(i) for i in range(ord("a"), ord("z") + 1)]
    tokens += letters + [f"{ch}</w>" for ch in letters]
    merges: list[str] = []
    for word in _TINY_WORDS:  # merge each word left to right, the last piece carrying </w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    merges = list(dict.fromkeys(merges))
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------- builders


@tiny_builder("guidance_zero123")
def build_tiny_zero123(folder: Path, seed: int) -> Path:
    """A ~100k-parameter Zero123 in the stable-zero123-diffusers layout (resolution 32, width 16)."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    width = 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tiny_unet(8, width).save_pretrained(folder / "unet")
        tiny_vae().save_pretrained(folder / "vae")
        tiny_clip_vision(True, hidden=16, image_size=32, projection_dim=width).save_pretrained(folder / "image_encoder")
        projection = CameraProjection(width, 4)
    (folder / "clip_camera_projection").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in projection.state_dict().items()},
              str(folder / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    (folder / "clip_camera_projection" / "config.json").write_text(json.dumps(
        {"_class_name": "CLIPCameraProjection", "embedding_dim": width, "additional_embeddings": 4}, indent=2))
    (folder / "feature_extractor").mkdir(exist_ok=True)
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 32, "width": 32},
         "size": {"shortest_edge": 32}, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}, indent=2))
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "Zero123Pipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "clip_camera_projection": ["pipeline_zero1to3", "CLIPCameraProjection"]}, indent=2))
    return folder


@tiny_builder("guidance_sd")
def build_tiny_sd(folder: Path, seed: int) -> Path:
    """A tiny Stable Diffusion folder in the diffusers layout (resolution 32, text width 16)."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tiny_unet(4, 16).save_pretrained(folder / "unet")
        tiny_vae().save_pretrained(folder / "vae")
        tiny_clip_text().save_pretrained(folder / "text_encoder")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]},
        indent=2))
    return folder


@tiny_builder("inpaint_sd")
def build_tiny_sd_inpaint(folder: Path, seed: int) -> Path:
    """A tiny SD 2.x-style inpainting folder (9-channel UNet, latent size 16, text width 16)."""
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    write_tiny_tokenizer(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tokenizer_src")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae = tiny_unet(9, 16), tiny_vae()
        text = tiny_clip_text()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "_tokenizer_src", ignore_errors=True)
    return folder
