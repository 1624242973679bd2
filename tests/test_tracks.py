# SPDX-License-Identifier: Apache-2.0
"""core.moge4d.tracks: time interpolation, source depth, PLY sequence export round trip, bad inputs."""

import numpy as np
import pytest
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import KeyframeMotion
from gen4d.core.moge4d.tracks import Tracks, load_tracks_ply_sequence, save_tracks_ply_sequence


def _tracks(t=3, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(t, h, w, 3, generator=g)
    pts[..., 2] = pts[..., 2].abs() + 1.0
    valid = torch.ones(h, w, dtype=torch.bool)
    valid[0, 0] = False
    return Tracks(pts, torch.rand(h, w, 3, generator=g), valid, torch.ones(t, h, w, dtype=torch.bool),
                  torch.tensor([[4.0, 0, 2.5], [0, 4.0, 2.0], [0, 0, 1]]), torch.eye(4), 8.0)


def test_at_matches_keyframe_motion():
    tr = _tracks()
    motion = KeyframeMotion(tr.points.reshape(3, -1, 3))
    g = Gaussians.from_colors(tr.points[0].reshape(-1, 3), torch.rand(20, 3))
    for t in (0.0, 0.2, 0.5, 0.77, 1.0):
        assert torch.allclose(tr.at(t).reshape(-1, 3), motion.apply(g, t).means, atol=1e-6)
    assert torch.equal(tr.at(0.5), tr.points[1])
    assert torch.allclose(tr.frame_times(), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="t must lie"):
        tr.at(1.5)


def test_source_depth_uses_viewmat():
    tr = _tracks()
    vm = torch.eye(4)
    vm[2, 3] = 3.0                                  # camera 3 units behind the origin
    shifted = Tracks(tr.points, tr.colors, tr.valid, tr.visible, tr.K, vm, tr.fps)
    d = shifted.source_depth()
    assert d[0, 0] == 0
    assert torch.allclose(d[tr.valid], tr.points[0][tr.valid][:, 2] + 3.0)


def test_ply_sequence_round_trip(tmp_path):
    tr = _tracks()
    files = save_tracks_ply_sequence(tr, "seq", root=tmp_path)
    assert [f.name for f in files] == ["frame_00000.ply", "frame_00001.ply", "frame_00002.ply"]
    assert all(f.parent == (tmp_path / "seq").resolve() for f in files)
    pts, col = load_tracks_ply_sequence(files)
    assert pts.shape == (3, 19, 3)
    assert torch.equal(pts, tr.points[:, tr.valid])                       # float32 exact
    assert (col - tr.colors[tr.valid]).abs().max() <= 0.5 / 255 + 1e-6     # uchar rounding


def test_ply_sequence_stop_and_progress(tmp_path):
    calls = []
    files = save_tracks_ply_sequence(_tracks(), tmp_path / "a", callback=lambda s, n, p: calls.append((s, n)),
                                     should_stop=lambda: len(calls) >= 2)
    assert len(files) == 2 and calls == [(1, 3), (2, 3)]
    assert not list((tmp_path / "a").glob("*.tmp*"))


def test_ply_sequence_bad_inputs(tmp_path):
    tr = _tracks()
    with pytest.raises(ValueError, match="outside|'\\.\\.'"):
        save_tracks_ply_sequence(tr, "../escape", root=tmp_path)
    with pytest.raises(ValueError, match="prefix"):
        save_tracks_ply_sequence(tr, "x", prefix="a/b", root=tmp_path)
    with pytest.raises(ValueError, match="Tracks"):
        save_tracks_ply_sequence("not tracks", "x", root=tmp_path)
    empty = Tracks(tr.points, tr.colors, torch.zeros(4, 5, dtype=torch.bool), tr.visible, tr.K, tr.viewmat)
    with pytest.raises(ValueError, match="no valid pixel"):
        save_tracks_ply_sequence(empty, "x", root=tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        load_tracks_ply_sequence([])
    a = save_tracks_ply_sequence(tr, "p", root=tmp_path)[0]
    other = _tracks(h=2, w=2)
    b = save_tracks_ply_sequence(other, "q", root=tmp_path)[0]
    with pytest.raises(ValueError, match="must match"):
        load_tracks_ply_sequence([a, b])


def test_tracks_validation():
    tr = _tracks()
    with pytest.raises(ValueError, match="focal"):
        Tracks(tr.points, tr.colors, tr.valid, tr.visible, torch.diag(torch.tensor([0.0, 1.0, 1.0])), tr.viewmat)
    with pytest.raises(ValueError, match="fps"):
        Tracks(tr.points, tr.colors, tr.valid, tr.visible, tr.K, tr.viewmat, fps=0.0)
    bad = tr.points.clone()
    bad[1, 2, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        Tracks(bad, tr.colors, tr.valid, tr.visible, tr.K, tr.viewmat)
    with pytest.raises(ValueError, match="colors"):
        Tracks(tr.points, tr.colors[:2], tr.valid, tr.visible, tr.K, tr.viewmat)
    assert np.isclose(tr.num_valid, 19)
