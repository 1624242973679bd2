# SPDX-License-Identifier: Apache-2.0
"""Tiny Wan2.1 models: Wan VACE (diffusers layout), Wan2.1-Fun InP + 4D-ViSM LoRA and MoGe4D's
trajectory model (release layouts, original Wan naming), as ``backends.video_inpaint``,
``backends.video_inpaint_fun`` and ``backends.trajectory_dit`` load them.

Public API:
    build_tiny_wan_vace(folder, seed)       kind "video_inpaint_wan_vace": a tiny Wan VACE folder
    build_tiny_wan_fun_inp(folder, seed)    kind "video_inpaint_wan_fun": a MoGe4D-style Fun InP folder
    build_tiny_trajectory(folder, seed)     kind "trajectory": a MoGe4D models folder
    write_tiny_t5_tokenizer(folder)         T5 (Unigram) tokenizer: special tokens, a few words, letters
    tiny_wan_encoders(vocab)                tiny random UMT5 and CLIP vision encoders
    tiny_vae_official(seed)                 a tiny Wan VAE's state dict in the release naming
    our_to_official(name), official_dit_state(model)   our DiT names -> the release names (checked)
    umt5_to_wan(state), hf_clip_to_wan(state)   transformers UMT5 / CLIP states -> the release naming
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from ..trajectory_dit import STRAG_FILE
from ..trajectory_dit_modules import (
    LATENT_CHANNELS,
    DiTConfig,
    OmniMAEFeatures,
    TrajectoryDecoder,
    TrajectoryDiT,
    TrajectoryEncoder,
)
from ..trajectory_dit_names import diffusers_vae_to_official, name_map
from ..video_inpaint_fun import INP_IN_CHANNELS, LATENT, LORA_PREFIX, VISM_LORA_DIR, VISM_LORA_FILE
from ..wan import BASE_CLIP, BASE_T5, BASE_T5_TOKENIZER, BASE_VAE, PATCH, vit_heads
from . import tiny_builder

__all__ = [
    "build_tiny_wan_vace",
    "build_tiny_wan_fun_inp",
    "build_tiny_trajectory",
    "write_tiny_t5_tokenizer",
    "TINY_WORDS",
    "tiny_wan_encoders",
    "tiny_vae_official",
    "our_to_official",
    "official_dit_state",
    "umt5_to_wan",
    "hf_clip_to_wan",
]

TINY_WORDS = ("a", "photo", "of", "cat", "dog", "forest", "city", "at", "night", "red", "blue", "car", "scene")


def write_tiny_t5_tokenizer(folder: Path) -> None:
    """A tiny T5 (Unigram) tokenizer made locally: special tokens, a few words, and letters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{w}", -1.0) for w in TINY_WORDS] + [("\u2581", -3.0)]
    pieces += [(chr(c), -5.0) for c in range(ord("a"), ord("z") + 1)]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.save_pretrained(folder)


