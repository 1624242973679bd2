# SPDX-License-Identifier: Apache-2.0
"""MoGe4D 4D-ViSM: dense tracks rendered as per-frame Gaussians along a camera path, a z-buffered
hole mask, and video inpainting of the holes (MoGe4D §4.3, App. F.2).

Public API:
    VismConfig                 footprint, opacity and hole-test settings (defaults documented below)
    footprint_scales(depth, K, k)          ``[H,W]`` isotropic splat std ``k * z / min(fx, fy)``
    tracks_to_scene(tracks, config)        Tracks -> Scene4D (one Gaussian per valid pixel, KeyframeMotion)
    discontinuity_edges(depth, valid, ...) source-grid neighbour pairs split by a depth discontinuity
    OcclusionSheet / occlusion_sheet(tracks, config)   quads closing every discontinuity (the shadow boundary)
    rasterize_min_depth(triangles, viewmat, K, width, height)   z-buffer of triangles -> ``[H,W]`` nearest z
    hole_mask(alpha, depth, sheet_depth, config)       the 4D-ViSM hole test
    masked_for_inpainting(frames, holes)   hole pixels set to 0.5 (the official Wan-Fun masked-video value)
    hole_to_mask(x)                        any hole map -> 0/1 float MASK (binarised at 0.5)
    VismRender / render_vism(source, cameras, render_fn, config, ...)   render + hole mask along a path
    inpaint_holes(inpainter, render, cameras, ...)     video-inpaint the holes (under ``seen_from``)

Design notes:
    **Splats** (§4.3: "rasterize each frame of the time-varying point cloud as a per-frame set of 3D
    Gaussians"). One isotropic Gaussian per valid track, colour from the source image, opacity
    ``0.99``, standard deviation ``k * z / min(fx, fy)`` with ``z`` the track's frame-0 depth in the
    source camera: ``z / f`` is the spacing of neighbouring pixels' points at that depth, so ``k``
    is the std in source pixels. Both rasterizers add a 0.3 px^2 anti-aliasing variance, so a splat
    seen at the source scale has std ``sqrt(k^2 + 0.3)`` px. ``k = 0.3`` (std 0.62 px) is where
    neighbours just cover each other: the alpha is >= 0.94 everywhere on the pixel grid (four splats
    at ``sqrt(0.5)`` px give ``1 - (1 - 0.99 e^{-0.5/0.78})^4``), while a splat leaks only
    ``0.99 e^{-1/0.78} = 0.27`` alpha onto the next pixel centre. Larger ``k`` blurs more: splats of
    one surface composite in depth order, so a neighbour just in front of a pixel's own splat takes
    its leaked share of the colour (measured on the scene world at 128x96: PSNR 24.9 dB at the
    input view with ``k = 0.3``, 20.6 dB with ``k = 0.6``). Paths that magnify the scene (dolly in)
    spread the splats apart; raise ``k`` there. The official code uses a fixed std of 1e-4 in its
    normalised units; a depth-proportional footprint keeps the
    coverage independent of scene scale. The tracks become a ``Scene4D`` with ``KeyframeMotion``
    (frame ``i`` at ``t = i/(T-1)``), so any GEN4D_SCENE path (render, save, preview) works on it and a
    camera's time selects the frame (linear in between).

    **Hole mask** (z-buffered disocclusion test). The official inference takes the pixels that no
    projected point reaches (a z-buffered point projection). That misses disocclusions through which
    a tracked surface *behind* shows, so the test here reasons about free space instead. The
    frame-0 depth map with its neighbours joined is a sheet: space in front of it is known empty,
    space behind it unknown. Where two 4-neighbours are split by a *depth discontinuity*, the sheet is
    closed by a quad on the source ray through the midpoint of the two pixel centres (the silhouette
    ray), from the near depth to the far depth and half a pixel (plus ``sheet_overlap``) to each
    side: the boundary of the occluder's shadow. Each corner moves with the track it came from (the
    near corners with the near pixel's track, the far ones with the far pixel's), so the sheet
    follows the motion. A novel-view pixel is a **hole** when

        ``alpha < alpha_threshold``  (no tracked surface covers it: outside the source view, or a
        disocclusion with nothing tracked behind), or
        ``z_sheet < z_render * (1 - depth_tolerance)``  (its ray enters the unknown region through a
        shadow quad before it reaches the rendered surface: the surface it shows was hidden in the
        source view, so what truly lies there is unknown),

    with ``z_render`` the splats' expected depth and ``z_sheet`` the nearest quad (a triangle
    z-buffer, :func:`rasterize_min_depth`). At the input view the quads are edge-on and cover nothing.
    ``alpha_threshold = 0.8`` puts the alpha boundary of an isolated silhouette where the surface
    truly ends, half a pixel past the last pixel centre: ``0.99 e^{-0.25/(2 * 0.39)} = 0.72``
    there, 0.95 on the pixel centre itself (at the source scale, ``k = 0.3``).

    A discontinuity is a neighbour pair whose disparity jump is both *large*,
    ``|1/z_p - 1/z_q| > edge_threshold * max(1/z_p, 1/z_q)`` (relative to the nearer point), and an
    *outlier* against the jumps next to it on the same line, ``> edge_ratio * min(|prev|, |next|)``:
    disparity is affine in the image on a plane, so a surface seen at a grazing angle (the ground
    near the horizon) has equal consecutive jumps and is not cut, while an occlusion edge is a
    single jump between two smooth runs. Pairs with an invalid pixel are not closed.

    **Inpainting convention** (official ``pipeline_wan_fun_inpaint`` / 4D-ViSM training): the hole
    mask is binary (1 = hole) and binarised at 0.5; the rendered video handed to the model has its
    hole pixels set to 0 in the model's [-1, 1] range, i.e. **0.5 grey** in ComfyUI's 0..1 range
    ("setting the mask value to 0.5", §4.3). The model then sees ``[z_t, z_rendered, m_latent]``
    (App. F.2). Defaults of the inpainting call follow the official stage 2: strength 1 (from pure
    noise), 50 steps, guidance 6, empty negative prompt, ViSM LoRA weight 0.55 (the LoRA itself is
    the backend's business).

    Torch only. Loops run over frames, never over Gaussians or pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..engine.cameras import Cameras
from ..engine.gaussians import Gaussians
from ..engine.scene import KeyframeMotion, Scene4D, ScenePart
from ..engine.viewpoint import seen_from
from .tracks import Tracks

__all__ = [
    "VismConfig",
    "VISM_INPAINT_DEFAULTS",
    "HOLE_VALUE",
    "footprint_scales",
    "tracks_to_scene",
    "discontinuity_edges",
    "OcclusionSheet",
    "occlusion_sheet",
    "rasterize_min_depth",
    "hole_mask",
    "masked_for_inpainting",
    "hole_to_mask",
    "VismRender",
    "render_vism",
    "inpaint_holes",
]

log = logging.getLogger(__name__)

HOLE_VALUE = 0.5
# Official 4D-ViSM stage 2 (scripts/inference/infer.py): 50 steps, guidance 6, shift 3, LoRA 0.55,
# from pure noise.
VISM_INPAINT_DEFAULTS = {"strength": 1.0, "steps": 50, "guidance_scale": 6.0, "lora_strength": 0.55}
_PAIRS_PER_CHUNK = 1 << 21


@dataclass(frozen=True)
class VismConfig:
    """Settings of the 4D-ViSM render.

    Args:
        footprint_scale: ``k``: splat std in source pixels (std = ``k * z / min(fx, fy)``).
        opacity: opacity of every splat.
        alpha_threshold: pixels with less accumulated alpha are holes.
        edge_threshold: relative disparity jump above which neighbours may be split.
        edge_ratio: the jump must also exceed this multiple of the smaller neighbouring jump.
        depth_tolerance: relative depth margin of the sheet-in-front test.
        sheet_overlap: extra half-width (source pixels) of each shadow quad, closing cracks.
        max_sheet_shift: relative motion (source pixels at the near depth) of a quad's two tracks
            beyond which the quad is dropped (see ``OcclusionSheet``).
        background: colour behind the splats in the raw render.
    """

    footprint_scale: float = 0.3
    opacity: float = 0.99
    alpha_threshold: float = 0.8
    edge_threshold: float = 0.04
    edge_ratio: float = 2.0
    depth_tolerance: float = 0.05
    sheet_overlap: float = 0.1
    max_sheet_shift: float = 1.0
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        checks = {
            "footprint_scale": 0.0 < self.footprint_scale <= 10.0,
            "opacity": 0.0 < self.opacity < 1.0,
            "alpha_threshold": 0.0 < self.alpha_threshold < 1.0,
            "edge_threshold": 0.0 < self.edge_threshold,
            "edge_ratio": 1.0 <= self.edge_ratio,
            "depth_tolerance": 0.0 <= self.depth_tolerance < 1.0,
            "sheet_overlap": 0.0 <= self.sheet_overlap <= 1.0,
            "max_sheet_shift": 0.0 <= self.max_sheet_shift,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"VismConfig: out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                             "(footprint_scale in (0,10], opacity and alpha_threshold in (0,1), edge_threshold > 0, "
                             "edge_ratio >= 1, depth_tolerance in [0,1), sheet_overlap in [0,1])")
        if len(self.background) != 3:
            raise ValueError(f"VismConfig: background must be 3 numbers, got {self.background!r}")


# --------------------------------------------------------------------------- splats


def _check_tracks(tracks, who: str) -> Tracks:
    if not isinstance(tracks, Tracks):
        raise ValueError(f"{who}: tracks must be core.moge4d.tracks.Tracks (GEN4D_TRACKS), got {type(tracks).__name__}")
    if tracks.num_valid == 0:
        raise ValueError(f"{who}: the tracks have no valid pixel; nothing to render")
    z = tracks.source_depth()[tracks.valid]
    if not (z > 0).all():
        bad = int((z <= 0).sum())
        raise ValueError(f"{who}: {bad} valid tracks start at non-positive depth in the source camera "
                         f"(min z = {float(z.min()):.4g}); frame-0 points must lie in front of the source camera")
    return tracks


def footprint_scales(depth: Tensor, K: Tensor, k: float = 0.3) -> Tensor:
    """Isotropic splat standard deviation per pixel, ``k * z / min(fx, fy)`` (MoGe4D §4.3 splats).

    Args:
        depth: ``[H,W]`` z-depth (> 0 where used).
        K: ``[3,3]`` pixel intrinsics of the source camera.
        k: std in source pixels.

    Returns:
        ``[H,W]`` world-space std.
    """
    if depth.dim() != 2 or tuple(K.shape) != (3, 3):
        raise ValueError(f"footprint_scales: expected depth [H,W] and K [3,3], got {tuple(depth.shape)} and "
                         f"{tuple(K.shape)}")
    f = torch.minimum(K[0, 0], K[1, 1]).to(depth.dtype)
    if float(f) <= 0:
        raise ValueError(f"footprint_scales: focal lengths must be positive, got {K[0, 0]}, {K[1, 1]}")
    return float(k) * depth / f


def tracks_to_scene(tracks: Tracks, config: VismConfig | None = None, name: str = "tracks") -> Scene4D:
    """The tracks as a dynamic Gaussian scene: one isotropic splat per valid pixel, moving along its track.

    Args:
        tracks: dense tracks (frame-0 points must lie in front of the source camera).
        config: footprint and opacity (default :class:`VismConfig`).
        name: the scene part's name.

    Returns:
        ``Scene4D`` with one part (``N`` = valid pixels, row-major) and ``KeyframeMotion`` over the
        ``T`` frames, at the tracks' fps.
    """
    cfg = config or VismConfig()
    tracks = _check_tracks(tracks, "tracks_to_scene")
    valid = tracks.valid
    sigma = footprint_scales(tracks.source_depth(), tracks.K, cfg.footprint_scale)[valid].float()
    means = tracks.points[:, valid].float()                             # [T,N,3]
    n = means.shape[1]
    scales = sigma[:, None].expand(n, 3)
    gaussians = Gaussians.from_colors(means[0], tracks.colors[valid].float(), scales,
                                      torch.full((n,), float(cfg.opacity), device=means.device))
    return Scene4D([ScenePart(name, gaussians, KeyframeMotion(means))], tracks.num_frames, tracks.fps)


# --------------------------------------------------------------------------- occlusion sheet


def _jumps(disp: Tensor, ok: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Disparity jumps between neighbours along ``dim`` and whether both neighbours are valid."""
    n = disp.shape[dim]
    a, b = disp.narrow(dim, 0, n - 1), disp.narrow(dim, 1, n - 1)
    both = ok.narrow(dim, 0, n - 1) & ok.narrow(dim, 1, n - 1)
    return (b - a).abs(), both


