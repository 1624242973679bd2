# SPDX-License-Identifier: Apache-2.0
"""Oracle stand-ins for generative models, answering from a world's ground truth.

Public API:
    OracleGuidance          score-distillation guidance that pulls renders toward the true view
    OracleDepth             depth model (DepthEstimator interface): exact metric depth, or with a model's error
    OracleSegmenter         video segmenter returning the true foreground masks
    OracleImageInpainter    image inpainter filling holes with the world's background; refuses inputs that
                            do not show the world at the declared viewpoint
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

    Oracles read their inputs where a real model's answer depends on them. The image inpainter
    keeps the pixels outside the mask exactly and checks that they show the world at the declared
    viewpoint: a wrong viewpoint, a mask inverted against the holes or an image from elsewhere
    raise instead of being silently answered from the world. The depth oracle can answer like a
    real monocular model, with a scale and shift error in its output space that may differ from
    image to image (see :class:`OracleDepth` for what the pipelines do with each kind).
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.engine.cameras import Cameras
from ..core.engine.guidance import sds_surrogate
from ..core.engine.viewpoint import current_viewpoint
from ..core.formats.depth import METRIC_DEPTH, RELATIVE_DISPARITY
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
    """Depth of the world at the declared viewpoint (the ``DepthEstimator`` interface).

    ``content="background"`` viewpoints see the background world; pixels hitting nothing get 0.

    Args:
        world, supersample, cameras: as every oracle (depth is ray-cast without supersampling).
        kind: ``"metric_depth"`` answers z-depth, ``"relative_disparity"`` answers ``1/z``
            (larger = nearer), as Depth Anything's metric and relative checkpoints do.
        scale, shift: error of every answer in the kind's own space, ``scale * v + shift`` on the
            pixels that see something (``v`` = z or 1/z; empty pixels stay 0). ``shift`` is in
            that space's units (metres, or 1/metres).
        jitter: per-image spread of the error: image ``i`` gets scale ``scale * (1 + jitter u)``
            and shift ``shift + jitter w median(v)``, ``u, w`` uniform in [-1, 1] drawn from a
            generator seeded by a checksum of the image's pixels, so one image always gets one
            answer (a network is deterministic) and different images get different errors, like a
            monocular model's per-image scale and shift.
        exact_first: answer this many images exactly before the error starts. A scene lifted from
            one depth map lives in that map's units (and a shift bends it), so it can be compared
            with the world only when those units are the world's; the answers after it carry the
            error the pipeline has to align away.

    What the pipelines do with each kind: CoCo4D's outpaint lifts the reference frame with a metric
    answer as it is (its error sets the units of the background scene; a shift bends it) and with
    a relative one as ``1/disparity`` scaled to a fixed median (a disparity shift bends it);
    answers at the outpaint poses are aligned to the rendered scene in the kind's own space
    (``core.coco4d.depth_align``); Compose maps its answer for the reference frame onto the
    rendered background with eq. 9 (exact for a metric error, approximate for a relative one,
    whose ``1/(s/z + b)`` is not affine in ``z``). Only an error that differs between the lifted
    image and the later ones makes those alignments find anything but the identity. ``errors``
    records each answer's ``(scale, shift)``.
    """

    def __init__(self, world: World, supersample: int = 3, cameras: Cameras | None = None,
                 kind: str = METRIC_DEPTH, scale: float = 1.0, shift: float = 0.0, jitter: float = 0.0,
                 exact_first: int = 0):
        super().__init__(world, supersample, cameras)
        if kind not in (METRIC_DEPTH, RELATIVE_DISPARITY):
            raise ValueError(f"OracleDepth: kind must be {METRIC_DEPTH!r} or {RELATIVE_DISPARITY!r}, got {kind!r}")
        if not (float(scale) > 0 and 0.0 <= float(jitter) < 1.0 and int(exact_first) >= 0):
            raise ValueError(f"OracleDepth: need scale > 0, 0 <= jitter < 1 and exact_first >= 0, got scale {scale}, "
                             f"jitter {jitter}, exact_first {exact_first}")
        self.kind = kind
        self.scale, self.shift, self.jitter, self.exact_first = float(scale), float(shift), float(jitter), \
            int(exact_first)
        self.errors: list[tuple[float, float]] = []

    def predict(self, images: Tensor, *, input_size=None, batch_size: int = 4, callback=None,
                should_stop=None) -> Tensor:
        images = _check_rgb(images, 4, "OracleDepth.predict")
        count, height, width = images.shape[:3]
        cams, content = self._cameras(count, height, width, "OracleDepth.predict")
        depth = self._render(self._world(content), cams, supersample=1)["depth"].float()
        depth = torch.stack([self._answer(image, z) for image, z in zip(images, depth)])
        if callback is not None:
            callback(count, count, None)
        return depth

    def _answer(self, image: Tensor, z: Tensor) -> Tensor:
        """One image's answer in the kind's space with its error (0 where nothing is seen)."""
        seen = z > 0
        v = torch.where(seen, z if self.kind == METRIC_DEPTH else 1.0 / z.clamp_min(1e-12), torch.zeros_like(z))
        scale, shift = (1.0, 0.0) if len(self.errors) < self.exact_first else (self.scale, self.shift)
        if self.jitter > 0 and seen.any() and len(self.errors) >= self.exact_first:
            checksum = zlib.crc32(image.contiguous().numpy().tobytes())
            u, w = (torch.rand(2, generator=torch.Generator().manual_seed(checksum), dtype=torch.float64) * 2 - 1)
            scale = scale * (1.0 + self.jitter * float(u))
            shift = shift + self.jitter * float(w) * float(v[seen].median())
        self.errors.append((scale, shift))
        return torch.where(seen, (scale * v + shift).clamp_min(1e-6), torch.zeros_like(v))


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

    A viewpoint of several cameras (a video's) means the image is its first frame. Pixels where
    the mask is 0 are returned exactly as given, and they must show the world there: a real
    inpainter continues what it is shown, so an oracle that answered from the world regardless
    would hide a wrong condition. The kept pixels are compared with the world at the declared
    viewpoint twice, as they are and with both blurred by a 3x3 box (a blurry, under-fitted render
    of the right view agrees there; a view from elsewhere does not). The call raises when more
    than ``max_mismatch`` of them differ by more than ``tolerance`` (largest channel difference)
    as they are and more than ``max_blurred_mismatch`` do after the blur. ``mismatch`` records
    both shares of every checked call.

    Args:
        world, supersample, cameras: as every oracle.
        tolerance: colour difference a kept pixel may have from the world.
        max_mismatch, max_blurred_mismatch: shares of kept pixels allowed beyond ``tolerance``,
            as they are and blurred. Measured on the scene world's textures (as they are /
            blurred): 0.07-0.16 / 0.01-0.04 for the CoCo4D outpaint's renders of its fitted
            background at 96x72 (0.27 as they are when a depth error bends the lifted scene),
            0.58 / 0.06 for a 16x16 render after four fit steps; 0.63-0.81 / 0.57-0.77 for the
            same 96x72 calls with the reference view declared at an outpaint pose, 0.70-0.96
            blurred with the mask inverted, 0.15 blurred for the 16x16 call with the reference
            view declared, 0.66 / 0.25 for a 40x32 view declared 5 degrees off.
        min_known: fewer kept pixels than this are not judged.
    """

    multiple = 1

    def __init__(self, world: World, supersample: int = 3, cameras: Cameras | None = None, tolerance: float = 0.2,
                 max_mismatch: float = 0.4, max_blurred_mismatch: float = 0.1, min_known: int = 32):
        super().__init__(world, supersample, cameras)
        self.tolerance, self.min_known = float(tolerance), int(min_known)
        self.max_mismatch, self.max_blurred_mismatch = float(max_mismatch), float(max_blurred_mismatch)
        self.mismatch: list[tuple[float, float]] = []

    def inpaint(self, image: Tensor, mask: Tensor, prompt: str = "", negative_prompt: str = "", strength: float = 1.0,
                steps: int = 30, guidance_scale: float = 7.5, seed: int = 0, callback=None,
                should_stop=None) -> Tensor:
        image = _check_rgb(image, 3, "OracleImageInpainter.inpaint")
        mask = _check_mask(mask, image, "OracleImageInpainter.inpaint")
        if not (mask > 0).any():
            return image.clone()
        cams, content = self._cameras(1, image.shape[0], image.shape[1], "OracleImageInpainter.inpaint", first=True)
        truth = self._render(self._world(content), cams)["rgb"][0]
        self._check_kept(image, truth, mask <= 0, cams, content)
        if callback is not None:
            callback(1, 1, None)
        return _composite(image, truth, mask)

    def _check_kept(self, image: Tensor, truth: Tensor, kept: Tensor, cams: Cameras, content: str) -> None:
        count = int(kept.sum())
        if count < self.min_known:
            return
        sharp = float(((image - truth).abs().amax(dim=-1) > self.tolerance)[kept].float().mean())
        inner = F.max_pool2d((~kept).float()[None, None], 3, 1, 1)[0, 0] < 0.5  # kept pixels away from holes
        if int(inner.sum()) < self.min_known:
            return
        blurred = float(((_box3(image) - _box3(truth)).abs().amax(dim=-1) > self.tolerance)[inner].float().mean())
        self.mismatch.append((sharp, blurred))
        if sharp > self.max_mismatch and blurred > self.max_blurred_mismatch:
            raise ValueError(
                f"OracleImageInpainter.inpaint: of the {count} pixels outside the mask {sharp:.0%} differ from the "
                f"{content} world at the declared viewpoint by more than {self.tolerance}, {blurred:.0%} after a 3x3 "
                f"blur (at most {self.max_mismatch:.0%} / {self.max_blurred_mismatch:.0%} may); the image does not "
                f"show what the viewpoint sees: a wrong viewpoint declared, a mask inverted against the holes "
                f"(1 = fill), or an image from elsewhere. Viewpoint: camera centre "
                f"{[round(v, 3) for v in cams.centers[0].tolist()]}, time {float(cams.times[0]):.3f}")


def _box3(image: Tensor) -> Tensor:
    """``[H,W,C]`` averaged over 3x3 neighbourhoods (borders over the pixels inside)."""
    x = image.permute(2, 0, 1)[None]
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)[0].permute(1, 2, 0)


class OracleVideoInpainter(_WorldOracle):
    """Fills the masks with the world at the declared per-frame cameras (``VideoInpainter``).

    It checks the arguments a real video inpainter depends on and fails loudly on wrong ones:
    ``noise_level`` (the start point's noise level σ) must be given and lie in [0, 1] (0: no scheduler
    step lies at or below it, so the frames come back unchanged, as from the real inpainter);
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
        if noise_level is None or not (isinstance(noise_level, (int, float)) and 0.0 <= float(noise_level) <= 1.0):
            raise ValueError(f"{what}: noise_level must be the start point's noise level σ in [0, 1], got "
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
        if not (masks > 0).any() or float(noise_level) == 0.0:
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
