# SPDX-License-Identifier: Apache-2.0
"""Batches of render-ready splats, the payload of ComfyUI core's ``SPLAT`` socket, and back.

Public API:
    SplatBatch                       positions / scales / rotations / opacities / sh / counts tensors
    gaussians_to_batch(frames)       one batch item per Gaussian set (zero-padded, ``counts`` when ragged)
    batch_from_payload(obj, who)     read and check the tensors of any object with those attributes
    batch_to_gaussians(batch, who)   one Gaussian set per batch item
    frames_to_scene(frames, fps)     equal-count per-frame sets -> a Scene4D with explicit per-frame motion
    FrameSequenceMotion              motion kind "frame_sequence": every attribute given per frame

Payload (as ComfyUI documents ``SPLAT``): ``positions [B,N,3]`` world centres, ``scales [B,N,3]``
linear standard deviations, ``rotations [B,N,4]`` unit quaternions wxyz, ``opacities [B,N,1]`` in
[0, 1], ``sh [B,N,K,3]`` with ``K = (degree+1)^2`` and the DC term at ``K = 0``, ``counts [B]``
real lengths of zero-padded items or None. Our Gaussians store log-scales, logit opacities and
raw wxyz quaternions, so the conversion activates on the way out and inverts on the way in
(opacities are clamped to ``[1e-6, 1 - 1e-6]`` before the logit; scales must be positive).

Design notes:
    :func:`frames_to_scene` keeps the first item as the canonical set. When only positions and
    rotations change between items it uses :class:`~..engine.scene.KeyframeMotion`; when scales,
    opacities or SH change too it uses :class:`FrameSequenceMotion`, which stores each of them
    per frame and interpolates linearly in the stored (log / logit / raw) parameters, normalised
    lerp for quaternions. Items must then hold the same number of splats, matched by index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..engine.gaussians import Gaussians
from ..engine.scene import KeyframeMotion, Motion, Scene4D, ScenePart, register_motion

__all__ = [
    "SplatBatch",
    "gaussians_to_batch",
    "batch_from_payload",
    "batch_to_gaussians",
    "frames_to_scene",
    "FrameSequenceMotion",
]

_OPACITY_EPS = 1e-6
_VALID_K = (1, 4, 9, 16)


@dataclass(frozen=True)
class SplatBatch:
    """Tensors of a ``SPLAT`` payload (see the module notes); float32 on the CPU."""

    positions: Tensor
    scales: Tensor
    rotations: Tensor
    opacities: Tensor
    sh: Tensor
    counts: Tensor | None = None

    def __len__(self) -> int:
        return self.positions.shape[0]

    def count(self, i: int) -> int:
        """Real splat count of item ``i``."""
        return int(self.counts[i]) if self.counts is not None else self.positions.shape[1]

    def tensors(self) -> dict[str, Tensor | None]:
        return {"positions": self.positions, "scales": self.scales, "rotations": self.rotations,
                "opacities": self.opacities, "sh": self.sh, "counts": self.counts}


def gaussians_to_batch(frames: Sequence[Gaussians], who: str = "gaussians_to_batch") -> SplatBatch:
    """One batch item per Gaussian set: activated values, padded with zeros to the largest set and degree.

    Raises:
        ValueError: no frames, a non-Gaussians item, or NaN/inf values.
    """
    frames = list(frames)
    if not frames:
        raise ValueError(f"{who}: need at least one Gaussian set")
    for i, g in enumerate(frames):
        if not isinstance(g, Gaussians):
            raise ValueError(f"{who}: item {i} must be Gaussians, got {type(g).__name__}")
        try:
            g.validate(check_finite=True)
        except ValueError as exc:
            raise ValueError(f"{who}: frame {i}: {exc}") from exc
    b, n = len(frames), max(len(g) for g in frames)
    k = max(g.sh.shape[1] for g in frames)
    z = lambda *shape: torch.zeros(b, n, *shape, dtype=torch.float32)  # noqa: E731
    pos, scl, rot, opa, sh = z(3), z(3), z(4), z(1), z(k, 3)
    for i, g in enumerate(frames):
        g = g.detach().to("cpu")
        m = len(g)
        pos[i, :m] = g.means.float()
        scl[i, :m] = g.scales.float()
        rot[i, :m] = g.rotations.float()
        opa[i, :m, 0] = g.opacities.float()
        sh[i, :m, : g.sh.shape[1]] = g.sh.float()
    counts = None
    if len({len(g) for g in frames}) > 1:
        counts = torch.tensor([len(g) for g in frames], dtype=torch.int64)
    return SplatBatch(pos, scl, rot, opa, sh, counts)


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def batch_from_payload(payload, who: str = "splat") -> SplatBatch:
    """Read ``positions``, ``scales``, ``rotations``, ``opacities``, ``sh`` and ``counts`` off ``payload``.

    Raises:
        ValueError: naming the field and batch item, for a missing field, wrong shapes, counts
            that do not fit the batch, NaN/inf values in real rows, SH of an unsupported degree,
            non-positive scales, opacities outside [0, 1] or zero-length rotations.
    """
    fields = {}
    for name in ("positions", "scales", "rotations", "opacities", "sh"):
        value = getattr(payload, name, None)
        if not isinstance(value, Tensor):
            raise ValueError(f"{who}: the SPLAT payload has no '{name}' tensor (got {type(value).__name__}); "
                             f"expected an object with positions, scales, rotations, opacities, sh and counts")
        if not value.is_floating_point():
            raise ValueError(f"{who}: SPLAT '{name}' must be floating point, got {value.dtype}")
        fields[name] = value.detach().to("cpu", torch.float32)
    pos = fields["positions"]
    if pos.dim() != 3 or pos.shape[2] != 3 or pos.shape[0] < 1:
        raise ValueError(f"{who}: SPLAT positions must be [B>=1,N,3], got {_shape(pos)}")
    b, n = pos.shape[:2]
    opa = fields["opacities"]
    if opa.dim() == 2 and tuple(opa.shape) == (b, n):
        opa = opa[..., None]
    for name, tail in (("scales", (3,)), ("rotations", (4,)), ("opacities", (1,))):
        value = opa if name == "opacities" else fields[name]
        if tuple(value.shape) != (b, n, *tail):
            raise ValueError(f"{who}: SPLAT {name} must be [{b},{n},{tail[0]}] to match positions {_shape(pos)}, "
                             f"got {_shape(value)}")
    sh = fields["sh"]
    if sh.dim() == 3 and tuple(sh.shape) == (b, n, 3):
        sh = sh[:, :, None, :]
    if sh.dim() != 4 or tuple(sh.shape[:2]) != (b, n) or sh.shape[3] != 3:
        raise ValueError(f"{who}: SPLAT sh must be [{b},{n},K,3], got {_shape(sh)}")
    if sh.shape[2] not in _VALID_K:
        degree = math.sqrt(sh.shape[2]) - 1
        raise ValueError(f"{who}: SPLAT sh has K={sh.shape[2]} coefficients per channel "
                         f"(degree {degree:g}); supported are K in {_VALID_K} (degree 0..3)")
    counts = getattr(payload, "counts", None)
    if counts is not None:
        if not isinstance(counts, Tensor) or tuple(counts.shape) != (b,) or counts.is_floating_point() \
                or counts.dtype == torch.bool:
            raise ValueError(f"{who}: SPLAT counts must be an integer tensor [{b}] (one per batch item) or None, "
                             f"got {_shape(counts)} {getattr(counts, 'dtype', '')}")
        counts = counts.detach().to("cpu", torch.int64)
        bad = [(i, int(c)) for i, c in enumerate(counts.tolist()) if not 0 <= c <= n]
        if bad:
            raise ValueError(f"{who}: SPLAT counts {bad[:4]} (item, count) lie outside 0..{n}, the padded length")
    batch = SplatBatch(pos, fields["scales"], fields["rotations"], opa, sh, counts)
    for i in range(b):
        m = batch.count(i)
        for name, value in (("positions", pos), ("scales", batch.scales), ("rotations", batch.rotations),
                            ("opacities", opa), ("sh", sh)):
            rows = value[i, :m]
            if not torch.isfinite(rows).all():
                raise ValueError(f"{who}: SPLAT {name} of batch item {i} hold "
                                 f"{int((~torch.isfinite(rows)).sum())} NaN/inf values")
        if m and (batch.scales[i, :m] <= 0).any():
            raise ValueError(f"{who}: SPLAT scales of batch item {i} must be positive (linear standard "
                             f"deviations); {int((batch.scales[i, :m] <= 0).sum())} are not")
        o = opa[i, :m]
        if m and ((o < -1e-6) | (o > 1 + 1e-6)).any():
            raise ValueError(f"{who}: SPLAT opacities of batch item {i} must lie in [0, 1], found "
                             f"{float(o.min()):.4g}..{float(o.max()):.4g}")
        if m and (batch.rotations[i, :m].norm(dim=-1) <= 1e-12).any():
            raise ValueError(f"{who}: SPLAT rotations of batch item {i} include zero-length quaternions")
    return batch


def batch_to_gaussians(batch: SplatBatch, who: str = "splat") -> list[Gaussians]:
    """One Gaussian set per item (our storage: log-scales, logit opacities, unit wxyz quaternions)."""
    out = []
    for i in range(len(batch)):
        m = batch.count(i)
        o = batch.opacities[i, :m, 0].clamp(_OPACITY_EPS, 1.0 - _OPACITY_EPS)
        out.append(Gaussians(batch.positions[i, :m].clone(),
                             torch.nn.functional.normalize(batch.rotations[i, :m], dim=-1),
                             batch.scales[i, :m].log(), torch.logit(o), batch.sh[i, :m].clone()))
    return out


def _lerp(frames: Tensor, t: float | Tensor) -> Tensor:
    last = frames.shape[0] - 1
    if last == 0:
        return frames[0]
    s = float(t.detach()) * last if isinstance(t, Tensor) else float(t) * last
    if abs(s - round(s)) < 1e-6:
        return frames[int(round(s))]
    i0 = min(int(math.floor(s)), last - 1)
    return torch.lerp(frames[i0], frames[i0 + 1], s - i0)


@register_motion
class FrameSequenceMotion(Motion):
    """Every attribute given at ``T`` evenly spaced times (kind ``"frame_sequence"``).

    Args:
        means: ``[T,N,3]``; quats: ``[T,N,4]`` wxyz; log_scales: ``[T,N,3]``;
        logit_opacities: ``[T,N]``; sh: optional ``[T,N,K,3]`` (None: the canonical SH at every time).

    Frame ``i`` sits at ``t = i/(T-1)``; between frames each field is interpolated linearly
    (quaternions: normalised lerp in the earlier one's hemisphere). Exact at the frames.
    """

    kind = "frame_sequence"

    def __init__(self, means: Tensor, quats: Tensor, log_scales: Tensor, logit_opacities: Tensor,
                 sh: Tensor | None = None) -> None:
        if not isinstance(means, Tensor) or means.dim() != 3 or means.shape[2] != 3 or means.shape[0] < 1:
            raise ValueError(f"FrameSequenceMotion: means must be [T>=1,N,3], got {_shape(means)}")
        t, n = means.shape[:2]
        for name, value, tail in (("quats", quats, (4,)), ("log_scales", log_scales, (3,)),
                                  ("logit_opacities", logit_opacities, ())):
            if not isinstance(value, Tensor) or tuple(value.shape) != (t, n, *tail):
                raise ValueError(f"FrameSequenceMotion: {name} must be [{t},{n}{''.join(f',{d}' for d in tail)}], "
                                 f"got {_shape(value)}")
        if sh is not None and (not isinstance(sh, Tensor) or sh.dim() != 4 or tuple(sh.shape[:2]) != (t, n)):
            raise ValueError(f"FrameSequenceMotion: sh must be [{t},{n},K,3] or None, got {_shape(sh)}")
        self.means, self.quats, self.log_scales, self.logit_opacities, self.sh = (
            means, quats, log_scales, logit_opacities, sh)

    @property
    def num_frames(self) -> int:
        return self.means.shape[0]

    def check_compatible(self, num_gaussians: int) -> None:
        if self.means.shape[1] != num_gaussians:
            raise ValueError(f"FrameSequenceMotion: motion has {self.means.shape[1]} Gaussians per frame, "
                             f"the part has {num_gaussians}")

    def apply(self, gaussians: Gaussians, t: float | Tensor) -> Gaussians:
        tv = float(t.detach()) if isinstance(t, Tensor) else float(t)
        if not math.isfinite(tv) or not 0.0 <= tv <= 1.0:
            raise ValueError(f"FrameSequenceMotion.apply: t must lie in [0, 1], got {t!r}")
        self.check_compatible(len(gaussians))
        last = self.num_frames - 1
        s = tv * last
        if last and abs(s - round(s)) >= 1e-6:
            i0 = min(int(math.floor(s)), last - 1)
            q0, q1 = self.quats[i0], self.quats[i0 + 1]
            q1 = torch.where((q0 * q1).sum(-1, keepdim=True) < 0, -q1, q1)
            quats = torch.nn.functional.normalize(torch.lerp(q0, q1, s - i0), dim=-1)
        else:
            quats = self.quats[int(round(s)) if last else 0]
        sh = gaussians.sh if self.sh is None else _lerp(self.sh, tv)
        d = gaussians.dtype
        return Gaussians(_lerp(self.means, tv).to(d), quats.to(d), _lerp(self.log_scales, tv).to(d),
                         _lerp(self.logit_opacities, tv).to(d), sh.to(d))

    def state_dict(self) -> dict[str, Tensor]:
        out = {"means": self.means, "quats": self.quats, "log_scales": self.log_scales,
               "logit_opacities": self.logit_opacities}
        if self.sh is not None:
            out["sh"] = self.sh
        return out

    def config(self) -> dict:
        return {"num_frames": self.num_frames, "has_sh": self.sh is not None}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, Tensor]) -> "FrameSequenceMotion":
        missing = [k for k in ("means", "quats", "log_scales", "logit_opacities") if k not in tensors]
        if missing:
            raise ValueError(f"FrameSequenceMotion: state lacks tensors {missing}")
        if bool(config.get("has_sh", False)) != ("sh" in tensors):
            raise ValueError("FrameSequenceMotion: config 'has_sh' does not match the stored tensors")
        return cls(tensors["means"], tensors["quats"], tensors["log_scales"], tensors["logit_opacities"],
                   tensors.get("sh"))


def frames_to_scene(frames: Sequence[Gaussians], fps: float = 24.0, name: str = "splat",
                    who: str = "frames_to_scene") -> Scene4D:
    """A one-part scene whose frame ``i`` is ``frames[i]`` exactly (one set: a static scene).

    Raises:
        ValueError: no frames, or frames holding different numbers of splats (naming them).
    """
    frames = [g.detach().to("cpu") for g in frames]
    if not frames:
        raise ValueError(f"{who}: need at least one frame")
    if len(frames) == 1:
        return Scene4D.static(frames[0], 1, fps, name)
    sizes = [len(g) for g in frames]
    if len(set(sizes)) > 1:
        raise ValueError(f"{who}: a per-frame scene needs the same splats in every frame (matched by index); "
                         f"the frames hold {sizes[:8]}{'...' if len(sizes) > 8 else ''} splats. Take one item as "
                         f"GEN4D_GAUSSIANS instead")
    k = max(g.sh.shape[1] for g in frames)
    frames = [g if g.sh.shape[1] == k else g.with_sh_degree(int(round(math.sqrt(k))) - 1) for g in frames]
    canon = frames[0]
    stack = lambda field: torch.stack([getattr(g, field) for g in frames])  # noqa: E731
    means, quats = stack("means"), stack("quats")
    log_scales, logits, sh = stack("log_scales"), stack("logit_opacities"), stack("sh")
    same = lambda x: bool((x == x[:1]).all())  # noqa: E731
    if same(log_scales) and same(logits) and same(sh):
        motion: Motion = KeyframeMotion(means, quats)
    else:
        motion = FrameSequenceMotion(means, quats, log_scales, logits, None if same(sh) else sh)
    return Scene4D([ScenePart(name, canon, motion)], len(frames), fps)
