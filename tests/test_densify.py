# SPDX-License-Identifier: Apache-2.0
"""Adaptive density control (core/engine/densify.py): growth, pruning, Adam state surgery, schedule."""

from __future__ import annotations

import math

import pytest
import torch
from gen4d.core.engine import densify as D
from gen4d.core.engine import gaussians as G
from gen4d.core.engine.rasterize import rasterize

LRS = {"means": 0.001, "quats": 0.005, "log_scales": 0.005, "logit_opacities": 0.05, "sh": 0.01}  # CoCo4D


def make_params(n=4, scale=0.001, opacity=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.as_tensor(scale, dtype=torch.float32).expand(n).reshape(n, 1).expand(n, 3)
    opac = torch.as_tensor(opacity, dtype=torch.float32).expand(n)
    tensors = {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "log_scales": scales.log().clone(),
        "logit_opacities": torch.logit(opac).clone(),
        "sh": torch.randn(n, 1, 3, generator=g),
    }
    return {k: torch.nn.Parameter(v) for k, v in tensors.items()}


def make_optimizer(params):
    return torch.optim.Adam([{"params": [p], "lr": LRS[k], "name": k} for k, p in params.items()], eps=1e-15)


def adam_update(params, optimizer, seed=1):
    """One Adam step with random gradients, so every moment row is distinct and non-zero."""
    g = torch.Generator().manual_seed(seed)
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=g)
    optimizer.step()
    optimizer.zero_grad()


def high_grad_state(n, rows, value=1.0):
    state = D.DensifyState()
    state.reset(n)
    state.grad2d[rows] = value
    state.count[rows] = 1
    return state


def snapshot(params, optimizer):
    return (
        {k: p.detach().clone() for k, p in params.items()},
        {k: {s: v.clone() for s, v in optimizer.state[p].items()} for k, p in params.items()},
    )


def check_optimizer_matches(params, optimizer):
    """Every param in params is the one the optimizer holds, and its moments have its shape."""
    held = [p for group in optimizer.param_groups for p in group["params"]]
    for k, p in params.items():
        assert any(p is q for q in held), k
        st = optimizer.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    assert len(held) == len(params)


CFG = D.DensifyConfig(total_iterations=1000)


def test_config_schedule():
    assert CFG.stop == 800 and CFG.reset_interval == 0 and CFG.refine_every == 100
    assert [s for s in range(0, 1001) if CFG.is_refine_step(s)] == [100, 200, 300, 400, 500, 600, 700]
    long = D.DensifyConfig(total_iterations=30000)
    assert long.stop == 24000 and long.reset_interval == 3000
    assert long.is_reset_step(3000) and not long.is_reset_step(0) and not long.is_reset_step(27000)
    assert D.DensifyConfig(total_iterations=5000, reset_every=0).reset_interval == 0
    with pytest.raises(ValueError, match="refine_every"):
        D.DensifyConfig(refine_every=0)
    with pytest.raises(ValueError, match="max_gaussians"):
        D.DensifyConfig(max_gaussians=0)


def test_accumulate_normalises_like_gsplat():
    state = D.DensifyState()
    grad = torch.zeros(2, 3, 2)
    grad[0, 0] = torch.tensor([1e-5, 2e-5])
    grad[1, 0] = torch.tensor([3e-5, 0.0])
    grad[0, 1] = torch.tensor([1.0, 1.0])  # invisible in camera 0: ignored
    radii = torch.zeros(2, 3, 2, dtype=torch.int32)
    radii[0, 0] = torch.tensor([4, 2])
    radii[1, 0] = torch.tensor([3, 8])
    radii[1, 1] = torch.tensor([1, 1])
    width, height = 64, 32
    D.accumulate(state, grad, radii, width, height)
    c = 2
    g0 = math.hypot(1e-5 * width / 2 * c, 2e-5 * height / 2 * c) + 3e-5 * width / 2 * c
    assert state.grad2d[0].item() == pytest.approx(g0, rel=1e-5)
    assert state.grad2d[1].item() == 0.0 and state.grad2d[2].item() == 0.0
    assert state.count.tolist() == [2.0, 1.0, 0.0]
    assert state.max_radii.tolist() == pytest.approx([8 / 64, 1 / 64, 0.0])
    D.accumulate(state, grad, radii, width, height)
    assert state.count.tolist() == [4.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="state holds 3"):
        D.accumulate(state, torch.zeros(1, 5, 2), torch.ones(1, 5, 2), width, height)


