# SPDX-License-Identifier: Apache-2.0
"""Tests of the UI-workflow checker and the UI -> API converter, on small fake node classes."""

from __future__ import annotations

import copy
import json

import pytest
from workflow_checker import (
    CORE_NODE_TYPES,
    build_registry,
    check_workflow,
    is_runnable,
    load_workflow,
    map_widget_values,
    spec_from_class,
    types_match,
    ui_to_api,
)


class FakeSource:
    """Widget-only node producing a FAKE_THING."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 100}),
                "mode": (["a", "b"], {"default": "a"}),
                "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0}),
                "label": ("STRING", {"default": ""}),
                "flag": ("BOOLEAN", {"default": True}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("FAKE_THING",)
    RETURN_NAMES = ("thing",)
    FUNCTION = "run"
    CATEGORY = "test"


class FakeRender:
    """Takes a FAKE_THING plus an INT that is driven by a PrimitiveNode in the good workflow."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"thing": ("FAKE_THING",), "frames": ("INT", {"default": 4, "min": 1, "max": 64})},
            "optional": {
                "note": ("STRING", {"forceInput": True}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 9, "control_after_generate": False}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"


NODE_CLASSES = {"Test_Source": FakeSource, "Test_Render": FakeRender}


def good_workflow() -> dict:
    """Source -> Reroute -> Render (frames from a PrimitiveNode) -> PreviewImage, plus a Note."""
    nodes = [
        {
            "id": 1,
            "type": "Test_Source",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "thing", "type": "FAKE_THING", "links": [1]}],
            "widgets_values": [5, "fixed", "b", 1.5, "hello", False],
        },
        {
            "id": 2,
            "type": "Reroute",
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": 1}],
            "outputs": [{"name": "", "type": "FAKE_THING", "links": [2]}],
        },
        {
            "id": 3,
            "type": "Test_Render",
            "mode": 0,
            "inputs": [
                {"name": "thing", "type": "FAKE_THING", "link": 2},
                {"name": "frames", "type": "INT", "widget": {"name": "frames"}, "link": 3},
                {"name": "note", "type": "STRING", "link": None},
            ],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}],
            "widgets_values": [4, 3],
        },
        {
            "id": 4,
            "type": "PrimitiveNode",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "frames"}, "links": [3]}],
            "widgets_values": [12, "fixed"],
        },
        {
            "id": 5,
            "type": "PreviewImage",
            "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 4}],
            "outputs": [],
            "widgets_values": [],
        },
        {"id": 6, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hi"]},
    ]
    links = [
        [1, 1, 0, 2, 0, "FAKE_THING"],
        [2, 2, 0, 3, 0, "FAKE_THING"],
        [3, 4, 0, 3, 1, "INT"],
        [4, 3, 0, 5, 0, "IMAGE"],
    ]
    return {
        "last_node_id": 6,
        "last_link_id": 4,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "version": 0.4,
    }


def node(workflow: dict, node_id: int) -> dict:
    return next(n for n in workflow["nodes"] if n["id"] == node_id)


def problems_of(workflow: dict) -> list[str]:
    return check_workflow(workflow, NODE_CLASSES)


def test_good_workflow_passes():
    assert problems_of(good_workflow()) == []


def test_ui_to_api_resolves_widgets_reroutes_and_primitives():
    assert ui_to_api(good_workflow(), NODE_CLASSES) == {
        "1": {
            "class_type": "Test_Source",
            "inputs": {"seed": 5, "mode": "b", "scale": 1.5, "label": "hello", "flag": False},
            "_meta": {"title": "Test_Source"},
        },
        "3": {
            "class_type": "Test_Render",
            "inputs": {"frames": 12, "seed": 3, "thing": ["1", 0]},
            "_meta": {"title": "Test_Render"},
        },
        "5": {
            "class_type": "PreviewImage",
            "inputs": {"images": ["3", 0]},
            "_meta": {"title": "PreviewImage"},
        },
    }


def test_ui_to_api_skips_muted_and_passes_through_bypassed():
    workflow = good_workflow()
    node(workflow, 3)["mode"] = 4  # bypassed Render has no IMAGE input to pass through
    prompt = ui_to_api(workflow, NODE_CLASSES)
    assert "3" not in prompt and "images" not in prompt["5"]["inputs"]
    workflow = good_workflow()
    node(workflow, 1)["mode"] = 2
    prompt = ui_to_api(workflow, NODE_CLASSES)
    assert "1" not in prompt and "thing" not in prompt["3"]["inputs"]


def test_bypassed_node_feeds_matching_input_through():
    workflow = good_workflow()
    workflow["nodes"].append(
        {
            "id": 7,
            "type": "ImageScaleBy",
            "mode": 4,
            "inputs": [{"name": "image", "type": "IMAGE", "link": 5}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}],
            "widgets_values": ["bilinear", 2.0],
        }
    )
    node(workflow, 3)["outputs"][0]["links"] = [5]
    workflow["links"][3] = [4, 7, 0, 5, 0, "IMAGE"]
    workflow["links"].append([5, 3, 0, 7, 0, "IMAGE"])
    assert problems_of(workflow) == []
    assert ui_to_api(workflow, NODE_CLASSES)["5"]["inputs"] == {"images": ["3", 0]}


