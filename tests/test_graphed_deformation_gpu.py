# SPDX-License-Identifier: Apache-2.0
"""CUDA graphs of the deformation field's batched pass (GPU machines only).

The graphed pass must give the eager pass's head outputs and every gradient (field parameters and
canonical centres) on repeated calls with new centres and times, and a fit with ``cuda_graphs`` (or
``graphed_update``, the work after the backward) must learn as the eager fit does.

Run: ``pytest tests/test_graphed_deformation_gpu.py`` on a machine with CUDA (and gsplat for the fit).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from deformation_helpers import randomise
from gen4d.core.engine.deformation import Deformation, HexPlaneConfig
from gen4d.core.engine.graphed_deformation import graphed_batch_deltas, graphed_plane_terms
from gen4d.core.engine.regularizers import plane_tv_loss, time_l1_loss, time_smoothness_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CONFIG = HexPlaneConfig(feature_dim=16, base_resolution=32, time_resolution=12, width=64)


def _field(n: int = 3000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1).cuda()
    module = randomise(Deformation(CONFIG, canonical=means, generator=g)).cuda().train()
    return module, means


def _grads(module, means, outputs, weights):
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    params = [means, *module.parameters()]
    return torch.autograd.grad(loss, params)


def test_graphed_pass_gives_the_eager_outputs_and_gradients_on_new_inputs():
    module, means0 = _field()
    batch = 4
    graphed = graphed_batch_deltas(module, means0.clone().requires_grad_(), batch)
    g = torch.Generator(device="cuda").manual_seed(1)
    for call in range(3):
        means = (means0 + 0.05 * call).requires_grad_()
        times = torch.rand(batch, device="cuda", generator=g)
        eager = module.deltas_batch(means, times)
        replay = graphed(means, times)
        assert list(replay) == list(eager)
        weights = [torch.randn(v.shape, device="cuda", generator=g) for v in eager.values()]
        for name in eager:
            torch.testing.assert_close(replay[name], eager[name], rtol=1e-5, atol=1e-6, msg=f"{name}, call {call}")
        want = _grads(module, means, list(eager.values()), weights)
        got = _grads(module, means, list(replay.values()), weights)
        for i, (a, b) in enumerate(zip(got, want)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"gradient {i}, call {call}")


def test_graphed_plane_terms_follow_the_planes_as_they_change():
    module, _ = _field()
    terms = [("tv", 2e-4, lambda d: plane_tv_loss(d, "spatial")), ("time_smoothness", 1e-2, time_smoothness_loss),
             ("time_l1", 1e-4, time_l1_loss)]
    graphed = graphed_plane_terms(module, terms)
    params = list(module.parameters())
    g = torch.Generator(device="cuda").manual_seed(3)
    for call in range(3):
        with torch.no_grad():  # as an optimiser step would: in place, same tensors
            for _, plane in module.field.planes():
                plane.add_(0.05 * torch.randn(plane.shape, device="cuda", generator=g))
        replay = graphed()
        for name, weight, fn in terms:
            eager = weight * fn(module)
            torch.testing.assert_close(replay[name], eager, rtol=1e-5, atol=0.0, msg=f"{name}, call {call}")
            want = torch.autograd.grad(eager, params, allow_unused=True, materialize_grads=True)
            got = torch.autograd.grad(graphed()[name], params, allow_unused=True, materialize_grads=True)
            for i, (a, b) in enumerate(zip(got, want)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9, msg=f"{name} gradient {i}, call {call}")


@pytest.mark.parametrize("option", ["cuda_graphs", "graphed_update"])
@pytest.mark.parametrize("freeze", [False, True], ids=["canonical trained", "canonical frozen (CoCo4D)"])
def test_graphed_fit_learns_as_the_eager_fit(freeze, option):
    pytest.importorskip("gsplat")
    from gen4d import synthetic
    from gen4d.backends.render import render_scene, training_render
    from gen4d.core.engine.fit_dynamic import DeformationFitConfig, fit_deformation
    from gen4d.core.engine.fit_static import StaticFitConfig, fit_static
    from gen4d.core.engine.gaussians import sphere_init
    from gen4d.core.engine.losses import ReconstructionLoss, psnr
    from gen4d.core.engine.scene import Scene4D, ScenePart
    from gen4d.core.engine.views import PosedImages

    world = synthetic.object_world(seed=0)
    cams = world.reference_cameras(128, 128, 12)
    truth = synthetic.render(world, cams, background=(1.0, 1.0, 1.0))
    views = PosedImages(truth["rgb"], cams, truth["foreground"])
    canonical = fit_static(sphere_init(4000, 0.5), views, training_render,
                           StaticFitConfig(iterations=300, views_per_step=4, preview_every=0), device="cuda").gaussians
    config = DeformationFitConfig(iterations=150, times_per_step=4, hexplane=CONFIG, freeze_canonical=freeze,
                                  rigidity_weight=0.0, loss=ReconstructionLoss(l1=1.0, l2=0.0, dssim=0.0, mask=0.0),
                                  preview_every=0)
    scores = {}
    for graphs in (False, True):
        result = fit_deformation(canonical, views, training_render, dataclasses.replace(config, **{option: graphs}),
                                 device="cuda")
        scene = Scene4D([ScenePart("object", result.gaussians, result.extra["motion"])], 12, 8.0)
        with torch.no_grad():
            out = render_scene(scene, cams.to("cuda"), torch.ones(3, device="cuda"))
        scores[graphs] = float(psnr(out.rgb.clamp(0, 1), views.images.cuda()))
        first, last = result.history[0]["total"], result.history[-1]["total"]
        assert last < 0.7 * first, (graphs, first, last)
    # gsplat's backward sums gradients with atomics, so two fits of the same settings part ways over 150 steps;
    # one H100 gave 29.3 dB eager against 30.0 with the graphed update (test_graphed_update.py checks the
    # update itself against the eager one, step by step).
    assert abs(scores[True] - scores[False]) < 1.0, scores

