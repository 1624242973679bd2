# SPDX-License-Identifier: Apache-2.0
"""SAM2 video segmentation: tiny transformers Sam2VideoModel end-to-end, the split maths, bad input.

The tiny model is built from a config, saved with ``save_pretrained`` into ``models/sam2`` and
loaded back through Gen4D_SAM2Loader; nothing comes from a hub and torchvision is never needed.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gen4d.backends import sam2_video as backend
from gen4d.backends.model_folders import NO_MODELS
from gen4d.backends.tiny import build_tiny
from gen4d.backends.tiny import sam2 as tiny_sam2
from gen4d.core.coco4d.segmentation import (
    parse_box,
    parse_points,
    points_to_prompt,
    split_video,
    temporal_fill_source,
)
from gen4d.nodes import segment as nodes
from gen4d.synthetic import render, scene_world
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

W, H, FRAMES = 64, 48, 5
MODEL = "sam2_video-tiny"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """``$GEN4D_MODELS_DIR`` with the tiny model at ``sam2/sam2_video-tiny``; hub access switched off."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        build_tiny("sam2_video", root / "sam2", seed=0)
        nodes.clear_cache()
        yield root
        nodes.clear_cache()


@pytest.fixture
def comfy_models(fake_comfy, models_dir):
    """The fake ComfyUI host with a ``folder_paths`` that knows ComfyUI's model-folder API."""
    fp = sys.modules["folder_paths"]
    fp.models_dir = str(models_dir)
    fp.folder_names_and_paths = {}

    def add_model_folder_path(key, path, is_default=False):
        fp.folder_names_and_paths.setdefault(key, ([], set()))[0].append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda key: list(fp.folder_names_and_paths.get(key, ([], set()))[0])
    return fake_comfy


@pytest.fixture(scope="module")
def world_video():
    world = scene_world(seed=0)
    views = render(world, world.reference_cameras(W, H, FRAMES))
    return views["rgb"].float().clamp(0, 1), views["foreground"].float()


@pytest.fixture(scope="module")
def click(world_video):
    """A pixel of the walking figure on frame 0, as (x, y) pixel centre."""
    _, fg = world_video
    ys, xs = torch.nonzero(fg[0] > 0.5, as_tuple=True)
    assert len(ys) > 0, "the figure must be visible on frame 0"
    i = len(ys) // 2
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def _load(device="auto", dtype="auto", local_folder=""):
    return nodes.SAM2Loader().load(MODEL, device, dtype, local_folder)[0]


def _split(images, segmenter, points="", box="", fg="#ffffff", fill="temporal", fill_color="#000000",
           init_mask=None):
    return nodes.SAM2Split().split(images, segmenter, points, box, fg, fill, fill_color, init_mask=init_mask)


def _copy_model(models_dir, name):
    src = models_dir / "sam2" / MODEL
    dst = models_dir / "sam2" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- end to end


def test_loader_lists_and_caches_the_tiny_model(models_dir):
    spec = nodes.SAM2Loader.INPUT_TYPES()["required"]["model_name"]
    assert MODEL in spec[0]
    assert sorted(p.name for p in (models_dir / "sam2" / MODEL).iterdir()) == ["config.json", "model.safetensors"]
    seg = _load()
    assert isinstance(seg, backend.Sam2VideoSegmenter)
    assert seg.device is None and seg.image_size == 64
    assert _load() is seg, "the same choice must return the cached segmenter"
    assert _load("cpu", "fp32") is not seg
    assert nodes.SAM2Loader.VALIDATE_INPUTS(model_name=MODEL) is True
    local = _load(local_folder=str(models_dir / "sam2" / MODEL))
    assert local is seg


