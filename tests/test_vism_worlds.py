# SPDX-License-Identifier: Apache-2.0
"""4D-ViSM (``Gen4D_ViSMRender``) on worlds built for this file alone, against ray-cast ground truth.

Three worlds that no other test uses, each a room (textured floor and back wall) with:

- ``spin``: a box and a sphere spinning in place by 70-120 degrees over the clip (surfaces seen in
  the input image turn away, the unseen sides turn in);
- ``ball``: a static sphere and a low crate (large view changes show the sphere's unseen side);
- ``travel``: a box travelling across while turning, past a static pillar.

Every size, texture scale, position and turning direction is drawn from a seeded generator. The
exact tracks are ``synthetic.trajectories`` of the input camera (the identity, fovy 60) and the
renders run through the node with its defaults, no inpainter, along three MoGe4D paths about the
objects' depth: ``orbit``, ``rotate_left_30`` and ``right_90``.

Ground truth of the holes, independent of ``core.moge4d.vism``: a novel-view pixel is a true
disocclusion when its ray (cast at the camera's time) hits nothing, or hits a surface point that,
carried back to time 0 by its part's rigid motion, is not visible from the input camera (outside
its image, behind it, or occluded: the input ray through its exact projection meets another
part or another depth first).
"""

import math

import pytest
import torch
from gen4d.backends.render import render_scene
from gen4d.core.engine.cameras import intrinsics_from_fov, moge4d_path
from gen4d.core.engine.gaussians import quat_to_rotmat
from gen4d.core.moge4d import vism
from gen4d.core.moge4d.tracks import Tracks
from gen4d.synthetic import (
    Box,
    Chain,
    Checker,
    Fixed,
    Gradient,
    Rectangle,
    Shaded,
    Sphere,
    Stripes,
    Swing,
    Travel,
    Waves,
    World,
    render,
    trajectories,
)
from node_runner import run
from world_truth import true_holes

W, H, T = 128, 96, 3
PATHS = ("orbit", "rotate_left_30", "right_90")
PIVOT = 3.0


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _room(g):
    floor = Rectangle(name="floor", half_size=(14.0, 8.0),
                      texture=Checker((0.75, 0.7, 0.55), (0.35, 0.3, 0.25), size=_u(g, 0.35, 0.55)),
                      motion=Fixed(translation=(0.0, 1.0, 4.0), axis=(1.0, 0.0, 0.0), angle_deg=90.0))
    wall = Rectangle(name="wall", half_size=(14.0, 8.0),
                     texture=Checker(Waves((0.55, 0.6, 0.7), 0.25, ((0.4, 0.1, 0.0), (0.0, 0.3, 0.0), (0.2, 0.2, 0.0)),
                                           (_u(g, 0, 6), _u(g, 0, 6), _u(g, 0, 6))),
                                     (0.25, 0.3, 0.45), size=_u(g, 0.5, 0.8)),
                     motion=Fixed(translation=(0.0, -5.0, _u(g, 5.5, 6.5))))
    return [floor, wall]


def spin_world(seed: int = 0) -> World:
    g = torch.Generator().manual_seed(1000 + seed)
    sign = 1.0 if _u(g, 0, 1) < 0.5 else -1.0
    hb = _u(g, 0.35, 0.5)
    box = Box(name="box", half_size=(hb, _u(g, 0.4, 0.55), hb * _u(g, 0.7, 1.0)),
              texture=Shaded(Checker((0.9, 0.3, 0.2), (0.95, 0.9, 0.3), size=_u(g, 0.12, 0.2))),
              motion=Chain((Fixed(translation=(-0.75, 0.2, _u(g, 2.8, 3.2))),
                            Swing(axis=(0.0, 1.0, 0.0), amplitude_deg=sign * _u(g, 70, 100), cycles=0.25),
                            Fixed(axis=(0.0, 1.0, 0.0), angle_deg=_u(g, 10, 35)))))
    ball = Sphere(name="ball", radius=_u(g, 0.4, 0.55),
                  texture=Shaded(Stripes((0.2, 0.5, 0.9), (0.95, 0.95, 0.95), _u(g, 0.2, 0.3), (1.0, 0.3, 0.2))),
                  motion=Chain((Fixed(translation=(0.85, 0.0, _u(g, 3.3, 3.8))),
                                Swing(axis=(0.3, 1.0, 0.1), amplitude_deg=-sign * _u(g, 80, 120), cycles=0.25))))
    return World("spin", (*_room(g), box, ball), background=(0.7, 0.8, 0.95))


