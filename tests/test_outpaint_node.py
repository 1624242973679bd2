# SPDX-License-Identifier: Apache-2.0
"""Gen4D_ProgressiveOutpaint: widgets, validation, a small oracle run, progress, interrupt, bad inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import gen4d
import pytest
import torch
from gen4d.core.coco4d.outpaint import OutpaintConfig
from gen4d.core.engine.cameras import Cameras, clip_cameras
from gen4d.core.engine.scene import Scene4D
from gen4d.synthetic import render as raycast
from gen4d.synthetic import scene_world
from gen4d.synthetic.oracles import OracleDepth, OracleImageInpainter, OracleVideoInpainter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import defaults, run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NODE = "Gen4D_ProgressiveOutpaint"
SIZE, FRAMES = 24, 3


def test_registered_with_the_papers_defaults():
    assert NODE in gen4d.NODE_CLASS_MAPPINGS
    cls = gen4d.NODE_CLASS_MAPPINGS[NODE]
    assert cls.RETURN_TYPES == ("GEN4D_SCENE", "IMAGE", "STRING")
    d, c = defaults(NODE), OutpaintConfig()
    assert d["pose_sets"] == "0,30; 0,-30; 15,0; -15,0 | 15,30; 15,-30; -15,30; -15,-30"
    assert (d["loops"], d["fov"], d["lift_size"]) == (2, 60.0, 256)
    assert (d["paste_noise_ratio"], d["video_inpaint_strength"]) == (0.5, 0.7)
    assert d["static_iterations_per_pose"] == d["deformation_iterations_per_pose"] == 300 == c.static_iterations
    optional = cls.INPUT_TYPES()["optional"]
    assert optional["guidance"][0] == "GEN4D_GUIDANCE_MODEL" and optional["cameras"][0] == "GEN4D_CAMERAS"


def test_validate_inputs_checks_the_pose_text():
    cls = gen4d.NODE_CLASS_MAPPINGS[NODE]
    assert cls.VALIDATE_INPUTS(pose_sets="0,30; 0,-30 | 15,30", loops=2) is True
    assert cls.VALIDATE_INPUTS() is True  # linked / not yet known
    bad = cls.VALIDATE_INPUTS(pose_sets="0,30; x,1", loops=1)
    assert isinstance(bad, str) and NODE in bad and "must be numbers" in bad
    short = cls.VALIDATE_INPUTS(pose_sets="0,30", loops=2)
    assert isinstance(short, str) and "1 loop" in short


def _inputs():
    world = scene_world(0)
    cams = world.reference_cameras(SIZE, SIZE, FRAMES)
    truth = raycast(world, cams, supersample=1)
    return dict(background=truth["rgb"], hole_mask=(truth["foreground"] > 0).float(),
                depth_model=OracleDepth(world, supersample=1), inpaint_model=OracleImageInpainter(world, supersample=1),
                video_inpaint_model=OracleVideoInpainter(world, supersample=1), cameras=cams, loops=1,
                pose_sets="0,30", static_iterations=4, deformation_iterations=3, static_iterations_per_pose=3,
                deformation_iterations_per_pose=2, lift_size=16, prompt="a courtyard")


def test_runs_on_oracles_with_progress_and_previews(fake_comfy):
    inputs = _inputs()
    scene, videos, report = run(NODE, **inputs)
    assert isinstance(scene, Scene4D) and scene.parts[0].name == "background" and scene.num_frames == FRAMES
    recorded = scene.parts[0].reference_cameras  # the cameras the background was reconstructed from
    assert torch.equal(recorded.viewmats, inputs["cameras"].viewmats) and torch.equal(recorded.Ks, inputs["cameras"].Ks)
    assert scene.parts[0].gaussians.device.type == "cpu" and scene.parts[0].motion.kind == "hexplane"
    assert videos.shape == (FRAMES, SIZE, SIZE, 3) and videos.dtype == torch.float32
    assert 0.0 <= float(videos.min()) and float(videos.max()) <= 1.0
    assert "loop 1 pose 1 (el 0, az 30)" in report and "Gaussians" in report
    total = 4 + 3 + 3 + 2
    assert fake_comfy.totals == [total] and fake_comfy.updates[-1][:2] == (total, total)
    assert any(u[2] is not None for u in fake_comfy.updates)  # previews reach the node


def test_pose_videos_fall_back_to_the_filled_reference_when_nothing_was_outpainted(fake_comfy):
    inputs = {**_inputs(), "loops": 0}
    scene, videos, report = run(NODE, **inputs)
    assert videos.shape == (FRAMES, SIZE, SIZE, 3) and "pose" not in report
    holes = inputs["hole_mask"] > 0.5
    assert torch.equal(videos[~holes], inputs["background"][~holes])  # known pixels pass through


def test_the_scene_records_the_field_of_view_it_used():
    """The fov widget changed and no cameras connected: the recorded reference cameras carry it, so Compose
    (which used to fall back to 60°) reads the view the background was actually made with."""
    node = gen4d.NODE_CLASS_MAPPINGS[NODE]
    # The frames show the world from the camera the node builds at 45°, so the oracles (which check that the
    # pixels they keep are what the declared view sees) answer at that view.
    world = scene_world(0)
    truth = raycast(world, clip_cameras(None, FRAMES, SIZE, SIZE, 45.0, "test"), supersample=1)
    inputs = {**_inputs(), "background": truth["rgb"], "hole_mask": (truth["foreground"] > 0).float(), "loops": 0,
              "cameras": None, "fov": 45.0}
    out = node().outpaint(**{**defaults(NODE), **inputs})
    recorded = out["result"][0].reference_cameras
    assert len(recorded) == FRAMES and torch.allclose(recorded.fovy_deg, torch.full((FRAMES,), 45.0))
    assert out["ui"]["text"] == []
    # connected cameras of another field of view win over the widget, and the node says so
    out = node().outpaint(**{**defaults(NODE), **_inputs(), "loops": 0, "fov": 45.0})
    assert "fov 45° is not used" in " ".join(out["ui"]["text"])


def test_interrupt_stops_the_run(fake_comfy):
    fake_comfy.interrupt_after = 3
    with pytest.raises(fake_comfy.Interrupted):
        run(NODE, **_inputs())


def test_bad_inputs_name_the_node():
    inputs = _inputs()
    with pytest.raises(ValueError, match=f"{NODE}: hole_mask: 2 masks for 3 images in background"):
        run(NODE, **{**inputs, "hole_mask": inputs["hole_mask"][:2]})
    with pytest.raises(ValueError, match=f"{NODE}: .*must be numbers"):
        run(NODE, **{**inputs, "pose_sets": "0,a"})
    with pytest.raises(TypeError, match="GEN4D_CAMERAS"):
        run(NODE, **{**inputs, "cameras": "front"})
    with pytest.raises(ValueError, match="cover all of frame 0"):
        run(NODE, **{**inputs, "hole_mask": torch.ones(FRAMES, SIZE, SIZE)})
    assert isinstance(inputs["cameras"], Cameras)
