# SPDX-License-Identifier: Apache-2.0
"""SAM2 and Depth Anything V2 from the single files ComfyUI users keep (original key names).

Each tiny random model is built here from a transformers config, saved both as a transformers folder and
as one ``.safetensors`` file in the original naming (the loaders' name rules inverted by
``tests/original_layout.py``), and both are loaded through the real loader nodes and compared. The
original names the real releases use are asserted by name, so a self-consistent but wrong rule table
fails. Sizes of the released variants are checked on the meta device against their published parameter
counts.
"""

from __future__ import annotations

import sys

import pytest
import torch
from gen4d.backends import depth as depth_backend
from gen4d.backends import depth_file, model_folders, sam2_file
from gen4d.backends import sam2_video as sam2_backend
from gen4d.backends.key_maps import build_on_meta
from gen4d.backends.tiny.sam2 import tiny_config
from gen4d.nodes import depth as depth_nodes
from gen4d.nodes import segment as segment_nodes
from original_layout import to_original
from safetensors.torch import save_file

pytestmark = pytest.mark.usefixtures("one_thread")

# Names every original SAM2 / SAM2.1 release file holds (facebookresearch/sam2 SAM2Base state dict).
SAM2_ORIGINAL_NAMES = (
    "image_encoder.trunk.patch_embed.proj.weight", "image_encoder.trunk.pos_embed",
    "image_encoder.trunk.pos_embed_window", "image_encoder.trunk.blocks.0.attn.qkv.weight",
    "image_encoder.trunk.blocks.0.norm1.weight", "image_encoder.trunk.blocks.0.mlp.layers.0.weight",
    "image_encoder.neck.convs.0.conv.weight", "sam_prompt_encoder.point_embeddings.3.weight",
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "sam_prompt_encoder.mask_downscaling.0.weight",
    "sam_prompt_encoder.no_mask_embed.weight", "sam_mask_decoder.iou_token.weight",
    "sam_mask_decoder.output_upscaling.0.weight", "sam_mask_decoder.output_hypernetworks_mlps.0.layers.2.weight",
    "sam_mask_decoder.iou_prediction_head.layers.0.weight", "sam_mask_decoder.pred_obj_score_head.layers.0.weight",
    "sam_mask_decoder.transformer.layers.0.self_attn.out_proj.weight",
    "sam_mask_decoder.transformer.final_attn_token_to_image.q_proj.weight",
    "sam_mask_decoder.transformer.norm_final_attn.weight", "memory_attention.layers.0.self_attn.q_proj.weight",
    "memory_attention.layers.0.cross_attn_image.k_proj.weight", "memory_attention.norm.weight",
    "memory_encoder.mask_downsampler.encoder.0.weight", "memory_encoder.pix_feat_proj.weight",
    "memory_encoder.fuser.layers.0.dwconv.weight", "memory_encoder.fuser.layers.0.gamma",
    "memory_encoder.out_proj.weight", "maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr",
    "mask_downsample.weight", "obj_ptr_proj.layers.0.weight", "obj_ptr_tpos_proj.weight", "no_obj_embed_spatial",
)
# Names every original Depth Anything V2 release file holds (its DepthAnythingV2 module's state dict).
DEPTH_ORIGINAL_NAMES = (
    "pretrained.cls_token", "pretrained.mask_token", "pretrained.pos_embed", "pretrained.patch_embed.proj.weight",
    "pretrained.blocks.0.norm1.weight", "pretrained.blocks.0.attn.qkv.weight", "pretrained.blocks.0.attn.proj.bias",
    "pretrained.blocks.0.ls1.gamma", "pretrained.blocks.0.ls2.gamma", "pretrained.blocks.0.mlp.fc1.weight",
    "pretrained.norm.weight", "depth_head.projects.0.weight", "depth_head.resize_layers.0.weight",
    "depth_head.resize_layers.3.weight", "depth_head.scratch.layer1_rn.weight",
    "depth_head.scratch.refinenet1.out_conv.weight", "depth_head.scratch.refinenet4.resConfUnit2.conv1.weight",
    "depth_head.scratch.output_conv1.weight", "depth_head.scratch.output_conv2.0.weight",
    "depth_head.scratch.output_conv2.2.weight",
)

