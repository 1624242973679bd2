# SPDX-License-Identifier: Apache-2.0
"""Same seed, same output: every seeded node run twice in one process gives identical results, guidance
included (a user who queues a graph again must get the same scene), and a different seed changes them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from gen4d.nodes.guidance import SDGuidanceLoader, Zero123GuidanceLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_runner import run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, FRAMES = 24, 2


@pytest.fixture(scope="module")
def models_dir(guidance_models_dir):
    return guidance_models_dir


@pytest.fixture(scope="module")
def world():
    images, masks, _, cameras, *_ = run("Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE,
                                        num_frames=FRAMES, seed=0, twin_points=200, supersample=1)
    return images, masks, cameras


def _guidance(kind: str):
    with torch.inference_mode():  # ComfyUI runs nodes in inference mode
        if kind == "zero123":
            return Zero123GuidanceLoader().load("guidance_zero123-tiny", torch.rand(1, 40, 40, 3), 0.0, 0.0, 2.5,
                                                5.0, "auto", "auto", 0)[0]
        return SDGuidanceLoader().load("guidance_sd-tiny", "a cat", "", 50.0, "auto", "auto", 0)[0]


def _static(world, guidance, seed=0):
    images, masks, _ = world
    return run("Gen4D_StaticGaussians", images=images, masks=masks, iterations=4, num_points=150, preview_every=0,
               seed=seed, guidance=guidance, sds_weight=0.05, densify=False)[0]


def _assert_same(a, b):
    for name, x in a.tensors().items():
        assert torch.equal(x, b.tensors()[name]), name


@pytest.mark.parametrize("kind", ["zero123", "sd"])
def test_static_fit_with_guidance_repeats_in_one_process(models_dir, world, kind):
    guidance = _guidance(kind)  # one loaded guidance, reused by every run, as in a re-queued graph
    first = _static(world, guidance)
    again = _static(world, guidance)
    _assert_same(first, again)
    other = _static(world, guidance, seed=1)
    assert not torch.equal(first.means, other.means), "the fit seed reaches the guidance noise too"


def test_deformation_fit_with_guidance_repeats_in_one_process(models_dir, world):
    images, masks, _ = world
    guidance = _guidance("zero123")
    start = _static(world, None)

    def fit():
        scene = run("Gen4D_DeformationFit", gaussians=start, images=images, masks=masks, iterations=3,
                    times_per_step=1, trajectory_iterations=0, preview_every=0, seed=0, guidance=guidance,
                    sds_weight=0.05)[0]
        return scene.at(0.5)

    _assert_same(fit(), fit())


def test_guidance_reseed_mixes_both_seeds(models_dir):
    from gen4d.backends.zero123 import mix_seeds

    guidance = _guidance("zero123")
    draws = []
    for run_seed in (3, 3, 4):
        guidance.reseed(run_seed)
        draws.append(torch.rand(4, generator=guidance._generator))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert mix_seeds(0, 1) != mix_seeds(1, 0) and 0 <= mix_seeds(2**62, 2**62) < 2**63


def test_synthetic_world_and_camera_path_repeat(world):
    again = run("Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE, num_frames=FRAMES, seed=0,
                twin_points=200, supersample=1)
    assert torch.equal(again[0], world[0]) and torch.equal(again[1], world[1])
    twin_a = run("Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE, num_frames=FRAMES, seed=3,
                 twin_points=200, supersample=1)[4]
    twin_b = run("Gen4D_SyntheticWorld", world="object", width=SIZE, height=SIZE, num_frames=FRAMES, seed=3,
                 twin_points=200, supersample=1)[4]
    _assert_same(twin_a.at(0.5), twin_b.at(0.5))


# A seeded fit with SD guidance in a fresh interpreter: the scene's tensors, written as safetensors.
_CHILD = r"""
import sys
from pathlib import Path
checkout, out, global_seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sys.path[:0] = [str(checkout), str(checkout / "tests"), str(checkout / "tools")]
import torch
torch.set_num_threads(1)
torch.manual_seed(global_seed)  # global state must not matter
from pack_loader import load_pack
load_pack()
import safetensors.torch
from node_runner import run
images, masks, *_ = run("Gen4D_SyntheticWorld", world="object", width=24, height=24, num_frames=2, seed=0,
                        twin_points=200, supersample=1)
with torch.inference_mode():
    guidance = run("Gen4D_SDGuidanceLoader", model="guidance_sd-tiny", prompt="a cat", negative_prompt="",
                   guidance_scale=50.0, device="auto", dtype="auto", seed=0)[0]
g = run("Gen4D_StaticGaussians", images=images, masks=masks, iterations=4, num_points=150, preview_every=0,
        seed=0, guidance=guidance, sds_weight=0.05, densify=True)[0]
safetensors.torch.save_file({k: v.contiguous() for k, v in g.tensors().items()}, out)
"""


def test_static_fit_with_guidance_repeats_across_processes(models_dir, tmp_path):
    """The same seeded graph in two separate interpreters (other global seeds, other hash seeds) gives the
    same Gaussians bit for bit: nothing depends on process state (global RNG, dict/set order, ids)."""
    import os
    import subprocess

    import safetensors.torch

    checkout = Path(__file__).resolve().parents[1]
    procs = []
    for i, (global_seed, hash_seed) in enumerate(((1, "1"), (987, "2"))):
        out = tmp_path / f"run{i}.safetensors"
        env = {**os.environ, "GEN4D_MODELS_DIR": str(models_dir), "PYTHONHASHSEED": hash_seed,
               "GEN4D_OUTPUT_DIR": str(tmp_path / "output"), "GEN4D_INPUT_DIR": str(tmp_path / "input")}
        procs.append((out, subprocess.Popen([sys.executable, "-c", _CHILD, str(checkout), str(out), str(global_seed)],
                                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    outs = []
    for out, proc in procs:
        _stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(safetensors.torch.load_file(str(out)))
    assert outs[0].keys() == outs[1].keys() and outs[0]
    for name, value in outs[0].items():
        assert torch.equal(value, outs[1][name]), f"{name}: max difference {(value - outs[1][name]).abs().max():.3g}"
