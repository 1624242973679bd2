# SPDX-License-Identifier: Apache-2.0
"""MoGe4D 4D-STraG backend: official checkpoint names, the DiT forward, encoders, tiny end-to-end."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from gen4d.backends import trajectory_dit as td
from gen4d.backends.tiny import build_tiny
from gen4d.backends.tiny.wan import hf_clip_to_wan, umt5_to_wan
from gen4d.backends.trajectory_dit_modules import (
    DiTConfig,
    OmniMAEFeatures,
    TrajectoryDecoder,
    TrajectoryDiT,
    TrajectoryEncoder,
    sinusoid_table,
)
from gen4d.backends.trajectory_dit_names import (
    MappingError,
    adaptor_name_map,
    diffusers_vae_to_official,
    name_map,
    official_vae_to_diffusers,
    wan_clip_to_hf,
    wan_t5_to_umt5,
)
from gen4d.core.moge4d.strag import backproject, motion_intrinsics, normalize_motion, official_pinhole

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny sizes used to write state dicts in the official naming
DIM, HEADS, FFN, LAYERS, TXT, FREQ, IMG, MOT, OMNI = 32, 4, 64, 2, 16, 16, 24, 20, 20


def _official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 4D-STraG state dict written from the official module definitions
    (``MoGe4D/models/wan_transformer4d.py``: WanAttentionBlock, Head, MLPProj, SpatialGuidanceModule,
    feature_adapter, ref_conv; ``omnimae.py``: OmniMAE(trunk=VisionTransformer, head)) at tiny size."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple] = {
        "patch_embedding.weight": (DIM, 64, 1, 2, 2), "patch_embedding.bias": (DIM,),
        "text_embedding.0.weight": (DIM, TXT), "text_embedding.0.bias": (DIM,),
        "text_embedding.2.weight": (DIM, DIM), "text_embedding.2.bias": (DIM,),
        "time_embedding.0.weight": (DIM, FREQ), "time_embedding.0.bias": (DIM,),
        "time_embedding.2.weight": (DIM, DIM), "time_embedding.2.bias": (DIM,),
        "time_projection.1.weight": (6 * DIM, DIM), "time_projection.1.bias": (6 * DIM,),
        "img_emb.proj.0.weight": (IMG,), "img_emb.proj.0.bias": (IMG,),
        "img_emb.proj.1.weight": (IMG, IMG), "img_emb.proj.1.bias": (IMG,),
        "img_emb.proj.3.weight": (DIM, IMG), "img_emb.proj.3.bias": (DIM,),
        "img_emb.proj.4.weight": (DIM,), "img_emb.proj.4.bias": (DIM,),
        "head.modulation": (1, 2, DIM), "head.head.weight": (16 * 4, DIM), "head.head.bias": (16 * 4,),
        "ref_conv.weight": (DIM, 16, 2, 2), "ref_conv.bias": (DIM,),
        "feature_adapter.0.weight": (MOT, MOT, 3, 3), "feature_adapter.0.bias": (MOT,),
        "feature_adapter.2.weight": (MOT, MOT, 3, 3), "feature_adapter.2.bias": (MOT,),
        "control_adapter.conv.weight": (DIM, 24 * 4, 2, 2),  # Fun camera adapter: released, unused
        "omnimae_extractor.trunk.patch_embed.proj.1.weight": (OMNI, 3, 2, 16, 16),
        "omnimae_extractor.trunk.patch_embed.proj.1.bias": (OMNI,),
        "omnimae_extractor.trunk.pos_embed": (1, 8 * 196, OMNI),
        "omnimae_extractor.trunk.norm.weight": (OMNI,), "omnimae_extractor.trunk.norm.bias": (OMNI,),
        "omnimae_extractor.trunk.mask_token": (1, OMNI),
        "omnimae_extractor.trunk.decoder.decoder_embed.weight": (8, OMNI),
        "omnimae_extractor.head.weight": (12, 8), "omnimae_extractor.head.bias": (12,),
    }
    for name, shape in (("norm1", (OMNI,)), ("norm2", (OMNI,)), ("attn.qkv", (3 * OMNI, OMNI)),
                        ("attn.proj", (OMNI, OMNI)), ("mlp.fc1", (4 * OMNI, OMNI)), ("mlp.fc2", (OMNI, 4 * OMNI))):
        shapes[f"omnimae_extractor.trunk.blocks.0.{name}.weight"] = shape
        shapes[f"omnimae_extractor.trunk.blocks.0.{name}.bias"] = (shape[0],)
    for i in range(LAYERS):
        b = f"blocks.{i}."
        shapes[b + "modulation"] = (1, 6, DIM)
        for attn in ("self_attn", "cross_attn"):
            for p in ("q", "k", "v", "o"):
                shapes[f"{b}{attn}.{p}.weight"] = (DIM, DIM)
                shapes[f"{b}{attn}.{p}.bias"] = (DIM,)
            shapes[f"{b}{attn}.norm_q.weight"] = (DIM,)
            shapes[f"{b}{attn}.norm_k.weight"] = (DIM,)
        for p in ("k_img", "v_img"):
            shapes[f"{b}cross_attn.{p}.weight"] = (DIM, DIM)
            shapes[f"{b}cross_attn.{p}.bias"] = (DIM,)
        shapes[b + "cross_attn.norm_k_img.weight"] = (DIM,)
        shapes[b + "norm3.weight"], shapes[b + "norm3.bias"] = (DIM,), (DIM,)
        shapes[b + "ffn.0.weight"], shapes[b + "ffn.0.bias"] = (FFN, DIM), (FFN,)
        shapes[b + "ffn.2.weight"], shapes[b + "ffn.2.bias"] = (DIM, FFN), (DIM,)
        for which in ("self", "ffn"):
            shapes[f"{b}spatial_guidance_{which}.spatial_guide.1.weight"] = (2 * DIM, MOT)
            shapes[f"{b}spatial_guidance_{which}.spatial_guide.1.bias"] = (2 * DIM,)
            shapes[f"{b}spatial_guidance_{which}.gate"] = (DIM,)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def _tiny_config() -> DiTConfig:
    return DiTConfig(dim=DIM, ffn_dim=FFN, num_heads=HEADS, num_layers=LAYERS, text_dim=TXT, freq_dim=FREQ,
                     image_dim=IMG, motion_dim=MOT)


def test_name_map_loads_official_state_exactly():
    official = _official_state()
    ours = name_map(official)
    dit = TrajectoryDiT(_tiny_config())
    extractor = OmniMAEFeatures(dim=OMNI, depth=1, heads=2)
    dit_state = {k: v for k, v in ours.items() if not k.startswith("motion_extractor.")}
    omni_state = {k[len("motion_extractor."):]: v for k, v in ours.items() if k.startswith("motion_extractor.")}
    assert set(dit_state) == set(dit.state_dict())  # nothing missing, nothing extra
    assert set(omni_state) == set(extractor.state_dict())
    dit.load_state_dict(dit_state, strict=True)
    extractor.load_state_dict(omni_state, strict=True)
    sd = dit.state_dict()
    # spot checks of where each official tensor lands (eq. 4-6 modules, Wan block, head, ref tokens)
    pairs = {
        "blocks.1.spatial_guidance_self.spatial_guide.1.weight": "attn_madanorms.1.linear.weight",
        "blocks.0.spatial_guidance_ffn.gate": "ffn_madanorms.0.gate",
        "blocks.1.norm3.weight": "wan.blocks.1.norm2.weight",
        "blocks.0.cross_attn.k_img.weight": "wan.blocks.0.attn2.add_k_proj.weight",
        "blocks.0.self_attn.o.bias": "wan.blocks.0.attn1.to_out.0.bias",
        "blocks.1.ffn.0.weight": "wan.blocks.1.ffn.net.0.proj.weight",
        "blocks.0.modulation": "wan.blocks.0.scale_shift_table",
        "head.modulation": "wan.scale_shift_table",
        "img_emb.proj.3.weight": "wan.condition_embedder.image_embedder.ff.net.2.weight",
        "time_projection.1.weight": "wan.condition_embedder.time_proj.weight",
        "feature_adapter.2.weight": "motion_adapter.2.weight",
        "ref_conv.weight": "ref_conv.weight",
    }
    for off, our in pairs.items():
        assert torch.equal(sd[our], official[off]), (off, our)
    assert torch.equal(extractor.state_dict()["blocks.0.attn.qkv.weight"],
                       official["omnimae_extractor.trunk.blocks.0.attn.qkv.weight"])
    assert torch.equal(extractor.state_dict()["patch_embed.weight"],
                       official["omnimae_extractor.trunk.patch_embed.proj.1.weight"])


def test_name_map_errors_list_unknown_keys_and_base_part_matches_diffusers():
    official = _official_state()
    bad = dict(official, **{"blocks.0.mystery.weight": torch.zeros(1), "extra_head.bias": torch.zeros(1)})
    with pytest.raises(MappingError, match=r"2 parameter name\(s\) not recognised: blocks.0.mystery.weight, "
                                           r"extra_head.bias"):
        name_map(bad)
    # the plain Wan part agrees with diffusers' own converter of original Wan checkpoints
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    wan_part = {k: v for k, v in official.items() if not k.startswith(
        ("omnimae_extractor.", "feature_adapter.", "ref_conv.", "control_adapter.")) and "spatial_guidance" not in k}
    ref = convert_wan_transformer_to_diffusers(dict(wan_part))
    ours = {k[len("wan."):]: v for k, v in name_map(wan_part).items()}
    assert set(ours) == set(ref)
    assert all(ours[k] is ref[k] for k in ref)


def test_dit_forward_matches_diffusers_wan_without_mpm_and_ref():
    torch.manual_seed(1)
    dit = TrajectoryDiT(_tiny_config()).eval()
    lat, cond = torch.randn(2, 16, 2, 4, 6), torch.randn(2, 48, 2, 4, 6)
    t, text, clip = torch.tensor([900.0, 20.0]), torch.randn(2, 7, TXT), torch.randn(2, 5, IMG)
    padded = F.pad(text, (0, 0, 0, 512 - 7))  # Wan's 512-token text context, zero past the prompt
    with torch.no_grad():
        ours = dit(lat, t, text, clip, cond)
        ref = dit.wan(torch.cat([lat, cond], 1), t, padded, encoder_hidden_states_image=clip, return_dict=False)[0]
        # the CLIP tokens reach the image cross-attention (split from the 512 text tokens)
        other = dit(lat, t, text, torch.randn_like(clip), cond)
    assert ours.shape == (2, 16, 2, 4, 6)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert (other - ours).abs().max() > 1e-4
    with pytest.raises(ValueError, match="at most 512"):
        dit(lat, t, torch.randn(2, 513, TXT), clip, cond)


def test_dit_madanorm_and_reference_tokens():
    torch.manual_seed(2)
    dit = TrajectoryDiT(_tiny_config()).eval()
    lat, cond = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 48, 3, 4, 4)
    t, text, clip, ref = torch.tensor([500.0]), torch.randn(1, 3, TXT), torch.randn(1, 5, IMG), torch.randn(1, 16, 4, 4)
    s = torch.randn(1, MOT, 5, 5)
    with torch.no_grad():
        plain = dit(lat, t, text, clip, cond, ref)
        assert torch.allclose(dit(lat, t, text, clip, cond, ref, s), plain)  # γ = 0: MPM is the identity
        for m in list(dit.attn_madanorms) + list(dit.ffn_madanorms):
            torch.nn.init.normal_(m.gate, std=0.5)
        gated = dit(lat, t, text, clip, cond, ref, s)
        assert (gated - plain).abs().max() > 1e-3
        # the reference latent changes the prediction (its tokens take part in self-attention)
        assert (dit(lat, t, text, clip, cond, ref * 0 + 1, s) - gated).abs().max() > 1e-4
    with pytest.raises(ValueError, match="does not fit latents"):
        dit(lat, t, text, clip, cond[:, :32], ref)


def test_omnimae_position_table_and_shapes():
    table = sinusoid_table(5, 6)
    # hand values: position 3, channel 2 -> sin(3 / 10000^(2/6)); channel 5 -> cos(3 / 10000^(4/6))
    assert math.isclose(float(table[0, 3, 2]), math.sin(3 / 10000 ** (2 / 6)), rel_tol=1e-6)
    assert math.isclose(float(table[0, 3, 5]), math.cos(3 / 10000 ** (4 / 6)), rel_tol=1e-6)
    assert torch.equal(table[0, 0, 1::2], torch.ones(3))
    ext = OmniMAEFeatures(dim=16, depth=1, heads=2)
    out = ext(torch.rand(2, 3, 40, 30))
    assert out.shape == (2, 16, 14, 14) and torch.isfinite(out).all()


def test_trajectory_adaptors_and_official_names():
    enc = TrajectoryEncoder(width=16, num_blocks=1, groups=8)
    x = torch.randn(1, 3, 2, 5, 6)
    assert torch.allclose(enc(x), torch.sigmoid(x), atol=1e-6)  # zero conv_out: identity before the sigmoid
    dec = TrajectoryDecoder(width=16, num_blocks=2, groups=8)
    assert dec(x).shape == x.shape
    official = {k.replace("blocks.", "up.0.block.", 1): v for k, v in dec.state_dict().items()}
    assert "up.0.block.1.conv2.weight" in official
    assert set(adaptor_name_map(official, "decoder")) == set(dec.state_dict())
    with pytest.raises(MappingError, match="down.0.block.0.conv1.weight"):
        adaptor_name_map({"down.0.block.0.conv1.weight": torch.zeros(1)}, "decoder")


def test_vae_official_names_round_trip_through_diffusers():
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(base_dim=4, z_dim=16)
    sd = vae.state_dict()
    official = diffusers_vae_to_official(sd)
    assert "decoder.upsamples.4.shortcut.weight" in official and "encoder.middle.1.to_qkv.weight" in official
    assert "decoder.upsamples.3.resample.1.weight" in official and "conv2.weight" in official
    back = official_vae_to_diffusers({"model." + k: v for k, v in official.items()})
    assert set(back) == set(sd) and all(back[k] is sd[k] for k in sd)


def test_t5_and_clip_maps_compute_what_the_wan_modules_compute():
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(3)
    t5 = UMT5EncoderModel(UMT5Config(vocab_size=20, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                     tie_word_embeddings=False))
    wan = umt5_to_wan(t5.state_dict())
    assert set(wan_t5_to_umt5(wan)) == set(t5.state_dict())
    # Wan's T5 FFN: fc2(fc1(x) * gelu_tanh(gate.0(x))); the mapped HF layer must compute the same
    x = torch.randn(3, 16)
    wan_ffn = F.linear(F.linear(x, wan["blocks.1.ffn.fc1.weight"]) *
                       F.gelu(F.linear(x, wan["blocks.1.ffn.gate.0.weight"]), approximate="tanh"),
                       wan["blocks.1.ffn.fc2.weight"])
    hf = t5.encoder.block[1].layer[1].DenseReluDense
    assert torch.allclose(hf.eval()(x), wan_ffn, atol=1e-5)

    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, image_size=28, patch_size=14)).eval()
    wclip = hf_clip_to_wan(clip.state_dict())
    mapped = wan_clip_to_hf(wclip)
    own = {(k if k.startswith("vision_model.") else "vision_model." + k) for k in clip.state_dict()}
    assert set(mapped) - {"vision_model.embeddings.position_ids"} <= own
    # fused to_qkv is [q; k; v]: the q rows of the fused weight are the HF q_proj
    layer = clip.state_dict()
    q_key = [k for k in layer if k.endswith("layers.0.self_attn.q_proj.weight")][0]
    assert torch.equal(wclip["visual.transformer.0.attn.to_qkv.weight"][:16], layer[q_key])


# --------------------------------------------------------------------------- tiny model end to end


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny("trajectory", tmp_path_factory.mktemp("traj"), seed=0)


@pytest.fixture(scope="module")
def tiny_model(tiny_folder):
    td.clear_cache()
    return td.load_trajectory_model(tiny_folder)


def test_loader_reads_official_layout_and_caches(tiny_folder, tiny_model):
    assert td.load_trajectory_model(tiny_folder) is tiny_model  # cached, not reloaded
    layout = td.find_layout(tiny_folder)
    assert layout.base.name == "Wan2.1-Fun-V1.1-14B-Control" and layout.vae_finetuned is not None
    m = tiny_model
    assert m.dit.motion_extractor is not None and m.image_encoder is not None and m.encoder is not None
    # the 4D-STraG file holds no text embedding: it came from the base checkpoint
    from safetensors.torch import load_file

    base = load_file(str(layout.base / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(m.dit.wan.condition_embedder.text_embedder.linear_1.weight, base["text_embedding.0.weight"])
    strag = load_file(str(layout.strag))
    assert torch.equal(m.dit.attn_madanorms[1].gate, strag["blocks.1.spatial_guidance_self.gate"])
    assert m.dit.wan.patch_embedding.weight.shape[1] == 64  # noise | image | start image | depth
    # fine-tuned VAE decoder overrides the base one
    ft = torch.load(layout.vae_finetuned, weights_only=True)
    assert torch.equal(m.vae.decoder.conv_in.weight, ft["model.decoder.conv1.weight"])


def test_generate_tracks_tiny_end_to_end(tiny_model):
    h, w, n = 32, 48, 5
    image = torch.rand(h, w, 3)
    depth = torch.rand(h, w) * 3 + 1
    depth[0, :4] = 0.0  # sky: no surface
    steps = []
    r = td.generate_tracks(tiny_model, image, depth, "a red car", num_frames=n, steps=3, seed=7,
                           callback=lambda i, total, p: steps.append((i, total)))
    tr = r.tracks
    assert tr.points.shape == (n, h, w, 3) and r.motion_maps.shape == (n, h, w, 3)
    assert r.normalized.shape == (n, h, w, 3) and steps == [(1, 3), (2, 3), (3, 3)]
    assert torch.isfinite(tr.points).all() and torch.equal(tr.colors, image)
    assert tr.valid.sum() == h * w - 4 and not tr.valid[0, :4].any() and tr.visible.all()
    assert torch.equal(tr.K, official_pinhole(h, w)) and torch.equal(tr.viewmat, torch.eye(4))
    points0 = backproject(torch.where(tr.valid, depth, depth.max()), official_pinhole(h, w))
    assert torch.allclose(tr.points[0], points0)  # frame 0 = the initial point cloud
    assert torch.equal(tr.points[:, ~tr.valid], points0[~tr.valid].expand(n, -1, -1))  # no depth: no motion
    # the motion is the decoder's output de-normalised with eq. 1 (round trip back to it)
    renorm = normalize_motion(tr.points, points0, motion_intrinsics(h, w), valid=tr.valid)
    assert torch.allclose(renorm[1:][:, tr.valid], r.normalized[1:][:, tr.valid], atol=1e-4)
    assert (tr.points[1:] - tr.points[:1])[:, tr.valid].abs().max() > 1e-4
    same = td.generate_tracks(tiny_model, image, depth, "a red car", num_frames=n, steps=3, seed=7)
    other = td.generate_tracks(tiny_model, image, depth, "a red car", num_frames=n, steps=3, seed=8)
    assert torch.equal(same.tracks.points, tr.points)
    assert not torch.allclose(other.tracks.points, tr.points)
    # a K from a field of view is used for lifting
    K = td.fov_intrinsics(h, w, 60.0)
    r2 = td.generate_tracks(tiny_model, image, depth, "", num_frames=n, steps=1, guidance_scale=1.0, K=K)
    assert torch.equal(r2.tracks.K, K) and math.isclose(float(K[0, 0]), 24 / math.tan(math.pi / 6), rel_tol=1e-6)


def test_encode_motion_round_trip_shapes(tiny_model):
    motion = torch.randn(1, 3, 5, 32, 48) * 0.1
    z = tiny_model.encode_motion(motion)
    assert z.shape == (1, 16, 2, 4, 6)
    normalized, rgb = tiny_model.decode_motion(z)
    assert normalized.shape == (1, 3, 5, 32, 48) and rgb.abs().max() <= 1.0


def test_generate_tracks_rejects_bad_inputs(tiny_model):
    img, depth = torch.rand(32, 48, 3), torch.ones(32, 48)
    with pytest.raises(ValueError, match=r"num_frames 6 cannot be taken by the Wan VAE .*nearest valid: 5 or 9"):
        td.generate_tracks(tiny_model, img, depth, "", num_frames=6, steps=1)
    with pytest.raises(ValueError, match="nearest valid: 5"):
        td.check_frames(1)
    with pytest.raises(ValueError, match="smaller than one latent patch"):
        td.generate_tracks(tiny_model, torch.rand(8, 48, 3), depth, "", num_frames=5, steps=1)
    with pytest.raises(ValueError, match="width 40 must be a multiple of 16; nearest valid: 32 or 48"):
        td.check_size(40, 32)
    neg = depth.clone()
    neg[3, 3] = -1.0
    with pytest.raises(ValueError, match="1 negative value"):
        td.generate_tracks(tiny_model, img, neg, "", num_frames=5, steps=1)
    with pytest.raises(ValueError, match="no positive finite value"):
        td.generate_tracks(tiny_model, img, torch.zeros(32, 48), "", num_frames=5, steps=1)
    with pytest.raises(InterruptedError):
        td.generate_tracks(tiny_model, img, depth, "", num_frames=5, steps=2, should_stop=lambda: True)


def test_loader_errors_name_missing_and_unknown(tiny_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    (broken / "VAE" / "decoder_prompt" / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match=r"missing: VAE/decoder_prompt/pytorch_model.bin"):
        td.find_layout(broken)
    odd = tmp_path / "odd"
    shutil.copytree(tiny_folder, odd)
    strag = load_file(str(odd / td.STRAG_FILE))
    save_file(dict(strag, **{"blocks.0.unknown_layer.weight": torch.zeros(2)}), str(odd / td.STRAG_FILE))
    with pytest.raises(ValueError, match="blocks.0.unknown_layer.weight"):
        td.load_trajectory_model(odd)
    lacking = tmp_path / "lacking"
    shutil.copytree(tiny_folder, lacking)
    save_file({k: v for k, v in strag.items() if k != "blocks.1.spatial_guidance_ffn.gate"},
              str(lacking / td.STRAG_FILE))
    with pytest.raises(ValueError, match=r"missing 1: ffn_madanorms.1.gate"):
        td.load_trajectory_model(lacking)
