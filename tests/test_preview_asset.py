# SPDX-License-Identifier: Apache-2.0
"""The .g4d preview asset (core/formats/preview_asset.py) and the Gen4D_Preview4D node."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart
from gen4d.core.formats import preview_asset as pa
from gen4d.nodes import NODE_CLASS_MAPPINGS
from gen4d.nodes.preview import SUBFOLDER


def _moving_scene(n: int = 300, frames: int = 6) -> Scene4D:
    g = torch.Generator().manual_seed(1)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    colors = torch.rand(n, 3, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.05 + 0.005
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    quats = torch.randn(n, 4, generator=g)
    base = Gaussians.from_colors(means, colors, scales, opac, quats)
    shift = torch.linspace(0, 1, frames)[:, None, None] * torch.tensor([0.5, 0.0, 0.2])
    motion = KeyframeMotion(means[None] + shift)
    return Scene4D(parts=[ScenePart("obj", base, motion)], num_frames=frames, fps=12.0)


def test_round_trip_within_quantisation_error():
    scene = _moving_scene()
    data = pa.encode_scene(scene)
    asset = pa.decode_asset(data)
    assert asset.num_frames == 6 and asset.num_splats == 300
    assert asset.header["fps"] == 12.0 and asset.header["version"] == pa.VERSION
    frames = scene.bake()
    truth = torch.stack([f.means for f in frames]).numpy()
    lo, hi = np.asarray(asset.header["bounds"])
    assert np.all(np.abs(asset.positions - truth) <= (hi - lo) / 131070 + 1e-6)
    g0 = frames[0]
    assert np.abs(asset.colors - g0.colors.clamp(0, 1).numpy()).max() <= 0.5 / 255 + 1e-6
    assert np.abs(asset.opacities - g0.opacities.numpy()).max() <= 0.5 / 255 + 1e-6
    assert np.allclose(asset.scales, g0.scales.numpy(), rtol=1e-3)
    dots = np.abs((asset.rotations * g0.rotations.numpy()).sum(-1))
    assert dots.min() > 0.995
    # blocks are aligned for typed-array views in the browser
    assert all(b["offset"] % 8 == 0 for b in asset.header["layout"])


def test_subsampling_cap_is_deterministic_and_keeps_important_splats():
    scene = _moving_scene(n=500, frames=3)
    a = pa.decode_asset(pa.encode_scene(scene, max_splats=100))
    b = pa.decode_asset(pa.encode_scene(scene, max_splats=100))
    assert a.num_splats == 100
    assert np.array_equal(a.positions, b.positions)
    g0 = scene.at(0.0)
    index = pa.select_splats(g0, 100)
    score = pa.importance(g0)
    kept = torch.zeros(500, dtype=torch.bool)
    kept[index] = True
    assert score[kept].min() >= score[~kept].max()
    assert torch.equal(index, torch.sort(index).values)
    with pytest.raises(ValueError):
        pa.select_splats(g0, 0)


def test_static_frame_count_override_and_tracks():
    scene = _moving_scene(n=50, frames=4)
    assert pa.decode_asset(pa.encode_scene(scene, num_frames=9)).num_frames == 9
    pts = torch.rand(5, 8, 10, 3)
    asset = pa.decode_asset(pa.encode_tracks(pts, torch.rand(8, 10, 3), fps=10.0, max_splats=30))
    assert asset.num_frames == 5 and asset.num_splats == 30


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:6], "truncated"),
    (lambda d: d[: len(d) // 2], "truncated"),
    (lambda d: d[:4] + struct.pack("<I", 10 ** 8) + d[8:], "truncated header"),
    (lambda d: d[:8] + b"}" + d[9:], "JSON"),
    (lambda d: b"", "truncated"),
])
def test_corrupt_assets_raise_value_error(mutate, message):
    data = pa.encode_scene(_moving_scene(n=40, frames=2))
    with pytest.raises(ValueError, match=message):
        pa.decode_asset(mutate(data))


def test_node_writes_asset_under_temp_only(fake_comfy):
    node = NODE_CLASS_MAPPINGS["Gen4D_Preview4D"]()
    out = node.preview(max_splats=120, num_frames=0, scene=_moving_scene())
    entries = out["ui"]["gen4d_preview"]
    assert len(entries) == 1
    entry = entries[0]
    assert set(entry) == {"filename", "subfolder", "type"}
    assert entry["type"] == "temp" and entry["subfolder"] == SUBFOLDER
    assert "/" not in entry["filename"] and entry["filename"].endswith(pa.SUFFIX)
    path = fake_comfy.temp / entry["subfolder"] / entry["filename"]
    asset = pa.decode_asset(path.read_bytes())
    assert asset.num_splats == 120 and asset.num_frames == 6
    # atomic: no temp leftovers; nothing written to output or input
    assert [p.name for p in path.parent.iterdir()] == [entry["filename"]]
    assert not any(fake_comfy.output.rglob("*")) and not any(fake_comfy.input.rglob("*"))
    # a second run writes a new file (ComfyUI's cached preview keeps pointing at its own file)
    again = node.preview(max_splats=120, num_frames=0, gaussians=_moving_scene().at(0.0))
    assert again["ui"]["gen4d_preview"][0]["filename"] != entry["filename"]


def test_viewer_starts_at_the_recorded_camera_on_the_node_background(fake_comfy):
    from gen4d.core.coco4d.reference import seen_view_cameras

    plain = _moving_scene()
    cams = seen_view_cameras(6, 64, 48, radius=3.0, fovy_deg=40.0)
    part = plain.parts[0]
    recorded = Scene4D([ScenePart(part.name, part.gaussians, part.motion, reference_cameras=cams)], 6, 12.0)
    node = NODE_CLASS_MAPPINGS["Gen4D_Preview4D"]()

    def header(out):
        entry = out["ui"]["gen4d_preview"][0]
        return pa.decode_asset((fake_comfy.temp / entry["subfolder"] / entry["filename"]).read_bytes()).header

    out = node.preview(max_splats=100, num_frames=0, background="0.5,0,1", scene=recorded)
    view = header(out)["view"]
    assert np.allclose(np.asarray(view["viewmat"]).reshape(4, 4), cams.viewmats[0].numpy(), atol=1e-6)
    assert view["fovy_deg"] == pytest.approx(40.0) and (view["width"], view["height"]) == (64, 48)
    assert header(out)["background"] == "#8000ff" and out["ui"]["text"] == []
    out = node.preview(max_splats=100, num_frames=0, scene=plain)
    assert "view" not in header(out) and header(out)["background"] == "#ffffff"
    assert "records no cameras" in " ".join(out["ui"]["text"])


def test_node_without_input_names_itself(fake_comfy):
    with pytest.raises(ValueError, match="Gen4D_Preview4D"):
        NODE_CLASS_MAPPINGS["Gen4D_Preview4D"]().preview(max_splats=10, num_frames=0)


def test_missing_asset_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        pa.decode_asset(b"G4DP")


def test_preview_hides_pixels_without_a_track():
    import torch
    from gen4d.core.moge4d.tracks import Tracks
    from gen4d.nodes.preview import _tracks_fields

    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[0, 0] = False
    visible = torch.ones(4, 2, 3, dtype=torch.bool)
    visible[2, 1, 1] = False
    tracks = Tracks(torch.rand(4, 2, 3, 3), torch.rand(2, 3, 3), valid, visible, torch.eye(3), torch.eye(4), 12.0)
    points, colors, visibility, fps = _tracks_fields(tracks)
    assert torch.equal(visibility, visible & valid[None]) and fps == 12.0
    assert points.shape == (4, 2, 3, 3) and colors.shape == (2, 3, 3)


def test_inputs_left_out_of_the_preview_are_noted(fake_comfy, caplog):
    """One input is shown (scene, else gaussians, else tracks); a connected one left out is a note naming it."""
    from gen4d.core.moge4d.tracks import Tracks

    tracks = Tracks(torch.rand(4, 2, 3, 3), torch.rand(2, 3, 3), torch.ones(2, 3, dtype=torch.bool),
                    torch.ones(4, 2, 3, dtype=torch.bool), torch.eye(3), torch.eye(4), 12.0)
    node = NODE_CLASS_MAPPINGS["Gen4D_Preview4D"]()
    scene = _moving_scene(n=40, frames=3)
    with caplog.at_level("WARNING"):
        out = node.preview(max_splats=40, num_frames=0, scene=scene, gaussians=scene.at(0.0), tracks=tracks)
    note = " ".join(out["ui"]["text"])
    assert "gaussians and tracks connected but not shown" in note and "the scene here" in note
    assert "tracks connected but not shown" in caplog.text
    out = node.preview(max_splats=40, num_frames=0, gaussians=scene.at(0.0), tracks=tracks)
    assert "tracks connected but not shown" in " ".join(out["ui"]["text"]) and "gaussians here" in out["ui"]["text"][0]
    assert node.preview(max_splats=40, num_frames=0, tracks=tracks)["ui"]["text"] == []
