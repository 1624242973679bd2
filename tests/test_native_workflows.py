# SPDX-License-Identifier: Apache-2.0
"""The native-model workflows: the same stages as the folder-loader ones, models from ComfyUI's own nodes."""

from __future__ import annotations

import copy

import gen4d
import make_native_workflows as native
import pytest
from workflow_builder import Graph
from workflow_checker import CORE_MODEL_NODE_TYPES, build_registry, check_workflow, load_workflow

WORKFLOWS = native.REPO / "example_workflows"
PAIRS = [("CoCo4D.json", "CoCo4D_native.json"), ("MoGe4D.json", "MoGe4D_native.json")]

#: Nodes that provide models (or, on the native path, the reference video); everything else is a stage.
PROVIDERS = set(native.REPLACED) | set(native.ADAPTORS) | set(native.KEPT_LOADERS) | set(CORE_MODEL_NODE_TYPES)


def _stages(workflow: dict) -> dict[int, dict]:
    return {n["id"]: n for n in workflow["nodes"] if n["type"] not in PROVIDERS and n["type"] != "MarkdownNote"}


def _edges(workflow: dict):
    """``(source id, output name, target id, input name)`` of every link."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for _, src, slot, dst, dst_slot, _ in workflow["links"]:
        yield src, nodes[src]["outputs"][slot]["name"], dst, nodes[dst]["inputs"][dst_slot]["name"]


def graph_differences(ours: dict, theirs: dict) -> list[str]:
    """How two workflows differ outside their model-providing subgraphs (empty: only the models differ).

    Stage nodes must match one to one (id, type, title, mode, widget values), links between stages must be
    the same, the same stage inputs must be fed from the provider side with the same socket types, and stage
    inputs sharing one provider output on one side must share one on the other.
    """
    problems = []
    a, b = _stages(ours), _stages(theirs)
    if set(a) != set(b):
        problems.append(f"stage nodes differ: {sorted(set(a) ^ set(b))}")
    for node_id in sorted(set(a) & set(b)):
        for key in ("type", "title", "mode", "widgets_values"):
            if a[node_id].get(key) != b[node_id].get(key):
                problems.append(f"node {node_id} {key}: {a[node_id].get(key)!r} vs {b[node_id].get(key)!r}")

    def split(workflow, stages):
        inner, fed, groups = set(), {}, {}
        types = {(n["id"], i["name"]): i["type"] for n in workflow["nodes"] for i in n.get("inputs", [])}
        for src, output, dst, name in _edges(workflow):
            if dst not in stages:
                continue
            if src in stages:
                inner.add((src, output, dst, name))
            else:
                fed[(dst, name)] = types[(dst, name)]
                groups.setdefault((src, output), set()).add((dst, name))
        return inner, fed, {frozenset(g) for g in groups.values()}

    (inner_a, fed_a, groups_a), (inner_b, fed_b, groups_b) = split(ours, a), split(theirs, b)
    if inner_a != inner_b:
        problems.append(f"links between stages differ: {sorted(inner_a ^ inner_b)}")
    if fed_a != fed_b:
        problems.append(f"stage inputs fed by models differ: {sorted(set(fed_a.items()) ^ set(fed_b.items()))}")
    if groups_a != groups_b:
        problems.append(f"stage inputs sharing a provider differ: {groups_a ^ groups_b}")
    return problems


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[1])
def test_native_twin_differs_only_in_its_models(pair):
    source, twin = (load_workflow(WORKFLOWS / name) for name in pair)
    assert graph_differences(source, twin) == []
    assert check_workflow(twin, gen4d.NODE_CLASS_MAPPINGS) == []
    kinds = {n["type"] for n in twin["nodes"]}
    assert not kinds & set(native.REPLACED), f"{pair[1]} still loads through {kinds & set(native.REPLACED)}"
    assert kinds & set(native.ADAPTORS), f"{pair[1]} uses no native adaptor"


def test_the_difference_check_sees_stage_changes():
    source = load_workflow(WORKFLOWS / "CoCo4D.json")
    twin = load_workflow(WORKFLOWS / "CoCo4D_native.json")
    outpaint = next(n for n in twin["nodes"] if n["type"] == "Gen4D_ProgressiveOutpaint")
    changed = copy.deepcopy(twin)
    next(n for n in changed["nodes"] if n["id"] == outpaint["id"])["widgets_values"][2] = 3   # loops
    assert any("widgets_values" in p for p in graph_differences(source, changed))
    # the depth model fed to Compose from a second loader: the same inputs are fed, but no longer shared
    rewired = copy.deepcopy(twin)
    depth = next(n for n in rewired["nodes"] if n["type"] == "Gen4D_DepthLoader")
    link = next(link for link in rewired["links"] if link[1] == depth["id"] and link[3] != outpaint["id"])
    extra = dict(copy.deepcopy(depth), id=999)
    extra["outputs"][0]["links"] = [link[0]]
    depth["outputs"][0]["links"].remove(link[0])
    link[1] = 999
    rewired["nodes"].append(extra)
    assert any("sharing a provider" in p for p in graph_differences(source, rewired))
    slot = next(i for i, inp in enumerate(outpaint["inputs"]) if inp["name"] == "depth_model")
    dropped = copy.deepcopy(twin)
    dropped["links"] = [link for link in dropped["links"] if (link[3], link[4]) != (outpaint["id"], slot)]
    assert any("fed by models" in p for p in graph_differences(source, dropped))


def test_shipped_twins_are_their_derivation():
    """The native files are what tools/make_native_workflows.py derives from today's folder-loader files."""
    assert native.main(["--check"]) == 0, "run: python tools/make_native_workflows.py"