# the tiny test sizes, registered as variants the way the released sizes are
TINY_SAM2 = sam2_file.Sam2Variant(hidden=8, blocks=(1, 1, 2, 1), heads=(1, 1, 1, 1), global_blocks=(3,),
                                  windows=(4, 4, 4, 2), image_size=64, decoder_heads=2, memory_heads=1)
TINY_DEPTH = (64, 4, (1, 2, 3, 4))
SAM2_FILE = "kijai/sam2.1_hiera_tinytest.safetensors"


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _save_original(rules, model, path, dtype=None) -> dict[str, torch.Tensor]:
    original = to_original(rules, _state(model))
    if dtype is not None:
        original = {k: v.to(dtype) for k, v in original.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(original, str(path))
    return original


def _tiny_sam2_model(seed=0):
    from transformers import Sam2VideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2VideoModel(tiny_config()).eval()
    return _tie(model)


def _tie(model):
    """A release keeps one random Fourier matrix for the prompt encoder and the image-wide embedding."""
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding)
    return model


def _tiny_depth_config(metric=False, swiglu=False):
    from transformers import DepthAnythingConfig, Dinov2Config

    width, layers, out_indices = TINY_DEPTH
    backbone = Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=1, mlp_ratio=2,
                            patch_size=14, image_size=28, out_indices=list(out_indices), reshape_hidden_states=False,
                            use_swiglu_ffn=swiglu, initializer_range=0.2)
    return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=width, patch_size=14,
                               neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                               depth_estimation_type="metric" if metric else "relative",
                               max_depth=20 if metric else 1, initializer_range=0.2)


def _tiny_depth_model(seed=0, **kw):
    from transformers import DepthAnythingForDepthEstimation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(_tiny_depth_config(**kw)).eval()
        with torch.no_grad():  # layer scales start at 1: make the two of a block tell apart
            for layer in model.backbone.encoder.layer:
                layer.layer_scale1.lambda1.uniform_(0.5, 1.5)
                layer.layer_scale2.lambda1.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """``$GEN4D_MODELS_DIR`` with each tiny model as a transformers folder and as original single files."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setitem(sys.modules, "folder_paths", None)
        mp.setitem(sam2_file.SAM2_VARIANTS, "tiny_test", TINY_SAM2)
        mp.setitem(depth_file.DEPTH_VARIANTS, "tiny_test", TINY_DEPTH)
        sam2 = _tiny_sam2_model()
        sam2.save_pretrained(str(root / "sam2" / "sam2-tiny-folder"))
        n_down = len(sam2.memory_encoder.mask_downsampler.layers)
        _save_original(sam2_file.sam2_rules(n_down), sam2, root / "sam2" / SAM2_FILE)
        _save_original(sam2_file.sam2_rules(n_down), sam2, root / "sam2" / "sam2.1_hiera_tinytest_bf16.safetensors",
                       torch.bfloat16)
        depth = _tiny_depth_model()
        depth.save_pretrained(str(root / "gen4d" / "depth" / "depth-tiny-folder"))
        da = root / "depthanything"
        _save_original(depth_file.depth_rules(), depth, da / "depth_anything_v2_tinytest_fp32.safetensors")
        _save_original(depth_file.depth_rules(), depth, da / "depth_anything_v2_tinytest_fp16.safetensors",
                       torch.float16)
        metric = _tiny_depth_model(seed=1, metric=True)
        metric.save_pretrained(str(root / "gen4d" / "depth" / "depth-tiny-metric-folder"))
        _save_original(depth_file.depth_rules(), metric, da / "depth_anything_v2_metric_hypersim_tinytest.safetensors")
        segment_nodes.clear_cache()
        depth_nodes.clear_cache()
        yield root
        segment_nodes.clear_cache()
        depth_nodes.clear_cache()


@pytest.fixture(scope="module")
def video():
    from gen4d.synthetic import render, scene_world

    world = scene_world(seed=0)
    return render(world, world.reference_cameras(48, 40, 3))["rgb"].float().clamp(0, 1)


def _rounded(model, dtype):
    """``model`` with every stored floating tensor rounded to ``dtype`` and back (what a half-precision file
    holds; buffers computed at construction, e.g. rotary tables, are not stored)."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.to(dtype).float())
    return model


