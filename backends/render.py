# SPDX-License-Identifier: Apache-2.0
"""One rendering entry point for Gaussian sets and 4D scenes, on CUDA (gsplat) or CPU (pure torch).

Public API:
    RenderOutput                   rgb ``[C,H,W,3]``, alpha ``[C,H,W,1]``, depth ``[C,H,W,1]``
    render(gaussians, cameras)     one Gaussian set seen by a batch of cameras
    render_scene(scene, cameras)   a dynamic scene: each camera sees the scene at its own time
    available_backends()           names usable on this machine
    resolve_backend(name, device)  "auto" -> "gsplat" on CUDA when gsplat imports, else "torch"
    cpu_step_seconds(n, views)     a generous estimate of one training step on the CPU rasterizer

Design notes:
    Both backends take the same activated parameters and produce the same values (the GPU test
    ``tests/test_render_gpu.py`` holds them to 1e-4). gsplat is imported only when the tensors
    live on a CUDA device, never at module import and never on a CPU-only machine.
    Depth is gsplat's expected depth (``sum(w z) / alpha``, 0 where nothing was hit).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..core.coco4d.screen_trajectory import composite_layers, place_layer
from ..core.engine.cameras import Cameras
from ..core.engine.gaussians import GaussianBatch, Gaussians
from ..core.engine.rasterize import rasterize
from ..core.engine.scene import Scene4D
from ..core.engine.sh import SH_C0

__all__ = ["RenderOutput", "cpu_step_seconds", "CPU_SECONDS_PER_SPLAT_VIEW",
           "render", "render_each", "render_scene", "render_placed", "training_render",
           "training_render_without_depth",
           "available_backends", "resolve_backend", "BACKENDS"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gsplat", "torch")

# Seconds per Gaussian per rendered view of one optimisation step (forward and backward) on the pure-torch
# rasterizer, one CPU thread: measured 5e-5 s at 100k Gaussians and 1.1e-4 s at 1M (32x32 views; 256x256
# views cost about as much per Gaussian). The lower figure keeps estimates on the generous side.
CPU_SECONDS_PER_SPLAT_VIEW = 5e-5


def cpu_step_seconds(num_gaussians: int, views: int) -> float:
    """A generous (low) estimate of one training step's seconds on the CPU rasterizer."""
    return float(num_gaussians) * float(views) * CPU_SECONDS_PER_SPLAT_VIEW


@dataclass
class RenderOutput:
    """Rendered images of ``C`` cameras.

    Attributes:
        rgb: ``[C,H,W,3]`` colour, background composited, not clamped.
        alpha: ``[C,H,W,1]`` accumulated opacity.
        depth: ``[C,H,W,1]`` expected z-depth, 0 where alpha is 0; None from a render without it
            (``depth=False``).
        means2d: ``[C,N,2]`` screen-space centres with ``retain_grad()`` set (only with
            ``screen_grads=True``): after backward, ``means2d.grad`` drives densification.
        radii: ``[C,N,2]`` screen-space radii in pixels (0 = not visible), with ``screen_grads``.
        parts: the renders this one was concatenated from, each with its own screen-space data
            (:func:`render_each` without a batched backend).
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor | None
    means2d: Tensor | None = None
    radii: Tensor | None = None
    parts: list["RenderOutput"] | None = None

    @staticmethod
    def cat(parts: list["RenderOutput"]) -> "RenderOutput":
        """Images of several renders in one batch (screen-space data is dropped)."""
        depth = None if parts[0].depth is None else torch.cat([p.depth for p in parts])
        return RenderOutput(torch.cat([p.rgb for p in parts]), torch.cat([p.alpha for p in parts]), depth)

    def reorder(self, index: Tensor) -> "RenderOutput":
        return RenderOutput(self.rgb[index], self.alpha[index], None if self.depth is None else self.depth[index])


@functools.lru_cache(maxsize=1)
def _gsplat_rasterization():
    """gsplat's rasterization function, or None when it cannot be imported."""
    try:
        from gsplat import rasterization
    except (ImportError, OSError, RuntimeError) as exc:  # missing package or failed CUDA build
        logger.warning("gsplat unavailable, using the torch rasterizer: %s", exc)
        return None
    return rasterization


