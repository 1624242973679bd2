# SPDX-License-Identifier: Apache-2.0
"""A frozen network's forward pass and its backward to the input, each replayed as a CUDA graph.

Score distillation pushes the rendered views through the latent diffusion model's VAE encoder and
takes the gradient back through it on every fit step, at the same shapes every time. Eager, the
encoder's forward and backward are a few hundred kernels launched one by one from Python, and on a
busy host the GPU waits for them. ``torch.cuda.make_graphed_callables`` captures both passes once per
input signature; a call then replays the forward with one launch and autograd replays the backward.

Anything that is not a CUDA tensor that needs a gradient (an input without one is the no-grad forward
``GraphedForward`` serves), a disabled instance, or a capture that fails runs the function eagerly; a
failed capture also turns graphs off for that instance, with a warning. The weights are read, never
trained: the graphs hold their addresses, so when they move the next call captures again.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

__all__ = ["GraphedBackward"]

logger = logging.getLogger(__name__)


class GraphedBackward:
    """``fn(x) -> tensor`` differentiable in ``x``, replayed from CUDA graphs forward and backward.

    Args:
        fn: the pass; one tensor in, one tensor out. It must not read values back to the host nor draw
            random numbers.
        module: the network ``fn`` runs; its weights' placement is watched (moved weights: capture again).
            Graphs serve a frozen network: while any of its weights needs a gradient, ``fn`` runs eagerly.
        max_signatures: graphs kept at once; the oldest is dropped beyond it.
        enabled: False runs ``fn`` eagerly always.

    The output and the gradient a replay gives are the graphs' own buffers: the next call overwrites
    them, so use them within the step (a fit step does).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], module: torch.nn.Module, max_signatures: int = 2,
                 enabled: bool = True) -> None:
        if max_signatures < 1:
            raise ValueError(f"GraphedBackward: max_signatures must be >= 1, got {max_signatures}")
        self.fn = fn
        self.module = module
        params = list(module.parameters())
        self._watched = (params[0], params[-1]) if params else ()
        self.max_signatures = max_signatures
        self.enabled = enabled
        self._captures: dict[tuple, Callable[[Tensor], Tensor]] = {}
        self._placement: tuple | None = None

    def clear(self) -> None:
        """Drop every captured graph and its memory."""
        self._captures.clear()
        self._placement = None

    def __call__(self, x: Tensor) -> Tensor:
        if not self._can_graph(x):
            return self.fn(x)
        placement = tuple((p.data_ptr(), p.dtype, p.device) for p in self._watched)
        if placement != self._placement:  # the weights moved: every graph points at freed memory
            self.clear()
            self._placement = placement
        key = (tuple(x.shape), x.dtype, x.device, x.stride())
        graphed = self._captures.get(key)
        if graphed is None:
            if any(p.requires_grad for p in self.module.parameters()):
                return self.fn(x)  # weights in training: a graph of fn alone would leave them without gradients
            try:
                graphed = self._capture(x)
            except RuntimeError as exc:  # an operation that cannot be captured: stay eager from now on
                logger.warning("CUDA graph capture failed, running eagerly: %s", exc)
                self.enabled = False
                self.clear()
                return self.fn(x)
            while len(self._captures) >= self.max_signatures:
                self._captures.pop(next(iter(self._captures)))
            self._captures[key] = graphed
        return graphed(x)

    def _can_graph(self, x: Tensor) -> bool:
        return (self.enabled and isinstance(x, Tensor) and x.is_cuda and x.requires_grad
                and torch.is_grad_enabled() and not torch.cuda.is_current_stream_capturing())

    def _capture(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        sample = x.detach().clone().requires_grad_(True)
        # Its warm-up runs (cuDNN and cuBLAS choose and allocate outside the graphs) happen on a side stream.
        return torch.cuda.make_graphed_callables(self.fn, (sample,))
