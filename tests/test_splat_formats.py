# SPDX-License-Identifier: Apache-2.0
"""SPZ and glTF KHR_gaussian_splatting round trips (PLY <-> SPZ <-> glTF <-> scene), the frame manifest,
and Save Scene's frame formats."""

from __future__ import annotations

import gzip
import json
import math
import struct

import pytest
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart
from gen4d.core.formats import gltf_splat, manifest, spz
from gen4d.core.formats.ply import gaussians_from_ply_bytes, gaussians_to_ply_bytes


def random_gaussians(n=300, degree=3, extent=2.0, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(torch.randn(n, 3, generator=g) * extent, torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g) * 0.5 - 3.0, torch.randn(n, generator=g) * 2.0,
                     torch.rand(n, k, 3, generator=g) * 1.6 - 0.8)


def aligned_quat_error(a: Gaussians, b: Gaussians) -> float:
    qa, qb = a.rotations, b.rotations
    sign = torch.where((qa * qb).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    return float((qa - qb * sign).abs().max())


def max_err(a, b) -> float:
    return float((a - b).abs().max())


# --------------------------------------------------------------------------- SPZ


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_spz_round_trip_within_stated_precision(version, degree):
    g = random_gaussians(degree=degree)
    data = spz.gaussians_to_spz_bytes(g, version=version)
    raw = gzip.decompress(data)
    magic, ver, n, deg, bits = struct.unpack_from("<IIIBB", raw)
    assert (magic, ver, n, deg) == (0x5053474E, version, len(g), degree)
    assert raw[:4] == b"NGSP"
    h = spz.gaussians_from_spz_bytes(data)
    p = spz.SPZ_PRECISION
    assert len(h) == len(g) and h.sh.shape == g.sh.shape
    assert max_err(h.means, g.means) <= 2.0 ** -(bits + 1) + 1e-7
    assert max_err(h.log_scales, g.log_scales) <= p["log_scales"] + 1e-6
    assert max_err(h.opacities, g.opacities) <= p["opacities"] + 1e-6
    assert max_err(h.sh[:, 0], g.sh[:, 0]) <= p["sh_dc"] + 1e-6
    if degree:
        assert max_err(h.sh[:, 1:], g.sh[:, 1:]) <= p["sh_rest"] + 1e-6
    assert aligned_quat_error(h, g) <= p[f"quats_v{version}"]
    # quantised once, the values are fixed points of a second round trip
    again = spz.gaussians_from_spz_bytes(spz.gaussians_to_spz_bytes(h, version=version))
    assert max_err(again.means, h.means) == 0.0 and max_err(again.sh, h.sh) < 1e-6


def test_spz_smallest_three_codes_every_largest_component():
    """Each of x, y, z, w as the largest component, both signs: the quaternion (up to sign) survives."""
    base = torch.tensor([[0.9, 0.3, -0.2, 0.1]])
    quats = []
    for j in range(4):
        for sgn in (1.0, -1.0):
            q = base.clone()
            q[0, [0, j]] = q[0, [j, 0]]
            quats.append(q * sgn)
    q = torch.cat(quats)  # wxyz
    g = Gaussians(torch.zeros(8, 3), q, torch.full((8, 3), -2.0), torch.zeros(8), torch.zeros(8, 1, 3))
    h = spz.gaussians_from_spz_bytes(spz.gaussians_to_spz_bytes(g, version=3))
    assert aligned_quat_error(h, g) <= spz.SPZ_PRECISION["quats_v3"]


def test_spz_positions_pick_fractional_bits_and_refuse_the_unrepresentable():
    g = random_gaussians(n=20, degree=0, extent=1000.0)
    raw = gzip.decompress(spz.gaussians_to_spz_bytes(g))
    bits = raw[13]
    assert float(g.means.abs().max()) * 2 ** bits < 2 ** 23 and bits < 12
    far = Gaussians(torch.full((1, 3), 1e9), torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1, 3), torch.zeros(1),
                    torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="24-bit"):
        spz.gaussians_to_spz_bytes(far)


