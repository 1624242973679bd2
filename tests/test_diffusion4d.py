# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D motion magnitude (eq. 1), magnitude embedding (§3.3) and 3D-aware CFG (eq. 3)."""

from __future__ import annotations

import pytest
import torch
from gen4d.core.diffusion4d.orbital import (
    DEFAULT_W1,
    DEFAULT_W2,
    MotionMagnitudeEmbedding,
    OrbitalConfig,
    aware_cfg,
    base_mode_cfg,
    check_magnitude,
    motion_magnitude,
    orbit_frame_index,
)
from gen4d.core.engine.cameras import diffusion4d_orbit
from gen4d.synthetic import object_world, render

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def orbits():
    world = object_world(0)
    dyn = diffusion4d_orbit(32, 32, 8, dynamic=True)
    sta = diffusion4d_orbit(32, 32, 8, dynamic=False)
    return world, dyn, render(world, dyn)["rgb"], render(world, sta)["rgb"]


# ---------------------------------------------------------------- eq. 3

COND = torch.tensor([1.0, 2.0, -1.0])
UNCOND = torch.tensor([0.5, 1.0, 0.0])
EPS3D = torch.tensor([2.0, 0.0, -1.0])


def test_paper_weights():
    assert (DEFAULT_W1, DEFAULT_W2) == (7.0, 0.5)


def test_aware_cfg_matches_eq3_by_hand():
    # cond + 7 (cond - uncond) + 0.5 (cond - eps3d):
    #   [1 + 7*0.5 + 0.5*(-1), 2 + 7*1 + 0.5*2, -1 + 7*(-1) + 0.5*0] = [4, 10, -8]
    out = aware_cfg(COND, UNCOND, EPS3D)
    assert torch.equal(out, torch.tensor([4.0, 10.0, -8.0]))
    # w1 = 2, w2 = 1: [1 + 1 - 1, 2 + 2 + 2, -1 - 2 + 0] = [1, 6, -3]
    assert torch.equal(aware_cfg(COND, UNCOND, EPS3D, w1=2.0, w2=1.0), torch.tensor([1.0, 6.0, -3.0]))


def test_aware_cfg_limits():
    c, u, e = torch.randn(3, 2, 4, 3, 5, 5).unbind(0)
    # w2 = 0: plain CFG, whatever the 3D prediction
    torch.testing.assert_close(aware_cfg(c, u, e, w1=7.0, w2=0.0), base_mode_cfg(c, u, 7.0))
    torch.testing.assert_close(aware_cfg(c, u, e, w1=7.0, w2=0.0), u + 8.0 * (c - u))
    # the 3D term vanishes when the 4D model agrees with the 3D model
    torch.testing.assert_close(aware_cfg(c, u, c.clone(), w1=7.0, w2=0.5), base_mode_cfg(c, u, 7.0))
    # w1 = w2 = 0: the conditional 4D prediction; w1 = 0, w2 = -1: the 3D prediction
    torch.testing.assert_close(aware_cfg(c, u, e, w1=0.0, w2=0.0), c)
    torch.testing.assert_close(aware_cfg(c, u, e, w1=0.0, w2=-1.0), e)
    torch.testing.assert_close(aware_cfg(c, u, e, w1=-1.0, w2=0.0), u)
    # affine: coefficients sum to one, so three equal predictions give that prediction back
    torch.testing.assert_close(aware_cfg(e, e.clone(), e.clone()), e)


def test_base_mode_cfg_by_hand():
    # cond + 3 (cond - uncond) = [1 + 1.5, 2 + 3, -1 - 3]
    assert torch.equal(base_mode_cfg(COND, UNCOND, 3.0), torch.tensor([2.5, 5.0, -4.0]))


