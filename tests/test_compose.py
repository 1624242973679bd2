# SPDX-License-Identifier: Apache-2.0
"""Gen4D_Compose / core.coco4d.compose (CoCo4D §3.3) against the scene world's ground truth.

The foreground and background scenes are exact Gaussian twins of the scene world split by group.
The foreground is moved into the object-centred frame the deformation fit works in (seen view at
radius 2.5, fovy 49.1), with the screen trajectory that puts it back; the "depth model" answers the
world's true depth at the declared viewpoint times an unknown scale, so eq. 9 has to find it.
"""

import logging
import math

import pytest
import torch
from gen4d import synthetic as S
from gen4d.backends.depth import METRIC_DEPTH, DepthEstimator
from gen4d.backends.render import render, render_scene
from gen4d.core.coco4d import compose as C
from gen4d.core.coco4d.reference import seen_view_cameras
from gen4d.core.coco4d.screen_trajectory import (
    ScreenTrajectory,
    center_object,
    composite_layers,
    place_layer,
    screen_placement,
)
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, look_at, orbit_poses, view_difference
from gen4d.core.engine.gaussians import Gaussians, quat_multiply, quat_to_rotmat, rotmat_to_quat
from gen4d.core.engine.scene import KeyframeMotion, PlacedMotion, Scene4D, ScenePart, StaticMotion, motion_class
from gen4d.core.engine.viewpoint import current_viewpoint
from gen4d.nodes import NODE_CLASS_MAPPINGS as NODES
from node_runner import defaults, run

pytestmark = pytest.mark.usefixtures("one_thread")

W, H, T = 112, 84, 5
FOVY = 36.0  # the reference video's camera (identity pose), narrow so the walker spans ~20 px
DEPTH_SCALE = 3.7  # the depth model's unknown unit
BG_HEX = "#b3cdf2"  # ~ the world's sky colour (0.70, 0.80, 0.95)


class ScaledWorldDepth(DepthEstimator):
    """A metric depth model in unknown units: the world's z-depth at the declared viewpoint x scale."""

    kind = METRIC_DEPTH

    def __init__(self, world, scale, corrupt=0.0):
        self.world, self.scale, self.corrupt, self.calls = world, scale, corrupt, []

    def predict(self, images, *, input_size=None, batch_size=4, callback=None, should_stop=None):
        view = current_viewpoint()
        assert view is not None and view.content == "scene"
        self.calls.append(view)
        depth = S.render(self.world, view.cameras)["depth"][: images.shape[0]] * self.scale
        if self.corrupt:
            gen = torch.Generator().manual_seed(1)
            bad = torch.rand(depth.shape, generator=gen) < self.corrupt
            depth = torch.where(bad, torch.tensor(float("nan")), depth)
            depth[..., :2, :] = float("inf")
        return depth


def _cameras(vm, fovy, times):
    n = vm.shape[0]
    return Cameras(vm, intrinsics_from_fov(fovy, W, H).expand(n, 3, 3).clone(), W, H, times, 0.01, 1000.0)


@pytest.fixture(scope="module")
def case():
    torch.set_num_threads(1)
    world = S.scene_world(0)
    times = torch.linspace(0.0, 1.0, T)
    ref = _cameras(torch.eye(4).expand(T, 4, 4).clone(), FOVY, times)
    eye, target = torch.tensor([[0.6, -0.35, 0.5]]), torch.tensor([[0.0, 0.3, 3.6]])
    novel = _cameras(look_at(eye, target).expand(3, 4, 4).clone(), 50.0, torch.tensor([0.0, 0.5, 1.0]))
    sm = S.surface_motion(world, times.tolist(), 16000, seed=0, cameras=Cameras.cat([ref, novel]))
    is_fg = torch.isin(sm.part_ids, torch.tensor(world.groups["foreground"]))
    g = sm.gaussians
    background = Scene4D([ScenePart("bg", g.subset(~is_fg), KeyframeMotion(sm.means[:, ~is_fg], sm.quats[:, ~is_fg]))],
                         T, 8.0)
    truth = S.render(world, ref, supersample=3)
    masks = truth["foreground"]

    foreground, rho, sigma = _object_centred(sm, is_fg, ref, masks, C.seen_view(T, W, H))
    depth_model = ScaledWorldDepth(world, DEPTH_SCALE)
    scene, ref_render, report = run("Gen4D_Compose", foreground=foreground, background=background,
                                    reference_images=truth["rgb"], foreground_mask=masks, depth_model=depth_model,
                                    cameras=ref[0], background_color=BG_HEX)
    return dict(world=world, ref=ref, novel=novel, truth=truth, masks=masks, foreground=foreground,
                background=background, scene=scene, ref_render=ref_render, report=report, rho=rho, sigma=sigma,
                depth_model=depth_model, twin=Scene4D([ScenePart("w", g, KeyframeMotion(sm.means, sm.quats))], T, 8.0),
                surface=sm, is_fg=is_fg)