# --------------------------------------------------------------------------- SAM2


def test_sam2_files_hold_the_original_names(models_dir):
    from safetensors import safe_open

    with safe_open(str(models_dir / "sam2" / SAM2_FILE), framework="pt") as fh:
        names = set(fh.keys())
    missing = [n for n in SAM2_ORIGINAL_NAMES if n not in names]
    assert not missing, f"the rules do not produce these release names: {missing}"
    assert not any(n.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.")) for n in names)


def test_sam2_loader_lists_and_loads_the_single_file_like_the_folder(models_dir, video):
    options = segment_nodes.SAM2Loader.INPUT_TYPES()["required"]["model_name"][0]
    assert {"sam2-tiny-folder", SAM2_FILE, "sam2.1_hiera_tinytest_bf16.safetensors"} <= set(options)
    assert segment_nodes.SAM2Loader.VALIDATE_INPUTS(model_name=SAM2_FILE) is True
    folder = segment_nodes.SAM2Loader().load("sam2-tiny-folder", "cpu", "fp32")[0]
    single = segment_nodes.SAM2Loader().load(SAM2_FILE, "cpu", "fp32")[0]
    assert single is not folder and single.image_size == folder.image_size == 64
    model = single.model
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ours, theirs = model.state_dict(), folder.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    click = [(24.0, 20.0)]
    a = folder.segment_logits(video, points=click)
    b = single.segment_logits(video, points=click)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    # a bf16 file: the same model with weights rounded to bf16 (computed in float32 on the CPU)
    half = segment_nodes.SAM2Loader().load("sam2.1_hiera_tinytest_bf16.safetensors", "cpu", "fp32")[0]
    reference = sam2_backend.Sam2VideoSegmenter(_rounded(_tiny_sam2_model(), torch.bfloat16), models_dir)
    torch.testing.assert_close(half.segment_logits(video, points=click), reference.segment_logits(video, points=click),
                               rtol=0, atol=1e-5)


def test_sam2_file_errors_name_the_file_and_what_was_expected(models_dir, tmp_path):
    from safetensors.torch import load_file

    good = load_file(str(models_dir / "sam2" / SAM2_FILE))
    depth = models_dir / "depthanything" / "depth_anything_v2_tinytest_fp32.safetensors"
    with pytest.raises(ValueError, match=r"depth_anything_v2_tinytest_fp32.*not a SAM2 checkpoint in the original "
                                         r"facebookresearch/sam2 naming.*image_encoder\.trunk\.patch_embed"):
        sam2_backend.Sam2VideoSegmenter.load(depth)
    hf = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny_sam2_model().state_dict().items()}, str(hf))
    with pytest.raises(ValueError, match="looks like a transformers SAM2 checkpoint"):
        sam2_backend.check_model(hf)
    # one block fewer in stage 3: no known size
    fewer = {k: v for k, v in good.items() if not k.startswith("image_encoder.trunk.blocks.4.")}
    save_file(fewer, str(tmp_path / "sam2_odd.safetensors"))
    with pytest.raises(ValueError, match=r"sam2_odd.*width 8 with blocks per stage \[1, 1, 2\].*not a known SAM2.*"
                                         r"large: width 144, blocks \[2, 6, 36, 4\]"):
        sam2_backend.check_model(tmp_path / "sam2_odd.safetensors")
    extra = dict(good, **{"sam_mask_decoder.unknown_head.weight": torch.zeros(2)})
    save_file(extra, str(tmp_path / "sam2_extra.safetensors"))
    with pytest.raises(ValueError, match=r"sam2_extra.*unknown layout.*sam_mask_decoder.unknown_head.weight"):
        sam2_backend.check_model(tmp_path / "sam2_extra.safetensors")
    short = tmp_path / "sam2_short.safetensors"
    short.write_bytes((models_dir / "sam2" / SAM2_FILE).read_bytes()[:-4096])
    with pytest.raises(ValueError, match=r"sam2_short"):
        sam2_backend.Sam2VideoSegmenter.load(short)
    assert "not a SAM2 checkpoint" in segment_nodes.SAM2Loader.VALIDATE_INPUTS(model_name="x", local_folder=str(depth))


