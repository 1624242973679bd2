# SPDX-License-Identifier: Apache-2.0
"""The 3D Gaussian set.

Public API:
    Gaussians                      means / quats / log_scales / logit_opacities / sh, with activated views
    Gaussians.from_colors          build from colours, scales and opacities in natural units
    GaussianBatch                  B sets of one size from one batched computation, fields kept stacked
    sphere_init                    CoCo4D / DreamGaussian init: points on a sphere surface
    from_depth                     back-project depth pixels (one Gaussian per pixel)
    quat_multiply / quat_to_rotmat / rotmat_to_quat   wxyz quaternion helpers

Design notes:
    Storage follows gsplat: ``means [N,3]``, raw ``quats [N,4]`` in wxyz (normalised on use),
    log-``scales [N,3]``, logit-``opacities [N]``, ``sh [N,K,3]`` with the DC term at ``K=0``.
    Activations are read only through properties (``scales``, ``opacities``, ``rotations``,
    ``colors``), so optimisers see unconstrained leaves. The class is a frozen dataclass; methods
    return new sets and never modify in place, which keeps autograd graphs honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import Tensor

from .sh import num_sh_bases, rgb_to_sh, sh_degree_from_bases, sh_to_rgb

__all__ = [
    "Gaussians",
    "GaussianBatch",
    "sphere_init",
    "from_depth",
    "quat_multiply",
    "quat_to_rotmat",
    "rotmat_to_quat",
]


@dataclass(frozen=True)
class Gaussians:
    """A set of ``N`` 3D Gaussians in gsplat's parameterisation.

    Args:
        means: ``[N,3]`` centres in world space.
        quats: ``[N,4]`` rotations, wxyz, not necessarily unit length.
        log_scales: ``[N,3]`` log of the standard deviations along the local axes.
        logit_opacities: ``[N]`` logit of the opacity.
        sh: ``[N,K,3]`` spherical-harmonic colour coefficients, ``K`` in {1, 4, 9, 16}.
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    logit_opacities: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -----------------------------------------------------------------------
    def validate(self, check_finite: bool = False) -> None:
        """Check shapes (always) and, with ``check_finite``, that no value is NaN/inf.

        Raises:
            ValueError: naming the field, the shape or value received and what was expected.
        """
        n = self.means.shape[0] if isinstance(self.means, Tensor) and self.means.dim() == 2 else None
        expect = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "logit_opacities": (n,),
        }
        for name, shape in expect.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or n is None or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"Gaussians: {name} must have shape {_fmt(shape)}, got {got}")
        sh = self.sh
        if not isinstance(sh, Tensor) or sh.dim() != 3 or sh.shape[0] != n or sh.shape[2] != 3:
            got = tuple(sh.shape) if isinstance(sh, Tensor) else type(sh).__name__
            raise ValueError(f"Gaussians: sh must have shape [N={n},K,3], got {got}")
        sh_degree_from_bases(sh.shape[1])
        if check_finite:
            for f in fields(self):
                value = getattr(self, f.name)
                if not torch.isfinite(value).all():
                    bad = int((~torch.isfinite(value)).sum())
                    raise ValueError(f"Gaussians: {f.name} holds {bad} NaN/inf values")

    # -- activated views ------------------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def scales(self) -> Tensor:
        """``[N,3]`` standard deviations (exp of ``log_scales``)."""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        """``[N]`` opacities in (0,1)."""
        return torch.sigmoid(self.logit_opacities)

    @property
    def rotations(self) -> Tensor:
        """``[N,4]`` unit quaternions (wxyz)."""
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def colors(self) -> Tensor:
        """``[N,3]`` view-independent colour from the DC term."""
        return sh_to_rgb(self.sh[:, 0, :])

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_bases(self.sh.shape[1])

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_colors(
        cls,
        means: Tensor,
        colors: Tensor,
        scales: Tensor | float = 0.01,
        opacities: Tensor | float = 0.5,
        quats: Tensor | None = None,
        sh_degree: int = 0,
    ) -> "Gaussians":
        """Build from natural units: colours in [0,1] ``[N,3]``, scales ``[N,3]``/``[N]``/scalar, opacities."""
        means = torch.as_tensor(means, dtype=torch.float32)
        n = means.shape[0] if means.dim() == 2 else -1
        if means.dim() != 2 or means.shape[1] != 3:
            raise ValueError(f"Gaussians.from_colors: means must be [N,3], got {tuple(means.shape)}")
        dev = means.device
        colors = torch.as_tensor(colors, dtype=torch.float32, device=dev)
        if colors.shape != (n, 3):
            raise ValueError(f"Gaussians.from_colors: colors must be [{n},3], got {tuple(colors.shape)}")
        scales = torch.as_tensor(scales, dtype=torch.float32, device=dev)
        scales = scales.reshape(-1, 1).expand(n, 3) if scales.numel() in (1, n) and scales.dim() < 2 else scales
        if scales.shape != (n, 3) or (scales <= 0).any():
            raise ValueError(f"Gaussians.from_colors: scales must be positive with shape [{n},3], [{n}] or scalar")
        opacities = torch.as_tensor(opacities, dtype=torch.float32, device=dev).reshape(-1).expand(n)
        if ((opacities <= 0) | (opacities >= 1)).any():
            raise ValueError("Gaussians.from_colors: opacities must lie strictly inside (0, 1)")
        if quats is None:
            quats = torch.zeros(n, 4, device=dev)
            quats[:, 0] = 1.0
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, device=dev)
        sh[:, 0] = rgb_to_sh(colors)
        return cls(means, torch.as_tensor(quats, dtype=torch.float32, device=dev), scales.log().contiguous(),
                   torch.logit(opacities).contiguous(), sh)

    @classmethod
    def empty(cls, sh_degree: int = 0, device: torch.device | str = "cpu") -> "Gaussians":
        k = num_sh_bases(sh_degree)
        z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        return cls(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, k, 3))

    # -- set operations -------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def map(self, fn) -> "Gaussians":
        """Apply ``fn`` to every tensor field."""
        return Gaussians(**{k: fn(v) for k, v in self.tensors().items()})

    def to(self, device: torch.device | str) -> "Gaussians":
        return self.map(lambda t: t.to(device))

    def detach(self) -> "Gaussians":
        return self.map(lambda t: t.detach())

    def clone(self) -> "Gaussians":
        return self.map(lambda t: t.clone())

    def requires_grad_(self, flag: bool = True) -> "Gaussians":
        for t in self.tensors().values():
            t.requires_grad_(flag)
        return self

    def subset(self, index: Tensor | slice) -> "Gaussians":
        """Select by boolean mask ``[N]``, index tensor or slice."""
        if isinstance(index, Tensor) and index.dtype == torch.bool and index.shape != (len(self),):
            raise ValueError(f"Gaussians.subset: mask must be [{len(self)}], got {tuple(index.shape)}")
        return self.map(lambda t: t[index])

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """Pad with zeros or truncate the SH coefficients to ``degree``."""
        k = num_sh_bases(degree)
        sh = self.sh[:, :k]
        if sh.shape[1] < k:
            sh = torch.cat([sh, sh.new_zeros(len(self), k - sh.shape[1], 3)], dim=1)
        return replace(self, sh=sh)

    @staticmethod
    def cat(parts: Sequence["Gaussians"]) -> "Gaussians":
        """Concatenate sets; SH degrees are raised to the highest among the parts."""
        if not parts:
            raise ValueError("Gaussians.cat: need at least one set")
        degree = max(p.sh_degree for p in parts)
        parts = [p.with_sh_degree(degree) for p in parts]
        names = [f.name for f in fields(Gaussians)]
        return Gaussians(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})

    def transform(self, rotation: Tensor | None = None, translation: Tensor | None = None,
                  scale: float = 1.0) -> "Gaussians":
        """Apply ``x -> scale * R x + t`` to the set; Gaussians rotate and scale with it.

        SH coefficients of degree > 0 are not rotated (their view-dependence stays in world axes).
        """
        if scale <= 0:
            raise ValueError(f"Gaussians.transform: scale must be positive, got {scale}")
        R = torch.eye(3, device=self.device) if rotation is None else torch.as_tensor(rotation, dtype=self.dtype,
                                                                                       device=self.device)
        if R.shape != (3, 3):
            raise ValueError(f"Gaussians.transform: rotation must be [3,3], got {tuple(R.shape)}")
        identity = torch.eye(3, dtype=R.dtype, device=self.device)
        if not torch.allclose(R @ R.T, identity, atol=1e-4) or torch.linalg.det(R) < 0:
            raise ValueError("Gaussians.transform: rotation must be a proper rotation matrix")
        t = torch.zeros(3, device=self.device) if translation is None else torch.as_tensor(
            translation, dtype=self.dtype, device=self.device).reshape(3)
        q = rotmat_to_quat(R)[None].expand(len(self), 4)
        return replace(
            self,
            means=scale * self.means @ R.T + t,
            quats=quat_multiply(q, self.quats),
            log_scales=self.log_scales + math.log(scale),
        )


