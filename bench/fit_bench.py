# SPDX-License-Identifier: Apache-2.0
"""Fit-engine benchmarks at paper settings on the synthetic worlds (run on the GPU machine).

Cases (pick with --case, default all):
    static      object world, 24-view static orbit at 256², 1000 iterations; held-out PSNR
                (target >= 31 dB and >= 300 it/s on an H100).
    orbital     Diffusion4D construction: static orbit + 4D orbit (24 views, view and time advance
                together) fitted as example_workflows/Diffusion4D.json's fit nodes set it (coarse 5k + fine
                2k of 8 frames, its presets); PSNR on held-out (view, time) pairs (target >= 28.5 dB in <= 30 s).
    coco4d_fg   CoCo4D foreground without guidance: seen view at 256², 1000 static iterations from a
                5000-point sphere, then 800 deformation iterations at batch 4 (target < 30 s).

Usage: python bench/fit_bench.py [--case static] [--scale 1.0] [--eager-field] [--eager-loss] [--profile]
                                [--repeat N] [--changes JSON] [--versus JSON] [--with-depth] [--json out.json]
``--scale`` multiplies every iteration count (quick checks on a CPU; with ``--profile``, a short profile);
``--eager-field`` runs the deformation stages with ``DeformationFitConfig.cuda_graphs`` off and
``--eager-loss`` every stage's ``graphed_loss`` (the loss and its backward replayed as CUDA graphs); both are
on by default, and the flags give the A/Bs; ``--with-depth`` renders the expected depth in every fit, as the
fits did before they left it out where their losses read none. ``--repeat N`` runs each case N times and
prints the spread of its time and PSNR (gsplat's backward is not deterministic, and densification follows it:
one run's PSNR is not a verdict).
``--changes`` fits with other settings, in a sweep plan's format (``bench/posed_frames_sweep.py``): a JSON
object whose ``"static"`` entry changes the static case's ``StaticFitConfig`` (and CoCo4D foreground's static
stage), ``"coarse"`` and ``"fine"`` the orbital stages, ``"deformation"`` CoCo4D foreground's deformation
stage; nested settings (``densify``, ``loss``, ``learning_rates``, ``hexplane``) are built from their dicts,
e.g. ``--changes '{"static": {"densify": {"grad_threshold": 0.0001}}}'``.
``--versus`` takes a second set of changes in the same format and makes each repeat an A/B pair: the case with
``--changes`` (variant ``a``), then with ``--versus`` (variant ``b``), in turn in one process. The machine's load
drifts between runs (a host-bound step slowed by 45 % from one call to the next in one sitting, with the same
settings), so only runs side by side compare: it prints each variant's spread and the paired differences b - a,
e.g. ``--case orbital --repeat 3 --versus '{"fine": {"graphed_update": true}}'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d import synthetic  # noqa: E402
from gen4d.backends.render import available_backends, render_scene, training_render  # noqa: E402
from gen4d.core.coco4d.reference import reference_clip  # noqa: E402
from gen4d.core.engine.cameras import Cameras, diffusion4d_orbit, intrinsics_from_fov, orbit_poses  # noqa: E402
from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig, fit_coarse_to_fine  # noqa: E402
from gen4d.core.engine.fit_dynamic import DeformationFitConfig, fit_deformation  # noqa: E402
from gen4d.core.engine.fit_static import StaticFitConfig, evaluate, fit_static  # noqa: E402
from gen4d.core.engine.gaussians import sphere_init  # noqa: E402
from gen4d.core.engine.losses import ReconstructionLoss, psnr  # noqa: E402
from gen4d.core.engine.scene import Scene4D, ScenePart  # noqa: E402
from gen4d.core.engine.views import PosedImages  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_profile import StageProfile, profiled_static  # noqa: E402
from posed_frames_sweep import apply_changes, workflow_base  # noqa: E402
from warm_up import warm_up_engine  # noqa: E402


def diffusion4d_stages(views: PosedImages) -> CoarseToFineConfig:
    """The construction as example_workflows/Diffusion4D.json runs it: its fit nodes' widgets and presets."""
    return workflow_base(views, "diffusion4d")

SIZE = 256
WHITE = (1.0, 1.0, 1.0)


def with_depth_always(render_fn):
    """``render_fn`` without its depth-less variant: every fit then renders depth (``--with-depth``, the A/B)."""
    def render(gaussians, cameras, background):
        return render_fn(gaussians, cameras, background)

    render.each = render_fn.each
    return render


