# SPDX-License-Identifier: Apache-2.0
"""The nodes executed directly (their FUNCTION methods) on small synthetic worlds, without ComfyUI."""

from __future__ import annotations

import math
import os
import sys
import types
from pathlib import Path

import gen4d
import pytest
import torch
from gen4d.core.engine.camera_presets import CAMERA_PRESETS
from gen4d.core.engine.scene import Scene4D
from gen4d.core.formats.convert import check_image, check_mask, depth_to_image, parse_color

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import defaults, run  # noqa: E402, F401
from render_script_orbit import script_orbit  # noqa: E402
from workflow_checker import check_workflow, ui_to_api  # noqa: E402

NODES = gen4d.NODE_CLASS_MAPPINGS
SCENE_REL = "gen4d/scene_00001.gen4d.safetensors"


# --------------------------------------------------------------------------- helpers




def camera_path(preset: str = "diffusion4d_orbit", **kw):
    return run("Gen4D_CameraPath", preset=preset, **{"num_frames": 3, "width": 32, "height": 32, **kw})[0]


def world(cameras, **kw):
    """images, foreground_mask, depth, cameras, gaussian_twin of the object world."""
    size = {"width": cameras.width, "height": cameras.height, "num_frames": len(cameras)}
    args = {"world": "object", "twin_points": 500, "supersample": 1, "depth_mode": "metric", **size, **kw}
    return run("Gen4D_SyntheticWorld", cameras=cameras, **args)


