# SPDX-License-Identifier: Apache-2.0
"""Tiny video-generation pipelines in the diffusers layouts ``backends.video_generation`` loads.

Public API:
    build_tiny_wan_i2v(folder, seed)            kind "video_wan_i2v": Wan2.1 image-to-video
    build_tiny_cogvideox_t2v(folder, seed)      kind "video_cogvideox_t2v": CogVideoX text-to-video
    build_tiny_cogvideox_i2v(folder, seed)      kind "video_cogvideox_i2v": CogVideoX image-to-video
    build_tiny_svd(folder, seed)                kind "video_svd": Stable Video Diffusion
    write_tiny_video_t5_tokenizer(folder, max_length)   the T5 tokenizer of the Wan / CogVideoX builders
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import tiny_builder
from .sd import clip_processor, tiny_clip_vision

__all__ = [
    "build_tiny_wan_i2v",
    "build_tiny_cogvideox_t2v",
    "build_tiny_cogvideox_i2v",
    "build_tiny_svd",
    "write_tiny_video_t5_tokenizer",
]


def write_tiny_video_t5_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A sentencepiece-free T5 (Unigram) tokenizer over letters and a few words, saved to ``folder``.

    Its vocabulary (not :func:`backends.tiny.wan.write_tiny_t5_tokenizer`'s) sizes the text encoders of
    the video-generation builders.
    """
    from transformers import T5Tokenizer

    words = ["▁a", "▁the", "▁cat", "▁dog", "▁walks", "▁runs", "▁on", "▁in", "▁scene", "▁video"]
    letters = [f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(w, -1.0) for w in words] + [(c, -3.0) for c in letters]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)
    tokenizer.save_pretrained(folder)


@tiny_builder("video_wan_i2v")
def build_tiny_wan_i2v(folder: Path, seed: int) -> Path:
    """Tiny Wan2.1 image-to-video pipeline (UMT5 d=16, Wan VAE z=4, 2-layer transformer) in diffusers layout."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    folder = Path(folder)
    write_tiny_video_t5_tokenizer(folder / "_tokenizer")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder / "_tokenizer")
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                               num_heads=2, relative_attention_num_buckets=8))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(seed + 2)
    image_encoder = tiny_clip_vision(False, hidden=8, image_size=32)
    torch.manual_seed(seed + 3)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=12, out_channels=4, text_dim=16, freq_dim=8, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        image_dim=8, added_kv_proj_dim=16, rope_max_seq_len=32)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                   image_processor=clip_processor(32), image_encoder=image_encoder,
                                   transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    _remove_tree(folder / "_tokenizer")
    return folder


@tiny_builder("video_cogvideox_t2v")
def build_tiny_cogvideox_t2v(folder: Path, seed: int) -> Path:
    """Tiny CogVideoX text-to-video pipeline (T5 d=16, CogVideoX VAE, 1-layer transformer) in diffusers layout."""
    return _build_cogvideox(Path(folder), seed, image_to_video=False)


@tiny_builder("video_cogvideox_i2v")
def build_tiny_cogvideox_i2v(folder: Path, seed: int) -> Path:
    """Tiny CogVideoX image-to-video pipeline in diffusers layout."""
    return _build_cogvideox(Path(folder), seed, image_to_video=True)


def _build_cogvideox(folder: Path, seed: int, image_to_video: bool) -> Path:
    import diffusers
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    write_tiny_video_t5_tokenizer(folder / "_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(folder / "_tokenizer")
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                           num_heads=2, relative_attention_num_buckets=8))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3,
                                 down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4,
                                 block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=2, temporal_compression_ratio=4)
    torch.manual_seed(seed + 2)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8 if image_to_video else 4, out_channels=4,
        time_embed_dim=4, text_embed_dim=16, num_layers=1, sample_width=2, sample_height=2, sample_frames=9,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
        use_rotary_positional_embeddings=image_to_video, use_learned_positional_embeddings=False)
    scheduler = CogVideoXDDIMScheduler()
    cls = diffusers.CogVideoXImageToVideoPipeline if image_to_video else diffusers.CogVideoXPipeline
    pipe = cls(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    _remove_tree(folder / "_tokenizer")
    return folder


@tiny_builder("video_svd")
def build_tiny_svd(folder: Path, seed: int) -> Path:
    """Tiny Stable Video Diffusion pipeline (2-block spatio-temporal UNet, temporal-decoder VAE) in diffusers layout."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=2, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=8, num_attention_heads=(2, 2), addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=12, num_frames=4)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(in_channels=3, out_channels=3, block_out_channels=(32, 32),
                                       down_block_types=("DownEncoderBlock2D",) * 2, latent_channels=4,
                                       layers_per_block=1)
    torch.manual_seed(seed + 2)
    image_encoder = tiny_clip_vision(True, hidden=16, image_size=224, projection_dim=8)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", interpolation_type="linear",
                                       use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
                                       timestep_type="continuous", timestep_spacing="leading", steps_offset=1)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=clip_processor(224))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _remove_tree(folder: Path) -> None:
    if not folder.is_dir():
        return
    for p in sorted(folder.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    folder.rmdir()
