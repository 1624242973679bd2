# SPDX-License-Identifier: Apache-2.0
"""Fit engine against synthetic ground truth: static, seen-view dynamic, coarse-to-fine, SDS, errors.

Every quality figure is PSNR (dB) or mask IoU against the analytic ray-caster (``gen4d.synthetic``),
which is independent of our Gaussian renderer, at views and times the fit never saw. Sizes are
small (48 px, ~2-4k Gaussians, a few hundred steps) so the file runs in well under three minutes
on a 2-core CPU. Thresholds sit ~1.5 dB / ~0.05 IoU below the values measured on that machine
(stated next to each assertion; "seed 1" is the same fit with every seed set to 1). The fits
are seeded, so they are deterministic on one machine.

Short fits need a faster position learning rate than CoCo4D's 0.001 (which decays over 1000
steps): with L2 + mask the 12-view static orbit reaches 18.4 dB held-out after 300 steps with the
default, 27.6 dB after 200 steps with ``SHORT_FIT_LR`` and 28.4 dB after the default's 1000 steps.
"""

from __future__ import annotations

import copy
import dataclasses
import types

import pytest
import torch
from gen4d import synthetic
from gen4d.backends.render import render_scene, training_render
from gen4d.core.coco4d.reference import reference_clip
from gen4d.core.coco4d.screen_trajectory import ScreenTrajectory, center_object, refine_trajectory
from gen4d.core.engine.cameras import Cameras, diffusion4d_orbit, intrinsics_from_fov, orbit_poses
from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig, fit_coarse_to_fine
from gen4d.core.engine.deformation import Deformation, HexPlaneConfig
from gen4d.core.engine.densify import DensifyConfig
from gen4d.core.engine.fit_dynamic import DeformationFitConfig, fit_deformation
from gen4d.core.engine.fit_static import FitDivergedError, GaussianLearningRates, StaticFitConfig, evaluate, fit_static
from gen4d.core.engine.gaussians import Gaussians, sphere_init
from gen4d.core.engine.guidance import PoseSampling
from gen4d.core.engine.losses import ReconstructionLoss, psnr
from gen4d.core.engine.views import PosedImages

S = 48  # image size of the quality tests
WHITE = torch.ones(3)
SHORT_FIT_LR = GaussianLearningRates(position=0.005, position_final_ratio=0.1)
L2_MASK = ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0, mask=1.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Fits are many small ops: one torch thread avoids oversubscribing two shared cores."""


# --------------------------------------------------------------------------- helpers


def orbit_cameras(elevations, azimuths, size: int = S, times=0.0, radius: float = 2.0,
                  fovy_deg: float = 49.1) -> Cameras:
    """Cameras on the Diffusion4D sphere (distance 2, fovy 49.1) at the given angles and times."""
    el = torch.as_tensor(elevations, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuths, dtype=torch.float32).reshape(-1)
    n = max(el.numel(), az.numel())
    el, az = el.expand(n), az.expand(n)
    t = torch.as_tensor(times, dtype=torch.float32).reshape(-1).expand(n).clone()
    K = intrinsics_from_fov(fovy_deg, size, size).expand(n, 3, 3).clone()
    return Cameras(orbit_poses(el, az, radius), K, size, size, t, 0.01, 100.0)


def engine_orbit(width: int, height: int, num_views: int, dynamic: bool = True) -> Cameras:
    """The orbit these engine tests were measured on: 360/T steps (15° for 24 views), fovy 49.1."""
    return diffusion4d_orbit(width, height, num_views, fovy_deg=49.1, dynamic=dynamic, convention="open_loop")


def ground_truth(world, cameras: Cameras, supersample: int = 3) -> PosedImages:
    """The world ray-cast at every camera (at its time), with its foreground as masks."""
    out = synthetic.render(world, cameras, supersample=supersample)
    return PosedImages(out["rgb"], cameras, out["foreground"])


def sphere(num_points: int = 2000, seed: int = 0) -> Gaussians:
    """CoCo4D's sphere initialisation (radius 0.5 about the origin)."""
    return sphere_init(num_points, 0.5, generator=torch.Generator().manual_seed(seed))


def static_config(iterations: int, **overrides) -> StaticFitConfig:
    """A short static fit: fast positions, L2 + silhouette, densification scaled to the length."""
    base = dict(iterations=iterations, learning_rates=SHORT_FIT_LR, loss=L2_MASK, preview_every=0,
                densify=DensifyConfig(total_iterations=iterations))
    return StaticFitConfig(**{**base, **overrides})


def small_field() -> HexPlaneConfig:
    """A HexPlane field small enough for CPU tests (16/32 planes, 16 channels)."""
    return HexPlaneConfig(base_resolution=16, feature_dim=16, multires=(1, 2))


def deformation_config(iterations: int, **overrides) -> DeformationFitConfig:
    base = dict(iterations=iterations, times_per_step=2, hexplane=small_field(), preview_every=0)
    return DeformationFitConfig(**{**base, **overrides})


class FittedScene:
    """Canonical Gaussians + a fitted motion, with ``at(t)`` like a Scene4D."""

    def __init__(self, result):
        self.gaussians, self.motion = result.gaussians, result.extra["motion"]

    def at(self, t: float) -> Gaussians:
        return self.motion.apply(self.gaussians, float(t))


