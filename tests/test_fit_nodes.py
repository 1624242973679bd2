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