def test_spz_bad_input_is_a_clear_error():
    g = random_gaussians(n=10, degree=1)
    nan = Gaussians(g.means.clone().index_fill_(0, torch.tensor([3]), float("nan")), g.quats, g.log_scales,
                    g.logit_opacities, g.sh)
    with pytest.raises(ValueError, match="NaN"):
        spz.gaussians_to_spz_bytes(nan)
    with pytest.raises(ValueError, match="version"):
        spz.gaussians_to_spz_bytes(g, version=4)
    data = spz.gaussians_to_spz_bytes(g)
    raw = bytearray(gzip.decompress(data))
    with pytest.raises(ValueError, match="truncated"):
        spz.gaussians_from_spz_bytes(gzip.compress(bytes(raw[:-5])))
    bad = raw.copy()
    struct.pack_into("<I", bad, 4, 1)
    with pytest.raises(ValueError, match="version 1"):
        spz.gaussians_from_spz_bytes(gzip.compress(bytes(bad)))
    bad = raw.copy()
    bad[12] = 4
    with pytest.raises(ValueError, match="degree 4"):
        spz.gaussians_from_spz_bytes(gzip.compress(bytes(bad)))
    with pytest.raises(ValueError, match="not an SPZ"):
        spz.gaussians_from_spz_bytes(b"ply\nformat")
    with pytest.raises(ValueError, match="magic"):
        spz.gaussians_from_spz_bytes(gzip.compress(b"\0" * 16))


# --------------------------------------------------------------------------- glTF


def glb_json(data: bytes) -> dict:
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20: 20 + length])


def rebuild_glb(data: bytes, doc: dict) -> bytes:
    """``data`` with its JSON chunk replaced by ``doc`` (binary chunk kept)."""
    blob = data[20 + struct.unpack_from("<I", data, 12)[0]:]
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    head = struct.pack("<III", 0x46546C67, 2, 12 + 8 + len(text) + len(blob))
    return head + struct.pack("<II", len(text), 0x4E4F534A) + text + blob


