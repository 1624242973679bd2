# SPDX-License-Identifier: Apache-2.0
"""GraphedForward: replays equal the eager pass, moved weights recapture, and anything it cannot
graph runs eagerly (the CUDA cases run on GPU machines only)."""

from __future__ import annotations

import pytest
import torch
from gen4d.backends.graphed_forward import GraphedForward

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()


def test_on_the_cpu_it_is_the_function_itself():
    net = _net()
    calls = []
    graphed = GraphedForward(lambda x: calls.append(x) or net(x), net)
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(graphed(x), net(x))
    assert len(calls) == 1 and graphed._captures == {}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="warmup"):
        GraphedForward(lambda x: x, _net(), warmup=0)


@cuda
def test_a_replay_equals_the_eager_pass_and_follows_new_inputs():
    net = _net().cuda()
    graphed = GraphedForward(net, net)
    with torch.no_grad():
        for seed in range(3):
            x = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed)).cuda()
            torch.testing.assert_close(graphed(x).clone(), net(x))
        assert len(graphed._captures) == 1
        graphed(torch.randn(2, 8, device="cuda"))  # a new shape is a second graph
        assert len(graphed._captures) == 2


@cuda
def test_moved_weights_are_captured_again():
    net = _net().cuda()
    graphed = GraphedForward(net, net)
    x = torch.randn(5, 8, device="cuda")
    with torch.no_grad():
        graphed(x)
        net.to(torch.float64)
        y = graphed(x.double())
        torch.testing.assert_close(y, net(x.double()))
        net.cpu().cuda()  # new storage at the same dtype
        torch.testing.assert_close(graphed(x.double()), net(x.double()))
    assert len(graphed._captures) == 1


@cuda
def test_with_autograd_recording_it_runs_eagerly():
    net = _net().cuda()
    graphed = GraphedForward(net, net)
    x = torch.randn(5, 8, device="cuda", requires_grad=True)
    graphed(x).sum().backward()
    assert x.grad is not None and graphed._captures == {}


@cuda
def test_a_function_that_cannot_be_captured_falls_back_to_eager():
    net = _net().cuda()

    def reads_back(x):
        y = net(x)
        return y * float(y.abs().max())  # a host read: not capturable

    graphed = GraphedForward(reads_back, net)
    x = torch.randn(5, 8, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(graphed(x), reads_back(x))
        torch.testing.assert_close(graphed(x), reads_back(x))
    assert not graphed.enabled


@cuda
def test_a_compiled_capture_equals_the_eager_pass(monkeypatch):
    from gen4d.backends import graph_cache
    from torch._inductor.compile_fx import compile_fx

    torch._dynamo.reset()
    traced = []
    monkeypatch.setattr(graph_cache, "COMPILE_BACKEND", lambda gm, inputs: traced.append(gm) or compile_fx(gm, inputs))
    net = _net().cuda()
    graphed = GraphedForward(net, net, compiled=True)
    with torch.no_grad():
        for seed in range(3):
            x = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed)).cuda()
            torch.testing.assert_close(graphed(x).clone(), net(x), rtol=1e-4, atol=1e-5)
    assert traced and graphed.compiled and len(graphed._captures) == 1
    torch._dynamo.reset()