def render(cameras, **kw):
    return run("Gen4D_Render", cameras=cameras, **{"depth_mode": "metric", "backend": "torch", **kw})


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a & b).sum().item() / max((a | b).sum().item(), 1)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Output and input folders of the fallback host (no ComfyUI) inside tmp_path."""
    out, inp = tmp_path / "output", tmp_path / "input"
    monkeypatch.setenv("GEN4D_OUTPUT_DIR", str(out))
    monkeypatch.setenv("GEN4D_INPUT_DIR", str(inp))
    return out, inp


@pytest.fixture(scope="module")
def twin_case():
    """The object world seen by a 3-view Diffusion4D orbit (narrow fov so the figure fills the frame), its
    Gaussian twin, and the twin rendered by Gen4D_Render at the same cameras."""
    cams = camera_path("diffusion4d_orbit", width=64, height=64, fovy_deg=20.0)
    images, fg, depth, cams_out, twin, _guidance, *_ = world(cams, twin_points=6000, supersample=3)
    r_images, r_alpha, r_depth = render(cams, scene=twin, background="#ffffff")
    return types.SimpleNamespace(cams=cams, images=images, fg=fg, depth=depth, cams_out=cams_out, twin=twin,
                                 r_images=r_images, r_alpha=r_alpha, r_depth=r_depth)


@pytest.fixture(scope="module")
def small():
    """A tiny dynamic case for tests that only need something to render or save."""
    cams = camera_path("diffusion4d_orbit", width=32, height=32)
    return types.SimpleNamespace(cams=cams, twin=world(cams, twin_points=400)[4])


# --------------------------------------------------------------------------- Gen4D_CameraPath


@pytest.mark.parametrize("preset", CAMERA_PRESETS)
def test_every_camera_preset_builds(preset):
    kf = '[{"t": 0, "azimuth": 0}, {"t": 1, "azimuth": 90, "elevation": 20}]'
    cams = camera_path(preset, num_frames=5, width=40, height=24, keyframes=kf)
    assert len(cams) == (4 if preset.startswith("coco4d") else 5)
    assert (cams.width, cams.height) == (40, 24)
    assert torch.isfinite(cams.viewmats).all() and torch.isfinite(cams.Ks).all()
    assert ((cams.times >= 0) & (cams.times <= 1)).all()
    assert torch.allclose(cams.viewmats[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(cams), 4))


def test_camera_path_paper_defaults():
    coco = camera_path("coco4d_outpaint_loop1", fovy_deg=0.0, near=0.0, far=0.0)
    assert torch.allclose(coco.fovy_deg, torch.full((4,), 60.0), atol=1e-3)
    assert (coco.near, coco.far) == (0.1, 10000.0)
    d4d = run("Gen4D_CameraPath", preset="diffusion4d_orbit", width=32, height=32)[0]
    assert len(d4d) == 24
    assert torch.allclose(d4d.centers.norm(dim=-1), torch.full((24,), 2.0), atol=1e-4)
    assert torch.allclose(d4d.centers[:, 1], torch.zeros(24), atol=1e-4), "elevation 0"
    want_vm, want_K, want_t = script_orbit(24, 32)  # the official render script's orbit, written out independently
    torch.testing.assert_close(d4d.viewmats.double(), want_vm, rtol=0, atol=1e-5)
    torch.testing.assert_close(d4d.Ks.double(), want_K.expand(24, 3, 3), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(d4d.times.double(), want_t, rtol=0, atol=1e-6)
    open_loop = run("Gen4D_CameraPath", preset="diffusion4d_orbit", width=32, height=32,
                    orbit_convention="open_loop")[0]
    az = torch.rad2deg(torch.atan2(open_loop.centers[:, 0], -open_loop.centers[:, 2]))
    torch.testing.assert_close(torch.remainder(az[1:] - az[:-1], 360.0), torch.full((23,), 15.0), rtol=0, atol=1e-3)
    static = camera_path("diffusion4d_static_orbit", num_frames=4)
    assert torch.equal(static.times, torch.zeros(4))
    own = camera_path("coco4d_outpaint_loop1", fovy_deg=30.0, near=0.5, far=50.0)
    assert torch.allclose(own.fovy_deg, torch.full((4,), 30.0), atol=1e-3) and (own.near, own.far) == (0.5, 50.0)


@pytest.mark.parametrize("text, message", [
    ("", "needs keyframes"),
    ("[", "not valid JSON"),
    ('{"t": 0}', "JSON list of objects"),
    ("[1, 2]", "JSON list of objects"),
    ('[{"t": 0, "zoom": 2}]', "unknown keys"),
    ('[{"t": 1.5}]', "t must lie in"),
    ('[{"t": 0}, {"t": 0}]', "distinct"),
    ('[{"t": 0, "radius": -1}]', "radius must be"),
    ('[{"t": null}]', "keyframe 0"),
    ('[{"t": 0, "azimuth": "left"}]', "keyframe 0"),
])
def test_keyframe_errors_are_clear(text, message):
    with pytest.raises(ValueError, match=message):
        camera_path("keyframes", keyframes=text)


# --------------------------------------------------------------------------- SyntheticWorld -> Render


def test_synthetic_world_outputs(twin_case):
    c = twin_case
    b, h, w = 3, 64, 64
    assert c.images.shape == (b, h, w, 3) and c.images.dtype == torch.float32
    assert 0.0 <= c.images.min() and c.images.max() <= 1.0
    assert c.fg.shape == (b, h, w) and c.fg.dtype == torch.float32 and 0 <= c.fg.min() and c.fg.max() <= 1
    assert c.depth.shape == (b, h, w, 3) and c.depth.dtype == torch.float32
    assert c.cams_out is c.cams
    assert isinstance(c.twin, Scene4D) and c.twin.num_gaussians == 6000 and c.twin.num_frames == 3
    assert 0.1 < c.fg.mean() < 0.9, "the figure should fill part of the frame"
    hit = c.depth[..., 0] > 0  # depth is exact at the pixel centre, the mask is 3x3 sub-pixel coverage
    assert (c.fg[hit] > 0).all() and hit[c.fg == 1].all(), "object world: depth where the figure is"


def test_render_outputs(twin_case):
    c = twin_case
    assert c.r_images.shape == (3, 64, 64, 3) and c.r_images.dtype == torch.float32
    assert 0.0 <= c.r_images.min() and c.r_images.max() <= 1.0
    assert c.r_alpha.shape == (3, 64, 64) and c.r_alpha.dtype == torch.float32
    assert 0.0 <= c.r_alpha.min() and c.r_alpha.max() <= 1.0
    assert c.r_depth.shape == (3, 64, 64, 3) and c.r_depth.dtype == torch.float32


def test_twin_render_matches_the_world(twin_case):
    """The Gaussian twin rendered by Gen4D_Render covers, and lies at, the ray-cast world's surfaces."""
    c = twin_case
    world_mask, twin_mask = c.fg > 0.5, c.r_alpha > 0.5
    for i in range(3):
        assert iou(world_mask[i], twin_mask[i]) > 0.78, f"view {i}: IoU {iou(world_mask[i], twin_mask[i]):.3f}"
    both = world_mask & twin_mask & (c.depth[..., 0] > 0)
    assert both.sum() > 0.7 * world_mask.sum()
    err = (c.r_depth[..., 0] - c.depth[..., 0])[both].abs()
    assert err.median() < 0.02, f"median depth error {err.median():.4f} at depth ~2"  # splat bias is ~0.008
    assert err.quantile(0.9) < 0.06
    inner = (c.fg > 0.99) & (c.r_alpha > 0.99)  # edges differ by the splats' ~1 px blur
    assert inner.sum() > 0.5 * world_mask.sum()
    assert (c.r_images - c.images).abs()[inner].mean() < 0.1, "twin colours against the world"
    assert torch.allclose(c.r_images[inner].mean(0), c.images[inner].mean(0), atol=0.03)


