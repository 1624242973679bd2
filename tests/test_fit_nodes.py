# SPDX-License-Identifier: Apache-2.0
"""Gen4D_StaticGaussians and Gen4D_DeformationFit as ComfyUI runs them: chained with the synthetic world
and the renderer, inside (fake) ComfyUI with progress, previews and interrupts, under inference mode."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import gen4d
import pytest
import torch
from gen4d.backends.render import render_scene
from gen4d.core.coco4d.reference import reference_clip, seen_view_cameras
from gen4d.core.engine.cameras import orbit_poses
from gen4d.core.engine.gaussians import Gaussians, sphere_init
from gen4d.core.engine.scene import Scene4D

pytestmark = pytest.mark.usefixtures("one_thread")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import defaults, run  # noqa: E402, F401

NODES = gen4d.NODE_CLASS_MAPPINGS
SIZE, FRAMES = 32, 3




# --------------------------------------------------------------------------- helpers




def synthetic_world() -> types.SimpleNamespace:
    """The object world's 3-frame reference video (32 px) with masks, cameras, twin and oracle guidance."""
    images, masks, depth, cameras, twin, oracle, *_ = run(
        "Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE, num_frames=FRAMES, seed=0,
        twin_points=300, supersample=1, depth_mode="metric")
    return types.SimpleNamespace(images=images, masks=masks, depth=depth, cameras=cameras, twin=twin,
                                 oracle=oracle)


def static_gaussians(world, **kw) -> Gaussians:
    args = {"images": world.images, "masks": world.masks, "iterations": 8, "num_points": 400,
            "preview_every": 0, "seed": 0, **kw}
    return run("Gen4D_StaticGaussians", **args)[0]


def deformation_fit(world, gaussians, **kw) -> Scene4D:
    args = {"gaussians": gaussians, "images": world.images, "masks": world.masks, "iterations": 6,
            "times_per_step": 2, "trajectory_iterations": 5, "preview_every": 0, "seed": 0, **kw}
    return run("Gen4D_DeformationFit", **args)[0]


def assert_finite(gaussians: Gaussians) -> None:
    for name, tensor in gaussians.tensors().items():
        assert torch.isfinite(tensor).all(), name




@pytest.fixture(scope="module")
def world():
    return synthetic_world()


@pytest.fixture(scope="module")
def inference_world():
    """The same inputs made the way ComfyUI makes them: inside ``torch.inference_mode()``."""
    with torch.inference_mode():
        made = synthetic_world()
    assert made.images.is_inference() and made.masks.is_inference()
    return made


# --------------------------------------------------------------------------- the chain


