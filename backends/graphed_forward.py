# SPDX-License-Identifier: Apache-2.0
"""A network's no-grad forward pass replayed as a CUDA graph.

Score distillation runs the same diffusion UNet at the same shapes on every fit step. Eager, its
many small kernels are launched from Python one at a time, so the host can set the pace while the
GPU waits. Captured once per input signature (shapes, dtypes, device) and weight placement, a call
copies its inputs into the graph's buffers and replays every kernel with one launch.

Anything that is not a CUDA tensor, a call with autograd recording, or a capture that fails runs the
function eagerly; the last also turns graphs off for that instance, with a warning (``GraphCache``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .graph_cache import GraphCache, stream_capturing

__all__ = ["GraphedForward"]

Outputs = Tensor | tuple[Tensor, ...]


@dataclass
class _Capture:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]
    outputs: Outputs


class GraphedForward(GraphCache):
    """``fn(*tensors)`` under ``no_grad``, replayed from CUDA graphs.

    Args:
        fn: the forward pass; tensors in, a tensor or a tuple of tensors out. It must not read values
            back to the host or draw random numbers (a diffusion UNet in eval mode does neither).
        module: the network ``fn`` runs. A graph holds the addresses of its weights, so when they
            move (another device or dtype, parked on the CPU) the next call captures again.
        warmup: eager calls on a side stream before a capture (lets cuDNN and cuBLAS pick and
            allocate their workspaces outside the graph).
        max_signatures: graphs kept at once; the oldest is dropped beyond it.
        enabled: False runs ``fn`` eagerly always.
        compiled: capture ``fn`` as ``torch.compile`` builds it (``GraphCache``); eager calls stay uncompiled.
        label: the pass's name in log messages.

    The outputs of a replay are the graph's own buffers: the next call overwrites them, so read them
    (or copy them) before calling again.
    """

    def __init__(self, fn: Callable[..., Outputs], module: torch.nn.Module, warmup: int = 2,
                 max_signatures: int = 2, enabled: bool = True, compiled: bool = False,
                 label: str | None = None) -> None:
        if warmup < 1:
            raise ValueError(f"GraphedForward: warmup must be >= 1, got {warmup}")
        super().__init__(label or "GraphedForward", fn, module, max_signatures, enabled, compiled)
        self.warmup = warmup

    def __call__(self, *inputs: Tensor) -> Outputs:
        capture = self._capture_for(inputs) if self._can_graph(inputs) else None
        if capture is None:
            return self.fn(*inputs)
        for buffer, value in zip(capture.inputs, inputs):
            buffer.copy_(value, non_blocking=True)
        capture.graph.replay()
        return capture.outputs

    def _can_graph(self, inputs: tuple[Tensor, ...]) -> bool:
        return (self.enabled and not torch.is_grad_enabled() and len(inputs) > 0
                and all(isinstance(t, Tensor) and t.is_cuda for t in inputs)
                and not stream_capturing(inputs[0].device))

    def _capture(self, inputs: tuple[Tensor, ...]) -> _Capture:
        static = tuple(t.detach().clone() for t in inputs)
        fn = self._graph_fn()
        side = torch.cuda.Stream(device=static[0].device)
        side.wait_stream(torch.cuda.current_stream(static[0].device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # a compiled fn compiles in the first of these
                fn(*static)
        torch.cuda.current_stream(static[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fn(*static)
        return _Capture(graph, static, outputs)
