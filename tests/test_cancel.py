# SPDX-License-Identifier: Apache-2.0
"""Cancel reaches the inner loops: the user presses Cancel mid-run and the node stops within a second.

Each case is sized so that the whole run takes several seconds on one CPU thread and a single
batch / frame loop without inner checks would outlast the bound.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import Motion, Scene4D, ScenePart

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import run  # noqa: E402

BOUND_S = 1.0


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _stop_time(state, call, after: float) -> float:
    """Press Cancel ``after`` seconds into ``call()``; the seconds from the press until the node raised."""
    pressed = []

    def press():
        pressed.append(time.perf_counter())
        state.interrupted = True

    timer = threading.Timer(after, press)
    timer.start()
    try:
        with pytest.raises(state.Interrupted):
            call()
        stopped = time.perf_counter()
    finally:
        timer.cancel()
    assert pressed, f"the run ended before Cancel was pressed at {after} s: make the case larger"
    return stopped - pressed[0]


class SlowMotion(Motion):
    """A motion whose every evaluation costs ``seconds`` (a stand-in for a large deformation field)."""

    kind = "test_slow"

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds

    def apply(self, gaussians, t):
        time.sleep(self.seconds)
        return gaussians


def _gaussians(n: int, std: float = 0.03) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    return Gaussians.from_colors(torch.randn(n, 3, generator=g) * 0.5, torch.rand(n, 3, generator=g), std)


def _cameras(frames: int, size: int):
    return run("Gen4D_CameraPath", preset="diffusion4d_orbit", num_frames=frames, width=size, height=size)[0]


def test_render_stops_inside_one_batch(fake_comfy):
    # 48 cameras in a single batch (several seconds of work on any CPU): the node's between-batch check
    # alone would wait for all of them.
    cams = _cameras(48, 128)
    took = _stop_time(fake_comfy, lambda: run("Gen4D_Render", gaussians=_gaussians(3000), cameras=cams,
                                             batch_size=64), after=0.6)
    assert took < BOUND_S, f"Render took {took:.2f} s to stop"


def test_render_stops_between_scene_times(fake_comfy):
    scene = Scene4D([ScenePart("slow", _gaussians(50), SlowMotion(0.1))], 40, 8.0)
    cams = _cameras(40, 16)
    took = _stop_time(fake_comfy, lambda: run("Gen4D_Render", scene=scene, cameras=cams, batch_size=64), after=0.4)
    assert took < BOUND_S, f"Render took {took:.2f} s to stop"


def test_preview_stops_while_baking_frames(fake_comfy):
    scene = Scene4D([ScenePart("slow", _gaussians(50), SlowMotion(0.05))], 100, 8.0)
    took = _stop_time(fake_comfy, lambda: run("Gen4D_Preview4D", scene=scene), after=0.4)
    assert took < BOUND_S, f"Preview4D took {took:.2f} s to stop"
    assert not list((fake_comfy.temp).rglob("*.*")), "a cancelled preview writes no asset"
    assert fake_comfy.updates, "the bake reports progress"


def test_synthetic_world_stops_while_ray_casting(fake_comfy):
    took = _stop_time(fake_comfy, lambda: run("Gen4D_SyntheticWorld", world="scene", width=64, height=64,
                                             num_frames=12, supersample=3), after=0.5)
    assert took < BOUND_S, f"SyntheticWorld took {took:.2f} s to stop"


def test_low_level_loops_raise_interrupted_error():
    from gen4d.backends.render import render
    from gen4d.core.engine.rasterize import rasterize
    from gen4d.synthetic import render as cast
    from gen4d.synthetic import scene_world
    from gen4d.synthetic.trajectories import trajectories

    cams = _cameras(2, 16)
    g = _gaussians(20)
    with pytest.raises(InterruptedError):
        render(g, cams, should_stop=lambda: True)
    with pytest.raises(InterruptedError):
        rasterize(g.means, g.quats, g.scales, g.opacities, g.colors, cams.viewmats, cams.Ks, 16, 16,
                  should_stop=lambda: True)
    world = scene_world(seed=0)
    small = world.reference_cameras(8, 8, 2)
    for call in (lambda s: cast(world, small, should_stop=s), lambda s: trajectories(world, small, should_stop=s)):
        with pytest.raises(InterruptedError):
            call(lambda: True)
        assert call(lambda: False) is not None
