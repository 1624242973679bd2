# SPDX-License-Identifier: Apache-2.0
"""One rasterization for a guided step's seen views and guidance views: the parts equal separate renders,
``GaussianBatch.select`` repeats sets with their gradients, and guided fits give the result of rendering
apart (same Gaussians, same images handed to the guidance) with one render call a step."""

from __future__ import annotations

import pytest
import torch
from gen4d import synthetic
from gen4d.backends.render import training_render
from gen4d.core.coco4d.reference import reference_clip
from gen4d.core.engine import fit_dynamic, joint_render
from gen4d.core.engine.cameras import diffusion4d_orbit
from gen4d.core.engine.deformation import HexPlaneConfig
from gen4d.core.engine.densify import DensifyConfig
from gen4d.core.engine.fit_dynamic import DeformationFitConfig, fit_deformation
from gen4d.core.engine.fit_static import GaussianLearningRates, StaticFitConfig, fit_static
from gen4d.core.engine.gaussians import GaussianBatch, sphere_init
from gen4d.core.engine.guidance import PoseSampling, sample_guidance_cameras
from gen4d.core.engine.joint_render import render_together, same_image_plane, split_render
from gen4d.core.engine.losses import ReconstructionLoss

SIZE = 24
WHITE = torch.ones(3)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Small fits: one torch thread avoids oversubscribing two shared cores."""


@pytest.fixture(scope="module")
def object_world():
    return synthetic.object_world(0)


def _sphere(n: int = 300):
    return sphere_init(n, 0.5, generator=torch.Generator().manual_seed(0))


def _guidance_cameras(n: int, seed: int, size: int = SIZE):
    sampling = PoseSampling(batch=n, radius=2.0, width=size, height=size)
    return sample_guidance_cameras(sampling, 0.0, torch.Generator().manual_seed(seed))


class Counting:
    """``render_fn`` that counts its calls."""

    def __init__(self, fn=training_render):
        self.fn, self.calls = fn, 0

    def __call__(self, gaussians, cameras, background):
        self.calls += 1
        return self.fn(gaussians, cameras, background)


def test_render_together_gives_each_batch_its_own_render():
    g = _sphere()
    g.means.requires_grad_(True)
    seen, guide = diffusion4d_orbit(SIZE, SIZE, 3, dynamic=False), _guidance_cameras(4, 1)
    assert same_image_plane(seen, guide)
    counting = Counting()
    joint = render_together(counting, g, seen, guide, WHITE)
    a, b, renders = joint.first, joint.second, joint.renders
    assert counting.calls == 1 and len(renders) == 1
    for part, cams in ((a, seen), (b, guide)):
        alone = training_render(g, cams, WHITE)
        assert part.rgb.shape == alone.rgb.shape
        torch.testing.assert_close(part.rgb, alone.rgb, atol=1e-5, rtol=0)
        torch.testing.assert_close(part.depth, alone.depth, atol=1e-4, rtol=0)
    assert renders[0].means2d.shape[0] == 7, "screen-space data covers both batches"

    # Densification reads each batch's screen-space gradients as two renders would give them.
    apart = render_together(training_render, g, seen, guide.to("cpu"), WHITE)
    apart.renders = [training_render(g, seen, WHITE), training_render(g, guide, WHITE)]
    apart.first, apart.second = apart.renders
    for case in (joint, apart):
        (case.first.rgb.square().mean() + (case.second.rgb - 0.5).square().mean()).backward()
    together, separate = joint.screen_gradients(), apart.screen_gradients()
    assert [e[0].shape[0] for e in together] == [e[0].shape[0] for e in separate] == [3, 4]
    for (grad, radii, w, h), (grad_apart, radii_apart, w_apart, h_apart) in zip(together, separate):
        torch.testing.assert_close(grad, grad_apart, atol=1e-7, rtol=1e-4)
        assert torch.equal(radii, radii_apart) and (w, h) == (w_apart, h_apart) == (SIZE, SIZE)

    larger = _guidance_cameras(2, 1, size=SIZE + 8)  # another image size: two calls
    assert not same_image_plane(seen, larger)
    counting.calls = 0
    joint = render_together(counting, g, seen, larger, WHITE)
    a, b, renders = joint.first, joint.second, joint.renders
    assert counting.calls == 2 and len(renders) == 2 and b.rgb.shape[1:3] == (SIZE + 8, SIZE + 8)
    torch.testing.assert_close(b.rgb, training_render(g, larger, WHITE).rgb, atol=1e-5, rtol=0)
    far = _guidance_cameras(2, 1)
    far = type(far)(far.viewmats, far.Ks, far.width, far.height, far.times, far.near, 5.0)
    assert not same_image_plane(seen, far), "clipping planes are per call"

    first, rest = split_render(renders[0], 1)
    assert first.rgb.shape[0] == 1 and rest.rgb.shape[0] == len(seen) - 1


def test_select_repeats_sets_and_sends_gradients_back():
    n = 5
    g = _sphere(n)
    means = (g.means.unsqueeze(0) + torch.arange(3.0)[:, None, None]).requires_grad_(True)  # [3,N,3]
    values = {"means": means, "quats": g.quats, "log_scales": g.log_scales, "logit_opacities": g.logit_opacities,
              "sh": g.sh}
    batch = GaussianBatch(values, 3)
    picked = batch.select(torch.tensor([2, 0, 2]))
    assert len(picked) == 3 and picked.shared == batch.shared
    torch.testing.assert_close(picked.stacked("means"), means.detach()[[2, 0, 2]])
    assert picked.fields["sh"] is g.sh, "a shared field stays shared, uncopied"
    picked.stacked("means").sum().backward()
    torch.testing.assert_close(means.grad[:, 0, 0], torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="out of range"):
        batch.select(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        batch.select(torch.tensor([], dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_select_on_the_gpu_never_waits_for_the_device():
    """A fit step selects sets with an index already on the device; a host index is copied without a wait."""
    from device_waits import no_device_waits

    g = _sphere(50).to("cuda")
    values = {"means": torch.stack([g.means, g.means + 1.0]), "quats": g.quats, "log_scales": g.log_scales,
              "logit_opacities": g.logit_opacities, "sh": g.sh}
    batch = GaussianBatch(values, 2)
    on_device = torch.tensor([1, 0, 1], device="cuda")
    torch.cuda.synchronize()
    with no_device_waits():
        picked = [batch.select(on_device), batch.select(torch.tensor([1, 0, 1]))]
    for p in picked:
        torch.testing.assert_close(p.stacked("means"), values["means"][[1, 0, 1]])


class RecordingGuidance:
    """A stand-in SDS guidance: a smooth loss on the images it receives (so the fit depends on them), which
    checks the camera count and keeps each step's images and cameras for comparison."""

    def __init__(self):
        self.images, self.cameras = [], []

    def sds_loss(self, images, cameras, t, step_ratio):
        assert images.dim() == 4 and images.shape[-1] == 3 and images.shape[0] == len(cameras)
        self.images.append(images.detach().clone())
        self.cameras.append(cameras.viewmats.detach().clone())
        return 1e-2 * (images - 0.5).square().mean()