def test_render_honours_camera_times(small):
    moving = render(small.cams, scene=small.twin)[0]
    frozen = render(small.cams, gaussians=small.twin.at(0.0))[0]
    assert torch.allclose(moving[0], frozen[0], atol=1e-6), "camera 0 sees t=0"
    assert (moving[1] - frozen[1]).abs().max() > 0.05, "camera 1 sees t=0.5, where the figure has moved"


def test_render_background_colour(small):
    for text, rgb in (("#ff0000", (1.0, 0.0, 0.0)), ("0,0,255", (0.0, 0.0, 1.0))):
        images, alpha, _ = render(small.cams, scene=small.twin, background=text)
        empty = alpha == 0
        assert empty.sum() > 100, "most of a 32 px view of the figure is background"
        assert torch.equal(images[empty], torch.tensor(rgb).expand(int(empty.sum()), 3))


def test_render_validation_and_missing_source(small):
    error = NODES["Gen4D_Render"].VALIDATE_INPUTS(background="reddish")
    assert isinstance(error, str) and "reddish" in error
    assert NODES["Gen4D_Render"].VALIDATE_INPUTS(background="#102030") is True
    # A linked input reaches VALIDATE_INPUTS as None (its value exists only at run time): not an error.
    assert NODES["Gen4D_Render"].VALIDATE_INPUTS(background=None) is True
    with pytest.raises(ValueError, match="connect a scene or a gaussians"):
        render(small.cams)


def test_render_depth_modes(small):
    _, alpha, inv = render(small.cams, scene=small.twin, depth_mode="inverse_normalized")
    covered = alpha > 1e-3
    assert inv.max() == 1.0 and inv.min() == 0.0
    assert torch.equal(inv[..., 0][~covered], torch.zeros(int((~covered).sum())))
    assert torch.equal(inv[..., 0], inv[..., 2]), "grey IMAGE"


def test_synthetic_world_is_seeded(small):
    a = world(small.cams, seed=3)
    b = world(small.cams, seed=3)
    c = world(small.cams, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[4].at(0.5).means, b[4].at(0.5).means)
    assert not torch.equal(a[4].at(0.0).means, c[4].at(0.0).means)
    with pytest.raises(ValueError, match="supersample must be odd"):
        world(small.cams, supersample=2)


# --------------------------------------------------------------------------- SaveScene / LoadScene


def save(scene, prefix: str = "gen4d/scene", **kw):
    return run("Gen4D_SaveScene", scene=scene, filename_prefix=prefix, **kw)[0]


def test_twin_records_the_views_it_was_rendered_for(twin_case):
    """The twin carries the node's cameras: Render without cameras draws the same views as the world's images
    (its own recorded cameras, not a default path), and the 4D preview starts there instead of noting none."""
    c = twin_case
    recorded = c.twin.reference_cameras
    assert recorded is not None and len(recorded) == len(c.cams)
    assert torch.equal(recorded.viewmats, c.cams.viewmats) and torch.equal(recorded.Ks, c.cams.Ks)
    images, alpha, _depth = render(None, scene=c.twin, background="#ffffff")
    assert torch.allclose(alpha, c.r_alpha, atol=1e-5) and torch.allclose(images, c.r_images, atol=1e-5)


