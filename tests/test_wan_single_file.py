# SPDX-License-Identifier: Apache-2.0
"""Single-file and diffusers-folder loads of the Wan VAE, UMT5 and CLIP vision tower (backends.wan).

The same tiny random weights are written as a ComfyUI-style single ``.safetensors`` file (the key
layout ComfyUI's own modules use) and as a diffusers / transformers component folder; both loads must
give identical outputs, parameters in the requested dtype, and nothing left on the meta device. With
``COMFYUI_PATH`` set, the key names and shapes come from ComfyUI's own modules (run with
``COMFYUI_PYTHON``), so a change of ComfyUI's layout fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gen4d.backends.tiny.wan import tiny_vae_official, tiny_wan_encoders, write_tiny_t5_tokenizer
from gen4d.backends.wan import (
    assign_weights,
    dequantize_scaled,
    load_umt5,
    load_wan_clip,
    load_wan_vae,
    read_weights,
)
from safetensors.torch import save_file


def _no_meta(module: torch.nn.Module) -> None:
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    assert not left, left


def _float_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters() if p.is_floating_point()}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    write_tiny_t5_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def encoders(tokenizer):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    return tiny_wan_encoders(len(AutoTokenizer.from_pretrained(tokenizer)))


def test_vae_comfy_single_file_equals_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKLWan

    official = {k: v.contiguous() for k, v in tiny_vae_official(3).items()}
    single = tmp_path / "wan_2.1_vae.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in official.items()}, str(single))  # ComfyUI ships bf16
    from gen4d.backends.wan import vae_state

    ref = AutoencoderKLWan(base_dim=4, z_dim=16)
    ref.load_state_dict(vae_state({k: v.to(torch.bfloat16).float() for k, v in official.items()}))
    ref.save_pretrained(tmp_path / "vae", safe_serialization=True)

    a, b = load_wan_vae(single), load_wan_vae(tmp_path / "vae")
    for vae in (a, b):
        _no_meta(vae)
        assert _float_dtypes(vae) == {torch.float32}
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        za, zb = a.encode(x).latent_dist.mode(), b.encode(x).latent_dist.mode()
        assert torch.equal(za, zb)
        assert torch.equal(a.decode(za).sample, b.decode(zb).sample)


def _comfy_t5_state(text) -> dict[str, torch.Tensor]:
    """transformers UMT5 weights in ComfyUI's single-file layout: ``shared.weight`` only (no tied copy),
    plus the tokenizer blob ComfyUI stores beside the weights."""
    state = {k: v.detach().clone() for k, v in text.state_dict().items() if k != "encoder.embed_tokens.weight"}
    state["spiece_model"] = torch.arange(7, dtype=torch.uint8)
    return state


def test_umt5_comfy_single_file_equals_diffusers_folder(tmp_path, tokenizer, encoders):
    text, _ = encoders
    single = tmp_path / "umt5_xxl_fp16.safetensors"
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in _comfy_t5_state(text).items()},
              str(single))
    folder = tmp_path / "text_encoder"
    text.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    text.float()
    ids = torch.tensor([[5, 9, 3, 1, 0, 0]])
    mask = (ids > 0).long()
    outs = []
    for src in (single, folder):
        for dtype in (torch.bfloat16, torch.float32):
            _, model = load_umt5(src, tokenizer, dtype)
            _no_meta(model)
            assert _float_dtypes(model) == {dtype}
            assert model.shared.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()
            with torch.no_grad():
                outs.append(model(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])
    assert not torch.equal(outs[0].float(), outs[1])  # the dtype really changed the computation


def test_umt5_fp8_scaled_file_is_dequantised(tmp_path, tokenizer, encoders):
    text, _ = encoders
    state = _comfy_t5_state(text)
    state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    expected = {}
    for k in [k for k in state if k.endswith(".weight") and state[k].dim() == 2 and "relative" not in k
              and k != "shared.weight"]:
        scale = state[k].abs().max() / 448
        q = (state[k] / scale).to(torch.float8_e4m3fn)
        state[k], state[k[: -len("weight")] + "scale_weight"] = q, scale.reshape(())
        state[k[: -len("weight")] + "scale_input"] = torch.ones(())
        expected[k] = (q.float() * scale).to(torch.bfloat16)
    path = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(state, str(path))
    _, model = load_umt5(path, tokenizer, torch.bfloat16)
    _no_meta(model)
    loaded = model.state_dict()
    assert expected and all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert _float_dtypes(model) == {torch.bfloat16}


def test_clip_vision_comfy_single_file_equals_diffusers_folder(tmp_path, encoders):
    _, clip = encoders
    state = {k: v.detach().clone().to(torch.float16) for k, v in clip.state_dict().items()
             if not k.endswith("position_ids")}
    if not any(k.startswith("vision_model.") for k in state):  # transformers >= 5 drops the prefix
        state = {"vision_model." + k: v for k, v in state.items()}
    state["visual_projection.weight"] = torch.randn(8, 32).to(torch.float16)  # ComfyUI keeps the projection
    single = tmp_path / "clip_vision_h.safetensors"
    save_file(state, str(single))
    clip.to(torch.float16).save_pretrained(tmp_path / "image_encoder", safe_serialization=True)
    clip.float()
    x = torch.randn(1, 3, 28, 28)
    outs = []
    for src in (single, tmp_path / "image_encoder"):
        model = load_wan_clip(src, torch.bfloat16)
        _no_meta(model)
        assert _float_dtypes(model) == {torch.bfloat16}
        with torch.no_grad():
            outs.append(model(pixel_values=x.to(torch.bfloat16), output_hidden_states=True).hidden_states[-2])
    assert torch.equal(outs[0], outs[1])


def test_read_weights_casts_on_read_and_assign_refuses_misfits(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(3, 2), "i": torch.arange(3), "s.scale_weight": torch.tensor(0.1)}, str(path))
    got = read_weights(path, torch.bfloat16, skip=("i",))
    assert set(got) == {"a", "s.scale_weight"} and got["a"].dtype == torch.bfloat16
    assert got["s.scale_weight"].dtype == torch.float32  # scales stay as stored
    assert dequantize_scaled({"w": torch.ones(2)}, torch.bfloat16)["w"].dtype == torch.float32  # no scales: as is
    lin = torch.nn.Linear(2, 3, device="meta")
    with pytest.raises(ValueError, match="missing 1: bias"):
        assign_weights(lin, {"weight": torch.randn(3, 2)}, torch.bfloat16, "probe")
    state = {"weight": torch.randn(3, 2), "bias": torch.randn(3)}
    assign_weights(lin, state, torch.bfloat16, "probe", keep_fp32=("bias",))
    assert lin.weight.dtype == torch.bfloat16 and lin.bias.dtype == torch.float32
    _no_meta(lin)


# --------------------------------------------------------------------------- ComfyUI's own key layout

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")

_KEYS_SCRIPT = r"""
import json, sys, torch
root, vocab = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, root)
sys.argv = ["main.py", "--cpu"]  # ComfyUI reads its options at import
import comfy.options
comfy.options.enable_args_parsing()
import comfy.ops
from comfy.ldm.wan.vae import WanVAE
from comfy.text_encoders.t5 import T5
from comfy.clip_model import CLIPVisionModelProjection
ops = comfy.ops.disable_weight_init
vae = WanVAE(dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True])  # the Wan 2.1 VAE as ComfyUI builds it
t5 = T5({"num_layers": 2, "d_model": 16, "d_kv": 8, "num_heads": 2, "d_ff": 32, "dense_act_fn": "gelu_pytorch_tanh",
         "is_gated_act": True, "model_type": "umt5", "vocab_size": vocab}, torch.float32, "cpu", ops)
