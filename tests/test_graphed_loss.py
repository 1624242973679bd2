# SPDX-License-Identifier: Apache-2.0
"""GraphedLoss gives the eager loss, its terms and its gradients; what it cannot graph runs eagerly
(the CUDA cases run on GPU machines only)."""

from __future__ import annotations

import pytest
import torch
from gen4d.core.engine.graphed_loss import GraphedLoss
from gen4d.core.engine.losses import ReconstructionLoss

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
LOSSES = {
    "l1+dssim": ReconstructionLoss(l1=0.8, dssim=0.2),
    "with mask and depth": ReconstructionLoss(l1=0.8, dssim=0.2, mask=0.5, depth_smoothness=0.1, mask_rgb=True),
}


def _inputs(seed: int, device: str, masked: bool):
    g = torch.Generator().manual_seed(seed)
    rendered = {k: torch.rand(3, 20, 24, c, generator=g).to(device).requires_grad_(True)
                for k, c in (("rgb", 3), ("alpha", 1), ("depth", 1))}
    target = torch.rand(3, 20, 24, 3, generator=g).to(device)
    mask = (torch.rand(3, 20, 24, generator=g) > 0.4).float().to(device) if masked else None
    return rendered, target, mask


def _run(loss, rendered, target, mask):
    total, parts = loss(rendered, target, mask)
    total.backward()
    grads = {k: (v.grad.clone() if v.grad is not None else None) for k, v in rendered.items()}
    return float(total), {k: float(v) for k, v in parts.items()}, grads


def test_on_the_cpu_it_is_the_loss_itself():
    loss = LOSSES["with mask and depth"]
    graphed = GraphedLoss(loss)
    a = _run(graphed, *_inputs(0, "cpu", True))
    b = _run(loss, *_inputs(0, "cpu", True))
    assert a[:2] == b[:2] and graphed._graphs == {}
    for k in a[2]:
        torch.testing.assert_close(a[2][k], b[2][k])


@cuda
@pytest.mark.parametrize("name", list(LOSSES))
def test_replays_give_the_eager_terms_and_gradients(name):
    loss = LOSSES[name]
    masked = loss.mask > 0
    graphed = GraphedLoss(loss)
    kept = []
    for seed in range(3):  # the first call captures, the others replay with new values
        got = _run(graphed, *_inputs(seed, "cuda", masked))
        want = _run(loss, *_inputs(seed, "cuda", masked))
        assert got[0] == pytest.approx(want[0], rel=1e-5)
        assert got[1] == pytest.approx(want[1], rel=1e-5)
        for k, grad in want[2].items():
            if grad is None or not grad.abs().sum():
                assert got[2][k] is None or not got[2][k].abs().sum()
            else:
                torch.testing.assert_close(got[2][k], grad, rtol=1e-4, atol=1e-7)
        kept.append(got[0])
    assert len(graphed._graphs) == 1 and len(set(kept)) == 3


@cuda
def test_a_new_shape_is_a_second_capture_and_no_gradient_runs_eagerly():
    loss = LOSSES["l1+dssim"]
    graphed = GraphedLoss(loss)
    _run(graphed, *_inputs(0, "cuda", False))
    rendered, target, _ = _inputs(1, "cuda", False)
    half = {k: v.detach()[:2].clone().requires_grad_(True) for k, v in rendered.items()}
    _run(graphed, half, target[:2], None)
    assert len(graphed._graphs) == 2
    with torch.no_grad():
        total, _ = graphed({k: v.detach() for k, v in rendered.items()}, target)
    assert total.item() == pytest.approx(float(loss(rendered, target)[0]), rel=1e-5)
    assert len(graphed._graphs) == 2


@cuda
def test_a_loss_that_reads_back_runs_eagerly_with_graphs_off():
    base = LOSSES["l1+dssim"]

    def reads_back(rendered, target, mask=None):
        total, parts = base(rendered, target, mask)
        return total * (1.0 + 0.0 * float(total)), parts

    graphed = GraphedLoss(reads_back)
    got = _run(graphed, *_inputs(0, "cuda", False))
    want = _run(base, *_inputs(0, "cuda", False))
    assert got[0] == pytest.approx(want[0], rel=1e-6) and not graphed.enabled
