# SPDX-License-Identifier: Apache-2.0
"""HexPlane deformation field, its regularisers, Motion integration and learning-rate groups."""

from __future__ import annotations

import math

import pytest
import torch
from deformation_helpers import randomise
from gen4d.core.engine.deformation import (
    Deformation,
    DeformationMotion,
    HexPlaneConfig,
    HexPlaneField,
    bounds_from_means,
    param_groups,
    time_samples_for,
)
from gen4d.core.engine.gaussians import GaussianBatch, Gaussians, quat_multiply, rotmat_to_quat
from gen4d.core.engine.graphed_deformation import graphed_batch_deltas
from gen4d.core.engine.regularizers import (
    knn,
    knn_weights,
    plane_tv_loss,
    rigidity_loss,
    time_l1_loss,
    time_smoothness_loss,
)
from gen4d.core.engine.scene import Scene4D, ScenePart, StaticMotion, motion_class

SMALL = HexPlaneConfig(feature_dim=8, base_resolution=16, time_resolution=9, width=32)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_gaussians(n: int, k: int = 1, seed: int = 0) -> Gaussians:
    g = gen(seed)
    return Gaussians(torch.rand(n, 3, generator=g) - 0.5, torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g) - 4, torch.randn(n, generator=g), torch.randn(n, k, 3, generator=g))


def assert_same(a: Gaussians, b: Gaussians) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name


# -- identity at initialisation -----------------------------------------------------------------


def test_fresh_deformation_is_exact_identity():
    g = random_gaussians(300)
    cfg = HexPlaneConfig(deform_opacity=True, deform_sh=True)
    module = Deformation(cfg, canonical=g, generator=gen())
    assert module.config.bounds is not None and module.config.spatial_resolutions == (64, 128)
    for t in (0.0, 0.25, 0.5, 1.0, torch.tensor(0.7), torch.rand(300)):
        assert_same(module(g, t), g)
    for out in module.forward_batch(g, torch.tensor([0.0, 0.4, 1.0])):
        assert_same(out, g)
    # Time planes start at 1, so the feature does not depend on t at all.
    x = g.means
    assert torch.equal(module.field(x, 0.0), module.field(x, 1.0))


def test_defaults_follow_4dgs():
    cfg = HexPlaneConfig()
    assert (cfg.feature_dim, cfg.base_resolution, cfg.multires, cfg.time_resolution, cfg.width, cfg.depth) == \
        (32, 64, (1, 2), 25, 64, 1)
    assert not cfg.deform_opacity and not cfg.deform_sh
    field = HexPlaneField(HexPlaneConfig(bounds=((-1, -1, -1), (1, 1, 1))), gen())
    shapes = {name: tuple(p.shape) for name, p in field.planes()}
    assert len(list(field.planes())) == 12
    assert shapes["xy"] == (1, 32, 128, 128) and shapes["zt"] == (1, 32, 128, 25)  # last level
    spatial = torch.cat([p.detach().flatten() for _, p in field.planes("spatial")])
    assert 0.1 <= float(spatial.min()) and float(spatial.max()) <= 0.5
    assert all(torch.equal(p, torch.ones_like(p)) for _, p in field.planes("time"))