def ball_world(seed: int = 0) -> World:
    g = torch.Generator().manual_seed(2000 + seed)
    r = _u(g, 0.55, 0.8)
    ball = Sphere(name="ball", radius=r,
                  texture=Shaded(Checker((0.3, 0.75, 0.35), (0.9, 0.9, 0.85), size=_u(g, 0.15, 0.25))),
                  motion=Fixed(translation=(_u(g, -0.2, 0.2), 1.0 - r - _u(g, 0.0, 0.3), _u(g, 2.8, 3.2))))
    crate = Box(name="crate", half_size=(0.3, 0.3, 0.3),
                texture=Shaded(Stripes((0.8, 0.5, 0.2), (0.3, 0.2, 0.1), 0.2)),
                motion=Fixed(translation=(_u(g, -1.6, -1.2), 0.7, _u(g, 3.8, 4.4)), axis=(0.0, 1.0, 0.0),
                             angle_deg=_u(g, 10, 40)))
    return World("ball", (*_room(g), ball, crate), background=(0.7, 0.8, 0.95))


def travel_world(seed: int = 0) -> World:
    g = torch.Generator().manual_seed(3000 + seed)
    sign = 1.0 if _u(g, 0, 1) < 0.5 else -1.0
    z = _u(g, 2.6, 3.0)
    cart = Box(name="cart", half_size=(_u(g, 0.3, 0.45), 0.3, 0.3),
               texture=Shaded(Gradient((0.9, 0.2, 0.5), (0.2, 0.3, 0.9), direction=(1.0, 0.0, 0.0), start=-0.45,
                                       end=0.45)),
               motion=Chain((Travel((-0.9 * sign, 0.3, z), (0.9 * sign, 0.3, z + 0.4), ease=False),
                             Swing(axis=(0.0, 1.0, 0.0), amplitude_deg=_u(g, 20, 40), cycles=0.25))))
    pillar = Box(name="pillar", half_size=(0.25, 1.0, 0.25),
                 texture=Shaded(Stripes((0.9, 0.85, 0.8), (0.4, 0.4, 0.6), 0.25, (0.0, 1.0, 0.0))),
                 motion=Fixed(translation=(1.6 * sign, 0.0, _u(g, 4.0, 4.5))))
    return World("travel", (*_room(g), cart, pillar), background=(0.7, 0.8, 0.95))


WORLDS = {"spin": spin_world, "ball": ball_world, "travel": travel_world}


def _iou(a, b):
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def _psnr(a, b, mask):
    return -10.0 * math.log10(float(((a.clamp(0, 1) - b) ** 2)[mask].mean()))


def _render_fn(scene, cams):
    out = render_scene(scene, cams)
    return out.rgb, out.alpha, out.depth


def measure() -> dict:
    """Per world and path: the node's hole mask and raw render, and the ground truth."""
    out = {}
    for name, build in WORLDS.items():
        world = build(0)
        src = world.reference_cameras(W, H, T)
        truth = trajectories(world, src)
        truth["colors"] = render(world, src[0], supersample=3)["rgb"][0]
        tracks = Tracks.from_world_dict(truth, src.Ks[0], src.viewmats[0], 8.0)
        for path in PATHS:
            cams = moge4d_path(path, T, W, H, pivot_depth=PIVOT, fovy_deg=60.0)
            _, raw, holes, _ = run("Gen4D_ViSMRender", cameras=cams, tracks=tracks)
            out[name, path] = dict(world=world, tracks=tracks, cams=cams, holes=holes > 0.5, raw=raw,
                                   truth=true_holes(world, src, cams),
                                   rgb=render(world, cams, supersample=3)["rgb"])
    return out


@pytest.fixture(scope="module")
def measured(one_thread):
    return measure()


# Measured at 128x96, 3 frames (t = 0, 0.5, 1), pooled over the two novel frames. Hole IoU
# before (isotropic splats, no back-facing test) -> after:
#   spin   orbit 0.940 -> 0.940   rotate_left_30 0.875 -> 0.922   right_90 0.756 -> 0.888
#   ball   orbit 0.962 -> 0.971   rotate_left_30 0.923 -> 0.951   right_90 0.815 -> 0.872
#   travel orbit 0.982 -> 0.979   rotate_left_30 0.957 -> 0.970   right_90 0.846 -> 0.883
#   all nine pooled 0.856 -> 0.911
# Worst novel frame, PSNR outside the flagged holes: spin 17.06 -> 18.64 dB, ball 19.80 -> 20.26 dB,
# travel 18.15 -> 18.15 dB (all on right_90); input view 25.3-26.0 -> 25.5-26.3 dB. With seeds 1 and 2
# of the same worlds the right_90 IoU moves 0.763-0.799 -> 0.822-0.897 (the ball world lowest: 0.822
# and 0.844, below RIGHT_90_IOU: most of its shortfall is wall and floor flagged where their rays cross
# the ball's shadow from the side, which the hole test does on purpose, what lies there being unknown).
RIGHT_90_IOU = 0.86
POOLED_IOU = 0.88
MIN_PSNR = 17.8


