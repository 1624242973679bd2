# SPDX-License-Identifier: Apache-2.0
"""Open every example workflow in a real ComfyUI's frontend (headless chromium) and keep what it draws.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python python tools/workflow_shots.py \
        [--out outputs/workflow_shots] [--thumbnails] [--sizes]

Starts ComfyUI on 127.0.0.1 with this pack in a temporary base folder (the checkout is never touched), runs
tests/browser/workflows.mjs (Debian chromium + playwright-core, `make test-browser` installs both) and
writes to --out two screenshots of each workflow (``<name>.png`` at the view it opens at, ``<name>.all.png``
fitted to the window) and the drawn node boxes. It fails when the frontend draws a node larger than the
file saves it (the layout would overlap). ``--thumbnails`` makes each screenshot at the opening view the
workflow's thumbnail for ComfyUI's templates dialog (``example_workflows/<name>.jpg``: the frontend asks a
custom node's template for ``/api/workflow_templates/<pack>/<name>.jpg``); ``--sizes`` folds the measured
node sizes into ``tools/frontend_node_sizes.json`` (per node type the largest over every frontend measured so
far), which tools/build_workflows.py lays out with. ``--run`` also queues each weight-free workflow from the page,
as a user presses Run, and fails unless it succeeds, every 4D preview's viewer loads frames and draws them, and
nothing the run leaves on the nodes (notes, live previews) grows one node over another.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "example_workflows"
THUMB_WIDTH = 640
CHROME = (64, 72)  # the frontend's side bar and top bars in the screenshot, cropped from thumbnails


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_comfyui(comfy: Path, python: str, base: Path) -> tuple[subprocess.Popen, str]:
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "ComfyUI-Gen4D"
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    # A user who has opened ComfyUI before: frontends from 1.3x open the templates browser for a new user, over
    # the canvas the screenshots show.
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    port = _free_port()
    log = open(base / "server.log", "wb")
    process = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
         "--database-url", f"sqlite:///{base / 'comfyui.db'}", "--disable-auto-launch"],
        cwd=comfy, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited: {(base / 'server.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/object_info/Gen4D_Preview4D", timeout=5)
            return process, url
        except OSError:
            time.sleep(1)
    stop(process)
    raise RuntimeError("ComfyUI did not start within 180 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def thumbnail(screenshot: Path, target: Path) -> None:
    """The workflow as it opens (note, first groups), a 16:10 card from the canvas's top left."""
    from PIL import Image

    with Image.open(screenshot) as image:
        height = image.height - CHROME[1] - 80  # less the canvas tool bar at the bottom
        width = min(image.width - CHROME[0], round(height * 1.6))
        card = image.convert("RGB").crop((CHROME[0], CHROME[1], CHROME[0] + width, CHROME[1] + round(width / 1.6)))
        thumb_height = round(card.height * THUMB_WIDTH / card.width)
        card.resize((THUMB_WIDTH, thumb_height), Image.LANCZOS).save(target, "JPEG", quality=85, optimize=True)


def merged_sizes(table: dict | None, frontend: str, measured: dict[str, list[float]]) -> dict:
    """The size table with one more frontend's measurement folded in: each node type keeps the larger width and
    the larger height of every frontend measured, so a layout built from it fits all of them (frontend releases
    draw labels a few pixels wider or narrower, and a widget row can move)."""
    table = table or {"measured_with": [], "nodes": {}}
    frontends = table.get("measured_with", [])
    frontends = [frontends] if isinstance(frontends, str) else list(frontends)
    nodes = dict(table.get("nodes", {}))
    for name, (width, height) in measured.items():
        old = nodes.get(name, (0, 0))
        nodes[name] = [max(old[0], width), max(old[1], height)]
    if frontend not in frontends:
        frontends.append(frontend)
    return {"measured_with": frontends, "how": "LGraphNode.computeSize of a new node, by tests/browser/workflows.mjs; "
            "the largest width and height over the frontends listed", "nodes": dict(sorted(nodes.items()))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "workflow_shots"))
    parser.add_argument("--url", help="a running ComfyUI with this pack (skips starting one)")
    parser.add_argument("--thumbnails", action="store_true")
    parser.add_argument("--sizes", action="store_true")
    parser.add_argument("--run", action="store_true",
                        help="also queue each weight-free workflow from the page and check what its 4D preview draws")
    args = parser.parse_args(argv)
    out = Path(args.out)
    files = sorted(FOLDER.glob("*.json"))
    process = None
    comfy_version = ""
    with tempfile.TemporaryDirectory(prefix="gen4d-comfy-") as tmp:
        url = args.url
        if not url:
            comfy = Path(os.environ.get("COMFYUI_PATH", ""))
            if not (comfy / "main.py").is_file():
                print("set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its python)", file=sys.stderr)
                return 2
            version_file = comfy / "comfyui_version.py"
            if version_file.is_file():
                comfy_version = version_file.read_text().split("__version__", 1)[-1].split('"')[1]
            process, url = start_comfyui(comfy, os.environ.get("COMFYUI_PYTHON", sys.executable), Path(tmp))
        try:
            result = subprocess.run(["node", str(ROOT / "tests" / "browser" / "workflows.mjs"), str(out),
                                     *map(str, files)], timeout=900 + (3600 if args.run else 0),
                                    env={**os.environ, "COMFY_URL": url, "GEN4D_RUN": "1" if args.run else "0"})
        finally:
            if process is not None:
                stop(process)
    if args.thumbnails:
        for path in files:
            thumbnail(out / f"{path.stem}.png", path.with_suffix(".jpg"))
    if args.sizes:
        measured = json.loads((out / "node_sizes.json").read_text())
        meta = measured.pop("_meta")
        comfy = f"ComfyUI {comfy_version}, " if comfy_version else ""
        table_file = ROOT / "tools" / "frontend_node_sizes.json"
        table = merged_sizes(json.loads(table_file.read_text()) if table_file.is_file() else None,
                             f"{comfy}frontend {meta['frontend']}",
                             {k: v["computed"] for k, v in measured.items() if v})
        table_file.write_text(json.dumps(table, indent=1) + "\n")
    print(f"screenshots and drawn boxes in {out}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
