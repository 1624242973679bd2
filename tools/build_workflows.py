# SPDX-License-Identifier: Apache-2.0
"""Bring the workflow files in ``example_workflows/`` to their shipped form, in place.

    python tools/build_workflows.py            # rewrite the files
    python tools/build_workflows.py --check    # exit 1 if a file is not in its shipped form

For every workflow: the widget values it ships with (the weight-free twins carry CPU-sized settings in
their own widgets, so a user queueing one as opened gets a run of a few minutes; the paper's settings are
named in the note), the model each loader expects (the frontend swaps in the first model present,
web/gen4d_models.js), a ``Gen4D Preview 4D`` beside the savers, and the layout: groups left to right in
pipeline order, nodes stacked in columns at the sizes ComfyUI's frontend draws them
(``frontend_node_sizes.json``, measured by tests/browser/workflows.mjs), the note at the top left of the
first group where the file opens.

The native-model twins (``*_native.json``) are not edited in place: each is derived anew from its built
source workflow by tools/make_native_workflows.py, then laid out by the source's plan with ComfyUI's
loaders added to the first group, the prompt and image encoders in a group of their own after it, the core
sampling chain beside the first node it feeds, and each native adaptor where the folder loader it stands in
for stood.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import make_native_workflows as native  # noqa: E402
from workflow_builder import Graph  # noqa: E402
from workflow_layout import OPENING_VIEW, SHOWN_HEIGHT, Layout  # noqa: E402

FOLDER = ROOT / "example_workflows"

# The model each loader names in a shipped file: the folder name of the checkpoint the graph was made for.
MODELS = {
    "Gen4D_VideoModelLoader": ("model", "Wan2.1-I2V-14B-480P-Diffusers"),
    "Gen4D_SAM2Loader": ("model_name", "sam2.1-hiera-tiny"),
    "Gen4D_InpaintModelLoader": ("model", "stable-diffusion-2-inpainting"),
    "Gen4D_Zero123GuidanceLoader": ("model", "stable-zero123-diffusers"),
    "Gen4D_SDGuidanceLoader": ("model", "stable-diffusion-2-1-base"),
    "Gen4D_OrbitalModelLoader": ("model", "i2vgen-xl"),
    "Gen4D_TrajectoryModelLoader": ("model", "MoGe4D"),
}
# Per workflow where the kind alone does not decide it.
MODELS_BY_FILE = {
    "CoCo4D": {"Gen4D_DepthLoader": ("model_name", "Depth-Anything-V2-Small-hf"),
               "Gen4D_VideoInpaintModelLoader": ("model", "Wan2.1-VACE-1.3B-diffusers")},
    "MoGe4D": {"Gen4D_DepthLoader": ("model_name", "Depth-Anything-V2-Metric-Outdoor-Small-hf"),
               "Gen4D_VideoInpaintModelLoader": ("model", "Wan2.1-Fun-V1.1-14B-InP")},
}

# Widget values of the weight-free twins as shipped (node id -> widget -> value): sized for a 2-core CPU.
SETTINGS: dict[str, dict[int, dict[str, Any]]] = {
    "CoCo4D_synthetic": {
        1: {"num_frames": 6, "width": 96, "height": 72},
        2: {"width": 96, "height": 72, "num_frames": 6, "twin_points": 2000, "supersample": 1},
        5: {"iterations": 120, "num_points": 1500},
        6: {"iterations": 40, "times_per_step": 2, "trajectory_iterations": 10},
        7: {"loops": 1, "pose_sets": "0,30; 0,-30", "static_iterations": 30, "deformation_iterations": 15,
            "static_iterations_per_pose": 6, "deformation_iterations_per_pose": 4, "lift_size": 48},
        12: {"num_frames": 16, "width": 160, "height": 120},
    },
    "Diffusion4D_synthetic": {
        1: {"num_frames": 12, "width": 48, "height": 48},
        2: {"width": 48, "height": 48, "num_frames": 12, "twin_points": 500, "supersample": 1},
        7: {"iterations": 300, "num_points": 1000, "views_per_step": 2, "center_object": False},
        8: {"iterations": 60, "times_per_step": 2, "center_object": False},
        9: {"num_frames": 16, "width": 64, "height": 64},
    },
    "Gen4D_ForegroundFit_synthetic": {
        1: {"width": 64, "height": 64, "num_frames": 8, "twin_points": 4000, "supersample": 1},
        2: {"iterations": 80, "num_points": 1500, "views_per_step": 2, "center_object": False},
        3: {"iterations": 24, "times_per_step": 2, "trajectory_iterations": 6, "center_object": False},
        4: {"num_frames": 12, "width": 96, "height": 96},
    },
    "Gen4D_SyntheticOrbit": {
        1: {"num_frames": 8, "width": 96, "height": 96},
        2: {"width": 96, "height": 96, "num_frames": 8, "twin_points": 8000, "supersample": 1},
    },
    "MoGe4D_synthetic": {
        1: {"width": 96, "height": 64, "num_frames": 9, "supersample": 1},
        2: {"num_frames": 9, "width": 96, "height": 64},
    },
}
RUNNABLE = set(SETTINGS)
# The model workflows' own values where they differ from the node defaults (posed fits: no centring).
# Fine stage: 8 of the orbit's 24 frames a step, not the node's CoCo4D default of 4, and 4DGS's fine-stage
# densification. On one H100 (bench/fit_bench.py --case orbital, two runs each) 8 frames gave 29.2 / 29.1 dB
# in 33.1 / 29.6 s, 16 frames 29.1 / 28.1 dB in 41.9 / 42.3 s.
SETTINGS["Diffusion4D"] = {11: {"center_object": False},
                           12: {"center_object": False, "times_per_step": 8, "densify": True}}
# Tiny sizes for the test suite's headless runs (tests/test_run_workflow.py); never applied in ComfyUI.
TEST_OVERRIDES = {
    "Gen4D_ForegroundFit_synthetic": {"1.num_frames": 3, "1.width": 24, "1.height": 24, "1.twin_points": 300,
                                      "2.iterations": 6, "2.num_points": 200, "3.iterations": 3,
                                      "3.trajectory_iterations": 2, "4.num_frames": 3, "4.width": 24,
                                      "4.height": 24},
}

# What each file's note says about its settings (replaces the note's paragraph that starts the same way).
SETTINGS_NOTES = {
    "CoCo4D_synthetic": (
        "**As shipped** (a few minutes on a 2-core CPU): 6 frames at 96×72, foreground 120 static + 40 motion "
        "(2 times per step) + 10 trajectory steps, background 1 loop of 2 poses (30 + 15 steps, then 6 + 4 per "
        "pose), a 16-frame 160×120 novel-view render. **Paper settings**, one widget each: foreground 1000 + 800 "
        "steps (4 times per step) + 50 trajectory steps; outpaint 300 + 300 steps, `loops` 2 over the 4 + 4 "
        "`pose_sets` `0,30; 0,-30; 15,0; -15,0 | 15,30; 15,-30; -15,30; -15,-30`, 300 + 300 per pose; larger "
        "frames (`width`/`height` on the world and reference camera, `supersample` 3) on a GPU. The foreground "
        "fit runs without SDS here: the world offers no object-centred novel views to stand in for Zero123."),
    "Diffusion4D_synthetic": (
        "**As shipped** (a few minutes on a 2-core CPU): 12 views at 48², coarse 300 iterations from 1000 "
        "points, fine 60 iterations, a 16-view novel orbit. **Paper settings**, one widget each: 24 views at "
        "256² (`num_frames`, `width`, `height` on the orbit camera and the world), coarse 5000 and fine 2000 "
        "iterations (16 times per fine step); on a GPU."),
    "Gen4D_ForegroundFit_synthetic": (
        "**As shipped** (a few minutes on a 2-core CPU): 8 frames at 64², 80 static steps from 1500 points, "
        "24 motion steps (2 times per step) + 6 trajectory steps, a 12-view 96² orbit. **Paper settings**, "
        "one widget each: 5000-point sphere, 1000 static + 800 motion steps, 4 times per step, 50 trajectory "
        "steps, 16 frames at 256² with `supersample` 3; on a GPU."),
    "Gen4D_SyntheticOrbit": (
        "**As shipped**: 8 views at 96², 8000 twin Gaussians (seconds on a CPU); raise `num_frames`, the sizes "
        "and `twin_points` freely."),
    "MoGe4D_synthetic": (
        "**As shipped**: 9 frames at 96×64 (well under a minute on a CPU). **Paper settings**: 49 frames at "
        "512×368 on the world and the camera path."),
}

# A sentence of an earlier note replaced by the "As shipped" paragraph.
OLD_SETTINGS_SENTENCE = (" Small CPU settings (48², 12 views, 300 + 200 iterations, about 1-2 minutes on a CPU); the "
                         "paper's are 256², 24 views, 5000 + 2000 iterations. Needs no model weights.")
OLD_PAPER_SENTENCE = " Paper settings: 5000-point sphere, 1000 static + 800 deformation iterations, batch 4."
NOTE_SIZE = (460, 420)

# Layouts: groups left to right, each a list of columns of node ids (the note goes first in the first column).
# "P" is the Gen4D Preview 4D the builder adds.
PLANS: dict[str, list[tuple[str, list[list[Any]]]]] = {
    "CoCo4D": [
        ("1 · Inputs and models", [["note", 1], [2, 3, 4, 5, 6]]),
        ("2 · Reference video and split (SAM2)", [[7, 8]]),
        ("3 · Foreground: static 3DGS + Zero123 SDS → motion + trajectory", [[9, 10], [11]]),
        ("4 · Background: progressive outpaint", [[12, 14], [13]]),
        ("5 · Depth-aware composition", [[15, 16, 17]]),
        ("6 · Render, save and preview", [[18, 19, 20], [21, 22], ["P"]]),
    ],
    "CoCo4D_synthetic": [
        ("1 · Inputs: synthetic world with oracle models", [["note", 1], [2]]),
        ("2 · Reference video and split (SAM2)", [[3, 4]]),
        ("3 · Foreground: static 3DGS → motion + trajectory", [[5], [6]]),
        ("4 · Background: progressive outpaint", [[7], [8]]),
        ("5 · Depth-aware composition", [[9, 10, 11]]),
        ("6 · Render, save and preview", [[12, 13, 14], [15, 16], ["P"]]),
    ],
    "Diffusion4D": [
        ("1 · Orbital 4D-aware video diffusion (§3.3)", [["note", 1, 2], [3, 4]]),
        ("2 · Inspect the orbit", [[5, 6, 7], [8, 9]]),
        ("3 · Coarse-to-fine 4D Gaussians (§3.4)", [[10, 20], [11, 21], [12]]),
        ("4 · Render, save and preview", [[13, 14, 15], [16, 17], [18, "P"]]),
    ],
    "Diffusion4D_synthetic": [
        ("1 · Orbits from the synthetic world (stand-in for orbital diffusion)", [["note", 1], [2, 3, 4], [5]]),
        ("2 · Coarse-to-fine 4D Gaussians (§3.4)", [[6, 16], [7, 17], [8]]),
        ("3 · Render, save and preview", [[9, 10, 11], [12, 13], [14, "P"]]),
    ],
    "Gen4D_ForegroundFit_synthetic": [
        ("1 · Reference video (synthetic object world)", [["note", 1], [8]]),
        ("2 · Foreground: static fit → motion", [[2], [3]]),
        ("3 · Render, save and preview", [[4, 5], [6, 7], ["P"]]),
    ],
    "Gen4D_SyntheticOrbit": [
        ("1 · Synthetic world and its 4D Gaussian twin", [["note", 1], [2, 6]]),
        ("2 · Render, save and preview", [[3, 7], [4, 5], ["P"]]),
    ],
    "PosedFrames4D": [
        ("1 · Posed frames (transforms.json)", [["note", 1]]),
        ("2 · Coarse-to-fine 4D Gaussians", [[2, 4], [3], [5]]),
        ("3 · Test views, save and preview", [[6, 7], [8, 9], [10, "P"]]),
    ],
    "MoGe4D": [
        ("1 · Image, depth and models", [["note", 1], [2, 3, 6]]),
        ("2 · 4D-STraG: dense 4D trajectories", [[4, 13]]),
        ("3 · 4D-ViSM: novel-view render + hole inpainting", [[5], [7, 11]]),
        ("4 · Save and preview", [[8, 9, 10], [12, "P"]]),
    ],
    "MoGe4D_synthetic": [
        ("1 · Synthetic scene world (ground-truth tracks)", [["note", 1], [2, 8]]),
        ("2 · 4D-ViSM: novel-view render + hole inpainting", [[3], [5, 9]]),
        ("3 · Save and preview", [[4, 6], ["P"]]),
    ],
}

# Where the preview takes its input from: the source feeding the saver's socket (saver type, its socket,
# the preview's socket).
PREVIEW_FROM = {
    "MoGe4D": ("Gen4D_SaveTracks", "tracks", "tracks"),
    "MoGe4D_synthetic": ("Gen4D_SaveTracks", "tracks", "tracks"),
}
PREVIEW_TITLE = "4D preview (drag to orbit)"

# Titles of the native twins' groups, by source group number (the encoders' group is inserted after the first).
NATIVE_TITLES = {
    "CoCo4D_native": {1: "Inputs and models (ComfyUI's loaders)",
                      2: "Reference video (core Wan 2.1 I2V) and split (SAM2)"},
    "MoGe4D_native": {1: "Image, depth and models (ComfyUI's loaders)"},
}
NATIVE_ENCODERS_TITLE = "Prompts and image encoders"
ENCODERS_PER_COLUMN = 5


def _node_classes():
    from pack_loader import load_pack

    return load_pack().NODE_CLASS_MAPPINGS


def _source_of(g: Graph, node_id: int, socket: str) -> tuple[int, str]:
    node = g._node(node_id)
    slot = next(i for i, s in enumerate(node["inputs"]) if s["name"] == socket)
    link_id = node["inputs"][slot]["link"]
    link = next(link for link in g.links if link[0] == link_id)
    src = g._node(link[1])
    return src["id"], src["outputs"][link[2]]["name"]


def _add_preview(g: Graph, name: str) -> int:
    have = [n["id"] for n in g.nodes if n["type"] == "Gen4D_Preview4D"]
    if have:
        return have[0]
    saver_type, socket, into = PREVIEW_FROM.get(name, ("Gen4D_SaveScene", "scene", "scene"))
    saver = next(n["id"] for n in g.nodes if n["type"] == saver_type)
    src, output = _source_of(g, saver, socket)
    preview = g.add("Gen4D_Preview4D", (0, 0), title=PREVIEW_TITLE)
    g.link(src, output, preview, into)
    return preview


def _set_note(g: Graph, name: str, note_id: int) -> None:
    node = g._node(note_id)
    text = node["widgets_values"][0]
    extra = SETTINGS_NOTES.get(name)
    if not extra:
        return
    paragraphs = [p for p in text.split("\n\n") if not p.startswith("**As shipped**")]
    # the old sentences about CPU settings give way to the explicit paragraph
    paragraphs = [p for p in paragraphs if not (p.startswith("Small frames") or p.startswith("Small CPU"))]
    paragraphs = [p.replace(OLD_SETTINGS_SENTENCE, " Needs no model weights.").replace(OLD_PAPER_SENTENCE, "")
                  for p in paragraphs]
    paragraphs.insert(min(2, len(paragraphs)), extra)
    node["widgets_values"][0] = "\n\n".join(paragraphs)


def _native_plan(name: str, derived: "native.Derived") -> list[tuple[str, list[list[Any]]]]:
    """The source workflow's plan with the twin's nodes: stand-ins where the nodes they replace stood, the
    core loaders as the first group's second column, the encoders in a new second group, the sampling
    chain as a column before the first column holding a node it feeds; groups renumbered left to right."""
    g = derived.graph
    present = {n["id"] for n in g.nodes}
    plan = [(title.split(" · ", 1)[1], [[derived.stand_ins.get(i, i) if isinstance(i, int) else i for i in col]
                                       for col in cols]) for title, cols in PLANS[native.SOURCES[name]]]
    plan = [(title, [[i for i in col if not isinstance(i, int) or i in present] for col in cols])
            for title, cols in plan]
    if derived.chain:
        chain = set(derived.chain)
        fed = {link[3] for link in g.links if link[1] in chain and link[3] not in chain}
        at = next((gi, ci) for gi, (_, cols) in enumerate(plan) for ci, col in enumerate(cols) if fed & set(col))
        plan[at[0]][1].insert(at[1], list(derived.chain))
    plan[0][1].insert(1, list(derived.loaders))
    encoders = [derived.encoders[k:k + ENCODERS_PER_COLUMN]
                for k in range(0, len(derived.encoders), ENCODERS_PER_COLUMN)]
    plan.insert(1, (NATIVE_ENCODERS_TITLE, encoders))
    titles = NATIVE_TITLES.get(name, {})
    out = []
    for number, (title, cols) in enumerate(plan, start=1):
        source_number = 1 if number == 1 else number - 1
        if title != NATIVE_ENCODERS_TITLE:
            title = titles.get(source_number, title)
        out.append((f"{number} · {title}", [col for col in cols if col]))
    return out


def build(path: Path, classes) -> dict:
    name = path.stem
    if name in native.SOURCES:
        derived = native.derive(name, classes)
        g = derived.graph
        plans = {name: _native_plan(name, derived)}
    else:
        g = Graph.load(path, classes)
        plans = PLANS
    base = native.SOURCES.get(name, name)
    settings = SETTINGS.get(name, {})
    for node in g.nodes:
        # Every node is brought up to its definition, so a widget appended to a node type reaches every file.
        if node["type"] in g.registry:
            g.refresh(node["id"], **settings.get(node["id"], {}))
    for node in g.nodes:
        picker = MODELS_BY_FILE.get(base, {}).get(node["type"]) or MODELS.get(node["type"])
        if picker:
            g.refresh(node["id"], **{picker[0]: picker[1]})
    preview = _add_preview(g, name)
    note = next(n["id"] for n in g.nodes if n["type"] == "MarkdownNote")
    _set_note(g, name, note)
    plan = [(title, [[note if i == "note" else preview if i == "P" else i for i in col] for col in cols])
            for title, cols in plans[name]]
    Layout(g).apply(plan, note_size=NOTE_SIZE)
    placed = {i for _, cols in plan for col in cols for i in col}
    missing = {n["id"] for n in g.nodes} - placed
    if missing:
        raise ValueError(f"{name}: nodes {sorted(missing)} have no place in the layout plan")
    g.nodes.sort(key=lambda n: n["id"])
    for order, node in enumerate(g.nodes):
        node["order"] = order
    gen4d = dict(g.extra.get("gen4d", {}))
    if name in RUNNABLE:
        gen4d["runnable"] = True
    if name in TEST_OVERRIDES:
        gen4d["test_overrides"] = TEST_OVERRIDES[name]
    g.extra["gen4d"] = gen4d
    g.extra["ds"] = {"scale": OPENING_VIEW["scale"], "offset": list(OPENING_VIEW["offset"])}
    return g.to_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ from their build")
    args = parser.parse_args(argv)
    classes = _node_classes()
    stale = []
    for path in sorted(FOLDER.glob("*.json")):
        text = json.dumps(build(path, classes), indent=1, ensure_ascii=False) + "\n"
        if path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    verb = "differ from their build" if args.check else "rewritten"
    print(f"{len(stale)} {verb}: {', '.join(stale)}" if stale else "all workflows in their shipped form")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["build", "SHOWN_HEIGHT"]
