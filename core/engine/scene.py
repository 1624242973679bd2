# SPDX-License-Identifier: Apache-2.0
"""The dynamic scene carried by the GEN4D_SCENE socket, and its file format.

Public API:
    Motion                      abstract deformation: ``apply(gaussians, t) -> Gaussians``
    register_motion(cls)        class decorator: make a Motion kind loadable from scene files
    motion_class(kind)          the registered class of a kind
    StaticMotion                identity
    KeyframeMotion              absolute per-frame means ``[T,N,3]`` (and optional quats ``[T,N,4]``)
    PlacedMotion                another motion followed by a per-frame similarity (scale, rotation, translation)
    ScenePart                   named canonical Gaussians + motion + optional screen-space trajectory
                                + optional reference cameras (the views the part was reconstructed from)
    Scene4D                     parts, frame count and fps; ``at(t)``, ``bake``, ``save``/``load``
    SCENE_FORMAT, SCENE_VERSION the file format name and the version written
    READABLE_VERSIONS           the versions ``load`` reads (older files keep loading)

Design notes:
    Time is normalised: ``t`` in ``[0, 1]`` spans the clip and frame ``i`` of ``T`` sits at
    ``i/(T-1)``. A scene file is one safetensors file: tensors ``parts.{i}.gaussians.{field}``,
    ``parts.{i}.motion.{name}`` and ``parts.{i}.trajectory.{name}``; the header metadata holds
    ``format`` = "gen4d-scene", ``version`` = "1" and ``scene``, a JSON document with
    ``num_frames``, ``fps`` and per part its ``name``, ``motion`` {``kind``, ``config``} and
    trajectory keys. Motion kinds live in a registry so later modules (the HexPlane deformation
    field) add kinds with ``@register_motion`` and old files keep loading. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from ..formats.paths import atomic_path, safe_output_path
from .cameras import Cameras
from .gaussians import Gaussians, quat_multiply, quat_to_rotmat

__all__ = [
    "Motion",
    "register_motion",
    "motion_class",
    "StaticMotion",
    "KeyframeMotion",
    "PlacedMotion",
    "ScenePart",
    "Scene4D",
    "SCENE_FORMAT",
    "SCENE_VERSION",
    "READABLE_VERSIONS",
    "TRAJECTORY_KEYS",
    "MAX_FILE_FRAMES",
]

log = logging.getLogger(__name__)

SCENE_FORMAT = "gen4d-scene"
SCENE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before parts recorded their reference cameras
TRAJECTORY_KEYS = ("shift", "scale")
# The most frames a scene file may claim. Frame counts of motions that store per-frame tensors are
# checked against those tensors (bounded by the file's size); a deformation field has no per-frame data,
# so its count is only a number in the metadata, and every node that walks the frames trusts it.
MAX_FILE_FRAMES = 100_000
_MOTIONS: dict[str, type["Motion"]] = {}


def _check_time(t: float | Tensor, who: str) -> float | Tensor:
    """Validate a scalar normalised time; returns a float, or the 0-dim tensor if it needs grad."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"{who}: t must be a scalar, got a tensor of shape {tuple(t.shape)}")
        value = float(t.detach().reshape(()))
    elif isinstance(t, numbers.Real) and not isinstance(t, bool):
        value = float(t)
    else:
        raise ValueError(f"{who}: t must be a float or a scalar tensor, got {type(t).__name__}")
    if not (math.isfinite(value) and -1e-6 <= value <= 1.0 + 1e-6):
        raise ValueError(f"{who}: t must lie in [0, 1], got {value}")
    if isinstance(t, Tensor) and t.requires_grad:
        return t.reshape(()).clamp(0.0, 1.0)
    return min(max(value, 0.0), 1.0)


