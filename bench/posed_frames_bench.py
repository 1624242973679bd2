# SPDX-License-Identifier: Apache-2.0
"""Fit a posed-frame dataset (transforms*.json: D-NeRF, nerfstudio, instant-ngp) and score its test split.

The dataset is read by the Gen4D_LoadPosedFrames reader (``core.formats.posed_frames``) and fitted
by one of two paths:

    --via engine  (default) the engine's coarse-to-fine construction, ``fit_coarse_to_fine`` with
                  ``CoarseToFineConfig``'s defaults (coarse static fit on every training view,
                  then the deformation fit), which are example_workflows/PosedFrames4D.json's stages;
    --via nodes   the Gen4D_StaticGaussians and Gen4D_DeformationFit nodes with the widget values
                  of a shipped workflow (``--workflow``: PosedFrames4D.json, or Diffusion4D.json with
                  the paper's stage lengths) and the fit options its Gen4D_FitOptions nodes give them.

Both start from the same sphere of Gaussians, centred where the cameras look (Gen4D_StaticGaussians'
``sphere_radius`` 0, ``gaze_sphere``). The test split (val
when there is none, train when neither exists) is rendered at its cameras and times and scored
against the files: PSNR and SSIM (``core.engine.losses``; SSIM with an 11-pixel Gaussian window),
for the fine result and the coarse one alone. Also printed: the fit's wall time, the Gaussian
count, peak memory (CUDA allocator peak; on a CPU the process's peak resident size) and, on CUDA,
the share of wall time the GPU spends in kernels, measured with torch.profiler over windows of
steps in the middle of each stage (the rest of the fit runs unprofiled, so the wall time is clean).

A synthetic dataset in D-NeRF layout comes from ``--export-synthetic DIR``: the object world from
random cameras, 100 training frames at times i/99, 20 test frames at other cameras and times,
800x800, transparent background (white once composited); ray-cast on CUDA when present (on a
CPU that size takes hours: use --frames/--test-frames/--size for small ones).

Usage:
    python bench/posed_frames_bench.py --export-synthetic /tmp/pf [--frames 100 --test-frames 20 --size 800]
    python bench/posed_frames_bench.py /tmp/pf [--via nodes --workflow diffusion4d] [--json out.json]
    python bench/posed_frames_bench.py /tmp/pf --coarse-iterations 30 --fine-iterations 30   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from pack_loader import load_pack  # noqa: E402

gen4d = load_pack()
from gen4d import synthetic  # noqa: E402
from gen4d.backends.render import available_backends, render_scene, training_render  # noqa: E402
from gen4d.core.engine.cameras import Cameras, gaze_sphere  # noqa: E402
from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig, fit_coarse_to_fine  # noqa: E402
from gen4d.core.engine.gaussians import sphere_init  # noqa: E402
from gen4d.core.engine.losses import psnr, ssim  # noqa: E402
from gen4d.core.engine.point_init import from_points  # noqa: E402
from gen4d.core.engine.scene import Scene4D, ScenePart  # noqa: E402
from gen4d.core.engine.views import PosedImages  # noqa: E402
from gen4d.core.formats.convert import parse_color  # noqa: E402
from gen4d.core.formats.posed_frames import available_splits, read_posed_frames  # noqa: E402
from gen4d.nodes import host  # noqa: E402
from gen4d.synthetic.export_posed import export_dnerf  # noqa: E402
from shipped_workflow import FIT_WORKFLOWS, linked_input, node_inputs  # noqa: E402


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- kernel share


class KernelWindow:
    """Profile GPU kernels between two progress steps of a fit and measure how busy the GPU was.

    ``step(n)`` is fed every progress step; the window opens at the first step >= ``start`` and
    closes ``length`` steps later. Busy time is the union of the kernels' intervals in the trace, read
    from it in :meth:`report`, after the fit, so the fit's time leaves the trace's parsing out;
    ``bookkeeping_s`` is the time the window's own profiler start and stop took inside the fit.
    """

    def __init__(self, label: str, start: int, length: int, device: torch.device):
        self.label, self.start, self.length, self.device = label, int(start), int(length), device
        self.profiler = self.trace = None
        self.opened_at = self.wall = None
        self.bookkeeping_s = 0.0
        self.done = device.type != "cuda" or length < 1

    def step(self, n: int) -> None:
        if self.done:
            return
        if self.profiler is None and n >= self.start:
            _sync(self.device)
            begin = time.perf_counter()
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            self.profiler.start()
            self.opened_at, self.first = time.perf_counter(), n
            self.bookkeeping_s += self.opened_at - begin
        elif self.profiler is not None and n >= self.first + self.length:
            _sync(self.device)
            closed_at = time.perf_counter()
            self.wall = closed_at - self.opened_at
            self.profiler.stop()
            self.steps = n - self.first
            self.trace, self.profiler, self.done = self.profiler, None, True
            self.bookkeeping_s += time.perf_counter() - closed_at

    def close(self) -> None:
        """Stop a window the fit ended inside (its figures stay unset)."""
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None
        self.done = True

    def report(self) -> dict | None:
        if self.wall is None or self.trace is None:
            return None
        busy, kernels = _kernel_busy_seconds(self.trace)
        return {"stage": self.label, "steps": self.steps, "wall_s": self.wall, "kernel_busy_s": busy,
                "kernels": kernels, "kernel_share": busy / self.wall}


def _kernel_busy_seconds(profiler) -> tuple[float, int]:
    """Seconds covered by at least one GPU kernel in the profiler's trace, and the kernel count."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        profiler.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                   if e.get("ph") == "X" and e.get("cat") == "kernel")
    busy, end = 0.0, -math.inf
    for s, e in spans:
        if e <= end:
            continue
        busy += e - max(s, end)
        end = e
    return busy / 1e6, len(spans)


