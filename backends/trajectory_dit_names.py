# SPDX-License-Identifier: Apache-2.0
"""Parameter-name maps from the official MoGe4D / Wan2.1-Fun release files to our modules.

Public API:
    name_map(official)            4D-STraG / Wan2.1-Fun transformer state dict -> ``TrajectoryDiT`` names
    IGNORED_PREFIXES              official transformer keys that are known and deliberately unused
    adaptor_name_map(sd, which)   ``VAEEncoderadaptor`` / ``VAEDecoderadaptor`` -> ``TrajectoryEncoder/Decoder``
    official_vae_to_diffusers(sd) Wan VAE in the original naming (optionally ``model.``-prefixed) -> diffusers
    diffusers_vae_to_official(sd) the inverse (used to write official-layout files, e.g. tiny test models)
    wan_t5_to_umt5(sd)            Wan ``models_t5_umt5-xxl-enc-*.pth`` -> transformers ``UMT5EncoderModel``
    wan_clip_to_hf(sd)            Wan ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (visual
                                  tower) -> transformers ``CLIPVisionModel``
    MappingError                  ValueError listing the unmapped keys

Design notes:
    Every map is a pure function of a state dict (names in, names out, tensors untouched except
    for the CLIP attention, whose fused ``to_qkv`` is split into q / k / v, and CLIP's class
    embedding, which is flattened). An unknown key is an error listing all such keys, never a silent
    drop; keys that are part of the release but unused for inference (the OmniMAE pre-training
    decoder and head, the camera-control adapter) are listed in ``IGNORED_PREFIXES`` and dropped.

    Official 4D-STraG transformer names (``MoGe4D/models/wan_transformer4d.py``, original Wan
    naming) and ours (``backends.trajectory_dit_modules.TrajectoryDiT``):

    ============================================================  =============================================
    official                                                      ours
    ============================================================  =============================================
    patch_embedding.{weight,bias}  (Conv3d, 64 = 4 x 16 in)         wan.patch_embedding.*
    text_embedding.{0,2}                                          wan.condition_embedder.text_embedder.linear_{1,2}
    time_embedding.{0,2}                                          wan.condition_embedder.time_embedder.linear_{1,2}
    time_projection.1                                             wan.condition_embedder.time_proj
    img_emb.proj.{0,1,3,4}                                        wan.condition_embedder.image_embedder.{norm1,
                                                                  ff.net.0.proj, ff.net.2, norm2}
    blocks.N.modulation                                           wan.blocks.N.scale_shift_table
    blocks.N.self_attn.{q,k,v,o,norm_q,norm_k}                    wan.blocks.N.attn1.{to_q,to_k,to_v,to_out.0,norm_q,
                                                                  norm_k}
    blocks.N.cross_attn.{q,k,v,o,norm_q,norm_k,k_img,v_img,       wan.blocks.N.attn2.{..., add_k_proj, add_v_proj,
    norm_k_img}                                                   norm_added_k}
    blocks.N.norm3 (cross-attention LayerNorm, affine)            wan.blocks.N.norm2
    blocks.N.ffn.{0,2}                                            wan.blocks.N.ffn.net.{0.proj,2}
    head.modulation / head.head                                   wan.scale_shift_table / wan.proj_out
    ref_conv.*   (Wan2.1-Fun V1.1 reference-image tokens)         ref_conv.*
    feature_adapter.{0,2}   (MPM: conv-SiLU-conv on OmniMAE)      motion_adapter.{0,2}
    blocks.N.spatial_guidance_self.spatial_guide.1.*  (eq. 4/5)   attn_madanorms.N.linear.*
    blocks.N.spatial_guidance_self.gate               (γ_1)       attn_madanorms.N.gate
    blocks.N.spatial_guidance_ffn.spatial_guide.1.*   (eq. 4/6)   ffn_madanorms.N.linear.*
    blocks.N.spatial_guidance_ffn.gate                (γ_2)       ffn_madanorms.N.gate
    omnimae_extractor.trunk.patch_embed.proj.1.*                  motion_extractor.patch_embed.*
    omnimae_extractor.trunk.{pos_embed,blocks.*,norm.*}           motion_extractor.{pos_embed,blocks.*,norm.*}
    ============================================================  =============================================
"""

from __future__ import annotations

import re

from torch import Tensor

__all__ = [
    "MappingError",
    "name_map",
    "IGNORED_PREFIXES",
    "adaptor_name_map",
    "official_vae_to_diffusers",
    "diffusers_vae_to_official",
    "wan_t5_to_umt5",
    "wan_clip_to_hf",
]


class MappingError(ValueError):
    """A state dict holds names a map does not know; ``unmapped`` lists them."""

    def __init__(self, what: str, unmapped: list[str]):
        self.unmapped = sorted(unmapped)
        shown = ", ".join(self.unmapped[:20]) + (f", ... ({len(self.unmapped)} in all)" if len(unmapped) > 20 else "")
        super().__init__(f"{what}: {len(self.unmapped)} parameter name(s) not recognised: {shown}")


