# SPDX-License-Identifier: Apache-2.0
"""Model-backend timings on the GPU with real-size random weights built from configs (no download).

Cases:
    sd_sds   Stable Diffusion 2.1-base SDS step: renders batch 4 at 256², upsampled to 512, CFG.
    sam2     SAM2 video propagation at 1024 (transformers' default Sam2VideoConfig sizes), per frame.

Usage: python bench/backends_bench.py [--case sd_sds] [--frames 16]
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
from gen4d.backends.sam2_video import Sam2VideoSegmenter  # noqa: E402
from gen4d.backends.sd_guidance import SDComponents, SDGuidance, write_tiny_tokenizer  # noqa: E402
from gen4d.core.guidance import PoseSampling, sample_guidance_cameras  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def real_size_sd21(device: torch.device, dtype: torch.dtype) -> SDComponents:
    """SD 2.1-base at its published sizes (OpenCLIP-H text tower) with random weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=1024,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                    attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                            num_hidden_layers=23, num_attention_heads=16,
                                            max_position_embeddings=77, hidden_act="gelu"))
    folder = Path(tempfile.mkdtemp()) / "tokenizer"
    write_tiny_tokenizer(folder)  # speed does not depend on the vocabulary; the text is encoded once
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    for module in (unet, vae, text):
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return SDComponents(Path("sd21-random"), unet, vae, text, tokenizer, scheduler.alphas_cumprod.to(device), 1000,
                        "epsilon", dtype=dtype)


def case_sd_sds(device: torch.device, dtype: torch.dtype) -> dict:
    components = real_size_sd21(device, dtype)
    guidance = SDGuidance(components, "a cozy room", guidance_scale=100.0)
    cams = sample_guidance_cameras(PoseSampling(batch=4), 0.0, torch.Generator().manual_seed(0))
    images = torch.rand(4, 256, 256, 3, device=device, requires_grad=True)
    times = []
    for i in range(12):
        _sync()
        start = time.perf_counter()
        guidance.sds_loss(images, cams, 0.0, i / 11).backward()
        _sync()
        times.append(time.perf_counter() - start)
    steady = sorted(times[2:])[len(times[2:]) // 2]
    return {"case": "sd_sds", "batch": 4, "render_size": 256, "model_size": components.resolution,
            "seconds_per_sds_step": steady, "peak_mib": _peak()}


def case_sam2(device: torch.device, dtype: torch.dtype, frames: int) -> dict:
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(0)
    config = Sam2VideoConfig()
    with torch.device(device):
        model = Sam2VideoModel(config).eval()
    segmenter = Sam2VideoSegmenter(model, Path("sam2-random"), device=device, dtype=dtype)
    video = torch.rand(frames, 1024, 1024, 3)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    segmenter.segment(video[:2], points=[[512, 512]])  # warm-up
    _sync()
    start = time.perf_counter()
    segmenter.segment(video, points=[[512, 512]])
    _sync()
    seconds = time.perf_counter() - start
    return {"case": "sam2", "image_size": int(config.image_size), "frames": frames, "params_m": params,
            "seconds_per_frame": seconds / frames, "peak_mib": _peak()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=("sd_sds", "sam2"), action="append")
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for case in args.case or ["sd_sds", "sam2"]:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        row = case_sd_sds(device, dtype) if case == "sd_sds" else case_sam2(device, dtype, args.frames)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