clip = CLIPVisionModelProjection({"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 1,
    "intermediate_size": 64, "hidden_act": "gelu", "num_channels": 3, "patch_size": 14, "image_size": 28,
    "model_type": "clip_vision_model", "projection_dim": 8, "layer_norm_eps": 1e-5}, torch.float32, "cpu", ops)
print(json.dumps({n: {k: list(v.shape) for k, v in m.state_dict().items()} for n, m in
                  (("vae", vae), ("t5", t5), ("clip", clip))}))
"""


@pytest.mark.skipif(not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "comfy").is_dir()),
                    reason="set COMFYUI_PATH (and COMFYUI_PYTHON) to check ComfyUI's own key layouts")
def test_comfyui_key_layouts_load(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tokenizer))
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    out = subprocess.run([python, "-c", _KEYS_SCRIPT, str(Path(COMFYUI_PATH).resolve()), str(vocab)],
                         capture_output=True, text=True, timeout=300, cwd=COMFYUI_PATH)
    assert out.returncode == 0, out.stderr[-3000:]
    layouts = json.loads(out.stdout.strip().splitlines()[-1])
    gen = torch.Generator().manual_seed(0)
    files = {}
    for name, shapes in layouts.items():
        state = {k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}
        files[name] = tmp_path / f"{name}.safetensors"
        save_file(state, str(files[name]))
    vae = load_wan_vae(files["vae"])
    _, text = load_umt5(files["t5"], tokenizer, torch.bfloat16)
    clip = load_wan_clip(files["clip"], torch.float32)
    for m in (vae, text, clip):
        _no_meta(m)
    # the values land where ComfyUI's names say they belong
    src = read_weights(files["t5"])
    assert torch.equal(text.shared.weight, src["shared.weight"].to(torch.bfloat16))
    assert torch.equal(text.encoder.block[1].layer[1].DenseReluDense.wo.weight,
                       src["encoder.block.1.layer.1.DenseReluDense.wo.weight"].to(torch.bfloat16))
    src = read_weights(files["clip"])
    tower = getattr(clip, "vision_model", clip)
    assert torch.equal(tower.embeddings.patch_embedding.weight, src["vision_model.embeddings.patch_embedding.weight"])
    src = read_weights(files["vae"])
    assert torch.equal(vae.encoder.conv_in.weight, src["encoder.conv1.weight"])
    assert torch.equal(vae.post_quant_conv.weight, src["conv2.weight"])


def test_safetensors_reader_reads_in_pieces_exactly(tmp_path, monkeypatch):
    from gen4d.backends.wan import SafetensorsReader
    from safetensors.torch import load_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(37, 11), "h": torch.randn(5, 3).half(), "e": torch.zeros(0, 4),
               "b": torch.tensor([True, False]), "i": torch.arange(6).reshape(2, 3)}, str(path))
    ref = load_file(str(path))
    monkeypatch.setattr(SafetensorsReader, "CHUNK", 24)  # pieces of 6 floats: several per tensor, a ragged last one
    with SafetensorsReader(path) as fh:
        assert sorted(fh.keys()) == sorted(ref)
        for k, v in ref.items():
            assert torch.equal(fh.get(k), v)
            if v.is_floating_point():
                assert torch.equal(fh.get(k, torch.bfloat16), v.to(torch.bfloat16))
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-20])
    with pytest.raises(ValueError, match="could not read"):
        read_weights(tmp_path / "cut.safetensors", torch.bfloat16)


# --------------------------------------------------------------------------- picking files from ComfyUI's folders


def test_single_file_roots_follow_folder_paths_or_the_models_dir(tmp_path, monkeypatch):
    import types

    from gen4d.backends import model_folders as mf

    monkeypatch.setenv("GEN4D_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setitem(sys.modules, "folder_paths", None)  # outside ComfyUI
    assert mf.single_file_roots("vae") == [(tmp_path / "m" / "vae").resolve()]
    (tmp_path / "m" / "vae" / "wan").mkdir(parents=True)
    for name in ("z_other.safetensors", "wan_2.1_vae_bf16.safetensors", "wan_2.1_vae.pth"):
        (tmp_path / "m" / "vae" / "wan" / name).write_bytes(b"x")
    assert mf.find_single_file("vae", ("wan_2.1_vae*",)).name == "wan_2.1_vae_bf16.safetensors"
    assert mf.find_single_file("vae", ("nothing*",)) is None
    fake = types.SimpleNamespace(get_folder_paths=lambda name: [str(tmp_path / "comfy" / name)])
    monkeypatch.setitem(sys.modules, "folder_paths", fake)  # inside ComfyUI: its folders, not the pack's
    assert mf.single_file_roots("clip_vision") == [tmp_path / "comfy" / "clip_vision"]
    assert mf.find_single_file("vae", ("wan_2.1_vae*",)) is None
    with pytest.raises(ValueError, match="single-file folder"):
        mf.single_file_roots("checkpoints")


def test_fun_layout_takes_umt5_and_clip_from_comfyui_folders(tmp_path, monkeypatch):
    import shutil

    from gen4d.backends.tiny import build_tiny
    from gen4d.backends.video_inpaint_fun import find_fun_inp_layout

    monkeypatch.setitem(sys.modules, "folder_paths", None)
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(tmp_path / "models"))
    folder = build_tiny("video_inpaint_wan_fun", tmp_path / "src", seed=1)
    release = find_fun_inp_layout(folder)
    _, text = load_umt5(release.t5, release.tokenizer, torch.float32)
    clip = load_wan_clip(release.clip, torch.float32)
    (tmp_path / "models" / "text_encoders").mkdir(parents=True)
    (tmp_path / "models" / "clip_vision").mkdir(parents=True)
    t5_state = {k: v.to(torch.float16) for k, v in text.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(tmp_path / "models" / "text_encoders" / "umt5_xxl_fp16.safetensors"))
    clip_state = {k if k.startswith("vision_model.") else "vision_model." + k: v.to(torch.float16)
                  for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
    save_file(clip_state, str(tmp_path / "models" / "clip_vision" / "clip_vision_h.safetensors"))
    release.t5.unlink()
    release.clip.unlink()

    layout = find_fun_inp_layout(folder)
    assert layout.t5.name == "umt5_xxl_fp16.safetensors" and layout.clip.name == "clip_vision_h.safetensors"
    _, text2 = load_umt5(layout.t5, layout.tokenizer, torch.float32)
    clip2 = load_wan_clip(layout.clip, torch.float32)
    ids = torch.tensor([[4, 7, 1]])
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(text2(input_ids=ids).last_hidden_state,
                           text.half().float()(input_ids=ids).last_hidden_state)
        assert torch.equal(clip2(pixel_values=x).last_hidden_state,
                           clip.half().float()(pixel_values=x).last_hidden_state)

    # a diffusers text_encoder/ beside the base comes before ComfyUI's folder
    text.save_pretrained(layout.base / "text_encoder", safe_serialization=True)
    assert find_fun_inp_layout(folder).t5 == layout.base / "text_encoder"
    shutil.rmtree(layout.base / "text_encoder")
    (tmp_path / "models" / "text_encoders" / "umt5_xxl_fp16.safetensors").unlink()
    with pytest.raises(ValueError, match="models/text_encoders"):
        find_fun_inp_layout(folder)
