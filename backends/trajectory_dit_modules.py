# SPDX-License-Identifier: Apache-2.0
"""The networks of MoGe4D's 4D-STraG: the trajectory DiT, its motion-feature extractor and the
trajectory encoder / decoder around the Wan VAE.

Public API:
    DiTConfig             sizes of the Wan2.1 DiT (read from the base model's config.json)
    TrajectoryDiT         Wan2.1-Fun transformer with 64-channel input (noise | image | zeros | depth,
                          eq. 2), reference-image tokens and MAdaNorm in every block (eqs. 4-6)
    OmniMAEFeatures       OmniMAE ViT image encoder -> patch features ``[B,C_m,14,14]`` (the MPM's ``S``)
    TrajectoryEncoder     shallow ResNet: normalised relative XYZ motion -> RGB motion map (App. F.1)
    TrajectoryDecoder     shallow ResNet: decoded RGB motion map -> normalised relative XYZ motion
    sinusoid_table(n, d)  the fixed sinusoidal position table of OmniMAE

Design notes:
    ``TrajectoryDiT.wan`` is a diffusers ``WanTransformer3DModel`` (I2V layout: CLIP image tokens in
    the cross-attention). Its forward is re-run here block by block because MoGe4D changes the inside
    of a block: after each timestep-modulated LayerNorm (before self-attention and before the FFN)
    ``MAdaNorm.modulate`` applies the motion scale / shift (official ``SpatialGuidanceModule``).
    Token order follows the official Wan2.1-Fun V1.1 forward: the reference image latent, patchified
    by ``ref_conv``, is prepended as one extra latent frame (RoPE grid ``F+1``) and dropped again
    before unpatchifying. The official module aligns the ``F * h * w`` motion tokens with the first
    ``F * h * w`` tokens of that sequence (the reference frame and the first ``F - 1`` video frames)
    and leaves the last latent frame unmodulated; we reproduce that alignment so the released weights
    see the inputs they were trained with.

    Input channel layout (official ``pipeline_wan_fun_control.py``): ``[noisy latents (16) | control
    video latents = the input image repeated over all frames (16) | start-image latents = zeros (16)
    | depth latents = the depth condition repeated (16)]``.

    Sequence parallelism (``forward(..., layout=...)``, ``backends.sequence_parallel``): the whole token
    sequence (reference frame included) is split after patch embedding; RoPE and the motion tokens are
    cut to each rank's token range, self-attention runs diffusers' Ulysses all-to-all, and the
    projected output is gathered.

    The motion-feature extractor is pluggable: any module mapping an image ``[B,3,H,W]`` in 0..1 to
    ``[B,C_m,h,w]``; ``None`` turns the MPM off (identity MAdaNorm). The default is OmniMAE ViT-B/16
    (``omnimae_vitB_pretrain``): 224 x 224 input (bilinear resize), ImageNet normalisation, the image
    repeated to a 2-frame clip (tubelet 2 x 16 x 16), 12 pre-norm blocks, final LayerNorm, 196 patch
    tokens -> ``[B,768,14,14]``; then ``motion_adapter`` (conv3x3-SiLU-conv3x3) and a bilinear resize to
    the token grid (``core.moge4d.motion_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.moge4d.strag import MAdaNorm, motion_tokens
from .memory import streamed_blocks
from .sequence_parallel import Layout, attention_parallel, gather_tokens, split_tokens, token_range

__all__ = [
    "DiTConfig",
    "TrajectoryDiT",
    "OmniMAEFeatures",
    "TrajectoryEncoder",
    "TrajectoryDecoder",
    "sinusoid_table",
    "LATENT_CHANNELS",
    "TEXT_LEN",
]

LATENT_CHANNELS = 16
TEXT_LEN = 512  # Wan's text context length; diffusers' I2V attention splits image tokens by it
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- OmniMAE


def sinusoid_table(n: int, d: int) -> Tensor:
    """``[1,n,d]`` fixed position table: ``sin`` on even, ``cos`` on odd channels, angle
    ``p / 10000^(2 floor(i/2) / d)`` (OmniMAE's non-learnable position embedding)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(d, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / d)
    table = torch.where(i.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class _ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class _ViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _ViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _ViTMlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OmniMAEFeatures(nn.Module):
    """OmniMAE ViT encoder used as the Motion Perception Module's feature extractor.

    Args:
        dim: embedding width (768 for ViT-B).
        depth: number of blocks (12).
        heads: attention heads (12).
        image_size: input size the image is resized to (224).
        patch: spatial patch (16); the tubelet is ``2 x patch x patch``.
        table_frames: temporal patches of the stored position table (8 for 16-frame clips).

    Forward: ``image [B,3,H,W]`` in 0..1 -> ``[B,dim,image_size/patch,image_size/patch]``.
    """

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, image_size: int = 224, patch: int = 16,
                 table_frames: int = 8, mlp_ratio: int = 4, eps: float = 1e-6):
        super().__init__()
        self.dim, self.image_size, self.patch = int(dim), int(image_size), int(patch)
        self.grid = self.image_size // self.patch
        self.patch_embed = nn.Conv3d(3, dim, kernel_size=(2, patch, patch), stride=(2, patch, patch))
        self.register_buffer("pos_embed", sinusoid_table(table_frames * self.grid**2, dim), persistent=True)
        self.blocks = nn.ModuleList([_ViTBlock(dim, heads, mlp_ratio, eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.dim

    def forward(self, image: Tensor) -> Tensor:
        x = (image.to(self.mean.dtype) - self.mean) / self.std
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = x.to(self.patch_embed.weight.dtype)[:, :, None].repeat(1, 1, 2, 1, 1)  # image -> 2-frame clip
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, g*g, dim]
        x = x + self.pos_embed[:, : x.shape[1]].to(x.dtype)  # frame-0 rows of the table
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], self.dim, self.grid, self.grid)


# --------------------------------------------------------------------------- trajectory encoder / decoder


class _ResBlock(nn.Module):
    """GroupNorm(32)-SiLU-conv3x3, twice, with a residual (1x1 conv when widths differ)."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


def _frames(x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), (b, t)


def _unframes(x: Tensor, bt: tuple[int, int]) -> Tensor:
    b, t = bt
    return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


class TrajectoryEncoder(nn.Module):
    """Trajectory Encoder (App. F.1): per frame, ``RGB = sigmoid(ΔP~ + ResNet(ΔP~))`` in 0..1.

    ``conv_in`` (3 -> width), ``num_blocks`` residual blocks, GroupNorm-SiLU, ``conv_out`` (width -> 3,
    zero-initialised, so a fresh encoder is ``sigmoid`` of its input). ``[B,3,T,H,W] -> [B,3,T,H,W]``.
    """

    def __init__(self, width: int = 128, num_blocks: int = 1, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList([_ResBlock(width, width, groups) for _ in range(num_blocks)])
        self.norm_out = nn.GroupNorm(groups, width, eps=1e-6)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, motion: Tensor) -> Tensor:
        x, bt = _frames(motion)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return _unframes(torch.sigmoid(h + x), bt)


class TrajectoryDecoder(nn.Module):
    """Trajectory Decoder (App. F.1): VAE-decoded RGB motion map ``[B,3,T,H,W]`` in ``[-1,1]`` ->
    normalised relative motion ``[B,3,T,H,W]`` (``conv_in``, ``num_blocks`` residual blocks,
    GroupNorm-SiLU, ``conv_out``; no output activation)."""

    def __init__(self, width: int = 128, num_blocks: int = 2, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList([_ResBlock(width, width, groups) for _ in range(num_blocks)])
        self.norm_out = nn.GroupNorm(groups, width, eps=1e-6)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, rgb: Tensor) -> Tensor:
        x, bt = _frames(rgb)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h)
        return _unframes(self.conv_out(F.silu(self.norm_out(h))), bt)


# --------------------------------------------------------------------------- the DiT


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of the Wan2.1(-Fun) DiT; defaults = Wan2.1-Fun-V1.1-14B-Control with MoGe4D's depth input.

    ``in_channels`` = 64 = noise + control image + start image + depth latents (eq. 2).
    """

    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_channels: int = 4 * LATENT_CHANNELS
    out_channels: int = LATENT_CHANNELS
    text_dim: int = 4096
    freq_dim: int = 256
    image_dim: int = 1280
    eps: float = 1e-6
    ref_channels: int = LATENT_CHANNELS
    motion_dim: int = 768

    @classmethod
    def from_wan_config(cls, cfg: dict, **over) -> DiTConfig:
        """From a Wan / VideoX-Fun ``config.json`` (``dim``, ``ffn_dim``, ``num_heads``, ...)."""
        kw = dict(dim=int(cfg.get("dim", cfg.get("hidden_size", 5120))), ffn_dim=int(cfg.get("ffn_dim", 13824)),
                  num_heads=int(cfg.get("num_heads", 40)), num_layers=int(cfg.get("num_layers", 40)),
                  out_channels=int(cfg.get("out_dim", LATENT_CHANNELS)), text_dim=int(cfg.get("text_dim", 4096)),
                  freq_dim=int(cfg.get("freq_dim", 256)), eps=float(cfg.get("eps", 1e-6)),
                  ref_channels=int(cfg.get("in_dim_ref_conv", LATENT_CHANNELS)))
        kw.update(over)
        return cls(**kw)


class TrajectoryDiT(nn.Module):
    """4D-STraG's denoiser: Wan2.1-Fun DiT + reference tokens + Motion Perception Module.

    Args:
        config: sizes.
        motion_extractor: image -> motion features module (default ``None``: attach one later, or
            pass ``motion_features`` to ``forward``); its output width must be ``config.motion_dim``.
    """

    def __init__(self, config: DiTConfig, motion_extractor: nn.Module | None = None):
        super().__init__()
        from diffusers import WanTransformer3DModel

        c = config
        if c.dim % c.num_heads:
            raise ValueError(f"TrajectoryDiT: dim {c.dim} is not divisible by num_heads {c.num_heads}")
        self.config = c
        self.wan = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=c.num_heads, attention_head_dim=c.dim // c.num_heads,
            in_channels=c.in_channels, out_channels=c.out_channels, text_dim=c.text_dim, freq_dim=c.freq_dim,
            ffn_dim=c.ffn_dim, num_layers=c.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=c.eps, image_dim=c.image_dim, added_kv_proj_dim=c.dim)
        self.ref_conv = nn.Conv2d(c.ref_channels, c.dim, kernel_size=2, stride=2)
        self.motion_adapter = nn.Sequential(
            nn.Conv2d(c.motion_dim, c.motion_dim, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c.motion_dim, c.motion_dim, 3, padding=1))
        self.attn_madanorms = nn.ModuleList(
            [MAdaNorm(c.dim, c.motion_dim, norm=nn.Identity()) for _ in range(c.num_layers)])
        self.ffn_madanorms = nn.ModuleList(
            [MAdaNorm(c.dim, c.motion_dim, norm=nn.Identity()) for _ in range(c.num_layers)])
        self.motion_extractor = motion_extractor

    # ----------------------------------------------------------------- pieces

    def motion_features(self, image: Tensor) -> Tensor:
        """``[B,3,H,W]`` image in 0..1 -> adapted motion features ``[B,C_m,h,w]`` (MPM, before resizing).

        Raises:
            ValueError: no motion extractor attached.
        """
        if self.motion_extractor is None:
            raise ValueError("TrajectoryDiT: no motion-feature extractor attached (pass motion_features instead)")
        feats = self.motion_extractor(image)
        return self.motion_adapter(feats.to(self.motion_adapter[0].weight.dtype))

    def _block(self, i: int, block, x: Tensor, context: Tensor, temb6: Tensor, rope, s: Tensor | None) -> Tensor:
        shift, scale, gate, c_shift, c_scale, c_gate = (block.scale_shift_table + temb6.float()).chunk(6, dim=1)
        h = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)
        if s is not None:
            h = self.attn_madanorms[i].modulate(h, s)  # eq. 5
        x = (x.float() + block.attn1(h, None, None, rope) * gate).type_as(x)
        h = block.norm2(x.float()).type_as(x)
        x = x + block.attn2(h, context, None, None)
        h = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
        if s is not None:
            h = self.ffn_madanorms[i].modulate(h, s)  # eq. 6
        return (x.float() + block.ffn(h).float() * c_gate).type_as(x)

    def forward(self, latents: Tensor, timestep: Tensor, text: Tensor, clip: Tensor, cond: Tensor,
                ref: Tensor | None = None, motion_features: Tensor | None = None, layout: Layout | None = None
                ) -> Tensor:
        """Predict the flow velocity.

        Args:
            latents: ``[B,16,F,h,w]`` noisy motion latents.
            timestep: ``[B]`` flow-matching timesteps (``sigma * 1000``).
            text: ``[B,L,text_dim]`` UMT5 embeddings (zero past the prompt), ``L <= 512``; padded with
                zeros to 512 tokens as the official model does (the cross-attention tells the 257 CLIP
                tokens from the text by that length).
            clip: ``[B,257,image_dim]`` CLIP image tokens.
            cond: ``[B,48,F,h,w]`` control image | zeros | depth latents.
            ref: ``[B,16,h,w]`` reference image latent, or ``None`` (no reference tokens).
            motion_features: ``[B,C_m,h',w']`` adapted motion features (``motion_features(image)``),
                or ``None`` to run without the MPM.
            layout: a ``backends.sequence_parallel.Layout`` to run sequence-parallel: this rank keeps
                its share of the tokens through the blocks (Ulysses all-to-all around self-attention)
                and the output is gathered; every rank of the group returns the whole prediction.

        Returns:
            ``[B,16,F,h,w]``.

        Raises:
            ValueError: for mismatched shapes.
        """
        wan = self.wan
        b, _, f, hh, ww = latents.shape
        if cond.shape[0] != b or cond.shape[2:] != latents.shape[2:] or \
                latents.shape[1] + cond.shape[1] != self.config.in_channels:
            raise ValueError(f"TrajectoryDiT: cond {tuple(cond.shape)} does not fit latents {tuple(latents.shape)} "
                             f"({self.config.in_channels} input channels)")
        if hh % 2 or ww % 2:
            raise ValueError(f"TrajectoryDiT: latent size {hh}x{ww} must be even (2x2 patches)")
        if text.shape[1] > TEXT_LEN:
            raise ValueError(f"TrajectoryDiT: text has {text.shape[1]} tokens; at most {TEXT_LEN}")
        if text.shape[1] < TEXT_LEN:
            text = F.pad(text, (0, 0, 0, TEXT_LEN - text.shape[1]))
        dtype = wan.patch_embedding.weight.dtype
        x = wan.patch_embedding(torch.cat([latents, cond], dim=1).to(dtype)).flatten(2).transpose(1, 2)
        frames = f
        if ref is not None:
            r = self.ref_conv(ref.to(dtype)).flatten(2).transpose(1, 2)
            x = torch.cat([r, x], dim=1)
            frames = f + 1
        x = x.contiguous()
        rope = wan.rope(latents[:, :1, :1].expand(b, 1, frames, hh, ww))
        temb, tproj, context, image_ctx = wan.condition_embedder(timestep, text.to(dtype), clip.to(dtype))
        temb6 = tproj.unflatten(1, (6, -1))
        context = torch.cat([image_ctx, context], dim=1)
        s = None
        if motion_features is not None:
            s = motion_tokens(motion_features, (f, hh // 2, ww // 2)).to(dtype)
        tokens = x.shape[1]
        first, last = token_range(tokens, layout)
        x = split_tokens(x, layout)
        rope = tuple(split_tokens(r, layout) for r in rope)
        if s is not None:  # motion tokens cover the first f*h*w tokens: this rank's part of them
            s = s[:, first:min(last, s.shape[1])] if first < s.shape[1] else None
        with attention_parallel(wan, layout, tokens, self.config.num_heads, x.device):
            for i, block in enumerate(streamed_blocks(wan.blocks)):
                x = self._block(i, block, x, context, temb6, rope, s)
        shift, scale = (wan.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (wan.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = gather_tokens(wan.proj_out(x), layout, tokens)
        if ref is not None:
            x = x[:, -(f * (hh // 2) * (ww // 2)):]
        x = x.reshape(b, f, hh // 2, ww // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