def test_world_static_deformation_render_chain(world):
    gaussians = static_gaussians(world, guidance=world.oracle, iterations=10, sds_weight=1.0)
    assert isinstance(gaussians, Gaussians) and len(gaussians) > 0 and gaussians.device.type == "cpu"
    assert_finite(gaussians)
    assert world.oracle.calls == 10, "the oracle guidance was used at every step"

    scene = deformation_fit(world, gaussians)
    assert isinstance(scene, Scene4D) and scene.num_frames == FRAMES and len(scene.parts) == 1
    part = scene.parts[0]
    assert part.trajectory is not None, "masks + centring give a screen trajectory"
    assert part.trajectory["shift"].shape == (FRAMES, 2) and part.trajectory["scale"].shape == (FRAMES,)
    assert torch.isfinite(part.trajectory["shift"]).all() and (part.trajectory["scale"] > 0).all()
    assert torch.equal(part.gaussians.means, gaussians.means), "canonical set frozen by default"
    seen = seen_view_cameras(FRAMES, SIZE, SIZE)
    assert torch.equal(part.reference_cameras.viewmats, seen.viewmats), "the fit records the seen view it used"
    assert torch.equal(part.reference_cameras.Ks, seen.Ks)
    for t in (0.0, 0.5, 1.0):
        assert_finite(scene.at(t))

    images, alpha, depth = run("Gen4D_Render", cameras=world.cameras, scene=scene, background="#ffffff",
                               depth_mode="metric", backend="torch")
    assert images.shape == (FRAMES, SIZE, SIZE, 3) and images.dtype == torch.float32
    assert alpha.shape == (FRAMES, SIZE, SIZE) and depth.shape == (FRAMES, SIZE, SIZE, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0 and 0.0 <= alpha.min() and alpha.max() <= 1.0
    assert torch.isfinite(depth).all() and depth.min() >= 0.0
    assert alpha.amax(dim=(1, 2)).min() > 0.5, "the fitted object is visible in every frame"


# --------------------------------------------------------------------------- inside ComfyUI


def test_static_gaussians_stops_on_interrupt(fake_comfy, world):
    fake_comfy.interrupt_after = 3
    with pytest.raises(fake_comfy.Interrupted):
        static_gaussians(world, iterations=500)
    assert fake_comfy.totals == [500]
    assert 3 <= len(fake_comfy.updates) <= 4, f"stopped after {len(fake_comfy.updates)} of 500 steps"


def test_deformation_fit_stops_on_interrupt(fake_comfy, world):
    gaussians = sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))
    fake_comfy.interrupt_after = 3
    with pytest.raises(fake_comfy.Interrupted):
        deformation_fit(world, gaussians, iterations=500, trajectory_iterations=50)
    assert fake_comfy.totals == [550]
    assert 3 <= len(fake_comfy.updates) <= 4, f"stopped after {len(fake_comfy.updates)} of 550 steps"


def test_nodes_optimise_under_inference_mode(fake_comfy, inference_world):
    """ComfyUI runs nodes under torch.inference_mode(): the fits must still train."""
    w = inference_world
    with torch.inference_mode():
        gaussians = static_gaussians(w, num_points=300, iterations=8)
        start = sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))
        scene = deformation_fit(w, gaussians, iterations=6)
        # Downstream nodes (Render, SaveScene) also run in inference mode.
        moved = (scene.at(0.5).means - scene.at(0.0).means).abs().max()
        assert_finite(scene.at(1.0))
    assert len(gaussians) == 300 and not torch.equal(gaussians.means, start.means), "static fit moved the set"
    assert not torch.equal(gaussians.sh, start.sh), "static fit changed the colours"
    assert moved > 0, "the deformation field left the identity it starts at"


def test_progress_and_previews_reach_the_progress_bar(fake_comfy, world):
    static_gaussians(world, iterations=6, preview_every=2)
    assert fake_comfy.totals == [6]
    assert [(v, t) for v, t, _ in fake_comfy.updates] == [(i, 6) for i in range(1, 7)]
    previews = [p for _, _, p in fake_comfy.updates if p is not None]
    assert len(previews) == 3, "steps 2, 4, 6"
    kind, image, size = previews[0]
    assert kind == "JPEG" and image.size == (SIZE, SIZE) and size == 512

    fake_comfy.updates.clear()
    gaussians = sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))
    deformation_fit(world, gaussians, iterations=4, trajectory_iterations=5, preview_every=2)
    assert fake_comfy.totals[-1] == 9
    values = [v for v, _, _ in fake_comfy.updates]
    assert values[:4] == [1, 2, 3, 4] and values[-1] == 9, values
    assert sum(p is not None for _, _, p in fake_comfy.updates) >= 1


# --------------------------------------------------------------------------- where the user looks for it


def raw(node_id, **inputs):
    """A node's raw return value: its outputs and the notes shown on the node."""
    cls = NODES[node_id]
    return getattr(cls(), cls.FUNCTION)(**{**defaults(node_id), **inputs})


