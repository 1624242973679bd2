# SPDX-License-Identifier: Apache-2.0
"""Zero123 and Stable Diffusion score-distillation guidance on tiny random weights.

The tiny models are written by their builders (``backends.tiny.sd``) in the real folder layouts and loaded
back through the loader nodes (under inference mode, as ComfyUI runs nodes), so the folder checks,
the safetensors validation and the conditioning code are the ones real weights go through.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gen4d.backends.model_folders import NO_MODELS
from gen4d.backends.render import training_render
from gen4d.backends.sd_guidance import SDGuidance, load_sd_guidance
from gen4d.backends.zero123 import Zero123Guidance, camera_embedding, load_zero123
from gen4d.core.coco4d.reference import reference_clip
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from gen4d.core.engine.fit_static import StaticFitConfig, fit_static
from gen4d.core.engine.gaussians import sphere_init
from gen4d.core.engine.guidance import Guidance, PoseSampling
from gen4d.core.engine.views import PosedImages
from gen4d.nodes.guidance import SDGuidanceLoader, Zero123GuidanceLoader
from PIL import Image

S = 24  # render size; the tiny models work at 32 px, so every call also exercises the resize


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Small ops on two shared cores: one torch thread."""


@pytest.fixture(scope="module")
def models_dir(guidance_models_dir):
    return guidance_models_dir


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


# --------------------------------------------------------------------------- independent SDS reference
#
# The references below load the diffusers / transformers networks straight from the tiny folders and re-derive
# our conditioning and SDS maths by hand (PIL resizes for the condition image, constants written out), so the
# guidances are checked against what the papers / pipelines prescribe rather than against pinned numbers.

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def _pil_bilinear(image, size):
    """``[H,W,3]`` float -> ``[1,3,size,size]`` by PIL's (antialiased) bilinear filter, channel by channel."""
    channels = [np.asarray(Image.fromarray(image[..., c].numpy().astype(np.float32), mode="F")
                           .resize((size, size), Image.BILINEAR)) for c in range(3)]
    return torch.from_numpy(np.stack(channels))[None]


def _schedule(folder):
    """ᾱ of the folder's "scaled_linear" noise schedule, by hand from its scheduler config."""
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["beta_schedule"] == "scaled_linear" and config["prediction_type"] == "epsilon"
    n = int(config["num_train_timesteps"])
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float(), n


def _sds_reference(folder, vae, resolution, predict, images_, seed, step_ratio, guidance_scale):
    """DreamFusion SDS by hand: the loss and d loss / d images.

    The renders are resized to the model resolution (bilinear, enlarging) and mapped to [-1, 1]; z is the scaled
    VAE mean; timesteps are uniform integers in [0.02, t_hi] x T with t_hi annealed linearly from 0.98 to 0.5
    (DreamGaussian), then the noise, both from one CPU generator seeded with ``seed``; x_t = sqrt(ᾱ) z +
    sqrt(1 - ᾱ) ε; ε̂ = ε_u + s (ε_c - ε_u); direction (1 - ᾱ)(ε̂ - ε); loss 0.5 |direction|² / B, whose gradient
    w.r.t. z is direction / B.
    """
    alphas, n = _schedule(folder)
    x = images_.detach().clone().requires_grad_(True)
    model_in = F.interpolate(x.permute(0, 3, 1, 2), size=(resolution, resolution), mode="bilinear",
                             align_corners=False) * 2.0 - 1.0
    z = vae.encode(model_in).latent_dist.mean * vae.config.scaling_factor
    generator = torch.Generator().manual_seed(seed)
    t_hi = 0.98 - (0.98 - 0.5) * step_ratio
    steps = torch.randint(round(0.02 * n), round(t_hi * n) + 1, (len(x),), generator=generator)
    noise = torch.randn(z.shape, generator=generator)
    a = alphas[steps].view(-1, 1, 1, 1)
    with torch.no_grad():
        x_t = a.sqrt() * z + (1 - a).sqrt() * noise
        cond, uncond = predict(x_t, steps)
        direction = (1 - a) * (uncond + guidance_scale * (cond - uncond) - noise)
    loss = 0.5 * (direction**2).sum() / len(x)
    (grad,) = torch.autograd.grad(z, x, direction / len(x))
    return loss, grad


