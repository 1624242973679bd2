# SPDX-License-Identifier: Apache-2.0
"""MoGe4D 4D-STraG at real size on the GPU: seconds per sampling step with CFG, the 50-step time, peak memory.

Builds the trajectory DiT from configs with random weights (no download): Wan2.1-14B (dim 5120, 40
layers, 40 heads, FFN 13824, UMT5 text width 4096, CLIP image width 1280) with the 4D-STraG input
(64 channels: noise | image | start image | depth latents), the reference-image tokens and MAdaNorm
in every block, plus the OmniMAE ViT-B motion-feature extractor. Parameters are created on the meta
device and materialised directly on the GPU in bf16 (norms, modulation tables and the time embedder
in fp32, as the loader keeps them), then initialised there.

Measures, at the paper's setting 49 frames x 512 x 368 (latents 13 x 46 x 64, 14 x 23 x 32 = 10304
tokens with the reference frame), batch 2 (classifier-free guidance):
    step_s        median seconds of one sampling step (DiT forward on the CFG batch + guidance + Euler step)
    total_50_est  50 x step_s (plus the one-off motion-feature pass)
    total_50_s    the measured 50-step loop, when the estimate fits --budget seconds (or --full)
    peak_mib      peak GPU memory
(The ViSM render / inpaint time is measured by bench/vism_bench.py.)

With ``--lowvram`` the weights live on the CPU and the DiT's blocks are streamed to the GPU one at a
time (``backends.memory.place`` under the ``"stream"`` policy, as under ComfyUI's ``--lowvram``);
``peak_mib`` then counts from the placement on, and ``--vram-gib N`` caps the allocator at N GiB
(``torch.cuda.set_per_process_memory_fraction``) to check that the run fits a smaller card.

Usage:
    python bench/moge4d_bench.py                 # real size on CUDA
    python bench/moge4d_bench.py --budget 400    # measure the full 50 steps only if they fit 400 s
    python bench/moge4d_bench.py --tiny          # toy size on the CPU (a smoke run of the same code)
    python bench/moge4d_bench.py --lowvram --vram-gib 24 --budget 0   # blocks streamed, a 24 GiB card
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.backends import memory  # noqa: E402
from gen4d.backends.trajectory_dit_modules import DiTConfig, OmniMAEFeatures, TrajectoryDiT  # noqa: E402
from gen4d.backends.wan import params_on_meta  # noqa: E402
from timing import peak_mib, sync  # noqa: E402

WAN_14B = DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096, freq_dim=256,
                    image_dim=1280, motion_dim=768)
TINY = DiTConfig(dim=32, ffn_dim=64, num_heads=4, num_layers=2, text_dim=16, freq_dim=16, image_dim=24,
                 motion_dim=16)
_FP32 = ("scale_shift_table", "norm1", "norm2", "norm3", "time_embedder")  # inside wan.*, as the loader keeps them


@torch.no_grad()
def materialize_(module: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int = 0) -> None:
    """Replace meta parameters by tensors on ``device`` initialised there: matrices N(0, 1/fan_in),
    biases 0, norm scales 1, modulation tables N(0, 1/dim), MAdaNorm gates N(0, 0.02); buffers moved."""
    gen = torch.Generator(device=device).manual_seed(seed)
    for mod_name, mod in module.named_modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            full = f"{mod_name}.{name}"
            target = torch.float32 if full.startswith("wan.") and any(k in full for k in _FP32) else dtype
            t = torch.empty(p.shape, device=device, dtype=target)
            if name == "bias":
                t.zero_()
            elif "scale_shift_table" in full:
                t.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
            elif name == "gate":
                t.normal_(0.0, 0.02, generator=gen)
            elif p.dim() == 1:
                t.fill_(1.0)
            else:
                t.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
            mod._parameters[name] = torch.nn.Parameter(t, requires_grad=False)
        for name, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[name] = b.to(device)


def build(config: DiTConfig, device: torch.device, dtype: torch.dtype, omni_dim: int, omni_depth: int,
          omni_heads: int) -> TrajectoryDiT:
    with params_on_meta():
        dit = TrajectoryDiT(config, OmniMAEFeatures(dim=omni_dim, depth=omni_depth, heads=omni_heads))
    materialize_(dit, device, dtype)
    return dit.eval()


def run(args) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    tiny = args.tiny
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("moge4d_bench: CUDA is required at real size (use --tiny on the CPU)")
    device = torch.device("cpu" if tiny else "cuda")
    dtype = torch.float32 if tiny else torch.bfloat16
    config = TINY if tiny else WAN_14B
    frames, height, width = (5, 32, 48) if tiny else (49, 368, 512)
    t_lat, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    text_len = 8 if tiny else 512
    start = time.perf_counter()
    dit = build(config, device, dtype, omni_dim=config.motion_dim, omni_depth=1 if tiny else 12,
                omni_heads=2 if tiny else 12)
    sync()
    build_s = time.perf_counter() - start
    placed = None
    if args.lowvram:
        dit.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            if args.vram_gib:
                total = torch.cuda.get_device_properties(device).total_memory
                index = device.index if device.index is not None else torch.cuda.current_device()
                torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_gib * 2**30 / total), index)
        memory.set_offload_policy("stream")
        t0 = time.perf_counter()
        placed = memory.place([dit], device)
        sync()
        place_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in dit.parameters())
    gen = torch.Generator(device="cpu").manual_seed(0)
    b = 2  # classifier-free guidance batch
    latents = torch.randn(1, 16, t_lat, h, w, generator=gen).to(device)
    cond = torch.randn(1, 48, t_lat, h, w, generator=gen).to(device, dtype).expand(b, -1, -1, -1, -1)
    ref = torch.randn(1, 16, h, w, generator=gen).to(device, dtype).expand(b, -1, -1, -1)
    text = torch.randn(b, text_len, config.text_dim, generator=gen).to(device, dtype)
    clip = torch.randn(1, 257, config.image_dim, generator=gen).to(device, dtype).expand(b, -1, -1)
    image = torch.rand(1, 3, height, width, generator=gen).to(device)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        motion = dit.motion_features(image).expand(b, -1, -1, -1)
        sync()
        motion_s = time.perf_counter() - t0
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(50, device=device)

    def step(i: int, x: torch.Tensor) -> torch.Tensor:
        t = scheduler.timesteps[i]
        v = dit(x.expand(b, -1, -1, -1, -1).to(dtype), t.expand(b), text, clip, cond, ref, motion).float()
        v_u, v_c = v.chunk(2)
        return scheduler.step(v_u + 6.0 * (v_c - v_u), t, x, return_dict=False)[0]

    times = []
    with torch.no_grad():
        x = latents
        for i in range(args.repeats + 1):  # first step is warm-up
            sync()
            t0 = time.perf_counter()
            x = step(i, x)
            sync()
            times.append(time.perf_counter() - t0)
    steady = sorted(times[1:])
    step_s = steady[len(steady) // 2]
    est = 50 * step_s + motion_s
    case = ("tiny-cpu" if tiny else "wan14b-bf16") + ("-lowvram" if args.lowvram else "")
    out = {"case": case, "params_b": round(n_params / 1e9, 3),
           "tokens": (t_lat + 1) * (h // 2) * (w // 2), "build_s": round(build_s, 2),
           "motion_features_s": round(motion_s, 3), "step_s": round(step_s, 3), "total_50_est_s": round(est, 1)}
    if args.full or est <= args.budget:
        scheduler.set_timesteps(50, device=device)
        with torch.no_grad():
            x = latents
            sync()
            t0 = time.perf_counter()
            for i in range(50):
                x = step(i, x)
            sync()
        out["total_50_s"] = round(time.perf_counter() - t0 + motion_s, 1)
        out["finite"] = bool(torch.isfinite(x).all())
    peak = peak_mib()
    out["peak_mib"] = None if peak is None else round(peak)
    if placed is not None:
        out["placement"] = placed.mode
        out["place_s"] = round(place_s, 2)
        out["vram_cap_gib"] = args.vram_gib or None
        placed.release()
        out["parked_on_cpu"] = all(p.device.type == "cpu" for p in dit.parameters())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--budget", type=float, default=420.0, help="run the full 50 steps if estimated below this")
    parser.add_argument("--full", action="store_true", help="always run the full 50 steps")
    parser.add_argument("--lowvram", action="store_true",
                        help="weights on the CPU, the DiT's blocks streamed to the GPU one at a time")
    parser.add_argument("--vram-gib", type=float, default=0.0,
                        help="with --lowvram: cap the GPU allocator at this many GiB (0: no cap)")
    args = parser.parse_args()
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