def test_tiny_model_end_to_end_through_the_nodes(comfy_models, world_video, click):
    frames, _ = world_video
    seg = nodes.SAM2Loader().load(MODEL, "auto", "auto")[0]
    points = json.dumps([[click[0], click[1]]])
    assert nodes.SAM2Split.VALIDATE_INPUTS(points=points, box="", foreground_background="#ffffff",
                                           fill_color="#000000") is True
    foreground, background, mask = _split(frames, seg, points=points)
    for image in (foreground, background):
        assert image.shape == (FRAMES, H, W, 3) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    assert mask.shape == (FRAMES, H, W) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # progress once per frame, the model back on the CPU afterwards
    assert [u[0] for u in comfy_models.updates] == list(range(1, FRAMES + 1))
    assert all(p.device.type == "cpu" for p in seg.model.parameters())
    # deterministic, and the split is exactly the composition of the masks
    again = _split(frames, seg, points=points)
    for a, b in zip((foreground, background, mask), again):
        assert torch.equal(a, b)
    fg_ref, bg_ref, _ = split_video(frames, mask, (1.0, 1.0, 1.0), "temporal")
    assert torch.equal(foreground, fg_ref.clamp(0, 1)) and torch.equal(background, bg_ref.clamp(0, 1))


def _pil_resize(image, width, height):
    """``[H,W,3]`` float -> ``[3,height,width]`` with PIL's bilinear filter, one float ("F") channel at a time.

    An implementation independent of torch's ``F.interpolate``; for enlarging it is plain bilinear with pixel
    centres at +0.5 (torch's ``align_corners=False``), and it filters (antialiases) when shrinking.
    """
    channels = [np.asarray(Image.fromarray(image[..., c].numpy().astype(np.float32), mode="F")
                           .resize((width, height), Image.BILINEAR)) for c in range(image.shape[-1])]
    return torch.from_numpy(np.stack(channels))


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _reference_logits(folder, frames, click):
    """SAM2 video logits computed without our backend: transformers' model read straight from the folder,
    frames resized with PIL and ImageNet-normalised by hand, the click scaled to the model square by hand,
    propagation by ``propagate_in_video_iterator``, and the low-res logits upsampled like
    ``Sam2VideoProcessor.post_process_masks`` (bilinear to the square, then bilinear to the frame)."""
    from transformers import Sam2VideoModel
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    model = Sam2VideoModel.from_pretrained(str(folder)).eval()
    size = model.config.image_size
    t_count, height, width = frames.shape[:3]
    pixels = torch.stack([(_pil_resize(f, size, size) - IMAGENET_MEAN) / IMAGENET_STD for f in frames])
    session = Sam2VideoInferenceSession(video=pixels, video_height=height, video_width=width, dtype=torch.float32)
    obj = session.obj_id_to_idx(42)
    session.add_point_inputs(obj, 0, {
        "point_coords": torch.tensor([[[[click[0] * size / width, click[1] * size / height]]]]),
        "point_labels": torch.tensor([[[1]]], dtype=torch.int32)})
    session.obj_with_new_inputs = [42]
    out = []
    with torch.inference_mode():
        for result in model.propagate_in_video_iterator(session, start_frame_idx=0):
            low = result.pred_masks[:1].float()
            square = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
            out.append(F.interpolate(square, size=(height, width), mode="bilinear", align_corners=False)[0, 0])
    assert len(out) == t_count
    return torch.stack(out)


def test_mask_logits_match_an_independent_reference(models_dir, world_video, click):
    frames, _ = world_video
    seg = _load()
    logits = seg.segment_logits(frames, points=[click])
    assert logits.shape == (FRAMES, H, W) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    reference = _reference_logits(models_dir / "sam2" / MODEL, frames, click)
    assert reference.std() > 0.1, "the tiny model's logits are too flat to tell a wrong input from a right one"
    # Both sides run the same transformers release, so only the resize differs (PIL vs torch, ~6e-8 per pixel);
    # the random tiny network amplifies that to ~3e-5. Wrong channel order, missing normalisation, unscaled or
    # x/y-swapped click coordinates, a half-pixel click offset or skipping the square in the upsampling all move
    # some frame by > 5e-2 on this input.
    torch.testing.assert_close(logits, reference, atol=2e-3, rtol=0)
    masks = seg.segment(frames, points=[click])
    assert torch.equal(masks, (logits > 0).float())
    soft = seg.segment(frames, points=[click], threshold=None)
    assert torch.allclose(soft, torch.sigmoid(logits)) and 0.0 <= soft.min() and soft.max() <= 1.0


