# SPDX-License-Identifier: Apache-2.0
"""A fit's image loss, forward and backward, replayed as CUDA graphs.

The reconstruction loss of a fit step (L1, the SSIM filters, the silhouette and depth terms, their
weighting) is dozens of small kernels with their backward, each launched from Python; on a GPU the
fit loops are bound by that host time. The loss always sees the same shapes within a fit (views or
frames per step at one image size), so one capture per shape serves the whole fit, densification
included: each call copies its inputs into the graph's buffers and replays two graphs.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

__all__ = ["GraphedLoss"]

logger = logging.getLogger(__name__)

RENDERED_KEYS = ("rgb", "alpha", "depth")
LossFn = Callable[[dict[str, Tensor], Tensor, Tensor | None], tuple[Tensor, dict[str, Tensor]]]


class GraphedLoss:
    """``loss(rendered, target, mask) -> (total, parts)``, from CUDA graphs where it can be.

    Args:
        loss: the loss (a :class:`~core.engine.losses.ReconstructionLoss`); it must not read values
            back to the host.
        enabled: False always runs ``loss`` eagerly.

    A call runs eagerly on a CPU, when the render has no gradient, or when a capture fails (the last
    also turns graphs off, with a warning). ``total`` carries gradients to ``rendered`` as the eager
    loss does. The returned values (``total`` and ``parts``) are the graph's buffers, overwritten by
    the next call: copy what must outlive the step (``FitMonitor.record`` copies what it keeps).
    """

    def __init__(self, loss: LossFn, enabled: bool = True) -> None:
        self.loss = loss
        self.enabled = enabled
        self._graphs: dict[tuple, tuple[Callable, list[str]]] = {}

    def __call__(self, rendered: dict[str, Tensor], target: Tensor,
                 mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        keys = tuple(k for k in RENDERED_KEYS if isinstance(rendered.get(k), Tensor))
        inputs = [rendered[k] for k in keys] + [target] + ([mask] if mask is not None else [])
        if not self._can_graph(rendered, inputs):
            return self.loss(rendered, target, mask)
        signature = (keys, mask is not None,
                     tuple((tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in inputs))
        entry = self._graphs.get(signature)
        if entry is None:
            try:
                entry = self._capture(keys, mask is not None, inputs)
            except RuntimeError as exc:  # an operation that cannot be captured, or out of memory
                logger.warning("the fit's loss could not be captured as a CUDA graph (%s); it runs eagerly", exc)
                self.enabled = False
                self._graphs.clear()
                return self.loss(rendered, target, mask)
            self._graphs[signature] = entry
        graphed, names = entry
        total, *values = graphed(*inputs)
        return total, dict(zip(names, values))

    def _can_graph(self, rendered: dict[str, Tensor], inputs: list[Tensor]) -> bool:
        rgb = rendered.get("rgb")
        return (self.enabled and isinstance(rgb, Tensor) and rgb.requires_grad and torch.is_grad_enabled()
                and all(t.is_cuda for t in inputs) and not torch.cuda.is_current_stream_capturing())

    def _capture(self, keys: tuple[str, ...], has_mask: bool, inputs: list[Tensor]) -> tuple[Callable, list[str]]:
        names: list[str] = []

        def flat(*tensors: Tensor) -> tuple[Tensor, ...]:
            rendered = dict(zip(keys, tensors))
            target = tensors[len(keys)]
            mask = tensors[len(keys) + 1] if has_mask else None
            total, parts = self.loss(rendered, target, mask)
            names[:] = list(parts)
            return (total, *parts.values())

        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in inputs)
        # A loss may leave a rendered channel out (no depth term): that input gets no gradient.
        graphed = torch.cuda.make_graphed_callables(flat, samples, allow_unused_input=True)
        return graphed, names
