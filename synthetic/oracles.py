# SPDX-License-Identifier: Apache-2.0
"""Oracle stand-ins for generative models, answering from a world's ground truth.

Public API:
    OracleGuidance      score-distillation guidance that pulls renders toward the true view

Design notes:
    The fit loops call guidance exactly as they would call Zero123 or Stable Diffusion SDS, so
    the real optimisation code is exercised end to end without weights. The oracle's direction
    is ``weight * (render - truth)`` at the asked cameras and time: a perfect "denoiser".
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.cameras import Cameras
from ..core.guidance import sds_surrogate
from .raycast import World, render

__all__ = ["OracleGuidance"]


class OracleGuidance:
    """Guidance with the ``core.guidance.Guidance`` interface backed by a synthetic world.

    Args:
        world: the ground-truth world.
        weight: scale of the returned gradient direction.
        supersample: sub-pixel rays of the ground-truth render (odd).
        background: colour of empty pixels in the truth (default: the world's).
    """

    def __init__(self, world: World, weight: float = 1.0, supersample: int = 1, background=None):
        self.world = world
        self.weight = float(weight)
        self.supersample = int(supersample)
        self.background = background
        self.calls = 0

    def sds_loss(self, images: Tensor, cameras: Cameras, t: float, step_ratio: float) -> Tensor:
        if images.dim() != 4 or images.shape[-1] != 3 or images.shape[0] != len(cameras):
            raise ValueError(f"OracleGuidance: images must be [{len(cameras)},H,W,3], got {tuple(images.shape)}")
        self.calls += 1
        with torch.no_grad():
            truth = render(self.world, cameras.to("cpu"), times=float(t), background=self.background,
                           supersample=self.supersample)["rgb"].to(images.device, images.dtype)
        return sds_surrogate(images, self.weight * (images.detach() - truth))
