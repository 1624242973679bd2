# SPDX-License-Identifier: Apache-2.0
"""One rasterization for a fit step's seen views and its score-distillation views.

Public API:
    RenderedPart       the images of some of a joint render's cameras
    JointRender        two camera batches' images, and their screen-space gradients after the backward
    screen_gradients   one render's screen-space gradients after the backward (densification's input)
    same_image_plane   whether two camera batches can share one rasterization
    split_render       a joint render's images, cut after its first ``n`` cameras
    render_together    ``render_fn`` once for two camera batches of one Gaussian set

Design notes:
    A guided fit step draws the Gaussians from the views it fits (eq. 1 of CoCo4D) and from the
    sampled guidance poses (eq. 2). Rendered apart, that is two rasterizations a step, and gsplat's
    tile intersection waits for the device in each: the device idles while the host prepares the
    second. Cameras with the same image plane (size, near and far) go through one call instead; the
    parts are slices of its images. Screen-space data stays on the whole render, where the backward
    leaves its gradient; densification reads it per batch, as from two renders. The deformation fit
    does the same for its frames, each seen at its own time, and the guidance views of one of them
    (``GaussianBatch.select`` repeats that frame's set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from .cameras import Cameras
from .gaussians import Gaussians

__all__ = ["RenderedPart", "JointRender", "screen_gradients", "same_image_plane", "split_render", "render_together"]


@dataclass
class RenderedPart:
    """Images of a slice of a joint render's cameras: ``rgb`` ``[C,H,W,3]``, ``alpha`` ``[C,H,W,1]``,
    ``depth`` ``[C,H,W,1]`` or None. Its screen-space data lives on the whole render."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor | None
    means2d: None = None
    radii: None = None


def same_image_plane(a: Cameras, b: Cameras) -> bool:
    """Same image size and clipping planes: what one rasterization call shares across its cameras."""
    return (a.width, a.height, float(a.near), float(a.far)) == (b.width, b.height, float(b.near), float(b.far))


def _part(out, start: int, stop: int) -> RenderedPart:
    depth = getattr(out, "depth", None)
    return RenderedPart(out.rgb[start:stop], out.alpha[start:stop], None if depth is None else depth[start:stop])


def split_render(out, n: int) -> tuple[RenderedPart, RenderedPart]:
    """The images of a render's first ``n`` cameras and of the rest."""
    return _part(out, 0, n), _part(out, n, out.rgb.shape[0])


def screen_gradients(out) -> list[tuple[Tensor, Tensor, int, int]]:
    """After the backward: ``[(means2d grad [C,N,2], radii, width, height)]`` of one render, or none when it
    keeps no screen-space data (a custom renderer's) or nothing reached it."""
    means2d, radii = getattr(out, "means2d", None), getattr(out, "radii", None)
    if means2d is None or means2d.grad is None or radii is None:
        return []
    return [(means2d.grad, radii, out.rgb.shape[2], out.rgb.shape[1])]


@dataclass
class JointRender:
    """Two camera batches of one Gaussian set, rendered together (``renders`` holds one call's output) or
    apart (two): ``first`` and ``second`` hold each batch's images."""

    first: object
    second: object
    renders: list

    def screen_gradients(self) -> list[tuple[Tensor, Tensor, int, int]]:
        """:func:`screen_gradients` per camera batch, as separate renders would give them (densification
        scales each by its batch's camera count, the count its loss averaged over)."""
        entries = [entry for out in self.renders for entry in screen_gradients(out)]
        if len(self.renders) == 1 and entries:
            (grad, radii, width, height), n = entries[0], self.first.rgb.shape[0]
            entries = [(grad[:n], radii[:n], width, height), (grad[n:], radii[n:], width, height)]
        return entries


def render_together(render_fn: Callable, gaussians: Gaussians, first: Cameras, second: Cameras,
                    background) -> JointRender:
    """Render ``gaussians`` from ``first`` and from ``second``, in one ``render_fn`` call where the two
    batches share an image plane (else in two)."""
    if not same_image_plane(first, second):
        a, b = render_fn(gaussians, first, background), render_fn(gaussians, second, background)
        return JointRender(a, b, [a, b])
    whole = render_fn(gaussians, Cameras.cat([first, second]), background)
    return JointRender(*split_render(whole, len(first)), [whole])