def test_preprocessing_matches_pil_and_imagenet_statistics(world_video):
    frames, _ = world_video
    for size in (64, 32):  # enlarge (48 -> 64 rows) and shrink (antialiased, 64 -> 32 columns)
        ours = backend.preprocess_frames(frames[:2], size)
        expected = torch.stack([(_pil_resize(f, size, size) - IMAGENET_MEAN) / IMAGENET_STD for f in frames[:2]])
        assert ours.shape == (2, 3, size, size) and ours.dtype == torch.float32
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_loader_reads_back_exactly_the_saved_weights(models_dir):
    """save_pretrained (the tiny builder) then Gen4D_SAM2Loader: every weight bit for bit, in float32."""
    from transformers import Sam2VideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the fixture's builder seed
        built = Sam2VideoModel(tiny_sam2.tiny_config()).eval()
    loaded = dict(_load().model.named_parameters())
    expected = dict(built.named_parameters())
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert loaded[name].dtype == torch.float32 and torch.equal(loaded[name], value), name


def test_box_and_initial_mask_prompts(models_dir, world_video, click):
    frames, truth = world_video
    seg = _load()
    box = backend._point_inputs(points_to_prompt([click], None, [2, 3, 40, 30], W, H), 64)
    assert box["point_labels"].tolist() == [[[2, 3, 1]]], "box corners come first, labelled 2 and 3"
    assert torch.allclose(box["point_coords"][0, 0, :2], torch.tensor([[2.0, 4.0], [40.0, 40.0]]))
    fg, bg, mask = _split(frames, seg, box="2, 3, 40, 30")
    assert mask.shape == (FRAMES, H, W)
    # an initial mask is used as frame 0's output (SAM2 "mask as output"), through the model's low-res
    # (image_size / 4 = 16 px) mask: frame 0 gives it back up to that resolution, whatever the weights
    fg, bg, mask = _split(frames, seg, init_mask=truth[:1])
    iou = (mask[0] * truth[0]).sum() / ((mask[0] + truth[0]) > 0).sum()
    assert iou >= 0.4, f"frame 0 should reproduce the initial mask, IoU {iou:.2f}"
    assert _split(frames, seg, init_mask=truth)[2].shape == (FRAMES, H, W), "one mask per frame: the first is used"


def test_interrupt_stops_and_offloads(comfy_models, world_video, click):
    frames, _ = world_video
    seg = nodes.SAM2Loader().load(MODEL, "auto", "auto")[0]
    comfy_models.interrupt_after = 2
    with pytest.raises(comfy_models.Interrupted):
        _split(frames, seg, points=json.dumps([list(click)]))
    assert len(comfy_models.updates) == 2
    assert all(p.device.type == "cpu" for p in seg.model.parameters())


# --------------------------------------------------------------------------- split maths


def test_split_is_exact_with_the_true_mask(world_video):
    frames, truth = world_video
    assert set(truth.unique().tolist()) <= {0.0, 1.0}
    on = truth > 0.5
    fg, bg, masks = split_video(frames, truth, fg_background=(1.0, 0.5, 0.0))
    assert torch.equal(masks, truth)
    assert torch.equal(fg[on], frames[on])
    assert torch.equal(fg[~on], torch.tensor([1.0, 0.5, 0.0]).expand(int((~on).sum()), 3))
    assert torch.equal(bg[~on], frames[~on]), "unmasked pixels stay as they are"
    # every masked pixel with a source frame takes that frame's (unmasked) value: no object pixel is left
    source = temporal_fill_source(on)
    has_source = on & (source >= 0)
    assert has_source.any()
    t_idx, y_idx, x_idx = torch.nonzero(has_source, as_tuple=True)
    src = source[has_source]
    assert not on[src, y_idx, x_idx].any()
    assert torch.equal(bg[t_idx, y_idx, x_idx], frames[src, y_idx, x_idx])
    # brute force: the source is the nearest unmasked frame, earlier on ties
    for t, y, x, s in list(zip(t_idx.tolist(), y_idx.tolist(), x_idx.tolist(), src.tolist()))[:200]:
        free = [u for u in range(FRAMES) if not on[u, y, x]]
        assert s == min(free, key=lambda u: (abs(u - t), u))
    # pixels masked in every frame fall back to the frame's mean of unmasked pixels
    never = on & (source < 0)
    if never.any():
        t = int(torch.nonzero(never)[0, 0])
        mean = frames[t][~on[t]].mean(dim=0)
        assert torch.allclose(bg[t][never[t]], mean.expand(int(never[t].sum()), 3))
    _, bg_color, _ = split_video(frames, truth, None, "color", fill_color=(0.0, 1.0, 0.0))
    assert torch.equal(bg_color[on], torch.tensor([0.0, 1.0, 0.0]).expand(int(on.sum()), 3))
    fg_black, bg_mean, _ = split_video(frames, truth, None, "mean")
    assert torch.equal(fg_black, frames * truth[..., None])
    for t in range(FRAMES):
        if on[t].any():
            mean = frames[t][~on[t]].mean(dim=0)
            assert torch.allclose(bg_mean[t][on[t]], mean.expand(int(on[t].sum()), 3))