RENDER_FN = training_render  # what the cases fit with


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _views(world, cameras: Cameras) -> PosedImages:
    truth = synthetic.render(world, cameras, supersample=3)
    return PosedImages(truth["rgb"], cameras, truth["foreground"])


# The orbit this bench's figures were measured on: 15° steps for 24 views (360/T), fovy 49.1.
ORBIT = {"fovy_deg": 49.1, "convention": "open_loop"}


def _held_out(n: int, dynamic: bool) -> Cameras:
    """Views between the training azimuths, off the training elevation, at in-between times."""
    g = torch.Generator().manual_seed(123)
    az = 7.5 + 15.0 * torch.randint(0, 24, (n,), generator=g).float()
    el = torch.empty(n).uniform_(-15.0, 15.0, generator=g)
    times = (az / 360.0).clamp(0, 1) if dynamic else torch.zeros(n)
    K = intrinsics_from_fov(49.1, SIZE, SIZE).expand(n, 3, 3).clone()
    return Cameras(orbit_poses(el, az, 2.0), K, SIZE, SIZE, times, 0.01, 100.0)


class Timer:
    """Wall time and peak memory of a block, and the CPU time the process spent in it (``cpu_seconds``, all
    threads: a fit's CUDA backward runs on autograd's device thread while the fitting thread sleeps, so that
    thread's own time leaves the backward out). The threads spin while they wait for the device, so wall
    time well above the CPU time means the machine took them off the CPU (other load). On a CPU device the
    intra-op threads add up to more than the wall time."""

    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        self.peak_mib = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


def case_static(scale: float, cuda_graphs: bool = True, graphed_loss: bool = True, profiled: bool = False,
                changes: dict | None = None) -> dict:
    world = synthetic.object_world(0)
    train = _views(world, diffusion4d_orbit(SIZE, SIZE, 24, dynamic=False, **ORBIT))
    test = _views(world, _held_out(8, dynamic=False))
    iters = max(int(1000 * scale), 1)
    cfg = StaticFitConfig(iterations=iters, views_per_step=4, preview_every=0, graphed_loss=graphed_loss,
                          loss=ReconstructionLoss(l1=0.8, dssim=0.2, mask=0.5))
    cfg = apply_changes(cfg, (changes or {}).get("static", {}))
    iters = cfg.iterations
    init = sphere_init(5000, 0.5, generator=torch.Generator().manual_seed(0))
    with Timer() as t:
        if profiled:
            result = profiled_static(init, train, cfg, _device(), RENDER_FN)
        else:
            result = fit_static(init, train, RENDER_FN, cfg, device=_device())
    score = evaluate(result.gaussians, test, training_render, WHITE)
    return {"case": "static", "profiled": profiled, "iterations": iters,
            "seconds": t.seconds, "cpu_seconds": t.cpu_seconds, "it_per_s": iters / t.seconds,
            "peak_mib": t.peak_mib, "gaussians": len(result.gaussians), "heldout_psnr": score["psnr"],
            "heldout_mask_iou": score.get("mask_iou"), "target_psnr": 31.0,
            "target_it_per_s": 300.0}