def test_clone_small_high_gradient():
    params = make_params(n=4, scale=0.001)
    opt = make_optimizer(params)
    adam_update(params, opt)
    before, moments = snapshot(params, opt)
    state = high_grad_state(4, [0, 2])
    out = D.step(params, opt, state, 100, CFG, scene_extent=1.0)
    assert (out["cloned"], out["split"], out["pruned"], out["n"]) == (2, 0, 0, 6)
    check_optimizer_matches(params, opt)
    for k, p in params.items():
        assert torch.equal(p[:4], before[k])
        assert torch.equal(p[4:], before[k][[0, 2]])
        # Surviving rows keep their moments; the new copies start at zero (3DGS / gsplat).
        for s in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][s][:4], moments[k][s])
            assert torch.count_nonzero(opt.state[p][s][4:]) == 0
        assert torch.equal(opt.state[p]["step"], moments[k]["step"])
    assert state.n == 6 and state.grad2d.abs().sum() == 0
    adam_update(params, opt, seed=2)  # runs on the new shapes
    assert not torch.equal(params["means"][4], params["means"][0])


def test_copy_moments_option():
    params = make_params(n=4, scale=0.001)
    opt = make_optimizer(params)
    adam_update(params, opt)
    _, moments = snapshot(params, opt)
    cfg = D.DensifyConfig(total_iterations=1000, copy_moments=True)
    D.step(params, opt, high_grad_state(4, [1, 3]), 100, cfg, scene_extent=1.0)
    for k, p in params.items():
        for s in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][s][4:], moments[k][s][[1, 3]])


def test_split_large_high_gradient():
    params = make_params(n=4, scale=0.05)  # > 0.01 * extent: split
    opt = make_optimizer(params)
    adam_update(params, opt)
    before, moments = snapshot(params, opt)
    gen = torch.Generator().manual_seed(7)
    out = D.step(params, opt, high_grad_state(4, [1]), 100, CFG, scene_extent=1.0, generator=gen)
    assert (out["cloned"], out["split"], out["pruned"], out["n"]) == (0, 1, 0, 5)
    check_optimizer_matches(params, opt)
    keep = [0, 2, 3]
    for k, p in params.items():
        assert torch.equal(p[:3], before[k][keep])
        assert torch.equal(opt.state[p]["exp_avg"][:3], moments[k]["exp_avg"][keep])
        assert torch.count_nonzero(opt.state[p]["exp_avg"][3:]) == 0
    children = params["means"][3:]
    assert not torch.equal(children[0], children[1])
    assert (children - before["means"][1]).norm(dim=-1).max() < 0.05 * 6  # within ~6 sigma
    assert torch.allclose(params["log_scales"][3:], before["log_scales"][[1, 1]] - math.log(1.6), atol=1e-6)
    for k in ("quats", "logit_opacities", "sh"):
        assert torch.equal(params[k][3:], before[k][[1, 1]])
    adam_update(params, opt, seed=3)


def test_split_samples_from_the_rotated_gaussian():
    n = 3000
    g = torch.Generator().manual_seed(11)
    params = make_params(n=n, scale=0.05)
    with torch.no_grad():
        params["log_scales"].copy_(torch.tensor([0.02, 0.05, 0.2]).log().expand(n, 3))
        params["quats"].copy_(torch.randn(n, 4, generator=g))
    opt = make_optimizer(params)
    before, _ = snapshot(params, opt)
    D.step(params, opt, high_grad_state(n, slice(None)), 100, CFG, scene_extent=1.0,
           generator=torch.Generator().manual_seed(12))
    assert params["means"].shape[0] == 2 * n
    parent = before["means"].repeat(2, 1)
    R = G.quat_to_rotmat(before["quats"]).repeat(2, 1, 1)
    local = torch.einsum("nji,nj->ni", R, params["means"].detach() - parent) / torch.tensor([0.02, 0.05, 0.2])
    assert local.mean(0).abs().max() < 0.06
    cov = local.T @ local / local.shape[0]
    assert (cov - torch.eye(3)).abs().max() < 0.08


