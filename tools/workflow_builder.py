# SPDX-License-Identifier: Apache-2.0
"""Build UI-format workflow files (what the ComfyUI frontend saves) from a few lines of Python.

Example:
    g = Graph(gen4d.NODE_CLASS_MAPPINGS)
    world = g.add("Gen4D_SyntheticWorld", (40, 100), world="scene", num_frames=8)
    render = g.add("Gen4D_Render", (420, 100))
    g.link(world, "gaussian_twin", render, "scene")
    g.group("Render", [world, render])
    g.note("# What this does", (40, -200))
    g.save("example_workflows/Example.json", runnable=True)

    g = Graph.load("example_workflows/Example.json", gen4d.NODE_CLASS_MAPPINGS)   # extend a saved file
    g.refresh(render)                     # new sockets are appended, new widgets get their defaults

Widget values are laid out exactly as the frontend lays them out (``workflow_checker`` rules:
required then optional widget inputs, a control value after seeds), defaults come from the node
definitions, and every link, slot and group box is filled in, so the file loads in ComfyUI and
passes ``workflow_checker.check_workflow``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from workflow_checker import build_registry

__all__ = ["Graph"]

_CONTROL_DEFAULTS = {"control": "fixed", "combo_control": "fixed", "filter": "", "upload": "image"}
_GROUP_PAD = 40


class Graph:
    """A workflow under construction; node types come from the pack's classes and the core-node table."""

    def __init__(self, node_classes: Mapping[str, type], core_types: Mapping[str, Mapping] | None = None):
        self.registry = build_registry(node_classes, core_types)
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self.extra: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | Path, node_classes: Mapping[str, type],
             core_types: Mapping[str, Mapping] | None = None) -> "Graph":
        """A saved UI-format workflow (schema 0.4 links), to extend and save again; ``extra`` is kept."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        g = cls(node_classes, core_types)
        g.nodes, g.links, g.groups = data["nodes"], data["links"], data.get("groups", [])
        g.extra = dict(data.get("extra", {}))
        return g

    def refresh(self, node_id: int, **widgets: Any) -> None:
        """Bring node ``node_id`` (e.g. from an older file) up to its node definition.

        Sockets it lacks are appended after the saved ones (saved links keep their slots); widget
        values are laid out anew: ``widgets``, else the saved value, else the input's default.
        """
        node = self._node(node_id)
        spec = self.registry[node["type"]]
        have = {entry["name"] for entry in node.get("inputs", [])}
        node.setdefault("inputs", []).extend({"name": s.name, "type": s.type, "link": None} for s in spec.inputs
                                             if not s.is_widget and s.name not in have)
        old = node.get("widgets_values") or []
        values: list[Any] = []
        for slot, (inp, role) in enumerate(spec.widget_slots()):
            if role != "value":
                values.append(old[slot] if slot < len(old) else _CONTROL_DEFAULTS.get(role, ""))
            elif inp.name in widgets:
                values.append(widgets[inp.name])
            elif slot < len(old):
                values.append(old[slot])
            else:
                values.append(inp.opts.get("default", inp.choices[0] if inp.choices else None))
        node["widgets_values"] = values

    def _next_node_id(self) -> int:
        return max((n["id"] for n in self.nodes), default=0) + 1

    def _next_link_id(self) -> int:
        return max((link[0] for link in self.links), default=0) + 1

    def _node(self, node_id: int) -> dict:
        return next(n for n in self.nodes if n["id"] == node_id)

    def add(self, kind: str, pos, size=(320, 260), title: str | None = None, **widgets: Any) -> int:
        """Add a node of type ``kind`` at ``pos``; keyword arguments set widget values."""
        spec = self.registry[kind]
        values: list[Any] = []
        unknown = set(widgets) - {s.name for s in spec.inputs}
        if unknown:
            raise ValueError(f"{kind}: no inputs {sorted(unknown)}")
        for inp, role in spec.widget_slots():
            if role == "value":
                default = inp.opts.get("default", inp.choices[0] if inp.choices else None)
                values.append(widgets.get(inp.name, default))
            else:
                values.append(_CONTROL_DEFAULTS.get(role, ""))
        inputs = [{"name": s.name, "type": s.type, "link": None} for s in spec.inputs if not s.is_widget]
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(spec.output_names, spec.outputs))]
        node_id = self._next_node_id()
        node = {"id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                "order": node_id - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": kind}, "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def link(self, src: int, output: str, dst: int, input_name: str) -> None:
        """Connect output ``output`` of node ``src`` to input ``input_name`` of node ``dst``."""
        s, d = self._node(src), self._node(dst)
        out_slot = next((i for i, o in enumerate(s["outputs"]) if o["name"] == output), None)
        in_slot = next((i for i, o in enumerate(d["inputs"]) if o["name"] == input_name), None)
        if out_slot is None or in_slot is None:
            outs, socks = [o["name"] for o in s["outputs"]], [i["name"] for i in d["inputs"]]
            raise ValueError(f"link {s['type']}.{output} -> {d['type']}.{input_name}: no such output or socket "
                             f"(outputs {outs}, sockets {socks})")
        kind = s["outputs"][out_slot]["type"]
        link_id = self._next_link_id()
        s["outputs"][out_slot]["links"].append(link_id)
        d["inputs"][in_slot]["link"] = link_id
        self.links.append([link_id, src, out_slot, dst, in_slot, kind])

    def remove(self, node_id: int) -> None:
        """Delete node ``node_id`` and every link into or out of it (the other ends are unlinked)."""
        gone = {link[0] for link in self.links if node_id in (link[1], link[3])}
        self.links = [link for link in self.links if link[0] not in gone]
        self.nodes = [n for n in self.nodes if n["id"] != node_id]
        for node in self.nodes:
            for inp in node.get("inputs", []):
                if inp.get("link") in gone:
                    inp["link"] = None
            for out in node.get("outputs", []):
                out["links"] = [i for i in out.get("links") or [] if i not in gone]

    def note(self, text: str, pos, size=(420, 300)) -> int:
        """A Markdown note."""
        node_id = self._next_node_id()
        self.nodes.append({"id": node_id, "type": "MarkdownNote", "pos": list(pos), "size": list(size), "flags": {},
                           "order": node_id - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                           "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
        return node_id

    def group(self, title: str, node_ids, color: str = "#3f789e") -> None:
        """A titled group box around ``node_ids``."""
        boxes = [self._node(i) for i in node_ids]
        x0 = min(n["pos"][0] for n in boxes) - _GROUP_PAD
        y0 = min(n["pos"][1] for n in boxes) - _GROUP_PAD - 30
        x1 = max(n["pos"][0] + n["size"][0] for n in boxes) + _GROUP_PAD
        y1 = max(n["pos"][1] + n["size"][1] for n in boxes) + _GROUP_PAD
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def to_dict(self, runnable: bool = False, test_overrides: Mapping[str, Any] | None = None) -> dict:
        extra: dict[str, Any] = {"ds": {"scale": 0.6, "offset": [0, 0]}, **self.extra}
        gen4d: dict[str, Any] = dict(extra.pop("gen4d", {}))
        if runnable:
            gen4d["runnable"] = True
        if test_overrides:
            gen4d["test_overrides"] = dict(test_overrides)
        if gen4d:
            extra["gen4d"] = gen4d
        return {"last_node_id": self._next_node_id() - 1, "last_link_id": self._next_link_id() - 1,
                "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {}, "extra": extra,
                "version": 0.4}

    def save(self, path: str | Path, runnable: bool = False, test_overrides: Mapping[str, Any] | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_dict(runnable, test_overrides), indent=1, ensure_ascii=False) + "\n",
                              encoding="utf-8")