def _split(disp: Tensor, ok: Tensor, dim: int, threshold: float, ratio: float) -> Tensor:
    jump, both = _jumps(disp, ok, dim)
    n = jump.shape[dim]
    near = torch.maximum(disp.narrow(dim, 0, n), disp.narrow(dim, 1, n))
    big = both & (jump > threshold * near)
    inf = torch.full_like(jump.narrow(dim, 0, 1), float("inf"))
    masked = torch.where(both, jump, torch.full_like(jump, float("inf")))
    prev = torch.cat([inf, masked.narrow(dim, 0, n - 1)], dim)
    nxt = torch.cat([masked.narrow(dim, 1, n - 1), inf], dim)
    side = torch.minimum(prev, nxt)
    outlier = torch.where(torch.isinf(side), torch.ones_like(big), jump > ratio * side)
    return big & outlier


def discontinuity_edges(depth: Tensor, valid: Tensor, threshold: float = 0.04,
                        ratio: float = 2.0) -> tuple[Tensor, Tensor]:
    """Neighbour pairs of the source grid split by a depth discontinuity (see the module notes).

    Args:
        depth: ``[H,W]`` z-depth.
        valid: ``[H,W]`` bool; pairs with an invalid pixel are never split.
        threshold: relative disparity jump, ``|1/z_p - 1/z_q| > threshold * max(1/z_p, 1/z_q)``.
        ratio: the jump must exceed ``ratio`` times the smaller of the jumps just before and after it
            on the same row (column); where neither exists the relative test decides alone.

    Returns:
        ``horizontal [H,W-1]`` (pixel ``(i,j)`` vs ``(i,j+1)``) and ``vertical [H-1,W]``
        (``(i,j)`` vs ``(i+1,j)``) bool maps.
    """
    if depth.dim() != 2 or tuple(valid.shape) != tuple(depth.shape):
        raise ValueError(f"discontinuity_edges: expected depth [H,W] and valid [H,W], got {tuple(depth.shape)} and "
                         f"{tuple(valid.shape)}")
    ok = valid.bool() & (depth > 0)
    disp = torch.where(ok, 1.0 / depth.clamp_min(1e-12), torch.zeros_like(depth)).double()
    return _split(disp, ok, 1, threshold, ratio), _split(disp, ok, 0, threshold, ratio)