def test_prune_low_opacity_and_too_big():
    params = make_params(n=5, scale=0.001, opacity=torch.tensor([0.5, 0.001, 0.5, 0.004, 0.5]))
    with torch.no_grad():
        params["log_scales"][4] = math.log(0.2)  # > 0.1 * extent
    opt = make_optimizer(params)
    adam_update(params, opt)
    before, moments = snapshot(params, opt)
    state = D.DensifyState()
    state.reset(5)
    out = D.step(params, opt, state, 200, CFG, scene_extent=1.0)
    assert (out["cloned"], out["split"], out["pruned"], out["n"]) == (0, 0, 3, 2)
    check_optimizer_matches(params, opt)
    for k, p in params.items():
        assert torch.equal(p, before[k][[0, 2]])
        assert torch.equal(opt.state[p]["exp_avg_sq"], moments[k]["exp_avg_sq"][[0, 2]])
    adam_update(params, opt, seed=4)
    # Not a refinement step: nothing happens.
    out = D.step(params, opt, state, 150, CFG, scene_extent=1.0)
    assert out["pruned"] == 0 and out["n"] == 2


def test_prune_screen_size_and_never_everything():
    params = make_params(n=3, scale=0.001)
    opt = make_optimizer(params)
    state = D.DensifyState()
    radii = torch.tensor([[[10, 10], [40, 2], [0, 0]]], dtype=torch.int32)
    D.accumulate(state, torch.zeros(1, 3, 2), radii, 100, 50)
    cfg = D.DensifyConfig(total_iterations=1000, prune_scale2d=0.2)
    out = D.step(params, opt, state, 100, cfg, scene_extent=1.0)
    assert out["pruned"] == 1 and out["n"] == 2
    params = make_params(n=3, scale=0.001, opacity=0.001)
    opt = make_optimizer(params)
    out = D.step(params, opt, D.DensifyState(), 100, CFG, scene_extent=1.0)
    assert out["pruned"] == 0 and out["n"] == 3


def test_grow_and_prune_together_keep_rows_aligned():
    params = make_params(n=6, scale=0.001, opacity=torch.tensor([0.5, 0.5, 0.001, 0.5, 0.5, 0.5]))
    with torch.no_grad():
        params["log_scales"][3] = math.log(0.05)
    opt = make_optimizer(params)
    adam_update(params, opt)
    with torch.no_grad():
        params["sh"][:, 0, 0] = torch.arange(6, dtype=torch.float32)  # tag rows
    out = D.step(params, opt, high_grad_state(6, [0, 2, 3]), 100, CFG, scene_extent=1.0,
                 generator=torch.Generator().manual_seed(0))
    # Clone 0 and 2, split 3, then prune 2 and its clone (low opacity).
    assert (out["cloned"], out["split"], out["pruned"], out["n"]) == (2, 1, 2, 7)
    assert params["sh"][:, 0, 0].tolist() == [0, 1, 4, 5, 0, 3, 3]
    check_optimizer_matches(params, opt)
    adam_update(params, opt, seed=5)


def test_determinism_with_generator():
    def run(seed):
        params = make_params(n=8, scale=0.05)
        opt = make_optimizer(params)
        adam_update(params, opt)
        D.step(params, opt, high_grad_state(8, [0, 3, 5]), 100, CFG, 1.0, torch.Generator().manual_seed(seed))
        return params["means"].detach().clone()

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_max_scale_clamp_every_step():
    params = make_params(n=3, scale=0.001)
    with torch.no_grad():
        params["log_scales"][0] = torch.tensor([0.5, 0.1, 0.3]).log()
    opt = make_optimizer(params)
    cfg = D.DensifyConfig(total_iterations=1000, max_scale=0.2, prune_scale3d=None)
    before = params["log_scales"].detach().clone()
    out = D.step(params, opt, D.DensifyState(), 37, cfg, scene_extent=1.0)  # not a refine step
    assert out["clamped"] == 0, "counted on refinement steps only, so the fit never waits for the device"
    assert torch.allclose(params["log_scales"][0].exp(), torch.tensor([0.2, 0.1, 0.2]), atol=1e-6)
    assert torch.allclose(params["log_scales"][1:].exp(), torch.full((2, 3), 0.001), atol=1e-9)
    assert D.clamp_scales(params, 0.2) == 0
    params["log_scales"].data.copy_(before)
    assert D.clamp_scales(params, 0.2) == 1


