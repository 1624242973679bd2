# SPDX-License-Identifier: Apache-2.0
"""The pure-torch rasterizer against a slow, dense, obviously-correct reference, and the render API.

The reference below projects every Gaussian with textbook float64 formulas, culls by gsplat's
rules and composites EVERY pixel (no tiles) front to back in a Python loop over depth-sorted
Gaussians. It shares no code with ``core/engine/rasterize.py`` (own quaternion, SH and culling code).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from gen4d.backends.render import RenderOutput, render, render_scene
from gen4d.core.engine.cameras import Cameras, intrinsics_from_focal, intrinsics_from_fov, orbit_poses
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.rasterize import project, rasterize
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart

F64 = torch.float64
FWD_TOL = 1e-5
GRAD_TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (10-30x slower on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- independent reference ---------------------------------------------------------------------

_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)


def _ref_sh(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH colour (3DGS basis) for ``sh [N,K,3]`` and unnormalised directions ``[N,3]``, degree <= 2."""
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    basis = [torch.full_like(x, _SH_C0)]
    if degree >= 1:
        basis += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        basis += [_SH_C2[0] * x * y, _SH_C2[1] * y * z, _SH_C2[2] * (2 * z * z - x * x - y * y),
                  _SH_C2[3] * x * z, _SH_C2[4] * (x * x - y * y)]
    out = torch.zeros(sh.shape[0], 3, dtype=sh.dtype)
    for k, b in enumerate(basis):
        out = out + b[:, None] * sh[:, k, :]
    return out


def _ref_rotation(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[N,3,3]`` from wxyz quaternions: ``(w^2 - v.v) I + 2 v v^T + 2 w [v]x``."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[:, 0], q[:, 1:]
    eye = torch.eye(3, dtype=q.dtype).expand(q.shape[0], 3, 3)
    cross = torch.zeros(q.shape[0], 3, 3, dtype=q.dtype)
    cross[:, 0, 1], cross[:, 0, 2] = -v[:, 2], v[:, 1]
    cross[:, 1, 0], cross[:, 1, 2] = v[:, 2], -v[:, 0]
    cross[:, 2, 0], cross[:, 2, 1] = -v[:, 1], v[:, 0]
    return ((w * w - (v * v).sum(-1))[:, None, None] * eye + 2 * v[:, :, None] * v[:, None, :]
            + 2 * w[:, None, None] * cross)


def _ref_project(means, quats, scales, viewmat, K, width, height):
    """Pixel centres ``[N,2]``, 2D covariances ``[N,2,2]`` (with the 0.3 blur), camera-space points ``[N,3]``."""
    Rc, tc = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ Rc.T + tc
    M = _ref_rotation(quats) @ torch.diag_embed(scales)
    cov_c = Rc @ (M @ M.transpose(1, 2)) @ Rc.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    lim_x_pos = (width - cx) / fx + 0.3 * width / (2 * fx)
    lim_x_neg = cx / fx + 0.3 * width / (2 * fx)
    lim_y_pos = (height - cy) / fy + 0.3 * height / (2 * fy)
    lim_y_neg = cy / fy + 0.3 * height / (2 * fy)
    tx = z * torch.clamp(x / z, min=-lim_x_neg, max=lim_x_pos)
    ty = z * torch.clamp(y / z, min=-lim_y_neg, max=lim_y_pos)
    J = torch.zeros(len(z), 2, 3, dtype=means.dtype)
    J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * tx / (z * z)
    J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * ty / (z * z)
    cov2d = J @ cov_c @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=means.dtype)
    centre = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    return centre, cov2d, p


