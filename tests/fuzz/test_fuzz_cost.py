# SPDX-License-Identifier: Apache-2.0
"""Widgets at their maxima: each node refuses up front (what it needs, what is available, what to lower) or
finishes, under an 8 GiB memory cap and 30 s per case, in a separate process (tests/fuzz/cost_worker.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "cost_worker.py"
FAST = ("render_max", "synthetic_world_max", "sam2_100k_points")
LONG = ("static_1m_points", "trajectory_dit_max", "i2v_max")


def _run(names) -> dict:
    proc = subprocess.run([sys.executable, str(WORKER), *names], capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    out = {r["case"]: r for r in rows}
    for name in names:  # a case that killed the worker
        out.setdefault(name, {"case": name, "class": "blowup", "detail": f"worker died: {proc.stderr[-300:]}"})
    return out


def _assert_refused_or_handled(row):
    assert row["class"] in ("refused", "handled"), row
    if row["class"] == "refused":
        assert "GiB" in row["detail"] or "at most" in row["detail"], row


@pytest.fixture(scope="module")
def fast_rows():
    return _run(FAST)


@pytest.mark.parametrize("name", FAST)
def test_cost_fast(fast_rows, name):
    _assert_refused_or_handled(fast_rows[name])


@pytest.mark.fuzz_long
@pytest.mark.parametrize("name", LONG)
def test_cost_long(name):
    _assert_refused_or_handled(_run([name])[name])


def test_memory_require_names_what_to_lower():
    from gen4d.backends.memory import GIB, available_bytes, require

    assert available_bytes("cpu") > 0
    require("X", 1, "cpu", "tiny work", "nothing")
    with pytest.raises(ValueError, match=r"X: huge work needs about .* GiB on cpu, but about .* available; lower a"):
        require("X", 10**6 * GIB, "cpu", "huge work", "a")
