# SPDX-License-Identifier: Apache-2.0
"""Tiny random Depth Anything V2 in the transformers folder layout ``backends.depth`` loads.

Public API:
    build_tiny_depth(folder, seed, depth_estimation_type)   tiny random Depth Anything (relative or metric)
    kind "depth"                    the relative model (``tiny_builder``)
    kind "depth_metric"             the metric model (``tiny_builder``), for stages that lift metric depth
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..depth import PATCH_SIZE
from . import tiny_builder

__all__ = ["build_tiny_depth"]


def build_tiny_depth(folder: str | Path, seed: int = 0, depth_estimation_type: str = "relative") -> Path:
    """A tiny random Depth Anything (DINOv2 width 32, 2 layers) saved in the real folder layout.

    Weights use ``initializer_range`` 0.2 so outputs are of order 1-10 rather than 1e-8.
    """
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                            patch_size=PATCH_SIZE, image_size=28, out_indices=[1, 2], reshape_hidden_states=False,
                            initializer_range=0.2)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, reassemble_factors=[2, 1],
                                 neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_hidden_size=8,
                                 depth_estimation_type=depth_estimation_type,
                                 max_depth=20 if depth_estimation_type == "metric" else 1,
                                 initializer_range=0.2)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        model = DepthAnythingForDepthEstimation(config).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


@tiny_builder("depth")
def _tiny_depth(folder: Path, seed: int) -> Path:
    return build_tiny_depth(folder, seed)


@tiny_builder("depth_metric")
def _tiny_depth_metric(folder: Path, seed: int) -> Path:
    return build_tiny_depth(folder, seed, depth_estimation_type="metric")