def _into(workflow: dict, node_id: int) -> dict[str, tuple[str, str]]:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    return {name: (nodes[src]["type"], output) for src, output, dst, name in _edges(workflow) if dst == node_id}


def _text_into(workflow: dict, node_id: int, socket: str) -> str:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    (src,) = [s for s, _, d, name in _edges(workflow) if d == node_id and name == socket]
    assert nodes[src]["type"] == "CLIPTextEncode"
    return nodes[src]["widgets_values"][0]


def _values(workflow: dict, node: dict) -> dict:
    """Widget name -> value of ``node``."""
    slots = build_registry(gen4d.NODE_CLASS_MAPPINGS)[node["type"]].widget_slots()
    return {inp.name: v for (inp, role), v in zip(slots, node["widgets_values"]) if role == "value"}


def _one(workflow: dict, kind: str) -> dict:
    (node,) = [n for n in workflow["nodes"] if n["type"] == kind]
    return node


def test_coco4d_native_models_and_prompts():
    """Zero123 sees what the fits see and guides both; the prompts are the stages' own; one umt5 encoder and one
    Wan VAE serve the reference video and VACE."""
    wf = load_workflow(WORKFLOWS / "CoCo4D_native.json")
    source = load_workflow(WORKFLOWS / "CoCo4D.json")
    zero123 = _one(wf, "Gen4D_NativeZero123Guidance")
    feeds = _into(wf, zero123["id"])
    assert feeds["model"] == ("ImageOnlyCheckpointLoader", "MODEL")
    assert feeds["clip_vision"] == ("ImageOnlyCheckpointLoader", "CLIP_VISION")
    assert _values(wf, zero123)["condition_radius"] == _values(source, _one(source, "Gen4D_Zero123GuidanceLoader"))[
        "condition_radius"]
    for fit in ("Gen4D_StaticGaussians", "Gen4D_DeformationFit"):
        into = _into(wf, _one(wf, fit)["id"])
        assert into["guidance"] == ("Gen4D_NativeZero123Guidance", "guidance")
        assert feeds["condition_image"] == into["images"] and feeds["condition_masks"] == into["masks"]
    outpaint = _one(wf, "Gen4D_ProgressiveOutpaint")
    assert _into(wf, outpaint["id"])["guidance"] == ("Gen4D_NativeSDGuidance", "guidance")
    prompt = outpaint["widgets_values"][0]
    for kind in ("Gen4D_NativeVideoInpaintModel", "Gen4D_NativeInpaintModel"):
        assert _text_into(wf, _one(wf, kind)["id"], "positive") == prompt
    decode = next(n for n in wf["nodes"] if n["type"] == "VAEDecode")
    assert _into(wf, _one(wf, "Gen4D_SAM2Split")["id"])["images"] == ("VAEDecode", "IMAGE")
    assert _into(wf, _one(wf, "Gen4D_Compose")["id"])["reference_images"] == ("VAEDecode", "IMAGE")
    assert _into(wf, decode["id"]) == {"samples": ("KSampler", "LATENT"), "vae": ("VAELoader", "VAE")}
    assert len([n for n in wf["nodes"] if n["type"] in ("CLIPLoader", "VAELoader")]) == 2
    reference = _values(source, _one(source, "Gen4D_I2VReference"))
    sampler = _values(wf, _one(wf, "KSampler"))
    assert (sampler["seed"], sampler["steps"], sampler["cfg"]) == (reference["seed"], reference["steps"],
                                                                   reference["guidance_scale"])
    assert _values(wf, _one(wf, "WanImageToVideo"))["length"] == reference["num_frames"]
    assert _text_into(wf, _one(wf, "WanImageToVideo")["id"], "positive") == reference["prompt"]


