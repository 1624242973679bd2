# SPDX-License-Identifier: Apache-2.0
"""Worlds of posed primitives and an exact, vectorised ray caster for them.

Public API:
    World            frozen world: primitives, background colour, reference camera
    render           world x cameras -> rgb / depth / alpha / object_ids / normals / group masks
    cast_rays        nearest hits of arbitrary world rays at one time
    pixel_rays       world rays through sub-pixel positions of one camera
    pixel_centers    ``[H*W,2]`` pixel-centre coordinates ``(j+0.5, i+0.5)``
    albedo           texture colour of hits given part ids and local points / normals
    move_points      world positions of part-local points at several times
    surface_distance unsigned distance from world points to the nearest primitive surface
    check_stop       raise ``InterruptedError`` when a ``should_stop`` hook says so

Design notes:
    Every camera is rendered at its own time (``cameras.times`` unless overridden), one camera at
    a time and vectorised over all its pixels. Ray directions are built as ``K^-1 [u, v, 1]``
    normalised to camera-z = 1, so the ray parameter of a hit is its z-depth along the optical axis
    (gsplat's depth), not the ray length. Geometry runs in float64 and results are returned as
    float32 (ids as int64). Colours are unshaded albedo from the primitives' local textures, which
    keeps renders view independent. Background pixels have rgb = background, depth = 0, alpha = 0
    and object id -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..core.engine.cameras import Cameras, intrinsics_from_fov
from .motion import check_times
from .primitives import Primitive
from .textures import evaluate

__all__ = [
    "RESERVED_KEYS",
    "World",
    "albedo",
    "cast_rays",
    "move_points",
    "pixel_centers",
    "pixel_rays",
    "render",
    "surface_distance",
    "check_world",
    "check_cameras",
    "check_stop",
]

RESERVED_KEYS = ("rgb", "depth", "alpha", "object_ids", "normals", "times")
_DT = torch.float64
_IDENTITY16 = tuple(float(v) for v in torch.eye(4).reshape(-1).tolist())


@dataclass(frozen=True)
class World:
    """A set of posed, textured primitives.

    Args:
        name: a label.
        primitives: the parts; their index is the object id.
        background: rgb of pixels that hit nothing.
        reference_viewmat: the reference camera's world-to-camera matrix, 16 numbers row-major.
        reference_fovy_deg: the reference camera's vertical field of view.
        meta: free-form description (tuple of key/value pairs) of the random choices.
    """

    name: str
    primitives: tuple[Primitive, ...]
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    reference_viewmat: tuple[float, ...] = _IDENTITY16
    reference_fovy_deg: float = 60.0
    meta: tuple = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.primitives, list):
            object.__setattr__(self, "primitives", tuple(self.primitives))
        if (not isinstance(self.primitives, tuple) or not self.primitives
                or not all(isinstance(p, Primitive) for p in self.primitives)):
            raise ValueError(f"World {self.name!r}: primitives must be a non-empty tuple of Primitive, "
                             f"got {type(self.primitives).__name__}")
        names = [p.name for p in self.primitives]
        if len(set(names)) != len(names):
            raise ValueError(f"World {self.name!r}: primitive names must be unique, got {names}")
        bad = [p.group for p in self.primitives if p.group in RESERVED_KEYS or not p.group]
        if bad:
            raise ValueError(f"World {self.name!r}: group names {bad} clash with render keys {RESERVED_KEYS}")
        if len(self.reference_viewmat) != 16 or len(self.background) != 3:
            raise ValueError(f"World {self.name!r}: reference_viewmat needs 16 numbers and background 3, got "
                             f"{len(self.reference_viewmat)} and {len(self.background)}")

    @property
    def part_names(self) -> tuple[str, ...]:
        """Names of the primitives, indexed by object id."""
        return tuple(p.name for p in self.primitives)

    @property
    def groups(self) -> dict[str, tuple[int, ...]]:
        """Group name -> object ids, in order of first appearance."""
        out: dict[str, list[int]] = {}
        for i, p in enumerate(self.primitives):
            out.setdefault(p.group, []).append(i)
        return {k: tuple(v) for k, v in out.items()}

    def poses(self, times, device: torch.device | str | None = None) -> Tensor:
        """Local-to-world transforms of every part.

        Args:
            times: ``[T]`` normalised times (or a number).
            device: device of the result.

        Returns:
            ``[P,T,4,4]`` float64 rigid transforms, ``P = len(primitives)``.
        """
        t = check_times(times, "World.poses: times", device)
        return torch.stack([p.motion.matrices(t) for p in self.primitives])

    def reference_cameras(self, width: int = 256, height: int = 256, num_frames: int = 16) -> Cameras:
        """The world's reference view held fixed over ``num_frames`` times ``linspace(0, 1)``.

        Returns:
            ``Cameras`` of length ``num_frames``, image ``width x height``.
        """
        if int(num_frames) < 1:
            raise ValueError(f"reference_cameras: num_frames must be >= 1, got {num_frames}")
        vm = torch.tensor(self.reference_viewmat, dtype=torch.float32).reshape(1, 4, 4).repeat(num_frames, 1, 1)
        K = intrinsics_from_fov(self.reference_fovy_deg, int(width), int(height))
        times = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
        return Cameras(vm, K.expand(num_frames, 3, 3).clone(), int(width), int(height), times, 0.01, 1000.0)


def check_stop(should_stop: Callable[[], bool] | None, who: str) -> None:
    """Raise ``InterruptedError`` when ``should_stop`` says so."""
    if should_stop is not None and should_stop():
        raise InterruptedError(f"{who}: stopped")


def check_world(world) -> None:
    """ValueError unless ``world`` is a synthetic :class:`World`."""
    if not isinstance(world, World):
        raise ValueError(f"world: expected a synthetic World, got {type(world).__name__}")


def check_cameras(cameras) -> None:
    """ValueError unless ``cameras`` is a :class:`core.engine.cameras.Cameras`."""
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras: expected core.engine.cameras.Cameras, got {type(cameras).__name__}")


def _check_rays(origins: Tensor, dirs: Tensor) -> None:
    for name, x in (("origins", origins), ("dirs", dirs)):
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"cast_rays: {name} must be an [R,3] tensor, got {got}")
    if origins.shape != dirs.shape:
        raise ValueError(f"cast_rays: origins {tuple(origins.shape)} and dirs {tuple(dirs.shape)} must match")


def pixel_centers(width: int, height: int, device: torch.device | str | None = None) -> Tensor:
    """``[H*W,2]`` float64 pixel-centre coordinates ``(u, v) = (j + 0.5, i + 0.5)``, row-major."""
    i, j = torch.meshgrid(torch.arange(height, dtype=_DT, device=device),
                          torch.arange(width, dtype=_DT, device=device), indexing="ij")
    return torch.stack([j.reshape(-1) + 0.5, i.reshape(-1) + 0.5], dim=-1)


def pixel_rays(viewmat: Tensor, K: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """World rays through pixel positions of one camera.

    Args:
        viewmat: ``[4,4]`` world-to-camera matrix.
        K: ``[3,3]`` pixel intrinsics.
        uv: ``[R,2]`` pixel coordinates (pixel ``(i, j)`` has its centre at ``(j+0.5, i+0.5)``).

    Returns:
        origins ``[R,3]`` and directions ``[R,3]`` (float64), each direction scaled so that its
        camera-z component is 1: the hit parameter equals the z-depth.
    """
    if viewmat.shape != (4, 4) or K.shape != (3, 3) or uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"pixel_rays: expected viewmat [4,4], K [3,3], uv [R,2]; got {tuple(viewmat.shape)}, "
                         f"{tuple(K.shape)}, {tuple(uv.shape)}")
    c2w = torch.linalg.inv(viewmat.to(_DT))
    uv1 = torch.cat([uv.to(_DT), torch.ones_like(uv[:, :1], dtype=_DT)], dim=-1)
    d_cam = uv1 @ torch.linalg.inv(K.to(_DT)).T
    d_cam = d_cam / d_cam[:, 2:3]
    dirs = d_cam @ c2w[:3, :3].T
    return c2w[:3, 3].expand_as(dirs).clone(), dirs


@dataclass(frozen=True)
class Hits:
    """Nearest hits of ``R`` rays: ``s [R]`` (inf on miss), ``part [R]`` (-1 on miss), local/world
    points and outward normals ``[R,3]`` (float64; zeros on miss)."""

    s: Tensor
    part: Tensor
    local_points: Tensor
    local_normals: Tensor
    points: Tensor
    normals: Tensor

    @property
    def hit(self) -> Tensor:
        return self.part >= 0


def cast_rays(world: World, origins: Tensor, dirs: Tensor, time: float, near: float = 0.0,
              far: float = math.inf) -> Hits:
    """Nearest hit of every ray among all primitives posed at ``time``.

    Args:
        world: the world.
        origins: ``[R,3]`` world ray origins.
        dirs: ``[R,3]`` world ray directions (the hit parameter ``s`` is in units of ``dirs``).
        time: normalised time in ``[0, 1]``.
        near: hits need ``s > near``.
        far: hits need ``s < far``.

    Returns:
        ``Hits`` for the ``R`` rays.
    """
    check_world(world)
    _check_rays(origins, dirs)
    o, d = origins.to(_DT), dirs.to(_DT)
    poses = world.poses(check_times(time, "cast_rays: time"), device=o.device)[:, 0]
    best = torch.full(o.shape[:1], math.inf, dtype=_DT, device=o.device)
    part = torch.full(o.shape[:1], -1, dtype=torch.long, device=o.device)
    lp, ln = torch.zeros_like(o), torch.zeros_like(o)
    for k, prim in enumerate(world.primitives):
        R, tr = poses[k, :3, :3], poses[k, :3, 3]
        s, p, n = prim.intersect((o - tr) @ R, d @ R, near)
        closer = (s < best) & (s < far)
        best = torch.where(closer, s, best)
        part = torch.where(closer, torch.full_like(part, k), part)
        lp = torch.where(closer[:, None], p, lp)
        ln = torch.where(closer[:, None], n, ln)
    pts, nrm = torch.zeros_like(o), torch.zeros_like(o)
    for k in range(len(world.primitives)):
        m = part == k
        R, tr = poses[k, :3, :3], poses[k, :3, 3]
        pts[m] = lp[m] @ R.T + tr
        nrm[m] = ln[m] @ R.T
    return Hits(best, part, lp, ln, pts, nrm)


def albedo(world: World, part: Tensor, local_points: Tensor, local_normals: Tensor,
           background: tuple[float, float, float] | None = None) -> Tensor:
    """Texture colours ``[R,3]`` (float64) of parts ``part [R]`` at local points/normals ``[R,3]``.

    Rays with ``part == -1`` get ``background`` (the world's if omitted).
    """
    bg = world.background if background is None else background
    out = torch.as_tensor(bg, dtype=_DT, device=local_points.device).reshape(1, 3).repeat(part.shape[0], 1)
    for k, prim in enumerate(world.primitives):
        m = part == k
        if m.any():
            out[m] = evaluate(prim.texture, local_points[m].to(_DT), local_normals[m].to(_DT)).to(_DT)
    return out.clamp(0.0, 1.0)


def _render_times(cameras: Cameras, times) -> Tensor:
    if times is None:
        return check_times(cameras.times, "cameras.times", cameras.device)
    t = check_times(times, "times", cameras.device)
    if t.numel() == 1:
        return t.expand(len(cameras))
    if t.numel() != len(cameras):
        raise ValueError(f"render: times must have 1 or {len(cameras)} entries (one per camera), got {t.numel()}")
    return t


def _check_supersample(supersample) -> int:
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"render: supersample must be an odd positive int (1, 3, 5, ...), got {supersample!r}")
    return supersample


def _render_camera(world: World, cameras: Cameras, i: int, time: float, background, k: int) -> dict[str, Tensor]:
    """One camera on a ``k x k`` sub-pixel grid; the middle sample of each pixel is its centre."""
    h, w = int(cameras.height), int(cameras.width)
    uv = pixel_centers(w * k, h * k, cameras.device) / k
    o, d = pixel_rays(cameras.viewmats[i], cameras.Ks[i], uv)
    hits = cast_rays(world, o, d, time, near=cameras.near, far=cameras.far)
    facing = torch.where((hits.normals * d).sum(-1, keepdim=True) > 0, -hits.normals, hits.normals)

    def centre(x: Tensor) -> Tensor:
        return x.reshape(h, k, w, k, *x.shape[1:])[:, k // 2, :, k // 2]

    def mean(x: Tensor) -> Tensor:
        return x.reshape(h, k, w, k, *x.shape[1:]).mean(dim=(1, 3))

    out = {
        "rgb": mean(albedo(world, hits.part, hits.local_points, hits.local_normals, background)),
        "depth": centre(torch.where(hits.hit, hits.s, torch.zeros_like(hits.s))),
        "alpha": mean(hits.hit.to(_DT)),
        "object_ids": centre(hits.part),
        "normals": centre(facing),
    }
    for name, members in world.groups.items():
        out[name] = mean(torch.isin(hits.part, torch.tensor(members, device=hits.part.device)).to(_DT))
    return out


def render(world: World, cameras: Cameras, times=None, background: tuple[float, float, float] | None = None,
           supersample: int = 1, should_stop: Callable[[], bool] | None = None) -> dict[str, Tensor]:
    """Ray-cast every camera of ``cameras`` at its time.

    Args:
        world: the world.
        cameras: ``C`` cameras of size ``H x W``.
        times: ``None`` (use ``cameras.times``), one time for all cameras, or ``[C]`` times.
        background: rgb of empty pixels (defaults to the world's).
        supersample: odd ``k``; rgb, alpha and group masks average ``k x k`` sub-pixel rays (an
            anti-aliased reference closer to what a splatting renderer produces), while depth,
            object ids and normals stay exact at the pixel centre (the middle sub-pixel ray).
        should_stop: polled before each camera; raises ``InterruptedError`` when it returns True.

    Returns:
        dict with ``rgb [C,H,W,3]`` float32 in 0..1, ``depth [C,H,W]`` float32 z-depth (0 on
        background), ``alpha [C,H,W]`` float32 (0/1, or coverage with ``supersample > 1``),
        ``object_ids [C,H,W]`` int64 (-1 on background), ``normals [C,H,W,3]`` float32 world
        normals facing the camera, ``times [C]`` float32, and one float32 mask ``[C,H,W]`` per
        group name (e.g. ``foreground``, ``background``; 0/1 or coverage like ``alpha``).
    """
    check_world(world)
    check_cameras(cameras)
    k = _check_supersample(supersample)
    if background is not None:
        bg = torch.as_tensor(background, dtype=_DT)
        if bg.shape != (3,) or not torch.isfinite(bg).all():
            raise ValueError(f"render: background must be 3 finite numbers (rgb in 0..1), got {background!r}")
    t = _render_times(cameras, times)
    frames = []
    for i in range(len(cameras)):
        check_stop(should_stop, "render")
        frames.append(_render_camera(world, cameras, i, float(t[i]), background, k))
    out = {key: torch.stack([f[key] for f in frames]) for key in frames[0]}
    out = {key: v if key == "object_ids" else v.float() for key, v in out.items()}
    out["times"] = t.float()
    return out


def move_points(world: World, part: Tensor, local_points: Tensor, times) -> tuple[Tensor, Tensor]:
    """World positions of part-local points at several times (rigid motion of their part).

    Args:
        world: the world.
        part: ``[N]`` object ids (entries ``< 0`` give zeros).
        local_points: ``[N,3]`` points in their part's local frame.
        times: ``[T]`` normalised times.

    Returns:
        ``[T,N,3]`` float64 world points and the ``[P,T,4,4]`` part poses used.
    """
    check_world(world)
    poses = world.poses(times, device=local_points.device)  # [P,T,4,4]
    n, t = local_points.shape[0], poses.shape[1]
    pts = torch.zeros(t, n, 3, dtype=_DT, device=local_points.device)
    for k in range(len(world.primitives)):
        m = part == k
        if m.any():
            R, tr = poses[k, :, :3, :3], poses[k, :, :3, 3]  # [T,3,3], [T,3]
            pts[:, m] = torch.einsum("tij,nj->tni", R, local_points[m].to(_DT)) + tr[:, None]
    return pts, poses


def surface_distance(world: World, points: Tensor, time: float) -> Tensor:
    """Unsigned distance ``[N]`` (float64) from world ``points [N,3]`` to the nearest surface at ``time``."""
    check_world(world)
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"surface_distance: points must be an [N,3] tensor, got "
                         f"{tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__}")
    poses = world.poses(check_times(time, "surface_distance: time"), device=points.device)[:, 0]
    p = points.to(_DT)
    best = torch.full(p.shape[:1], math.inf, dtype=_DT, device=p.device)
    for k, prim in enumerate(world.primitives):
        R, tr = poses[k, :3, :3], poses[k, :3, 3]
        best = torch.minimum(best, prim.distance((p - tr) @ R))
    return best