def _quality(rgb, alpha, frames, masks):
    """Per-frame PSNR and pooled / per-frame IoU of ``alpha > 0.5`` against ``masks``."""
    psnr = -10.0 * torch.log10(((rgb.clamp(0, 1) - frames) ** 2).flatten(1).mean(1))
    vis, truth = alpha > 0.5, masks > 0.5
    inter, union = (vis & truth).flatten(1).sum(1).float(), (vis | truth).flatten(1).sum(1).float()
    return psnr, float(inter.sum() / union.sum()), inter / union


@pytest.fixture(scope="module")
def placed_fit(world):
    gaussians = static_gaussians(world, iterations=30)
    return deformation_fit(world, gaussians, iterations=6, trajectory_iterations=5)


def test_render_places_a_coco4d_foreground_where_its_video_has_it(placed_fit, world):
    """The object-centred foreground rendered alone at the view it was fitted from comes out where the reference
    video has it (its screen trajectory applied), as well as the fit reproduces its own centred frames.

    The bar is the fit's own quality, measured on the same scene: the centred render against the centred
    frames it was fitted to. Left object-centred (what Render did before), the same render scores far
    below it against the video."""
    clip = reference_clip(world.images, world.masks)
    centred = render_scene(placed_fit, clip.views.cameras, torch.ones(3))
    own_psnr, own_iou, own_frames = _quality(centred.rgb, centred.alpha[..., 0], clip.views.images, clip.views.masks)
    _, unplaced_iou, _ = _quality(centred.rgb, centred.alpha[..., 0], world.images, world.masks)
    assert own_iou > 0.4, f"the fit does not see its object (IoU {own_iou:.3f} on its own frames)"

    out = raw("Gen4D_Render", scene=placed_fit, background="#ffffff", depth_mode="metric", backend="torch")
    images, alpha, depth = out["result"]
    psnr, iou, frames = _quality(images, alpha, world.images, world.masks)
    print(f"placed: PSNR {[round(v, 2) for v in psnr.tolist()]}, IoU {iou:.3f}; own frames: PSNR "
          f"{[round(v, 2) for v in own_psnr.tolist()]}, IoU {own_iou:.3f}; left centred: IoU {unplaced_iou:.3f}")
    assert iou >= own_iou - 0.05 and (frames >= own_frames - 0.1).all(), (iou, own_iou, frames, own_frames)
    assert (psnr >= own_psnr - 1.0).all(), (psnr, own_psnr)
    assert iou >= unplaced_iou + 0.1, "placing beats leaving the object centred"
    assert torch.isfinite(depth).all() and float(depth[alpha > 0.5].min()) > 0.0, "the placed layer keeps its depth"
    notes = " ".join(out["ui"]["text"])
    assert "no cameras connected" in notes, "the recorded view was used, and the node says so"

    # The same view connected explicitly gives the same pixels, without notes.
    again = raw("Gen4D_Render", scene=placed_fit, cameras=seen_view_cameras(FRAMES, SIZE, SIZE),
                background="#ffffff", depth_mode="metric", backend="torch")
    assert torch.equal(again["result"][0], images) and again["ui"]["text"] == []


def test_render_says_why_it_cannot_place_at_a_novel_camera(placed_fit):
    novel = seen_view_cameras(FRAMES, SIZE, SIZE)
    novel = type(novel)(orbit_poses([0.0] * FRAMES, [40.0] * FRAMES, 2.5), novel.Ks, SIZE, SIZE, novel.times)
    out = raw("Gen4D_Render", scene=placed_fit, cameras=novel, depth_mode="metric", backend="torch")
    notes = " ".join(out["ui"]["text"])
    assert "3 of 3 camera(s) are not that view" in notes and "turned 40" in notes and "object-centred" in notes
    plain = render_scene(placed_fit, novel, torch.ones(3))
    assert torch.allclose(out["result"][1], plain.alpha[..., 0], atol=1e-6), "left object-centred there"