def test_save_load_round_trip(folders, twin_case):
    out, _ = folders
    twin = twin_case.twin
    assert save(twin) == SCENE_REL
    assert save(twin) == "gen4d/scene_00002.gen4d.safetensors"
    for n in ("00001", "00002"):
        assert (out / f"gen4d/scene_{n}.gen4d.safetensors").is_file()
        assert sorted(p.name for p in (out / f"gen4d/scene_{n}_ply").iterdir()) == \
            ["frame_00000.ply", "frame_00001.ply", "frame_00002.ply"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]

    choices = NODES["Gen4D_LoadScene"].INPUT_TYPES()["required"]["file"][0]
    assert f"{SCENE_REL} [output]" in choices
    assert "gen4d/scene_00002_ply/frame_00001.ply [output]" in choices

    scene, gaussians = run("Gen4D_LoadScene", file=f"{SCENE_REL} [output]")
    assert isinstance(scene, Scene4D) and scene.num_frames == 3 and scene.num_gaussians == 6000
    assert torch.equal(gaussians.means, twin.at(0.0).means)
    again = render(twin_case.cams, scene=scene, background="#ffffff")
    for new, old in zip(again, (twin_case.r_images, twin_case.r_alpha, twin_case.r_depth), strict=True):
        assert (new - old).abs().max() <= 1e-6


def test_ply_frame_loads_as_static_scene(folders, small):
    save(small.twin)
    scene, gaussians = run("Gen4D_LoadScene", file="gen4d/scene_00001_ply/frame_00001.ply [output]")
    assert scene.num_frames == 1 and len(scene.parts) == 1
    assert torch.allclose(gaussians.means, small.twin.at(0.5).means, atol=1e-6)
    assert torch.equal(scene.at(0.0).means, scene.at(1.0).means)


def test_load_from_input_folder(folders, small):
    _, inp = folders
    (inp / "shared").mkdir(parents=True)
    save(small.twin)
    (inp / "shared/frame.ply").write_bytes((folders[0] / "gen4d/scene_00001_ply/frame_00000.ply").read_bytes())
    assert "shared/frame.ply [input]" in NODES["Gen4D_LoadScene"].INPUT_TYPES()["required"]["file"][0]
    _, gaussians = run("Gen4D_LoadScene", file="shared/frame.ply [input]")
    assert len(gaussians) == 400


def test_load_scene_validation(folders, small, tmp_path):
    save(small.twin, write_ply_frames=False)
    (tmp_path / "secret.ply").write_bytes(b"outside the output folder")
    load = NODES["Gen4D_LoadScene"]
    assert load.VALIDATE_INPUTS(file=f"{SCENE_REL} [output]") is True
    for bad in ("gen4d/missing.gen4d.safetensors [output]", "../secret.ply [output]",
                f"{tmp_path / 'secret.ply'} [output]", "gen4d/../../secret.ply [output]", SCENE_REL,
                f"{SCENE_REL} [temp]"):
        message = load.VALIDATE_INPUTS(file=bad)
        assert isinstance(message, str) and message, bad
        with pytest.raises(ValueError):
            run("Gen4D_LoadScene", file=bad)
    assert "(no scene files found)" not in load.INPUT_TYPES()["required"]["file"][0]
    assert load.VALIDATE_INPUTS(file=None) is True, "a linked file name is checked when the node runs"


def test_load_scene_lists_placeholder_when_empty(folders):
    assert NODES["Gen4D_LoadScene"].INPUT_TYPES()["required"]["file"][0] == ["(no scene files found)"]


def test_is_changed_follows_the_file(folders, small):
    out, _ = folders
    save(small.twin, write_ply_frames=False)
    name = f"{SCENE_REL} [output]"
    load = NODES["Gen4D_LoadScene"]
    first = load.IS_CHANGED(file=name)
    assert load.IS_CHANGED(file=name) == first
    path = out / SCENE_REL
    path.write_bytes(path.read_bytes() + b" ")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load.IS_CHANGED(file=name) != first
    assert math.isnan(load.IS_CHANGED(file="gen4d/none.gen4d.safetensors [output]"))


@pytest.mark.parametrize("prefix", ["../evil", "gen4d/../../evil", "..\\evil", "ABSOLUTE"])
def test_save_refuses_unsafe_prefixes(folders, small, tmp_path, prefix):
    out, _ = folders
    if prefix == "ABSOLUTE":
        prefix = str(tmp_path / "abs" / "x")
    before = files_under(tmp_path)
    with pytest.raises(ValueError):
        save(small.twin, prefix)
    assert files_under(tmp_path) == before
    assert not out.exists()


# --------------------------------------------------------------------------- inside a (fake) ComfyUI




def test_host_uses_comfy_when_present(fake_comfy):
    from gen4d.nodes import host

    assert host.in_comfy()
    assert host.output_directory() == fake_comfy.output
    assert host.temp_directory() == fake_comfy.temp
    assert host.compute_device() == torch.device("cpu")


