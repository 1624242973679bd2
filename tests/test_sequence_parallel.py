# SPDX-License-Identifier: Apache-2.0
"""Sequence parallelism of the two Wan-based DiT stages: two gloo ranks on the CPU against one process."""

from __future__ import annotations

import os
import time

import parallel_tasks as tasks
import pytest
import torch
from gen4d.backends import sequence_parallel as sp
from gen4d.backends import trajectory_dit as td
from gen4d.backends import video_inpaint_fun as vif
from gen4d.backends.tiny import build_tiny

# fp32 rounding: the only difference between one process and two ranks is the order of the sums
# (a batch of one guidance row instead of two, token blocks instead of the whole sequence)
ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Two shared cores: one torch thread."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return (build_tiny("trajectory", tmp_path_factory.mktemp("traj"), seed=0),
            build_tiny("video_inpaint_wan_fun", tmp_path_factory.mktemp("fun"), seed=0))


@pytest.fixture(scope="module")
def traj_model(folders):
    td.clear_cache()
    return tasks.load_models(*folders)[0]


@pytest.fixture(scope="module")
def inpainter(folders):
    return tasks.load_models(*folders)[1]


@pytest.fixture(scope="module")
def stage_inputs():
    g = torch.Generator().manual_seed(0)
    image, depth = torch.rand(32, 48, 3, generator=g), torch.rand(32, 48, generator=g) * 3 + 1
    frames = torch.rand(5, 32, 32, 3, generator=g)
    masks = torch.zeros(5, 32, 32)
    masks[:, 8:24, 8:24] = 1.0
    return image, depth, frames, masks


def _close(a: torch.Tensor, b: torch.Tensor, what: str, rel: float = ATOL) -> None:
    scale = max(1.0, float(a.abs().max()))
    err = float((a - b).abs().max())
    assert err <= rel * scale, f"{what}: two ranks differ from one process by {err:.3g} (scale {scale:.3g})"


def test_devices_and_token_ranges():
    assert sp.parse_devices("0, 1") == ("cuda:0", "cuda:1")
    assert sp.parse_devices("cuda:2,cuda:0") == ("cuda:2", "cuda:0")
    assert sp.parse_devices("cpu,cpu") == ("cpu", "cpu") and sp.parse_devices(" ") == ()
    for bad, msg in (("0,0", "twice"), ("gpu1", "not a device"), ("cpu,0", "mixes")):
        with pytest.raises(ValueError, match=msg):
            sp.parse_devices(bad, "Gen4D_ParallelOptions.devices")
    assert not sp.ParallelOptions(("cuda:0",)).enabled and sp.ParallelOptions(("cpu", "cpu")).enabled
    for n, ranks in ((18, 2), (19, 4), (7, 3)):
        spans = [sp.token_range(n, sp.Layout(1, ranks, 0, r)) for r in range(ranks)]
        assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        x = torch.arange(n)[None]
        assert torch.equal(torch.cat([sp.split_tokens(x, sp.Layout(1, ranks, 0, r)) for r in range(ranks)], 1), x)


def test_two_gloo_ranks_match_one_process(folders, traj_model, inpainter, stage_inputs):
    image, depth, frames, masks = stage_inputs
    ref_dit = tasks.dit_latents(None, traj_model.dit)
    ref_fun = tasks.inpaint_latents(None, inpainter.transformer)
    ref_tracks, ref_frames = tasks.stage_calls(traj_model, inpainter, image, depth, frames, masks)
    options = sp.ParallelOptions(("cpu", "cpu"))
    out = sp.launch(options, tasks.both_stages, (*folders, *stage_inputs), "test")
    for cfg_parallel, (dit, fun, tracks, frames_out, agree) in out.items():
        case = "guidance rows on two rank groups" if cfg_parallel else "Ulysses over both ranks"
        assert agree, f"{case}: the ranks ended with different results"
        _close(ref_dit, dit, f"{case}: trajectory DiT latents")
        _close(ref_fun, fun, f"{case}: Fun InP latents")
        # whole stages: the VAE and the trajectory decoder see the latents above. Ulysses ranks give the
        # same latents bit for bit; split guidance rows differ by fp32 rounding (a batch of one row, not
        # two), which the decoder and the normalisation amplify about twentyfold
        decoded = 4 * ATOL if cfg_parallel else ATOL
        for name, a, b in zip(("motion maps", "normalised motion", "track points"), ref_tracks, tracks):
            _close(a, b, f"{case}: trajectory stage {name}", rel=decoded)
        _close(ref_frames, frames_out, f"{case}: inpainted frames")
    # the comparison can fail: another seed's sampling is far from these
    assert (tasks.dit_latents(None, traj_model.dit, seed=1) - ref_dit).abs().max() > 1e-2


