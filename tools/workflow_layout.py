# SPDX-License-Identifier: Apache-2.0
"""Workflow canvas layout at the sizes ComfyUI's frontend draws nodes, and the checks of a saved layout.

When a workflow opens, the frontend grows every node to at least ``LGraphNode.computeSize()`` (inputs,
outputs and widgets stacked, the title's width); a node saved smaller is drawn larger and covers what sits
below it. ``frontend_node_sizes.json`` holds that least size per node type, measured in the frontend
itself (tests/browser/workflows.mjs, ``make workflow-shots``); a custom title widens a node by its text.

    Layout(graph).apply([("1 · Inputs", [[note_id, a], [b, c]]), ("2 · Fit", [[d]])])

puts groups left to right in the order given, each a row of columns of stacked nodes, and sizes every
group box around its nodes. ``layout_problems(workflow)`` lists what a user would see wrong on opening.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

SIZES_FILE = Path(__file__).resolve().parent / "frontend_node_sizes.json"
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
GROUP_HEADER = 50  # a group's title bar (font 24) and a margin under it
GROUP_PAD = 20
COLUMN_GAP = 40
ROW_GAP = 24
GROUP_GAP = 40
MIN_WIDTH = 320
# Nodes that show images, video or text after a run get room for it (the frontend draws it inside the box).
SHOWN_HEIGHT = {"PreviewImage": 300, "SaveAnimatedWEBP": 340, "SaveVideo": 340, "LoadImage": 340,
                "PreviewAny": 140, "Gen4D_Preview4D": 450, "SaveImage": 300, "CLIPTextEncode": 140,
                # the savers say what they wrote in a notes panel under their widgets (web/gen4d_notes.js)
                "Gen4D_SaveScene": 240, "Gen4D_SaveTracks": 220}
# Nodes that show their work while they run (a live preview image under their widgets, ComfyUI keeps the last one
# on the node afterwards): room for a preview about as tall as 0.7 of the node's width (a square image).
LIVE_PREVIEW = {"Gen4D_Render", "Gen4D_StaticGaussians", "Gen4D_DeformationFit", "Gen4D_ProgressiveOutpaint",
                "Gen4D_Compose", "Gen4D_ViSMRender", "Gen4D_Inpaint", "Gen4D_VideoInpaint"}
LIVE_PREVIEW_ROOM = 0.7
# Least widths: the 4D viewer; loaders whose file names and adaptors whose titles (with the pack's badge)
# are cut short at the computed width.
WIDE = {"Gen4D_Preview4D": 450, "UNETLoader": 380, "LoraLoaderModelOnly": 380, "CLIPLoader": 380,
        "CheckpointLoaderSimple": 380, "ImageOnlyCheckpointLoader": 380, "Gen4D_NativeVideoInpaintModel": 380,
        "Gen4D_NativeInpaintModel": 380, "Gen4D_NativeSDGuidance": 380, "Gen4D_NativeZero123Guidance": 380}
# The view a file opens at must show the note and the first group's title: a browser window of this size, less
# the frontend's side bar and top bars (64 px, 100 px), at the file's saved scale. Frontends up to 1.2x start the
# canvas beside and below those bars; from 1.3x the canvas fills the window and the bars (and the workflow's name
# at the top left) are drawn over it, so the view must also keep its content out from under them.
DEFAULT_WINDOW = (1280, 720)
FRONTEND_CHROME = (64, 100)
OPENING_VIEW = {"scale": 0.7, "offset": [110, 150]}  # what build_workflows saves: content from about (77, 105) px


def frontend_sizes() -> dict[str, list[int]]:
    return json.loads(SIZES_FILE.read_text(encoding="utf-8"))["nodes"]


def title_width(title: str) -> float:
    """Width the frontend needs for a title (14 px sans-serif, measured about 6.2 px a character; with margin)."""
    return 50 + 7.0 * len(title)


def group_title_width(title: str) -> float:
    """Width a group's title takes at font size 24 (about 12.5 px a character; with margin)."""
    return 24 + 13.0 * len(title)


def drawn_size(node: dict, sizes: dict[str, list[int]] | None = None) -> tuple[float, float]:
    """The least size the frontend draws ``node`` at (its type's computed size, widened for a custom title)."""
    sizes = frontend_sizes() if sizes is None else sizes
    if node["type"] not in sizes:
        raise KeyError(f"no frontend size for node type {node['type']!r}: run `make workflow-shots` to measure it")
    w, h = sizes[node["type"]]
    if node.get("title"):
        w = max(w, title_width(node["title"]))
    return float(w), float(h)


def box(node: dict) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of the node as drawn, title bar included."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def _overlap(a, b, margin: float = 0.0) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