def test_the_bar_is_updated_at_a_bounded_rate_but_never_misses_the_end_or_a_preview(fake_comfy, monkeypatch):
    from gen4d.nodes import host

    clock = [100.0]
    monkeypatch.setattr(host.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(host, "PROGRESS_INTERVAL_S", 0.1)
    bar, image = host.Progress(400), torch.rand(4, 4, 3)
    for step in range(1, 401):  # 400 steps over 0.4 s: a fit's pace
        clock[0] += 0.001
        bar(step, preview=image if step == 250 else None)
    values = [v for v, _, _ in fake_comfy.updates]
    assert values[0] == 1 and values[-1] == 400 and 250 in values
    assert len(values) <= 7, values  # 1, then one a tenth of a second, the preview and the end
    assert [p is not None for v, _, p in fake_comfy.updates if v == 250] == [True]
    seen = []
    host.set_progress_sink(lambda step, total: seen.append(step))
    try:
        monkeypatch.setattr(host, "_module", lambda name: None)  # outside ComfyUI: every step reaches the sink
        sink_bar = host.Progress(50)
        for step in range(1, 51):
            sink_bar(step)
    finally:
        host.set_progress_sink(None)
    assert seen == list(range(1, 51))


def test_render_reports_progress(fake_comfy, small):
    images, _, _ = render(small.cams, scene=small.twin, batch_size=1)
    assert fake_comfy.totals == [3]
    assert [(v, t) for v, t, _ in fake_comfy.updates] == [(1, 3), (2, 3), (3, 3)]
    kind, preview, size = fake_comfy.updates[-1][2]
    assert kind == "JPEG" and preview.size == (32, 32) and size == 512
    assert images.shape[0] == 3


def test_render_stops_when_interrupted(fake_comfy, small):
    fake_comfy.interrupted = True
    with pytest.raises(fake_comfy.Interrupted):
        render(small.cams, scene=small.twin, batch_size=1)
    assert fake_comfy.updates == []
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        render(small.cams, scene=small.twin, batch_size=1)
    assert len(fake_comfy.updates) == 1, "stopped at the next batch"


def test_save_interrupted_leaves_nothing(fake_comfy, small, tmp_path):
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        save(small.twin)
    out = fake_comfy.output
    assert files_under(out) == {"gen4d"}, "a cancelled save keeps neither the scene file nor the first frames"
    fake_comfy.interrupt_after = None
    assert save(small.twin) == SCENE_REL
    assert Scene4D.load(out / SCENE_REL).num_gaussians == 400
    assert not (tmp_path / "env_output").exists(), "files went to ComfyUI's folder, not the fallback"


# --------------------------------------------------------------------------- core/formats/convert.py


@pytest.mark.parametrize("x, message", [
    ("not a tensor", "expected an IMAGE tensor"),
    (torch.rand(4, 4), "expected an IMAGE"),
    (torch.rand(1, 4, 4, 4), "expected an IMAGE"),
    (torch.rand(1, 1, 4, 4, 3), "expected an IMAGE"),
    (torch.rand(0, 4, 4, 3), "empty"),
    (torch.rand(1, 0, 4, 3), "empty"),
    (torch.full((1, 2, 2, 3), float("nan")), "NaN"),
    (torch.full((1, 2, 2, 3), float("inf")), "NaN or inf"),
])
def test_check_image_errors(x, message):
    with pytest.raises(ValueError, match=message):
        check_image(x, "ref")


def test_check_image_accepts_and_normalises():
    out = check_image(torch.rand(5, 6, 3, dtype=torch.float64))
    assert out.shape == (1, 5, 6, 3) and out.dtype == torch.float32
    assert check_image(torch.rand(2, 5, 6, 4), channels=(3, 4)).shape == (2, 5, 6, 4)
    with pytest.raises(ValueError, match="ref"):
        check_image(torch.rand(2, 5, 6, 4), "ref")


@pytest.mark.parametrize("x, like, message", [
    (torch.rand(4), None, "expected a MASK"),
    (torch.rand(1, 2, 4, 4, 1), None, "expected a MASK"),
    (torch.rand(0, 4, 4), None, "expected a MASK"),
    (torch.rand(1, 4, 4, 2), None, "expected a MASK"),
    (torch.full((1, 4, 4), float("nan")), None, "NaN"),
    (torch.rand(1, 4, 5), torch.rand(1, 4, 4, 3), "does not match the image size"),
    (torch.rand(2, 4, 4), torch.rand(3, 4, 4, 3), "2 masks for 3 images"),
    ([[0.0]], None, "expected a MASK tensor"),
])
def test_check_mask_errors(x, like, message):
    with pytest.raises(ValueError, match=message):
        check_mask(x, "mask", like)


def test_check_mask_shapes():
    assert check_mask(torch.rand(4, 5)).shape == (1, 4, 5)
    assert check_mask(torch.rand(2, 4, 5, 1)).shape == (2, 4, 5)
    assert check_mask(torch.rand(2, 4, 5, 3)).shape == (2, 4, 5)
    single = torch.rand(1, 4, 5)
    out = check_mask(single, like=torch.rand(3, 4, 5, 3))
    assert out.shape == (3, 4, 5) and torch.equal(out[2], single[0])


def test_depth_to_image_modes():
    depth = torch.tensor([[[1.0], [2.0]], [[4.0], [0.0]]])[None]  # [1,2,2,1]; one empty pixel
    inv = depth_to_image(depth, "inverse_normalized")
    assert inv.shape == (1, 2, 2, 3)
    assert inv[0, 0, 0, 0] == 1.0 and inv[0, 1, 0, 0] == 0.0 and inv[0, 1, 1, 0] == 0.0
    assert torch.isclose(inv[0, 0, 1, 0], torch.tensor((0.5 - 0.25) / (1.0 - 0.25)))
    norm = depth_to_image(depth, "normalized")
    assert norm[0, 1, 0, 0] == 1.0 and norm[0, 0, 0, 0] == 0.0 and norm[0, 1, 1, 0] == 0.0
    metric = depth_to_image(depth, "metric")
    assert torch.equal(metric[..., 1], depth[..., 0])
    alpha = torch.ones_like(depth)
    alpha[0, 1, 0] = 0.0  # the farthest pixel is uncovered: masked, and the scale is rebuilt without it
    masked = depth_to_image(depth, "inverse_normalized", alpha)
    assert masked[0, 1, 0, 0] == 0.0 and masked[0, 0, 1, 0] == 0.0 and masked[0, 0, 0, 0] == 1.0
    assert torch.equal(depth_to_image(torch.zeros(1, 2, 2, 1)), torch.zeros(1, 2, 2, 3))
    assert torch.equal(depth_to_image(torch.full((1, 2, 2), 3.0)), torch.ones(1, 2, 2, 3))
    with pytest.raises(ValueError, match="mode must be one of"):
        depth_to_image(depth, "disparity")


@pytest.mark.parametrize("text, rgb", [
    ("#ff0000", (1.0, 0.0, 0.0)),
    (" #00FF00 ", (0.0, 1.0, 0.0)),
    ("#00f", (0.0, 0.0, 1.0)),
    ("255, 0, 51", (1.0, 0.0, 0.2)),
    ("0.5,0.25,1", (0.5, 0.25, 1.0)),
    ("0,0,0", (0.0, 0.0, 0.0)),
])
def test_parse_color(text, rgb):
    out = parse_color(text)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.tensor(rgb))


