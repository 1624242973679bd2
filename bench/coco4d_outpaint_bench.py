# SPDX-License-Identifier: Apache-2.0
"""CoCo4D progressive outpaint (Gen4D_ProgressiveOutpaint's core) at paper settings: time per stage,
peak GPU memory, and quality against the scene world's ground truth.

Paper settings (App. A, Table 4): 2 loops x 4 poses, lift at 256², 300 static + 300 deformation
iterations at the seen view / reference video, 300 + 300 per camera pose, scale clamp 0.2, batch of
4 timestamps, full-resolution training (default 512x512, 16 frames: DynamiCrafter's clip length).

Models:
    oracle (default)   the synthetic oracles (true depth, inpainters answering with the true background);
                       their time is the ray caster's (CPU), not a network's, so the "inpaint",
                       "video_inpaint" and "reference_fill" stages measure the oracles.
    folders            real backends from model folders: --depth-folder (Depth Anything V2, transformers),
                       --inpaint-folder (SD 2.x / SDXL inpainting, diffusers), --video-inpaint-folder
                       (Wan VACE, diffusers), e.g. real-size random-weight folders.
    tiny               the same real backends from tiny random-weight folders built here (wiring check).

Usage:
    python bench/coco4d_outpaint_bench.py [--width 512 --height 512 --frames 16] [--models oracle] [--json out.json]
    python bench/coco4d_outpaint_bench.py --tiny          # CPU, 48x48, 4 frames, few iterations
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d import synthetic  # noqa: E402
from gen4d.backends.render import available_backends, render_scene, training_render  # noqa: E402
from gen4d.core.coco4d.outpaint import OutpaintConfig, outpaint_cameras, progressive_outpaint  # noqa: E402
from gen4d.core.engine.losses import psnr  # noqa: E402
from gen4d.synthetic.oracles import (  # noqa: E402
    OracleDepth,
    OracleImageInpainter,
    OracleVideoInpainter,
    background_world,
)

logger = logging.getLogger("coco4d_outpaint_bench")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _models(kind: str, world, args, device: torch.device):
    """(depth, image inpainter, video inpainter) of the chosen kind."""
    if kind == "oracle":
        ss = args.oracle_supersample
        return (OracleDepth(world, supersample=1), OracleImageInpainter(world, supersample=ss),
                OracleVideoInpainter(world, supersample=ss))
    from gen4d.backends.depth import DepthAnythingV2
    from gen4d.backends.inpaint import load_image_inpainter
    from gen4d.backends.video_inpaint import load_video_inpainter

    if kind == "tiny":
        from gen4d.backends.tiny import build_tiny

        root = Path(tempfile.mkdtemp(prefix="gen4d_outpaint_bench_"))
        folders = tuple(build_tiny(k, root) for k in ("depth", "inpaint_sd", "video_inpaint_wan_vace"))
    else:
        folders = (args.depth_folder, args.inpaint_folder, args.video_inpaint_folder)
        if not all(folders):
            raise SystemExit("--models folders needs --depth-folder, --inpaint-folder and --video-inpaint-folder")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    depth = DepthAnythingV2.load(folders[0], device=device, dtype=dtype)
    image = load_image_inpainter(folders[1], dtype)
    video = load_video_inpainter(folders[2], dtype)
    for model in (image, video):
        model.device = device
    return depth, image, video


def run(args) -> dict:
    device = torch.device("cpu") if args.tiny else _device()
    world = synthetic.scene_world(args.seed)
    cams = world.reference_cameras(args.width, args.height, args.frames)
    tic = time.perf_counter()
    truth = synthetic.render(world, cams, supersample=args.oracle_supersample)
    frames, holes = truth["rgb"], (truth["foreground"] > 0).float()
    setup_s = time.perf_counter() - tic
    depth, image, video = _models(args.models, world, args, device)
    s = args.scale
    config = OutpaintConfig(
        lift_size=args.lift_size, static_iterations=max(int(300 * s), 1), deformation_iterations=max(int(300 * s), 1),
        static_iterations_per_pose=max(int(300 * s), 1), deformation_iterations_per_pose=max(int(300 * s), 1),
        inpaint_steps=args.steps, video_inpaint_steps=args.steps, preview_every=0, seed=args.seed)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    result = progressive_outpaint(frames, holes, depth, image, video, training_render, cameras=cams,
                                  prompt="a sunny courtyard", config=config, device=device)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    total_s = time.perf_counter() - tic
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    report = result.report
    # Quality against the background world (foreground removed), at three times.
    bg_world = background_world(world)
    sel = torch.tensor(sorted({0, args.frames // 2, args.frames - 1}))
    scene = result.scene

    def score(cameras):
        gt = synthetic.render(bg_world, cameras, supersample=args.oracle_supersample)["rgb"]
        with torch.no_grad():
            out = render_scene(scene, cameras, background=torch.zeros(3))
        return (round(float(psnr(out.rgb.clamp(0, 1).cpu(), gt)), 2),
                round(float((out.alpha < 0.5).float().mean()), 4))

    quality = {"reference": score(cams[sel])}
    for pose in ((0.0, 20.0), (10.0, -25.0)):
        quality[f"pose_{pose[0]:g}_{pose[1]:g}"] = score(outpaint_cameras(cams, [pose], report.radius)[0][sel])
    return {
        "settings": {"width": args.width, "height": args.height, "frames": args.frames, "lift_size": args.lift_size,
                     "iterations_scale": s, "models": args.models, "device": str(device),
                     "render_backends": available_backends(), "loops": config.loops,
                     "poses": sum(len(p) for p in config.active_pose_sets)},
        "seconds": {"ground_truth_setup": round(setup_s, 2), "total": round(total_s, 2),
                    **{k: round(v, 2) for k, v in report.stages.items()}},
        "peak_gpu_mib": None if peak is None else round(peak, 1),
        "gaussians": {"lifted": report.lift_gaussians, "final": report.final_gaussians},
        "poses": [{"loop": p.loop, "pose": [p.elevation, p.azimuth], "hole_before": round(p.hole_before, 4),
                   "hole_after": None if p.hole_after is None else round(p.hole_after, 4), "skipped": p.skipped,
                   "new_gaussians": p.new_gaussians} for p in report.poses],
        "quality_psnr_db_and_hole_fraction": quality,
        "warnings": report.warnings,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--lift-size", type=int, default=256)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every iteration count (Table 4 at 1.0)")
    ap.add_argument("--steps", type=int, default=30, help="denoising steps of the real inpainters")
    ap.add_argument("--models", choices=("oracle", "folders", "tiny"), default="oracle")
    ap.add_argument("--depth-folder")
    ap.add_argument("--inpaint-folder")
    ap.add_argument("--video-inpaint-folder")
    ap.add_argument("--oracle-supersample", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: 48x48, 4 frames, lift 48, 2 %% iterations")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.tiny:
        args.width, args.height, args.frames, args.lift_size = 48, 48, 4, 48
        args.scale = min(args.scale, 0.02)
        args.steps = min(args.steps, 2)
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    logging.basicConfig(level=logging.WARNING)
    out = run(args)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