def test_plane_axes_and_bilinear_sampling():
    """Plane ``xy`` is [1,F,R_x,R_y], ``xt`` is [1,F,R_x,R_t]; align_corners maps -1/+1 to the end texels."""
    cfg = HexPlaneConfig(bounds=((0, 0, 0), (2, 2, 2)), feature_dim=1, base_resolution=5, multires=(1,),
                         time_resolution=3)
    field = HexPlaneField(cfg, gen())
    grid = field.grids[0]
    with torch.no_grad():
        for name in ("xz", "yz", "yt", "zt"):
            grid[name].fill_(1.0)
        grid["xy"].copy_(torch.linspace(0, 4, 5).reshape(1, 1, 5, 1).expand(1, 1, 5, 5))  # = 4 * x_n01
        grid["xt"].copy_(torch.linspace(1, 3, 3).reshape(1, 1, 1, 3).expand(1, 1, 5, 3))  # = 1 + 2t
    xyz = torch.tensor([[0.0, 0.3, 1.9], [0.5, 1.7, 0.2], [2.0, 0.0, 0.0], [1.25, 1.0, 1.0]])
    t = torch.tensor([0.0, 0.25, 1.0, 0.5])
    expected = (2.0 * xyz[:, 0]) * (1.0 + 2.0 * t)
    torch.testing.assert_close(field(xyz, t)[:, 0], expected, atol=1e-5, rtol=0)
    batch = field.forward_batch(xyz, torch.tensor([0.0, 1.0]))[..., 0]
    torch.testing.assert_close(batch, torch.stack([2.0 * xyz[:, 0], 6.0 * xyz[:, 0]]), atol=1e-5, rtol=0)


def test_bounds_from_means_margin_and_degenerate_sets():
    lo, hi = bounds_from_means(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]), margin=0.1)
    assert lo == pytest.approx((-0.2, -0.2, -0.2)) and hi == pytest.approx((1.2, 2.2, 0.2))
    lo, hi = bounds_from_means(torch.ones(4, 3))
    assert all(b - a > 0 for a, b in zip(lo, hi))


# -- learning -----------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Run small optimisation loops single-threaded.

    Each step is a few milliseconds of small kernels; on a loaded 2-core machine OpenMP's
    two-thread barriers made the same loop ~30x slower (147 s vs 5 s measured), one thread does not.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_field_learns_a_translation_with_paper_learning_rates(one_thread):
    """Δμ(t) = t·v on 500 Gaussians: 200 Adam steps at CoCo4D's rates reach < 1e-2 everywhere.

    Spatial base resolution 32 (instead of 64) keeps the test fast; the default config reaches
    the same accuracy (max error about 4e-3) in twice the time.
    """
    g = random_gaussians(500)
    module = Deformation(HexPlaneConfig(base_resolution=32), canonical=g, generator=gen())
    v = torch.tensor([0.3, -0.2, 0.1])
    opt = torch.optim.Adam(param_groups(module))
    rng = gen(1)
    for _ in range(200):
        times = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(2, generator=rng)])
        outs = module.forward_batch(g.detach(), times)
        pred = torch.stack([o.means for o in outs])
        loss = (pred - g.means - times[:, None, None] * v).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        errors = [float((module(g, t).means - g.means - t * v).abs().max()) for t in (0.0, 0.3, 0.5, 0.77, 1.0)]
        assert max(errors) < 1e-2, errors  # untrained, the error at t=1 is |v|_inf = 0.3
        # Heads the loss never saw keep their zero last layer: scales and rotations stay canonical.
        out = module(g, 1.0)
        assert torch.equal(out.log_scales, g.log_scales) and torch.equal(out.quats, g.quats)


def test_forward_batch_matches_single_times_and_per_point_times():
    g = random_gaussians(200)
    module = randomise(Deformation(SMALL, canonical=g, generator=gen()))
    times = torch.tensor([0.0, 0.35, 1.0])
    batch = module.forward_batch(g, times)
    for t, out in zip(times.tolist(), batch):
        single = module(g, t)
        for name in ("means", "quats", "log_scales"):
            torch.testing.assert_close(getattr(out, name), getattr(single, name), atol=1e-6, rtol=0)
        assert out.sh is g.sh and out.logit_opacities is g.logit_opacities
    assert not torch.allclose(batch[0].means, batch[2].means, atol=1e-4)  # the randomised field moves
    per_point = module(g, torch.full((200,), 0.35))
    torch.testing.assert_close(per_point.means, batch[1].means, atol=1e-6, rtol=0)