# --------------------------------------------------------------------------- Depth Anything V2


def test_depth_files_hold_the_original_names(models_dir):
    from safetensors import safe_open

    with safe_open(str(models_dir / "depthanything" / "depth_anything_v2_tinytest_fp32.safetensors"),
                   framework="pt") as fh:
        names = set(fh.keys())
    missing = [n for n in DEPTH_ORIGINAL_NAMES if n not in names]
    assert not missing, f"the rules do not produce these release names: {missing}"
    assert "depth_head.resize_layers.2.weight" not in names  # an Identity in the original head
    assert not any(n.startswith(("backbone.", "neck.", "head.")) for n in names)


def test_depth_loader_lists_and_loads_the_single_file_like_the_folder(models_dir, video):
    options = depth_nodes.DepthLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert {"depth-tiny-folder", "depth_anything_v2_tinytest_fp32.safetensors",
            "depth_anything_v2_tinytest_fp16.safetensors"} <= set(options)
    folder = depth_nodes.DepthLoader().load("depth-tiny-folder", "cpu", "fp32")[0]
    single = depth_nodes.DepthLoader().load("depth_anything_v2_tinytest_fp32.safetensors", "cpu", "fp32")[0]
    assert not single.loaded and single.kind == depth_backend.RELATIVE_DISPARITY
    a, b = folder.predict(video, input_size=42), single.predict(video, input_size=42)
    assert not any(t.is_meta for t in single.model.parameters())
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    # bf16 compute from the fp32 file: the weights are read straight into bf16
    bf16 = depth_nodes.DepthLoader().load("depth_anything_v2_tinytest_fp32.safetensors", "cpu", "bf16")[0]
    bf16.predict(video[:1], input_size=28)
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    # an fp16 file equals the model with its weights rounded to fp16
    half = depth_nodes.DepthLoader().load("depth_anything_v2_tinytest_fp16.safetensors", "cpu", "fp32")[0]
    reference = depth_backend.DepthAnythingV2(models_dir, {"depth_estimation_type": "relative"}, torch.device("cpu"),
                                              torch.float32)
    reference.model = _rounded(_tiny_depth_model(), torch.float16)
    torch.testing.assert_close(half.predict(video, input_size=42), reference.predict(video, input_size=42),
                               rtol=0, atol=1e-5)


def test_metric_depth_file_from_its_name(models_dir, video, tmp_path):
    metric = depth_nodes.DepthLoader().load("depth_anything_v2_metric_hypersim_tinytest.safetensors", "cpu", "fp32")[0]
    folder = depth_nodes.DepthLoader().load("depth-tiny-metric-folder", "cpu", "fp32")[0]
    assert metric.kind == folder.kind == depth_backend.METRIC_DEPTH
    assert metric.config["max_depth"] == 20
    torch.testing.assert_close(metric.predict(video, input_size=28), folder.predict(video, input_size=28),
                               rtol=0, atol=1e-5)
    source = models_dir / "depthanything" / "depth_anything_v2_metric_hypersim_tinytest.safetensors"
    outdoor = tmp_path / "depth_anything_v2_metric_vkitti_tinytest.safetensors"
    outdoor.write_bytes(source.read_bytes())
    assert depth_backend.check_model(outdoor)["max_depth"] == 80
    unnamed = tmp_path / "depth_anything_v2_metric_tinytest.safetensors"
    unnamed.write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match=r"metric_tinytest.*must name its training set.*hypersim.*vkitti"):
        depth_backend.check_model(unnamed)