@tiny_builder("video_inpaint_wan_vace")
def build_tiny_wan_vace(folder: Path, seed: int) -> Path:
    """A tiny Wan VACE folder (2-layer transformer width 24, 4-channel Wan VAE, UMT5 width 16)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    folder = Path(folder)
    source = folder / "_tokenizer_src"
    write_tiny_t5_tokenizer(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    z = 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True], latents_mean=[0.0] * z,
                               latents_std=[1.0] * z)
        text = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                           num_heads=2, relative_attention_num_buckets=8, pad_token_id=0,
                                           eos_token_id=1, decoder_start_token_id=0))
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=z, out_channels=z,
            text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32,
            vace_layers=[0], vace_in_channels=2 * z + 64)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, scheduler=scheduler,
                           transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(source, ignore_errors=True)
    return folder


def tiny_vae_official(seed: int) -> dict[str, Tensor]:
    """A tiny random Wan VAE (base width 4, 16 latent channels) as a ``Wan2.1_VAE.pth`` state dict."""
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(base_dim=4, z_dim=LATENT_CHANNELS)
    return diffusers_vae_to_official(vae.state_dict())


def official_dit_state(model: TrajectoryDiT) -> dict[str, Tensor]:
    """Our TrajectoryDiT state -> the official 4D-STraG names (inverse of ``name_map``, checked)."""
    ours = model.state_dict()
    official = {our_to_official(k): v for k, v in ours.items()}
    if set(name_map(official)) != set(ours):
        raise RuntimeError("tiny builder: the official naming does not round-trip through name_map")
    return official


def our_to_official(k: str) -> str:
    """One of our TrajectoryDiT / WanTransformer3DModel (``wan.``-prefixed) names in the release naming."""
    fixed = {
        "wan.scale_shift_table": "head.modulation",
        "motion_extractor.pos_embed": "omnimae_extractor.trunk.pos_embed",
    }
    if k in fixed:
        return fixed[k]
    m = re.match(r"^(attn|ffn)_madanorms\.(\d+)\.(linear\.(weight|bias)|gate)$", k)
    if m:
        which = "self" if m.group(1) == "attn" else "ffn"
        tail = "gate" if m.group(3) == "gate" else f"spatial_guide.1.{m.group(4)}"
        return f"blocks.{m.group(2)}.spatial_guidance_{which}.{tail}"
    m = re.match(r"^wan\.blocks\.(\d+)\.(.+)$", k)
    if m:
        i, rest = m.groups()
        subs = (("scale_shift_table", "modulation"), ("attn1.to_q.", "self_attn.q."), ("attn1.to_k.", "self_attn.k."),
                ("attn1.to_v.", "self_attn.v."), ("attn1.to_out.0.", "self_attn.o."),
                ("attn1.norm_q.", "self_attn.norm_q."), ("attn1.norm_k.", "self_attn.norm_k."),
                ("attn2.to_q.", "cross_attn.q."), ("attn2.to_k.", "cross_attn.k."), ("attn2.to_v.", "cross_attn.v."),
                ("attn2.to_out.0.", "cross_attn.o."), ("attn2.norm_q.", "cross_attn.norm_q."),
                ("attn2.norm_k.", "cross_attn.norm_k."), ("attn2.add_k_proj.", "cross_attn.k_img."),
                ("attn2.add_v_proj.", "cross_attn.v_img."), ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
                ("norm2.", "norm3."), ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."))
        for a, b in subs:
            if rest.startswith(a):
                return f"blocks.{i}.{b}{rest[len(a):]}"
        return f"blocks.{i}.{rest}"
    prefixes = (
        ("wan.condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
        ("wan.condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
        ("wan.condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
        ("wan.condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
        ("wan.condition_embedder.time_proj.", "time_projection.1."),
        ("wan.condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
        ("wan.condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
        ("wan.condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
        ("wan.condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
        ("wan.patch_embedding.", "patch_embedding."),
        ("wan.proj_out.", "head.head."),
        ("motion_adapter.0.", "feature_adapter.0."),
        ("motion_adapter.2.", "feature_adapter.2."),
        ("motion_extractor.patch_embed.", "omnimae_extractor.trunk.patch_embed.proj.1."),
        ("motion_extractor.blocks.", "omnimae_extractor.trunk.blocks."),
        ("motion_extractor.norm.", "omnimae_extractor.trunk.norm."),
    )
    for a, b in prefixes:
        if k.startswith(a):
            return b + k[len(a):]
    return k


def umt5_to_wan(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers UMT5 encoder state in the release ``models_t5_umt5-xxl-enc-bf16.pth`` naming."""
    inv = {
        "layer.0.layer_norm.weight": "norm1.weight", "layer.0.SelfAttention.q.weight": "attn.q.weight",
        "layer.0.SelfAttention.k.weight": "attn.k.weight", "layer.0.SelfAttention.v.weight": "attn.v.weight",
        "layer.0.SelfAttention.o.weight": "attn.o.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
        "layer.1.layer_norm.weight": "norm2.weight", "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight", "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
    }
    out = {"token_embedding.weight": state["encoder.embed_tokens.weight"],
           "norm.weight": state["encoder.final_layer_norm.weight"]}
    for k, v in state.items():
        m = re.match(r"^encoder\.block\.(\d+)\.(.+)$", k)
        if m:
            out[f"blocks.{m.group(1)}.{inv[m.group(2)]}"] = v
    return out


