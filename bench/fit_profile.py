# SPDX-License-Identifier: Apache-2.0
"""Where a fit step's host time goes: profiler ranges around its phases, a profiled static fit, and a
profile window over a later stage of a fit (a coarse-to-fine fit's fine stage).

Used by ``posed_frames_sweep.py`` (``"profile"`` / ``"profile_coarse"`` runs) and ``fit_bench.py --profile``.
Import it after the pack is loaded (both benches load it first).
"""

from __future__ import annotations

import time

import torch
from gen4d.backends.render import training_render
from gen4d.core.engine import densify as dens
from gen4d.core.engine.fit_static import fit_static
from gen4d.core.engine.graphed_loss import GraphedLoss
from gen4d.core.engine.graphed_update import GraphedUpdate
from gen4d.core.engine.views import PosedImages
from torch.profiler import ProfilerActivity, profile


def phase_ranges(more=()):
    """Wrap the stages of a fit step in profiler ranges named ``phase:...``; returns an undo function.

    The profile then says how the host time of a step divides between the deformation, the render,
    the losses, the backward pass, gradient repair and the optimiser (and the update after the backward,
    which holds both). ``more``: further ``(owner, attribute, label)`` to wrap.
    """
    from gen4d.core.engine import fit_dynamic
    from gen4d.core.engine.deformation import Deformation
    from gen4d.core.engine.fit_monitor import FitMonitor

    targets = [(Deformation, "forward_batch", "deformation"), (GraphedLoss, "__call__", "loss"),
               (fit_dynamic.reg, "plane_tv_loss", "regularisers"),
               (fit_dynamic.reg, "time_smoothness_loss", "regularisers"),
               (fit_dynamic.reg, "time_l1_loss", "regularisers"),
               (dens, "zero_non_finite_grads", "grad repair"), (torch.Tensor, "backward", "backward"),
               (torch.optim.Adam, "step", "optimiser"), (FitMonitor, "record", "monitor"),
               (training_render, "each", "render"), (training_render.without_depth, "each", "render"),
               (GraphedUpdate, "__call__", "update"), *more]
    saved = []
    for owner, attr, label in targets:
        original = getattr(owner, attr)

        def wrapped(*a, _f=original, _label=label, **k):
            with torch.profiler.record_function(f"phase:{_label}"):
                return _f(*a, **k)

        saved.append((owner, attr, original))
        setattr(owner, attr, wrapped)

    def undo() -> None:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)

    return undo


def print_phases(prof, steps: int) -> None:
    rows = {}
    for e in prof.key_averages():  # a range shows up twice with CUDA on (host and device rows): keep the host one
        if e.key.startswith("phase:") and e.cpu_time_total >= getattr(rows.get(e.key), "cpu_time_total", -1.0):
            rows[e.key] = e
    for e in sorted(rows.values(), key=lambda e: -e.cpu_time_total):
        print(f"  {e.key[6:]:<14} {e.cpu_time_total / 1000 / steps:7.2f} ms host per step "
              f"({e.count / steps:.0f} calls)", flush=True)
    launches = sum(e.count for e in prof.key_averages() if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                     "cudaLaunchKernelExC", "cuLaunchKernelEx"))
    print(f"  kernel launches: {launches / steps:.0f} per step", flush=True)


def _in_render_phase(render):
    def render_fn(gaussians, cameras, background):
        with torch.profiler.record_function("phase:render"):
            return render(gaussians, cameras, background)

    return render_fn


def phased_render(render=training_render):
    """``render`` whose calls show up as the ``render`` phase of a profile (a static fit calls its render
    function itself, where :func:`phase_ranges` only reaches the batched ``each``), keeping its depth-less
    variant so the fit renders as it would unprofiled."""
    render_fn = _in_render_phase(render)
    if hasattr(render, "without_depth"):
        render_fn.without_depth = _in_render_phase(render.without_depth)
    return render_fn


def profiled_static(init, views: PosedImages, config, device: torch.device, render=training_render):
    """A static fit (a coarse stage) under the torch profiler, its step divided into phases as the
    deformation fit's is; prints the busiest operators and the phases, returns the fit's result. The fit
    renders as it would unprofiled: through ``render``'s depth-less variant where its loss reads no depth."""
    render_fn = phased_render(render)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    undo = phase_ranges([(dens, "accumulate", "densify"),
                          (dens, "step", "densify")])
    try:
        with profile(activities=activities) as prof:
            result = fit_static(init, views, render_fn, config, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        undo()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
    print_phases(prof, config.iterations)
    return result


class StageProfile:
    """The torch profiler over the steps of a fit from ``start`` on, opened by the fit's progress callback.

    ``step(n)`` is the callback (``n`` steps done); the profile opens once ``n`` reaches ``start`` and runs
    to :meth:`close`. The fit runs inside :func:`phase_ranges`, so :meth:`close` prints the busiest
    operators, the host time per phase of a step, the kernel launches, and the device's kernel time
    against the window's wall time (near equal: the GPU sets the pace; far apart: the host does). ``more``:
    further ``(owner, attribute, label)`` phases, as for :func:`phase_ranges`.
    """

    def __init__(self, start: int, device: torch.device, more=()):
        self.start, self.device, self.prof, self.first, self.opened_at = int(start), device, None, 0, 0.0
        self.undo = phase_ranges([(dens, "accumulate", "densify"), (dens, "step", "densify"), *more])

    def step(self, n: int, _total=None, _preview=None) -> None:
        if self.prof is None and n >= self.start:
            self._sync()
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.prof = profile(activities=activities)
            self.prof.start()
            self.first, self.opened_at, self.last = n, time.perf_counter(), n
        elif self.prof is not None:
            self.last = n

    def close(self) -> None:
        self.undo()
        if self.prof is None:
            return
        self._sync()
        wall = time.perf_counter() - self.opened_at
        self.prof.stop()
        steps = max(self.last - self.first, 1)
        averages = self.prof.key_averages()
        sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        print(averages.table(sort_by=sort, row_limit=25), flush=True)
        print_phases(self.prof, steps)
        # a phase range shows up as a device row too, spanning its kernels: count the kernels alone
        kernels = sum(e.self_device_time_total for e in averages
                      if e.device_type.name == "CUDA" and not e.key.startswith("phase:"))
        print(f"  {steps} steps profiled: {wall / steps * 1000:.2f} ms wall, {kernels / 1000 / steps:.2f} ms of "
              "kernels per step", flush=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

