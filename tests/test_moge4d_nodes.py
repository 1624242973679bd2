# SPDX-License-Identifier: Apache-2.0
"""Gen4D_TrajectoryModelLoader and Gen4D_TrajectoryDiT through the node API, with the tiny model."""

from __future__ import annotations

import math

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
    args = dict(trajectory_model=handle, image=torch.rand(1, 40, 60, 3), prompt="a dog runs", num_frames=5,
                width=48, height=32, steps=2)
    if depth_model is not None:
        args["depth_model"] = depth_model
    args.update(kw)
    return run("Gen4D_TrajectoryDiT", **args)


def _fov_K(h, w, fov_degrees):
    """Square-pixel pinhole, principal point at the image centre, written out here."""
    f = (w / 2) / math.tan(math.radians(fov_degrees) / 2)
    return torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _lifted(z, K):
    """``K^-1 (u, v, 1) z`` at pixel centres ``(j + 0.5, i + 0.5)``, independently of ``backproject``."""
    h, w = z.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], -1)
    return (pixels @ torch.linalg.inv(K).T) * z.double()[..., None]


def _as_image(values):
    """``[H,W]`` values -> a 3-channel IMAGE ``[1,H,W,3]``, as a depth node returns them."""
    return values.float()[None, ..., None].expand(1, *values.shape, 3).contiguous()


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


def test_relative_depth_is_refused_naming_the_input(handle):
    relative = RampDepth(RELATIVE_DISPARITY)
    with pytest.raises(ValueError, match=r"Gen4D_TrajectoryDiT\.depth_model: got a relative_disparity depth"
                                         r".*metric.*align_scale_shift"):
        _dit(handle, relative)
    assert relative.seen == []  # refused before the depth model ran
    disparity = _as_image(1.0 / torch.linspace(1.0, 3.0, 60).expand(40, 60))
    with pytest.raises(ValueError, match=r"Gen4D_TrajectoryDiT\.depth: got a relative_disparity depth"):
        _dit(handle, None, depth=disparity, depth_kind="relative_disparity")
    picture = _as_image(torch.linspace(0.0, 1.0, 60).expand(40, 60))  # a min-max normalised depth preview
    with pytest.raises(ValueError, match=r"Gen4D_TrajectoryDiT\.depth: .*spans exactly 0\.\.1"):
        _dit(handle, None, depth=picture)
    coloured = torch.rand(1, 40, 60, 3) + 1.0
    with pytest.raises(ValueError, match=r"Gen4D_TrajectoryDiT\.depth: the channels .* differ"):
        _dit(handle, None, depth=coloured)
    with pytest.raises(ValueError, match=r"Gen4D_TrajectoryDiT\.depth: the depth IMAGE is 40x40 and the image 60x40"):
        _dit(handle, None, depth=_as_image(torch.ones(40, 40)))
    with pytest.raises(ValueError, match="Gen4D_TrajectoryDiT: no depth"):
        _dit(handle, None)
    with pytest.raises(ValueError, match="both depth_model and depth"):
        _dit(handle, RampDepth(), depth=_as_image(torch.ones(40, 60)))
    cls = NODES["Gen4D_TrajectoryDiT"]
    assert "align_near" in cls.VALIDATE_INPUTS(relative_depth="align_scale_shift", align_near=5.0, align_far=2.0)


def test_metric_depth_image_from_another_node_is_lifted_exactly(handle):
    fov, (h, w) = 70.0, (32, 48)
    K = _fov_K(h, w, fov)
    # at the working size: the values themselves, no resampling
    z = torch.rand(h, w, generator=torch.Generator().manual_seed(3)) * 4 + 0.5
    tracks = _dit(handle, None, image=torch.rand(1, h, w, 3), depth=_as_image(z), fov=fov, steps=1,
                  guidance_scale=1.0)[0]
    assert torch.allclose(tracks.K.double(), K, atol=1e-5)
    assert torch.allclose(tracks.points[0].double(), _lifted(z, K), rtol=1e-5, atol=1e-5)
    # at the input image's size (40x60, same view): z = 1 + 0.02 col + 0.03 row is bilinear, so the
    # resize to 32x48 keeps it exact: working pixel (i, j) sits at source (1.25 i + 0.125, 1.25 j + 0.125)
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(60.0), indexing="ij")
    big = 1.0 + 0.02 * cols + 0.03 * rows
    tracks = _dit(handle, None, image=torch.rand(1, 40, 60, 3), depth=_as_image(big), fov=fov, steps=1,
                  guidance_scale=1.0)[0]
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    want = 1.0 + 0.02 * (1.25 * j + 0.125) + 0.03 * (1.25 * i + 0.125)
    assert torch.allclose(tracks.points[0].double(), _lifted(want, K), rtol=1e-5, atol=1e-5)


def test_relative_depth_alignment_recovers_a_known_scale_and_shift(handle):
    fov, (h, w) = 70.0, (32, 48)
    z = torch.rand(h, w, generator=torch.Generator().manual_seed(4)) * 2 + 1
    z[0, 0], z[-1, -1] = 1.0, 3.0  # the nearest and farthest surface the user states
    disparity = 0.37 / z + 0.05  # what a relative model gives: unknown scale 0.37 and shift 0.05
    args = dict(image=torch.rand(1, h, w, 3), depth=_as_image(disparity), depth_kind="relative_disparity",
                relative_depth="align_scale_shift", align_near=1.0, align_far=3.0, fov=fov, steps=1,
                guidance_scale=1.0)
    tracks = _dit(handle, None, **args)[0]
    assert torch.allclose(tracks.points[0].double(), _lifted(z, _fov_K(h, w, fov)), rtol=1e-5, atol=1e-5)
    # the same through a relative depth model
    class Disparity(RampDepth):
        def predict(self, images, **kw):
            return disparity[None].clone()

    args.pop("depth"), args.pop("depth_kind")
    tracks = _dit(handle, Disparity(RELATIVE_DISPARITY), **args)[0]
    assert torch.allclose(tracks.points[0].double(), _lifted(z, _fov_K(h, w, fov)), rtol=1e-5, atol=1e-5)


def test_motion_denormalisation_switch(handle):
    h, w = 32, 48
    z = torch.rand(h, w, generator=torch.Generator().manual_seed(5)) * 3 + 1
    args = dict(image=torch.rand(1, h, w, 3), depth=_as_image(z), steps=1, guidance_scale=1.0, seed=3)
    default = _dit(handle, None, **args)[0]
    paper = _dit(handle, None, motion_denormalisation="paper", **args)[0]
    official = _dit(handle, None, motion_denormalisation="official", **args)[0]
    assert torch.equal(default.points, paper.points)  # the paper's is the default
    p0 = paper.points[0]
    assert torch.equal(official.points[0], p0)
    # eq. 1's alpha of the released model (720x960 reference at 32x48): a_x = (720/960) / (32/48), a_y = 1
    alpha = torch.tensor([(720 / 960) / (h / w), 1.0, 1.0])
    decoded = official.points[1:] - p0  # official: the decoder output added as it is
    assert decoded.abs().max() > 1e-4
    want = decoded * z[..., None] / alpha  # paper: eq. 1 reversed on the same decoder output
    assert torch.allclose(paper.points[1:] - p0, want, rtol=1e-4, atol=1e-5)


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
