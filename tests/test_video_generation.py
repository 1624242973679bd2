# SPDX-License-Identifier: Apache-2.0
"""Video generation backend (Wan2.1 I2V, CogVideoX T2V / I2V, SVD) through Gen4D_VideoModelLoader and
Gen4D_I2VReference, on tiny random weights.

Each tiny pipeline is built from configs with a locally made tokenizer, saved with ``save_pretrained``
into ``models/diffusers`` and loaded back through the loader node; nothing comes from a hub.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from gen4d.backends import video_generation as backend
from gen4d.backends.tiny import build_tiny
from gen4d.nodes import video as nodes

pytestmark = pytest.mark.usefixtures("one_thread")

# family -> (tiny kind, stage-node size inputs, expected [T,H,W]); PINNED: frames[-1, -1, -2:, :] at seed 3
CASES = {
    "wan_i2v": ("video_wan_i2v", dict(num_frames=5, width=32, height=32), (5, 32, 32)),
    "cogvideox_t2v": ("video_cogvideox_t2v", dict(num_frames=0, width=0, height=0), (9, 16, 16)),
    "cogvideox_i2v": ("video_cogvideox_i2v", dict(num_frames=9, width=16, height=16), (9, 16, 16)),
    "svd": ("video_svd", dict(num_frames=3, width=32, height=32), (3, 32, 32)),
}
PINNED = {
    "wan_i2v": [0.62441, 0.54923, 0.37815, 0.57329, 0.51709, 0.37365],
    "cogvideox_t2v": [0.59404, 0.48777, 0.47911, 0.56808, 0.5062, 0.47582],
    "cogvideox_i2v": [0.53227, 0.44164, 0.47161, 0.47948, 0.4631, 0.48576],
    "svd": [0.68534, 0.39301, 0.51767, 0.6533, 0.35582, 0.49668],
}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """``$GEN4D_MODELS_DIR`` with every tiny video model under ``diffusers/``; hub access switched off."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        for kind, *_ in CASES.values():
            build_tiny(kind, root / "diffusers", seed=0)
        nodes.clear_cache()
        yield root
        nodes.clear_cache()


