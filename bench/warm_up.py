# SPDX-License-Identifier: Apache-2.0
"""The fit engine's first use in a process, done before a bench times its fits.

A process's first fit also pays for what a running ComfyUI pays once: gsplat's extension (built or
loaded), cuDNN's plans for SSIM's convolutions, fused Adam, the deformation field's and the updates'
first graph captures. ``fit_bench`` and ``guidance_bench`` run :func:`warm_up_engine` first, so their
figures are the fits'. Import it after the pack is loaded (both benches load it first).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from gen4d import synthetic
from gen4d.backends.render import training_render
from gen4d.core.engine.cameras import diffusion4d_orbit
from gen4d.core.engine.coarse_to_fine import CoarseToFineConfig, fit_coarse_to_fine
from gen4d.core.engine.fit_static import StaticFitConfig, fit_static
from gen4d.core.engine.gaussians import sphere_init
from gen4d.core.engine.losses import ReconstructionLoss
from gen4d.core.engine.views import PosedImages

__all__ = ["warm_up_engine"]


def warm_up_engine(device: torch.device) -> None:
    """One tiny static fit and one tiny coarse-to-fine fit on ``device`` (a few seconds at most)."""
    world = synthetic.object_world(0)
    cameras = diffusion4d_orbit(64, 64, 4, dynamic=True, fovy_deg=49.1, convention="open_loop")
    truth = synthetic.render(world, cameras, supersample=3)
    views = PosedImages(truth["rgb"], cameras, truth["foreground"])
    init = sphere_init(200, 0.5, generator=torch.Generator().manual_seed(0))
    loss = ReconstructionLoss(l1=0.8, dssim=0.2, mask=0.5)
    fit_static(init, views, training_render, StaticFitConfig(iterations=5, views_per_step=2, preview_every=0,
                                                             loss=loss), device=device)
    base = CoarseToFineConfig()
    tiny = CoarseToFineConfig(coarse=replace(base.coarse, iterations=5, preview_every=0),
                              fine=replace(base.fine, iterations=5, times_per_step=2, preview_every=0))
    fit_coarse_to_fine(init, views, training_render, None, tiny, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
