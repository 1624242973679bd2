# SPDX-License-Identifier: Apache-2.0
"""Score distillation on a GPU never waits for the device (GPU machines only).

A fit step queues the render, then the SDS loss, then the backward. If the loss reads a value back to
the host (camera angles, timesteps) or copies host data with a blocking copy, the host stops until the
render has finished and the GPU idles while the next kernels are launched. With CUDA's sync debug mode
set to "error", such a wait raises. The tiny random-weight Zero123 and Stable Diffusion folders go
through the real loaders; the first call, which moves the networks and encodes the condition, is left
out.

Run: ``pytest tests/test_guidance_gpu.py`` on a machine with CUDA.
"""

from __future__ import annotations

import pytest
import torch
from device_waits import no_device_waits
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from gen4d.nodes.guidance import SDGuidanceLoader, Zero123GuidanceLoader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

S = 24


@pytest.fixture(scope="module")
def models_dir(guidance_models_dir):
    return guidance_models_dir


def _cameras(n: int) -> Cameras:
    el, az = torch.linspace(-10.0, 20.0, n), torch.linspace(0.0, 270.0, n)
    K = intrinsics_from_fov(49.1, S, S).expand(n, 3, 3).clone()
    return Cameras(orbit_poses(el, az, 2.5), K, S, S, torch.zeros(n), 0.01, 100.0).to("cuda")


def _guidances():
    # One condition image for every guidance made here, so two of them (eager and graphed) compare equal.
    condition = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        zero123 = Zero123GuidanceLoader().load(
            model="guidance_zero123-tiny", condition_image=condition, condition_elevation=0.0,
            condition_azimuth=0.0, condition_radius=2.5, guidance_scale=5.0, device="auto", dtype="auto", seed=0)[0]
        sd = SDGuidanceLoader().load(model="guidance_sd-tiny", prompt="a cat", negative_prompt="",
                                     guidance_scale=7.5, device="auto", dtype="auto", seed=0)[0]
    return {"zero123": zero123, "sd": sd}


def _loss_and_gradient(guidance, images, cams, ratio: float) -> tuple[float, torch.Tensor]:
    x = images.clone().requires_grad_(True)
    loss = guidance.sds_loss(x, cams, 0.5, ratio)
    loss.backward()
    return float(loss), x.grad.clone()


@pytest.mark.parametrize("name", ["zero123", "sd"])
def test_sds_loss_and_its_backward_never_wait_for_the_device(models_dir, name):
    guidance = _guidances()[name]
    cams = _cameras(3)
    images = torch.rand(3, S, S, 3, device="cuda", requires_grad=True)
    guidance.sds_loss(images, cams, 0.5, 0.3).backward()  # moves the networks, encodes the condition
    torch.cuda.synchronize()
    images.grad = None
    with no_device_waits():
        loss = guidance.sds_loss(images * 1.0, cams, 0.5, 0.6)
        loss.backward()
    assert torch.isfinite(loss) and images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["zero123", "sd"])
def test_sds_loss_on_the_gpu_repeats_under_its_seed(models_dir, name):
    guidance = _guidances()[name]
    cams = _cameras(2)
    images = torch.rand(2, S, S, 3, generator=torch.Generator().manual_seed(3)).cuda()
    losses = []
    for _ in range(2):
        guidance.reseed(7)
        losses.append([float(guidance.sds_loss(images, cams, 0.25, r)) for r in (0.1, 0.9)])
    assert losses[0] == losses[1]
    assert losses[0][0] != losses[0][1], "the noise level follows the step ratio"


@pytest.mark.parametrize("name", ["zero123", "sd"])
def test_the_graphed_unet_and_encoder_give_the_eager_loss_and_gradient(models_dir, name):
    """Graphs of the uncompiled passes replay the eager kernels (close to eager); graphs of the compiled passes
    run other kernels in bf16, so their gradient is held to the eager one's direction and size."""
    cams = _cameras(3)
    images = torch.rand(3, S, S, 3, generator=torch.Generator().manual_seed(5)).cuda()
    results = {}
    for mode in ("eager", "graphs", "compiled graphs"):
        torch._dynamo.reset()
        guidance = _guidances()[name]
        guidance.cuda_graphs, guidance.torch_compile = mode != "eager", mode == "compiled graphs"
        guidance.reseed(11)
        # the second call at a shape replays the graph the first captured
        results[mode] = [_loss_and_gradient(guidance, images, cams, ratio) for ratio in (0.2, 0.7, 0.7)]
        for graphed in (guidance._graphed, guidance._graphed_encoder):
            assert (graphed._captures != {}) == guidance.cuda_graphs
            assert graphed.compiled is guidance.torch_compile, "compiled where asked, and compiling worked"
    for (le, ge), (lg, gg) in zip(results["eager"], results["graphs"]):
        assert lg == pytest.approx(le, rel=1e-3, abs=1e-6)
        torch.testing.assert_close(gg, ge, rtol=1e-2, atol=1e-5)
    for (le, ge), (lc, gc) in zip(results["eager"], results["compiled graphs"]):
        assert lc == pytest.approx(le, rel=5e-2, abs=1e-6)
        cosine = torch.nn.functional.cosine_similarity(gc.flatten(), ge.flatten(), dim=0)
        assert cosine > 0.99 and float(gc.norm() / ge.norm()) == pytest.approx(1.0, rel=5e-2)
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["zero123", "sd"])
def test_a_fits_end_drops_the_encoder_graphs_and_the_next_fit_captures_them_again(models_dir, name):
    guidance = _guidances()[name]
    cams = _cameras(3)
    images = torch.rand(3, S, S, 3, generator=torch.Generator().manual_seed(9)).cuda()
    results = []
    for _ in range(2):  # two fits with the same seed: the same loss and gradient from fresh captures
        guidance.reseed(5)
        results.append(_loss_and_gradient(guidance, images, cams, 0.4))
        assert guidance._graphed_encoder._captures != {}
        guidance.end_fit()
        assert guidance._graphed_encoder._captures == {} and guidance._graphed._captures != {}
    (first_loss, first_grad), (second_loss, second_grad) = results
    assert second_loss == pytest.approx(first_loss, rel=1e-3, abs=1e-6)
    torch.testing.assert_close(second_grad, first_grad, rtol=1e-2, atol=1e-5)
