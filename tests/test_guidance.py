# SPDX-License-Identifier: Apache-2.0
"""Zero123 and Stable Diffusion score-distillation guidance on tiny random weights.

The tiny models are written by their builders (``backends.tiny.sd``) in the real folder layouts and loaded
back through the loader nodes (under inference mode, as ComfyUI runs nodes), so the folder checks,
the safetensors validation and the conditioning code are the ones real weights go through.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from gen4d.backends.model_folders import NO_MODELS
from gen4d.backends.render import training_render
from gen4d.backends.sd_guidance import SDGuidance, load_sd_guidance
from gen4d.backends.tiny import build_tiny
from gen4d.backends.zero123 import Zero123Guidance, camera_embedding, load_zero123
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from gen4d.core.engine.fit_static import StaticFitConfig, fit_static
from gen4d.core.engine.gaussians import sphere_init
from gen4d.core.engine.guidance import Guidance, PoseSampling
from gen4d.core.engine.views import PosedImages
from gen4d.nodes.guidance import SDGuidanceLoader, Zero123GuidanceLoader

S = 24  # render size; the tiny models work at 32 px, so every call also exercises the resize


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Small ops on two shared cores: one torch thread."""


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        build_tiny("guidance_zero123", root / "gen4d" / "zero123", seed=0)
        build_tiny("guidance_sd", root / "diffusers", seed=0)
        yield root


def cameras(elevations, azimuths, radius: float = 2.5) -> Cameras:
    el = torch.as_tensor(elevations, dtype=torch.float32)
    az = torch.as_tensor(azimuths, dtype=torch.float32)
    n = el.numel()
    K = intrinsics_from_fov(49.1, S, S).expand(n, 3, 3).clone()
    return Cameras(orbit_poses(el, az, radius), K, S, S, torch.zeros(n), 0.01, 100.0)