def test_unknown_node_type_is_reported():
    workflow = good_workflow()
    node(workflow, 1)["type"] = "Test_Missing"
    assert any("unknown node type 'Test_Missing'" in p for p in problems_of(workflow))
    with pytest.raises(ValueError, match="Test_Missing"):
        ui_to_api(workflow, NODE_CLASSES)


def test_type_mismatched_link_is_reported():
    workflow = good_workflow()
    # Feed Render's IMAGE output into... Render's own FAKE_THING input instead of the reroute.
    workflow["links"][1] = [2, 3, 0, 3, 0, "IMAGE"]
    node(workflow, 3)["outputs"][0]["links"] = [4, 2]
    node(workflow, 2)["outputs"][0]["links"] = []
    problems = problems_of(workflow)
    assert any("type mismatch" in p and "IMAGE" in p and "FAKE_THING" in p for p in problems), problems


def test_type_mismatch_through_reroute_is_reported():
    workflow = good_workflow()
    workflow["links"][0] = [1, 3, 0, 2, 0, "IMAGE"]  # Reroute now carries IMAGE into a FAKE_THING input
    node(workflow, 1)["outputs"][0]["links"] = []
    node(workflow, 3)["outputs"][0]["links"] = [4, 1]
    assert any("type mismatch" in p for p in problems_of(workflow))


def test_out_of_range_and_wrong_kind_values_are_reported():
    workflow = good_workflow()
    node(workflow, 1)["widgets_values"][0] = 101
    assert any("seed: 101 is above max 100" in p for p in problems_of(workflow))
    node(workflow, 1)["widgets_values"][0] = 2.5
    assert any("seed: expected an integer" in p for p in problems_of(workflow))
    node(workflow, 1)["widgets_values"][3] = -0.5
    assert any("scale: -0.5 is below min 0.0" in p for p in problems_of(workflow))
    node(workflow, 1)["widgets_values"][5] = "yes"
    assert any("flag: expected true/false" in p for p in problems_of(workflow))


def test_bad_combo_value_is_reported():
    workflow = good_workflow()
    node(workflow, 1)["widgets_values"][2] = "c"
    assert any("mode: 'c' is not one of ['a', 'b']" in p for p in problems_of(workflow))


def test_bad_control_after_generate_value_is_reported():
    workflow = good_workflow()
    node(workflow, 1)["widgets_values"][1] = "sometimes"
    assert any("control_after_generate 'sometimes'" in p for p in problems_of(workflow))


def test_missing_control_value_shifts_and_is_caught():
    workflow = good_workflow()
    del node(workflow, 1)["widgets_values"][1]  # written as if seed had no control value
    problems = problems_of(workflow)
    assert problems and any("control_after_generate 'b'" in p for p in problems), problems


def test_too_many_widget_values_is_reported():
    workflow = good_workflow()
    node(workflow, 3)["widgets_values"].append("randomize")  # seed here has control_after_generate False
    assert any("3 widgets_values but 2 widget slots" in p for p in problems_of(workflow))


def test_primitive_value_is_checked_against_its_target():
    workflow = good_workflow()
    node(workflow, 4)["widgets_values"][0] = 65
    assert any("frames: 65 is above max 64" in p for p in problems_of(workflow))


def test_missing_required_input_is_reported():
    workflow = good_workflow()
    workflow["links"] = [link for link in workflow["links"] if link[0] != 2]
    node(workflow, 2)["outputs"][0]["links"] = []
    node(workflow, 3)["inputs"][0]["link"] = None
    problems = problems_of(workflow)
    assert any("required input 'thing' (FAKE_THING)" in p for p in problems), problems
    workflow = good_workflow()
    node(workflow, 1)["widgets_values"] = [5, "fixed", "b"]
    assert any("required input 'label' (STRING)" in p for p in problems_of(workflow))


def test_dangling_and_inconsistent_links_are_reported():
    workflow = good_workflow()
    workflow["links"].append([9, 99, 0, 5, 0, "IMAGE"])
    problems = problems_of(workflow)
    assert any("link 9" in p and "dangling" in p and "99" in p for p in problems), problems
    workflow = good_workflow()
    node(workflow, 5)["inputs"][0]["link"] = 42
    problems = problems_of(workflow)
    assert any("names link 42" in p for p in problems) and any("points at link 42" in p for p in problems)
    workflow = good_workflow()
    workflow["links"][3] = [4, 3, 3, 5, 0, "IMAGE"]
    assert any("has no output slot 3" in p for p in problems_of(workflow))


def test_stale_slot_types_and_missing_output_node_are_reported():
    workflow = good_workflow()
    node(workflow, 1)["outputs"][0]["type"] = "OLD_THING"
    assert any("output 0 saved as OLD_THING" in p for p in problems_of(workflow))
    workflow = good_workflow()
    node(workflow, 5)["mode"] = 2
    assert any("no active output node" in p for p in problems_of(workflow))


