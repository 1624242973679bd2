# SPDX-License-Identifier: Apache-2.0
"""The CUDA graphs of one network's pass, kept per input signature while its weights stay put.

``GraphedForward`` (a no-grad forward) and ``GraphedBackward`` (a forward and its backward to the input)
share this bookkeeping: a graph holds the addresses of the weights, so when they move (another device
or dtype, parked on the CPU) every graph is dropped; a few signatures are kept, the oldest dropped
first; and a capture that fails turns graphs off for the instance, with a warning, so the pass runs
eagerly from then on.

With ``compiled`` the graphs record the pass as ``torch.compile`` (inductor) builds it: element-wise work
and normalisations fused into a few generated kernels, convolutions in the layout their kernels want.
Graphs alone remove the launches, not the kernels; on one H100 real-size Zero123 SDS steps (UNet
forward, VAE encoder forward and backward, batch 4 at 256 px, bf16), queued back to back, took 28.8 ms
each as graphs of the uncompiled passes and 20.0 ms compiled, their kernels 27.8 and 18.7 ms (an A/B
that ``bench/guidance_bench.py --case step`` now repeats). Compiling
happens once, in the warm-up before the first capture (tens of seconds for a diffusion UNet; inductor's
on-disk cache shortens it in later processes). Where compiling fails (no Triton, an unsupported
operation), the uncompiled pass is captured instead, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["GraphCache", "stream_capturing"]

logger = logging.getLogger(__name__)

# The torch.compile backend of compiled captures (tests swap in a backend that needs no C compiler).
COMPILE_BACKEND = "inductor"


def stream_capturing(device: torch.device) -> bool:
    """Whether work on ``device`` is being captured into a graph right now (never, off CUDA)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class GraphCache:
    """Captures of ``fn`` keyed by input signature, dropped when ``module``'s weights move.

    Subclasses give ``_capture(inputs)``; ``_capturable()`` may refuse a capture for now (the pass then
    runs eagerly, and a later call may capture).
    """

    def __init__(self, what: str, fn: Callable, module: torch.nn.Module, max_signatures: int, enabled: bool,
                 compiled: bool = False):
        if max_signatures < 1:
            raise ValueError(f"{what}: max_signatures must be >= 1, got {max_signatures}")
        self.what = what
        self.fn = fn
        self.compiled = compiled
        self._compiled_fn: Callable | None = None
        self.module = module
        params = list(module.parameters())
        self._watched = (params[0], params[-1]) if params else ()  # a module moves all its weights at once
        self.max_signatures = max_signatures
        self.enabled = enabled
        self._captures: dict[tuple, Any] = {}
        self._placement: tuple | None = None

    def clear(self) -> None:
        """Drop every captured graph and its memory."""
        self._captures.clear()
        self._placement = None

    def _capture_for(self, inputs: tuple[Tensor, ...]) -> Any | None:
        """The capture for these inputs' signature (made now if need be), or None: run eagerly."""
        placement = tuple((p.data_ptr(), p.dtype, p.device) for p in self._watched)
        if placement != self._placement:  # the weights moved: every graph points at freed memory
            self.clear()
            self._placement = placement
        key = tuple((tuple(t.shape), t.dtype, t.device, t.stride()) for t in inputs)
        capture = self._captures.get(key)
        if capture is not None:
            return capture
        if not self._capturable():
            return None
        try:
            capture = self._capture_compiled_or_not(inputs)
        except RuntimeError as exc:  # an operation that cannot be captured: stay eager from now on
            logger.warning("CUDA graph capture failed, running eagerly: %s", exc)
            self.enabled = False
            self.clear()
            return None
        while len(self._captures) >= self.max_signatures:
            self._captures.pop(next(iter(self._captures)))
        self._captures[key] = capture
        return capture

    def _capture_compiled_or_not(self, inputs: tuple[Tensor, ...]) -> Any:
        if not self.compiled:
            return self._capture(inputs)
        try:
            return self._capture(inputs)
        except Exception as exc:  # compiling failed (no Triton or C compiler, an unsupported operation), or the
            # compiled pass could not be captured. The uncompiled pass computes the same; its graphs still save the
            # launches (and if it cannot be captured either, the caller runs it eagerly).
            logger.warning("%s: the compiled pass could not be built or captured (torch.compile), capturing the "
                           "uncompiled pass instead: %s", self.what,
                           str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self.compiled, self._compiled_fn = False, None
            return self._capture(inputs)

    def _graph_fn(self) -> Callable:
        """What a capture records: ``fn``, or ``fn`` compiled (made once, on the first capture)."""
        if not self.compiled:
            return self.fn
        if self._compiled_fn is None:
            logger.info("%s: compiling the pass with torch.compile before its first capture (once a process; "
                        "the first step waits for it)", self.what)
            self._compiled_fn = torch.compile(self.fn, backend=COMPILE_BACKEND, dynamic=False)
        return self._compiled_fn

    def _capturable(self) -> bool:
        return True

    def _capture(self, inputs: tuple[Tensor, ...]) -> Any:
        raise NotImplementedError
