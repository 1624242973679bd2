# SPDX-License-Identifier: Apache-2.0
"""Video generation backend (Wan2.1 I2V, CogVideoX T2V / I2V, SVD) through Gen4D_VideoModelLoader and
Gen4D_I2VReference, on tiny random weights.

Each tiny pipeline is built from configs with a locally made tokenizer, saved with ``save_pretrained``
into ``models/diffusers`` and loaded back through the loader node; nothing comes from a hub.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from gen4d.backends import video_generation as backend
from gen4d.backends.tiny import build_tiny
from gen4d.nodes import video as nodes
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

# family -> (tiny kind, stage-node size inputs, expected [T,H,W])
CASES = {
    "wan_i2v": ("video_wan_i2v", dict(num_frames=5, width=32, height=32), (5, 32, 32)),
    "cogvideox_t2v": ("video_cogvideox_t2v", dict(num_frames=0, width=0, height=0), (9, 16, 16)),
    "cogvideox_i2v": ("video_cogvideox_i2v", dict(num_frames=9, width=16, height=16), (9, 16, 16)),
    "svd": ("video_svd", dict(num_frames=3, width=32, height=32), (3, 32, 32)),
}
PROMPT = "a cat walks on the scene"


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
    return nodes.I2VReference().generate(model, PROMPT, "", steps=2,
                                         guidance_scale=3.0, seed=seed,
                                         image=None if family == "cogvideox_t2v" else image, **args)


# --------------------------------------------------------------------------- independent references
#
# Each pipeline is read straight from its tiny folder with diffusers (the Wan transformer, whose fp32-kept modules
# diffusers will not load without ``accelerate``, from its config and safetensors) and called with arguments
# written out here: the resolved sizes, the condition image cropped and resized by hand, Wan's prompt encoded by
# hand, the seed's CPU generator. Both sides run the same diffusers release, so they agree whatever it computes.

def _hand_condition_image(image, width, height):
    """The documented image policy, by hand: the largest centred window of aspect ``width / height``, resized with
    PIL's (antialiased) bilinear filter in float, then rounded to 8 bits."""
    h, w = image.shape[:2]
    if w * height > h * width:  # wider than the target: keep the full height
        ch, cw = h, round(h * width / height)
    else:
        ch, cw = round(w * height / width), w
    top, left = (h - ch) // 2, (w - cw) // 2
    window = image[top : top + ch, left : left + cw].float()
    channels = [np.asarray(Image.fromarray(window[..., c].numpy(), mode="F").resize((width, height), Image.BILINEAR))
                for c in range(3)]
    pixels = np.clip(np.stack(channels, -1), 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(pixels).astype(np.uint8), mode="RGB")


def _read_pipeline(folder):
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    overrides = {}
    if index["_class_name"].startswith("Wan"):
        from safetensors.torch import load_file

        cls = diffusers.WanTransformer3DModel
        transformer = cls.from_config(cls.load_config(str(folder / "transformer")))
        state = {}
        for file in sorted((folder / "transformer").glob("*.safetensors")):
            state.update(load_file(str(file)))
        transformer.load_state_dict(state, strict=True)
        overrides["transformer"] = transformer.eval()
    pipe = getattr(diffusers, index["_class_name"]).from_pretrained(str(folder), **overrides)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _wan_embeds(pipe, text, length):
    tokens = pipe.tokenizer([text], padding="max_length", max_length=length, truncation=True,
                            return_attention_mask=True, return_tensors="pt")
    hidden = pipe.text_encoder(tokens.input_ids, tokens.attention_mask).last_hidden_state
    return hidden * tokens.attention_mask[..., None]


