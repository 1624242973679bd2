# SPDX-License-Identifier: Apache-2.0
"""Posed images: the supervision of every fit (one seen view, an orbit, or a video per camera).

Public API:
    PosedImages(images, cameras, masks=None, ignore=None)
                                                 images [V,H,W,3] seen by cameras (with times)
    keep_ignored(rendered, target, masks, ignore)
                                                 rendered passes with ignored pixels set to their targets

Design notes:
    A video seen from one camera is V images whose cameras share a pose and differ in time; an
    orbit is V images of different poses (and, for Diffusion4D's 4D orbit, different times).
    Validation happens once here, so fit loops can trust shapes and values.

    Ignored pixels (a capture's passers-by, a lens's uncovered corners, nerfstudio's
    ``mask_path``) are left out of every loss term by giving the render the target's own value
    there (:func:`keep_ignored`): each term's error and gradient vanish at those pixels whatever
    the term (L1, L2, D-SSIM, LPIPS, silhouette), and a CUDA-graphed loss sees the same shapes.
    A soft ignore value ``u`` keeps ``1 - u`` of the error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .cameras import Cameras

__all__ = ["PosedImages", "keep_ignored"]


@dataclass(frozen=True)
class PosedImages:
    """Images with their cameras.

    Args:
        images: ``[V,H,W,3]`` float in 0..1.
        cameras: ``V`` cameras of size ``W x H``; ``cameras.times`` are the scene times shown.
        masks: optional ``[V,H,W]`` in 0..1 (1 = the subject); used as alpha targets and to
            weight the photometric loss.
        ignore: optional ``[V,H,W]`` in 0..1 (1 = leave the pixel out of the loss).

    Raises:
        ValueError: mismatched counts or sizes, empty images, NaN values, masks empty everywhere,
            ignore masks outside 0..1 or covering every pixel.
    """

    images: Tensor
    cameras: Cameras
    masks: Tensor | None = None
    ignore: Tensor | None = None

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
        if self.ignore is not None:
            u = self.ignore
            if not isinstance(u, Tensor) or tuple(u.shape) != (v, h, w):
                got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
                raise ValueError(f"PosedImages: ignore must be [{v},{h},{w}] to match the images, got {got}")
            if not torch.isfinite(u).all() or (u < 0).any() or (u > 1).any():
                raise ValueError("PosedImages: ignore must hold values in 0..1 (1 = leave the pixel out of the loss)")
            if not (u < 0.5).any():
                raise ValueError("PosedImages: the ignore mask covers every pixel of every image; nothing to fit")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def times(self) -> Tensor:
        return self.cameras.times

    def to(self, device) -> "PosedImages":
        masks = None if self.masks is None else self.masks.to(device)
        ignore = None if self.ignore is None else self.ignore.to(device)
        return replace(self, images=self.images.to(device), cameras=self.cameras.to(device), masks=masks,
                       ignore=ignore)

    def subset(self, index) -> "PosedImages":
        """Select views by index tensor, list or slice."""
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.long)
        masks = None if self.masks is None else self.masks[index]
        ignore = None if self.ignore is None else self.ignore[index]
        return PosedImages(self.images[index], self.cameras[index], masks, ignore)

    @staticmethod
    def cat(parts: list["PosedImages"]) -> "PosedImages":
        """Concatenate view sets of one image size (masks kept only when every part has them; a part
        without an ignore mask ignores nothing)."""
        if not parts:
            raise ValueError("PosedImages.cat: need at least one set")
        masks = None
        if all(p.masks is not None for p in parts):
            masks = torch.cat([p.masks for p in parts])
        ignore = None
        if any(p.ignore is not None for p in parts):
            ignore = torch.cat([p.ignore if p.ignore is not None else p.images.new_zeros(p.images.shape[:3])
                                for p in parts])
        return PosedImages(torch.cat([p.images for p in parts]), Cameras.cat([p.cameras for p in parts]), masks,
                           ignore)


def keep_ignored(rendered: dict[str, Tensor], target: Tensor, masks: Tensor | None,
                 ignore: Tensor | None) -> dict[str, Tensor]:
    """The rendered passes with each ignored pixel blended to its target: ``rgb' = (1 - u) rgb + u target``
    (and the alpha to the silhouette mask where one is given), so no loss term sees an error or sends a
    gradient there.

    Args:
        rendered: ``{"rgb": [B,H,W,3], "alpha": [B,H,W,1], ...}``; other passes are returned as they are.
        target: ``[B,H,W,3]``; masks: optional ``[B,H,W]`` silhouettes; ignore: ``[B,H,W]`` or None.
    """
    if ignore is None:
        return rendered
    u = ignore[..., None]
    out = dict(rendered)
    out["rgb"] = torch.lerp(rendered["rgb"], target, u)
    if masks is not None and rendered.get("alpha") is not None:
        out["alpha"] = torch.lerp(rendered["alpha"], masks[..., None], u)
    return out
