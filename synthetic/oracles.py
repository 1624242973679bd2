# SPDX-License-Identifier: Apache-2.0
"""Oracle stand-ins for generative models, answering from a world's ground truth.

Public API:
    OracleGuidance          score-distillation guidance that pulls renders toward the true view
    OracleDepth             metric depth model (DepthEstimator interface)
    OracleSegmenter         video segmenter returning the true foreground masks
    OracleImageInpainter    image inpainter filling holes with the world's background
    OracleVideoInpainter    video inpainter filling holes with the world's background
    OracleVideoGenerator    video model returning the world's reference video
    background_world(world) the world without its foreground group

Design notes:
    The fit loops call guidance exactly as they would call Zero123 or Stable Diffusion SDS, so
    the real optimisation code is exercised end to end without weights. The oracle's direction
    is ``weight * (render - truth)`` at the asked cameras and time: a perfect "denoiser".

    The image-model oracles answer "from the world at the pose the images were seen from": the
    pipelines declare that pose with ``core.engine.viewpoint.seen_from`` around every model call. Without
    a declared viewpoint an oracle assumes its own cameras (those of the SyntheticWorld node that
    made it: the reference video), or the world's reference view over ``linspace(0, 1)`` times.
    With ``content="background"`` the oracles see the world without its foreground group (CoCo4D's
    background branch); with ``"scene"`` the whole world (e.g. MoGe4D's ViSM filling
    disocclusions). Empty pixels have depth 0 (the pack's "infinitely far").
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..core.engine.cameras import Cameras
from ..core.engine.guidance import sds_surrogate
from ..core.engine.viewpoint import current_viewpoint
from ..core.formats.depth import METRIC_DEPTH
from .raycast import World, render

__all__ = [
    "OracleGuidance",
    "OracleDepth",
    "OracleSegmenter",
    "OracleImageInpainter",
    "OracleVideoInpainter",
    "OracleVideoGenerator",
    "background_world",
]

FOREGROUND_GROUP = "foreground"


class OracleGuidance:
    """Guidance with the ``core.engine.guidance.Guidance`` interface backed by a synthetic world.

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


def background_world(world: World) -> World | None:
    """``world`` without the primitives of its foreground group; None when nothing else is left."""
    kept = tuple(p for p in world.primitives if p.group != FOREGROUND_GROUP)
    if not kept:
        return None
    return world if len(kept) == len(world.primitives) else replace(world, primitives=kept)


def _render_or_empty(world: World | None, empty_like: World, cams: Cameras, supersample: int) -> dict[str, Tensor]:
    """``render`` of ``world``; an empty world (None) shows ``empty_like``'s background colour at depth 0."""
    if world is not None:
        return render(world, cams, supersample=supersample)
    shape = (len(cams), int(cams.height), int(cams.width))
    rgb = torch.tensor(empty_like.background, dtype=torch.float32).expand(*shape, 3).clone()
    return {"rgb": rgb, "depth": torch.zeros(shape), "alpha": torch.zeros(shape)}


