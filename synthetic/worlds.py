# SPDX-License-Identifier: Apache-2.0
"""The two ground-truth worlds: an articulated object and a scene around it.

Public API:
    object_world(seed=0) -> World        an articulated, textured figure near the origin, empty background
    scene_world(seed=0) -> World         ground, backdrop, static props, a drifting balloon, a walking figure
    articulated_object(seed, ...)        the figure's parts (body, head, two arms, two legs) as primitives

Design notes:
    Worlds use the pack's world axes: y points down (world up is ``-y``), so the ground of the
    scene world is the plane ``y = +1`` below the identity reference camera. The figure is a box
    body with a bobbing, turning head sphere, two arms hinged at the shoulders (one swings
    sideways in the image plane, one forwards in depth) and two legs swinging in opposite phase;
    at ``scale=1`` it fits in a sphere of radius ~0.6, framed by the Diffusion4D camera (distance
    2, fovy ~49 deg). Every random choice (palette, texture sizes, phases, amplitudes, prop
    placement, walking direction) comes from a ``torch.Generator`` seeded by ``seed``.
"""

from __future__ import annotations

import numbers

import torch

from ..core.engine.cameras import orbit_poses
from .motion import Bob, Chain, Fixed, Motion, Swing, Travel
from .primitives import Box, Primitive, Rectangle, Sphere
from .raycast import World
from .textures import Checker, Gradient, Shaded, Stripes, Waves

__all__ = ["articulated_object", "object_world", "scene_world"]

Vec3 = tuple[float, float, float]

_PALETTE: tuple[Vec3, ...] = (
    (0.85, 0.25, 0.20), (0.20, 0.55, 0.85), (0.95, 0.75, 0.15), (0.30, 0.70, 0.35),
    (0.60, 0.30, 0.75), (0.95, 0.50, 0.20), (0.15, 0.65, 0.65), (0.90, 0.45, 0.65),
)