def test_forward_batch_keeps_its_stacked_fields_behind_the_list():
    """The sets ``forward_batch`` returns are views of one stacked tensor per moved field; unmoved fields
    are the canonical tensors, shared (what the batched rasteriser reads instead of re-stacking)."""
    g = random_gaussians(60)
    module = randomise(Deformation(SMALL, canonical=g, generator=gen()))
    batch = module.forward_batch(g, [0.1, 0.6, 0.9])
    assert isinstance(batch, GaussianBatch) and len(batch) == 3
    assert batch.shared == {"logit_opacities", "sh"}
    for name in ("means", "quats", "log_scales"):
        stacked = batch.stacked(name)
        assert stacked.shape[:2] == (3, 60)
        for i, one in enumerate(batch):
            assert getattr(one, name).data_ptr() == stacked[i].data_ptr()
    opacities = batch.stacked("logit_opacities", torch.sigmoid)
    assert opacities.shape == (3, 60) and opacities.stride(0) == 0
    torch.testing.assert_close(opacities[2], torch.sigmoid(g.logit_opacities))
    torch.testing.assert_close(batch.stacked("log_scales", torch.exp), torch.stack([s.scales for s in batch]))
    loss = batch.stacked("means").square().sum() + batch.stacked("sh").sum()
    loss.backward()
    assert all(p.grad is not None for p in module.heads["position"].parameters())


def test_gaussian_batch_refuses_fields_of_the_wrong_shape():
    g = random_gaussians(10)
    fields = g.tensors()
    with pytest.raises(ValueError, match="fields must be"):
        GaussianBatch({k: v for k, v in fields.items() if k != "sh"}, 2)
    with pytest.raises(ValueError, match=r"means must be \[N,...\] or \[B=2"):
        GaussianBatch({**fields, "means": torch.zeros(3, 10, 3)}, 2)
    with pytest.raises(ValueError, match="batch must be"):
        GaussianBatch(fields, 0)
    shared = GaussianBatch(fields, 2)
    assert shared[0].means is g.means and shared.stacked("means").shape == (2, 10, 3)


def test_static_mask_keeps_gaussians_bit_exact():
    g = random_gaussians(100)
    module = randomise(Deformation(SMALL, canonical=g, generator=gen()))
    mask = torch.zeros(100, dtype=torch.bool)
    mask[::3] = True
    out = module(g, 0.8, static_mask=mask)
    free = module(g, 0.8)
    for name in ("means", "quats", "log_scales"):
        assert torch.equal(getattr(out, name)[mask], getattr(g, name)[mask])
        torch.testing.assert_close(getattr(out, name)[~mask], getattr(free, name)[~mask], atol=1e-6, rtol=0)
    assert float((out.means[~mask] - g.means[~mask]).detach().abs().max()) > 1e-3
    batch = module.forward_batch(g, [0.2, 0.8], static_mask=mask)
    assert torch.equal(batch[1].means[mask], g.means[mask])
    torch.testing.assert_close(batch[1].means, out.means, atol=1e-6, rtol=0)
    assert_same(module(g, 0.5, static_mask=torch.ones(100, dtype=torch.bool)), g)


