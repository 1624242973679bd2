# SPDX-License-Identifier: Apache-2.0
"""The pack inside a real, headless ComfyUI, driven through its HTTP API.

Skipped unless ``COMFYUI_PATH`` names a ComfyUI checkout; ``COMFYUI_PYTHON`` is the interpreter
that runs it (default: this one). The checkout is never modified: ComfyUI starts with
``--base-directory <tmp>``, so custom nodes, models, input, output, temp and user folders (and
the database) live in a temporary folder whose ``custom_nodes/ComfyUI-Gen4D`` is a symlink to
this repository. The server listens on 127.0.0.1 only, on a free port, and is always stopped.

What is checked: the pack imports without error; every ``NODE_CLASS_MAPPINGS`` entry shows up
in ``/object_info`` with the same inputs and outputs; the checker's core-node table agrees with
the server; a UI workflow made of core nodes round-trips through ``ui_to_api`` and executes;
every ``example_workflows/*.json`` passes the checker against the live definitions, and those marked
``extra.gen4d.runnable`` are queued and must finish successfully, first shrunk by their test overrides,
then as shipped (the widget values in the file) within ``GEN4D_AS_SHIPPED_LIMIT_S`` seconds each (300);
the templates dialog lists every workflow once with its thumbnail, and the web extension is served once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gen4d
import pytest
from workflow_checker import (
    CORE_NODE_TYPES,
    check_workflow,
    is_runnable,
    load_workflow,
    spec_from_class,
    spec_from_object_info,
    ui_to_api,
)

LOG = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-Gen4D"
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
STARTUP_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 600.0
AS_SHIPPED_LIMIT_S = float(os.environ.get("GEN4D_AS_SHIPPED_LIMIT_S", "300"))
HOST = "127.0.0.1"

pytestmark = pytest.mark.skipif(
    not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file()),
    reason="set COMFYUI_PATH to a ComfyUI checkout to run the real-ComfyUI integration tests",
)


# --------------------------------------------------------------------------- server fixture


class ComfyServer:
    """A running ComfyUI process and a tiny HTTP client for it."""

    def __init__(self, process: subprocess.Popen, port: int, base: Path, log_path: Path):
        self.process, self.port, self.base, self.log_path = process, port, base, log_path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def post(self, path: str, payload: dict, timeout: float = 60.0) -> tuple[int, dict]:
        data = json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read().decode("utf-8") or "{}")

    def run_prompt(self, prompt: dict, timeout: float = RUN_TIMEOUT_S) -> dict:
        """Queue an API-format prompt and wait for its history entry; fails on rejection/error."""
        status, reply = self.post("/prompt", {"prompt": prompt, "client_id": "gen4d-tests"})
        assert status == 200, f"prompt rejected ({status}): {json.dumps(reply, indent=1)[:4000]}"
        prompt_id = reply["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and (entry.get("status") or {}).get("completed") is not None:
                assert entry["status"]["status_str"] == "success", _execution_error(entry)
                return entry
            assert self.process.poll() is None, f"ComfyUI exited while running:\n{self.log()[-4000:]}"
            time.sleep(0.5)
        self.post("/interrupt", {})
        pytest.fail(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def _execution_error(entry: dict) -> str:
    messages = (entry.get("status") or {}).get("messages") or []
    errors = [m[1] for m in messages if m and m[0] == "execution_error"]
    return "execution failed: " + json.dumps(errors or messages, indent=1)[:4000]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _supported_flags(python: str, comfy: Path) -> str:
    """ComfyUI's ``--help`` text (argument parsing happens before any heavy import)."""
    result = subprocess.run(
        [python, "main.py", "--help"], cwd=comfy, capture_output=True, text=True, timeout=120, check=False
    )
    return result.stdout


def _server_command(python: str, comfy: Path, base: Path, port: int) -> list[str]:
    flags = _supported_flags(python, comfy)
    if "--base-directory" not in flags:
        pytest.skip("this ComfyUI has no --base-directory; cannot run it without touching the checkout")
    command = [
        python,
        "main.py",
        "--cpu",
        "--listen",
        HOST,
        "--port",
        str(port),
        "--base-directory",
        str(base),
    ]
    if "--database-url" in flags:
        command += ["--database-url", f"sqlite:///{base / 'comfyui.db'}"]
    if "--disable-auto-launch" in flags:
        command.append("--disable-auto-launch")
    return command


def _wait_until_up(server: ComfyServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"ComfyUI exited with {server.process.returncode}:\n{server.log()[-6000:]}")
        try:
            server.get("/object_info", timeout=10)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(0.5)
    pytest.fail(
        f"ComfyUI did not answer /object_info within {STARTUP_TIMEOUT_S:.0f} s:\n{server.log()[-6000:]}"
    )


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group, then kill it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """ComfyUI with this pack, in a temporary base directory."""
    comfy = Path(COMFYUI_PATH).resolve()
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    port = _free_port()
    command = _server_command(python, comfy, base, port)
    log_path = base / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    LOG.info("starting ComfyUI: %s", " ".join(command))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=comfy, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    running = ComfyServer(process, port, base, log_path)
    try:
        _wait_until_up(running)
        yield running
    finally:
        _stop(process)
        LOG.info("ComfyUI log tail:\n%s", running.log()[-3000:])


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get("/object_info", timeout=60)


