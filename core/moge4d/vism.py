# SPDX-License-Identifier: Apache-2.0
"""MoGe4D 4D-ViSM: dense tracks rendered as per-frame Gaussians along a camera path, a z-buffered
hole mask, and video inpainting of the holes (MoGe4D §4.3, App. F.2).

Public API:
    VismConfig                 footprint, opacity and hole-test settings (defaults documented below)
    footprint_scales(depth, K, k)          ``[H,W]`` isotropic splat std ``k * z / min(fx, fy)``
    tracks_to_scene(tracks, config, oriented)   Tracks -> Scene4D (one Gaussian per valid pixel, KeyframeMotion)
    SurfaceSplats / surface_splats(tracks, config)   splats flat in the local surface, frames carried with the motion
    facing(normals, means, center)         cosine between splat normals and the direction to a camera
    discontinuity_edges(depth, valid, ...) source-grid neighbour pairs split by a depth discontinuity
    OcclusionSheet / occlusion_sheet(tracks, config)   quads closing every discontinuity (the shadow boundary)
    rasterize_min_depth(triangles, viewmat, K, width, height)   z-buffer of triangles -> ``[H,W]`` nearest z
    hole_mask(alpha, depth, sheet_depth, config, backface_depth)   the 4D-ViSM hole test
    masked_for_inpainting(frames, holes)   hole pixels set to 0.5 (the official Wan-Fun masked-video value)
    hole_to_mask(x)                        any hole map -> 0/1 float MASK (binarised at 0.5)
    VismRender / render_vism(source, cameras, render_fn, config, ...)   render + hole mask along a path
    inpaint_holes(inpainter, render, cameras, ...)     video-inpaint the holes (under ``seen_from``)

Design notes:
    **Splats** (§4.3: "rasterize each frame of the time-varying point cloud as a per-frame set of 3D
    Gaussians"). One Gaussian per valid track (isotropic here; by default the surface splats below),
    colour from the source image, opacity ``0.99``, standard deviation ``k * z / min(fx, fy)`` with
    ``z`` the track's frame-0 depth in the source camera: ``z / f`` is the spacing of neighbouring
    pixels' points at that depth, so ``k`` is the std in source pixels. Both rasterizers add a 0.3 px^2
    anti-aliasing variance, so a splat seen at the source scale has std ``sqrt(k^2 + 0.3)`` px.
    ``k = 0.3`` (std 0.62 px) is where neighbours just cover each other: the alpha is >= 0.94 everywhere on
    the pixel grid (four splats at ``sqrt(0.5)`` px give ``1 - (1 - 0.99 e^{-0.5/0.78})^4``), while a
    splat leaks only ``0.99 e^{-1/0.78} = 0.27`` alpha onto the next pixel centre. Larger ``k`` blurs
    more: splats of one surface composite in depth order, so a neighbour just in front of a pixel's own
    splat takes its leaked share of the colour (measured on the scene world at 128x96: PSNR 24.9 dB at
    the input view with ``k = 0.3``, 20.6 dB with ``k = 0.6``). Paths that magnify the scene (dolly in)
    spread the splats apart; raise ``k`` there. The official code uses a fixed std of 1e-4 in its
    normalised units; a depth-proportional footprint keeps the coverage independent of scene scale. The
    tracks become a ``Scene4D`` with ``KeyframeMotion`` (frame ``i`` at ``t = i/(T-1)``), so any
    GEN4D_SCENE path (render, save, preview) works on it and a camera's time selects the frame (linear
    in between).

    **Surface splats and the back-facing test** (additions to the paper, which renders the tracks
    as plain per-frame Gaussians; both on by default, ``surface_splats`` / ``backface_test`` turn
    them off). An isotropic splat is a ball: seen from the side, the splats of a surface that faced
    the input camera still cover the pixels around it, and a surface that has turned away from the
    camera (a spinning object, a large view change) is still drawn where its unseen side should
    show. Each splat is therefore a flat disc in the local surface (:func:`surface_splats`). Its
    in-plane covariance ``k^2 (a a^T + b b^T)`` spans the offsets ``a``, ``b`` to the neighbouring
    tracks along the image axes (mean over a ``(2r+1)^2`` window, ``r = normal_window``, pairs
    split by a depth discontinuity left out): from the input view it is the isotropic ``k``-pixel
    footprint to first order, from any other view a patch of the surface, so the splats cover a
    surface's projection from any angle as they cover it from the input view (edge-on, a thin
    line; paths that magnify still spread them apart), stretched at grazing angles up to
    ``max_elongation`` footprints. Its normal ``a x b`` faces the input camera at frame 0 and turns
    with the local motion: at frame ``t`` the disc is turned by the rotation that best carries the
    window's frame-0 neighbour offsets to frame ``t`` (Horn's closed form), from the pairs whose
    length changed by at most ``rigid_tolerance`` (pairs spanning two parts that move apart would
    tilt it). At each camera, splats whose carried normal points away from the camera are not
    drawn (a surface seen from behind shows its unseen side); they are rendered on their own, and
    where they cover a pixel (alpha >= ``alpha_threshold``) in front of the drawn surface the pixel
    is a hole (``z_back`` below), as where a shadow quad lies in front.

    Measured on the worlds of ``tests/test_vism_worlds.py`` (exact tracks, 128x96, three MoGe4D
    paths): pooled hole IoU 0.856 -> 0.911, 0.76-0.85 -> 0.87-0.89 on the 90 degree path, worst
    novel frame outside the holes 17.1 -> 18.2 dB; the scene world's orbit (``tests/test_vism.py``)
    0.937 -> 0.948. The 5x5 window keeps the normals steady on noisy tracks: with white noise of
    0.3 source pixels on exact tracks (those worlds, the scene world and a sphere on a floor;
    5 frames, 18 world/path pairs) the pooled IoU is 0.73 with isotropic splats, 0.77 with per-pixel
    central differences, 0.79 over 3x3, 0.80 over 5x5 (0.87-0.88 for any window without noise).
    Not caught: where a spinning object's unseen side turns in front of background that the input
    view saw beside the object, that background is drawn and not flagged (the tracks do not say
    how far the object reaches).

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
        source view, so what truly lies there is unknown), or
        ``z_back < z_render * (1 - depth_tolerance)``  (back-facing splats cover it in front of the
        drawn surface, see above),

    with ``z_render`` the drawn splats' expected depth and ``z_sheet`` the nearest quad (a triangle
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
from ..engine.gaussians import Gaussians, quat_multiply, quat_to_rotmat, rotmat_to_quat
from ..engine.scene import KeyframeMotion, Scene4D, ScenePart
from ..engine.viewpoint import seen_from
from .tracks import Tracks

__all__ = [
    "VismConfig",
    "VISM_INPAINT_DEFAULTS",
    "HOLE_VALUE",
    "footprint_scales",
    "tracks_to_scene",
    "SurfaceSplats",
    "surface_splats",
    "facing",
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
        surface_splats: splats lie flat in the local surface and span the offsets to their
            neighbouring tracks (module notes); False draws isotropic splats.
        backface_test: splats whose carried normal faces away from the camera are not drawn and
            their pixels are holes where they lie in front of the drawn surface (module notes).
        thickness: std of a surface splat along its normal, as a fraction of ``k * z / min(fx, fy)``.
        max_elongation: largest in-plane std of a surface splat, in multiples of ``k * z / min(fx, fy)``.
        rigid_tolerance: relative change of a neighbour offset's length beyond which that neighbour
            does not take part in the local rotation of a track.
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
    surface_splats: bool = True
    backface_test: bool = True
    thickness: float = 0.05
    max_elongation: float = 16.0
    rigid_tolerance: float = 0.25
    normal_window: int = 2

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
            "thickness": 0.0 < self.thickness <= 1.0,
            "max_elongation": 1.0 <= self.max_elongation,
            "rigid_tolerance": 0.0 < self.rigid_tolerance,
            "normal_window": isinstance(self.normal_window, int) and 0 <= self.normal_window <= 8,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"VismConfig: out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                             "(footprint_scale in (0,10], opacity and alpha_threshold in (0,1), edge_threshold > 0, "
                             "edge_ratio >= 1, depth_tolerance in [0,1), sheet_overlap in [0,1], thickness in (0,1], "
                             "max_elongation >= 1, rigid_tolerance > 0)")
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


def tracks_to_scene(tracks: Tracks, config: VismConfig | None = None, name: str = "tracks",
                    oriented: bool = False) -> Scene4D:
    """The tracks as a dynamic Gaussian scene: one splat per valid pixel, moving along its track.

    Args:
        tracks: dense tracks (frame-0 points must lie in front of the source camera).
        config: footprint, opacity and surface-splat settings (default :class:`VismConfig`).
        name: the scene part's name.
        oriented: False: isotropic splats of std ``k * z / min(fx, fy)`` (the paper's per-frame
            Gaussians); True: surface splats (:func:`surface_splats`), what :func:`render_vism`
            draws with ``surface_splats`` on. Either way every splat carries its surface frame
            per track frame (``KeyframeMotion`` quats; third axis = the carried normal).

    Returns:
        ``Scene4D`` with one part (``N`` = valid pixels, row-major) and ``KeyframeMotion`` over the
        ``T`` frames, at the tracks' fps.
    """
    cfg = config or VismConfig()
    tracks = _check_tracks(tracks, "tracks_to_scene")
    valid = tracks.valid
    splats = surface_splats(tracks, cfg)
    means = tracks.points[:, valid].float()                             # [T,N,3]
    n = means.shape[1]
    if oriented:
        scales = splats.scales.float()
    else:
        sigma = footprint_scales(tracks.source_depth(), tracks.K, cfg.footprint_scale)[valid].float()
        scales = sigma[:, None].expand(n, 3)
    quats = splats.quats.float()
    gaussians = Gaussians.from_colors(means[0], tracks.colors[valid].float(), scales,
                                      torch.full((n,), float(cfg.opacity), device=means.device), quats[0])
    return Scene4D([ScenePart(name, gaussians, KeyframeMotion(means, quats))], tracks.num_frames, tracks.fps)


# --------------------------------------------------------------------------- surface splats


@dataclass
class SurfaceSplats:
    """Surface-aligned splats of the valid tracks (row-major order of the valid pixels).

    Attributes:
        scales: ``[N,3]`` stds along the frame's axes: the major and minor in-plane axes, then the normal.
        quats: ``[T,N,4]`` wxyz frame of every track at every frame (the frame-0 frame carried by the
            local rotation of the track's neighbourhood).
        normals: ``[N,3]`` frame-0 unit normals, facing the source camera.
    """

    scales: Tensor
    quats: Tensor
    normals: Tensor


def _neighbour_offsets(points: Tensor) -> Tensor:
    """``[...,H,W,4,3]`` offsets to the right, left, down and up neighbours (``q - p`` along ``+u``/``+v``:
    right ``p[j+1] - p[j]``, left ``p[j] - p[j-1]``; zeros past the border)."""
    dh = points[..., :, 1:, :] - points[..., :, :-1, :]
    dv = points[..., 1:, :, :] - points[..., :-1, :, :]
    zh = torch.zeros_like(dh[..., :, :1, :])
    zv = torch.zeros_like(dv[..., :1, :, :])
    return torch.stack([torch.cat([dh, zh], -2), torch.cat([zh, dh], -2),
                        torch.cat([dv, zv], -3), torch.cat([zv, dv], -3)], -2)


def _neighbour_ok(tracks: Tracks, cfg: VismConfig) -> Tensor:
    """``[H,W,4]`` bool: the right/left/down/up neighbour is valid and on the same surface in frame 0."""
    horiz, vert = discontinuity_edges(tracks.source_depth().double(), tracks.valid, cfg.edge_threshold,
                                      cfg.edge_ratio)
    v = tracks.valid
    ok_h = v[:, :-1] & v[:, 1:] & ~horiz
    ok_v = v[:-1] & v[1:] & ~vert
    fh = torch.zeros_like(ok_h[:, :1])
    fv = torch.zeros_like(ok_v[:1])
    return torch.stack([torch.cat([ok_h, fh], 1), torch.cat([fh, ok_h], 1),
                        torch.cat([ok_v, fv], 0), torch.cat([fv, ok_v], 0)], -1)


def _window_sum(x: Tensor, radius: int) -> Tensor:
    """Sum of ``x [H,W,...]`` over the ``(2r+1)^2`` window around every pixel (zeros past the border)."""
    if radius <= 0:
        return x
    h, w = x.shape[:2]
    flat = x.reshape(h, w, -1).permute(2, 0, 1)[None]
    size = 2 * radius + 1
    out = torch.nn.functional.avg_pool2d(flat, size, stride=1, padding=radius, count_include_pad=True) * (size * size)
    return out[0].permute(1, 2, 0).reshape(x.shape)


def _tangents(offsets: Tensor, ok: Tensor, radius: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean usable offset along ``+u`` and ``+v`` over each pixel's window: ``a, b [H,W,3]`` and whether
    any exists (``has_a, has_b [H,W]``); central differences for a radius of 0."""
    w = ok.to(offsets.dtype)[..., None]
    sums = _window_sum(torch.cat([(offsets * w).reshape(*ok.shape[:2], 12), w[..., 0]], -1), radius)
    off = sums[..., :12].reshape(*ok.shape[:2], 4, 3)
    count = sums[..., 12:]
    cu, cv = count[..., 0] + count[..., 1], count[..., 2] + count[..., 3]
    a = (off[..., 0, :] + off[..., 1, :]) / cu.clamp_min(1.0)[..., None]
    b = (off[..., 2, :] + off[..., 3, :]) / cv.clamp_min(1.0)[..., None]
    return a, b, cu > 0, cv > 0


def _best_rotation(s: Tensor) -> Tensor:
    """``[N,4]`` unit wxyz quaternions of the rotations ``R`` maximising ``sum w (R d_0) . d_t``, given the
    cross-covariances ``s = sum w d_0 d_t^T [N,3,3]`` (Horn's closed form: the top eigenvector of a
    symmetric 4x4 matrix)."""
    sxx, sxy, sxz = s[:, 0, 0], s[:, 0, 1], s[:, 0, 2]
    syx, syy, syz = s[:, 1, 0], s[:, 1, 1], s[:, 1, 2]
    szx, szy, szz = s[:, 2, 0], s[:, 2, 1], s[:, 2, 2]
    n = torch.stack([
        torch.stack([sxx + syy + szz, syz - szy, szx - sxz, sxy - syx], -1),
        torch.stack([syz - szy, sxx - syy - szz, sxy + syx, szx + sxz], -1),
        torch.stack([szx - sxz, sxy + syx, syy - sxx - szz, syz + szy], -1),
        torch.stack([sxy - syx, szx + sxz, syz + szy, szz - sxx - syy], -1),
    ], -2)
    return torch.linalg.eigh(n).eigenvectors[..., -1]


def surface_splats(tracks: Tracks, config: VismConfig | None = None) -> SurfaceSplats:
    """Splats lying in the local surface of the tracks, their frames carried with the motion (module notes).

    An addition to MoGe4D §4.3, whose per-frame Gaussians carry no orientation. Frame 0: the
    tangents along the image axes are the mean offsets between neighbouring tracks that are not
    split by a depth discontinuity, over the ``(2r+1)^2`` window around the pixel
    (``r = normal_window``; central differences for ``r = 0``), or the front-parallel pixel step
    ``z / f`` where no such pair exists; the normal is their cross product, turned towards the
    source camera. The splat's in-plane covariance is ``k^2 (a a^T + b b^T)`` (``a``, ``b`` the
    tangents): seen from the source camera it is the isotropic ``k``-pixel footprint to first
    order, and it stays a patch of the surface from any other view. Frame ``t``: the frame is
    turned by the rotation that best carries the window's frame-0 neighbour offsets to frame ``t``
    (Horn's unit-quaternion closed form, offsets scaled to unit frame-0 length), from the pairs
    whose length changed by at most ``rigid_tolerance`` (a neighbour on a part moving differently
    would tilt it); with no pair left along one image axis the frame keeps its previous turn.

    Returns:
        :class:`SurfaceSplats` (float32) for the valid pixels in row-major order.
    """
    cfg = config or VismConfig()
    tracks = _check_tracks(tracks, "surface_splats")
    valid = tracks.valid
    r = int(cfg.normal_window)
    pts = tracks.points.double()
    ok = _neighbour_ok(tracks, cfg)                                            # [H,W,4]
    off0 = _neighbour_offsets(pts[0])                                          # [H,W,4,3]
    a, b, has_a, has_b = (x[valid] for x in _tangents(off0, ok, r))
    p0 = pts[0][valid]
    c2w = torch.linalg.inv(tracks.viewmat.double())
    z = tracks.source_depth().double()[valid]
    K = tracks.K.double()
    iso = float(cfg.footprint_scale) * z / float(torch.minimum(K[0, 0], K[1, 1]))
    a = torch.where(has_a[:, None], a, (z / K[0, 0])[:, None] * c2w[:3, 0])
    b = torch.where(has_b[:, None], b, (z / K[1, 1])[:, None] * c2w[:3, 1])
    to_cam = c2w[:3, 3] - p0
    n = torch.linalg.cross(a, b)
    degenerate = n.norm(dim=-1) <= 1e-12 * (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)
    n = torch.where(degenerate[:, None], to_cam, n)
    n = torch.nn.functional.normalize(n, dim=-1)
    n = torch.where(((n * to_cam).sum(-1) < 0)[:, None], -n, n)
    # In-plane covariance k^2 (a a^T + b b^T) in the basis (t1, t2) of the tangent plane.
    t1 = a - (a * n).sum(-1, keepdim=True) * n
    helper = torch.where(((n @ c2w[:3, 0]).abs() < 0.9)[:, None], c2w[:3, 0], c2w[:3, 1])
    usable = t1.norm(dim=-1) > 1e-9 * a.norm(dim=-1).clamp_min(1e-300)
    t1 = torch.nn.functional.normalize(torch.where(usable[:, None], t1, torch.linalg.cross(n, helper)), dim=-1)
    t2 = torch.linalg.cross(n, t1)
    a1, a2, b1, b2 = (a * t1).sum(-1), (a * t2).sum(-1), (b * t1).sum(-1), (b * t2).sum(-1)
    c11, c22, c12 = a1 * a1 + b1 * b1, a2 * a2 + b2 * b2, a1 * a2 + b1 * b2
    mid, rad = 0.5 * (c11 + c22), torch.sqrt((0.5 * (c11 - c22)) ** 2 + c12 * c12)
    theta = 0.5 * torch.atan2(2.0 * c12, c11 - c22)
    u1 = torch.cos(theta)[:, None] * t1 + torch.sin(theta)[:, None] * t2
    u2 = torch.linalg.cross(n, u1)
    k = float(cfg.footprint_scale)
    s1 = (k * torch.sqrt(mid + rad)).clamp(0.5 * iso, cfg.max_elongation * iso)
    s2 = torch.minimum((k * torch.sqrt((mid - rad).clamp_min(0.0))).clamp_min(0.5 * iso), s1)
    scales = torch.stack([s1, s2, cfg.thickness * iso], -1)
    frame0 = torch.stack([u1, u2, n], -1)                                       # columns
    q0 = rotmat_to_quat(frame0)
    quats = [q0.float()]
    len0 = off0.norm(dim=-1)
    unit0 = off0 / len0.clamp_min(1e-300)[..., None]
    rot = torch.zeros_like(q0)
    rot[:, 0] = 1.0
    for t in range(1, tracks.num_frames):
        off = _neighbour_offsets(pts[t])
        rigid = ok & ((off.norm(dim=-1) - len0).abs() <= cfg.rigid_tolerance * len0)
        w = rigid.to(pts.dtype)
        outer = torch.einsum("hwk,hwki,hwkj->hwij", w / len0.clamp_min(1e-300), unit0, off)
        counts = torch.stack([w[..., 0] + w[..., 1], w[..., 2] + w[..., 3]], -1)
        sums = _window_sum(torch.cat([outer.reshape(*w.shape[:2], 9), counts], -1), r)[valid]
        both = (sums[:, 9] > 0) & (sums[:, 10] > 0)
        rot = torch.where(both[:, None], _best_rotation(sums[:, :9].reshape(-1, 3, 3)), rot)
        quats.append(torch.nn.functional.normalize(quat_multiply(rot, q0), dim=-1).float())
    return SurfaceSplats(scales.float(), torch.stack(quats), n.float())


def facing(normals: Tensor, means: Tensor, center: Tensor) -> Tensor:
    """``[N]`` cosine between each splat's normal and its direction to a camera centre ``[3]``."""
    to_cam = torch.nn.functional.normalize(center.to(means.dtype) - means, dim=-1)
    return (normals.to(means.dtype) * to_cam).sum(-1)


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
              config: VismConfig | None = None, backface_depth: Tensor | None = None) -> Tensor:
    """The 4D-ViSM hole test (module notes): uncovered, or the shadow sheet or a back-facing splat lies in
    front of the drawn splats.

    Args:
        alpha: ``[...,H,W]`` accumulated splat alpha.
        depth: ``[...,H,W]`` expected splat depth.
        sheet_depth: ``[...,H,W]`` nearest shadow-quad depth (``inf`` where none); None skips that test.
        config: thresholds.
        backface_depth: ``[...,H,W]`` depth of the back-facing splats where they cover the pixel
            (``inf`` elsewhere); None skips that test.

    Returns:
        bool ``[...,H,W]``, True = hole.
    """
    cfg = config or VismConfig()
    holes = alpha < cfg.alpha_threshold
    for front in (sheet_depth, backface_depth):
        if front is not None:
            holes = holes | (front < depth * (1.0 - cfg.depth_tolerance))
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
        backface_depth: ``[T,H,W]`` depth of the back-facing splats where they cover a pixel (``inf``
            elsewhere), None for a scene input or with ``backface_test`` off.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    holes: Tensor
    sheet_depth: Tensor | None = None
    backface_depth: Tensor | None = None


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
        source: ``Tracks`` (splatted with :func:`tracks_to_scene`, surface splats unless
            ``surface_splats`` is off; holes from alpha, the shadow sheet and, with ``backface_test``,
            the back-facing splats) or a ``Scene4D`` (holes from alpha alone: a scene has no source grid).
        cameras: ``C`` cameras; camera ``i`` sees the scene at ``cameras.times[i]``.
        render_fn: ``render_fn(scene, cameras) -> (rgb [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1])``; with
            tracks and ``backface_test`` on, ``scene`` is the ``Gaussians`` set of one camera's time
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
        scene = tracks_to_scene(tracks, cfg, oriented=cfg.surface_splats)
        sheet = occlusion_sheet(tracks, cfg)
        log.info("4D-ViSM: %d splats per frame (%s), %d shadow quads, %d cameras", tracks.num_valid,
                 "surface" if cfg.surface_splats else "isotropic", len(sheet), len(cameras))
    elif isinstance(source, Scene4D):
        scene = source
    else:
        raise ValueError(f"render_vism: source must be Tracks (GEN4D_TRACKS) or a Scene4D (GEN4D_SCENE), got "
                         f"{type(source).__name__}")
    cull = tracks is not None and cfg.backface_test
    rgbs, alphas, depths, sheets, backs = [], [], [], [], []
    for i in range(len(cameras)):
        if should_stop is not None and should_stop():
            raise InterruptedError("render_vism: stopped by the user")
        cam = cameras[i]
        t = float(cam.times[0])
        if cull:
            gaussians = scene.at(t)
            normals = quat_to_rotmat(gaussians.quats)[..., :, 2]
            back = facing(normals, gaussians.means, cam.centers[0].to(gaussians.device)) < 0.0
            rgb, alpha, depth = _render_subset(render_fn, gaussians, ~back, cam, cfg)
            _, alpha_b, depth_b = _render_subset(render_fn, gaussians, back, cam, cfg)
            covered = alpha_b[0].reshape(alpha_b.shape[1:3]) >= cfg.alpha_threshold
            depth_b = depth_b[0].reshape(depth_b.shape[1:3]).to(rgb.device)
            backs.append(torch.where(covered.to(rgb.device), depth_b, torch.full_like(depth_b, float("inf"))))
        else:
            rgb, alpha, depth = render_fn(scene, cam)
        rgbs.append(rgb[0])
        alphas.append(alpha[0].reshape(alpha.shape[1:3]))
        depths.append(depth[0].reshape(depth.shape[1:3]))
        if sheet is not None:
            tri = sheet.triangles_at(tracks, t).to(rgb.device)
            sheets.append(rasterize_min_depth(tri, cam.viewmats[0], cam.Ks[0], cam.width, cam.height,
                                              cam.near).to(rgb.device))
        if callback is not None:
            callback(i + 1, len(cameras), rgbs[-1].detach().clamp(0, 1))
    alpha, depth = torch.stack(alphas), torch.stack(depths)
    sheet_depth = torch.stack(sheets) if sheets else None
    backface_depth = torch.stack(backs) if backs else None
    holes = hole_mask(alpha, depth, sheet_depth, cfg, backface_depth)
    return VismRender(torch.stack(rgbs), alpha, depth, holes, sheet_depth, backface_depth)


def _render_subset(render_fn: RenderFn, gaussians: Gaussians, keep: Tensor, cam: Cameras,
                   cfg: VismConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``render_fn`` on the kept splats; an empty selection renders as the bare background."""
    if bool(keep.all()):
        return render_fn(gaussians, cam)
    if bool(keep.any()):
        return render_fn(gaussians.subset(keep), cam)
    h, w, dev = cam.height, cam.width, gaussians.device
    rgb = torch.tensor(cfg.background, dtype=torch.float32, device=dev).expand(1, h, w, 3).clone()
    zeros = torch.zeros(1, h, w, 1, device=dev)
    return rgb, zeros, zeros.clone()


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