def _object_centred(sm, is_fg, ref, masks, seen, record=False):
    """The foreground as the object-centred fit makes it at the seen view ``seen``: the inverse of the
    placement, pivot = the figure's mean point; ``record`` stores ``seen`` in the part as the fit does."""
    g = sm.gaussians
    X = sm.means[:, is_fg].double()  # world = reference camera coordinates (identity pose)
    pivot = X.mean(1)
    rho = pivot.norm(dim=-1)
    u = pivot / rho[:, None]
    K = ref.Ks[0].double()
    f_r = float(K[1, 1])
    Vs = seen.viewmats[0].double()
    f_s, R = float(seen.Ks[0, 1, 1]), float(Vs[2, 3])
    pix = torch.stack([K[0, 0] * u[:, 0] / u[:, 2] + K[0, 2], K[1, 1] * u[:, 1] / u[:, 2] + K[1, 2]], -1)
    shift = pix - torch.tensor([W / 2.0, H / 2.0], dtype=torch.float64)
    m0 = masks[0] > 0.5
    extent = max(int(m0.any(0).sum()), int(m0.any(1).sum()))
    s0 = extent / (0.8 * min(W, H))  # Gen4D_DeformationFit's centring zoom (object fills 80%)
    sigma = s0 * f_s * float(rho[0]) * float(u[0, 2]) ** 1.5 / (R * f_r)
    scale = sigma * R * f_r / (f_s * rho * u[:, 2] ** 1.5)
    Q = C.ray_rotations(u)
    Xs = torch.einsum("tji,tnj->tni", Q, X - (rho[:, None] * u)[:, None]) / sigma + torch.tensor([0.0, 0.0, R],
                                                                                                  dtype=torch.float64)
    Xo = torch.einsum("ji,tnj->tni", Vs[:3, :3], Xs - Vs[:3, 3])
    q_rel = rotmat_to_quat(Vs[:3, :3].T[None] @ Q.transpose(1, 2)).float()
    qo = quat_multiply(q_rel[:, None].expand(-1, int(is_fg.sum()), 4), sm.quats[:, is_fg])
    gf = g.subset(is_fg)
    canonical = Gaussians(Xo[0].float(), qo[0], gf.log_scales - math.log(sigma), gf.logit_opacities, gf.sh)
    part = ScenePart("foreground", canonical, KeyframeMotion(Xo.float(), qo),
                     {"shift": shift.float(), "scale": scale.float()}, seen if record else None)
    return Scene4D([part], T, 8.0), rho, sigma


def _psnr(a, b, mask=None):
    err = (a.clamp(0, 1) - b) ** 2
    mse = err.mean((1, 2, 3)) if mask is None else torch.stack([e[m].mean() for e, m in zip(err, mask)])
    return (-10.0 * torch.log10(mse)).tolist()


def _iou(a, b):
    return (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1)


def run_ui(node_id, **inputs):
    """A node's raw return value (outputs and UI notes), widget defaults filled in."""
    cls = NODES[node_id]
    return getattr(cls(), cls.FUNCTION)(**{**defaults(node_id), **inputs})


def _visible(scene, cams):
    fg, bg = scene.part("foreground"), Scene4D([scene.part("background")], scene.num_frames, scene.fps)
    return C.visible_masks(fg, bg, cams, cams.times, render, "cpu") > 0.5


