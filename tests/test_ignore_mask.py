# SPDX-License-Identifier: Apache-2.0
"""Ignored pixels: the fits leave them out of every loss term.

An ignore mask marks pixels whose targets are not the scene (a passer-by in a capture, a lens's
uncovered corner). Checked here: the blend gives no residual and no gradient there; a fit whose
ignored targets are changed ends exactly where it ends with the clean targets (static and
deformation fits); and on an orbit whose views carry an occluder the scene does not hold, the
ignored fit recovers the surface behind it where the plain fit bakes the occluder in.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from gen4d import synthetic
from gen4d.backends.render import training_render
from gen4d.core.engine.cameras import diffusion4d_orbit
from gen4d.core.engine.deformation import HexPlaneConfig
from gen4d.core.engine.densify import DensifyConfig
from gen4d.core.engine.fit_dynamic import DeformationFitConfig, fit_deformation
from gen4d.core.engine.fit_static import GaussianLearningRates, StaticFitConfig, fit_static
from gen4d.core.engine.gaussians import sphere_init
from gen4d.core.engine.losses import ReconstructionLoss
from gen4d.core.engine.views import PosedImages, keep_ignored

L2_MASK = ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0, mask=1.0)
PAINT = (0.9, 0.1, 0.1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Fits are many small ops: one torch thread avoids oversubscribing two shared cores."""


@pytest.fixture(scope="module")
def world():
    return synthetic.object_world(seed=0)


def truth(world, cameras) -> PosedImages:
    out = synthetic.render(world, cameras, supersample=1)
    return PosedImages(out["rgb"], cameras, out["foreground"])


