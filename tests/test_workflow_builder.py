# SPDX-License-Identifier: Apache-2.0
"""Workflows built with tools/workflow_builder.py pass the checker and run headless."""

from __future__ import annotations

import gen4d
import pytest
from run_workflow import run_workflow
from workflow_builder import Graph
from workflow_checker import check_workflow, ui_to_api


def small_graph() -> Graph:
    g = Graph(gen4d.NODE_CLASS_MAPPINGS)
    cams = g.add("Gen4D_CameraPath", (0, 0), preset="diffusion4d_orbit", num_frames=2, width=24, height=24)
    world = g.add("Gen4D_SyntheticWorld", (400, 0), world="object", width=24, height=24, num_frames=2,
                  twin_points=200, supersample=1, seed=5)
    render = g.add("Gen4D_Render", (800, 0), backend="torch")
    save = g.add("SaveAnimatedWEBP", (1200, 0), filename_prefix="built", fps=4.0)
    g.link(cams, "cameras", world, "cameras")
    g.link(cams, "cameras", render, "cameras")
    g.link(world, "gaussian_twin", render, "scene")
    g.link(render, "images", save, "images")
    g.group("Everything", [cams, world, render, save])
    g.note("# A note", (0, 400))
    return g


def test_built_graph_checks_converts_and_runs(tmp_path, one_thread):
    wf = small_graph().to_dict(runnable=True)
    assert check_workflow(wf, gen4d.NODE_CLASS_MAPPINGS) == []
    prompt = ui_to_api(wf, gen4d.NODE_CLASS_MAPPINGS)
    assert prompt["2"]["inputs"]["seed"] == 5 and prompt["2"]["inputs"]["world"] == "object"
    assert prompt["3"]["inputs"]["scene"] == ["2", 4]
    run_workflow(wf, tmp_path)
    assert len(list(tmp_path.glob("built_*.webp"))) == 1
    group = wf["groups"][0]["bounding"]
    assert group[0] < 0 and group[2] > 1200, "the group box encloses its nodes"


def test_builder_rejects_unknown_names():
    g = Graph(gen4d.NODE_CLASS_MAPPINGS)
    a = g.add("Gen4D_CameraPath", (0, 0))
    with pytest.raises(ValueError, match="no inputs"):
        g.add("Gen4D_Render", (0, 0), not_an_input=1)
    b = g.add("Gen4D_Render", (0, 0))
    with pytest.raises(ValueError, match="no such output"):
        g.link(a, "camera", b, "cameras")
