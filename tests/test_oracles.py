# SPDX-License-Identifier: Apache-2.0
"""Oracle backends answer from the world's ground truth at the declared viewpoint, through the real nodes."""

from __future__ import annotations

import pytest
import torch
from gen4d import synthetic
from gen4d.backends.depth import METRIC_DEPTH
from gen4d.core.engine.cameras import Cameras, orbit_poses
from gen4d.core.engine.viewpoint import current_viewpoint, seen_from
from gen4d.core.moge4d.tracks import Tracks
from node_runner import run

SIZE = (40, 32)  # width, height
FRAMES = 4


@pytest.fixture(scope="module")
def scene(one_thread):
    w = synthetic.scene_world(0)
    outs = run("Gen4D_SyntheticWorld", world="scene", width=SIZE[0], height=SIZE[1], num_frames=FRAMES,
               twin_points=300, supersample=1, depth_mode="metric")
    return w, dict(zip(run.__globals__["NODES"]["Gen4D_SyntheticWorld"].RETURN_NAMES, outs))


def turned(world, yaw_deg: float, times) -> Cameras:
    """The reference camera turned in place by ``yaw_deg``, one camera per time."""
    ref = world.reference_cameras(*SIZE, len(times))
    vm = orbit_poses(torch.zeros(len(times)), torch.full((len(times),), yaw_deg), radius=0.0)
    return Cameras(vm, ref.Ks, ref.width, ref.height, torch.as_tensor(times, dtype=torch.float32), ref.near, ref.far)


def test_viewpoint_is_scoped():
    w = synthetic.scene_world(0)
    cams = w.reference_cameras(*SIZE, 1)
    assert current_viewpoint() is None
    with seen_from(cams, "background") as outer:
        with seen_from(cams) as inner:
            assert current_viewpoint() is inner
        assert current_viewpoint() is outer and outer.content == "background"
    assert current_viewpoint() is None
    with pytest.raises(ValueError, match="content"):
        with seen_from(cams, "sky"):
            pass
    with pytest.raises(TypeError, match="Cameras"):
        with seen_from("front"):
            pass


def test_new_outputs_have_the_right_shapes(scene):
    w, out = scene
    assert out["static_images"].shape == (FRAMES, SIZE[1], SIZE[0], 3)
    # a fixed reference camera starting at t=0: every static frame is frame 0
    assert torch.equal(out["static_images"][1], out["images"][0])
    tracks = out["tracks"]
    assert isinstance(tracks, Tracks) and tracks.points.shape == (FRAMES, SIZE[1], SIZE[0], 3)
    assert tracks.valid.all(), "the scene world's backdrop fills the reference view"
    # the track of a pixel at time 0 is the surface point the pixel sees: re-project it
    p0 = tracks.points[0].reshape(-1, 3)
    uv = (tracks.K @ p0.T).T
    uv = uv[:, :2] / uv[:, 2:]
    grid = torch.stack(torch.meshgrid(torch.arange(SIZE[1]), torch.arange(SIZE[0]), indexing="ij")[::-1], -1)
    assert torch.allclose(uv, grid.reshape(-1, 2).float() + 0.5, atol=1e-3)


def test_oracle_depth_matches_truth_and_honours_content(scene):
    w, out = scene
    depth_model = out["depth_model"]
    assert depth_model.kind == METRIC_DEPTH
    truth = synthetic.render(w, w.reference_cameras(*SIZE, FRAMES))
    pred = depth_model.predict(out["images"])  # no viewpoint: the reference video
    assert torch.allclose(pred, truth["depth"], atol=1e-5)
    bg_truth = synthetic.render(synthetic.background_world(w), w.reference_cameras(*SIZE, FRAMES))["depth"]
    with seen_from(w.reference_cameras(*SIZE, FRAMES), "background"):
        bg = depth_model.predict(out["images"])
    assert torch.allclose(bg, bg_truth, atol=1e-5)
    fg = truth["foreground"] > 0.5
    assert fg.any() and (bg[fg] > pred[fg] + 0.1).all(), "behind the figure the background is farther"