class _WorldOracle:
    """Shared pose lookup of the image-model oracles."""

    name = "oracle"

    def __init__(self, world: World, supersample: int = 3, cameras: Cameras | None = None):
        self.world = world
        self.background = background_world(world)
        self.supersample = int(supersample)
        self.cameras = cameras.to("cpu") if cameras is not None else None
        self.device = torch.device("cpu")
        self.calls = 0

    def default_cameras(self, count: int, height: int, width: int) -> Cameras:
        """Cameras assumed for images given without a viewpoint: the oracle's own cameras when they
        fit, else their first pose (or the world's reference view) over ``linspace(0, 1)`` times,
        with intrinsics scaled to the image size."""
        cams = self.cameras
        if cams is not None and len(cams) == count and (int(cams.height), int(cams.width)) == (height, width):
            return cams
        ref = self.world.reference_cameras(width, height, count)
        if cams is None:
            return ref
        K = cams.Ks[0].clone()
        K[0] *= width / cams.width
        K[1] *= height / cams.height
        return Cameras(cams.viewmats[:1].expand(count, 4, 4).clone(), K.expand(count, 3, 3).clone(), width, height,
                       ref.times, cams.near, cams.far)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(world={self.world.name!r})"

    def _cameras(self, count: int, height: int, width: int, what: str, first: bool = False) -> tuple[Cameras, str]:
        """Cameras of ``count`` images of ``height x width`` and their content ("scene" or "background").

        ``first``: the images are the first frame of the declared viewpoint (an image model asked
        about frame 0 of a video).
        """
        view = current_viewpoint()
        if view is None:
            return self.default_cameras(count, height, width), "scene"
        cams = view.cameras.to("cpu")
        if first:
            cams = cams[:count]
        if (int(cams.height), int(cams.width)) != (height, width):
            raise ValueError(f"{what}: images are {width}x{height} but their declared viewpoint is "
                             f"{cams.width}x{cams.height}")
        if len(cams) == 1 and count > 1:
            idx = torch.zeros(count, dtype=torch.long)
            cams = Cameras(cams.viewmats[idx], cams.Ks[idx], cams.width, cams.height, cams.times[idx], cams.near,
                           cams.far)
        if len(cams) != count:
            raise ValueError(f"{what}: {count} images but {len(cams)} cameras in the declared viewpoint")
        return cams, view.content

    def _world(self, content: str) -> World | None:
        return self.background if content == "background" else self.world

    def _render(self, world: World | None, cams: Cameras, supersample: int | None = None) -> dict[str, Tensor]:
        self.calls += 1
        with torch.no_grad():
            return _render_or_empty(world, self.world, cams, self.supersample if supersample is None else supersample)

    def to(self, device):
        self.device = torch.device(device)
        return self

    def offload(self):
        return self


def _composite(original: Tensor, generated: Tensor, mask: Tensor) -> Tensor:
    """``original`` with ``generated`` blended in where ``mask`` (1 = fill) is positive."""
    m = mask[..., None].to(original.dtype)
    return torch.where(m > 0, original + m * (generated - original), original)


def _check_rgb(images, rank: int, what: str) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != rank or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what}: expected RGB {'[B,H,W,3]' if rank == 4 else '[H,W,3]'}, got {shape}")
    return images.detach().float().cpu()


def _check_mask(mask, like: Tensor, what: str) -> Tensor:
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(like.shape[:-1]):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{what}: mask must be {tuple(like.shape[:-1])} (1 = fill), got {shape}")
    return mask.detach().float().cpu().clamp(0, 1)


class OracleDepth(_WorldOracle):
    """Metric z-depth of the world at the declared viewpoint (the ``DepthEstimator`` interface).

    ``content="background"`` viewpoints see the background world; pixels hitting nothing get 0.
    """

    kind = METRIC_DEPTH

    def predict(self, images: Tensor, *, input_size=None, batch_size: int = 4, callback=None,
                should_stop=None) -> Tensor:
        images = _check_rgb(images, 4, "OracleDepth.predict")
        count, height, width = images.shape[:3]
        cams, content = self._cameras(count, height, width, "OracleDepth.predict")
        depth = self._render(self._world(content), cams, supersample=1)["depth"]
        if callback is not None:
            callback(count, count, None)
        return depth.float()


class OracleSegmenter(_WorldOracle):
    """True foreground masks of the frames' cameras (prompts are accepted and ignored)."""

    def segment(self, frames: Tensor, points=None, labels=None, box=None, mask=None, callback=None,
                should_stop=None, device=None, threshold=0.0) -> Tensor:
        frames = _check_rgb(frames, 4, "OracleSegmenter.segment")
        count, height, width = frames.shape[:3]
        cams, _ = self._cameras(count, height, width, "OracleSegmenter.segment")
        fg = self._render(self.world, cams).get(FOREGROUND_GROUP)
        if fg is None:
            fg = torch.zeros(count, height, width)
        if callback is not None:
            callback(count, count, None)
        return fg.float() if threshold is None else (fg > 0.5).float()