def test_widget_slot_rules():
    source = spec_from_class("Test_Source", FakeSource)
    assert [(s.name, r) for s, r in source.widget_slots()] == [
        ("seed", "value"),
        ("seed", "control"),
        ("mode", "value"),
        ("scale", "value"),
        ("label", "value"),
        ("flag", "value"),
    ]
    render = spec_from_class("Test_Render", FakeRender)
    assert [(s.name, r) for s, r in render.widget_slots()] == [("frames", "value"), ("seed", "value")]
    registry = build_registry(
        {},
        {
            "X": {
                "input": {"required": {"c": ["COMBO", {"options": ["p"], "control_after_generate": True}]}},
                "output": [],
            }
        },
    )
    assert [r for _, r in registry["X"].widget_slots()] == ["value", "combo_control", "filter"]
    assert [r for _, r in registry["LoadImage"].widget_slots()] == ["value", "upload"]
    assigned, problems = map_widget_values(registry["LoadImage"], {"image": "a.png"})
    assert [(s.name, v) for s, _, v in assigned] == [("image", "a.png")] and problems == []


def test_core_table_parses_and_types_match():
    registry = build_registry({}, None)
    assert set(CORE_NODE_TYPES) <= set(registry)
    assert registry["SaveImage"].output_node and registry["GetVideoComponents"].outputs == (
        "IMAGE",
        "AUDIO",
        "FLOAT",
    )
    assert (
        types_match("IMAGE", "*") and types_match("IMAGE,MASK", "MASK") and not types_match("IMAGE", "MASK")
    )


def test_links_as_objects_are_accepted():
    workflow = good_workflow()
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    workflow["links"] = [dict(zip(keys, link)) for link in workflow["links"]]
    assert problems_of(workflow) == []


def test_load_workflow_and_runnable_mark(tmp_path):
    workflow = good_workflow()
    path = tmp_path / "w.json"
    path.write_text(json.dumps(workflow), encoding="utf-8")
    assert load_workflow(path) == workflow and not is_runnable(workflow)
    marked = copy.deepcopy(workflow)
    marked["extra"] = {"gen4d": {"runnable": True}}
    assert is_runnable(marked)
    (tmp_path / "bad.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="not a UI-format workflow"):
        load_workflow(tmp_path / "bad.json")


def test_file_pickers_accept_files_the_user_supplies():
    from workflow_checker import check_value

    spec = build_registry({}, {"LoadImage": {
        "input": {"required": {"image": [["only_this.png"], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"]}})["LoadImage"].input("image")
    assert check_value(spec, "my_photo.png") is None, "a template names a file the user puts in input/"
    assert check_value(spec, "") is not None and check_value(spec, 3) is not None


def test_dataset_pickers_accept_datasets_the_user_supplies():
    """Gen4D Load Posed Frames' folder picker lists the user's input folder; a shared workflow names its own."""
    import gen4d
    from workflow_checker import check_value

    spec = build_registry({"Gen4D_LoadPosedFrames": gen4d.NODE_CLASS_MAPPINGS["Gen4D_LoadPosedFrames"]})[
        "Gen4D_LoadPosedFrames"].input("folder")
    assert check_value(spec, "dnerf/lego") is None and check_value(spec, "(no datasets found)") is None
    assert check_value(spec, "") is not None and check_value(spec, 3) is not None
    split = build_registry({"Gen4D_LoadPosedFrames": gen4d.NODE_CLASS_MAPPINGS["Gen4D_LoadPosedFrames"]})[
        "Gen4D_LoadPosedFrames"].input("split")
    assert check_value(split, "someday") is not None, "other combos still hold to their lists"


def test_with_widget_values_writes_the_right_slot_and_refuses_sockets():
    import gen4d
    from workflow_builder import Graph
    from workflow_checker import with_widget_values

    g = Graph(gen4d.NODE_CLASS_MAPPINGS)
    world = g.add("Gen4D_SyntheticWorld", (0, 0), seed=3, fps=8.0)
    wf = g.to_dict()
    changed = with_widget_values(wf, {f"{world}.seed": 11, f"{world}.fps": 12.0}, gen4d.NODE_CLASS_MAPPINGS)
    prompt = ui_to_api(changed, gen4d.NODE_CLASS_MAPPINGS)
    assert prompt[str(world)]["inputs"]["seed"] == 11 and prompt[str(world)]["inputs"]["fps"] == 12.0
    assert ui_to_api(wf, gen4d.NODE_CLASS_MAPPINGS)[str(world)]["inputs"]["seed"] == 3, "the input is not changed"
    with pytest.raises(ValueError, match="no widget input 'cameras'"):
        with_widget_values(wf, {f"{world}.cameras": 1}, gen4d.NODE_CLASS_MAPPINGS)
    with pytest.raises(ValueError, match="no node '9'"):
        with_widget_values(wf, {"9.seed": 1}, gen4d.NODE_CLASS_MAPPINGS)
