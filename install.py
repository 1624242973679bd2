# SPDX-License-Identifier: Apache-2.0
"""ComfyUI-Manager install hook: install requirements.txt without touching torch or downloading weights.

The torch already in ComfyUI's environment is pinned as a constraint, so no requirement can
replace it (for example with a CUDA build of another version). The example workflows' input images
(example_workflows/input/) are copied into ComfyUI's input folder, never over a file of the same name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent


def copy_example_inputs(comfy_input: Path | None = None) -> list[Path]:
    """Copy the example inputs into ComfyUI's input folder (``<ComfyUI>/input`` beside ``custom_nodes``)."""
    if comfy_input is None:
        if HERE.parent.name != "custom_nodes":
            return []
        comfy_input = HERE.parent.parent / "input"
    if not comfy_input.is_dir():
        return []
    copied = []
    for source in sorted((HERE / "example_workflows" / "input").glob("*.png")):
        target = comfy_input / source.name
        if not target.exists():
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def main() -> int:
    copy_example_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        pins = []
        for package in ("torch", "torchvision", "torchaudio"):
            try:
                pins.append(f"{package}=={metadata.version(package)}")
            except metadata.PackageNotFoundError:
                pass
        constraints.write_text("\n".join(pins) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "-r", str(HERE / "requirements.txt"), "-c", str(constraints)]
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
