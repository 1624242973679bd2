# SPDX-License-Identifier: Apache-2.0
"""Cameras and camera paths (core/engine/cameras.py): geometry checked from first principles."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from gen4d.core.engine import cameras
from gen4d.core.engine.cameras import Cameras

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_script_orbit import script_orbit  # noqa: E402

ATOL = 1e-5


def forward_axes(viewmats: torch.Tensor) -> torch.Tensor:
    """``[C,3]`` world-space viewing direction (camera +z) of world-to-camera matrices."""
    return viewmats[:, 2, :3]


def centers(viewmats: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(viewmats)[:, :3, 3]


def angles_from_forward(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(elevation, azimuth) in degrees of a camera turned in place: +elevation looks down (+y), +azimuth
    turns the view towards -x (the orbit camera moved to +x looks back towards -x)."""
    el = torch.rad2deg(torch.asin(f[:, 1].clamp(-1, 1)))
    az = torch.rad2deg(torch.atan2(-f[:, 0], f[:, 2]))
    return el, az


def assert_rotation(R: torch.Tensor) -> None:
    eye = torch.eye(3).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, rtol=0, atol=ATOL)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[0]), rtol=0, atol=ATOL)


def test_look_at_is_orthonormal_and_centres_the_target():
    eye = torch.randn(16, 3) * 3
    target = torch.randn(16, 3)
    vm = cameras.look_at(eye, target)
    assert vm.shape == (16, 4, 4)
    assert_rotation(vm[:, :3, :3])
    torch.testing.assert_close(vm[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(16, 4), rtol=0, atol=0)
    ones = torch.ones(16, 1)
    eye_cam = (vm @ torch.cat([eye, ones], 1)[..., None])[..., 0]
    torch.testing.assert_close(eye_cam[:, :3], torch.zeros(16, 3), rtol=0, atol=1e-4)
    tgt_cam = (vm @ torch.cat([target, ones], 1)[..., None])[..., 0][:, :3]
    dist = (target - eye).norm(dim=-1)
    torch.testing.assert_close(tgt_cam, torch.stack([torch.zeros(16), torch.zeros(16), dist], -1), rtol=0, atol=1e-4)
    K = cameras.intrinsics_from_fov(50.0, 320, 240)
    pix = (K @ tgt_cam.T).T
    torch.testing.assert_close(pix[:, :2] / pix[:, 2:], torch.tensor([160.0, 120.0]).expand(16, 2), rtol=0, atol=1e-3)
    # "up" is world -y by default: the camera's y axis (down) must point along +y as far as possible.
    assert (vm[:, 1, 1] > 0).all()


def test_look_at_rejects_degenerate_input():
    with pytest.raises(ValueError, match="parallel to up"):
        cameras.look_at(torch.zeros(3), torch.tensor([0.0, -2.0, 0.0]))
    with pytest.raises(ValueError, match="coincide"):
        cameras.look_at(torch.ones(3), torch.ones(3))


def test_orbit_radius_zero_turns_in_place():
    vm = cameras.orbit_poses([0, 20, -30], [0, 45, -90], 0.0, center=(1.0, 2.0, 3.0))
    torch.testing.assert_close(centers(vm), torch.tensor([[1.0, 2, 3]]).expand(3, 3), rtol=0, atol=ATOL)
    assert_rotation(vm[:, :3, :3])
    el, az = angles_from_forward(forward_axes(vm))
    torch.testing.assert_close(el, torch.tensor([0.0, 20, -30]), rtol=0, atol=1e-3)
    torch.testing.assert_close(az, torch.tensor([0.0, 45, -90]), rtol=0, atol=1e-3)


def test_orbit_radius_positive_looks_at_centre():
    el = torch.tensor([0.0, 0.0, 30.0, -45.0, 10.0])
    az = torch.tensor([0.0, 90.0, 0.0, 180.0, -60.0])
    c = torch.tensor([0.5, -1.0, 2.0])
    vm = cameras.orbit_poses(el, az, 3.0, center=c.tolist())
    cam = centers(vm)
    torch.testing.assert_close((cam - c).norm(dim=-1), torch.full((5,), 3.0), rtol=0, atol=1e-4)
    torch.testing.assert_close(forward_axes(vm), torch.nn.functional.normalize(c - cam, dim=-1), rtol=0, atol=ATOL)
    offset = (cam - c) / 3.0
    torch.testing.assert_close(offset[0], torch.tensor([0.0, 0, -1]), rtol=0, atol=ATOL)  # behind, looking +z
    torch.testing.assert_close(offset[1], torch.tensor([1.0, 0, 0]), rtol=0, atol=ATOL)  # +azimuth -> +x
    assert offset[2, 1] == pytest.approx(-0.5, abs=1e-5)  # +elevation -> up (-y)
    with pytest.raises(ValueError, match="elevations"):
        cameras.orbit_poses([90.0], [0.0], 1.0)
    with pytest.raises(ValueError, match="radius"):
        cameras.orbit_poses([0.0], [0.0], -1.0)


@pytest.mark.parametrize("loop, expected", [
    (1, [(0.0, 30.0), (0.0, -30.0), (15.0, 0.0), (-15.0, 0.0)]),
    (2, [(15.0, 30.0), (15.0, -30.0), (-15.0, 30.0), (-15.0, -30.0)]),
])
def test_coco4d_outpaint_loops(loop, expected):
    cams = cameras.coco4d_outpaint_poses(loop, 512, 512)
    assert len(cams) == 4 and (cams.near, cams.far) == (0.1, 10000.0)
    torch.testing.assert_close(cams.fovy_deg, torch.full((4,), 60.0), rtol=0, atol=1e-3)
    torch.testing.assert_close(cams.centers, torch.zeros(4, 3), rtol=0, atol=ATOL)
    el, az = angles_from_forward(forward_axes(cams.viewmats))
    got = sorted(zip([round(v, 3) for v in el.tolist()], [round(v, 3) for v in az.tolist()], strict=True))
    assert got == sorted(expected)
    assert torch.equal(cams.times, torch.zeros(4))


def test_coco4d_with_radius_is_relative_to_the_reference_camera():
    cams = cameras.coco4d_outpaint_poses(1, 64, 64, radius=2.0)
    pivot = torch.tensor([0.0, 0.0, 2.0])  # the orbit centre, 2 units ahead of the identity camera
    torch.testing.assert_close((cams.centers - pivot).norm(dim=-1), torch.full((4,), 2.0), rtol=0, atol=1e-4)
    torch.testing.assert_close(forward_axes(cams.viewmats), torch.nn.functional.normalize(pivot - cams.centers, dim=-1),
                               rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="loop"):
        cameras.coco4d_outpaint_poses(3, 64, 64)


@pytest.mark.parametrize("frames, size, elevation_arg, azimuth_frac", [(24, 256, 0, 0.0), (9, 64, 30, 0.25)])
def test_diffusion4d_orbit_matches_the_official_render_script(frames, size, elevation_arg, azimuth_frac):
    """Our default orbit = the frames of VITA-Group/Diffusion4D rendering/blender.py --mode_multi, written out in
    Blender's conventions in render_script_orbit.py (positions, orientations, focal length, times)."""
    want_vm, want_K, want_t = script_orbit(frames, size, 2.0, elevation_arg, azimuth_frac)
    # the script's --elevation N is the slope N/180 of the view direction; --azimuth f starts the turn at -360 f
    elevation_deg = math.degrees(math.atan(elevation_arg / 180.0))
    cams = cameras.diffusion4d_orbit(size, size, frames, elevation_deg, 2.0, start_azimuth_deg=-360.0 * azimuth_frac)
    got_vm = cams.viewmats.double()
    torch.testing.assert_close(got_vm[:, :3, :3], want_vm[:, :3, :3], rtol=0, atol=1e-5)  # orientations
    torch.testing.assert_close(centers(got_vm), centers(want_vm), rtol=0, atol=1e-5)  # positions
    torch.testing.assert_close(cams.Ks.double(), want_K.expand(frames, 3, 3), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(cams.times.double(), want_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_vm[-1], got_vm[0], rtol=0, atol=1e-5)  # the last view returns to the first
    static = cameras.diffusion4d_orbit(size, size, frames, elevation_deg, 2.0, start_azimuth_deg=-360.0 * azimuth_frac,
                                       dynamic=False)  # --mode_static: the same views at frame 0
    torch.testing.assert_close(static.viewmats, cams.viewmats, rtol=0, atol=0)
    assert torch.equal(static.times, torch.zeros(frames))


def test_script_orbit_turns_towards_the_front_views_right():
    """The written-out script itself: frame 0 looks at the front (camera on -z), a quarter turn later the camera is
    on +x, the front view's right-hand side (image x)."""
    vm, _, _ = script_orbit(5, 32)
    c = centers(vm)
    torch.testing.assert_close(c[0], torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(c[1], torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(vm[0, 0, :3], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(vm[0, 1, :3], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-9)


def test_diffusion4d_open_loop_option():
    cams = cameras.diffusion4d_orbit(dynamic=True, convention="open_loop")
    cam = cams.centers
    az = torch.rad2deg(torch.atan2(cam[:, 0], -cam[:, 2]))
    step = torch.remainder(az.roll(-1) - az, 360.0)
    torch.testing.assert_close(step, torch.full((24,), 15.0), rtol=0, atol=1e-3)
    torch.testing.assert_close(cams.times, torch.linspace(0, 1, 24), rtol=0, atol=1e-7)
    torch.testing.assert_close(cam.norm(dim=-1), torch.full((24,), 2.0), rtol=0, atol=1e-4)
    assert torch.equal(cameras.orbit_azimuth_steps(1), torch.zeros(1))
    with pytest.raises(ValueError, match="convention must be one of"):
        cameras.diffusion4d_orbit(convention="clockwise")


@pytest.mark.parametrize("name", cameras.MOGE4D_PATHS)
def test_moge4d_paths_start_at_identity(name):
    cams = cameras.moge4d_path(name, 25, 64, 48, pivot_depth=3.0)
    assert len(cams) == 25
    torch.testing.assert_close(cams.viewmats[0], torch.eye(4), rtol=0, atol=ATOL)
    torch.testing.assert_close(cams.times, torch.linspace(0, 1, 25), rtol=0, atol=1e-7)
    assert_rotation(cams.viewmats[:, :3, :3])
    pivot = torch.tensor([0.0, 0.0, 3.0])
    if name != "forward_backward":  # arcs keep their distance to the pivot and look at it
        torch.testing.assert_close((cams.centers - pivot).norm(dim=-1), torch.full((25,), 3.0), rtol=0, atol=1e-4)
    torch.testing.assert_close(forward_axes(cams.viewmats)[1:],
                               torch.nn.functional.normalize(pivot - cams.centers, dim=-1)[1:], rtol=0, atol=1e-4)


def test_moge4d_specific_paths():
    p = 2.0
    right = cameras.moge4d_path("right_90", 9, 64, 64, pivot_depth=p)
    torch.testing.assert_close(right.centers[-1], torch.tensor([p, 0.0, p]), rtol=0, atol=1e-4)
    torch.testing.assert_close(forward_axes(right.viewmats)[-1], torch.tensor([-1.0, 0, 0]), rtol=0, atol=ATOL)
    left = cameras.moge4d_path("left_90", 9, 64, 64, pivot_depth=p)
    torch.testing.assert_close(left.centers[-1], torch.tensor([-p, 0.0, p]), rtol=0, atol=1e-4)
    assert cameras.moge4d_path("up_90", 9, 64, 64, pivot_depth=p).centers[-1, 1] < -1.9  # up is -y
    fb = cameras.moge4d_path("forward_backward", 9, 64, 64, pivot_depth=p)
    torch.testing.assert_close(fb.viewmats[-1], torch.eye(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(fb.centers[4], torch.tensor([0.0, 0.0, p / 2]), rtol=0, atol=1e-5)
    assert (fb.centers[1:5, 2].diff() > 0).all() and (fb.centers[4:, 2].diff() < 0).all()
    rot30 = cameras.moge4d_path("rotate_left_30", 5, 64, 64, pivot_depth=p)
    angle = torch.rad2deg(torch.atan2(rot30.centers[-1, 0], p - rot30.centers[-1, 2]))
    assert angle.item() == pytest.approx(-30.0, abs=1e-3)
    static = cameras.moge4d_path("static", 4, 64, 64)
    torch.testing.assert_close(static.viewmats, torch.eye(4).expand(4, 4, 4), rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="name must be one of"):
        cameras.moge4d_path("spiral", 4, 64, 64)
    with pytest.raises(ValueError, match="pivot_depth"):
        cameras.moge4d_path("orbit", 4, 64, 64, pivot_depth=0.0)


def test_keyframe_path_passes_through_keys_monotonically():
    keys = [{"t": 0.0, "azimuth": 0.0, "elevation": 10.0, "radius": 2.0},
            {"t": 0.5, "azimuth": 90.0, "radius": 3.0, "fovy": 40.0},
            {"t": 1.0, "azimuth": 100.0}]
    cams = cameras.keyframe_path(keys, 21, 64, 64, fovy_deg=60.0)
    cam = cams.centers
    radius = cam.norm(dim=-1)
    el = torch.rad2deg(torch.asin(-cam[:, 1] / radius))
    az = torch.rad2deg(torch.atan2(cam[:, 0], -cam[:, 2]))
    for frame, (a, r, fov) in {0: (0.0, 2.0, 60.0), 10: (90.0, 3.0, 40.0), 20: (100.0, 3.0, 40.0)}.items():
        assert az[frame].item() == pytest.approx(a, abs=1e-3)
        assert radius[frame].item() == pytest.approx(r, abs=1e-4)
        assert cams.fovy_deg[frame].item() == pytest.approx(fov, abs=1e-3)
    torch.testing.assert_close(el, torch.full((21,), 10.0), rtol=0, atol=1e-3)  # carried over
    assert (az.diff() > 0).all() and az.max() <= 100.0 + 1e-3  # monotone, no overshoot
    assert (radius[:11].diff() > 0).all() and torch.allclose(radius[10:], torch.tensor(3.0), atol=1e-4)
    assert (az[1:10] < 90.0).all() and (az[11:20] > 90.0).all()
    torch.testing.assert_close(cams.times, torch.linspace(0, 1, 21), rtol=0, atol=1e-7)


def test_keyframe_path_errors():
    with pytest.raises(ValueError, match="distinct"):
        cameras.keyframe_path([{"t": 0.5}, {"t": 0.5}], 3, 8, 8)
    with pytest.raises(ValueError, match="t must lie"):
        cameras.keyframe_path([{"t": 1.5}], 3, 8, 8)
    with pytest.raises(ValueError, match="unknown keys"):
        cameras.keyframe_path([{"t": 0.0, "roll": 3}], 3, 8, 8)
    with pytest.raises(ValueError, match="at least one"):
        cameras.keyframe_path([], 3, 8, 8)


def test_intrinsics_and_validation_errors():
    K = cameras.intrinsics_from_fov(90.0, 200, 100)
    assert K[1, 1].item() == pytest.approx(50.0) and K[0, 0].item() == pytest.approx(50.0)
    assert (K[0, 2].item(), K[1, 2].item()) == (100.0, 50.0)
    for fov in (0.0, -10.0, 180.0):
        with pytest.raises(ValueError, match="fovy_deg"):
            cameras.intrinsics_from_fov(fov, 64, 64)
    vm, ks, times = torch.eye(4)[None].repeat(2, 1, 1), K[None].repeat(2, 1, 1), torch.zeros(2)
    Cameras(vm, ks, 200, 100, times)
    bad = [
        (dict(viewmats=vm[:, :3]), "viewmats"), (dict(Ks=ks[:1]), "Ks"), (dict(times=torch.zeros(3)), "times"),
        (dict(width=0), "width"), (dict(near=1.0, far=0.5), "near"),
        (dict(Ks=ks * torch.tensor([-1.0, 1, 1])[:, None]), "focal"),
        (dict(viewmats=vm * float("nan")), "finite"),
    ]
    for change, msg in bad:
        args = {**dict(viewmats=vm, Ks=ks, width=200, height=100, times=times), **change}
        with pytest.raises(ValueError, match=msg):
            Cameras(**args)


def test_cameras_helpers():
    cams = cameras.diffusion4d_orbit(64, 32, num_views=6)
    assert len(cams[2]) == 1 and len(cams[-1]) == 1 and torch.equal(cams[-1].viewmats[0], cams.viewmats[5])
    both = Cameras.cat([cams, cams[:2]])
    assert len(both) == 8 and torch.equal(both.times[6:], cams.times[:2])
    half = cams.resized(32, 16)
    torch.testing.assert_close(half.Ks[:, :2, :], cams.Ks[:, :2, :] * 0.5, rtol=0, atol=0)
    torch.testing.assert_close(half.fovy_deg, cams.fovy_deg, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="image sizes differ"):
        Cameras.cat([cams, half])
    torch.testing.assert_close(cams.camtoworlds @ cams.viewmats, torch.eye(4).expand(6, 4, 4), rtol=0, atol=1e-5)
    assert math.isclose(float(cams.fovy_deg[0]), 39.598, abs_tol=1e-3), "Blender's default 50 mm / 36 mm camera"


def test_clip_cameras_hold_rescale_and_default():
    from gen4d.core.engine.cameras import Cameras, clip_cameras, coco4d_reference_cameras

    default = clip_cameras(None, 3, 32, 24)
    assert torch.equal(default.viewmats, torch.eye(4).expand(3, 4, 4))
    assert torch.allclose(default.fovy_deg, torch.full((3,), 60.0), atol=1e-4)
    assert torch.equal(default.times, torch.tensor([0.0, 0.5, 1.0])) and (default.near, default.far) == (0.1, 10000.0)
    one = coco4d_reference_cameras(64, 48, 1, fovy_deg=40.0)
    held = clip_cameras(one, 4, 32, 24)
    assert len(held) == 4 and (held.width, held.height) == (32, 24)
    assert torch.allclose(held.Ks[0, 0, 0], one.Ks[0, 0, 0] / 2)
    assert torch.equal(held.times, torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="cameras hold 2 views for 4 frames"):
        clip_cameras(coco4d_reference_cameras(32, 24, 2), 4, 32, 24, who="node")
    with pytest.raises(TypeError, match="node: cameras must be Cameras"):
        clip_cameras("front", 4, 32, 24, who="node")
    assert isinstance(held, Cameras)


def _ring(center, n=10, radius=3.0, fovy=40.0, jitter=0.0):
    g = torch.Generator().manual_seed(3)
    el = torch.empty(n).uniform_(-20.0, 30.0, generator=g)
    az = torch.linspace(0.0, 360.0, n + 1)[:-1]
    vm = cameras.orbit_poses(el, az, radius, center=center)
    if jitter:  # aim each camera a little off the centre: the axes then only nearly meet
        tilt = cameras.look_at(torch.zeros(n, 3), torch.randn(n, 3, generator=g) * jitter + torch.tensor([0, 0, 1.0]))
        vm = tilt @ vm
    K = cameras.intrinsics_from_fov(fovy, 64, 48).expand(n, 3, 3).clone()
    return Cameras(vm, K, 64, 48, torch.linspace(0, 1, n), 0.01, 100.0)


@pytest.mark.parametrize("center", [(0.0, 0.0, 0.0), (1.5, -0.7, 4.0)])
def test_gaze_sphere_finds_where_the_cameras_look_and_a_radius_every_view_holds(center):
    found, radius = cameras.gaze_sphere(_ring(center))
    assert torch.allclose(torch.tensor(found), torch.tensor(center), atol=1e-5)
    # fill 0.6 of the narrower half-view (the 48-pixel height: fovy 40) at the distance 3
    assert radius == pytest.approx(0.6 * 3.0 * math.tan(math.radians(20.0)), rel=1e-5)
    found, _ = cameras.gaze_sphere(_ring(center, jitter=0.02))
    assert torch.dist(torch.tensor(found), torch.tensor(center)) < 0.2  # least squares, not one camera's axis


def test_gaze_sphere_refuses_cameras_whose_axes_do_not_meet():
    one = _ring((0.0, 0.0, 0.0))[0:1]
    with pytest.raises(ValueError, match="do not cross"):
        cameras.gaze_sphere(one)
    side_by_side = torch.eye(4).repeat(3, 1, 1)
    side_by_side[:, 0, 3] = torch.arange(3.0)  # three cameras in a row, all looking along +z
    parallel = Cameras(side_by_side, cameras.intrinsics_from_fov(40.0, 32, 32).expand(3, 3, 3).clone(), 32, 32,
                       torch.zeros(3), 0.01, 100.0)
    with pytest.raises(ValueError, match="do not cross"):
        cameras.gaze_sphere(parallel)
    ring = _ring((0.0, 0.0, 0.0))
    backwards = Cameras(torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0])) @ ring.viewmats, ring.Ks, 64, 48,
                        ring.times, 0.01, 100.0)  # each camera turned round: the common point is behind them
    with pytest.raises(ValueError, match="behind"):
        cameras.gaze_sphere(backwards)
