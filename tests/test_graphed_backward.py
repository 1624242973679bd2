# SPDX-License-Identifier: Apache-2.0
"""GraphedBackward: a replay's output and input gradient equal the eager pass's, moved weights capture
again, and whatever it cannot graph runs eagerly (the CUDA cases run on GPU machines only)."""

from __future__ import annotations

import pytest
import torch
from gen4d.backends.graphed_backward import GraphedBackward

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
                              torch.nn.Conv2d(8, 4, 3, stride=2, padding=1))
    return net.eval().requires_grad_(False)


def _input(seed: int, device="cpu") -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).to(device).requires_grad_(True)


def _forward_and_grad(fn, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x.grad = None
    out = fn(x)
    out.backward(upstream)
    return out.detach().clone(), x.grad.clone()


def test_on_the_cpu_it_is_the_function_itself():
    net = _encoder()
    calls = []
    graphed = GraphedBackward(lambda x: calls.append(x) or net(x), net)
    x = _input(0)
    out, grad = _forward_and_grad(graphed, x, torch.ones(2, 4, 8, 8))
    ref_out, ref_grad = _forward_and_grad(net, _input(0), torch.ones(2, 4, 8, 8))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad, ref_grad)
    assert len(calls) == 1 and graphed._captures == {}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_signatures"):
        GraphedBackward(lambda x: x, _encoder(), max_signatures=0)


@cuda
def test_a_replay_gives_the_eager_output_and_gradient_for_each_new_input():
    net = _encoder().cuda()
    graphed = GraphedBackward(net, net)
    for seed in range(3):
        upstream = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(10 + seed)).cuda()
        out, grad = _forward_and_grad(graphed, _input(seed, "cuda"), upstream)
        ref_out, ref_grad = _forward_and_grad(net, _input(seed, "cuda"), upstream)
        torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    assert len(graphed._captures) == 1


@cuda
def test_the_gradient_reaches_the_input_through_the_ops_before_it():
    net = _encoder().cuda()
    graphed = GraphedBackward(net, net)
    leaf = torch.rand(2, 16, 16, 3, device="cuda", requires_grad=True)  # BHWC renders, as SDS gets them
    grads = []
    for fn in (graphed, graphed, net):  # capture, replay, eager reference
        leaf.grad = None
        (fn(leaf.permute(0, 3, 1, 2) * 2 - 1) ** 2).sum().backward()
        grads.append(leaf.grad.clone())
    first, replay, eager = grads
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(replay, eager, rtol=1e-4, atol=1e-5)


@cuda
def test_moved_weights_are_captured_again():
    net = _encoder().cuda()
    graphed = GraphedBackward(net, net)
    _forward_and_grad(graphed, _input(0, "cuda"), torch.ones(2, 4, 8, 8, device="cuda"))
    first = graphed._placement
    net.double()
    x = _input(1, "cuda").double().detach().requires_grad_(True)
    out, grad = _forward_and_grad(graphed, x, torch.ones(2, 4, 8, 8, device="cuda", dtype=torch.float64))
    ref_out, ref_grad = _forward_and_grad(net, x.detach().clone().requires_grad_(True),
                                          torch.ones(2, 4, 8, 8, device="cuda", dtype=torch.float64))
    assert graphed._placement != first and len(graphed._captures) == 1
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad, ref_grad)


@cuda
def test_inputs_without_gradient_and_weights_in_training_run_eagerly():
    net = _encoder().cuda()
    graphed = GraphedBackward(net, net)
    x = _input(0, "cuda").detach()
    torch.testing.assert_close(graphed(x), net(x))
    assert graphed._captures == {}
    net.requires_grad_(True)
    out = graphed(_input(1, "cuda"))
    out.sum().backward()
    assert graphed._captures == {} and all(p.grad is not None for p in net.parameters())


@cuda
def test_a_function_that_cannot_be_captured_falls_back_to_eager():
    net = _encoder().cuda()

    def reads_back(x):
        y = net(x)
        return y * float(y.detach().abs().max())  # a host read: not capturable

    graphed = GraphedBackward(reads_back, net)
    x = _input(0, "cuda")
    out = graphed(x)
    out.sum().backward()
    assert graphed.enabled is False and graphed._captures == {} and x.grad is not None


def _recording_inductor(traced: list):
    """Inductor, noting each graph it compiles (so a test can tell a compiled capture from an eager one)."""
    from torch._inductor.compile_fx import compile_fx

    def backend(gm, example_inputs):
        traced.append(gm)
        return compile_fx(gm, example_inputs)

    return backend


@cuda
def test_a_compiled_capture_gives_the_eager_output_and_gradient(monkeypatch):
    from gen4d.backends import graph_cache

    torch._dynamo.reset()
    traced = []
    monkeypatch.setattr(graph_cache, "COMPILE_BACKEND", _recording_inductor(traced))
    net = _encoder().cuda()
    graphed = GraphedBackward(net, net, compiled=True, label="test encoder")
    upstream = torch.randn(2, 4, 8, 8, device="cuda")
    for seed in range(3):  # capture, then replays with new inputs
        x = _input(seed, "cuda")
        out, grad = _forward_and_grad(graphed, x, upstream)
        ref_out, ref_grad = _forward_and_grad(net, x.detach().clone().requires_grad_(True), upstream)
        torch.testing.assert_close(out, ref_out, rtol=2e-3, atol=2e-3 * float(ref_out.abs().max()))
        torch.testing.assert_close(grad, ref_grad, rtol=2e-3, atol=2e-3 * float(ref_grad.abs().max()))
    assert traced, "the capture recorded the compiled pass"
    assert graphed.compiled and len(graphed._captures) == 1
    torch._dynamo.reset()


@cuda
def test_a_compile_that_fails_captures_the_uncompiled_pass(monkeypatch, caplog):
    from gen4d.backends import graph_cache

    def broken(gm, example_inputs):
        raise RuntimeError("no working compiler")

    torch._dynamo.reset()
    monkeypatch.setattr(graph_cache, "COMPILE_BACKEND", broken)
    net = _encoder().cuda()
    graphed = GraphedBackward(net, net, compiled=True, label="test encoder")
    x = _input(0, "cuda")
    with caplog.at_level("WARNING"):
        out, grad = _forward_and_grad(graphed, x, torch.ones(2, 4, 8, 8, device="cuda"))
    ref_out, ref_grad = _forward_and_grad(net, x.detach().clone().requires_grad_(True), torch.ones(2, 4, 8, 8,
                                                                                                  device="cuda"))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad, ref_grad)
    assert "test encoder: the compiled pass could not be built or captured" in caplog.text
    assert graphed.enabled and not graphed.compiled and len(graphed._captures) == 1, "graphs of the uncompiled pass"
    torch._dynamo.reset()
