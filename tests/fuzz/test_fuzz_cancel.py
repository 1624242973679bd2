# SPDX-License-Identifier: Apache-2.0
"""Cancel within a second: the interrupt flag is raised while a node works, and the node must stop in 1 s."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as F  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_cancel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_OUTPUT_DIR", str(root / "output"))
        yield F.Context(root)


def _heavy(ctx, node_id):
    """A call of ``node_id`` that takes several seconds on one CPU thread."""
    if node_id == "Gen4D_SyntheticWorld":
        return {**F.baseline_widgets(node_id), "width": 256, "height": 256, "num_frames": 48, "supersample": 3}
    cams = F.call("Gen4D_CameraPath", {"preset": "orbit", "num_frames": 64, "width": 256, "height": 256})[0]
    world = F.call("Gen4D_SyntheticWorld", {**F.baseline_widgets("Gen4D_SyntheticWorld"), "twin_points": 20000,
                                            "num_frames": 16, "width": 32, "height": 32})
    if node_id == "Gen4D_Render":
        return {**F.baseline_widgets(node_id), "backend": "torch", "batch_size": 64, "cameras": cams,
                "scene": world[4]}
    if node_id == "Gen4D_Preview4D":
        return {**F.baseline_widgets(node_id), "max_splats": 2_000_000, "num_frames": 1000, "scene": world[4]}
    raise KeyError(node_id)


@pytest.mark.parametrize("node_id", [
    pytest.param("Gen4D_Render", marks=pytest.mark.fuzz_long),
    pytest.param("Gen4D_Preview4D", marks=pytest.mark.fuzz_long),
    pytest.param("Gen4D_SyntheticWorld", marks=pytest.mark.fuzz_long),
])
def test_cancel_within_a_second(ctx, fake_comfy, node_id):
    inputs = _heavy(ctx, node_id)
    flagged = {}

    def press_cancel():
        time.sleep(0.3)
        flagged["at"] = time.perf_counter()
        fake_comfy.interrupted = True

    threading.Thread(target=press_cancel, daemon=True).start()
    with F.time_limit(120):
        try:
            F.call(node_id, inputs)
        except fake_comfy.Interrupted:
            pass
    stopped = time.perf_counter()
    fake_comfy.interrupted = False
    assert "at" in flagged, "the node finished before cancel was pressed; make the case heavier"
    assert stopped - flagged["at"] < 1.0, f"{node_id} took {stopped - flagged['at']:.1f} s to stop"
