# SPDX-License-Identifier: Apache-2.0
"""Native-socket adaptors (backends.comfy_native, nodes.native).

Without ComfyUI: the socket checks on stand-ins shaped like ComfyUI's objects (a ModelPatcher whose
``.model`` is of a class named as ComfyUI's, with its detected ``model_config.unet_config``, latent
format and diffusion model; a VAE with ``latent_channels`` / ``latent_dim``; CONDITIONING as
``[[tensor, dict]]``), and the eq. 7 start arithmetic. With ``COMFYUI_PATH`` (and ``COMFYUI_PYTHON``):
tests/comfy_native_check.py builds ComfyUI's own model objects at tiny sizes and runs the adaptors
through the outpaint inpainting step, ViSM hole filling and the Stable Zero123 static fit, and
tests/comfy_native_graph_check.py queues whole graphs (core loaders -> adaptor nodes -> stage nodes)
through ComfyUI's own prompt validation and executor, good ones and ones with a wrong model, VAE,
text encoder or CLIP vision model.
"""

from __future__ import annotations

import pytest
import torch
from comfy_host import needs_comfyui, run_check
from gen4d.backends.comfy_native import (
    NativeImageInpainter,
    NativeVideoInpainter,
    check_zero123_inputs,
    describe_model,
    eq7_noise,
)
from gen4d.nodes.native import NativeInpaintModel, NativeVideoInpaintModel


def _named(name: str, base=object):
    return type(name, (base,), {})


BaseModel = _named("BaseModel")
WAN21 = _named("WAN21", BaseModel)
WAN21_Vace = _named("WAN21_Vace", WAN21)


class _Latent:
    def __init__(self, channels):
        self.latent_channels = channels


class _Patcher:
    def __init__(self, model_cls, config_name, unet_config, channels, diffusion_model=None):
        self.model = model_cls()
        self.model.model_config = _named(config_name)()
        self.model.model_config.unet_config = unet_config
        self.model.latent_format = _Latent(channels)
        self.model.diffusion_model = diffusion_model or torch.nn.Module()


class _VAE:
    def __init__(self, channels, dims, network_module=None):
        self.latent_channels, self.latent_dim = channels, dims
        if network_module is not None:  # ComfyUI's VAE keeps its network as first_stage_model
            self.first_stage_model = type("Network", (), {"__module__": network_module})()

    def encode(self, pixels):
        raise AssertionError("a refused input must fail before any encoding")


def _wan_vace():
    net = torch.nn.Module()
    net.text_embedding = torch.nn.Sequential(torch.nn.Linear(4096, 8))
    return _Patcher(WAN21_Vace, "WAN21_Vace", {"model_type": "vace", "in_dim": 16}, 16, net)


def _sd15(in_channels=9):
    return _Patcher(BaseModel, "SD15", {"context_dim": 768, "in_channels": in_channels}, 4)


def _cond(width):
    return [[torch.zeros(1, 8, width), {}]]


def test_families_are_read_from_comfy_model_classes():
    assert describe_model(_wan_vace())[0] == "wan_vace"
    assert describe_model(_sd15())[0] == "sd1"
    inp = _Patcher(WAN21, "WAN21_I2V", {"model_type": "i2v", "in_dim": 36}, 16)
    assert describe_model(inp)[0] == "wan_inp"
    assert describe_model(_Patcher(WAN21, "WAN21_T2V", {"model_type": "t2v", "in_dim": 16}, 16))[0] == "wan"


def test_video_adaptor_refuses_wrong_model_vae_and_text_encoder_naming_the_socket():
    node = NativeVideoInpaintModel()
    with pytest.raises(ValueError, match=r"Gen4D_NativeVideoInpaintModel: model: .*SD15.*Wan 2.1 VACE"):
        node.build(_sd15(), _VAE(4, 2), _cond(768), _cond(768))
    with pytest.raises(ValueError, match=r"vae: .*image VAE with 4 latent channels.*Wan 2.1 VAE"):
        node.build(_wan_vace(), _VAE(4, 2), _cond(4096), _cond(4096))
    with pytest.raises(ValueError, match=r"vae: .*comfy\.ldm\.cosmos\.vae.*16-channel.*Wan 2.1 VAE"):
        node.build(_wan_vace(), _VAE(16, 3, "comfy.ldm.cosmos.vae"), _cond(4096), _cond(4096))
    node.build(_wan_vace(), _VAE(16, 3, "comfy.ldm.wan.vae"), _cond(4096), _cond(4096))
    with pytest.raises(ValueError, match=r"positive: .*width 768.*umt5"):
        node.build(_wan_vace(), _VAE(16, 3), _cond(768), _cond(4096))
    with pytest.raises(ValueError, match=r"negative: .*CONDITIONING"):
        node.build(_wan_vace(), _VAE(16, 3), _cond(4096), "a prompt")
    with pytest.raises(ValueError, match=r"model: expected a ComfyUI MODEL"):
        node.build(object(), _VAE(16, 3), _cond(4096), _cond(4096))
    handle = node.build(_wan_vace(), _VAE(16, 3), _cond(4096), _cond(4096))[0]
    assert isinstance(handle, NativeVideoInpainter) and handle.family == "wan_vace"