def _ref_visible(means, quats, scales, opacities, viewmat, K, width, height, near, far):
    """Indices of the Gaussians gsplat keeps for this camera and their pixel radii ``[M,2]``."""
    with torch.no_grad():
        z = means @ viewmat[2, :3] + viewmat[2, 3]
        keep = (z >= near) & (z <= far) & (opacities >= 1.0 / 255.0)
        idx = torch.nonzero(keep, as_tuple=True)[0]
        centre, cov, _ = _ref_project(means[idx], quats[idx], scales[idx], viewmat, K, width, height)
        a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
        extent = torch.sqrt(2.0 * torch.log(255.0 * opacities[idx])).clamp(max=3.33)
        rx, ry = torch.ceil(extent * torch.sqrt(a)), torch.ceil(extent * torch.sqrt(c))
        mx, my = centre[:, 0], centre[:, 1]
        ok = (a * c - b * b > 0) & ((rx > 0) | (ry > 0))
        ok &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    return idx[ok], torch.stack([rx, ry], dim=-1)[ok].long()


def _ref_render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near=0.01, far=1e10,
                sh_degree=None, backgrounds=None, stats=None):
    """Dense reference: ``(rgb [C,H,W,D], alpha [C,H,W,1], depth [C,H,W,1])`` in the inputs' dtype.

    ``stats`` (a dict), when given, receives ``terminated``: pixels cut off by the 1e-4 rule.
    """
    rgbs, alphas, depths = [], [], []
    jj, ii = torch.meshgrid(torch.arange(width, dtype=F64), torch.arange(height, dtype=F64), indexing="xy")
    px, py = (jj + 0.5).reshape(-1), (ii + 0.5).reshape(-1)
    for ci in range(viewmats.shape[0]):
        vm, K = viewmats[ci], Ks[ci]
        idx, _ = _ref_visible(means, quats, scales, opacities, vm, K, width, height, near, far)
        dim = 3 if sh_degree is not None else colors.shape[-1]
        T = torch.ones(px.shape[0], dtype=F64)
        done = torch.zeros(px.shape[0], dtype=torch.bool)
        acc = torch.zeros(px.shape[0], dim, dtype=F64)
        acc_z = torch.zeros(px.shape[0], dtype=F64)
        if idx.numel():
            centre, cov2d, p = _ref_project(means[idx], quats[idx], scales[idx], vm, K, width, height)
            conic = torch.linalg.inv(cov2d)
            if sh_degree is None:
                col = colors[idx]
            else:
                campos = -vm[:3, :3].T @ vm[:3, 3]
                col = torch.clamp_min(_ref_sh(colors[idx], means[idx] - campos, sh_degree) + 0.5, 0.0)
            z = p[:, 2]
            order = torch.sort(z.detach(), stable=True).indices
            for k in order.tolist():
                dx, dy = centre[k, 0] - px, centre[k, 1] - py
                sigma = 0.5 * (conic[k, 0, 0] * dx * dx + conic[k, 1, 1] * dy * dy) + conic[k, 0, 1] * dx * dy
                alpha = torch.clamp(opacities[idx[k]] * torch.exp(-sigma), max=0.999)
                valid = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~done
                next_T = T * (1.0 - alpha)
                stop = valid & (next_T <= 1e-4)
                done = done | stop
                use = valid & ~stop
                w = torch.where(use, alpha * T, torch.zeros_like(T))
                acc = acc + w[:, None] * col[k]
                acc_z = acc_z + w * z[k]
                T = torch.where(use, next_T, T)
        if stats is not None:
            stats["terminated"] = stats.get("terminated", 0) + int(done.sum())
        rgb = acc if backgrounds is None else acc + T[:, None] * backgrounds[ci]
        rgbs.append(rgb.reshape(height, width, dim))
        alphas.append((1.0 - T).reshape(height, width, 1))
        depths.append((acc_z / torch.clamp(1.0 - T, min=1e-10)).reshape(height, width, 1))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)


# -- factories ---------------------------------------------------------------------------------