def test_gradients_flow_and_no_grad_and_inference_mode_work():
    g = random_gaussians(50)
    module = Deformation(SMALL, canonical=g, generator=gen())
    motion = DeformationMotion(module)
    out = motion.apply(g, 0.5)
    out.means.sum().backward()
    assert module.heads["position"][-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert not motion.apply(g, 0.5).means.requires_grad
    with torch.inference_mode():
        assert_same(Scene4D([ScenePart("fg", g, motion)], 5, 10.0).at(0.25), g)


# -- regularisers -------------------------------------------------------------------------------


def test_plane_losses_zero_for_constant_planes_and_positive_otherwise():
    module = Deformation(SMALL, generator=gen())
    assert time_l1_loss(module).requires_grad  # the losses keep the graph
    assert float(time_l1_loss(module).detach()) == 0.0 and float(time_smoothness_loss(module).detach()) == 0.0
    assert float(plane_tv_loss(module, "time").detach()) == 0.0
    assert float(plane_tv_loss(module, "spatial").detach()) > 1e-3  # uniform(0.1, 0.5) noise
    with torch.no_grad():
        for _, p in module.field.planes("spatial"):
            p.fill_(0.3)
    assert float(plane_tv_loss(module).detach()) == 0.0
    field = module.field
    with torch.no_grad():  # linear in time: TV > 0, second difference 0, L1 > 0
        for _, p in field.planes("time"):
            p.copy_(torch.linspace(0.5, 1.5, p.shape[-1]).expand_as(p))
    assert float(plane_tv_loss(field, "time").detach()) > 1e-3
    assert float(time_smoothness_loss(field).detach()) < 1e-12
    assert float(time_l1_loss(field).detach()) > 0.1
    with torch.no_grad():
        first = next(p for _, p in field.planes("time"))
        first[..., 4] += 1.0
    assert float(time_smoothness_loss(field).detach()) > 1e-2
    assert float(plane_tv_loss(field, "spatial").detach()) == 0.0
    with pytest.raises(ValueError, match="which"):
        plane_tv_loss(field, "space")


def rigid_setup(n: int = 64, b: int = 3):
    g = gen(3)
    m0 = torch.rand(n, 3, generator=g, dtype=torch.float64)
    q0 = torch.randn(n, 4, generator=g, dtype=torch.float64)
    angles = torch.rand(b, 3, generator=g, dtype=torch.float64) * 2
    rots = []
    for ax, ay, az in angles.tolist():
        cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
        rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
        ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
        rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
        rots.append(rz @ ry @ rx)
    R = torch.stack(rots)  # [B,3,3]
    shift = torch.randn(b, 1, 3, generator=g, dtype=torch.float64)
    mt = torch.einsum("bij,nj->bni", R, m0) + shift
    qt = quat_multiply(rotmat_to_quat(R)[:, None, :].expand(b, n, 4), q0[None].expand(b, n, 4))
    return m0, q0, mt, qt


def test_rigidity_loss_zero_for_rigid_motion_positive_otherwise():
    m0, q0, mt, qt = rigid_setup()
    idx = knn(m0, 8)
    w = knn_weights(m0, idx, lambda_w=5.0)
    assert float(rigidity_loss(m0, mt, idx, w, q0, qt)) < 1e-10
    assert float(rigidity_loss(m0, mt, idx, mode="isometry")) < 1e-10
    assert float(rigidity_loss(m0, mt[1], idx, None, q0, qt[1])) < 1e-10  # single time [N,3]
    # Rotated positions but unrotated Gaussians: isometric, yet not rigid w.r.t. each Gaussian's frame.
    assert float(rigidity_loss(m0, mt, idx, None, q0, q0.expand_as(qt))) > 1e-2
    # Non-rigid: stretch along x.
    stretched = mt * torch.tensor([1.5, 1.0, 1.0], dtype=torch.float64)
    assert float(rigidity_loss(m0, stretched, idx, w, q0, qt)) > 1e-2
    assert float(rigidity_loss(m0, stretched, idx, mode="isometry")) > 1e-2
    # Gradients are finite at the zero of the loss.
    mt = mt.clone().requires_grad_(True)
    rigidity_loss(m0, mt, idx, w, q0, qt).backward()
    assert torch.isfinite(mt.grad).all()


def test_rigidity_loss_validates_inputs():
    m0, q0, mt, qt = rigid_setup(16, 2)
    idx = knn(m0, 4)
    with pytest.raises(ValueError, match="deformed_means"):
        rigidity_loss(m0, mt[:, :10], idx)
    with pytest.raises(ValueError, match="knn_index"):
        rigidity_loss(m0, mt, idx[:10])
    with pytest.raises(ValueError, match="canonical_quats"):
        rigidity_loss(m0, mt, idx, mode="rigid", deformed_quats=qt)
    with pytest.raises(ValueError, match="weights"):
        rigidity_loss(m0, mt, idx, torch.ones(16, 3, dtype=torch.float64))


def test_knn_matches_brute_force_and_excludes_self():
    pts = torch.rand(203, 3, generator=gen(5), dtype=torch.float64)
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(float("inf"))
    expected = d.argsort(dim=1)[:, :6]
    got = knn(pts, 6, block_rows=7)  # several blocks, last one partial
    assert torch.equal(got, expected)
    assert not (got == torch.arange(203)[:, None]).any()
    assert torch.equal(knn(pts.float(), 6), expected)  # float32 default blocks: same neighbours here
    dup = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [5.0, 0, 0]])
    assert knn(dup, 1).flatten().tolist()[:2] == [1, 0]  # an exact duplicate is a neighbour, self is not
    with pytest.raises(ValueError, match="k must be"):
        knn(pts, 203)


