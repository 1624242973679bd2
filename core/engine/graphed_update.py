# SPDX-License-Identifier: Apache-2.0
"""The work between a fit step's backward and its next render, replayed as one CUDA graph.

After the backward a fit step repairs non-finite gradients, adds the screen-space gradients to the
densification accumulators and takes its Adam steps (the Gaussians', and a deformation fit's field):
some 30 small kernels, each launched from Python. With the loss graphed, a static step at 256² spends
about 1.6 ms on the GPU and 3.6 ms on the host (one H100), so such launches set the pace. Between two
refinements the Gaussian count, the parameters, their gradient buffers, Adam's moments and the
accumulators keep their addresses, so one capture serves every step until
:func:`core.engine.densify.step` replaces them.

The first step with a new set of buffers runs eagerly (it also makes Adam's state and the
accumulators); the next one captures the work and replays it, and the ones after replay it. The
optimiser must be made with ``capturable=True`` and a tensor learning rate where the rate changes
during the fit (:func:`capturable_adam`), and gradients kept between steps
(``zero_grad(set_to_none=False)``), so the backward writes into the same buffers every step.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from . import densify as dens

__all__ = ["GraphedUpdate", "capturable_adam"]

logger = logging.getLogger(__name__)


def capturable_adam(groups: list[dict], **kwargs) -> torch.optim.Adam:
    """Fused Adam whose step can be captured: its step counters on the device and each group's rate a
    0-d device tensor (set it with ``group["lr"].fill_(value)``; a float would be frozen into the graph)."""
    for group in groups:
        device = group["params"][0].device
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
    return torch.optim.Adam(groups, fused=True, capturable=True, **kwargs)


class GraphedUpdate:
    """``update(screen) -> repaired``: gradient repair, accumulation and the Adam steps.

    Args:
        params: the fit's Gaussian parameters (``densify``'s keys), replaced in place by densification.
        optimizers: the Adam optimisers to step (one, or a list), from :func:`capturable_adam` on a GPU.
        state: the densification accumulators, or None when the fit does not densify.
        extra: more parameters whose non-finite gradients are zeroed (a deformation field's).
        enabled: False always runs the work eagerly.

    ``screen`` holds one ``(means2d.grad, radii, width, height)`` per render of the step (empty when the
    fit does not densify). Returns the count of Gaussians whose non-finite gradients were zeroed, as a
    0-d tensor of its own. A capture that fails turns graphs off with a warning and the work runs
    eagerly from then on.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter],
                 optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
                 state: dens.DensifyState | None, extra: tuple[torch.nn.Parameter, ...] = (),
                 enabled: bool = True) -> None:
        self.params, self.state, self.extra = params, state, tuple(extra)
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        self.enabled = enabled
        self.captures = 0
        self._signature: tuple | None = None
        self._seen: tuple | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: list[Tensor] = []
        self._repaired: Tensor | None = None

    def __call__(self, screen: list[tuple[Tensor, Tensor, int, int]]) -> Tensor:
        if not self._can_graph(screen):
            return self._work(screen)
        signature = self._buffers(screen)
        if signature != self._signature:
            self._graph = None
            if signature != self._seen:  # new buffers: one eager step makes Adam's state and the accumulators
                self._seen = signature
                return self._work(screen)
            try:
                self._capture(screen)
            except RuntimeError as exc:
                logger.warning("the fit's update could not be captured as a CUDA graph (%s); it runs eagerly", exc)
                self.enabled, self._graph = False, None
                return self._work(screen)
            self._signature = self._buffers(screen)
        for buffer, value in zip(self._inputs, [t for grad, radii, _, _ in screen for t in (grad, radii)]):
            buffer.copy_(value, non_blocking=True)
        self._graph.replay()
        return self._repaired.clone()

    # -- the work --------------------------------------------------------------------------------
    def _work(self, screen: list[tuple[Tensor, Tensor, int, int]]) -> Tensor:
        repaired = dens.zero_non_finite_grads(self.params, extra=self.extra)
        for grad, radii, width, height in screen:
            torch.nan_to_num_(grad, nan=0.0, posinf=0.0, neginf=0.0)
            dens.accumulate(self.state, grad, radii, width, height)
        for optimizer in self.optimizers:
            optimizer.step()
        return repaired

    # -- graphs ----------------------------------------------------------------------------------
    def _can_graph(self, screen: list[tuple[Tensor, Tensor, int, int]]) -> bool:
        trained = [p for p in (*self.params.values(), *self.extra) if p.requires_grad]
        return (self.enabled and bool(trained) and all(p.is_cuda and p.grad is not None for p in trained)
                and all(grad.is_cuda and radii.is_cuda for grad, radii, _, _ in screen)
                and not torch.cuda.is_current_stream_capturing())

    def _buffers(self, screen: list[tuple[Tensor, Tensor, int, int]]) -> tuple:
        """Addresses and shapes of everything the graph reads or writes, besides its own inputs."""
        tensors: list[Tensor] = []
        for p in (*self.params.values(), *self.extra):
            tensors += [p, p.grad] if p.grad is not None else [p]
        for optimizer in self.optimizers:
            for p, values in optimizer.state.items():
                tensors += [p, *(v for v in values.values() if isinstance(v, Tensor))]
            tensors += [group["lr"] for group in optimizer.param_groups if isinstance(group["lr"], Tensor)]
        if self.state is not None and self.state.grad2d is not None:
            tensors += [self.state.grad2d, self.state.count, self.state.max_radii]
        renders = tuple((tuple(g.shape), g.dtype, tuple(r.shape), r.dtype, w, h) for g, r, w, h in screen)
        return tuple((t.data_ptr(), tuple(t.shape)) for t in tensors) + renders

    def _capture(self, screen: list[tuple[Tensor, Tensor, int, int]]) -> None:
        self._inputs = [t.detach().clone() for grad, radii, _, _ in screen for t in (grad, radii)]
        static = [(self._inputs[2 * i], self._inputs[2 * i + 1], w, h) for i, (_, _, w, h) in enumerate(screen)]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._repaired = self._work(static)
        self._graph = graph
        self.captures += 1
