# SPDX-License-Identifier: Apache-2.0
"""Lens distortion (core.formats.lens): the models against their documented formulas, and undistortion
against captures made through a lens (each captured pixel traced back to the pinhole by an inverse solved
here, independently of the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gen4d.core.formats.lens import distort, undistort, undistortion_grid

W, H = 128, 96
K = torch.tensor([[110.0, 0.0, 63.0], [0.0, 105.0, 49.5], [0.0, 0.0, 1.0]], dtype=torch.float64)

LENSES = [
    ("barrel", "OPENCV", {"k1": -0.3, "k2": 0.08}),
    ("pincushion and tangential", "OPENCV", {"k1": 0.25, "k2": -0.02, "k3": 0.01, "p1": 0.004, "p2": -0.006}),
    ("fisheye", "OPENCV_FISHEYE", {"k1": 0.05, "k2": -0.01, "k3": 0.002, "k4": -0.001}),
]


def documented(x: np.ndarray, y: np.ndarray, model: str, c: dict) -> tuple[np.ndarray, np.ndarray]:
    """nerfstudio's radial-tangential model and OpenCV's equidistant fisheye, term by term."""
    k1, k2, k3, k4 = (c.get(k, 0.0) for k in ("k1", "k2", "k3", "k4"))
    if model == "OPENCV":
        p1, p2 = c.get("p1", 0.0), c.get("p2", 0.0)
        r2 = x**2 + y**2
        d = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3 + k4 * r2**4
        return x * d + 2 * p1 * x * y + p2 * (r2 + 2 * x**2), y * d + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y
    r = np.hypot(x, y)
    theta = np.arctan(r)
    theta_d = theta * (1 + k1 * theta**2 + k2 * theta**4 + k3 * theta**6 + k4 * theta**8)
    return x * theta_d / r, y * theta_d / r


def to_pinhole(xd: torch.Tensor, yd: torch.Tensor, model: str, c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of the lens: the pinhole coordinates a distorted point came from (fixed point / Newton)."""
    if model == "OPENCV":
        x, y = xd.clone(), yd.clone()
        for _ in range(200):
            r2 = x * x + y * y
            d = 1 + r2 * (c.get("k1", 0) + r2 * (c.get("k2", 0) + r2 * (c.get("k3", 0) + r2 * c.get("k4", 0))))
            p1, p2 = c.get("p1", 0.0), c.get("p2", 0.0)
            x = (xd - 2 * p1 * x * y - p2 * (r2 + 2 * x * x)) / d
            y = (yd - p1 * (r2 + 2 * y * y) - 2 * p2 * x * y) / d
        return x, y
    theta_d = torch.hypot(xd, yd)
    theta = theta_d.clone()
    coeffs = [c.get(k, 0.0) for k in ("k1", "k2", "k3", "k4")]
    for _ in range(50):
        t2 = theta * theta
        f = theta * (1 + sum(k * t2 ** (i + 1) for i, k in enumerate(coeffs))) - theta_d
        df = 1 + sum((2 * i + 3) * k * t2 ** (i + 1) for i, k in enumerate(coeffs))
        theta = theta - f / df
    scale = torch.where(theta_d > 0, torch.tan(theta) / theta_d.clamp_min(1e-12), torch.ones_like(theta_d))
    return xd * scale, yd * scale


def pattern(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A smooth rgb image over normalised pinhole coordinates (slow against a pixel, so bilinear sampling is
    close to exact)."""
    return torch.stack([0.5 + 0.3 * torch.sin(5 * x + 0.3) * torch.cos(4 * y - 0.2),
                        0.5 + 0.4 * torch.sin(3 * x - 4 * y),
                        0.5 + 0.4 * torch.cos(6 * y + 2 * x * y)], dim=-1)


def pixel_centres(width: int = W, height: int = H) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    return u, v


def pinhole_image(k: torch.Tensor = K) -> torch.Tensor:
    u, v = pixel_centres()
    return pattern((u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]).float()


def capture(model: str, c: dict, k: torch.Tensor = K) -> torch.Tensor:
    """What a camera with this lens and intrinsics ``k`` records of the pattern: each captured pixel shows the
    pinhole point the lens bent onto it."""
    u, v = pixel_centres()
    x, y = to_pinhole((u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], model, c)
    return pattern(x, y).float()


@pytest.mark.parametrize("name,model,coefficients", LENSES, ids=[lens[0] for lens in LENSES])
def test_distort_follows_the_documented_models(name, model, coefficients):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.8, 0.8, 500), rng.uniform(-0.6, 0.6, 500)
    got = distort(torch.from_numpy(x), torch.from_numpy(y), model, coefficients)
    want = documented(x, y, model, coefficients)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=0, atol=1e-12)
    # and the test's inverse is one: it traces the distorted points back
    back = to_pinhole(*got, model, coefficients)
    np.testing.assert_allclose(back[0].numpy(), x, atol=1e-9)
    np.testing.assert_allclose(back[1].numpy(), y, atol=1e-9)


def test_a_lens_without_distortion_leaves_the_image_as_it_is():
    image = torch.rand(H, W, 4)
    grid = undistortion_grid(K, "OPENCV", {}, W, H)
    assert torch.allclose(undistort(image, grid), image, atol=1e-5)


@pytest.mark.parametrize("name,model,coefficients", LENSES, ids=[lens[0] for lens in LENSES])
def test_undistorting_a_capture_gives_the_pinhole_image(name, model, coefficients):
    captured, truth = capture(model, coefficients), pinhole_image()
    grid = undistortion_grid(K, model, coefficients, W, H)
    alpha = torch.ones(H, W, 1)
    got = undistort(torch.cat([captured, alpha], dim=-1), grid)
    # pixels whose source lies a pixel or more inside the capture: bilinear sampling of a smooth image
    inside = ((grid[..., 0].abs() < 1 - 2 / W) & (grid[..., 1].abs() < 1 - 2 / H))
    assert inside.float().mean() > 0.8
    error = (got[..., :3] - truth).abs().amax(-1)[inside]
    assert error.max() < 0.01, float(error.max())
    assert got[..., 3][inside].min() > 0.999
    # the lens matters here: the capture itself is far from the pinhole image
    assert (captured - truth).abs().amax(-1)[inside].max() > 0.1


def test_pixels_the_capture_does_not_cover_come_out_transparent():
    # pincushion: the pinhole image's corners lie beyond the captured frame
    grid = undistortion_grid(K, "OPENCV", {"k1": 0.4}, W, H)
    out = undistort(torch.ones(H, W, 4), grid)
    assert out[0, 0, 3] == 0 and out[-1, -1, 3] == 0
    assert out[H // 2, W // 2, 3] == pytest.approx(1.0)
    outside = (grid[..., 0].abs() > 1 + 1 / W) | (grid[..., 1].abs() > 1 + 1 / H)
    assert outside.any() and out[..., 3][outside].max() == 0


def test_a_wrong_model_or_coefficient_is_refused():
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="lens model must be one of"):
        distort(x, x, "EQUIRECTANGULAR", {})
    with pytest.raises(ValueError, match="OPENCV_FISHEYE has no coefficient"):
        distort(x, x, "OPENCV_FISHEYE", {"p1": 0.1})
    bad = K.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="finite, positive focal lengths"):
        undistortion_grid(bad, "OPENCV", {"k1": 0.1}, W, H)
