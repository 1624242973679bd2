# SPDX-License-Identifier: Apache-2.0
"""Losses and metrics (core/engine/losses.py) against independent float64 maths and known values."""

from __future__ import annotations

import logging
import math
import sys
import types

import numpy as np
import pytest
import torch
from gen4d.core.engine import losses as L
from numpy.lib.stride_tricks import sliding_window_view


def reference_ssim(x: np.ndarray, y: np.ndarray, window: int = 11, sigma: float = 1.5, reflect: bool = False) -> float:
    """Direct float64 SSIM: explicit 2D Gaussian window over every local patch (Wang et al. 2004)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    r = np.arange(window) - (window - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w2 = np.outer(g, g)
    w2 /= w2.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            a, bb = x[b, :, :, c], y[b, :, :, c]
            if reflect:
                p = window // 2
                a, bb = np.pad(a, p, mode="reflect"), np.pad(bb, p, mode="reflect")
            pa = sliding_window_view(a, (window, window))  # [H',W',w,w]
            pb = sliding_window_view(bb, (window, window))
            mu_a = (pa * w2).sum((-1, -2))
            mu_b = (pb * w2).sum((-1, -2))
            va = (((pa - mu_a[..., None, None]) ** 2) * w2).sum((-1, -2))
            vb = (((pb - mu_b[..., None, None]) ** 2) * w2).sum((-1, -2))
            cov = ((pa - mu_a[..., None, None]) * (pb - mu_b[..., None, None]) * w2).sum((-1, -2))
            s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
            values.append(s)
    return float(np.mean(np.stack(values)))


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 32, 32, 3, generator=g)
    # y correlated with x so SSIM is well inside (0, 1).
    y = (0.6 * x + 0.4 * torch.rand(2, 32, 32, 3, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_ssim_matches_float64_reference(images, padding):
    x, y = images
    ours = L.ssim(x, y, padding=padding)
    ref = reference_ssim(x.numpy(), y.numpy(), reflect=padding == "reflect")
    assert 0.05 < ref < 0.95
    assert abs(float(ours) - ref) <= 1e-5


def test_ssim_identical_is_one_and_falls_with_noise(images):
    x, _ = images
    assert float(L.ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(L.ssim(x, x, padding="reflect")) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=g)
    values = [float(L.ssim(x, x + s * noise)) for s in (0.01, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] < 1.0 - 1e-4


def test_ssim_per_image_and_dssim(images):
    x, y = images
    per = L.ssim(x, y, reduction="none")
    assert per.shape == (2,)
    assert float(per.mean()) == pytest.approx(float(L.ssim(x, y)), abs=1e-6)
    # Image 0 identical, image 1 not: per-image SSIM tells them apart.
    mixed = torch.stack([x[0], y[1]])
    per = L.ssim(x, mixed, reduction="none")
    assert float(per[0]) == pytest.approx(1.0, abs=1e-6) and float(per[1]) < 0.95
    assert float(L.dssim_loss(x, y)) == pytest.approx((1 - float(L.ssim(x, y))) / 2, abs=1e-7)


def test_ssim_gradient_and_errors(images):
    x, y = images
    x = x.clone().requires_grad_(True)
    L.dssim_loss(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="too small"):
        L.ssim(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3))
    with pytest.raises(ValueError, match="same shape"):
        L.ssim(torch.rand(1, 16, 16, 3), torch.rand(1, 16, 16, 1))
    with pytest.raises(ValueError, match="odd"):
        L.ssim(x.detach(), y, window=10)


def test_ssim_backpropagates_after_a_first_call_under_inference_mode(images):
    """The filter window is cached: one first made under inference mode must still serve a fit's backward."""
    x, y = images
    with torch.inference_mode():
        first = L.ssim(x, y, window=9, sigma=1.3)
    x = x.clone().requires_grad_(True)
    L.ssim(x, y, window=9, sigma=1.3).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert float(L.ssim(x.detach(), y, window=9, sigma=1.3)) == pytest.approx(float(first), abs=1e-7)


