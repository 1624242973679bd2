# SPDX-License-Identifier: Apache-2.0
"""Gaussians (core/engine/gaussians.py) and spherical harmonics (core/engine/sh.py) against independent maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gen4d.core.engine import gaussians as G
from gen4d.core.engine import sh as SH
from gen4d.core.engine.gaussians import Gaussians


def random_rotation(dtype=torch.float32) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def random_gaussians(n: int, k: int = 1, dtype=torch.float32) -> Gaussians:
    return Gaussians(*(torch.randn(*s, dtype=dtype) for s in [(n, 3), (n, 4), (n, 3), (n,), (n, k, 3)]))


def covariances(g: Gaussians) -> torch.Tensor:
    R = G.quat_to_rotmat(g.quats.double())
    S = torch.diag_embed(g.scales.double())
    return R @ S @ S @ R.transpose(-1, -2)


# -- quaternions --------------------------------------------------------------------------


def test_quat_to_rotmat_matches_axis_angle():
    theta = 0.7
    q = torch.tensor([math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)]) * 3.0  # unnormalised on purpose
    c, s = math.cos(theta), math.sin(theta)
    torch.testing.assert_close(G.quat_to_rotmat(q), torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]),
                               rtol=0, atol=1e-6)


def test_quat_round_trip_and_product():
    q = torch.randn(500, 4, dtype=torch.float64)
    q = torch.cat([q, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.6, 0.8], [1.0, 0, 0, 0]], dtype=torch.float64)])
    R = G.quat_to_rotmat(q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(q), dtype=torch.float64), rtol=0, atol=1e-12)
    back = G.rotmat_to_quat(R)
    unit = torch.nn.functional.normalize(q, dim=-1)
    sign = torch.where((back * unit).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    torch.testing.assert_close(back, unit * sign, rtol=0, atol=1e-10)
    assert (back[:, 0] >= 0).all()
    a, b = q[:250], q[250:500]
    torch.testing.assert_close(G.quat_to_rotmat(G.quat_multiply(a, b)), G.quat_to_rotmat(a) @ G.quat_to_rotmat(b),
                               rtol=0, atol=1e-12)


# -- transform ----------------------------------------------------------------------------


def test_transform_moves_means_and_covariances_and_inverts():
    g = random_gaussians(64, 4)
    g = Gaussians(g.means, g.quats, 0.5 * g.log_scales, g.logit_opacities, g.sh)
    R, t, s = random_rotation(), torch.tensor([0.3, -1.2, 2.0]), 2.5
    moved = g.transform(R, t, s)
    torch.testing.assert_close(moved.means, s * g.means @ R.T + t, rtol=0, atol=1e-5)
    Rd = R.double()
    torch.testing.assert_close(covariances(moved), s * s * Rd @ covariances(g) @ Rd.T, rtol=0, atol=1e-4)
    assert torch.equal(moved.sh, g.sh) and torch.equal(moved.logit_opacities, g.logit_opacities)
    back = moved.transform(R.T, -(R.T @ t) / s, 1.0 / s)
    torch.testing.assert_close(back.means, g.means, rtol=0, atol=1e-5)
    torch.testing.assert_close(back.log_scales, g.log_scales, rtol=0, atol=1e-5)
    torch.testing.assert_close(G.quat_to_rotmat(back.quats), G.quat_to_rotmat(g.quats), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="proper rotation"):
        g.transform(torch.diag(torch.tensor([1.0, 1.0, -1.0])))
    with pytest.raises(ValueError, match="scale must be positive"):
        g.transform(scale=0.0)


def test_transform_float64_set():
    g = random_gaussians(8, dtype=torch.float64)
    R = random_rotation(torch.float64)
    moved = g.transform(R, scale=2.0)
    torch.testing.assert_close(moved.means, 2.0 * g.means @ R.T, rtol=0, atol=1e-12)


# -- construction -------------------------------------------------------------------------


def test_from_depth_reprojects_to_pixel_centres():
    h, w = 6, 9
    depth = torch.rand(h, w) * 3 + 0.5
    K = torch.tensor([[40.0, 0.0, 4.2], [0.0, 35.0, 2.9], [0.0, 0.0, 1.0]])
    image = torch.rand(h, w, 3)
    R, t = random_rotation(), torch.tensor([1.0, 2.0, -0.5])
    c2w = torch.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R, t
    mask = torch.rand(h, w) > 0.3
    g = G.from_depth(depth, K, image, camtoworld=c2w, mask=mask)
    assert len(g) == int(mask.sum())
    cam = (g.means - t) @ R  # world -> camera
    pix = cam @ K.T
    uv = pix[:, :2] / pix[:, 2:]
    ii, jj = torch.nonzero(mask, as_tuple=True)
    torch.testing.assert_close(uv, torch.stack([jj + 0.5, ii + 0.5], -1).float(), rtol=0, atol=1e-4)
    torch.testing.assert_close(cam[:, 2], depth[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(g.colors, image[mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(g.scales[:, 0], depth[mask] / math.sqrt(40.0 * 35.0), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="positive"):
        G.from_depth(-depth, K, image)
    with pytest.raises(ValueError, match="image must be"):
        G.from_depth(depth, K, image[:, :5])


def test_sphere_init_points_lie_on_the_sphere():
    g = G.sphere_init(2000, radius=0.7, center=(1.0, -2.0, 0.5), color=(0.2, 0.4, 0.6), opacity=0.1, sh_degree=1,
                      generator=torch.Generator().manual_seed(3))
    assert len(g) == 2000 and g.sh.shape == (2000, 4, 3)
    dist = (g.means - torch.tensor([1.0, -2.0, 0.5])).norm(dim=-1)
    torch.testing.assert_close(dist, torch.full((2000,), 0.7), rtol=0, atol=1e-5)
    centroid = g.means.mean(0) - torch.tensor([1.0, -2.0, 0.5])
    assert centroid.norm() < 0.1  # roughly uniform over the sphere, not one cap
    torch.testing.assert_close(g.colors, torch.tensor([0.2, 0.4, 0.6]).expand(2000, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(g.opacities, torch.full((2000,), 0.1), rtol=0, atol=1e-6)
    assert torch.equal(g.sh[:, 1:], torch.zeros(2000, 3, 3))
    again = G.sphere_init(2000, radius=0.7, center=(1.0, -2.0, 0.5), generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.means, g.means)
    with pytest.raises(ValueError, match="num_points"):
        G.sphere_init(0)


def test_from_colors_properties_and_errors():
    means, colors = torch.randn(5, 3), torch.rand(5, 3)
    g = Gaussians.from_colors(means, colors, scales=torch.rand(5) + 0.1, opacities=0.3)
    torch.testing.assert_close(g.colors, colors, rtol=0, atol=1e-6)
    torch.testing.assert_close(g.opacities, torch.full((5,), 0.3), rtol=0, atol=1e-6)
    torch.testing.assert_close(g.rotations, torch.tensor([1.0, 0, 0, 0]).expand(5, 4), rtol=0, atol=0)
    for kwargs, msg in [({"colors": colors[:4]}, "colors"), ({"scales": -1.0}, "scales"),
                        ({"opacities": 1.0}, "opacities")]:
        with pytest.raises(ValueError, match=msg):
            Gaussians.from_colors(**{"means": means, "colors": colors, **kwargs})


# -- set operations and validation --------------------------------------------------------


def test_cat_and_subset():
    a, b = random_gaussians(3, 1), random_gaussians(4, 9)
    c = Gaussians.cat([a, b])
    assert len(c) == 7 and c.sh.shape == (7, 9, 3)
    assert torch.equal(c.sh[:3, 0], a.sh[:, 0]) and torch.equal(c.sh[:3, 1:], torch.zeros(3, 8, 3))
    assert torch.equal(c.means[3:], b.means)
    mask = torch.tensor([True, False, True, False, False, True, False])
    sub = c.subset(mask)
    assert torch.equal(sub.means, c.means[[0, 2, 5]]) and torch.equal(sub.sh, c.sh[[0, 2, 5]])
    assert torch.equal(c.subset(slice(1, 3)).quats, c.quats[1:3])
    with pytest.raises(ValueError, match="mask must be"):
        c.subset(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one"):
        Gaussians.cat([])
    assert Gaussians.empty(sh_degree=3).sh.shape == (0, 16, 3)


@pytest.mark.parametrize("field, value, msg", [
    ("means", torch.zeros(4, 2), r"means must have shape \[4,3\], got \(4, 2\)"),
    ("quats", torch.zeros(4, 3), r"quats must have shape \[4,4\]"),
    ("log_scales", torch.zeros(5, 3), "log_scales"),
    ("logit_opacities", torch.zeros(4, 1), "logit_opacities"),
    ("sh", torch.zeros(4, 5, 3), "1, 4, 9 or 16"),
    ("sh", torch.zeros(4, 1, 4), "sh must have shape"),
])
def test_validation_names_the_field(field, value, msg):
    good = random_gaussians(4).tensors()
    with pytest.raises(ValueError, match=msg):
        Gaussians(**{**good, field: value})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_check_finite(bad):
    t = random_gaussians(4).tensors()
    t["log_scales"] = t["log_scales"].clone()
    t["log_scales"][1, 2] = bad
    g = Gaussians(**t)  # shapes are fine: constructing works
    g.validate()
    with pytest.raises(ValueError, match="log_scales holds 1 NaN/inf"):
        g.validate(check_finite=True)
    random_gaussians(4).validate(check_finite=True)


# -- spherical harmonics ------------------------------------------------------------------


def _legendre(deg: int, m: int, x: np.ndarray) -> np.ndarray:
    """Associated Legendre P_l^m(x), m >= 0, with the Condon-Shortley phase, by the textbook recurrence."""
    pmm = (-1.0) ** m * math.prod(range(1, 2 * m, 2)) * (1.0 - x * x) ** (m / 2.0)
    if deg == m:
        return pmm
    pm1 = x * (2 * m + 1) * pmm
    for ll in range(m + 2, deg + 1):
        pmm, pm1 = pm1, ((2 * ll - 1) * x * pm1 - (ll + m - 1) * pmm) / (ll - m)
    return pm1


def _real_sh(deg: int, m: int, dirs: np.ndarray) -> np.ndarray:
    """Real spherical harmonic Y_lm from spherical angles (independent of the Cartesian closed forms)."""
    theta = np.arccos(np.clip(dirs[:, 2], -1.0, 1.0))
    phi = np.arctan2(dirs[:, 1], dirs[:, 0])
    am = abs(m)
    k = math.sqrt((2 * deg + 1) / (4 * math.pi) * math.factorial(deg - am) / math.factorial(deg + am))
    p = _legendre(deg, am, np.cos(theta))
    if m == 0:
        return k * p
    return math.sqrt(2.0) * k * p * (np.cos(am * phi) if m > 0 else np.sin(am * phi))


def test_each_sh_basis_matches_the_real_sh_formula():
    dirs = torch.nn.functional.normalize(torch.randn(300, 3, dtype=torch.float64), dim=-1)
    for deg in range(4):
        for m in range(-deg, deg + 1):
            idx = deg * deg + deg + m  # 3DGS order: m = -l..l within each band
            coeffs = torch.zeros(300, 16, 3, dtype=torch.float64)
            coeffs[:, idx, 1] = 1.0
            got = SH.eval_sh(3, coeffs, dirs * 2.5)  # directions are normalised inside
            expected = _real_sh(deg, m, dirs.numpy())
            np.testing.assert_allclose(got[:, 1].numpy(), expected, rtol=0, atol=1e-12, err_msg=f"l={deg} m={m}")
            assert torch.equal(got[:, 0], torch.zeros(300, dtype=torch.float64))


def test_degree_one_sign_convention():
    c1 = math.sqrt(3.0 / (4.0 * math.pi))
    sh = torch.zeros(1, 4, 3, dtype=torch.float64)
    sh[0, 1:, :] = torch.eye(3, dtype=torch.float64)  # coefficient 1 -> red, 2 -> green, 3 -> blue
    d = torch.tensor([[0.36, 0.48, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(SH.eval_sh(1, sh, d)[0], torch.tensor([-0.48, 0.8, -0.36], dtype=torch.float64) * c1,
                               rtol=0, atol=1e-12)


def test_degree_zero_is_the_dc_colour_and_conversions():
    rgb = torch.rand(10, 3)
    dc = SH.rgb_to_sh(rgb)
    sh = torch.cat([dc[:, None], torch.randn(10, 15, 3)], dim=1)
    out = SH.eval_sh(0, sh, torch.randn(10, 3))
    torch.testing.assert_close(out + 0.5, rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(SH.sh_to_rgb(dc), rgb, rtol=0, atol=1e-6)
    assert SH.SH_C0 == pytest.approx(1.0 / (2.0 * math.sqrt(math.pi)), abs=1e-15)
    assert [SH.num_sh_bases(d) for d in range(4)] == [1, 4, 9, 16]
    assert [SH.sh_degree_from_bases(k) for k in (1, 4, 9, 16)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="0..3"):
        SH.num_sh_bases(4)
    with pytest.raises(ValueError, match="1, 4, 9 or 16"):
        SH.sh_degree_from_bases(8)
    with pytest.raises(ValueError, match="needs 9 coefficients"):
        SH.eval_sh(2, torch.zeros(2, 4, 3), torch.randn(2, 3))
