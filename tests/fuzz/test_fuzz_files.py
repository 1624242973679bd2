# SPDX-License-Identifier: Apache-2.0
"""File and folder inputs: the generated cases on every file/folder input, numbering past 99999, whole-set
saves on cancel, PLY headers checked against the file size, normal file modes."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as F  # noqa: E402
from test_fuzz_inputs import FILE_INPUTS  # noqa: E402


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_OUTPUT_DIR", str(root / "output"))
        mp.setenv("GEN4D_INPUT_DIR", str(root / "input"))
        yield F.Context(root)


def _params(long):
    return [pytest.param(nc, id=nc.id, marks=[pytest.mark.fuzz_long] if long else [])
            for nc in F.node_cases(long=long) if nc.input in FILE_INPUTS
            and (not long or nc.id not in {c.id for c in F.node_cases(long=False)})]


@pytest.mark.parametrize("nc", _params(False) + _params(True))
def test_file_inputs(ctx, nc):
    out = F.run_case(ctx, nc)
    if out is None:
        pytest.skip("case does not apply")
    assert out.klass in F.GOOD, f"{out.klass}: {out.detail}"


def _save(ctx, prefix, **kw):
    return F.call("Gen4D_SaveScene", {"filename_prefix": prefix, "write_ply_frames": False, "num_frames": 0,
                                      "scene": ctx.values["GEN4D_SCENE"], **kw})


def test_numbering_past_99999_never_overwrites(ctx):
    out = Path(os.environ["GEN4D_OUTPUT_DIR"]) / "numbering"
    out.mkdir(parents=True, exist_ok=True)
    for n in (99999, 100000):
        (out / f"s_{n:05d}.gen4d.safetensors").write_bytes(b"keep me")
    _save(ctx, "numbering/s")
    for n in (99999, 100000):
        assert (out / f"s_{n:05d}.gen4d.safetensors").read_bytes() == b"keep me"


def test_saved_files_have_normal_modes(ctx):
    old = os.umask(0o022)
    try:
        _save(ctx, "modes/s")
    finally:
        os.umask(old)
    files = list((Path(os.environ["GEN4D_OUTPUT_DIR"]) / "modes").glob("*"))
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f"{f.name}: {oct(f.stat().st_mode)}"


def test_ply_header_claiming_1e9_vertices_is_refused_before_allocating(ctx):
    inp = Path(os.environ["GEN4D_INPUT_DIR"])
    inp.mkdir(parents=True, exist_ok=True)
    header = ("ply\nformat ascii 1.0\nelement vertex 1000000000\nproperty float x\nproperty float y\n"
              "property float z\nproperty float opacity\nend_header\n0 0 0 1\n")
    (inp / "liar.ply").write_text(header)
    listed = F.pack().NODE_CLASS_MAPPINGS["Gen4D_LoadScene"].INPUT_TYPES()["required"]["file"][0]
    name = next((n for n in listed if "liar" in n), "liar.ply [input]")
    with F.time_limit(20):
        out = F.classify("Gen4D_LoadScene", "file", {"file": name}, bad=True, seconds=20)
    assert out.klass == "clear", out


def test_cancelled_save_leaves_nothing_half_written(ctx, fake_comfy):
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        F.call("Gen4D_SaveScene", {"filename_prefix": "cancel/s", "write_ply_frames": True, "num_frames": 0,
                                   "scene": ctx.values["GEN4D_SCENE"]})
    left = [p for p in (fake_comfy.output / "cancel").rglob("*") if p.is_file()] \
        if (fake_comfy.output / "cancel").exists() else []
    assert not left, f"a cancelled save left {sorted(p.name for p in left)[:5]}"
