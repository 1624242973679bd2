# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D orbital model backend: tiny random-weight folders in the real layout, loaded by the real loader.

Covers the three condition modalities (text, front-view image, static orbit video), eq. 3 inside the
sampler on stub predictors, the magnitude path through the UNet's time embedding, base mode, and
the errors of folders and inputs.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from gen4d.backends.orbital import (
    MAGNITUDE_MLP,
    UNET_4D,
    AddedTimeEmbedding,
    OrbitalInterrupted,
    check_orbital_folder,
    clear_cache,
    load_orbital_model,
)
from gen4d.backends.tiny import build_tiny
from gen4d.core.diffusion4d.orbital import aware_cfg, base_mode_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

S, T = 16, 4  # the tiny models' native size; a short orbit


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("orbital")
    out = {kind: build_tiny(kind, root, seed=0) for kind in ("orbital", "orbital_base", "orbital_text")}
    yield out
    clear_cache()


def load(folders, kind):
    return load_orbital_model(folders[kind])


def front_image(seed=0):
    return torch.rand(S, S, 3, generator=torch.Generator().manual_seed(seed))


def sample(model, **kw):
    args = dict(prompt="a red cat", steps=3, num_frames=T, size=S, seed=0, device="cpu")
    return model.sample(**{**args, **kw})


# --------------------------------------------------------------------------- layout and loading


def test_tiny_folders_use_the_real_layout(folders):
    f = folders["orbital"]
    index = json.loads((f / "model_index.json").read_text())
    assert index["_class_name"] == "I2VGenXLPipeline"
    assert index["unet"] == ["diffusers", "I2VGenXLUNet"]
    for part in ("vae", "text_encoder", "unet", "image_encoder", UNET_4D, MAGNITUDE_MLP):
        assert list((f / part).glob("*.safetensors")), part
    assert not list(f.rglob("*.bin")) and not list(f.rglob("*.pt")), "safetensors only"
    assert check_orbital_folder(f) == ("image", True, True)
    assert check_orbital_folder(folders["orbital_base"]) == ("image", False, False)
    assert check_orbital_folder(folders["orbital_text"]) == ("text", True, True)
    text_index = json.loads((folders["orbital_text"] / "model_index.json").read_text())
    assert text_index["_class_name"] == "TextToVideoSDPipeline"
    assert text_index["unet"] == ["diffusers", "UNet3DConditionModel"]


def test_loader_builds_modes_and_caches(folders):
    model = load(folders, "orbital")
    assert model.mode == "4d" and model.family == "image"
    assert isinstance(model.unet_4d.time_embedding, AddedTimeEmbedding)
    assert not isinstance(model.unet.time_embedding, AddedTimeEmbedding), "the base model has no magnitude input"
    assert model.native_size == S and model.size_multiple == 4
    assert load(folders, "orbital") is model, "cached: one load per folder"
    assert load(folders, "orbital_base").mode == "base"
    assert load(folders, "orbital_text").family == "text"


def test_added_time_embedding_adds_timestep_cond(folders):
    """The wrapper turns the UNet's timestep embedding into temb(t) + emb(m) (§3.3)."""
    model = load(folders, "orbital")
    wrapped = model.unet_4d.time_embedding
    code = torch.randn(2, wrapped.inner.linear_1.in_features)
    extra = torch.randn(2, wrapped.inner.linear_2.out_features)
    torch.testing.assert_close(wrapped(code), wrapped.inner(code))
    torch.testing.assert_close(wrapped(code, extra), wrapped.inner(code) + extra)
    with pytest.raises(ValueError, match="does not match"):
        wrapped(code, extra[:, :3])


# --------------------------------------------------------------------------- the three modalities