# -- scene integration and persistence ----------------------------------------------------------


def test_scene_with_deformation_saves_loads_and_renders_identically(tmp_path):
    fg, bg = random_gaussians(120, k=4, seed=1), random_gaussians(30, seed=2)
    cfg = HexPlaneConfig(feature_dim=8, base_resolution=16, time_resolution=9, deform_opacity=True)
    module = randomise(Deformation(cfg, canonical=fg, generator=gen()))
    mask = torch.zeros(120, dtype=torch.bool)
    mask[:10] = True
    scene = Scene4D([ScenePart("fg", fg, DeformationMotion(module, mask)), ScenePart("bg", bg, StaticMotion())],
                    9, 8.0)
    path = scene.save(tmp_path / "scene.safetensors")
    rng_state = torch.get_rng_state()
    loaded = Scene4D.load(path)
    assert torch.equal(torch.get_rng_state(), rng_state)  # loading does not consume global randomness
    motion = loaded.part("fg").motion
    assert isinstance(motion, DeformationMotion) and motion_class("hexplane") is DeformationMotion
    assert motion.deformation.config == module.config and torch.equal(motion.static_mask, mask)
    for t in (0.0, 0.5, 1.0):
        with torch.no_grad():
            assert_same(loaded.at(t), scene.at(t))
    with torch.no_grad():
        moved = scene.at(0.5)
    assert float((moved.means[:120] - fg.means).abs().max()) > 1e-3
    assert not torch.equal(moved.logit_opacities[:120], fg.logit_opacities)
    assert_same(scene.part("fg").motion.to("cpu").apply(fg, 0.5), moved.subset(slice(0, 120)))
    with pytest.raises(ValueError, match="static_mask"):
        ScenePart("bad", bg, DeformationMotion(module, mask))


def test_from_state_rejects_mismatched_tensors():
    module = Deformation(SMALL, generator=gen())
    motion = DeformationMotion(module)
    tensors = motion.state_dict()
    tensors.pop("heads.position.3.weight")
    with pytest.raises(ValueError, match="do not fit"):
        DeformationMotion.from_state(motion.config(), tensors)
    with pytest.raises(ValueError, match="unknown keys"):
        DeformationMotion.from_state({"hexplane": {**module.config.to_dict(), "foo": 1}}, motion.state_dict())


# -- optimiser groups and validation ------------------------------------------------------------


