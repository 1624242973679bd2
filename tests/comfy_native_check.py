# SPDX-License-Identifier: Apache-2.0
"""Run inside a ComfyUI interpreter: ComfyUI's own model objects at tiny sizes -> the native adaptors -> stages.

``python tests/comfy_native_check.py COMFYUI_PATH OUT_JSON`` (run by tests/test_comfy_native.py with
``COMFYUI_PYTHON``). What is built how:

* Wan 2.1 VACE: a tiny ``VaceWanModel`` state dict written as one safetensors file and loaded with
  ``comfy.sd.load_diffusion_model`` (what core UNETLoader calls): ComfyUI detects the family and sizes
  from the weights.
* Wan 2.1 VAE: ComfyUI's VAE loader fixes its width (96), so a full-size VAE with random weights is
  built by ``comfy.sd.VAE(sd=...)`` (what VAELoader calls).
* SD 1.5 inpainting and Stable Zero123: ComfyUI's checkpoint detection accepts only the real widths
  (model_channels 320), so their model objects are built in-process from ComfyUI's own model configs
  (``comfy.supported_models.SD15`` / ``Stable_Zero123``) with a tiny UNet, wrapped in ComfyUI's
  ``ModelPatcher``; the SD VAE is ComfyUI's ``VAE`` built from a tiny first-stage config, and the CLIP
  vision model ComfyUI's ``ClipVisionModel`` from a tiny JSON config.
* CONDITIONING: tensors of the text encoders' widths (umt5-xxl 4096, CLIP-L 768), in ComfyUI's
  ``[[tensor, dict]]`` form.

All weights are created under ``torch.inference_mode()``, as ComfyUI loads them.
"""

import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

COMFY, OUT = sys.argv[1], sys.argv[2]
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [COMFY, str(REPO), str(REPO / "tools")]

import torch  # noqa: E402
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.clip_vision  # noqa: E402
import comfy.ldm.wan.model as wan_model  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models as sm  # noqa: E402
import comfy.utils  # noqa: E402

from pack_loader import load_pack  # noqa: E402

load_pack()
from comfy_tiny_models import init_normal, patcher, plain_init, tiny_sd_vae, tiny_unet_config  # noqa: E402
from gen4d.backends.comfy_native import (  # noqa: E402
    NativeImageInpainter,
    NativeVideoInpainter,
    NativeZero123Guidance,
)
from gen4d.backends.render import training_render  # noqa: E402
from gen4d.core.coco4d.copy_paste import fill_video_holes  # noqa: E402
from gen4d.core.coco4d.outpaint_config import OutpaintConfig  # noqa: E402
from gen4d.core.engine.cameras import Cameras, intrinsics_from_fov, orbit_poses  # noqa: E402
from gen4d.core.engine.fit_static import StaticFitConfig, fit_static  # noqa: E402
from gen4d.core.engine.gaussians import sphere_init  # noqa: E402
from gen4d.core.engine.guidance import PoseSampling  # noqa: E402
from gen4d.core.engine.views import PosedImages  # noqa: E402
from gen4d.core.moge4d.vism import VismRender, inpaint_holes  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.manual_seed(0)
result: dict = {}
CPU = torch.device("cpu")


def expect_error(fn, *words):
    try:
        fn()
    except (TypeError, ValueError) as exc:
        text = str(exc)
        return {"raised": True, "message": text, "names": all(w in text for w in words)}
    return {"raised": False}


tmp = Path(tempfile.mkdtemp(prefix="gen4d_native_"))
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
t0 = time.perf_counter()
if True:  # written to a file, then loaded the way UNETLoader loads it
    net = wan_model.VaceWanModel(model_type="vace", patch_size=(1, 2, 2), text_len=16, in_dim=16, dim=128, ffn_dim=64,
                                 freq_dim=256, text_dim=4096, out_dim=16, num_heads=1, num_layers=2, vace_layers=1,
                                 vace_in_dim=96, operations=comfy.ops.disable_weight_init)
