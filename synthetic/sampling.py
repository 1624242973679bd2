# SPDX-License-Identifier: Apache-2.0
"""Gaussians sampled on a synthetic world's surfaces, with their exact motion.

Public API:
    SurfaceSamples     points fixed on the parts' surfaces: ``at(times)`` and ``gaussians(t)``
    SurfaceMotion      a canonical Gaussian set plus per-time means ``[T,N,3]`` and quats ``[T,N,4]``
    sample_surface     evenly spaced surface samples (deterministic by seed), optionally view-aware
    sample_gaussians   flat disc Gaussians on every surface at one time
    surface_motion     the same Gaussians at several times (for a 4D scene with exact motion)

Design notes:
    Every primitive is cut into flat or spherical *patches*: a rectangle is one patch (or, when
    cameras are given, a grid of tiles over the part the cameras see), a box has its six faces,
    a sphere is one patch. Points are stratified, not drawn at random: a rectangular patch gets
    rows of evenly spaced points in its local 2D parameterisation, every other row shifted by
    half a cell (a near-hexagonal lattice; row counts differ by at most one, so any count is
    exact), a sphere gets a Fibonacci lattice (equal-area) under a random rotation; every point
    is then jittered by a fraction ``jitter`` of its cell. Points are coloured by the part's
    texture at the point and carried by the part's rigid motion, so the means and rotations at
    any time are exact and a 4D Gaussian scene built from them moves exactly like the ray-cast
    ground truth. Each Gaussian is a flat disc whose third axis is the
    surface normal; its in-plane stds are ``scale_factor`` times the local cell size (per axis on
    rectangular patches), so neighbours overlap just enough to close the gaps, and its normal std
    is ``normal_ratio`` times the smaller in-plane std.

    Budget. Without cameras, counts are proportional to area x the part's ``density`` (largest
    remainder, so the total is exact), split over a part's patches by area; unbounded primitives
    cannot be sampled. With ``cameras`` the budget follows the pixels: every camera (at most
    ``_MAX_VIEW_CAMERAS``, evenly picked) is ray-cast at its own time at about ``_VIEW_RES``
    pixels on its long side, and each hit gives the Jacobian of the full-resolution pixel
    position with respect to the local surface coordinates. Per patch and camera this gives the
    pixels per unit area (rays over the area they cover) and the mean pixel rate along each of
    the patch's two axes; the patch takes the largest over the cameras (the view that magnifies
    it most). Its demand, area x pixel density, is the number of points for about one point per
    pixel in that view; its cell aspect follows the two rates (foreshortened ground gets long
    cells). Counts are ``1 - floor_share`` of ``N`` by demand plus ``floor_share`` by area x
    density per primitive, spread over the primitive's seen patches, so no primitive is empty.
    Unseen patches of a seen primitive (a box's bottom face) get no points: sparse, wide discs
    there would bleed over visible surfaces. A rectangle the cameras see, bounded or infinite, is
    tiled (``_TILES`` tiles) over the bounding box of its hits plus a ``_MARGIN``; each tile is
    cut to the box of its own hits widened by one coverage ray's footprint and tiles without
    hits are dropped, so an infinite plane is cut to the region the cameras see (one never hit
    gets no points) and frustum edges waste little.

    Edges. Splats spread past the edge of the surface they sample, which grows silhouettes by
    about a pixel; rectangular patches therefore keep their outermost points ``inset`` away from
    the surface's true edges (not from the seams between tiles).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.engine.cameras import Cameras
from ..core.engine.gaussians import Gaussians, quat_multiply, rotmat_to_quat
from .motion import check_times
from .primitives import Box, Primitive, Rectangle, Sphere, frame_from_normal
from .raycast import World, albedo, cast_rays, check_cameras, check_world, move_points, pixel_centers, pixel_rays

__all__ = ["SurfaceMotion", "SurfaceSamples", "sample_gaussians", "sample_surface", "surface_motion"]

_DT = torch.float64
_VIEW_RES = 64  # long side, in pixels, of the coverage ray-cast
_MAX_VIEW_CAMERAS = 48  # cameras used to estimate the coverage (evenly picked)
_TILES = 256  # tiles per rectangle seen by the cameras
_MARGIN = 0.03  # margin around the seen box of a rectangle, as a fraction of its size
_MAX_ASPECT = 8.0  # largest ratio of the two cell sides of a patch
_DEFAULTS = {False: (0.6, 0.5), True: (0.4, 1.0)}  # cameras given? -> (scale_factor, inset)


@dataclass(frozen=True)
class SurfaceSamples:
    """``N`` points fixed on the surfaces of a world's parts.

    Args:
        world: the world they were drawn from.
        part_ids: ``[N]`` int64 object ids.
        local_points: ``[N,3]`` float64 points in their part's frame.
        local_frames: ``[N,3,3]`` float64 local frames (columns: tangent, tangent, normal).
        colors: ``[N,3]`` float32 albedo.
        scales: ``[N,3]`` float32 standard deviations along the frame's columns.
        opacity: opacity of every Gaussian.
    """

    world: World
    part_ids: Tensor
    local_points: Tensor
    local_frames: Tensor
    colors: Tensor
    scales: Tensor
    opacity: float

    def __len__(self) -> int:
        return self.part_ids.shape[0]

    def at(self, times) -> tuple[Tensor, Tensor]:
        """Means ``[T,N,3]`` and unit wxyz quats ``[T,N,4]`` (float32) at normalised ``times [T]``."""
        t = check_times(times, "SurfaceSamples.at: times")
        means, poses = move_points(self.world, self.part_ids, self.local_points, t)
        part_quats = rotmat_to_quat(poses[..., :3, :3])  # [P,T,4]
        local_quats = rotmat_to_quat(self.local_frames)  # [N,4]
        quats = quat_multiply(part_quats[self.part_ids].transpose(0, 1), local_quats[None].expand(t.numel(), -1, -1))
        return means.float(), torch.nn.functional.normalize(quats, dim=-1).float()

    def gaussians(self, t: float, sh_degree: int = 0) -> Gaussians:
        """The samples as a ``Gaussians`` set of ``N`` flat discs at time ``t``."""
        means, quats = self.at([t])
        return Gaussians.from_colors(means[0], self.colors, self.scales, self.opacity, quats[0], sh_degree)


@dataclass(frozen=True)
class SurfaceMotion:
    """Gaussians at ``times[0]`` plus their exact motion: ``means [T,N,3]``, ``quats [T,N,4]``,
    ``times [T]`` and ``part_ids [N]``. Scales, opacities and colours do not change over time."""

    gaussians: Gaussians
    means: Tensor
    quats: Tensor
    times: Tensor
    part_ids: Tensor


@dataclass
class _Patch:
    """A piece of one primitive's surface, in the primitive's local frame.

    ``kind`` is ``"rect"`` (centre ``center``, frame columns ``(t1, t2, n)``, side lengths ``size``
    along ``t1`` / ``t2``) or ``"sphere"`` (``size = (radius, radius)``, centre at the origin).
    ``rates`` are the largest pixel rates (pixels per local unit) along ``t1`` / ``t2`` seen by the
    cameras and ``seen_area`` the part of the patch they see (zero when unseen or without
    cameras); ``border`` says which sides (``-t1, +t1, -t2, +t2``) are true edges of the surface
    rather than seams between tiles.
    """

    part: int
    kind: str
    center: Tensor
    frame: Tensor
    size: tuple[float, float]
    rates: tuple[float, float] = (0.0, 0.0)
    border: tuple[bool, bool, bool, bool] = (True, True, True, True)
    demand: float = 0.0

    @property
    def area(self) -> float:
        if self.kind == "sphere":
            return 4.0 * math.pi * self.size[0] ** 2
        return self.size[0] * self.size[1]



def _allocate(weights: list[float], total: int) -> list[int]:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder, ties by index)."""
    s = sum(weights)
    exact = [total * w / s for w in weights]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _check_sampling_args(world: World, num_points: int, seed: int, scale_factor: float, normal_ratio: float,
                         opacity: float, jitter: float, inset: float, floor_share: float, cameras) -> None:
    check_world(world)
    if isinstance(num_points, bool) or not isinstance(num_points, numbers.Integral) or num_points <= 0:
        raise ValueError(f"num_points: expected a positive int, got {num_points!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    if not (scale_factor > 0 and normal_ratio > 0):
        raise ValueError(f"scale_factor and normal_ratio must be positive, got {scale_factor}, {normal_ratio}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity: expected a value strictly inside (0, 1), got {opacity}")
    if not (0.0 <= jitter <= 1.0 and 0.0 <= floor_share <= 1.0 and inset >= 0.0):
        raise ValueError(f"jitter and floor_share must be in [0, 1] and inset >= 0, got {jitter}, {floor_share}, "
                         f"{inset}")
    if cameras is not None:
        check_cameras(cameras)
    for p in world.primitives:
        if cameras is None and not math.isfinite(p.area()):
            raise ValueError(f"world: primitive {p.name!r} is unbounded and cannot be sampled; bound it "
                             "or pass cameras to cut it to the part they see")
        if not p.density >= 0:
            raise ValueError(f"world: primitive {p.name!r} has density {p.density}; expected >= 0")


# -- patches ----------------------------------------------------------------------------------


def _rect_patch(k: int, x0: float, x1: float, y0: float, y1: float, half_size) -> _Patch:
    """The piece ``[x0,x1] x [y0,y1]`` of the local plane ``z = 0`` (normal ``+z``) of a rectangle
    of ``half_size`` (``None``: infinite, so without true edges)."""
    center = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, 0.0], dtype=_DT)
    if half_size is None:
        border = (False, False, False, False)
    else:
        hx, hy, eps = half_size[0], half_size[1], 1e-9
        border = (x0 <= -hx + eps, x1 >= hx - eps, y0 <= -hy + eps, y1 >= hy - eps)
    return _Patch(k, "rect", center, torch.eye(3, dtype=_DT), (x1 - x0, y1 - y0), border=border)