# --------------------------------------------------------------------------- the pack


def test_pack_imported_without_error(server, object_info):
    log = server.log()
    pack_path = re.escape(str(server.base / "custom_nodes" / PACK_DIR_NAME))
    failures = [
        line
        for line in log.splitlines()
        if re.search(pack_path, line) and re.search(r"Cannot import|IMPORT FAILED|Traceback|Error", line)
    ]
    assert not failures, (
        "the pack failed to import:\n" + "\n".join(failures) + "\n--- log ---\n" + log[-6000:]
    )
    assert re.search(rf"seconds: {pack_path}\s*$", log, re.MULTILINE), (
        "the pack is missing from ComfyUI's custom-node import list:\n" + log[-6000:]
    )


def test_pack_provides_nodes():
    assert len(gen4d.NODE_CLASS_MAPPINGS) >= 1, "the pack's NODE_CLASS_MAPPINGS is empty"


def _declared_inputs(cls: type) -> dict[str, dict[str, object]]:
    declared = cls.INPUT_TYPES()
    return {
        section: {name: _type_key(spec[0]) for name, spec in (declared.get(section) or {}).items()}
        for section in ("required", "optional")
    }


def _type_key(kind) -> object:
    """Comparable form of an input type: a combo's choices as a list, else the type name."""
    return list(kind) if isinstance(kind, (list, tuple)) else str(kind)


def _served_inputs(entry: dict) -> dict[str, dict[str, object]]:
    served = entry.get("input") or {}
    out = {}
    for section in ("required", "optional"):
        items = (served.get(section) or {}).items()
        out[section] = {
            name: spec[1].get("options") if spec[0] == "COMBO" and len(spec) > 1 else _type_key(spec[0])
            for name, spec in items
        }
    return out