@dataclass
class OcclusionSheet:
    """Shadow quads of the source view's depth discontinuities, ready to be moved to any time.

    Attributes:
        corners: ``[M,4,3]`` frame-0 world corners ``(near-, near+, far+, far-)``.
        near_index: ``[M]`` flat pixel index (``i*W + j``) of the nearer pixel (its track moves the near corners).
        far_index: ``[M]`` flat pixel index of the farther pixel.
        pixel_size: ``[M]`` world size of one source pixel at the near depth (``z_near / min(fx, fy)``).
        max_shift: a quad is kept at time ``t`` only while its near and far tracks have moved apart
            by at most this many ``pixel_size`` (the shadow of a moving occluder is not a static
            boundary; what it reveals carries no splats and is caught by the alpha test).
    """

    corners: Tensor
    near_index: Tensor
    far_index: Tensor
    pixel_size: Tensor
    max_shift: float = 1.0

    def __len__(self) -> int:
        return int(self.corners.shape[0])

    def triangles_at(self, tracks: Tracks, t: float) -> Tensor:
        """``[2M,3,3]`` world triangles of the sheet at normalised time ``t``."""
        if len(self) == 0:
            return self.corners.new_zeros((0, 3, 3))
        flat0 = tracks.points[0].reshape(-1, 3).to(self.corners.dtype)
        flat = tracks.at(t).reshape(-1, 3).to(self.corners.dtype)
        move = flat - flat0
        near, far = move[self.near_index], move[self.far_index]
        keep = (near - far).norm(dim=-1) <= self.max_shift * self.pixel_size
        c = self.corners.clone()
        c[:, :2] += near[:, None]
        c[:, 2:] += far[:, None]
        c = c[keep]
        return torch.cat([c[:, [0, 1, 2]], c[:, [0, 2, 3]]])


