# SPDX-License-Identifier: Apache-2.0
"""Run cost cases (widgets at their maxima) in this process under a memory cap and a time limit per case.

    python tests/fuzz/cost_worker.py CASE [CASE ...]      (one JSON line per case on stdout)

Outcome classes: ``refused`` (a clear ValueError/TypeError before the work), ``handled`` (finished within the
limits), ``blowup`` (an allocation failed under the cap), ``hang`` (no answer in time), ``obscure`` (anything else).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("GEN4D_PACK_ROOT", HERE.parents[1]))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

MEMORY_CAP = int(float(os.environ.get("GEN4D_FUZZ_MEMORY_GIB", "8")) * 1024**3)
SECONDS = float(os.environ.get("GEN4D_FUZZ_SECONDS", "30"))


def _cases(F, ctx):
    cams = ctx.values["GEN4D_CAMERAS"]

    def render():
        big = F.call("Gen4D_CameraPath", {"preset": "orbit", "num_frames": 1024, "width": 8192, "height": 8192})[0]
        return "Gen4D_Render", {**F.baseline_widgets("Gen4D_Render"), "batch_size": 1024, "cameras": big,
                                "scene": ctx.values["GEN4D_SCENE"]}

    def static():
        return "Gen4D_StaticGaussians", {**F.baseline_widgets("Gen4D_StaticGaussians"), "iterations": 100,
                                         "num_points": 1_000_000, "images": ctx.values["IMAGE"][:1]}

    def world():
        return "Gen4D_SyntheticWorld", {**F.baseline_widgets("Gen4D_SyntheticWorld"), "width": 2048, "height": 2048,
                                        "num_frames": 512, "supersample": 3}

    def dit():
        base = ctx.baseline("Gen4D_TrajectoryDiT")
        return "Gen4D_TrajectoryDiT", {**base, "num_frames": 161, "width": 2048, "height": 2048}

    def i2v():
        base = ctx.baseline("Gen4D_I2VReference")
        return "Gen4D_I2VReference", {**base, "num_frames": 257, "width": 4096, "height": 4096}

    def sam2():
        base = ctx.baseline("Gen4D_SAM2Split")
        points = json.dumps([[i % 32, (i // 32) % 32] for i in range(100_000)])
        return "Gen4D_SAM2Split", {**base, "points": points}

    del cams
    return {"render_max": render, "static_1m_points": static, "synthetic_world_max": world,
            "trajectory_dit_max": dit, "i2v_max": i2v, "sam2_100k_points": sam2}


def main(names: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    from pack_loader import load_pack

    load_pack()
    import fuzz_cases as F

    tmp = Path(tempfile.mkdtemp(prefix="gen4d_cost_"))
    os.environ.setdefault("GEN4D_OUTPUT_DIR", str(tmp / "output"))
    ctx = F.Context(tmp)
    cases = _cases(F, ctx)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + MEMORY_CAP, resource.RLIM_INFINITY))
    for name in names:
        t0 = time.time()
        try:
            node_id, inputs = cases[name]()
            with F.time_limit(SECONDS):
                F.call(node_id, inputs)
            klass, detail = "handled", ""
        except F._Timeout:
            klass, detail = "hang", f"no answer in {SECONDS:g} s"
        except MemoryError as exc:
            klass, detail = "blowup", f"MemoryError: {exc}"
        except (ValueError, TypeError) as exc:
            klass, detail = "refused", str(exc)
        except RuntimeError as exc:
            text = str(exc)
            klass = "blowup" if "alloc" in text.lower() or "memory" in text.lower() else "obscure"
            detail = f"RuntimeError: {text}"
        except Exception as exc:
            klass, detail = "obscure", f"{type(exc).__name__}: {exc}"
        print(json.dumps({"case": name, "class": klass, "detail": detail[:300], "seconds": round(time.time() - t0, 2)}),
              flush=True)
    return 0


CASES = ("render_max", "static_1m_points", "synthetic_world_max", "trajectory_dit_max", "i2v_max", "sam2_100k_points")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(CASES)))