class Layout:
    """Places a ``workflow_builder.Graph``'s nodes by a plan of groups and columns."""

    def __init__(self, graph, sizes: dict[str, list[int]] | None = None):
        self.g = graph
        self.sizes = frontend_sizes() if sizes is None else sizes

    def _size(self, node: dict, width: float, note_size) -> tuple[float, float]:
        if node["type"] in ("MarkdownNote", "Note"):
            return float(note_size[0]), float(note_size[1])
        w, h = drawn_size(node, self.sizes)
        w = max(w, width)
        if node["type"] in LIVE_PREVIEW:
            h += LIVE_PREVIEW_ROOM * w
        return w, max(h, SHOWN_HEIGHT.get(node["type"], 0))

    def apply(self, plan: Iterable[tuple[str, list[list[int]]]], note_size=(460, 420)) -> None:
        self.g.groups = []
        x = 0.0
        for title, columns in plan:
            gx = x
            cx = gx + GROUP_PAD
            bottom = 0.0
            for column in columns:
                nodes = [self.g._node(i) for i in column]
                width = max([MIN_WIDTH] + [WIDE.get(n["type"], 0) for n in nodes]
                            + [self._size(n, 0, note_size)[0] for n in nodes])
                y = GROUP_HEADER + TITLE_HEIGHT
                for node in nodes:
                    w, h = self._size(node, width, note_size)
                    node["pos"], node["size"] = [cx, y], [round(w), round(h)]
                    y += h + TITLE_HEIGHT + ROW_GAP
                bottom = max(bottom, y - ROW_GAP)
                cx += width + COLUMN_GAP
            gw = max(cx - COLUMN_GAP + GROUP_PAD - gx, group_title_width(title))
            self.g.groups.append({"id": len(self.g.groups) + 1, "title": title,
                                  "bounding": [round(gx), 0, round(gw), round(bottom + GROUP_PAD)],
                                  "color": "#3f789e", "font_size": 24, "flags": {}})
            x = gx + gw + GROUP_GAP


def _inside(inner, outer) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def layout_problems(workflow: dict, sizes: dict[str, list[int]] | None = None) -> list[str]:
    """What is wrong with a saved layout as the frontend draws it (empty when nothing is)."""
    sizes = frontend_sizes() if sizes is None else sizes
    problems: list[str] = []
    nodes = workflow["nodes"]
    for node in nodes:
        if node["type"] in ("MarkdownNote", "Note"):
            continue
        w, h = drawn_size(node, sizes)
        if node["size"][0] + 0.5 < w or node["size"][1] + 0.5 < h:
            problems.append(f"node {node['id']} ({node['type']}) saved {node['size']} but drawn at least "
                            f"[{w:.0f}, {h:.0f}]")
    boxes = {n["id"]: box({**n, "size": [max(n["size"][0], drawn_size(n, sizes)[0]),
                                         max(n["size"][1], drawn_size(n, sizes)[1])]})
             if n["type"] not in ("MarkdownNote", "Note") else box(n) for n in nodes}
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if _overlap(boxes[a], boxes[b]):
                problems.append(f"nodes {a} and {b} overlap as drawn: {boxes[a]} / {boxes[b]}")
    groups = workflow.get("groups", [])
    if not groups:
        problems.append("no groups")
        return problems
    gboxes = [(g["title"], (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                            g["bounding"][1] + g["bounding"][3])) for g in groups]
    for title, g in gboxes:
        if g[2] - g[0] < group_title_width(title):
            problems.append(f"group {title!r} is narrower than its title")
    for i, (ta, a) in enumerate(gboxes):
        for tb, b in gboxes[i + 1:]:
            if _overlap(a, b):
                problems.append(f"groups {ta!r} and {tb!r} overlap")
    for nid, b in boxes.items():
        owners = [t for t, g in gboxes if _inside(b, g)]
        if len(owners) != 1:
            problems.append(f"node {nid} lies in {len(owners)} groups, not one")
    # pipeline order: numbered titles run left to right
    xs = [g[1][0] for g in gboxes]
    numbers = [g[0].split(" ")[0] for g in gboxes]
    order = sorted(range(len(gboxes)), key=lambda i: (xs[i], gboxes[i][1][1]))
    if [numbers[i] for i in order] != [str(k) for k in range(1, len(gboxes) + 1)]:
        problems.append(f"groups left to right are {[gboxes[i][0] for i in order]}, not numbered 1, 2, ... in order")
    # the note: top left of the first group, inside the view the file opens at
    notes = [n for n in nodes if n["type"] in ("MarkdownNote", "Note")]
    if len(notes) != 1:
        problems.append(f"{len(notes)} notes, expected one")
    else:
        note, first = boxes[notes[0]["id"]], gboxes[order[0]][1]
        if not _inside(note, first) or any(b[0] < note[0] - 1 and b[1] < note[3] and b[3] > note[1]
                                           for nid, b in boxes.items() if _inside(b, first)):
            problems.append("the note is not at the left of the first group")
        ds: dict[str, Any] = workflow.get("extra", {}).get("ds", {"scale": 1, "offset": [0, 0]})
        scale, (ox, oy) = ds["scale"], ds["offset"]
        # the canvas's left and top edges (graph units) hidden under the bars in frontends from 1.3x
        hidden_x, hidden_y = FRONTEND_CHROME[0] / scale - ox, FRONTEND_CHROME[1] / scale - oy
        # the right and bottom edges shown by frontends up to 1.2x, whose canvas is the window less the bars
        width = (DEFAULT_WINDOW[0] - FRONTEND_CHROME[0]) / scale - ox
        height = (DEFAULT_WINDOW[1] - FRONTEND_CHROME[1]) / scale - oy
        if note[0] < hidden_x or note[1] < hidden_y or note[2] > width or note[3] > height:
            problems.append(f"the note {note} is outside the view the file opens at (x {hidden_x:.0f}..{width:.0f}, "
                            f"y {hidden_y:.0f}..{height:.0f})")
        if first[0] < hidden_x or first[1] < hidden_y:
            problems.append(f"the first group's corner {first[:2]} lies under the frontend's bars in the view the "
                            f"file opens at (from x {hidden_x:.0f}, y {hidden_y:.0f})")
    return problems
