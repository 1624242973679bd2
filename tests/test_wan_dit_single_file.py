# SPDX-License-Identifier: Apache-2.0
"""Wan2.1-Fun transformers, VAE, UMT5 (+ its stored tokenizer) and CLIP from ComfyUI's single files.

Tiny random weights are written twice: as the release folder (``config.json`` + shards, ``.pth``
components, tokenizer folder) and as the single files ComfyUI users keep in ``models/diffusion_models``,
``vae``, ``text_encoders``, ``clip_vision`` and ``loras`` (original Wan names, optionally
``model.diffusion_model.``-prefixed; bf16 / fp16 / fp8 / fp8 "scaled"). The same weights loaded through
both paths must give the same outputs; files of the wrong kind are refused naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gen4d.backends.spiece import read_spiece, spiece_tokenizer
from gen4d.backends.tiny import build_tiny
from gen4d.backends.tiny.wan import TINY_WORDS, hf_clip_to_wan, our_to_official, umt5_to_wan
from gen4d.backends.video_inpaint import load_video_inpainter
from gen4d.backends.video_inpaint_fun import clear_cache, find_fun_inp_layout
from gen4d.backends.wan import load_umt5, load_wan_clip, read_weights, wan_dit_shapes
from safetensors.torch import load_file, save_file

BASE = "Wan2.1-Fun-V1.1-14B-InP"
PREFIX = "model.diffusion_model."


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


# --------------------------------------------------------------------------- a SentencePiece model, by hand


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, payload, wire: int = 2) -> bytes:
    tag = _varint(num << 3 | wire)
    if wire == 0:
        return tag + _varint(payload)
    if wire == 5:
        return tag + struct.pack("<f", payload)
    return tag + _varint(len(payload)) + payload


def spm_blob(pieces: list[tuple[str, float, int]], unk=2, eos=1, pad=0, bos=-1) -> bytes:
    """A serialized SentencePiece ModelProto (Unigram) with these pieces, as sentencepiece writes it."""
    out = b""
    for piece, score, kind in pieces:
        out += _field(1, _field(1, piece.encode()) + _field(2, score, 5) + _field(3, kind, 0))
    trainer = _field(3, 1, 0) + _field(4, len(pieces), 0) + _field(40, unk, 0) + _field(41, bos, 0) \
        + _field(42, eos, 0) + _field(43, pad, 0)
    normalizer = _field(1, b"identity") + _field(3, 1, 0) + _field(4, 1, 0)
    return out + _field(2, trainer) + _field(3, normalizer)


def tiny_spm() -> bytes:
    """The pieces of ``backends.tiny.wan.write_tiny_t5_tokenizer`` (same ids) as a SentencePiece model."""
    pieces = [("<pad>", 0.0, 3), ("</s>", 0.0, 3), ("<unk>", 0.0, 2)]
    pieces += [(f"\u2581{w}", -1.0, 1) for w in TINY_WORDS] + [("\u2581", -3.0, 1)]
    pieces += [(chr(c), -5.0, 1) for c in range(ord("a"), ord("z") + 1)]
    return spm_blob(pieces)


def test_stored_sentencepiece_model_tokenizes_as_the_tokenizer_folder(tmp_path):
    from gen4d.backends.tiny.wan import write_tiny_t5_tokenizer
    from transformers import AutoTokenizer

    write_tiny_t5_tokenizer(tmp_path / "tok")
    ref = AutoTokenizer.from_pretrained(tmp_path / "tok")
    ours = spiece_tokenizer(tiny_spm())
    sp = read_spiece(tiny_spm())
    assert (sp.unk_id, sp.eos_id, sp.pad_id, sp.bos_id) == (2, 1, 0, -1)
    texts = ["a photo of a cat", "  red   car at  night ", "xyz city!", ""]
    for kw in ({}, {"padding": "max_length", "max_length": 12, "truncation": True}):
        a, b = ref(texts, **kw), ours(texts, **kw)
        assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"]
    assert ours("a cat")["input_ids"][-1] == 1  # </s> closes every prompt (the T5 convention)
    with pytest.raises(ValueError, match="stored in probe: not a SentencePiece model"):
        spiece_tokenizer(b"\x0a\xff", "stored in probe")


# --------------------------------------------------------------------------- Wan2.1-Fun InP


def _tiny_inp_transformer(seed: int):
    """A 2-block Wan2.1-Fun InP transformer, width 256 in 128-wide heads (Wan's head width, which a single
    file's loader assumes), weights rounded to bf16."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=36, out_channels=16,
        text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6, image_dim=32, added_kv_proj_dim=256)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn_like(p) * 0.05).to(torch.bfloat16))
    return {our_to_official("wan." + k): v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(release folder, models dir, transformer weights in the original naming)."""
    root = tmp_path_factory.mktemp("single")
    release = build_tiny("video_inpaint_wan_fun", root / "release", seed=3)
    base = release / BASE
    official = _tiny_inp_transformer(3)
    cfg = json.loads((base / "config.json").read_text())
    cfg.update(dim=256, num_heads=2)
    (base / "config.json").write_text(json.dumps(cfg))
    names = sorted(official)
    g = torch.Generator().manual_seed(4)
    lora = {}
    for k, v in official.items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2:
            key = "lora_unet__" + k[: -len(".weight")].replace(".", "_")
            lora[key + ".lora_down.weight"] = 0.3 * torch.randn(4, v.shape[1], generator=g)
            lora[key + ".lora_up.weight"] = 0.3 * torch.randn(v.shape[0], 4, generator=g)
            lora[key + ".alpha"] = torch.tensor(2.0)
    save_file(lora, str(release / "4D-ViSM" / "lora_diffusion_pytorch_model.safetensors"))
    (base / "diffusion_pytorch_model.safetensors").unlink()
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = base / f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors"
        save_file({k: official[k] for k in part}, str(shard))
    # the components as ComfyUI ships them: bf16 VAE, fp16 UMT5 (tokenizer stored inside) and CLIP
    models = root / "models"
    for sub in ("diffusion_models", "vae", "text_encoders", "clip_vision", "loras"):
        (models / sub).mkdir(parents=True)
    vae = torch.load(base / "Wan2.1_VAE.pth", weights_only=True)
    vae = {k: v.to(torch.bfloat16) for k, v in vae.items()}
    save_file(vae, str(models / "vae" / "wan_2.1_vae.safetensors"))
    torch.save({k: v.float() for k, v in vae.items()}, base / "Wan2.1_VAE.pth")
    layout = find_fun_inp_layout(release)
    _, text = load_umt5(layout.t5, layout.tokenizer, torch.float32)
    clip = load_wan_clip(layout.clip, torch.float32)
    text.half().float()
    clip.half().float()
    torch.save(umt5_to_wan(text.state_dict()), base / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(hf_clip_to_wan(clip.state_dict()), base / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    t5 = {k: v.half() for k, v in text.state_dict().items() if k != "encoder.embed_tokens.weight"}
    t5["spiece_model"] = torch.frombuffer(bytearray(tiny_spm()), dtype=torch.uint8)
    save_file(t5, str(models / "text_encoders" / "umt5_xxl_fp16.safetensors"))
    save_file({("vision_model." + k if not k.startswith("vision_model.") else k): v.half()
               for k, v in clip.state_dict().items() if not k.endswith("position_ids")},
              str(models / "clip_vision" / "clip_vision_h.safetensors"))
    shutil.copy(release / "4D-ViSM" / "lora_diffusion_pytorch_model.safetensors",
                models / "loras" / "MoGe4D_4D-ViSM_lora.safetensors")
    save_file({PREFIX + k: v for k, v in official.items()},
              str(models / "diffusion_models" / "Wan2_1-Fun-V1_1-14B-InP_bf16.safetensors"))
    return release, models, official


@pytest.fixture
def comfy_models(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "folder_paths", None)
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(setup[1]))
    clear_cache()
    yield setup
    clear_cache()


def _video():
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(5, 32, 32, 3, generator=g)
    masks = torch.zeros(5, 32, 32)
    masks[:, 8:24, 8:24] = 1.0
    return frames, masks


def _inpaint(model):
    model.device = torch.device("cpu")
    frames, masks = _video()
    return model.inpaint(frames, masks, "a red car", steps=2, guidance_scale=3.0, seed=5, noise_level=1.0)


def test_fun_inp_single_files_equal_the_release_folder(comfy_models, tmp_path):
    release, models, _ = comfy_models
    single = models / "diffusion_models" / "Wan2_1-Fun-V1_1-14B-InP_bf16.safetensors"
    a = load_video_inpainter(release, torch.float32)
    ref = _inpaint(a)
    ref_lora = (a.apply_vism_lora(0.55), _inpaint(a))
    a.apply_vism_lora(0.0)
    clear_cache()

    # only ComfyUI's files: the transformer chosen directly, everything else from ComfyUI's folders
    b = load_video_inpainter(single, torch.float32)
    lay = b.layout
    assert lay.shards == (single,) and lay.vae.name == "wan_2.1_vae.safetensors"
    assert lay.t5.name == lay.tokenizer.name == "umt5_xxl_fp16.safetensors"
    assert lay.clip.name == "clip_vision_h.safetensors" and lay.lora.parent.name == "loras"
    assert b.transformer.config.num_attention_heads == 2 and b.transformer.config.num_layers == 2
    assert torch.equal(_inpaint(b), ref)
    assert ref_lora[0] is True and b.apply_vism_lora(0.55) is True
    assert torch.equal(_inpaint(b), ref_lora[1]) and not torch.equal(ref_lora[1], ref)
    b.apply_vism_lora(0.0)  # the prefixed single file is re-read for W_0: back to the plain result exactly
    assert torch.equal(_inpaint(b), ref)
    clear_cache()

    # a MoGe4D folder holding only the LoRA: the InP transformer is found in models/diffusion_models
    moge = tmp_path / "moge4d"
    shutil.copytree(release / "4D-ViSM", moge / "4D-ViSM")
    lay = find_fun_inp_layout(moge)
    assert lay.shards == (single,) and lay.lora == moge / "4D-ViSM" / "lora_diffusion_pytorch_model.safetensors"


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_transformer_is_upcast_with_its_scales(comfy_models, tmp_path, scaled):
    _, models, official = comfy_models
    state, expected = {}, {}
    for k, v in official.items():
        if k.endswith(".weight") and v.dim() == 2 and "blocks." in k:
            scale = v.float().abs().amax() / 448 if scaled else torch.tensor(1.0)
            q = (v.float() / scale).to(torch.float8_e4m3fn)
            state[k] = q
            expected[k] = (q.float() * scale).to(torch.bfloat16)
            if scaled:
                state[k[: -len("weight")] + "scale_weight"] = scale.reshape(1)
                state[k[: -len("weight")] + "scale_input"] = torch.ones(1)
        else:
            state[k] = v
            expected[k] = v.to(torch.bfloat16)
    if scaled:
        state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / f"wan2.1_fun_inp_14B_fp8_e4m3fn{'_scaled' if scaled else ''}.safetensors"
    save_file(state, str(path))
    model = load_video_inpainter(path, torch.bfloat16)
    got = model.transformer.state_dict()
    fp32 = {n for n, p in got.items() if p.dtype == torch.float32}
    assert fp32 and all(any(s in n for s in ("scale_shift_table", "norm", "time_embedder")) for n in fp32)
    index = model.weight_index
    for ours, (_, key, scale_key) in index.items():
        assert torch.equal(got[ours].to(torch.bfloat16), expected[key]), ours
        assert (scale_key is not None) == (scaled and key in expected and key.endswith(".weight")
                                           and state[key].dtype == torch.float8_e4m3fn)
    assert any(got[k].dtype == torch.bfloat16 for k in got)


def test_single_files_of_the_wrong_kind_are_refused(comfy_models, tmp_path):
    release, models, official = comfy_models
    vae = models / "vae" / "wan_2.1_vae.safetensors"
    with pytest.raises(ValueError, match=r"wan_2\.1_vae\.safetensors: not a Wan2\.1 transformer \(expected "
                                         r"patch_embedding"):
        load_video_inpainter(vae, torch.float32)
    control = dict(official)
    control["patch_embedding.weight"] = torch.zeros(256, 48, 1, 2, 2)
    path = tmp_path / "wan2.1_fun_control_14B_bf16.safetensors"
    save_file(control, str(path))
    with pytest.raises(ValueError, match=r"wan2\.1_fun_control_14B_bf16\.safetensors is a Wan transformer with 48 "
                                         r"input channels; expected a Wan2\.1-Fun InP one with 36"):
        load_video_inpainter(path, torch.float32)
    # a file named like an InP model that is none is passed over when searching; with nothing else: named error
    moved = tmp_path / "held"
    shutil.move(str(models / "diffusion_models"), str(moved))
    (models / "diffusion_models").mkdir()
    try:
        shutil.copy(vae, models / "diffusion_models" / "wan2.1_fun_inp_broken.safetensors")
        (tmp_path / "moge").mkdir()
        (tmp_path / "moge" / "4D-ViSM").mkdir()
        with pytest.raises(ValueError, match=r"no Wan2\.1-Fun InP transformer found.*in_dim 36.*"
                                             r"models/diffusion_models"):
            find_fun_inp_layout(tmp_path / "moge")
    finally:
        shutil.rmtree(models / "diffusion_models")
        shutil.move(str(moved), str(models / "diffusion_models"))
    assert wan_dit_shapes(models / "diffusion_models" / "Wan2_1-Fun-V1_1-14B-InP_bf16.safetensors")


def test_umt5_file_without_a_stored_tokenizer_says_where_to_put_one(comfy_models, tmp_path):
    _, models, _ = comfy_models
    t5 = models / "text_encoders" / "umt5_xxl_fp16.safetensors"
    held = tmp_path / "t5.safetensors"
    shutil.move(str(t5), str(held))
    try:
        save_file({k: v for k, v in load_file(str(held)).items() if k != "spiece_model"}, str(t5))
        with pytest.raises(ValueError, match=r"missing: the UMT5 tokenizer: put google/umt5-xxl's tokenizer files "
                                             r"\(spiece\.model"):
            find_fun_inp_layout(models / "diffusion_models" / "Wan2_1-Fun-V1_1-14B-InP_bf16.safetensors")
    finally:
        shutil.move(str(held), str(t5))
    assert "spiece_model" in read_weights(t5)


# --------------------------------------------------------------------------- MoGe4D on a single-file Control base


def test_trajectory_base_from_comfyui_single_files(tmp_path, monkeypatch):
    from gen4d.backends.trajectory_dit import clear_cache as clear_traj
    from gen4d.backends.trajectory_dit import find_layout, load_trajectory_model

    monkeypatch.setitem(sys.modules, "folder_paths", None)
    models = tmp_path / "models"
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(models))
    folder = build_tiny("trajectory", tmp_path / "moge", seed=2)
    base = folder / "Wan2.1-Fun-V1.1-14B-Control"
    clear_traj()
    ref = load_trajectory_model(folder, torch.float32)
    # ComfyUI's files of the same weights (fp32 here, so the values are the same bits)
    for sub in ("diffusion_models", "vae", "text_encoders", "clip_vision"):
        (models / sub).mkdir(parents=True)
    save_file({PREFIX + k: v for k, v in load_file(str(base / "diffusion_pytorch_model.safetensors")).items()},
              str(models / "diffusion_models" / "wan2.1_fun_control_14B_fp32.safetensors"))
    save_file({k: v.contiguous() for k, v in torch.load(base / "Wan2.1_VAE.pth", weights_only=True).items()},
              str(models / "vae" / "wan_2.1_vae.safetensors"))
    t5 = {k: v for k, v in ref.text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    t5["spiece_model"] = torch.frombuffer(bytearray(tiny_spm()), dtype=torch.uint8)
    save_file(t5, str(models / "text_encoders" / "umt5_xxl_fp32.safetensors"))
    clip_state = {k: v for k, v in ref.image_encoder.state_dict().items() if not k.endswith("position_ids")}
    save_file({k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in clip_state.items()},
              str(models / "clip_vision" / "clip_vision_h.safetensors"))
    shutil.rmtree(base)
    layout = find_layout(folder)
    assert layout.base == folder and layout.base_transformer[0].parent.name == "diffusion_models"
    assert layout.base_vae.name == "wan_2.1_vae.safetensors" and layout.tokenizer == layout.t5
    clear_traj()
    got = load_trajectory_model(folder, torch.float32)
    for a, b in ((ref.dit, got.dit), (ref.vae, got.vae), (ref.text_encoder, got.text_encoder),
                 (ref.image_encoder, got.image_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    prompt = ["a photo of a dog at night"]
    assert torch.equal(got.encode_prompt(prompt, torch.device("cpu")), ref.encode_prompt(prompt, torch.device("cpu")))
    clear_traj()


# --------------------------------------------------------------------------- against SentencePiece itself

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
_SPM_SCRIPT = r"""
import io, json, sys
import sentencepiece as spm
words = "a photo of a cat a dog in the forest the city at night red blue car scene über café naïve ＡＢＣ 123".split()
lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 5
buf = io.BytesIO()
spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=80, hard_vocab_limit=False,
                               model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                               normalization_rule_name="nmt_nfkc", minloglevel=3)
sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
texts = json.loads(sys.argv[1])
print(json.dumps({"blob": buf.getvalue().hex(), "ids": [sp.encode(t) + [sp.eos_id()] for t in texts]}))
"""


@pytest.mark.skipif(not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "comfy").is_dir()),
                    reason="set COMFYUI_PATH (and COMFYUI_PYTHON, which has sentencepiece) to compare with it")
def test_stored_tokenizer_encodes_as_sentencepiece():
    texts = ["a photo of a cat", "  red   car ＡＢＣ café  ", "xyz über naïve!", "forest123 city", ""]
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    out = subprocess.run([python, "-c", _SPM_SCRIPT, json.dumps(texts)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ours = spiece_tokenizer(bytes.fromhex(result["blob"]))
    assert ours(texts)["input_ids"] == result["ids"]