def occluder(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``[n,size,size]`` one square per view over the image's middle, at a different place in each."""
    gen = torch.Generator().manual_seed(seed)
    box = size // 3
    out = torch.zeros(n, size, size)
    for i in range(n):
        y, x = torch.randint(size // 4, size - size // 4 - box + 1, (2,), generator=gen).tolist()
        out[i, y:y + box, x:x + box] = 1.0
    return out


def corrupted(views: PosedImages, where: torch.Tensor, colour=PAINT) -> PosedImages:
    """The views with a flat-coloured occluder painted over ``where`` (and the silhouette made solid
    there, as a segmenter would see it)."""
    paint = torch.tensor(colour)
    images = torch.lerp(views.images, paint.expand_as(views.images), where[..., None])
    masks = torch.maximum(views.masks, where)
    return PosedImages(images, views.cameras, masks)


# --------------------------------------------------------------------------- the blend


def test_ignored_pixels_have_no_residual_and_no_gradient_and_soft_values_scale_the_residual():
    rgb = torch.rand(2, 5, 6, 3, requires_grad=True)
    alpha = torch.rand(2, 5, 6, 1, requires_grad=True)
    target, masks = torch.rand(2, 5, 6, 3), (torch.rand(2, 5, 6) > 0.5).float()
    ignore = torch.zeros(2, 5, 6)
    ignore[0, 1:3, 2:5] = 1.0
    ignore[1, 4, 0] = 0.25
    out = keep_ignored({"rgb": rgb, "alpha": alpha, "depth": torch.ones(2, 5, 6, 1)}, target, masks, ignore)
    residual = out["rgb"] - target
    assert torch.equal(residual[0, 1:3, 2:5], torch.zeros(2, 3, 3)), "fully ignored pixels keep no residual"
    torch.testing.assert_close(residual[1, 4, 0], 0.75 * (rgb - target)[1, 4, 0])
    keep = ignore == 0
    torch.testing.assert_close(residual[keep], (rgb - target)[keep], rtol=0, atol=1e-7)
    torch.testing.assert_close(out["alpha"][..., 0][ignore == 1], masks[ignore == 1])
    (out["rgb"].square().sum() + out["alpha"].square().sum()).backward()
    assert (rgb.grad[0, 1:3, 2:5] == 0).all() and (alpha.grad[0, 1:3, 2:5] == 0).all()
    assert (rgb.grad[keep] != 0).any()
    assert keep_ignored({"rgb": rgb}, target, None, None)["rgb"] is rgb, "no ignore mask: the render as it is"
    assert torch.equal(out["depth"], torch.ones(2, 5, 6, 1)), "other passes are untouched"


def test_posed_images_check_carry_and_join_their_ignore_masks(world):
    cams = diffusion4d_orbit(16, 16, 3, dynamic=False)
    images = torch.rand(3, 16, 16, 3)
    with pytest.raises(ValueError, match=r"ignore must be \[3,16,16\].*got \(3, 8, 16\)"):
        PosedImages(images, cams, ignore=torch.zeros(3, 8, 16))
    with pytest.raises(ValueError, match="values in 0..1"):
        PosedImages(images, cams, ignore=torch.full((3, 16, 16), 1.5))
    with pytest.raises(ValueError, match="covers every pixel"):
        PosedImages(images, cams, ignore=torch.ones(3, 16, 16))
    ignore = torch.zeros(3, 16, 16)
    ignore[1] = 1.0
    views = PosedImages(images, cams, ignore=ignore)
    assert torch.equal(views.subset([1, 2]).ignore, ignore[1:])
    joined = PosedImages.cat([views, PosedImages(images[:2], cams[:2])])
    assert joined.ignore.shape == (5, 16, 16) and torch.equal(joined.ignore[:3], ignore)
    assert joined.ignore[3:].eq(0).all(), "a set without an ignore mask ignores nothing"
    assert PosedImages.cat([PosedImages(images, cams)]).ignore is None


# --------------------------------------------------------------------------- the fits ignore what they are told


@pytest.fixture(scope="module")
def small(world):
    orbit = truth(world, diffusion4d_orbit(24, 24, 4, dynamic=False))
    video = truth(world, world.reference_cameras(24, 24, 3))
    return types.SimpleNamespace(orbit=orbit, video=video)


def _with_ignored(views: PosedImages, where: torch.Tensor, painted: bool) -> PosedImages:
    images = corrupted(views, where).images if painted else views.images
    return PosedImages(images, views.cameras, views.masks, where)


def test_a_static_fit_ends_the_same_whatever_its_ignored_targets_hold(small):
    where = occluder(len(small.orbit), 24)
    cfg = StaticFitConfig(iterations=30, views_per_step=2, loss=L2_MASK, preview_every=0,
                          learning_rates=GaussianLearningRates(position=0.005, position_final_ratio=0.1),
                          densify=DensifyConfig(total_iterations=30, refine_start=5, refine_every=10))
    init = sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))
    clean = fit_static(init, _with_ignored(small.orbit, where, painted=False), training_render, cfg).gaussians
    painted = fit_static(init, _with_ignored(small.orbit, where, painted=True), training_render, cfg).gaussians
    plain = fit_static(init, corrupted(small.orbit, where), training_render, cfg).gaussians
    torch.testing.assert_close(painted.means, clean.means, rtol=0, atol=1e-5)
    torch.testing.assert_close(painted.sh, clean.sh, rtol=0, atol=1e-5)
    assert len(plain) != len(clean) or (plain.sh - clean.sh).abs().max() > 1e-3, \
        "without the ignore mask the painted targets must change the fit (else this test checks nothing)"