@pytest.mark.parametrize("degree", [0, 2, 3])
def test_glb_round_trip_and_layout(degree):
    g = random_gaussians(degree=degree)
    data = gltf_splat.gaussians_to_glb_bytes(g)
    assert data[:4] == b"glTF" and struct.unpack_from("<I", data, 8)[0] == len(data)
    doc = glb_json(data)
    assert doc["extensionsUsed"] == ["KHR_gaussian_splatting"]
    prim = doc["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0 and prim["extensions"]["KHR_gaussian_splatting"]["kernel"] == "ellipse"
    sh_names = [a for a in prim["attributes"] if "SH_DEGREE" in a]
    assert len(sh_names) == (degree + 1) ** 2
    pos = doc["accessors"][prim["attributes"]["POSITION"]]
    assert pos["count"] == len(g)
    assert pos["min"] == pytest.approx(g.means.min(0).values.tolist())
    assert pos["max"] == pytest.approx(g.means.max(0).values.tolist())
    h = gltf_splat.gaussians_from_glb_bytes(data)
    assert torch.equal(h.means, g.means) and torch.equal(h.sh, g.sh)
    assert max_err(h.scales, g.scales) <= 1e-6 * float(g.scales.max())
    assert max_err(h.opacities, g.opacities) <= 1e-6
    assert aligned_quat_error(h, g) <= 1e-6


def test_glb_attributes_hold_activated_values_in_khr_order():
    """SCALE linear, OPACITY in [0,1], ROTATION xyzw: read the buffer directly, not through our reader."""
    g = random_gaussians(n=7, degree=0)
    data = gltf_splat.gaussians_to_glb_bytes(g)
    doc = glb_json(data)
    json_len = struct.unpack_from("<I", data, 12)[0]
    blob = data[20 + json_len + 8:]
    attrs = doc["meshes"][0]["primitives"][0]["attributes"]

    def column(name, width):
        acc = doc["accessors"][attrs[name]]
        view = doc["bufferViews"][acc["bufferView"]]
        assert acc["componentType"] == 5126
        return torch.frombuffer(bytearray(blob[view["byteOffset"]: view["byteOffset"] + view["byteLength"]]),
                                dtype=torch.float32).reshape(-1, width)

    assert torch.allclose(column("KHR_gaussian_splatting:SCALE", 3), g.scales, rtol=1e-6)
    assert torch.allclose(column("KHR_gaussian_splatting:OPACITY", 1)[:, 0], g.opacities, atol=1e-7)
    assert torch.allclose(column("KHR_gaussian_splatting:ROTATION", 4), g.rotations[:, [1, 2, 3, 0]], atol=1e-7)
    # the node turns our y-down frame to glTF's y-up: 180 degrees about z
    assert doc["nodes"][0]["rotation"] == [0.0, 0.0, 1.0, 0.0]


def test_glb_written_in_gltf_world_lands_in_our_frame():
    """A file whose data sit in glTF's world (no node turn, as splat-transform writes) reads back in our frame:
    positions and quaternions turned by 180 degrees about z, SH signs flipped by band parity."""
    g = random_gaussians(n=40, degree=3)
    data = gltf_splat.gaussians_to_glb_bytes(g)
    doc = glb_json(data)
    del doc["nodes"][0]["rotation"]
    h = gltf_splat.gaussians_from_glb_bytes(rebuild_glb(data, doc))
    flip = torch.tensor([-1.0, -1.0, 1.0])
    assert torch.allclose(h.means, g.means * flip)
    expected_q = torch.stack([-g.rotations[:, 3], -g.rotations[:, 2], g.rotations[:, 1], g.rotations[:, 0]], -1)
    sign = torch.where((h.rotations * expected_q).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    assert torch.allclose(h.rotations * sign, expected_q, atol=1e-6)
    # band 1 is (y, z, x): y and x flip under the turn, z does not
    assert torch.allclose(h.sh[:, 1:4], g.sh[:, 1:4] * torch.tensor([-1.0, 1.0, -1.0])[:, None])
    assert torch.allclose(h.sh[:, 0], g.sh[:, 0])


def test_glb_bad_input_is_a_clear_error():
    g = random_gaussians(n=5, degree=1)
    nan = Gaussians(g.means, g.quats, g.log_scales.clone().fill_(float("inf")), g.logit_opacities, g.sh)
    with pytest.raises(ValueError, match="NaN/inf"):
        gltf_splat.gaussians_to_glb_bytes(nan)
    with pytest.raises(ValueError, match="binary glTF"):
        gltf_splat.gaussians_from_glb_bytes(b"x" * 40)
    data = gltf_splat.gaussians_to_glb_bytes(g)
    doc = glb_json(data)
    attrs = doc["meshes"][0]["primitives"][0]["attributes"]
    del attrs["KHR_gaussian_splatting:SH_DEGREE_1_COEF_2"]
    with pytest.raises(ValueError, match="partially defined"):
        gltf_splat.gaussians_from_glb_bytes(rebuild_glb(data, doc))
    with pytest.raises(ValueError, match="truncated"):
        gltf_splat.gaussians_from_glb_bytes(data[:-40])


# --------------------------------------------------------------------------- chains and scenes


def test_ply_spz_glb_chain_keeps_the_set():
    """PLY -> SPZ -> glTF -> PLY: only the SPZ step quantises; the others are exact."""
    g = random_gaussians(degree=3)
    from_ply = gaussians_from_ply_bytes(gaussians_to_ply_bytes(g))
    assert torch.equal(from_ply.means, g.means)
    via_spz = spz.gaussians_from_spz_bytes(spz.gaussians_to_spz_bytes(from_ply))
    via_glb = gltf_splat.gaussians_from_glb_bytes(gltf_splat.gaussians_to_glb_bytes(via_spz))
    back = gaussians_from_ply_bytes(gaussians_to_ply_bytes(via_glb))
    assert torch.equal(back.means, via_spz.means) and torch.equal(back.sh, via_spz.sh)
    assert max_err(back.means, g.means) <= 2.0 ** -17 + 1e-7
    assert max_err(back.opacities, g.opacities) <= spz.SPZ_PRECISION["opacities"] + 1e-5


def moving_scene(frames=4, n=50) -> Scene4D:
    g = random_gaussians(n=n, degree=1)
    steps = torch.linspace(0, 1, frames)[:, None, None]
    means = g.means[None] + steps * torch.tensor([0.5, -0.2, 0.1])
    return Scene4D([ScenePart("obj", g, KeyframeMotion(means))], frames, 12.0)


def test_save_frame_files_and_manifest(tmp_path):
    scene = moving_scene()
    out = manifest.save_frame_files(scene, tmp_path, "sub/clip", ["spz", "glb"])
    assert [p.name for p in out.files["glb"]] == [f"frame_{i:05d}.glb" for i in range(4)]
    path = manifest.write_manifest(tmp_path / "sub/clip.frames.json", scene, out.files, out.times, out.counts)
    doc = manifest.read_manifest(path)
    assert doc["num_frames"] == 4 and doc["fps"] == 12.0 and doc["complete"]
    assert [f["t"] for f in doc["frames"]] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert [f["time_s"] for f in doc["frames"]] == pytest.approx([0, 1 / 12, 2 / 12, 3 / 12])
    assert doc["frames"][2]["files"]["spz"] == "clip_spz/frame_00002.spz"
    for i, t in enumerate(out.times):
        truth = scene.at(t)
        assert torch.equal(manifest.load_frame(path, i, "glb").means, truth.means)
        assert max_err(manifest.load_frame(path, i, "spz").means, truth.means) < 1e-4
    with pytest.raises(ValueError, match="no 'ply' file"):
        manifest.load_frame(path, 0, "ply")
    with pytest.raises(ValueError, match="frame format"):
        manifest.save_frame_files(scene, tmp_path, "x", ["obj"])
    with pytest.raises(ValueError):
        manifest.save_frame_files(scene, tmp_path, "../escape", ["glb"])


def test_stop_leaves_whole_frames_and_an_incomplete_manifest(tmp_path):
    scene = moving_scene(frames=5)
    calls = []
    out = manifest.save_frame_files(scene, tmp_path, "c", ["glb"], should_stop=lambda: len(calls) >= 2,
                                    callback=lambda s, t, p: calls.append(s))
    assert len(out.files["glb"]) == 2 and not out.complete
    assert not list(tmp_path.rglob("*.tmp*"))


def test_save_scene_node_writes_every_format_and_the_manifest(tmp_path, monkeypatch):
    from gen4d.nodes import host
    from gen4d.nodes.scene_io import SaveScene

    monkeypatch.setattr(host, "output_directory", lambda: tmp_path)
    scene = moving_scene(frames=3, n=20)
    result = SaveScene().save("g/scene", True, 0, "ply+spz+glb", scene=scene)
    rel = result["result"][0]
    stem = rel[: -len(".gen4d.safetensors")]
    doc = manifest.read_manifest(tmp_path / f"{stem}.frames.json")
    assert doc["scene_file"] == rel.split("/")[-1] and doc["num_frames"] == 3
    assert set(doc["frames"][0]["files"]) == {"ply", "spz", "glb"}
    for fmt in ("ply", "spz", "glb"):
        g = manifest.load_frame(tmp_path / f"{stem}.frames.json", 2, fmt)
        assert len(g) == 20 and max_err(g.means, scene.at(1.0).means) < 1e-4
    # the default stays PLY only, in the folder it always used
    result = SaveScene().save("g/scene", True, 0, scene=scene)
    stem = result["result"][0][: -len(".gen4d.safetensors")]
    assert (tmp_path / f"{stem}_ply" / "frame_00002.ply").is_file()
    assert not (tmp_path / f"{stem}_spz").exists()
    assert set(manifest.read_manifest(tmp_path / f"{stem}.frames.json")["frames"][0]["files"]) == {"ply"}
    with pytest.raises(ValueError, match="frame_format"):
        SaveScene().save("g/scene", True, 0, "obj", scene=scene)


def test_fractional_bits_bound_is_what_the_header_says():
    g = random_gaussians(n=30, degree=0, extent=0.01)
    bits = gzip.decompress(spz.gaussians_to_spz_bytes(g))[13]
    assert bits == 16 and math.isclose(2.0 ** -(bits + 1), 7.62939453125e-06)
