# SPDX-License-Identifier: Apache-2.0
"""Posed-frame datasets (transforms*.json): the three layouts, the OpenGL -> OpenCV camera conversion, the
synthetic D-NeRF export round trip, every refused input, and the Gen4D_LoadPosedFrames node."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import gen4d
import numpy as np
import pytest
import torch
from gen4d import synthetic
from gen4d.core.formats import posed_frames
from gen4d.core.formats.posed_frames import (
    available_splits,
    find_datasets,
    opencv_to_opengl,
    opengl_to_opencv,
    read_posed_frames,
)
from gen4d.synthetic.export_posed import export_dnerf
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import run  # noqa: E402

NODE = "Gen4D_LoadPosedFrames"
IDENTITY = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 1.0]]


# --------------------------------------------------------------------------- helpers


def png(path: Path, width: int, height: int, rgba=None, mode: str = "RGBA") -> np.ndarray:
    """Write a PNG of random (or given) pixels; returns the uint8 array written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = len(mode)
    if rgba is None:
        shape = (height, width, channels) if channels > 1 else (height, width)
        rgba = np.random.default_rng(len(str(path))).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(rgba, mode).save(path)
    return rgba


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def tree(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def project(cameras, i: int, point) -> tuple[float, float, float]:
    """Pixel (u, v) and z-depth of a world point through camera i (OpenCV viewmat and K)."""
    p = cameras.viewmats[i].double() @ torch.tensor([*point, 1.0], dtype=torch.float64)
    uvw = cameras.Ks[i].double() @ p[:3]
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2]), float(p[2])


def dnerf_folder(root: Path, size=(8, 6)) -> Path:
    """A small D-NeRF dataset: 3 train, 1 val, 2 test frames, RGBA PNGs, camera_angle_x 0.8."""
    ds = root / "dnerf"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        frames = []
        for i in range(n):
            png(ds / split / f"r_{i:03d}.png", *size)
            c2w = [row[:] for row in IDENTITY]
            c2w[0][3] = 0.1 * i
            frames.append({"file_path": f"./{split}/r_{i:03d}", "rotation": 0.03, "time": i / max(n - 1, 1),
                           "transform_matrix": c2w})
        write_json(ds / f"transforms_{split}.json", {"camera_angle_x": 0.8, "frames": frames})
    return ds


# --------------------------------------------------------------------------- conventions


def test_opengl_camera_projects_known_points_to_hand_computed_pixels(tmp_path):
    """Two Blender/OpenGL cameras (x right, y up, looking down -z) written by hand; the loader's OpenCV cameras
    must project known points where a pinhole with that pose puts them (computed on paper below)."""
    ds = tmp_path / "ds"
    png(ds / "a.png", 64, 64)
    png(ds / "b.png", 64, 64)
    frames = [
        # Camera at (0, 0, 4), axes = world axes: it looks along -z at the origin, up = +y.
        {"file_path": "a.png", "transform_matrix": IDENTITY},
        # Camera at (4, 0, 0) looking at the origin with up = +z (Blender's up): its x axis is world +y,
        # its y (up) world +z, its z (back) world +x.
        {"file_path": "b.png", "transform_matrix": [[0.0, 0.0, 1.0, 4.0], [1.0, 0.0, 0.0, 0.0],
                                                    [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]},
    ]
    # camera_angle_x = 90 degrees at 64 pixels: f = 32 / tan(45 deg) = 32, principal point (32, 32).
    write_json(ds / "transforms.json", {"camera_angle_x": math.pi / 2, "frames": frames})
    cams = read_posed_frames(ds, "all").cameras
    # Camera a: point (1, 0.5, 0) is 4 ahead, 1 right and 0.5 up -> u = 32 + 32 * 1/4 = 40, v = 32 - 32 * 0.5/4 = 28.
    u, v, z = project(cams, 0, (1.0, 0.5, 0.0))
    assert (u, v, z) == pytest.approx((40.0, 28.0, 4.0), abs=1e-4)
    # Camera b: point (0, 1, 0.5) is 4 ahead, 1 to the camera's right (+y) and 0.5 up (+z) -> the same pixel.
    u, v, z = project(cams, 1, (0.0, 1.0, 0.5))
    assert (u, v, z) == pytest.approx((40.0, 28.0, 4.0), abs=1e-4)
    # The camera centres are where the files put them.
    assert torch.allclose(cams.centers, torch.tensor([[0.0, 0.0, 4.0], [4.0, 0.0, 0.0]]), atol=1e-5)
    # And the inverse conversion gives the file's matrices back.
    back = opencv_to_opengl(cams.viewmats)
    assert torch.allclose(back, torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float64), atol=1e-6)


def test_opengl_to_opencv_flips_camera_y_and_z():
    c2w = torch.eye(4, dtype=torch.float64)
    vm = opengl_to_opencv(c2w)
    assert torch.equal(vm, torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))


# --------------------------------------------------------------------------- synthetic export round trip