def occlusion_sheet(tracks: Tracks, config: VismConfig | None = None) -> OcclusionSheet:
    """Build the shadow quads of every depth discontinuity of the tracks' frame 0 (module notes)."""
    cfg = config or VismConfig()
    tracks = _check_tracks(tracks, "occlusion_sheet")
    w = tracks.width
    depth = tracks.source_depth().double()
    horiz, vert = discontinuity_edges(depth, tracks.valid, cfg.edge_threshold, cfg.edge_ratio)
    device = depth.device
    half = 0.5 + float(cfg.sheet_overlap)
    quads, near_idx, far_idx, sizes = [], [], [], []
    f = float(torch.minimum(tracks.K[0, 0], tracks.K[1, 1]))
    for split, (di, dj) in ((horiz, (0, 1)), (vert, (1, 0))):
        i, j = torch.nonzero(split, as_tuple=True)
        if i.numel() == 0:
            continue
        zp, zq = depth[i, j], depth[i + di, j + dj]
        p_near = zp <= zq
        z_near, z_far = torch.where(p_near, zp, zq), torch.where(p_near, zq, zp)
        idx_p, idx_q = i * w + j, (i + di) * w + (j + dj)
        near_idx.append(torch.where(p_near, idx_p, idx_q))
        far_idx.append(torch.where(p_near, idx_q, idx_p))
        # Midpoint of the two pixel centres; the quad runs half a pixel (+ overlap) across the pair.
        u = j.double() + 0.5 + 0.5 * dj
        v = i.double() + 0.5 + 0.5 * di
        du, dv = float(di) * half, float(dj) * half
        uv = torch.stack([torch.stack([u - du, v - dv], -1), torch.stack([u + du, v + dv], -1)], 1)  # [m,2,2]
        zs = torch.stack([z_near, z_far], 1)                                                             # [m,2]
        corners_uv = torch.cat([uv, uv.flip(1)], 1)                     # near-, near+, far+, far-
        corners_z = torch.stack([zs[:, 0], zs[:, 0], zs[:, 1], zs[:, 1]], 1)
        quads.append(_backproject_world(corners_uv, corners_z, tracks))
        sizes.append(z_near / f)
    if not quads:
        empty = torch.zeros((0,), dtype=torch.long, device=device)
        return OcclusionSheet(torch.zeros((0, 4, 3), dtype=torch.float64, device=device), empty, empty,
                              torch.zeros((0,), dtype=torch.float64, device=device), cfg.max_sheet_shift)
    return OcclusionSheet(torch.cat(quads), torch.cat(near_idx), torch.cat(far_idx), torch.cat(sizes),
                          cfg.max_sheet_shift)


