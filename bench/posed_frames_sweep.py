# SPDX-License-Identifier: Apache-2.0
"""Compare settings of the 4D engine on one posed-frame dataset: one coarse fit, several fine fits.

Each run of a JSON plan names the changes it makes to ``CoarseToFineConfig``'s coarse and fine
stages; runs with the same coarse changes share one coarse fit (fitted once, timed once), so a plan
of N fine settings costs one coarse stage and N fine stages. Every run is scored on the test split
as ``bench/posed_frames_bench.py`` scores it (PSNR, SSIM), with its wall times, Gaussian count,
milliseconds per step and peak CUDA memory. With ``"profile": true`` the fine stage runs under the
torch profiler (CPU and CUDA) and the busiest operators are printed: use a short run for that.
``"profile_coarse": true`` does the same for the run's coarse stage (fitted on its own, not shared with
unprofiled runs).

Plan format (a list of runs)::

    [{"name": "defaults"},
     {"name": "8 frames a step", "fine": {"times_per_step": 8}},
     {"name": "densify", "fine": {"densify": {"refine_start": 200}, "lr_final_ratio": 0.1}},
     {"name": "short coarse", "coarse": {"iterations": 2000}},
     {"name": "profile", "profile": true, "fine": {"iterations": 60}}]

``"checkpoints": K`` also scores the fine stage every ``K`` steps on the way (the scoring time is
left out of the stage's time), so one long run gives a curve of PSNR against wall time, as the
peers' test iterations do.

``"base": "diffusion4d"`` starts a run from the stages as example_workflows/Diffusion4D.json sets its fit
nodes (widget values and Gen4D_FitOptions presets; the paper's stage lengths) instead of
``CoarseToFineConfig``'s defaults (``"engine"``); ``"posed_frames"`` from PosedFrames4D.json's nodes, which
give ``CoarseToFineConfig``'s settings through the nodes' own config builders.

``"sets_as_list": true`` hands the deformed sets to the batched rasteriser as a plain list, which it
re-stacks every step: the baseline for the stacked hand-over (``GaussianBatch``) in an A/B run.

``fine`` keys are ``DeformationFitConfig`` fields; ``densify``, ``hexplane``, ``loss`` and
``canonical_learning_rates`` take the fields of their own classes. ``coarse`` keys are
``StaticFitConfig`` fields (``densify``, ``loss`` and ``learning_rates`` likewise). ``--deadline``
skips the runs that would end after it (each run may carry an ``"estimate"`` in seconds).

Usage:
    python bench/posed_frames_bench.py --export-synthetic /tmp/pf
    python bench/posed_frames_sweep.py /tmp/pf plan.json [--deadline 540] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import posed_frames_bench as pfb  # noqa: E402  (loads the pack)
from fit_profile import phase_ranges, print_phases, profiled_static  # noqa: E402
from gen4d.backends.render import render_each, training_render  # noqa: E402
from gen4d.core.engine import densify as dens  # noqa: E402
from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig  # noqa: E402
from gen4d.core.engine.deformation import HexPlaneConfig  # noqa: E402
from gen4d.core.engine.fit_dynamic import fit_deformation  # noqa: E402
from gen4d.core.engine.fit_static import GaussianLearningRates, fit_static  # noqa: E402
from gen4d.core.engine.losses import ReconstructionLoss  # noqa: E402
from gen4d.core.engine.scene import Scene4D, ScenePart  # noqa: E402
from gen4d.core.engine.views import PosedImages  # noqa: E402
from gen4d.core.formats.posed_frames import available_splits, read_posed_frames  # noqa: E402
from gen4d.nodes.fit import deformation_fit_config, static_fit_config  # noqa: E402

_NESTED = {"densify": lambda d: None if d is None else dens.DensifyConfig(**d),
           "hexplane": lambda d: HexPlaneConfig(**d),
           "loss": lambda d: ReconstructionLoss(**d),
           "canonical_learning_rates": lambda d: GaussianLearningRates(**d),
           "learning_rates": lambda d: GaussianLearningRates(**d)}


def apply_changes(config, changes: dict):
    """``config`` with the plan's ``changes`` (nested settings built from their dicts)."""
    values = {k: (_NESTED[k](v) if k in _NESTED else v) for k, v in changes.items()}
    return replace(config, **values)