def per_view_psnr(source, views: PosedImages) -> torch.Tensor:
    """PSNR ``[V]`` of ``source`` (Gaussians, or anything with ``at(t)``) seen by every view at its time."""
    with torch.no_grad():
        out = render_scene(source, views.cameras, WHITE)
    return psnr(out.rgb.clamp(0, 1), views.images, reduction="none")


def fmt(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values.tolist()) + "]"


@pytest.fixture(scope="module")
def object_world():
    return synthetic.object_world(seed=0)


# --------------------------------------------------------------------------- 1. static multi-view fit


@pytest.fixture(scope="module")
def static_orbit_fit(object_world):
    """12-view static Diffusion4D orbit (elevation 0) -> Gaussians; held out: other elevations/azimuths."""
    train = ground_truth(object_world, engine_orbit(S, S, 12, dynamic=False))
    held = ground_truth(object_world, orbit_cameras([20.0, -15.0, 20.0, -15.0, 10.0],
                                                    [15.0, 75.0, 165.0, 255.0, 315.0]))
    init = sphere()
    loss = ReconstructionLoss(l1=1.0, dssim=0.2, mask=1.0)  # L1 + 0.1 (1 - SSIM) + silhouette
    result = fit_static(init, train, training_render, static_config(200, views_per_step=2, loss=loss))
    return types.SimpleNamespace(train=train, held=held, init=init, result=result)


def test_static_orbit_fit_generalises_to_held_out_views(static_orbit_fit):
    c = static_orbit_fit
    before = evaluate(c.init, c.held, training_render)
    after = evaluate(c.result.gaussians, c.held, training_render)
    seen = evaluate(c.result.gaussians, c.train, training_render)
    summary = f"sphere {before}, fit held-out {after}, fit seen {seen}"
    # Measured: sphere 14.2 dB / IoU 0.26; fit held-out 28.3 dB / IoU 0.91; seen 29.2 dB / IoU 0.93
    # (seed 1: 28.2 / 0.91 held-out). L2 + mask instead of L1 + D-SSIM + mask: 27.6 dB / IoU 0.93.
    assert after["psnr"] >= 26.5, summary
    assert after["psnr"] - before["psnr"] >= 12.5, summary
    assert after["mask_iou"] >= 0.86, summary
    assert seen["mask_iou"] >= 0.88, summary
    assert len(c.result.gaussians) != len(c.init), "densification ran"
    history = c.result.history
    assert history[-1]["total"] < 0.3 * history[0]["total"], "the loss fell"


# --------------------------------------------------------------------------- 2. seen-view dynamic fit (CoCo4D)


@pytest.fixture(scope="module")
def seen_view_fit(object_world):
    """CoCo4D setting: a 9-frame reference video from the world's reference camera; the canonical set is
    the world's Gaussian twin at t=0, refined on frame 0, then a deformation fit on the whole video.

    The refinement matters at 48 px: the raw twin's splats spill ~1 px over the figure's outline there
    (15.5 dB, IoU 0.58 against frame 0; IoU 0.90 at 256 px); 100 steps on frame 0 give 29 dB."""
    frames = 9
    cams = object_world.reference_cameras(S, S, frames)
    truth = synthetic.render(object_world, cams, supersample=3)
    clip = reference_clip(truth["rgb"], truth["foreground"], cameras=cams)
    twin = synthetic.surface_motion(object_world, [0.0], 3000, seed=0).gaussians
    canonical = fit_static(twin, clip.views.subset([0]), training_render,
                           StaticFitConfig(iterations=100, densify=None, preview_every=0)).gaussians
    result = fit_deformation(canonical, clip.views, training_render, deformation_config(150))
    return types.SimpleNamespace(views=clip.views, canonical=canonical, result=result)


def test_seen_view_fit_reproduces_the_reference_video(seen_view_fit):
    c = seen_view_fit
    still = per_view_psnr(c.canonical, c.views)
    fitted = per_view_psnr(FittedScene(c.result), c.views)
    summary = f"canonical only {fmt(still)}, deformed {fmt(fitted)}"
    # Measured: canonical [29.1, 21.7, 19.1, 19.8, 21.8, 23.0, 20.3, 20.8, 29.1]
    #           deformed  [29.0, 27.6, 27.1, 27.9, 28.2, 26.3, 26.6, 27.9, 29.2]  (seed 1: min 25.7)
    assert (fitted >= 24.5).all(), summary
    moved = slice(2, 7)  # t = 0.25 .. 0.75; the motion loops, so t=1 looks like t=0
    gain = fitted[moved] - still[moved]
    assert gain.mean() >= 4.5, summary  # measured +6.4 (seed 1: +6.0)
    assert (gain >= 2.0).all(), summary  # measured >= +3.3 (seed 1: +2.8)
    assert torch.equal(c.result.gaussians.means, c.canonical.means), "CoCo4D freezes the canonical set"


# --------------------------------------------------------------------------- 3. Diffusion4D coarse-to-fine


