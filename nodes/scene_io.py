# SPDX-License-Identifier: Apache-2.0
"""Gen4D_SaveScene / Gen4D_LoadScene: the compact scene file and per-frame standard 3DGS PLYs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..core.engine.scene import Scene4D
from ..core.formats.export import SCENE_SUFFIX, next_free_stem, save_scene_bundle
from ..core.formats.manifest import save_bundle_frames
from ..core.formats.ply import load_ply
from . import host
from . import types as T
from .widgets import bool_in, combo_in, int_in, shown_name, socket_in, str_in

logger = logging.getLogger(__name__)


def _as_scene(scene, gaussians, node: str) -> Scene4D:
    if scene is not None:
        return scene
    if gaussians is not None:
        return Scene4D.static(gaussians)
    raise ValueError(f"{node}: connect a scene or a gaussians input")


# Per-frame file formats of Save Scene (core/formats/manifest.py writes them and the manifest).
FRAME_FORMAT_CHOICES = {"ply": ("ply",), "spz": ("spz",), "glb": ("glb",), "ply+spz+glb": ("ply", "spz", "glb")}


class SaveScene:
    DESCRIPTION = (
        "Save a 4D scene under ComfyUI's output folder: one compact .gen4d.safetensors file (reload it with "
        "Load Scene) and, optionally, one standard 3DGS .ply per frame that splat viewers open. "
        "Files are numbered, never overwritten, and written as a whole: a cancelled or failed save leaves "
        "nothing behind."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = (T.STRING,)
    RETURN_NAMES = ("scene_file",)
    OUTPUT_TOOLTIPS = ("Path of the saved scene file, relative to the output folder.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "filename_prefix": str_in("gen4d/scene", "Relative name under the output folder; sub-folders "
                                          "allowed, '..' and absolute paths are refused. Each part at most 255 "
                                          "bytes (UTF-8), the last with room for the number and extension."),
                "write_ply_frames": bool_in(True, "Also write one splat file per frame (in frame_format; PLY by "
                                            "default)."),
                "num_frames": int_in(0, 0, 100000, "Frames to bake as PLY; 0 uses the scene's own frame count."),
            },
            "optional": {
                # optional, so workflows saved before it existed keep validating (default: PLY)
                "frame_format": combo_in(FRAME_FORMAT_CHOICES, "Format of the per-frame files: 3DGS PLY, Niantic SPZ "
                                         "(v3, quantised, ~10x smaller), glTF .glb with KHR_gaussian_splatting, or "
                                         "all three. A <name>.frames.json manifest lists every frame, its time and "
                                         "its files."),
                "scene": socket_in(T.SCENE, "The 4D scene to save."),
                "gaussians": socket_in(T.GAUSSIANS, "A static Gaussian set to save (when no scene is connected)."),
            },
        }

    def save(self, filename_prefix, write_ply_frames, num_frames, frame_format="ply", scene=None, gaussians=None):
        scene = _as_scene(scene, gaussians, "Gen4D_SaveScene")
        if frame_format not in FRAME_FORMAT_CHOICES:
            raise ValueError(f"Gen4D_SaveScene: frame_format must be one of {list(FRAME_FORMAT_CHOICES)}, "
                             f"got {frame_format!r}")
        formats = FRAME_FORMAT_CHOICES[frame_format] if write_ply_frames else ()
        root = host.output_directory()
        try:
            next_free_stem(root, filename_prefix)  # a safe name, with room for the number and extensions
        except ValueError as exc:
            raise ValueError(f"Gen4D_SaveScene: filename_prefix {shown_name(filename_prefix)}: {exc}") from exc
        frames = num_frames or scene.num_frames
        progress = host.Progress(frames * max(1, len(formats)))
        try:
            bundle = save_scene_bundle(scene, root, filename_prefix, "ply" in formats, frames,
                                       callback=lambda step, _total, image: progress(step, None, image),
                                       should_stop=host.should_stop)
            if formats:
                done = frames if "ply" in formats else 0
                manifest, written = save_bundle_frames(
                    scene, root, bundle.scene_file, formats, bundle.ply_files, frames,
                    callback=lambda step, total, _: progress(done + step * (len(formats) - ("ply" in formats)),
                                                             None, None),
                    should_stop=host.should_stop)
        except InterruptedError:
            host.raise_if_interrupted()
            raise
        rel = os.path.relpath(bundle.scene_file, root)
        text = f"saved {rel}" + (f" and {len(bundle.ply_files)} PLY frames" if bundle.ply_files else "")
        if formats and formats != ("ply",):
            text += f"; {len(written.times)} frames as {'+'.join(formats)}, listed in " \
                    f"{os.path.relpath(manifest, root)}"
        logger.info(text)
        return {"ui": {"text": [text]}, "result": (rel,)}


def scene_files() -> list[str]:
    """Scene and PLY files under the output and input folders, in ComfyUI's annotated form."""
    found = []
    for label, folder in (("output", host.output_directory()), ("input", host.input_directory())):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts):
                continue  # hidden: saves in progress (staging folders) and temp files
            name = path.name.lower()
            if name.endswith(SCENE_SUFFIX) or name.endswith(".ply"):
                found.append(f"{path.relative_to(folder).as_posix()} [{label}]")
    return found


def resolve_scene_file(annotated: str) -> Path:
    """Map ``"sub/file.ply [output]"`` to a path that must lie inside that folder."""
    if not isinstance(annotated, str):
        raise ValueError(f"Gen4D_LoadScene: file must be a string 'name [output]', got {type(annotated).__name__}")
    name, _, label = annotated.rpartition(" [")
    roots = {"output]": host.output_directory(), "input]": host.input_directory()}
    if not name or label not in roots:
        raise ValueError(f"Gen4D_LoadScene: expected 'name [output]' or 'name [input]', got {annotated!r}")
    root = roots[label].resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise ValueError(f"Gen4D_LoadScene: {annotated!r} lies outside the {label[:-1]} folder")
    if not path.is_file():
        raise ValueError(f"Gen4D_LoadScene: file {annotated!r} does not exist")
    return path


class LoadScene:
    DESCRIPTION = (
        "Load a scene saved by Save Scene (.gen4d.safetensors) or any standard 3DGS .ply from the output "
        "or input folder. A PLY loads as a static scene."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = (T.SCENE, T.GAUSSIANS)
    RETURN_NAMES = ("scene", "gaussians")
    OUTPUT_TOOLTIPS = ("The loaded scene.", "The scene's Gaussians at time 0.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = scene_files() or ["(no scene files found)"]
        return {"required": {"file": combo_in(files, "A .gen4d.safetensors scene or a 3DGS .ply, from the "
                                              "output or input folder.")}}

    @classmethod
    def VALIDATE_INPUTS(cls, file=None):
        if file is None:  # linked from another node: checked when it runs
            return True
        try:
            resolve_scene_file(file)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, file):
        try:
            stat = resolve_scene_file(file).stat()
        except ValueError:
            return float("nan")
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def load(self, file):
        path = resolve_scene_file(file)
        if path.name.lower().endswith(".ply"):
            scene = Scene4D.static(load_ply(path))
        else:
            scene = Scene4D.load(path)
        return scene, scene.at(0.0)


NODES = {
    "Gen4D_SaveScene": (SaveScene, "Gen4D Save Scene"),
    "Gen4D_LoadScene": (LoadScene, "Gen4D Load Scene"),
}
