# SPDX-License-Identifier: Apache-2.0
"""Workflows built with tools/workflow_builder.py pass the checker and run headless."""

from __future__ import annotations

import json

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


def test_load_refresh_and_extend_a_saved_workflow(tmp_path):
    """A file saved before a node grew a socket and widgets: refresh appends them, new links and nodes get fresh
    ids, and the file checks again."""
    path = tmp_path / "old.json"
    small_graph().save(path, runnable=True, test_overrides={"2.seed": 1})
    old = json.loads(path.read_text())
    world = next(n for n in old["nodes"] if n["type"] == "Gen4D_SyntheticWorld")
    cams = next(n for n in old["nodes"] if n["type"] == "Gen4D_CameraPath")
    # as saved before the world had a cameras socket and the camera path its last widgets
    dropped = next(link for link in old["links"] if link[3] == world["id"])
    old["links"].remove(dropped)
    cams["outputs"][0]["links"].remove(dropped[0])
    world["inputs"] = []
    cams["widgets_values"] = cams["widgets_values"][:3]
    path.write_text(json.dumps(old))
    g = Graph.load(path, gen4d.NODE_CLASS_MAPPINGS)
    g.refresh(world["id"])
    g.refresh(cams["id"], height=24)
    g.link(cams["id"], "cameras", world["id"], "cameras")
    note = g.note("# added", (0, 800))
    wf = g.to_dict()
    assert check_workflow(wf, gen4d.NODE_CLASS_MAPPINGS) == []
    assert note == 6 and wf["last_node_id"] == 6 and wf["extra"]["gen4d"]["test_overrides"] == {"2.seed": 1}
    assert wf["last_link_id"] == max(link[0] for link in wf["links"]) == 5, "no link id is reused"
    assert [i["name"] for i in next(n for n in wf["nodes"] if n["id"] == world["id"])["inputs"]] == ["cameras"]
    values = next(n for n in wf["nodes"] if n["id"] == cams["id"])["widgets_values"]
    assert values[:4] == ["diffusion4d_orbit", 2, 24, 24] and values[-1] == "render_script"
