# SPDX-License-Identifier: Apache-2.0
"""Timing helpers shared by the GPU benchmarks."""

from __future__ import annotations

import time

import torch
from gen4d.core.engine.guidance import PoseSampling, sample_guidance_cameras

__all__ = ["sync", "peak_mib", "sds_step_seconds", "sds_step_seconds_pipelined", "profile_sds_step", "StepClock"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def sds_first_step_seconds(guidance, device: torch.device, batch: int = 4, size: int = 256) -> float:
    """Seconds of a guidance's first SDS step (loss + backward): moving the networks, encoding the condition,
    capturing the graphs and, with ``torch_compile``, compiling the passes."""
    cams = sample_guidance_cameras(PoseSampling(batch=batch), 0.0, torch.Generator().manual_seed(0))
    images = torch.rand(batch, size, size, 3, device=device, requires_grad=True)
    sync()
    start = time.perf_counter()
    guidance.sds_loss(images, cams, 0.0, 0.0).backward()
    sync()
    return time.perf_counter() - start


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


def sds_step_seconds_pipelined(guidance, device: torch.device, batch: int = 4, size: int = 256,
                               repeats: int = 12) -> float:
    """Seconds per SDS step (loss + backward) with the steps queued back to back, one wait at the end, as a fit
    runs them: the host launches a step while the device runs the one before, so this is the device's pace
    unless the host is slower (``sds_step_seconds`` waits around each step: its latency)."""
    cams = sample_guidance_cameras(PoseSampling(batch=batch), 0.0, torch.Generator().manual_seed(0))
    images = torch.rand(batch, size, size, 3, device=device, requires_grad=True)
    for i in range(2):  # capture and warm-up outside the timing
        guidance.sds_loss(images, cams, 0.0, i / 2).backward()
    sync()
    start = time.perf_counter()
    for i in range(repeats):
        guidance.sds_loss(images, cams, 0.0, i / max(repeats - 1, 1)).backward()
    sync()
    return (time.perf_counter() - start) / repeats


def profile_sds_step(guidance, device: torch.device, batch: int = 4, size: int = 256, steps: int = 6,
                     by_operator: bool = False) -> None:
    """Print where an SDS step's time goes: the busiest kernels by device time (``by_operator``: the busiest
    operators with their input shapes, each with its kernels' time; run it on an eager guidance, whose kernels
    a graph replay does not hide), and per step the device's kernel time against the wall time (near equal:
    GPU-bound; far apart: the host sets the pace)."""
    from torch.profiler import ProfilerActivity, profile

    cams = sample_guidance_cameras(PoseSampling(batch=batch), 0.0, torch.Generator().manual_seed(0))
    images = torch.rand(batch, size, size, 3, device=device, requires_grad=True)
    for i in range(3):  # capture and warm-up outside the profile
        guidance.sds_loss(images, cams, 0.0, i / 2).backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync()
    start = time.perf_counter()
    with profile(activities=activities, record_shapes=by_operator) as prof:
        for i in range(steps):
            guidance.sds_loss(images, cams, 0.0, i / max(steps - 1, 1)).backward()
        sync()
    wall = (time.perf_counter() - start) / steps
    if device.type != "cuda":
        sort = "self_cpu_time_total"
    else:
        sort = "cuda_time_total" if by_operator else "self_cuda_time_total"
    print(prof.key_averages(group_by_input_shape=by_operator).table(sort_by=sort, row_limit=25), flush=True)
    kernel_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type.name == "CUDA")
    print(f"SDS step under the profiler: {wall * 1e3:.1f} ms wall, {kernel_us / 1e3 / steps:.1f} ms of kernels",
          flush=True)


class StepClock:
    """A fit's progress callback that notes the host clock after every step, to tell a slow start from a
    slow pace. A fit step renders through gsplat, whose tile intersection waits for the device, so the host
    clock follows the device's within a step.

    ``StepClock(then=other_callback)`` also passes each call on. Start it right before the fit."""

    def __init__(self, then=None, head: int = 100):
        self.then, self.head = then, int(head)
        self.times = [time.perf_counter()]

    def __call__(self, steps: int, total=None, preview=None) -> None:
        self.times.append(time.perf_counter())
        if self.then is not None:
            self.then(steps, total, preview)

    def summary(self, prefix: str) -> dict:
        """``{prefix}_first_steps_seconds``: the first ``head`` steps; ``{prefix}_ms_per_step_after``: the
        median step after them (absent for fits that short)."""
        t = self.times
        if len(t) <= self.head + 1:
            return {}
        later = sorted(b - a for a, b in zip(t[self.head:], t[self.head + 1:]))
        return {f"{prefix}_first_{self.head}_steps_seconds": t[self.head] - t[0],
                f"{prefix}_ms_per_step_after": 1e3 * later[len(later) // 2]}