def _zero123_reference(folder, images_, elevations, azimuths, radius, condition_image, condition_pose, seed,
                       step_ratio, guidance_scale):
    """Zero123 SDS without our backend (DreamGaussian's ``zero123_utils`` conditioning, written out)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPVisionModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").eval()
    projection = load_file(str(folder / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)  # latent size x VAE factor
    with torch.no_grad():
        clip_in = (_pil_bilinear(condition_image, encoder.config.image_size) - CLIP_MEAN) / CLIP_STD
        clip = encoder(pixel_values=clip_in).image_embeds  # [1, E]
        vae_in = _pil_bilinear(condition_image, resolution) * 2.0 - 1.0
        cond_latent = vae.encode(vae_in).latent_dist.mean  # unscaled
        el_c, az_c, r_c = condition_pose
        el, az = torch.tensor(elevations), torch.tensor(azimuths)
        camera = torch.stack([torch.deg2rad(el_c - el), torch.sin(torch.deg2rad(az - az_c)),
                              torch.cos(torch.deg2rad(az - az_c)), torch.full_like(el, radius - r_c)], dim=-1)
        token = F.linear(torch.cat([clip.expand(len(el), -1), camera], dim=-1), projection["proj.weight"],
                         projection["proj.bias"])[:, None]  # [B, 1, E]

    def predict(x_t, steps):
        latent = cond_latent.expand(len(x_t), -1, -1, -1)
        cond = unet(torch.cat([x_t, latent], dim=1), steps, encoder_hidden_states=token).sample
        uncond = unet(torch.cat([x_t, torch.zeros_like(latent)], dim=1), steps,
                      encoder_hidden_states=torch.zeros_like(token)).sample
        return cond, uncond

    return _sds_reference(folder, vae, resolution, predict, images_, seed, step_ratio, guidance_scale)


def _sd_reference(folder, images_, prompt, negative_prompt, seed, step_ratio, guidance_scale):
    """Text-conditioned SDS without our backend: CLIP text states of the prompt / negative prompt padded to the
    tokenizer's length, the UNet run once per branch."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)

    def encode(text):
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        with torch.no_grad():
            return text_encoder(ids).last_hidden_state

    cond_text, uncond_text = encode(prompt), encode(negative_prompt)

    def predict(x_t, steps):
        b = len(x_t)
        cond = unet(x_t, steps, encoder_hidden_states=cond_text.expand(b, -1, -1)).sample
        uncond = unet(x_t, steps, encoder_hidden_states=uncond_text.expand(b, -1, -1)).sample
        return cond, uncond

    return _sds_reference(folder, vae, resolution, predict, images_, seed, step_ratio, guidance_scale)


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


def test_zero123_sds_matches_an_independent_reference(models_dir):
    elevations, azimuths = [10.0, -20.0], [30.0, 200.0]
    cams = cameras(elevations, azimuths)
    loss, grad = sds_grad(zero123(seed=0), cams, step_ratio=0.3, seed=1)
    ref_loss, ref_grad = _zero123_reference(models_dir / "gen4d" / "zero123" / "guidance_zero123-tiny", images(1, 2),
                                            elevations, azimuths, 2.5, condition()[0], (0.0, 0.0, 2.5), seed=0,
                                            step_ratio=0.3, guidance_scale=5.0)
    # Same diffusers / transformers release on both sides: they differ only by float rounding (PIL vs torch resize
    # of the condition image, batched vs separate UNet calls): ~6e-7 on gradients of max ~0.4. Breaks measured:
    # the polar or azimuth difference's sign flipped 0.02 / 0.013, the condition image resized without antialias
    # 0.06 or in BGR 0.12, the SDS weight scaled 0.2, another seed 0.4.
    assert ref_grad.abs().max() > 0.05
    torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=0, rtol=1e-4)


