# SPDX-License-Identifier: Apache-2.0
"""Model folder resolution: listing, clear errors naming folders, expected files and published ids."""

from __future__ import annotations

import pytest
from gen4d.backends import model_folders as mf


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4D_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_lists_layout_folders_and_safetensors_files(models_dir):
    root = models_dir / "gen4d" / "depth"
    (root / "good").mkdir(parents=True)
    (root / "good" / "config.json").write_text("{}")
    (root / "empty").mkdir()
    (root / "weights.safetensors").write_bytes(b"x")
    assert mf.list_models("depth") == ["good", "weights.safetensors"]
    assert mf.resolve_model("depth", "good", ("config.json",)) == (root / "good").resolve()


def test_missing_model_names_folder_files_and_published_ids(models_dir):
    with pytest.raises(ValueError) as info:
        mf.resolve_model("depth", "nothing-here")
    message = str(info.value)
    assert str(models_dir / "gen4d" / "depth") in message and "config.json" in message
    assert "model.safetensors" in message and "Depth-Anything-V2-Small-hf" in message
    assert "never download" in message
    assert "GEN4D_ALLOW_DOWNLOADS" not in message and "set " not in message
    with pytest.raises(ValueError, match=r"no sam2 model selected; put a model folder .* into .*sam2.*config\.json"):
        mf.resolve_model("sam2", mf.NO_MODELS)


def test_every_kind_says_what_to_put_where(models_dir):
    assert set(mf.EXPECTED_FILES) == set(mf.MODEL_KINDS)
    for kind in mf.MODEL_KINDS:
        with pytest.raises(ValueError) as info:
            mf.resolve_model(kind, "absent")
        assert mf.EXPECTED_FILES[kind] in str(info.value) and str(mf.model_roots(kind)[0]) in str(info.value)


def test_nothing_offers_a_download(models_dir):
    assert not hasattr(mf, "download_model") and not hasattr(mf, "downloads_allowed")


def test_incomplete_folder_names_missing_files(models_dir):
    (models_dir / "sam2" / "half").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"missing \['config.json'\]"):
        mf.resolve_model("sam2", "half", ("config.json",))


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


def test_video_inpaint_lists_and_resolves_fun_inp_single_files(models_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "folder_paths", None)
    (models_dir / "diffusers" / "vace").mkdir(parents=True)
    (models_dir / "diffusers" / "vace" / "model_index.json").write_text("{}")
    dm = models_dir / "diffusion_models" / "wan"
    dm.mkdir(parents=True)
    for name in ("Wan2_1-Fun-V1_1-14B-InP_fp8_e4m3fn.safetensors", "wan2.1_t2v_14B_bf16.safetensors",
                 "wan2.1_fun_inp_1.3B_bf16.safetensors"):
        (dm / name).write_bytes(b"x")
    names = mf.list_models("video_inpaint")
    assert names == ["vace", "wan/Wan2_1-Fun-V1_1-14B-InP_fp8_e4m3fn.safetensors",
                     "wan/wan2.1_fun_inp_1.3B_bf16.safetensors"]  # matched whatever the case; other Wan files not
    assert mf.resolve_model("video_inpaint", names[1]) == (dm / "Wan2_1-Fun-V1_1-14B-InP_fp8_e4m3fn.safetensors")
    assert mf.list_models("depth") == []