def test_moge4d_native_vism_lora_and_prompt():
    wf = load_workflow(WORKFLOWS / "MoGe4D_native.json")
    vism = _one(wf, "Gen4D_ViSMRender")
    video = _one(wf, "Gen4D_NativeVideoInpaintModel")
    feeds = _into(wf, video["id"])
    assert feeds["model"] == ("LoraLoaderModelOnly", "MODEL")
    assert feeds["clip_vision_output"] == ("CLIPVisionEncode", "CLIP_VISION_OUTPUT")
    lora = _one(wf, "LoraLoaderModelOnly")
    assert _values(wf, lora)["strength_model"] == _values(wf, vism)["lora_strength"], "ViSM Render's LoRA strength"
    assert _into(wf, lora["id"])["model"] == ("UNETLoader", "MODEL")
    assert _text_into(wf, video["id"], "positive") == _values(wf, vism)["prompt"]
    image = _into(wf, _one(wf, "Gen4D_TrajectoryDiT")["id"])["image"]
    assert _into(wf, _one(wf, "CLIPVisionEncode")["id"])["image"] == image


def test_model_file_combos_take_any_name_but_other_combos_are_checked():
    """A template names model files an installation may lack; a server's file list does not reject them."""
    server = {
        "UNETLoader": {"input": {"required": {"unet_name": [["mine.safetensors"]],
                                              "weight_dtype": [["default", "fp8_e4m3fn"]]}},
                       "output": ["MODEL"]},
    }
    registry = build_registry({}, server)
    assert registry["UNETLoader"].input("unet_name").choices is None
    assert registry["UNETLoader"].input("weight_dtype").choices == ("default", "fp8_e4m3fn")
    g = Graph({}, server)
    unet = g.add("UNETLoader", (0, 0), unet_name="theirs.safetensors", weight_dtype="fp8_e5m2")
    ksampler = g.add("KSampler", (400, 0), sampler_name="euler", scheduler="simple")
    g.link(unet, "MODEL", ksampler, "model")
    problems = check_workflow(g.to_dict(), {}, server)
    assert not [p for p in problems if "unet_name" in p]
    assert [p for p in problems if "weight_dtype" in p and "fp8_e5m2" in p]


def test_builder_remove_unlinks_both_ends():
    g = Graph(gen4d.NODE_CLASS_MAPPINGS)
    cams = g.add("Gen4D_CameraPath", (0, 0))
    world = g.add("Gen4D_SyntheticWorld", (400, 0))
    render = g.add("Gen4D_Render", (800, 0))
    save = g.add("SaveAnimatedWEBP", (1200, 0))
    g.link(cams, "cameras", world, "cameras")
    g.link(cams, "cameras", render, "cameras")
    g.link(world, "gaussian_twin", render, "scene")
    g.link(render, "images", save, "images")
    g.remove(world)
    wf = g.to_dict()
    assert [link[0] for link in wf["links"]] == [2, 4]
    assert next(n for n in wf["nodes"] if n["id"] == cams)["outputs"][0]["links"] == [2]
    assert next(i for i in wf["nodes"][1]["inputs"] if i["name"] == "scene")["link"] is None
    assert check_workflow(wf, gen4d.NODE_CLASS_MAPPINGS) == []


@pytest.mark.parametrize("name", [twin for _, twin in PAIRS])
def test_comfyui_model_nodes_open_in_the_first_groups(name):
    """The twin as built: ComfyUI's loaders in group 1, the prompt and image encoders in group 2, each adaptor
    where the folder loader it stands in for stood (that loader's group in the source file)."""
    wf = load_workflow(WORKFLOWS / name)
    source = load_workflow(WORKFLOWS / name.replace("_native", ""))

    def group(workflow, node):
        x, y = node["pos"]
        (title,) = [g["title"] for g in workflow["groups"]
                    if g["bounding"][0] <= x <= g["bounding"][0] + g["bounding"][2]
                    and g["bounding"][1] <= y <= g["bounding"][1] + g["bounding"][3]]
        return title

    for node in wf["nodes"]:
        if node["type"] in ("CLIPTextEncode", "CLIPVisionEncode"):
            assert group(wf, node).startswith("2 · "), (node["id"], node["type"], group(wf, node))
        elif node["type"].endswith("Loader") or node["type"] == "LoraLoaderModelOnly":
            assert group(wf, node).startswith("1 · "), (node["id"], node["type"], group(wf, node))
    stood = {"Gen4D_NativeVideoInpaintModel": "Gen4D_VideoInpaintModelLoader",
             "Gen4D_NativeInpaintModel": "Gen4D_InpaintModelLoader",
             "Gen4D_NativeSDGuidance": "Gen4D_SDGuidanceLoader",
             "Gen4D_NativeZero123Guidance": "Gen4D_Zero123GuidanceLoader"}
    for adaptor, loader in stood.items():
        for node in (n for n in wf["nodes"] if n["type"] == adaptor):
            before = group(source, _one(source, loader)).split(" · ", 1)[1]
            assert group(wf, node).split(" · ", 1)[1].split(" (")[0] == before.split(" (")[0], (adaptor, before)