def test_image_adaptor_refuses_wrong_model_and_text_encoder():
    node = NativeInpaintModel()
    with pytest.raises(ValueError, match=r"model: .*WAN21_Vace.*Stable Diffusion"):
        node.build(_wan_vace(), _VAE(16, 3), _cond(4096), _cond(4096))
    with pytest.raises(ValueError, match=r"vae: .*video VAE with 16"):
        node.build(_sd15(), _VAE(16, 3), _cond(768), _cond(768))
    with pytest.raises(ValueError, match=r"positive: .*width 1024.*768"):
        node.build(_sd15(), _VAE(4, 2), _cond(1024), _cond(768))
    sdxl = _Patcher(_named("SDXL", BaseModel), "SDXL", {"context_dim": 2048, "in_channels": 4}, 4)
    with pytest.raises(ValueError, match=r"positive: conditioning has no 'pooled_output'"):
        node.build(sdxl, _VAE(4, 2), _cond(2048), _cond(2048))
    assert isinstance(node.build(_sd15(), _VAE(4, 2), _cond(768), _cond(768))[0], NativeImageInpainter)


def test_zero123_adaptor_refuses_a_clip_vision_of_another_width():
    zero = _Patcher(_named("Stable_Zero123", BaseModel), "Stable_Zero123", {"context_dim": 768, "in_channels": 8}, 4)
    zero.model.cc_projection = torch.nn.Linear(772, 768)

    class _ClipVision:
        def __init__(self, width):
            self.model = torch.nn.Module()
            self.model.visual_projection = torch.nn.Linear(32, width, bias=False)

        def encode_image(self, image):
            raise AssertionError("a refused input must fail before any encoding")

    with pytest.raises(ValueError, match=r"N: clip_vision: .*1024-wide image embeddings.*takes 768"):
        check_zero123_inputs("N", zero, _ClipVision(1024), _VAE(4, 2))
    check_zero123_inputs("N", zero, _ClipVision(768), _VAE(4, 2))
    with pytest.raises(ValueError, match=r"N: model: .*SD15.*Stable Zero123"):
        check_zero123_inputs("N", _sd15(), _ClipVision(768), _VAE(4, 2))


def test_eq7_noise_makes_comfys_flow_start_equal_the_paste_level():
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(1, 16, 2, 3, 3, generator=g), torch.randn(1, 16, 2, 3, 3, generator=g)
    paste = torch.zeros(2, 3, 3, dtype=torch.bool)
    paste[:, 1:, :2] = True
    sigma, level = 0.7, 0.5
    start = sigma * eq7_noise(noise, clean, sigma, paste, level) + (1 - sigma) * clean   # ComfyUI's noise_scaling
    want_paste = (1 - level) * clean + level * noise
    want_rest = (1 - sigma) * clean + sigma * noise
    assert torch.allclose(start[..., paste], want_paste[..., paste], atol=1e-6)
    assert torch.allclose(start[..., ~paste], want_rest[..., ~paste], atol=1e-6)
    assert torch.equal(eq7_noise(noise, clean, sigma, None, level), noise)


@needs_comfyui("to run the adaptors on ComfyUI's own models")
def test_adaptors_on_comfys_own_models(tmp_path):
    r = run_check("comfy_native_check.py", tmp_path, timeout=900)
    assert r["wan_family"] == ["WAN21_Vace", "vace"]          # ComfyUI's loader detected the tiny file
    for case in ("sd_model_into_video", "sd_vae_into_video", "clip_text_into_video", "wan_into_image",
                 "umt5_into_image", "sd_into_zero123"):
        assert r[case]["raised"] and r[case]["names"], (case, r[case])
    for stage in ("outpaint", "vism"):
        assert r[stage]["shape"] == [5, 32, 32, 3] and r[stage]["known_exact"] and r[stage]["finite"], r[stage]
    assert r["outpaint"]["holes_changed"] > 1e-3
    assert r["outpaint"]["start_sigma"] <= 0.7 and r["outpaint"]["first"] < 8
    assert [s for s, _ in r["vism"]["steps"]] == [1, 2, 3]
    assert r["sds_grad"]["finite"] and r["sds_grad"]["grad_abs"] > 0
    assert r["fit"] == {"steps": 3, "finite": True, "moved": True}


