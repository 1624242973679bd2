# SPDX-License-Identifier: Apache-2.0
"""Run a ComfyUI workflow file with the pack's nodes, without ComfyUI.

Usage:
    python tools/run_workflow.py example_workflows/CoCo4D_synthetic.json --out outputs/run
    python tools/run_workflow.py WORKFLOW.json --out DIR --set "12.steps=20" --set '3.prompt="a forest"'

The file may be in UI format (what the ComfyUI frontend saves; converted exactly as the frontend
does it, see ``workflow_checker.ui_to_api``) or API format (``{id: {class_type, inputs}}``).
Like ComfyUI, only output nodes and what they depend on run, each node once, in dependency order.
Every file the graph writes goes under ``--out`` (the pack's output folder is pointed there), and
the core nodes a Gen4D workflow uses have small equivalents here: image and animation savers,
previews (written to ``--out/previews``), LoadImage (from ``--input``), a few batch and
conversion nodes and primitives. Any other core or community node is reported before anything
runs. Progress of long nodes is logged; Ctrl-C stops the run between steps.

Several GPUs (sequence parallelism of the Wan-based DiT stages, Trajectory DiT and ViSM Render's
inpainter): start it with ``torchrun --nproc-per-node N tools/run_workflow.py ...``. Every rank runs
the workflow; the DiT sampling loops split their tokens (and guidance branches) over the ranks;
rank 0 writes the outputs, the other ranks write into a scratch folder that is removed.
``--no-cfg-parallel`` keeps both guidance branches on every rank.

Python use:
    from run_workflow import run_workflow
    results = run_workflow("example_workflows/X.json", "outputs/x", overrides={"3.steps": 10})
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from workflow_checker import check_workflow, load_workflow, ui_to_api, with_widget_values  # noqa: E402

from pack_loader import load_pack  # noqa: E402

log = logging.getLogger("gen4d.run_workflow")

__all__ = ["run_workflow", "CORE_NODES", "WorkflowError"]


class WorkflowError(ValueError):
    """The workflow cannot run here (unknown node, bad link, bad override)."""


# --------------------------------------------------------------------------- core node equivalents


class _Outputs:
    """Numbered files under the output folder; a number already on disk is never reused."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, prefix: str, suffix: str, sub: str = "") -> Path:
        from gen4d.core.formats.export import next_free_stem
        from gen4d.core.formats.paths import safe_output_path

        folder = self.root / sub if sub else self.root
        return safe_output_path(folder, next_free_stem(folder, prefix) + suffix)


def _uint8(images: torch.Tensor):
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _save_pngs(out: _Outputs, images, filename_prefix="ComfyUI", sub=""):
    from gen4d.core.formats.paths import atomic_path
    from PIL import Image

    files = []
    for frame in _uint8(images):
        path = out.path(filename_prefix, ".png", sub)
        with atomic_path(path) as tmp:
            Image.fromarray(frame).save(tmp, format="PNG")
        files.append(str(path))
    return files


def _save_animation(out: _Outputs, images, filename_prefix, fps, suffix, **pil_args):
    from gen4d.core.formats.paths import atomic_path
    from PIL import Image

    frames = [Image.fromarray(f) for f in _uint8(images)]
    path = out.path(filename_prefix, suffix)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format=suffix.lstrip(".").upper(), save_all=True, append_images=frames[1:],
                       duration=round(1000.0 / max(float(fps), 1e-3)), loop=0, **pil_args)
    return [str(path)]


def _resize(image, width, height, method):
    modes = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic",
             "lanczos": "bicubic"}
    x = image.movedim(-1, 1)
    kw = {} if modes[method] in ("nearest-exact", "area") else {"align_corners": False}
    return torch.nn.functional.interpolate(x, size=(int(height), int(width)), mode=modes[method], **kw).movedim(1, -1)