@pytest.fixture(scope="module")
def image():
    """A smooth 40x52 test picture (not square: exercises the centre crop)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 52), indexing="ij")
    return torch.stack([x, y, 0.5 + 0.5 * torch.sin(6 * x * y)], -1)[None].clamp(0, 1)


def _load(name, **kw):
    return nodes.VideoModelLoader().load(f"{name}-tiny", kw.get("device", "cpu"), "auto", "after_use")[0]


def _run(model, family, image, seed=3, **over):
    args = dict(CASES[family][1])
    args.update(over)
    args.setdefault("fps", 0.0)
    return nodes.I2VReference().generate(model, "a cat walks on the scene", "", steps=2,
                                         guidance_scale=3.0, seed=seed,
                                         image=None if family == "cogvideox_t2v" else image, **args)


@pytest.mark.parametrize("family", list(CASES))
def test_end_to_end(models_dir, image, family):
    kind, _, shape = CASES[family]
    assert f"{kind}-tiny" in nodes.VideoModelLoader.INPUT_TYPES()["required"]["model"][0]
    model = _load(kind)
    assert model.generator.family == family
    frames, fps = _run(model, family, image)
    assert tuple(frames.shape) == (*shape, 3)
    assert frames.dtype == torch.float32 and frames.device.type == "cpu"
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    assert frames.std() > 1e-3, "the video is constant"
    assert fps == model.generator.native()[3]
    pinned = torch.tensor(PINNED[family])
    got = frames[-1, -1, -2:, :].flatten()
    assert torch.allclose(got, pinned, atol=2e-4), [round(v, 5) for v in got.tolist()]
    again, _ = _run(model, family, image)
    assert torch.equal(frames, again), "same seed, different video"
    other, _ = _run(model, family, image, seed=4)
    assert not torch.allclose(frames, other), "the seed has no effect"
    assert _load(kind).generator is model.generator, "the pipeline was loaded again"
    assert next(model.generator.pipe.vae.parameters()).device.type == "cpu"


def test_image_policy_center_crop():
    img = torch.zeros(20, 40, 3)
    img[:, 10:30] = 1.0  # a white centre square of 20x20 in a wide picture
    out = backend.prepare_image(img, 16, 16)
    assert out.size == (16, 16)
    assert min(out.getdata())[0] == 255, "a square target must keep only the centre square"
    tall = backend.prepare_image(torch.rand(30, 10, 3), 8, 16)
    assert tall.size == (8, 16)


def test_fps_output_and_sizes(models_dir, image):
    model = _load("video_svd")
    frames, fps = _run(model, "svd", image, fps=12.0, width=30, height=30, num_frames=2)
    assert fps == 12.0 and tuple(frames.shape) == (2, 24, 24, 3)  # rounded down to the multiple of 8
    wan = _load("video_wan_i2v")
    assert wan.generator.resolve_size(40, 33, 6) == (32, 32, 5)


def test_bad_inputs(models_dir, image):
    wan = _load("video_wan_i2v")
    with pytest.raises(ValueError, match=r"image.*C in \(3,\)"):
        _run(wan, "wan_i2v", image[..., :2])
    with pytest.raises(ValueError, match="image-to-video model; connect an image"):
        nodes.I2VReference().generate(wan, "x", "", 5, 0.0, 2, 3.0, 32, 32, 0, image=None)
    with pytest.raises(ValueError, match="too small"):
        _run(wan, "wan_i2v", image[:, :4, :4])
    with pytest.raises(ValueError, match="GEN4D_VIDEO_MODEL"):
        nodes.I2VReference().generate(object(), "x", "", 5, 0.0, 2, 3.0, 32, 32, 0, image=image)
    with pytest.raises(ValueError, match="device must be one of"):
        nodes.VideoModelLoader().load("video_wan_i2v-tiny", "gpu7", "auto", "after_use")


def _broken_copy(models_dir, name):
    src = models_dir / "diffusers" / "video_cogvideox_t2v-tiny"
    dst = models_dir / "diffusers" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def test_broken_folders(models_dir):
    assert nodes.VideoModelLoader.VALIDATE_INPUTS(None) is True
    assert "not found" in nodes.VideoModelLoader.VALIDATE_INPUTS("nothing-here")
    with pytest.raises(ValueError, match="no video model selected.*diffusers"):
        nodes.VideoModelLoader().load(backend_no_models(), "cpu", "auto", "after_use")

    folder = _broken_copy(models_dir, "no-index")
    (folder / "model_index.json").unlink()
    message = nodes.VideoModelLoader.VALIDATE_INPUTS("no-index")
    assert "missing" in message and "model_index.json" in message

    folder = _broken_copy(models_dir, "no-config")
    (folder / "transformer" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"missing \['transformer/config.json'\]"):
        nodes.VideoModelLoader().load("no-config", "cpu", "auto", "after_use")

    folder = _broken_copy(models_dir, "truncated")
    weights = next((folder / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"vae.*truncated safetensors.*diffusion_pytorch_model"):
        nodes.VideoModelLoader().load("truncated", "cpu", "auto", "after_use")

    folder = _broken_copy(models_dir, "garbage")
    weights = next((folder / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="text_encoder: corrupt safetensors"):
        nodes.VideoModelLoader().load("garbage", "cpu", "auto", "after_use")

    folder = _broken_copy(models_dir, "unknown-class")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "TextToVideoSDPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="TextToVideoSDPipeline.*supported pipelines"):
        nodes.VideoModelLoader().load("unknown-class", "cpu", "auto", "after_use")


def backend_no_models():
    from gen4d.backends.model_folders import NO_MODELS

    return NO_MODELS


def test_progress_and_interrupt(models_dir, image, fake_comfy):
    generator = backend.load_video_generator(models_dir / "diffusers" / "video_cogvideox_t2v-tiny")
    model = nodes.VideoModel(generator, "auto", "after_use")  # device looked up in (fake) ComfyUI at run time
    frames, _ = nodes.I2VReference().generate(model, "a dog runs", "", 9, 0.0, 3, 3.0, 16, 16, 0)
    assert tuple(frames.shape) == (9, 16, 16, 3)
    assert [u[:2] for u in fake_comfy.updates] == [(1, 3), (2, 3), (3, 3)]
    fake_comfy.updates.clear()
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        nodes.I2VReference().generate(model, "a dog runs", "", 9, 0.0, 3, 3.0, 16, 16, 0)
    assert len(fake_comfy.updates) == 1, "the node kept denoising after the interrupt"