def test_image_condition(folders):
    model = load(folders, "orbital")
    out = sample(model, image=front_image())
    assert out.orbit_4d.shape == out.static_orbit.shape == (T, S, S, 3)
    assert out.orbit_4d.dtype == torch.float32 and 0.0 <= out.orbit_4d.min() and out.orbit_4d.max() <= 1.0
    assert out.mode == "4d" and "4D mode" in out.info and "front-view image" in out.info
    assert not torch.equal(out.orbit_4d, out.static_orbit), "4D orbit (eq. 3) and base static orbit differ"
    again = sample(model, image=front_image())
    assert torch.equal(again.orbit_4d, out.orbit_4d) and torch.equal(again.static_orbit, out.static_orbit)
    other = sample(model, image=front_image(), seed=1)
    assert not torch.allclose(other.orbit_4d, out.orbit_4d, atol=1e-3), "the seed drives the noise"
    assert not torch.allclose(sample(model, image=front_image(1)).orbit_4d, out.orbit_4d, atol=1e-3), \
        "the image conditions the orbit"


def test_static_orbit_condition(folders):
    model = load(folders, "orbital")
    video = torch.rand(T, S, S, 3, generator=torch.Generator().manual_seed(3))
    calls = []
    out = sample(model, static_video=video, callback=lambda s, n, p: calls.append((s, n)))
    assert out.orbit_4d.shape == (T, S, S, 3)
    assert torch.equal(out.static_orbit, video), "the static condition is the coarse stage's static orbit (§3.4)"
    assert "static orbit video" in out.info
    assert calls == [(1, 3), (2, 3), (3, 3)], "no second pass: the static orbit is given"
    by_image = sample(model, image=video[0])
    assert not torch.allclose(by_image.orbit_4d, out.orbit_4d, atol=1e-3), "all frames' latents are concatenated"


def test_text_condition(folders):
    model = load(folders, "orbital_text")
    out = sample(model)
    assert out.orbit_4d.shape == out.static_orbit.shape == (T, S, S, 3)
    assert "Condition: text" in out.info
    assert not torch.allclose(sample(model, prompt="a blue dog").orbit_4d, out.orbit_4d, atol=1e-3)
    ignored = sample(model, image=front_image())
    assert torch.equal(ignored.orbit_4d, out.orbit_4d) and "ignored" in ignored.info


def test_magnitude_and_w2_change_the_4d_orbit(folders):
    model = load(folders, "orbital")
    image = front_image()
    low, high = sample(model, image=image, magnitude=0.0), sample(model, image=image, magnitude=400.0)
    assert (low.orbit_4d - high.orbit_4d).abs().mean() > 1e-3, "magnitude conditioning changes the output"
    assert torch.equal(low.static_orbit, high.static_orbit), "the base model has no magnitude input"
    no_w2 = sample(model, image=image, magnitude=400.0, w2=0.0)
    assert (no_w2.orbit_4d - high.orbit_4d).abs().mean() > 1e-3


def test_base_mode_is_reported_and_ignores_magnitude_and_w2(folders, caplog):
    model = load(folders, "orbital_base")
    image = front_image()
    with caplog.at_level("INFO", logger="gen4d.backends.orbital"):
        out = sample(model, image=image, magnitude=0.0)
    assert out.mode == "base"
    assert "BASE MODE" in out.info and "have no effect" in out.info
    assert "BASE MODE" in caplog.text
    assert torch.equal(out.static_orbit, out.orbit_4d)
    other = sample(model, image=image, magnitude=900.0, w2=3.0)
    assert torch.equal(other.orbit_4d, out.orbit_4d), "magnitude and w2 have no effect in base mode"


# --------------------------------------------------------------------------- eq. 3 in the sampler


