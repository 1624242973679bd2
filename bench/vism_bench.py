# SPDX-License-Identifier: Apache-2.0
"""MoGe4D 4D-ViSM speed: tracks -> per-frame Gaussians -> render + hole mask along a camera path,
optionally followed by a Wan VACE video inpaint of the holes with random real-size weights.

Usage:
    python bench/vism_bench.py                        # CUDA: 49 frames of 512x368 tracks (188k points/frame)
    python bench/vism_bench.py --inpaint 1.3b         # + Wan2.1-VACE-1.3B-size inpainting (50 steps, CFG 6)
    python bench/vism_bench.py --inpaint 14b --steps 50
    python bench/vism_bench.py --tiny                 # CPU: 64x48, 5 frames, tiny inpainter

The tracks are the scene world's ground truth (``synthetic.trajectories``) at the input view; the
path is MoGe4D's ``orbit``. Prints one JSON line: seconds for splatting + sheet + render + hole mask
(after one warm-up run), frames per second, hole fraction, and peak GPU memory; with ``--inpaint``
also the inpainting seconds and seconds per denoising step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.backends.render import render_scene  # noqa: E402
from gen4d.core.engine.cameras import moge4d_path  # noqa: E402
from gen4d.core.moge4d.tracks import Tracks  # noqa: E402
from gen4d.core.moge4d.vism import VISM_INPAINT_DEFAULTS, inpaint_holes, render_vism  # noqa: E402
from gen4d.synthetic import scene_world, trajectories  # noqa: E402
from timing import peak_mib, sync  # noqa: E402

# Wan2.1 transformer sizes (diffusers configs of the public checkpoints).
WAN_SIZES = {
    "tiny": dict(num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, text_dim=16, freq_dim=16),
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096,
                 freq_dim=256),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096,
                freq_dim=256),
}


def make_tracks(width: int, height: int, frames: int, device: torch.device) -> Tracks:
    world = scene_world(0)
    src = world.reference_cameras(width, height, frames).to(device)
    return Tracks.from_world_dict(trajectories(world, src), src.Ks[0], src.viewmats[0], 8.0).to(device)


def materialise_random(transformer, *others, device: torch.device, dtype: torch.dtype) -> None:
    """Give meta-device Wan modules random weights on ``device`` (norms 1, tables 0, the rest N(0, 0.02))."""
    g = torch.Generator(device=device).manual_seed(0)
    for module in (transformer, *others):
        module.to_empty(device=device)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if p.dim() == 1 and ("norm" in name or name.endswith("scale_shift_table")):
                    p.fill_(1.0 if "norm" in name else 0.0)
                else:
                    p.normal_(0.0, 0.02, generator=g)
            for b in module.buffers():
                if b.is_floating_point() and not torch.isfinite(b).all():
                    b.zero_()
        module.to(dtype)
    for name in getattr(transformer, "_keep_in_fp32_modules", None) or ():
        for mod_name, mod in transformer.named_modules():
            if mod_name.split(".")[-1] == name:
                mod.float()
    # Buffers computed at construction (rotary tables) were not materialised: rebuild that module.
    rope = transformer.rope
    with torch.device(device):
        transformer.rope = type(rope)(rope.attention_head_dim, rope.patch_size, rope.max_seq_len)


def build_fun_inpainter(size: str, device: torch.device, dtype: torch.dtype):
    """A Wan2.1-Fun InP inpainter (36 input channels, CLIP image branch) with random weights of the given size."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from gen4d.backends.tiny.wan import write_tiny_t5_tokenizer
    from gen4d.backends.video_inpaint_fun import FunInpainter, FunInpLayout
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    folder = Path(tempfile.mkdtemp()) / "t5"
    write_tiny_t5_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cfg = WAN_SIZES[size]
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    tiny = size == "tiny"
    with torch.device("meta"):
        transformer = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=36, out_channels=16,
                                            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                                            image_dim=16 if tiny else 1280, added_kv_proj_dim=dim, **cfg)
        text = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer) if tiny else 256384, d_model=cfg["text_dim"], d_kv=8 if tiny else 64,
            d_ff=32 if tiny else 10240, num_layers=1 if tiny else 24, num_heads=2 if tiny else 64,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    materialise_random(transformer, text, device=device, dtype=dtype)
    vae = AutoencoderKLWan().to(device)
    none = Path(".")
    layout = FunInpLayout(root=none, base=none, shards=(), vae=none, t5=none, tokenizer=folder, clip=None, lora=None)
    return FunInpainter(transformer, vae, tokenizer, text, layout, dtype, weight_index={}, device=device)


