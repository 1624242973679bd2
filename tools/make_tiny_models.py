# SPDX-License-Identifier: Apache-2.0
"""Write a tiny random-weight model of every backend into a models folder, in the real layouts.

Usage:
    python tools/make_tiny_models.py --root models-tiny [--kinds depth sam2_video ...]
    GEN4D_MODELS_DIR=models-tiny python tools/run_workflow.py example_workflows/CoCo4D.json --set ...

Each model lands where the pack's loaders look for its kind (``<root>/<kind sub-folder>/<name>-tiny``,
the same sub-folders as ComfyUI's ``models/``), so loader nodes list and load them like real
weights. They produce noise, not pictures: use them to check wiring, shapes and the loading
code of whole workflows without downloading anything.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

log = logging.getLogger("gen4d.make_tiny_models")

# tiny builder kind -> model kind of backends.model_folders (the loader that reads it)
MODEL_KIND_OF = {
    "depth": "depth",
    "depth_metric": "depth",
    "sam2_video": "sam2",
    "guidance_zero123": "zero123",
    "guidance_sd": "sd_guidance",
    "inpaint_sd": "inpaint",
    "video_inpaint_wan_vace": "video_inpaint",
    "video_inpaint_wan_fun": "video_inpaint",
    "video_wan_i2v": "video",
    "video_cogvideox_i2v": "video",
    "video_cogvideox_t2v": "video",
    "video_svd": "video",
    "orbital": "orbital",
    "orbital_base": "orbital",
    "orbital_text": "orbital",
    "trajectory": "trajectory",
}


def make_tiny_models(root: str | Path, kinds=None, seed: int = 0) -> dict[str, Path]:
    """Build the tiny models of ``kinds`` (default: all registered) under ``root``; returns kind -> folder."""
    load_pack()
    from gen4d.backends.model_folders import MODEL_KINDS
    from gen4d.backends.tiny import TINY_KINDS, build_tiny, load_builders

    load_builders()
    wanted = list(kinds) if kinds else sorted(TINY_KINDS)
    unknown = [k for k in wanted if k not in TINY_KINDS or k not in MODEL_KIND_OF]
    if unknown:
        known = sorted(set(TINY_KINDS) & set(MODEL_KIND_OF))
        raise ValueError(f"make_tiny_models: unknown kinds {unknown}; known: {known}")
    out = {}
    for kind in wanted:
        folder = Path(root) / MODEL_KINDS[MODEL_KIND_OF[kind]]
        out[kind] = build_tiny(kind, folder, seed)
        log.info("%s -> %s", kind, out[kind])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="models-tiny", help="models folder to write (default models-tiny)")
    parser.add_argument("--kinds", nargs="*", default=None, help="tiny builder kinds (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_tiny_models(args.root, args.kinds, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