def _make_cameras(width: int, height: int, n: int = 2):
    """``n`` float64 orbit cameras at radius 2.5, the principal point off-centre on camera 0."""
    vm = orbit_poses([10.0, -25.0, 5.0][:n], [0.0, 70.0, -40.0][:n], 2.5).to(F64)
    u, _, vh = torch.linalg.svd(vm[:, :3, :3])
    vm[:, :3, :3] = u @ vh  # orthonormal to float64 precision, so inv(viewmat) is the rigid inverse
    Ks = intrinsics_from_fov(50.0, width, height).to(F64).expand(n, 3, 3).clone()
    Ks[0, 0, 2], Ks[0, 1, 2] = 0.42 * width, 0.55 * height
    return vm, Ks


def _make_scene(n: int, seed: int, sh_degree: int | None = None, viewmats=None):
    """Random float64 Gaussians in ``[-0.8,0.8]^3`` plus hard cases: near/behind the first camera,
    beyond ``far``, transparent (o < 1/255), and large ones outside the clamped field of view."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=F64) * 2 - 1) * 0.8
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = torch.exp(torch.empty(n, 3, dtype=F64).uniform_(-3.5, -1.8, generator=g))
    opacities = torch.empty(n, dtype=F64).uniform_(0.05, 0.99, generator=g)
    opacities[:10] = torch.empty(10, dtype=F64).uniform_(0.5 / 255, 0.95 / 255, generator=g)
    opacities[n // 2:] = torch.empty(n - n // 2, dtype=F64).uniform_(0.9, 0.99, generator=g)  # for early stops
    opacities[-n // 10:] = 0.99999  # alpha clamped to 0.999 near the centre
    if viewmats is not None:
        c2w = torch.linalg.inv(viewmats[0])
        R, eye = c2w[:3, :3], c2w[:3, 3]

        def cam_point(x, y, z):
            return R @ torch.tensor([x, y, z], dtype=F64) + eye

        extra = [cam_point(0.0, 0.0, 0.2), cam_point(0.05, 0.0, -0.5),  # inside near (0.3) / behind
                 cam_point(0.0, 0.1, 4.5), cam_point(-0.2, 0.0, 5.0),  # beyond far (4.0)
                 cam_point(2.2, 0.1, 2.5), cam_point(-0.2, -1.7, 2.5)]  # outside 1.3x fov, large
        means[10:16] = torch.stack(extra)
        scales[10:14] = 0.3
        scales[14:16] = torch.tensor([0.5, 0.25, 0.35], dtype=F64)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=F64)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=F64) * 0.3
        colors[:, 0] = torch.randn(n, 3, generator=g, dtype=F64) * 0.8
    return means, quats, scales, opacities, colors


def _make_identity_camera(width: int, height: int, f: float = 40.0, dtype=F64):
    """One camera at the origin looking down +z, principal point at the image centre."""
    vm = torch.eye(4, dtype=dtype)[None]
    K = intrinsics_from_focal(f, f, width, height).to(dtype)[None]
    return vm, K


def _make_gaussians(n: int = 40, seed: int = 0, sh_degree: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.6
    colors = torch.rand(n, 3, generator=g)
    return Gaussians.from_colors(means, colors, 0.08, 0.7, quats=torch.randn(n, 4, generator=g), sh_degree=sh_degree)


def _make_render_cameras(n: int = 2, width: int = 37, height: int = 29, times=None) -> Cameras:
    vm = orbit_poses([0.0, 20.0, -10.0, 5.0][:n], [0.0, 60.0, 120.0, -30.0][:n], 2.5)
    K = intrinsics_from_fov(50.0, width, height).expand(n, 3, 3).clone()
    t = torch.zeros(n) if times is None else torch.as_tensor(times, dtype=torch.float32)
    return Cameras(vm, K, width, height, t)


def _max_diffs(out, ref):
    (colors, alphas), (r_rgb, r_alpha, r_depth) = out, ref
    return ((colors[..., :-1] - r_rgb).abs().max().item(), (alphas - r_alpha).abs().max().item(),
            (colors[..., -1:] - r_depth).abs().max().item())


# -- 1. forward against the reference ---------------------------------------------------------


@pytest.mark.parametrize("size", [(37, 29), (64, 48)])
@pytest.mark.parametrize("sh_degree", [0, 2])
def test_forward_matches_dense_reference(size, sh_degree):
    """rgb / alpha / expected depth of random scenes agree with the reference to 1e-5 (float64)."""
    width, height = size
    vm, Ks = _make_cameras(width, height)
    means, quats, scales, opac, colors = _make_scene(300, seed=sh_degree * 7 + width, sh_degree=sh_degree,
                                                     viewmats=vm)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.1, 0.3]], dtype=F64)
    kw = dict(near_plane=0.3, far_plane=4.0, sh_degree=sh_degree, backgrounds=bg)
    out = rasterize(means, quats, scales, opac, colors, vm, Ks, width, height, **kw)
    assert out[0].dtype == F64 and out[0].shape == (2, height, width, 4) and out[1].shape == (2, height, width, 1)
    stats = {}
    ref = _ref_render(means, quats, scales, opac, colors, vm, Ks, width, height, 0.3, 4.0, sh_degree, bg, stats)
    d_rgb, d_alpha, d_depth = _max_diffs(out, ref)
    assert d_rgb <= FWD_TOL and d_alpha <= FWD_TOL and d_depth <= FWD_TOL, (d_rgb, d_alpha, d_depth)
    # The scene really exercises the culling rules and the clamped Jacobian.
    proj = project(means, quats, scales, opac, vm, Ks, width, height, 0.3, 4.0)
    for ci in range(2):
        idx, radii = _ref_visible(means, quats, scales, opac, vm[ci], Ks[ci], width, height, 0.3, 4.0)
        assert torch.equal(torch.nonzero(proj.visible[ci], as_tuple=True)[0], idx)
        assert torch.equal(proj.radii[ci][idx].long(), radii) and not proj.radii[ci][~proj.visible[ci]].any()
    assert not proj.visible[0, :14].any()  # transparent, inside near / behind, beyond far
    assert proj.visible[0, 14:16].all()  # large ones outside 1.3x fov still reach the image
    assert (ref[1] > 0.5).float().mean() > 0.3 and (ref[1] < 0.01).any()
    assert stats["terminated"] > 0  # some pixels reach early termination


def test_forward_float32_close_to_reference():
    """The float32 path (what render() uses) stays within float32 noise of the float64 reference."""
    width, height = 37, 29
    vm, Ks = _make_cameras(width, height)
    params = _make_scene(200, seed=3, viewmats=vm)
    kw = dict(near_plane=0.3, far_plane=4.0)
    out = rasterize(*(p.float() for p in params), vm.float(), Ks.float(), width, height, **kw)
    assert out[0].dtype == torch.float32
    ref = _ref_render(*params, vm, Ks, width, height, 0.3, 4.0)
    assert max(_max_diffs((out[0].double(), out[1].double()), ref)) <= 1e-4


# -- 2. gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("sh_degree", [None, 2])
def test_gradients_match_reference(sh_degree):
    """Autograd gradients of a random linear functional of (rgb, alpha, depth) agree to 1e-6 relative."""
    width, height = 37, 29
    vm, Ks = _make_cameras(width, height)
    params = [p.clone().requires_grad_() for p in _make_scene(120, seed=11, sh_degree=sh_degree, viewmats=vm)]
    g = torch.Generator().manual_seed(5)
    w_rgb, w_alpha, w_depth = (torch.randn(2, height, width, c, generator=g, dtype=F64) for c in (3, 1, 1))
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=F64)

    colors, alphas = rasterize(*params, vm, Ks, width, height, near_plane=0.3, far_plane=4.0, sh_degree=sh_degree,
                               backgrounds=bg)
    loss = (colors[..., :3] * w_rgb).sum() + (alphas * w_alpha).sum() + (colors[..., 3:] * w_depth).sum()
    grads = torch.autograd.grad(loss, params)

    r_rgb, r_alpha, r_depth = _ref_render(*params, vm, Ks, width, height, 0.3, 4.0, sh_degree, bg.expand(2, 3))
    r_loss = (r_rgb * w_rgb).sum() + (r_alpha * w_alpha).sum() + (r_depth * w_depth).sum()
    r_grads = torch.autograd.grad(r_loss, params)

    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), grads, r_grads):
        assert b.norm() > 0, name
        rel = ((a - b).norm() / b.norm()).item()
        assert rel <= GRAD_TOL, (name, rel)


def test_chunked_compositing_is_exact(monkeypatch):
    """Tile-aligned chunking of the intersection list changes neither values nor gradients."""
    module = importlib.import_module("gen4d.core.engine.rasterize")
    width, height = 37, 29
    vm, Ks = _make_cameras(width, height)
    params = [p.clone().requires_grad_() for p in _make_scene(150, seed=4, viewmats=vm)]
    w = torch.rand(2, height, width, 4, dtype=F64)
    results = []
    for rows in (module.CHUNK_ROWS, 1, 37, 300):
        monkeypatch.setattr(module, "CHUNK_ROWS", rows)
        colors, alphas = rasterize(*params, vm, Ks, width, height, near_plane=0.3, far_plane=4.0)
        grads = torch.autograd.grad((colors * w).sum() + alphas.sum(), params)
        results.append((colors.detach(), alphas.detach(), grads))
    ref = _ref_render(*(p.detach() for p in params), vm, Ks, width, height, 0.3, 4.0)
    assert max(_max_diffs(results[0][:2], ref)) <= FWD_TOL
    for colors, alphas, grads in results[1:]:
        assert (colors - results[0][0]).abs().max() <= 1e-12 and (alphas - results[0][1]).abs().max() <= 1e-12
        for g, g0 in zip(grads, results[0][2]):
            assert (g - g0).norm() <= 1e-12 * g0.norm()


# -- 3. edge cases -----------------------------------------------------------------------------


def _make_single(mean, scale=0.05, opacity=0.8, color=(1.0, 0.5, 0.25), dtype=F64):
    """One isotropic Gaussian (means, quats, scales, opacities, colours)."""
    return (torch.tensor([mean], dtype=dtype), torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
            torch.full((1, 3), scale, dtype=dtype), torch.tensor([opacity], dtype=dtype),
            torch.tensor([color], dtype=dtype))


def _cat(*parts):
    return tuple(torch.cat(ts) for ts in zip(*parts))


def test_gaussian_behind_near_plane_contributes_nothing():
    vm, K = _make_identity_camera(37, 29)
    base = _make_single([0.0, 0.0, 2.0], scale=0.1, opacity=0.6)
    for z in (0.05, -1.0):  # inside near_plane=0.1, and behind the camera
        blocker = _make_single([0.0, 0.0, z], scale=0.05, opacity=0.99, color=(0.0, 1.0, 0.0))
        both = _cat(base, blocker)
        out = rasterize(*both, vm, K, 37, 29, near_plane=0.1)
        alone = rasterize(*base, vm, K, 37, 29, near_plane=0.1)
        assert torch.equal(out[0], alone[0]) and torch.equal(out[1], alone[1])
        assert not project(*both[:4], vm, K, 37, 29, near_plane=0.1).visible[0, 1]
    # The same Gaussian just past the near plane covers the image: the test could fail.
    near_ok = _cat(base, _make_single([0.0, 0.0, 0.15], scale=0.05, opacity=0.99, color=(0.0, 1.0, 0.0)))
    assert (rasterize(*near_ok, vm, K, 37, 29, near_plane=0.1)[0] - alone[0]).abs().max() > 0.5


def test_tile_straddling_gaussian_matches_reference_for_any_tile_size():
    """A splat centred on the corner of four 16x16 tiles renders like the dense reference."""
    width, height, f = 37, 29, 40.0
    vm, K = _make_identity_camera(width, height, f)
    z = 2.0
    x, y = (16.0 - width / 2) * z / f, (16.0 - height / 2) * z / f  # projects to pixel (16, 16)
    params = _make_single([x, y, z], scale=0.15, opacity=0.9)
    ref = _ref_render(*params, vm, K, width, height)
    for ts in (16, 8, 5):
        out = rasterize(*params, vm, K, width, height, tile_size=ts)
        assert max(_max_diffs(out, ref)) <= FWD_TOL, ts
    alpha = ref[1][0, ..., 0]
    assert alpha[:16, :16].max() > 0.1 and alpha[16:, 16:].max() > 0.1
    assert alpha[:16, 16:].max() > 0.1 and alpha[16:, :16].max() > 0.1


def test_early_termination_matches_reference():
    """Stacked opaque splats: the 4th takes T from 1.25e-4 to 6e-6 and is dropped, with all after it."""
    width, height = 37, 29
    vm, K = _make_identity_camera(width, height)
    parts = []
    for k in range(8):  # projects exactly onto pixel (18, 14)'s centre; alpha there = o = 0.95
        color = (1.0, 0.0, 0.0) if k < 3 else (0.0, 0.0, 1.0)
        parts.append(_make_single([0.0, 0.0, 1.0 + 0.1 * k], scale=0.02 * (1.0 + 0.1 * k), opacity=0.95, color=color))
    params = _cat(*parts)
    out = rasterize(*params, vm, K, width, height)
    stats = {}
    ref = _ref_render(*params, vm, K, width, height, stats=stats)
    assert max(_max_diffs(out, ref)) <= FWD_TOL and stats["terminated"] > 0
    rgb, alpha = out[0][0, 14, 18], out[1][0, 14, 18, 0]
    assert abs(alpha.item() - (1 - 0.05**3)) < 1e-12  # three Gaussians, T stays 1.25e-4
    assert rgb[2].abs().item() < 1e-12  # the blue ones never contribute here
    expected_depth = sum(0.95 * 0.05**k * (1.0 + 0.1 * k) for k in range(3)) / (1 - 0.05**3)
    assert abs(rgb[3].item() - expected_depth) < 1e-9


def test_alpha_is_clamped_to_0999():
    vm, K = _make_identity_camera(37, 29)
    params = _make_single([0.0, 0.0, 2.0], scale=0.1, opacity=0.99999)  # centre on pixel (18, 14)
    _, alphas = rasterize(*params, vm, K, 37, 29)
    assert abs(alphas[0, 14, 18, 0].item() - 0.999) < 1e-12


def test_low_opacity_is_culled():
    vm, K = _make_identity_camera(37, 29)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    for opacity, visible in ((0.9 / 255, False), (1.2 / 255, True)):
        params = _make_single([0.0, 0.0, 2.0], scale=0.1, opacity=opacity)
        assert bool(project(*params[:4], vm, K, 37, 29).visible[0, 0]) is visible
        colors, alphas = rasterize(*params, vm, K, 37, 29, backgrounds=bg)
        assert (alphas.max().item() > 0) is visible


def test_empty_visible_set_gives_background():
    vm, Ks = _make_cameras(37, 29)
    means, quats, scales, opac, colors = _make_scene(20, seed=1)
    means = means - 10.0 * torch.linalg.inv(vm[0])[:3, 2]  # all far behind camera 0
    bg = torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.8, 0.7]], dtype=F64)
    colors_out, alphas = rasterize(means, quats, scales, opac, colors, vm[:1], Ks[:1], 37, 29, backgrounds=bg[:1])
    assert torch.equal(colors_out[0, ..., :3], bg[0].expand(29, 37, 3))
    assert torch.equal(alphas, torch.zeros(1, 29, 37, 1, dtype=F64))
    assert torch.equal(colors_out[..., 3], torch.zeros(1, 29, 37, dtype=F64))


def test_camera_batch_shapes_and_per_camera_equality():
    """[C,H,W,D(+1)] for C cameras and D feature channels; camera i of a batch equals camera i alone."""
    width, height = 37, 29
    vm, Ks = _make_cameras(width, height, n=3)
    means, quats, scales, opac, _ = _make_scene(60, seed=2)
    feats = torch.rand(60, 5, dtype=F64)
    colors, alphas = rasterize(means, quats, scales, opac, feats, vm, Ks, width, height, render_depth=False)
    assert colors.shape == (3, height, width, 5) and alphas.shape == (3, height, width, 1)
    colors, alphas = rasterize(means, quats, scales, opac, feats, vm, Ks, width, height)
    assert colors.shape == (3, height, width, 6)
    for i in range(3):
        single = rasterize(means, quats, scales, opac, feats, vm[i:i + 1], Ks[i:i + 1], width, height)
        assert torch.allclose(single[0][0], colors[i], atol=1e-12)
        assert torch.allclose(single[1][0], alphas[i], atol=1e-12)
    assert (colors[0] - colors[1]).abs().max() > 0.1


# -- 4. backends/render.py ---------------------------------------------------------------------


def test_render_shapes_and_backgrounds():
    gs, cams = _make_gaussians(sh_degree=1), _make_render_cameras(2)
    out = render(gs, cams, backend="torch")
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (2, 29, 37, 3) and out.alpha.shape == (2, 29, 37, 1) and out.depth.shape == (2, 29, 37, 1)
    empty = out.alpha[..., 0] == 0
    assert empty.any() and (out.alpha > 0.5).any()
    assert torch.all(out.depth[..., 0][empty] == 0) and torch.all(out.rgb[empty] == 0)

    out3 = render(gs, cams, background=torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out3.rgb[empty], torch.tensor([0.1, 0.2, 0.3]).expand(int(empty.sum()), 3))
    bgs = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]])
    outc = render(gs, cams, background=bgs)
    for c in range(2):
        assert torch.allclose(outc.rgb[c][empty[c]], bgs[c].expand(int(empty[c].sum()), 3))
    # Compositing: rgb = splat colour + (1 - alpha) * background.
    assert torch.allclose(outc.rgb, out.rgb + (1 - out.alpha) * bgs[:, None, None, :], atol=1e-5)
    # sh_degree below the set's degree is allowed and changes the colours.
    assert render(gs, cams, sh_degree=0).rgb.shape == (2, 29, 37, 3)


def test_render_errors():
    gs, cams = _make_gaussians(), _make_render_cameras(2)
    with pytest.raises(ValueError, match="empty"):
        render(Gaussians.empty(), cams)
    bad = Gaussians(gs.means.clone(), gs.quats, gs.log_scales, gs.logit_opacities, gs.sh)
    bad.means[3, 1] = float("nan")
    with pytest.raises(ValueError, match="means holds 1 NaN"):
        render(bad, cams)
    with pytest.raises(ValueError, match=r"background must be \[3\] or \[2,3\]"):
        render(gs, cams, background=torch.zeros(4))
    with pytest.raises(ValueError, match=r"background must be \[3\] or \[2,3\]"):
        render(gs, cams, background=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="'gsplat' needs the Gaussians on a CUDA device"):
        render(gs, cams, backend="gsplat")
    with pytest.raises(ValueError, match="backend must be one of"):
        render(gs, cams, backend="vulkan")
    with pytest.raises(ValueError, match=r"sh_degree must be in 0\.\.0, got 1"):
        render(gs, cams, sh_degree=1)


def _make_moving_scene():
    """One Gaussian at z=2 moving from x=-0.1 to x=+0.2 (pixel 20.5 -> 26.5 at f=40), plus a static one (y=23.5)."""
    moving = Gaussians.from_colors(torch.tensor([[-0.1, 0.0, 2.0]]), torch.tensor([[1.0, 0.2, 0.2]]), 0.05, 0.9)
    static = Gaussians.from_colors(torch.tensor([[0.0, 0.35, 2.0]]), torch.tensor([[0.2, 0.2, 1.0]]), 0.03, 0.9)
    motion = KeyframeMotion(torch.tensor([[[-0.1, 0.0, 2.0]], [[0.05, 0.0, 2.0]], [[0.2, 0.0, 2.0]]]))
    return Scene4D([ScenePart("moving", moving, motion), ScenePart("static", static)], 3, 12.0)


def _alpha_centroid_x(alpha: torch.Tensor, rows: slice) -> float:
    a = alpha[rows, :, 0].double()
    x = torch.arange(a.shape[1], dtype=F64) + 0.5
    return float((a * x).sum() / a.sum())


def test_render_scene_moves_with_time():
    """The moving Gaussian's alpha centroid shifts by f * dx / z = 6 px between t=0 and t=1."""
    scene = _make_moving_scene()
    vm, K = _make_identity_camera(45, 33, dtype=torch.float32)
    cams = Cameras(vm.expand(2, 4, 4).clone(), K.expand(2, 3, 3).clone(), 45, 33, torch.tensor([0.0, 1.0]))
    out = render_scene(scene, cams)
    rows = slice(12, 21)  # rows 12..20, symmetric about y=16.5; the static splat (y=23.5) starts below
    x0, x1 = _alpha_centroid_x(out.alpha[0], rows), _alpha_centroid_x(out.alpha[1], rows)
    assert abs(x0 - 20.5) < 0.5 and abs(x1 - 26.5) < 0.5
    assert abs((x1 - x0) - 6.0) < 0.5