def test_every_pack_node_is_served_with_its_inputs_and_outputs(object_info, tmp_path, monkeypatch):
    # pickers list folders: here they list empty ones, like the fresh server's
    for key in ("GEN4D_OUTPUT_DIR", "GEN4D_INPUT_DIR", "GEN4D_MODELS_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    problems = []
    for name, cls in gen4d.NODE_CLASS_MAPPINGS.items():
        entry = object_info.get(name)
        if entry is None:
            problems.append(f"{name}: missing from /object_info")
            continue
        declared = _declared_inputs(cls)
        for section in declared.values():
            # Sampler pickers list the server's own samplers; outside ComfyUI the pack declares a short fallback.
            for picker in ("sampler_name", "scheduler"):
                if picker in section:
                    section[picker] = _served_inputs(object_info["KSampler"])["required"][picker]
        if _served_inputs(entry) != declared:
            problems.append(f"{name}: inputs {_served_inputs(entry)} != declared {declared}")
        spec = spec_from_class(name, cls)
        if list(entry.get("output") or []) != [_type_key(t) for t in cls.RETURN_TYPES]:
            problems.append(f"{name}: outputs {entry.get('output')} != RETURN_TYPES {cls.RETURN_TYPES}")
        if tuple(entry.get("output_name") or ()) != spec.output_names:
            problems.append(f"{name}: output names {entry.get('output_name')} != {spec.output_names}")
        if entry.get("category") != getattr(cls, "CATEGORY", None):
            problems.append(
                f"{name}: category {entry.get('category')!r} != {getattr(cls, 'CATEGORY', None)!r}"
            )
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the checker vs ComfyUI


def test_checker_core_table_matches_the_server(object_info):
    problems = []
    for name, entry in CORE_NODE_TYPES.items():
        if name not in object_info:
            continue  # an older or newer ComfyUI without this node
        ours, theirs = spec_from_object_info(name, entry), spec_from_object_info(name, object_info[name])
        if ours.outputs != theirs.outputs or ours.output_node != theirs.output_node:
            problems.append(
                f"{name}: outputs {ours.outputs}/{ours.output_node} vs {theirs.outputs}/{theirs.output_node}"
            )
        for mine, real in zip(ours.inputs, theirs.inputs):
            same = (mine.name, mine.type, mine.required) == (real.name, real.type, real.required)
            same &= all(mine.opts.get(k) == real.opts.get(k) for k in ("min", "max", "forceInput"))
            same &= mine.choices is None or mine.choices == real.choices
            if not same:
                problems.append(f"{name}: input {mine} vs server {real}")
        if len(ours.inputs) != len(theirs.inputs):
            problems.append(f"{name}: {len(ours.inputs)} inputs vs {len(theirs.inputs)} on the server")
    assert not problems, "\n".join(problems)


def _core_ui_workflow() -> dict:
    """EmptyImage -> Reroute -> ImageScale (width from a PrimitiveNode) -> SaveImage, and a Note."""
    nodes = [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [48, 40, 2, 16711680]},
        {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
        {"id": 3, "type": "ImageScale", "mode": 0,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 2},
                    {"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 3}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}],
         "widgets_values": ["bilinear", 512, 24, "disabled"]},
        {"id": 4, "type": "PrimitiveNode", "mode": 0, "inputs": [],
         "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "width"}, "links": [3]}],
         "widgets_values": [32, "fixed"]},
        {"id": 5, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 4}],
         "outputs": [], "widgets_values": ["gen4d_it/core"]},
        {"id": 6, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["integration test"]},
    ]  # fmt: skip
    links = [
        [1, 1, 0, 2, 0, "IMAGE"],
        [2, 2, 0, 3, 0, "IMAGE"],
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


def test_core_ui_workflow_converts_and_runs(server, object_info):
    workflow = _core_ui_workflow()
    assert check_workflow(workflow, {}, object_info) == []
    prompt = ui_to_api(workflow, {}, object_info)
    assert prompt["3"]["inputs"] == {
        "upscale_method": "bilinear", "width": 32, "height": 24, "crop": "disabled", "image": ["1", 0],
    }  # fmt: skip
    entry = server.run_prompt(prompt, timeout=120)
    images = entry["outputs"]["5"]["images"]
    assert len(images) == 2
    png = (server.base / "output" / images[0]["subfolder"] / images[0]["filename"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (32, 24)


# --------------------------------------------------------------------------- the pack's workflows


def _workflow_files() -> list[Path]:
    return sorted((REPO / "example_workflows").glob("*.json"))


def test_workflow_files_pass_the_checker_against_the_server(object_info):
    files = _workflow_files()
    if not files:
        pytest.skip("no example_workflows/*.json yet")
    problems = {f.name: check_workflow(load_workflow(f), {}, object_info) for f in files}
    assert not any(problems.values()), json.dumps({k: v for k, v in problems.items() if v}, indent=1)


def test_runnable_workflows_execute(server, object_info):
    runnable = [f for f in _workflow_files() if is_runnable(load_workflow(f))]
    if not runnable:
        pytest.skip("no workflow is marked extra.gen4d.runnable yet")
    output = server.base / "output"
    for path in runnable:
        LOG.info("running %s", path.name)
        before = set(output.rglob("*")) if output.exists() else set()
        workflow = load_workflow(path)
        prompt = ui_to_api(workflow, {}, object_info)
        # the CPU-sized settings the file carries for tests (the same ones the headless runner test uses)
        for key, value in workflow.get("extra", {}).get("gen4d", {}).get("test_overrides", {}).items():
            node_id, _, name = key.partition(".")
            prompt[node_id]["inputs"][name] = value
        server.run_prompt(prompt)
        written = {p for p in output.rglob("*") if p.is_file()} - before
        assert written, f"{path.name} ran but wrote nothing under the output folder"
        scenes = [p for p in written if p.name.endswith(".gen4d.safetensors")]
        for scene_file in scenes:
            assert gen4d.core.engine.scene.Scene4D.load(scene_file).num_gaussians > 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def test_weight_free_workflows_run_as_shipped_in_time(server, object_info):
    """Queued exactly as a user opens them (no test overrides), each weight-free workflow finishes within the
    limit; wall and server CPU seconds are logged and written to ``as_shipped.json`` in the base folder."""
    runnable = [f for f in _workflow_files() if is_runnable(load_workflow(f))]
    assert runnable, "no weight-free workflow is marked runnable"
    report = {}
    for path in runnable:
        prompt = ui_to_api(load_workflow(path), {}, object_info)
        cpu0, load0, start = _cpu_seconds(server.process.pid), os.getloadavg()[0], time.monotonic()
        entry = server.run_prompt(prompt, timeout=AS_SHIPPED_LIMIT_S)
        wall = time.monotonic() - start
        cpu = _cpu_seconds(server.process.pid) - cpu0
        report[path.name] = {"wall_s": round(wall, 1), "server_cpu_s": round(cpu, 1),
                             "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
        LOG.warning("%s as shipped: %s", path.name, report[path.name])
        assert entry["status"]["status_str"] == "success"
        cached = [n for m in entry["status"].get("messages", []) if m[0] == "execution_cached"
                  for n in m[1].get("nodes", [])]
        report[path.name]["cached_nodes"] = cached
        assert not cached, f"{path.name}: nodes {cached} came from the cache, not from this run"
        previews = [o for o in entry["outputs"].values() if o.get("gen4d_preview")]
        assert previews, f"{path.name}: the 4D preview wrote no asset"
    (server.base / "as_shipped.json").write_text(json.dumps(report, indent=1))


def test_templates_and_web_extension_are_served_once(server):
    templates = server.get("/workflow_templates")[PACK_DIR_NAME]
    names = [f.stem for f in _workflow_files()]
    assert sorted(templates) == sorted(names), templates
    for name in names:
        url = f"{server.url}/api/workflow_templates/{PACK_DIR_NAME}/{urllib.parse.quote(name)}.jpg"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read(3) == b"\xff\xd8\xff", f"{name}.jpg is not a JPEG thumbnail"
    scripts = [e.rsplit("/", 1)[-1] for e in server.get("/extensions") if "gen4d" in e.lower()]
    assert scripts and len(scripts) == len(set(scripts)), f"a Gen4D script is served twice: {scripts}"