@pytest.fixture(scope="module")
def orbital_fit(object_world):
    """24-view 4D orbit (view and time advance together) + 12-view static orbit -> coarse -> fine."""
    orbit = ground_truth(object_world, engine_orbit(S, S, 24, dynamic=True))
    static = ground_truth(object_world, engine_orbit(S, S, 12, dynamic=False))
    k = torch.arange(0, 23, 2, dtype=torch.float32)  # between training views in azimuth *and* time
    held = ground_truth(object_world, orbit_cameras(0.0, 15.0 * k + 7.5, times=(k + 0.5) / 23.0))
    loss = ReconstructionLoss(l1=1.0, dssim=0.0, mask=1.0)
    config = CoarseToFineConfig(
        coarse=static_config(200, views_per_step=2, loss=loss),
        # 5x the CoCo4D foreground field rates: at 150 steps they give 27.2 dB here against 26.0 dB.
        fine=deformation_config(150, deformation_lr=0.0032, grid_lr=0.032, loss=loss, rigidity_weight=0.0,
                                freeze_canonical=False),
    )
    result = fit_coarse_to_fine(sphere(), orbit, training_render, static, config)
    return types.SimpleNamespace(held=held, result=result)


def test_coarse_to_fine_on_held_out_view_time_pairs(orbital_fit):
    c = orbital_fit
    coarse = per_view_psnr(c.result.extra["coarse"].gaussians, c.held)
    fine = per_view_psnr(FittedScene(c.result), c.held)
    summary = f"coarse {fmt(coarse)} (mean {coarse.mean():.2f}), fine {fmt(fine)} (mean {fine.mean():.2f})"
    # Measured: coarse mean 22.6 dB; fine mean 27.2 dB, per pair 25.9..28.5 (seed 1: 22.8 -> 27.5, min 26.4).
    assert fine.mean() >= 25.5, summary
    assert fine.min() >= 24.0, summary
    assert fine.mean() - coarse.mean() >= 3.0, summary  # measured +4.6 (seed 1: +4.7)
    assert c.result.steps == 150 and c.result.extra["coarse"].steps == 200


# --------------------------------------------------------------------------- 4. SDS guidance


@pytest.fixture(scope="module")
def one_view_fits(object_world):
    """The same one-view static fit with and without the world oracle's score distillation."""
    seen = ground_truth(object_world, object_world.reference_cameras(S, S, 1))
    held = ground_truth(object_world, orbit_cameras([0.0, 0.0, 0.0, 15.0], [60.0, 120.0, 240.0, 300.0]))
    sampling = PoseSampling(batch=2, radius=2.0, width=S, height=S)
    # The oracle is a perfect denoiser: weight 1 (not the 1e-4 tuned for real SDS) lets it dominate.
    config = static_config(150, pose_sampling=sampling, sds_weight=1.0)
    oracle = synthetic.OracleGuidance(object_world)
    plain = fit_static(sphere(), seen, training_render, config)
    guided = fit_static(sphere(), seen, training_render, config, guidance=oracle)
    return types.SimpleNamespace(seen=seen, held=held, plain=plain, guided=guided, oracle=oracle)


def test_sds_guidance_shapes_unseen_views(one_view_fits):
    c = one_view_fits
    plain = evaluate(c.plain.gaussians, c.held, training_render)
    guided = evaluate(c.guided.gaussians, c.held, training_render)
    summary = f"without guidance {plain}, with guidance {guided}"
    # Measured: without 11.6 dB / IoU 0.15, with 22.9 dB / IoU 0.78 (held-out side views);
    # seed 1: 11.7 / 0.15 and 22.7 / 0.76.
    assert guided["psnr"] - plain["psnr"] >= 8.0, summary
    assert guided["psnr"] >= 21.0, summary
    assert guided["mask_iou"] >= 0.7, summary
    assert c.oracle.calls == 150, "one SDS call per step (sds_every=1)"
    assert all("sds" in h for h in c.guided.history) and not any("sds" in h for h in c.plain.history)
    # The seen view alone is fitted well without guidance (31.4 dB measured).
    assert evaluate(c.plain.gaussians, c.seen, training_render)["psnr"] >= 29.0


# --------------------------------------------------------------------------- 5. bad input and failures


@pytest.fixture(scope="module")
def tiny(object_world):
    """A 24 px, 4-view static orbit and a 24 px 4-frame reference video, for failure and determinism tests."""
    orbit = ground_truth(object_world, engine_orbit(24, 24, 4, dynamic=False), supersample=1)
    video = ground_truth(object_world, object_world.reference_cameras(24, 24, 4), supersample=1)
    return types.SimpleNamespace(orbit=orbit, video=video)


