# SPDX-License-Identifier: Apache-2.0
"""Image (SD inpainting) and video (Wan VACE) inpainting on tiny random weights, through the nodes.

The tiny folders are written by the tiny builders (``backends.tiny``) with ``save_pretrained`` and loaded back by
the loader nodes, offline, so the folder checks and loading code are the ones real weights use.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from gen4d.backends.model_folders import list_models
from gen4d.backends.tiny import build_tiny
from gen4d.backends.wan import start_step
from gen4d.nodes.inpaint import Inpaint, InpaintModelLoader, VideoInpaint, VideoInpaintModelLoader

SD, VACE = "inpaint_sd-tiny", "video_inpaint_wan_vace-tiny"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Two shared cores: one torch thread."""


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        build_tiny("inpaint_sd", root / "diffusers", seed=0)
        build_tiny("video_inpaint_wan_vace", root / "diffusers", seed=0)
        yield root


@pytest.fixture(scope="module")
def image_model(models_dir):
    return InpaintModelLoader().load(SD, "cpu", "fp32")[0]


@pytest.fixture(scope="module")
def video_model(models_dir):
    model = VideoInpaintModelLoader().load(VACE, "cpu", "fp32")[0]
    model.max_sequence_length = 16  # the tiny text encoder; Wan uses 512
    return model


def _images(batch=2, h=30, w=44, seed=0):
    return torch.rand(batch, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _masks(batch, h, w):
    m = torch.zeros(batch, h, w)
    m[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    return m


def test_pickers_and_loader_cache(models_dir, image_model):
    assert SD in list_models("inpaint") and VACE in list_models("video_inpaint")
    assert InpaintModelLoader().load(SD, "cpu", "fp32")[0] is image_model  # cached, not reloaded
    assert InpaintModelLoader.VALIDATE_INPUTS(SD) is True
    assert "not found" in InpaintModelLoader.VALIDATE_INPUTS("missing-model")


def test_image_inpaint_node(image_model):
    images, masks = _images(), _masks(2, 30, 44)
    run = lambda seed: Inpaint().inpaint(image_model, images, masks, "a photo of a cat", "", 1.0, 3, 5.0, seed)[0]  # noqa: E731
    out = run(0)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    keep = masks == 0
    assert torch.equal(out[keep], images[keep])  # unmasked pixels exactly kept
    assert (out[~keep] - images[~keep]).abs().mean() > 0.05  # the hole was filled
    assert torch.equal(out, run(0))
    assert not torch.equal(out, run(1))
    torch.testing.assert_close(out[0, 12, 14:17, 0], torch.tensor(PINNED_IMAGE), atol=1e-4, rtol=0)


def test_video_inpaint_node(video_model):
    frames, masks = _images(5, 24, 40, seed=3), _masks(5, 24, 40)
    run = lambda s, seed=0: VideoInpaint().inpaint(video_model, frames, masks, "a photo of a cat", "", s, 6, 5.0,  # noqa: E731
                                                   seed)[0]
    out = run(0.7)
    assert out.shape == frames.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    keep = masks == 0
    assert torch.equal(out[keep], frames[keep])
    assert torch.equal(out, run(0.7))
    assert (out - run(1.0)).abs().max() > 1e-3  # partial noise is not pure noise
    assert torch.equal(run(0.0), frames)  # no noise, no change
    torch.testing.assert_close(out[2, 12, 14:17, 0], torch.tensor(PINNED_VIDEO), atol=1e-4, rtol=0)


def test_partial_noise_starts_from_the_frames(video_model, monkeypatch):
    """Less noise, less seed dependence: the run starts from the frames' latents (CoCo4D eq. 7)."""
    vae = video_model.pipe.vae
    seen: dict[str, torch.Tensor] = {}
    decode = vae.decode

    def rec_decode(z, *a, **k):
        seen["final"] = z
        return decode(z, *a, **k)

    monkeypatch.setattr(vae, "decode", rec_decode)
    frames, masks = _images(5, 24, 40, seed=3), _masks(5, 24, 40)
    gaps = {}
    for strength in (0.2, 0.5, 1.0):
        spread = []
        for seed in (0, 1):
            seen.clear()
            video_model.inpaint(frames, masks, "a cat", "", strength, 10, 1.0, seed)
            spread.append(seen["final"])
        gaps[strength] = (spread[0] - spread[1]).norm() / spread[0].norm()
    # with little noise two seeds end close together; from pure noise they do not
    assert gaps[0.2] < gaps[0.5] < gaps[1.0]
    assert start_step(10, 0.7) == 3 and start_step(10, 1.0) == 0 and start_step(10, 0.0) == 10


def test_progress_and_interrupt(image_model, fake_comfy):
    images, masks = _images(1), _masks(1, 30, 44)
    Inpaint().inpaint(image_model, images, masks, "a cat", "", 1.0, 3, 5.0, 0)
    assert [u[0] for u in fake_comfy.updates] == [1, 2, 3]
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        Inpaint().inpaint(image_model, images, masks, "a cat", "", 1.0, 3, 5.0, 0)


def test_bad_inputs(image_model, video_model):
    with pytest.raises(ValueError, match="C in"):
        Inpaint().inpaint(image_model, torch.rand(1, 16, 16, 2), torch.ones(1, 16, 16), "x")
    with pytest.raises(ValueError, match="does not match the image size"):
        Inpaint().inpaint(image_model, torch.rand(1, 16, 16, 3), torch.ones(1, 8, 8), "x")
    with pytest.raises(ValueError, match="3 masks for 5 images"):
        VideoInpaint().inpaint(video_model, torch.rand(5, 16, 16, 3), torch.ones(3, 16, 16), "x")
    with pytest.raises(ValueError, match="3 masks for 5 frames"):
        video_model.inpaint(torch.rand(5, 16, 16, 3), torch.ones(3, 16, 16), "x")
    with pytest.raises(ValueError, match="strength"):
        image_model.inpaint(torch.rand(16, 16, 3), torch.ones(16, 16), "x", strength=1.5)


def test_broken_folders(models_dir, tmp_path):
    for name, loader in ((SD, InpaintModelLoader), (VACE, VideoInpaintModelLoader)):
        broken = tmp_path / f"{name}-no-index"
        shutil.copytree(models_dir / "diffusers" / name, broken)
        (broken / "model_index.json").unlink()
        with pytest.raises(ValueError, match="missing.*model_index.json"):
            loader().load(str(broken), "cpu", "fp32")
    truncated = tmp_path / "truncated"
    shutil.copytree(models_dir / "diffusers" / SD, truncated)
    weights = next((truncated / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated safetensors.*unet"):
        InpaintModelLoader().load(str(truncated), "cpu", "fp32")
    missing = tmp_path / "missing-part"
    shutil.copytree(models_dir / "diffusers" / VACE, missing)
    shutil.rmtree(missing / "transformer")
    with pytest.raises(ValueError, match="transformer/config.json"):
        VideoInpaintModelLoader().load(str(missing), "cpu", "fp32")
    with pytest.raises(ValueError, match="WanVACEPipeline"):
        VideoInpaintModelLoader().load(str(models_dir / "diffusers" / SD), "cpu", "fp32")


PINNED_IMAGE = [0.48765, 0.49212, 0.30456]
PINNED_VIDEO = [0.74854, 0.75814, 0.76435]
