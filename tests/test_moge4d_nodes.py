# SPDX-License-Identifier: Apache-2.0
"""Gen4D_TrajectoryModelLoader and Gen4D_TrajectoryDiT through the node API, with the tiny model."""

from __future__ import annotations

import pytest
import torch
from gen4d.backends.depth import METRIC_DEPTH, RELATIVE_DISPARITY, DepthEstimator
from gen4d.backends.tiny import build_tiny
from gen4d.core.moge4d.strag import backproject
from gen4d.core.moge4d.tracks import Tracks
from node_runner import NODES, run

pytestmark = pytest.mark.usefixtures("one_thread")


class RampDepth(DepthEstimator):
    """A depth model whose z-depth rises left to right (metric), or its disparity (relative)."""

    def __init__(self, kind=METRIC_DEPTH):
        self.kind = kind
        self.seen = []
        self.offloaded = 0

    def predict(self, images, *, input_size=None, batch_size=4, callback=None, should_stop=None):
        self.seen.append(tuple(images.shape))
        b, h, w, _ = images.shape
        z = torch.linspace(1.0, 3.0, w).expand(b, h, w).clone()
        return z if self.kind == METRIC_DEPTH else 1.0 / z

    def offload(self):
        self.offloaded += 1
        return self


@pytest.fixture(scope="module")
def handle(tmp_path_factory):
    folder = build_tiny("trajectory", tmp_path_factory.mktemp("traj_nodes"), seed=1)
    return run("Gen4D_TrajectoryModelLoader", model=str(folder), device="cpu", dtype="fp32")[0]


def _dit(handle, depth_model, **kw):
    args = dict(trajectory_model=handle, image=torch.rand(1, 40, 60, 3), depth_model=depth_model,
                prompt="a dog runs", num_frames=5, width=48, height=32, steps=2)
    args.update(kw)
    return run("Gen4D_TrajectoryDiT", **args)


def test_node_contract():
    for node_id in ("Gen4D_TrajectoryModelLoader", "Gen4D_TrajectoryDiT"):
        cls = NODES[node_id]
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (_kind, opts) in section.items():
                assert opts.get("tooltip"), (node_id, name)
        assert cls.DESCRIPTION and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    req = NODES["Gen4D_TrajectoryDiT"].INPUT_TYPES()["required"]
    assert [req[k][1]["default"] for k in ("num_frames", "width", "height", "steps", "guidance_scale", "shift")] \
        == [49, 512, 368, 50, 6.0, 3.0]


def test_trajectory_dit_node_end_to_end(handle, fake_comfy):
    depth_model = RampDepth()
    tracks, preview, depth = _dit(handle, depth_model, fov=70.0)
    assert isinstance(tracks, Tracks) and tracks.points.shape == (5, 32, 48, 3)
    assert preview.shape == (5, 32, 48, 3) and 0 <= float(preview.min()) and float(preview.max()) <= 1
    assert depth.shape == (1, 32, 48, 3)
    assert depth_model.seen == [(1, 32, 48, 3)] and depth_model.offloaded == 1  # working image, offloaded
    assert tracks.valid.all() and torch.isfinite(tracks.points).all()
    z = torch.linspace(1.0, 3.0, 48).expand(32, 48)
    assert torch.allclose(tracks.points[0], backproject(z, tracks.K), atol=1e-6)
    assert abs(float(tracks.K[0, 0]) - 24 / torch.tan(torch.deg2rad(torch.tensor(35.0)))) < 1e-3
    assert [u[0] for u in fake_comfy.updates] == [1, 2] and fake_comfy.totals[-1] == 2
    # a relative (disparity) model gives the same z-depth through 1 / disparity
    rel_tracks = _dit(handle, RampDepth(RELATIVE_DISPARITY), fov=70.0)[0]
    assert torch.allclose(rel_tracks.points[0], tracks.points[0], atol=1e-5)


def test_trajectory_dit_node_interrupt(handle, fake_comfy):
    fake_comfy.interrupt_after = 1
    with pytest.raises(fake_comfy.Interrupted):
        _dit(handle, RampDepth(), steps=4)
    assert len(fake_comfy.updates) == 1


def test_trajectory_dit_node_bad_inputs(handle):
    cls = NODES["Gen4D_TrajectoryDiT"]
    assert "nearest valid: 45 or 49" in cls.VALIDATE_INPUTS(num_frames=48)
    assert "multiple of 16" in cls.VALIDATE_INPUTS(width=500, height=368)
    assert cls.VALIDATE_INPUTS(num_frames=49, width=512, height=368) is True
    with pytest.raises(ValueError, match="Gen4D_TrajectoryDiT: num_frames 8 .*5 or 9"):
        _dit(handle, RampDepth(), num_frames=8)
    with pytest.raises(ValueError, match="at least 16x16 pixels"):
        _dit(handle, RampDepth(), image=torch.rand(1, 10, 60, 3))
    with pytest.raises(TypeError, match="GEN4D_TRAJECTORY_MODEL"):
        _dit(handle, RampDepth(), trajectory_model="nope")
    with pytest.raises(TypeError, match="GEN4D_DEPTH_MODEL"):
        _dit(handle, object())

    class Negative(RampDepth):
        def predict(self, images, **kw):
            return -super().predict(images, **kw)

    with pytest.raises(ValueError, match="Gen4D_TrajectoryDiT: .*no positive finite value"):
        _dit(handle, Negative())
    loader = NODES["Gen4D_TrajectoryModelLoader"]
    assert "is not a folder" in loader.VALIDATE_INPUTS(model=str(handle.model.path / "config.json"))
    with pytest.raises(ValueError, match="device must be one of"):
        run("Gen4D_TrajectoryModelLoader", model=str(handle.model.path), device="tpu", dtype="fp32")
