# SPDX-License-Identifier: Apache-2.0
"""A block in which any CUDA operation that waits for the device raises (the GPU tests' sync check)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def no_device_waits():
    """Run the block under torch's CUDA sync debug mode "error", then restore the previous mode."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