IGNORED_PREFIXES = (
    "omnimae_extractor.trunk.decoder.",  # OmniMAE's MAE pre-training decoder (not used for features)
    "omnimae_extractor.trunk.mask_token",
    "omnimae_extractor.head.",
    "control_adapter.",  # Wan2.1-Fun camera-control adapter (MoGe4D passes no camera video)
    "freqs",
)

_BLOCK_SUBS = (
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."),
    ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
)
_TOP = {
    "text_embedding.0.": "wan.condition_embedder.text_embedder.linear_1.",
    "text_embedding.2.": "wan.condition_embedder.text_embedder.linear_2.",
    "time_embedding.0.": "wan.condition_embedder.time_embedder.linear_1.",
    "time_embedding.2.": "wan.condition_embedder.time_embedder.linear_2.",
    "time_projection.1.": "wan.condition_embedder.time_proj.",
    "img_emb.proj.0.": "wan.condition_embedder.image_embedder.norm1.",
    "img_emb.proj.1.": "wan.condition_embedder.image_embedder.ff.net.0.proj.",
    "img_emb.proj.3.": "wan.condition_embedder.image_embedder.ff.net.2.",
    "img_emb.proj.4.": "wan.condition_embedder.image_embedder.norm2.",
    "patch_embedding.": "wan.patch_embedding.",
    "head.head.": "wan.proj_out.",
    "ref_conv.": "ref_conv.",
    "feature_adapter.0.": "motion_adapter.0.",
    "feature_adapter.2.": "motion_adapter.2.",
    "omnimae_extractor.trunk.patch_embed.proj.1.": "motion_extractor.patch_embed.",
    "omnimae_extractor.trunk.blocks.": "motion_extractor.blocks.",
    "omnimae_extractor.trunk.norm.": "motion_extractor.norm.",
}
_EXACT = {
    "head.modulation": "wan.scale_shift_table",
    "omnimae_extractor.trunk.pos_embed": "motion_extractor.pos_embed",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_GUIDE = re.compile(r"^spatial_guidance_(self|ffn)\.(spatial_guide\.1\.(weight|bias)|gate)$")


def _official_key(key: str) -> str | None:
    if key in _EXACT:
        return _EXACT[key]
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = _BLOCK.match(key)
    if m is None:
        return None
    idx, rest = m.groups()
    g = _GUIDE.match(rest)
    if g is not None:
        which = "attn_madanorms" if g.group(1) == "self" else "ffn_madanorms"
        tail = "gate" if g.group(2) == "gate" else "linear." + g.group(3)
        return f"{which}.{idx}.{tail}"
    if rest == "modulation":
        return f"wan.blocks.{idx}.scale_shift_table"
    for old, new in _BLOCK_SUBS:
        if rest.startswith(old):
            return f"wan.blocks.{idx}.{new}{rest[len(old):]}"
    return None


def name_map(official: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official 4D-STraG (or base Wan2.1-Fun) transformer state dict to our names.

    Args:
        official: ``{name: tensor}`` as stored in ``4D-STraG/diffusion_pytorch_model.safetensors``
            or the base model's ``diffusion_pytorch_model*.safetensors``; a leading
            ``model.diffusion_model.`` is accepted.

    Returns:
        ``{our name: tensor}`` (same tensor objects); known-unused keys (``IGNORED_PREFIXES``) dropped.

    Raises:
        MappingError: listing every key that is neither mapped nor known-unused.
    """
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in official.items():
        k = key[len("model.diffusion_model."):] if key.startswith("model.diffusion_model.") else key
        if k.startswith(IGNORED_PREFIXES):
            continue
        new = _official_key(k)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    if unmapped:
        raise MappingError("4D-STraG transformer", unmapped)
    return out


_ADAPTOR = re.compile(r"^(conv_in|norm_out|conv_out)\.(weight|bias)$")
_ADAPTOR_BLOCK = re.compile(r"^(down|up)\.0\.block\.(\d+)\.((norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias))$")


def adaptor_name_map(sd: dict[str, Tensor], which: str) -> dict[str, Tensor]:
    """``VAEEncoderadaptor`` (``which="encoder"``, ``down.0.block.i``) or ``VAEDecoderadaptor``
    (``"decoder"``, ``up.0.block.i``) -> our ``blocks.i`` naming.

    Raises:
        MappingError: unknown keys.
    """
    level = {"encoder": "down", "decoder": "up"}[which]
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in sd.items():
        if _ADAPTOR.match(key):
            out[key] = value
            continue
        m = _ADAPTOR_BLOCK.match(key)
        if m is None or m.group(1) != level:
            unmapped.append(key)
            continue
        out[f"blocks.{m.group(2)}.{m.group(3)}"] = value
    if unmapped:
        raise MappingError(f"trajectory {which} adaptor", unmapped)
    return out


# --------------------------------------------------------------------------- Wan VAE


def official_vae_to_diffusers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original Wan VAE names (``Wan2.1_VAE.pth``; or MoGe4D's ``VAE/vae`` file whose keys carry a
    ``model.`` prefix) -> diffusers ``AutoencoderKLWan`` names, through diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    plain = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}
    return convert_wan_vae_to_diffusers(plain)


_VAE_RES = (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."), ("norm2.gamma", "residual.3.gamma"),
            ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))
_VAE_FIXED = {
    "encoder.conv_in.": "encoder.conv1.",
    "decoder.conv_in.": "decoder.conv1.",
    "encoder.norm_out.gamma": "encoder.head.0.gamma",
    "encoder.conv_out.": "encoder.head.2.",
    "decoder.norm_out.gamma": "decoder.head.0.gamma",
    "decoder.conv_out.": "decoder.head.2.",
    "quant_conv.": "conv1.",
    "post_quant_conv.": "conv2.",
}


def _res(rest: str) -> str:
    for new, old in _VAE_RES:
        if rest.startswith(new):
            return old + rest[len(new):]
    return rest


def diffusers_vae_to_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers ``AutoencoderKLWan`` names -> original Wan VAE names (4 levels, 2 residual blocks each,
    the layout of every Wan2.1 VAE); ``official_vae_to_diffusers`` inverts it exactly."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        new = None
        for a, b in _VAE_FIXED.items():
            if key.startswith(a):
                new = b + key[len(a):]
                break
        if new is None:
            m = re.match(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
            if m:
                part, kind, i, rest = m.groups()
                idx = 2 * int(i) if kind == "resnets" else 1
                new = f"{part}.middle.{idx}." + (_res(rest) if kind == "resnets" else rest)
        if new is None:
            m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key)
            if m:
                new = f"encoder.downsamples.{m.group(1)}.{_res(m.group(2))}"
        if new is None:
            m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)\.|upsamplers\.0\.)(.+)$", key)
            if m:
                blk = int(m.group(1))
                idx = 4 * blk + (int(m.group(3)) if m.group(3) is not None else 3)
                new = f"decoder.upsamples.{idx}." + (_res(m.group(4)) if m.group(3) is not None else m.group(4))
        out[new if new is not None else key] = value
    return out


# --------------------------------------------------------------------------- text / image encoders

_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def wan_t5_to_umt5(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Wan's UMT5 encoder checkpoint (``token_embedding``, ``blocks.i.{norm1,attn,norm2,ffn,pos_embedding}``,
    ``norm``) -> transformers ``UMT5EncoderModel`` names.

    Raises:
        MappingError: unknown keys.
    """
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in sd.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = value
            out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        else:
            m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
            if m and m.group(2) in _T5_BLOCK:
                out[f"encoder.block.{m.group(1)}.{_T5_BLOCK[m.group(2)]}"] = value
            else:
                unmapped.append(key)
    if unmapped:
        raise MappingError("UMT5 text encoder", unmapped)
    return out


_CLIP_LAYER = {
    "norm1.": "layer_norm1.",
    "norm2.": "layer_norm2.",
    "attn.proj.": "self_attn.out_proj.",
    "mlp.0.": "mlp.fc1.",
    "mlp.2.": "mlp.fc2.",
}


def wan_clip_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The visual tower of Wan's open-clip XLM-RoBERTa ViT-H/14 checkpoint -> transformers
    ``CLIPVisionModel`` names. Text-tower keys (``textual.*``) and the projection ``visual.head``
    / ``log_scale`` are dropped (only image features are used).

    Raises:
        MappingError: unknown ``visual.*`` keys.
    """
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    vm = "vision_model."
    for key, value in sd.items():
        if not key.startswith("visual.") or key in ("visual.head",):
            if key.startswith(("textual.", "log_scale")) or key == "visual.head":
                continue
            unmapped.append(key)
            continue
        k = key[len("visual."):]
        if k == "patch_embedding.weight":
            out[vm + "embeddings.patch_embedding.weight"] = value
        elif k == "cls_embedding":
            out[vm + "embeddings.class_embedding"] = value.reshape(-1)
        elif k == "pos_embedding":
            out[vm + "embeddings.position_embedding.weight"] = value.reshape(value.shape[-2], value.shape[-1])
        elif k.startswith("pre_norm."):
            out[vm + "pre_layrnorm." + k[len("pre_norm."):]] = value
        elif k.startswith("post_norm."):
            out[vm + "post_layernorm." + k[len("post_norm."):]] = value
        else:
            m = re.match(r"^transformer\.(\d+)\.(.+)$", k)
            if m is None:
                unmapped.append(key)
                continue
            i, rest = m.groups()
            base = f"{vm}encoder.layers.{i}."
            if rest.startswith("attn.to_qkv."):
                q, kk, v = value.chunk(3, dim=0)
                tail = rest[len("attn.to_qkv."):]
                out[base + "self_attn.q_proj." + tail] = q
                out[base + "self_attn.k_proj." + tail] = kk
                out[base + "self_attn.v_proj." + tail] = v
                continue
            for old, new in _CLIP_LAYER.items():
                if rest.startswith(old):
                    out[base + new + rest[len(old):]] = value
                    break
            else:
                unmapped.append(key)
    if unmapped:
        raise MappingError("CLIP image encoder", unmapped)
    return out