def test_cfg_shape_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        aware_cfg(COND, UNCOND, torch.zeros(4))
    with pytest.raises(ValueError, match="shape mismatch"):
        base_mode_cfg(COND, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must be a tensor"):
        aware_cfg(COND, [0.5, 1.0, 0.0], EPS3D)
    with pytest.raises(ValueError, match="w2 must be finite"):
        aware_cfg(COND, UNCOND, EPS3D, w2=float("nan"))


# ---------------------------------------------------------------- eq. 1

def test_motion_magnitude_by_hand():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.zeros(2, 1, 2, 2)
    b[0, 0, 0, 0] = 1.0  # frame 0: ||.||^2 = 1
    b[1, 0] = 2.0        # frame 1: 4 pixels * 4 = 16
    assert motion_magnitude(a, b).item() == pytest.approx((1.0 + 16.0) / 2)
    assert motion_magnitude(a, a.clone()).item() == 0.0
    assert motion_magnitude(a, b).dim() == 0


def test_motion_magnitude_on_object_world(orbits):
    world, dyn_cams, dyn, sta = orbits
    assert dyn.shape == sta.shape == (8, 32, 32, 3)
    assert motion_magnitude(sta, sta.clone()).item() == 0.0
    m_dyn = motion_magnitude(dyn, sta).item()
    assert m_dyn > motion_magnitude(sta.clone(), sta).item() + 1.0
    # same layout-free value for [T,C,H,W]
    assert motion_magnitude(dyn.permute(0, 3, 1, 2), sta.permute(0, 3, 1, 2)).item() == pytest.approx(m_dyn, rel=1e-6)
    # more elapsed time along the same orbit -> more motion. The figure's swings are periodic, so
    # displacement (and m) only grows monotonically while little time has elapsed: use the first
    # fifth of the clip, squeezed over all eight views.
    ms = [motion_magnitude(render(world, dyn_cams, times=s * dyn_cams.times)["rgb"], sta).item()
          for s in (0.0, 0.05, 0.1, 0.2)]
    assert ms[0] == 0.0
    assert all(a < b for a, b in zip(ms, ms[1:])), ms


def test_motion_magnitude_errors():
    x = torch.zeros(3, 8, 8, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        motion_magnitude(x, torch.zeros(3, 8, 8, 4))
    with pytest.raises(ValueError, match="must be a 4-D tensor"):
        motion_magnitude(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match="empty"):
        motion_magnitude(torch.zeros(0, 8, 8, 3), torch.zeros(0, 8, 8, 3))
    y = x.clone()
    y[1, 2, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        motion_magnitude(x, y)


# ---------------------------------------------------------------- magnitude embedding

def test_embedding_zero_at_init_then_learns():
    emb = MotionMagnitudeEmbedding(embed_dim=16, freq_dim=32)
    m = torch.tensor([0.0, 5.0, 40.0])
    out = emb(m)
    assert out.shape == (3, 16)
    assert torch.count_nonzero(out) == 0
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    target = torch.randn(3, 16)
    loss = (emb(m) - target).pow(2).mean()
    loss.backward()
    opt.step()
    after = emb(m).detach()
    assert torch.count_nonzero(after) > 0
    assert not torch.allclose(after[0], after[1])
    assert not torch.allclose(after[1], after[2])


def test_embedding_rejects_bad_magnitudes():
    emb = MotionMagnitudeEmbedding(embed_dim=8, freq_dim=16)
    with pytest.raises(ValueError, match=">= 0"):
        emb(torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="NaN"):
        emb(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"1-D tensor \[B\]"):
        emb(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="freq_dim"):
        MotionMagnitudeEmbedding(embed_dim=8, freq_dim=7)


# ---------------------------------------------------------------- sampling settings and input checks

def test_orbital_config_holds_the_paper_settings():
    c = OrbitalConfig()
    assert (c.steps, c.w1, c.w2, c.num_frames, c.size) == (50, 7.0, 0.5, 24, 256)
    assert (c.elevation_deg, c.distance, c.eta) == (0.0, 2.0, 0.0)


def test_check_magnitude():
    assert check_magnitude(0) == 0.0 and check_magnitude(12.5) == 12.5
    assert check_magnitude(torch.tensor(3.0)) == 3.0
    with pytest.raises(ValueError, match="node.magnitude: .*cannot be negative, got -1.0"):
        check_magnitude(-1.0, "node.magnitude")
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="finite"):
            check_magnitude(bad)
    with pytest.raises(ValueError, match="expected a number"):
        check_magnitude("3")
    with pytest.raises(ValueError, match="expected a number"):
        check_magnitude(True)
    with pytest.raises(ValueError, match="one number"):
        check_magnitude(torch.zeros(2))


@pytest.mark.parametrize("convention, short, long, expected, bad", [
    ("render_script", 5, 25, [0, 6, 12, 18, 24], 6),  # 360 j/(n-1): views 0..4 at 0, 90, .., 360
    ("render_script", 2, 24, [0, 23], 6),               # 23 steps: only the end points are shared
    ("open_loop", 6, 24, [0, 4, 8, 12, 16, 20], 5),     # 360 j/n
])
def test_orbit_frame_index_matches_poses(convention, short, long, expected, bad):
    assert torch.equal(orbit_frame_index(long, long, convention=convention), torch.arange(long))
    index = orbit_frame_index(short, long, convention=convention)
    assert torch.equal(index, torch.tensor(expected))
    # the matched frames really share the pose of the shorter orbit's views
    long_orbit = diffusion4d_orbit(8, 8, long, convention=convention)
    short_orbit = diffusion4d_orbit(8, 8, short, convention=convention)
    torch.testing.assert_close(long_orbit.viewmats[index], short_orbit.viewmats, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=f"{bad} views do not divide into the {long}-frame orbit"):
        orbit_frame_index(bad, long, convention=convention)
    with pytest.raises(ValueError, match="at least one frame"):
        orbit_frame_index(0, 24, convention=convention)
    assert torch.equal(orbit_frame_index(1, long, convention=convention), torch.zeros(1, dtype=torch.long))