def test_giant_swiglu_layout_round_trips(models_dir, video, tmp_path):
    """The giant encoder's fused SwiGLU ``w12`` is split into gate / up projections (gate first)."""
    model = _tiny_depth_model(seed=2, swiglu=True)
    path = tmp_path / "depth_anything_v2_tinytest_swiglu.safetensors"
    original = _save_original(depth_file.depth_rules(swiglu=True), model, path)
    w12 = original["pretrained.blocks.0.mlp.w12.weight"]
    assert torch.equal(w12[: w12.shape[0] // 2], model.backbone.encoder.layer[0].mlp.gate_proj.weight)
    assert "pretrained.blocks.0.mlp.w3.bias" in original
    single = depth_backend.DepthAnythingV2.load(path)
    reference = depth_backend.DepthAnythingV2(path, {}, torch.device("cpu"), torch.float32)
    reference.model = model
    torch.testing.assert_close(single.predict(video[:1], input_size=28), reference.predict(video[:1], input_size=28),
                               rtol=0, atol=1e-5)


def test_depth_file_errors_name_the_file_and_what_was_expected(models_dir, tmp_path):
    from safetensors.torch import load_file

    with pytest.raises(ValueError,
                       match=r"sam2.1_hiera_tinytest.*not a Depth Anything V2 checkpoint.*pretrained.cls_token"):
        depth_backend.DepthAnythingV2.load(models_dir / "sam2" / SAM2_FILE, lazy=True)
    good = load_file(str(models_dir / "depthanything" / "depth_anything_v2_tinytest_fp32.safetensors"))
    fewer = {k: v for k, v in good.items() if not k.startswith("pretrained.blocks.3.")}
    save_file(fewer, str(tmp_path / "depth_anything_v2_odd.safetensors"))
    with pytest.raises(ValueError, match=r"depth_anything_v2_odd.*width 64 with 3 layers is not a Depth Anything V2 "
                                         r"size.*vitl: width 1024, 24 layers"):
        depth_nodes.DepthLoader().load(str(tmp_path / "depth_anything_v2_odd.safetensors"), "cpu", "fp32")
    swapped = dict(good)
    swapped["depth_head.scratch.layer1_rn.weight"] = torch.zeros(16, 9, 3, 3)
    save_file(swapped, str(tmp_path / "depth_anything_v2_bad.safetensors"))
    bad = depth_backend.DepthAnythingV2.load(tmp_path / "depth_anything_v2_bad.safetensors", lazy=True)
    with pytest.raises(ValueError, match=r"depth_anything_v2_bad.*shape mismatch.*neck.convs.0.weight"):
        bad.materialize()


# --------------------------------------------------------------------------- released sizes (meta device)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _sam2_release_config(hidden, heads, blocks, global_blocks, windows, background):
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

    dims = [hidden * 2 ** i for i in range(4)]
    hiera = Sam2HieraDetConfig(hidden_size=hidden, num_attention_heads=heads, blocks_per_stage=blocks,
                               embed_dim_per_stage=dims,
                               num_attention_heads_per_stage=[heads * 2 ** i for i in range(4)],
                               global_attention_blocks=global_blocks, window_size_per_stage=windows,
                               window_positional_embedding_background_size=background)
    return Sam2VideoConfig(vision_config=Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=dims[::-1]),
                           enable_occlusion_spatial_embedding=True,
                           enable_temporal_pos_encoding_for_object_pointers=True)


# (size, config of the release, parameters in millions as facebookresearch/sam2 publishes them)
SAM2_RELEASES = [
    ("tiny", (96, 1, [1, 2, 7, 2], [5, 7, 9], [8, 4, 14, 7], [7, 7]), 38.9),
    ("small", (96, 1, [1, 2, 11, 2], [7, 10, 13], [8, 4, 14, 7], [7, 7]), 46.0),
    ("base_plus", (112, 2, [2, 3, 16, 3], [12, 16, 20], [8, 4, 14, 7], [14, 14]), 80.8),
    ("large", (144, 2, [2, 6, 36, 4], [23, 33, 43], [8, 4, 16, 8], [7, 7]), 224.4),
]


@pytest.mark.parametrize("size,release,millions", SAM2_RELEASES, ids=[r[0] for r in SAM2_RELEASES])
def test_released_sam2_sizes_are_derived_from_shapes(size, release, millions):
    from transformers import Sam2VideoModel

    reference = _tie(build_on_meta(lambda: Sam2VideoModel(_sam2_release_config(*release))))
    shapes = {k: tuple(v.shape) for k, v in to_original(sam2_file.sam2_rules(4), reference.state_dict()).items()}
    assert set(SAM2_ORIGINAL_NAMES) <= set(shapes)
    name, config = sam2_file.sam2_file_config(shapes)
    assert name == size and config.image_size == 1024
    derived = build_on_meta(lambda: Sam2VideoModel(config))
    assert _shapes(derived) == _shapes(reference)
    assert config.vision_config.backbone_config.to_dict() == reference.config.vision_config.backbone_config.to_dict()
    assert sum(p.numel() for p in derived.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)
    # SAM2.0 files lack the two SAM2.1 tensors; their config follows
    v20 = {k: s for k, s in shapes.items() if k not in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight",
                                                        "obj_ptr_tpos_proj.bias")}
    _, config20 = sam2_file.sam2_file_config(v20)
    assert not config20.enable_occlusion_spatial_embedding
    assert not config20.enable_temporal_pos_encoding_for_object_pointers


