# SPDX-License-Identifier: Apache-2.0
"""Model-backend timings on the GPU with real-size random weights built from configs (no download).

Cases:
    sd_sds         Stable Diffusion 2.1-base SDS step: renders batch 4 at 256², upsampled to 512, CFG.
    sam2           SAM2 video propagation at 1024 (transformers' default Sam2VideoConfig sizes), per frame.
    sdxl_inpaint   SDXL inpainting at 1024², 30 steps.
    video_inpaint  Wan2.1-VACE-1.3B sizes (UMT5-XXL text encoder), 33 frames at 832x480, CoCo4D's eq. 7
                   refinement: a 30-step schedule started at noise level 0.7, the pasted region's latents at
                   0.5; seconds per frame.

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
from gen4d.backends.inpaint import ImageInpainter  # noqa: E402
from gen4d.backends.sam2_video import Sam2VideoSegmenter  # noqa: E402
from gen4d.backends.sd_guidance import SDComponents, SDGuidance  # noqa: E402
from gen4d.backends.tiny.sd import write_tiny_tokenizer  # noqa: E402
from gen4d.backends.tiny.wan import write_tiny_t5_tokenizer  # noqa: E402
from gen4d.backends.video_inpaint import VideoInpainter  # noqa: E402
from timing import peak_mib, sds_step_seconds, sync  # noqa: E402


def real_size_sd21(device: torch.device, dtype: torch.dtype) -> SDComponents:
    """SD 2.1-base at its published sizes (OpenCLIP-H text tower) with random weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

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
    tokenizer = _tiny_clip_tokenizer()  # the text is encoded once; speed does not depend on the vocabulary
    for module in (unet, vae, text):
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return SDComponents(Path("sd21-random"), unet, vae, text, tokenizer, scheduler.alphas_cumprod, 1000,
                        "epsilon", dtype=dtype)


def case_sd_sds(device: torch.device, dtype: torch.dtype) -> dict:
    components = real_size_sd21(device, dtype)
    guidance = SDGuidance(components, "a cozy room", guidance_scale=100.0)
    steady = sds_step_seconds(guidance, device)
    return {"case": "sd_sds", "batch": 4, "render_size": 256, "model_size": components.resolution,
            "seconds_per_sds_step": steady, "peak_mib": peak_mib()}


def real_size_sam2(device: torch.device, dtype: torch.dtype) -> Sam2VideoSegmenter:
    """SAM2 video at transformers' default (hiera) sizes with random weights."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(0)
    with torch.device(device):
        model = Sam2VideoModel(Sam2VideoConfig()).eval()
    return Sam2VideoSegmenter(model, Path("sam2-random"), device=device, dtype=dtype)


def case_sam2(device: torch.device, dtype: torch.dtype, frames: int) -> dict:
    segmenter = real_size_sam2(device, dtype)
    model, config = segmenter.model, segmenter.model.config
    video = torch.rand(frames, 1024, 1024, 3)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    segmenter.segment(video[:2], points=[[512, 512]])  # warm-up
    sync()
    start = time.perf_counter()
    segmenter.segment(video, points=[[512, 512]])
    sync()
    seconds = time.perf_counter() - start
    return {"case": "sam2", "image_size": int(config.image_size), "frames": frames, "params_m": params,
            "seconds_per_frame": seconds / frames, "peak_mib": peak_mib()}


def _tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    folder = Path(tempfile.mkdtemp()) / "tokenizer"
    write_tiny_tokenizer(folder)  # speed does not depend on the vocabulary
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def real_size_sdxl_inpainter(device: torch.device, dtype: torch.dtype) -> ImageInpainter:
    """SDXL inpainting at its published sizes with random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=9, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=1024,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, scaling_factor=0.13025,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text_l = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                              num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
                                              hidden_act="quick_gelu"))
        text_g = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            projection_dim=1280, hidden_act="gelu"))
    tokenizer = _tiny_clip_tokenizer()
    pipe = StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=text_l, text_encoder_2=text_g, tokenizer=tokenizer,
                                            tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler(),
                                            requires_aesthetics_score=False)
    pipe.to(device=device, dtype=dtype)
    return ImageInpainter(pipe, Path("sdxl-inpaint-random"), "sdxl", dtype, device=device)


def case_sdxl_inpaint(device: torch.device, dtype: torch.dtype) -> dict:
    inpainter = real_size_sdxl_inpainter(device, dtype)
    image = torch.rand(1024, 1024, 3)
    mask = torch.zeros(1024, 1024)
    mask[256:768, 256:768] = 1.0
    inpainter.inpaint(image, mask, "a room", steps=2)  # warm-up
    sync()
    start = time.perf_counter()
    inpainter.inpaint(image, mask, "a room", steps=30)
    sync()
    return {"case": "sdxl_inpaint", "size": 1024, "steps": 30, "seconds": time.perf_counter() - start,
            "peak_mib": peak_mib()}


def real_size_vace(device: torch.device, dtype: torch.dtype) -> VideoInpainter:
    """Wan2.1-VACE-1.3B at its published sizes (UMT5-XXL text encoder) with random weights."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    folder = Path(tempfile.mkdtemp()) / "t5"
    write_tiny_t5_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, vace_layers=list(range(0, 30, 2)),
            vace_in_channels=96)
        vae = AutoencoderKLWan()
        text = UMT5EncoderModel(UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                           num_heads=64, feed_forward_proj="gated-gelu"))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, scheduler=scheduler,
                           transformer=transformer)
    transformer.to(dtype=dtype)
    text.to(dtype=dtype)
    return VideoInpainter(pipe, Path("wan-vace-1.3b-random"), dtype, device=device)


def case_video_inpaint(device: torch.device, dtype: torch.dtype, frames: int = 33) -> dict:
    inpainter = real_size_vace(device, dtype)
    video = torch.rand(frames, 480, 832, 3)
    masks = torch.zeros(frames, 480, 832)
    masks[:, :, :300] = 1.0
    inpainter.inpaint(video[:5], masks[:5], "a room", noise_level=0.7, steps=2)  # warm-up
    sync()
    steps_run = []
    start = time.perf_counter()
    inpainter.inpaint(video, masks, "a room", noise_level=0.7, steps=30, paste_mask=masks, paste_noise_level=0.5,
                      callback=lambda i, n, _p: steps_run.append(n))
    sync()
    seconds = time.perf_counter() - start
    return {"case": "video_inpaint", "frames": frames, "size": "832x480", "steps_run": steps_run[-1],
            "seconds": seconds, "seconds_per_frame": seconds / frames, "peak_mib": peak_mib()}


CASES = ("sd_sds", "sam2", "sdxl_inpaint", "video_inpaint")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=CASES, action="append")
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    run = {"sd_sds": lambda: case_sd_sds(device, dtype), "sam2": lambda: case_sam2(device, dtype, args.frames),
           "sdxl_inpaint": lambda: case_sdxl_inpaint(device, dtype),
           "video_inpaint": lambda: case_video_inpaint(device, dtype)}
    for case in args.case or list(CASES):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(json.dumps(run[case]()), flush=True)


if __name__ == "__main__":
    main()
