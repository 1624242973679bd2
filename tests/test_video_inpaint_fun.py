# SPDX-License-Identifier: Apache-2.0
"""Wan2.1-Fun InP video inpainting + the 4D-ViSM LoRA (MoGe4D App. F.2) on tiny random weights.

The tiny folder is written by its builder (``backends.tiny.wan``) in the release layout (original Wan naming,
``Wan2.1_VAE.pth``, UMT5 / CLIP ``.pth`` files, ``4D-ViSM/lora_diffusion_pytorch_model.safetensors``
with the official kohya-style names) and loaded back through ``load_video_inpainter``.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from gen4d.backends.tiny import build_tiny
from gen4d.backends.video_inpaint import VideoInpainter, load_video_inpainter
from gen4d.backends.video_inpaint_fun import (
    VISM_LORA_DIR,
    VISM_LORA_FILE,
    FunInpainter,
    find_fun_inp_layout,
    find_vism_lora,
    inp_condition_mask,
    lora_deltas,
)
from gen4d.backends.wan import WAN_LATENT_MEAN, WAN_LATENT_STD, latent_cells, start_latents
from safetensors.torch import load_file, save_file

BASE = "Wan2.1-Fun-V1.1-14B-InP"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Two shared cores: one torch thread."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny("video_inpaint_wan_fun", tmp_path_factory.mktemp("fun"), seed=0)


@pytest.fixture(scope="module")
def model(folder):
    m = load_video_inpainter(folder, torch.float32)
    m.device = torch.device("cpu")
    return m


def _video(t=5, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(t, h, w, 3, generator=g)
    masks = torch.zeros(t, h, w)
    masks[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    return frames, masks


def _official(state_key: str) -> str:
    return "lora_unet__" + state_key.replace(".", "_")


# --------------------------------------------------------------------------- loading


def test_loader_dispatches_and_caches(folder, model):
    assert isinstance(model, FunInpainter) and not isinstance(model, VideoInpainter)
    assert load_video_inpainter(folder, torch.float32) is model  # cached, not reloaded
    assert model.transformer.config.in_channels == 36
    assert model.multiple == 16 and model.temporal == 4
    assert model.lora_path == folder / VISM_LORA_DIR / VISM_LORA_FILE
    # the InP folder itself works too; the LoRA is found as its sibling (MoGe4D's models layout)
    layout = find_fun_inp_layout(folder / BASE)
    assert layout.base == folder / BASE and layout.lora == model.lora_path
    # weights equal the official file under the name map
    raw = load_file(str(folder / BASE / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(model.transformer.blocks[1].attn2.add_k_proj.weight, raw["blocks.1.cross_attn.k_img.weight"])
    assert torch.equal(model.transformer.proj_out.weight, raw["head.head.weight"])


def test_broken_folders(folder, tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        find_fun_inp_layout(tmp_path / "nope")
    with pytest.raises(ValueError, match="model_index.json"):  # neither VACE nor Fun InP
        load_video_inpainter(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(folder / BASE, broken)
    (broken / "models_t5_umt5-xxl-enc-bf16.pth").unlink()
    with pytest.raises(ValueError, match="models_t5_umt5-xxl-enc-bf16.pth"):
        load_video_inpainter(broken)
    control = tmp_path / "control"
    shutil.copytree(folder / BASE, control)
    cfg = (control / "config.json").read_text().replace('"in_dim": 36', '"in_dim": 48')
    (control / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="in_dim 36"):
        find_fun_inp_layout(control)


# --------------------------------------------------------------------------- conditions


def test_condition_mask_hand_computed():
    hole = torch.zeros(5, 16, 16)
    hole[0, :8] = 1.0  # frame 0: top half a hole
    hole[3, :, 8:] = 1.0  # frame 3: right half a hole
    m = inp_condition_mask(hole, (2, 2))
    assert m.shape == (4, 2, 2, 2)
    # latent frame 0 = frame 0 four times: keep = 0 on top, 1 at the bottom, in every channel
    assert torch.equal(m[:, 0], torch.tensor([[0.0, 0.0], [1.0, 1.0]]).expand(4, 2, 2))
    # latent frame 1 = frames 1..4 as channels 0..3: only channel 2 (frame 3) has a right-half hole
    expected = torch.ones(4, 2, 2)
    expected[2, :, 1] = 0.0
    assert torch.equal(m[:, 1], expected)
    # bilinear 8x reduction without corner alignment: latent pixel = mean of pixels 3 and 4 per axis
    soft = torch.zeros(1, 16, 16)
    soft[0, 4, :] = 1.0
    assert torch.allclose(inp_condition_mask(soft, (2, 2))[:, 0, 0, 0], torch.full((4,), 0.5))


def test_latent_cells_and_eq7_start_hand_computed():
    """A latent cell joins a region when any of its pixels does (frame 0 alone, then 4 frames; 8 x 8 pixels);
    eq. 7's start: pasted cells at the paste level, other hole cells at the start level, known cells clean."""
    mask = torch.zeros(9, 16, 24)
    mask[3, 9, 17] = 1.0  # frame 3 -> latent frame 1, row 1, column 2
    mask[0, 0, 0] = 1.0  # frame 0 -> latent frame 0 only
    cells = latent_cells(mask, (1, 16, 3, 2, 3))
    assert cells.shape == (3, 2, 3) and cells.nonzero().tolist() == [[0, 0, 0], [1, 1, 2]]
    clean, noise = torch.full((1, 2, 3, 2, 3), 2.0), torch.full((1, 2, 3, 2, 3), -1.0)
    hole = cells.clone()
    hole[2] = True  # the last latent frame is a hole, not pasted
    start = start_latents(clean, noise, 0.7, hole, cells, 0.5)
    assert torch.allclose(start[..., cells], torch.tensor(0.5))  # 0.5 * 2 + 0.5 * -1
    assert torch.allclose(start[:, :, 2], torch.tensor(-0.1))  # 0.3 * 2 + 0.7 * -1
    assert torch.equal(start[..., ~hole], clean[..., ~hole])
    assert torch.allclose(start_latents(clean, noise, 0.7), torch.tensor(-0.1))  # no paste mask: all at the start


