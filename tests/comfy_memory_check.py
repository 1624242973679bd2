# SPDX-License-Identifier: Apache-2.0
"""Run inside a ComfyUI interpreter: our folder-loaded models under ComfyUI's real model manager.

``python tests/comfy_memory_check.py COMFYUI_PATH OUT_JSON`` (run by tests/test_model_cache.py with
``COMFYUI_PYTHON``). Tiny Zero123, SD guidance, SD inpainting and Wan VACE folders are loaded twice with
the pack's loaders (the second load must return the same objects), their modules are placed the way the
backends place them (``backends.memory.make_room``: ComfyUI's ``ModelPatcher`` + ``load_models_gpu``),
then ComfyUI's ``unload_all_models`` (the "Unload models" button) runs, and finally the handles are dropped
as ComfyUI's node cache drops them on "Free model and node cache": the models must then be gone.
"""

import gc
import json
import sys
import tempfile
import weakref
from pathlib import Path

COMFY, OUT = sys.argv[1], sys.argv[2]
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [COMFY, str(REPO)]

import torch  # noqa: E402
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402, F401  (ComfyUI's, as the pack sees it when ComfyUI runs it)

from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.backends import loading, memory  # noqa: E402
from gen4d.backends.inpaint import load_image_inpainter  # noqa: E402
from gen4d.backends.memory import pipeline_modules  # noqa: E402
from gen4d.backends.sd_guidance import load_sd_guidance  # noqa: E402
from gen4d.backends.tiny import build_tiny  # noqa: E402
from gen4d.backends.video_inpaint import load_video_inpainter  # noqa: E402
from gen4d.backends.zero123 import load_zero123  # noqa: E402

torch.set_num_threads(1)
KINDS = {"guidance_zero123": load_zero123, "guidance_sd": load_sd_guidance, "inpaint_sd": load_image_inpainter,
         "video_inpaint_wan_vace": load_video_inpainter}


def modules_of(handle):
    if hasattr(handle, "pipe"):
        return pipeline_modules(handle.pipe)
    return [m for m in handle.modules if m is not None]


def ours_loaded(modules) -> int:
    ids = {id(m) for m in modules}
    return sum(1 for lm in mm.current_loaded_models
               if lm.model is not None and id(getattr(lm.model.model, "inner", None)) in ids)


with tempfile.TemporaryDirectory() as root:
    folders = {kind: build_tiny(kind, root) for kind in KINDS}
    handles = {kind: load(folders[kind]) for kind, load in KINDS.items()}
    again = {kind: load(folders[kind]) for kind, load in KINDS.items()}
    same = all(again[k] is handles[k] for k in KINDS)
    del again
    modules = [m for h in handles.values() for m in modules_of(h)]
    device = mm.get_torch_device()
    for h in handles.values():                       # a run: every backend places its modules
        memory.make_room(modules_of(h), device)
    registered = ours_loaded(modules)
    for h in handles.values():                       # a second run of the same graph
        memory.make_room(modules_of(h), device)
    registered_again = ours_loaded(modules)
    mm.unload_all_models()                            # "Unload models"
    after_unload = ours_loaded(modules)
    probes = [weakref.ref(m) for m in modules]
    count = len(modules)
    del handles, modules, h                           # "Free model and node cache": the node outputs go
    gc.collect()
    alive = sum(p() is not None for p in probes)
    result = {"same_objects_on_second_load": same, "modules": count, "registered": registered,
              "registered_after_second_run": registered_again, "ours_loaded_after_unload": after_unload,
              "alive_after_node_cache_reset": alive, "cached_after_reset": len(loading.cached_models())}

Path(OUT).write_text(json.dumps(result, indent=1))
print(json.dumps(result))