def case_orbital(scale: float, cuda_graphs: bool = True, graphed_loss: bool = True,
                 changes: dict | None = None, profiled: bool = False) -> dict:
    world = synthetic.object_world(0)
    orbit_4d = _views(world, diffusion4d_orbit(SIZE, SIZE, 24, dynamic=True, **ORBIT))
    static = _views(world, diffusion4d_orbit(SIZE, SIZE, 24, dynamic=False, **ORBIT))
    test_cams = _held_out(12, dynamic=True)
    test = synthetic.render(world, test_cams, supersample=3)["rgb"]
    base = diffusion4d_stages(orbit_4d)
    fine_iters = max(int(base.fine.iterations * scale), 1)
    densify = None if base.fine.densify is None else replace(base.fine.densify, total_iterations=fine_iters)
    cfg = CoarseToFineConfig(
        coarse=replace(base.coarse, iterations=max(int(base.coarse.iterations * scale), 1), preview_every=0,
                       graphed_loss=graphed_loss),
        fine=replace(base.fine, iterations=fine_iters, preview_every=0, cuda_graphs=cuda_graphs, densify=densify,
                     graphed_loss=graphed_loss),
    )
    changes = changes or {}
    cfg = replace(cfg, coarse=apply_changes(cfg.coarse, changes.get("coarse", {})),
                  fine=apply_changes(cfg.fine, changes.get("fine", {})))
    init = sphere_init(5000, 0.5, generator=torch.Generator().manual_seed(0))
    coarse_end = {}
    window = StageProfile(cfg.coarse.iterations, _device()) if profiled else None

    def progress(step: int, _total: int, _preview=None) -> None:
        if step == cfg.coarse.iterations and not coarse_end:  # one wait, so the split is the GPU's
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            coarse_end["at"] = time.perf_counter()
        if window is not None:
            window.step(step)

    try:
        with Timer() as t:
            result = fit_coarse_to_fine(init, orbit_4d, RENDER_FN, static, cfg, progress, device=_device())
    finally:
        if window is not None:
            window.close()
    coarse_seconds = coarse_end.get("at", t.start + t.seconds) - t.start
    scene = Scene4D([ScenePart("object", result.gaussians, result.extra["motion"])], 24, 8.0)
    coarse = Scene4D.static(result.extra["coarse"].gaussians)
    with torch.no_grad():
        bg = torch.tensor(WHITE)
        fine_rgb = render_scene(scene, test_cams, bg, device=_device()).rgb.clamp(0, 1).cpu()
        coarse_rgb = render_scene(coarse, test_cams, bg, device=_device()).rgb.clamp(0, 1).cpu()
    return {"case": "orbital", "profiled": profiled, "coarse_iterations": cfg.coarse.iterations,
            "fine_iterations": cfg.fine.iterations,
            "seconds": t.seconds, "cpu_seconds": t.cpu_seconds, "coarse_seconds": coarse_seconds,
            "fine_seconds": t.seconds - coarse_seconds,
            "peak_mib": t.peak_mib, "gaussians": len(result.gaussians),
            "heldout_psnr": float(psnr(fine_rgb, test)), "coarse_only_psnr": float(psnr(coarse_rgb, test)),
            "target_psnr": 28.5, "target_seconds": 30.0}


def case_coco4d_fg(scale: float, cuda_graphs: bool = True, graphed_loss: bool = True,
                   changes: dict | None = None) -> dict:
    world = synthetic.object_world(0)
    truth = synthetic.render(world, world.reference_cameras(SIZE, SIZE, 16), supersample=3)
    clip = reference_clip(truth["rgb"], truth["foreground"], center=True)
    s_iters, d_iters = max(int(1000 * scale), 1), max(int(800 * scale), 1)
    changes = changes or {}
    s_cfg = apply_changes(StaticFitConfig(iterations=s_iters, preview_every=0, graphed_loss=graphed_loss),
                          changes.get("static", {}))
    d_cfg = apply_changes(DeformationFitConfig(iterations=d_iters, preview_every=0, cuda_graphs=cuda_graphs,
                                               graphed_loss=graphed_loss), changes.get("deformation", {}))
    s_iters, d_iters = s_cfg.iterations, d_cfg.iterations
    init = sphere_init(5000, 0.5, generator=torch.Generator().manual_seed(0))
    with Timer() as t_static:
        static = fit_static(init, clip.views.subset([0]), RENDER_FN, s_cfg, device=_device())
    with Timer() as t_dyn:
        dynamic = fit_deformation(static.gaussians, clip.views, RENDER_FN, d_cfg, device=_device())
    scene = Scene4D([ScenePart("fg", dynamic.gaussians, dynamic.extra["motion"])], 16, 8.0)
    with torch.no_grad():
        out = render_scene(scene, clip.views.cameras, torch.tensor(WHITE), device=_device()).rgb.clamp(0, 1).cpu()
    return {"case": "coco4d_fg", "static_iterations": s_iters, "deformation_iterations": d_iters,
            "static_seconds": t_static.seconds, "deformation_seconds": t_dyn.seconds,
            "total_seconds": t_static.seconds + t_dyn.seconds,
            "peak_mib": max(t_static.peak_mib, t_dyn.peak_mib), "gaussians": len(dynamic.gaussians),
            "seen_view_video_psnr": float(psnr(out, clip.views.images)), "target_seconds": 30.0}


CASES = {"static": case_static, "orbital": case_orbital, "coco4d_fg": case_coco4d_fg}
# The stages each case fits, by their --changes key.
STAGES = {"static": ("static",), "orbital": ("coarse", "fine"), "coco4d_fg": ("static", "deformation")}