def test_node_outputs_and_report(case):
    scene = case["scene"]
    assert [p.name for p in scene.parts] == ["foreground", "background"]
    assert isinstance(scene.part("foreground").motion, PlacedMotion)
    assert scene.part("foreground").trajectory is None and scene.num_frames == T
    assert case["ref_render"].shape == (T, H, W, 3)
    assert "eq. 9" in case["report"] and "η" in case["report"]
    view = case["depth_model"].calls[0]
    assert len(view.cameras) == 1 and float(view.cameras.times[0]) == 0.0


def test_placement_recovers_the_true_depth_and_size(case):
    comp = C.compose(case["foreground"], case["background"], case["ref"], case["truth"]["depth"][0] * DEPTH_SCALE,
                     case["masks"], render)
    rep = comp.report
    assert abs(rep.range_factor * DEPTH_SCALE - 1.0) < 0.02  # eq. 9 finds the unknown unit
    assert abs(rep.pivot_distance / float(case["rho"][0]) - 1.0) < 0.03  # eq. 8 + depth extent
    dist = torch.tensor(rep.distances)
    assert (dist / case["rho"].float() - 1.0).abs().max() < 0.03
    assert abs(rep.object_scale / case["sigma"] - 1.0) < 0.05
    assert 0.9 < rep.width_scale < 1.1
    assert case["report"] == rep.text()


def test_foreground_lands_where_it_should(case):
    vis = _visible(case["scene"], case["ref"])
    truth = case["masks"] > 0.5
    iou = ((vis & truth).flatten(1).sum(1) / (vis | truth).flatten(1).sum(1))
    assert iou.min() >= 0.8, iou.tolist()


def test_composite_matches_the_world_at_the_reference_view(case):
    psnr = _psnr(case["ref_render"], case["truth"]["rgb"])
    assert min(psnr) > 21.0, psnr
    fg = _psnr(case["ref_render"], case["truth"]["rgb"], case["masks"] > 0.5)
    assert min(fg) > 19.5, fg


def _novel_pose_quality(case, scene):
    novel = case["novel"]
    if "novel_truth" not in case:
        case["novel_truth"] = S.render(case["world"], novel, supersample=3)
    truth = case["novel_truth"]
    out = render_scene(scene, novel, torch.tensor(case["world"].background)).rgb
    gt = truth["foreground"] > 0.5
    vis = _visible(scene, novel)
    iou = ((vis & gt).flatten(1).sum(1) / (vis | gt).flatten(1).sum(1)).tolist()
    return _psnr(out, truth["rgb"]), _psnr(out, truth["rgb"], gt), iou


def test_composite_matches_the_world_at_a_novel_pose(case):
    psnr, fg, iou = _novel_pose_quality(case, case["scene"])
    assert min(psnr) > 21.0, psnr
    assert min(fg) > 18.5, fg
    assert min(iou) >= 0.7, iou


def test_novel_pose_checks_catch_a_depth_error(case):
    # The same placement 15% too far (scaled about the camera centre): identical at the reference
    # view up to occlusion, wrong from the translated novel camera.
    fg = case["scene"].part("foreground")
    m = fg.motion
    far = PlacedMotion(m.inner, m.scales * 1.15, m.quats, m.translations * 1.15)
    bad = Scene4D([ScenePart("foreground", fg.gaussians, far), case["scene"].part("background")], T, 8.0)
    _, fg_psnr, iou = _novel_pose_quality(case, bad)
    assert min(fg_psnr) < 18.5 and max(iou) < 0.7, (fg_psnr, iou)


def test_save_load_round_trip_renders_identically(case, tmp_path):
    path = case["scene"].save(tmp_path / "composite.safetensors")
    loaded = Scene4D.load(path)
    assert isinstance(loaded.part("foreground").motion, PlacedMotion)
    a = render_scene(case["scene"], case["novel"]).rgb
    b = render_scene(loaded, case["novel"]).rgb
    assert torch.equal(a, b)