def test_sampler_applies_eq3_to_stub_predictions(folders, monkeypatch):
    """Fixed predictions per network and row: the DDIM update must use exactly eq. 3 of them."""
    from diffusers import DDIMScheduler

    model = load(folders, "orbital")
    shape = (1, 4, T, S // 2, S // 2)
    g = torch.Generator().manual_seed(7)
    cond, uncond, eps3d = (torch.randn(shape, generator=g) for _ in range(3))
    calls = []

    def stub(unet, z, t, ctx, fps):
        calls.append((unet, z.shape[0], None if ctx.added is None else ctx.added.clone()))
        scale = 1.0 + float(t) / 1000.0  # different predictions at every step
        if unet is model.unet_4d:
            return torch.cat([cond, uncond]) * scale
        return eps3d.expand(z.shape[0], *shape[1:]) * scale

    monkeypatch.setattr(model, "_predict", stub)
    monkeypatch.setattr(model, "_decode", lambda latents: latents.clone())
    w1, w2, m = 7.0, 0.5, 250.0
    out = model.sample("a cat", image=front_image(), magnitude=m, w1=w1, w2=w2, steps=2, num_frames=T, size=S,
                       seed=5, device="cpu")

    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(2)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    noise = z.clone()
    for t in scheduler.timesteps:
        k = 1.0 + float(t) / 1000.0
        z = scheduler.step(aware_cfg(cond * k, uncond * k, eps3d * k, w1, w2), t, z).prev_sample
    assert torch.equal(out.orbit_4d, z), "4D orbit = DDIM with eq. 3 on (cond, uncond, 3D-aware)"

    static = noise
    for t in scheduler.timesteps:
        k = 1.0 + float(t) / 1000.0
        e = eps3d * k
        static = scheduler.step(base_mode_cfg(e, e, w1), t, static).prev_sample
    assert torch.equal(out.static_orbit, static), "static orbit = the base model with plain CFG, same noise"

    four_d = [c for c in calls if c[0] is model.unet_4d]
    base_in_4d_pass = [c for c in calls[: 2 * 2] if c[0] is model.unet]
    assert len(four_d) == 2 and all(b == 2 for _, b, _ in four_d), "cond + uncond in one batched call per step"
    assert len(base_in_4d_pass) == 2 and all(b == 1 for _, b, _ in base_in_4d_pass)
    added = four_d[0][2]
    emb = model.magnitude(torch.tensor([m]))
    torch.testing.assert_close(added[0], emb[0])  # the conditional row carries emb(m)
    assert torch.count_nonzero(added[1]) == 0, "the unconditional row has no magnitude"


# --------------------------------------------------------------------------- errors and interrupts


@pytest.mark.parametrize("bad, match", [(-1.0, "cannot be negative"), (float("nan"), "finite"),
                                        (float("inf"), "finite")])
def test_bad_magnitude(folders, bad, match):
    with pytest.raises(ValueError, match=match):
        sample(load(folders, "orbital"), image=front_image(), magnitude=bad)


def test_bad_inputs(folders):
    model = load(folders, "orbital")
    with pytest.raises(ValueError, match=r"is 8x8 pixels .* 16x16"):
        sample(model, image=torch.rand(8, 8, 3))
    with pytest.raises(ValueError, match="multiple of 4"):
        sample(model, image=torch.rand(18, 18, 3), size=18)
    with pytest.raises(ValueError, match=r"3 frames but the orbit has num_frames=4"):
        sample(model, static_video=torch.rand(3, S, S, 3))
    with pytest.raises(ValueError, match="connect a front-view image"):
        sample(model)
    with pytest.raises(ValueError, match="num_frames must be >= 2"):
        sample(model, image=front_image(), num_frames=1)
    with pytest.raises(ValueError, match="w2 must be finite"):
        sample(model, image=front_image(), w2=float("nan"))


def test_interrupt_between_steps(folders):
    model = load(folders, "orbital")
    seen = []
    with pytest.raises(OrbitalInterrupted):
        sample(model, image=front_image(), steps=10, callback=lambda s, n, p: seen.append((s, n)),
               should_stop=lambda: len(seen) >= 2)
    assert seen == [(1, 20), (2, 20)], "two passes of 10 steps; stopped after the second step"


def test_broken_folders(folders, tmp_path):
    src = folders["orbital"]
    bad = tmp_path / "no_4d_unet"
    shutil.copytree(src, bad)
    shutil.rmtree(bad / UNET_4D)
    with pytest.raises(ValueError, match="magnitude MLP belongs"):
        check_orbital_folder(bad)
    cut = tmp_path / "truncated"
    shutil.copytree(folders["orbital_base"], cut)
    weights = next((cut / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_orbital_model(cut)
    with pytest.raises(ValueError, match="no model_index.json"):
        check_orbital_folder(tmp_path)
    wrong = tmp_path / "wrong_class"
    wrong.mkdir()
    (wrong / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="must be one of"):
        check_orbital_folder(wrong)