def test_a_deformation_fit_ends_the_same_whatever_its_ignored_targets_hold(small):
    where = occluder(len(small.video), 24, seed=1)
    cfg = DeformationFitConfig(iterations=12, times_per_step=2, preview_every=0, loss=L2_MASK,
                               hexplane=HexPlaneConfig(base_resolution=8, feature_dim=8, multires=(1,)))
    init = sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))
    motion = []
    for painted in (False, True):
        result = fit_deformation(init, _with_ignored(small.video, where, painted), training_render, cfg)
        motion.append(result.extra["motion"].apply(result.gaussians, 0.5))
    torch.testing.assert_close(motion[1].means, motion[0].means, rtol=0, atol=1e-5)
    torch.testing.assert_close(motion[1].sh, motion[0].sh, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- what it buys


def pixel_psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR over a set of pixels ``[P,3]`` in 0..1."""
    return float(-10.0 * torch.log10((x - y).square().mean().clamp_min(1e-10)))


def test_an_ignored_occluder_is_not_baked_into_the_scene(world):
    """12 orbit views, every other one with a red occluder over a third of the object. Judged on the
    occluded pixels by how far each render moved from the truth toward the occluder's colour (0: no
    trace, 1: painted in) and by PSNR: ignored, about as far as a fit of the clean views; not ignored,
    much further. Measured (2 CPU threads): clean 0.10 / 16.8 dB, ignored 0.11 / 15.1 dB, plain
    0.36 / 12.9 dB."""
    size, n = 32, 12
    clean = truth(world, diffusion4d_orbit(size, size, n, dynamic=False))
    where = occluder(n, size, seed=2)
    where[::2] = 0.0
    shown = corrupted(clean, where, PAINT)
    loss = ReconstructionLoss(l1=1.0, dssim=0.2, mask=1.0)
    cfg = StaticFitConfig(iterations=200, views_per_step=2, loss=loss, preview_every=0,
                          learning_rates=GaussianLearningRates(position=0.005, position_final_ratio=0.1),
                          densify=DensifyConfig(total_iterations=200))
    init = sphere_init(1000, 0.5, generator=torch.Generator().manual_seed(0))
    runs = {"clean": clean, "ignored": PosedImages(shown.images, shown.cameras, shown.masks, where), "plain": shown}
    hidden = where > 0.5
    truth_px = clean.images[hidden]
    toward = torch.tensor(PAINT) - truth_px
    scores = {}
    for name, views in runs.items():
        gaussians = fit_static(init, views, training_render, cfg).gaussians
        with torch.no_grad():
            rgb = training_render(gaussians, clean.cameras, torch.ones(3)).rgb.clamp(0, 1)[hidden]
        baked = ((rgb - truth_px) * toward).sum(-1) / toward.square().sum(-1).clamp_min(1e-6)
        scores[name] = (round(float(baked.mean()), 3), round(pixel_psnr(rgb, truth_px), 2))
    report = f"{scores}: (share of the way to the occluder colour, PSNR dB) on the occluded pixels"
    assert scores["ignored"][0] < scores["clean"][0] + 0.05, report
    assert scores["plain"][0] > scores["ignored"][0] + 0.15, report
    assert scores["ignored"][1] > scores["plain"][1] + 1.0, report


# --------------------------------------------------------------------------- the nodes


@pytest.fixture(scope="module")
def node_world():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from node_runner import run

    images, masks, _, cameras, *_ = run("Gen4D_SyntheticWorld", world="object", width=32, height=32, num_frames=3,
                                        seed=0, twin_points=300, supersample=1, depth_mode="metric")
    return types.SimpleNamespace(run=run, images=images, masks=masks, cameras=cameras)


class _Captured(Exception):
    pass


def _capture(seen: dict):
    def fit(start, views, *args, **kwargs):
        seen["views"] = views
        raise _Captured

    return fit


def test_fit_nodes_hand_the_ignore_mask_to_the_fit_moved_with_the_frames(node_world, monkeypatch):
    from gen4d.nodes import fit as fit_nodes

    w, seen = node_world, {}
    monkeypatch.setattr(fit_nodes, "fit_static", _capture(seen))
    monkeypatch.setattr(fit_nodes, "fit_deformation", _capture(seen))
    static = dict(images=w.images, iterations=4, num_points=200, preview_every=0, seed=0)
    # centred (masks, no cameras): the ignore mask moves with the frames; given the masks themselves it
    # comes out as the centred masks
    with pytest.raises(_Captured):
        w.run("Gen4D_StaticGaussians", masks=w.masks, ignore_mask=w.masks, fit_frames="all", **static)
    views = seen["views"]
    assert views.ignore is not None and not torch.equal(views.ignore, w.masks), "centring moved the pixels"
    torch.testing.assert_close(views.ignore, views.masks, rtol=0, atol=1e-5)
    # posed (cameras): kept where it is; one mask for every frame
    one = torch.zeros(1, 32, 32)
    one[0, :8] = 1.0
    with pytest.raises(_Captured):
        w.run("Gen4D_DeformationFit", gaussians=sphere_init(50, 0.5), images=w.images, cameras=w.cameras,
              ignore_mask=one, iterations=2, trajectory_iterations=0, preview_every=0, seed=0,
              center_object=False)
    assert torch.equal(seen["views"].ignore, one.expand(3, 32, 32))
    # an empty mask ignores nothing: no per-step blend
    with pytest.raises(_Captured):
        w.run("Gen4D_StaticGaussians", cameras=w.cameras, ignore_mask=torch.zeros(1, 32, 32), fit_frames="all",
              center_object=False, **static)
    assert seen["views"].ignore is None


def test_fit_nodes_refuse_an_ignore_mask_that_does_not_fit(node_world):
    w = node_world
    static = dict(images=w.images, cameras=w.cameras, iterations=2, num_points=100, preview_every=0, seed=0,
                  fit_frames="all", center_object=False)
    with pytest.raises(ValueError, match=r"ignore_mask: mask size \(16, 16\) does not match the image size"):
        w.run("Gen4D_StaticGaussians", ignore_mask=torch.zeros(3, 16, 16), **static)
    with pytest.raises(ValueError, match=r"ignore_mask: 2 masks for 3 images"):
        w.run("Gen4D_StaticGaussians", ignore_mask=torch.zeros(2, 32, 32), **static)
    with pytest.raises(ValueError, match="covers every pixel"):
        w.run("Gen4D_StaticGaussians", ignore_mask=torch.ones(1, 32, 32), **static)


def test_the_screen_trajectory_is_refined_on_the_pixels_not_ignored():
    """A frame pair where an occluder covers one side of the object: refined with that side ignored, the
    trajectory lands where the object is; the same data with the occluder trusted pulls it off."""
    from gen4d.core.coco4d.screen_trajectory import ScreenTrajectory, center_object, refine_trajectory

    size = 32
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = ((yy - 16) ** 2 + (xx - 18) ** 2 < 36).float()[None].repeat(2, 1, 1)
    frames = torch.ones(2, size, size, 3) * (1 - disc[..., None]) + disc[..., None] * torch.tensor([0.2, 0.5, 0.8])
    centred, centred_masks, start = center_object(frames, disc)
    # the frames the refinement sees: a grey slab of "object" glued to the disc's right side
    occluded = frames.clone()
    slab = torch.zeros_like(disc)
    slab[:, 10:22, 23:30] = 1.0
    occluded[slab > 0] = 0.5
    masks = torch.maximum(disc, slab)
    wrong = ScreenTrajectory(start.shift + torch.tensor([3.0, -2.0]), start.scale.clone())
    alpha = centred_masks
    rgb = centred
    plain, _ = refine_trajectory(rgb, alpha, occluded, masks, wrong, iterations=150)
    ignored, _ = refine_trajectory(rgb, alpha, occluded, masks, wrong, iterations=150, ignore=slab)
    err = {name: float((t.shift - start.shift).norm(dim=-1).max()) for name, t in (("plain", plain),
                                                                                   ("ignored", ignored))}
    assert err["ignored"] < 0.5 and err["plain"] > err["ignored"] + 0.5, err
    with pytest.raises(ValueError, match=r"ignore must be \[2, 32, 32\]"):
        refine_trajectory(rgb, alpha, occluded, masks, wrong, iterations=1, ignore=slab[:1])
