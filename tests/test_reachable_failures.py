# SPDX-License-Identifier: Apache-2.0
"""Values the widgets and sockets allow end in a result or a clear error, never a stack trace from deep inside
torch or diffusers: the DDIM step limit, an init no camera sees, an IMAGE carrying autograd history."""

from __future__ import annotations

import sys
from pathlib import Path

import gen4d
import pytest
import torch
from gen4d.backends.orbital import check_steps
from gen4d.core.engine.gaussians import Gaussians

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, FRAMES = 24, 2


@pytest.fixture(scope="module")
def world():
    images, masks, _, cameras, *_ = run("Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE,
                                        num_frames=FRAMES, seed=0, twin_points=200, supersample=1)
    return images, masks, cameras


def test_ddim_steps_are_capped_where_the_schedule_ends():
    from diffusers import DDIMScheduler

    leading = DDIMScheduler(num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    with pytest.raises(ValueError, match=r"steps=1000 .* at most 999 steps"):
        check_steps(leading, 1000)
    check_steps(leading, 999)  # the most it takes: every step indexes the schedule
    z = torch.zeros(1, 1, 2, 2)
    for t in leading.timesteps:
        z = leading.step(torch.zeros_like(z), t, z).prev_sample
    trailing = DDIMScheduler(num_train_timesteps=1000, steps_offset=1, timestep_spacing="trailing")
    check_steps(trailing, 1000)  # another spacing has room for all of them
    with pytest.raises(ValueError, match="steps must be 1..1000"):
        check_steps(trailing, 1001)
    spec = gen4d.NODE_CLASS_MAPPINGS["Gen4D_OrbitalVideoDiffusion"].INPUT_TYPES()["required"]["steps"][1]
    assert spec["max"] == 999 and "999" in spec["tooltip"]


def test_a_fit_whose_init_no_camera_sees_says_so(world):
    images, masks, cameras = world
    far = Gaussians.from_colors(torch.randn(50, 3) * 0.1 + torch.tensor([0.0, 0.0, -500.0]), torch.rand(50, 3))
    with pytest.raises(ValueError, match="no Gaussian is visible from the training cameras"):
        run("Gen4D_StaticGaussians", images=images, cameras=cameras, init=far, iterations=2, preview_every=0,
            densify=False)


def test_images_with_autograd_history_fit_like_plain_ones(world):
    images, masks, _ = world
    weight = torch.ones((), requires_grad=True)
    tracked, tracked_masks = images * weight, masks * weight  # an upstream node left its graph attached
    assert tracked.requires_grad
    common = dict(masks=tracked_masks, iterations=3, num_points=100, preview_every=0, densify=False)
    fitted = run("Gen4D_StaticGaussians", images=tracked, **common)[0]
    plain = run("Gen4D_StaticGaussians", images=images.clone(), **{**common, "masks": masks.clone()})[0]
    assert torch.equal(fitted.means, plain.means)
    scene = run("Gen4D_DeformationFit", gaussians=fitted, images=tracked, masks=tracked_masks, iterations=2,
                times_per_step=1, trajectory_iterations=0, preview_every=0)[0]
    assert torch.isfinite(scene.at(0.5).means).all()
    assert weight.grad is None, "nothing flowed back into the upstream graph"
