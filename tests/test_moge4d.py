# SPDX-License-Identifier: Apache-2.0
"""MoGe4D: back-projection, depth-guided motion normalisation (eq. 1) and MAdaNorm (eqs. 4-6)."""

from __future__ import annotations

import math

import pytest
import torch
from gen4d import synthetic
from gen4d.core.moge4d.strag import (
    MAdaNorm,
    backproject,
    denormalize_motion,
    depth_condition,
    fuse_motion,
    motion_intrinsics,
    motion_tokens,
    normalize_motion,
    official_pinhole,
    valid_frame_counts,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_official_pinhole_reading():
    K = official_pinhole(540, 960)  # the reference aspect itself: fx = W, fy = H
    assert torch.allclose(K, torch.tensor([[960.0, 0, 480], [0, 540, 270], [0, 0, 1]]))
    K = official_pinhole(368, 512)  # wider reference: fx_n = 1, fy_n = (960/540)/(512/368)
    assert math.isclose(float(K[0, 0]), 512.0, rel_tol=1e-6)
    assert math.isclose(float(K[1, 1]), (960 / 540) / (512 / 368) * 368, rel_tol=1e-6)
    assert (float(K[0, 2]), float(K[1, 2])) == (256.0, 184.0)
    K = official_pinhole(512, 512)  # square: 960/512 > 540/512 -> fx_n = 1, fy_n = 960/540
    assert math.isclose(float(K[0, 0]), 512.0, rel_tol=1e-6)
    assert math.isclose(float(K[1, 1]), 960 / 540 * 512, rel_tol=1e-6)
    K = official_pinhole(100, 400)  # wider than reference: fx_n = (540/960)/(100/400), fy_n = 1
    assert math.isclose(float(K[0, 0]), (540 / 960) / (100 / 400) * 400, rel_tol=1e-6)
    assert math.isclose(float(K[1, 1]), 100.0, rel_tol=1e-6)


@pytest.mark.parametrize("K", [None, torch.tensor([[30.0, 0, 15.5], [0, 28.0, 11.0], [0, 0, 1]])])
def test_backproject_reprojects_to_pixel_centres(K):
    h, w = 12, 20
    depth = torch.rand(h, w, dtype=torch.float64) * 4 + 0.5
    pts = backproject(depth, None if K is None else K.double())
    Kd = (official_pinhole(h, w) if K is None else K).double()
    assert pts.shape == (h, w, 3)
    uvw = pts @ Kd.T
    uv = uvw[..., :2] / uvw[..., 2:]
    jj, ii = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
    assert torch.allclose(uv[..., 0], jj.double() + 0.5, atol=1e-9)
    assert torch.allclose(uv[..., 1], ii.double() + 0.5, atol=1e-9)
    assert torch.equal(pts[..., 2], depth)


def test_normalize_matches_eq1_and_round_trips_random():
    t, h, w = 5, 6, 8
    K = torch.tensor([[40.0, 0, 4.0], [0, 30.0, 3.0], [0, 0, 1]])
    depth0 = torch.rand(h, w) * 5 + 0.3
    p0 = backproject(depth0, K)
    tracks = p0 + torch.randn(t, h, w, 3) * 0.2
    n = normalize_motion(tracks, depth0, K)
    # eq. 1 written out: α_x = f_x / W = 40/8, α_y = f_y / H = 30/6
    d = tracks - p0
    assert torch.allclose(n[..., 0], (40.0 / 8) * d[..., 0] / depth0, rtol=1e-5, atol=1e-6)
    assert torch.allclose(n[..., 1], (30.0 / 6) * d[..., 1] / depth0, rtol=1e-5, atol=1e-6)
    assert torch.allclose(n[..., 2], d[..., 2] / depth0, rtol=1e-5, atol=1e-6)
    for ref in (depth0, p0):
        back = denormalize_motion(normalize_motion(tracks, ref, K), ref, K)
        assert _rel_err(back, tracks) <= 1e-6
    # default pinhole; float64 round trip is exact to rounding
    tr64, d64 = tracks.double(), depth0.double()
    assert _rel_err(denormalize_motion(normalize_motion(tr64, d64), d64), tr64) <= 1e-12


def test_scale_invariance():
    """Scaling the whole scene (depth and motion) leaves the normalised motion unchanged."""
    h, w = 4, 5
    depth0 = torch.rand(h, w, dtype=torch.float64) + 1
    tracks = backproject(depth0)[None] + torch.randn(3, h, w, 3, dtype=torch.float64) * 0.1
    a = normalize_motion(tracks, depth0)
    b = normalize_motion(tracks * 7.0, depth0 * 7.0)
    assert torch.allclose(a, b, atol=1e-12)


def test_round_trip_on_synthetic_world_tracks():
    world = synthetic.scene_world(0)
    cams = world.reference_cameras(32, 24, 5)
    out = synthetic.trajectories(world, cams)
    valid = out["valid"]
    assert valid.any()
    vm = cams.viewmats[0]
    tracks = out["points"] @ vm[:3, :3].T + vm[:3, 3]  # world -> camera-0 frame (OpenCV)
    depth0 = tracks[0, ..., 2]
    K = cams.Ks[0]
    # the lifted depth reproduces the tracked frame-0 points (same pixel-centre convention)
    lifted = backproject(depth0, K)
    assert torch.allclose(lifted[valid], tracks[0][valid], atol=1e-4)
    assert (tracks[1:] - tracks[:1])[:, valid].abs().max() > 1e-3  # the world actually moves
    for ref in (depth0, tracks[0]):
        n = normalize_motion(tracks, ref, K, valid=valid)
        assert torch.isfinite(n).all() and (n[:, ~valid] == 0).all()
        back = denormalize_motion(n, ref, K, valid=valid)
        assert _rel_err(back[:, valid], tracks[:, valid]) <= 1e-6
    # the pipeline's direction: model-space motion (training α) fused with the lifted points
    Km = motion_intrinsics(*depth0.shape)
    n = normalize_motion(tracks, lifted, Km, valid=valid)
    fused = fuse_motion(n, lifted, Km, valid=valid)
    assert _rel_err(fused[1:, valid], tracks[1:, valid]) <= 1e-6
    # holes in the depth (e.g. sky) must be masked out explicitly, otherwise they are named
    holed = depth0.clone()
    holed[:2] = 0.0
    with pytest.raises(ValueError, match=r"64 pixel\(s\) with non-positive"):
        normalize_motion(tracks, holed, K)
    keep = valid.clone()
    keep[:2] = False
    n = normalize_motion(tracks, holed, K, valid=keep)
    assert _rel_err(denormalize_motion(n, holed, K, valid=keep)[:, keep], tracks[:, keep]) <= 1e-6


def test_normalize_rejects_bad_inputs():
    depth0 = torch.ones(4, 5)
    tracks = torch.zeros(2, 4, 5, 3)
    bad = depth0.clone()
    bad[0, 0], bad[1, 2], bad[3, 4] = 0.0, -1.0, float("nan")
    with pytest.raises(ValueError, match="3 pixel"):
        normalize_motion(tracks, bad)
    with pytest.raises(ValueError, match="3 pixel"):
        denormalize_motion(tracks, bad)
    with pytest.raises(ValueError, match=r"\[T,4,5,3\]"):
        normalize_motion(torch.zeros(2, 4, 6, 3), depth0)
    with pytest.raises(ValueError, match="depth0 \\[H,W\\] or points0"):
        normalize_motion(tracks, torch.ones(4, 5, 2))
    with pytest.raises(ValueError, match="K must be"):
        normalize_motion(tracks, depth0, torch.eye(4))
    with pytest.raises(ValueError, match="depth must be an"):
        backproject(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="sizes must be positive"):
        official_pinhole(0, 4)


def _hand_module(activation="none"):
    m = MAdaNorm(dim=2, motion_dim=1, eps=0.0, activation=activation)
    with torch.no_grad():
        m.linear.weight.copy_(torch.tensor([[2.0], [0.0], [1.0], [3.0]]))  # rows: α0, α1, β0, β1
        m.linear.bias.copy_(torch.tensor([0.1, 0.2, -0.1, 0.0]))
        m.gate.copy_(torch.tensor([0.5, 2.0]))
    return m


def test_madanorm_hand_computed():
    m = _hand_module()
    tokens = torch.tensor([[[1.0, 3.0], [2.0, -2.0]]])  # [B=1, N=2, C=2]
    s = torch.tensor([[[[0.5, -1.0]]]])  # [B=1, C_m=1, h=1, w=2] -> grid (1,1,2), no resize
    y = m(tokens, s, (1, 1, 2))
    # LN (no affine, eps 0): [1,3] -> mean 2, std 1 -> [-1, 1]; [2,-2] -> mean 0, std 2 -> [1, -1]
    # token 0, s=0.5: α = [2*0.5+0.1, 0*0.5+0.2] = [1.1, 0.2]; β = [0.5-0.1, 1.5] = [0.4, 1.5]
    # token 1, s=-1 : α = [-2+0.1, 0.2] = [-1.9, 0.2];          β = [-1-0.1, -3] = [-1.1, -3.0]
    expected = torch.tensor(
        [
            [
                [-1 + 0.5 * (1.1 * -1 + 0.4), 1 + 2.0 * (0.2 * 1 + 1.5)],
                [1 + 0.5 * (-1.9 * 1 + -1.1), -1 + 2.0 * (0.2 * -1 + -3.0)],
            ]
        ]
    )
    assert torch.allclose(expected, torch.tensor([[[-1.35, 4.4], [-0.5, -7.4]]]))
    assert torch.allclose(y, expected, atol=1e-6)
    # two latent frames reuse the same image motion features
    y2 = m(tokens.repeat(1, 2, 1), s, (2, 1, 2))
    assert torch.allclose(y2, expected.repeat(1, 2, 1), atol=1e-6)


def test_madanorm_hand_computed_official_silu():
    """The official SpatialGuidanceModule reads SiLU(S): α, β = Linear(SiLU(S)); y = x (1 + γ α) + γ β."""
    m = _hand_module("silu")
    tokens = torch.tensor([[[1.0, 3.0]]])  # LN -> [-1, 1]
    s = torch.tensor([[[[2.0]]]])  # SiLU(2) = 2 / (1 + e^-2)
    silu = 2.0 / (1.0 + math.exp(-2.0))  # 1.761594
    a0, a1, b0, b1 = 2 * silu + 0.1, 0.2, silu - 0.1, 3 * silu
    expected = torch.tensor([[[-1 * (1 + 0.5 * a0) + 0.5 * b0, 1 * (1 + 2.0 * a1) + 2.0 * b1]]])
    assert torch.allclose(expected, torch.tensor([[[-1.9808, 11.9696]]]), atol=1e-4)
    assert torch.allclose(m(tokens, s, (1, 1, 1)), expected, atol=1e-6)
    # modulate() on already-normalised tokens; tokens past the motion tokens are left unchanged
    normed = torch.tensor([[[-1.0, 1.0], [5.0, -7.0]]])
    out = m.modulate(normed, torch.tensor([[[2.0]]]))
    assert torch.allclose(out[:, :1], expected, atol=1e-6) and torch.equal(out[:, 1], normed[:, 1])


def test_motion_tokens_resize_and_order():
    s = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    tok = motion_tokens(s, (2, 3, 4))
    assert tok.shape == (1, 24, 2)
    assert torch.equal(tok[0, 5], s[0, :, 1, 1]) and torch.equal(tok[0, 12 + 5], s[0, :, 1, 1])
    small = motion_tokens(torch.ones(1, 2, 7, 9), (1, 3, 4))
    assert small.shape == (1, 12, 2) and torch.allclose(small, torch.ones_like(small))


def test_madanorm_identity_at_init_and_gate_gradients():
    m = MAdaNorm(dim=8, motion_dim=5)
    assert torch.equal(m.gate, torch.zeros(8))
    tokens = torch.randn(2, 2 * 3 * 4, 8)
    s = torch.randn(2, 5, 6, 8)
    y = m(tokens, s, (2, 3, 4))
    plain = torch.nn.functional.layer_norm(tokens, (8,), eps=1e-6)
    assert torch.allclose(y, plain, atol=1e-6)
    (y * torch.randn_like(y)).sum().backward()
    assert m.gate.grad is not None and m.gate.grad.abs().sum() > 0


def test_madanorm_rejects_bad_inputs():
    m = MAdaNorm(dim=4, motion_dim=3)
    s = torch.randn(1, 3, 2, 2)
    with pytest.raises(ValueError, match="has 8 tokens but tokens have N=6"):
        m(torch.randn(1, 6, 4), s, (2, 2, 2))
    with pytest.raises(ValueError, match=r"tokens must be \[B,N,4\]"):
        m(torch.randn(1, 8, 5), s, (2, 2, 2))
    with pytest.raises(ValueError, match="motion_features must be"):
        m(torch.randn(1, 8, 4), torch.randn(1, 2, 2, 2), (2, 2, 2))
    with pytest.raises(ValueError, match="grid must be"):
        m(torch.randn(1, 8, 4), s, (2, 2))
    with pytest.raises(ValueError, match="must be positive"):
        MAdaNorm(0, 3)
    with pytest.raises(ValueError, match="activation must be one of"):
        MAdaNorm(4, 3, activation="relu")
    with pytest.raises(ValueError, match="motion tokens must be"):
        m.modulate(torch.randn(1, 2, 4), torch.randn(1, 3, 3))


def test_training_normalisation_intrinsics_and_fuse_motion():
    # 720 x 960 reference at 368 x 512: 960/512 < 720/368 -> fx_n = (720/960)/(368/512), fy_n = 1
    K = motion_intrinsics(368, 512)
    assert math.isclose(float(K[0, 0]) / 512, (720 / 960) / (368 / 512), rel_tol=1e-6)
    assert math.isclose(float(K[1, 1]) / 368, 1.0, rel_tol=1e-6)
    h, w = 6, 8
    depth0 = torch.rand(h, w, dtype=torch.float64) * 3 + 0.5
    p0 = backproject(depth0)
    tracks = p0 + torch.randn(4, h, w, 3, dtype=torch.float64) * 0.1
    tracks[0] = p0
    Km = motion_intrinsics(h, w).double()
    n = normalize_motion(tracks, p0, Km)
    fused = fuse_motion(n, p0, Km)
    assert torch.allclose(fused, tracks, atol=1e-12)
    n[0] = 5.0  # whatever the model says for frame 0, it is the initial point cloud
    assert torch.equal(fuse_motion(n, p0, Km)[0], p0)


def test_depth_condition_and_frame_counts():
    z = torch.tensor([[1.0, 3.0], [float("inf"), 0.0]])
    # invalid -> 1 before the min-max: values [1, 3, 1, 1] -> [-1, 1, -1, -1]
    assert torch.allclose(depth_condition(z), torch.tensor([[-1.0, 1.0], [-1.0, -1.0]]), atol=1e-6)
    assert valid_frame_counts(49) == (49, 49) and valid_frame_counts(50) == (49, 53)
    assert valid_frame_counts(2) == (1, 5)
    with pytest.raises(ValueError, match="depth must be an"):
        depth_condition(torch.ones(2, 2, 2))


def test_fuse_motion_denormalisation_switch_by_hand():
    # two pixels (H=1, W=2), two frames; K gives alpha = (f_x / W, f_y / H) = (4 / 2, 2 / 1) = (2, 2)
    K = torch.tensor([[4.0, 0.0, 1.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    p0 = torch.tensor([[[0.5, -0.25, 2.0], [1.0, 0.5, 4.0]]], dtype=torch.float64)  # z = 2 and 4
    n = torch.tensor([[[[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]],  # frame 0: ignored, it is P_0
                      [[[0.2, -0.4, 0.1], [0.1, 0.3, -0.05]]]], dtype=torch.float64)
    # paper (eq. 1 reversed): P_1 = P_0 + (dx~ z / a_x, dy~ z / a_y, dz~ z)
    paper = torch.tensor([[[0.5 + 0.2 * 2 / 2, -0.25 - 0.4 * 2 / 2, 2.0 + 0.1 * 2],
                           [1.0 + 0.1 * 4 / 2, 0.5 + 0.3 * 4 / 2, 4.0 - 0.05 * 4]]], dtype=torch.float64)
    # official (inference script, normalize_track_z): P_1 = P_0 + (dx~, dy~, dz~)
    official = torch.tensor([[[0.5 + 0.2, -0.25 - 0.4, 2.0 + 0.1],
                              [1.0 + 0.1, 0.5 + 0.3, 4.0 - 0.05]]], dtype=torch.float64)
    assert torch.allclose(paper, torch.tensor([[[0.7, -0.65, 2.2], [1.2, 1.1, 3.8]]], dtype=torch.float64))
    for mode, want in (("paper", paper), ("official", official)):
        out = fuse_motion(n, p0, K, denormalisation=mode)
        assert torch.equal(out[0], p0), mode
        assert torch.allclose(out[1], want, atol=1e-12), mode
    assert torch.allclose(fuse_motion(n, p0, K)[1], paper, atol=1e-12)  # the paper's is the default
    keep = torch.tensor([[True, False]])  # a pixel without depth stays at P_0 in both
    for mode, want in (("paper", paper), ("official", official)):
        out = fuse_motion(n, p0, K, valid=keep, denormalisation=mode)
        assert torch.allclose(out[1, 0, 0], want[0, 0], atol=1e-12) and torch.equal(out[1, 0, 1], p0[0, 1])
    with pytest.raises(ValueError, match="denormalisation must be one of"):
        fuse_motion(n, p0, K, denormalisation="metric")


def _corner_depth(h, w, K):
    """z-depth of a right-angled corner seen through K: the planes X + Z = 4 (left half of the image)
    and -X + Z = 4 (right half), whose normals (1, 0, 1) and (-1, 0, 1) are perpendicular."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(K.double()).T
    left = u < float(K[0, 2])
    n = torch.where(left[..., None], torch.tensor([0.25, 0.0, 0.25], dtype=torch.float64),
                    torch.tensor([-0.25, 0.0, 0.25], dtype=torch.float64))
    return 1.0 / (rays * n).sum(-1), left


def _corner_angle(points, left):
    """Angle in degrees between the planes fitted to the two halves of the corner."""
    normals = []
    for part in (left, ~left):
        p = points[part].double()
        normals.append(torch.linalg.svd(p - p.mean(0))[2][-1])
    return math.degrees(math.acos(abs(float(normals[0] @ normals[1]))))


def test_lift_depth_takes_metric_refuses_relative_and_aligns_an_explicit_range():
    from gen4d.core.formats.depth import METRIC_DEPTH, RELATIVE_DISPARITY, align_disparity_near_far
    from gen4d.core.moge4d.strag import lift_depth

    h, w = 12, 16
    K = torch.tensor([[14.0, 0.0, 8.0], [0.0, 14.0, 6.0], [0.0, 0.0, 1.0]])
    z, left = _corner_depth(h, w, K)
    assert float(z.min()) > 2.0 and float(z.max()) < 10.0
    assert abs(_corner_angle(backproject(z, K.double()), left) - 90.0) < 1e-6
    assert torch.equal(lift_depth(z.float(), METRIC_DEPTH), z.float())  # metric: as it is
    s0, b0 = 0.37, 0.05
    disparity = (s0 / z + b0).float()  # affine-invariant disparity of the corner
    with pytest.raises(ValueError, match=r"Gen4D_TrajectoryDiT\.depth_model: got a relative_disparity depth"):
        lift_depth(disparity, RELATIVE_DISPARITY, name="Gen4D_TrajectoryDiT.depth_model")
    # 1/d (what a relative model gave before) opens the right angle; the aligned depth keeps it
    naive = backproject(1.0 / disparity.double(), K.double())
    near, far = float(z.min()), float(z.max())
    aligned = lift_depth(disparity, RELATIVE_DISPARITY, "align_scale_shift", near, far)
    assert _rel_err(aligned.double(), z) < 1e-5
    assert abs(_corner_angle(backproject(aligned.double(), K.double()), left) - 90.0) < 0.01
    assert abs(_corner_angle(naive, left) - 90.0) > 5.0
    fit = align_disparity_near_far(disparity, near, far)
    assert math.isclose(fit.scale, 1 / s0, rel_tol=1e-4) and math.isclose(fit.shift, -b0 / s0, rel_tol=1e-3)
    # the alignment is the stated assumption, nothing more: a wrong near / far gives a wrong depth
    assert _rel_err(lift_depth(disparity, RELATIVE_DISPARITY, "align_scale_shift", near, 2 * far).double(), z) > 0.1
    with pytest.raises(ValueError, match="0 < near < far"):
        lift_depth(disparity, RELATIVE_DISPARITY, "align_scale_shift", 3.0, 2.0)
    with pytest.raises(ValueError, match="relative_depth must be one of"):
        lift_depth(disparity, RELATIVE_DISPARITY, "guess")