def test_oracle_inpainters_fill_with_background_at_the_declared_pose(scene):
    w, out = scene
    cams = turned(w, 20.0, [0.0, 0.5, 1.0])
    truth = synthetic.render(synthetic.background_world(w), cams)["rgb"]
    masks = torch.zeros(3, SIZE[1], SIZE[0])
    masks[:, :, : SIZE[0] // 2] = 1.0
    frames = torch.where(masks[..., None] > 0, 0.0, truth)  # what the pose sees, its left half a hole
    with seen_from(cams, "background"):
        video = out["video_inpaint_model"].inpaint(frames, masks, "a room", noise_level=0.7, paste_mask=masks,
                                                   paste_noise_level=0.5)
        image = out["inpaint_model"].inpaint(frames[1], masks[1], "a room")
    left = masks > 0
    assert torch.allclose(video[left], truth[left], atol=1e-5)
    assert torch.equal(video[~left], frames[~left]), "unmasked pixels stay exactly"
    with seen_from(cams[1:2], "background"):
        image = out["inpaint_model"].inpaint(frames[1], masks[1], "a room")
    assert torch.allclose(image[left[1]], truth[1][left[1]], atol=1e-5)
    full = synthetic.render(w, cams)["rgb"]
    with seen_from(cams, "scene"):
        video = out["video_inpaint_model"].inpaint(torch.where(masks[..., None] > 0, 0.0, full), masks, noise_level=1.0)
    assert torch.allclose(video[left], full[left], atol=1e-5), "scene content: the whole world"
    with seen_from(w.reference_cameras(16, 16, 1)):
        with pytest.raises(ValueError, match="declared viewpoint"):
            out["inpaint_model"].inpaint(frames[0], masks[0])


def test_oracle_video_inpainter_checks_the_noise_levels(scene):
    """The oracle refuses what a real video inpainter would get wrong: a missing or out-of-range start noise level,
    a pasted region outside the masks or of another shape, a paste level above the start level or without a mask."""
    w, out = scene
    model = out["video_inpaint_model"]
    frames, masks = torch.zeros(2, SIZE[1], SIZE[0], 3), torch.zeros(2, SIZE[1], SIZE[0])
    masks[:, :4] = 1.0
    with seen_from(turned(w, 10.0, [0.0, 1.0]), "background"):
        for bad in (None, -0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match="noise_level must be"):
                model.inpaint(frames, masks, "a room", "", bad)
        # σ 0: no step starts at or below it, so the frames come back unchanged (as from Wan VACE)
        kept = model.inpaint(frames + 0.25, masks, "a room", "", 0.0)
        assert torch.equal(kept, frames + 0.25)
        with pytest.raises(ValueError, match="outside the masks"):
            model.inpaint(frames, masks, noise_level=0.7, paste_mask=1 - masks)
        with pytest.raises(ValueError, match="paste_mask"):
            model.inpaint(frames, masks, noise_level=0.7, paste_mask=masks[:1])
        with pytest.raises(ValueError, match="paste_noise_level"):
            model.inpaint(frames, masks, noise_level=0.7, paste_mask=masks, paste_noise_level=0.8)
        with pytest.raises(ValueError, match="without a paste_mask"):
            model.inpaint(frames, masks, noise_level=0.7, paste_noise_level=0.5)
        filled = model.inpaint(frames, masks, noise_level=0.7, paste_mask=masks, paste_noise_level=0.5)
        assert filled.shape == frames.shape


def test_oracle_image_inpainter_keeps_its_input_and_refuses_a_wrong_condition(scene):
    """A real inpainter continues what it is shown: the oracle keeps the unmasked pixels exactly and raises when
    they do not show the world at the declared viewpoint, instead of answering from the world regardless."""
    w, out = scene
    oracle = out["inpaint_model"]
    cams = turned(w, 20.0, [0.5])
    truth = synthetic.render(synthetic.background_world(w), cams)["rgb"][0]
    hole = torch.zeros(SIZE[1], SIZE[0])
    hole[8:24, 10:30] = 1.0
    image = torch.where(hole[..., None] > 0, 0.0, truth)
    image[0, 0] = torch.tensor([1.0, 0.0, 1.0])  # one odd kept pixel: kept exactly, within the allowed share
    with seen_from(cams, "background"):
        filled = oracle.inpaint(image, hole)
        assert torch.equal(filled[hole == 0], image[hole == 0]), "pixels outside the mask come back unchanged"
        assert torch.allclose(filled[hole > 0], truth[hole > 0], atol=1e-5)
        assert max(oracle.mismatch[-1]) < 0.01
        with pytest.raises(ValueError, match="inverted"):
            oracle.inpaint(image, 1.0 - hole)  # the hole is kept and the known pixels are to be filled
        with pytest.raises(ValueError, match="mask must be"):
            oracle.inpaint(image, hole[:, :-1])
    with seen_from(turned(w, 0.0, [0.5]), "background"):  # the image was seen 20 degrees away
        with pytest.raises(ValueError, match="wrong viewpoint"):
            oracle.inpaint(image, hole)
    with seen_from(cams, "scene"):  # the foreground is missing from a background image: still the view
        oracle.inpaint(image, hole)


def test_oracle_depth_answers_with_a_models_error(scene):
    w, out = scene
    cams = w.reference_cameras(*SIZE, 2)
    z = synthetic.render(w, cams)["depth"]
    images = out["images"][:2]
    seen = z > 0
    assert seen.all(), "the scene world's backdrop fills the view"
    with seen_from(cams):
        metric = synthetic.OracleDepth(w, 1, kind="metric_depth", scale=1.2, shift=-0.5)
        torch.testing.assert_close(metric.predict(images), 1.2 * z - 0.5)
        relative = synthetic.OracleDepth(w, 1, kind="relative_disparity", scale=3.0, shift=0.1)
        assert relative.kind == "relative_disparity"
        torch.testing.assert_close(relative.predict(images), 3.0 / z + 0.1)
        jittered = synthetic.OracleDepth(w, 1, scale=1.0, shift=0.0, jitter=0.2)
        first, again = jittered.predict(images), jittered.predict(images)
    assert torch.equal(first, again), "one image, one answer"
    (s0, b0), (s1, b1) = jittered.errors[:2]
    assert (s0, b0) != (s1, b1), "two images, two errors"
    for i, (s, b) in enumerate(jittered.errors[:2]):
        assert 0.8 <= s <= 1.2 and abs(b) <= 0.2 * float(z[i].median())
        torch.testing.assert_close(first[i], s * z[i] + b)
    with pytest.raises(ValueError, match="kind"):
        synthetic.OracleDepth(w, kind="disparity")


def test_oracle_segmenter_and_video_model(scene):
    w, out = scene
    truth = synthetic.render(w, w.reference_cameras(*SIZE, FRAMES))
    masks = out["segmenter"].segment(out["images"], points=[(1, 1)])
    assert torch.equal(masks, (truth["foreground"] > 0.5).float())
    assert masks.sum() > 0
    video = run("Gen4D_I2VReference", video_model=out["video_model"], prompt="", negative_prompt="", num_frames=0,
                fps=0.0, steps=1, guidance_scale=1.0, width=0, height=0, seed=0)
    assert torch.allclose(video[0], out["images"], atol=1e-6)
    split = run("Gen4D_SAM2Split", images=out["images"], segmenter=out["segmenter"], points="[[5, 5]]", box="",
                foreground_background="#ffffff", background_fill="color", fill_color="#000000")
    assert torch.equal(split[2], masks)


def test_object_world_background_is_empty():
    w = synthetic.object_world(0)
    assert synthetic.background_world(w) is None
    oracle = synthetic.OracleImageInpainter(w, supersample=1)
    image = torch.zeros(16, 16, 3)
    with seen_from(w.reference_cameras(16, 16, 1), "background"):
        out = oracle.inpaint(image, torch.ones(16, 16))
    assert torch.allclose(out, torch.tensor(w.background).expand(16, 16, 3))


def test_oracles_default_to_the_cameras_of_their_world_node():
    """A narrow-lens reference video: the video model, segmenter and depth model all assume its cameras."""
    w = synthetic.scene_world(0)
    ref = w.reference_cameras(*SIZE, FRAMES)
    K = ref.Ks.clone()
    K[:, :2, :2] *= 1.8
    cams = Cameras(ref.viewmats, K, ref.width, ref.height, ref.times, ref.near, ref.far)
    outs = run("Gen4D_SyntheticWorld", world="scene", width=SIZE[0], height=SIZE[1], num_frames=FRAMES,
               twin_points=300, supersample=1, depth_mode="metric", cameras=cams)
    out = dict(zip(run.__globals__["NODES"]["Gen4D_SyntheticWorld"].RETURN_NAMES, outs))
    truth = synthetic.render(w, cams)
    video = out["video_model"].generator.generate(None, "")
    assert torch.allclose(video, out["images"], atol=1e-6)
    assert torch.allclose(out["depth_model"].predict(video), truth["depth"], atol=1e-5)
    assert torch.equal(out["segmenter"].segment(video), (truth["foreground"] > 0.5).float())
    half = out["video_model"].generator.generate(None, "", width=SIZE[0] // 2, height=SIZE[1] // 2)
    assert half.shape == (FRAMES, SIZE[1] // 2, SIZE[0] // 2, 3)
