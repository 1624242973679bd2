# SPDX-License-Identifier: Apache-2.0
"""CoCo4D end to end on the scene world: example_workflows/CoCo4D_synthetic.json through the headless runner, with
the SyntheticWorld's oracle models, scored against the world's ground truth.

The walking figure covers about 1.4 % of the reference view, so whole-frame figures barely see it (the true
background alone scores 33.6 dB there). The foreground is scored on its own pixels: PSNR inside the true
foreground mask and the IoU of where it shows against the true mask, at the reference view and at two poses
inside the outpainted range, frame by frame, the worst frame against the bar; whole-frame PSNR and the
background's hole fraction sit beside them. A negative control places the same foreground 15 % too deep
(scaled about the reference camera, so the reference view hardly changes) and must fail the novel-pose bars.

The depth model answers like a real metric model after the lift: the lifted reference frame gets the true
depth (it sets the scene's units, which the world is compared in), every later image a scale and shift error
of its own, so the outpaint's depth alignment and Compose's eq. 9 have an error to remove. The image
inpainter checks that what it keeps shows the world at the declared viewpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from gen4d import synthetic
from gen4d.backends.render import render, render_scene
from gen4d.core.coco4d.compose import visible_masks
from gen4d.core.coco4d.outpaint import outpaint_cameras
from gen4d.core.engine.losses import psnr
from gen4d.core.engine.scene import PlacedMotion, Scene4D, ScenePart
from gen4d.nodes import synthetic as synthetic_node
from run_workflow import run_workflow

WORKFLOW = Path(__file__).resolve().parents[1] / "example_workflows" / "CoCo4D_synthetic.json"
REF_CAM, WORLD, SPLIT, OUTPAINT, COMPOSE = "1", "2", "4", "7", "9"
# The settings the bars below were measured at: 96x72, 6 frames, reduced iterations, both outpaint loops
# over all 8 poses (the shipped file runs lighter ones: a few minutes in ComfyUI on a 2-core CPU).
OVERRIDES = {
    **{f"{REF_CAM}.{k}": v for k, v in {"num_frames": 6, "width": 96, "height": 72}.items()},
    **{f"{WORLD}.{k}": v for k, v in {"num_frames": 6, "width": 96, "height": 72, "supersample": 1,
                                      "twin_points": 2000}.items()},
    "5.iterations": 250, "5.num_points": 2000,
    "6.iterations": 120, "6.times_per_step": 4, "6.trajectory_iterations": 30,
    **{f"{OUTPAINT}.{k}": v for k, v in {"static_iterations": 60, "deformation_iterations": 60,
                                        "static_iterations_per_pose": 15, "deformation_iterations_per_pose": 15,
                                        "lift_size": 72, "loops": 2,
                                        "pose_sets": "0,30; 0,-30; 15,0; -15,0 | 15,30; 15,-30; -15,30; -15,-30",
                                        }.items()},
    "12.num_frames": 4, "12.width": 96, "12.height": 72,
}
# A metric model 8 % too far with a 0.3 m offset, each image off by up to another 5 % of scale and of its
# median depth (drawn per image); the first answer (the lift of the reference frame) is exact.
DEPTH_ERROR = {"kind": "metric_depth", "scale": 1.08, "shift": -0.3, "jitter": 0.05, "exact_first": 1}
TIMES = (0.0, 0.4, 1.0)
NOVEL_POSES = ((0.0, 20.0), (10.0, -25.0))  # (elevation, azimuth) inside loop 1/2's range
TOO_DEEP = 1.15  # the negative control's depth factor
MIN_FOREGROUND_PIXELS = 20  # views where neither the truth nor the render shows this much foreground are skipped
# Bars from measurement (one thread, CPU; the composite / the 15 %-too-deep control):
#   reference view, worst frame: whole 22.7 dB, foreground PSNR 16.0 dB (control 15.8 dB)
#   novel poses, per frame: whole 19.8-20.8 dB / 19.5-20.5 dB (whole-frame PSNR cannot tell them apart)
#   novel poses, worst frame: foreground PSNR 15.3 / 13.4 dB, foreground IoU 0.48 / 0.19
#   (without eq. 9 the depth error would place the figure 12 % too near)
PSNR_REFERENCE_MIN = 22.0
PSNR_FOREGROUND_REFERENCE_MIN = 14.5
PSNR_NOVEL_MIN = 18.5
PSNR_FOREGROUND_NOVEL_MIN = 14.3
IOU_NOVEL_MIN = 0.33
IOU_MIN = 0.8          # reference view, pooled over all frames (the bar)
IOU_FRAME_MIN = 0.75   # reference view, every single frame
HOLE_FRACTION_MAX = 0.02
SURFACE_DEPTH_ERROR_MAX = 0.04  # eq. 8's foreground depth against the truth (measured 0.6 %; eq. 9 skipped: 12 %)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("coco4d")
    models = {}

    def depth_model(*args, **kwargs):
        models["depth"] = synthetic.OracleDepth(*args, **DEPTH_ERROR, **kwargs)
        return models["depth"]

    def inpaint_model(*args, **kwargs):
        models["inpaint"] = synthetic.OracleImageInpainter(*args, **kwargs)
        return models["inpaint"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic_node, "OracleDepth", depth_model)
        mp.setattr(synthetic_node, "OracleImageInpainter", inpaint_model)
        results = run_workflow(WORKFLOW, out, overrides=OVERRIDES)
    return results, out, models


def _ref_cameras(results, times):
    cams = results[WORLD][3]
    idx = [min(range(len(cams)), key=lambda i: abs(float(cams.times[i]) - t)) for t in times]
    return cams[torch.tensor(idx)]


def _novel_cameras(results):
    radius = float(re.search(r"orbit radius ([0-9.]+)", results[OUTPAINT][2]).group(1))
    ref = _ref_cameras(results, TIMES)
    return [outpaint_cameras(ref, [pose], radius)[0] for pose in NOVEL_POSES]


def _render_fn(g, c, bgc):
    return render(g, c, background=bgc, backend="torch")


def _foreground_scores(scene: Scene4D, cams, world) -> list[tuple[float, float, float]]:
    """Per view with a foreground: (whole-frame PSNR, PSNR inside the true foreground mask, foreground IoU)."""
    truth = synthetic.render(world, cams, supersample=3)
    got = render_scene(scene, cams, background=torch.tensor(world.background), backend="torch").rgb.detach()
    got = got.clamp(0, 1)
    background = Scene4D([p for p in scene.parts if p.name != "foreground"], scene.num_frames, scene.fps)
    shown = visible_masks(scene.part("foreground"), background, cams, cams.times, _render_fn, "cpu") > 0.5
    true = truth["foreground"] > 0.5
    whole = psnr(got, truth["rgb"], reduction="none")
    inside = psnr(got, truth["rgb"], mask=true.float(), reduction="none")
    scores = []
    for i in range(len(cams)):
        if max(int(true[i].sum()), int(shown[i].sum())) < MIN_FOREGROUND_PIXELS:
            continue  # the figure has walked out of this view
        iou = float((shown[i] & true[i]).sum() / (shown[i] | true[i]).sum())
        fg_psnr = float(inside[i]) if int(true[i].sum()) >= MIN_FOREGROUND_PIXELS else 0.0
        scores.append((float(whole[i]), fg_psnr, iou))
    return scores


def _too_deep(scene: Scene4D, factor: float, centre: torch.Tensor) -> Scene4D:
    """The foreground scaled by ``factor`` about the reference camera centre: the same image from there, placed
    ``factor`` times as far."""
    fg = scene.part("foreground")
    placed = PlacedMotion(fg.motion, torch.tensor([factor]), torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
                          ((1.0 - factor) * centre.float())[None])
    parts = [ScenePart("foreground", fg.gaussians, placed)] + [p for p in scene.parts if p.name != "foreground"]
    return Scene4D(parts, scene.num_frames, scene.fps)


def _novel_scores(scene: Scene4D, results, world) -> list[tuple[float, float, float]]:
    return [s for cams in _novel_cameras(results) for s in _foreground_scores(scene, cams, world)]


def test_composite_matches_the_world_at_the_reference_view(run):
    results, _, _ = run
    world = synthetic.scene_world(0)
    scene: Scene4D = results[COMPOSE][0]
    scores = _foreground_scores(scene, _ref_cameras(results, TIMES), world)
    whole, fg = min(s[0] for s in scores), min(s[1] for s in scores)
    print(f"reference view PSNR {whole:.2f} dB, foreground PSNR per frame {[round(s[1], 2) for s in scores]}")
    assert len(scores) == len(TIMES), "the figure is in every reference frame"
    assert whole >= PSNR_REFERENCE_MIN, f"reference view PSNR {whole:.2f} dB"
    assert fg >= PSNR_FOREGROUND_REFERENCE_MIN, f"reference view foreground PSNR {fg:.2f} dB"


def test_foreground_lands_where_it_should(run):
    results, _, _ = run
    scene: Scene4D = results[COMPOSE][0]
    cams = results[WORLD][3]
    true_masks = results[SPLIT][2] > 0.5
    fg = scene.part("foreground")
    background = Scene4D([p for p in scene.parts if p.name != "foreground"], scene.num_frames, scene.fps)
    visible = visible_masks(fg, background, cams, cams.times, _render_fn, "cpu") > 0.5
    inter = (visible & true_masks).flatten(1).sum(1).float()
    union = (visible | true_masks).flatten(1).sum(1).float()
    iou = inter / union.clamp_min(1)
    pooled = float(inter.sum() / union.sum())
    print(f"foreground IoU pooled {pooled:.3f}, per frame {[round(v, 3) for v in iou.tolist()]}")
    assert pooled >= IOU_MIN and iou.min() >= IOU_FRAME_MIN, \
        f"foreground mask IoU pooled {pooled:.3f}, per frame {[round(v, 3) for v in iou.tolist()]}"


def test_foreground_at_novel_poses(run):
    """Where the figure stands in depth shows only off the reference view: its own pixels at two outpaint poses."""
    results, _, _ = run
    scores = _novel_scores(results[COMPOSE][0], results, synthetic.scene_world(0))
    print("novel poses (whole, foreground PSNR, IoU):", [tuple(round(v, 3) for v in s) for s in scores])
    assert len(scores) >= 3, f"the figure shows in too few novel views: {scores}"
    fg, iou = min(s[1] for s in scores), min(s[2] for s in scores)
    assert fg >= PSNR_FOREGROUND_NOVEL_MIN, f"worst novel-view foreground PSNR {fg:.2f} dB: {scores}"
    assert iou >= IOU_NOVEL_MIN, f"worst novel-view foreground IoU {iou:.3f}: {scores}"


def test_a_foreground_placed_too_deep_fails_the_bars(run):
    """Negative control: 15 % too deep and scaled to match, the figure looks the same from the reference view."""
    results, _, _ = run
    world = synthetic.scene_world(0)
    centre = _ref_cameras(results, TIMES).centers[0]
    wrong = _too_deep(results[COMPOSE][0], TOO_DEEP, centre)
    scores = _novel_scores(wrong, results, world)
    print("too deep, novel poses (whole, foreground PSNR, IoU):", [tuple(round(v, 3) for v in s) for s in scores])
    assert min(s[1] for s in scores) < PSNR_FOREGROUND_NOVEL_MIN, f"the misplaced figure passes: {scores}"
    assert min(s[2] for s in scores) < IOU_NOVEL_MIN, f"the misplaced figure passes: {scores}"
    assert min(s[0] for s in scores) >= PSNR_NOVEL_MIN, "whole-frame PSNR cannot see it"


def test_the_depth_models_error_was_aligned_away(run):
    """Eq. 9 maps the erring depth of the reference frame onto the (exactly lifted) background: the figure's
    surface depth (eq. 8) comes out true; without it the error would place the figure 12 % too near."""
    results, _, models = run
    errors = models["depth"].errors
    assert errors[0] == (1.0, 0.0) and all(e != (1.0, 0.0) for e in errors[1:]), errors
    report = results[COMPOSE][2]
    surface = float(re.search(r"foreground surface depth d \(eq\. 8\) = ([0-9.]+)", report).group(1))
    world = synthetic.scene_world(0)
    truth = synthetic.render(world, results[WORLD][3][0:1], supersample=1)
    true_depth = float(truth["depth"][truth["foreground"] > 0.5].median())
    scale, shift = errors[-1]  # Compose asks last
    uncorrected = scale * true_depth + shift
    print(f"eq. 8 surface depth {surface:.3f} (true {true_depth:.3f}, uncorrected {uncorrected:.3f});\n{report}")
    assert abs(uncorrected / true_depth - 1) > 2 * SURFACE_DEPTH_ERROR_MAX, "the error is too small to test"
    assert abs(surface / true_depth - 1) <= SURFACE_DEPTH_ERROR_MAX, report


def test_outpainted_poses_match_and_have_no_holes(run):
    results, _, models = run
    world = synthetic.scene_world(0)
    scene: Scene4D = results[COMPOSE][0]
    background = results[OUTPAINT][0]
    report = results[OUTPAINT][2]
    bg = torch.tensor(world.background)
    for pose, cams in zip(NOVEL_POSES, _novel_cameras(results)):
        truth = synthetic.render(world, cams, supersample=3)["rgb"]
        got = render_scene(scene, cams, background=bg, backend="torch").rgb.detach().clamp(0, 1)
        score = float(psnr(got, truth))
        assert score >= PSNR_NOVEL_MIN, f"pose {pose}: PSNR {score:.2f} dB\n{report}"
        holes = float((render_scene(background, cams, backend="torch").alpha < 0.5).float().mean())
        print(f"pose {pose}: PSNR {score:.2f} dB, hole fraction {holes:.4f}")
        assert holes <= HOLE_FRACTION_MAX, f"pose {pose}: hole fraction {holes:.4f}"
    checked = models["inpaint"].mismatch
    print(f"image inpainter calls checked {len(checked)}, kept pixels off the world (as they are, blurred) "
          f"{[tuple(round(v, 3) for v in c) for c in checked]}")
    assert len(checked) >= 9, "the reference fill and every outpaint pose asked the image inpainter"


def test_the_workflow_wrote_video_scene_and_plys(run):
    _, out, _ = run
    assert len(list(out.rglob("*.mp4"))) == 1
    assert len(list(out.rglob("*.gen4d.safetensors"))) == 1
    assert len(list(out.rglob("*.ply"))) == 6