def test_nonfinite_depth_is_masked_with_a_warning(case, caplog):
    depth = case["truth"]["depth"][0] * DEPTH_SCALE
    depth[::7, ::5] = float("nan")
    depth[0, :] = float("inf")
    with caplog.at_level(logging.WARNING):
        comp = C.compose(case["foreground"], case["background"], case["ref"], depth, case["masks"], render,
                         C.ComposeConfig(measure_width=False))
    assert comp.report.nonfinite_pixels == int((~torch.isfinite(depth)).sum())
    assert "non-finite" in caplog.text
    assert abs(comp.report.range_factor * DEPTH_SCALE - 1.0) < 0.02


def test_node_masks_nonfinite_model_output(case, caplog):
    model = ScaledWorldDepth(case["world"], DEPTH_SCALE, corrupt=0.05)
    with caplog.at_level(logging.WARNING):
        _, _, report = run("Gen4D_Compose", foreground=case["foreground"], background=case["background"],
                           reference_images=case["truth"]["rgb"][:1], foreground_mask=case["masks"],
                           depth_model=model, cameras=case["ref"], measure_width=False)
    assert "NaN/inf" in caplog.text and "non-finite depth pixels masked out" in report
    assert "0 non-finite" not in report


@pytest.mark.parametrize("what, match", [
    ("empty0", "frame 0 is empty"),
    ("full", "covers"),
    ("masks", "foreground masks for a"),
    ("frames", "frames but the background has"),
    ("nan", "valid depth"),
    ("inverted", "run against"),
])
def test_bad_inputs_are_refused_clearly(case, what, match):
    fg, bg, masks = case["foreground"], case["background"], case["masks"].clone()
    depth = case["truth"]["depth"][0] * DEPTH_SCALE
    if what == "empty0":
        masks[0] = 0
    elif what == "full":
        masks[0] = 1
    elif what == "masks":
        masks = masks[:-1]
    elif what == "frames":
        p = bg.parts[0]
        bg = Scene4D([ScenePart("bg", p.gaussians, KeyframeMotion(p.motion.means[:-1], p.motion.quats[:-1]))],
                     T - 1, 8.0)
    elif what == "nan":
        depth = torch.full_like(depth, float("nan"))
    elif what == "inverted":
        depth = 1.0 / depth  # a disparity handed over as depth
    with pytest.raises(ValueError, match=match):
        C.compose(fg, bg, case["ref"], depth, masks, render)


def test_node_refuses_mismatched_frame_counts(case):
    with pytest.raises(ValueError, match="frame counts differ"):
        run("Gen4D_Compose", foreground=case["foreground"], background=case["background"],
            reference_images=case["truth"]["rgb"], foreground_mask=case["masks"][:3],
            depth_model=case["depth_model"])
    with pytest.raises(ValueError, match="cameras hold"):
        run("Gen4D_Compose", foreground=case["foreground"], background=case["background"],
            reference_images=case["truth"]["rgb"], foreground_mask=case["masks"],
            depth_model=case["depth_model"], cameras=case["novel"])


def test_node_names_connected_cameras_that_miss_the_background(case):
    """A connected reference view turned away from the background: the refusal points at ``cameras``."""
    away = _cameras(look_at(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, -3.0]])), FOVY,
                    torch.tensor([0.0]))
    with pytest.raises(ValueError, match="connected cameras input"):
        run("Gen4D_Compose", foreground=case["foreground"], background=case["background"],
            reference_images=case["truth"]["rgb"], foreground_mask=case["masks"],
            depth_model=case["depth_model"], cameras=away)


def test_render_node_says_where_it_cannot_place_a_trajectory(case):
    cams = case["ref"][0]  # the reference camera, not the foreground's seen view
    out = run_ui("Gen4D_Render", scene=case["foreground"], cameras=cams)
    notes = " ".join(out["ui"]["text"])
    assert "screen trajectory" in notes and "object-centred" in notes and "Compose" in notes
    assert "records no seen view" in notes, "the default seen view was assumed for a scene without a record"
    out = run_ui("Gen4D_Render", scene=case["scene"], cameras=cams)
    assert out["ui"]["text"] == [], "a composite has no trajectory left to place"


