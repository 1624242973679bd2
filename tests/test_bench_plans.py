"""Every sweep plan in ``bench/plans`` names real settings, so a GPU sitting never fails on a typo."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
PLANS = sorted((BENCH / "plans").glob("*.json"))


def _bench_module(name: str):
    """A script of ``bench/`` imported as a module (its folder on the path only while it loads)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def sweep():
    return _bench_module("posed_frames_sweep")


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_plan_runs_build_their_configs(sweep, plan):
    runs = json.loads(plan.read_text())
    assert isinstance(runs, list) and runs
    base = sweep.CoarseToFineConfig()
    known = {"name", "base", "fine", "coarse", "profile", "profile_coarse", "sets_as_list", "estimate", "checkpoints"}
    for run in runs:
        assert set(run) <= known, (plan.name, run.get("name"), set(run) - known)
        assert run.get("base", "engine") in ("engine", "posed_frames", "diffusion4d"), (plan.name, run["name"])
        coarse = sweep.apply_changes(replace(base.coarse), run.get("coarse", {}))
        fine = sweep.apply_changes(replace(base.fine), run.get("fine", {}))
        for key, value in run.get("fine", {}).items():
            if not isinstance(value, dict):
                assert getattr(fine, key) == value, (plan.name, run["name"], key)
        assert coarse.iterations >= 1 and fine.iterations >= 1


def test_a_misspelt_setting_is_refused(sweep):
    with pytest.raises(TypeError, match="time_smoothnes"):
        sweep.apply_changes(sweep.CoarseToFineConfig().fine, {"time_smoothnes_weight": 0.01})


@pytest.fixture(scope="module")
def fit_bench():
    return _bench_module("fit_bench")


def test_fit_bench_changes_name_the_stages_of_the_cases_run(fit_bench):
    changes = fit_bench.checked_changes('{"static": {"densify": {"grad_threshold": 0.0001}}}', ["static"])
    cfg = fit_bench.apply_changes(fit_bench.StaticFitConfig(), changes["static"])
    assert cfg.densify.grad_threshold == 0.0001 and cfg.iterations == fit_bench.StaticFitConfig().iterations
    assert set(fit_bench.checked_changes('{"coarse": {}, "deformation": {}}', ["orbital", "coco4d_fg"])) == {
        "coarse", "deformation"}
    with pytest.raises(ValueError, match="fine"):
        fit_bench.checked_changes('{"fine": {"iterations": 10}}', ["static", "coco4d_fg"])
    with pytest.raises(ValueError, match="object"):
        fit_bench.checked_changes('{"static": 3}', ["static"])


def test_fit_bench_pairs_its_ab_runs_side_by_side(fit_bench):
    a = [{"seconds": 30.0, "heldout_psnr": 29.0, "gaussians": 7000}, {"seconds": 34.0, "heldout_psnr": 28.6,
                                                                      "gaussians": 7100}]
    b = [{"seconds": 27.5, "heldout_psnr": 29.1, "gaussians": 7050}, {"seconds": 32.5, "heldout_psnr": 28.4,
                                                                      "gaussians": 7000}]
    out = fit_bench.paired_differences("orbital", a, b)
    # a load that slowed the second pair by 4 s does not hide the 1.5 to 2.5 s the variant saves in each pair
    assert out["seconds"]["min"] == pytest.approx(-2.5) and out["seconds"]["max"] == pytest.approx(-1.5)
    assert out["seconds"]["mean"] == pytest.approx(-2.0)
    assert out["heldout_psnr"]["mean"] == pytest.approx(-0.05)
    assert "gaussians" not in out and out["runs"] == 2
    with pytest.raises(ValueError, match="2 a runs against 1 b"):
        fit_bench.paired_differences("orbital", a, b[:1])


def _views(n: int = 4, masks: bool = False):
    from gen4d.core.engine.cameras import Cameras
    from gen4d.core.engine.views import PosedImages

    cameras = Cameras(torch.eye(4).expand(n, 4, 4).clone(), torch.diag(torch.tensor([20.0, 20.0, 1.0])).expand(
        n, 3, 3).clone(), 16, 16, torch.linspace(0, 1, n))
    return PosedImages(torch.rand(n, 16, 16, 3), cameras, torch.ones(n, 16, 16) if masks else None)


