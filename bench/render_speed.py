# SPDX-License-Identifier: Apache-2.0
"""Rasterizer speed: forward + backward time of the torch rasterizer (and gsplat on CUDA).

Usage:
    python bench/render_speed.py                      # CPU: 2k Gaussians, 128x128, 1 camera
    python bench/render_speed.py --n 50000 --size 256 --cams 4 --device cuda
Prints one line per backend: median seconds of forward+backward over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.core.engine.cameras import intrinsics_from_fov, orbit_poses  # noqa: E402
from gen4d.core.engine.rasterize import rasterize  # noqa: E402


def make_inputs(n: int, size: int, cams: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.5
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(-5.0, -3.5, generator=g))
    opacities = torch.empty(n).uniform_(0.1, 0.95, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmats = orbit_poses(torch.linspace(-20, 20, cams), torch.linspace(0, 270, cams), 2.5)
    Ks = intrinsics_from_fov(50.0, size, size).expand(cams, 3, 3).clone()
    params = [t.to(device).requires_grad_() for t in (means, quats, scales, opacities, colors)]
    return params, viewmats.to(device), Ks.to(device)


def timed(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # first call warms caches / JIT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cams", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    params, viewmats, Ks = make_inputs(args.n, args.size, args.cams, args.device)

    def step(fn):
        def run():
            colors, alphas = fn()
            (colors.square().sum() + alphas.sum()).backward()
        return run

    backends = {"torch": lambda: rasterize(*params, viewmats, Ks, args.size, args.size)}
    if args.device == "cuda":
        from gsplat import rasterization

        def gs():
            colors, alphas, _ = rasterization(*params, viewmats, Ks, args.size, args.size, render_mode="RGB+ED")
            return colors, alphas

        backends["gsplat"] = gs
    header = f"N={args.n} size={args.size} cams={args.cams} device={args.device} threads={torch.get_num_threads()}"
    print(header)
    for name, fn in backends.items():
        seconds = timed(step(fn), args.repeats, args.device)
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else float("nan")
        print(f"{name:7s} forward+backward {seconds * 1000:9.2f} ms  peak {peak:8.1f} MiB")


if __name__ == "__main__":
    main()
