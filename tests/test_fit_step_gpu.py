# SPDX-License-Identifier: Apache-2.0
"""The engine's own part of a fit step never waits for the GPU (GPU machines only).

A fit loop queues a step's kernels and moves on; one read-back or blocking host copy in the step makes
the host wait for everything queued and leaves the GPU idle while the next step is launched. Outside
the rasterizer (gsplat reads back its intersection count), the deformation step is ours: the batched
deformation, the reconstruction loss with every term, the plane and rigidity regularisers, the backward,
the gradient repair and the fused Adam step. With CUDA's sync debug mode set to "error", a wait raises.
The first step, which allocates the optimiser state, runs before the check.

Run: ``pytest tests/test_fit_step_gpu.py`` on a machine with CUDA.
"""

from __future__ import annotations

import pytest
import torch
from deformation_helpers import randomise
from device_waits import no_device_waits
from gen4d.core.engine import densify as dens
from gen4d.core.engine import regularizers as reg
from gen4d.core.engine.deformation import Deformation, HexPlaneConfig
from gen4d.core.engine.fit_static import PARAM_NAMES, GaussianLearningRates, make_optimizer
from gen4d.core.engine.gaussians import Gaussians, sphere_init
from gen4d.core.engine.graphed_loss import GraphedLoss
from gen4d.core.engine.losses import ReconstructionLoss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CONFIG = HexPlaneConfig(feature_dim=16, base_resolution=32, time_resolution=12, width=64)


def _step(params, field, optimizers, knn_index, times, loss_fn, target, masks):
    base = Gaussians(**params)
    deformed = field.forward_batch(base, times, check_values=False)
    means = deformed.stacked("means")  # [B,N,3]
    # A differentiable stand-in for the render: a per-frame image from the deformed centres and colours.
    colour = torch.sigmoid(deformed.stacked("sh")[..., 0, :].mean(1))  # [B,3]
    depth = means[..., 2].mean(1)
    rendered = {"rgb": colour[:, None, None, :].expand_as(target).contiguous(),
                "alpha": torch.sigmoid(means[..., 0].mean(1))[:, None, None, None].expand(*target.shape[:3], 1)
                .contiguous(),
                "depth": depth[:, None, None, None].expand(*target.shape[:3], 1).contiguous()}
    total, _ = loss_fn(rendered, target, masks)
    total = total + reg.rigidity_loss(base.means, means, knn_index, canonical_quats=base.quats,
                                      deformed_quats=deformed.stacked("quats"), check_values=False)
    for fn in (lambda d: reg.plane_tv_loss(d, "spatial"), reg.time_smoothness_loss, reg.time_l1_loss):
        total = total + 1e-3 * fn(field)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    total.backward()
    repaired = dens.zero_non_finite_grads(params, extra=list(field.parameters()))
    for opt in optimizers:
        opt.step()
    return total.detach(), repaired


@pytest.mark.parametrize("graphed", [False, True], ids=["eager loss", "graphed loss"])
def test_a_deformation_step_outside_the_rasterizer_never_waits_for_the_device(graphed):
    g = torch.Generator().manual_seed(0)
    canonical = sphere_init(2000, 0.5, generator=g).to("cuda")
    params = {k: torch.nn.Parameter(getattr(canonical, k).detach().clone()) for k in PARAM_NAMES}
    field = randomise(Deformation(CONFIG, canonical=canonical.means.cpu(), generator=g)).cuda().train()
    optimizers = [make_optimizer(params, GaussianLearningRates()),
                  torch.optim.Adam(field.parameters(), lr=1e-3, fused=True)]
    knn_index = reg.knn(params["means"].detach(), 8)
    loss_fn = ReconstructionLoss(l1=0.8, l2=0.2, dssim=0.2, mask=0.5, depth_smoothness=0.1)
    if graphed:  # captured in the first step, replayed in the checked ones
        loss_fn = GraphedLoss(loss_fn)
    target = torch.rand(4, 32, 32, 3, generator=g).cuda()
    masks = (torch.rand(4, 32, 32, generator=g) > 0.3).float().cuda()
    times = torch.tensor([0.0, 0.3, 0.6, 0.9]).cuda()
    first, _ = _step(params, field, optimizers, knn_index, times, loss_fn, target, masks)
    torch.cuda.synchronize()
    with no_device_waits():
        for _ in range(3):
            last, repaired = _step(params, field, optimizers, knn_index, times.flip(0), loss_fn, target, masks)
    assert torch.isfinite(last) and int(repaired) == 0
    assert float(last) != float(first), "the step changed the parameters"
    if graphed:
        assert loss_fn._graphs, "the loss ran from its graph"