@pytest.mark.parametrize("text", ["red", "#ff00", "#gggggg", "1,2", "1,2,3,4", "300,0,0", "-0.5,0,0", ""])
def test_parse_color_errors(text):
    with pytest.raises(ValueError, match="color"):
        parse_color(text)


# --------------------------------------------------------------------------- a tiny workflow


def tiny_workflow() -> dict:
    """UI-format: CameraPath -> SyntheticWorld(cameras) -> Render(scene=gaussian_twin) -> SaveScene, plus a
    core PreviewImage of the render. Widget values are spelled out: saved workflows depend on their order."""
    cam_out = [{"name": "cameras", "type": "GEN4D_CAMERAS", "links": [1, 4]}]
    world_cls = NODES["Gen4D_SyntheticWorld"]
    world_out = [{"name": n, "type": t, "links": []} for n, t in zip(world_cls.RETURN_NAMES, world_cls.RETURN_TYPES)]
    world_out[4]["links"] = [2, 3]
    return {
        "last_node_id": 5, "last_link_id": 5, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "Gen4D_CameraPath", "mode": 0, "inputs": [], "outputs": cam_out,
             "widgets_values": ["diffusion4d_orbit", 2, 32, 32, 0.0, 2.0, 0.0, 0.0, 360.0, 2.0, 0.0, 0.0, ""]},
            {"id": 2, "type": "Gen4D_SyntheticWorld", "mode": 0,
             "inputs": [{"name": "cameras", "type": "GEN4D_CAMERAS", "link": 1}], "outputs": world_out,
             "widgets_values": ["object", 32, 32, 2, 0, "fixed", 300, 8.0, 1, "metric"]},
            {"id": 3, "type": "Gen4D_Render", "mode": 0,
             "inputs": [{"name": "cameras", "type": "GEN4D_CAMERAS", "link": 4},
                        {"name": "scene", "type": "GEN4D_SCENE", "link": 2}],
             "outputs": [{"name": "images", "type": "IMAGE", "links": [5]},
                         {"name": "alpha", "type": "MASK", "links": []},
                         {"name": "depth", "type": "IMAGE", "links": []}],
             "widgets_values": ["#000000", "inverse_normalized", "torch", 8]},
            {"id": 4, "type": "Gen4D_SaveScene", "mode": 0,
             "inputs": [{"name": "scene", "type": "GEN4D_SCENE", "link": 3}],
             "outputs": [{"name": "scene_file", "type": "STRING", "links": []}],
             "widgets_values": ["gen4d/tiny", True, 0]},
            {"id": 5, "type": "PreviewImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 5}], "outputs": [], "widgets_values": []},
        ],
        "links": [[1, 1, 0, 2, 0, "GEN4D_CAMERAS"], [2, 2, 4, 3, 1, "GEN4D_SCENE"],
                  [3, 2, 4, 4, 0, "GEN4D_SCENE"], [4, 1, 0, 3, 0, "GEN4D_CAMERAS"], [5, 3, 0, 5, 0, "IMAGE"]],
    }


