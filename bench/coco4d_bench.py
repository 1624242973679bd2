# SPDX-License-Identifier: Apache-2.0
"""The whole CoCo4D pipeline (reference video aside) at paper settings: time per stage, total, peak memory.

Command (H200):
    python bench/coco4d_bench.py                 # 16 frames at 512x320 (DynamiCrafter's clip), paper iterations
    python bench/coco4d_bench.py --tiny          # CPU smoke run: toy sizes, few iterations, oracles only

Every model runs at its published size with random weights: SAM2 (hiera, 1024), Zero123 (SDS on the
foreground), Depth Anything V2 Small, SD 2.1-base (SDS on the background), SDXL inpainting and Wan2.1-VACE-1.3B
(video inpainting). Random weights produce noise, which would derail the stages after them (an empty mask,
a garbage depth map), so each image model is a *timed stand-in*: it runs the real-size network on the real
input for its time, then returns the scene world's ground truth (the oracle backends) so the next stage sees
sensible data. The oracles' own time (a CPU ray caster) is measured and taken out of every stage's figure.
The guidances (Zero123, SD) run their full SDS forward pass every step, but their gradient (noise from random
weights, NaN where bf16 overflows) is dropped.

The stages run through the same nodes as example_workflows/CoCo4D.json: SAM2 Split, Static Gaussians (1000 steps,
Zero123 SDS), Deformation Fit (800 steps + 50 trajectory steps), Progressive Outpaint (300 + 300, 2 loops x
4 poses x (300 + 300), SD SDS, SDXL + VACE inpainting at 0.7), Compose, and a 49-frame render. Target: under
10 minutes on one H200 (the paper: about 1 hour on an RTX 6000).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_loader import load_pack  # noqa: E402

load_pack()
import gen4d  # noqa: E402
from gen4d import synthetic  # noqa: E402
from gen4d.backends.depth import DepthAnythingV2  # noqa: E402
from timing import peak_mib, sync  # noqa: E402

NODES = gen4d.NODE_CLASS_MAPPINGS


class TimedStandIn:
    """Runs ``real`` for its cost, answers with ``oracle``; oracle seconds are booked in ``clock``."""

    def __init__(self, real, oracle, clock: dict, method: str):
        self._real, self._oracle, self._clock, self._method = real, oracle, clock, method

    def __getattr__(self, name):
        if name == self._method:
            return self._call
        return getattr(self._oracle, name)

    def _call(self, *args, **kwargs):
        if self._real is not None:
            with torch.no_grad():
                getattr(self._real, self._method)(*args, **{k: v for k, v in kwargs.items() if k != "device"})
        start = time.perf_counter()
        out = getattr(self._oracle, self._method)(*args, **kwargs)
        self._clock["oracle"] += time.perf_counter() - start
        return out


class TimedGuidance:
    """Runs a real-size random-weight guidance for its cost; its noise gradient is dropped (weight 0).

    Random weights in bf16 can overflow into NaN gradients that real weights never give; the fit still pays
    the full SDS forward pass per step.
    """

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def sds_loss(self, images, cameras, t, step_ratio):
        with torch.no_grad():
            self.real.sds_loss(images.detach(), cameras, t, step_ratio)
        return images.sum() * 0.0


def real_size_depth(device: torch.device, dtype: torch.dtype) -> DepthAnythingV2:
    """Depth Anything V2 Small at its published sizes with random weights."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                            image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                                 neck_hidden_sizes=[48, 96, 192, 384],
                                 fusion_hidden_size=64, head_hidden_size=32)
    depth = DepthAnythingV2(Path("depth-anything-v2-small-random"), {"depth_estimation_type": "relative"}, device,
                            dtype)
    depth.model = DepthAnythingForDepthEstimation(config).to(device=device, dtype=dtype).eval()
    return depth


def node(node_id: str, **inputs):
    cls = NODES[node_id]
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    return out["result"] if isinstance(out, dict) else out


