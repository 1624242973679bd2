# SPDX-License-Identifier: Apache-2.0
"""Model folder resolution: listing, clear errors naming folders and published ids, opt-in downloads."""

from __future__ import annotations

import sys
import types

import pytest
from gen4d.backends import model_folders as mf


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("GEN4D_ALLOW_DOWNLOADS", raising=False)
    return tmp_path


def test_lists_layout_folders_and_safetensors_files(models_dir):
    root = models_dir / "gen4d" / "depth"
    (root / "good").mkdir(parents=True)
    (root / "good" / "config.json").write_text("{}")
    (root / "empty").mkdir()
    (root / "weights.safetensors").write_bytes(b"x")
    assert mf.list_models("depth") == ["good", "weights.safetensors"]
    assert mf.resolve_model("depth", "good", ("config.json",)) == (root / "good").resolve()


def test_missing_model_names_folder_and_published_ids(models_dir):
    with pytest.raises(ValueError, match=r"not found.*gen4d/depth.*Depth-Anything-V2-Small-hf.*GEN4D_ALLOW_DOWNLOADS"):
        mf.resolve_model("depth", "nothing-here")


def test_incomplete_folder_names_missing_files(models_dir):
    (models_dir / "sam2" / "half").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"missing \['config.json'\]"):
        mf.resolve_model("sam2", "half", ("config.json",))


def test_download_is_off_unless_allowed(models_dir):
    with pytest.raises(ValueError, match="GEN4D_ALLOW_DOWNLOADS=1"):
        mf.download_model("depth", "depth-anything/Depth-Anything-V2-Small-hf")


def test_download_when_allowed_goes_into_the_kind_folder(models_dir, monkeypatch):
    calls = []
    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = lambda repo_id, local_dir, allow_patterns: calls.append((repo_id, local_dir))
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.setenv("GEN4D_ALLOW_DOWNLOADS", "1")
    target = mf.download_model("depth", "depth-anything/Depth-Anything-V2-Small-hf")
    assert target == models_dir.resolve() / "gen4d" / "depth" / "Depth-Anything-V2-Small-hf"
    assert calls == [("depth-anything/Depth-Anything-V2-Small-hf", target)]


def test_unknown_kind_is_rejected(models_dir):
    with pytest.raises(ValueError, match="model kind must be one of"):
        mf.model_roots("nope")


def test_release_layouts_are_listed_by_their_kind_marker(models_dir):
    release = models_dir / "gen4d" / "moge4d" / "MoGe4D"
    (release / "4D-STraG").mkdir(parents=True)
    (release / "4D-STraG" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert mf.list_models("trajectory") == ["MoGe4D"]
    (models_dir / "gen4d" / "depth" / "MoGe4D" / "4D-STraG").mkdir(parents=True)
    (models_dir / "gen4d" / "depth" / "MoGe4D" / "4D-STraG" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert mf.list_models("depth") == [], "the marker belongs to the trajectory kind only"