def test_center_object_with_cameras_is_reported_on_the_node(world):
    out = raw("Gen4D_StaticGaussians", images=world.images, masks=world.masks, cameras=world.cameras,
              iterations=2, num_points=100, preview_every=0)
    assert "center_object is on but not applied: cameras are connected" in " ".join(out["ui"]["text"])
    start = sphere_init(100, 0.5, generator=torch.Generator().manual_seed(0))
    out = raw("Gen4D_DeformationFit", gaussians=start, images=world.images, cameras=world.cameras, iterations=2,
              trajectory_iterations=0, preview_every=0)
    assert "center_object is on but not applied" in " ".join(out["ui"]["text"])
    assert out["result"][0].parts[0].trajectory is None, "posed views are not centred"
    # asked for nothing it cannot do: no note
    out = raw("Gen4D_StaticGaussians", images=world.images, masks=world.masks, cameras=world.cameras,
              center_object=False, iterations=2, num_points=100, preview_every=0)
    assert out["ui"]["text"] == []


def _sphere() -> Gaussians:
    return sphere_init(300, 0.5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("densify", [False, True])
def test_deformation_fit_densify_reaches_the_fit(world, monkeypatch, densify):
    from gen4d.core.engine.fit_dynamic import fine_stage_densify
    from gen4d.nodes import fit as fit_nodes

    seen = {}

    class Captured(Exception):
        pass

    def capture(canonical, views, render_fn, config, *args, **kwargs):
        seen["config"] = config
        raise Captured

    monkeypatch.setattr(fit_nodes, "fit_deformation", capture)
    with pytest.raises(Captured):
        deformation_fit(world, _sphere(), iterations=400, freeze_canonical=False, densify=densify)
    assert seen["config"].densify == (fine_stage_densify(400) if densify else None)
    assert not seen["config"].freeze_canonical


def test_deformation_fit_refuses_densify_with_a_frozen_canonical_set(world):
    with pytest.raises(ValueError, match="densify.*freeze_canonical"):
        deformation_fit(world, _sphere(), freeze_canonical=True, densify=True)


def test_deformation_fit_validation_names_densify_with_a_frozen_set():
    validate = NODES["Gen4D_DeformationFit"].VALIDATE_INPUTS
    assert "freeze_canonical" in validate(background="#ffffff", densify=True, freeze_canonical=True)
    assert validate(background="#ffffff", densify=True, freeze_canonical=False) is True
    assert validate(background="#ffffff", densify=False, freeze_canonical=True) is True


def test_sphere_radius_zero_starts_where_posed_cameras_look(monkeypatch):
    """sphere_radius 0: the init sphere sits where the cameras' axes meet, sized to stay in every view."""
    from gen4d.core.engine.cameras import Cameras, gaze_sphere, intrinsics_from_fov
    from gen4d.nodes import fit as fit_nodes

    n, center = 6, (0.8, -0.4, 2.5)
    cams = Cameras(orbit_poses(torch.full((n,), 15.0), torch.linspace(0, 300, n), 2.0, center=center),
                   intrinsics_from_fov(45.0, 24, 24).expand(n, 3, 3).clone(), 24, 24, torch.linspace(0, 1, n))
    seen = {}

    class Captured(Exception):
        pass

    def capture(init, *args, **kwargs):
        seen["init"] = init
        raise Captured

    monkeypatch.setattr(fit_nodes, "fit_static", capture)
    with pytest.raises(Captured):
        run("Gen4D_StaticGaussians", images=torch.rand(n, 24, 24, 3), cameras=cams, iterations=4, num_points=2000,
            sphere_radius=0.0, center_object=False, preview_every=0, seed=0)
    means = seen["init"].means
    _, radius = gaze_sphere(cams)
    assert torch.allclose(means.mean(0), torch.tensor(center), atol=0.05 * radius)
    assert (means - torch.tensor(center)).norm(dim=-1).max() <= radius * 1.01


def test_sphere_radius_zero_says_why_one_held_camera_cannot_place_it(world):
    with pytest.raises(ValueError, match="sphere_radius 0.*do not cross"):
        static_gaussians(world, cameras=world.cameras, sphere_radius=0.0)