def defaults(node_id: str) -> dict:
    out = {}
    for section in ("required", "optional"):
        for name, spec in NODES[node_id].INPUT_TYPES().get(section, {}).items():
            if len(spec) > 1 and "default" in spec[1]:
                out[name] = spec[1]["default"]
    return out


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    clock = {"oracle": 0.0}
    scale = 0.02 if args.tiny else 1.0
    width, height, frames = (48, 32, 4) if args.tiny else (args.width, args.height, args.frames)
    world = synthetic.scene_world(0)
    ref = world.reference_cameras(width, height, frames)
    reference = synthetic.render(world, ref, supersample=1 if args.tiny else 3)["rgb"]
    oracles = {k: cls(world, 1, ref) for k, cls in (("segmenter", synthetic.OracleSegmenter),
                                                     ("depth", synthetic.OracleDepth),
                                                     ("inpaint", synthetic.OracleImageInpainter),
                                                     ("video_inpaint", synthetic.OracleVideoInpainter))}
    zero123 = sd = None
    reals = {k: None for k in oracles}
    if not args.tiny:
        from backends_bench import real_size_sam2, real_size_sd21, real_size_sdxl_inpainter, real_size_vace
        from gen4d.backends.sd_guidance import SDGuidance
        from gen4d.backends.zero123 import Zero123Guidance
        from guidance_bench import real_size_zero123

        reals = {"segmenter": real_size_sam2(device, dtype), "depth": real_size_depth(device, dtype),
                 "inpaint": real_size_sdxl_inpainter(device, dtype), "video_inpaint": real_size_vace(device, dtype)}
        zero123 = TimedGuidance(Zero123Guidance(real_size_zero123(device, dtype), reference[0]))
        sd = TimedGuidance(SDGuidance(real_size_sd21(device, dtype), "a room with a crate, a pillar and a ball",
                                      guidance_scale=100.0))
    methods = {"segmenter": "segment", "depth": "predict", "inpaint": "inpaint", "video_inpaint": "inpaint"}
    models = {k: TimedStandIn(reals[k], oracles[k], clock, methods[k]) for k in oracles}

    times: dict[str, float] = {}

    def stage(name, fn):
        sync()
        before, start = clock["oracle"], time.perf_counter()
        out = fn()
        sync()
        times[name] = time.perf_counter() - start - (clock["oracle"] - before)
        print(json.dumps({"stage": name, "seconds": round(times[name], 2), "peak_mib": peak_mib()}), flush=True)
        return out

    it = lambda n: max(int(round(n * scale)), 1)  # noqa: E731
    split = stage("sam2_split", lambda: node("Gen4D_SAM2Split", **{
        **defaults("Gen4D_SAM2Split"), "images": reference, "segmenter": models["segmenter"],
        "points": f"[[{width // 2}, {height // 2}]]"}))
    fg, bg, mask = split
    gaussians = stage("foreground_static", lambda: node("Gen4D_StaticGaussians", **{
        **defaults("Gen4D_StaticGaussians"), "images": fg, "masks": mask, "iterations": it(1000),
        "preview_every": 0, "guidance": zero123})[0])
    fg_scene = stage("foreground_motion", lambda: node("Gen4D_DeformationFit", **{
        **defaults("Gen4D_DeformationFit"), "gaussians": gaussians, "images": fg, "masks": mask,
        "iterations": it(800), "trajectory_iterations": it(50), "preview_every": 0})[0])
    bg_scene = stage("background_outpaint", lambda: node("Gen4D_ProgressiveOutpaint", **{
        **defaults("Gen4D_ProgressiveOutpaint"), "background": bg, "hole_mask": mask, "depth_model": models["depth"],
        "inpaint_model": models["inpaint"], "video_inpaint_model": models["video_inpaint"], "guidance": sd,
        "prompt": "a room", "cameras": ref, "static_iterations": it(300), "deformation_iterations": it(300),
        "static_iterations_per_pose": it(300), "deformation_iterations_per_pose": it(300),
        "lift_size": 32 if args.tiny else 256})[0])
    scene = stage("compose", lambda: node("Gen4D_Compose", **{
        **defaults("Gen4D_Compose"), "foreground": fg_scene, "background": bg_scene, "reference_images": reference,
        "foreground_mask": mask, "depth_model": models["depth"], "cameras": ref})[0])
    path = node("Gen4D_CameraPath", **{**defaults("Gen4D_CameraPath"), "preset": "moge4d_orbit",
                                       "num_frames": 8 if args.tiny else 49, "width": width, "height": height,
                                       "pivot_depth": 4.0})[0]
    stage("render_49_frames", lambda: node("Gen4D_Render", **{**defaults("Gen4D_Render"), "scene": scene,
                                                               "cameras": path}))
    total = sum(times.values())
    summary = {"case": "coco4d_pipeline", "device": str(device), "size": f"{width}x{height}", "frames": frames,
               "stages": {k: round(v, 2) for k, v in times.items()}, "total_seconds": round(total, 2),
               "target_seconds": 600.0, "oracle_seconds_excluded": round(clock["oracle"], 2),
               "gaussians": int(scene.num_gaussians), "peak_mib": peak_mib()}
    print(json.dumps(summary), flush=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run at toy size with oracle models only")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run(args)


if __name__ == "__main__":
    main()