def test_synthetic_export_round_trips_cameras_and_images(tmp_path):
    world = synthetic.object_world(0)
    exported = export_dnerf(world, tmp_path / "pf", num_train=3, num_test=2, size=16, supersample=3, seed=3)
    assert sorted(available_splits(tmp_path / "pf")) == ["all", "test", "train"]
    assert find_datasets(tmp_path) == ["pf"]
    for split in ("train", "test"):
        want = exported[split]
        got = read_posed_frames(tmp_path / "pf", split)
        assert got.layout == "dnerf" and got.has_alpha
        cams = got.cameras
        assert (cams.width, cams.height, len(cams)) == (16, 16, len(want))
        assert torch.allclose(cams.centers, want.centers, atol=1e-5)
        assert torch.allclose(cams.viewmats[:, :3, :3], want.viewmats[:, :3, :3], atol=1e-6)
        assert torch.allclose(cams.viewmats, want.viewmats, atol=1e-5)
        assert torch.allclose(cams.Ks, want.Ks, atol=1e-4)
        assert torch.allclose(cams.times, want.times, atol=1e-7)
        # The files hold what the ray caster renders from those cameras, composited on any background
        # (a render on black is premultiplied: on background b it is that plus (1 - alpha) b).
        truth = synthetic.render(world, want, background=(0.0, 0.0, 0.0), supersample=3)
        for bg in ((1.0, 1.0, 1.0), (0.2, 0.4, 0.6)):
            got_bg = read_posed_frames(tmp_path / "pf", split, background=bg)
            expected = truth["rgb"] + (1.0 - truth["alpha"][..., None]) * torch.tensor(bg)
            assert (got_bg.images - expected).abs().max() <= 2.0 / 255
            assert (got_bg.masks - truth["alpha"]).abs().max() <= 0.5 / 255 + 1e-6
        assert 0.05 < got.masks.mean() < 0.95  # the object and empty background are both in view
    assert torch.equal(exported["train"].times, torch.linspace(0, 1, 3))
    assert not set(exported["test"].times.tolist()) & set(exported["train"].times.tolist())


# --------------------------------------------------------------------------- layouts


def test_dnerf_layout_splits_times_and_alpha(tmp_path):
    ds = dnerf_folder(tmp_path)
    assert available_splits(ds) == ["train", "val", "test", "all"]
    train = read_posed_frames(ds, "train")
    assert train.layout == "dnerf" and train.files == ("train/r_000.png", "train/r_001.png", "train/r_002.png")
    assert train.cameras.times.tolist() == pytest.approx([0.0, 0.5, 1.0])
    f = 0.5 * 8 / math.tan(0.4)
    assert torch.allclose(train.cameras.Ks[0], torch.tensor([[f, 0, 4.0], [0, f, 3.0], [0, 0, 1]]))
    everything = read_posed_frames(ds, "all")
    assert len(everything.cameras) == 6
    assert everything.files[3:] == ("val/r_000.png", "test/r_000.png", "test/r_001.png")
    # Alpha is the mask; the image is the straight colour composited on the background.
    raw = np.asarray(Image.open(ds / "train" / "r_001.png")).astype(np.float32) / 255.0
    alpha = torch.from_numpy(raw[..., 3])
    bg = torch.tensor([0.0, 1.0, 0.5])
    black = read_posed_frames(ds, "train", background=tuple(bg.tolist()))
    assert torch.allclose(black.masks[1], alpha, atol=1e-6)
    expected = torch.from_numpy(raw[..., :3]) * alpha[..., None] + (1 - alpha[..., None]) * bg
    assert torch.allclose(black.images[1], expected, atol=1e-5)


def test_nerfstudio_layout_with_per_frame_intrinsics_and_split_lists(tmp_path, caplog):
    ds = tmp_path / "capture"
    for i in range(3):
        png(ds / "images" / f"frame_{i:05d}.png", 10, 6, mode="RGB")
    frames = [{"file_path": f"images/frame_{i:05d}.png", "transform_matrix": IDENTITY} for i in range(3)]
    frames[2].update({"fl_x": 9.0, "fl_y": 11.0, "cx": 4.5, "cy": 2.5})
    write_json(ds / "transforms.json", {
        "camera_model": "OPENCV", "fl_x": 7.0, "fl_y": 8.0, "cx": 5.5, "cy": 3.25, "w": 10, "h": 6,
        "k1": 0.01, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames,
        "train_filenames": ["images/frame_00000.png", "./images/frame_00002.png"],
        "test_filenames": ["images/frame_00001.png"],
    })
    assert available_splits(ds) == ["train", "test", "all"]
    with caplog.at_level(logging.WARNING):
        got = read_posed_frames(ds, "all", undistort=False)
    assert "distortion" in caplog.text and "k1" in caplog.text and "undistort is off" in caplog.text
    assert got.layout == "nerfstudio" and not got.has_alpha and got.undistorted == 0
    assert got.masks.eq(1).all()
    assert got.cameras.Ks[0].tolist() == [[7.0, 0, 5.5], [0, 8.0, 3.25], [0, 0, 1]]
    assert got.cameras.Ks[2].tolist() == [[9.0, 0, 4.5], [0, 11.0, 2.5], [0, 0, 1]]
    assert got.cameras.times.tolist() == pytest.approx([0.0, 0.5, 1.0])  # no times: even spacing
    train = read_posed_frames(ds, "train", undistort=False)
    assert train.files == ("images/frame_00000.png", "images/frame_00002.png")
    assert read_posed_frames(ds, "test").files == ("images/frame_00001.png",)
    raw = np.asarray(Image.open(ds / "images" / "frame_00002.png")).astype(np.float32) / 255.0
    assert torch.allclose(train.images[1], torch.from_numpy(raw), atol=1e-6)
    # by default the lens is taken out: same cameras, resampled pixels
    undistorted = read_posed_frames(ds, "train")
    assert undistorted.undistorted == 2 and torch.equal(undistorted.cameras.Ks, train.cameras.Ks)
    assert not torch.allclose(undistorted.images[1], train.images[1], atol=1e-3)


@pytest.mark.parametrize("model,coefficients", [("OPENCV", {"k1": -0.3, "k2": 0.08, "p1": 0.003}),
                                                ("OPENCV_FISHEYE", {"k1": 0.05, "k2": -0.01})],
                         ids=["opencv", "fisheye"])