def test_max_gaussians_stops_growth():
    params = make_params(n=6, scale=0.001)
    opt = make_optimizer(params)
    state = high_grad_state(6, [0, 1, 2, 3])
    state.grad2d[[0, 1, 2, 3]] = torch.tensor([1.0, 4.0, 2.0, 3.0])
    cfg = D.DensifyConfig(total_iterations=1000, max_gaussians=8)
    out = D.step(params, opt, state, 100, cfg, scene_extent=1.0)
    assert out["cloned"] == 2 and out["n"] == 8
    assert torch.equal(params["means"][6:], params["means"][[1, 3]])  # the two largest gradients
    out = D.step(params, opt, high_grad_state(8, [0, 1]), 200, cfg, scene_extent=1.0)
    assert out["cloned"] == 0 and out["n"] == 8
    adam_update(params, opt)


def test_opacity_reset_zeroes_opacity_moments_only():
    params = make_params(n=3, scale=0.001, opacity=torch.tensor([0.9, 0.005 + 1e-3, 0.5]))
    opt = make_optimizer(params)
    adam_update(params, opt)
    before, moments = snapshot(params, opt)
    cfg = D.DensifyConfig(total_iterations=1000, reset_every=300, refine_every=100)
    out = D.step(params, opt, D.DensifyState(), 300, cfg, scene_extent=1.0)
    assert out["reset"] == 1 and out["n"] == 3
    op = torch.sigmoid(params["logit_opacities"])
    expect = torch.sigmoid(before["logit_opacities"]).clamp(max=0.01)
    assert float(expect[1]) < 0.0099  # one opacity was already below the reset value
    assert torch.allclose(op, expect, atol=1e-6)
    p = params["logit_opacities"]
    assert torch.count_nonzero(opt.state[p]["exp_avg"]) == 0 and torch.count_nonzero(opt.state[p]["exp_avg_sq"]) == 0
    assert torch.equal(opt.state[params["means"]]["exp_avg"], moments["means"]["exp_avg"])
    assert D.step(params, opt, D.DensifyState(), 900, cfg, 1.0)["reset"] == 0  # past refine_stop


def test_step_errors():
    params = make_params(n=3)
    opt = make_optimizer(params)
    with pytest.raises(ValueError, match="sh"):
        D.step({k: v for k, v in params.items() if k != "sh"}, opt, D.DensifyState(), 100, CFG, 1.0)
    state = D.DensifyState()
    state.reset(5)
    with pytest.raises(ValueError, match="state holds 5"):
        D.step(params, opt, state, 100, CFG, 1.0)
    with pytest.raises(ValueError, match="scene_extent"):
        D.step(params, opt, D.DensifyState(), 100, CFG, 0.0)


def test_exponential_lr():
    assert D.exponential_lr(0, 1e-3, 1e-5, 1000) == pytest.approx(1e-3, rel=1e-12)
    assert D.exponential_lr(1000, 1e-3, 1e-5, 1000) == pytest.approx(1e-5, rel=1e-12)
    assert D.exponential_lr(5000, 1e-3, 1e-5, 1000) == pytest.approx(1e-5, rel=1e-12)
    assert D.exponential_lr(500, 1e-3, 1e-5, 1000) == pytest.approx(1e-4, rel=1e-9)  # geometric mean
    lrs = [D.exponential_lr(s, 1e-3, 1e-5, 1000) for s in range(0, 1001, 50)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert D.exponential_lr(0, 1e-3, 1e-5, 1000, delay_steps=100, delay_mult=0.01) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="lr_init"):
        D.exponential_lr(0, 0.0, 1e-5, 1000)