def test_split_node_composes_any_segmenter_exactly(world_video):
    frames, truth = world_video

    class Oracle:
        device = torch.device("cpu")
        offloaded = False

        def segment(self, frames, points=None, labels=None, box=None, mask=None, callback=None, should_stop=None,
                    device=None):
            assert points.tolist() == [[10.0, 20.0]] and labels.tolist() == [0] and box is None
            return truth.clone()

        def offload(self):
            self.offloaded = True

    oracle = Oracle()
    fg, bg, mask = _split(frames, oracle, points="[[10, 20, 0]]", fg="0,0,0", fill="color", fill_color="#ff0000")
    assert oracle.offloaded
    assert torch.equal(mask, truth)
    assert torch.equal(fg, frames * truth[..., None])
    on = truth > 0.5
    assert torch.equal(bg[on], torch.tensor([1.0, 0.0, 0.0]).expand(int(on.sum()), 3))
    assert torch.equal(bg[~on], frames[~on])


def test_prompt_parsing():
    assert parse_points("") == ([], []) and parse_points("[]") == ([], [])
    assert parse_points("[[1, 2], [3.5, 4, 0]]") == ([[1.0, 2.0], [3.5, 4.0]], [1, 0])
    assert parse_points("[5, 6]") == ([[5.0, 6.0]], [1])
    assert parse_points('[{"x": 5, "y": 6}, {"x": 1, "y": 2, "label": 0}]') == ([[5.0, 6.0], [1.0, 2.0]], [1, 0])
    assert parse_box(" ") is None and parse_box("1,2,3,4") == [1.0, 2.0, 3.0, 4.0]
    assert parse_box("[1, 2, 3, 4]") == [1.0, 2.0, 3.0, 4.0]
    prompt = points_to_prompt([[0, 0], [63.9, 47.9]], [1, 0], None, W, H)
    assert prompt.points.shape == (2, 2) and prompt.labels.dtype == torch.int32 and not prompt.empty
    assert points_to_prompt(None, None, None, W, H).empty


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text, match", [
    ("[[1, 2", "JSON"), ("{\"x\": 1}", "JSON list"), ("[[1, 2, 3, 4]]", "entry 0"), ("[[1, 2, 5]]", "label"),
    ("[[\"a\", 2]]", "finite number"),
])
def test_bad_points_text(text, match):
    with pytest.raises(ValueError, match=match):
        parse_points(text)
    assert "points" in nodes.SAM2Split.VALIDATE_INPUTS(points=text, box="", foreground_background="#fff",
                                                       fill_color="#000")


def test_bad_box_and_colour_text():
    with pytest.raises(ValueError, match="x0,y0,x1,y1"):
        parse_box("1,2,3")
    assert "box" in nodes.SAM2Split.VALIDATE_INPUTS(points="", box="a,b,c,d", foreground_background="#fff",
                                                    fill_color="#000")
    assert "color" in nodes.SAM2Split.VALIDATE_INPUTS(points="", box="", foreground_background="#ggg",
                                                      fill_color="#000")
    assert nodes.SAM2Split.VALIDATE_INPUTS(points=None, box=None, foreground_background=None,
                                           fill_color=None) is True