def test_mismatched_frames_and_masks_are_named():
    frames, cams = torch.rand(3, 16, 16, 3), engine_orbit(16, 16, 3)
    masks = torch.ones(3, 16, 16)
    with pytest.raises(ValueError, match=r"masks must be \[3,16,16\].*got \(2, 16, 16\)"):
        PosedImages(frames, cams, masks[:2])
    with pytest.raises(ValueError, match=r"masks must be \[3,16,16\].*got \(3, 12, 16\)"):
        PosedImages(frames, cams, masks[:, :12])
    with pytest.raises(ValueError, match="3 images but 2 cameras"):
        PosedImages(frames, cams[:2])
    with pytest.raises(ValueError, match="images are 16x16 but cameras are 20x16"):
        PosedImages(frames, engine_orbit(20, 16, 3))
    # reference_clip: with centring (no cameras) the centring step names both inputs, without it PosedImages.
    with pytest.raises(ValueError, match=r"frames .* and masks .* must match"):
        reference_clip(frames, masks[:2])
    with pytest.raises(ValueError, match=r"frames .* and masks .* must match"):
        reference_clip(frames, torch.ones(3, 16, 12))
    with pytest.raises(ValueError, match="masks must be"):
        reference_clip(frames, masks[:2], center=False)


def test_empty_masks_are_rejected():
    frames, cams = torch.rand(3, 16, 16, 3), engine_orbit(16, 16, 3)
    with pytest.raises(ValueError, match="empty in every image"):
        PosedImages(frames, cams, torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="empty in every image"):
        reference_clip(frames, torch.zeros(3, 16, 16), center=False)
    with pytest.raises(ValueError, match=r"mask is empty in frame\(s\) \[0, 1, 2\]"):
        reference_clip(frames, torch.zeros(3, 16, 16))


def nan_from(step: int, calls_per_step: int = 1):
    """A render_fn that renders normally, then returns NaN colour from fit step ``step`` on."""
    calls = [0]

    def render_fn(gaussians, cameras, background):
        out = training_render(gaussians, cameras, background)
        calls[0] += 1
        if (calls[0] - 1) // calls_per_step >= step:
            return dataclasses.replace(out, rgb=out.rgb * float("nan"))
        return out

    return render_fn


def out_of_memory(gaussians, cameras, background):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)")


def assert_finite(gaussians: Gaussians) -> None:
    assert len(gaussians) > 0
    for name, tensor in gaussians.tensors().items():
        assert torch.isfinite(tensor).all(), name


def test_static_fit_divergence_keeps_last_good_state(tiny):
    config = static_config(40, views_per_step=1)
    with pytest.raises(FitDivergedError, match=r"fit_static: loss 'l2' became nan at step 25") as info:
        fit_static(sphere(300), tiny.orbit, nan_from(25), config)
    good = info.value.result
    assert 0 < good.steps <= 25, good.steps
    assert_finite(good.gaussians)
    assert not torch.equal(good.gaussians.sh, sphere(300).sh), "the kept state is a fitted one, not the init"


@pytest.mark.parametrize("decay_steps", [None, 3])
def test_static_fit_decays_the_position_rate_over_its_decay_steps_then_holds_it(tiny, monkeypatch, decay_steps):
    import gen4d.core.engine.fit_static as fs

    seen = []
    real = fs.set_learning_rate

    def record(group, value):
        if group.get("name") == "means":
            seen.append(float(value))
        real(group, value)

    monkeypatch.setattr(fs, "set_learning_rate", record)
    rates = GaussianLearningRates(position=1e-2, position_final_ratio=0.02, position_decay_steps=decay_steps)
    fit_static(sphere(100), tiny.orbit, training_render, static_config(6, views_per_step=1, learning_rates=rates,
                                                                       densify=None))
    span = decay_steps or 6
    expected = [1e-2 * 0.02 ** min(step / span, 1.0) for step in range(6)]
    assert seen == pytest.approx(expected, rel=1e-9)
    if decay_steps:
        assert seen[3:] == pytest.approx([2e-4] * 3, rel=1e-9)


def test_learning_rates_refuse_a_decay_span_below_one_step():
    with pytest.raises(ValueError, match="position_decay_steps"):
        GaussianLearningRates(position_decay_steps=0)


def test_deformation_fit_divergence_keeps_last_good_state(tiny, object_world):
    canonical = synthetic.surface_motion(object_world, [0.0], 300, seed=0).gaussians
    config = deformation_config(40, times_per_step=1)
    with pytest.raises(FitDivergedError, match=r"fit_deformation: loss 'l2' became nan at step 25") as info:
        fit_deformation(canonical, tiny.video, nan_from(25), config)
    good = info.value.result
    assert 0 < good.steps <= 25, good.steps
    assert_finite(good.gaussians)
    assert_finite(good.extra["motion"].apply(good.gaussians, 0.5))
    assert all(torch.isfinite(p).all() for p in good.extra["motion"].deformation.parameters())


def test_out_of_memory_becomes_a_value_error_with_a_cap(tiny):
    with pytest.raises(ValueError, match=r"fit_static: ran out of memory with 2500 Gaussians.*max_gaussians "
                                         r"about 1250"):
        fit_static(sphere(2500), tiny.orbit, out_of_memory, static_config(5))
    canonical = sphere(2500)
    with pytest.raises(ValueError, match=r"fit_deformation: ran out of memory with 2500 Gaussians.*max_gaussians "
                                         r"about 1250"):
        fit_deformation(canonical, tiny.video, out_of_memory, deformation_config(5, rigidity_weight=0.0))


