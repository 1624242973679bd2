# SPDX-License-Identifier: Apache-2.0
"""Real spherical harmonics up to degree 3, in the 3DGS / gsplat basis and sign convention.

Public API:
    SH_C0                   the degree-0 constant (DC term = (rgb - 0.5) / SH_C0)
    num_sh_bases(degree)    (degree + 1) ** 2
    eval_sh(degree, sh, dirs) -> [..., 3] raw colour (before the +0.5 offset)
    rgb_to_sh / sh_to_rgb   DC term <-> colour
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SH_C0", "num_sh_bases", "eval_sh", "rgb_to_sh", "sh_to_rgb", "sh_degree_from_bases"]

SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    if not 0 <= degree <= 3:
        raise ValueError(f"sh degree must be in 0..3, got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_bases(k: int) -> int:
    """Inverse of :func:`num_sh_bases`; raises for counts that are not a square up to 16."""
    for d in range(4):
        if (d + 1) ** 2 == k:
            return d
    raise ValueError(f"number of SH coefficients must be 1, 4, 9 or 16, got {k}")


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """Colour in [0,1] -> DC coefficient, so that ``eval_sh(0, ...) + 0.5 == rgb``."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: Tensor) -> Tensor:
    return dc * SH_C0 + 0.5


def _bases(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values ``[..., (degree+1)**2]`` for unit directions ``[..., 3]``."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _C2[0] * xy,
            _C2[1] * yz,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * xz,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate view-dependent colour.

    Args:
        degree: SH degree to use (0..3); may be lower than what ``sh`` holds.
        sh: ``[..., K, 3]`` coefficients, ``K >= (degree+1)**2``.
        dirs: ``[..., 3]`` view directions (camera -> Gaussian); normalised here.

    Returns:
        ``[..., 3]`` colour before gsplat's ``+0.5`` offset and ``clamp_min(0)``.
    """
    k = num_sh_bases(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"eval_sh: degree {degree} needs {k} coefficients, got {sh.shape[-2]}")
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    basis = _bases(degree, dirs)  # [..., k]
    return (basis.unsqueeze(-1) * sh[..., :k, :]).sum(dim=-2)