def test_compose_reads_the_cameras_the_scenes_record(case):
    """The fit and the outpaint used other views than the Compose widgets' defaults (a seen view at distance
    3.2 with fovy 40, reference cameras with fovy 36 instead of 60): with the views recorded in the scenes,
    Compose places the object where the reference video has it, with no camera connected and the widgets
    left at their defaults. Before the scenes carried their cameras this composed at the wrong views."""
    seen = seen_view_cameras(T, W, H, radius=3.2, fovy_deg=40.0)
    foreground, rho, _ = _object_centred(case["surface"], case["is_fg"], case["ref"], case["masks"], seen,
                                         record=True)
    p = case["background"].parts[0]
    background = Scene4D([ScenePart("bg", p.gaussians, p.motion, reference_cameras=case["ref"])], T, 8.0)
    out = run_ui("Gen4D_Compose", foreground=foreground, background=background,
                 reference_images=case["truth"]["rgb"], foreground_mask=case["masks"], depth_model=case["depth_model"],
                 background_color=BG_HEX)
    scene = out["result"][0]
    assert out["ui"]["text"] == [], out["ui"]["text"]
    iou = _iou(_visible(scene, case["ref"]), case["masks"] > 0.5)
    assert iou.min() >= 0.8, iou.tolist()
    # the composite records the reference cameras, so Render needs none connected
    assert torch.equal(scene.part("foreground").reference_cameras.Ks, case["ref"].Ks)
    # an override is used as connected, and said so
    wide = Cameras(case["ref"].viewmats, intrinsics_from_fov(60.0, W, H).expand(T, 3, 3).clone(), W, H,
                   case["ref"].times, 0.01, 1000.0)
    out = run_ui("Gen4D_Compose", foreground=foreground, background=background,
                 reference_images=case["truth"]["rgb"], foreground_mask=case["masks"], depth_model=case["depth_model"],
                 cameras=wide, seen_radius=2.0, measure_width=False)
    notes = " ".join(out["ui"]["text"])
    assert "differ from the reference cameras the background scene records" in notes
    assert "seen_radius 2 / seen_fovy 49.1° are not used" in notes


# -- the pieces ------------------------------------------------------------------------------


def test_range_alignment_is_exact_for_affine_depth():
    gen = torch.Generator().manual_seed(0)
    bg = 1.0 + 5.0 * torch.rand(30, 40, generator=gen)
    ref = (bg - 0.4) / 2.5
    valid = torch.ones(30, 40, dtype=torch.bool)
    factor, offset = C.depth_range_alignment(ref, bg, valid)
    assert factor == pytest.approx(2.5, rel=1e-6) and offset == pytest.approx(0.4, abs=1e-5)
    mask = torch.zeros(30, 40, dtype=torch.bool)
    mask[10:20, 10:20] = True
    assert C.surface_depth(ref, mask, factor, offset) == pytest.approx(float(bg[11:19, 11:19].median()), rel=1e-5)


def test_eq10_rescales_scale_and_shift_intervals():
    shift = torch.tensor([[2.0, 1.0], [4.0, 1.0], [7.0, -1.0]])
    scale = torch.tensor([0.5, 0.6, 0.7])
    s2, c2 = C.rescale_trajectory(shift, scale, 2.0, rescale_motion=True)
    assert torch.allclose(c2, scale * 2.0)
    assert torch.allclose(s2[1:] - s2[:-1], 2.0 * (shift[1:] - shift[:-1])) and torch.equal(s2[0], shift[0])
    s3, _ = C.rescale_trajectory(shift, scale, 2.0, rescale_motion=False)
    assert torch.equal(s3, shift)
    assert torch.equal(C.bbox_widths(torch.tensor([[[0, 1, 1, 0]], [[0, 0, 0, 0]]]).float()), torch.tensor([2.0, 0.0]))


def test_ray_rotations_are_rotations_onto_the_rays():
    u = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [0.3, -0.2, 1.0], [-0.5, 0.4, 0.8]]), dim=-1)
    Q = C.ray_rotations(u)
    assert torch.allclose(Q[:, :, 2], u, atol=1e-6)
    assert torch.allclose(Q @ Q.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(Q), torch.ones(3), atol=1e-6)
    assert torch.allclose(Q[0], torch.eye(3))