class CountingGuidance:
    """A stand-in SDS guidance that checks what a real one reads (BHWC images in 0..1, one camera per image,
    a scene time and progress in [0, 1]) and counts the fits it saw start and end."""

    def __init__(self, fail_at: int | None = None):
        self.starts, self.ends, self.calls, self.fail_at = 0, 0, 0, fail_at

    def reseed(self, seed: int) -> None:
        self.starts += 1

    def end_fit(self) -> None:
        self.ends += 1

    def sds_loss(self, images, cameras, t, step_ratio):
        assert images.dim() == 4 and images.shape[-1] == 3 and len(cameras) == images.shape[0]
        assert 0.0 <= t <= 1.0 and 0.0 <= step_ratio <= 1.0
        assert float(images.detach().min()) >= -1e-4 and float(images.detach().max()) <= 1 + 1e-4
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("the guidance model failed")
        return 1e-3 * (images - images.detach().mean()).square().mean()


def test_every_fit_ends_its_guidance_however_it_stops(tiny, object_world):
    """``end_fit`` (where a guidance gives back its per-fit memory) follows every fit's start exactly once:
    after a full fit, a stopped one and a failed one, static and deformation alike."""
    sampling = PoseSampling(batch=2, radius=2.0, width=24, height=24)
    static = static_config(6, views_per_step=1, pose_sampling=sampling, sds_weight=1.0)
    canonical = synthetic.surface_motion(object_world, [0.0], 300, seed=0).gaussians
    dynamic = deformation_config(6, times_per_step=1, rigidity_weight=0.0, pose_sampling=sampling, sds_weight=1.0)

    done, stopped, failed = CountingGuidance(), CountingGuidance(), CountingGuidance(fail_at=3)
    fit_static(sphere(300), tiny.orbit, training_render, static, done)
    fit_deformation(canonical, tiny.video, training_render, dynamic, done)
    assert (done.starts, done.ends, done.calls) == (2, 2, 12)

    fit_static(sphere(300), tiny.orbit, training_render, static, stopped, should_stop=lambda: stopped.calls >= 2)
    assert (stopped.starts, stopped.ends, stopped.calls) == (1, 1, 2)

    with pytest.raises(RuntimeError, match="the guidance model failed"):
        fit_deformation(canonical, tiny.video, training_render, dynamic, failed)
    assert (failed.starts, failed.ends) == (1, 1)


def test_same_seed_same_gaussians(tiny):
    densify = DensifyConfig(total_iterations=30, refine_start=10, refine_every=10)
    config = static_config(30, views_per_step=2, densify=densify, seed=7)
    a = fit_static(sphere(300), tiny.orbit, training_render, config)
    b = fit_static(sphere(300), tiny.orbit, training_render, config)
    c = fit_static(sphere(300), tiny.orbit, training_render, dataclasses.replace(config, seed=8))
    assert len(a.gaussians) != 300, "densification ran (it draws from the seeded generator)"
    for name, tensor in a.gaussians.tensors().items():
        assert torch.equal(tensor, b.gaussians.tensors()[name]), name
    assert not torch.equal(a.gaussians.means, c.gaussians.means), "another seed picks other views"

    canonical = a.gaussians
    dconfig = deformation_config(10, seed=3)
    d = fit_deformation(canonical, tiny.video, training_render, dconfig)
    e = fit_deformation(canonical, tiny.video, training_render, dconfig)
    sd, se = d.extra["motion"].state_dict(), e.extra["motion"].state_dict()
    assert sd.keys() == se.keys() and all(torch.equal(sd[k], se[k]) for k in sd)


def test_adapted_time_grid_has_one_sample_per_frame_time_up_to_the_configured_count(tiny):
    """A fit that adapts its time grid samples each distinct frame time once, at most the configured count."""
    frames = int(torch.unique(tiny.video.cameras.times).numel())
    assert frames == 4
    canonical = sphere(200)
    for adapt, configured, expected in ((True, 25, frames), (True, 3, 3), (False, 9, 9)):
        config = deformation_config(1, hexplane=dataclasses.replace(small_field(), time_resolution=configured),
                                    adapt_time_resolution=adapt)
        motion = fit_deformation(canonical, tiny.video, training_render, config).extra["motion"]
        assert motion.deformation.config.time_resolution == expected, (adapt, configured)
        assert motion.deformation.field.grids[0]["xt"].shape[-1] == expected


# --------------------------------------------------------------------------- 6. screen trajectory


