# SPDX-License-Identifier: Apache-2.0
"""Run a check script inside a real ComfyUI interpreter (``COMFYUI_PATH``, ``COMFYUI_PYTHON``) and read its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
HAVE_COMFYUI = bool(COMFYUI_PATH) and (Path(COMFYUI_PATH) / "main.py").is_file()


def needs_comfyui(purpose: str):
    """Skip unless ``COMFYUI_PATH`` names a ComfyUI checkout; ``purpose`` completes the skip reason."""
    return pytest.mark.skipif(not HAVE_COMFYUI, reason=f"set COMFYUI_PATH (and COMFYUI_PYTHON) {purpose}")


def run_check(script: str, tmp_path: Path, timeout: float) -> dict:
    """``python tests/<script> COMFYUI_PATH OUT_JSON`` with ComfyUI's interpreter in ``tmp_path``; the JSON it wrote."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    out = tmp_path / (Path(script).stem + ".json")
    run = subprocess.run([python, str(Path(__file__).with_name(script)), COMFYUI_PATH, str(out)],
                         capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())