def test_placed_motion_is_a_similarity_and_round_trips(tmp_path):
    gen = torch.Generator().manual_seed(3)
    g = Gaussians.from_colors(torch.randn(20, 3, generator=gen), torch.rand(20, 3, generator=gen), 0.05, 0.7)
    q = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    motion = PlacedMotion(StaticMotion(), torch.tensor([1.0, 2.0, 0.5]), q, torch.randn(3, 3, generator=gen))
    assert motion_class("placed") is PlacedMotion
    for i, t in enumerate([0.0, 0.5, 1.0]):
        want = g.transform(quat_to_rotmat(q[i]), motion.translations[i], float(motion.scales[i]))
        got = motion.apply(g, t)
        assert torch.allclose(got.means, want.means, atol=1e-5)
        assert torch.allclose(got.log_scales, want.log_scales, atol=1e-6)
        assert torch.allclose(quat_to_rotmat(got.quats), quat_to_rotmat(want.quats), atol=1e-5)
    mid = motion.apply(g, 0.25)
    assert math.isclose(float(motion.placement(0.25)[0]), math.sqrt(2.0), rel_tol=1e-5)
    scene = Scene4D([ScenePart("a", g, motion)], 3, 8.0)
    loaded = Scene4D.load(scene.save(tmp_path / "placed.safetensors"))
    assert torch.equal(loaded.at(0.25).means, mid.means)
    with pytest.raises(ValueError, match="quats must be"):
        PlacedMotion(StaticMotion(), torch.ones(2), q, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="positive"):
        PlacedMotion(StaticMotion(), torch.tensor([1.0, -1.0, 1.0]), q, torch.zeros(3, 3))


def test_width_scale_corrects_a_mis_sized_foreground(case):
    # The object comes out of the fit 20% too small on screen (trajectory scale 0.8x): the joint render's
    # bounding boxes measure η ~ 1.25 and the rescaled placement lands on the masks again.
    p = case["foreground"].parts[0]
    traj = {"shift": p.trajectory["shift"], "scale": p.trajectory["scale"] * 0.8}
    small = Scene4D([ScenePart("foreground", p.gaussians, p.motion, traj)], T, 8.0)
    depth = case["truth"]["depth"][0] * DEPTH_SCALE
    kept = C.compose(small, case["background"], case["ref"], depth, case["masks"], render)
    assert 1.15 < kept.report.width_scale < 1.35
    assert abs(kept.report.object_scale / case["sigma"] - 1.0) < 0.1
    vis, truth = _visible(kept.scene, case["ref"]), case["masks"] > 0.5
    iou = ((vis & truth).flatten(1).sum(1) / (vis | truth).flatten(1).sum(1))
    assert iou.min() >= 0.75, iou.tolist()


def test_placement_puts_the_pivot_on_the_trajectory_and_sizes_it():
    cams = _cameras(torch.eye(4).expand(3, 4, 4).clone(), 50.0, torch.tensor([0.0, 0.5, 1.0]))
    seen = C.seen_view(3, W, H)
    f_s = float(seen.Ks[0, 1, 1])
    shift = torch.tensor([[0.0, 0.0], [20.0, -8.0], [-30.0, 12.0]])
    scale = torch.tensor([0.4, 0.5, 0.45])
    scales, rots, trans, dist = C.placement(shift, scale, cams, seen.viewmats, f_s, surface_z=3.0, thickness=0.3)
    K = cams.Ks[0]
    pix = torch.stack([K[0, 0] * trans[:, 0] / trans[:, 2] + K[0, 2],
                       K[1, 1] * trans[:, 1] / trans[:, 2] + K[1, 2]], -1)
    assert torch.allclose(pix, shift + torch.tensor([W / 2.0, H / 2.0]), atol=1e-3)  # p_t = c + Δ_t
    assert torch.allclose(trans.norm(dim=-1), dist, atol=1e-5)
    u = trans / dist[:, None]
    f_r = float(K[1, 1])
    sigma = scale * f_s * dist * u[:, 2] ** 1.5 / (2.5 * f_r)
    assert torch.allclose(scales, sigma, rtol=1e-5) and torch.allclose(scales, scales[:1].expand(3))
    assert float(dist[0]) == pytest.approx(3.0 + float(scales[0]) * 0.3, rel=1e-5)  # eq. 8 + depth extent
    # The seen view's optical axis (object +z, towards the object from its camera) turns onto the ray.
    assert torch.allclose(rots[:, :, 2], u, atol=1e-5)
    shifted, _ = C.rescale_trajectory(shift, scale, 1.25, rescale_motion=True)
    trans2 = C.placement(shifted, scale * 1.25, cams, seen.viewmats, f_s, 3.0, 0.3)[2]
    pix2 = torch.stack([K[0, 0] * trans2[:, 0] / trans2[:, 2], K[1, 1] * trans2[:, 1] / trans2[:, 2]], -1)
    assert torch.allclose(pix2 - pix2[:1], 1.25 * (shift - shift[:1]), atol=1e-3)  # eq. 10 steps