def test_l1_l2_with_and_without_mask():
    x = torch.zeros(1, 4, 4, 3)
    y = torch.zeros(1, 4, 4, 3)
    y[:, :2] = 0.5  # top half off by 0.5
    assert float(L.l1_loss(x, y)) == pytest.approx(0.25)
    assert float(L.l2_loss(x, y)) == pytest.approx(0.125)
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 1.0
    assert float(L.l1_loss(x, y, mask)) == pytest.approx(0.5)
    assert float(L.l2_loss(x, y, mask)) == pytest.approx(0.25)
    assert float(L.l1_loss(x, y, 1.0 - mask)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="mask"):
        L.l1_loss(x, y, torch.ones(1, 3, 4))


def test_mask_loss():
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    assert float(L.mask_loss(mask[..., None], mask)) == 0.0
    assert float(L.mask_loss(mask[..., None], mask, mode="bce")) < 1e-5
    alpha = torch.full((2, 8, 8, 1), 0.5)
    assert float(L.mask_loss(alpha, mask)) == pytest.approx(0.25)
    assert float(L.mask_loss(alpha, mask, mode="bce")) == pytest.approx(math.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="mode"):
        L.mask_loss(alpha, mask, mode="l1")


def test_depth_smoothness():
    b, h, w = 2, 16, 16
    const = torch.full((b, h, w, 1), 2.5)
    image = torch.rand(b, h, w, 3)
    assert float(L.depth_smoothness_loss(const)) == 0.0
    assert float(L.depth_smoothness_loss(const, image)) == 0.0
    noisy = const + 0.1 * torch.randn(b, h, w, 1)
    assert float(L.depth_smoothness_loss(noisy, image)) > 1e-3
    # A ramp along x with slope a: |d_x d| = a everywhere, d_y = 0 -> loss a.
    ramp = (0.05 * torch.arange(w, dtype=torch.float32)).expand(b, h, w)[..., None]
    assert float(L.depth_smoothness_loss(ramp)) == pytest.approx(0.05, rel=1e-5)
    # Edge awareness: a depth step aligned with an image edge costs less than one in a flat image.
    step = torch.zeros(b, h, w, 1)
    step[:, :, w // 2:] = 1.0
    flat = torch.zeros(b, h, w, 3)
    edge = step.expand(b, h, w, 3).clone()
    plain = float(L.depth_smoothness_loss(step, flat))
    aware = float(L.depth_smoothness_loss(step, edge))
    assert aware == pytest.approx(plain * math.exp(-1.0), rel=1e-5)
    # Mask: differences that straddle the masked-out half do not count.
    mask = torch.zeros(b, h, w)
    mask[:, :, : w // 2] = 1.0
    assert float(L.depth_smoothness_loss(step, None, mask)) == 0.0


def _reference_depth_smoothness(depth: np.ndarray, weights: np.ndarray | None) -> float:
    """RegNeRF's depth smoothness by explicit loops: squared differences of each horizontal and vertical
    neighbour pair, each pair weighted by the product of its pixels' weights, divided by the summed weights."""
    b, h, w = depth.shape
    wt = np.ones_like(depth) if weights is None else weights
    num = den = 0.0
    for k in range(b):
        for i in range(h):
            for j in range(w):
                for di, dj in ((0, 1), (1, 0)):
                    if i + di < h and j + dj < w:
                        pair = wt[k, i, j] * wt[k, i + di, j + dj]
                        num += pair * (depth[k, i, j] - depth[k, i + di, j + dj]) ** 2
                        den += pair
    return num / den


def test_depth_smoothness_squared_against_explicit_pairs():
    g = torch.Generator().manual_seed(3)
    depth = 2.0 + 0.3 * torch.rand(2, 9, 11, 1, generator=g, dtype=torch.float64)
    alpha = torch.rand(2, 9, 11, generator=g, dtype=torch.float64)
    d, a = depth[..., 0].numpy(), alpha.numpy()
    assert float(L.depth_smoothness_squared(depth)) == pytest.approx(_reference_depth_smoothness(d, None), rel=1e-10)
    assert float(L.depth_smoothness_squared(depth, alpha)) == pytest.approx(_reference_depth_smoothness(d, a),
                                                                           rel=1e-10)
    # a ramp of slope s along x: every horizontal pair costs s^2, vertical pairs 0 -> s^2 * (#horizontal / #pairs)
    ramp = (0.05 * torch.arange(11, dtype=torch.float64)).expand(2, 9, 11)[..., None]
    pairs_x, pairs_y = 9 * 10, 8 * 11
    assert float(L.depth_smoothness_squared(ramp)) == pytest.approx(0.0025 * pairs_x / (pairs_x + pairs_y), rel=1e-10)
    assert float(L.depth_smoothness_squared(torch.full((1, 5, 5, 1), 3.0))) == 0.0


def test_reconstruction_loss_depth_term_is_regnerf_weighted_by_detached_alpha():
    """Diffusion4D's depth term: plain squared neighbour differences (no image edges), pairs weighted by the
    rendered alpha of both pixels, which it does not push (alpha is a weight, not a target)."""
    rendered = _rendered()
    target = torch.rand(2, 16, 16, 3)
    total, parts = L.ReconstructionLoss(l1=0.0, dssim=0.0, depth_smoothness=0.5)(rendered, target)
    expect = 0.5 * _reference_depth_smoothness(rendered["depth"].detach()[..., 0].double().numpy(),
                                               rendered["alpha"].detach()[..., 0].double().numpy())
    assert float(parts["depth_smoothness"]) == pytest.approx(expect, rel=1e-5)
    total.backward()
    assert rendered["depth"].grad.abs().sum() > 0 and rendered["alpha"].grad is None
    # the target image plays no part (it would in the edge-aware form)
    _, other = L.ReconstructionLoss(l1=0.0, dssim=0.0, depth_smoothness=0.5)(_rendered(grad=False), 1.0 - target)
    assert float(other["depth_smoothness"]) == pytest.approx(expect, rel=1e-5)
    _, aware = L.ReconstructionLoss(l1=0.0, dssim=0.0, depth_smoothness=0.5, depth_smoothness_mode="edge_aware")(
        _rendered(grad=False), target)
    assert float(aware["depth_smoothness"]) == pytest.approx(
        0.5 * float(L.depth_smoothness_loss(_rendered(grad=False)["depth"], target)), rel=1e-6)
    with pytest.raises(ValueError, match="depth_smoothness_mode"):
        L.ReconstructionLoss(depth_smoothness_mode="tv")


def test_psnr_known_mse():
    x = torch.rand(3, 8, 8, 3)
    y = x + 0.1  # MSE 0.01 -> 20 dB
    assert float(L.psnr(x, y)) == pytest.approx(20.0, abs=1e-3)
    y2 = x.clone()
    y2[1] += 0.01  # 40 dB for image 1
    per = L.psnr(x, y2, reduction="none")
    assert torch.isinf(per[0]) and float(per[1]) == pytest.approx(40.0, abs=1e-2)
    assert float(L.psnr(x, x + 0.2, data_range=2.0)) == pytest.approx(20.0, abs=1e-3)
    mask = torch.zeros(3, 8, 8)
    mask[:, :4] = 1.0
    y3 = x + 0.5
    y3[:, :4] = x[:, :4] + 0.1
    assert float(L.psnr(x, y3, mask)) == pytest.approx(20.0, abs=1e-3)


def _rendered(b=2, h=16, w=16, grad=True):
    g = torch.Generator().manual_seed(4)
    out = {
        "rgb": torch.rand(b, h, w, 3, generator=g),
        "alpha": torch.rand(b, h, w, 1, generator=g),
        "depth": torch.rand(b, h, w, 1, generator=g),
    }
    return {k: v.requires_grad_(grad) for k, v in out.items()}


def test_reconstruction_loss_parts_sum_to_total():
    rendered = _rendered()
    target = torch.rand(2, 16, 16, 3)
    mask = (torch.rand(2, 16, 16) > 0.5).float()
    loss = L.ReconstructionLoss(l1=1.0, l2=0.5, dssim=0.2, mask=0.3, depth_smoothness=0.1)
    total, parts = loss(rendered, target, mask)
    assert set(parts) == {"l1", "l2", "dssim", "mask", "depth_smoothness"}
    assert float(sum(parts.values())) == pytest.approx(float(total.detach()), rel=1e-6)
    assert float(parts["l2"]) == pytest.approx(0.5 * float(L.l2_loss(rendered["rgb"].detach(), target)), rel=1e-6)
    total.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in rendered.values())


def test_reconstruction_loss_defaults_and_errors():
    cfg = L.ReconstructionLoss()
    assert (cfg.l1, cfg.l2, cfg.dssim, cfg.mask, cfg.depth_smoothness, cfg.lpips) == (1.0, 0.0, 0.2, 0.0, 0.0, 0.0)
    rendered = _rendered(grad=False)
    total, parts = cfg(rendered, rendered["rgb"].clone())
    assert set(parts) == {"l1", "dssim"} and float(total) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="mask"):
        L.ReconstructionLoss(mask=1.0)(rendered, rendered["rgb"])
    with pytest.raises(ValueError, match="depth"):
        L.ReconstructionLoss(depth_smoothness=1.0)({"rgb": rendered["rgb"]}, rendered["rgb"])
    with pytest.raises(ValueError, match="l1"):
        L.ReconstructionLoss(l1=-1.0)


