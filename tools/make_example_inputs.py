# SPDX-License-Identifier: Apache-2.0
"""Render the example input images the model workflows load, from the pack's synthetic worlds.

    python tools/make_example_inputs.py        # writes example_workflows/input/*.png

- ``example.png`` (CoCo4D.json, MoGe4D.json): the scene world (a room with props and a walking figure)
  from its reference camera, 512×320.
- ``front_view.png`` (Diffusion4D.json): the articulated object world from the front of the Diffusion4D
  orbit (azimuth 0, elevation 0, distance 2) on white, 256×256.

install.py copies them into ComfyUI's input folder (never over a file of the same name).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "example_workflows" / "input"


def _png(image, path: Path) -> None:
    pixels = (image[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(pixels).save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT)} {pixels.shape[1]}x{pixels.shape[0]}")


def main() -> int:
    from pack_loader import load_pack

    nodes = load_pack().NODE_CLASS_MAPPINGS
    world, path = nodes["Gen4D_SyntheticWorld"](), nodes["Gen4D_CameraPath"]()
    OUT.mkdir(parents=True, exist_ok=True)
    scene = world.build("scene", 512, 320, 2, 0, 200, 8.0, 3, "metric")
    _png(scene[0], OUT / "example.png")
    orbit = path.build(preset="diffusion4d_orbit", num_frames=24, width=256, height=256)[0]
    front = world.build("object", 256, 256, 24, 0, 200, 8.0, 3, "metric", cameras=orbit)
    _png(front[0], OUT / "front_view.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