def test_render_scene_keeps_camera_order_for_shared_times():
    scene = _make_moving_scene()
    vm, K = _make_identity_camera(45, 33, dtype=torch.float32)
    vms = vm.expand(4, 4, 4).clone()
    vms[:, 0, 3] = torch.tensor([0.0, 0.05, 0.1, 0.15])  # every camera shifted differently
    times = torch.tensor([1.0, 0.0, 1.0, 0.5])
    cams = Cameras(vms, K.expand(4, 3, 3).clone(), 45, 33, times)
    bgs = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1], [0.1, 0.1, 0.1]])
    out = render_scene(scene, cams, background=bgs)
    for i in range(4):
        single = render(scene.at(float(times[i])), cams[i], background=bgs[i])
        assert torch.allclose(out.rgb[i], single.rgb[0], atol=1e-6), i
        assert torch.allclose(out.alpha[i], single.alpha[0], atol=1e-6), i
        assert torch.allclose(out.depth[i], single.depth[0], atol=1e-5), i
        assert torch.equal(out.rgb[i, 0, 0], bgs[i])
    assert (out.alpha[0] - out.alpha[2]).abs().max() > 0.1  # same time, different cameras


# -- 5. end-to-end differentiability -----------------------------------------------------------


def test_colour_fitting_converges():
    """Adam on the colours of 50 Gaussians recovers a target render: loss drops >= 100x."""
    width, height = 40, 30
    vm, K = _make_identity_camera(width, height, f=45.0, dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    n = 50
    means = torch.stack([(torch.rand(n, generator=g) - 0.5) * 1.6, (torch.rand(n, generator=g) - 0.5) * 1.2,
                         2.0 + torch.rand(n, generator=g)], dim=-1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(-3.0, -2.0, generator=g))
    opac = torch.empty(n).uniform_(0.4, 0.9, generator=g)
    target_colors = torch.rand(n, 3, generator=g)
    with torch.no_grad():
        target, _ = rasterize(means, quats, scales, opac, target_colors, vm, K, width, height, render_depth=False)
    colors = torch.full((n, 3), 0.5, requires_grad=True)
    optim = torch.optim.Adam([colors], lr=0.05)
    losses = []
    for _ in range(100):
        optim.zero_grad()
        img, _ = rasterize(means, quats, scales, opac, colors, vm, K, width, height, render_depth=False)
        loss = ((img - target) ** 2).mean()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[0] > 1e-3
    assert losses[-1] <= losses[0] / 100, (losses[0], losses[-1])
