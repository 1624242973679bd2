# SPDX-License-Identifier: Apache-2.0
"""Output-path sandboxing and atomic writes."""

from __future__ import annotations

import os

import pytest
from gen4d.core.formats import paths


def test_relative_names_resolve_under_root(tmp_path):
    root = tmp_path / "output"
    assert paths.safe_output_path(root, "scenes/run1", ".ply") == (root / "scenes" / "run1.ply").resolve()
    assert paths.safe_output_path(root, "scenes\\run1.PLY", ".ply") == (root / "scenes" / "run1.PLY").resolve()
    assert paths.safe_output_path(str(root), "./a//b.bin") == (root / "a" / "b.bin").resolve()
    assert not root.exists()  # resolving creates nothing


@pytest.mark.parametrize(
    "name",
    ["", "   ", "/etc/passwd", "\\\\server\\share\\x", "C:\\x.ply", "c:x.ply", "a/C:x", "..", "../x.ply",
     "a/../../x", "a/b/../../../x", "a\\..\\..\\x", "bad\x00name", "folder/", ".", "./"],
)
def test_unsafe_names_are_rejected(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        paths.safe_output_path(tmp_path, name)


def test_inner_dotdot_is_rejected_even_if_it_stays_inside(tmp_path):
    with pytest.raises(ValueError, match=r"'\.\.'"):
        paths.safe_output_path(tmp_path, "a/../b")


def test_non_string_name_and_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match="name must be a str"):
        paths.safe_output_path(tmp_path, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="suffix"):
        paths.safe_output_path(tmp_path, "x", "ply/../")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlinks_out_of_root_are_rejected(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    try:
        (root / "link").symlink_to(outside, target_is_directory=True)
        (root / "inner").symlink_to(root / "real", target_is_directory=True)
    except OSError:
        pytest.skip("cannot create symlinks here")
    with pytest.raises(ValueError, match="outside the output folder"):
        paths.safe_output_path(root, "link/x.ply")
    assert paths.safe_output_path(root, "inner/x.ply") == (root / "real" / "x.ply").resolve()


def test_atomic_write_bytes_creates_and_replaces(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    assert paths.atomic_write_bytes(target, b"one") == target
    paths.atomic_write_bytes(target, b"two!")
    assert target.read_bytes() == b"two!"
    assert os.listdir(target.parent) == ["f.bin"]


def test_atomic_writer_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with paths.atomic_writer(target, "w") as fh:
            fh.write("half of the new cont")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
    with paths.atomic_writer(target, "w") as fh:
        fh.write("new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"


def test_atomic_writer_cleans_up_on_interrupt(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(KeyboardInterrupt):
        with paths.atomic_writer(target) as fh:
            fh.write(b"x" * 100)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_path_for_writers_by_name(tmp_path):
    target = tmp_path / "f.bin"
    with paths.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    with pytest.raises(ValueError):
        with paths.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise ValueError("writer failed")
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_writer_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with paths.atomic_writer(tmp_path / "f", "a"):
            pass
    assert os.listdir(tmp_path) == []
