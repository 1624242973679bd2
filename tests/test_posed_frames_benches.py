"""The posed-frames bench and sweep run end to end on a small export of the scene world (CPU smoke runs).

The GPU sittings run them at full size on the object world; here they must start, fit and score a world
whose cameras do not look at the origin.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pf_scene")
    _run(str(BENCH / "posed_frames_bench.py"), "--export-synthetic", str(folder), "--world", "scene",
         "--frames", "24", "--test-frames", "2", "--size", "24", "--supersample", "1")
    return folder


@pytest.mark.parametrize("via", ["engine", "nodes"])
def test_bench_fits_and_scores(dataset, tmp_path, via):
    out = tmp_path / "row.json"
    _run(str(BENCH / "posed_frames_bench.py"), str(dataset), "--coarse-iterations", "3", "--fine-iterations", "2",
         "--init-points", "300", "--device", "cpu", "--via", via, "--json", str(out))
    row = json.loads(out.read_text())
    assert row["via"] == via and row["train_frames"] == 24
    if via == "nodes":  # the shipped workflow's Gen4D_FitOptions presets reach the fit nodes
        assert row["workflow"] == "PosedFrames4D.json"
        assert [o.split()[0] for o in row["fit_options"].values()] == ["posed_frames_coarse", "posed_frames_fine"]
    assert row["coarse_iterations"] == 3 and row["fine_iterations"] == 2
    assert row["test_psnr"] > 0 and row["coarse_only_psnr"] > 0


def test_bench_takes_what_the_workflow_links_points_and_pixels_to_ignore(dataset, tmp_path):
    """A dataset naming a point cloud and a frame's mask (ignoring its top half): the bench starts from the
    points and fits with the mask through the nodes, as PosedFrames4D.json links them."""
    import shutil

    import numpy as np
    from gen4d.core.formats.ply import save_points_ply
    from PIL import Image

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    data = json.loads((copy / "transforms_train.json").read_text())
    w = Image.open(copy / (data["frames"][0]["file_path"] + ".png")).size[0]
    keep = np.full((w, w), 255, np.uint8)
    keep[: w // 2] = 0
    Image.fromarray(keep, "L").save(copy / "mask0.png")
    data["frames"][0]["mask_path"] = "mask0.png"
    rng = np.random.default_rng(0)
    save_points_ply(rng.normal(0, 0.3, (200, 3)).astype(np.float32), rng.uniform(0, 1, (200, 3)).astype(np.float32),
                    copy / "points.ply")
    data["ply_file_path"] = "points.ply"
    (copy / "transforms_train.json").write_text(json.dumps(data))
    printed = _run(str(BENCH / "posed_frames_bench.py"), str(copy), "--coarse-iterations", "3", "--fine-iterations",
                   "2", "--device", "cpu", "--via", "nodes")
    assert "init the dataset's 200 structure-from-motion points" in printed, printed[-1500:]


def test_sweep_runs_a_plan(dataset, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"name": "tiny", "coarse": {"iterations": 3},
                                 "fine": {"iterations": 2, "times_per_step": 2}},
                                {"name": "tiny, as Diffusion4D", "base": "diffusion4d", "coarse": {"iterations": 3},
                                 "fine": {"iterations": 2}},
                                {"name": "tiny, profiled", "profile_coarse": True, "profile": True,
                                 "coarse": {"iterations": 3}, "fine": {"iterations": 2, "times_per_step": 2}}]))
    out = tmp_path / "rows.json"
    printed = _run(str(BENCH / "posed_frames_sweep.py"), str(dataset), str(plan), "--init-points", "300",
                   "--device", "cpu", "--json", str(out))
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["tiny", "tiny, as Diffusion4D", "tiny, profiled"]
    assert [r["base"] for r in rows] == ["engine", "diffusion4d", "engine"] and all(r["psnr"] > 0 for r in rows)
    phases = re.findall(r"^  (\S[^\n]*?)\s+[0-9.]+ ms host per step", printed, re.MULTILINE)
    assert {"render", "loss", "densify", "backward"} <= set(phases)  # the coarse stage's phases
    assert "deformation" in phases  # the fine stage's


def test_test_psnr_leaves_ignored_pixels_out():
    """Changing the truth only where it is ignored leaves the score as it was; a fully kept mask scores as
    no mask does."""
    import torch

    sys.path.insert(0, str(BENCH))
    import posed_frames_bench as bench
    from gen4d.core.engine.cameras import diffusion4d_orbit
    from gen4d.core.engine.gaussians import sphere_init
    from gen4d.core.engine.scene import Scene4D

    cams = diffusion4d_orbit(16, 16, 2, dynamic=False)
    scene = Scene4D.static(sphere_init(200, 0.5, generator=torch.Generator().manual_seed(0)))
    truth = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    ignore = torch.zeros(2, 16, 16)
    ignore[:, :6] = 1.0
    painted = truth.clone()
    painted[:, :6] = torch.tensor([1.0, 0.0, 0.0])
    white, cpu = (1.0, 1.0, 1.0), torch.device("cpu")
    first, _ = bench.score(scene, cams, truth, white, cpu, ignore)
    second, _ = bench.score(scene, cams, painted, white, cpu, ignore)
    assert first["psnr"] == pytest.approx(second["psnr"], abs=1e-5)
    assert bench.score(scene, cams, painted, white, cpu)[0]["psnr"] != pytest.approx(second["psnr"], abs=0.1)
    kept, _ = bench.score(scene, cams, truth, white, cpu, torch.zeros(2, 16, 16))
    assert kept["psnr"] == pytest.approx(bench.score(scene, cams, truth, white, cpu)[0]["psnr"], abs=1e-4)