class GaussianBatch(list):
    """``B`` Gaussian sets of one size made by one batched computation (a deformation at ``B`` times).

    It is the list of the ``B`` :class:`Gaussians` and also keeps every field as it was computed:
    stacked ``[B,N,...]`` or, for a field all sets share, the one ``[N,...]`` tensor. The list's sets
    are views of those tensors, so both feed one autograd graph. A consumer of the whole batch (the
    batched rasteriser) reads :meth:`stacked` instead of splitting and re-stacking: re-stacking ``B``
    slices costs a copy per field, and its backward pass rebuilds each field's gradient from ``B``
    slices (a zero-filled ``[B,N,...]`` tensor per slice, then ``B - 1`` additions). Treat it as
    read-only: the stacked fields do not follow changes to the list.

    Args:
        values: every field of :class:`Gaussians` by name, ``[B,N,...]`` or shared ``[N,...]``.
        batch: ``B``.
    """

    def __init__(self, values: dict[str, Tensor], batch: int) -> None:
        names = [f.name for f in fields(Gaussians)]
        if sorted(values) != sorted(names):
            raise ValueError(f"GaussianBatch: fields must be {names}, got {sorted(values)}")
        if batch < 1:
            raise ValueError(f"GaussianBatch: batch must be >= 1, got {batch}")
        n = values["means"].shape[-2]
        base_dims = {"means": 2, "quats": 2, "log_scales": 2, "logit_opacities": 1, "sh": 3}
        self.shared = frozenset(k for k, v in values.items() if v.dim() == base_dims[k])
        for k, v in values.items():
            if k not in self.shared and (v.dim() != base_dims[k] + 1 or v.shape[0] != batch or v.shape[1] != n):
                raise ValueError(f"GaussianBatch: {k} must be [N,...] or [B={batch},N={n},...], got {tuple(v.shape)}")
        self.fields = dict(values)
        super().__init__(Gaussians(**{k: (v if k in self.shared else v[i]) for k, v in values.items()})
                         for i in range(batch))

    def stacked(self, name: str, activation=None) -> Tensor:
        """Field ``name`` as ``[B,N,...]``, ``activation`` (e.g. ``torch.exp``) applied once, before a
        shared field is expanded."""
        value = self.fields[name]
        return self.broadcast(name, value if activation is None else activation(value))

    def broadcast(self, name: str, value: Tensor) -> Tensor:
        """``value``, computed row by row from field ``name``, as ``[B,N,...]``: expanded without a copy
        when the field is shared, else as it is."""
        return value.unsqueeze(0).expand(len(self), *value.shape) if name in self.shared else value

    def select(self, index: Tensor) -> "GaussianBatch":
        """The batch whose set ``i`` is this batch's set ``index[i]`` (repeats allowed): one gather per
        stacked field, shared fields stay shared. Gradients flow back to this batch's tensors."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"GaussianBatch.select: index must be a non-empty 1-D tensor, got {tuple(index.shape)}")
        if index.device.type == "cpu" and not bool(((index >= 0) & (index < len(self))).all()):
            raise ValueError(f"GaussianBatch.select: index {index.tolist()} out of range for {len(self)} sets")
        index = index.to(self.fields["means"].device, non_blocking=True)  # one copy, not waited for
        values = {k: v if k in self.shared else v[index] for k, v in self.fields.items()}
        return GaussianBatch(values, index.numel())


def _fmt(shape) -> str:
    return "[" + ",".join("N" if s is None else str(s) for s in shape) + "]"


# -- quaternions (wxyz) -------------------------------------------------------------------


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions ``[...,4]`` (apply ``b`` first, then ``a``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """``[...,4]`` wxyz (normalised here) -> ``[...,3,3]`` rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)


