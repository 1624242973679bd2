# SPDX-License-Identifier: Apache-2.0
"""The separable depthwise filter (core/engine/image_filter.py): its forward against a direct 2-D
window sum, and its adjoint backward against finite differences and the library convolution's gradient."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gen4d.core.engine import image_filter as IF
from gen4d.core.engine import losses as L
from numpy.lib.stride_tricks import sliding_window_view


def test_the_window_is_a_normalised_symmetric_gaussian():
    g = IF.gaussian_window(11, 1.5, torch.float64, torch.device("cpu"))
    r = np.arange(11) - 5.0
    want = np.exp(-r**2 / (2 * 1.5**2))
    np.testing.assert_allclose(g.numpy(), want / want.sum(), rtol=1e-12)
    assert IF.gaussian_window(11, 1.5, torch.float64, torch.device("cpu")) is g  # made once


def test_forward_is_the_direct_sum_over_each_valid_window():
    x = torch.rand(2, 3, 14, 19, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = IF.gaussian_window(5, 1.0, torch.float64, torch.device("cpu"))
    w2 = np.outer(g.numpy(), g.numpy())
    want = (sliding_window_view(x.numpy(), (5, 5), axis=(2, 3)) * w2).sum((-1, -2))
    out = IF.separable_filter(x, g)
    assert out.shape == (2, 3, 10, 15)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("taps", [1, 5, 11])
def test_backward_is_the_adjoint(taps):
    g = IF.gaussian_window(taps, 1.5, torch.float64, torch.device("cpu"))
    x = torch.rand(1, 2, 13, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(taps),
                   requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: IF.separable_filter(t, g, adjoint_backward=True), (x,))
    assert torch.autograd.gradgradcheck(lambda t: IF.separable_filter(t, g, adjoint_backward=True).square(), (x,))


def test_an_asymmetric_kernel_is_flipped_in_backward():
    """The adjoint of a correlation is the correlation with the flipped kernel: a one-sided kernel
    shows a missing flip, which a symmetric Gaussian would hide."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 9, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    kernel = torch.rand(3, 1, 2, 4, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda t: IF._DepthwiseConv.apply(t, kernel), (x,))
    upstream = torch.rand(2, 3, 8, 9, dtype=torch.float64, generator=gen)
    ours, = torch.autograd.grad(IF._DepthwiseConv.apply(x, kernel), x, upstream)
    library, = torch.autograd.grad(F.conv2d(x, kernel, groups=3), x, upstream)
    torch.testing.assert_close(ours, library, rtol=1e-12, atol=1e-12)


def test_ssim_gradient_with_the_adjoint_equals_the_library_convolutions(monkeypatch):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 24, 20, 3, generator=gen, requires_grad=True)
    y = torch.rand(2, 24, 20, 3, generator=gen)
    grads = {}
    for adjoint in (True, False):
        monkeypatch.setattr(L, "separable_filter", functools.partial(IF.separable_filter, adjoint_backward=adjoint))
        grads[adjoint], = torch.autograd.grad(L.dssim_loss(x, y), x)
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-5, atol=1e-9)
    assert grads[True].abs().sum() > 0


def test_a_kernel_that_learns_gets_its_gradient():
    kernel = torch.rand(2, 1, 3, 3, requires_grad=True)
    x = torch.rand(1, 2, 6, 6, requires_grad=True)
    IF._depthwise(x, kernel, adjoint_backward=True).sum().backward()
    assert kernel.grad is not None and x.grad is not None


def test_bad_shapes_are_refused():
    g = IF.gaussian_window(5, 1.0, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="does not fit"):
        IF.separable_filter(torch.rand(1, 1, 4, 9), g)
    with pytest.raises(ValueError, match=r"need x \[B,C,H,W\]"):
        IF.separable_filter(torch.rand(1, 9, 9), g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_gradient_equals_the_library_convolutions():
    gen = torch.Generator(device="cuda").manual_seed(5)
    x = torch.rand(4, 15, 64, 64, device="cuda", generator=gen, requires_grad=True)
    upstream = torch.rand(4, 15, 54, 54, device="cuda", generator=gen)
    g = IF.gaussian_window(11, 1.5, torch.float32, x.device)
    ours, = torch.autograd.grad(IF.separable_filter(x, g), x, upstream)
    kx, ky = g.view(1, 1, 1, 11).expand(15, 1, 1, 11), g.view(1, 1, 11, 1).expand(15, 1, 11, 1)
    library, = torch.autograd.grad(F.conv2d(F.conv2d(x, kx, groups=15), ky, groups=15), x, upstream)
    torch.testing.assert_close(ours, library, rtol=1e-4, atol=1e-6)
