# SPDX-License-Identifier: Apache-2.0
"""The suite runs from a clone in any folder: the README's ``ComfyUI-Gen4D``, a dotted name, a space.

Each case clones this repository with git, lays the working tree's uncommitted edits over the clone
(so the check covers the change under test), and runs pytest inside it in a fresh process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER_NAMES = ["ComfyUI-Gen4D", "gen4d.v2", "my nodes"]


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _clone_with_working_tree(target: Path) -> None:
    _git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(target))
    for name in _git("ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0"):
        if not name:
            continue
        source, copy = ROOT / name, target / name
        if source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
        elif copy.exists():  # deleted in the working tree
            copy.unlink()


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # The outer run's PYTEST_ADDOPTS (e.g. --durations, which prints test names) would change what is read here.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="needs git and a git checkout")


@needs_git
@pytest.mark.parametrize("folder", FOLDER_NAMES)
def test_suite_runs_from_a_clone_named(folder, tmp_path):
    clone = tmp_path / folder
    _clone_with_working_tree(clone)
    run = _pytest(clone, "tests/test_paths.py")
    assert run.returncode == 0, f"{folder!r}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "error" not in run.stdout.lower()

