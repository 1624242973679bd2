# SPDX-License-Identifier: Apache-2.0
"""Fit options (core/engine/fit_options.py, Gen4D_FitOptions): the papers' presets, the overrides, what the fit
nodes optimise with them, and the Diffusion4D workflows running the paper's construction."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import gen4d
import pytest
import torch
from gen4d.core.engine.fit_dynamic import DeformationFitConfig
from gen4d.core.engine.fit_options import FIT_PRESETS, FitOptions
from gen4d.core.engine.fit_static import StaticFitConfig
from gen4d.nodes import fit as fit_nodes

pytestmark = pytest.mark.usefixtures("one_thread")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import run  # noqa: E402
from workflow_checker import load_workflow, ui_to_api  # noqa: E402

WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows"
SIZE, FRAMES = 32, 3


# --------------------------------------------------------------------------- the presets


def test_presets_carry_the_papers_numbers():
    fg = FIT_PRESETS["coco4d_foreground"]  # CoCo4D App. A Table 3, eqs. 1 and 3 (L2)
    lr = fg.learning_rates
    assert (lr.feature, lr.scaling, lr.opacity, lr.rotation) == (0.01, 0.005, 0.05, 0.005)
    # Table 3's position_lr 1e-3 (final 2e-5 at step 500) times the sphere start's spatial scale 10 (DreamGaussian)
    assert (lr.position, lr.position * lr.position_final_ratio, lr.position_decay_steps) == pytest.approx(
        (0.01, 0.0002, 500))
    canonical = FitOptions("coco4d_foreground").deformation_config(DeformationFitConfig()).canonical_learning_rates
    assert canonical.position == pytest.approx(0.001), "a deformation fit's canonical set is a given start"
    assert (fg.deformation_lr, fg.grid_lr, fg.iterations) == (0.00064, 0.0064, 1000)
    assert (fg.loss.l2, fg.loss.l1, fg.loss.mask) == (1.0, 0.0, 1.0)
    bg = FIT_PRESETS["coco4d_background"]  # Table 4, §3.2 (L1 + HexPlane TV)
    assert (bg.deformation_lr, bg.grid_lr, bg.iterations) == (0.0064, 0.064, 300)
    assert (bg.loss.l1, bg.loss.l2, bg.loss.mask) == (1.0, 0.0, 0.0) and bg.tv_weight > 0
    for name, iterations in (("diffusion4d_coarse", 5000), ("diffusion4d_fine", 2000)):  # §3.4, §4.1
        p = FIT_PRESETS[name]
        assert p.loss.l1 > 0 and p.loss.lpips > 0 and p.loss.depth_smoothness > 0, name
        assert p.loss.l2 == p.loss.dssim == p.loss.mask == 0.0, name
        assert p.loss.depth_smoothness_mode == "regnerf", "RegNeRF's plain depth smoothness, ref. [25]"
        assert p.iterations == iterations
    for name in ("diffusion4d_coarse", "diffusion4d_fine", "4dgs_default"):  # the 4DGS release [46]
        p = FIT_PRESETS[name]
        lr = p.learning_rates
        got = (lr.position, lr.position * lr.position_final_ratio, lr.feature, lr.opacity, lr.scaling, lr.rotation)
        assert got == pytest.approx((0.00016, 0.0000016, 0.0025, 0.05, 0.005, 0.001)), name
        assert (p.deformation_lr, p.grid_lr) == (0.00016, 0.0016)
        assert (p.tv_weight, p.time_smoothness_weight, p.time_l1_weight) == (1e-4, 0.01, 1e-4)
        assert (p.hexplane.base_resolution, p.hexplane.multires, p.hexplane.time_resolution) == (64, (1, 2), 25)
    for name in ("diffusion4d_fine", "4dgs_default"):  # 4DGS: deformation 1.6e-4 -> 1.6e-5, grid 1.6e-3 -> 1.6e-4
        assert FIT_PRESETS[name].lr_final_ratio == 0.1
        assert FitOptions(name).deformation_config(DeformationFitConfig()).lr_final_ratio == 0.1
    for name in ("coco4d_foreground", "coco4d_background"):  # constant rates in CoCo4D's tables
        assert FIT_PRESETS[name].lr_final_ratio is None
    four = FIT_PRESETS["4dgs_default"].loss
    assert (four.l1, four.lpips, four.dssim, four.l2) == (1.0, 0.0, 0.0, 0.0)


def test_coco4d_foreground_preset_is_what_the_fit_nodes_do_without_options():
    opts = FitOptions("coco4d_foreground")
    static, dynamic = StaticFitConfig(), DeformationFitConfig()
    assert opts.static_config(static) == static
    applied = opts.deformation_config(dynamic)
    for name in ("loss", "deformation_lr", "grid_lr", "hexplane", "adapt_time_resolution", "tv_weight",
                 "time_smoothness_weight", "time_l1_weight", "lr_final_ratio"):
        assert getattr(applied, name) == getattr(dynamic, name), name


def test_overrides_replace_only_what_they_name():
    opts = FitOptions("diffusion4d_fine", l1=0.5, lpips=0.0, mask=2.0, grid_lr=0.01, position_lr=0.002,
                      hexplane_resolution=16, hexplane_multires=(1,), time_resolution=8)
    cfg = opts.deformation_config(DeformationFitConfig(iterations=7), has_masks=True)
    assert (cfg.loss.l1, cfg.loss.lpips, cfg.loss.mask, cfg.loss.depth_smoothness) == (0.5, 0.0, 2.0, 0.1)
    assert (cfg.grid_lr, cfg.deformation_lr) == (0.01, 0.00016)
    assert (cfg.canonical_learning_rates.position, cfg.canonical_learning_rates.feature) == (0.002, 0.0025)
    assert (cfg.hexplane.base_resolution, cfg.hexplane.multires, cfg.hexplane.time_resolution) == (16, (1,), 8)
    assert not cfg.adapt_time_resolution and cfg.iterations == 7, "what options do not name stays the fit's"
    assert opts.deformation_config(DeformationFitConfig(), has_masks=False).loss.mask == 0.0
    assert FitOptions("diffusion4d_fine", lr_final_ratio=0.3).deformation_config(DeformationFitConfig()) \
        .lr_final_ratio == 0.3
    assert FitOptions("diffusion4d_fine", lr_final_ratio=1.0).deformation_config(DeformationFitConfig()) \
        .lr_final_ratio is None, "1 = constant rates"
    assert FitOptions("coco4d_foreground", lr_final_ratio=0.5).deformation_config(DeformationFitConfig()) \
        .lr_final_ratio == 0.5
    for ratio in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lr_final_ratio"):
            FitOptions("diffusion4d_fine", lr_final_ratio=ratio)
    for bad, match in ((dict(preset="nerf"), "preset must be one of"), (dict(l1=-0.5), "l1 must be"),
                       (dict(grid_lr=0.0), "grid_lr must be a finite number > 0"),
                       (dict(hexplane_multires=(0,)), "FitOptions: HexPlaneConfig: multires")):
        with pytest.raises(ValueError, match=match):
            FitOptions(**bad)


# --------------------------------------------------------------------------- the node


def test_fit_options_node(caplog, tmp_path, monkeypatch):
    (opts,) = run("Gen4D_FitOptions", preset="diffusion4d_fine")
    assert opts == FitOptions("diffusion4d_fine"), "-1 / 0 / empty keep every preset value"
    (opts,) = run("Gen4D_FitOptions", preset="4dgs_default", l1=0.3, dssim=0.0, grid_lr=0.002,
                  hexplane_resolution=32, hexplane_multires="1, 4", time_resolution=6)
    assert (opts.l1, opts.dssim, opts.grid_lr) == (0.3, 0.0, 0.002)
    assert (opts.hexplane_resolution, opts.hexplane_multires, opts.time_resolution) == (32, (1, 4), 6)
    (opts,) = run("Gen4D_FitOptions", preset="diffusion4d_fine", lr_final_ratio=0.25)
    assert opts.lr_final_ratio == 0.25 and opts.deformation_config(DeformationFitConfig()).lr_final_ratio == 0.25
    with pytest.raises(ValueError, match="Gen4D_FitOptions: .*lr_final_ratio"):
        run("Gen4D_FitOptions", preset="diffusion4d_fine", lr_final_ratio=0.0)
    cls = gen4d.NODE_CLASS_MAPPINGS["Gen4D_FitOptions"]
    assert list(cls.INPUT_TYPES()["required"])[-1] == "lr_final_ratio", "new widgets go last (saved workflows)"
    assert "hexplane_multires" in cls.VALIDATE_INPUTS(hexplane_multires="1,x")
    with pytest.raises(ValueError, match="hexplane_multires"):
        run("Gen4D_FitOptions", hexplane_multires="0")
    with caplog.at_level(logging.WARNING):
        run("Gen4D_FitOptions", preset="diffusion4d_coarse")
    assert any("LPIPS term is off" in r.getMessage() for r in caplog.records)
    # LPIPS weights are picked from models/gen4d/lpips (a local file; nothing is downloaded)
    from safetensors.torch import save_file

    (tmp_path / "gen4d" / "lpips").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "gen4d" / "lpips" / "alex.safetensors"))
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(tmp_path))
    assert "alex.safetensors" in cls.INPUT_TYPES()["required"]["lpips_weights"][0]
    (opts,) = run("Gen4D_FitOptions", preset="diffusion4d_coarse", lpips_weights="alex.safetensors")
    assert opts.loss().lpips_path == str((tmp_path / "gen4d" / "lpips" / "alex.safetensors").resolve())


# --------------------------------------------------------------------------- what the fit nodes optimise


@pytest.fixture(scope="module")
def world():
    images, masks, *_ = run("Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE, num_frames=FRAMES,
                            seed=0, twin_points=300, supersample=1, depth_mode="metric")
    return images, masks


def _captured(monkeypatch, name):
    """Wrap nodes.fit's call of ``name`` (fit_static / fit_deformation) to record the config it gets."""
    seen = []
    real = getattr(fit_nodes, name)

    def spy(start, views, render_fn, config, *args, **kw):
        seen.append(config)
        return real(start, views, render_fn, config, *args, **kw)

    monkeypatch.setattr(fit_nodes, name, spy)
    return seen