def build_inpainter(size: str, device: torch.device, dtype: torch.dtype):
    """A Wan VACE inpainter with random weights of the given transformer size (built on meta, then materialised)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from gen4d.backends.tiny.wan import write_tiny_t5_tokenizer
    from gen4d.backends.video_inpaint import VideoInpainter
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    folder = Path(tempfile.mkdtemp()) / "t5"
    write_tiny_t5_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cfg = WAN_SIZES[size]
    z = 4 if size == "tiny" else 16
    layers = cfg["num_layers"]
    with torch.device("meta"):
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), in_channels=z, out_channels=z, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, rope_max_seq_len=1024, vace_layers=list(range(0, layers, 2)), vace_in_channels=2 * z + 64,
            **cfg)
        vocab = len(tokenizer) if size == "tiny" else 256384
        text_cfg = UMT5Config(vocab_size=vocab, d_model=cfg["text_dim"], d_kv=64 if size != "tiny" else 8,
                              d_ff=10240 if size != "tiny" else 32, num_layers=24 if size != "tiny" else 1,
                              num_heads=64 if size != "tiny" else 2, feed_forward_proj="gated-gelu", pad_token_id=0,
                              eos_token_id=1, decoder_start_token_id=0)
        text = UMT5EncoderModel(text_cfg)
    materialise_random(transformer, text, device=device, dtype=dtype)
    vae_kw = {} if size != "tiny" else dict(base_dim=8, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                            temperal_downsample=[False, True, True], latents_mean=[0.0] * z,
                                            latents_std=[1.0] * z)
    vae = AutoencoderKLWan(**vae_kw).to(device)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, scheduler=scheduler,
                           transformer=transformer)
    return VideoInpainter(pipe, Path(f"wan-vace-{size}-random"), dtype, device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU-sized run (64x48, 5 frames, tiny inpainter)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=368)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--inpaint", choices=("none", *WAN_SIZES), default="none")
    ap.add_argument("--model", choices=("fun", "vace"), default="fun",
                    help="inpainter family: Wan2.1-Fun InP (4D-ViSM's) or Wan VACE")
    ap.add_argument("--steps", type=int, default=VISM_INPAINT_DEFAULTS["steps"])
    args = ap.parse_args()
    if args.tiny:
        args.width, args.height, args.frames = 64, 48, 5
        args.inpaint = "tiny" if args.inpaint == "none" else args.inpaint
        args.steps = min(args.steps, 2)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    start = time.perf_counter()
    tracks = make_tracks(args.width, args.height, args.frames, device)
    sync()
    tracks_s = time.perf_counter() - start
    cams = moge4d_path("orbit", args.frames, args.width, args.height, pivot_depth=4.0).to(device)

    def render_fn(scene, cam):
        out = render_scene(scene, cam)
        return out.rgb, out.alpha, out.depth

    with torch.no_grad():
        render_vism(tracks, cams[:2], render_fn)                     # warm-up (gsplat JIT, allocator)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        result = render_vism(tracks, cams, render_fn)
        sync()
        render_s = time.perf_counter() - start
    report = {"bench": "vism", "device": str(device), "size": f"{args.width}x{args.height}", "frames": args.frames,
              "points_per_frame": tracks.num_valid, "ground_truth_tracks_s": round(tracks_s, 3),
              "render_s": round(render_s, 3), "render_fps": round(args.frames / render_s, 2),
              "hole_fraction": round(float(result.holes.float().mean()), 4), "peak_mib_render": peak_mib()}
    if args.inpaint != "none":
        build = build_fun_inpainter if args.model == "fun" else build_inpainter
        inpainter = build(args.inpaint, device, dtype)
        steps_done = []
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        inpaint_holes(inpainter, result, cams.to("cpu"), "a room", steps=args.steps,
                      callback=lambda s, n, p: steps_done.append(s))
        sync()
        seconds = time.perf_counter() - start
        family = "wan2.1-fun-inp" if args.model == "fun" else "wan-vace"
        report.update({"inpaint_model": f"{family}-{args.inpaint} (random weights, {dtype})", "inpaint_steps":
                       len(steps_done), "guidance_scale": VISM_INPAINT_DEFAULTS["guidance_scale"],
                       "inpaint_s": round(seconds, 3),
                       "inpaint_s_per_step": round(seconds / max(len(steps_done), 1), 3),
                       "peak_mib_inpaint": peak_mib()})
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
