# SPDX-License-Identifier: Apache-2.0
"""Zero123-size score distillation on the GPU: seconds per SDS step and the guided CoCo4D foreground fit.

Builds a real-size Zero123 from configs with random weights (no download): the SD 1.x UNet with
8 input channels and 768-wide cross-attention, the SD VAE, a CLIP ViT-L/14 image encoder and the
772 -> 768 camera projection, in bf16.

Cases:
    step    seconds per SDS step, batch 4 at 256² (VAE encode + 2x UNet with CFG + backward), with
            the UNet and the VAE encoder compiled and replayed from CUDA graphs (the default; its first
            step, which compiles, apart), with graphs of the uncompiled passes, with the encoder eager, and
            all eager, each step waited for (its latency); and the graphed steps queued back to back as a
            fit runs them (its pace, ``..._pipelined``).
    fit     CoCo4D foreground with guidance on the object world: 1000 static + 800 deformation
            iterations, one SDS step (batch 4) per iteration (target: 60 s or less).
    first_step  only a process's first SDS step; in a second process right after, compiled passes come
            from inductor's on-disk cache, as in a restarted ComfyUI.

Usage: python bench/guidance_bench.py [--case step|fit|first_step] [--scale 1.0] [--repeat 1]
[--eager | --eager-encoder | --no-compile] [--profile]
The fit case first warms the fit engine as ``fit_bench`` does (``warm_up.py``: gsplat's extension, SSIM's
convolutions, fused Adam, the field's graphs, all paid once per process); the guidance's own first use stays
in the timed fit. ``--repeat N`` fits N times in one process, and the rows say which was the process's first
(before that warm-up, first fits took 73-75 s on H100s where fits after a short one took 62 s, the same code);
``--eager`` runs the fit with ``Zero123Guidance.cuda_graphs`` off (on by default), ``--eager-encoder`` with
the UNet graphed and the VAE encoder eager, ``--no-compile`` with graphs of the uncompiled passes
(``Zero123Guidance.torch_compile`` off; on by default, so a process's first fit also compiles), for the A/Bs;
``--profile`` also prints where a step's time goes (busiest operators, kernel time against wall time): in
the step case, of the SDS step alone, then of the eager step by operator and input shape; in the fit case,
of the static stage's last 50 steps, its SDS call a phase of its own (the fit's time then includes the
profiler's).
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
from fit_profile import StageProfile, phased_render  # noqa: E402
from gen4d import synthetic  # noqa: E402
from gen4d.backends.render import training_render  # noqa: E402
from gen4d.backends.zero123 import CameraProjection, Zero123Components, Zero123Guidance  # noqa: E402
from gen4d.core.coco4d.reference import reference_clip  # noqa: E402
from gen4d.core.engine.fit_dynamic import DeformationFitConfig, fit_deformation  # noqa: E402
from gen4d.core.engine.fit_static import StaticFitConfig, fit_static  # noqa: E402
from gen4d.core.engine.gaussians import sphere_init  # noqa: E402
from timing import (  # noqa: E402
    StepClock,
    peak_mib,
    profile_sds_step,
    sds_first_step_seconds,
    sds_step_seconds,
    sds_step_seconds_pipelined,
    sync,
)
from warm_up import warm_up_engine  # noqa: E402


def real_size_zero123(device: torch.device, dtype: torch.dtype) -> Zero123Components:
    """Zero123 at its published sizes with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=32, in_channels=8, out_channels=4, cross_attention_dim=768,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                    attention_head_dim=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=256,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=768))
        projection = CameraProjection(768, 4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    for module in (unet, vae, clip, projection):
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Zero123Components(Path("zero123-random"), unet, vae, clip, projection,
                             scheduler.alphas_cumprod, 1000, "epsilon", dtype=dtype)


def condition_image():
    """The object world's reference view at 256², the step case's condition image."""
    world = synthetic.object_world(0)
    return synthetic.render(world, world.reference_cameras(256, 256, 1))["rgb"][0]


def guidance_for(components, graphs: str = "all", condition=None, compiled: bool = True) -> Zero123Guidance:
    """The bench's guidance (``condition`` or the step case's image) with its CUDA graphs: "all" (the
    default), "unet" (the VAE encoder eager) or "none"; ``compiled``: the graphs capture compiled passes."""
    condition = condition_image() if condition is None else condition
    guidance = Zero123Guidance(components, condition, cuda_graphs=graphs != "none", torch_compile=compiled)
    if graphs == "unet":
        guidance.encode_latents().enabled = False
    return guidance


def case_step(components, device) -> dict:
    guidances = {"compiled": guidance_for(components, "all")}
    guidances.update({graphs: guidance_for(components, graphs, compiled=False) for graphs in ("all", "unet", "none")})
    first = sds_first_step_seconds(guidances["compiled"], device)
    seconds = {graphs: sds_step_seconds(guidance, device) for graphs, guidance in guidances.items()}
    return {"case": "step", "batch": 4, "size": 256, "first_step_seconds_compiling": first,
            "seconds_per_sds_step": seconds["compiled"], "seconds_per_sds_step_uncompiled": seconds["all"],
            "seconds_per_sds_step_eager_encoder": seconds["unet"], "seconds_per_sds_step_eager": seconds["none"],
            "seconds_per_sds_step_pipelined": sds_step_seconds_pipelined(guidances["compiled"], device),
            "seconds_per_sds_step_pipelined_uncompiled": sds_step_seconds_pipelined(guidances["all"], device),
            "seconds_per_sds_step_pipelined_eager_encoder": sds_step_seconds_pipelined(guidances["unet"], device),
            "peak_mib": peak_mib()}


def case_fit(components, device, scale: float, graphs: str = "all", profiled: bool = False,
             compiled: bool = True) -> dict:
    world = synthetic.object_world(0)
    truth = synthetic.render(world, world.reference_cameras(256, 256, 16), supersample=3)
    clip = reference_clip(truth["rgb"], truth["foreground"], center=True)
    guidance = guidance_for(components, graphs, clip.views.images, compiled)
    s_iters, d_iters = max(int(1000 * scale), 1), max(int(800 * scale), 1)
    init = sphere_init(5000, 0.5, generator=torch.Generator().manual_seed(0))
    # The static stage's last 50 steps: enough to average, and the profiler's own work stays short.
    window = StageProfile(max(s_iters - 50, 0), device, [(Zero123Guidance, "sds_loss", "sds")]) if profiled else None
    sync()
    start = time.perf_counter()
    static_clock = StepClock(window.step if window else None)
    try:
        static = fit_static(init, clip.views.subset([0]), phased_render() if profiled else training_render,
                            replace(StaticFitConfig(iterations=s_iters, preview_every=0)), guidance,
                            static_clock, device=device)
    finally:
        if window is not None:
            window.close()
    sync()
    mid = time.perf_counter()
    deformation_clock = StepClock()
    fit_deformation(static.gaussians, clip.views, training_render,
                    DeformationFitConfig(iterations=d_iters, preview_every=0), guidance, deformation_clock,
                    device=device)
    sync()
    end = time.perf_counter()
    return {"case": "fit", "static_iterations": s_iters, "deformation_iterations": d_iters,
            "static_seconds": mid - start, "deformation_seconds": end - mid, "total_seconds": end - start,
            **static_clock.summary("static"), **deformation_clock.summary("deformation"),
            "target_seconds": 60.0, "cuda_graphs": graphs, "torch_compile": compiled, "profiled": profiled,
            "peak_mib": peak_mib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=("step", "fit", "first_step"), action="append",
                    help="first_step: only the process's first SDS step (moving, capturing and, compiled, compiling "
                         "or reading inductor's on-disk cache); run it in two processes in a row to see what the "
                         "cache saves a restarted ComfyUI")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1,
                    help="fits in one process: the first also meets the guidance's first use in the process; "
                         "later ones run as a second queue in a running ComfyUI does")
    eager = ap.add_mutually_exclusive_group()
    eager.add_argument("--eager", action="store_true", help="no CUDA graphs: the UNet and the VAE encoder eager")
    eager.add_argument("--eager-encoder", action="store_true", help="the UNet graphed, the VAE encoder eager")
    eager.add_argument("--no-compile", action="store_true", help="graphs of the uncompiled UNet and VAE encoder")
    ap.add_argument("--profile", action="store_true",
                    help="profile the SDS step (graphed UNet) after timing it, and the fit's static stage")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    components = real_size_zero123(device, dtype)
    params = sum(p.numel() for m in components.modules for p in m.parameters())
    print(f"device {device}, Zero123 components {params / 1e6:.0f}M parameters, {dtype}, "
          f"built in {time.perf_counter() - start:.1f} s", flush=True)
    graphs = "none" if args.eager else "unet" if args.eager_encoder else "all"
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    for case in args.case or ["step", "fit"]:
        if case == "first_step":
            guidance = guidance_for(components, graphs, compiled=not args.no_compile)
            print(json.dumps({"case": "first_step", "seconds": sds_first_step_seconds(guidance, device),
                              "cuda_graphs": graphs, "torch_compile": not args.no_compile}), flush=True)
            continue
        if case == "step":
            print(json.dumps(case_step(components, device)), flush=True)
            if args.profile:
                profile_sds_step(guidance_for(components, graphs, compiled=not args.no_compile), device)
                print("The eager step by operator and input shape (which operators the kernels belong to):",
                      flush=True)
                profile_sds_step(guidance_for(components, "none"), device, by_operator=True)
            continue
        start = time.perf_counter()
        warm_up_engine(device)
        print(f"engine warm-up {time.perf_counter() - start:.1f} s", flush=True)
        for run in range(1, args.repeat + 1):
            row = case_fit(components, device, args.scale, graphs, args.profile, compiled=not args.no_compile)
            print(json.dumps({**row, "run": run, "first_in_process": run == 1}), flush=True)


if __name__ == "__main__":
    main()