def _box_faces(k: int, box: Box) -> list[_Patch]:
    """The faces +x, +y, +z, -x, -y, -z (index = axis + 3 x negative), framed ``(e_{a+1}, n x e_{a+1}, n)``."""
    h = box.half_size
    out = []
    for face in range(6):
        a, sign = face % 3, (1.0 if face < 3 else -1.0)
        n = torch.zeros(3, dtype=_DT)
        n[a] = sign
        t1 = torch.zeros(3, dtype=_DT)
        t1[(a + 1) % 3] = 1.0
        t2 = torch.linalg.cross(n, t1)
        out.append(_Patch(k, "rect", n * h[a], torch.stack([t1, t2, n], dim=-1),
                          (2.0 * h[(a + 1) % 3], 2.0 * h[(a + 2) % 3])))
    return out


def _base_patches(k: int, prim: Primitive) -> list[_Patch]:
    """The patches of a primitive without view information (an infinite plane has none)."""
    if isinstance(prim, Sphere):
        return [_Patch(k, "sphere", torch.zeros(3, dtype=_DT), torch.eye(3, dtype=_DT), (prim.radius, prim.radius))]
    if isinstance(prim, Box):
        return _box_faces(k, prim)
    if isinstance(prim, Rectangle):
        if prim.half_size is None:
            return []
        hx, hy = prim.half_size
        return [_rect_patch(k, -hx, hx, -hy, hy, prim.half_size)]
    raise ValueError(f"sample_surface: cannot sample primitive {prim.name!r} of type {type(prim).__name__}")