def test_stage_calls_hand_their_sampling_to_the_workers(traj_model, inpainter, stage_inputs, monkeypatch):
    """The parallel branch of each stage passes the same sampling inputs as the local one (workers
    stood in for by a direct call, so the wiring is checked without processes)."""
    image, depth, frames, masks = stage_inputs
    calls = []

    def direct(options, fn, args, what, callback=None, should_stop=None):
        calls.append((what, options.devices))
        return fn(None, *args, callback, should_stop, torch.device("cpu"))

    ref = tasks.traj_model_tracks(traj_model, image, depth)
    ref_frames = inpainter.inpaint(frames, masks, "a red car", "blue", 1.0, tasks.STEPS, tasks.GUIDANCE, seed=1)
    monkeypatch.setattr(td, "launch", direct)
    monkeypatch.setattr(vif, "launch", direct)
    options = sp.ParallelOptions(("cpu", "cpu"))
    r = td.generate_tracks(traj_model, image, depth, "a red car", "night", num_frames=5, steps=tasks.STEPS,
                           guidance_scale=tasks.GUIDANCE, seed=7, device="cpu", parallel=options)
    with inpainter.run_parallel(options):
        out = inpainter.inpaint(frames, masks, "a red car", "blue", 1.0, tasks.STEPS, tasks.GUIDANCE, seed=1)
    assert inpainter.parallel is None
    assert calls == [("generate_tracks", ("cpu", "cpu")), ("FunInpainter.inpaint", ("cpu", "cpu"))]
    assert torch.equal(r.normalized, ref[1]) and torch.equal(out, ref_frames)


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_failing_rank_fails_the_call_and_leaves_no_worker(tmp_path):
    pid_file = str(tmp_path / "pid")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"failed on rank 1 \(cpu\).*rank one broke on purpose"):
        sp.launch(sp.ParallelOptions(("cpu", "cpu")), tasks.fail_on_rank_one, (pid_file,), "test")
    assert time.perf_counter() - start < 120  # rank 0 was stopped, not waited for
    pids = [int(open(f"{pid_file}.{r}").read()) for r in range(2)]
    assert all(_dead(p) for p in pids), f"workers {pids} outlived the call"


def test_cancel_stops_every_worker(tmp_path):
    pid_file = str(tmp_path / "pid")
    seen = []

    def stop() -> bool:
        seen.extend(p for p in (f"{pid_file}.{r}" for r in range(2)) if os.path.exists(p) and p not in seen)
        return len(seen) == 2

    with pytest.raises(InterruptedError):
        sp.launch(sp.ParallelOptions(("cpu", "cpu")), tasks.sleep_in_a_collective, (pid_file,), "test",
                  should_stop=stop)
    pids = [int(open(f"{pid_file}.{r}").read()) for r in range(2)]
    assert all(_dead(p) for p in pids), f"workers {pids} outlived the cancel"


def test_parallel_options_node():
    from gen4d.nodes.parallel import ParallelOptions as Node

    assert Node.VALIDATE_INPUTS(devices="0,1") is True
    assert "twice" in Node.VALIDATE_INPUTS(devices="1,1")
    (options,) = Node().build("cpu, cpu", cfg_parallel=False)
    assert options.devices == ("cpu", "cpu") and not options.cfg_parallel and options.enabled
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="Gen4D_ParallelOptions.devices.*CUDA is not available"):
            Node().build("0,1")
    with pytest.raises(ValueError, match="no device"):
        Node().build(" ")