def execute(prompt: dict) -> dict:
    """Run an API-format prompt of pack nodes in dependency order (core nodes are skipped)."""
    results, pending = {}, {k: v for k, v in prompt.items() if v["class_type"] in NODES}
    while pending:
        ready = [k for k, v in pending.items()
                 if all(not isinstance(x, list) or x[0] in results for x in v["inputs"].values())]
        assert ready, f"cycle or missing node among {sorted(pending)}"
        for key in ready:
            node = pending.pop(key)
            cls = NODES[node["class_type"]]
            args = {n: results[x[0]][x[1]] if isinstance(x, list) else x for n, x in node["inputs"].items()}
            out = getattr(cls(), cls.FUNCTION)(**args)
            results[key] = out["result"] if isinstance(out, dict) else out
    return results


def test_tiny_workflow_checks_and_runs(folders):
    wf = tiny_workflow()
    assert check_workflow(wf, NODES) == []
    prompt = ui_to_api(wf, NODES)
    assert prompt["2"]["inputs"]["seed"] == 0 and "fixed" not in prompt["2"]["inputs"].values()
    assert prompt["3"]["inputs"]["scene"] == ["2", 4] and prompt["3"]["inputs"]["backend"] == "torch"
    results = execute(prompt)
    assert results["3"][0].shape == (2, 32, 32, 3)
    assert results["4"] == ("gen4d/tiny_00001.gen4d.safetensors",)
    assert (folders[0] / "gen4d/tiny_00001_ply/frame_00001.ply").is_file()


def test_tiny_workflow_broken_links_are_reported():
    relabelled = tiny_workflow()
    relabelled["links"][1][5] = "IMAGE"
    problems = check_workflow(relabelled, NODES)
    assert any("link 2" in p and "typed IMAGE" in p for p in problems), problems

    rewired = tiny_workflow()  # feed SyntheticWorld's images (IMAGE) into Render's scene input
    rewired["links"][1] = [2, 2, 0, 3, 1, "IMAGE"]
    rewired["nodes"][1]["outputs"][0]["links"] = [2]
    rewired["nodes"][1]["outputs"][4]["links"] = [3]
    problems = check_workflow(rewired, NODES)
    assert any("type mismatch" in p and "IMAGE" in p and "GEN4D_SCENE" in p for p in problems), problems

    bad_value = tiny_workflow()
    bad_value["nodes"][1]["widgets_values"][9] = "depth"  # not one of depth_mode's options
    assert any("depth_mode" in p for p in check_workflow(bad_value, NODES))