def _apart(monkeypatch):
    """Make every camera pair look incompatible: the fits render seen and guidance views apart."""
    monkeypatch.setattr(joint_render, "same_image_plane", lambda a, b: False)
    monkeypatch.setattr(fit_dynamic, "same_image_plane", lambda a, b: False)


def _same_run(a_guidance, b_guidance, a_gaussians, b_gaussians):
    """The guidance saw the same views and images, and the fitted sets look the same from other views.
    (Rotations and scales are compared through the images: their gradients are near zero here, and Adam
    scales the last bits of those to whole steps.)"""
    assert len(a_guidance.images) == len(b_guidance.images) > 0
    for x, y, cx, cy in zip(a_guidance.images, b_guidance.images, a_guidance.cameras, b_guidance.cameras):
        assert torch.equal(cx, cy), "the same guidance views in the same order"
        torch.testing.assert_close(x, y, atol=1e-3, rtol=0)
    for name in ("means", "logit_opacities", "sh"):
        torch.testing.assert_close(getattr(a_gaussians, name), getattr(b_gaussians, name), atol=1e-4, rtol=1e-4,
                                   msg=name)
    other_views = _guidance_cameras(4, 9).to(a_gaussians.device)
    diff = (training_render(a_gaussians, other_views, WHITE).rgb - training_render(b_gaussians, other_views, WHITE).rgb)
    assert float(diff.abs().max()) < 5e-3 and float(diff.abs().mean()) < 1e-4