def hf_clip_to_wan(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers CLIP vision state in the release open-clip (``visual.``) naming."""
    vm = "vision_model."
    state = {(k if k.startswith(vm) else vm + k): v for k, v in state.items()}
    out = {"visual.patch_embedding.weight": state[vm + "embeddings.patch_embedding.weight"],
           "visual.cls_embedding": state[vm + "embeddings.class_embedding"].reshape(1, 1, -1),
           "visual.pos_embedding": state[vm + "embeddings.position_embedding.weight"][None]}
    for a, b in (("pre_layrnorm.", "pre_norm."), ("post_layernorm.", "post_norm.")):
        for t in ("weight", "bias"):
            out[f"visual.{b}{t}"] = state[f"{vm}{a}{t}"]
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(rf"^{vm}encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        p = f"{vm}encoder.layers.{i}."
        for t in ("weight", "bias"):
            out[f"visual.transformer.{i}.attn.to_qkv.{t}"] = torch.cat(
                [state[f"{p}self_attn.{n}_proj.{t}"] for n in ("q", "k", "v")], dim=0)
            for a, b in (("layer_norm1.", "norm1."), ("layer_norm2.", "norm2."), ("self_attn.out_proj.", "attn.proj."),
                         ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.2.")):
                out[f"visual.transformer.{i}.{b}{t}"] = state[f"{p}{a}{t}"]
    out["visual.head"] = torch.zeros(out["visual.post_norm.weight"].shape[0], 8)
    return out


def tiny_wan_encoders(vocab: int):
    """Tiny random UMT5 (width 16, 1 layer) and CLIP vision (width 32, 2 layers) for tiny Wan folders."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    text = UMT5EncoderModel(UMT5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                       relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                       tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0))
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=1, image_size=28, patch_size=14, hidden_act="gelu"))
    return text, clip


