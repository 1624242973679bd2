# SPDX-License-Identifier: Apache-2.0
"""Posed images: the supervision of every fit (one seen view, an orbit, or a video per camera).

Public API:
    PosedImages(images, cameras, masks=None)     images [V,H,W,3] seen by cameras (with times)

Design notes:
    A video seen from one camera is V images whose cameras share a pose and differ in time; an
    orbit is V images of different poses (and, for Diffusion4D's 4D orbit, different times).
    Validation happens once here, so fit loops can trust shapes and values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .cameras import Cameras

__all__ = ["PosedImages"]


@dataclass(frozen=True)
class PosedImages:
    """Images with their cameras.

    Args:
        images: ``[V,H,W,3]`` float in 0..1.
        cameras: ``V`` cameras of size ``W x H``; ``cameras.times`` are the scene times shown.
        masks: optional ``[V,H,W]`` in 0..1 (1 = the subject); used as alpha targets and to
            weight the photometric loss.

    Raises:
        ValueError: mismatched counts or sizes, empty images, NaN values, masks empty everywhere.
    """

    images: Tensor
    cameras: Cameras
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        img = self.images
        if not isinstance(img, Tensor) or img.dim() != 4 or img.shape[-1] != 3 or 0 in img.shape:
            got = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"PosedImages: images must be a non-empty [V,H,W,3] tensor, got {got}")
        if not torch.isfinite(img).all():
            raise ValueError("PosedImages: images hold NaN or inf values")
        v, h, w = img.shape[:3]
        if len(self.cameras) != v:
            raise ValueError(f"PosedImages: {v} images but {len(self.cameras)} cameras; give one camera per image")
        if (self.cameras.width, self.cameras.height) != (w, h):
            raise ValueError(f"PosedImages: images are {w}x{h} but cameras are "
                             f"{self.cameras.width}x{self.cameras.height}")
        if self.masks is not None:
            m = self.masks
            if not isinstance(m, Tensor) or tuple(m.shape) != (v, h, w):
                got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"PosedImages: masks must be [{v},{h},{w}] to match the images, got {got}")
            if not torch.isfinite(m).all():
                raise ValueError("PosedImages: masks hold NaN or inf values")
            if not (m > 0.5).any():
                raise ValueError("PosedImages: the masks are empty in every image; nothing to fit")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def times(self) -> Tensor:
        return self.cameras.times

    def to(self, device) -> "PosedImages":
        masks = None if self.masks is None else self.masks.to(device)
        return replace(self, images=self.images.to(device), cameras=self.cameras.to(device), masks=masks)

    def subset(self, index) -> "PosedImages":
        """Select views by index tensor, list or slice."""
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.long)
        masks = None if self.masks is None else self.masks[index]
        return PosedImages(self.images[index], self.cameras[index], masks)

    @staticmethod
    def cat(parts: list["PosedImages"]) -> "PosedImages":
        """Concatenate view sets of one image size (masks kept only when every part has them)."""
        if not parts:
            raise ValueError("PosedImages.cat: need at least one set")
        masks = None
        if all(p.masks is not None for p in parts):
            masks = torch.cat([p.masks for p in parts])
        return PosedImages(torch.cat([p.images for p in parts]), Cameras.cat([p.cameras for p in parts]), masks)