# (encoder, width, layers, heads, DPT features, projections, parameters in millions as Depth Anything V2 publishes)
DEPTH_RELEASES = [
    ("vits", 384, 12, 6, 64, [48, 96, 192, 384], 24.8),
    ("vitb", 768, 12, 12, 128, [96, 192, 384, 768], 97.5),
    ("vitl", 1024, 24, 16, 256, [256, 512, 1024, 1024], 335.3),
]


@pytest.mark.parametrize("encoder,width,layers,heads,features,projections,millions", DEPTH_RELEASES,
                         ids=[r[0] for r in DEPTH_RELEASES])
def test_released_depth_sizes_are_derived_from_shapes(encoder, width, layers, heads, features, projections, millions):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    # the layers the head reads, as the hub's Depth-Anything-V2-*-hf configs list them
    out_indices = [5, 12, 18, 24] if encoder == "vitl" else [3, 6, 9, 12]
    backbone = Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, patch_size=14,
                            image_size=518, out_indices=out_indices, reshape_hidden_states=False)
    reference = build_on_meta(lambda: DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=width, patch_size=14, fusion_hidden_size=features,
        neck_hidden_sizes=projections)))
    shapes = {k: tuple(v.shape) for k, v in to_original(depth_file.depth_rules(), reference.state_dict()).items()}
    assert set(DEPTH_ORIGINAL_NAMES) <= set(shapes)
    name, config = depth_file.depth_file_config(shapes, f"depth_anything_v2_{encoder}_fp16.safetensors")
    assert name == encoder and config.depth_estimation_type == "relative"
    assert config.backbone_config.image_size == 518 and config.backbone_config.out_indices == out_indices
    assert config.backbone_config.num_attention_heads == heads
    derived = build_on_meta(lambda: DepthAnythingForDepthEstimation(config))
    assert _shapes(derived) == _shapes(reference)
    assert sum(p.numel() for p in derived.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)


