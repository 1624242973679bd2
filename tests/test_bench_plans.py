"""Every sweep plan in ``bench/plans`` names real settings, so a GPU sitting never fails on a typo."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
PLANS = sorted((BENCH / "plans").glob("*.json"))


@pytest.fixture(scope="module")
def sweep():
    sys.path.insert(0, str(BENCH))
    try:
        import posed_frames_sweep
    finally:
        sys.path.remove(str(BENCH))
    return posed_frames_sweep


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_plan_runs_build_their_configs(sweep, plan):
    runs = json.loads(plan.read_text())
    assert isinstance(runs, list) and runs
    base = sweep.CoarseToFineConfig()
    known = {"name", "base", "fine", "coarse", "profile", "profile_coarse", "sets_as_list", "estimate", "checkpoints"}
    for run in runs:
        assert set(run) <= known, (plan.name, run.get("name"), set(run) - known)
        assert run.get("base", "engine") in ("engine", "workflow"), (plan.name, run["name"])
        coarse = sweep.apply_changes(replace(base.coarse), run.get("coarse", {}))
        fine = sweep.apply_changes(replace(base.fine), run.get("fine", {}))
        for key, value in run.get("fine", {}).items():
            if not isinstance(value, dict):
                assert getattr(fine, key) == value, (plan.name, run["name"], key)
        assert coarse.iterations >= 1 and fine.iterations >= 1


def test_a_misspelt_setting_is_refused(sweep):
    with pytest.raises(TypeError, match="time_smoothnes"):
        sweep.apply_changes(sweep.CoarseToFineConfig().fine, {"time_smoothnes_weight": 0.01})


def test_the_workflow_base_is_what_the_shipped_workflow_fits_with(sweep):
    from gen4d.core.engine.cameras import Cameras
    from gen4d.core.engine.fit_dynamic import fine_stage_densify
    from gen4d.core.engine.fit_options import FIT_PRESETS
    from gen4d.core.engine.views import PosedImages

    n = 4
    cameras = Cameras(torch.eye(4).expand(n, 4, 4).clone(), torch.diag(torch.tensor([20.0, 20.0, 1.0])).expand(
        n, 3, 3).clone(), 16, 16, torch.linspace(0, 1, n))
    base = sweep.workflow_base(PosedImages(torch.rand(n, 16, 16, 3), cameras))
    coarse, fine = FIT_PRESETS["diffusion4d_coarse"], FIT_PRESETS["diffusion4d_fine"]
    assert (base.coarse.iterations, base.coarse.views_per_step) == (5000, 4)
    assert (base.fine.iterations, base.fine.times_per_step) == (2000, 16)
    assert base.fine.densify == fine_stage_densify(2000) and not base.fine.freeze_canonical
    assert base.coarse.learning_rates == coarse.learning_rates and base.coarse.lr_scale_with_extent
    assert base.fine.time_smoothness_weight == fine.time_smoothness_weight
    assert base.fine.lr_final_ratio == fine.lr_final_ratio
    assert base.fine.loss.depth_smoothness == fine.loss.depth_smoothness