def test_points_outside_the_image_are_named(world_video):
    with pytest.raises(ValueError, match=r"point 1 \(64, 10\) lies outside the 64x48 image"):
        points_to_prompt([[1, 1], [64, 10]], None, None, W, H)
    with pytest.raises(ValueError, match=r"point 0 \(-1, 3\)"):
        points_to_prompt([[-1, 3]], None, None, W, H)
    with pytest.raises(ValueError, match="box"):
        points_to_prompt(None, None, [0, 0, 65, 10], W, H)
    with pytest.raises(ValueError, match="x0 < x1"):
        points_to_prompt(None, None, [10, 0, 5, 10], W, H)
    frames, truth = world_video
    oracle = type("Oracle", (), {"segment": lambda self, *a, **k: truth})()
    with pytest.raises(ValueError, match=r"Gen4D_SAM2Split: points: point 0 \(100, 5\) lies outside"):
        _split(frames, oracle, points="[[100, 5]]")


def test_bad_images_and_masks(world_video):
    frames, truth = world_video
    oracle = type("Oracle", (), {"segment": lambda self, *a, **k: truth})()
    with pytest.raises(ValueError, match=r"images.*C in \(3, 4\).*\(5, 48, 64, 2\)"):
        _split(frames[..., :2], oracle, points="[[1, 1]]")
    with pytest.raises(ValueError, match="too small"):
        _split(frames[:, :4, :4], oracle, points="[[1, 1]]")
    with pytest.raises(ValueError, match="3 masks for 5 images"):
        _split(frames, oracle, init_mask=truth[:3])
    with pytest.raises(ValueError, match="does not match the image size"):
        _split(frames, oracle, init_mask=truth[:1, :10])
    with pytest.raises(ValueError, match="clear the points"):
        _split(frames, oracle, points="[[1, 1]]", init_mask=truth[:1])
    with pytest.raises(ValueError, match="no prompt"):
        _split(frames, oracle)
    with pytest.raises(ValueError, match="masks do not match frames"):
        split_video(frames, truth[:3])
    with pytest.raises(ValueError, match="fill must be one of"):
        split_video(frames, truth, fill="inpaint")
    with pytest.raises(ValueError, match="frames must be"):
        backend.Sam2VideoSegmenter(None, "x").segment_logits(frames[..., :2], points=[[1, 1]])


def test_missing_model_and_missing_files(models_dir):
    with pytest.raises(ValueError, match=r"no sam2 model selected; put a model folder .* into .*sam2"):
        nodes.SAM2Loader().load(NO_MODELS, "auto", "auto")
    assert "sam2" in nodes.SAM2Loader.VALIDATE_INPUTS(model_name=NO_MODELS)
    broken = _copy_model(models_dir, "no-config")
    (broken / "config.json").unlink()
    with pytest.raises(ValueError, match=r"no-config.*missing \['config.json'\]"):
        nodes.SAM2Loader().load("no-config", "auto", "auto", str(broken))
    no_weights = _copy_model(models_dir, "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing \['model.safetensors'\]"):
        nodes.SAM2Loader().load("no-weights", "auto", "auto")
    assert "model.safetensors" in nodes.SAM2Loader.VALIDATE_INPUTS(model_name="no-weights")
    with pytest.raises(ValueError, match="absolute path"):
        nodes.SAM2Loader().load(MODEL, "auto", "auto", "relative/folder")


def test_corrupt_safetensors_and_wrong_config(models_dir):
    truncated = _copy_model(models_dir, "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated.*model.safetensors.*not a readable safetensors file"):
        nodes.SAM2Loader().load("truncated", "auto", "auto")
    assert "safetensors" in nodes.SAM2Loader.VALIDATE_INPUTS(model_name="truncated")
    other = _copy_model(models_dir, "other-type")
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "depth_anything"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'depth_anything'"):
        nodes.SAM2Loader().load("other-type", "auto", "auto")
