# SPDX-License-Identifier: Apache-2.0
"""A frozen network's forward pass and its backward to the input, each replayed as a CUDA graph.

Score distillation pushes the rendered views through the latent diffusion model's VAE encoder and
takes the gradient back through it on every fit step, at the same shapes every time. Eager, the
encoder's forward and backward are a few hundred kernels launched one by one from Python, and on a
busy host the GPU waits for them. ``torch.cuda.make_graphed_callables`` captures both passes once per
input signature; a call then replays the forward with one launch and autograd replays the backward.

Anything that is not a CUDA tensor that needs a gradient (an input without one is the no-grad forward
``GraphedForward`` serves), a disabled instance, or a capture that fails runs the function eagerly; a
failed capture also turns graphs off for that instance, with a warning (``GraphCache``). The weights are
read, never trained: the graphs hold their addresses, so when they move the next call captures again.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .graph_cache import GraphCache, stream_capturing

__all__ = ["GraphedBackward", "graphs_supported"]


def graphs_supported(device: torch.device) -> bool:
    """Whether work on ``device`` can be captured as CUDA graphs."""
    return device.type == "cuda"


class _Pass(nn.Module):
    """``fn`` as a module giving a one-tensor tuple, the form ``make_graphed_callables`` captures."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.fn(x),)


class GraphedBackward(GraphCache):
    """``fn(x) -> tensor`` differentiable in ``x``, replayed from CUDA graphs forward and backward.

    Args:
        fn: the pass; one tensor in, one tensor out. It must not read values back to the host nor draw
            random numbers.
        module: the network ``fn`` runs; its weights' placement is watched (moved weights: capture again).
            Graphs serve a frozen network: while any of its weights needs a gradient, ``fn`` runs eagerly.
        max_signatures: graphs kept at once; the oldest is dropped beyond it.
        enabled: False runs ``fn`` eagerly always.
        compiled: capture ``fn`` as ``torch.compile`` builds it, forward and backward (``GraphCache``).
        label: the pass's name in log messages.

    The output and the gradient a replay gives are the graphs' own buffers: the next call overwrites
    them, so use them within the step (a fit step does).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], module: torch.nn.Module, max_signatures: int = 2,
                 enabled: bool = True, compiled: bool = False,
                 label: str | None = None) -> None:
        super().__init__(label or "GraphedBackward", fn, module, max_signatures, enabled, compiled)

    def __call__(self, x: Tensor) -> Tensor:
        graphed = self._capture_for((x,)) if self._can_graph(x) else None
        return self.fn(x) if graphed is None else graphed(x)[0]

    def _can_graph(self, x: Tensor) -> bool:
        return (self.enabled and isinstance(x, Tensor) and graphs_supported(x.device) and x.requires_grad
                and torch.is_grad_enabled() and not stream_capturing(x.device))

    def _capturable(self) -> bool:
        # Weights in training: a graph of fn alone would leave them without gradients.
        return not any(p.requires_grad for p in self.module.parameters())

    def _capture(self, inputs: tuple[Tensor, ...]) -> Callable[[Tensor], Tensor]:
        sample = inputs[0].detach().clone().requires_grad_(True)
        # Its warm-up runs (cuDNN and cuBLAS choose and allocate outside the graphs) happen on a side stream.
        return torch.cuda.make_graphed_callables(_Pass(self._graph_fn()), (sample,))
