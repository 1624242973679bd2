# SPDX-License-Identifier: Apache-2.0
"""Scene4D: motions, composition, the safetensors scene file and PLY sequences."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch
from gen4d.core.engine import scene
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import KeyframeMotion, Motion, Scene4D, ScenePart, StaticMotion
from gen4d.core.formats import export, ply


def random_gaussians(n: int, k: int = 1) -> Gaussians:
    return Gaussians(torch.randn(n, 3), torch.randn(n, 4), torch.randn(n, 3), torch.randn(n), torch.randn(n, k, 3))


def two_part_scene(frames: int = 4) -> Scene4D:
    fg = random_gaussians(6, 4)
    motion = KeyframeMotion(torch.randn(frames, 6, 3), torch.randn(frames, 6, 4))
    traj = {"shift": torch.randn(frames, 2), "scale": torch.rand(frames) + 0.5}
    return Scene4D([ScenePart("fg", fg, motion, traj), ScenePart("bg", random_gaussians(9))], frames, 12.0)


def assert_same(a: Gaussians, b: Gaussians) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name


def test_keyframes_hit_exactly_and_interpolate_linearly():
    g = random_gaussians(5)
    means = torch.randn(4, 5, 3)
    motion = KeyframeMotion(means)
    for i in range(4):
        out = motion.apply(g, i / 3)
        assert torch.equal(out.means, means[i])
        assert out.quats is g.quats and out.sh is g.sh
    mid = motion.apply(g, 0.5).means  # halfway between frames 1 and 2
    torch.testing.assert_close(mid, 0.5 * (means[1] + means[2]), rtol=0, atol=1e-6)
    quarter = motion.apply(g, 0.25).means  # s = 0.75: between frames 0 and 1
    torch.testing.assert_close(quarter, 0.25 * means[0] + 0.75 * means[1], rtol=0, atol=1e-6)


def test_baked_frames_are_the_keyframes_bit_for_bit():
    # With 24 frames, float rounding puts 13/23 * 23 just off 13; frames must still be exact.
    means, quats = torch.randn(24, 5, 3), torch.randn(24, 5, 4)
    sc = Scene4D([ScenePart("p", random_gaussians(5), KeyframeMotion(means, quats))], 24, 8.0)
    for i, frame in enumerate(sc.bake()):
        assert torch.equal(frame.means, means[i]) and torch.equal(frame.quats, quats[i]), i


def test_single_keyframe_is_constant():
    g = random_gaussians(3)
    means = torch.randn(1, 3, 3)
    for t in (0.0, 0.4, 1.0):
        assert torch.equal(KeyframeMotion(means).apply(g, t).means, means[0])


def test_quaternion_nlerp_is_hemisphere_aligned():
    g = random_gaussians(2)
    q0 = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    axis_angle = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    half = torch.cos(torch.tensor(0.25)), torch.sin(torch.tensor(0.25))
    turn = torch.cat([half[0].expand(2, 1), half[1] * axis_angle], dim=1)  # rotation by 0.5 rad
    from gen4d.core.engine.gaussians import quat_multiply
    q1 = -quat_multiply(turn, q0)  # same rotation as +turn*q0, opposite hemisphere
    motion = KeyframeMotion(torch.zeros(2, 2, 3), torch.stack([q0, q1]))
    mid = motion.apply(g, 0.5).quats
    halfway = torch.cat([torch.cos(torch.tensor(0.125)).expand(2, 1), torch.sin(torch.tensor(0.125)) * axis_angle], 1)
    expected = quat_multiply(halfway, q0)  # nlerp of equal weights is exactly the half-angle rotation
    torch.testing.assert_close(mid, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(mid.norm(dim=-1), torch.ones(2), rtol=0, atol=1e-6)


def test_time_is_differentiable_and_checked():
    g = random_gaussians(3)
    means = torch.randn(3, 3, 3)
    t = torch.tensor(0.3, requires_grad=True)
    out = KeyframeMotion(means).apply(g, t).means
    out.sum().backward()
    torch.testing.assert_close(t.grad, ((means[1] - means[0]) * 2).sum(), rtol=1e-5, atol=1e-5)
    for bad in (-0.1, 1.5, float("nan"), torch.zeros(2), "0.5"):
        with pytest.raises(ValueError, match="t must"):
            KeyframeMotion(means).apply(g, bad)
        with pytest.raises(ValueError, match="t must"):
            StaticMotion().apply(g, bad)


def test_motion_shapes_are_validated():
    with pytest.raises(ValueError, match=r"means must be \[T>=1,N,3\]"):
        KeyframeMotion(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="quats must be"):
        KeyframeMotion(torch.zeros(2, 4, 3), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="'fg'.*7 Gaussians per frame.*has 6"):
        ScenePart("fg", random_gaussians(6), KeyframeMotion(torch.zeros(2, 7, 3)))
    with pytest.raises(TypeError, match="abstract"):
        Motion()  # type: ignore[abstract]
    with pytest.raises(ValueError, match="must be a Motion"):
        ScenePart("fg", random_gaussians(2), motion="static")  # type: ignore[arg-type]


def test_trajectory_is_validated_and_stored():
    g = random_gaussians(2)
    shift, scale = torch.randn(5, 2), torch.rand(5)
    part = ScenePart("fg", g, trajectory={"shift": shift, "scale": scale})
    assert part.trajectory["shift"] is shift
    for traj, msg in [({"shift": torch.zeros(5, 3)}, r"shift'\] must be \[T,2\]"),
                      ({"scale": torch.zeros(5, 1)}, r"scale'\] must be \[T\]"),
                      ({"shift": torch.zeros(5, 2), "scale": torch.zeros(4)}, "5 frames"),
                      ({"rotation": torch.zeros(5)}, "keys among")]:
        with pytest.raises(ValueError, match=msg):
            ScenePart("fg", g, trajectory=traj)


@pytest.mark.parametrize("kwargs, msg", [
    ({"num_frames": 0}, "num_frames"), ({"num_frames": 2.5}, "num_frames"), ({"num_frames": True}, "num_frames"),
    ({"fps": 0}, "fps"), ({"fps": float("nan")}, "fps"), ({"fps": -24.0}, "fps"), ({"parts": []}, "parts"),
    ({"parts": [ScenePart("a", Gaussians.empty()), ScenePart("a", Gaussians.empty())]}, "unique"),
])
def test_scene_validation(kwargs, msg):
    args = {"parts": [ScenePart("a", random_gaussians(2))], "num_frames": 3, "fps": 24.0, **kwargs}
    with pytest.raises(ValueError, match=msg):
        Scene4D(**args)


def test_at_concatenates_deformed_parts_and_bake_uses_frame_times():
    sc = two_part_scene(frames=4)
    fg, bg = sc.parts
    at = sc.at(2 / 3)
    assert len(at) == 15 == sc.num_gaussians and at.sh.shape[1] == 4  # SH raised to the highest degree
    assert torch.equal(at.means[:6], fg.motion.means[2])
    assert torch.equal(at.means[6:], bg.gaussians.means)
    assert torch.equal(at.sh[6:, 1:], torch.zeros(9, 3, 3))
    torch.testing.assert_close(sc.frame_times(), torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64))
    assert sc.frame_times(1).tolist() == [0.0]
    frames = sc.bake()
    assert len(frames) == 4 and all(torch.equal(f.means[:6], fg.motion.means[i]) for i, f in enumerate(frames))
    assert len(sc.bake(num_frames=7)) == 7
    assert sc.duration == pytest.approx(4 / 12)


def test_static_scene():
    g = random_gaussians(4)
    sc = Scene4D.static(g, num_frames=3)
    assert sc.num_frames == 3 and sc.parts[0].motion.kind == "static"
    assert_same(sc.at(0.7), g)


def test_save_load_round_trip_is_exact(tmp_path):
    sc = two_part_scene()
    path = sc.save(tmp_path / "scene.safetensors")
    assert os.listdir(tmp_path) == ["scene.safetensors"]
    back = Scene4D.load(path)
    assert (back.num_frames, back.fps) == (4, 12.0)
    assert [p.name for p in back.parts] == ["fg", "bg"]
    assert isinstance(back.parts[0].motion, KeyframeMotion) and isinstance(back.parts[1].motion, StaticMotion)
    for a, b in zip(sc.parts, back.parts, strict=True):
        assert_same(a.gaussians, b.gaussians)
    assert torch.equal(back.parts[0].motion.quats, sc.parts[0].motion.quats)
    assert torch.equal(back.parts[0].trajectory["scale"], sc.parts[0].trajectory["scale"])
    assert back.parts[1].trajectory is None
    for t in (0.0, 0.37, 1.0):
        assert_same(sc.at(t), back.at(t))


def test_file_layout(tmp_path):
    path = two_part_scene().save(tmp_path / "s.safetensors")
    with safetensors.safe_open(str(path), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["format"] == "gen4d-scene" and meta["version"] == "2"
    doc = json.loads(meta["scene"])
    assert doc["num_frames"] == 4 and doc["fps"] == 12.0
    assert doc["parts"][0]["name"] == "fg"
    assert doc["parts"][0]["motion"] == {"kind": "keyframes", "config": {"num_frames": 4, "has_quats": True}}
    assert {"parts.0.gaussians.means", "parts.0.motion.means", "parts.0.trajectory.shift",
            "parts.1.gaussians.sh"} <= keys
    assert not any(k.startswith("parts.1.motion") for k in keys)


def seen_view(frames: int, radius: float = 3.0, fovy: float = 40.0, size=(48, 32)) -> Cameras:
    vm = orbit_poses([5.0], [10.0], radius).expand(frames, 4, 4).clone()
    K = intrinsics_from_fov(fovy, *size).expand(frames, 3, 3).clone()
    return Cameras(vm, K, size[0], size[1], torch.linspace(0, 1, frames), 0.05, 50.0)


def test_reference_cameras_round_trip(tmp_path):
    sc = two_part_scene()
    fg, bg = sc.parts
    cams = seen_view(4)
    held = seen_view(1, radius=1.0, fovy=60.0, size=(64, 48))
    sc = Scene4D([ScenePart("fg", fg.gaussians, fg.motion, fg.trajectory, cams),
                  ScenePart("bg", bg.gaussians, reference_cameras=held)], 4, 12.0)
    back = Scene4D.load(sc.save(tmp_path / "cams.safetensors"))
    for want, got in ((cams, back.parts[0].reference_cameras), (held, back.parts[1].reference_cameras)):
        assert isinstance(got, Cameras)
        assert torch.equal(got.viewmats, want.viewmats) and torch.equal(got.Ks, want.Ks)
        assert torch.equal(got.times, want.times)
        assert (got.width, got.height, got.near, got.far) == (want.width, want.height, want.near, want.far)
    assert torch.equal(back.reference_cameras.viewmats, cams.viewmats), "the first part's record"
    assert back.to("cpu").parts[1].reference_cameras is not None, "copies keep the record"
    with pytest.raises(ValueError, match="reference_cameras hold 2 views"):
        ScenePart("fg", fg.gaussians, fg.motion, fg.trajectory, seen_view(2))


def test_version_1_files_still_load(tmp_path):
    """A file in the layout written before parts recorded cameras (version 1), built here tensor by tensor."""
    g = random_gaussians(5, 4)
    means = torch.randn(3, 5, 3)
    shift, scale = torch.randn(3, 2), torch.rand(3) + 0.5
    tensors = {**{f"parts.0.gaussians.{k}": v for k, v in g.tensors().items()},
               "parts.0.motion.means": means, "parts.0.trajectory.shift": shift, "parts.0.trajectory.scale": scale}
    doc = {"num_frames": 3, "fps": 8.0, "parts": [{"name": "foreground", "trajectory": ["scale", "shift"],
                                                   "motion": {"kind": "keyframes",
                                                              "config": {"num_frames": 3, "has_quats": False}}}]}
    meta = {"format": "gen4d-scene", "version": "1", "scene": json.dumps(doc)}
    write_raw(tmp_path / "v1.safetensors", tensors, meta)
    back = Scene4D.load(tmp_path / "v1.safetensors")
    part = back.part("foreground")
    assert part.reference_cameras is None and back.reference_cameras is None
    assert torch.equal(part.trajectory["shift"], shift) and torch.equal(back.at(0.5).means, means[1])
    # and it saves again as the current version, still without cameras
    again = Scene4D.load(back.save(tmp_path / "v2.safetensors"))
    assert again.part("foreground").reference_cameras is None


def test_shared_tensors_and_grad_tensors_save(tmp_path):
    g = random_gaussians(3).requires_grad_()
    motion = KeyframeMotion(g.means.detach().unsqueeze(0))  # a view sharing the canonical means
    sc = Scene4D([ScenePart("p", g, motion)], 1, 24)
    back = Scene4D.load(sc.save(tmp_path / "s.safetensors"))
    assert torch.equal(back.parts[0].motion.means[0], g.means.detach())


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        two_part_scene().save(tmp_path / "s.safetensors")
    assert os.listdir(tmp_path) == []


def test_save_under_root_rejects_escape(tmp_path):
    root = tmp_path / "out"
    with pytest.raises(ValueError, match="name"):
        two_part_scene().save("../s", root=root)
    assert not root.exists() and os.listdir(tmp_path) == []
    assert two_part_scene().save("scenes/a", root=root) == (root / "scenes" / "a.safetensors").resolve()


def write_raw(path, tensors, meta):
    safetensors.torch.save_file(tensors, str(path), metadata=meta)


def test_load_errors_are_clear(tmp_path):
    good = two_part_scene().save(tmp_path / "good.safetensors")
    with safetensors.safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    with pytest.raises(ValueError, match="missing.safetensors.*does not exist"):
        Scene4D.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x01\x02 not a safetensors file at all")
    with pytest.raises(ValueError, match="junk.safetensors.*not a readable safetensors"):
        Scene4D.load(tmp_path / "junk.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:-10])
    with pytest.raises(ValueError, match="cut.safetensors.*not a readable safetensors"):
        Scene4D.load(tmp_path / "cut.safetensors")
    cases = {
        "v3": ({**meta, "version": "3"}, tensors, "version '3'.*reads versions 1, 2"),
        "fmt": ({"format": "other"}, tensors, "not a gen4d scene"),
        "kind": ({**meta, "scene": meta["scene"].replace('"keyframes"', '"hexplane_v9"')}, tensors,
                 "part 0: unknown motion kind 'hexplane_v9'"),
        "json": ({**meta, "scene": "{oops"}, tensors, "corrupt scene metadata"),
        "miss": (meta, {k: v for k, v in tensors.items() if k != "parts.1.gaussians.quats"},
                 r"part 1: missing tensors \['parts.1.gaussians.quats'\]"),
        "shape": (meta, {**tensors, "parts.0.motion.means": torch.zeros(4, 5, 3)}, "part 0"),
    }
    for name, (m, t, msg) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        write_raw(path, t, m)
        with pytest.raises(ValueError, match=f"{name}.safetensors.*{msg}"):
            Scene4D.load(path)


def test_registry_lets_new_kinds_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(scene, "_MOTIONS", dict(scene._MOTIONS))

    @scene.register_motion
    class Drift(Motion):
        kind = "test_drift"

        def __init__(self, velocity, speed=1.0):
            self.velocity, self.speed = velocity, speed

        def apply(self, gaussians, t):
            return Gaussians(gaussians.means + float(t) * self.speed * self.velocity, gaussians.quats,
                             gaussians.log_scales, gaussians.logit_opacities, gaussians.sh)

        def state_dict(self):
            return {"velocity": self.velocity}

        def config(self):
            return {"speed": self.speed}

        @classmethod
        def from_state(cls, config, tensors):
            return cls(tensors["velocity"], config["speed"])

    g = random_gaussians(4)
    sc = Scene4D([ScenePart("d", g, Drift(torch.randn(4, 3), 2.0))], 5, 24)
    back = Scene4D.load(sc.save(tmp_path / "d.safetensors"))
    assert isinstance(back.parts[0].motion, Drift) and back.parts[0].motion.speed == 2.0
    assert_same(back.at(0.5), sc.at(0.5))
    assert scene.motion_class("test_drift") is Drift

    class Other(Motion):
        kind = "test_drift"

        def apply(self, gaussians, t):
            return gaussians

    with pytest.raises(ValueError, match="already registered"):
        scene.register_motion(Other)
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        scene.register_motion(type("NoKind", (Other,), {"kind": ""}))
    with pytest.raises(ValueError, match="Motion subclass"):
        scene.register_motion(dict)  # type: ignore[arg-type]


def test_ply_sequence(tmp_path):
    sc = two_part_scene(frames=3)
    seen = []
    written = export.save_ply_sequence(sc, tmp_path / "seq", "walk", callback=lambda i, n, _: seen.append((i, n)))
    assert [p.name for p in written] == ["walk_00000.ply", "walk_00001.ply", "walk_00002.ply"]
    assert sorted(os.listdir(tmp_path / "seq")) == [p.name for p in written]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    for p, t in zip(written, (0.0, 0.5, 1.0), strict=True):
        assert_same(ply.load_ply(p), sc.at(t))
    stop = iter([False, True])
    partial = export.save_ply_sequence(sc, tmp_path / "stop", "f", should_stop=lambda: next(stop))
    assert [p.name for p in partial] == ["f_00000.ply"] and os.listdir(tmp_path / "stop") == ["f_00000.ply"]
    for bad in ("a/b", "", ".."):
        with pytest.raises(ValueError, match="prefix"):
            export.save_ply_sequence(sc, tmp_path / "bad", bad)
    with pytest.raises(ValueError, match="name"):
        export.save_ply_sequence(sc, "../up", root=tmp_path / "root")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "up").exists()