def test_center_object_and_refine_trajectory_recover_a_known_placement():
    world = synthetic.scene_world(seed=0)
    frames_n, size = 4, 64
    truth = synthetic.render(world, world.reference_cameras(size, size, frames_n), supersample=3)
    frames, masks = truth["rgb"], truth["foreground"]
    centred, centred_masks, start = center_object(frames, masks)
    # Centring is undone by its own trajectory: the walker lands back where the video has it.
    back = start.warp(centred_masks[..., None])[..., 0] > 0.5
    original = masks > 0.5
    iou = ((back & original).sum() / (back | original).sum()).item()
    assert iou >= 0.95, f"IoU {iou:.3f}"  # measured 0.993
    cy, cx = [float(v) for v in torch.nonzero(centred_masks > 0.5).float()[:, 1:].mean(0)]
    assert abs(cx - size / 2) < 2.0 and abs(cy - size / 2) < 2.0, (cx, cy)
    # A known placement, off the centring one by ~1-1.5 px and 3-4 % in scale, made exactly reachable:
    known = ScreenTrajectory(start.shift + torch.tensor([[1.5, -1.0], [-1.2, 0.8], [0.7, 1.3], [-1.0, -1.4]]),
                             start.scale * torch.tensor([1.04, 0.97, 1.03, 0.96]))
    premultiplied = known.warp(centred * centred_masks[..., None])
    alpha = known.warp(centred_masks[..., None])[..., 0]
    target = premultiplied / alpha[..., None].clamp_min(1e-6)
    refined, losses = refine_trajectory(centred, centred_masks, target, alpha, start, iterations=100)
    shift_err = (refined.shift - known.shift).abs().max().item()
    scale_err = (refined.scale / known.scale - 1.0).abs().max().item()
    # Measured: 0.005 px and 0.04 % (from 1.5 px and 4 %).
    assert shift_err < 0.1, f"shift error {shift_err:.4f} px"
    assert scale_err < 0.01, f"scale error {scale_err:.5f}"
    assert losses[-1] < 1e-3 * losses[0]


def test_render_each_draws_set_i_from_camera_i():
    """The deformation fit's batched renderer: camera ``i`` sees set ``i``, as one render per set would."""
    from gen4d.backends.render import render, render_each

    sets = [sphere_init(200, radius=0.3 + 0.1 * i, opacity=0.8, color=(0.3 * i, 0.9 - 0.3 * i, 0.5),
                        generator=torch.Generator().manual_seed(i)) for i in range(3)]
    cams = Cameras(orbit_poses([0.0, 10.0, -10.0], [0.0, 90.0, 200.0], 2.5),
                   intrinsics_from_fov(40.0, 24, 16).expand(3, 3, 3).clone(), 24, 16, torch.tensor([0.0, 0.5, 1.0]))
    bg = torch.tensor([0.1, 0.2, 0.3])
    each = render_each(sets, cams, bg)
    for i, g in enumerate(sets):
        alone = render(g, cams[i: i + 1], bg)
        assert torch.allclose(each.rgb[i: i + 1], alone.rgb, atol=1e-6)
    assert not torch.allclose(render_each(sets[::-1], cams, bg).rgb[0], each.rgb[0], atol=1e-3)
    with pytest.raises(ValueError, match="one camera per set"):
        render_each(sets[:2], cams, bg)
    with pytest.raises(ValueError, match="whole cameras"):
        cams[torch.tensor([[0, 1]])]


def test_unfrozen_deformation_fit_densifies_on_the_deformed_gaussians(tiny, object_world):
    """4DGS's fine stage: the canonical set grows where the *deformed* splats' screen gradients are high,
    the field follows the new rows, and a frozen set refuses densification."""
    canonical = synthetic.surface_motion(object_world, [0.0], 200, seed=0).gaussians
    densify = DensifyConfig(refine_start=5, refine_every=5, refine_stop=30, grad_threshold=1e-6,
                            prune_scale3d=None)
    config = deformation_config(30, freeze_canonical=False, densify=densify, lr_final_ratio=0.01)
    result = fit_deformation(canonical, tiny.video, training_render, config)
    counts = [h["count"] for h in result.history]
    assert counts[0] == 200 and max(counts) > 200, counts
    assert len(result.gaussians) == counts[-1]
    assert_finite(result.extra["motion"].apply(result.gaussians, 0.5))
    plain = fit_deformation(canonical, tiny.video, training_render, deformation_config(30, freeze_canonical=False))
    assert {h["count"] for h in plain.history} == {200}, "no densify config, no growth"
    with pytest.raises(ValueError, match="densify grows the canonical set"):
        deformation_config(30, densify=densify)


def test_tv_can_cover_only_the_spatial_planes(tiny):
    """4DGS's TV covers the spatial planes only: with constant spatial planes and varying time planes it is 0."""
    canonical = sphere(200)
    gen = torch.Generator().manual_seed(0)
    field = Deformation(dataclasses.replace(small_field(), time_resolution=4), canonical, generator=gen)
    with torch.no_grad():
        for _name, plane in field.field.planes("spatial"):
            plane.fill_(0.3)
        for _name, plane in field.field.planes("time"):
            plane.copy_(1.0 + 0.1 * torch.randn(plane.shape, generator=gen))
    tv = {}
    for planes in ("all", "spatial"):
        config = deformation_config(1, tv_weight=1.0, time_smoothness_weight=0.0, time_l1_weight=0.0,
                                    tv_planes=planes, adapt_time_resolution=False)
        result = fit_deformation(canonical, tiny.video, training_render, config, deformation=copy.deepcopy(field))
        tv[planes] = result.history[0]["tv"]
    assert tv["spatial"] == 0.0 and tv["all"] > 1e-4
    with pytest.raises(ValueError, match="tv_planes"):
        deformation_config(1, tv_planes="time")


