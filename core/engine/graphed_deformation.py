# SPDX-License-Identifier: Apache-2.0
"""A deformation field's batched pass and plane regularisers replayed as CUDA graphs.

A deformation fit step is bound by host time: the field's pass (plane sampling, feature MLP, heads),
the plane regularisers and their backward are a few hundred small kernels, each launched from
Python. Captured once as CUDA graphs (``torch.cuda.make_graphed_callables``), each becomes a single
replay, forward and backward. The captured shapes are fixed, so this serves fits whose Gaussian
count and frames per step do not change (no densification).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .deformation import Deformation, HexPlaneField

__all__ = ["graphs_supported", "graphed_batch_deltas", "graphed_plane_terms", "PlaneTerm"]

PlaneTerm = tuple[str, float, Callable[[HexPlaneField], Tensor]]
"""``(name, weight, loss_fn)``: a weighted regulariser of a field's planes (``loss_fn(field)``)."""


def graphs_supported(device: torch.device) -> bool:
    """Whether work on ``device`` can be captured as CUDA graphs."""
    return torch.device(device).type == "cuda"


class _BatchDeltas(nn.Module):
    """``(means [N,3], times [B]) -> heads' outputs [B,N,d]`` as a tuple, in ``head_dims`` order."""

    def __init__(self, deformation: Deformation) -> None:
        super().__init__()
        self.deformation = deformation
        self.names = tuple(deformation.head_dims())

    def forward(self, means: Tensor, times: Tensor) -> tuple[Tensor, ...]:
        d = self.deformation._heads(self.deformation.field.forward_batch(means, times))
        return tuple(d[name] for name in self.names)


def graphed_batch_deltas(deformation: Deformation, means: Tensor, batch: int,
                         times_dtype: torch.dtype = torch.float32) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    """``deltas(means, times) -> {head: [B,N,d]}`` of ``deformation``, captured as CUDA graphs.

    Args:
        deformation: the field, on a CUDA device, in the mode (train / eval) it will run in.
        means: a ``[N,3]`` tensor like the ones it will be called with (same shape, dtype and
            ``requires_grad``); its values are not kept.
        batch: ``B``, the number of times per call.
        times_dtype: dtype of the ``[B]`` times it will be called with.

    Returns:
        A function for :meth:`Deformation.forward_batch`'s ``deltas``. Gradients reach the field's
        parameters and ``means`` as they would without graphs. Its outputs are buffers that the next
        call overwrites: use them within the step.

    Raises:
        ValueError: the field or ``means`` is not on a CUDA device, or ``batch`` < 1.
    """
    device = means.device
    if not (graphs_supported(device) and graphs_supported(deformation.device)):
        raise ValueError(f"graphed_batch_deltas: CUDA graphs need the field and means on a CUDA device, got "
                         f"{deformation.device} and {device}")
    if batch < 1:
        raise ValueError(f"graphed_batch_deltas: batch must be >= 1, got {batch}")
    module = _BatchDeltas(deformation)
    sample_means = means.detach().clone().requires_grad_(means.requires_grad)
    # Sample times inside [0,1]; the capture records kernels, not these values.
    sample_times = torch.linspace(0.0, 1.0, batch, device=device, dtype=times_dtype)
    graphed = torch.cuda.make_graphed_callables(module, (sample_means, sample_times))
    names = module.names

    def deltas(m: Tensor, times: Tensor) -> dict[str, Tensor]:
        return dict(zip(names, graphed(m, times)))

    return deltas


class _PlaneTerms(nn.Module):
    """``() -> weighted plane regularisers`` as a tuple, in the order given."""

    def __init__(self, field: HexPlaneField, terms: list[PlaneTerm]) -> None:
        super().__init__()
        self.field = field
        self.terms = list(terms)

    def forward(self) -> tuple[Tensor, ...]:
        return tuple(weight * fn(self.field) for _, weight, fn in self.terms)


def graphed_plane_terms(deformation: Deformation, terms: list[PlaneTerm]) -> Callable[[], dict[str, Tensor]]:
    """``terms() -> {name: weight * loss_fn(deformation)}``, captured as CUDA graphs.

    Args:
        deformation: the field, on a CUDA device.
        terms: the regularisers, each a function of ``deformation.field``'s planes alone (TV, time
            smoothness, time L1); at least one.

    Returns:
        A function giving the weighted terms with gradients to the planes. Its outputs are buffers
        that the next call overwrites: copy what must outlive the step.

    Raises:
        ValueError: the field is not on a CUDA device, or ``terms`` is empty.
    """
    if not graphs_supported(deformation.device):
        raise ValueError(f"graphed_plane_terms: CUDA graphs need the field on a CUDA device, got {deformation.device}")
    if not terms:
        raise ValueError("graphed_plane_terms: no terms to capture")
    module = _PlaneTerms(deformation.field, terms)
    # A term may leave some planes out (TV on the spatial planes only): those get no gradient.
    graphed = torch.cuda.make_graphed_callables(module, (), allow_unused_input=True)
    names = [name for name, _, _ in terms]

    def values() -> dict[str, Tensor]:
        return dict(zip(names, graphed()))

    return values