def test_frames_taken_through_a_lens_load_as_their_pinhole_images(tmp_path, model, coefficients):
    from test_lens import H, K, W, capture, pinhole_image

    ds = tmp_path / "capture"
    captured = (capture(model, coefficients).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    png(ds / "images" / "a.png", W, H, captured, mode="RGB")
    write_json(ds / "transforms.json", {
        "camera_model": model, "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
        "cy": float(K[1, 2]), "w": W, "h": H, **coefficients,
        "frames": [{"file_path": "images/a.png", "transform_matrix": IDENTITY}]})
    got = read_posed_frames(ds, downscale=2, background=(0.0, 0.0, 0.0))
    assert got.undistorted == 1
    assert torch.allclose(got.cameras.Ks[0], K.float() * torch.tensor([[0.5], [0.5], [1.0]]))
    truth = torch.nn.functional.avg_pool2d(pinhole_image().permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
    covered = got.masks[0] > 0.999
    assert covered.float().mean() > 0.9
    assert (got.images[0] - truth).abs().amax(-1)[covered].max() < 0.03
    raw = torch.nn.functional.avg_pool2d(torch.from_numpy(captured).float().div(255).permute(2, 0, 1)[None], 2)
    assert (raw[0].permute(1, 2, 0) - truth).abs().amax(-1)[covered].max() > 0.1  # the lens mattered
    if model == "OPENCV_FISHEYE":
        with pytest.raises(ValueError, match=r"transforms\.json: camera_model: a fisheye image cannot be used as a "
                                             "pinhole one; turn undistort on"):
            read_posed_frames(ds, undistort=False)


def test_each_frame_is_undistorted_with_its_own_intrinsics(tmp_path):
    from test_lens import H, K, W, capture, pinhole_image

    lens = {"k1": -0.25, "k2": 0.05}
    own = torch.tensor([[90.0, 0.0, 66.0], [0.0, 92.0, 46.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    ds = tmp_path / "capture"
    frames = []
    for i, k in enumerate((K, own, K)):  # two frames share the file's camera, one has its own
        image = (capture("OPENCV", lens, k).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        png(ds / "images" / f"{i}.png", W, H, image, mode="RGB")
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": IDENTITY})
    frames[1].update(fl_x=float(own[0, 0]), fl_y=float(own[1, 1]), cx=float(own[0, 2]), cy=float(own[1, 2]))
    write_json(ds / "transforms.json", {
        "camera_model": "OPENCV", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
        "cy": float(K[1, 2]), **lens, "frames": frames})
    got = read_posed_frames(ds)
    assert got.undistorted == 3
    for i, k in enumerate((K, own, K)):
        error = (got.images[i] - pinhole_image(k)).abs().amax(-1)[got.masks[i] > 0.999]
        assert error.max() < 0.02, (i, float(error.max()))


def test_a_capture_s_point_cloud_starts_the_fit_as_3dgs_does(fake_comfy):
    from gen4d.core.formats.ply import save_points_ply

    ds = fake_comfy.input / "capture"
    png(ds / "images" / "a.png", 10, 6, mode="RGB")
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)  # spacing 1
    points = np.concatenate([grid * 0.1, grid * 2.0 + 5.0]).astype(np.float32)  # a dense and a sparse block
    colors = rng.uniform(0, 1, points.shape).astype(np.float32)
    save_points_ply(points, colors, ds / "sparse_pc.ply")
    write_json(ds / "transforms.json", {"camera_model": "PINHOLE", "fl_x": 7.0, "w": 10, "h": 6,
                                        "ply_file_path": "sparse_pc.ply",
                                        "frames": [{"file_path": "images/a.png", "transform_matrix": IDENTITY}]})
    got = read_posed_frames(ds)
    assert torch.allclose(got.points, torch.from_numpy(points))
    assert torch.allclose(got.point_colors, torch.from_numpy(colors), atol=1 / 255)  # stored as uchar
    _, _, _, gaussians, _ = run(NODE, folder="capture")
    assert torch.allclose(gaussians.means, torch.from_numpy(points))
    scales = gaussians.scales
    assert torch.allclose(scales[:, 0], scales[:, 2])  # isotropic
    # a grid point's three nearest neighbours lie one spacing away: the scale is that spacing
    assert torch.allclose(scales[:64, 0], torch.full((64,), 0.1), rtol=1e-4)
    assert torch.allclose(scales[64:, 0], torch.full((64,), 2.0), rtol=1e-4)
    assert torch.allclose(gaussians.opacities, torch.full((128,), 0.1), atol=1e-6)
    assert torch.allclose(gaussians.colors, got.point_colors, atol=1e-5)
    # a named cloud that is missing or leaves the input folder is an error naming the field
    for name, message in (("gone.ply", "point cloud not found"), ("../../outside.ply", "outside the input folder")):
        _set_single(ds, name)
        with pytest.raises(ValueError, match=rf"transforms\.json: ply_file_path: .*{message}"):
            read_posed_frames(ds, root=fake_comfy.input)


def test_a_capture_without_split_lists_holds_frames_out_as_nerfstudio_does(tmp_path):
    """20 frames listed out of name order, no *_filenames: nerfstudio's default keeps ceil(0.9 * 20) = 18 of the
    frames sorted by name, at floor(i * 19 / 17) for i < 17 and the last (0..8, 10..17, 19), and holds out
    names 9 and 18 as val and test. Frames come in name order, and without times each frame's time is its place
    in the whole capture by name (nerfstudio and instant-ngp sort a transforms.json's frames by file name)."""
    ds = tmp_path / "capture"
    order = [7, 19, 3, 12, 0, 18, 5, 9, 14, 1, 16, 10, 4, 8, 13, 2, 17, 11, 6, 15]  # listing order of frame names
    frames = []
    for k in order:
        png(ds / "images" / f"frame_{k:05d}.png", 4, 3, mode="RGB")
        c2w = [row[:] for row in IDENTITY]
        c2w[0][3] = float(k)  # the camera says which frame it is
        frames.append({"file_path": f"images/frame_{k:05d}.png", "transform_matrix": c2w})
    write_json(ds / "transforms.json", {"camera_model": "PINHOLE", "fl_x": 3.0, "w": 4, "h": 3, "frames": frames})
    assert available_splits(ds) == ["train", "val", "test", "all"]
    names = lambda got: sorted(int(f[-9:-4]) for f in got.files)  # noqa: E731
    train, test, val = (read_posed_frames(ds, s) for s in ("train", "test", "val"))
    assert names(train) == [*range(9), *range(10, 18), 19]
    assert names(test) == names(val) == [9, 18]
    for got in (train, test):
        assert [int(f[-9:-4]) for f in got.files] == names(got), "frames in name order"
        for f, t, x in zip(got.files, got.cameras.times.tolist(), got.cameras.centers[:, 0].tolist()):
            k = int(f[-9:-4])
            assert t == pytest.approx(k / 19) and x == pytest.approx(k)
    assert len(read_posed_frames(ds, "all").files) == 20
    # fewer than 10 frames hold none out
    write_json(ds / "transforms.json", {"camera_model": "PINHOLE", "fl_x": 3.0, "w": 4, "h": 3, "frames": frames[:9]})
    assert available_splits(ds) == ["train", "all"]
    assert len(read_posed_frames(ds, "train").files) == 9
    with pytest.raises(ValueError, match=r"split 'test' is not available .* it offers \['train', 'all'\]"):
        read_posed_frames(ds, "test")


def test_nerfstudio_masks_and_uncovered_lens_pixels_become_pixels_to_ignore(tmp_path, caplog):
    """mask_path's 0 marks pixels to leave out of training and any other value keeps them, as nerfstudio reads
    it (a 0/1 label image means what a 0/255 one does); frames without a mask ignore nothing, a downscale
    averages it, and an undistorted frame also ignores what its pinhole sees past the capture's edge (which is
    transparent too)."""
    from test_lens import H, K, W, capture

    ds = tmp_path / "capture"
    keep = np.full((6, 10), 255, np.uint8)
    keep[1:5, 2:6] = 0  # a passer-by
    keep[0, 9] = 128
    png(ds / "images" / "a.png", 10, 6, mode="RGB")
    png(ds / "images" / "b.png", 10, 6, mode="RGB")
    png(ds / "masks" / "a.png", 10, 6, keep, mode="L")
    png(ds / "masks" / "b.png", 10, 6, np.dstack([keep[::-1]] * 3), mode="RGB")  # 3 channels: the first counts
    png(ds / "masks" / "c.png", 10, 6, (keep > 0).astype(np.uint8), mode="L")  # a label image: 0 and 1
    frames = [{"file_path": "images/a.png", "mask_path": "masks/a.png", "transform_matrix": IDENTITY},
              {"file_path": "images/b.png", "transform_matrix": IDENTITY, "depth_file_path": "depth/b.png"},
              {"file_path": "images/b.png", "mask_path": "masks/b.png", "transform_matrix": IDENTITY},
              {"file_path": "images/b.png", "mask_path": "masks/c.png", "transform_matrix": IDENTITY}]
    write_json(ds / "transforms.json", {"camera_model": "PINHOLE", "fl_x": 7.0, "w": 10, "h": 6, "frames": frames})
    with caplog.at_level(logging.INFO):
        got = read_posed_frames(ds, "all")
    assert "1 of 4 frames name a depth map (depth_file_path)" in caplog.text, "what is not used is said"
    expected = torch.from_numpy(keep == 0).float()
    assert expected.sum() == 16 and expected[0, 9] == 0, "128 keeps its pixel"
    assert torch.equal(got.ignore[0], expected)
    assert got.ignore[1].eq(0).all()
    assert torch.equal(got.ignore[2], expected.flip(0))
    assert torch.equal(got.ignore[3], expected), "a 0/1 label mask keeps its 1s"
    assert got.masks.eq(1).all(), "the mask marks pixels to ignore, not the subject's alpha"
    half = read_posed_frames(ds, downscale=2)
    assert torch.allclose(half.ignore[0], torch.nn.functional.avg_pool2d(expected[None, None], 2)[0, 0], atol=1e-6)
    (ds / "transforms.json").write_text(json.dumps({"camera_model": "PINHOLE", "fl_x": 7.0, "w": 10, "h": 6,
                                                    "frames": frames[1:2]}))
    assert read_posed_frames(ds).ignore is None, "no mask and no lens: nothing is tracked"

    lens = tmp_path / "lens"
    captured = (capture("OPENCV", {"k1": 0.3}).clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # pincushion
    png(lens / "a.png", W, H, captured, mode="RGB")
    write_json(lens / "transforms.json", {
        "camera_model": "OPENCV", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
        "cy": float(K[1, 2]), "w": W, "h": H, "k1": 0.3,
        "frames": [{"file_path": "a.png", "transform_matrix": IDENTITY}]})
    got = read_posed_frames(lens)
    uncovered, covered = got.masks[0] < 1e-3, got.masks[0] > 0.999
    assert uncovered.any() and covered.float().mean() > 0.5, "a pincushion capture leaves the corners uncovered"
    assert got.ignore[0][uncovered].min() > 0.999 and got.ignore[0][covered].max() < 1e-3
    torch.testing.assert_close(got.ignore[0], 1.0 - got.masks[0], rtol=0, atol=1e-5)  # opaque capture


def _set_single(ds: Path, ply: str) -> None:
    data = json.loads((ds / "transforms.json").read_text())
    data["ply_file_path"] = ply
    write_json(ds / "transforms.json", data)


def test_instant_ngp_layout_angles_and_ignored_fields(tmp_path):
    ds = tmp_path / "ngp"
    for i in range(2):
        png(ds / "images" / f"{i}.png", 8, 6, mode="RGB")
    frames = [{"file_path": f"./images/{i}.png", "sharpness": 30.0, "transform_matrix": IDENTITY} for i in range(2)]
    write_json(ds / "transforms.json", {"camera_angle_x": 1.0, "camera_angle_y": 0.7, "aabb_scale": 16,
                                        "scale": 0.33, "offset": [0.5, 0.5, 0.5], "frames": frames})
    got = read_posed_frames(ds)
    assert got.layout == "instant-ngp"
    fx, fy = 4.0 / math.tan(0.5), 3.0 / math.tan(0.35)
    assert torch.allclose(got.cameras.Ks[1], torch.tensor([[fx, 0, 4.0], [0, fy, 3.0], [0, 0, 1]]))
    assert torch.allclose(got.cameras.centers, torch.tensor([[0.0, 0.0, 4.0]] * 2))


def test_downscale_area_averages_and_scales_intrinsics(tmp_path):
    ds = dnerf_folder(tmp_path, size=(8, 6))
    full = read_posed_frames(ds, "train", background=(0.0, 0.0, 0.0))
    half = read_posed_frames(ds, "train", background=(0.0, 0.0, 0.0), downscale=2)
    assert half.images.shape == (3, 3, 4, 3) and (half.cameras.width, half.cameras.height) == (4, 3)
    pooled = torch.nn.functional.avg_pool2d(full.images.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert torch.allclose(half.images, pooled, atol=1e-6)  # on black, the composite is premultiplied: linear
    assert torch.allclose(half.masks, torch.nn.functional.avg_pool2d(full.masks[:, None], 2)[:, 0], atol=1e-6)
    assert torch.allclose(half.cameras.Ks[:, :2], full.cameras.Ks[:, :2] / 2)


# --------------------------------------------------------------------------- refused input


def _huge_png(path: Path, width: int, height: int) -> None:
    """A 1x1 PNG whose header claims ``width x height`` (CRC fixed so the header parses)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _edit(name, fn):
    return pytest.param(fn, id=name)


def _frames(ds, split="train"):
    path = ds / f"transforms_{split}.json"
    return path, json.loads(path.read_text())


def _set(ds, edit, split="train"):
    path, data = _frames(ds, split)
    edit(data)
    path.write_text(json.dumps(data))


def _outside_image(ds):
    png(ds.parent.parent / "outside.png", 8, 6)
    _set(ds, lambda d: d["frames"][1].update(file_path="../../outside.png"))


def _symlink_out(ds):
    png(ds.parent.parent / "elsewhere" / "r_009.png", 8, 6)
    try:
        (ds / "train" / "r_009.png").symlink_to(ds.parent.parent / "elsewhere" / "r_009.png")
    except OSError:
        pytest.skip("cannot create symlinks here")
    _set(ds, lambda d: d["frames"][2].update(file_path="./train/r_009"))


BAD = [
    ("missing image", lambda ds: _set(ds, lambda d: d["frames"][1].update(file_path="./train/nothing")),
     r"transforms_train\.json: frames\[1\]\.file_path: image not found"),
    ("inconsistent sizes", lambda ds: png(ds / "train" / "r_002.png", 9, 6),
     r"transforms_train\.json: frames\[2\]\.file_path: .*9x6 .*8x6; all images must share one size"),
    ("declared size differs", lambda ds: _set(ds, lambda d: d.update(w=10**9, h=10**9)),
     r"transforms_train\.json: w: says 1e\+09 but the image .* is 8x6"),
    ("non-finite matrix", lambda ds: _set(ds, lambda d: d["frames"][0]["transform_matrix"][1].__setitem__(3, math.nan)),
     r"transforms_train\.json: frames\[0\]\.transform_matrix: holds non-finite"),
    ("infinite matrix", lambda ds: _set(ds, lambda d: d["frames"][2]["transform_matrix"][0].__setitem__(0, math.inf)),
     r"transforms_train\.json: frames\[2\]\.transform_matrix: holds non-finite"),
    ("matrix shape", lambda ds: _set(ds, lambda d: d["frames"][1].update(transform_matrix=[[1, 0, 0], [0, 1, 0]])),
     r"transforms_train\.json: frames\[1\]\.transform_matrix: must be a 4x4"),
    ("scaled matrix", lambda ds: _set(ds, lambda d: d["frames"][1].update(
        transform_matrix=[[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 4], [0, 0, 0, 1]])),
     r"transforms_train\.json: frames\[1\]\.transform_matrix: rotation part is not a rotation"),
    ("unknown camera model", lambda ds: _set(ds, lambda d: d.update(camera_model="FOV")),
     r"transforms_train\.json: camera_model: camera model 'FOV' is not supported"),
    ("instant-ngp fisheye", lambda ds: _set(ds, lambda d: d.update(is_fisheye=True)),
     r"transforms_train\.json: is_fisheye: instant-ngp's fisheye cameras are not supported"),
    ("coefficient the lens lacks", lambda ds: _set(ds, lambda d: d.update(camera_model="OPENCV_FISHEYE", p2=0.1)),
     r"transforms_train\.json: p2: OPENCV_FISHEYE has no coefficient p2"),
    ("non-finite coefficient", lambda ds: _set(ds, lambda d: d["frames"][1].update(camera_model="OPENCV",
                                                                                   k1=math.inf)),
     r"transforms_train\.json: frames\[1\]\.k1: must be a finite number"),
    ("per-frame camera model", lambda ds: _set(ds, lambda d: d["frames"][1].update(camera_model="EQUIRECTANGULAR")),
     r"transforms_train\.json: frames\[1\]\.camera_model: camera model 'EQUIRECTANGULAR'"),
    ("missing frames", lambda ds: _set(ds, lambda d: d.pop("frames")),
     r"transforms_train\.json: frames: missing"),
    ("missing matrix", lambda ds: _set(ds, lambda d: d["frames"][0].pop("transform_matrix")),
     r"transforms_train\.json: frames\[0\]\.transform_matrix: missing"),
    ("missing file_path", lambda ds: _set(ds, lambda d: d["frames"][2].pop("file_path")),
     r"transforms_train\.json: frames\[2\]\.file_path: missing"),
    ("missing intrinsics", lambda ds: _set(ds, lambda d: d.pop("camera_angle_x")),
     r"transforms_train\.json: frames\[0\]: fl_x / camera_angle_x: missing"),
    ("bad focal", lambda ds: _set(ds, lambda d: d.update(camera_angle_x="wide")),
     r"transforms_train\.json: camera_angle_x: must be a finite number"),
    ("partial times", lambda ds: _set(ds, lambda d: d["frames"][1].pop("time")),
     r"transforms_train\.json: frames\[1\]\.time: missing while other frames have a time"),
    ("time out of range", lambda ds: _set(ds, lambda d: d["frames"][2].update(time=7)),
     r"transforms_train\.json: frames\[2\]\.time: must lie in \[0, 1\]"),
    ("path leaves the input folder", _outside_image,
     r"transforms_train\.json: frames\[1\]\.file_path: '\.\./\.\./outside\.png' resolves to .*outside the input"),
    ("absolute path", lambda ds: _set(ds, lambda d: d["frames"][0].update(file_path=str(ds / "train" / "r_000.png"))),
     r"transforms_train\.json: frames\[0\]\.file_path: must be relative to the input folder; absolute path"),
    ("symlink out", _symlink_out,
     r"transforms_train\.json: frames\[2\]\.file_path: '\./train/r_009' resolves to .*outside the input folder"),
    ("missing mask", lambda ds: _set(ds, lambda d: d["frames"][1].update(mask_path="./train/nothing.png")),
     r"transforms_train\.json: frames\[1\]\.mask_path: mask not found"),
    ("mask of another size", lambda ds: (png(ds / "masks" / "m.png", 5, 4, mode="L"),
                                         _set(ds, lambda d: d["frames"][0].update(mask_path="masks/m.png"))),
     r"transforms_train\.json: frames\[0\]\.mask_path: dnerf/masks/m\.png is 5x4 but its image .* is 8x6"),
    ("mask not a name", lambda ds: _set(ds, lambda d: d["frames"][2].update(mask_path=3)),
     r"transforms_train\.json: frames\[2\]\.mask_path: must name an image file, got 3"),
    ("mask not an image", lambda ds: ((ds / "m.png").write_text("hello"),
                                      _set(ds, lambda d: d["frames"][1].update(mask_path="m.png"))),
     r"transforms_train\.json: frames\[1\]\.mask_path: dnerf/m\.png is not a readable image"),
    ("mask leaves the input folder", lambda ds: (png(ds.parent.parent / "outside.png", 8, 6, mode="L"),
                                                 _set(ds, lambda d: d["frames"][1].update(
                                                     mask_path="../../outside.png"))),
     r"transforms_train\.json: frames\[1\]\.mask_path: '\.\./\.\./outside\.png' resolves to .*outside the input"),
    ("not json", lambda ds: (ds / "transforms_train.json").write_text("{'frames': "),
     r"transforms_train\.json: \(file\): is not valid UTF-8 JSON"),
    ("not an image", lambda ds: (ds / "train" / "r_001.png").write_text("hello"),
     r"transforms_train\.json: frames\[1\]\.file_path: dnerf/train/r_001\.png is not a readable image"),
    ("huge header", lambda ds: _huge_png(ds / "train" / "r_001.png", 12000, 12000),
     r"transforms_train\.json: frames\[1\]\.file_path: dnerf/train/r_001\.png claims 12000x12000 pixels"),
    ("huge header past PIL's limit", lambda ds: _huge_png(ds / "train" / "r_001.png", 100000, 100000),
     r"transforms_train\.json: frames\[1\]\.file_path: dnerf/train/r_001\.png claims too many pixels"),
]


@pytest.mark.parametrize("edit, message", [pytest.param(e, m, id=n) for n, e, m in BAD])
def test_bad_input_names_file_and_field_and_writes_nothing(tmp_path, edit, message):
    root = tmp_path / "input"
    ds = dnerf_folder(root)
    edit(ds)
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        read_posed_frames(ds, "train", root=root, who="Gen4D_LoadPosedFrames")
    assert tree(tmp_path) == before


def test_images_decode_in_threads_as_in_one_with_progress_in_frame_order(tmp_path):
    ds = tmp_path / "many"
    frames = []
    for i in range(7):
        png(ds / f"f_{i}.png", 40, 30)
        c2w = [row[:] for row in IDENTITY]
        c2w[0][3] = 0.1 * i
        frames.append({"file_path": f"f_{i}.png", "transform_matrix": c2w})
    write_json(ds / "transforms.json", {"camera_angle_x": 0.9, "frames": frames})
    one = read_posed_frames(ds, "all", downscale=2, workers=1)
    seen = []
    many = read_posed_frames(ds, "all", downscale=2, workers=4, callback=lambda done, total: seen.append((done, total)))
    assert torch.equal(many.images, one.images) and torch.equal(many.masks, one.masks)
    assert seen == [(k, 7) for k in range(1, 8)]
    assert one.images.std() > 0.1  # random pixels, not an empty buffer

    def interrupt(done, total):
        if done == 2:
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        read_posed_frames(ds, "all", workers=4, callback=interrupt)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            read_posed_frames(ds, "all", workers=bad)


def test_a_truncated_image_is_named_by_the_first_bad_frame_whatever_thread_decodes_it(tmp_path):
    ds = dnerf_folder(tmp_path, size=(64, 48))
    for name in ("r_001.png", "r_002.png"):  # the header reads, the pixel data ends early
        path = ds / "train" / name
        path.write_bytes(path.read_bytes()[:120])
    with pytest.raises(ValueError, match=r"frames\[1\]\.file_path: dnerf/train/r_001\.png could not be decoded"):
        read_posed_frames(ds, "train", root=tmp_path, workers=3)


def test_bad_splits_and_result_size(tmp_path, monkeypatch):
    ds = tmp_path / "single"
    png(ds / "a.png", 8, 6)
    write_json(ds / "transforms.json", {"camera_angle_x": 1.0, "frames": [{"file_path": "a.png",
                                                                          "transform_matrix": IDENTITY}]})
    assert available_splits(ds) == ["train", "all"]
    with pytest.raises(ValueError, match=r"split 'test' is not available .* offers \['train', 'all'\]"):
        read_posed_frames(ds, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        read_posed_frames(ds, "everything")
    with pytest.raises(ValueError, match=r"need 0\.00 GiB as float32, over the limit"):
        read_posed_frames(ds, "all", max_bytes=100)
    with pytest.raises(ValueError, match="downscale 9 is larger than the images"):
        read_posed_frames(ds, "all", downscale=9)
    monkeypatch.setattr(posed_frames, "MAX_JSON_BYTES", 64)  # a transforms file is read only below the limit
    with pytest.raises(ValueError, match=r"transforms\.json: \(file\): is \d+ bytes; transforms files over 64"):
        read_posed_frames(ds, "all")


# --------------------------------------------------------------------------- the node


@pytest.fixture
def input_dir(tmp_path, monkeypatch):
    folder = tmp_path / "input"
    folder.mkdir()
    monkeypatch.setenv("GEN4D_INPUT_DIR", str(folder))
    monkeypatch.setenv("GEN4D_OUTPUT_DIR", str(tmp_path / "output"))
    return folder


def test_node_lists_loads_and_confines_datasets(input_dir, tmp_path):
    cls = gen4d.NODE_CLASS_MAPPINGS[NODE]
    assert cls.INPUT_TYPES()["required"]["folder"][0] == ["(no datasets found)"]
    exported = export_dnerf(synthetic.object_world(1), input_dir / "scenes" / "toy", num_train=3, num_test=1,
                            size=12, supersample=1)
    dnerf_folder(input_dir)
    assert cls.INPUT_TYPES()["required"]["folder"][0] == ["dnerf", "scenes/toy"]
    images, masks, cameras, points, ignore = run(NODE, folder="scenes/toy")
    assert images.shape == (3, 12, 12, 3) and masks.shape == (3, 12, 12) and points is None
    assert ignore.shape == (1, 12, 12) and ignore.eq(0).all(), "nothing to ignore: one empty mask"
    assert torch.allclose(cameras.viewmats, exported["train"].viewmats, atol=1e-5)
    images, masks, cameras, *_ = run(NODE, folder="dnerf", path="scenes\\toy", split="test", downscale=2,
                                    background="#000000")
    assert images.shape == (1, 6, 6, 3) and cameras.width == 6
    assert cls.VALIDATE_INPUTS(folder="dnerf", path="", background="#ffffff") is True

    outside = tmp_path / "outside"
    dnerf_folder(outside)
    try:
        (input_dir / "link").symlink_to(outside / "dnerf", target_is_directory=True)
        links = ["link"]
    except OSError:
        links = []
    assert "link" not in cls.INPUT_TYPES()["required"]["folder"][0]  # symlinked folders are not walked
    before = tree(tmp_path)
    for bad, message in [("../outside/dnerf", "'..'"), (str(outside / "dnerf"), "absolute path"),
                         ("missing", "does not exist"), ("scenes", "holds no transforms.json"),
                         *[(link, "outside the input folder") for link in links]]:
        text = cls.VALIDATE_INPUTS(folder="dnerf", path=bad, background="#ffffff")
        assert isinstance(text, str) and NODE in text and message in text, (bad, text)
        with pytest.raises(ValueError, match=NODE):
            run(NODE, folder="dnerf", path=bad)
    with pytest.raises(ValueError, match="no dataset picked"):
        run(NODE, folder="(no datasets found)")
    assert "expected '#rrggbb'" in cls.VALIDATE_INPUTS(folder="dnerf", path="", background="nope")
    assert tree(tmp_path) == before


def test_node_reports_each_image_and_stops_on_interrupt(fake_comfy):
    dnerf_folder(fake_comfy.input)
    cls = gen4d.NODE_CLASS_MAPPINGS[NODE]
    images, *_ = cls().load(folder="dnerf", path="", split="train", downscale=1, background="#ffffff")
    assert len(images) == 3 and [u[:2] for u in fake_comfy.updates] == [(1, 3), (2, 3), (3, 3)]
    fake_comfy.updates.clear()
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        cls().load(folder="dnerf", path="", split="train", downscale=1, background="#ffffff")
    assert len(fake_comfy.updates) == 1, "the node kept reading after the interrupt"


def test_node_is_changed_follows_the_files(input_dir):
    cls = gen4d.NODE_CLASS_MAPPINGS[NODE]
    ds = dnerf_folder(input_dir)
    first = cls.IS_CHANGED(folder="dnerf", path="")
    assert cls.IS_CHANGED(folder="dnerf", path="") == first
    image = ds / "train" / "r_001.png"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cls.IS_CHANGED(folder="dnerf", path="") != first
    assert math.isnan(cls.IS_CHANGED(folder="dnerf", path="../x"))


def _capture_json(ds: Path, count: int = 4, **top) -> list[str]:
    """``count`` 4x3 opaque frames named frame_<k> (unpadded) under ds/images and a transforms.json listing them
    in reverse; the camera's x position is k. Returns the file paths."""
    names = [f"images/frame_{k}.png" for k in range(count)]
    frames = []
    for k, name in reversed(list(enumerate(names))):
        png(ds / name, 4, 3, mode="RGB")
        c2w = [row[:] for row in IDENTITY]
        c2w[0][3] = float(k)
        frames.append({"file_path": name, "transform_matrix": c2w})
    write_json(ds / "transforms.json", {"fl_x": 3.0, "w": 4, "h": 3, "frames": frames, **top})
    return names


def test_frames_of_a_capture_come_in_natural_name_order_with_times_to_match(tmp_path):
    """A transforms.json listing frame_11 .. frame_0: the frames come sorted as instant-ngp and nerfstudio sort
    them (frame_2 before frame_10), and evenly spaced times follow that order, not the listing's."""
    ds = tmp_path / "capture"
    names = _capture_json(ds, 12)
    got = read_posed_frames(ds, "all")
    assert list(got.files) == names
    assert torch.allclose(got.cameras.centers[:, 0], torch.arange(12.0).double().float(), atol=1e-5)
    assert torch.allclose(got.cameras.times, torch.arange(12.0) / 11)


def test_split_lists_hold_their_frames_out_of_training_and_must_name_frames(tmp_path):
    """With test_filenames alone, train is every frame the list leaves out (nothing held out leaks into
    training); a list naming a file no frame has is an error naming the list."""
    ds = tmp_path / "capture"
    names = _capture_json(ds, 4, camera_model="PINHOLE")
    data = json.loads((ds / "transforms.json").read_text())
    write_json(ds / "transforms.json", {**data, "test_filenames": [names[1]]})
    assert available_splits(ds) == ["train", "test", "all"]
    assert list(read_posed_frames(ds, "train").files) == [names[0], names[2], names[3]]
    assert list(read_posed_frames(ds, "test").files) == [names[1]]
    write_json(ds / "transforms.json", {**data, "test_filenames": names})
    with pytest.raises(ValueError, match=r"transforms\.json: train_filenames: .*nothing is left to train on"):
        read_posed_frames(ds, "train")
    write_json(ds / "transforms.json", {**data, "train_filenames": names[:3], "test_filenames": ["images/gone.png"]})
    with pytest.raises(ValueError, match=r"test_filenames: names 1 file\(s\) no frame has.*gone\.png"):
        read_posed_frames(ds, "train")


@pytest.mark.parametrize("model, fields", [
    ("OPENCV", {"distortion_params": [-0.25, 0.05, 0.0, 0.0, 0.001, -0.002]}),  # nerfstudio's list form
    ("PINHOLE", {"k1": -0.25, "k2": 0.05, "p1": 0.001, "p2": -0.002}),  # COLMAP pinhole with coefficients
    ("SIMPLE_RADIAL", {"k1": -0.25, "k2": 0.05, "p1": 0.001, "p2": -0.002}),
])
def test_every_way_of_giving_a_perspective_lens_undistorts_the_same(tmp_path, model, fields):
    """nerfstudio reads the coefficients as a distortion_params list or by name, and applies them to every
    perspective model (PINHOLE, SIMPLE_RADIAL, ... as OPENCV): each spelling gives the image the named OPENCV
    coefficients give, which is not the captured image."""
    from test_lens import H, K, W, capture

    captured = (capture("OPENCV", {"k1": -0.25, "k2": 0.05, "p1": 0.001, "p2": -0.002}).clamp(0, 1) * 255)
    intrinsics = {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
                  "w": W, "h": H}
    results = {}
    for name, lens in (("named", {"camera_model": "OPENCV", "k1": -0.25, "k2": 0.05, "p1": 0.001, "p2": -0.002}),
                       ("given", {"camera_model": model, **fields})):
        ds = tmp_path / name
        png(ds / "a.png", W, H, captured.round().to(torch.uint8).numpy(), mode="RGB")
        write_json(ds / "transforms.json", {**intrinsics, **lens,
                                            "frames": [{"file_path": "a.png", "transform_matrix": IDENTITY}]})
        results[name] = read_posed_frames(ds)
    assert results["given"].undistorted == 1
    torch.testing.assert_close(results["given"].images, results["named"].images, rtol=0, atol=1e-6)
    assert (results["given"].images[0] - captured / 255).abs().mean() > 0.01, "the lens was undone"


def test_instant_ngp_dynamic_masks_mark_pixels_to_ignore(tmp_path):
    """colmap2nerf's --mask_categories writes images/dynamic_mask_<name>.png beside each image; instant-ngp
    leaves out of training the pixels where it is not 0 (any of red, green, blue)."""
    ds = tmp_path / "capture"
    names = _capture_json(ds, 2, aabb_scale=16)
    marked = np.zeros((3, 4, 3), np.uint8)
    marked[1, 2] = (0, 0, 9)
    marked[0, 0] = (255, 255, 255)
    png(ds / "images" / "dynamic_mask_frame_1.png", 4, 3, marked, mode="RGB")
    got = read_posed_frames(ds, "all")
    assert got.layout == "instant-ngp" and list(got.files) == names
    assert got.ignore[0].eq(0).all(), "frame_0 has no dynamic mask"
    expected = torch.zeros(3, 4)
    expected[1, 2] = expected[0, 0] = 1.0
    assert torch.equal(got.ignore[1], expected)
    png(ds / "images" / "dynamic_mask_frame_0.png", 5, 3, mode="RGB")
    with pytest.raises(ValueError, match=r"frames\[1\]\.file_path \(its dynamic_mask_<name>\.png\).* is 5x3"):
        read_posed_frames(ds, "all")


def test_instant_ngp_fields_of_view_in_degrees(tmp_path):
    """instant-ngp also takes the field of view in degrees (x_fov, y_fov): 90 degrees across 8 pixels is f = 4."""
    ds = tmp_path / "ngp"
    png(ds / "a.png", 8, 6, mode="RGB")
    write_json(ds / "transforms.json", {"x_fov": 90.0, "aabb_scale": 4,
                                        "frames": [{"file_path": "a.png", "transform_matrix": IDENTITY}]})
    K = read_posed_frames(ds).cameras.Ks[0]
    assert float(K[0, 0]) == pytest.approx(4.0) and float(K[1, 1]) == pytest.approx(4.0)
    write_json(ds / "transforms.json", {"x_fov": 180.0, "frames": [{"file_path": "a.png",
                                                                      "transform_matrix": IDENTITY}]})
    with pytest.raises(ValueError, match=r"x_fov: field of view must lie in \(0, 180\) degrees"):
        read_posed_frames(ds)