def test_fit_loop_with_rasterizer():
    """A real render -> backward -> accumulate -> Adam -> densify loop on a tiny scene."""
    torch.manual_seed(0)
    n, width, height = 40, 32, 32
    params = make_params(n=n, scale=0.04, opacity=0.3, seed=3)
    with torch.no_grad():
        params["means"].mul_(0.3)
    opt = make_optimizer(params)
    viewmat = torch.eye(4)
    viewmat[2, 3] = 3.0
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    target = torch.zeros(1, height, width, 3)
    target[:, 8:24, 8:24] = torch.tensor([0.9, 0.2, 0.1])
    cfg = D.DensifyConfig(total_iterations=12, refine_start=4, refine_every=4, grad_threshold=1e-5,
                          max_scale=0.1, max_gaussians=120)
    state = D.DensifyState()
    gen = torch.Generator().manual_seed(0)
    counts = []
    for it in range(cfg.total_iterations):
        rgb, alpha, proj = rasterize(
            params["means"], params["quats"], params["log_scales"].exp(), torch.sigmoid(params["logit_opacities"]),
            params["sh"], viewmat[None], K[None], width, height, sh_degree=0, render_depth=False,
            return_projection=True,
        )
        proj.means2d.retain_grad()
        loss = (rgb - target).abs().mean()
        loss.backward()
        D.accumulate(state, proj.means2d.grad, proj.radii, width, height)
        opt.step()
        opt.zero_grad()
        counts.append(D.step(params, opt, state, it + 1, cfg, scene_extent=1.0, generator=gen))
        check_optimizer_matches(params, opt)
    assert sum(c["cloned"] + c["split"] for c in counts) > 0
    assert counts[-1]["n"] == params["means"].shape[0] != n
    assert params["means"].shape[0] <= 120
    assert params["log_scales"].max() <= math.log(0.1) + 1e-6


def test_non_finite_gradients_and_parameters_are_repaired():
    import torch
    from gen4d.core.engine import densify as dens

    params = {"means": torch.nn.Parameter(torch.randn(5, 3)), "log_scales": torch.nn.Parameter(torch.zeros(5, 3))}
    opt = torch.optim.Adam([{"params": [p], "name": n} for n, p in params.items()], lr=0.1)
    (params["means"].sum() + params["log_scales"].sum()).backward()
    params["means"].grad[2, 1] = float("nan")
    assert dens.sanitize_grads(params) == 1
    assert torch.isfinite(params["means"].grad).all() and params["means"].grad[2, 1] == 0
    opt.step()
    with torch.no_grad():
        params["log_scales"][4, 0] = float("inf")
    assert dens.prune_non_finite(params, opt) == 1
    assert params["means"].shape == (4, 3) and torch.isfinite(params["log_scales"]).all()
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["exp_avg"].shape == (4, 3), "optimizer state follows the pruned rows"


def test_gradient_repair_counts_each_gaussian_with_any_non_finite_gradient_once():
    n = 6
    params = {"means": torch.nn.Parameter(torch.zeros(n, 3)), "log_scales": torch.nn.Parameter(torch.zeros(n, 3)),
              "logit_opacities": torch.nn.Parameter(torch.zeros(n))}
    for p in params.values():
        p.grad = torch.ones_like(p)
    params["means"].grad[1] = torch.tensor([float("inf"), float("-inf"), 1.0])  # sums to NaN
    params["log_scales"].grad[1, 2] = float("nan")  # the same Gaussian again
    params["logit_opacities"].grad[4] = float("-inf")
    params["log_scales"].grad[3] = 1e30  # large but finite: not repaired
    field = torch.nn.Parameter(torch.zeros(5))
    field.grad = torch.tensor([0.0, float("nan"), 2.0, float("inf"), 1.0])
    count = D.zero_non_finite_grads(params, extra=[field])
    assert int(count) == 2
    assert all(torch.isfinite(p.grad).all() for p in (*params.values(), field))
    assert params["means"].grad[1].tolist() == [0.0, 0.0, 1.0] and field.grad.tolist() == [0.0, 0.0, 2.0, 0.0, 1.0]
    assert torch.equal(params["log_scales"].grad[3], torch.full((3,), 1e30))