class Motion(ABC):
    """A deformation of canonical Gaussians over normalised time.

    Subclasses set ``kind``, implement :meth:`apply`, and for persistence :meth:`state_dict`,
    :meth:`config` and :meth:`from_state`; decorate them with :func:`register_motion`.
    """

    kind: ClassVar[str] = ""

    @abstractmethod
    def apply(self, gaussians: Gaussians, t: float | Tensor) -> Gaussians:
        """Gaussians at time ``t`` in ``[0,1]`` (a float or a 0-dim tensor) from the canonical set."""

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to persist (names without dots are safest)."""
        return {}

    def config(self) -> dict:
        """JSON-able settings to persist."""
        return {}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, Tensor]) -> "Motion":
        """Rebuild from :meth:`config` and :meth:`state_dict` output."""
        return cls()

    def check_compatible(self, num_gaussians: int) -> None:
        """Raise ``ValueError`` if this motion cannot drive ``num_gaussians`` Gaussians (default: any)."""
        return None

    def to(self, device: torch.device | str) -> "Motion":
        """A copy on ``device`` (default: rebuilt from state)."""
        return type(self).from_state(self.config(), {k: v.to(device) for k, v in self.state_dict().items()})


def register_motion(cls: type[Motion]) -> type[Motion]:
    """Class decorator adding ``cls`` to the motion registry under ``cls.kind``.

    Raises:
        ValueError: if ``cls`` is not a Motion subclass, has no ``kind``, or the kind is taken by
            a different class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Motion)):
        raise ValueError(f"register_motion: expected a Motion subclass, got {cls!r}")
    kind = getattr(cls, "kind", "")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"register_motion: {cls.__qualname__}.kind must be a non-empty string, got {kind!r}")
    old = _MOTIONS.get(kind)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"register_motion: kind {kind!r} is already registered by "
                         f"{old.__module__}.{old.__qualname__}")
    _MOTIONS[kind] = cls
    return cls


def motion_class(kind: str) -> type[Motion]:
    """The registered Motion class of ``kind``; ``ValueError`` listing the known kinds otherwise."""
    if kind not in _MOTIONS:
        raise ValueError(f"unknown motion kind {kind!r}; known kinds: {sorted(_MOTIONS)}")
    return _MOTIONS[kind]


@register_motion
class StaticMotion(Motion):
    """No motion: every time shows the canonical Gaussians."""

    kind = "static"

    def apply(self, gaussians: Gaussians, t: float | Tensor) -> Gaussians:
        _check_time(t, "StaticMotion.apply")
        return gaussians

    def to(self, device: torch.device | str) -> "StaticMotion":
        return self


def _lerp_frames(frames: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, float | Tensor]:
    """Neighbouring frames and the blend weight for ``t``; exact frames at ``t = i/(T-1)``."""
    last = frames.shape[0] - 1
    if last == 0:
        return frames[0], frames[0], 0.0
    s = t * last
    if isinstance(s, float):
        if abs(s - round(s)) < 1e-6:  # land exactly on a keyframe despite float rounding
            s = float(round(s))
        i0 = min(int(math.floor(s)), last - 1)
        return frames[i0], frames[i0 + 1], s - i0
    i0 = min(int(math.floor(float(s.detach()))), last - 1)
    return frames[i0], frames[i0 + 1], s - i0