def rotmat_to_quat(R: Tensor) -> Tensor:
    """``[...,3,3]`` rotation matrices -> ``[...,4]`` unit wxyz quaternions with ``w >= 0``."""
    m = R.reshape(-1, 3, 3)
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Four candidate solutions; pick the numerically largest denominator per matrix.
    cands = torch.stack(
        [
            torch.stack([1 + trace, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
            torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                         m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
            torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                         1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
            torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                         1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
        ],
        dim=1,
    )  # [B,4,4]
    diag = torch.stack([1 + trace, 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                        1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = diag.argmax(dim=-1)
    q = cands[torch.arange(m.shape[0]), best]
    q = torch.nn.functional.normalize(q, dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(*R.shape[:-2], 4)


# -- initialisation -----------------------------------------------------------------------


def sphere_init(
    num_points: int = 5000,
    radius: float = 0.5,
    scale: float | None = None,
    opacity: float = 0.1,
    color: Sequence[float] = (0.5, 0.5, 0.5),
    center: Sequence[float] = (0.0, 0.0, 0.0),
    sh_degree: int = 0,
    generator: torch.Generator | None = None,
) -> Gaussians:
    """Gaussians uniformly on a sphere surface (CoCo4D §3.1 / App. A: 5000 points).

    Args:
        num_points: number of Gaussians.
        radius: sphere radius in world units.
        scale: isotropic std; defaults to the mean spacing of the points.
        opacity: initial opacity in (0,1).
        color: initial colour in [0,1].
        center: sphere centre.
        sh_degree: SH degree of the returned set (higher bands start at zero).
        generator: for reproducible sampling.
    """
    if num_points <= 0:
        raise ValueError(f"sphere_init: num_points must be positive, got {num_points}")
    if radius <= 0:
        raise ValueError(f"sphere_init: radius must be positive, got {radius}")
    dirs = torch.nn.functional.normalize(torch.randn(num_points, 3, generator=generator), dim=-1)
    means = dirs * radius + torch.tensor(center, dtype=torch.float32)
    if scale is None:
        scale = radius * math.sqrt(4.0 * math.pi / num_points) * 0.5
    colors = torch.tensor(color, dtype=torch.float32).expand(num_points, 3)
    return Gaussians.from_colors(means, colors, float(scale), opacity, sh_degree=sh_degree)


def from_depth(
    depth: Tensor,
    K: Tensor,
    image: Tensor,
    camtoworld: Tensor | None = None,
    mask: Tensor | None = None,
    opacity: float = 0.9,
    scale_factor: float = 1.0,
    sh_degree: int = 0,
) -> Gaussians:
    """One Gaussian per valid pixel, back-projected through a pinhole camera.

    Each Gaussian sits on the pixel centre's ray at the pixel's depth (z along the optical axis)
    with an isotropic std equal to ``scale_factor`` times the pixel footprint ``z / f``, so the
    splats tile the image without gaps.

    Args:
        depth: ``[H,W]`` z-depth.
        K: ``[3,3]`` pixel intrinsics.
        image: ``[H,W,3]`` colours in [0,1].
        camtoworld: ``[4,4]`` camera-to-world matrix (identity if omitted).
        mask: ``[H,W]`` bool/0..1; pixels with mask <= 0.5 are skipped.
        opacity: initial opacity.
        scale_factor: footprint multiplier.
        sh_degree: SH degree of the result.

    Raises:
        ValueError: on shape mismatches, non-finite or non-positive depth in the selected pixels.
    """
    if depth.dim() != 2 or depth.numel() == 0:
        raise ValueError(f"from_depth: depth must be a non-empty [H,W] tensor, got {tuple(depth.shape)}")
    h, w = depth.shape
    if image.shape != (h, w, 3):
        raise ValueError(f"from_depth: image must be [{h},{w},3] to match depth, got {tuple(image.shape)}")
    if K.shape != (3, 3):
        raise ValueError(f"from_depth: K must be [3,3], got {tuple(K.shape)}")
    valid = torch.ones(h, w, dtype=torch.bool, device=depth.device)
    if mask is not None:
        if mask.shape != (h, w):
            raise ValueError(f"from_depth: mask must be [{h},{w}], got {tuple(mask.shape)}")
        valid = mask > 0.5
    d = depth[valid]
    if not torch.isfinite(d).all() or (d <= 0).any():
        raise ValueError("from_depth: depth must be finite and positive on every selected pixel")
    ii, jj = torch.nonzero(valid, as_tuple=True)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x = (jj.to(d.dtype) + 0.5 - cx) / fx * d
    y = (ii.to(d.dtype) + 0.5 - cy) / fy * d
    pts = torch.stack([x, y, d], dim=-1)
    if camtoworld is not None:
        if camtoworld.shape != (4, 4):
            raise ValueError(f"from_depth: camtoworld must be [4,4], got {tuple(camtoworld.shape)}")
        pts = pts @ camtoworld[:3, :3].T + camtoworld[:3, 3]
    footprint = (d / torch.sqrt(fx * fy)) * scale_factor
    return Gaussians.from_colors(pts, image[valid].clamp(0, 1), footprint.clamp_min(1e-8), opacity,
                                 sh_degree=sh_degree)
