"""Every sweep plan in ``bench/plans`` names real settings, so a GPU sitting never fails on a typo."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

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
    known = {"name", "base", "fine", "coarse", "profile", "sets_as_list", "estimate", "checkpoints"}
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
