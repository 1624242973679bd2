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


def _static_inputs(**over):
    import torch

    return {"images": torch.rand(1, 16, 16, 3), "fit_frames": "first", "iterations": 100, "num_points": 1_000_000,
            "sphere_radius": 0.5, "views_per_step": 4, "sds_weight": 0.0, "densify": False, "max_scale": 0.0,
            "center_object": False, "background": "#ffffff", "preview_every": 0, "seed": 0, **over}


def test_static_fit_refuses_a_cpu_step_of_hours_but_not_the_shipped_settings_or_the_gpu(monkeypatch):
    """1,000,000 Gaussians on the CPU: refused up front naming num_points; every shipped workflow's
    StaticGaussians settings pass the estimate; on a GPU the CPU estimate does not apply."""
    import time

    import torch
    from gen4d.nodes import NODE_CLASS_MAPPINGS, fit

    node = NODE_CLASS_MAPPINGS["Gen4D_StaticGaussians"]()
    t0 = time.time()
    with pytest.raises(ValueError, match=r"num_points \(at most [\d,]+ Gaussians"):
        node.fit(**_static_inputs())
    assert time.time() - t0 < 10, "refused before the work"
    root = Path(__file__).resolve().parents[2]
    for wf in sorted((root / "workflows").glob("*.json")):
        for n in json.loads(wf.read_text()).get("nodes", []):
            if n.get("type") == "Gen4D_StaticGaussians":
                frames, iterations, points, _r, views = n["widgets_values"][:5]
                fit._cpu_step_check(points, (1 if frames == "first" else views) + 4, iterations)  # + SDS views

    class Ran(Exception):
        pass

    def fake_fit(*_a, **_k):
        raise Ran

    monkeypatch.setattr(fit.host, "compute_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(fit, "fit_static", fake_fit)
    with pytest.raises(Ran):
        node.fit(**_static_inputs())
