# SPDX-License-Identifier: Apache-2.0
"""``render_each``'s batched gsplat call, on the CPU: gsplat's ``rasterization`` is replaced by a stand-in
that checks the batched shapes gsplat asserts and draws each batch entry with the built-in rasterizer.
(``tests/test_render_gpu.py`` runs the same comparison through gsplat itself.)"""

from __future__ import annotations

import pytest
import torch
from deformation_helpers import randomise
from gen4d.backends import render as render_mod
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from gen4d.core.engine.deformation import Deformation, HexPlaneConfig
from gen4d.core.engine.gaussians import GaussianBatch, Gaussians
from gen4d.core.engine.rasterize import rasterize


class GsplatStandIn:
    """gsplat's ``rasterization`` for ``B`` batched sets and ``C`` cameras each, unpacked, "RGB+ED" or "RGB"."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                 far_plane, sh_degree, render_mode, packed):
        b, n = means.shape[:2]
        c = viewmats.shape[1]
        assert render_mode in ("RGB+ED", "RGB") and packed is False
        assert quats.shape == (b, n, 4) and scales.shape == (b, n, 3) and opacities.shape == (b, n)
        assert viewmats.shape == (b, c, 4, 4) and Ks.shape == (b, c, 3, 3)
        assert colors.shape == ((b, n, 3) if sh_degree is None else (b, n, colors.shape[2], 3))
        self.calls.append(sh_degree)
        self.modes = [*getattr(self, "modes", []), render_mode]
        images, alphas, means2d, radii = [], [], [], []
        for i in range(b):
            rgbd, alpha, proj = rasterize(means[i], quats[i], scales[i], opacities[i], colors[i], viewmats[i],
                                          Ks[i], width, height, near_plane, far_plane, sh_degree=sh_degree,
                                          render_depth=render_mode == "RGB+ED", return_projection=True)
            images.append(rgbd)
            alphas.append(alpha)
            means2d.append(proj.means2d)
            radii.append(proj.radii)
        return torch.stack(images), torch.stack(alphas), {"means2d": torch.stack(means2d),
                                                          "radii": torch.stack(radii)}


@pytest.fixture
def stand_in(monkeypatch):
    fake = GsplatStandIn()
    monkeypatch.setattr(render_mod, "resolve_backend", lambda name, device: "gsplat")
    monkeypatch.setattr(render_mod, "_gsplat_rasterization", lambda: fake)
    return fake


def _batch_and_cameras(bases: int, static_every: int | None):
    g = torch.Generator().manual_seed(4)
    n = 300
    base = Gaussians(means=(torch.rand(n, 3, generator=g) * 2 - 1) * 0.5, quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.empty(n, 3).uniform_(-4.0, -2.5, generator=g),
                     logit_opacities=torch.randn(n, generator=g), sh=torch.randn(n, bases, 3, generator=g) * 0.4)
    deformation = Deformation(HexPlaneConfig(feature_dim=8, base_resolution=16, time_resolution=6, width=32), base,
                              generator=g)
    randomise(deformation, seed=4, head_std=0.4, plane_std=1.0)  # every entry of the batch is its own set
    mask = None
    if static_every:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[::static_every] = True
    times = torch.tensor([0.1, 0.5, 0.9])
    viewmats = orbit_poses([15.0, -10.0, 5.0], [30.0, 250.0, 120.0], 2.2)
    cams = Cameras(viewmats, intrinsics_from_fov(45.0, 40, 32).expand(3, 3, 3).clone(), 40, 32, times, 0.05, 100.0)
    return base, deformation, mask, cams


@pytest.mark.parametrize("bases, static_every", [(1, None), (4, None), (1, 3)])
def test_stacked_batch_gives_the_images_and_gradients_of_the_same_sets_as_a_list(stand_in, bases, static_every):
    base, deformation, mask, cams = _batch_and_cameras(bases, static_every)
    bg = torch.tensor([0.2, 0.4, 0.6])
    weights = torch.rand(3, 32, 40, 5, generator=torch.Generator().manual_seed(9))

    def run(as_list: bool):
        deformation.zero_grad(set_to_none=True)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in base.tensors().items()}
        sets = deformation.forward_batch(Gaussians(**params), cams.times, static_mask=mask)
        assert isinstance(sets, GaussianBatch)
        out = render_mod.render_each(list(sets) if as_list else sets, cams, bg, screen_grads=True)
        assert out.means2d.shape == (3, 1, 300, 2)
        image = torch.cat([out.rgb, out.alpha, out.depth], dim=-1)
        (image * weights).sum().backward()
        grads = {k: p.grad for k, p in params.items() if p.grad is not None}
        grads.update({n: p.grad.clone() for n, p in deformation.named_parameters() if p.grad is not None})
        return image.detach(), grads

    with torch.no_grad():
        moved = deformation.forward_batch(base, cams.times)
    assert (moved[0].means - moved[2].means).abs().max() > 0.05
    stacked, stacked_grads = run(as_list=False)
    listed, listed_grads = run(as_list=True)
    assert stand_in.calls == [None if bases == 1 else 1] * 2
    assert stacked.std() > 0.01  # the sets are in view
    torch.testing.assert_close(stacked, listed, atol=1e-6, rtol=1e-5)
    assert stacked_grads.keys() == listed_grads.keys()
    assert {"means", "quats", "log_scales", "logit_opacities", "sh"} <= set(stacked_grads)
    for key, value in listed_grads.items():
        torch.testing.assert_close(stacked_grads[key], value, atol=1e-6 * float(value.abs().max()) + 1e-9, rtol=1e-4,
                                   msg=key)


def test_sets_of_another_batch_still_render_one_per_camera(stand_in):
    """A plain list (or a slice of a batch, which is a list) is re-stacked: set ``i`` seen by camera ``i``."""
    base, deformation, _, cams = _batch_and_cameras(1, None)
    bg = torch.tensor([1.0, 1.0, 1.0])
    with torch.no_grad():
        sets = deformation.forward_batch(base, cams.times)
        forward = render_mod.render_each(sets, cams, bg).rgb
        backward = render_mod.render_each(sets[::-1], cams, bg).rgb
    assert type(sets[::-1]) is list
    assert (forward[0] - backward[0]).abs().max() > 0.05
    torch.testing.assert_close(forward[1], backward[1])


@pytest.mark.parametrize("batched", [True, False])
def test_a_render_without_depth_gives_the_same_colour_and_gradients(stand_in, monkeypatch, batched):
    """Fits whose losses read no depth render without it: the same colour, alpha and gradients, ``depth`` None."""
    if not batched:  # the built-in rasterizer, one set at a time
        monkeypatch.setattr(render_mod, "resolve_backend", lambda name, device: "torch")
    base, deformation, _, cams = _batch_and_cameras(1, None)
    weights = torch.rand(3, 32, 40, 4, generator=torch.Generator().manual_seed(2))
    results = []
    for depth in (True, False):
        params = {k: v.detach().clone().requires_grad_(True) for k, v in base.tensors().items()}
        sets = deformation.forward_batch(Gaussians(**params), cams.times)
        each = render_mod.render_each if depth else render_mod.training_render.without_depth.each
        out = each(sets, cams, torch.tensor([1.0, 1.0, 1.0]), screen_grads=True)
        assert (out.depth is None) == (not depth)
        image = torch.cat([out.rgb, out.alpha], dim=-1)
        (image * weights).sum().backward()
        results.append((image.detach(), {k: p.grad for k, p in params.items()}))
    if batched:
        assert stand_in.modes == ["RGB+ED", "RGB"]
    torch.testing.assert_close(results[1][0], results[0][0])
    for key, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], grad, msg=key)
    if not batched:
        single = render_mod.training_render.without_depth(sets[0], cams[:1], torch.ones(3))
        assert single.depth is None and single.rgb.shape == (1, 32, 40, 3)