def _gsplat_colors(sh: Tensor, degree: int) -> tuple[Tensor, int | None]:
    """What gsplat is given for the colours: at degree 0 the RGB itself, computed as gsplat would
    (``max(SH_C0 · DC + 0.5, 0)``), so it skips its SH pass, whose camera centres come from a
    ``torch.inverse`` that waits for the device; at higher degrees the coefficients and the degree."""
    if degree == 0:
        return torch.clamp_min(sh[..., 0, :] * SH_C0 + 0.5, 0.0), None
    return sh, degree


def available_backends() -> list[str]:
    names = ["torch"]
    if torch.cuda.is_available() and _gsplat_rasterization() is not None:
        names.insert(0, "gsplat")
    return names


def resolve_backend(name: str, device: torch.device) -> str:
    """Pick the concrete backend for tensors on ``device``.

    Raises:
        ValueError: unknown name, or "gsplat" asked for where it cannot run.
    """
    if name not in BACKENDS:
        raise ValueError(f"render: backend must be one of {BACKENDS}, got {name!r}")
    if name == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    if name == "gsplat":
        if not on_cuda:
            raise ValueError("render: backend 'gsplat' needs the Gaussians on a CUDA device")
        if _gsplat_rasterization() is None:
            raise ValueError("render: backend 'gsplat' was asked for but gsplat cannot be imported")
        return "gsplat"
    return "gsplat" if on_cuda and _gsplat_rasterization() is not None else "torch"


def _background(background, n_cams: int, device: torch.device) -> Tensor | None:
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if bg.shape == (3,):
        bg = bg.expand(n_cams, 3)
    if bg.shape != (n_cams, 3):
        raise ValueError(f"render: background must be [3] or [{n_cams},3], got {tuple(bg.shape)}")
    return bg


def render(
    gaussians: Gaussians,
    cameras: Cameras,
    background=None,
    backend: str = "auto",
    sh_degree: int | None = None,
    screen_grads: bool = False,
    check_finite: bool = True,
    should_stop: Callable[[], bool] | None = None,
    depth: bool = True,
) -> RenderOutput:
    """Render a Gaussian set from every camera (cameras' times are ignored here).

    Args:
        gaussians: the set, ``N >= 1``, finite.
        cameras: ``C`` cameras; moved to the Gaussians' device.
        background: ``[3]`` or ``[C,3]`` colour behind the splats (default black).
        backend: "auto", "gsplat" (CUDA) or "torch".
        sh_degree: SH degree to evaluate (default: all the set holds).
        screen_grads: keep the screen-space centres and radii for densification.
        check_finite: read the values back to refuse NaN/inf (a wait for the device); fit loops,
            which repair non-finite values themselves, turn it off.
        should_stop: polled before a gsplat call, and per camera and block of tiles on the torch
            rasterizer; when it returns True, ``InterruptedError`` is raised.
        depth: also composite the expected depth (``RenderOutput.depth``); without it the colour is
            the same and a channel less is composited and differentiated.

    Raises:
        ValueError: empty or non-finite Gaussians, bad background, unusable backend.
        InterruptedError: ``should_stop`` returned True.
    """
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"render: gaussians must be a Gaussians set, got {type(gaussians).__name__}")
    if not isinstance(cameras, Cameras):
        raise TypeError(f"render: cameras must be Cameras, got {type(cameras).__name__}")
    if len(gaussians) == 0:
        raise ValueError("render: the Gaussian set is empty; nothing to render")
    gaussians.validate(check_finite=check_finite)
    degree = gaussians.sh_degree if sh_degree is None else int(sh_degree)
    if not 0 <= degree <= gaussians.sh_degree:
        raise ValueError(f"render: sh_degree must be in 0..{gaussians.sh_degree}, got {sh_degree}")
    device = gaussians.device
    cams = cameras.to(device)
    name = resolve_backend(backend, device)
    bg = _background(background, len(cams), device)
    args = (
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        gaussians.opacities,
        gaussians.sh,
        cams.viewmats.to(gaussians.dtype),
        cams.Ks.to(gaussians.dtype),
        int(cams.width),
        int(cams.height),
    )
    if name == "gsplat":
        # gsplat 1.5 rejects backgrounds in "RGB+ED" mode; composite them the way it would (+ T * bg).
        _check_stop(should_stop)  # one gsplat call renders the whole batch in milliseconds per image
        colors_in, gsplat_degree = _gsplat_colors(gaussians.sh, degree)
        colors, alphas, meta = _gsplat_rasterization()(
            *args[:4], colors_in, *args[5:], near_plane=cams.near, far_plane=cams.far, sh_degree=gsplat_degree,
            render_mode="RGB+ED" if depth else "RGB", packed=False,
        )
        means2d, radii = meta["means2d"], meta["radii"]
        rgb = colors[..., :3] if bg is None else colors[..., :3] + (1.0 - alphas) * bg[:, None, None, :]
    else:
        colors, alphas, proj = rasterize(*args, near_plane=cams.near, far_plane=cams.far, sh_degree=degree,
                                         backgrounds=bg, render_depth=depth, return_projection=True,
                                         should_stop=should_stop)
        means2d, radii = proj.means2d, proj.radii
        rgb = colors[..., :3]
    if screen_grads and means2d.requires_grad:
        means2d.retain_grad()
    keep = screen_grads
    return RenderOutput(rgb, alphas, colors[..., 3:4] if depth else None, means2d if keep else None,
                        radii if keep else None)


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise InterruptedError("render: stopped")


