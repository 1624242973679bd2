# SPDX-License-Identifier: Apache-2.0
"""Gen4D_LoadPosedFrames: a ``transforms*.json`` dataset (D-NeRF, nerfstudio, instant-ngp) from the input folder.

Public API:
    LoadPosedFrames     node ``Gen4D_LoadPosedFrames``: dataset folder + split -> IMAGE, MASK, GEN4D_CAMERAS,
                        the capture's point cloud as GEN4D_GAUSSIANS (or None) and a MASK of pixels to ignore
    dataset_choices()   the folder picker's entries

Design notes:
    Parsing, conventions and every check live in ``core.formats.posed_frames``; this node only
    finds the folder under ComfyUI's input folder (picker or typed path, both confined to it) and
    hands the tensors on. The outputs plug into Static Gaussians (fit_frames = all) and
    Deformation Fit like an orbit video with its cameras.
"""

from __future__ import annotations

import os

import torch

from ..core.engine.point_init import from_points
from ..core.formats.convert import parse_color
from ..core.formats.posed_frames import SPLITS, dataset_folder, find_datasets, read_posed_frames
from . import host
from . import types as T
from .widgets import bool_in, color_error, combo_in, int_in, str_in

NODE = "Gen4D_LoadPosedFrames"
NO_DATASETS = "(no datasets found)"
# Marks the folder picker: a shared workflow names a dataset the user supplies, so the frontend switches a name
# the user lacks to the first dataset present (web/gen4d_models.js) and the workflow checker accepts any name.
DATASET_PICKER_KEY = "gen4d_dataset_picker"


def _picker(combo: tuple) -> tuple:
    choices, opts = combo
    return choices, {**opts, DATASET_PICKER_KEY: True}


def dataset_choices() -> list[str]:
    """Sub-folders of the input folder that hold a transforms file (a placeholder when there are none)."""
    return find_datasets(host.input_directory()) or [NO_DATASETS]


def _resolve(folder: str, path: str):
    name = path.strip() if isinstance(path, str) and path.strip() else folder
    if name == NO_DATASETS:
        raise ValueError(f"{NODE}: no dataset picked: put a folder holding transforms.json or "
                         f"transforms_train.json under the input folder {str(host.input_directory())!r}, or type "
                         "its path relative to the input folder")
    return dataset_folder(host.input_directory(), name, NODE)