def test_checkpoints_see_the_fit_so_far_and_leave_it_unchanged(tiny):
    canonical = sphere(200)
    config = deformation_config(6, freeze_canonical=False, seed=2)
    seen = []
    hooked = fit_deformation(canonical, tiny.video, training_render, config,
                             on_checkpoint=seen.append, checkpoint_every=2)
    plain = fit_deformation(canonical, tiny.video, training_render, config)
    assert [c.steps for c in seen] == [2, 4], "every 2 steps, not after the last"
    final, mid = plain.extra["motion"].state_dict(), seen[1].extra["motion"].state_dict()
    assert all(torch.equal(hooked.extra["motion"].state_dict()[k], final[k]) for k in final)
    assert torch.equal(hooked.gaussians.means, plain.gaussians.means)
    assert not all(torch.equal(mid[k], final[k]) for k in final), "a checkpoint is the state at its step"
    assert not torch.equal(seen[0].gaussians.means, seen[1].gaussians.means)
    assert not seen[1].extra["motion"].deformation.training
    with pytest.raises(ValueError, match="checkpoint_every"):
        fit_deformation(canonical, tiny.video, training_render, config, checkpoint_every=-1)


def test_cuda_graphs_setting_leaves_a_cpu_fit_unchanged(tiny):
    canonical = sphere(200)
    config = deformation_config(4, freeze_canonical=False, seed=1)
    plain = fit_deformation(canonical, tiny.video, training_render, config)
    graphed = fit_deformation(canonical, tiny.video, training_render, dataclasses.replace(config, cuda_graphs=True))
    a, b = plain.extra["motion"].state_dict(), graphed.extra["motion"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(plain.gaussians.means, graphed.gaussians.means)


def test_lr_final_ratio_must_be_a_fraction():
    with pytest.raises(ValueError, match="lr_final_ratio"):
        deformation_config(20, lr_final_ratio=0.0)
    with pytest.raises(ValueError, match="lr_final_ratio"):
        deformation_config(20, lr_final_ratio=2.0)


@pytest.mark.parametrize("freeze", [False, True], ids=["canonical trained", "canonical frozen (CoCo4D)"])
def test_graphed_fit_loop_matches_the_eager_loop_with_graph_buffer_semantics(tiny, monkeypatch, freeze):
    """CUDA graphs return outputs and gradients in buffers that the next replay overwrites; the fit loop must
    use them within the step (the monitor keeps its own copies). On the CPU a stand-in with those semantics
    (``graph_emulator``) stands for ``torch.cuda.make_graphed_callables``."""
    from gen4d.core.engine import fit_dynamic, graphed_deformation
    from graph_emulator import make_graphed_callables

    captured = []

    def capture(module, sample_args, **kwargs):
        captured.append(module)
        return make_graphed_callables(module, sample_args, **kwargs)

    canonical = sphere(200)
    config = deformation_config(12, freeze_canonical=freeze, seed=4, time_l1_weight=1e-2, tv_planes="spatial")
    eager = fit_deformation(canonical, tiny.video, training_render, config)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(fit_dynamic, "graphs_supported", lambda device: True)
    monkeypatch.setattr(graphed_deformation, "graphs_supported", lambda device: True)
    graphed = fit_deformation(canonical, tiny.video, training_render, dataclasses.replace(config, cuda_graphs=True))
    assert [m.replays for m in captured] == [12, 12], "the field's pass and the plane terms replayed every step"
    assert len(graphed.history) == len(eager.history) == 12
    for a, b in zip(eager.history, graphed.history):
        assert a.keys() == b.keys()
        for name in ("tv", "time_smoothness", "time_l1", "total"):
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-9), (a["step"], name)
    sa, sb = eager.extra["motion"].state_dict(), graphed.extra["motion"].state_dict()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-6, msg=k)
    torch.testing.assert_close(graphed.gaussians.means, eager.gaussians.means, rtol=1e-4, atol=1e-6)


def test_a_densifying_graphed_fit_captures_again_when_the_count_changes(tiny, object_world, monkeypatch):
    """A graph replays fixed shapes: after densification changes the Gaussian count the field's pass is
    captured again for the new count (the plane terms, which do not depend on it, once), and the fit is
    the eager fit's."""
    from gen4d.core.engine import fit_dynamic, graphed_deformation
    from graph_emulator import make_graphed_callables

    captured = []

    def capture(module, sample_args, **kwargs):
        captured.append((module, tuple(a.shape for a in sample_args)))
        return make_graphed_callables(module, sample_args, **kwargs)

    canonical = synthetic.surface_motion(object_world, [0.0], 200, seed=0).gaussians
    densify = DensifyConfig(refine_start=5, refine_every=5, refine_stop=20, grad_threshold=1e-6,
                            prune_scale3d=None)
    config = deformation_config(24, freeze_canonical=False, densify=densify, seed=3, cuda_graphs=False)
    eager = fit_deformation(canonical, tiny.video, training_render, config)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(fit_dynamic, "graphs_supported", lambda device: True)
    monkeypatch.setattr(graphed_deformation, "graphs_supported", lambda device: True)
    graphed = fit_deformation(canonical, tiny.video, training_render, dataclasses.replace(config, cuda_graphs=True))
    counts = [h["count"] for h in eager.history]
    assert [h["count"] for h in graphed.history] == counts
    changed = [b for a, b in zip([200, *counts], counts) if a != b]
    assert len(changed) >= 2, counts
    passes = [shapes[0][0] for module, shapes in captured if shapes]  # the field's pass: (means, times)
    assert passes == [200, *changed], (passes, counts)
    assert sum(1 for _, shapes in captured if not shapes) == 1, "the plane terms are captured once"
    assert sum(m.replays for m, shapes in captured if shapes) == len(counts), "one replay of the pass a step"
    for a, b in zip(eager.history, graphed.history):
        assert b["total"] == pytest.approx(a["total"], rel=1e-5, abs=1e-9), a["step"]
    torch.testing.assert_close(graphed.gaussians.means, eager.gaussians.means, rtol=1e-4, atol=1e-6)