def _reference_clip(world, frames: int):
    """The CoCo4D reference clip (its cameras share the guidance views' clipping planes)."""
    truth = synthetic.render(world, world.reference_cameras(SIZE, SIZE, frames), supersample=1)
    return reference_clip(truth["rgb"], truth["foreground"], center=True).views


# A few steps only: Adam divides each gradient by its own running size, so the last-bit differences of
# summing the cameras' gradients in another order grow about tenfold a step on near-zero gradients.
STEPS = 3


@pytest.mark.parametrize("device", DEVICES)
def test_a_guided_static_fit_renders_once_a_step_with_the_result_of_rendering_apart(object_world, monkeypatch,
                                                                                   device):
    views = _reference_clip(object_world, 1)
    config = StaticFitConfig(iterations=STEPS, views_per_step=1, preview_every=0, sds_weight=1.0,
                             pose_sampling=PoseSampling(batch=3, radius=2.0, width=SIZE, height=SIZE),
                             learning_rates=GaussianLearningRates(position=0.005),
                             loss=ReconstructionLoss(l1=0.0, l2=1.0, dssim=0.0, mask=1.0))
    joint_guidance, joint_render_fn = RecordingGuidance(), Counting()
    joint = fit_static(_sphere(), views, joint_render_fn, config, joint_guidance, device=device)
    assert joint_render_fn.calls == STEPS

    _apart(monkeypatch)
    apart_guidance, apart_render_fn = RecordingGuidance(), Counting()
    apart = fit_static(_sphere(), views, apart_render_fn, config, apart_guidance, device=device)
    assert apart_render_fn.calls == 2 * STEPS
    _same_run(joint_guidance, apart_guidance, joint.gaussians, apart.gaussians)


@pytest.mark.parametrize("device", DEVICES)
def test_a_guided_deformation_fit_renders_frames_and_guidance_views_together_with_the_same_result(
        object_world, monkeypatch, device):
    video = _reference_clip(object_world, 4)
    canonical = synthetic.surface_motion(object_world, [0.0], 300, seed=0).gaussians
    densify = DensifyConfig(refine_start=2, refine_every=2, refine_stop=10, grad_threshold=1e-6, prune_scale3d=None)
    config = DeformationFitConfig(iterations=STEPS, times_per_step=3, preview_every=0, sds_weight=1.0,
                                  rigidity_weight=0.0, freeze_canonical=False, densify=densify,
                                  hexplane=HexPlaneConfig(base_resolution=16, feature_dim=16, multires=(1, 2)),
                                  pose_sampling=PoseSampling(batch=2, radius=2.0, width=SIZE, height=SIZE))
    calls = []
    original = fit_dynamic.same_image_plane

    def spied(a, b):
        calls.append(original(a, b))
        return calls[-1]

    monkeypatch.setattr(fit_dynamic, "same_image_plane", spied)
    joint_guidance = RecordingGuidance()
    joint = fit_deformation(canonical, video, training_render, config, joint_guidance, device=device)
    assert calls == [True] * STEPS, "every step took the joint path"
    assert len(joint.gaussians) > len(canonical), "densification read the frames' screen-space gradients"

    _apart(monkeypatch)
    apart_guidance = RecordingGuidance()
    apart = fit_deformation(canonical, video, training_render, config, apart_guidance, device=device)
    assert len(apart.gaussians) == len(joint.gaussians)
    _same_run(joint_guidance, apart_guidance, joint.gaussians, apart.gaussians)
    a, b = joint.extra["motion"].state_dict(), apart.extra["motion"].state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4, msg=key)
