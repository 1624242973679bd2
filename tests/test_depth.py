# SPDX-License-Identifier: Apache-2.0
"""Depth Anything V2 backend and the Gen4D_DepthLoader / Gen4D_Depth nodes on tiny random weights.

The tiny model is built from a config, saved with ``save_pretrained`` into ``models/gen4d/depth``
and loaded back through the loader node; nothing comes from a hub.
"""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gen4d.backends import depth as backend
from gen4d.backends.model_folders import NO_MODELS
from gen4d.backends.tiny import build_tiny
from gen4d.backends.tiny.depth import build_tiny_depth
from gen4d.nodes import depth as nodes
from gen4d.synthetic import render, scene_world
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

W, H, FRAMES = 56, 42, 4


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """``$GEN4D_MODELS_DIR`` with the tiny model at ``gen4d/depth/depth-tiny``; hub access switched off."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        build_tiny("depth", root / "gen4d" / "depth", seed=0)
        nodes.clear_cache()
        yield root
        nodes.clear_cache()


@pytest.fixture(scope="module")
def video():
    world = scene_world(seed=0)
    return render(world, world.reference_cameras(W, H, FRAMES))["rgb"].float().clamp(0, 1)


@pytest.fixture
def model(models_dir):
    return nodes.DepthLoader().load("depth-tiny", "auto", "auto")[0]


def _copy_model(models_dir, name):
    src = models_dir / "gen4d" / "depth" / "depth-tiny"
    dst = models_dir / "gen4d" / "depth" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- loader


def test_loader_lists_the_model_and_caches_the_estimator(models_dir):
    options = nodes.DepthLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert "depth-tiny" in options
    first = nodes.DepthLoader().load("depth-tiny", "auto", "auto")[0]
    assert isinstance(first, backend.DepthAnythingV2)
    assert first.kind == backend.RELATIVE_DISPARITY
    assert not first.loaded, "the loader must not read weights before the first run"
    assert nodes.DepthLoader().load("depth-tiny", "auto", "auto")[0] is first
    # On a CPU-only machine "cpu"/"fp32" resolve to the same device and dtype: the same estimator.
    assert nodes.DepthLoader().load("depth-tiny", "cpu", "fp32")[0] is first
    assert nodes.DepthLoader().load("depth-tiny", "cpu", "bf16")[0] is not first
    assert nodes.DepthLoader.VALIDATE_INPUTS(model_name=None) is True
    assert nodes.DepthLoader.VALIDATE_INPUTS(model_name="depth-tiny") is True
    assert nodes.DepthLoader.IS_CHANGED("depth-tiny", "auto", "auto") == \
        nodes.DepthLoader.IS_CHANGED("depth-tiny", "auto", "auto")


def test_no_hub_access(models_dir, video, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    nodes.clear_cache()
    estimator = nodes.DepthLoader().load("depth-tiny", "auto", "auto")[0]
    estimator.predict(video[:1], input_size=28)
    assert estimator.loaded and attempts == []


# --------------------------------------------------------------------------- stage node


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _pil_bicubic(image, width, height):
    """``[H,W,3]`` float -> ``[3,height,width]`` resized by PIL's bicubic filter, one float ("F") channel at a time.

    An implementation independent of torch's: Keys' kernel with a = -0.5, widened when shrinking (antialiased).
    """
    channels = [np.asarray(Image.fromarray(image[..., c].numpy().astype(np.float32), mode="F")
                           .resize((width, height), Image.BICUBIC)) for c in range(image.shape[-1])]
    return torch.from_numpy(np.stack(channels))


def _reference_disparity(folder, images, size):
    """Depth Anything V2 disparity without our backend: transformers' model read straight from the folder, the
    images resized with PIL to ``size`` (h, w), clamped to 0..1 and ImageNet-normalised by hand, the prediction
    upsampled bilinearly to the input size and clamped at 0."""
    from transformers import DepthAnythingForDepthEstimation

    model = DepthAnythingForDepthEstimation.from_pretrained(str(folder)).eval()
    height, width = images.shape[1:3]
    pixels = torch.stack([(_pil_bicubic(im, size[1], size[0]).clamp(0, 1) - IMAGENET_MEAN) / IMAGENET_STD
                          for im in images])
    with torch.inference_mode():
        predicted = model(pixel_values=pixels).predicted_depth
    assert predicted.shape == (len(images), *size)
    up = F.interpolate(predicted[:, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[:, 0].clamp_min(0.0)


def test_depth_node_shapes_ranges_and_reference_values(models_dir, model, video):
    node = nodes.Depth()
    image, mask = node.estimate(video, model, "inverse_normalized")
    assert model.loaded
    assert image.shape == (FRAMES, H, W, 3) and image.dtype == torch.float32
    assert mask.shape == (FRAMES, H, W) and mask.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and mask.min() >= 0 and mask.max() == 1
    assert torch.equal(image[..., 0], image[..., 2]) and torch.equal(image[..., 0], mask)

    raw = model.predict(video)
    assert raw.shape == (FRAMES, H, W) and raw.dtype == torch.float32 and raw.min() >= 0
    assert torch.isfinite(raw).all() and raw.std() > 0
    # the node's map is the batch-normalised disparity, 0 where the disparity is 0 (sky)
    valid = raw > 0
    expected = (raw - raw[valid].min()) / (raw[valid].max() - raw[valid].min())
    torch.testing.assert_close(mask[valid], expected[valid], atol=1e-5, rtol=1e-5)
    assert (mask[~valid] == 0).all()

    # The raw disparity against an independent pipeline, enlarging (default short side 518: 42x56 -> 518x686,
    # 686 = 56 * 518 / 42 rounded to a multiple of 14) and shrinking (input_size 28: 28x42, antialiased).
    # Both sides run the same transformers release; PIL's and torch's bicubic differ by ~3e-6 per pixel, which
    # the tiny network turns into < 2e-4 on values up to ~50 (rtol 1e-4 plus atol 1e-3 leaves room). Swapped
    # channels, no normalisation, resizing without antialias, a square resize or nearest upsampling each move
    # the maps by > 2; a missing clamp of the resized pixels by ~0.6.
    folder = models_dir / "gen4d" / "depth" / "depth-tiny"
    torch.testing.assert_close(raw, _reference_disparity(folder, video, (518, 686)), atol=1e-3, rtol=1e-4)
    small = model.predict(video, input_size=28)
    torch.testing.assert_close(small, _reference_disparity(folder, video, (28, 42)), atol=1e-3, rtol=1e-4)

    # Same weights, same input: same output; the model object is not reloaded between runs.
    weights = model.model
    again, _ = node.estimate(video, model, "inverse_normalized")
    assert model.model is weights and torch.equal(again, image)


def test_depth_modes_follow_depth_to_image(model, video):
    node = nodes.Depth()
    raw = model.predict(video, input_size=28)
    valid = raw > 0
    inv, _ = node.estimate(video, model, "inverse_normalized", input_size=28)
    far, _ = node.estimate(video, model, "normalized", input_size=28)
    metric, mask = node.estimate(video, model, "metric", input_size=28)
    torch.testing.assert_close(metric[..., 0][valid], 1.0 / raw[valid], rtol=1e-5, atol=1e-6)
    assert (metric[..., 0][~valid] == 0).all() and (far[..., 0][~valid] == 0).all()
    # near = white in inverse_normalized, far = white in normalized: the orders are opposite.
    a, b = inv[..., 0][valid], far[..., 0][valid]
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] < 0
    assert torch.equal(mask, inv[..., 0])


def test_progress_interrupt_and_offload(model, video, fake_comfy, monkeypatch):
    offloads = []
    original = model.offload
    monkeypatch.setattr(model, "offload", lambda: offloads.append(1) or original())
    nodes.Depth().estimate(video, model, "inverse_normalized", input_size=28, batch_size=2)
    assert [u[:2] for u in fake_comfy.updates] == [(2, FRAMES), (4, FRAMES)]
    assert offloads == [1]

    fake_comfy.updates.clear()
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        nodes.Depth().estimate(video, model, "inverse_normalized", input_size=28, batch_size=1)
    assert len(fake_comfy.updates) == 1, "the node kept running after the interrupt"
    assert offloads == [1, 1], "the model must be offloaded when interrupted too"


def test_metric_model(tmp_path, video):
    folder = build_tiny_depth(tmp_path / "metric", seed=0, depth_estimation_type="metric")
    estimator = backend.DepthAnythingV2.load(folder)
    assert estimator.kind == backend.METRIC_DEPTH and estimator.loaded
    depth = estimator.predict(video[:2], input_size=28)
    assert depth.shape == (2, H, W) and depth.min() > 0 and depth.max() <= 20
    image, mask = nodes.Depth().estimate(video[:2], estimator, "metric", input_size=28)
    torch.testing.assert_close(image[..., 0], depth)
    assert mask.max() == 1 and mask.min() >= 0


def test_resize_keeps_aspect_on_multiples_of_14():
    assert backend.resize_for_model(42, 56) == (518, 686)
    assert backend.resize_for_model(1080, 1920) == (518, 924)
    assert backend.resize_for_model(56, 42, 28) == (42, 28)
    for h, w in ((1, 1), (17, 300), (720, 1280)):
        out = backend.resize_for_model(h, w, 518)
        assert all(s % 14 == 0 and s >= 518 for s in out)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, H, W, 2), r"C in \(3,"),
    (torch.rand(1, 0, W, 3), "empty"),
    (torch.full((1, H, W, 3), float("nan")), "NaN"),
    ("not an image", "IMAGE tensor"),
])
def test_bad_images(model, bad, match):
    with pytest.raises(ValueError, match=match) as info:
        nodes.Depth().estimate(bad, model, "inverse_normalized")
    assert "images" in str(info.value)
    with pytest.raises(ValueError, match=match):
        model.predict(bad)


def test_extreme_aspect_ratio_is_refused(model):
    with pytest.raises(ValueError, match="pixel limit"):
        model.predict(torch.rand(1, 2, 4000, 3))


def test_bad_node_arguments(model, video):
    with pytest.raises(ValueError, match="depth_mode"):
        nodes.Depth().estimate(video, model, "sideways")
    with pytest.raises(ValueError, match="depth_model"):
        nodes.Depth().estimate(video, "nope", "normalized")
    with pytest.raises(ValueError, match="device"):
        nodes.DepthLoader().load("depth-tiny", "tpu", "auto")


def test_missing_model_names_folder_and_files(models_dir):
    folder = str(models_dir / "gen4d" / "depth")
    with pytest.raises(ValueError, match="not found") as info:
        nodes.DepthLoader().load("absent-model", "auto", "auto")
    assert folder in str(info.value)
    with pytest.raises(ValueError, match="no depth model selected") as info:
        nodes.DepthLoader().load(NO_MODELS, "auto", "auto")
    assert folder in str(info.value)
    message = nodes.DepthLoader.VALIDATE_INPUTS(model_name="absent-model")
    assert isinstance(message, str) and "absent-model" in message


def test_folder_without_config(models_dir):
    bad = _copy_model(models_dir, "no-config")
    (bad / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        nodes.DepthLoader().load(str(bad), "auto", "auto")
    with pytest.raises(ValueError, match="missing config.json"):
        backend.DepthAnythingV2.load(bad)


def test_folder_without_weights(models_dir):
    bad = _copy_model(models_dir, "no-weights")
    (bad / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has no weights; expected model.safetensors"):
        nodes.DepthLoader().load("no-weights", "auto", "auto")


def test_truncated_safetensors(models_dir):
    bad = _copy_model(models_dir, "truncated")
    weights = bad / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(ValueError, match="corrupt or truncated safetensors") as info:
        nodes.DepthLoader().load("truncated", "auto", "auto")
    assert str(weights) in str(info.value)


def test_wrong_config(models_dir):
    bad = _copy_model(models_dir, "wrong-type")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "dpt"}))
    with pytest.raises(ValueError, match="model_type 'dpt'"):
        backend.DepthAnythingV2.load(bad)

    mismatch = _copy_model(models_dir, "mismatch")
    config["fusion_hidden_size"] = 24
    (mismatch / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="cannot load") as info:
        backend.DepthAnythingV2.load(mismatch)
    assert str(mismatch) in str(info.value)


def test_single_file_checkpoint_is_explained(models_dir):
    single = models_dir / "gen4d" / "depth" / "depth_anything_v2_vits.safetensors"
    shutil.copy(models_dir / "gen4d" / "depth" / "depth-tiny" / "model.safetensors", single)
    try:
        with pytest.raises(ValueError, match=r"depth_anything_v2_vits.safetensors.*not a Depth Anything V2 checkpoint "
                                             r"in the original naming.*transformers checkpoint.*config.json"):
            nodes.DepthLoader().load(single.name, "auto", "auto")
    finally:
        single.unlink()


def test_half_precision_path(models_dir, video):
    """bf16 weights (the GPU default) run and still give float32 maps close to the fp32 ones."""
    half = nodes.DepthLoader().load("depth-tiny", "cpu", "bf16")[0]
    full = nodes.DepthLoader().load("depth-tiny", "cpu", "fp32")[0]
    assert half.dtype == torch.bfloat16 and half is not full
    a, b = half.predict(video[:1], input_size=28), full.predict(video[:1], input_size=28)
    assert a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.9


def test_depth_kinds_and_disparity_to_depth_live_once_in_core():
    import ast
    from pathlib import Path

    from gen4d.core.coco4d import depth_align
    from gen4d.core.formats import depth as kinds
    from gen4d.synthetic import oracles

    assert backend.METRIC_DEPTH is kinds.METRIC_DEPTH and backend.RELATIVE_DISPARITY is kinds.RELATIVE_DISPARITY
    assert depth_align.DEPTH_KINDS is kinds.DEPTH_KINDS and oracles.METRIC_DEPTH is kinds.METRIC_DEPTH
    # the kind names are written in one module only, and no module but core defines to_z_depth
    root = Path(__file__).resolve().parents[1]
    writers, definers = [], []
    for path in sorted(p for d in ("nodes", "backends", "core", "synthetic") for p in (root / d).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = ("metric_depth", "relative_disparity")
        if any(isinstance(n, ast.Constant) and n.value in names for n in ast.walk(tree)):
            writers.append(path.relative_to(root).as_posix())
        if any(isinstance(n, ast.FunctionDef) and n.name == "to_z_depth" for n in ast.walk(tree)):
            definers.append(path.relative_to(root).as_posix())
    assert writers == ["core/formats/depth.py"] and definers == ["core/formats/depth.py"]
    # metric passes through (negative -> 0), disparity -> 1/d with 0 = no surface
    raw = torch.tensor([[2.0, 0.5, 0.0, -1.0]])
    assert torch.equal(kinds.to_z_depth(raw, kinds.METRIC_DEPTH), torch.tensor([[2.0, 0.5, 0.0, 0.0]]))
    assert torch.equal(kinds.to_z_depth(raw, kinds.RELATIVE_DISPARITY), torch.tensor([[0.5, 2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="depth kind must be one of"):
        kinds.to_z_depth(raw, "depth")