@pytest.mark.parametrize("masks", [False, True])
def test_the_engine_defaults_are_what_the_posed_frames_workflow_fits_with(sweep, masks):
    """CoarseToFineConfig() (the posed-frames benches' engine path) is PosedFrames4D.json's fit stages as its
    nodes build them, so the figures measured on the engine are what a user's run of the workflow gets."""
    from gen4d.core.engine.fit_dynamic import fine_stage_densify

    engine, shipped = sweep.CoarseToFineConfig(), sweep.workflow_base(_views(masks=masks), "posed_frames")
    skip = {"pose_sampling", "sds_weight", "preview_every"}  # unused without guidance; previews are the UI's
    for stage in ("coarse", "fine"):
        a, b = getattr(engine, stage), getattr(shipped, stage)
        differ = {f: (getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__
                  if f not in skip and getattr(a, f) != getattr(b, f)}
        assert not differ, (stage, differ)
    assert (engine.coarse.iterations, engine.coarse.views_per_step) == (3000, 4)
    assert (engine.fine.iterations, engine.fine.times_per_step) == (5500, 8)
    assert engine.fine.densify == fine_stage_densify(5500) and not engine.fine.freeze_canonical


def test_the_diffusion4d_base_is_what_the_shipped_workflow_fits_with(sweep):
    from gen4d.core.engine.fit_dynamic import fine_stage_densify
    from gen4d.core.engine.fit_options import FIT_PRESETS

    base = sweep.workflow_base(_views(), "diffusion4d")
    coarse, fine = FIT_PRESETS["diffusion4d_coarse"], FIT_PRESETS["diffusion4d_fine"]
    assert (base.coarse.iterations, base.coarse.views_per_step) == (5000, 4)
    assert (base.fine.iterations, base.fine.times_per_step) == (2000, 8)
    assert base.fine.densify == fine_stage_densify(2000) and not base.fine.freeze_canonical
    assert base.coarse.learning_rates == coarse.learning_rates and base.coarse.lr_scale_with_extent
    assert base.fine.time_smoothness_weight == fine.time_smoothness_weight
    assert base.fine.lr_final_ratio == fine.lr_final_ratio
    assert base.fine.loss.depth_smoothness == fine.loss.depth_smoothness


def test_a_stage_profile_opens_at_its_step_and_undoes_its_phase_ranges(fit_bench, capsys):
    from gen4d.backends.render import training_render
    from gen4d.core.engine.cameras import diffusion4d_orbit
    from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig, fit_coarse_to_fine
    from gen4d.core.engine.gaussians import sphere_init
    from gen4d.core.engine.views import PosedImages

    profile = _bench_module("fit_profile")
    cams = diffusion4d_orbit(16, 16, 4, dynamic=True)
    views = PosedImages(torch.rand(4, 16, 16, 3, generator=torch.Generator().manual_seed(0)), cams)
    base = CoarseToFineConfig()
    cfg = CoarseToFineConfig(coarse=replace(base.coarse, iterations=4, densify=None, preview_every=0),
                             fine=replace(base.fine, iterations=3, times_per_step=2, densify=None, preview_every=0))
    each, each_without_depth = training_render.each, training_render.without_depth.each
    window = profile.StageProfile(cfg.coarse.iterations, torch.device("cpu"))
    assert training_render.each is not each  # the phases are wrapped while the fit runs
    try:
        fit_coarse_to_fine(sphere_init(200, 0.5, generator=torch.Generator().manual_seed(0)), views,
                           training_render, None, cfg, window.step, device="cpu")
    finally:
        window.close()
    assert training_render.each is each and training_render.without_depth.each is each_without_depth
    out = capsys.readouterr().out
    assert "3 steps profiled" in out, out[-2000:]
    for phase in ("deformation", "render", "backward", "optimiser"):
        assert f"  {phase} " in out, phase