def _image_scale(image, upscale_method, width, height, crop):
    h, w = image.shape[1:3]
    if width == 0 and height == 0:
        return (image,)
    width = width or max(1, round(w * height / h))
    height = height or max(1, round(h * width / w))
    if crop == "center":
        target, current = width / height, w / h
        if current > target:
            cw = round(h * target)
            image = image[:, :, (w - cw) // 2: (w - cw) // 2 + cw]
        else:
            ch = round(w / target)
            image = image[:, (h - ch) // 2: (h - ch) // 2 + ch]
    return (_resize(image, width, height, upscale_method).clamp(0, 1),)


def _load_image(input_dir: Path, image, **_):
    from PIL import Image, ImageOps

    path = Path(image)
    path = path if path.is_absolute() else input_dir / path
    if not path.is_file():
        raise WorkflowError(f"LoadImage: {path} does not exist (put it in {input_dir} or pass --input)")
    img = ImageOps.exif_transpose(Image.open(path))
    rgba = torch.from_numpy(__import__("numpy").array(img.convert("RGBA"))).float() / 255.0
    mask = 1.0 - rgba[..., 3] if "A" in img.getbands() else torch.zeros(rgba.shape[:2])
    return rgba[None, ..., :3].contiguous(), mask[None]


def _make_core_nodes(out: _Outputs, input_dir: Path) -> dict[str, Callable[..., tuple]]:
    """Equivalents of the core nodes Gen4D workflows use, keyed by class_type."""

    def save_video(video, filename_prefix, format="auto", codec="auto"):
        import imageio.v3 as iio
        from gen4d.core.formats.paths import atomic_path

        images, fps = video
        path = out.path(filename_prefix, ".mp4")
        with atomic_path(path) as tmp:
            # ffmpeg picks the container from the name: write under a .mp4 name, then move into place
            named = tmp.with_name(tmp.name + ".mp4")
            try:
                iio.imwrite(named, _uint8(images), fps=float(fps), codec="libx264", macro_block_size=1)
                if not named.is_file() or named.stat().st_size == 0:
                    raise RuntimeError(f"SaveVideo: ffmpeg wrote nothing to {path}")
                os.replace(named, tmp)
            finally:
                named.unlink(missing_ok=True)
        return ()

    def preview_any(source):
        log.info("PreviewAny: %s", source if isinstance(source, (str, int, float, bool)) else type(source).__name__)
        return ()

    return {
        "SaveImage": lambda images, filename_prefix="ComfyUI": (_save_pngs(out, images, filename_prefix), ())[1],
        "PreviewImage": lambda images: (_save_pngs(out, images, "preview", "previews"), ())[1],
        "PreviewAny": preview_any,
        "SaveAnimatedWEBP": lambda images, filename_prefix, fps, lossless, quality, method: (_save_animation(
            out, images, filename_prefix, fps, ".webp", lossless=bool(lossless), quality=int(quality)), ())[1],
        "SaveAnimatedPNG": lambda images, filename_prefix, fps, compress_level: (_save_animation(
            out, images, filename_prefix, fps, ".png", compress_level=int(compress_level)), ())[1],
        "CreateVideo": lambda images, fps, audio=None: ((images, float(fps)),),
        "GetVideoComponents": lambda video: (video[0], None, video[1]),
        "SaveVideo": save_video,
        "LoadImage": lambda image, **kw: _load_image(input_dir, image),
        "ImageScale": _image_scale,
        "ImageScaleBy": lambda image, upscale_method, scale_by: (_resize(
            image, round(image.shape[2] * scale_by), round(image.shape[1] * scale_by), upscale_method).clamp(0, 1),),
        "ImageBatch": lambda image1, image2: (torch.cat([image1, _resize(image2, image1.shape[2], image1.shape[1],
                                                                         "bilinear")]),),
        "ImageFromBatch": lambda image, batch_index, length: (image[batch_index: batch_index + length].clone(),),
        "RepeatImageBatch": lambda image, amount: (image.repeat(int(amount), 1, 1, 1),),
        "MaskToImage": lambda mask: (mask[..., None].expand(*mask.shape, 3).clone(),),
        "ImageToMask": lambda image, channel: (image[..., "rgba".index(channel)].clone(),),
        "PrimitiveInt": lambda value: (int(value),),
        "PrimitiveFloat": lambda value: (float(value),),
        "PrimitiveString": lambda value: (str(value),),
        "PrimitiveBoolean": lambda value: (bool(value),),
    }


CORE_NODES = tuple(_make_core_nodes(_Outputs(Path(".")), Path(".")))
_CORE_OUTPUT_NODES = {"SaveImage", "PreviewImage", "PreviewAny", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveVideo"}


# --------------------------------------------------------------------------- graph execution


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise WorkflowError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE (VALUE in JSON, or a bare string)")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _apply_overrides(prompt: dict, overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        node_id, _, name = str(key).partition(".")
        node = prompt.get(node_id)
        if node is None:
            raise WorkflowError(f"override {key!r}: no node {node_id!r} in the workflow (nodes: {sorted(prompt)})")
        if isinstance(node["inputs"].get(name), list):
            raise WorkflowError(f"override {key!r}: input {name!r} of node {node_id} is a link, not a widget")
        node["inputs"][name] = value


def _is_output(class_type: str, classes: Mapping[str, type]) -> bool:
    cls = classes.get(class_type)
    return bool(getattr(cls, "OUTPUT_NODE", False)) if cls is not None else class_type in _CORE_OUTPUT_NODES


def _needed(prompt: dict, classes: Mapping[str, type]) -> list[str]:
    """Output nodes and their ancestors, in dependency order."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node_id: str) -> None:
        if state.get(node_id) == 2:
            return
        if state.get(node_id) == 1:
            raise WorkflowError(f"the workflow has a cycle through node {node_id}")
        if node_id not in prompt:
            raise WorkflowError(f"a link points to node {node_id!r}, which is not in the workflow")
        state[node_id] = 1
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2:
                visit(str(value[0]))
        state[node_id] = 2
        order.append(node_id)

    outputs = [k for k, v in prompt.items() if _is_output(v["class_type"], classes)]
    if not outputs:
        raise WorkflowError("the workflow has no output node (nothing would be saved or previewed)")
    for node_id in sorted(outputs, key=lambda k: (len(k), k)):
        visit(node_id)
    return order


class _LoggedProgress:
    """Logs a long node's progress about every 10 % (the pack's Progress has no bar outside ComfyUI)."""

    def __init__(self, label: str):
        self.label, self.last = label, -1

    def __call__(self, step: int, total: int) -> None:
        decile = int(10 * step / max(total, 1))
        if decile != self.last:
            self.last = decile
            log.info("  %s: %d/%d", self.label, step, total)


def _read(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            workflow = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"{path}: cannot read a workflow ({exc})") from exc
    if isinstance(workflow, dict) and "nodes" in workflow:
        return load_workflow(path)
    if not isinstance(workflow, dict) or not all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        raise WorkflowError(f"{path}: neither a UI-format workflow (a 'nodes' list) nor an API-format prompt "
                            "({id: {class_type, inputs}})")
    return workflow


def run_workflow(path: str | Path, out_dir: str | Path, overrides: Mapping[str, Any] | None = None,
                 input_dir: str | Path | None = None, check: bool = True) -> dict[str, tuple]:
    """Execute a workflow file; returns every executed node's outputs by node id.

    Args:
        path: the workflow (UI or API format).
        out_dir: the output folder (created); everything the graph saves goes here.
        overrides: ``{"<node id>.<input>": value}`` widget values to replace.
        input_dir: folder of LoadImage's files (default ``<out_dir>/../inputs`` or ``$GEN4D_INPUT_DIR``).
        check: run the static workflow checks first (UI format only).

    Raises:
        WorkflowError: a node the runner cannot execute, a failed check, a bad override.
    """
    load_pack()
    import gen4d
    from gen4d.nodes import host

    classes = gen4d.NODE_CLASS_MAPPINGS
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    inputs = Path(input_dir or os.environ.get("GEN4D_INPUT_DIR", out.parent / "inputs")).resolve()
    previous = {k: os.environ.get(k) for k in ("GEN4D_OUTPUT_DIR", "GEN4D_INPUT_DIR", "GEN4D_TEMP_DIR")}
    os.environ["GEN4D_OUTPUT_DIR"], os.environ["GEN4D_INPUT_DIR"] = str(out), str(inputs)
    os.environ["GEN4D_TEMP_DIR"] = str(out / "temp")  # the 4D preview's asset

    workflow = _read(path) if not isinstance(path, Mapping) else path
    if "nodes" in workflow:
        try:
            workflow = with_widget_values(workflow, overrides or {}, classes)
        except ValueError as exc:
            raise WorkflowError(f"override {exc}") from exc
        if check:
            problems = check_workflow(workflow, classes)
            if problems:
                raise WorkflowError(f"{path}: the workflow checker found problems:\n  " + "\n  ".join(problems))
        prompt = ui_to_api(workflow, classes)
    else:
        prompt = json.loads(json.dumps(workflow))
        _apply_overrides(prompt, overrides or {})
    core = _make_core_nodes(_Outputs(out), inputs)
    unknown = sorted({v["class_type"] for v in prompt.values()} - set(classes) - set(core))
    if unknown:
        raise WorkflowError(f"{path}: the headless runner cannot execute {unknown}; run this workflow in ComfyUI")
    order = _needed(prompt, classes)

    results: dict[str, tuple] = {}
    try:
        for node_id in order:
            node = prompt[node_id]
            kind = node["class_type"]
            args = {name: results[str(v[0])][int(v[1])] if isinstance(v, list) and len(v) == 2 else v
                    for name, v in node["inputs"].items()}
            title = node.get("_meta", {}).get("title", kind)
            log.info("node %s %s", node_id, title)
            start = time.perf_counter()
            host.set_progress_sink(_LoggedProgress(f"node {node_id}"))
            try:
                if kind in core:
                    result = core[kind](**args)
                else:
                    cls = classes[kind]
                    result = getattr(cls(), cls.FUNCTION)(**args)
            except Exception as exc:  # whatever a node raises, say which node; the cause stays chained
                raise RuntimeError(f"node {node_id} ({title}) failed: {exc}") from exc
            finally:
                host.set_progress_sink(None)
            results[node_id] = tuple(result.get("result", ())) if isinstance(result, dict) else tuple(result)
            log.info("node %s done in %.1f s", node_id, time.perf_counter() - start)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="workflow JSON (UI or API format)")
    parser.add_argument("--out", default="outputs/run", help="output folder (default outputs/run)")
    parser.add_argument("--input", default=None, help="folder of LoadImage files")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE",
                        help="replace a widget value (repeatable); VALUE is JSON or a bare string")
    parser.add_argument("--no-check", action="store_true", help="skip the static workflow checks")
    parser.add_argument("--no-cfg-parallel", action="store_true",
                        help="under torchrun: every rank runs both guidance branches (default: split them)")
    args = parser.parse_args(argv)
    session = _join_ranks(not args.no_cfg_parallel)
    rank = 0 if session is None else session.rank
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s {'' if session is None else f'[rank {rank}] '}%(message)s",
                        datefmt="%H:%M:%S")
    scratch = None
    try:
        overrides = dict(_parse_override(s) for s in args.set)
        start = time.perf_counter()
        out, inputs = args.out, args.input
        if rank != 0:  # the outputs are rank 0's; the others compute the same graph into a scratch folder
            import tempfile

            scratch = tempfile.mkdtemp(prefix=f"gen4d-rank{rank}-")
            out = scratch
            inputs = inputs or os.environ.get("GEN4D_INPUT_DIR") or str(Path(args.out).resolve().parent / "inputs")
        run_workflow(args.workflow, out, overrides, inputs, check=not args.no_check)
    except WorkflowError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("stopped by the user")
        return 130
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    log.info("finished in %.1f s; outputs in %s", time.perf_counter() - start, Path(args.out).resolve())
    return 0


def _join_ranks(cfg_parallel: bool):
    """Under torchrun (WORLD_SIZE > 1): join the process group; the DiT stages then run sharded."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    load_pack()
    from gen4d.backends.sequence_parallel import init_from_env

    return init_from_env(cfg_parallel)


if __name__ == "__main__":
    sys.exit(main())