def test_hole_mask_on_large_view_changes(measured):
    iou = {name: _iou(measured[name, "right_90"]["holes"][1:], measured[name, "right_90"]["truth"][1:])
           for name in WORLDS}
    assert min(iou.values()) >= RIGHT_90_IOU, iou
    for name in WORLDS:
        assert measured[name, "right_90"]["truth"][1:].float().mean() > 0.2      # the path really disoccludes


def test_hole_mask_pooled_over_worlds_and_paths(measured):
    inter = union = 0
    for m in measured.values():
        est, gt = m["holes"], m["truth"]
        assert not est[0].any() and not gt[0].any()                 # the input view at time 0
        inter += int((est[1:] & gt[1:]).sum())
        union += int((est[1:] | gt[1:]).sum())
    assert inter / union >= POOLED_IOU, inter / union


def test_render_outside_holes(measured):
    worst = {}
    for (name, path), m in measured.items():
        known = ~m["holes"]
        assert _psnr(m["raw"][0], m["rgb"][0], known[0]) >= 24.0, (name, path)   # input view (measured 25.5-26.3)
        worst[name, path] = min(_psnr(m["raw"][k], m["rgb"][k], known[k]) for k in range(1, T))
    assert min(worst.values()) >= MIN_PSNR, worst


def test_without_the_additions_the_spinning_world_fails(measured):
    """Negative control: the paper's plain splats (isotropic, every splat drawn) on the spin world's 90 degree path."""
    m = measured["spin", "right_90"]
    plain = vism.render_vism(m["tracks"], m["cams"], _render_fn,
                             vism.VismConfig(surface_splats=False, backface_test=False))
    assert _iou(plain.holes[1:], m["truth"][1:]) < RIGHT_90_IOU
    assert plain.backface_depth is None


# --------------------------------------------------------------------------- surface frames


def _spinning_ball(frames: int = 3, w: int = 96, h: int = 72):
    world = World("one", (Sphere(name="ball", radius=1.0, texture=Shaded(Checker(size=0.2)),
                                 motion=Chain((Fixed(translation=(0.1, -0.1, 2.5)),
                                               Swing(axis=(0.2, 1.0, 0.3), amplitude_deg=100.0, cycles=0.25)))),),
                  background=(1.0, 1.0, 1.0))
    src = world.reference_cameras(w, h, frames)
    truth = trajectories(world, src)
    return world, src, Tracks.from_world_dict(truth, src.Ks[0], src.viewmats[0], 8.0)


def _angle_deg(a, b):
    return torch.rad2deg(torch.acos((torch.nn.functional.normalize(a, dim=-1)
                                     * torch.nn.functional.normalize(b, dim=-1)).sum(-1).clamp(-1, 1)))


def test_surface_normals_turn_with_the_motion(one_thread):
    world, src, tracks = _spinning_ball()
    splats = vism.surface_splats(tracks)
    poses = world.poses(tracks.frame_times())[0]                     # [T,4,4] of the sphere
    q = tracks.frame_times()
    for k in range(tracks.num_frames):
        pts = tracks.points[k][tracks.valid].double()
        true_n = pts - poses[k, :3, 3]                               # sphere normals at frame k
        est_n = quat_to_rotmat(splats.quats[k].double())[..., :, 2]
        err = _angle_deg(est_n, true_n)
        # measured at every frame: median 0.54 deg, 95th percentile 5.4 deg, worst 14.6 deg (near the limb,
        # where the 5x5 window averages over the curve)
        assert float(err.median()) < 1.5 and float(err.quantile(0.95)) < 8.0 and float(err.max()) < 20.0, \
            (float(q[k]), float(err.median()), float(err.quantile(0.95)), float(err.max()))
    # Not just the frame-0 normals: the sphere turned by ~100 degrees, frame 0's normals are far off at t=1.
    n0 = quat_to_rotmat(splats.quats[0].double())[..., :, 2]
    moved = tracks.points[-1][tracks.valid].double() - poses[-1, :3, 3]
    assert float(_angle_deg(n0, moved).median()) > 45.0