def _tiled_rectangle(k: int, prim: Rectangle, seen: Tensor) -> tuple[list[_Patch], tuple]:
    """An ``nx x ny`` grid of tiles (row-major) over the box of the seen local points ``[M,2]``
    plus a small margin, cut to the rectangle; and the grid ``(lo, hi, nx, ny)``."""
    lo, hi = seen.min(dim=0).values, seen.max(dim=0).values
    pad = _MARGIN * (hi - lo).clamp_min(1e-6)
    lo, hi = (lo - pad).tolist(), (hi + pad).tolist()
    if prim.half_size is not None:
        hx, hy = prim.half_size
        lo = [max(lo[0], -hx), max(lo[1], -hy)]
        hi = [min(hi[0], hx), min(hi[1], hy)]
    w, h = hi[0] - lo[0], hi[1] - lo[1]
    nx = max(1, min(_TILES, round(math.sqrt(_TILES * w / h))))
    ny = max(1, _TILES // nx)
    xs = [lo[0] + w * i / nx for i in range(nx + 1)]
    ys = [lo[1] + h * j / ny for j in range(ny + 1)]
    tiles = [_rect_patch(k, xs[i], xs[i + 1], ys[j], ys[j + 1], prim.half_size) for j in range(ny) for i in range(nx)]
    return tiles, (lo, hi, nx, ny)


# -- view-aware budget ------------------------------------------------------------------------


@dataclass
class _Views:
    """Coverage ray-cast hits of the cameras: camera index and part id ``[M]``, local points and
    normals ``[M,3]``, the Jacobians ``[M,2,3]`` of full-resolution pixel positions with
    respect to the part's local coordinates, and the full-resolution pixels per ray ``pixel_area``."""

    cam: Tensor
    part: Tensor
    local_points: Tensor
    local_normals: Tensor
    jacobians: Tensor
    num_cameras: int
    pixel_area: float


def _view_hits(world: World, cameras: Cameras) -> _Views:
    cams = cameras.to("cpu")
    pick = torch.linspace(0, len(cams) - 1, min(len(cams), _MAX_VIEW_CAMERAS)).round().long().unique()
    w, h = int(cams.width), int(cams.height)
    f = min(1.0, _VIEW_RES / max(w, h))
    lw, lh = max(1, round(w * f)), max(1, round(h * f))
    uv = pixel_centers(lw, lh) * torch.tensor([w / lw, h / lh], dtype=_DT)
    times = check_times(cams.times, "cameras.times")
    rots = world.poses(times[pick])[:, :, :3, :3]  # [P,C,3,3] local -> world
    cam_ids, parts, points, normals, jacs = [], [], [], [], []
    for c, i in enumerate(pick.tolist()):
        vm, K = cams.viewmats[i].to(_DT), cams.Ks[i].to(_DT)
        o, d = pixel_rays(vm, K, uv)
        hits = cast_rays(world, o, d, float(times[i]), near=cams.near, far=cams.far)
        m = hits.hit
        part = hits.part[m]
        cam = hits.points[m] @ vm[:3, :3].T + vm[:3, 3]
        z = cam[:, 2].clamp_min(1e-9)
        proj = torch.zeros(part.shape[0], 2, 3, dtype=_DT)  # d(pixel) / d(camera point)
        proj[:, 0, 0] = K[0, 0] / z
        proj[:, 0, 1] = K[0, 1] / z
        proj[:, 0, 2] = -(K[0, 0] * cam[:, 0] + K[0, 1] * cam[:, 1]) / z**2
        proj[:, 1, 1] = K[1, 1] / z
        proj[:, 1, 2] = -K[1, 1] * cam[:, 1] / z**2
        jacs.append(proj @ vm[:3, :3] @ rots[part, c])
        cam_ids.append(torch.full_like(part, c))
        parts.append(part)
        points.append(hits.local_points[m])
        normals.append(hits.local_normals[m])
    return _Views(torch.cat(cam_ids), torch.cat(parts), torch.cat(points), torch.cat(normals), torch.cat(jacs),
                  int(pick.numel()), w * h / (lw * lh))


def _hit_rates(prim: Primitive, patches: list[_Patch], grid, pts: Tensor, nrm: Tensor, jac: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
    """For the hits on one primitive: patch index into ``patches``, pixel rates ``[M,2]`` along
    the patch's two axes and pixels per unit area ``[M]``."""
    if isinstance(prim, Sphere):
        j2 = jac @ frame_from_normal(torch.nn.functional.normalize(nrm, dim=-1))[:, :, :2]
        rate = torch.linalg.matrix_norm(j2, ord=2)
        return torch.zeros_like(rate, dtype=torch.long), torch.stack([rate, rate], dim=-1), torch.linalg.det(j2).abs()
    if isinstance(prim, Box):
        axis = nrm.abs().argmax(dim=-1)
        pid = axis + 3 * (nrm.gather(1, axis[:, None])[:, 0] < 0).long()
        j2 = jac @ torch.stack([p.frame for p in patches])[pid][:, :, :2]
    else:  # a rectangle: its tiles form an nx x ny grid over [lo, hi]
        lo, hi, nx, ny = grid
        ix = ((pts[:, 0] - lo[0]) / (hi[0] - lo[0]) * nx).floor().long().clamp(0, nx - 1)
        iy = ((pts[:, 1] - lo[1]) / (hi[1] - lo[1]) * ny).floor().long().clamp(0, ny - 1)
        pid, j2 = iy * nx + ix, jac[:, :, :2]
    return pid, j2.norm(dim=1), torch.linalg.det(j2).abs()


def _seen_tiles(k: int, prim: Rectangle, tiles: list[_Patch], pid: Tensor, pts: Tensor, reach: Tensor
                ) -> list[_Patch | None]:
    """Each tile cut to the box of its hits, widened by each hit's ``reach [M,2]`` (one coverage
    ray's footprint); ``None`` for tiles without hits."""
    n = len(tiles)
    index = pid[:, None].expand(-1, 2)
    lo = torch.full((n, 2), math.inf, dtype=_DT).scatter_reduce(0, index, pts[:, :2] - reach, "amin")
    hi = torch.full((n, 2), -math.inf, dtype=_DT).scatter_reduce(0, index, pts[:, :2] + reach, "amax")
    out: list[_Patch | None] = []
    for t, a, b in zip(tiles, lo.tolist(), hi.tolist()):
        if not math.isfinite(a[0]):
            out.append(None)
            continue
        cx, cy, (w, h) = float(t.center[0]), float(t.center[1]), t.size
        x0, x1 = max(a[0], cx - w / 2), min(b[0], cx + w / 2)
        y0, y1 = max(a[1], cy - h / 2), min(b[1], cy + h / 2)
        out.append(_rect_patch(k, x0, max(x1, x0 + 1e-9), y0, max(y1, y0 + 1e-9), prim.half_size))
    return out


def _patches_and_weights(world: World, cameras: Cameras | None, floor_share: float
                         ) -> tuple[list[_Patch], list[float]]:
    """Every primitive's patches and their sampling weights.

    Without cameras: area x density. With cameras: ``(1 - floor_share)`` of the weight follows the
    patches' pixel demand, ``floor_share`` is given to the primitives by area x density and spread
    over each one's patches by demand (by area when the cameras never see it).
    """
    prims = world.primitives
    if cameras is None:
        weights, patches = [], []
        for k, prim in enumerate(prims):
            base = _base_patches(k, prim)
            total = sum(p.area for p in base)
            patches += base
            weights += [prim.area() * prim.density * p.area / total for p in base]
        return patches, weights
    views = _view_hits(world, cameras)
    per_prim: list[list[_Patch]] = []
    for k, prim in enumerate(prims):
        m = views.part == k
        if not m.any():
            per_prim.append(_base_patches(k, prim))
            continue
        pts, cam = views.local_points[m], views.cam[m]
        base, grid = _tiled_rectangle(k, prim, pts[:, :2]) if isinstance(prim, Rectangle) else (
            _base_patches(k, prim), None)
        pid, rates, det = _hit_rates(prim, base, grid, pts, views.local_normals[m], views.jacobians[m])
        # per (patch, camera): mean pixel rates and pixels per unit area (rays / area they cover)
        n, c = len(base), views.num_cameras
        key = pid * c + cam
        count = torch.zeros(n * c, dtype=_DT).index_add_(0, key, torch.ones_like(det))
        rate = torch.zeros(n * c, 2, dtype=_DT).index_add_(0, key, rates) / count.clamp_min(1.0)[:, None]
        cover = torch.zeros(n * c, dtype=_DT).index_add_(0, key, 1.0 / det.clamp_min(1e-30))
        rate = rate.reshape(n, c, 2).amax(dim=1).tolist()
        density = (count / cover.clamp_min(1e-30)).reshape(n, c).amax(dim=1).tolist()
        if grid is not None:
            base = _seen_tiles(k, prim, base, pid, pts, math.sqrt(views.pixel_area) / rates.clamp_min(1e-12))
        kept = []
        for p, r, rho in zip(base, rate, density):
            if p is not None:  # unseen faces stay (demand 0), unseen tiles go
                p.rates, p.demand = (r[0], r[1]), rho * p.area
                kept.append(p)
        per_prim.append(kept)
    demand = [sum(p.demand for p in base) for base in per_prim]
    floor = [(prim.area() if math.isfinite(prim.area()) else sum(p.area for p in base)) * prim.density
             for base, prim in zip(per_prim, prims)]
    sd, sf = sum(demand), sum(floor)
    patches, weights = [], []
    for base, d, f in zip(per_prim, demand, floor):
        share = (floor_share * f / sf if sf > 0 else 0.0) if sd > 0 else f
        for p in base:
            w = (1.0 - floor_share) * p.demand / sd if sd > 0 else 0.0
            w += share * (p.demand / d if d > 0 else p.area / sum(q.area for q in base))
            patches.append(p)
            weights.append(w)
    return patches, weights


# -- stratified points on one patch -------------------------------------------------------------


def _grid_rows(n: int, a: float, b: float, aspect: float) -> tuple[Tensor, float, float]:
    """Row layout of ``n`` points on an ``a x b`` rectangle: points per row (summing to ``n``,
    differing by at most one), row height, and mean cell width."""
    aspect = aspect * 2.0 / math.sqrt(3.0)  # hexagonal: rows sqrt(3)/2 of the in-row spacing apart
    sv = math.sqrt(a * b / (n * aspect))
    rows = max(1, min(n, round(b / sv)))
    j = torch.arange(rows, dtype=_DT)
    per_row = (torch.floor((j + 1) * n / rows) - torch.floor(j * n / rows)).long()
    return per_row, b / rows, a * rows / n


def _rect_grid(n: int, a: float, b: float, aspect: float, gen: torch.Generator, jitter: float
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n`` evenly spaced points on an ``a x b`` rectangle, in rows along the first side, every
    other row shifted by half a cell (a near-hexagonal lattice).

    ``aspect`` is the wanted ratio (first / second) of the cell sides. Returns the points as
    fractions ``u, v [n]`` in ``(0, 1)`` of the two sides and the cell sides ``du, dv [n]``.
    """
    per_row, dv, _ = _grid_rows(n, a, b, aspect)
    rows = per_row.numel()
    row = torch.repeat_interleave(torch.arange(rows), per_row)
    start = torch.cumsum(per_row, 0) - per_row
    i = (torch.arange(n) - start[row]).to(_DT)
    i = i + torch.where(row % 2 == 0, -0.25, 0.25).to(_DT)
    cnt = per_row[row].to(_DT)
    offset = (torch.rand(n, 2, generator=gen, dtype=_DT) - 0.5) * jitter
    u = (i + 0.5 + offset[:, 0]) / cnt
    v = (row.to(_DT) + 0.5 + offset[:, 1]) / rows
    return u, v, a / cnt, torch.full((n,), dv, dtype=_DT)


def _random_rotation(gen: torch.Generator) -> Tensor:
    q = torch.nn.functional.normalize(torch.randn(4, generator=gen, dtype=_DT), dim=0)
    w, x, y, z = q.tolist()
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=_DT)


def _sphere_lattice(n: int, gen: torch.Generator, jitter: float) -> Tensor:
    """``n`` unit vectors on a randomly rotated Fibonacci lattice, jittered by ``jitter`` cells."""
    i = torch.arange(n, dtype=_DT)
    z = 1.0 - (2.0 * i + 1.0) / n
    r = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    phi = i * (math.pi * (3.0 - math.sqrt(5.0)))
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    frames = frame_from_normal(dirs)
    offset = (torch.rand(n, 2, generator=gen, dtype=_DT) - 0.5) * (jitter * math.sqrt(4.0 * math.pi / n))
    dirs = torch.nn.functional.normalize(dirs + frames[:, :, 0] * offset[:, :1] + frames[:, :, 1] * offset[:, 1:],
                                         dim=-1)
    return dirs @ _random_rotation(gen).T


def _sample_patch(p: _Patch, n: int, gen: torch.Generator, jitter: float, inset: float
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Local points ``[n,3]``, frames ``[n,3,3]`` and in-plane cell sides ``[n,2]`` on one patch."""
    if p.kind == "sphere":
        dirs = _sphere_lattice(n, gen, jitter)
        cell = math.sqrt(p.area / n)
        return dirs * p.size[0], frame_from_normal(dirs), torch.full((n, 2), cell, dtype=_DT)
    r1, r2 = p.rates
    aspect = min(_MAX_ASPECT, max(1.0 / _MAX_ASPECT, r2 / r1)) if r1 > 0 and r2 > 0 else 1.0
    a, b = p.size
    # keep the outermost points ``inset`` off the true edges: pixels of the most magnifying view, or cells
    if max(p.rates) > 0:
        cu = cv = inset / max(p.rates)
    else:
        _, cv, cu = _grid_rows(n, a, b, aspect)
        cu, cv = inset * cu, inset * cv
    lo_u, hi_u = min(cu, 0.25 * a) * p.border[0], min(cu, 0.25 * a) * p.border[1]
    lo_v, hi_v = min(cv, 0.25 * b) * p.border[2], min(cv, 0.25 * b) * p.border[3]
    a2, b2 = a - lo_u - hi_u, b - lo_v - hi_v
    u, v, du, dv = _rect_grid(n, a2, b2, aspect, gen, jitter)
    t1, t2 = p.frame[:, 0], p.frame[:, 1]
    pts = p.center + (lo_u + u * a2 - a / 2)[:, None] * t1 + (lo_v + v * b2 - b / 2)[:, None] * t2
    return pts, p.frame.expand(n, 3, 3).clone(), torch.stack([du, dv], dim=-1)


# -- public API -------------------------------------------------------------------------------


def sample_surface(world: World, num_points: int, seed: int = 0, scale_factor: float | None = None,
                   normal_ratio: float = 0.05, opacity: float = 0.95, cameras: Cameras | None = None,
                   jitter: float = 0.3, inset: float | None = None, floor_share: float = 0.05) -> SurfaceSamples:
    """Place ``num_points`` evenly spaced points on the world's surfaces.

    Args:
        world: the world (all primitives bounded, unless ``cameras`` are given).
        num_points: total number of points ``N``.
        seed: seed of the ``torch.Generator`` used for the jitter and the sphere lattices.
        scale_factor: in-plane std as a fraction of the local point spacing (cell side); default
            0.6, or 0.4 with ``cameras`` (points are then about a pixel apart and the renderer's
            own screen-space dilation closes the remaining gaps).
        normal_ratio: normal std as a fraction of the smaller in-plane std.
        opacity: opacity of every Gaussian, in (0, 1).
        cameras: optional ``Cameras`` the twin will be seen from: the budget then follows the
            pixels each surface covers in them (see the module notes) and infinite planes are cut
            to the part the cameras see. Without cameras: area x ``density`` weighting.
        jitter: random offset of every point within its cell, as a fraction of the cell (0: a
            regular lattice, 1: fully stratified), in [0, 1].
        inset: distance between a surface's true edges (box and rectangle borders) and its
            outermost points, which offsets the splats' spread past the edge: in pixels of the
            most magnifying camera for patches the ``cameras`` see (default 1), otherwise in cells
            (default 0.5). At most a quarter of the patch side.
        floor_share: with ``cameras``, the share of ``N`` given to the primitives by area x
            ``density`` regardless of the views (so none is left empty), in [0, 1].

    Returns:
        ``SurfaceSamples`` with ``N`` points (on CPU).
    """
    default_scale, default_inset = _DEFAULTS[cameras is not None]
    scale_factor = default_scale if scale_factor is None else scale_factor
    inset = default_inset if inset is None else inset
    _check_sampling_args(world, num_points, seed, scale_factor, normal_ratio, opacity, jitter, inset, floor_share,
                         cameras)
    patches, weights = _patches_and_weights(world, cameras, float(floor_share))
    if not patches or sum(weights) <= 0:
        raise ValueError("world: nothing to sample (every primitive has zero sampling density"
                         + (" or is an infinite plane the cameras never see)" if cameras is not None else ")"))
    counts = _allocate(weights, int(num_points))
    gen = torch.Generator().manual_seed(int(seed))
    ids, pts, frames, cells = [], [], [], []
    for p, n in zip(patches, counts):
        if n == 0:
            continue
        q, f, c = _sample_patch(p, n, gen, float(jitter), float(inset))
        ids.append(torch.full((n,), p.part, dtype=torch.long))
        pts.append(q)
        frames.append(f)
        cells.append(c)
    part_ids, local_points, local_frames = torch.cat(ids), torch.cat(pts), torch.cat(frames)
    std = scale_factor * torch.cat(cells)
    scales = torch.cat([std, normal_ratio * std.min(dim=-1, keepdim=True).values], dim=-1)
    colors = albedo(world, part_ids, local_points, local_frames[:, :, 2]).float()
    return SurfaceSamples(world, part_ids, local_points, local_frames, colors, scales.float().contiguous(),
                          float(opacity))


def sample_gaussians(world: World, t: float, num_points: int, seed: int = 0, **kwargs) -> Gaussians:
    """Flat disc Gaussians on every surface of ``world`` at time ``t``.

    Args:
        world: the world.
        t: normalised time in ``[0, 1]``.
        num_points: number of Gaussians ``N``.
        seed: sampling seed.
        **kwargs: ``scale_factor``, ``normal_ratio``, ``opacity``, ``cameras``, ``jitter``,
            ``inset``, ``floor_share`` as in ``sample_surface``.

    Returns:
        ``Gaussians`` with ``N`` entries (SH degree 0).
    """
    check_times(t, "t")
    return sample_surface(world, num_points, seed, **kwargs).gaussians(float(t))


def surface_motion(world: World, times, num_points: int, seed: int = 0, cameras: Cameras | None = None,
                   **kwargs) -> SurfaceMotion:
    """The same surface Gaussians at several times.

    Args:
        world: the world.
        times: ``[T]`` normalised times.
        num_points: number of Gaussians ``N``.
        seed: sampling seed.
        cameras: optional cameras the scene will be seen from (view-aware budget, see
            ``sample_surface``); needed when the world has infinite planes.
        **kwargs: ``scale_factor``, ``normal_ratio``, ``opacity``, ``jitter``, ``inset``,
            ``floor_share`` as in ``sample_surface``.

    Returns:
        ``SurfaceMotion``: Gaussians at ``times[0]``, means ``[T,N,3]``, quats ``[T,N,4]``, times ``[T]``.
    """
    t = check_times(times, "times")
    samples = sample_surface(world, num_points, seed, cameras=cameras, **kwargs)
    means, quats = samples.at(t)
    g = Gaussians.from_colors(means[0], samples.colors, samples.scales, samples.opacity, quats[0])
    return SurfaceMotion(g, means, quats, t.float(), samples.part_ids)
