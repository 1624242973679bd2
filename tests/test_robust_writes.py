# SPDX-License-Identifier: Apache-2.0
"""Saves and file readers under hostile conditions: numbering past five digits, no overwrite, whole-set
saves on cancel and error, file modes, and file headers that claim more than the file holds."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart
from gen4d.core.formats import export, paths, ply
from gen4d.core.moge4d.tracks import Tracks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import run  # noqa: E402


def _scene(frames: int = 4, n: int = 30) -> Scene4D:
    g = torch.Generator().manual_seed(1)
    gauss = Gaussians.from_colors(torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g))
    path = gauss.means[None] + torch.linspace(0, 1, frames)[:, None, None]
    return Scene4D([ScenePart("walk", gauss, KeyframeMotion(path))], frames, 8.0)


def _tracks(t: int = 5) -> Tracks:
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(t, 4, 5, 3, generator=g)
    pts[..., 2] = pts[..., 2].abs() + 1.0
    return Tracks(pts, torch.rand(4, 5, 3, generator=g), torch.ones(4, 5, dtype=torch.bool),
                  torch.ones(t, 4, 5, dtype=torch.bool), torch.tensor([[4.0, 0, 2.5], [0, 4.0, 2.0], [0, 0, 1]]),
                  torch.eye(4), 8.0)


def _everything(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --------------------------------------------------------------------------- numbering, no overwrite


def test_numbering_counts_numbers_of_any_length(tmp_path):
    (tmp_path / "gen4d").mkdir()
    for n in ("99999", "100000"):
        (tmp_path / f"gen4d/scene_{n}.gen4d.safetensors").write_bytes(b"keep " + n.encode())
    assert export.next_free_stem(tmp_path, "gen4d/scene") == "gen4d/scene_100001"
    bundle = export.save_scene_bundle(_scene(), tmp_path, "gen4d/scene", write_ply_frames=False)
    assert bundle.scene_file.name == "scene_100001.gen4d.safetensors"
    assert (tmp_path / "gen4d/scene_100000.gen4d.safetensors").read_bytes() == b"keep 100000"
    (tmp_path / "gen4d/tracks_1234567").mkdir()
    assert export.next_free_stem(tmp_path, "gen4d/tracks") == "gen4d/tracks_1234568"
    # four digits or another name's number are not ours
    (tmp_path / "gen4d/other_00007.ply").write_bytes(b"")
    (tmp_path / "gen4d/scene_0042.ply").write_bytes(b"")
    assert export.next_free_stem(tmp_path, "gen4d/scene") == "gen4d/scene_100002"


def test_a_number_taken_meanwhile_is_skipped_not_replaced(tmp_path, monkeypatch):
    real = export.next_free_stem
    calls = []

    def racing(root, prefix):  # another save takes the number between the choice and the rename
        stem = real(root, prefix)
        if not calls:
            (Path(root) / (stem + export.SCENE_SUFFIX)).parent.mkdir(parents=True, exist_ok=True)
            (Path(root) / (stem + export.SCENE_SUFFIX)).write_bytes(b"theirs")
        calls.append(stem)
        return stem

    monkeypatch.setattr(export, "next_free_stem", racing)
    bundle = export.save_scene_bundle(_scene(), tmp_path, "s", write_ply_frames=True)
    assert calls == ["s_00001", "s_00002"]
    assert (tmp_path / "s_00001.gen4d.safetensors").read_bytes() == b"theirs"
    assert not (tmp_path / "s_00001_ply").exists(), "a bundle is never split over two numbers"
    assert bundle.scene_file == (tmp_path / "s_00002.gen4d.safetensors").resolve()
    assert len(list((tmp_path / "s_00002_ply").iterdir())) == 4
    assert Scene4D.load(bundle.scene_file).num_frames == 4


def test_staged_commit_never_replaces_unless_asked(tmp_path):
    (tmp_path / "taken").write_text("old")
    with paths.StagedSave(tmp_path) as stage:
        stage.path("a").write_text("new a")
        stage.path("b").write_text("new b")
        with pytest.raises(FileExistsError):
            stage.commit({"a": "a", "b": "taken"})
        assert not (tmp_path / "a").exists(), "what was moved before the clash is moved back"
        assert stage.commit({"a": "a", "b": "taken"}, overwrite=True) == [tmp_path / "a", tmp_path / "taken"]
    assert (tmp_path / "taken").read_text() == "new b" and (tmp_path / "a").read_text() == "new a"
    assert _everything(tmp_path) == ["a", "taken"]


# --------------------------------------------------------------------------- whole-set saves


def test_save_scene_cancel_leaves_nothing(fake_comfy):
    out = fake_comfy.output
    fake_comfy.interrupt_after = 2  # cancelled after two of eight PLY frames
    with pytest.raises(fake_comfy.Interrupted):
        run("Gen4D_SaveScene", scene=_scene(8), filename_prefix="gen4d/scene")
    assert _everything(out) == ["gen4d"], "no scene file, no PLY, no staging folder left"
    fake_comfy.interrupt_after = None
    fake_comfy.interrupted = True  # cancelled before the node starts writing
    with pytest.raises(fake_comfy.Interrupted):
        run("Gen4D_SaveScene", scene=_scene(8), filename_prefix="gen4d/scene", write_ply_frames=False)
    assert _everything(out) == ["gen4d"]
    rel = run("Gen4D_SaveScene", scene=_scene(8), filename_prefix="gen4d/scene")[0]
    assert rel == "gen4d/scene_00001.gen4d.safetensors", "cancelled saves use up no number"
    assert len(_everything(out)) == 1 + 1 + 1 + 1 + 8, "folder, scene file, frame manifest, PLY folder, 8 PLYs"


def test_save_scene_error_mid_way_leaves_nothing(tmp_path, monkeypatch):
    real, count = ply.save_ply, []

    def failing(gaussians, path, root=None):
        count.append(path)
        if len(count) == 3:
            raise OSError("disk full")
        return real(gaussians, path, root)

    monkeypatch.setattr(export, "save_ply", failing)
    with pytest.raises(OSError, match="disk full"):
        export.save_scene_bundle(_scene(6), tmp_path, "a/b")
    assert _everything(tmp_path) == ["a"]


def test_save_tracks_cancel_error_and_overwrite(fake_comfy, monkeypatch):
    out = fake_comfy.output
    fake_comfy.interrupt_after = 2
    with pytest.raises(fake_comfy.Interrupted):
        run("Gen4D_SaveTracks", tracks=_tracks(), filename_prefix="t/tracks")
    assert _everything(out) == ["t"]
    fake_comfy.interrupt_after = None
    fake_comfy.interrupted = True
    with pytest.raises(fake_comfy.Interrupted):
        run("Gen4D_SaveTracks", tracks=_tracks(), filename_prefix="t/tracks", format="gaussians")
    assert _everything(out) == ["t"]

    assert run("Gen4D_SaveTracks", tracks=_tracks(), filename_prefix="t/fixed", overwrite=True)[0] == "t/fixed"
    (out / "t/fixed/stale.ply").write_bytes(b"from an older save")
    first = sorted(p.name for p in (out / "t/fixed").iterdir())
    fake_comfy.interrupt_after = len(fake_comfy.updates) + 2
    with pytest.raises(fake_comfy.Interrupted):
        run("Gen4D_SaveTracks", tracks=_tracks(), filename_prefix="t/fixed", overwrite=True)
    assert sorted(p.name for p in (out / "t/fixed").iterdir()) == first, "a cancelled overwrite keeps the old set"
    fake_comfy.interrupt_after = None
    run("Gen4D_SaveTracks", tracks=_tracks(3), filename_prefix="t/fixed", overwrite=True)
    assert sorted(p.name for p in (out / "t/fixed").iterdir()) == [f"frame_{i:05d}.ply" for i in range(3)]
    assert _everything(out) == ["t", "t/fixed"] + [f"t/fixed/frame_{i:05d}.ply" for i in range(3)]
    (out / "t/file").write_bytes(b"")
    with pytest.raises(ValueError, match="not a folder"):
        run("Gen4D_SaveTracks", tracks=_tracks(), filename_prefix="t/file", overwrite=True)


def test_unsafe_names_are_still_refused(fake_comfy, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (fake_comfy.output / "link").symlink_to(outside, target_is_directory=True)
    for prefix in ("../escape", "/abs/scene", "link/scene", "a/../../x"):
        with pytest.raises(ValueError, match="filename_prefix"):
            run("Gen4D_SaveScene", scene=_scene(), filename_prefix=prefix)
        with pytest.raises(ValueError, match="filename_prefix"):
            run("Gen4D_SaveTracks", tracks=_tracks(), filename_prefix=prefix)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape").exists()


def test_names_past_the_file_name_limit_are_refused_up_front(fake_comfy):
    """Each part of a name fits 255 bytes (UTF-8) with room for the number and extension, or the save refuses
    naming filename_prefix before writing anything (no "File name too long" half-way)."""
    out = fake_comfy.output
    fits = "s" * (paths.NAME_MAX - paths.TEMP_NAME_EXTRA - export.NUMBERED_RESERVE)
    for prefix in ("x" * 10_000, fits + "s", "日" * 80, "d" * 256 + "/scene", "a\x00b"):
        with pytest.raises(ValueError, match="filename_prefix"):
            run("Gen4D_SaveScene", scene=_scene(2), filename_prefix=prefix)
        with pytest.raises(ValueError, match="filename_prefix"):
            run("Gen4D_SaveTracks", tracks=_tracks(2), filename_prefix=prefix)
    assert _everything(out) == []
    rel = run("Gen4D_SaveScene", scene=_scene(2), filename_prefix=fits, frame_format="ply+spz+glb")[0]
    assert rel == fits + "_00001" + export.SCENE_SUFFIX
    assert run("Gen4D_SaveTracks", tracks=_tracks(2), filename_prefix="t/" + fits)[0] == "t/" + fits + "_00001"
    with pytest.raises(ValueError, match="255 bytes"):
        paths.safe_output_path(out, "ü" * 119)  # 238 bytes in UTF-8: 256 with the temp name around it


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        bundle = export.save_scene_bundle(_scene(2), tmp_path, "m/scene")
    finally:
        os.umask(previous)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(bundle.scene_file) == 0o666 & ~umask
    assert {mode(p) for p in bundle.ply_files} == {0o666 & ~umask}
    assert mode(bundle.ply_files[0].parent) == 0o777 & ~umask


# --------------------------------------------------------------------------- headers vs file size


def test_ascii_ply_claiming_a_billion_vertices_fails_fast(tmp_path):
    header = ("ply\nformat ascii 1.0\nelement vertex 1000000000\n"
              + "".join(f"property float {p}\n" for p in ("x", "y", "z", "red", "green", "blue"))
              + "end_header\n")
    rows = "0.5 0.25 1.0 0.1 0.2 0.3\n" * ((380 - len(header)) // 25)
    path = tmp_path / "huge.ply"
    path.write_text(header + rows)
    assert 300 <= path.stat().st_size <= 400
    for load in (ply.load_points_ply, ply.load_ply):
        start = time.perf_counter()
        with pytest.raises(ValueError, match=r"huge\.ply.*promises 1000000000 vertices.*at least"):
            load(path)
        assert time.perf_counter() - start < 1.0


def test_ascii_ply_bound_counts_rows_of_earlier_elements(tmp_path):
    path = tmp_path / "two.ply"
    path.write_text("ply\nformat ascii 1.0\nelement camera 100000\nproperty float f\n"
                    "element vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
                    "1\n2\n0 0 0\n")
    with pytest.raises(ValueError, match="rows before them"):
        ply.load_points_ply(path)
    ok = tmp_path / "ok.ply"  # the tightest legal body still loads
    ok.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                  "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
                  "0 1 2 3 4 5\n6 7 8 9 0 1")
    points, colors = ply.load_points_ply(ok)
    assert points.shape == (2, 3) and points[1, 0] == 6


def test_scene_file_claiming_too_many_frames_is_refused(tmp_path):
    tensors, meta = Scene4D.static(_scene().at(0.0)).state()
    for frames in (10**12, 0, -3, "many", True):
        doc = json.loads(meta["scene"])
        doc["num_frames"] = frames
        path = tmp_path / "hostile.gen4d.safetensors"
        safetensors.torch.save_file(tensors, str(path), metadata={**meta, "scene": json.dumps(doc)})
        with pytest.raises(ValueError, match=r"hostile.*claims .* frames"):
            Scene4D.load(path)