def test_listing_patterns_pick_sam2_and_depth_anything_v2_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "folder_paths", None)
    for rel in ("sam2/sam2.1_hiera_large.safetensors", "sam2/kijai/sam2_hiera_small.safetensors",
                "sam2/other/sam_vit_h.safetensors", "depthanything/depth_anything_v2_vitl_fp32.safetensors",
                "depthanything/depth_anything_vitl14.safetensors", "depthanything/da3_large.safetensors"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert model_folders.list_models("sam2") == ["sam2.1_hiera_large.safetensors", "kijai/sam2_hiera_small.safetensors"]
    assert model_folders.list_models("depth") == ["depth_anything_v2_vitl_fp32.safetensors"]
    assert model_folders.resolve_model("depth", "depth_anything_v2_vitl_fp32.safetensors") == \
        (tmp_path / "depthanything" / "depth_anything_v2_vitl_fp32.safetensors").resolve()


# --------------------------------------------------------------------------- original semantics (independent oracles)


def _original_dinov2_block(t: dict, i: int, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Block ``i`` of the original DINOv2 computed from a file's tensors as that code does: one fused ``qkv``
    projection read as (3, heads, head width) on its output channels, layer scales ``ls1/ls2.gamma``, and an
    MLP ``fc1 -> GELU -> fc2`` or SwiGLU ``w12`` (chunk 1 gated by SiLU times chunk 2) ``-> w3``."""
    import torch.nn.functional as F

    p = f"pretrained.blocks.{i}."
    b, n, c = x.shape
    h = F.layer_norm(x, (c,), t[p + "norm1.weight"], t[p + "norm1.bias"], eps=1e-6)
    qkv = F.linear(h, t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
    h = (att @ v).transpose(1, 2).reshape(b, n, c)
    x = x + t[p + "ls1.gamma"] * F.linear(h, t[p + "attn.proj.weight"], t[p + "attn.proj.bias"])
    h = F.layer_norm(x, (c,), t[p + "norm2.weight"], t[p + "norm2.bias"], eps=1e-6)
    if p + "mlp.w12.weight" in t:
        x1, x2 = F.linear(h, t[p + "mlp.w12.weight"], t[p + "mlp.w12.bias"]).chunk(2, dim=-1)
        h = F.linear(F.silu(x1) * x2, t[p + "mlp.w3.weight"], t[p + "mlp.w3.bias"])
    else:
        h = F.linear(F.gelu(F.linear(h, t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"])),
                     t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"])
    return x + t[p + "ls2.gamma"] * h


@pytest.mark.parametrize("swiglu", [False, True], ids=["mlp", "swiglu"])
def test_loaded_encoder_blocks_compute_the_original_dinov2_blocks(models_dir, tmp_path, swiglu):
    from safetensors.torch import load_file

    path = tmp_path / "depth_anything_v2_tinytest_block.safetensors"
    _save_original(depth_file.depth_rules(swiglu=swiglu), _tiny_depth_model(seed=3, swiglu=swiglu), path)
    tensors = load_file(str(path))
    model = depth_file.load_depth_file(path)
    x = torch.randn(2, 5, TINY_DEPTH[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(TINY_DEPTH[1]):
            out = model.backbone.encoder.layer[i](x)
            out = out[0] if isinstance(out, tuple) else out
            torch.testing.assert_close(out, _original_dinov2_block(tensors, i, x, heads=1), rtol=1e-5, atol=1e-5)


def test_loaded_sam2_parts_compute_the_original_parts(models_dir):
    """The object-pointer MLP applies ``layers.0``, ``layers.1``, ``layers.2`` in order with ReLU between, and the
    prompt encoder's point table is ``point_embeddings.0..3`` in label order (negative, positive, box corners)."""
    import torch.nn.functional as F
    from safetensors.torch import load_file

    path = models_dir / "sam2" / SAM2_FILE
    t = load_file(str(path))
    model = sam2_file.load_sam2_file(path)
    x = torch.randn(3, t["obj_ptr_proj.layers.0.weight"].shape[1], generator=torch.Generator().manual_seed(0))
    ref = x
    for j in range(3):
        ref = F.linear(ref, t[f"obj_ptr_proj.layers.{j}.weight"], t[f"obj_ptr_proj.layers.{j}.bias"])
        ref = F.relu(ref) if j < 2 else ref
    with torch.no_grad():
        torch.testing.assert_close(model.object_pointer_proj(x), ref, rtol=1e-5, atol=1e-5)
    table = model.prompt_encoder.point_embed.weight
    for label in range(4):
        assert torch.equal(table[label], t[f"sam_prompt_encoder.point_embeddings.{label}.weight"][0])
    assert torch.equal(model.shared_image_embedding.positional_embedding,
                       t["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])