def test_transformer_input_layout(model, monkeypatch):
    """Channels 0-15 noise, 16-19 the mask (1 - hole), 20-35 the normalised latents of the grey-filled video."""
    frames, masks = _video()
    seen = []
    forward = model.transformer.forward

    def spy(**kwargs):
        seen.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()})
        return forward(**kwargs)

    monkeypatch.setattr(model.transformer, "forward", spy)
    model.inpaint(frames, masks, "a cat", "", 1.0, 2, 6.0, seed=3)
    assert len(seen) == 2
    x = seen[0]["hidden_states"]
    assert x.shape == (2, 36, 2, 4, 4)  # CFG batch: negative, positive
    assert torch.equal(x[0], x[1])
    assert torch.equal(x[0, 16:20], inp_condition_mask(masks, (4, 4)))
    grey = torch.where(masks[..., None] > 0.5, torch.full_like(frames, 0.5), frames)
    video = (grey * 2 - 1).permute(3, 0, 1, 2)[None]
    mu = model.vae.encode(video).latent_dist.mode()
    mean, std = torch.tensor(WAN_LATENT_MEAN).view(1, 16, 1, 1, 1), torch.tensor(WAN_LATENT_STD).view(1, 16, 1, 1, 1)
    assert torch.allclose(x[0, 20:], ((mu - mean) / std)[0], atol=1e-5)
    noise = torch.randn((1, 16, 2, 4, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x[0, :16], noise[0])  # noise level 1: pure noise from the seed
    assert seen[0]["encoder_hidden_states"].shape == (2, 512, 16)
    assert torch.count_nonzero(seen[0]["encoder_hidden_states_image"]) == 0  # official stage 2: zero CLIP


# --------------------------------------------------------------------------- inpainting


def test_inpaint_shapes_exact_pixels_and_determinism(model):
    frames, masks = _video(t=6, h=30, w=36)  # 6 frames -> padded to 9; 30x36 -> 32x32 and back
    steps = []
    out = model.inpaint(frames, masks, "a red car", "blue", 1.0, 3, 6.0, seed=1,
                        callback=lambda i, n, p: steps.append((i, n)))
    assert out.shape == frames.shape and out.dtype == torch.float32
    keep = masks == 0
    assert torch.equal(out[keep], frames[keep])
    assert (out[~keep] - frames[~keep]).abs().mean() > 0.01
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(model.inpaint(frames, masks, "a red car", "blue", 1.0, 3, 6.0, seed=1), out)
    assert not torch.equal(model.inpaint(frames, masks, "a red car", "blue", 1.0, 3, 6.0, seed=2), out)
    # noise level 0 and an empty mask return the input
    assert torch.equal(model.inpaint(frames, masks, noise_level=0.0, steps=3), frames)
    assert torch.equal(model.inpaint(frames, torch.zeros_like(masks), steps=3), frames)


def test_partial_noise_level_and_first_frame_clip(model):
    frames, masks = _video()
    half = model.inpaint(frames, masks, "a cat", "", 0.5, 4, 1.0, seed=0)  # the steps at σ <= 0.5, no CFG
    assert torch.equal(half[masks == 0], frames[masks == 0])
    model.clip_condition = "first_frame"
    try:
        clip = model.inpaint(frames, masks, "a cat", "", 0.5, 4, 1.0, seed=0)
        assert model.image_encoder is not None
    finally:
        model.clip_condition = "zeros"
    assert not torch.equal(clip, half)


def test_fun_eq7_starts_at_the_noise_level_with_only_the_pasted_latents_noised(model, monkeypatch):
    """CoCo4D eq. 7 on Wan2.1-Fun InP: the first denoising step runs at the paper's τ = 0.7 (the first step of the
    shift-5 Euler schedule at or below it, not σ 0.918 as the last 21 of 30 steps gave), the pasted region's
    latents are ``(1 - r) z + r ε`` at r = 0.5 of the clean latents ``z``, and the known latents are ``z``
    exactly at every step."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(8)
    frames = torch.rand(5, 32, 64, 3, generator=g)  # 4k + 1 frames, multiples of 16: latents 2 x 4 x 8
    holes = torch.zeros(5, 32, 64)
    holes[:, :, :32] = 1.0  # the left half, whole latent cells (8 px)
    seen = []
    forward = model.transformer.forward

    def spy(**kwargs):
        seen.append((kwargs["hidden_states"][:, :16].clone(), kwargs["timestep"].clone()))
        return forward(**kwargs)

    monkeypatch.setattr(model.transformer, "forward", spy)
    out = model.inpaint(frames, holes, "a cat", "", noise_level=0.7, steps=30, guidance_scale=1.0, seed=3,
                        paste_mask=holes, paste_noise_level=0.5)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    scheduler.set_timesteps(30)
    expected = float(scheduler.sigmas[int((scheduler.sigmas[:30] > 0.7).sum())])
    sigma_first = float(seen[0][1][0]) / 1000.0
    assert abs(sigma_first - expected) < 1e-4 and 0.68 < sigma_first <= 0.7, sigma_first  # before: 0.918
    assert len(seen) == int((scheduler.sigmas[:30] <= 0.7).sum())  # the steps below the start level
    video = (frames * 2 - 1).permute(3, 0, 1, 2)[None]
    mean, std = torch.tensor(WAN_LATENT_MEAN).view(1, 16, 1, 1, 1), torch.tensor(WAN_LATENT_STD).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        clean = (model.vae.encode(video).latent_dist.mode() - mean) / std
    pasted = torch.zeros(2, 4, 8, dtype=torch.bool)
    pasted[..., :4] = True
    for hidden, _ in seen:  # the known latents are the clean ones at every step
        torch.testing.assert_close(hidden[..., ~pasted], clean[..., ~pasted], atol=1e-5, rtol=0)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    basis = torch.stack([clean[..., pasted].double().flatten(), noise[..., pasted].double().flatten()], 1)
    a, b = torch.linalg.lstsq(basis, seen[0][0][..., pasted].double().flatten()[:, None]).solution.flatten().tolist()
    assert abs((1 - a) - 0.5) < 1e-4 and abs(b - 0.5) < 1e-4, (1 - a, b)  # the measured level of the pasted cells
    assert torch.equal(out[holes == 0], frames[holes == 0])
    with pytest.raises(ValueError, match="paste_noise_level"):
        model.inpaint(frames, holes, noise_level=0.4, steps=3, paste_mask=holes, paste_noise_level=0.5)
    with pytest.raises(ValueError, match="paste_mask"):
        model.inpaint(frames, holes, noise_level=0.7, steps=3, paste_mask=holes[:3])


def test_interrupt_and_bad_inputs(model):
    frames, masks = _video()
    with pytest.raises(InterruptedError):
        model.inpaint(frames, masks, steps=3, should_stop=lambda: True)
    with pytest.raises(ValueError, match=r"\[T,H,W,3\]"):
        model.inpaint(frames[0], masks)
    with pytest.raises(ValueError, match="masks for"):
        model.inpaint(frames, masks[:3])
    with pytest.raises(ValueError, match="noise_level"):
        model.inpaint(frames, masks, noise_level=1.5)
    with pytest.raises(ValueError, match="steps"):
        model.inpaint(frames, masks, steps=0)
    with pytest.raises(ValueError, match="NaN"):
        model.inpaint(frames * float("nan"), masks)
    model.clip_condition = "image"
    try:
        with pytest.raises(ValueError, match="clip_condition"):
            model.inpaint(frames, masks, steps=1)
    finally:
        model.clip_condition = "zeros"


# --------------------------------------------------------------------------- ViSM LoRA


def test_vism_lora_merge_is_exact_and_does_not_stack(folder, model):
    base = load_file(str(folder / BASE / "diffusion_pytorch_model.safetensors"))
    lora = load_file(str(folder / VISM_LORA_DIR / VISM_LORA_FILE))
    layers = {  # our module -> official module
        "blocks.0.attn1.to_q": "blocks.0.self_attn.q",
        "blocks.1.attn2.add_v_proj": "blocks.1.cross_attn.v_img",
        "blocks.1.ffn.net.0.proj": "blocks.1.ffn.0",
        "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
        "proj_out": "head.head",
    }

    def expected(official, s):
        key = _official(official)
        up, down = lora[key + ".lora_up.weight"].float(), lora[key + ".lora_down.weight"].float()
        alpha, rank = float(lora[key + ".alpha"]), up.shape[1]
        return base[official + ".weight"] + s * (up @ down) * alpha / rank

    frames, masks = _video()
    before = model.inpaint(frames, masks, "a cat", "", 1.0, 2, 6.0, seed=0)
    try:
        for s in (0.55, 0.55, 1.3, 0.55):
            assert model.apply_vism_lora(s) is True and model.lora_strength == s
            for ours, official in layers.items():
                w = model.transformer.get_submodule(ours).weight
                assert torch.allclose(w, expected(official, s), rtol=0, atol=1e-6), (ours, s)
        after = model.inpaint(frames, masks, "a cat", "", 1.0, 2, 6.0, seed=0)
        assert (after - before).abs().max() > 1e-4  # the LoRA changes the fill
    finally:
        assert model.apply_vism_lora(0.0) is True
    for ours, official in layers.items():
        assert torch.equal(model.transformer.get_submodule(ours).weight, base[official + ".weight"])
    assert torch.equal(model.inpaint(frames, masks, "a cat", "", 1.0, 2, 6.0, seed=0), before)


def test_vism_lora_missing_and_unknown_keys(folder, model, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(folder / BASE, plain / BASE)
    bare = load_video_inpainter(plain)
    assert bare.lora_path is None and bare.apply_vism_lora(0.55) is False
    with pytest.raises(ValueError, match="finite"):
        model.apply_vism_lora(float("nan"))

    targets = model._lora_targets()
    assert len(targets) == sum(isinstance(m, torch.nn.Linear) for m in model.transformer.modules()) == 32
    good = load_file(str(folder / VISM_LORA_DIR / VISM_LORA_FILE))
    single = {k.replace("lora_unet__", "lora_unet_"): v for k, v in good.items()}  # musubi-style prefix
    assert set(lora_deltas(single, targets)) == set(lora_deltas(good, targets))
    bad = dict(good)
    bad["lora_unet__blocks_7_self_attn_q.lora_down.weight"] = torch.zeros(4, 32)
    bad["lora_unet__blocks_7_self_attn_q.lora_up.weight"] = torch.zeros(32, 4)
    bad["lora_te_encoder_block_0_attn_q.lora_down.weight"] = torch.zeros(4, 16)
    with pytest.raises(ValueError, match=r"2 LoRA layer\(s\) match no Linear") as err:
        lora_deltas(bad, targets)
    assert "lora_unet__blocks_7_self_attn_q" in str(err.value) and "text-encoder" in str(err.value)
    wrong = dict(good)
    wrong["lora_unet__blocks_0_self_attn_q.lora_up.weight"] = torch.zeros(16, 4)
    with pytest.raises(ValueError, match="do not fit"):
        lora_deltas(wrong, targets)
    # a bad file in the model folder: a clear error, and the weights stay untouched
    broken = tmp_path / "broken"
    shutil.copytree(folder / BASE, broken / BASE)
    (broken / VISM_LORA_DIR).mkdir()
    save_file(bad, str(broken / VISM_LORA_DIR / VISM_LORA_FILE))
    m = load_video_inpainter(broken)
    w = m.transformer.blocks[0].attn1.to_q.weight.clone()
    with pytest.raises(ValueError, match="blocks_7_self_attn_q"):
        m.apply_vism_lora(0.55)
    assert torch.equal(m.transformer.blocks[0].attn1.to_q.weight, w) and m.lora_strength == 0.0


def test_bf16_weights(folder):
    m = load_video_inpainter(folder, torch.bfloat16)
    assert m.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert m.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert m.transformer.blocks[0].scale_shift_table.dtype == torch.float32
    assert m.vae.dtype == torch.float32
    frames, masks = _video()
    out = m.inpaint(frames, masks, "a cat", "", 1.0, 1, 6.0, seed=0)
    assert torch.equal(out[masks == 0], frames[masks == 0]) and torch.isfinite(out).all()


def test_lora_locations(tmp_path):
    base = tmp_path / "models" / BASE
    base.mkdir(parents=True)
    root = tmp_path / "models"
    assert find_vism_lora(base, base) is None
    (base / "vism_lora.safetensors").write_bytes(b"")
    assert find_vism_lora(base, base) == base / "vism_lora.safetensors"
    sibling = root / VISM_LORA_DIR / VISM_LORA_FILE  # MoGe4D's ./models layout wins over the alternative name
    sibling.parent.mkdir()
    sibling.write_bytes(b"")
    assert find_vism_lora(root, base) == sibling
    sibling.unlink()
    (root / VISM_LORA_DIR / "a.safetensors").write_bytes(b"")
    assert find_vism_lora(root, base) == root / VISM_LORA_DIR / "a.safetensors"
    (root / VISM_LORA_DIR / "b.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="2 .safetensors files"):
        find_vism_lora(root, base)


def test_vism_node_hook_merges_the_lora(folder):
    from gen4d.nodes.vism import _apply_lora

    m = load_video_inpainter(folder, torch.float32)
    try:
        assert _apply_lora(m, 0.55) is True and m.lora_strength == 0.55
    finally:
        m.apply_vism_lora(0.0)