def test_lpips_off_without_path_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(L, "_LOGGED", set())
    with caplog.at_level(logging.INFO, logger=L.__name__):
        assert L.LPIPSLoss.maybe_create(None) is None
        assert L.LPIPSLoss.maybe_create("") is None
        rendered = _rendered(grad=False)
        total, parts = L.ReconstructionLoss(lpips=0.5)(rendered, torch.rand(2, 16, 16, 3))
        assert "lpips" not in parts
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LPIPS off")]
    assert len(messages) == 1


def test_lpips_vgg_off_without_package(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(L, "_LOGGED", set())
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` raise ImportError
    weights = tmp_path / "lpips.pth"
    torch.save({}, weights)
    with caplog.at_level(logging.INFO, logger=L.__name__):
        assert L.LPIPSLoss.maybe_create(weights, net="vgg") is None
        assert L.LPIPSLoss.maybe_create(weights, net="vgg") is None
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LPIPS off")]
    assert len(messages) == 1 and "lpips" in messages[0]


class _FakeLPIPS(torch.nn.Module):
    """Stands in for lpips.LPIPS: a conv feature distance with the same call signature."""

    def __init__(self, net="alex", pretrained=True, pnet_rand=False, verbose=True):
        super().__init__()
        assert pretrained is False and pnet_rand is True  # nothing may be fetched
        self.feat = torch.nn.Conv2d(3, 4, 3)
        self.lin = torch.nn.Conv2d(4, 1, 1, bias=False)

    def forward(self, x, y, normalize=False):
        assert x.dim() == 4 and x.shape[1] == 3 and x.min() >= -1 and x.max() <= 1
        d = (self.feat(x) - self.feat(y)).square()
        return self.lin(d).mean((2, 3), keepdim=True)


def test_lpips_wrapper_loads_local_state_dict(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=_FakeLPIPS))
    torch.manual_seed(5)
    ref = _FakeLPIPS(pretrained=False, pnet_rand=True)
    path = tmp_path / "lpips_vgg.pth"
    torch.save(ref.state_dict(), path)
    module = L.LPIPSLoss.maybe_create(str(path), net="vgg")
    assert isinstance(module, L.LPIPSLoss)
    assert all(not p.requires_grad for p in module.parameters())
    x, y = torch.rand(2, 32, 32, 3), torch.rand(2, 32, 32, 3)
    expect = ref(x.permute(0, 3, 1, 2) * 2 - 1, y.permute(0, 3, 1, 2) * 2 - 1).mean()
    assert float(module(x, y)) == pytest.approx(float(expect), rel=1e-6)
    assert float(module(x, x)) == 0.0
    rendered = {"rgb": x.clone().requires_grad_(True)}
    loss = L.ReconstructionLoss(l1=0.0, dssim=0.0, lpips=1.0, lpips_path=str(path), lpips_net="vgg")
    total, parts = loss(rendered, y)
    assert set(parts) == {"lpips"} and float(total) == pytest.approx(float(expect), rel=1e-6)
    total.backward()
    assert rendered["rgb"].grad.abs().sum() > 0
    # Wrong files are errors, not silent fallbacks.
    torch.save({"lin.weight": torch.zeros(1, 4, 1, 1)}, tmp_path / "heads_only.pth")
    with pytest.raises(ValueError, match="full"):
        L.LPIPSLoss.maybe_create(tmp_path / "heads_only.pth", net="vgg")
    with pytest.raises(ValueError, match="whole"):
        L.LPIPSLoss.maybe_create(tmp_path / "heads_only.pth")
    for net in ("vgg", "alex"):
        with pytest.raises(ValueError, match="not a file"):
            L.LPIPSLoss.maybe_create(tmp_path / "missing.pth", net=net)


# lpips.LPIPS(net="alex") layout: torchvision alexnet.features index per slice, channels, kernel, stride, padding
_ALEX = ((1, 0, 3, 64, 11, 4, 2), (2, 3, 64, 192, 5, 1, 2), (3, 6, 192, 384, 3, 1, 1), (4, 8, 384, 256, 3, 1, 1),
         (5, 10, 256, 256, 3, 1, 1))


def _alex_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the keys lpips.LPIPS(net='alex').state_dict() uses (lin heads non-negative)."""
    g = torch.Generator().manual_seed(seed)
    state = {"scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
             "scaling_layer.scale": torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)}
    for k, (sl, idx, cin, cout, ksz, _, _) in enumerate(_ALEX):
        state[f"net.slice{sl}.{idx}.weight"] = torch.randn(cout, cin, ksz, ksz, generator=g) / math.sqrt(cin * ksz**2)
        state[f"net.slice{sl}.{idx}.bias"] = 0.1 * torch.randn(cout, generator=g)
        state[f"lin{k}.model.1.weight"] = torch.rand(1, cout, 1, 1, generator=g)
        state[f"lins.{k}.model.1.weight"] = state[f"lin{k}.model.1.weight"].clone()
    return state


def _reference_alex_lpips(state, x, y):
    """LPIPS v0.1 (Zhang et al. 2018) written out: scale the -1..1 inputs, AlexNet relu1..relu5 (max-pool 3/2 before
    conv2 and conv3), unit-normalise features over channels, squared difference, 1x1 heads, spatial mean, sum."""
    shift, scale = state["scaling_layer.shift"].double(), state["scaling_layer.scale"].double()
    a, b = (x.double() - shift) / scale, (y.double() - shift) / scale
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (sl, idx, _, _, _, stride, pad) in enumerate(_ALEX):
        if sl in (2, 3):
            a, b = torch.nn.functional.max_pool2d(a, 3, 2), torch.nn.functional.max_pool2d(b, 3, 2)
        w, bias = state[f"net.slice{sl}.{idx}.weight"].double(), state[f"net.slice{sl}.{idx}.bias"].double()
        a = torch.relu(torch.nn.functional.conv2d(a, w, bias, stride, pad))
        b = torch.relu(torch.nn.functional.conv2d(b, w, bias, stride, pad))
        na = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        lin = state[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total = total + ((na - nb).square() * lin).sum(1).mean((1, 2))
    return total


def test_alex_lpips_in_plain_torch_matches_the_lpips_formula(tmp_path, monkeypatch):
    """LPIPS(alex) needs neither the lpips package nor torchvision: loaded from a local state dict file."""
    from safetensors.torch import save_file

    monkeypatch.setitem(sys.modules, "lpips", None)  # the package is not used for net='alex'
    state = _alex_state()
    path = tmp_path / "alex.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    module = L.LPIPSLoss.maybe_create(str(path))
    assert isinstance(module, L.LPIPSLoss) and all(not p.requires_grad for p in module.parameters())
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 40, 36, 3, generator=g), torch.rand(2, 40, 36, 3, generator=g)
    expect = _reference_alex_lpips(state, x.permute(0, 3, 1, 2) * 2 - 1, y.permute(0, 3, 1, 2) * 2 - 1).mean()
    assert float(module(x, y)) == pytest.approx(float(expect), rel=1e-4)
    assert float(module(x, x)) == 0.0
    small = torch.rand(1, 16, 16, 3, generator=g), torch.rand(1, 16, 16, 3, generator=g)
    assert float(module(*small)) > 0.0, "images below 32 px are enlarged, not refused"
    rendered = {"rgb": x.clone().requires_grad_(True)}
    total, parts = L.ReconstructionLoss(l1=0.0, dssim=0.0, lpips=0.5, lpips_path=str(path))(rendered, y)
    assert set(parts) == {"lpips"} and float(total) == pytest.approx(0.5 * float(expect), rel=1e-4)
    total.backward()
    assert rendered["rgb"].grad.abs().sum() > 0
    del state["lin2.model.1.weight"], state["lins.2.model.1.weight"]
    torch.save(state, tmp_path / "heads_missing.pth")
    with pytest.raises(ValueError, match="lin2.model.1.weight"):
        L.LPIPSLoss.maybe_create(str(tmp_path / "heads_missing.pth"))