@tiny_builder("video_inpaint_wan_fun")
def build_tiny_wan_fun_inp(folder: Path, seed: int) -> Path:
    """A tiny MoGe4D-style folder: ``Wan2.1-Fun-V1.1-14B-InP/`` in the release layout (2-block
    transformer width 32, 36 input channels, Wan VAE base width 4, UMT5 width 16, CLIP width 32)
    and ``4D-ViSM/lora_diffusion_pytorch_model.safetensors`` (rank 4, alpha 2, official naming)."""
    from diffusers import WanTransformer3DModel
    from transformers import AutoTokenizer

    folder = Path(folder)
    base = folder / "Wan2.1-Fun-V1.1-14B-InP"
    (base / "google").mkdir(parents=True, exist_ok=True)
    write_tiny_t5_tokenizer(base / BASE_T5_TOKENIZER)
    vocab = len(AutoTokenizer.from_pretrained(base / BASE_T5_TOKENIZER))
    cfg = {"_class_name": "WanModel", "model_type": "i2v", "dim": 32, "ffn_dim": 64, "num_heads": 4, "num_layers": 2,
           "in_dim": INP_IN_CHANNELS, "out_dim": LATENT, "text_len": 512, "text_dim": 16, "freq_dim": 16, "eps": 1e-6}
    (base / "config.json").write_text(json.dumps(cfg, indent=1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(
            patch_size=(1, PATCH, PATCH), num_attention_heads=4, attention_head_dim=8, in_channels=INP_IN_CHANNELS,
            out_channels=LATENT, text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=32, added_kv_proj_dim=32)
        text, clip = tiny_wan_encoders(vocab)
        official = {our_to_official("wan." + k): v.contiguous() for k, v in transformer.state_dict().items()}
        back = {k[len("wan."):] for k in name_map(official)}
        if back != set(transformer.state_dict()):
            raise RuntimeError("tiny builder: the official naming does not round-trip through name_map")
        lora: dict[str, Tensor] = {}
        rank = 4
        for name, module in transformer.named_modules():
            if isinstance(module, nn.Linear):
                key = LORA_PREFIX + "__" + our_to_official(f"wan.{name}.weight")[: -len(".weight")].replace(".", "_")
                lora[key + ".lora_down.weight"] = (0.3 * torch.randn(rank, module.in_features)).to(torch.bfloat16)
                lora[key + ".lora_up.weight"] = (0.3 * torch.randn(module.out_features, rank)).to(torch.bfloat16)
                lora[key + ".alpha"] = torch.tensor(2.0, dtype=torch.bfloat16)
    save_file(official, str(base / "diffusion_pytorch_model.safetensors"))
    torch.save(tiny_vae_official(seed), base / BASE_VAE)
    torch.save(umt5_to_wan(text.state_dict()), base / BASE_T5)
    torch.save(hf_clip_to_wan(clip.state_dict()), base / BASE_CLIP)
    (folder / VISM_LORA_DIR).mkdir(exist_ok=True)
    save_file(lora, str(folder / VISM_LORA_DIR / VISM_LORA_FILE), metadata={"format": "pt"})
    return folder


@tiny_builder("trajectory")
def build_tiny_trajectory(folder: Path, seed: int) -> Path:
    """A tiny MoGe4D folder in the official layout: 2-block DiT width 32 (4 heads), OmniMAE width 32
    (1 block), trajectory adaptors width 32, Wan VAE base width 4 (16 latent channels), UMT5 width
    16, CLIP width 32 (2 layers), under ``Wan2.1-Fun-V1.1-14B-Control/`` + ``4D-STraG/`` + ``VAE/``."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    base = folder / "Wan2.1-Fun-V1.1-14B-Control"
    (base / "google").mkdir(parents=True, exist_ok=True)
    write_tiny_t5_tokenizer(base / BASE_T5_TOKENIZER)

    vocab = len(AutoTokenizer.from_pretrained(base / BASE_T5_TOKENIZER))
    wan_cfg = {"_class_name": "WanModel", "model_type": "i2v", "dim": 32, "ffn_dim": 64, "num_heads": 4,
               "num_layers": 2, "in_dim": 48, "out_dim": LATENT_CHANNELS, "text_len": 512, "text_dim": 16,
               "freq_dim": 16, "eps": 1e-6, "add_ref_conv": True, "in_dim_ref_conv": LATENT_CHANNELS,
               "add_control_adapter": False}
    (base / "config.json").write_text(json.dumps(wan_cfg, indent=1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extractor = OmniMAEFeatures(dim=32, depth=1, heads=vit_heads(32), image_size=224, patch=16)
        dit = TrajectoryDiT(DiTConfig(dim=32, ffn_dim=64, num_heads=4, num_layers=2, text_dim=16, freq_dim=16,
                                      image_dim=32, motion_dim=32), extractor)
        for p in list(dit.attn_madanorms.parameters()) + list(dit.ffn_madanorms.parameters()):
            nn.init.normal_(p, std=0.2)  # non-zero gates so the MPM path is exercised
        decoder = TrajectoryDecoder(width=32, num_blocks=2, groups=8)
        encoder = TrajectoryEncoder(width=32, num_blocks=1, groups=8)
        nn.init.normal_(encoder.conv_out.weight, std=0.02)
        text, clip = tiny_wan_encoders(vocab)
    official = official_dit_state(dit)
    base_keys = {k: v for k, v in official.items()
                 if not k.startswith(("omnimae_extractor.", "feature_adapter.")) and "spatial_guidance" not in k}
    base_keys["patch_embedding.weight"] = official["patch_embedding.weight"][:, :48].clone()
    # the fine-tuned file leaves the text / image / time embeddings to the base (loaded from there)
    official = {k: v for k, v in official.items() if not k.startswith(("text_embedding.", "img_emb.",
                                                                          "time_embedding."))}
    save_file({k: v.contiguous() for k, v in base_keys.items()}, str(base / "diffusion_pytorch_model.safetensors"))
    torch.save(tiny_vae_official(seed), base / BASE_VAE)
    torch.save(umt5_to_wan(text.state_dict()), base / BASE_T5)
    torch.save(hf_clip_to_wan(clip.state_dict()), base / BASE_CLIP)
    (folder / "4D-STraG").mkdir(exist_ok=True)
    official["omnimae_extractor.head.weight"] = torch.zeros(4, 4)  # present in the release, unused
    save_file({k: v.contiguous() for k, v in official.items()}, str(folder / STRAG_FILE))
    for sub, module, level in (("decoder_prompt", decoder, "up"), ("encoder_prompt", encoder, "down")):
        (folder / "VAE" / sub).mkdir(parents=True, exist_ok=True)
        state = {}
        for k, v in module.state_dict().items():
            state[k.replace("blocks.", f"{level}.0.block.", 1) if k.startswith("blocks.") else k] = v
        torch.save(state, folder / "VAE" / sub / "pytorch_model.bin")
    (folder / "VAE" / "vae").mkdir(parents=True, exist_ok=True)
    torch.save({"model." + k: v for k, v in tiny_vae_official(seed + 1).items() if k.startswith("decoder.")},
               folder / "VAE" / "vae" / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"_class_name": "MoGe4D", "base": base.name}, indent=1))
    return folder
