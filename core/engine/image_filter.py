# SPDX-License-Identifier: Apache-2.0
"""Separable depthwise Gaussian filtering of image stacks, with a backward pass that is a forward filter.

Public API:
    gaussian_window(size, sigma, dtype, device) -> [size]   normalised 1-D Gaussian, cached
    separable_filter(x [B,C,H,W], g [k]) -> [B,C,H-k+1,W-k+1]  "valid" depthwise filter along W then H

Design notes:
    SSIM's local statistics (``core.engine.losses.ssim``) filter five maps per colour channel every fit
    step. A "valid" depthwise convolution ``y = x * k`` has as its adjoint the "full" convolution with the
    flipped kernel, ``dL/dx = pad(dL/dy, k-1) * flip(k)``, which is another depthwise forward convolution.
    :class:`_DepthwiseConv` computes the gradient that way instead of through
    ``convolution_backward``: cuDNN's grouped backward-data path was the slowest kernel of a static fit
    step on an H100 (1.3 ms a call on the GPU and about as much on the host, against 0.24 ms for the
    forward convolution of the same maps). The result is the same linear map, evaluated by a
    different summation order. On a CPU the library's backward is the faster one and stays the default.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_window", "separable_filter"]


@functools.lru_cache(maxsize=16)
def gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-D Gaussian window, made once per size, dtype and device (fit loops call SSIM every
    step; building and copying it each time cost a host-to-device copy per step)."""
    with torch.inference_mode(False):  # a normal tensor even when first made under inference mode
        coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
        g = torch.exp(-(coords**2) / (2.0 * sigma**2))
        return (g / g.sum()).to(dtype=dtype).to(device)


class _DepthwiseConv(torch.autograd.Function):
    """``conv2d(x, kernel, groups=C)`` without padding; the input's gradient is the adjoint (full)
    convolution with the flipped kernel. The kernel takes no gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor) -> Tensor:
        ctx.save_for_backward(kernel)
        return F.conv2d(x, kernel, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        (kernel,) = ctx.saved_tensors
        kh, kw = kernel.shape[-2:]
        flipped = kernel.flip(-2, -1)
        return F.conv2d(grad, flipped, padding=(kh - 1, kw - 1), groups=grad.shape[1]), None


def _depthwise(x: Tensor, kernel: Tensor, adjoint_backward: bool) -> Tensor:
    if kernel.requires_grad or not adjoint_backward:  # a learnt kernel needs its own gradient
        return F.conv2d(x, kernel, groups=x.shape[1])
    return _DepthwiseConv.apply(x, kernel)


def separable_filter(x: Tensor, g: Tensor, adjoint_backward: bool | None = None) -> Tensor:
    """Filter ``x [B,C,H,W]`` with the separable kernel ``g ⊗ g`` per channel, keeping only the windows
    inside the image (output ``[B,C,H-k+1,W-k+1]``, ``k = len(g)``).

    Args:
        adjoint_backward: compute the input's gradient as a forward convolution (:class:`_DepthwiseConv`);
            ``None`` -> on CUDA only (on a CPU the library's own backward is the faster one).

    Raises:
        ValueError: ``x`` is not 4-D, ``g`` not 1-D, or the image is smaller than the window.
    """
    if x.dim() != 4 or g.dim() != 1:
        raise ValueError(f"separable_filter: need x [B,C,H,W] and g [k], got {tuple(x.shape)} and {tuple(g.shape)}")
    c, k = x.shape[1], g.numel()
    if min(x.shape[-2:]) < k:
        raise ValueError(f"separable_filter: a {k}-tap window does not fit images of {tuple(x.shape[-2:])}")
    kx = g.view(1, 1, 1, k).expand(c, 1, 1, k)
    ky = g.view(1, 1, k, 1).expand(c, 1, k, 1)
    adjoint = x.is_cuda if adjoint_backward is None else adjoint_backward
    return _depthwise(_depthwise(x, kx, adjoint), ky, adjoint)
