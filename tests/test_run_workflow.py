# SPDX-License-Identifier: Apache-2.0
"""The headless runner executes shipped workflows with the pack's nodes and writes under --out only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_workflow import WorkflowError, main, run_workflow
from workflow_checker import is_runnable, load_workflow

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
RUNNABLE = [p for p in WORKFLOWS if is_runnable(load_workflow(p))]
ORBIT = ROOT / "example_workflows" / "Gen4D_SyntheticOrbit.json"


def test_runner_writes_outputs_and_applies_overrides(tmp_path, one_thread):
    wf = load_workflow(ORBIT)
    world = next(n for n in wf["nodes"] if n["type"] == "Gen4D_SyntheticWorld")
    cams = next(n for n in wf["nodes"] if n["type"] == "Gen4D_CameraPath")
    results = run_workflow(ORBIT, tmp_path / "out", overrides={f"{cams['id']}.num_frames": 3,
                                                                f"{world['id']}.twin_points": 500,
                                                                f"{world['id']}.num_frames": 3})
    images = results[str(world["id"])][0]
    assert images.shape[0] == 3, "the override reached the node"
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert any(f.endswith(".webp") for f in files), files
    assert any(f.endswith(".gen4d.safetensors") for f in files), files
    assert sum(f.endswith(".ply") for f in files) == 3
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*")), "no temp files left"


def test_runner_rejects_what_it_cannot_run(tmp_path):
    api = {"1": {"class_type": "KSampler", "inputs": {}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    with pytest.raises(WorkflowError, match="cannot execute"):
        run_workflow(api, tmp_path)
    with pytest.raises(WorkflowError, match="no output node"):
        run_workflow({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}, tmp_path)
    cycle = {"1": {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": 1}},
             "2": {"class_type": "ImageFromBatch", "inputs": {"image": ["1", 0], "batch_index": 0, "length": 1}},
             "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(WorkflowError, match="cycle"):
        run_workflow(cycle, tmp_path)
    with pytest.raises(WorkflowError, match="no node '99'"):
        run_workflow(ORBIT, tmp_path, overrides={"99.seed": 1})


def test_cli_reports_errors_with_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "NotANode", "inputs": {}}}))
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main([str(ORBIT), "--out", str(tmp_path / "o"), "--set", "nonsense"]) == 2


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_runnable_workflows_run_headless(path, tmp_path, one_thread):
    """Every workflow marked runnable runs; ``extra.gen4d.test_overrides`` shrinks it for CI."""
    overrides = load_workflow(path).get("extra", {}).get("gen4d", {}).get("test_overrides", {})
    results = run_workflow(path, tmp_path / "out", overrides=overrides)
    assert results
    assert any(p.is_file() for p in (tmp_path / "out").rglob("*")), "the workflow saved nothing"


def test_a_second_run_into_the_same_folder_keeps_the_first_files(tmp_path, one_thread):
    wf = load_workflow(ORBIT)
    world = next(n for n in wf["nodes"] if n["type"] == "Gen4D_SyntheticWorld")
    cams = next(n for n in wf["nodes"] if n["type"] == "Gen4D_CameraPath")
    small = {f"{cams['id']}.num_frames": 2, f"{world['id']}.num_frames": 2, f"{world['id']}.twin_points": 200}
    run_workflow(ORBIT, tmp_path, overrides=small)
    run_workflow(ORBIT, tmp_path, overrides=small)
    assert len(list(tmp_path.rglob("*.webp"))) == 2, "numbered files are never reused"


def test_posed_frames_workflow_fits_an_exported_dataset(tmp_path, one_thread):
    """PosedFrames4D.json end to end on a tiny D-NeRF-layout dataset in the input folder: both splits load, the
    sphere init is fitted to the cameras, and the test views render beside their frames."""
    from gen4d import synthetic
    from gen4d.synthetic.export_posed import export_dnerf

    inputs = tmp_path / "input"
    export_dnerf(synthetic.object_world(0), inputs / "toy", num_train=8, num_test=2, size=24, supersample=1, seed=0)
    path = ROOT / "example_workflows" / "PosedFrames4D.json"
    ids = {n.get("title", n["type"]): n["id"] for n in load_workflow(path)["nodes"]}
    loaders = [n["id"] for n in load_workflow(path)["nodes"] if n["type"] == "Gen4D_LoadPosedFrames"]
    fits = [n for n in load_workflow(path)["nodes"] if n["type"] in ("Gen4D_StaticGaussians", "Gen4D_DeformationFit")]
    # the loader composites the frames on the background: masks would make the fits composite their targets twice
    assert all(i.get("link") is None for n in fits for i in n["inputs"] if i["name"] == "masks")
    static = next(v for k, v in ids.items() if k.startswith("Coarse: static"))
    fine = next(v for k, v in ids.items() if k.startswith("Fine: deformation"))
    overrides = {**{f"{i}.path": "toy" for i in loaders}, f"{static}.iterations": 12, f"{static}.num_points": 300,
                 f"{fine}.iterations": 6}
    results = run_workflow(path, tmp_path / "out", overrides=overrides, input_dir=inputs)
    batch = results[str(next(n["id"] for n in load_workflow(path)["nodes"] if n["type"] == "ImageBatch"))][0]
    assert batch.shape == (4, 24, 24, 3), "2 test renders followed by the 2 test frames"
    files = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(f.endswith(".gen4d.safetensors") for f in files) and any(f.endswith(".webp") for f in files), files


def test_posed_frames_workflow_reads_a_capture_without_split_lists(tmp_path, one_thread):
    """A single transforms.json with no split lists (what ns-process-data writes) and a mask on one frame:
    the workflow's test-split loader gets nerfstudio's held-out frame (10 frames: 9 train, 1 held out) and the
    mask reaches both fits as pixels to ignore."""
    import json

    import numpy as np
    from gen4d import synthetic
    from gen4d.synthetic.export_posed import export_dnerf
    from PIL import Image

    inputs = tmp_path / "input"
    export_dnerf(synthetic.object_world(0), inputs / "cap", num_train=10, num_test=1, size=24, supersample=1, seed=0)
    data = json.loads((inputs / "cap" / "transforms_train.json").read_text())
    for split in ("train", "test"):
        (inputs / "cap" / f"transforms_{split}.json").unlink()
    keep = np.full((24, 24), 255, np.uint8)
    keep[:, :6] = 0
    Image.fromarray(keep, "L").save(inputs / "cap" / "mask.png")
    data["frames"][3]["mask_path"] = "mask.png"
    (inputs / "cap" / "transforms.json").write_text(json.dumps(data))
    path = ROOT / "example_workflows" / "PosedFrames4D.json"
    nodes = load_workflow(path)["nodes"]
    loaders = [n["id"] for n in nodes if n["type"] == "Gen4D_LoadPosedFrames"]
    static = next(n["id"] for n in nodes if n["type"] == "Gen4D_StaticGaussians")
    fine = next(n["id"] for n in nodes if n["type"] == "Gen4D_DeformationFit")
    assert all(any(i["name"] == "ignore_mask" and i.get("link") is not None for i in n["inputs"])
               for n in nodes if n["id"] in (static, fine)), "the loader's ignore output reaches both fits"
    overrides = {**{f"{i}.path": "cap" for i in loaders}, f"{static}.iterations": 8, f"{static}.num_points": 300,
                 f"{fine}.iterations": 4}
    results = run_workflow(path, tmp_path / "out", overrides=overrides, input_dir=inputs)
    train_loader = next(i for i in loaders if results[str(i)][0].shape[0] == 9)
    assert results[str(train_loader)][4].shape == (9, 24, 24) and results[str(train_loader)][4].max() == 1.0
    batch = results[str(next(n["id"] for n in nodes if n["type"] == "ImageBatch"))][0]
    assert batch.shape == (2, 24, 24, 3), "the held-out frame's render followed by the frame"