@register_motion
class KeyframeMotion(Motion):
    """Explicit positions (and optionally rotations) at ``T`` evenly spaced times.

    Args:
        means: ``[T,N,3]`` absolute centres at ``t = i/(T-1)`` (``T = 1``: constant).
        quats: optional ``[T,N,4]`` absolute wxyz rotations; canonical rotations are kept if None.

    Means are interpolated linearly; quaternions by normalised lerp after flipping the later one
    into the earlier one's hemisphere. Scales, opacities and colours stay canonical.
    """

    kind = "keyframes"

    def __init__(self, means: Tensor, quats: Tensor | None = None) -> None:
        if not isinstance(means, Tensor) or means.dim() != 3 or means.shape[0] < 1 or means.shape[2] != 3:
            raise ValueError(f"KeyframeMotion: means must be [T>=1,N,3], got {_shape(means)}")
        if not means.is_floating_point():
            raise ValueError(f"KeyframeMotion: means must be floating point, got {means.dtype}")
        if quats is not None and (not isinstance(quats, Tensor) or tuple(quats.shape) != (*means.shape[:2], 4)):
            raise ValueError(f"KeyframeMotion: quats must be [{means.shape[0]},{means.shape[1]},4] to match "
                             f"means, got {_shape(quats)}")
        self.means = means
        self.quats = quats

    @property
    def num_frames(self) -> int:
        return self.means.shape[0]

    def check_compatible(self, num_gaussians: int) -> None:
        if self.means.shape[1] != num_gaussians:
            raise ValueError(f"KeyframeMotion: motion has {self.means.shape[1]} Gaussians per frame, "
                             f"the part has {num_gaussians}")

    def apply(self, gaussians: Gaussians, t: float | Tensor) -> Gaussians:
        t = _check_time(t, "KeyframeMotion.apply")
        self.check_compatible(len(gaussians))
        m0, m1, w = _lerp_frames(self.means, t)
        means = m0 if isinstance(w, float) and w == 0.0 else m1 if isinstance(w, float) and w == 1.0 \
            else torch.lerp(m0, m1, w if isinstance(w, Tensor) else float(w))
        quats = gaussians.quats
        if self.quats is not None:
            q0, q1, w = _lerp_frames(self.quats, t)
            if isinstance(w, float) and w == 0.0:
                quats = q0
            elif isinstance(w, float) and w == 1.0:
                quats = q1
            else:
                q1 = torch.where((q0 * q1).sum(-1, keepdim=True) < 0, -q1, q1)
                quats = torch.nn.functional.normalize(torch.lerp(q0, q1, w), dim=-1)
        return Gaussians(means.to(gaussians.dtype), quats.to(gaussians.dtype), gaussians.log_scales,
                         gaussians.logit_opacities, gaussians.sh)

    def state_dict(self) -> dict[str, Tensor]:
        return {"means": self.means} if self.quats is None else {"means": self.means, "quats": self.quats}

    def config(self) -> dict:
        return {"num_frames": self.num_frames, "has_quats": self.quats is not None}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, Tensor]) -> "KeyframeMotion":
        if "means" not in tensors:
            raise ValueError("KeyframeMotion: state lacks the 'means' tensor")
        if bool(config.get("has_quats", False)) != ("quats" in tensors):
            raise ValueError("KeyframeMotion: config 'has_quats' does not match the stored tensors")
        motion = cls(tensors["means"], tensors.get("quats"))
        if "num_frames" in config and int(config["num_frames"]) != motion.num_frames:
            raise ValueError(f"KeyframeMotion: config says {config['num_frames']} frames, tensors hold "
                             f"{motion.num_frames}")
        return motion


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