with torch.no_grad():
    init_normal(net, 0.02)
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / "wan_vace_tiny.safetensors"))
with torch.inference_mode():
    wan = comfy.sd.load_diffusion_model(str(tmp / "wan_vace_tiny.safetensors"))   # UNETLoader's call
    from comfy.ldm.wan.vae import WanVAE

    wan_vae = comfy.sd.VAE(sd=plain_init(WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                                attn_scales=[], temperal_downsample=[False, True, True],
                                                dropout=0.0)).state_dict())
    sd_cfg = sm.SD15(tiny_unet_config(9))
    sd_inpaint = patcher(init_normal(sd_cfg.get_model({}), 0.05))
    z_cfg = sm.Stable_Zero123(tiny_unet_config(8))
    zero = patcher(init_normal(z_cfg.get_model({"cc_projection.weight": torch.randn(768, 772) * 0.02,
                                                "cc_projection.bias": torch.zeros(768)}), 0.05))
    sd_vae = tiny_sd_vae()
    clip_json = tmp / "clip_vision_tiny.json"
    clip_json.write_text(json.dumps({"hidden_size": 32, "image_size": 32, "intermediate_size": 64,
                                     "num_attention_heads": 2,
                                     "num_channels": 3, "num_hidden_layers": 2, "patch_size": 16,
                                     "projection_dim": 768, "hidden_act": "quick_gelu",
                                     "model_type": "clip_vision_model", "layer_norm_eps": 1e-5,
                                     "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                     "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    clip_vision = comfy.clip_vision.ClipVisionModel(str(clip_json))
    init_normal(clip_vision.model, 0.05)
result["build_s"] = time.perf_counter() - t0
result["wan_family"] = [type(wan.model).__name__, wan.model.model_config.unet_config.get("model_type")]

umt5_pos, umt5_neg = [[torch.randn(1, 8, 4096), {}]], [[torch.zeros(1, 8, 4096), {}]]
clip_pos, clip_neg = [[torch.randn(1, 77, 768), {}]], [[torch.zeros(1, 77, 768), {}]]

# ---- bad input, refused before sampling
result["sd_model_into_video"] = expect_error(lambda: NativeVideoInpainter(sd_inpaint, wan_vae, umt5_pos, umt5_neg),
                                             "model", "Wan")
result["sd_vae_into_video"] = expect_error(lambda: NativeVideoInpainter(wan, sd_vae, umt5_pos, umt5_neg), "vae")
result["clip_text_into_video"] = expect_error(lambda: NativeVideoInpainter(wan, wan_vae, clip_pos, umt5_neg),
                                              "positive", "4096")
result["wan_into_image"] = expect_error(lambda: NativeImageInpainter(wan, sd_vae, clip_pos, clip_neg), "model")
result["umt5_into_image"] = expect_error(lambda: NativeImageInpainter(sd_inpaint, sd_vae, clip_pos, umt5_neg),
                                         "negative", "768")
result["sd_into_zero123"] = expect_error(lambda: NativeZero123Guidance(sd_inpaint, clip_vision, sd_vae,
                                                                         torch.rand(1, 32, 32, 3)), "model", "Zero123")

# ---- CoCo4D outpaint inpainting step (eq. 7) and ViSM hole filling through ComfyUI's sampling
video = NativeVideoInpainter(wan, wan_vae, umt5_pos, umt5_neg)
image = NativeImageInpainter(sd_inpaint, sd_vae, clip_pos, clip_neg)
frames = torch.rand(5, 32, 32, 3)
holes = torch.zeros(5, 32, 32, dtype=torch.bool)
holes[:, 8:24, 16:] = True
cams = Cameras(orbit_poses(torch.zeros(5), torch.linspace(0, 20, 5), 2.5), intrinsics_from_fov(50.0, 32, 32)[None]
               .expand(5, 3, 3), 32, 32, torch.linspace(0, 1, 5), 0.01, 100.0)
steps = []
t1 = time.perf_counter()
with torch.inference_mode():
    sigmas, first = video.start_index(0.7, 8)
    filled, frame0 = fill_video_holes(frames, holes, cams, image, video,
                                      config=OutpaintConfig(inpaint_steps=3, video_inpaint_steps=8))
result["outpaint"] = {"shape": list(filled.shape), "known_exact": bool(torch.equal(filled[~holes], frames[~holes])),
                      "holes_changed": float((filled[holes] - frames[holes]).abs().mean()),
                      "finite": bool(torch.isfinite(filled).all()), "start_sigma": float(sigmas[first]),
                      "first": first, "seconds": time.perf_counter() - t1}
render = VismRender(frames, (~holes).float(), torch.ones(5, 32, 32), holes)
t1 = time.perf_counter()
with torch.inference_mode():
    out = inpaint_holes(video, render, cams, strength=1.0, steps=3, guidance_scale=3.0, seed=1,
                        callback=lambda s, n, p=None: steps.append((int(s), int(n))))
result["vism"] = {"shape": list(out.shape), "known_exact": bool(torch.equal(out[~holes], frames[~holes])),
                  "finite": bool(torch.isfinite(out).all()), "steps": steps, "seconds": time.perf_counter() - t1}

# ---- Stable Zero123 SDS in the static fit
size = 32
seen = Cameras(orbit_poses(torch.zeros(1), torch.zeros(1), 2.5), intrinsics_from_fov(49.1, size, size)[None], size,
               size, torch.zeros(1), 0.01, 100.0)
yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
mask = ((((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2).float())[None]
target = 1.0 - 0.6 * mask[..., None].expand(1, size, size, 3)
guidance = NativeZero123Guidance(zero, clip_vision, sd_vae, target[0].clone(), resolution=64)
x = torch.rand(2, size, size, 3, requires_grad=True)
loss = guidance.sds_loss(x, Cameras(orbit_poses(torch.zeros(2), torch.tensor([30.0, 90.0]), 2.5),
                                     intrinsics_from_fov(49.1, size, size)[None].expand(2, 3, 3), size, size,
                                     torch.zeros(2), 0.01, 100.0), 0.0, 0.5)
loss.backward()
result["sds_grad"] = {"loss": float(loss), "grad_abs": float(x.grad.abs().sum()),
                      "finite": bool(torch.isfinite(x.grad).all())}
config = StaticFitConfig(iterations=3, densify=None, preview_every=0, sds_weight=1e-2,
                         pose_sampling=PoseSampling(batch=2, width=size, height=size))
init = sphere_init(200, 0.5, generator=torch.Generator().manual_seed(0))
fit = fit_static(init, PosedImages(target, seen, mask), training_render, config, guidance=guidance)
result["fit"] = {"steps": fit.steps, "finite": bool(torch.isfinite(fit.gaussians.means).all()),
                 "moved": not torch.equal(fit.gaussians.means, init.means)}
Path(OUT).write_text(json.dumps(result, indent=1))
print(json.dumps(result, indent=1))