def test_a_failed_graph_capture_falls_back_to_the_eager_field(tiny, monkeypatch, caplog):
    from gen4d.core.engine import fit_dynamic, graphed_deformation
    from graph_emulator import make_graphed_callables

    calls = []

    def fail_second(module, sample_args, **kwargs):
        calls.append(module)
        if len(calls) == 2:  # the field's pass captures, the plane terms do not
            raise RuntimeError("operation not permitted when stream is capturing")
        return make_graphed_callables(module, sample_args, **kwargs)

    config = deformation_config(3, freeze_canonical=False, seed=2)
    eager = fit_deformation(sphere(100), tiny.video, training_render, dataclasses.replace(config, cuda_graphs=False))
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fail_second)
    monkeypatch.setattr(fit_dynamic, "graphs_supported", lambda device: True)
    monkeypatch.setattr(graphed_deformation, "graphs_supported", lambda device: True)
    with caplog.at_level("WARNING", logger=fit_dynamic.logger.name):
        fallback = fit_deformation(sphere(100), tiny.video, training_render,
                                   dataclasses.replace(config, cuda_graphs=True))
    assert len(calls) == 2
    assert "could not be captured (operation not permitted when stream is capturing)" in caplog.text
    assert "cuda_graphs off" in caplog.text
    assert calls[0].replays == 0, "after a failed capture no graph is replayed"
    assert [h["total"] for h in fallback.history] == [h["total"] for h in eager.history]
    torch.testing.assert_close(fallback.gaussians.means, eager.gaussians.means, rtol=0, atol=0)


def test_targets_composited_once_match_the_per_step_composite():
    from gen4d.core.engine.fit_static import composited_targets, masked_targets

    g = torch.Generator().manual_seed(0)
    n, s = 5, 6
    K = intrinsics_from_fov(50.0, s, s).expand(n, 3, 3).clone()
    cams = Cameras(orbit_poses(torch.zeros(n), torch.linspace(0, 200, n), 2.0), K, s, s, torch.zeros(n), 0.01, 10.0)
    images, masks = torch.rand(n, s, s, 3, generator=g), torch.rand(n, s, s, generator=g)
    bg = torch.tensor([1.0, 0.5, 0.0])
    index = torch.tensor([3, 0, 3])
    views = PosedImages(images, cams, masks)
    target, picked = masked_targets(views, index, bg)
    torch.testing.assert_close(composited_targets(views, bg)[index], target)
    torch.testing.assert_close(picked, masks[index])
    expected = images[3] * masks[3, ..., None] + bg * (1 - masks[3, ..., None])
    torch.testing.assert_close(target[0], expected)
    unmasked = PosedImages(images, cams)
    assert composited_targets(unmasked, bg) is images and masked_targets(unmasked, index, bg)[1] is None


def _spied(calls: list):
    """training_render and its depth-less variant, each noting its use in ``calls``."""
    def with_depth(g, cams, bg):
        calls.append("depth")
        return training_render(g, cams, bg)

    def without_depth(g, cams, bg):
        calls.append("colour")
        return training_render.without_depth(g, cams, bg)

    without_depth.each = lambda *a, **k: calls.append("colour") or training_render.without_depth.each(*a, **k)
    with_depth.without_depth = without_depth
    return with_depth


@pytest.mark.parametrize("depth_weight", [0.0, 0.1])
def test_fits_render_depth_only_when_their_loss_reads_it(tiny, depth_weight):
    """A loss without a depth term gets the depth-less render (same colour, a channel less); the fit it gives
    is the one the full render gives."""
    loss = ReconstructionLoss(l1=1.0, dssim=0.0, mask=0.5, depth_smoothness=depth_weight)
    results, calls = [], []
    for render_fn in (_spied(calls), lambda g, cams, bg: training_render(g, cams, bg)):
        config = static_config(4, loss=loss, views_per_step=2)
        results.append(fit_static(sphere(300), tiny.orbit, render_fn, config).gaussians)
    assert set(calls) == {"colour" if depth_weight == 0 else "depth"}
    for key in ("means", "sh", "logit_opacities"):  # the same fit, up to the order of float sums
        torch.testing.assert_close(getattr(results[0], key), getattr(results[1], key), rtol=1e-5, atol=1e-6)
    calls.clear()
    fit_deformation(results[0], tiny.video, _spied(calls), deformation_config(2, loss=loss))
    assert set(calls) == {"colour" if depth_weight == 0 else "depth"}