def _rgb_gradient(loss, rendered, target):
    rgb = rendered.clone().requires_grad_(True)
    total, _ = loss({"rgb": rgb, "alpha": torch.ones_like(rgb[..., :1]), "depth": torch.ones_like(rgb[..., :1])},
                    target)
    total.backward()
    return rgb.grad


def test_options_change_what_the_static_fit_optimises(world, monkeypatch):
    images, masks = world
    seen = _captured(monkeypatch, "fit_static")
    common = dict(images=images, iterations=2, num_points=200, preview_every=0, seed=0)
    run("Gen4D_StaticGaussians", **common)
    (opts,) = run("Gen4D_FitOptions", preset="4dgs_default", position_lr=0.0005)
    run("Gen4D_StaticGaussians", **common, options=opts)
    default, chosen = seen
    g = torch.Generator().manual_seed(0)
    rendered, target = torch.rand(1, 8, 8, 3, generator=g), torch.rand(1, 8, 8, 3, generator=g)
    n = rendered.numel()
    # without options: CoCo4D's L2 (d/dr mean (r-t)^2 = 2 (r-t) / N); with 4DGS's: L1 (sign(r-t) / N)
    torch.testing.assert_close(_rgb_gradient(default.loss, rendered, target), 2 * (rendered - target) / n)
    torch.testing.assert_close(_rgb_gradient(chosen.loss, rendered, target), torch.sign(rendered - target) / n)
    assert (default.learning_rates.position, chosen.learning_rates.position) == (0.01, 0.0005)
    assert chosen.learning_rates.feature == 0.0025 and chosen.iterations == 2, "the node's own widgets still rule"
    # a given start trains its positions without the sphere's spatial scale; other schedules are left alone
    (start,) = run("Gen4D_StaticGaussians", **common)
    run("Gen4D_StaticGaussians", **common, init=start)
    run("Gen4D_StaticGaussians", **common, init=start, options=opts)
    given, given_with_options = seen[3:]
    assert given.learning_rates.position == pytest.approx(0.001)
    assert given.learning_rates.position_decay_steps == 500 and given.learning_rates.feature == 0.01
    assert given_with_options.learning_rates.position == 0.0005