def _render_fn(run: dict):
    """``training_render``, or with ``"sets_as_list"`` a copy whose ``each`` gets the sets as a plain list
    (its depth-less variant likewise, so the A/B differs in the hand-over alone)."""
    if not run.get("sets_as_list"):
        return training_render

    def as_list(render, depth: bool):
        def render_fn(gaussians, cameras, background):
            return render(gaussians, cameras, background)

        render_fn.each = lambda sets, cameras, background, screen_grads=False: render_each(
            list(sets), cameras, background, screen_grads=screen_grads, depth=depth)
        return render_fn

    render_fn = as_list(training_render, True)
    render_fn.without_depth = as_list(training_render.without_depth, False)
    return render_fn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_fit(result, test, background, device: torch.device, frames: int) -> dict:
    """PSNR and SSIM of a fine-stage result (canonical set + motion) on the test split."""
    scene = Scene4D([ScenePart("object", result.gaussians, result.extra["motion"])], frames, 8.0)
    score, _ = pfb.score(scene, test.cameras, test.images, background, device)
    return score


class CheckpointScorer:
    """``on_checkpoint`` hook: scores the fit so far on the test split, leaving its own time out.

    ``curve`` collects ``{"step", "total_s", "psnr", "ssim"}``, ``total_s`` counted from ``start``
    (the coarse stage's start) without the scoring time, which ``paused`` sums.
    """

    def __init__(self, test, background, device: torch.device, frames: int, start: float) -> None:
        self.test, self.background, self.device, self.frames, self.start = test, background, device, frames, start
        self.paused, self.curve = 0.0, []

    def __call__(self, result) -> None:
        _sync(self.device)
        begin = time.perf_counter()
        seconds = begin - self.start - self.paused
        score = score_fit(result, self.test, self.background, self.device, self.frames)
        self.curve.append({"step": result.steps, "total_s": seconds, "psnr": score["psnr"], "ssim": score["ssim"]})
        print(f"  step {result.steps}: {seconds:.1f} s -> {score['psnr']:.2f} dB", flush=True)
        _sync(self.device)
        self.paused += time.perf_counter() - begin