def test_surface_splats_cover_the_input_view_like_the_isotropic_ones(one_thread):
    _, src, tracks = _spinning_ball()
    splats = vism.surface_splats(tracks)
    assert splats.scales.shape == (tracks.num_valid, 3) and splats.quats.shape == (tracks.num_frames,
                                                                                   tracks.num_valid, 4)
    iso = vism.footprint_scales(tracks.source_depth(), tracks.K, 0.3)[tracks.valid]
    assert torch.all(splats.scales[:, 2] <= 0.051 * iso)             # flat: thickness 0.05 of the footprint
    assert torch.all(splats.scales[:, 1] >= 0.49 * iso)
    # facing the camera, the in-plane stds are the footprint; at the limb the grazing axis stretches
    # (measured: minor axis median 1.00 x the footprint, major axis up to 3.4 x)
    assert float((splats.scales[:, 1] / iso).median()) == pytest.approx(1.0, abs=0.05)
    assert float((splats.scales[:, 0] / iso).max()) > 2.5
    out = vism.render_vism(tracks, src[:1], _render_fn)
    inner = torch.nn.functional.max_pool2d((~tracks.valid)[None, None].float(), 3, 1, 1)[0, 0] == 0
    assert float(out.alpha[0][inner].min()) >= 0.94 and not out.holes[0][inner].any()


def _plane_tracks(turn_deg: float, w: int = 24, h: int = 16, z: float = 3.0):
    """A textured plane facing the camera at frame 0, turned by ``turn_deg`` about its vertical axis at frame 1."""
    K = intrinsics_from_fov(60.0, w, h)
    j = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w) + 0.5
    i = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) + 0.5
    p0 = torch.stack([(j - K[0, 2]) / K[0, 0] * z, (i - K[1, 2]) / K[1, 1] * z, torch.full_like(j, z)], -1)
    a = math.radians(turn_deg)
    rot = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    centre = torch.tensor([0.0, 0.0, z])
    p1 = (p0 - centre) @ rot.T + centre
    return Tracks(torch.stack([p0, p1]), torch.rand(h, w, 3), torch.ones(h, w, dtype=torch.bool),
                  torch.ones(2, h, w, dtype=torch.bool), K, torch.eye(4), 8.0), K


def test_back_facing_splats_open_holes(one_thread):
    tracks, K = _plane_tracks(160.0)                                 # turned away, seen from behind at t=1
    cams = moge4d_path("static", 2, tracks.width, tracks.height, pivot_depth=3.0, K=K)
    out = vism.render_vism(tracks, cams, _render_fn)
    drawn = vism.render_vism(tracks, cams, _render_fn, vism.VismConfig(backface_test=False))
    shown = drawn.alpha[1] >= 0.8                                    # where the turned plane's back shows
    assert float(shown.float().mean()) > 0.7
    assert not out.holes[0].any()
    assert out.holes[1][shown].all() and float(out.alpha[1].max()) < 0.05
    # a plane turned by 40 degrees still faces the camera: drawn, no holes where it covers
    tracks, K = _plane_tracks(40.0)
    out = vism.render_vism(tracks, cams, _render_fn)
    assert float(out.alpha[1].max()) > 0.9 and torch.isinf(out.backface_depth[1]).all()


def test_back_facing_depth_in_the_hole_test():
    alpha = torch.ones(2, 2)
    depth = torch.full((2, 2), 6.0)
    back = torch.tensor([[float("inf"), 3.0], [5.9, 7.0]])
    holes = vism.hole_mask(alpha, depth, None, vism.VismConfig(depth_tolerance=0.05), back)
    assert holes.tolist() == [[False, True], [False, False]]


def test_surface_splats_of_collapsed_tracks_are_proper_frames():
    """Tracks that all sit on one point (a degenerate generator output) still give rotations and finite splats."""
    K = intrinsics_from_fov(60.0, 8, 6)
    pts = torch.tensor([0.3, 0.2, 1.0]).expand(2, 6, 8, 3).clone()
    tracks = Tracks(pts, torch.rand(6, 8, 3), torch.ones(6, 8, dtype=torch.bool), torch.ones(2, 6, 8, dtype=torch.bool),
                    K, torch.eye(4), 8.0)
    splats = vism.surface_splats(tracks)
    normal = quat_to_rotmat(splats.quats[0].double())[..., :, 2]
    assert torch.allclose(normal, splats.normals.double(), atol=1e-5)   # the frame's third axis is the normal
    assert torch.isfinite(splats.scales).all() and (splats.scales > 0).all()