def _on_device(scene, device: torch.device) -> bool:
    parts = getattr(scene, "parts", None)
    if not parts:
        return True
    have = parts[0].gaussians.device
    return have.type == device.type and (have.index == device.index or None in (have.index, device.index))


def render_scene(
    scene,
    cameras: Cameras,
    background=None,
    backend: str = "auto",
    sh_degree: int | None = None,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RenderOutput:
    """Render a dynamic scene: camera ``i`` sees ``scene.at(cameras.times[i])``.

    Cameras that share a time share one evaluation of the scene.

    Args:
        scene: anything with ``at(t) -> Gaussians`` (a ``Scene4D``), or a ``Gaussians`` set.
        cameras: ``C`` cameras with their times.
        device: where to render (default: where the scene lives).
        should_stop: polled before each time and inside :func:`render`; raises ``InterruptedError``.
    """
    if isinstance(scene, Gaussians):
        gaussians = scene if device is None else scene.to(device)
        return render(gaussians, cameras, background, backend, sh_degree, should_stop=should_stop)
    if not callable(getattr(scene, "at", None)):
        raise TypeError(f"render_scene: scene must be a Scene4D or Gaussians, got {type(scene).__name__}")
    if device is not None and not _on_device(scene, torch.device(device)):
        scene = scene.to(device)  # once, so motion (e.g. a deformation field) runs on the render device
    times = cameras.times.detach().cpu()
    unique, inverse = torch.unique(times, return_inverse=True)
    outputs, order = [], []
    for k, t in enumerate(unique.tolist()):
        _check_stop(should_stop)
        idx = torch.nonzero(inverse == k, as_tuple=True)[0]
        gaussians = scene.at(t)
        bg = background
        if background is not None and torch.as_tensor(background).dim() == 2:
            bg = torch.as_tensor(background)[idx]
        outputs.append(render(gaussians, cameras[idx], bg, backend, sh_degree, should_stop=should_stop))
        order.append(idx)
    merged = RenderOutput.cat(outputs)
    return merged.reorder(torch.argsort(torch.cat(order)).to(merged.rgb.device))


def training_render(gaussians: Gaussians, cameras: Cameras, background) -> RenderOutput:
    """The ``render_fn`` of the fit loops: best backend, screen-space data kept for densification.

    ``training_render.each`` draws several sets at once (:func:`render_each`); the deformation fit
    uses it for its timestamps when the ``render_fn`` it is given has it.
    """
    return render(gaussians, cameras, background, screen_grads=True, check_finite=False)


def training_render_without_depth(gaussians: Gaussians, cameras: Cameras, background) -> RenderOutput:
    """:func:`training_render` without the depth channel (``depth`` None), for fits whose losses read no
    depth; ``training_render.without_depth`` names it to the fit loops, and its ``each`` is
    :func:`render_each` likewise."""
    return render(gaussians, cameras, background, screen_grads=True, check_finite=False, depth=False)


def render_each(sets: list[Gaussians], cameras: Cameras, background, screen_grads: bool = False,
                depth: bool = True) -> RenderOutput:
    """Camera ``i`` sees ``sets[i]``: the sets of one deformation at several times, say.

    On CUDA with gsplat, sets of equal size go through one batched rasterization (one launch for all
    of them instead of one per set); a :class:`GaussianBatch` (what ``Deformation.forward_batch``
    returns) goes in as the stacked tensors it holds. Elsewhere each set is rendered on its own.

    Args:
        screen_grads: keep screen-space data for densification: ``means2d`` / ``radii`` of shape
            ``[B,1,N,2]`` from the batched call, or one render per set in ``parts``.
        depth: also composite the expected depth (as :func:`render`).

    Raises:
        ValueError: the numbers of sets and cameras differ, or no set is given.
    """
    if not sets or len(sets) != len(cameras):
        raise ValueError(f"render_each: need one camera per set, got {len(sets)} sets and {len(cameras)} cameras")
    device = sets[0].device
    name = resolve_backend("auto", device)
    if name != "gsplat" or len(sets) == 1 or len({len(g) for g in sets}) != 1:
        outs = [render(g, cameras[i: i + 1], background, screen_grads=screen_grads, check_finite=False, depth=depth)
                for i, g in enumerate(sets)]
        merged = RenderOutput.cat(outs)
        merged.parts = outs if screen_grads else None
        return merged
    cams = cameras.to(device)
    bg = _background(background, len(cams), device)
    degree = sets[0].sh_degree
    if isinstance(sets, GaussianBatch):  # fields already stacked (or shared): no split-and-restack
        sh_in, degree = _gsplat_colors(sets.fields["sh"], degree)
        stacked = [sets.stacked("means"), sets.stacked("quats"), sets.stacked("log_scales", torch.exp),
                   sets.stacked("logit_opacities", torch.sigmoid), sets.broadcast("sh", sh_in)]
    else:
        for g in sets:
            g.validate()
        stacked = [torch.stack([getattr(g, key) for g in sets])
                   for key in ("means", "quats", "scales", "opacities", "sh")]
        stacked[4], degree = _gsplat_colors(stacked[4], degree)
    colors, alphas, meta = _gsplat_rasterization()(
        *stacked, cams.viewmats.to(stacked[0].dtype)[:, None], cams.Ks.to(stacked[0].dtype)[:, None],
        int(cams.width), int(cams.height), near_plane=cams.near, far_plane=cams.far, sh_degree=degree,
        render_mode="RGB+ED" if depth else "RGB", packed=False,
    )
    colors, alphas = colors[:, 0], alphas[:, 0]  # [B,1,H,W,·] -> [B,H,W,·]
    rgb = colors[..., :3] if bg is None else colors[..., :3] + (1.0 - alphas) * bg[:, None, None, :]
    means2d = meta["means2d"] if screen_grads else None
    if means2d is not None and means2d.requires_grad:
        means2d.retain_grad()
    return RenderOutput(rgb, alphas, colors[..., 3:4] if depth else None, means2d,
                        meta["radii"] if screen_grads else None)


training_render.each = render_each
training_render_without_depth.each = functools.partial(render_each, depth=False)
training_render.without_depth = training_render_without_depth


def render_placed(scene: Scene4D, cams: Cameras, index: slice, plans: dict, bg, backend: str = "auto",
                  device=None, should_stop: Callable[[], bool] | None = None) -> RenderOutput:
    """``scene`` at ``cams`` with each part named in ``plans`` rendered alone, moved by its screen placement
    (``core.coco4d.screen_trajectory.screen_placement``; ``index`` picks this chunk's cameras of the plan)
    and composited with the other parts by per-pixel depth over ``bg``."""
    black = torch.zeros(3)
    layers = []
    rest = [p for p in scene.parts if p.name not in plans]
    if rest:
        out = render_scene(Scene4D(rest, scene.num_frames, scene.fps), cams, black, backend, device=device,
                           should_stop=should_stop)
        layers.append((out.rgb.cpu(), out.alpha.cpu(), out.depth.cpu()))
    for part in scene.parts:
        if part.name not in plans:
            continue
        plan = plans[part.name]
        out = render_scene(Scene4D([part], scene.num_frames, scene.fps), cams, black, backend, device=device,
                           should_stop=should_stop)
        rgb, alpha, depth = out.rgb.cpu(), out.alpha.cpu(), out.depth.cpu()
        placed = plan.placed[index]
        if placed.any():
            moved = place_layer(rgb[placed], alpha[placed], depth[placed], plan.shift[index][placed],
                                plan.scale[index][placed])
            rgb, alpha, depth = rgb.clone(), alpha.clone(), depth.clone()
            rgb[placed], alpha[placed], depth[placed] = moved
        layers.append((rgb, alpha, depth))
    rgb, alpha, depth = composite_layers(layers, torch.as_tensor(bg, dtype=torch.float32))
    return RenderOutput(rgb, alpha, depth)
