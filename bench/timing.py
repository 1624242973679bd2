# SPDX-License-Identifier: Apache-2.0
"""Timing helpers shared by the GPU benchmarks."""

from __future__ import annotations

import time

import torch
from gen4d.core.engine.guidance import PoseSampling, sample_guidance_cameras

__all__ = ["sync", "peak_mib", "sds_step_seconds"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def sds_step_seconds(guidance, device: torch.device, batch: int = 4, size: int = 256, repeats: int = 12) -> float:
    """Median seconds of one SDS step (loss + backward) on random renders, after two warm-up steps."""
    cams = sample_guidance_cameras(PoseSampling(batch=batch), 0.0, torch.Generator().manual_seed(0))
    images = torch.rand(batch, size, size, 3, device=device, requires_grad=True)
    times = []
    for i in range(repeats):
        sync()
        start = time.perf_counter()
        guidance.sds_loss(images, cams, 0.0, i / (repeats - 1)).backward()
        sync()
        times.append(time.perf_counter() - start)
    steady = sorted(times[2:])
    return steady[len(steady) // 2]
