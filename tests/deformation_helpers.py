# SPDX-License-Identifier: Apache-2.0
"""Shared test helper: a deformation field whose output moves with time."""

from __future__ import annotations

import torch
from gen4d.core.engine.deformation import Deformation


def randomise(module: Deformation, seed: int = 1, head_std: float = 0.1, plane_std: float = 0.2) -> Deformation:
    """Give the zero-initialised last layers and the (all-ones) time planes non-trivial values, so that the
    deltas are non-zero and differ between times. Call it before moving the module off the CPU."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in module.heads.values():
            head[-1].weight.copy_(torch.randn(head[-1].weight.shape, generator=g) * head_std)
            head[-1].bias.copy_(torch.randn(head[-1].bias.shape, generator=g) * head_std * 0.1)
        for _, p in module.field.planes("time"):
            p.add_(torch.randn(p.shape, generator=g) * plane_std)
    return module