def test_zero123_deterministic_under_its_seed(models_dir):
    cams = cameras([10.0, -20.0], [30.0, 200.0])
    _, grad_a = sds_grad(zero123(seed=0), cams)
    _, grad_b = sds_grad(zero123(seed=0), cams)
    _, grad_c = sds_grad(zero123(seed=1), cams)
    assert torch.equal(grad_a, grad_b)
    assert not torch.allclose(grad_a, grad_c)


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


def _boxes_clip(height: int, width: int):
    """Three frames of a flat-coloured box wandering off-centre over grey, with its masks and boxes."""
    boxes = ((3, 15, 4, 20), (10, 22, 25, 41), (2, 16, 30, 38)) if width > height else \
        ((3, 15, 2, 20), (10, 30, 6, 18), (20, 36, 12, 26))  # (y0, y1, x0, x1), integer pixel bounds
    colour = torch.tensor([0.2, 0.5, 0.8])
    frames = torch.full((3, height, width, 3), 0.3)
    masks = torch.zeros(3, height, width)
    for t, (y0, y1, x0, x1) in enumerate(boxes):
        frames[t, y0:y1, x0:x1] = colour
        masks[t, y0:y1, x0:x1] = 1.0
    return frames, masks, boxes, colour


def _expected_condition(height: int, width: int, boxes, colour):
    """Written out from CoCo4D §3.1 and Zero123's framing, without the pack's centring code: every box
    is moved to the image centre, the clip zoomed so its largest box side is 0.8 * min(H, W), on white;
    the square of side H around the centre is kept. Returns the images and where they are exact."""
    largest = max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in boxes)
    zoom = 0.8 * min(height, width) / largest
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(height) + 0.5, indexing="ij")
    out, sure = torch.ones(3, height, height, 3), torch.zeros(3, height, height, dtype=torch.bool)
    for t, (y0, y1, x0, x1) in enumerate(boxes):
        dx, dy = (xx - height / 2).abs(), (yy - height / 2).abs()
        hw, hh = (x1 - x0) * zoom / 2, (y1 - y0) * zoom / 2
        inside = (dx < hw - 1) & (dy < hh - 1)
        out[t][inside] = colour
        sure[t] = inside | (dx > hw + 1) | (dy > hh + 1)  # a pixel away from the box edges (bilinear there)
    return out, sure


@pytest.mark.parametrize("height,width", [(36, 56), (40, 30)], ids=["landscape", "portrait"])
def test_zero123_condition_is_the_fits_centred_square_seen_view(models_dir, height, width):
    """CoCo4D eqs. 2 and 4 condition Zero123 on the seen view the fits render: with the masks, the loader
    centres and zooms the object as the fits do, on white, in a square of the frame height."""
    frames, masks, boxes, colour = _boxes_clip(height, width)
    guidance = zero123(condition_image=frames, condition_masks=masks)
    got = guidance.condition_image
    assert got.shape == (3, height, height, 3)
    expected, sure = _expected_condition(height, width, boxes, colour)
    assert sure.float().mean() > 0.8
    torch.testing.assert_close(got[sure], expected[sure], atol=1e-4, rtol=0)
    # The same pixels the fit nodes supervise with (Static Gaussians / Deformation Fit, center_object on,
    # background #ffffff), cropped or padded to the square by hand.
    fitted = reference_clip(frames, masks, None, True, (1.0, 1.0, 1.0)).views.images
    if width >= height:
        left = (width - height) // 2
        square = fitted[:, :, left:left + height]
    else:
        left = (height - width) // 2
        square = torch.ones(3, height, height, 3)
        square[:, :, left:left + width] = fitted
    torch.testing.assert_close(got, square, atol=0, rtol=0)
    with pytest.raises(ValueError, match="Gen4D_Zero123GuidanceLoader.*condition_masks"):
        zero123(condition_image=frames, condition_masks=masks[:, :-1])


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