@register_motion
class PlacedMotion(Motion):
    """Another motion, then a per-frame similarity ``x -> s_i R_i x + b_i`` (kind ``"placed"``).

    It puts an object reconstructed in its own frame into a scene (``core.coco4d.compose``, CoCo4D §3.3):
    the inner motion animates the object, the similarity places it at time ``t``.

    Args:
        inner: the object's own motion.
        scales: ``[T]`` positive scale factors ``s_i`` at ``t = i/(T-1)``.
        quats: ``[T,4]`` wxyz rotations ``R_i`` (normalised on use).
        translations: ``[T,3]`` translations ``b_i``.

    Between keyframes ``log s`` and ``b`` are interpolated linearly, rotations by normalised lerp
    in one hemisphere. Gaussians rotate with ``R``, their scales grow by ``s``; SH coefficients of
    degree > 0 are not rotated (as :meth:`Gaussians.transform`).
    """

    kind = "placed"

    def __init__(self, inner: Motion, scales: Tensor, quats: Tensor, translations: Tensor) -> None:
        if not isinstance(inner, Motion):
            raise ValueError(f"PlacedMotion: inner must be a Motion, got {type(inner).__name__}")
        if not isinstance(scales, Tensor) or scales.dim() != 1 or scales.shape[0] < 1:
            raise ValueError(f"PlacedMotion: scales must be [T>=1], got {_shape(scales)}")
        n = scales.shape[0]
        if not isinstance(quats, Tensor) or tuple(quats.shape) != (n, 4):
            raise ValueError(f"PlacedMotion: quats must be [{n},4], got {_shape(quats)}")
        if not isinstance(translations, Tensor) or tuple(translations.shape) != (n, 3):
            raise ValueError(f"PlacedMotion: translations must be [{n},3], got {_shape(translations)}")
        if not all(torch.isfinite(x).all() for x in (scales, quats, translations)) or not (scales > 0).all():
            raise ValueError("PlacedMotion: scales must be positive and all placements finite")
        if (quats.norm(dim=-1) < 1e-8).any():
            raise ValueError("PlacedMotion: quats must not be zero")
        self.inner = inner
        self.scales = scales
        self.quats = quats
        self.translations = translations

    @property
    def num_frames(self) -> int:
        return self.scales.shape[0]

    def check_compatible(self, num_gaussians: int) -> None:
        self.inner.check_compatible(num_gaussians)

    def placement(self, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scale ``[]``, unit quaternion ``[4]`` and translation ``[3]`` at time ``t``."""
        t = _check_time(t, "PlacedMotion.placement")
        l0, l1, w = _lerp_frames(self.scales.log(), t)
        b0, b1, _ = _lerp_frames(self.translations, t)
        q0, q1, _ = _lerp_frames(torch.nn.functional.normalize(self.quats, dim=-1), t)
        q1 = torch.where((q0 * q1).sum(-1, keepdim=True) < 0, -q1, q1)
        wt = w if isinstance(w, Tensor) else float(w)
        scale = torch.lerp(l0, l1, wt).exp()
        quat = torch.nn.functional.normalize(torch.lerp(q0, q1, wt), dim=-1)
        return scale, quat, torch.lerp(b0, b1, wt)

    def apply(self, gaussians: Gaussians, t: float | Tensor) -> Gaussians:
        t = _check_time(t, "PlacedMotion.apply")
        g = self.inner.apply(gaussians, t)
        scale, quat, shift = (x.to(g.dtype) for x in self.placement(t))
        R = quat_to_rotmat(quat)
        return Gaussians(scale * g.means @ R.T + shift, quat_multiply(quat.expand_as(g.quats), g.quats),
                         g.log_scales + scale.log(), g.logit_opacities, g.sh)

    def state_dict(self) -> dict[str, Tensor]:
        tensors = {"scales": self.scales, "quats": self.quats, "translations": self.translations}
        tensors.update({f"inner.{k}": v for k, v in self.inner.state_dict().items()})
        return tensors

    def config(self) -> dict:
        return {"num_frames": self.num_frames, "inner": {"kind": self.inner.kind, "config": self.inner.config()}}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, Tensor]) -> "PlacedMotion":
        missing = [k for k in ("scales", "quats", "translations") if k not in tensors]
        if missing or not isinstance(config.get("inner"), dict) or "kind" not in config["inner"]:
            raise ValueError(f"PlacedMotion: state lacks {missing or 'the inner motion description'}")
        inner_tensors = {k[len("inner."):]: v for k, v in tensors.items() if k.startswith("inner.")}
        inner = motion_class(config["inner"]["kind"]).from_state(dict(config["inner"].get("config", {})),
                                                                 inner_tensors)
        motion = cls(inner, tensors["scales"], tensors["quats"], tensors["translations"])
        if "num_frames" in config and int(config["num_frames"]) != motion.num_frames:
            raise ValueError(f"PlacedMotion: config says {config['num_frames']} frames, tensors hold "
                             f"{motion.num_frames}")
        return motion

    def to(self, device: torch.device | str) -> "PlacedMotion":
        return PlacedMotion(self.inner.to(device), self.scales.to(device), self.quats.to(device),
                            self.translations.to(device))


@dataclass(frozen=True, eq=False)
class ScenePart:
    """One named object of a scene.

    Args:
        name: unique name within the scene (e.g. "foreground", "background").
        gaussians: canonical Gaussians ``N``.
        motion: how they move (default: static).
        trajectory: optional screen-space trajectory, ``{"shift": [T,2], "scale": [T]}`` (either key
            may be absent), stored as given for composition; shifts are pixels of the reference
            cameras' image size.
        reference_cameras: optional cameras the part was reconstructed from, camera ``i`` seeing
            frame ``i`` (one camera: held over the clip); see the module notes. With a trajectory
            they are the view the trajectory was measured in (CoCo4D's seen view).
    """

    name: str
    gaussians: Gaussians
    motion: Motion = field(default_factory=StaticMotion)
    trajectory: dict[str, Tensor] | None = None
    reference_cameras: Cameras | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ScenePart: name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.gaussians, Gaussians):
            raise ValueError(f"ScenePart {self.name!r}: gaussians must be Gaussians, got "
                             f"{type(self.gaussians).__name__}")
        if not isinstance(self.motion, Motion):
            raise ValueError(f"ScenePart {self.name!r}: motion must be a Motion, got {type(self.motion).__name__}")
        try:
            self.motion.check_compatible(len(self.gaussians))
        except ValueError as exc:
            raise ValueError(f"ScenePart {self.name!r}: {exc}") from exc
        cams = self.reference_cameras
        if cams is not None and (not isinstance(cams, Cameras) or len(cams) < 1):
            got = f"{len(cams)} cameras" if isinstance(cams, Cameras) else type(cams).__name__
            raise ValueError(f"ScenePart {self.name!r}: reference_cameras must be Cameras (at least one), got {got}")
        traj = self.trajectory
        if traj is None:
            return
        if not isinstance(traj, dict) or set(traj) - set(TRAJECTORY_KEYS):
            got = sorted(traj) if isinstance(traj, dict) else type(traj).__name__
            raise ValueError(f"ScenePart {self.name!r}: trajectory must be a dict with keys among "
                             f"{TRAJECTORY_KEYS}, got {got}")
        shift, scale = traj.get("shift"), traj.get("scale")
        if shift is not None and (not isinstance(shift, Tensor) or shift.dim() != 2 or shift.shape[1] != 2):
            raise ValueError(f"ScenePart {self.name!r}: trajectory['shift'] must be [T,2], got {_shape(shift)}")
        if scale is not None and (not isinstance(scale, Tensor) or scale.dim() != 1):
            raise ValueError(f"ScenePart {self.name!r}: trajectory['scale'] must be [T], got {_shape(scale)}")
        if shift is not None and scale is not None and shift.shape[0] != scale.shape[0]:
            raise ValueError(f"ScenePart {self.name!r}: trajectory shift has {shift.shape[0]} frames, "
                             f"scale has {scale.shape[0]}")
        given = shift if shift is not None else scale
        frames = 0 if given is None else given.shape[0]
        if cams is not None and frames and len(cams) not in (1, frames):
            raise ValueError(f"ScenePart {self.name!r}: the trajectory has {frames} frames but reference_cameras "
                             f"hold {len(cams)} views; expected 1 (held) or {frames}")

    def at(self, t: float | Tensor) -> Gaussians:
        """This part's Gaussians at time ``t``."""
        return self.motion.apply(self.gaussians, t)

    def to(self, device: torch.device | str) -> "ScenePart":
        """A copy on ``device`` (reference cameras stay on the CPU, where they are read)."""
        traj = None if self.trajectory is None else {k: v.to(device) for k, v in self.trajectory.items()}
        return ScenePart(self.name, self.gaussians.to(device), self.motion.to(device), traj, self.reference_cameras)


@dataclass(frozen=True, eq=False)
class Scene4D:
    """A dynamic scene: several parts sharing one clock.

    Args:
        parts: one or more :class:`ScenePart` with unique names.
        num_frames: frames of the clip (>= 1); frame ``i`` is at ``t = i/(num_frames-1)``.
        fps: playback rate (> 0).
    """

    parts: tuple[ScenePart, ...]
    num_frames: int
    fps: float

    def __post_init__(self) -> None:
        parts = tuple(self.parts) if isinstance(self.parts, (list, tuple)) else self.parts
        if not isinstance(parts, tuple) or not parts or not all(isinstance(p, ScenePart) for p in parts):
            raise ValueError(f"Scene4D: parts must be a non-empty list of ScenePart, got {self.parts!r:.80}")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"Scene4D: part names must be unique, got {names}")
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ValueError(f"Scene4D: num_frames must be an integer >= 1, got {self.num_frames!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) \
                or not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"Scene4D: fps must be a finite number > 0, got {self.fps!r}")
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "fps", float(self.fps))

    @classmethod
    def static(cls, gaussians: Gaussians, num_frames: int = 1, fps: float = 24.0, name: str = "static") -> "Scene4D":
        """A one-part scene that does not move."""
        return cls([ScenePart(name, gaussians)], num_frames, fps)

    @property
    def num_gaussians(self) -> int:
        return sum(len(p.gaussians) for p in self.parts)

    @property
    def duration(self) -> float:
        """Clip length in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps

    def part(self, name: str) -> ScenePart:
        for p in self.parts:
            if p.name == name:
                return p
        raise ValueError(f"Scene4D.part: no part named {name!r}; parts: {[p.name for p in self.parts]}")

    def frame_times(self, num_frames: int | None = None) -> Tensor:
        """``[T]`` float64 normalised times ``i/(T-1)`` of ``num_frames`` (default: the scene's) frames."""
        n = self.num_frames if num_frames is None else num_frames
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Scene4D.frame_times: num_frames must be an integer >= 1, got {n!r}")
        return torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)

    def at(self, t: float | Tensor) -> Gaussians:
        """All parts deformed to time ``t`` in ``[0,1]`` and concatenated in part order."""
        return Gaussians.cat([p.at(t) for p in self.parts])

    def bake(self, num_frames: int | None = None) -> list[Gaussians]:
        """The scene at each of :meth:`frame_times`."""
        return [self.at(float(t)) for t in self.frame_times(num_frames)]

    @property
    def reference_cameras(self) -> Cameras | None:
        """The recorded reference cameras of the first part that has them (None when no part does)."""
        return next((p.reference_cameras for p in self.parts if p.reference_cameras is not None), None)

    def to(self, device: torch.device | str) -> "Scene4D":
        return Scene4D([p.to(device) for p in self.parts], self.num_frames, self.fps)

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        """Tensors and string metadata of the file format (see the module notes)."""
        tensors: dict[str, Tensor] = {}
        doc = {"num_frames": self.num_frames, "fps": self.fps, "parts": []}
        for i, p in enumerate(self.parts):
            for name, value in p.gaussians.tensors().items():
                tensors[f"parts.{i}.gaussians.{name}"] = value
            for name, value in p.motion.state_dict().items():
                tensors[f"parts.{i}.motion.{name}"] = value
            for name, value in (p.trajectory or {}).items():
                tensors[f"parts.{i}.trajectory.{name}"] = value
            cams = p.reference_cameras
            if cams is not None:
                for name in _CAMERA_TENSORS:
                    tensors[f"parts.{i}.cameras.{name}"] = getattr(cams, name)
            doc["parts"].append({"name": p.name, "motion": {"kind": p.motion.kind, "config": p.motion.config()},
                                 "trajectory": sorted(p.trajectory or {}),
                                 "cameras": None if cams is None else {
                                     "width": int(cams.width), "height": int(cams.height),
                                     "near": float(cams.near), "far": float(cams.far)}})
        meta = {"format": SCENE_FORMAT, "version": str(SCENE_VERSION), "scene": json.dumps(doc, sort_keys=True)}
        return _owned(tensors), meta

    def save(self, path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
        """Write the scene to one safetensors file atomically.

        Args:
            path: target file; with ``root``, a user-given relative name (``.safetensors`` appended).
            root: optional output folder that ``path`` must stay inside.
        """
        if self.num_frames > MAX_FILE_FRAMES:
            raise ValueError(f"Scene4D.save: the scene has {self.num_frames} frames; a scene file holds at most "
                             f"{MAX_FILE_FRAMES}")
        target = safe_output_path(root, str(path), ".safetensors") if root is not None else Path(path)
        tensors, meta = self.state()
        with atomic_path(target) as tmp:
            safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        log.info("saved scene (%d parts, %d Gaussians, %d frames) to %s", len(self.parts), self.num_gaussians,
                 self.num_frames, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "Scene4D":
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: naming the file, if it is missing, corrupt, not a gen4d scene, of another
                version, names an unknown motion kind, or its tensors do not fit together.
        """
        src = str(path)
        if not Path(path).is_file():
            raise ValueError(f"Scene4D.load: scene file {src!r} does not exist or is not a file")
        try:
            with safetensors.safe_open(src, framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (safetensors.SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ValueError(f"Scene4D.load: {src!r} is not a readable safetensors file: {exc}") from exc
        return cls._from_state(tensors, meta, src)

    @classmethod
    def _from_state(cls, tensors: dict[str, Tensor], meta: dict[str, str], src: str) -> "Scene4D":
        if meta.get("format") != SCENE_FORMAT:
            raise ValueError(f"Scene4D.load: {src!r} is not a gen4d scene (metadata format is "
                             f"{meta.get('format')!r}, expected {SCENE_FORMAT!r})")
        if meta.get("version") not in {str(v) for v in READABLE_VERSIONS}:
            raise ValueError(f"Scene4D.load: {src!r} has scene format version {meta.get('version')!r}; this "
                             f"version of ComfyUI-Gen4D reads versions {', '.join(map(str, READABLE_VERSIONS))}")
        version = int(meta["version"])
        try:
            doc = json.loads(meta.get("scene", ""))
            part_docs = list(doc["parts"])
            num_frames, fps = doc["num_frames"], doc["fps"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"Scene4D.load: {src!r} has corrupt scene metadata: {exc}") from exc
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_FILE_FRAMES:
            raise ValueError(f"Scene4D.load: {src!r} claims {num_frames!r} frames; a scene file holds 1 to "
                             f"{MAX_FILE_FRAMES} frames (corrupt or hostile metadata)")
        used: set[str] = set()
        parts = []
        for i, pd in enumerate(part_docs):
            try:
                parts.append(_load_part(i, pd, tensors, used, version))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"Scene4D.load: {src!r}, part {i}: {exc}") from exc
        extra = sorted(set(tensors) - used)
        if extra:
            log.warning("Scene4D.load: %s holds %d tensors no part uses, ignored: %s", src, len(extra), extra[:5])
        try:
            return cls(parts, num_frames, fps)
        except ValueError as exc:
            raise ValueError(f"Scene4D.load: {src!r}: {exc}") from exc


_CAMERA_TENSORS = ("viewmats", "Ks", "times")


def _load_part(i: int, pd: dict, tensors: dict[str, Tensor], used: set[str], version: int) -> ScenePart:
    prefix = f"parts.{i}."
    names = [f.name for f in fields(Gaussians)]
    missing = [f"{prefix}gaussians.{n}" for n in names if f"{prefix}gaussians.{n}" not in tensors]
    if missing:
        raise ValueError(f"missing tensors {missing}")
    gaussians = Gaussians(**{n: tensors[f"{prefix}gaussians.{n}"] for n in names})
    group = lambda g: {k[len(prefix) + len(g) + 1:]: v for k, v in tensors.items()  # noqa: E731
                       if k.startswith(f"{prefix}{g}.")}
    motion_tensors, trajectory = group("motion"), group("trajectory")
    used.update(f"{prefix}gaussians.{n}" for n in names)
    used.update(f"{prefix}motion.{k}" for k in motion_tensors)
    used.update(f"{prefix}trajectory.{k}" for k in trajectory)
    cameras = _load_cameras(pd.get("cameras") if version >= 2 else None, group("cameras"))
    used.update(f"{prefix}cameras.{k}" for k in group("cameras") if cameras is not None)
    kind = pd["motion"]["kind"]
    motion = motion_class(kind).from_state(dict(pd["motion"].get("config", {})), motion_tensors)
    if sorted(trajectory) != sorted(pd.get("trajectory", [])):
        raise ValueError(f"trajectory tensors {sorted(trajectory)} do not match the metadata {pd.get('trajectory')}")
    return ScenePart(pd["name"], gaussians, motion, trajectory or None, cameras)


def _load_cameras(doc: dict | None, tensors: dict[str, Tensor]) -> Cameras | None:
    """The recorded reference cameras of a part (None when the part records none)."""
    if doc is None:
        return None
    missing = [n for n in _CAMERA_TENSORS if n not in tensors]
    if missing or not isinstance(doc, dict):
        raise ValueError(f"reference cameras lack {missing or 'their description'}")
    return Cameras(tensors["viewmats"].float().cpu(), tensors["Ks"].float().cpu(), int(doc["width"]),
                   int(doc["height"]), tensors["times"].float().cpu(), float(doc["near"]), float(doc["far"]))


def _owned(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors, none sharing storage (safetensors refuses shared memory)."""
    out, seen = {}, set()
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out