class _Rand:
    """Deterministic draws of Python numbers from a seeded ``torch.Generator``."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self.gen = torch.Generator().manual_seed(int(seed))
        self.palette = [_PALETTE[i] for i in torch.randperm(len(_PALETTE), generator=self.gen).tolist()]

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.gen, dtype=torch.float64))

    def sign(self) -> float:
        return 1.0 if self.uniform(0.0, 1.0) < 0.5 else -1.0

    def color(self, i: int, shade: float = 1.0) -> Vec3:
        c = self.palette[i % len(self.palette)]
        return tuple(min(1.0, max(0.0, v * shade)) for v in c)  # type: ignore[return-value]


def _limb(name: str, pivot: Vec3, half: Vec3, swing: Swing, root: Motion, texture, group: str,
          density: float) -> Box:
    """A box hanging below ``pivot`` (along +y) that swings about it."""
    rest = Fixed(translation=(pivot[0], pivot[1] + half[1], pivot[2]))
    return Box(name=name, half_size=half, texture=texture, motion=Chain((root, swing, rest)), group=group,
               density=density)


def articulated_object(seed: int = 0, scale: float = 1.0, root: Motion | None = None, prefix: str = "",
                       group: str = "foreground", density: float = 1.0) -> tuple[Primitive, ...]:
    """Parts of an articulated figure in its own frame (origin at the body centre, y down).

    Args:
        seed: seed of the random choices.
        scale: uniform size factor (geometry and pivots scale; motion angles do not).
        root: motion of the whole figure (identity if omitted).
        prefix: prepended to every part name.
        group: mask group of every part.
        density: sampling density of every part.

    Returns:
        six primitives: body, head, left/right arm, left/right leg.
    """
    if not scale > 0:
        raise ValueError(f"articulated_object: scale must be positive, got {scale}")
    r = _Rand(seed)
    root = Fixed() if root is None else root
    s = scale
    bx, by, bz = s * r.uniform(0.15, 0.18), s * r.uniform(0.22, 0.25), s * r.uniform(0.10, 0.12)
    body_tex = Shaded(Checker(r.color(0), r.color(1, 0.5), size=s * r.uniform(0.07, 0.09)))
    body = Box(name=prefix + "body", half_size=(bx, by, bz), texture=body_tex, motion=root, group=group,
               density=density)
    hr = s * 0.13
    head_motion = Chain((root, Fixed(translation=(0.0, -(by + hr + 0.03 * s), 0.0)),
                         Bob((0.0, -1.0, 0.0), 0.035 * s, 2.0, r.uniform(0.0, 1.0)),
                         Swing(axis=(0.0, 1.0, 0.0), amplitude_deg=r.uniform(20.0, 30.0), phase=r.uniform(0, 1))))
    head_tex = Shaded(Stripes(r.color(2), r.color(3), period=s * r.uniform(0.08, 0.1), direction=(1.0, 0.6, 0.3)))
    head = Sphere(name=prefix + "head", radius=hr, texture=head_tex, motion=head_motion, group=group,
                  density=density)
    arm_half, arm_x, arm_y = (0.045 * s, 0.19 * s, 0.045 * s), bx + 0.05 * s, -by + 0.04 * s
    arm_tex = Shaded(Checker(r.color(4), r.color(5), size=s * 0.06))
    left_swing = Swing(pivot=(-arm_x, arm_y, 0.0), axis=(0.0, 0.0, 1.0), amplitude_deg=r.uniform(15.0, 22.0),
                       offset_deg=25.0, phase=r.uniform(0.0, 1.0))
    right_swing = Swing(pivot=(arm_x, arm_y, 0.0), axis=(1.0, 0.0, 0.0), amplitude_deg=r.uniform(30.0, 40.0),
                        phase=r.uniform(0.0, 1.0))
    leg_half, leg_x = (0.06 * s, 0.16 * s, 0.06 * s), 0.09 * s
    leg_tex = Shaded(Gradient(r.color(6), r.color(7), direction=(0.0, 1.0, 0.0), start=-0.16 * s, end=0.16 * s))
    leg_amp, leg_phase = r.uniform(20.0, 30.0), r.uniform(0.0, 1.0)
    legs = [
        _limb(prefix + f"{side}_leg", (sx * leg_x, by, 0.0), leg_half,
              Swing(pivot=(sx * leg_x, by, 0.0), axis=(1.0, 0.0, 0.0), amplitude_deg=leg_amp, phase=leg_phase + ph),
              root, leg_tex, group, density)
        for side, sx, ph in (("left", -1.0, 0.0), ("right", 1.0, 0.5))
    ]
    arms = [
        _limb(prefix + "left_arm", (-arm_x, arm_y, 0.0), arm_half, left_swing, root, arm_tex, group, density),
        _limb(prefix + "right_arm", (arm_x, arm_y, 0.0), arm_half, right_swing, root, arm_tex, group, density),
    ]
    return (body, head, *arms, *legs)


def object_world(seed: int = 0) -> World:
    """An articulated figure near the origin on an empty (white, alpha 0) background.

    The figure turns slowly about the vertical axis, bobs, and swings its limbs over ``t`` in
    ``[0, 1]``; it fits in a sphere of radius ~0.6. The reference camera is the front view at
    distance 2 (orbit elevation 0, azimuth 0: at ``(0, 0, -2)`` looking along ``+z``), fovy 49.1.

    Args:
        seed: seed of the random choices (int).

    Returns:
        ``World`` whose parts are all in group ``foreground``.
    """
    r = _Rand(seed)
    root = Chain((Swing(axis=(0.0, 1.0, 0.0), amplitude_deg=r.uniform(8.0, 15.0), phase=r.uniform(0.0, 1.0)),
                  Bob((0.0, -1.0, 0.0), 0.02, 2.0, r.uniform(0.0, 1.0))))
    parts = articulated_object(seed, 1.0, root)
    vm = orbit_poses([0.0], [0.0], 2.0)[0]
    return World("object", parts, background=(1.0, 1.0, 1.0),
                 reference_viewmat=tuple(vm.reshape(-1).tolist()), reference_fovy_deg=49.1,
                 meta=(("seed", seed),))


def _static_scene(r: _Rand) -> list[Primitive]:
    """Ground, backdrop wall and static props (group ``background``)."""
    ground_tex = Checker(Gradient((0.45, 0.35, 0.25), (0.55, 0.5, 0.3), direction=(1.0, 0.0, 0.0), start=-8, end=8),
                         r.color(0, 0.45), size=r.uniform(0.45, 0.6))
    ground = Rectangle(name="ground", half_size=(22.0, 4.25), texture=ground_tex, density=1.0,
                       motion=Fixed(translation=(0.0, 1.0, 3.75), axis=(1.0, 0.0, 0.0), angle_deg=90.0))
    wall_tex = Checker(Waves((0.6, 0.65, 0.75), 0.2, ((0.3, 0.1, 0.0), (0.0, 0.25, 0.0), (0.15, 0.2, 0.0)),
                             (r.uniform(0, 6), r.uniform(0, 6), r.uniform(0, 6))),
                       r.color(1, 0.6), size=r.uniform(0.8, 1.1))
    wall = Rectangle(name="wall", half_size=(22.0, 8.5), texture=wall_tex, motion=Fixed(translation=(0.0, -7.5, 8.0)))
    c = r.uniform(-0.2, 0.2)
    props: list[Primitive] = [
        Box(name="crate", half_size=(0.4, 0.4, 0.4), texture=Shaded(Checker(r.color(2), r.color(3), size=0.2)),
            motion=Fixed(translation=(-1.7 + c, 0.6, 4.9), axis=(0.0, 1.0, 0.0), angle_deg=r.uniform(15, 35)),
            density=4.0),
        Box(name="pillar", half_size=(0.3, 1.2, 0.3), texture=Shaded(Stripes(r.color(4), (0.9, 0.9, 0.85), 0.3,
                                                                              (0.0, 1.0, 0.0))),
            motion=Fixed(translation=(-3.0, -0.2, 6.6 + c)), density=4.0),
        Sphere(name="ball", radius=0.5, texture=Shaded(Stripes(r.color(5), r.color(6), 0.25, (1.0, 1.0, 0.0))),
               motion=Fixed(translation=(1.9 - c, 0.5, 5.8)), density=4.0),
        Box(name="step", half_size=(0.3, 0.18, 0.25), texture=Shaded(Checker(r.color(7), (0.95, 0.95, 0.9), 0.12)),
            motion=Fixed(translation=(0.55 + c, 0.82, 2.7), axis=(0.0, 1.0, 0.0), angle_deg=-20.0), density=4.0),
    ]
    return [ground, wall, *props]


def _balloon(r: _Rand) -> Primitive:
    """A slowly drifting, bobbing sphere in the background."""
    x0 = r.uniform(0.4, 1.0)
    motion = Chain((Travel((x0 - 0.3, -1.6, 7.0), (x0 + 0.3, -1.6, 7.0), ease=True),
                    Bob((0.0, -1.0, 0.0), 0.1, 1.0, r.uniform(0.0, 1.0)),
                    Swing(axis=(0.0, 0.0, 1.0), amplitude_deg=10.0)))
    tex = Shaded(Stripes(r.color(3), (0.95, 0.95, 0.95), 0.2, (0.0, 1.0, 0.0)))
    return Sphere(name="balloon", radius=0.35, texture=tex, motion=motion, density=4.0)


def scene_world(seed: int = 0) -> World:
    """A static-camera scene: ground, backdrop, props, a drifting balloon and a walking figure.

    World axes: y down; the reference camera is the identity (at the origin looking along
    ``+z``), fovy 60. The ground is the plane ``y = 1`` for ``z`` in ``[-0.5, 8]`` and ``|x| <= 22``;
    the backdrop is the plane ``z = 8`` for ``y`` in ``[-16, 1]``, ``|x| <= 22``, wide enough that
    cameras turned in place by +-30 deg azimuth / +-15 deg elevation still see mostly content.
    A figure (scale 0.9) walks across at ``z`` ~ 3.4-3.8 and passes behind a low step near
    ``x`` ~ 0.55 (occlusion).

    Args:
        seed: seed of the random choices (int).

    Returns:
        ``World`` with groups ``background`` (everything static or slowly moving) and
        ``foreground`` (the figure's parts).
    """
    r = _Rand(seed)
    scale, direction = 0.9, r.sign()
    feet = scale * 0.56  # body half-height (<= 0.25) + leg length (0.32), at most
    y0 = 1.0 - feet - 0.02
    root = Chain((Travel((-1.3 * direction, y0, 3.8), (1.3 * direction, y0, 3.4), ease=False),
                  Fixed(axis=(0.0, 1.0, 0.0), angle_deg=-35.0 * direction),
                  Bob((0.0, -1.0, 0.0), 0.02, 4.0, 0.0)))
    walker = articulated_object(seed + 7919, scale, root, prefix="walker_", group="foreground", density=100.0)
    parts = (*_static_scene(r), _balloon(r), *walker)
    return World("scene", parts, background=(0.70, 0.80, 0.95), reference_fovy_deg=60.0,
                 meta=(("seed", seed), ("direction", direction)))