def test_param_groups_cover_every_parameter_once():
    module = Deformation(HexPlaneConfig(deform_sh=True, sh_degree=1), generator=gen())
    groups = param_groups(module)
    ids = [id(p) for grp in groups for p in grp["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))
    lrs = {grp["name"]: grp["lr"] for grp in groups}
    assert lrs == {"grid": 0.0064, "deformation": 0.00064}
    grid_ids = {id(p) for p in groups[0]["params"]}
    assert grid_ids == {id(p) for _, p in module.field.planes()}
    assert param_groups(module, 0.0064, 0.064)[0]["lr"] == 0.064
    torch.optim.Adam(groups)  # accepted as-is
    with pytest.raises(ValueError, match="grid_lr"):
        param_groups(module, grid_lr=-1.0)


def test_invalid_inputs_raise_value_errors_naming_the_argument():
    g = random_gaussians(20)
    module = Deformation(SMALL, canonical=g, generator=gen())
    for t, match in ((1.5, "t must lie"), (-0.1, "t must lie"), (float("nan"), "t must lie"),
                     (torch.tensor([0.2, 0.3]), "t must be a scalar"), ("0.5", "t must be")):
        with pytest.raises(ValueError, match=match):
            module(g, t)
    with pytest.raises(ValueError, match="times"):
        module.forward_batch(g, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="times"):
        module.forward_batch(g, [0.0, 2.0])
    with pytest.raises(ValueError, match="static_mask"):
        module(g, 0.5, static_mask=torch.zeros(19, dtype=torch.bool))
    bad = Gaussians(g.means.clone(), g.quats, g.log_scales, g.logit_opacities, g.sh)
    bad.means[0, 0] = float("inf")
    with pytest.raises(ValueError, match="gaussians.means"):
        module(bad, 0.5)
    with pytest.raises(ValueError, match="means"):
        module.deltas(torch.zeros(5, 2), 0.5)
    with pytest.raises(ValueError, match="sh_degree"):
        Deformation(HexPlaneConfig(deform_sh=True, sh_degree=2), canonical=g)(g, 0.5)
    with pytest.raises(ValueError, match="t must be a scalar"):
        DeformationMotion(module).apply(g, torch.zeros(20))
    for kwargs, match in (({"feature_dim": 0}, "feature_dim"), ({"multires": ()}, "multires"),
                          ({"bounds": ((0, 0, 0), (1, 0, 1))}, "bounds"), ({"time_resolution": 1}, "time_resolution"),
                          ({"deform_position": False, "deform_scale": False, "deform_rotation": False}, "deform_")):
        with pytest.raises(ValueError, match=match):
            HexPlaneConfig(**kwargs)


def test_forward_batch_takes_the_deltas_from_a_given_pass():
    g = random_gaussians(40)
    module = randomise(Deformation(SMALL, canonical=g, generator=gen()))
    times = torch.tensor([0.1, 0.7])
    calls = []

    def own_pass(means, t):
        calls.append((means, t))
        return module.deltas_batch(means, t)

    given = module.forward_batch(g, times, deltas=own_pass)
    plain = module.forward_batch(g, times)
    assert len(calls) == 1 and calls[0][0] is g.means and torch.equal(calls[0][1], times)
    for name in ("means", "quats", "log_scales"):
        assert torch.equal(given.stacked(name), plain.stacked(name)), name
    halved = module.forward_batch(g, times, deltas=lambda m, t: {k: v / 2 for k, v in own_pass(m, t).items()})
    assert not torch.equal(halved.stacked("means"), plain.stacked("means"))
    with pytest.raises(ValueError, match="static_mask"):
        module.forward_batch(g, times, static_mask=torch.zeros(40, dtype=torch.bool), deltas=own_pass)
    with pytest.raises(ValueError, match="CUDA"):
        graphed_batch_deltas(module, g.means, 2)


def test_time_samples_follow_the_frame_count_up_to_the_cap():
    assert [time_samples_for(n, 25) for n in (1, 2, 16, 25, 49, 100)] == [2, 2, 16, 25, 25, 25]
    assert time_samples_for(100, 64) == 64
    for frames, cap in ((0, 25), (10, 1)):
        with pytest.raises(ValueError, match="time_samples_for"):
            time_samples_for(frames, cap)


def test_cpu_gradients_do_not_depend_on_the_thread_count():
    """The MLP's weight gradients sum over every Gaussian; the CPU BLAS splits that sum by thread. The same
    step must give the same bits with 1 or 2 threads (else a thresholded densify or lift later flips)."""
    g = random_gaussians(6000)
    module = randomise(Deformation(SMALL, canonical=g, generator=gen()))
    old = torch.get_num_threads()
    grads = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            module.zero_grad()
            out = module.deltas(g.means, 0.3)
            sum(v.square().sum() for v in out.values()).backward()
            grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
    finally:
        torch.set_num_threads(old)
    assert grads[0]
    for name, value in grads[0].items():
        assert torch.equal(value, grads[1][name]), f"{name}: max difference {(value - grads[1][name]).abs().max():.3g}"
