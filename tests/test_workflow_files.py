# SPDX-License-Identifier: Apache-2.0
"""The shipped workflow files as a user opens them: built form, layout at the frontend's drawn sizes, a 4D
preview in every graph, shipped inputs and thumbnails, no placeholder model names, one web registration."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from workflow_checker import NO_MODELS, is_runnable, load_workflow
from workflow_layout import drawn_size, frontend_sizes, layout_problems

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "example_workflows"
WORKFLOWS = sorted(FOLDER.glob("*.json"))
SAVERS = {"Gen4D_SaveScene", "Gen4D_SaveTracks", "SaveVideo", "SaveAnimatedWEBP"}


def _group_of(workflow: dict, node: dict) -> str | None:
    x, y = node["pos"]
    for g in workflow["groups"]:
        gx, gy, gw, gh = g["bounding"]
        if gx <= x <= gx + gw and gy <= y <= gy + gh:
            return g["title"]
    return None


def test_the_workflows_are_in_the_registry_folder():
    assert len(WORKFLOWS) >= 8
    assert not (ROOT / "workflows").exists(), "a second template folder would list every workflow twice"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_file_is_in_its_built_form(path):
    sys.path.insert(0, str(ROOT / "tools"))
    from build_workflows import _node_classes, build

    assert build(path, _node_classes()) == json.loads(path.read_text()), (
        f"{path.name} differs from tools/build_workflows.py's output; run it")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_layout_as_the_frontend_draws_it(path):
    assert layout_problems(load_workflow(path)) == []


def test_layout_check_sees_a_node_drawn_over_another():
    """A Synthetic World saved at 340x330 is drawn 514 high and covers the node saved below it."""
    workflow = copy.deepcopy(load_workflow(FOLDER / "Gen4D_SyntheticOrbit.json"))
    world = next(n for n in workflow["nodes"] if n["type"] == "Gen4D_SyntheticWorld")
    below = next(n for n in workflow["nodes"] if n["pos"][0] == world["pos"][0] and n["pos"][1] > world["pos"][1])
    assert drawn_size(world)[1] > 330
    world["size"] = [340, 330]
    below["pos"] = [world["pos"][0], world["pos"][1] + 330 + 40]
    problems = layout_problems(workflow)
    assert any("saved [340, 330]" in p for p in problems), problems
    assert any(f"nodes {world['id']} and {below['id']} overlap" in p or f"nodes {below['id']} and {world['id']}"
               in p for p in problems), problems


def test_layout_check_sees_an_off_screen_note_and_groups_out_of_order():
    workflow = copy.deepcopy(load_workflow(FOLDER / "Diffusion4D_synthetic.json"))
    note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")
    note["pos"] = [note["pos"][0], -600]
    assert any("note" in p for p in layout_problems(workflow))
    workflow = copy.deepcopy(load_workflow(FOLDER / "Diffusion4D_synthetic.json"))
    workflow["groups"][0]["title"], workflow["groups"][1]["title"] = (workflow["groups"][1]["title"],
                                                                      workflow["groups"][0]["title"])
    assert any("numbered" in p for p in layout_problems(workflow))


def test_layout_check_sees_a_view_that_opens_under_the_frontends_bars():
    """Frontends from 1.3x draw the side bar and the workflow's name over the canvas: the view the files saved
    before (offset 30, 60 at 0.7) put the note's left edge and the first group's title under them."""
    workflow = copy.deepcopy(load_workflow(FOLDER / "PosedFrames4D.json"))
    assert layout_problems(workflow) == []
    workflow["extra"]["ds"] = {"scale": 0.7, "offset": [30, 60]}
    problems = layout_problems(workflow)
    assert any("note" in p for p in problems) and any("under the frontend's bars" in p for p in problems), problems


def test_every_node_type_has_a_measured_size():
    sizes = frontend_sizes()
    types = {n["type"] for p in WORKFLOWS for n in load_workflow(p)["nodes"]}
    assert types <= set(sizes), sorted(types - set(sizes))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_ends_in_a_4d_preview_beside_its_savers(path):
    workflow = load_workflow(path)
    previews = [n for n in workflow["nodes"] if n["type"] == "Gen4D_Preview4D"]
    assert len(previews) == 1, f"{path.name}: {len(previews)} Gen4D_Preview4D nodes"
    (preview,) = previews
    assert any(s["link"] is not None for s in preview["inputs"]), "the preview is connected"
    savers = [n for n in workflow["nodes"] if n["type"] in SAVERS]
    assert savers and _group_of(workflow, preview) in {_group_of(workflow, s) for s in savers}
    last = max(workflow["groups"], key=lambda g: g["bounding"][0])["title"]
    assert _group_of(workflow, preview) == last, "the preview sits in the last group"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_model_picker_is_saved_as_the_placeholder(path):
    values = [v for n in load_workflow(path)["nodes"] for v in n.get("widgets_values") or []]
    assert NO_MODELS not in values


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_images_a_workflow_loads_are_shipped(path):
    for node in load_workflow(path)["nodes"]:
        if node["type"] == "LoadImage":
            name = node["widgets_values"][0]
            assert (FOLDER / "input" / name).is_file(), f"{path.name} loads {name}, not in example_workflows/input"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_has_a_thumbnail(path):
    """ComfyUI's frontend (1.27) shows a custom node's template with the image ``<name>.jpg`` beside it."""
    from PIL import Image

    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{path.name}: no thumbnail {thumb.name} (python tools/workflow_shots.py --thumbnails)"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and 200 <= image.width <= 1200 and image.height >= 120
        assert len(np.unique(np.asarray(image.convert("L").resize((32, 18))))) > 8, "the thumbnail is blank"
    assert thumb.stat().st_size < 200_000


def test_weight_free_workflows_are_marked_runnable():
    runnable = {p.stem for p in WORKFLOWS if is_runnable(load_workflow(p))}
    assert runnable == {p.stem for p in WORKFLOWS if p.stem.endswith("_synthetic") or p.stem.endswith("Orbit")}


def test_web_extension_is_registered_once():
    """ComfyUI serves a web folder for WEB_DIRECTORY and again for pyproject's [tool.comfy] web."""
    comfy = (ROOT / "pyproject.toml").read_text().split("[tool.comfy]", 1)[-1].split("\n[", 1)[0]
    init = (ROOT / "__init__.py").read_text()
    assert ('WEB_DIRECTORY = "./web"' in init) != bool(re.search(r"^web\s*=", comfy, re.MULTILINE))


