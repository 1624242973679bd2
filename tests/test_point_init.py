# SPDX-License-Identifier: Apache-2.0
"""Gaussians from a point cloud (core.engine.point_init): 3DGS's neighbour scale and its bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from gen4d.core.engine.point_init import MIN_VARIANCE, from_points


def test_scales_follow_the_three_nearest_neighbours():
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]])
    got = from_points(points, torch.full((5, 3), 0.5), sh_degree=1)
    # the origin's neighbours lie 1, 2 and 3 away: std = sqrt((1 + 4 + 9) / 3)
    assert got.scales[0].tolist() == pytest.approx([math.sqrt(14 / 3)] * 3, rel=1e-5)
    assert got.sh.shape == (5, 4, 3) and got.sh[:, 1:].abs().max() == 0
    assert torch.allclose(got.colors, torch.full((5, 3), 0.5), atol=1e-6)


def test_coincident_points_get_a_small_finite_scale_and_two_points_suffice():
    got = from_points(torch.zeros(4, 3), torch.zeros(4, 3))
    assert torch.isfinite(got.log_scales).all()
    assert got.scales.max() == pytest.approx(math.sqrt(MIN_VARIANCE), rel=1e-4)
    pair = from_points(torch.tensor([[0.0, 0, 0], [0, 0, 2]]), torch.zeros(2, 3))
    assert pair.scales[:, 0].tolist() == pytest.approx([2.0, 2.0])


@pytest.mark.parametrize("points,colors,message", [
    (torch.zeros(1, 3), torch.zeros(1, 3), "N >= 2"),
    (torch.zeros(5, 2), torch.zeros(5, 2), r"\[N,3\]"),
    (torch.zeros(5, 3), torch.zeros(4, 3), "colors must be"),
    (torch.tensor([[0.0, 0, 0], [math.nan, 0, 0]]), torch.zeros(2, 3), "NaN"),
    (torch.zeros(2, 3), torch.full((2, 3), 2.0), "0..1"),
])
def test_bad_input_is_refused(points, colors, message):
    with pytest.raises(ValueError, match=message):
        from_points(points, colors)


@pytest.mark.parametrize("shape", ["volume", "shell", "clusters"])
def test_large_clouds_search_the_z_curves_and_find_nearly_every_neighbour(monkeypatch, shape):
    import gen4d.core.engine.point_init as point_init

    g = torch.Generator().manual_seed(1)
    n = 6000
    if shape == "volume":
        points = torch.rand(n, 3, generator=g)
    elif shape == "shell":  # a scanned surface: SfM points lie on the scene's surfaces
        points = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 2.0
    else:  # a dense object in front of a sparse background
        points = torch.cat([torch.randn(n // 2, 3, generator=g) * 0.01, torch.randn(n // 2, 3, generator=g) + 5])
    exact = point_init.neighbour_variance(points).sqrt()
    monkeypatch.setattr(point_init, "EXACT_POINTS", 100)
    monkeypatch.setattr(point_init, "_CHUNK", 1000)  # several chunks
    searched = point_init.neighbour_variance(points).sqrt()
    ratio = searched / exact
    assert ratio.min() > 1 - 1e-4  # candidates are real points: never nearer than the true neighbours
    assert (ratio < 1 + 1e-4).float().mean() > 0.9
    assert ratio.quantile(0.99) < 1.5
    assert from_points(points, torch.zeros(n, 3)).scales[:, 0].allclose(searched.clamp_min(MIN_VARIANCE ** 0.5))
