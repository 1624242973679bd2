# SPDX-License-Identifier: Apache-2.0
"""The V1 node contract of every registered node, and the pack's import rules (DESIGN §1-§3)."""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import gen4d
import pytest
from gen4d.nodes import types as socket_types

ROOT = Path(__file__).resolve().parents[1]
PACK_DIRS = ("nodes", "backends", "core", "synthetic")
CORE_TYPES = {"IMAGE", "MASK", "STRING", "INT", "FLOAT", "BOOLEAN", "SPLAT", "MODEL", "VAE", "CONDITIONING",
              "CLIP_VISION", "CLIP_VISION_OUTPUT"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
FORBIDDEN_IN_ENGINE = {"comfy", "comfy_extras", "comfy_api", "folder_paths", "diffusers", "transformers",
                       "server", "execution"}
PACK_TOP_LEVEL = {"nodes", "core", "backends", "synthetic", "gen4d", "pack_loader", "utils", "web"}

NODE_IDS = sorted(gen4d.NODE_CLASS_MAPPINGS)


def declared_socket_types() -> set[str]:
    """Every socket type named in nodes/types.py (upper-case string constants except CATEGORY)."""
    return {v for k, v in vars(socket_types).items() if k.isupper() and k != "CATEGORY" and isinstance(v, str)}


def input_sections(cls) -> dict[str, dict]:
    spec = cls.INPUT_TYPES()
    assert isinstance(spec, dict), f"{cls.__name__}.INPUT_TYPES() must return a dict"
    return spec


def all_inputs(cls) -> dict[str, tuple]:
    """name -> spec over required and optional inputs."""
    spec = input_sections(cls)
    return {**spec.get("required", {}), **spec.get("optional", {})}


def pack_files(*dirs: str) -> list[Path]:
    files = [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]
    assert files, f"no python files under {dirs}"
    return files


def imports_of(path: Path) -> list[tuple[int, str, int]]:
    """``(level, module, line)`` of every import in a file (``import a.b`` gives level 0, "a.b")."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(0, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or "", node.lineno))
    return out


def module_level_imports(path: Path) -> list[tuple[int, str, int]]:
    """Imports executed at import time: module body, including if/try blocks, not function bodies."""
    out, stack = [], list(ast.parse(path.read_text(encoding="utf-8"), str(path)).body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            out += [(0, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or "", node.lineno))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack += getattr(node, field, [])
        elif isinstance(node, ast.ExceptHandler):
            stack += node.body
    return out


# --------------------------------------------------------------------------- registry


def test_registry_is_populated_and_consistent():
    assert NODE_IDS, "NODE_CLASS_MAPPINGS is empty"
    assert set(gen4d.NODE_DISPLAY_NAME_MAPPINGS) == set(gen4d.NODE_CLASS_MAPPINGS)
    assert gen4d.WEB_DIRECTORY == "./web"
    for expected in ("Gen4D_CameraPath", "Gen4D_Render", "Gen4D_SaveScene", "Gen4D_LoadScene",
                     "Gen4D_SyntheticWorld"):
        assert expected in gen4d.NODE_CLASS_MAPPINGS, f"shipped node id {expected} disappeared"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_id_and_display_name(node_id):
    assert re.fullmatch(r"Gen4D_[A-Z][A-Za-z0-9]*", node_id), node_id
    name = gen4d.NODE_DISPLAY_NAME_MAPPINGS.get(node_id)
    assert isinstance(name, str) and name.strip(), f"{node_id} has no display name"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_class_attributes(node_id):
    cls = gen4d.NODE_CLASS_MAPPINGS[node_id]
    assert isinstance(cls.CATEGORY, str) and cls.CATEGORY.startswith("Gen4D"), cls.CATEGORY
    assert isinstance(cls.DESCRIPTION, str) and cls.DESCRIPTION.strip(), f"{node_id}: empty DESCRIPTION"
    assert isinstance(cls.RETURN_TYPES, tuple), f"{node_id}: RETURN_TYPES must be a tuple"
    names = getattr(cls, "RETURN_NAMES", None)
    assert isinstance(names, tuple) and len(names) == len(cls.RETURN_TYPES), f"{node_id}: RETURN_NAMES"
    assert len(set(names)) == len(names), f"{node_id}: duplicate RETURN_NAMES {names}"
    tips = getattr(cls, "OUTPUT_TOOLTIPS", None)
    assert isinstance(tips, tuple) and len(tips) == len(cls.RETURN_TYPES), f"{node_id}: OUTPUT_TOOLTIPS"
    assert all(isinstance(t, str) and t.strip() for t in tips), f"{node_id}: blank output tooltip"


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_input_sections(node_id):
    spec = input_sections(gen4d.NODE_CLASS_MAPPINGS[node_id])
    assert isinstance(spec.get("required"), dict), f"{node_id}: 'required' must be a dict"
    assert isinstance(spec.get("optional", {}), dict), f"{node_id}: 'optional' must be a dict"
    assert set(spec) <= {"required", "optional", "hidden"}, f"{node_id}: unknown sections {set(spec)}"
    names = list(spec["required"]) + list(spec.get("optional", {}))
    assert len(names) == len(set(names)), f"{node_id}: an input is both required and optional"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_input_has_a_tooltip_and_a_sane_default(node_id):
    for name, entry in all_inputs(gen4d.NODE_CLASS_MAPPINGS[node_id]).items():
        where = f"{node_id}.{name}"
        assert isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], dict), where
        kind, opts = entry
        assert isinstance(opts.get("tooltip"), str) and opts["tooltip"].strip(), f"{where}: no tooltip"
        if isinstance(kind, (list, tuple)):
            assert kind and all(isinstance(o, str) for o in kind), f"{where}: combo options must be strings"
            assert opts.get("default") in kind, f"{where}: default {opts.get('default')!r} not in {list(kind)}"
        elif kind in ("INT", "FLOAT"):
            default, lo, hi = opts.get("default"), opts.get("min"), opts.get("max")
            numeric = int if kind == "INT" else (int, float)
            assert isinstance(default, numeric) and not isinstance(default, bool), f"{where}: default {default!r}"
            assert lo is not None and hi is not None and lo <= hi, f"{where}: min/max {lo}, {hi}"
            assert lo <= default <= hi, f"{where}: default {default} outside [{lo}, {hi}]"
            assert math.isfinite(default), where
            assert opts.get("step", 1) > 0, f"{where}: step must be positive"
        elif kind == "BOOLEAN":
            assert isinstance(opts.get("default"), bool), f"{where}: BOOLEAN default"
        elif kind == "STRING":
            assert isinstance(opts.get("default"), str), f"{where}: STRING default"


# Colour widgets that set what is seen behind objects and scenes (not fill colours of holes).
BACKGROUND_WIDGETS = {"background", "background_color", "foreground_background"}


def test_one_background_default_serves_every_node():
    """Every colour widget behind objects and scenes defaults to the one pack constant (fit nodes, Render,
    Compose, Preview, the SAM2 foreground frames), so an object fitted on it renders on it everywhere."""
    from gen4d.nodes.widgets import DEFAULT_BACKGROUND

    found = {}
    for node_id in NODE_IDS:
        for name, spec in all_inputs(gen4d.NODE_CLASS_MAPPINGS[node_id]).items():
            if name in BACKGROUND_WIDGETS and spec[0] == "STRING":
                found[f"{node_id}.{name}"] = spec[1]["default"]
    for widget in ("Gen4D_StaticGaussians.background", "Gen4D_DeformationFit.background", "Gen4D_Render.background",
                   "Gen4D_Compose.background_color", "Gen4D_Preview4D.background"):
        assert widget in found, f"{widget} has no background colour widget"
    wrong = {k: v for k, v in found.items() if v != DEFAULT_BACKGROUND}
    assert not wrong, f"background defaults differ from {DEFAULT_BACKGROUND}: {wrong}"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_socket_types_are_declared(node_id):
    cls = gen4d.NODE_CLASS_MAPPINGS[node_id]
    known = declared_socket_types() | CORE_TYPES
    used = [k for k, _ in all_inputs(cls).values() if isinstance(k, str)] + list(cls.RETURN_TYPES)
    unknown = sorted({t for t in used if t not in known})
    assert not unknown, f"{node_id}: socket types {unknown} are neither in nodes/types.py nor ComfyUI core"


def test_declared_socket_types_follow_design():
    declared = declared_socket_types()
    for name in ("GEN4D_GAUSSIANS", "GEN4D_SCENE", "GEN4D_CAMERAS", "GEN4D_TRACKS"):
        assert name in declared
    custom = declared - CORE_TYPES
    assert all(re.fullmatch(r"GEN4D_[A-Z0-9_]+", t) for t in custom), sorted(custom)


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_function_accepts_every_input(node_id):
    cls = gen4d.NODE_CLASS_MAPPINGS[node_id]
    method = getattr(cls, cls.FUNCTION, None)
    assert callable(method), f"{node_id}: FUNCTION {cls.FUNCTION!r} is not a method"
    params = inspect.signature(method).parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    spec = input_sections(cls)
    for name in list(spec["required"]) + list(spec.get("optional", {})):
        assert var_kw or name in params, f"{node_id}.{cls.FUNCTION}() does not accept input {name!r}"
    for name, p in params.items():
        if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.default is not p.empty:
            continue
        assert name in spec["required"], f"{node_id}.{cls.FUNCTION}(): parameter {name!r} has no default " \
                                         "but is not a required input"
    for name in spec.get("optional", {}):
        if name in params:
            assert params[name].default is not params[name].empty, f"{node_id}: optional {name!r} needs a default"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_validate_and_is_changed_signatures(node_id):
    """Named parameters must be inputs; no **kwargs on VALIDATE_INPUTS, because ComfyUI then skips its own
    min/max and combo checks for *every* input of the node (execution.py ``validate_has_kwargs``)."""
    cls = gen4d.NODE_CLASS_MAPPINGS[node_id]
    inputs = set(all_inputs(cls)) | {"input_types"}
    for hook in ("VALIDATE_INPUTS", "IS_CHANGED"):
        fn = getattr(cls, hook, None)
        if fn is None:
            continue
        assert inspect.ismethod(fn), f"{node_id}.{hook} must be a classmethod"
        params = inspect.signature(fn).parameters
        named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        assert named <= inputs, f"{node_id}.{hook} names {sorted(named - inputs)}, which are not inputs"
        if hook == "VALIDATE_INPUTS":
            assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), (
                f"{node_id}.VALIDATE_INPUTS takes **kwargs: ComfyUI then skips min/max/combo validation of all "
                "inputs; name only the inputs it checks"
            )


# --------------------------------------------------------------------------- import rules


@pytest.mark.parametrize("folder", ["core", "synthetic"])
def test_engine_imports_no_host_or_model_libraries(folder):
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in pack_files(folder)
           for level, mod, line in imports_of(p) if level == 0 and mod.split(".")[0] in FORBIDDEN_IN_ENGINE]
    assert not bad, bad


# Which pack packages each layer may import (DESIGN §1, README "Development"). Prefixes of module names.
LAYERS = {
    "core": (),
    "core.engine": ("core.engine", "core.formats.paths"),
    "core.formats": ("core.formats", "core.engine"),
    "core.coco4d": ("core.coco4d", "core.engine", "core.formats"),
    "core.diffusion4d": ("core.diffusion4d", "core.engine", "core.formats"),
    "core.moge4d": ("core.moge4d", "core.engine", "core.formats"),
    "synthetic": ("synthetic", "core"),
    "backends.tiny": ("backends", "core"),
    "backends": ("backends", "core"),
    "nodes": ("nodes", "backends", "core", "synthetic"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pack_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(absolute module, imported names, line)`` of every relative import in a pack file."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
            target = ".".join(base + ([node.module] if node.module else []))
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


def module_graph() -> dict[str, set[str]]:
    """Pack module -> pack modules it imports (lazy imports included; ``from pkg import mod`` resolved)."""
    files = {module_name(p): p for p in pack_files(*PACK_DIRS)}
    graph = {}
    for name, path in files.items():
        edges = set()
        for target, names, _ in pack_imports(path):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            edges.update(subs or ([target] if target in files else []))
        graph[name] = edges - {name}
    return graph


def test_layers_point_one_way():
    """Each layer imports only the layers below it; production code never imports the tiny builders."""
    bad = []
    for path in pack_files(*PACK_DIRS):
        name = module_name(path)
        layer = next(k for k in sorted(LAYERS, key=len, reverse=True) if name == k or name.startswith(k + "."))
        for target, names, line in pack_imports(path):
            if not any(target == a or target.startswith(a + ".") for a in LAYERS[layer]):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {target}")
            if layer != "backends.tiny" and (target == "backends.tiny" or target.startswith("backends.tiny.")
                                             or (target == "backends" and "tiny" in names)):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports the tiny builders into production code")
    assert not bad, bad


def test_no_import_cycle_between_modules():
    graph = module_graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_no_module_imports_another_modules_private_names():
    files = pack_files(*PACK_DIRS) + sorted((ROOT / "tools").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gen4d")):
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad


def test_pack_internal_imports_are_relative():
    files = pack_files(*PACK_DIRS) + [ROOT / "__init__.py"]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files
           for level, mod, line in imports_of(p) if level == 0 and mod.split(".")[0] in PACK_TOP_LEVEL]
    assert not bad, f"absolute imports of pack modules break inside ComfyUI: {bad}"


def test_comfy_is_imported_lazily():
    files = pack_files(*PACK_DIRS) + [ROOT / "__init__.py"]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod} at module level" for p in files
           for level, mod, line in module_level_imports(p)
           if level == 0 and mod.split(".")[0] in {"comfy", "comfy_extras", "comfy_api", "folder_paths", "server"}]
    assert not bad, bad


_IMPORT_UNDER_COMFY = r"""
import importlib.util, json, sys, types
root = sys.argv[1]
fakes = {}
for name in ("nodes", "core", "backends", "synthetic", "utils"):
    fakes[name] = types.ModuleType(name)
    fakes[name].FAKE_FROM_COMFYUI = True
    sys.modules[name] = fakes[name]
spec = importlib.util.spec_from_file_location("ComfyUI-Gen4D", root + "/__init__.py",
                                              submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
for cls in pack.NODE_CLASS_MAPPINGS.values():
    cls.INPUT_TYPES()
cams = pack.NODE_CLASS_MAPPINGS["Gen4D_CameraPath"]().build("orbit", num_frames=2, width=16, height=16)[0]
print(json.dumps({
    "ids": sorted(pack.NODE_CLASS_MAPPINGS),
    "cameras": len(cams),
    "fakes_intact": all(sys.modules[n] is m for n, m in fakes.items()),
    "leaked": sorted(m for m in sys.modules if m.split(".")[0] in fakes and m not in fakes),
    "heavy": sorted(m for m in ("comfy", "folder_paths", "diffusers", "transformers", "gsplat", "torchvision")
                    if m in sys.modules),
}))
"""


def test_import_beside_comfyui_top_level_modules(tmp_path):
    """ComfyUI has its own top-level ``nodes`` (and ``utils`` on sys.path): the pack must not see them."""
    env = {"PATH": "/usr/bin:/bin", "GEN4D_OUTPUT_DIR": str(tmp_path / "out"), "GEN4D_INPUT_DIR": str(tmp_path / "in")}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_UNDER_COMFY, str(ROOT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ids"] == NODE_IDS
    assert report["cameras"] == 2
    assert report["fakes_intact"], "importing the pack replaced a top-level module of ComfyUI"
    assert report["leaked"] == [], f"pack modules registered under ComfyUI's names: {report['leaked']}"
    assert report["heavy"] == [], f"imported at import time: {report['heavy']}"
    assert not list(tmp_path.iterdir()), "importing the pack wrote files"