def test_install_copies_the_example_inputs_without_overwriting(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen4d_install", ROOT / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    (tmp_path / "example.png").write_bytes(b"the user's own file")
    copied = install.copy_example_inputs(tmp_path)
    shipped = {p.name for p in (FOLDER / "input").glob("*.png")}
    assert {"example.png", "front_view.png"} <= shipped
    assert {p.name for p in copied} == shipped - {"example.png"}
    assert (tmp_path / "example.png").read_bytes() == b"the user's own file"
    assert (tmp_path / "front_view.png").read_bytes() == (FOLDER / "input" / "front_view.png").read_bytes()


def test_measured_sizes_fold_to_the_largest_over_frontends():
    """Each frontend measured widens or heightens a node type's size, never shrinks it, and is listed once."""
    from workflow_shots import merged_sizes

    old = {"measured_with": "ComfyUI 0.3.64, frontend 1.27.10 (how it was measured)",
           "nodes": {"A": [210, 150], "B": [300, 90]}}
    table = merged_sizes(old, "frontend 1.35.9", {"A": [220, 140], "C": [100, 50]})
    assert table["nodes"] == {"A": [220, 150], "B": [300, 90], "C": [100, 50]}
    assert table["measured_with"] == ["ComfyUI 0.3.64, frontend 1.27.10 (how it was measured)", "frontend 1.35.9"]
    assert merged_sizes(table, "frontend 1.35.9", {"A": [1, 1]})["measured_with"] == table["measured_with"]
