# SPDX-License-Identifier: Apache-2.0
"""Ground truth for hole masks: which pixels of a novel view show what a source view did not see.

Computed with the ray caster alone (no Gaussians, no z-buffer), so the 4D-ViSM tests compare the
hole mask with something independent of it.
"""

from __future__ import annotations

import torch
from gen4d.core.engine.cameras import Cameras
from gen4d.synthetic import cast_rays, move_points, pixel_centers, pixel_rays


def true_holes(world, src: Cameras, cams: Cameras) -> torch.Tensor:
    """``[C,H,W]`` bool: novel-view pixels whose surface point was not seen by ``src[0]`` at time 0."""
    uv = pixel_centers(cams.width, cams.height)
    vm, K = src.viewmats[0].double(), src.Ks[0].double()
    out = []
    for k in range(len(cams)):
        o, d = pixel_rays(cams.viewmats[k], cams.Ks[k], uv)
        hits = cast_rays(world, o, d, float(cams.times[k]), near=cams.near, far=cams.far)
        p0 = move_points(world, hits.part.clamp_min(0), hits.local_points, torch.tensor([0.0]))[0].reshape(-1, 3)
        cam = p0 @ vm[:3, :3].T + vm[:3, 3]
        z = cam[:, 2]
        suv = (cam @ K.T)[:, :2] / z.clamp_min(1e-9)[:, None]
        inside = hits.hit & (z > src.near) & (suv[:, 0] >= 0) & (suv[:, 0] < src.width) & (suv[:, 1] >= 0) \
            & (suv[:, 1] < src.height)
        seen = torch.zeros_like(inside)
        idx = torch.nonzero(inside).reshape(-1)
        o2, d2 = pixel_rays(src.viewmats[0], src.Ks[0], suv[idx])
        back = cast_rays(world, o2, d2, 0.0, near=src.near, far=src.far)
        seen[idx] = (back.part == hits.part[idx]) & ((back.s - z[idx]).abs() <= 1e-5 * (1.0 + z[idx].abs()))
        out.append(~seen.reshape(cams.height, cams.width))
    return torch.stack(out)