def images(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, S, S, 3, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def condition(seed: int = 2, frames: int = 1) -> torch.Tensor:
    return torch.rand(frames, 40, 40, 3, generator=torch.Generator().manual_seed(seed))


def zero123(seed: int = 0, **overrides) -> Zero123Guidance:
    args = dict(model="guidance_zero123-tiny", condition_image=condition(), condition_elevation=0.0,
                condition_azimuth=0.0, condition_radius=2.5, guidance_scale=5.0, device="auto", dtype="auto", seed=seed)
    with torch.inference_mode():  # ComfyUI runs nodes in inference mode
        return Zero123GuidanceLoader().load(**{**args, **overrides})[0]


def sd(prompt: str = "a photo of a cat", seed: int = 0, **overrides) -> SDGuidance:
    args = dict(model="guidance_sd-tiny", prompt=prompt, negative_prompt="", guidance_scale=100.0, device="auto",
                dtype="auto", seed=seed)
    with torch.inference_mode():
        return SDGuidanceLoader().load(**{**args, **overrides})[0]


def sds_grad(guidance, cams: Cameras, t: float = 0.0, step_ratio: float = 0.3, seed: int = 1):
    x = images(seed, len(cams))
    loss = guidance.sds_loss(x, cams, t, step_ratio)
    loss.backward()
    return loss.detach(), x.grad


# --------------------------------------------------------------------------- Zero123


def test_zero123_loader_lists_model_and_returns_guidance(models_dir):
    spec = Zero123GuidanceLoader.INPUT_TYPES()["required"]
    assert "guidance_zero123-tiny" in spec["model"][0]
    guidance = zero123()
    assert isinstance(guidance, Guidance) and guidance.variant == "zero123"
    assert guidance.components.resolution == 32
    assert load_zero123(guidance.components.path) is guidance.components  # loaded once, kept


def test_zero123_sds_gradient_reaches_images(models_dir):
    loss, grad = sds_grad(zero123(), cameras([10.0, -20.0], [30.0, 200.0]))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    assert grad.shape == (2, S, S, 3) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_zero123_responds_to_camera(models_dir):
    guidance = zero123()
    loss_a, grad_a = sds_grad(guidance, cameras([0.0, 0.0], [30.0, 30.0]))
    guidance.reseed()  # same timesteps and noise: only the pose differs
    loss_b, grad_b = sds_grad(guidance, cameras([25.0, 25.0], [150.0, 150.0]))
    assert not torch.isclose(loss_a, loss_b)
    assert (grad_a - grad_b).abs().max() > 1e-4 * grad_a.abs().max()


def test_zero123_deterministic_and_pinned(models_dir):
    cams = cameras([10.0, -20.0], [30.0, 200.0])
    _, grad_a = sds_grad(zero123(seed=0), cams)
    _, grad_b = sds_grad(zero123(seed=0), cams)
    _, grad_c = sds_grad(zero123(seed=1), cams)
    assert torch.equal(grad_a, grad_b)
    assert not torch.allclose(grad_a, grad_c)
    pinned = torch.tensor(PINNED_ZERO123)
    torch.testing.assert_close(grad_a[0, 10, 10:14, :].flatten(), pinned, atol=1e-5, rtol=0)


# grad[0, 10, 10:14, :] of the seed-0 tiny Zero123 (builder seed 0), measured on CPU float32.
PINNED_ZERO123 = [-0.0548093, 0.0488419, 0.0374188, 0.0251515, -0.0334074, -0.026142, 0.0214256, 0.0207199,
                  0.0035639, -0.0150802, 0.0089742, -0.0012968]


def test_camera_embedding_conventions():
    el, az, r = torch.tensor([30.0]), torch.tensor([90.0]), torch.tensor([3.0])
    plain = camera_embedding(el, az, r, (0.0, 0.0, 2.5), "zero123")[0]
    torch.testing.assert_close(plain, torch.tensor([-math.pi / 6, 1.0, 0.0, 0.5]), atol=1e-6, rtol=0)
    stable = camera_embedding(el, az, r, (10.0, 0.0, 2.5), "stable")[0]
    torch.testing.assert_close(stable, torch.tensor([-math.pi / 9, 1.0, 0.0, math.radians(80.0)]), atol=1e-6, rtol=0)


def test_zero123_video_condition_follows_scene_time(models_dir):
    guidance = zero123(condition_image=condition(frames=3))
    cams = cameras([0.0, 0.0], [90.0, 90.0])
    loss_0, _ = sds_grad(guidance, cams, t=0.0)
    guidance.reseed()
    loss_1, _ = sds_grad(guidance, cams, t=1.0)
    assert not torch.isclose(loss_0, loss_1)


# --------------------------------------------------------------------------- Stable Diffusion


def test_sd_sds_gradient_prompt_and_determinism(models_dir):
    assert "guidance_sd-tiny" in SDGuidanceLoader.INPUT_TYPES()["required"]["model"][0]
    cams = cameras([0.0, 0.0], [0.0, 90.0])
    loss, grad = sds_grad(sd(), cams)
    assert loss.dim() == 0 and math.isfinite(loss.item())
    assert grad.shape == (2, S, S, 3) and torch.isfinite(grad).all() and grad.abs().sum() > 0
    _, grad_again = sds_grad(sd(), cams)
    assert torch.equal(grad, grad_again)
    loss_other, grad_other = sds_grad(sd("a red car at night"), cams)  # same seed: only the prompt differs
    assert not torch.isclose(loss, loss_other)
    assert (grad - grad_other).abs().max() > 1e-4 * grad.abs().max()
    torch.testing.assert_close(grad[1, 5, 3:7, :].flatten(), torch.tensor(PINNED_SD), atol=1e-5, rtol=0)


# grad[1, 5, 3:7, :] of the seed-0 tiny SD with "a photo of a cat", measured on CPU float32.
PINNED_SD = [0.0901803, 0.4016786, -0.124529, 0.2258421, 0.3022521, -0.0859624, 0.2297142, 0.1540812, -0.2225411,
             0.0416857, 0.0212916, 0.1785877]


# --------------------------------------------------------------------------- bad input


def test_bad_images_are_named(models_dir):
    with pytest.raises(ValueError, match="condition_image"):
        zero123(condition_image=torch.rand(1, 32, 32, 2))
    guidance = zero123()
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        guidance.sds_loss(torch.rand(2, S, S, 2), cameras([0.0, 0.0], [0.0, 0.0]), 0.0, 0.5)
    with pytest.raises(ValueError, match="2 images but 1 cameras"):
        guidance.sds_loss(torch.rand(2, S, S, 3), cameras([0.0], [0.0]), 0.0, 0.5)
    with pytest.raises(ValueError, match="prompt is empty"):
        sd(prompt="  ")
    with pytest.raises(ValueError, match="no zero123 model selected"):
        zero123(model=NO_MODELS)


def test_broken_model_folders_are_named(models_dir, tmp_path):
    source = models_dir / "gen4d" / "zero123" / "guidance_zero123-tiny"
    missing = shutil.copytree(source, tmp_path / "missing")
    (missing / "unet" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"unet/config\.json"):
        zero123(model=str(missing))
    with pytest.raises(ValueError, match=r"unet/config\.json"):
        load_zero123(missing)
    truncated = shutil.copytree(source, tmp_path / "truncated")
    weights = truncated / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated.*vae.diffusion_pytorch_model\.safetensors"):
        load_zero123(truncated)
    sd_copy = shutil.copytree(models_dir / "diffusers" / "guidance_sd-tiny", tmp_path / "sd")
    (sd_copy / "text_encoder" / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="text_encoder.*corrupt"):
        load_sd_guidance(sd_copy)


# --------------------------------------------------------------------------- fit integration


def test_fit_static_with_tiny_zero123(models_dir):
    size = 32
    seen = cameras([0.0], [0.0])
    seen = Cameras(seen.viewmats, intrinsics_from_fov(49.1, size, size)[None], size, size, torch.zeros(1), 0.01, 100.0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2).float())[None]
    target = 1.0 - 0.6 * mask[..., None].expand(1, size, size, 3)  # a grey disc on white
    views = PosedImages(target, seen, mask)
    config = StaticFitConfig(iterations=3, densify=None, preview_every=0, sds_weight=1e-2,
                             pose_sampling=PoseSampling(batch=2, width=size, height=size))
    init = sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))
    result = fit_static(init, views, training_render, config, guidance=zero123())
    assert result.steps == 3
    assert torch.isfinite(result.gaussians.means).all()
    assert not torch.equal(result.gaussians.means, init.means)
