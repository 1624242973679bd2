# SPDX-License-Identifier: Apache-2.0
"""Write the browser test's assets into tests/browser/fixtures/ (generated at test time, not committed).

moving.g4d   a grey backdrop and a red ball that moves left to right over 12 frames
big.g4d      200k splats x 24 frames (random cloud drifting along x), the size the viewer must handle
corrupt.g4d  bad magic;  truncated.g4d  a valid asset cut in half
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.core.engine.gaussians import Gaussians  # noqa: E402
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart  # noqa: E402
from gen4d.core.formats import preview_asset as pa  # noqa: E402
from gen4d.core.formats.paths import atomic_write_bytes  # noqa: E402

log = logging.getLogger("make_fixtures")


def moving_scene(frames: int = 12) -> Scene4D:
    g = torch.Generator().manual_seed(0)
    n_bg = 1600
    xy = torch.rand(n_bg, 2, generator=g) * 2 - 1
    bg_means = torch.cat([xy, torch.full((n_bg, 1), 1.0)], dim=1)
    bg = Gaussians.from_colors(bg_means, torch.full((n_bg, 3), 0.55), 0.04, 0.9)
    n_ball = 400
    d = torch.randn(n_ball, 3, generator=g)
    ball_means = d / d.norm(dim=1, keepdim=True) * 0.25 * torch.rand(n_ball, 1, generator=g) ** (1 / 3)
    ball = Gaussians.from_colors(ball_means, torch.tensor([[0.9, 0.15, 0.1]]).expand(n_ball, 3), 0.05, 0.95)
    x = torch.linspace(-0.6, 0.6, frames)
    path = torch.stack([x, torch.zeros(frames), torch.full((frames,), 0.3)], dim=1)
    motion = KeyframeMotion(ball_means[None] + path[:, None, :])
    return Scene4D(parts=[ScenePart("backdrop", bg), ScenePart("ball", ball, motion)], num_frames=frames, fps=8.0)


def big_scene(n: int = 200_000, frames: int = 24) -> Scene4D:
    g = torch.Generator().manual_seed(1)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.6, 0.4])
    colors = torch.rand(n, 3, generator=g)
    base = Gaussians.from_colors(means, colors, 0.02, 0.7)
    drift = torch.linspace(0, 0.5, frames)[:, None, None] * torch.tensor([1.0, 0.0, 0.0])
    return Scene4D(parts=[ScenePart("cloud", base, KeyframeMotion(means[None] + drift))], num_frames=frames, fps=24.0)


def main(out: Path, big: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    moving = pa.encode_scene(moving_scene())
    atomic_write_bytes(out / "moving.g4d", moving)
    atomic_write_bytes(out / "corrupt.g4d", b"NOPE" + moving[4:])
    atomic_write_bytes(out / "truncated.g4d", moving[: len(moving) // 2])
    if big and not (out / "big.g4d").exists():
        atomic_write_bytes(out / "big.g4d", pa.encode_scene(big_scene()))
    log.info("fixtures written to %s", out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(Path(__file__).resolve().parent / "fixtures", big="--no-big" not in sys.argv)