def test_options_shape_the_deformation_field(world, monkeypatch):
    images, masks = world
    seen = _captured(monkeypatch, "fit_deformation")
    gaussians = run("Gen4D_StaticGaussians", images=images, masks=masks, iterations=2, num_points=200,
                    preview_every=0, seed=0)[0]
    common = dict(gaussians=gaussians, images=images, masks=masks, iterations=2, times_per_step=2,
                  trajectory_iterations=0, preview_every=0, seed=0)
    plain = run("Gen4D_DeformationFit", **common)[0]
    (opts,) = run("Gen4D_FitOptions", preset="diffusion4d_fine", hexplane_resolution=8, hexplane_multires="1",
                  time_resolution=3, deformation_lr=0.001)
    shaped = run("Gen4D_DeformationFit", **common, options=opts)[0]
    field = shaped.parts[0].motion.deformation.config
    assert (field.base_resolution, field.multires, field.time_resolution) == (8, (1,), 3)
    default_field = plain.parts[0].motion.deformation.config
    assert (default_field.base_resolution, default_field.multires) == (64, (1, 2))
    default, chosen = seen
    assert (default.deformation_lr, chosen.deformation_lr, chosen.grid_lr) == (0.00064, 0.001, 0.0016)
    assert (default.loss.l2, default.loss.mask) == (1.0, 1.0)
    assert (chosen.loss.l1, chosen.loss.l2, chosen.loss.mask, chosen.loss.depth_smoothness) == (1.0, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="Gen4D_DeformationFit: options must come from Gen4D Fit Options"):
        run("Gen4D_DeformationFit", **common, options={"preset": "diffusion4d_fine"})