def _reference_video(folder, family, image, size, seed, steps=2, guidance_scale=3.0, fps=7):
    """``[T,H,W,3]`` frames of ``size`` = (frames, height, width) straight from the diffusers pipeline."""
    pipe = _read_pipeline(folder)
    frames, height, width = size
    args = dict(num_frames=frames, height=height, width=width, num_inference_steps=steps, output_type="np",
                generator=torch.Generator().manual_seed(seed))
    if family != "cogvideox_t2v":
        args["image"] = _hand_condition_image(image[0], width, height)
    with torch.inference_mode():
        if family == "svd":  # guidance ramps 1 -> scale over the frames; the frame rate conditions it
            args.update(min_guidance_scale=1.0, max_guidance_scale=guidance_scale, fps=fps, decode_chunk_size=8)
        elif family == "wan_i2v":
            length = pipe.tokenizer.model_max_length
            args.update(prompt_embeds=_wan_embeds(pipe, PROMPT, length), guidance_scale=guidance_scale,
                        negative_prompt_embeds=_wan_embeds(pipe, "", length), max_sequence_length=length)
        else:
            args.update(prompt=PROMPT, negative_prompt="", guidance_scale=guidance_scale,
                        max_sequence_length=pipe.transformer.config.max_text_seq_length)
        out = pipe(**args).frames[0]
    return torch.from_numpy(np.asarray(out)).float().clamp(0, 1)


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
    # Against the pipeline called by hand: identical up to ~1e-6 in practice (Wan's prompt states are zeroed
    # past the prompt by a product here, by torch.where in ours). Breaks measured (smallest family): the image
    # stretched instead of cropped 7e-3, the seed ignored 0.25, the prompt dropped 0.015, guidance off 0.01.
    expected = _reference_video(models_dir / "diffusers" / f"{kind}-tiny", family, image, shape, seed=3)
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=0)
    if family != "cogvideox_t2v":
        mirrored, _ = _run(model, family, image.flip(2))
        assert (mirrored - frames).abs().max() > 1e-3, "the condition image has no effect"
    again, _ = _run(model, family, image)
    assert torch.equal(frames, again), "same seed, different video"
    other, _ = _run(model, family, image, seed=4)
    assert not torch.allclose(frames, other), "the seed has no effect"
    assert _load(kind).generator is model.generator, "the pipeline was loaded again"
    assert next(model.generator.pipe.vae.parameters()).device.type == "cpu"


@pytest.mark.parametrize("width, height", [(32, 32), (16, 8), (8, 16), (24, 16), (52, 40)])
def test_image_policy_matches_a_hand_crop_and_pil_resize(image, width, height):
    ours = np.asarray(backend.prepare_image(image[0], width, height)).astype(int)
    expected = np.asarray(_hand_condition_image(image[0], width, height)).astype(int)
    assert ours.shape == (height, width, 3)
    # identical in practice; one 8-bit level of slack for a float resize landing on .5 on either side
    assert np.abs(ours - expected).max() <= 1 and (ours != expected).mean() < 0.01


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
    seen = []  # the micro-conditioning [fps (offset by the pipeline), motion bucket, noise level] the UNet gets
    hook = model.generator.pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_time_ids"][0].clone()), with_kwargs=True)
    try:
        frames, fps = _run(model, "svd", image, fps=12.0, width=30, height=30, num_frames=2)
        n = len(seen)
        _run(model, "svd", image, fps=0.0, width=30, height=30, num_frames=2)  # native: 7 fps
    finally:
        hook.remove()
    assert fps == 12.0 and tuple(frames.shape) == (2, 24, 24, 3)  # rounded down to the multiple of 8
    # the frame rate reaches SVD's conditioning (its effect on the tiny UNet's output is only ~1e-5)
    assert float(seen[0][0] - seen[n][0]) == 12 - 7 and torch.equal(seen[0][1:], seen[n][1:])
    expected = _reference_video(models_dir / "diffusers" / "video_svd-tiny", "svd", image, (2, 24, 24), seed=3, fps=12)
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=0)
    wan = _load("video_wan_i2v")
    assert wan.generator.resolve_size(40, 33, 6) == (32, 32, 5)


def test_bad_inputs(models_dir, image):
    wan = _load("video_wan_i2v")
    with pytest.raises(ValueError, match=r"image.*C in \(3,"):
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
