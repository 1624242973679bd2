# SPDX-License-Identifier: Apache-2.0
"""Sequence parallelism of the two Wan-14B DiT stages on 1, 2 and 4 GPUs of one host.

For each stage (the 4D-STraG trajectory DiT, 17.1B parameters with its reference tokens and
MAdaNorm; the Wan2.1-Fun 14B InP transformer of 4D-ViSM) and each GPU count, ``torchrun`` starts
one rank per GPU; every rank builds the model at its published size with the same random weights
(bf16, no download; as bench/moge4d_bench.py) and runs the stage's own sampling loop
(``denoise_motion`` / ``denoise_inpaint``) for 50 flow-matching steps with classifier-free guidance
at the paper's setting, 49 frames x 512 x 368 (latents 13 x 46 x 64). Reported per stage and count:
    total_s        the 50-step loop (wall, after one warm-up step of the same shapes)
    speedup        1-GPU total_s / total_s   (targets: >= 1.8 on 2 GPUs, >= 3.3 on 4)
    max_rel_diff   max |latents - 1-GPU latents| / max |1-GPU latents|  (bf16 rounding expected)
    peak_mib       peak GPU memory of every rank
    layout         guidance groups x Ulysses ranks

Usage:
    python bench/parallel_bench.py                        # 1, 2, 4 GPUs (as many as the host has), both stages
    python bench/parallel_bench.py --gpus 1,2 --stage dit --no-cfg-parallel
    python bench/parallel_bench.py --tiny --gpus 1,2      # toy size on the CPU with gloo (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.backends import sequence_parallel as sp  # noqa: E402
from gen4d.backends.trajectory_dit import denoise_motion  # noqa: E402
from gen4d.backends.video_inpaint_fun import denoise_inpaint  # noqa: E402
from gen4d.backends.wan import params_on_meta  # noqa: E402
from moge4d_bench import TINY, WAN_14B, build, materialize_  # noqa: E402
from timing import sync  # noqa: E402

STEPS, GUIDANCE = 50, 6.0


class _Holder(torch.nn.Module):
    """Names the transformer ``wan.*`` so ``materialize_`` keeps the same modules in fp32 as the loaders."""

    def __init__(self, wan):
        super().__init__()
        self.wan = wan


def build_inp(tiny: bool, device: torch.device, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    c = TINY if tiny else WAN_14B
    with params_on_meta():
        wan = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=c.num_heads, attention_head_dim=c.dim // c.num_heads,
            in_channels=36, out_channels=16, text_dim=c.text_dim, freq_dim=c.freq_dim, ffn_dim=c.ffn_dim,
            num_layers=c.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
            image_dim=c.image_dim, added_kv_proj_dim=c.dim)
    materialize_(_Holder(wan), device, dtype)
    return wan.eval()


def worker(args) -> None:
    session = sp.init_from_env(cfg_parallel=not args.no_cfg_parallel)
    rank = 0 if session is None else session.rank
    if session is not None:
        device = session.device
    else:
        device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    c = TINY if args.tiny else WAN_14B
    frames, height, width = (5, 32, 48) if args.tiny else (49, 368, 512)
    t_lat, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    steps = 4 if args.tiny else STEPS
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, t_lat, h, w, generator=gen)
    text = torch.randn(2, 512, c.text_dim, generator=gen).to(dtype)
    clip = torch.randn(1, 257, c.image_dim, generator=gen).to(dtype)
    if args.stage == "dit":
        model = build(c, device, dtype, omni_dim=c.motion_dim, omni_depth=1 if args.tiny else 12,
                      omni_heads=2 if args.tiny else 12)
        cond = torch.randn(1, 48, t_lat, h, w, generator=gen)
        ref = torch.randn(1, 16, h, w, generator=gen)
        motion = torch.randn(1, c.motion_dim, 14, 14, generator=gen).to(dtype)

        def sample(n):
            return denoise_motion(session, model, latents, text, clip, cond, ref, motion, n, 3.0, GUIDANCE, dtype,
                                  device=device)
    else:
        model = build_inp(args.tiny, device, dtype)
        cond = torch.randn(1, 20, t_lat, h, w, generator=gen)

        def sample(n):
            return denoise_inpaint(session, model, latents, cond, text, clip, n, 5.0, 0, GUIDANCE, None, None, dtype,
                                   device=device)

    sample(1)  # warm-up: kernels, process groups, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    out = sample(steps)
    sync()
    total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    peaks = [peak]
    if session is not None:
        gathered = [None] * session.world
        torch.distributed.all_gather_object(gathered, peak)
        peaks = gathered
    if rank == 0:
        from safetensors.torch import save_file

        out_dir = Path(args.out)
        save_file({"latents": out.float().cpu().contiguous()}, str(out_dir / "latents.safetensors"))
        layout = session.layout(2) if session is not None else None
        (out_dir / "result.json").write_text(json.dumps({
            "total_s": round(total, 2), "step_s": round(total / steps, 3), "peak_mib": [round(p) for p in peaks],
            "layout": "1x1" if layout is None else f"{layout.cfg}x{layout.sp}",
            "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}))
    if session is not None:
        torch.distributed.destroy_process_group()


def drive(args) -> dict:
    from safetensors.torch import load_file

    counts = [int(n) for n in args.gpus.split(",")]
    if not args.tiny:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < 1:
            raise SystemExit("parallel_bench: CUDA is required at real size (use --tiny on the CPU)")
        counts = [n for n in counts if n <= have]
    stages = ["dit", "inpaint"] if args.stage == "both" else [args.stage]
    report: dict = {}
    for stage in stages:
        rows, base, base_t = {}, None, None
        for n in counts:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                       str(Path(__file__).resolve()), "--worker", "--stage", stage, "--out", tmp]
                cmd += ["--tiny"] * args.tiny + ["--no-cfg-parallel"] * args.no_cfg_parallel
                env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
                subprocess.run(cmd, check=True, env=env)
                row = json.loads((Path(tmp) / "result.json").read_text())
                lat = load_file(str(Path(tmp) / "latents.safetensors"))["latents"]
            if base is None:
                base, base_t = lat, row["total_s"]
            row["speedup"] = round(base_t / row["total_s"], 2)
            row["max_rel_diff"] = float(f"{float((lat - base).abs().max() / base.abs().max()):.3g}")
            rows[n] = row
            print(json.dumps({"stage": stage, "gpus": n, **row}), flush=True)
        report[stage] = rows
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", default="1,2,4", help="GPU counts to run (default 1,2,4)")
    parser.add_argument("--stage", choices=("dit", "inpaint", "both"), default="both")
    parser.add_argument("--no-cfg-parallel", action="store_true", help="every rank runs both guidance branches")
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (gloo)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        print(json.dumps(drive(args), indent=1))


if __name__ == "__main__":
    main()