def _backproject_world(uv: Tensor, z: Tensor, tracks: Tracks) -> Tensor:
    """World points of pixel positions ``uv [...,2]`` at z-depth ``z [...]`` in the source camera."""
    K = tracks.K.double().to(uv.device)
    x = (uv[..., 0] - K[0, 2] - K[0, 1] * (uv[..., 1] - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (uv[..., 1] - K[1, 2]) / K[1, 1]
    cam = torch.stack([x * z, y * z, z], -1)
    c2w = torch.linalg.inv(tracks.viewmat.double().to(uv.device))
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def rasterize_min_depth(triangles: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
                        near: float = 0.01) -> Tensor:
    """Z-buffer of triangles: the nearest camera z covering each pixel centre.

    Args:
        triangles: ``[M,3,3]`` world vertices.
        viewmat: ``[4,4]`` world-to-camera (OpenCV axes).
        K: ``[3,3]`` pixel intrinsics (pixel ``(i, j)`` has its centre at ``(j+0.5, i+0.5)``).
        width, height: image size.
        near: triangles with a vertex at ``z <= near`` are dropped (not clipped).

    Returns:
        ``[H,W]`` float32 z of the nearest triangle, ``inf`` where none covers the pixel centre.
        Depth is interpolated perspective-correctly (``1/z`` is affine in screen space).
    """
    device = triangles.device
    out = torch.full((height * width,), float("inf"), dtype=torch.float64, device=device)
    if triangles.numel() == 0:
        return out.reshape(height, width).float()
    vm = viewmat.double().to(device)
    cam = triangles.double() @ vm[:3, :3].T + vm[:3, 3]
    z = cam[..., 2]
    keep = (z > near).all(-1)
    cam, z = cam[keep], z[keep]
    Kd = K.double().to(device)
    pix = cam @ Kd.T
    uv = pix[..., :2] / z[..., None]                                    # [M,3,2]
    area = _edge(uv[:, 0], uv[:, 1], uv[:, 2])
    lo = uv.amin(1) - 0.5
    hi = uv.amax(1) - 0.5
    x0 = lo[:, 0].ceil().clamp(0, width - 1).long()
    x1 = hi[:, 0].floor().clamp(-1, width - 1).long()
    y0 = lo[:, 1].ceil().clamp(0, height - 1).long()
    y1 = hi[:, 1].floor().clamp(-1, height - 1).long()
    on = (area.abs() > 1e-12) & (hi[:, 0] >= -0.5) & (lo[:, 0] <= width - 0.5) & (hi[:, 1] >= -0.5) \
        & (lo[:, 1] <= height - 0.5)
    nx = (x1 - x0 + 1).clamp_min(0) * on
    ny = (y1 - y0 + 1).clamp_min(0) * on
    count = nx * ny
    sel = torch.nonzero(count > 0).reshape(-1)
    if sel.numel() == 0:
        return out.reshape(height, width).float()
    csum = torch.cumsum(count[sel], 0)
    start = 0
    while start < sel.numel():
        base = int(csum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(csum, torch.tensor(base + _PAIRS_PER_CHUNK, device=device), right=True))
        stop = max(stop, start + 1)
        tri = sel[start:stop]
        n = count[tri]
        owner = torch.repeat_interleave(torch.arange(tri.numel(), device=device), n)
        offset = torch.cumsum(n, 0) - n
        local = torch.arange(int(n.sum()), device=device) - offset[owner]
        t = tri[owner]
        px = x0[t] + local % nx[t]
        py = y0[t] + torch.div(local, nx[t], rounding_mode="floor")
        p = torch.stack([px.double() + 0.5, py.double() + 0.5], -1)
        v = uv[t]
        a = area[t]
        b0 = _edge(v[:, 1], v[:, 2], p) / a
        b1 = _edge(v[:, 2], v[:, 0], p) / a
        b2 = _edge(v[:, 0], v[:, 1], p) / a
        inside = (b0 >= -1e-9) & (b1 >= -1e-9) & (b2 >= -1e-9)
        zt = z[t]
        inv = b0 / zt[:, 0] + b1 / zt[:, 1] + b2 / zt[:, 2]
        depth = torch.where(inside & (inv > 0), 1.0 / inv.clamp_min(1e-300), torch.full_like(inv, float("inf")))
        out.scatter_reduce_(0, py * width + px, depth, reduce="amin")
        start = stop
    return out.reshape(height, width).float()


def _edge(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """Twice the signed area of triangle ``(a, b, p)`` (2D, batched)."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


# --------------------------------------------------------------------------- holes


def hole_mask(alpha: Tensor, depth: Tensor, sheet_depth: Tensor | None = None,
              config: VismConfig | None = None) -> Tensor:
    """The 4D-ViSM hole test (module notes): uncovered, or the shadow sheet lies in front of the splats.

    Args:
        alpha: ``[...,H,W]`` accumulated splat alpha.
        depth: ``[...,H,W]`` expected splat depth.
        sheet_depth: ``[...,H,W]`` nearest shadow-quad depth (``inf`` where none); None skips that test.
        config: thresholds.

    Returns:
        bool ``[...,H,W]``, True = hole.
    """
    cfg = config or VismConfig()
    holes = alpha < cfg.alpha_threshold
    if sheet_depth is not None:
        holes = holes | (sheet_depth < depth * (1.0 - cfg.depth_tolerance))
    return holes


def masked_for_inpainting(frames: Tensor, holes: Tensor, value: float = HOLE_VALUE) -> Tensor:
    """Rendered frames ``[T,H,W,3]`` with hole pixels (``holes [T,H,W]`` >= 0.5) set to ``value`` (0.5 grey).

    0.5 in 0..1 is 0 in the [-1, 1] range of the Wan VAE: the official 4D-ViSM masked-video value.
    """
    mask = hole_to_mask(holes)
    if tuple(mask.shape) != tuple(frames.shape[:-1]):
        raise ValueError(f"masked_for_inpainting: holes {tuple(holes.shape)} do not match frames "
                         f"{tuple(frames.shape)}")
    return torch.where(mask[..., None] > 0, torch.full_like(frames, float(value)), frames)


def hole_to_mask(x: Tensor) -> Tensor:
    """Any hole map (bool, 0/1, soft, or 0/255) -> 0/1 float32 MASK, binarised at half its range.

    Bool maps are taken as they are; floats above 1 are read as 0..255 video masks (the official
    mask videos); values ``>= 0.5`` of the 0..1 range are holes (``do_binarize`` at 0.5).
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"hole_to_mask: expected a tensor, got {type(x).__name__}")
    if x.dtype == torch.bool:
        return x.float()
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("hole_to_mask: the hole map holds NaN or inf values")
    if x.numel() and float(x.max()) > 1.0:
        x = x / 255.0
    return (x >= 0.5).float()


# --------------------------------------------------------------------------- render + inpaint


@dataclass
class VismRender:
    """4D-ViSM render of ``T`` cameras.

    Attributes:
        rgb: ``[T,H,W,3]`` splat colour over the background.
        alpha: ``[T,H,W]`` accumulated alpha.
        depth: ``[T,H,W]`` expected depth (0 where empty).
        holes: ``[T,H,W]`` bool hole mask.
        sheet_depth: ``[T,H,W]`` nearest shadow-quad depth (``inf`` where none), None for a scene input.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    holes: Tensor
    sheet_depth: Tensor | None = None


RenderFn = Callable[[object, Cameras], tuple[Tensor, Tensor, Tensor]]


def render_vism(
    source: Tracks | Scene4D,
    cameras: Cameras,
    render_fn: RenderFn,
    config: VismConfig | None = None,
    callback: Callable[[int, int, Tensor | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> VismRender:
    """Render tracks (or any scene) along a camera path with the 4D-ViSM hole mask.

    Args:
        source: ``Tracks`` (splatted with :func:`tracks_to_scene`, holes from alpha and the shadow
            sheet) or a ``Scene4D`` (holes from alpha alone: a scene has no source grid).
        cameras: ``C`` cameras; camera ``i`` sees the scene at ``cameras.times[i]``.
        render_fn: ``render_fn(scene, cameras) -> (rgb [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1])``
            (the node binds ``backends.render.render_scene``).
        config: settings.
        callback: ``callback(frame, C, preview [H,W,3])`` after each camera.
        should_stop: polled before each camera; when True, ``InterruptedError`` is raised.

    Returns:
        :class:`VismRender` on the render device.
    """
    cfg = config or VismConfig()
    if not isinstance(cameras, Cameras):
        raise ValueError(f"render_vism: cameras must be Cameras (GEN4D_CAMERAS), got {type(cameras).__name__}")
    sheet, tracks = None, None
    if isinstance(source, Tracks):
        tracks = _check_tracks(source, "render_vism")
        scene = tracks_to_scene(tracks, cfg)
        sheet = occlusion_sheet(tracks, cfg)
        log.info("4D-ViSM: %d splats per frame, %d shadow quads, %d cameras", tracks.num_valid, len(sheet),
                 len(cameras))
    elif isinstance(source, Scene4D):
        scene = source
    else:
        raise ValueError(f"render_vism: source must be Tracks (GEN4D_TRACKS) or a Scene4D (GEN4D_SCENE), got "
                         f"{type(source).__name__}")
    rgbs, alphas, depths, sheets = [], [], [], []
    for i in range(len(cameras)):
        if should_stop is not None and should_stop():
            raise InterruptedError("render_vism: stopped by the user")
        cam = cameras[i]
        rgb, alpha, depth = render_fn(scene, cam)
        rgbs.append(rgb[0])
        alphas.append(alpha[0].reshape(alpha.shape[1:3]))
        depths.append(depth[0].reshape(depth.shape[1:3]))
        if sheet is not None:
            t = float(cam.times[0])
            tri = sheet.triangles_at(tracks, t).to(rgb.device)
            sheets.append(rasterize_min_depth(tri, cam.viewmats[0], cam.Ks[0], cam.width, cam.height,
                                              cam.near).to(rgb.device))
        if callback is not None:
            callback(i + 1, len(cameras), rgbs[-1].detach().clamp(0, 1))
    alpha, depth = torch.stack(alphas), torch.stack(depths)
    sheet_depth = torch.stack(sheets) if sheets else None
    holes = hole_mask(alpha, depth, sheet_depth, cfg)
    return VismRender(torch.stack(rgbs), alpha, depth, holes, sheet_depth)


def inpaint_holes(
    inpainter,
    render: VismRender,
    cameras: Cameras,
    prompt: str = "",
    negative_prompt: str = "",
    strength: float = VISM_INPAINT_DEFAULTS["strength"],
    steps: int = VISM_INPAINT_DEFAULTS["steps"],
    guidance_scale: float = VISM_INPAINT_DEFAULTS["guidance_scale"],
    seed: int = 0,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Tensor:
    """Fill the holes of a 4D-ViSM render with a video inpainter (MoGe4D App. F.2).

    The inpainter gets the render with its holes at 0.5 grey and the 0/1 hole mask, through the
    ``VideoInpainter.inpaint`` interface, inside ``seen_from(cameras, "scene")``.

    Returns:
        ``[T,H,W,3]`` float32 frames in 0..1 on the CPU.
    """
    if not callable(getattr(inpainter, "inpaint", None)):
        raise ValueError(f"inpaint_holes: inpainter must have an inpaint(frames, masks, ...) method, got "
                         f"{type(inpainter).__name__}")
    if len(cameras) != render.rgb.shape[0]:
        raise ValueError(f"inpaint_holes: {len(cameras)} cameras for {render.rgb.shape[0]} frames")
    masks = hole_to_mask(render.holes).cpu()
    frames = masked_for_inpainting(render.rgb.detach().float().clamp(0, 1).cpu(), masks)
    with seen_from(cameras, "scene"):
        out = inpainter.inpaint(frames, masks, prompt, negative_prompt, float(strength), int(steps),
                                float(guidance_scale), int(seed), callback, should_stop)
    return out.detach().float().cpu().clamp(0, 1)