def test_sd_sds_matches_an_independent_reference(models_dir):
    loss, grad = sds_grad(sd(negative_prompt="a dog"), cameras([0.0, 0.0], [0.0, 90.0]), step_ratio=0.3, seed=1)
    ref_loss, ref_grad = _sd_reference(models_dir / "diffusers" / "guidance_sd-tiny", images(1, 2),
                                       "a photo of a cat", "a dog", seed=0, step_ratio=0.3, guidance_scale=100.0)
    # Same libraries on both sides, batched vs separate UNet calls: ~3e-6 on gradients of max ~0.5. Breaks
    # measured: the prompt and the negative prompt swapped 0.98, the SDS weight scaled 0.26.
    assert ref_grad.abs().max() > 0.1
    torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=0, rtol=1e-4)


# --------------------------------------------------------------------------- placement


@pytest.mark.parametrize("make", [zero123, sd], ids=["zero123", "sd"])
def test_the_noise_schedule_lives_on_the_host_however_it_is_given(models_dir, make):
    import dataclasses

    components = make().components
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:  # on a GPU, each step's indexing would read it back and wait for the device
        given = components.alphas_cumprod.double().to(device)
        schedule = dataclasses.replace(components, alphas_cumprod=given).alphas_cumprod
        assert schedule.device.type == "cpu" and schedule.dtype == torch.float32
        torch.testing.assert_close(schedule, given.float().cpu())