# --------------------------------------------------------------------------- the shipped workflows


@pytest.mark.parametrize("name", ["Diffusion4D.json", "Diffusion4D_synthetic.json"])
def test_diffusion4d_workflows_fit_with_the_papers_construction(name):
    """Coarse stage = diffusion4d_coarse, fine stage = diffusion4d_fine (L1 + LPIPS + depth smoothness, §3.4)."""
    prompt = ui_to_api(load_workflow(WORKFLOWS / name), gen4d.NODE_CLASS_MAPPINGS)
    presets = {}
    for node in prompt.values():
        if node["class_type"] in ("Gen4D_StaticGaussians", "Gen4D_DeformationFit"):
            link = node["inputs"].get("options")
            assert isinstance(link, list), f"{node['class_type']} gets no fit options in {name}"
            source = prompt[link[0]]
            assert source["class_type"] == "Gen4D_FitOptions"
            presets[node["class_type"]] = source["inputs"]["preset"]
            overrides = {k: v for k, v in source["inputs"].items() if isinstance(v, float) and v >= 0}
            assert not overrides, f"the paper preset runs as it is, got overrides {overrides}"
    assert presets == {"Gen4D_StaticGaussians": "diffusion4d_coarse", "Gen4D_DeformationFit": "diffusion4d_fine"}


def _scaled(cameras, s: float):
    """The same cameras in a world ``s`` times larger (centres scaled about the origin, near/far too)."""
    from dataclasses import replace

    c2w = torch.linalg.inv(cameras.viewmats.double())
    c2w[:, :3, 3] *= s
    return replace(cameras, viewmats=torch.linalg.inv(c2w).float(), near=cameras.near * s, far=cameras.far * s)


@pytest.mark.parametrize("relative", [True, False])
def test_posed_frames_stages_fit_a_capture_the_same_at_any_scale(relative):
    """A capture is in its maker's units: the posed-frames stages (rates relative to the scene extent, as 3DGS
    and 4DGS scale them) fit the same pixels with cameras 20 times further apart to the same Gaussians, 20 times
    further apart; with the rates taken as absolute, the larger world's Gaussians barely move (the control)."""
    from dataclasses import replace

    from gen4d import synthetic
    from gen4d.backends.render import training_render
    from gen4d.core.engine.cameras import diffusion4d_orbit
    from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig
    from gen4d.core.engine.fit_static import fit_static
    from gen4d.core.engine.gaussians import sphere_init
    from gen4d.core.engine.views import PosedImages

    world = synthetic.object_world(0)
    cams = diffusion4d_orbit(16, 16, 8, dynamic=False)
    truth = synthetic.render(world, cams, supersample=1)
    coarse = replace(CoarseToFineConfig().coarse, iterations=12, densify=None, preview_every=0,
                     lr_scale_with_extent=relative)
    init = sphere_init(150, 0.5, generator=torch.Generator().manual_seed(0))
    fits = {}
    for s in (1.0, 20.0):
        views = PosedImages(truth["rgb"], _scaled(cams, s))
        start = init.detach().clone()
        start = type(start)(**{**start.tensors(), "means": start.means * s,
                              "log_scales": start.log_scales + torch.log(torch.tensor(s))})
        fits[s] = fit_static(start, views, training_render, coarse, device="cpu").gaussians
    moved = (fits[1.0].means - init.means).abs().max()
    gap = (fits[20.0].means / 20.0 - fits[1.0].means).abs().max()
    assert moved > 1e-3, "the fit moved the Gaussians"
    if relative:
        assert gap < 0.02 * moved, (float(gap), float(moved))
        torch.testing.assert_close(fits[20.0].log_scales - torch.log(torch.tensor(20.0)), fits[1.0].log_scales,
                                   rtol=0, atol=1e-2)
    else:
        assert gap > 0.5 * moved, (float(gap), float(moved))