def checked_changes(text: str, cases: list[str]) -> dict:
    """``--changes`` parsed; a stage none of the chosen cases fits is an error, not a silent no-op."""
    changes = json.loads(text)
    if not isinstance(changes, dict) or not all(isinstance(v, dict) for v in changes.values()):
        raise ValueError(f"--changes must be a JSON object of objects, got {text!r}")
    fitted = {stage for case in cases for stage in STAGES[case]}
    unused = sorted(set(changes) - fitted)
    if unused:
        raise ValueError(f"--changes: {unused} name no stage of the cases run ({sorted(fitted)})")
    return changes


def spread(case: str, rows: list[dict]) -> dict:
    """Mean, min and max over repeated runs of each timing and quality figure the rows share."""
    keys = [k for k, v in rows[0].items() if isinstance(v, float) and ("seconds" in k or "psnr" in k or k == "it_per_s")
            and not k.startswith("target")]
    out = {"case": case, "runs": len(rows)}
    for k in keys:
        values = [r[k] for r in rows]
        out[k] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return out


def paired_differences(case: str, a_rows: list[dict], b_rows: list[dict]) -> dict:
    """Mean, min and max over A/B pairs of ``b - a`` for each timing and quality figure (``--versus``)."""
    if len(a_rows) != len(b_rows) or not a_rows:
        raise ValueError(f"paired_differences: {len(a_rows)} a runs against {len(b_rows)} b runs")
    pairs = [{k: b[k] - a[k] for k in a if isinstance(a[k], float) and isinstance(b.get(k), float)}
             for a, b in zip(a_rows, b_rows)]
    out = spread(case, pairs)
    out["differences"] = "b - a, per pair of runs side by side"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=list(CASES), action="append")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--eager-field", action="store_true", help="deformation stages without CUDA graphs")
    ap.add_argument("--eager-loss", action="store_true", help="every stage runs its loss eagerly (no CUDA graphs)")
    ap.add_argument("--profile", action="store_true",
                    help="run the static case, and the orbital case's fine stage, under the torch profiler: "
                         "busiest operators, host time per phase of a step, kernel launches, and for the fine "
                         "stage kernel time against wall time (their times are then not speed figures)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case (prints their spread)")
    ap.add_argument("--changes", default="{}", help="other settings per stage, as JSON (see above)")
    ap.add_argument("--versus", default=None,
                    help="a second set of changes (JSON, as --changes): each repeat runs the case with --changes, "
                         "then with these, and the paired differences are printed (see above)")
    ap.add_argument("--with-depth", action="store_true", help="render depth in every fit even where no loss reads it")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    global RENDER_FN
    if args.with_depth:
        RENDER_FN = with_depth_always(training_render)
    device = _device()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    start = time.perf_counter()
    warm_up_engine(device)
    print(f"device {name}, backends {available_backends()}, torch {torch.__version__}, "
          f"warm-up {time.perf_counter() - start:.1f} s", flush=True)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    cases = args.case or list(CASES)
    try:
        variants = {"a": checked_changes(args.changes, cases)}
        if args.versus is not None:
            variants["b"] = checked_changes(args.versus, cases)
    except (ValueError, json.JSONDecodeError) as exc:
        ap.error(str(exc))
    results = []
    for case in cases:
        graphs = not args.eager_field
        extra = {"profiled": True} if args.profile and case in ("static", "orbital") else {}
        rows: dict[str, list[dict]] = {label: [] for label in variants}
        for _ in range(args.repeat):
            for label, changes in variants.items():  # side by side: the pairs share the machine's load
                row = {**CASES[case](args.scale, graphs, not args.eager_loss, changes=changes, **extra),
                       "cuda_graphs": graphs, "graphed_loss": not args.eager_loss, "with_depth": args.with_depth,
                       "changes": {k: v for k, v in changes.items() if k in STAGES[case]}}
                if len(variants) > 1:
                    row["variant"] = label
                rows[label].append(row)
                print(json.dumps(row), flush=True)
        for label, runs in rows.items():
            results += runs
            if args.repeat > 1:
                print(json.dumps({**spread(case, runs), **({"variant": label} if len(variants) > 1 else {})}),
                      flush=True)
        if len(variants) > 1:
            print(json.dumps(paired_differences(case, rows["a"], rows["b"])), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