@pytest.mark.parametrize("make", [zero123, sd], ids=["zero123", "sd"])
def test_the_graphed_encoder_gives_the_eager_loss_and_gradient_and_a_fits_end_drops_it(models_dir, monkeypatch,
                                                                                    make):
    """The VAE encoder's graphs on the CPU, through a stand-in with CUDA graphs' buffer semantics
    (``graph_emulator``): replays give the eager loss and gradient step after step, ``end_fit`` drops the
    capture, and the next fit captures again."""
    from gen4d.backends import graphed_backward
    from graph_emulator import make_graphed_callables

    captured = []

    def capture(module, sample_args, **kwargs):
        captured.append(module)
        return make_graphed_callables(module, sample_args, **kwargs)

    cams = cameras([10.0, -20.0], [30.0, 200.0])
    eager = make(seed=3)
    eager.cuda_graphs = False
    expected = []
    for ratio in (0.2, 0.7, 0.7):
        expected.append(sds_grad(eager, cams, step_ratio=ratio, seed=4))
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(graphed_backward, "graphs_supported", lambda device: True)
    graphed = make(seed=3)
    graphed.torch_compile = False  # graphs of the uncompiled pass (compiled captures: the test after this one)
    for fit in range(2):
        graphed.reseed() if fit else None
        for (loss, grad), ratio in zip(expected, (0.2, 0.7, 0.7)):
            got_loss, got_grad = sds_grad(graphed, cams, step_ratio=ratio, seed=4)
            torch.testing.assert_close(got_loss, loss, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(got_grad, grad, rtol=1e-4, atol=1e-7)
        assert graphed._graphed_encoder._captures != {}
        graphed.end_fit()
        assert graphed._graphed_encoder._captures == {}
    assert [m.replays for m in captured] == [3, 3], "one capture a fit, replayed every step"


def test_zero123_captures_its_encoder_compiled_by_default_with_the_eager_loss_and_gradient(models_dir, monkeypatch):
    """The loader's torch_compile (on by default) has the encoder's graphs record the pass as torch.compile
    traces it (a recording backend stands in for inductor, the emulator for CUDA graphs): the same loss and
    gradient as eager, step after step; off, the uncompiled pass is captured; a compile that fails falls back
    to graphs of the uncompiled pass with the same results."""
    from gen4d.backends import graph_cache, graphed_backward
    from graph_emulator import make_graphed_callables

    cams = cameras([10.0, -20.0], [30.0, 200.0])
    eager = zero123(seed=3)
    eager.cuda_graphs = False
    expected = [sds_grad(eager, cams, step_ratio=ratio, seed=4) for ratio in (0.2, 0.7, 0.7)]
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", make_graphed_callables)
    monkeypatch.setattr(graphed_backward, "graphs_supported", lambda device: True)
    traced = []

    def recording(gm, example_inputs):
        traced.append(gm)
        return gm.forward

    def broken(gm, example_inputs):
        raise RuntimeError("no working compiler")

    for backend, overrides, compiled_after in ((recording, {}, True), (recording, {"torch_compile": False}, False),
                                               (broken, {}, False)):
        torch._dynamo.reset()
        traced.clear()
        monkeypatch.setattr(graph_cache, "COMPILE_BACKEND", backend)
        guidance = zero123(seed=3, **overrides)
        assert guidance.torch_compile is overrides.get("torch_compile", True)
        for (loss, grad), ratio in zip(expected, (0.2, 0.7, 0.7)):
            got_loss, got_grad = sds_grad(guidance, cams, step_ratio=ratio, seed=4)
            torch.testing.assert_close(got_loss, loss, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(got_grad, grad, rtol=1e-4, atol=1e-7)
        encoder = guidance._graphed_encoder
        assert encoder.enabled and len(encoder._captures) == 1, "graphs in every case"
        assert encoder.compiled is compiled_after and bool(traced) is compiled_after
    torch._dynamo.reset()


@pytest.mark.parametrize("make", [zero123, sd], ids=["zero123", "sd"])
def test_the_encoder_attention_runs_as_matrix_products_on_small_latents_with_the_same_result(models_dir, monkeypatch,
                                                                                           make):
    """Up to ``MATH_ATTENTION_MAX_TOKENS`` latent tokens the VAE encoder's attention is restricted to the
    math backend (checked where the attention runs), beyond it the backends are left alone, and both give
    the same loss and gradient."""
    from gen4d.backends import zero123 as z

    cams = cameras([10.0, -20.0], [30.0, 200.0])
    runs = []
    for limit in (z.MATH_ATTENTION_MAX_TOKENS, 0):
        monkeypatch.setattr(z, "MATH_ATTENTION_MAX_TOKENS", limit)
        guidance = make(seed=3)
        guidance.cuda_graphs = False
        seen = []
        attention = guidance.components.vae.encoder.mid_block.attentions[0]
        hook = attention.register_forward_pre_hook(
            lambda module, args, seen=seen: seen.append(torch.backends.cuda.mem_efficient_sdp_enabled()))
        try:
            runs.append((sds_grad(guidance, cams, seed=4), seen))
        finally:
            hook.remove()
    ((loss, grad), math_only), ((loss_fused, grad_fused), fused) = runs
    assert math_only[-1] is False and all(fused), "the SDS encode (Zero123 encodes its condition image first)"
    torch.testing.assert_close(loss, loss_fused, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grad, grad_fused, rtol=1e-3, atol=1e-3 * float(grad_fused.abs().max()))


def test_the_host_is_asked_for_the_networks_once_a_fit_and_after_they_moved(models_dir, monkeypatch):
    from gen4d.backends import memory

    asked = []
    monkeypatch.setattr(memory, "_loader", lambda modules, device: asked.append(device) is not None)
    guidance, cams = zero123(), cameras([10.0, -20.0], [30.0, 200.0])
    guidance.reseed(0)  # a fit starts
    for _ in range(3):
        sds_grad(guidance, cams)
    assert len(asked) == 1, "one ask for the fit, not one a step"
    guidance.reseed(1)  # the next fit
    sds_grad(guidance, cams)
    assert len(asked) == 2
    unet = guidance.components.unet
    try:
        unet.to(torch.float64)  # moved away by someone else (another dtype stands in for another device)
        sds_grad(guidance, cams)
        assert len(asked) == 3 and next(unet.parameters()).dtype == torch.float32, "asked again and moved back"
    finally:
        unet.to(torch.float32)


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