class LoadPosedFrames:
    DESCRIPTION = (
        "Load posed frames from a transforms*.json dataset under ComfyUI's input folder: D-NeRF "
        "(transforms_train/val/test.json with camera_angle_x and per-frame time), nerfstudio (camera_model "
        "PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV or OPENCV_FISHEYE, fl_x/fl_y/cx/cy/w/h, per-frame intrinsics, "
        "*_filenames splits, mask_path, ply_file_path; distorted frames are undistorted) and instant-ngp "
        "(camera_angle_x/y or fl_x..., dynamic_mask_<name>.png, aabb_scale ignored). Frames of one transforms.json "
        "come in file-name order. "
        "Poses are converted from the files' "
        "OpenGL/Blender axes to the pack's OpenCV cameras; times come from the frames' 'time' or are spread "
        "evenly over [0, 1]. Alpha becomes the mask and the images are composited on the background colour. "
        "Feed images and cameras to Static Gaussians (fit_frames 'all', sphere_radius 0) and Deformation Fit to fit "
        "a 4D scene (example workflow PosedFrames4D)."
    )
    CATEGORY = f"{T.CATEGORY}/io"
    RETURN_TYPES = (T.IMAGE, T.MASK, T.CAMERAS, T.GAUSSIANS, T.MASK)
    RETURN_NAMES = ("images", "masks", "cameras", "points", "ignore")
    OUTPUT_TOOLTIPS = (
        "The frames [N,H,W,3], composited on the background colour.",
        "Each frame's alpha [N,H,W] (all ones for images without alpha). The frames are composited already, so "
        "the fits need no masks: given these, they composite their targets again at soft edges. Connect it for a "
        "silhouette term (the fit options' mask weight).",
        "One camera per frame: OpenCV world-to-camera pose, pixel intrinsics, image size and time in [0, 1].",
        "The capture's structure-from-motion points (nerfstudio's ply_file_path) as Gaussians, one per point, "
        "scaled by its three nearest neighbours (3DGS's start): connect it to Static Gaussians' init. None when "
        "the dataset names no point cloud (the fit then starts from its sphere).",
        "Pixels to leave out of training [N,H,W] (1 = ignore): where a frame's nerfstudio mask_path is 0 "
        "(passers-by, the capture rig), where instant-ngp's dynamic mask is not 0, and where an undistorted frame "
        "sees past the capture's edge. Connect it to "
        "the fits' ignore_mask. A single empty mask when the dataset has neither.",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": _picker(combo_in(dataset_choices(), "A sub-folder of the input folder holding "
                                           "transforms.json or transforms_train/val/test.json (ignored when path "
                                           "is set).")),
                "path": str_in("", "Dataset folder typed relative to the input folder (e.g. 'dnerf/lego'); "
                               "overrides folder when not empty. Absolute paths, '..' and symlinks leading out of "
                               "the input folder are refused."),
                "split": combo_in(SPLITS, "Which frames: train, val or test (transforms_<split>.json, or the "
                                  "<split>_filenames lists of a single transforms.json; a transforms.json without "
                                  "lists is split as nerfstudio splits it: every tenth or so frame by name held out "
                                  "as val and test, none under 10 frames), or all of them.", default="train"),
                "downscale": int_in(1, 1, 16, "Shrink the images by this integer factor (area average); the "
                                    "intrinsics follow."),
                "background": str_in("#ffffff", "Colour behind transparent pixels (#rrggbb); the fit nodes' "
                                     "default is white, like D-NeRF's."),
                "undistort": bool_in(True, "Resample frames taken through a distorted lens (radial-tangential "
                                     "coefficients k1..k4, p1, p2 of a perspective model, or OPENCV_FISHEYE) to the "
                                     "pinhole of their own intrinsics, which is what the fits render; pixels the "
                                     "capture does not cover become transparent (mask 0). Off: radial-tangential "
                                     "coefficients are ignored and a fisheye is refused."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, folder=None, path=None, background=None):
        colour = color_error(background)
        if colour is not True:
            return colour
        if folder is None or path is None:  # linked from another node: checked when it runs
            return True
        try:
            _resolve(folder, path)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, folder, path, split=None, downscale=None, background=None, undistort=None):
        """A stamp of every file's time and size in the dataset folder (NaN when it does not resolve)."""
        try:
            root = _resolve(folder, path)
        except ValueError:
            return float("nan")
        stamp = []
        for current, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                try:
                    st = os.stat(os.path.join(current, name))
                except OSError:
                    continue
                stamp.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
        return "|".join(stamp)

    def load(self, folder, path, split, downscale, background, undistort=True):
        root = _resolve(folder, path)
        bar: list[host.Progress] = []

        def progress(done: int, total: int) -> None:
            host.raise_if_interrupted()
            if not bar:
                bar.append(host.Progress(total))
            bar[0](done, total)

        frames = read_posed_frames(root, split, tuple(parse_color(background).tolist()), int(downscale),
                                   root=host.input_directory(), who=NODE, callback=progress,
                                   undistort=bool(undistort))
        device = host.intermediate_device()
        points = None
        if frames.points is not None:
            # the neighbour search runs on the compute device: a capture has 10k to 1M points
            points = from_points(frames.points.to(host.compute_device()), frames.point_colors).to(device)
        _, h, w = frames.masks.shape
        ignore = frames.ignore if frames.ignore is not None else torch.zeros(1, h, w)
        return frames.images.to(device), frames.masks.to(device), frames.cameras, points, ignore.to(device)


NODES = {
    NODE: (LoadPosedFrames, "Gen4D Load Posed Frames"),
}
