# SPDX-License-Identifier: Apache-2.0
"""Lens distortion of the ``transforms*.json`` family, and images resampled to its pinhole.

Public API:
    LENS_MODELS                                    the distorted camera models read here
    LENS_COEFFICIENTS                              each model's coefficient names
    distort(x, y, model, coefficients)             normalised pinhole coordinates -> distorted ones
    undistortion_grid(K, model, coefficients, w, h)  where each pinhole pixel lies in the distorted image
    undistort(image, grid)                         resample ``[H,W,C]`` through such a grid

Design notes:
    nerfstudio's meaning of the coefficients (its ``camera_utils``), with ``x, y`` the normalised
    pinhole coordinates ``((u - cx) / fx, (v - cy) / fy)`` and ``r2 = x^2 + y^2``:

    - ``OPENCV`` (radial-tangential; COLMAP's SIMPLE_RADIAL, RADIAL and OPENCV all arrive so):
      ``d = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4``,
      ``x' = x d + 2 p1 x y + p2 (r2 + 2 x^2)``, ``y' = y d + p1 (r2 + 2 y^2) + 2 p2 x y``.
    - ``OPENCV_FISHEYE`` (equidistant, OpenCV's fisheye module): ``theta = atan(r)``,
      ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``,
      ``(x', y') = (theta_d / r) (x, y)``.

    The undistorted image keeps the camera's own K and size: each of its pixel centres is mapped
    forward through the model (no inverse to iterate) into the captured image and sampled there
    bilinearly. Pixels whose source lies outside the captured image have no data and come out
    transparent (zero rgb and alpha), so a fit given the alpha as its mask ignores them; barrel
    distortion (``k1 < 0``, most phone lenses) maps every pinhole pixel inside the capture and
    only crops its rim. Pixel centres sit at ``+0.5`` (the pack's convention, and the files').
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LENS_MODELS", "LENS_COEFFICIENTS", "distort", "undistortion_grid", "undistort"]

LENS_COEFFICIENTS = {
    "OPENCV": ("k1", "k2", "k3", "k4", "p1", "p2"),
    "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4"),
}
LENS_MODELS = tuple(LENS_COEFFICIENTS)


def distort(x: Tensor, y: Tensor, model: str, coefficients: dict[str, float]) -> tuple[Tensor, Tensor]:
    """Normalised pinhole coordinates ``(x, y)`` -> where the lens puts them (see the module notes).

    Raises:
        ValueError: an unknown model, or a coefficient the model does not have.
    """
    if model not in LENS_COEFFICIENTS:
        raise ValueError(f"distort: lens model must be one of {LENS_MODELS}, got {model!r}")
    unknown = set(coefficients) - set(LENS_COEFFICIENTS[model])
    if unknown:
        raise ValueError(f"distort: {model} has no coefficient {sorted(unknown)}; it takes "
                         f"{LENS_COEFFICIENTS[model]}")
    k1, k2, k3, k4 = (float(coefficients.get(k, 0.0)) for k in ("k1", "k2", "k3", "k4"))
    r2 = x * x + y * y
    if model == "OPENCV":
        p1, p2 = float(coefficients.get("p1", 0.0)), float(coefficients.get("p2", 0.0))
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        xy = x * y
        return (x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x),
                y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy)
    r = r2.sqrt()
    theta = torch.atan(r)
    t2 = theta * theta
    theta_d = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    # theta_d / r -> 1 as r -> 0 (theta ~ r there)
    scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
    return x * scale, y * scale


def undistortion_grid(K: Tensor, model: str, coefficients: dict[str, float], width: int, height: int) -> Tensor:
    """``[H,W,2]`` sampling grid (``grid_sample``'s ``align_corners=False`` coordinates) that gives the
    pinhole image of intrinsics ``K`` from an image taken through the distorted lens of the same K."""
    K = torch.as_tensor(K, dtype=torch.float64)
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        raise ValueError(f"undistortion_grid: K needs finite, positive focal lengths, got {K.tolist()}")
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    xd, yd = distort((u - cx) / fx, (v - cy) / fy, model, coefficients)
    # pixel coordinates -> [-1, 1] over the image's outer edges
    gx = 2.0 * (fx * xd + cx) / width - 1.0
    gy = 2.0 * (fy * yd + cy) / height - 1.0
    return torch.stack([gx, gy], dim=-1).float()


def undistort(image: Tensor, grid: Tensor) -> Tensor:
    """Resample ``image`` ``[H,W,C]`` (premultiplied by its alpha where it has one) through ``grid``
    ``[H',W',2]``; what falls outside the image comes out as zeros."""
    sampled = torch.nn.functional.grid_sample(image.permute(2, 0, 1)[None].float(), grid[None].to(image.device),
                                              mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[0].permute(1, 2, 0)
