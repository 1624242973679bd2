# SPDX-License-Identifier: Apache-2.0
"""The shipped model workflows run end to end through the real loaders on tiny random-weight models.

The models produce noise: these runs check wiring, shapes, the loading code and that every output
is written, not quality (the synthetic twins of the workflows measure quality).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from make_tiny_models import make_tiny_models
from PIL import Image
from run_workflow import run_workflow
from workflow_checker import load_workflow

ROOT = Path(__file__).resolve().parents[1]


def _ids(path: Path) -> dict[str, str]:
    """Node type -> id (the first node of each type)."""
    out: dict[str, str] = {}
    for node in load_workflow(path)["nodes"]:
        out.setdefault(node["type"], str(node["id"]))
    return out


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny_models(root, ["depth", "depth_metric", "trajectory", "video_inpaint_wan_vace"])
    inputs = tmp_path_factory.mktemp("inputs")
    pixels = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(inputs / "example.png")
    return root, inputs


def test_moge4d_workflow_runs_on_tiny_models(tiny_env, tmp_path, monkeypatch, one_thread):
    root, inputs = tiny_env
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(root))
    path = ROOT / "example_workflows" / "MoGe4D.json"
    ids = _ids(path)
    small = {"num_frames": 5, "width": 64, "height": 48}
    overrides = {
        f"{ids['Gen4D_DepthLoader']}.model_name": "depth_metric-tiny",  # MoGe4D lifts metric depth
        f"{ids['Gen4D_TrajectoryModelLoader']}.model": "trajectory-tiny",
        f"{ids['Gen4D_VideoInpaintModelLoader']}.model": "video_inpaint_wan_vace-tiny",
        **{f"{ids['Gen4D_TrajectoryDiT']}.{k}": v for k, v in {**small, "steps": 2}.items()},
        **{f"{ids['Gen4D_CameraPath']}.{k}": v for k, v in small.items()},
        f"{ids['Gen4D_ViSMRender']}.steps": 2,
    }
    results = run_workflow(path, tmp_path / "out", overrides=overrides, input_dir=inputs)
    tracks = results[ids["Gen4D_TrajectoryDiT"]][0]
    assert tracks.points.shape == (5, 48, 64, 3)
    frames = results[ids["Gen4D_ViSMRender"]][0]
    assert frames.shape == (5, 48, 64, 3)
    out = tmp_path / "out"
    assert len(list(out.rglob("*.mp4"))) == 1
    assert len(list(out.rglob("*.ply"))) == 5


def test_coco4d_workflow_runs_on_tiny_models(tiny_env, tmp_path, monkeypatch, one_thread):
    root, inputs = tiny_env
    make_tiny_models(root, ["video_wan_i2v", "sam2_video", "guidance_zero123", "inpaint_sd", "guidance_sd"])
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(root))
    path = ROOT / "example_workflows" / "CoCo4D.json"
    ids = _ids(path)
    small = {"width": 32, "height": 32}
    overrides = {
        f"{ids['Gen4D_VideoModelLoader']}.model": "video_wan_i2v-tiny",
        f"{ids['Gen4D_SAM2Loader']}.model_name": "sam2_video-tiny",
        f"{ids['Gen4D_DepthLoader']}.model_name": "depth-tiny",
        f"{ids['Gen4D_InpaintModelLoader']}.model": "inpaint_sd-tiny",
        f"{ids['Gen4D_VideoInpaintModelLoader']}.model": "video_inpaint_wan_vace-tiny",
        f"{ids['Gen4D_Zero123GuidanceLoader']}.model": "guidance_zero123-tiny",
        f"{ids['Gen4D_SDGuidanceLoader']}.model": "guidance_sd-tiny",
        **{f"{ids['Gen4D_I2VReference']}.{k}": v for k, v in {**small, "num_frames": 5, "steps": 2}.items()},
        f"{ids['Gen4D_SAM2Split']}.points": "[[16, 16]]",
        f"{ids['Gen4D_StaticGaussians']}.iterations": 4, f"{ids['Gen4D_StaticGaussians']}.num_points": 300,
        f"{ids['Gen4D_DeformationFit']}.iterations": 3, f"{ids['Gen4D_DeformationFit']}.trajectory_iterations": 2,
        **{f"{ids['Gen4D_ProgressiveOutpaint']}.{k}": v for k, v in {
            "static_iterations": 2, "deformation_iterations": 2, "static_iterations_per_pose": 1,
            "deformation_iterations_per_pose": 1, "lift_size": 32, "loops": 1, "inpaint_steps": 2,
            "video_inpaint_steps": 2}.items()},
        **{f"{ids['Gen4D_CameraPath']}.{k}": v for k, v in {**small, "num_frames": 3}.items()},
    }
    results = run_workflow(path, tmp_path / "out", overrides=overrides, input_dir=inputs)
    frames = results[ids["Gen4D_Render"]][0]
    assert frames.shape == (3, 32, 32, 3)
    scene = results[ids["Gen4D_Compose"]][0]
    assert {p.name for p in scene.parts} == {"foreground", "background"}
    out = tmp_path / "out"
    assert len(list(out.rglob("*.mp4"))) == 1
    assert len(list(out.rglob("*.gen4d.safetensors"))) == 1