def test_screen_placement_pieces():
    # place_layer undoes center_object (what Render does with a centred render at the seen view)
    masks = torch.zeros(2, 40, 48)
    masks[0, 5:15, 6:20] = 1.0
    masks[1, 22:34, 25:41] = 1.0
    frames = masks[..., None] * torch.tensor([0.9, 0.3, 0.1])
    centred, centred_masks, traj = center_object(frames, masks, fill=(0.0, 0.0, 0.0))
    depth = torch.full((2, 40, 48, 1), 2.5)
    rgb, alpha, d = place_layer(centred, centred_masks[..., None], depth, traj.shift, traj.scale)
    back = alpha[..., 0] > 0.5
    iou = (back & (masks > 0.5)).flatten(1).sum(1) / (back | (masks > 0.5)).flatten(1).sum(1)
    assert iou.min() > 0.9, iou.tolist()
    assert torch.allclose(d[alpha > 0.5], torch.tensor(2.5)) and float(d[alpha == 0].abs().max()) == 0.0

    # the trajectory between frames: shifts linear, scales geometric
    t = ScreenTrajectory(torch.tensor([[0.0, 0.0], [4.0, -2.0], [8.0, 2.0]]), torch.tensor([1.0, 4.0, 2.0]))
    shift, scale = t.at(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert torch.allclose(shift, torch.tensor([[0.0, 0.0], [2.0, -1.0], [4.0, -2.0], [8.0, 2.0]]))
    assert torch.allclose(scale, torch.tensor([1.0, 2.0, 4.0, 2.0]))

    # layers composite front to back by depth, whatever their order in the list
    near = (torch.full((1, 2, 2, 3), 0.5), torch.full((1, 2, 2, 1), 0.5), torch.full((1, 2, 2, 1), 1.0))
    far = (torch.tensor([0.0, 0.8, 0.0]).expand(1, 2, 2, 3), torch.ones(1, 2, 2, 1), torch.full((1, 2, 2, 1), 3.0))
    for layers in ([near, far], [far, near]):
        rgb, alpha, depth = composite_layers(layers, torch.zeros(3))
        assert torch.allclose(rgb[0, 0, 0], torch.tensor([0.5, 0.9, 0.5]))  # near over far
        assert torch.allclose(alpha, torch.ones_like(alpha)) and torch.allclose(depth, torch.full_like(depth, 2.0))

    # the sameness of views ignores the image size but not a turn or another lens
    seen = C.seen_view(3, 64, 48)
    angle, offset, focal = view_difference(seen.resized(128, 96), seen)
    assert float(angle.max()) < 1e-3 and float(offset.max()) < 1e-6 and float(focal.max()) < 1e-6
    turned = Cameras(orbit_poses([0.0] * 3, [10.0] * 3, 2.5), seen.Ks, 64, 48, seen.times)
    angle, offset, _ = view_difference(turned, seen)
    assert torch.allclose(angle, torch.full((3,), 10.0), atol=1e-3) and float(offset.min()) > 0.1
    plan = screen_placement(ScreenTrajectory(torch.zeros(3, 2), torch.ones(3)), seen,
                            Cameras.cat([seen[:1], turned[1:2]]), "fg")
    assert plan.placed.tolist() == [True, False] and "1 of 2 camera(s)" in plan.notes[0]
