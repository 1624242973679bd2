# SPDX-License-Identifier: Apache-2.0
"""ComfyUI-Manager install hook: install requirements.txt without touching torch or downloading weights.

The torch already in ComfyUI's environment is pinned as a constraint, so no requirement can
replace it (for example with a CUDA build of another version).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
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
