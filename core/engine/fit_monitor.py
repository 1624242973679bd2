# SPDX-License-Identifier: Apache-2.0
"""Per-step bookkeeping of a fit loop that never makes the host wait for the GPU.

Public API:
    FitDivergedError    a loss went NaN/inf: names the loss and step, carries the last good state
    FitMonitor      keeps each step's loss terms as device tensors, reports progress at once, and
                    reads the values back in one transfer every ``every`` steps: history, the
                    NaN/inf check (``FitDivergedError`` naming the loss and its step) and the count
                    of repaired Gaussians.

Design notes:
    A ``float(loss)`` or ``if not torch.isfinite(x).all()`` per step stalls the CPU until the GPU has
    finished that step, so the CPU can never queue the next one ahead: the fit then runs at the
    speed of Python, not of the kernels. Gradients of a non-finite step are zeroed in place as they
    come (``densify.zero_non_finite_grads``), so parameters stay finite while the check waits for
    the next read-back; the fit keeps a snapshot from the last read-back that found every loss
    finite, and that is what a ``FitDivergedError`` carries.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["FitMonitor", "FitDivergedError"]

logger = logging.getLogger(__name__)


class FitDivergedError(ValueError):
    """A loss became NaN or inf; ``result`` (a ``FitResult``) holds the last state whose losses were finite."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


class FitMonitor:
    """Collect a fit's per-step terms on the device; read them back every ``every`` steps.

    Args:
        who: name used in messages ("fit_static").
        result: the ``FitResult`` whose ``history``, ``steps`` and ``repaired`` are filled.
        total_steps: steps of the whole fit (for the progress callback).
        callback: ``callback(step, total, preview)``, called every step.
        preview_every: a preview image goes with every this many steps (0 = never).
        every: steps between read-backs (1 reads back every step).
    """

    def __init__(self, who: str, result, total_steps: int, callback: Callable | None, preview_every: int,
                 every: int = 10):
        self.who, self.result, self.total_steps = who, result, int(total_steps)
        self.callback, self.preview_every, self.every = callback, int(preview_every), max(int(every), 1)
        self._pending: list[tuple[int, list[str], Tensor, dict]] = []
        self._repaired: list[Tensor] = []

    def record(self, step: int, terms: dict[str, Tensor], total: Tensor, images: Tensor, **extra) -> None:
        """Keep step ``step``'s terms (0-d tensors) and report progress, with a preview when due."""
        names = [*terms, "total"]
        # One copy of them all: a term may be a buffer that the next step overwrites (a graphed loss).
        values = torch.stack([v.detach().reshape(()).float() for v in (*terms.values(), total)])
        self._pending.append((step, names, values, extra))
        self.result.steps = step + 1
        if self.callback is not None:
            steps = self.result.steps
            due = self.preview_every and (steps % self.preview_every == 0 or steps == self.total_steps)
            self.callback(steps, self.total_steps, images[0].detach().clamp(0, 1) if due else None)

    def add_repaired(self, count: Tensor | int) -> None:
        """Count Gaussians whose gradients or values were repaired (a 0-d tensor or an int)."""
        self._repaired.append(torch.as_tensor(count).reshape(()))

    def due(self) -> bool:
        """True when the steps recorded since the last read-back fill a window."""
        return len(self._pending) >= self.every or self.result.steps >= self.total_steps

    def flush(self, last_good) -> None:
        """Read the pending terms back, append them to the history and check them.

        Raises:
            FitDivergedError: a loss was NaN or inf (the first one, by step); carries ``last_good``.
        """
        pending, self._pending = self._pending, []
        repaired, self._repaired = self._repaired, []
        flat = [values for _, _, values, _ in pending]
        counts = [c.to(flat[0].device if flat else "cpu", torch.float32).reshape(1) for c in repaired]
        numbers = torch.cat(flat + counts).tolist() if flat or counts else []
        pos = 0
        for step, names, values, extra in pending:
            row = numbers[pos: pos + len(values)]
            pos += len(values)
            for name, value in zip(names, row):
                if not math.isfinite(value):
                    raise FitDivergedError(f"{self.who}: loss '{name}' became {value} at step {step}; the last "
                                           f"state with finite losses (step {last_good.steps}) is kept in the "
                                           f"error", last_good)
            record = dict(zip(names, row))
            record.update(step=step, **extra)
            self.result.history.append(record)
        fixed = int(sum(numbers[pos:]))
        if fixed:
            if not self.result.repaired:
                logger.warning("%s: non-finite gradients or parameters on %d Gaussians before step %d "
                               "(zeroed or removed; reported once per fit)", self.who, fixed, self.result.steps)
            self.result.repaired += fixed