@needs_comfyui("to queue native-model graphs in ComfyUI")
def test_native_graphs_run_through_comfys_executor(tmp_path):
    """Core loaders -> adaptor nodes -> outpaint / ViSM / static-fit nodes, validated and executed by ComfyUI."""
    r = run_check("comfy_native_graph_check.py", tmp_path, timeout=900)
    for name in ("outpaint", "vism", "zero123"):
        assert r[name].get("success"), (name, r[name].get("crashed") or r[name].get("error"), r[name].get("traceback"))
        assert r[name]["calls"]["sample"] > 0 and r[name]["calls"]["apply_model"] > 0, (name, r[name]["calls"])

    outpaint = r["outpaint"]
    for loader in ("UNETLoader", "VAELoader", "Gen4D_NativeVideoInpaintModel", "Gen4D_NativeInpaintModel",
                   "Gen4D_NativeSDGuidance", "Gen4D_ProgressiveOutpaint"):
        assert loader in outpaint["started"], (loader, outpaint["started"])
    assert outpaint["image"]["shape"] == [5, 32, 32, 3] and outpaint["image"]["finite"]
    assert outpaint["scene"]["parts"] == ["background"] and outpaint["scene"]["finite"]
    assert outpaint["scene"]["frames"] == 5 and outpaint["scene"]["gaussians"] > 0
    assert "loop 1 pose 1" in outpaint["text"]
    calls = outpaint["video_calls"]
    assert calls and all(c["family"] == "wan_vace" and c["paste"] for c in calls), calls
    assert outpaint["sds_calls"] and all(c["finite"] and c["requires_grad"] for c in outpaint["sds_calls"])

    vism = r["vism"]
    assert "LoraLoaderModelOnly" in vism["started"] and "Gen4D_ViSMRender" in vism["started"]
    assert vism["image"]["shape"] == [5, 32, 32, 3] and vism["image"]["finite"]
    assert 0 < vism["hole_fraction"] < 1 and vism["known_kept"] and vism["holes_changed"] > 1e-3
    calls += vism["video_calls"]
    assert [c["family"] for c in vism["video_calls"]] == ["wan_inp"]
    assert vism["video_calls"][0]["model_patches"] > 0, "the LoRA's patches did not reach the sampled MODEL"
    for c in calls:   # every video-inpainting call: shape kept, finite, known pixels exact, holes changed
        assert c["shape_out"] == c["shape_in"] and c["finite"] and c["known_kept"], c
        assert c["holes"] > 0 and c["holes_changed"] > 1e-3, c

    fit = r["zero123"]
    assert "Gen4D_NativeZero123Guidance" in fit["started"] and fit["gaussians"]["finite"] and fit["gaussians"]["moved"]
    sds = fit["sds_calls"]
    assert len(sds) == 3 and all(c["kind"] == "NativeZero123Guidance" and c["finite"] and c["requires_grad"]
                                 for c in sds), sds

    expected = {   # case: (adaptor node, words its error must contain)
        "sd_model_into_video": ("Gen4D_NativeVideoInpaintModel", ["model:", "SD15", "Wan 2.1 VACE"]),
        "sd_vae_with_wan": ("Gen4D_NativeVideoInpaintModel", ["vae:", "image VAE", "Wan 2.1 VAE"]),
        "clip_text_into_wan": ("Gen4D_NativeVideoInpaintModel", ["positive:", "width 768", "umt5", "4096"]),
        "umt5_text_into_sd_inpainter": ("Gen4D_NativeInpaintModel", ["negative:", "width 4096", "768"]),
        "sd_model_into_zero123": ("Gen4D_NativeZero123Guidance", ["model:", "SD15", "Stable Zero123"]),
        "wrong_clip_vision_for_zero123": ("Gen4D_NativeZero123Guidance", ["clip_vision:", "1024", "768"]),
    }
    assert set(r["bad"]) == set(expected)
    for case, (adaptor, words) in expected.items():
        got = r["bad"][case]
        assert got["validated"] and not got["success"], (case, got)
        assert got["error_node"] == adaptor and got["error"].startswith(f"{adaptor}: "), (case, got["error"])
        assert all(w in got["error"] for w in words), (case, words, got["error"])
        assert got["calls"] == {"sample": 0, "apply_model": 0}, (case, "sampling started", got["calls"])
        assert got["started"][-1] == adaptor, (case, "a node ran after the refused adaptor", got["started"])
