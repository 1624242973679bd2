# SPDX-License-Identifier: Apache-2.0
"""A CPU stand-in for ``torch.cuda.make_graphed_callables`` with the buffer semantics of real graphs.

A graphed callable returns its outputs and its gradients in static buffers that its next replay
overwrites, and copies new inputs into static input buffers. The stand-in does the same around an
eager pass, so a fit loop that keeps a graphed output past its step, or reads a gradient buffer after
the next replay, goes wrong on the CPU as it would on a GPU. Like the real one, it first runs the pass
(forward and backward) a few times eagerly, which is where a compiled pass compiles.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def make_graphed_callables(module: nn.Module, sample_args: tuple, num_warmup_iters: int = 3,
                           allow_unused_input: bool = False, pool=None) -> nn.Module:
    assert isinstance(module, nn.Module), "the pack graphs modules only"
    assert all(isinstance(a, torch.Tensor) for a in sample_args)
    original = module.forward
    params = tuple(module.parameters())
    static_inputs = [a.detach().clone().requires_grad_(a.requires_grad) for a in sample_args]
    static = {"outputs": None, "grads": {}}
    count = len(static_inputs)
    module.replays = 0
    for _ in range(num_warmup_iters):  # eager passes before the capture, forward and backward, as the real one runs
        with torch.enable_grad():
            leaves = [a.detach().clone().requires_grad_(a.requires_grad) for a in sample_args]
            outputs = [o for o in original(*leaves) if o.requires_grad]
            wanted = [x for x in leaves if x.requires_grad]
            if outputs and wanted:
                torch.autograd.grad(outputs, wanted, [torch.ones_like(o) for o in outputs],
                                    allow_unused=allow_unused_input)

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            for buffer, value, sample in zip(static_inputs, inputs[:count], sample_args):
                assert value.shape == sample.shape and value.dtype == sample.dtype, "graphs replay fixed shapes"
                assert value.requires_grad == sample.requires_grad, "requires_grad must match the capture"
                with torch.no_grad():
                    buffer.copy_(value)
            with torch.enable_grad():
                leaves = [b.detach().requires_grad_(b.requires_grad) for b in static_inputs]
                outputs = original(*leaves)
            ctx.captured = (leaves, outputs)
            if static["outputs"] is None:
                static["outputs"] = [torch.empty_like(o) for o in outputs]
            for buffer, value in zip(static["outputs"], outputs):
                buffer.copy_(value.detach())
            module.replays += 1
            return tuple(b.detach() for b in static["outputs"])

        @staticmethod
        @once_differentiable
        def backward(ctx, *grads):
            leaves, outputs = ctx.captured
            wanted = [x for x in (*leaves, *params) if x.requires_grad]
            got = iter(torch.autograd.grad(outputs, wanted, grads, allow_unused=allow_unused_input))
            result = []
            for i, x in enumerate((*leaves, *params)):
                if not x.requires_grad:
                    result.append(None)
                    continue
                grad = next(got)
                if grad is None:
                    result.append(None)
                    continue
                buffer = static["grads"].setdefault(i, torch.empty_like(grad))
                buffer.copy_(grad)
                result.append(buffer.detach())
            return tuple(result)

    def forward(*args):
        return Replay.apply(*args, *params)

    module.forward = forward
    return module