class OracleImageInpainter(_WorldOracle):
    """Fills the mask with the world rendered at the declared viewpoint (``ImageInpainter``).

    A viewpoint of several cameras (a video's) means the image is its first frame.
    """

    multiple = 1

    def inpaint(self, image: Tensor, mask: Tensor, prompt: str = "", negative_prompt: str = "", strength: float = 1.0,
                steps: int = 30, guidance_scale: float = 7.5, seed: int = 0, callback=None,
                should_stop=None) -> Tensor:
        image = _check_rgb(image, 3, "OracleImageInpainter.inpaint")
        mask = _check_mask(mask, image, "OracleImageInpainter.inpaint")
        if not (mask > 0).any():
            return image.clone()
        cams, content = self._cameras(1, image.shape[0], image.shape[1], "OracleImageInpainter.inpaint", first=True)
        truth = self._render(self._world(content), cams)["rgb"][0]
        if callback is not None:
            callback(1, 1, None)
        return _composite(image, truth, mask)


class OracleVideoInpainter(_WorldOracle):
    """Fills the masks with the world at the declared per-frame cameras (``VideoInpainter``).

    It checks the arguments a real video inpainter depends on and fails loudly on wrong ones:
    ``noise_level`` (the start point's noise level σ) must be given and lie in (0, 1];
    ``paste_mask`` (CoCo4D eq. 7's copy-pasted pixels) must match the masks and lie inside them;
    ``paste_noise_level`` needs a ``paste_mask`` and lies in [0, noise_level]. The fill ignores them.
    """

    multiple = 1
    temporal = 1

    def inpaint(self, frames: Tensor, masks: Tensor, prompt: str = "", negative_prompt: str = "",
                noise_level: float | None = None, steps: int = 30, guidance_scale: float = 5.0, seed: int = 0,
                callback=None, should_stop=None, *, paste_mask: Tensor | None = None,
                paste_noise_level: float | None = None) -> Tensor:
        what = "OracleVideoInpainter.inpaint"
        frames = _check_rgb(frames, 4, what)
        masks = _check_mask(masks, frames, what)
        if noise_level is None or not (isinstance(noise_level, (int, float)) and 0.0 < float(noise_level) <= 1.0):
            raise ValueError(f"{what}: noise_level must be the start point's noise level σ in (0, 1], got "
                             f"{noise_level!r}")
        if paste_mask is not None:
            paste = _check_mask(paste_mask, frames, f"{what} paste_mask")
            outside = int(((paste >= 0.5) & (masks < 0.5)).sum())
            if outside:
                raise ValueError(f"{what}: paste_mask marks {outside} pixels outside the masks")
        if paste_noise_level is not None:
            if paste_mask is None:
                raise ValueError(f"{what}: paste_noise_level={paste_noise_level!r} given without a paste_mask")
            if not (isinstance(paste_noise_level, (int, float)) and 0.0 <= float(paste_noise_level)
                    <= float(noise_level)):
                raise ValueError(f"{what}: paste_noise_level must lie in [0, noise_level={noise_level}], got "
                                 f"{paste_noise_level!r}")
        if not (masks > 0).any():
            return frames.clone()
        cams, content = self._cameras(*frames.shape[:3], what)
        truth = self._render(self._world(content), cams)["rgb"]
        if callback is not None:
            callback(1, 1, None)
        return _composite(frames, truth, masks)


class OracleVideoGenerator(_WorldOracle):
    """The world's reference video, with the ``VideoGenerator.generate`` interface.

    The condition image and prompts are ignored; ``width``/``height``/``num_frames`` of 0 mean the
    native values given at construction. The video is seen by the oracle's cameras (see
    ``default_cameras``).
    """

    family = "oracle"
    needs_image = False
    uses_prompt = False

    def __init__(self, world: World, width: int = 256, height: int = 256, num_frames: int = 16, fps: float = 8.0,
                 supersample: int = 3, cameras: Cameras | None = None):
        super().__init__(world, supersample, cameras)
        self._native = (int(width), int(height), int(num_frames), float(fps))

    def native(self) -> tuple[int, int, int, float]:
        return self._native

    def generate(self, image, prompt: str = "", negative_prompt: str = "", num_frames: int = 0, fps: float = 0.0,
                 steps: int = 30, guidance_scale: float = 5.0, seed: int = 0, width: int = 0, height: int = 0,
                 callback=None, should_stop=None, device=None, offload: str = "after_use") -> Tensor:
        nw, nh, nf, _ = self._native
        w, h, f = int(width) or nw, int(height) or nh, int(num_frames) or nf
        frames = self._render(self.world, self.default_cameras(f, h, w))["rgb"]
        if callback is not None:
            callback(1, 1)
        return frames.float()