def workflow_base(views: PosedImages, workflow: str = "diffusion4d") -> CoarseToFineConfig:
    """The two stages as a shipped workflow (``shipped_workflow.FIT_WORKFLOWS``) configures its fit nodes: their
    widget values and the fit options their Gen4D_FitOptions nodes give (what a ComfyUI user's run of it fits with).
    Neither workflow connects masks (PosedFrames4D's frames come composited), so masks are dropped."""
    widgets, options = pfb.workflow_widgets(workflow), pfb.workflow_fit_options(workflow)
    s, d = widgets["Gen4D_StaticGaussians"], widgets["Gen4D_DeformationFit"]
    views = PosedImages(views.images, views.cameras)
    coarse = static_fit_config(views, s["iterations"], s["views_per_step"], s["sds_weight"], s["densify"],
                               s["max_scale"], s["background"], s["preview_every"], s["seed"],
                               options["Gen4D_StaticGaussians"])
    fine = deformation_fit_config(views, d["iterations"], d["times_per_step"], d["rigidity_weight"], d["sds_weight"],
                                  d["freeze_canonical"], d["background"], d["preview_every"], d["seed"],
                                  options["Gen4D_DeformationFit"], d["densify"])
    return CoarseToFineConfig(coarse=coarse, fine=fine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="dataset folder (transforms*.json)")
    ap.add_argument("plan", help="JSON list of runs (see above)")
    ap.add_argument("--deadline", type=float, default=None, help="seconds after start; later runs are skipped")
    ap.add_argument("--background", default="#ffffff")
    ap.add_argument("--init-points", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None, help="also write the result rows here")
    args = ap.parse_args()
    start_all = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    background = tuple(pfb.parse_color(args.background).tolist())
    folder, plan = Path(args.folder), json.loads(Path(args.plan).read_text())
    test_split = next((s for s in ("test", "val") if s in available_splits(folder)), "train")
    train = read_posed_frames(folder, "train", background)
    test = read_posed_frames(folder, test_split, background)
    # The reader composites the frames on the background, so no masks (as PosedFrames4D.json passes none): a
    # fit given masks composites its targets again, which moves every anti-aliased edge towards the background.
    views = PosedImages(train.images, train.cameras)
    init, _, _ = pfb.init_sphere(train.cameras, args.init_points, None, args.seed)
    # gsplat may JIT-compile on first use. The init sphere, centred where the cameras look, is in view; a
    # sphere at the origin is not, for scenes away from it.
    warm = init.detach().clone().to(device).requires_grad_(True)
    training_render(warm, train.cameras[0].to(device), torch.ones(3, device=device)).rgb.sum().backward()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; {folder}: {len(train.cameras)} train, {len(test.cameras)} {test_split} frames, "
          f"{train.cameras.width}x{train.cameras.height}", flush=True)

    bases = {"engine": CoarseToFineConfig, "posed_frames": lambda: workflow_base(views, "posed_frames"),
             "diffusion4d": lambda: workflow_base(views, "diffusion4d")}
    common = {"preview_every": 0, "background": background, "seed": args.seed}
    coarse_fits, rows = {}, []
    for run in plan:
        label = run.get("name", "?")
        if args.deadline is not None and time.perf_counter() - start_all + run.get("estimate", 0) > args.deadline:
            print(f"skipped {label}: past the deadline", flush=True)
            continue
        if run.get("base", "engine") not in bases:
            raise ValueError(f"{label}: base must be one of {list(bases)}, got {run['base']!r}")
        base = bases[run.get("base", "engine")]()
        key = json.dumps([run.get("base", "engine"), run.get("coarse", {}), bool(run.get("profile_coarse"))],
                         sort_keys=True)
        if key not in coarse_fits:
            ccfg = apply_changes(replace(base.coarse, **common), run.get("coarse", {}))
            _sync(device)
            t = time.perf_counter()
            if run.get("profile_coarse"):
                coarse = profiled_static(init, views, ccfg, device)
            else:
                coarse = fit_static(init, views, training_render, ccfg, device=device)
            _sync(device)
            seconds = time.perf_counter() - t
            score, _ = pfb.score(Scene4D.static(coarse.gaussians), test.cameras, test.images, background, device)
            coarse_fits[key] = (coarse, seconds, score)
            print(f"coarse {key}: {ccfg.iterations} x {ccfg.views_per_step} in {seconds:.1f} s, "
                  f"{len(coarse.gaussians)} Gaussians, {score['psnr']:.2f} dB", flush=True)
        coarse, coarse_s, coarse_score = coarse_fits[key]
        fcfg = apply_changes(replace(base.fine, **common), run.get("fine", {}))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        every, paused, curve = int(run.get("checkpoints", 0)), 0.0, []
        t = time.perf_counter()
        if run.get("profile"):
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            undo = phase_ranges()
            try:
                with profile(activities=activities) as prof:
                    fine = fit_deformation(coarse.gaussians, views, _render_fn(run), fcfg, device=device)
                    _sync(device)
            finally:
                undo()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
            print_phases(prof, fcfg.iterations)
        else:
            scorer = CheckpointScorer(test, background, device, len(views), t - coarse_s) if every else None
            fine = fit_deformation(coarse.gaussians, views, _render_fn(run), fcfg, device=device,
                                   on_checkpoint=scorer, checkpoint_every=every)
            if scorer is not None:
                paused, curve = scorer.paused, scorer.curve
        _sync(device)
        fine_s = time.perf_counter() - t - paused
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        score = score_fit(fine, test, background, device, len(views))
        row = {"name": label, "base": run.get("base", "engine"), "device": name, "coarse_s": coarse_s,
               "fine_s": fine_s, "total_s": coarse_s + fine_s,
               "psnr": score["psnr"], "ssim": score["ssim"], "coarse_psnr": coarse_score["psnr"],
               "gaussians": len(fine.gaussians), "fine_iterations": fcfg.iterations,
               "times_per_step": fcfg.times_per_step, "ms_per_step": fine_s / fcfg.iterations * 1000,
               "peak_cuda_mib": peak, "run": run, "curve": curve}
        rows.append(row)
        print(f"{label}: coarse {coarse_s:.1f} s + fine {fine_s:.1f} s = {coarse_s + fine_s:.1f} s -> "
              f"{score['psnr']:.2f} dB, SSIM {score['ssim']:.4f}, {row['gaussians']} Gaussians, "
              f"{fcfg.iterations} x {fcfg.times_per_step} at {row['ms_per_step']:.1f} ms/step"
              + (f", peak {peak:.0f} MiB" if peak is not None else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