# --------------------------------------------------------------------------- fitting


def init_sphere(cameras: Cameras, points: int, radius: float | None, seed: int):
    """The sphere Gen4D_StaticGaussians starts from with ``sphere_radius`` 0: around the point nearest to every
    optical axis, sized to stay in every view (``gaze_sphere``), unless ``radius`` is given."""
    center, fitted = gaze_sphere(cameras)
    radius = fitted if radius is None else radius
    gen = torch.Generator().manual_seed(seed)
    return sphere_init(points, radius, center=center, generator=gen), torch.tensor(center), radius


def fit_engine(init, views: PosedImages, args, background, device, windows):
    base = CoarseToFineConfig()
    coarse_iters = args.coarse_iterations or base.coarse.iterations
    fine_iters = args.fine_iterations or base.fine.iterations
    cfg = CoarseToFineConfig(
        coarse=replace(base.coarse, iterations=coarse_iters, preview_every=0, background=background, seed=args.seed),
        fine=replace(base.fine, iterations=fine_iters, preview_every=0, background=background, seed=args.seed),
    )
    coarse_w = KernelWindow("coarse", coarse_iters // 2, min(args.profile_steps, coarse_iters // 4), device)
    fine_w = KernelWindow("fine", coarse_iters + fine_iters // 2, min(args.profile_steps, fine_iters // 4), device)
    windows += [coarse_w, fine_w]

    def progress(step, _total, _preview=None):
        coarse_w.step(step)
        fine_w.step(step)

    result = fit_coarse_to_fine(init, views, training_render, None, cfg, progress, device=device)
    scene = Scene4D([ScenePart("object", result.gaussians, result.extra["motion"])], len(views), 8.0)
    coarse = result.extra["coarse"].gaussians
    return scene, coarse, {"coarse_iterations": coarse_iters, "fine_iterations": fine_iters}


FIT_NODES = ("Gen4D_StaticGaussians", "Gen4D_DeformationFit")


def workflow_widgets(workflow: str = "posed_frames") -> dict[str, dict]:
    """The Gen4D_StaticGaussians / Gen4D_DeformationFit widget values and linked inputs of a shipped workflow
    (a key of ``FIT_WORKFLOWS``)."""
    return node_inputs(FIT_WORKFLOWS[workflow], FIT_NODES, gen4d.NODE_CLASS_MAPPINGS)


def workflow_fit_options(workflow: str = "posed_frames") -> dict[str, object]:
    """The fit options each fit node of a shipped workflow receives (its Gen4D_FitOptions node's output)."""
    return {node: linked_input(FIT_WORKFLOWS[workflow], node, "options", gen4d.NODE_CLASS_MAPPINGS)
            for node in FIT_NODES}


def _result(out) -> tuple:
    """A node's outputs, whether it returned them bare or with notes for the UI."""
    return out["result"] if isinstance(out, dict) else out


def fit_nodes(init, views: PosedImages, args, background, device, windows):
    widgets, options = workflow_widgets(args.workflow), workflow_fit_options(args.workflow)
    classes = gen4d.NODE_CLASS_MAPPINGS
    colour = "#" + "".join(f"{round(c * 255):02x}" for c in background)
    static_in = {k: v for k, v in widgets["Gen4D_StaticGaussians"].items() if not isinstance(v, list)}
    fine_in = {k: v for k, v in widgets["Gen4D_DeformationFit"].items() if not isinstance(v, list)}
    static_in.update(fit_frames="all", background=colour, preview_every=0, seed=args.seed)
    fine_in.update(background=colour, preview_every=0, seed=args.seed, trajectory_iterations=0)
    if args.coarse_iterations:
        static_in["iterations"] = args.coarse_iterations
    if args.fine_iterations:
        fine_in["iterations"] = args.fine_iterations
    stage = {}

    def sink(step, _total):
        stage["window"].step(step)

    host.set_progress_sink(sink)
    try:
        stage["window"] = KernelWindow("coarse", static_in["iterations"] // 2,
                                       min(args.profile_steps, static_in["iterations"] // 4), device)
        windows.append(stage["window"])
        (gaussians,) = _result(classes["Gen4D_StaticGaussians"]().fit(
            images=views.images, cameras=views.cameras, init=init, ignore_mask=views.ignore,
            options=options["Gen4D_StaticGaussians"], **static_in))
        stage["window"] = KernelWindow("fine", fine_in["iterations"] // 2,
                                       min(args.profile_steps, fine_in["iterations"] // 4), device)
        windows.append(stage["window"])
        (scene,) = _result(classes["Gen4D_DeformationFit"]().fit(
            gaussians=gaussians, images=views.images, cameras=views.cameras, ignore_mask=views.ignore,
            options=options["Gen4D_DeformationFit"], **fine_in))
    finally:
        host.set_progress_sink(None)
    return scene, gaussians, {"coarse_iterations": static_in["iterations"], "fine_iterations": fine_in["iterations"],
                              "workflow": FIT_WORKFLOWS[args.workflow].name,
                              "fit_options": {k: None if v is None else v.describe() for k, v in options.items()}}


# --------------------------------------------------------------------------- scoring


def score(scene, cameras: Cameras, truth: torch.Tensor, background, device,
          ignore: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """PSNR and SSIM of the scene's renders against ``truth``; PSNR over the pixels not ignored when the
    dataset marks some (a passer-by in a test frame is not the scene)."""
    bg = torch.tensor(background)
    rgb = []
    with torch.no_grad():
        for i in range(len(cameras)):
            rgb.append(render_scene(scene, cameras[i], bg, device=device).rgb.clamp(0, 1).cpu())
    rgb = torch.cat(rgb)
    window = 11 if min(truth.shape[1:3]) >= 11 else max(1, min(truth.shape[1:3]) // 2 * 2 - 1)
    keep = None if ignore is None else 1.0 - ignore
    return {"psnr": float(psnr(rgb, truth, keep)), "ssim": float(ssim(rgb, truth, window=window))}, rgb


def save_renders(folder: Path, names, rgb: torch.Tensor, truth: torch.Tensor) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, a, b in zip(names, rgb, truth):
        pair = torch.cat([a, b], dim=1).mul(255).round().to(torch.uint8).numpy()
        Image.fromarray(pair).save(folder / (Path(name).stem + "_render_vs_truth.png"))


# --------------------------------------------------------------------------- main


def export(args) -> None:
    device = _device(args.device)
    world = {"object": synthetic.object_world, "scene": synthetic.scene_world}[args.world](args.seed)
    start = time.perf_counter()
    cams = export_dnerf(world, args.export_synthetic, args.frames, args.test_frames, args.size, args.fov, args.seed,
                        args.supersample, device)
    print(f"exported {args.world} world to {args.export_synthetic}: {len(cams['train'])} train + "
          f"{len(cams.get('test', []))} test frames at {args.size}x{args.size} in {time.perf_counter() - start:.1f} s",
          flush=True)


def fit(args) -> dict:
    device = _device(args.device)
    background = tuple(parse_color(args.background).tolist())
    folder = Path(args.folder)
    splits = available_splits(folder)
    test_split = next((s for s in ("test", "val") if s in splits), "train")
    train = read_posed_frames(folder, "train", background, args.downscale)
    test = read_posed_frames(folder, test_split, background, args.downscale)
    # The reader composites the frames on the background, so no masks (as PosedFrames4D.json passes none): a
    # fit given masks composites its targets again, which moves every anti-aliased edge towards the background.
    # Pixels the dataset marks to ignore (nerfstudio's mask_path, a lens's uncovered corners) are left out of
    # both fits, as the workflow links them.
    views = PosedImages(train.images, train.cameras, ignore=train.ignore)
    init, center, radius = init_sphere(train.cameras, args.init_points, args.init_radius, args.seed)
    start_from = (f"init {args.init_points} Gaussians, sphere radius {radius:.3f} at "
                  f"{[round(c, 3) for c in center.tolist()]}")
    if train.points is not None:  # as PosedFrames4D.json links the loader's points to the coarse stage's init
        init = from_points(train.points.to(device), train.point_colors).to("cpu")
        start_from = f"init the dataset's {len(init)} structure-from-motion points"

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = time.perf_counter()
    # gsplat may JIT-compile on first use. The init sphere, centred where the cameras look, is in view; a
    # sphere at the origin is not, for scenes away from it.
    warm = init.detach().clone().to(device).requires_grad_(True)
    training_render(warm, train.cameras[0].to(device), torch.ones(3, device=device)).rgb.sum().backward()
    print(f"device {name}, backends {available_backends()}, torch {torch.__version__}, "
          f"warm-up {time.perf_counter() - start:.1f} s", flush=True)
    print(f"{folder}: {train.layout} layout, {len(train.cameras)} train frames, {len(test.cameras)} {test_split} "
          f"frames, {train.cameras.width}x{train.cameras.height}; {start_from}", flush=True)

    windows: list[KernelWindow] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    try:
        scene, coarse, info = (fit_nodes if args.via == "nodes" else fit_engine)(
            init, views, args, background, device, windows)
        _sync(device)
        # The kernel windows' profiler start and stop are the bench's, not the fit's.
        bookkeeping = sum(w.bookkeeping_s for w in windows)
        seconds = time.perf_counter() - start - bookkeeping
    finally:
        for w in windows:
            w.close()
    if device.type == "cuda":
        peak = {"peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    else:
        peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    fine_score, rgb = score(scene, test.cameras, test.images, background, device, test.ignore)
    coarse_score, _ = score(Scene4D.static(coarse), test.cameras, test.images, background, device, test.ignore)
    if args.save_renders:
        save_renders(Path(args.save_renders), test.files, rgb, test.images)
    kernel = [r for r in (w.report() for w in windows) if r is not None]
    busy = sum(r["kernel_busy_s"] for r in kernel)
    share = busy / sum(r["wall_s"] for r in kernel) if kernel else None
    row = {
        "dataset": str(folder), "device": name, "via": args.via, **info, "train_frames": len(train.cameras),
        "test_split": test_split, "test_frames": len(test.cameras), "size": [train.cameras.width, train.cameras.height],
        "seconds": seconds, "profiler_bookkeeping_s": bookkeeping, "gaussians": len(scene.parts[0].gaussians),
        "test_psnr": fine_score["psnr"],
        "test_ssim": fine_score["ssim"], "coarse_only_psnr": coarse_score["psnr"],
        "coarse_only_ssim": coarse_score["ssim"], **peak, "gpu_kernel_share": share, "kernel_windows": kernel,
    }
    memory = (f"peak CUDA {peak['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in peak
              else f"peak RSS {peak['peak_rss_mib']:.0f} MiB (CPU)")
    print(f"fit ({args.via}: {info['coarse_iterations']} coarse + {info['fine_iterations']} fine) {seconds:.1f} s, "
          f"{row['gaussians']} Gaussians, {memory}, GPU kernel share "
          f"{'n/a (CPU)' if share is None and device.type != 'cuda' else ('n/a' if share is None else f'{share:.0%}')}",
          flush=True)
    print(f"{test_split}: PSNR {fine_score['psnr']:.2f} dB, SSIM {fine_score['ssim']:.4f} "
          f"(coarse alone {coarse_score['psnr']:.2f} dB, {coarse_score['ssim']:.4f})", flush=True)
    print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="dataset folder to fit (holding transforms*.json)")
    ap.add_argument("--export-synthetic", metavar="DIR", help="write a synthetic D-NeRF-layout dataset to DIR")
    ap.add_argument("--world", choices=("object", "scene"), default="object", help="synthetic world to export")
    ap.add_argument("--frames", type=int, default=100, help="exported training frames")
    ap.add_argument("--test-frames", type=int, default=20, help="exported test frames")
    ap.add_argument("--size", type=int, default=800, help="exported image width and height")
    ap.add_argument("--fov", type=float, default=40.0, help="exported field of view, degrees")
    ap.add_argument("--supersample", type=int, default=3, help="exported sub-pixel grid (odd)")
    ap.add_argument("--via", choices=("engine", "nodes"), default="engine", help="fit path (see above)")
    ap.add_argument("--workflow", choices=sorted(FIT_WORKFLOWS), default="posed_frames",
                    help="with --via nodes: the shipped workflow whose fit stages run")
    ap.add_argument("--coarse-iterations", type=int, default=0, help="0: the path's default (3000)")
    ap.add_argument("--fine-iterations", type=int, default=0, help="0: the path's default (5500)")
    ap.add_argument("--downscale", type=int, default=1, help="read the images downscaled by this factor")
    ap.add_argument("--background", default="#ffffff", help="background colour (D-NeRF: white)")
    ap.add_argument("--init-points", type=int, default=5000, help="Gaussians of the sphere init")
    ap.add_argument("--init-radius", type=float, default=None, help="sphere init radius (default: from cameras)")
    ap.add_argument("--profile-steps", type=int, default=50, help="steps per profiled window (CUDA; 0 = off)")
    ap.add_argument("--save-renders", metavar="DIR", help="write render | truth pairs of the scored split")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result row to this file")
    args = ap.parse_args()
    if not args.folder and not args.export_synthetic:
        ap.error("give a dataset folder to fit and/or --export-synthetic DIR")
    if args.export_synthetic:
        export(args)
    if args.folder:
        fit(args)


if __name__ == "__main__":
    main()
