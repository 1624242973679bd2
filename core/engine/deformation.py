# SPDX-License-Identifier: Apache-2.0
"""HexPlane / K-planes deformation field for 4D Gaussians.

Public API:
    HexPlaneConfig          frozen settings (4DGS / DreamGaussian4D defaults); ``to_dict``/``from_dict``
    bounds_from_means       axis-aligned box around canonical centres, with a margin
    HexPlaneField           six feature planes (xy, xz, yz, xt, yt, zt) per resolution -> features
    Deformation             field + MLP + heads: ``forward(gaussians, t)``, ``forward_batch``, ``deltas``
    DeformationMotion       Motion kind "hexplane": lets a Scene4D hold, render, save and load a field
    param_groups            Adam groups: planes at ``grid_lr``, MLPs at ``deformation_lr``
    COCO4D_FOREGROUND_LR    (deformation_lr, grid_lr) of CoCo4D Tab. 3 = (0.00064, 0.0064)
    COCO4D_BACKGROUND_LR    (deformation_lr, grid_lr) of CoCo4D Tab. 4 = (0.0064, 0.064)

Design notes:
    The representation is the deformation field of 4D Gaussian Splatting (Wu et al., CVPR 2024),
    the one DreamGaussian4D and CoCo4D (§3.1, "deformation network [28]", App. A) animate frozen
    canonical Gaussians with. A point ``(x, y, z, t)`` is normalised to ``[-1, 1]^4`` (space by the
    config's bounds, time by ``2t - 1``); for every resolution the six planes are sampled
    bilinearly (``grid_sample``, ``align_corners=True``, border padding) and multiplied
    element-wise (the K-planes Hadamard product, Fridovich-Keil et al. 2023); the per-resolution
    products are concatenated. Spatial planes start uniform in (0.1, 0.5) and time planes at 1,
    so at initialisation the feature is independent of ``t`` (K-planes). A small ReLU MLP maps the
    feature to a hidden code and one head per deformed attribute maps the code to an offset:
    ``μ' = μ + Δμ``, ``log s' = log s + Δs``, ``q' = q + Δq`` (raw quaternion sum as in 4DGS,
    normalised by whoever activates it), optionally ``logit o' = logit o + Δo`` and
    ``sh' = sh + Δsh``. The last layer of every head is zero, so a fresh module is the exact
    identity. Plane parameter ``<ab>`` has shape ``[1, F, R_a, R_b]``; time is always the last axis.

    ``forward_batch`` deforms a set at ``B`` times in one pass: the three spatial planes are
    sampled once for the ``N`` centres and only the three space-time planes at ``B*N`` points.
    A ``static_mask [N]`` keeps chosen Gaussians (a frozen background) bit-exactly canonical and
    spends no field evaluation on them. All randomness comes from an optional ``torch.Generator``.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gaussians import GaussianBatch, Gaussians
from .scene import Motion, register_motion
from .sh import num_sh_bases

__all__ = [
    "HexPlaneConfig",
    "bounds_from_means",
    "time_samples_for",
    "HexPlaneField",
    "Deformation",
    "DeformationMotion",
    "param_groups",
    "PLANES",
    "SPATIAL_PLANES",
    "TIME_PLANES",
    "COCO4D_FOREGROUND_LR",
    "COCO4D_BACKGROUND_LR",
]

log = logging.getLogger(__name__)

#: Plane name -> (first axis, second axis); axes 0,1,2 = x,y,z and 3 = t.
PLANES: dict[str, tuple[int, int]] = {"xy": (0, 1), "xz": (0, 2), "yz": (1, 2), "xt": (0, 3), "yt": (1, 3),
                                      "zt": (2, 3)}
SPATIAL_PLANES = ("xy", "xz", "yz")
TIME_PLANES = ("xt", "yt", "zt")
COCO4D_FOREGROUND_LR = (0.00064, 0.0064)
COCO4D_BACKGROUND_LR = (0.0064, 0.064)
_SPATIAL_INIT = (0.1, 0.5)
# First and second axis of xy, xz, yz (rows of ``p.T`` gathered for one batched sample).
_SPATIAL_AXES = ([0, 0, 1], [1, 2, 2])
_TIME_TOL = 1e-6


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class HexPlaneConfig:
    """Settings of a HexPlane deformation field (defaults: 4DGS / DreamGaussian4D).

    Args:
        bounds: ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` box mapped to ``[-1, 1]^3``; ``None``
            means "derive from the canonical Gaussians" (see :func:`bounds_from_means`) when a
            :class:`Deformation` is built.
        bounds_margin: margin added on every side when bounds are derived, as a fraction of the
            largest extent of the centres' bounding box.
        feature_dim: channels ``F`` per plane (4DGS ``output_coordinate_dim`` = 32).
        base_resolution: spatial plane resolution at multiplier 1 (64).
        multires: spatial resolution multipliers (4DGS ``multires`` = (1, 2): 64 and 128).
        time_resolution: samples along time (4DGS on D-NeRF: 25); fits that adapt it to the clip use
            the frame count, at most this (:func:`time_samples_for`).
        width: hidden width of the MLPs (4DGS ``net_width`` = 64).
        depth: linear layers of the shared feature net (4DGS ``defor_depth`` = 1).
        deform_position / deform_scale / deform_rotation: enable the Δμ / Δs / Δq heads.
        deform_opacity: enable a Δ logit-opacity head (off, as in DG4D).
        deform_sh: enable a ΔSH head over ``num_sh_bases(sh_degree)`` coefficients (off).
        sh_degree: SH degree the ΔSH head is built for (only used with ``deform_sh``).
    """

    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    bounds_margin: float = 0.1
    feature_dim: int = 32
    base_resolution: int = 64
    multires: tuple[int, ...] = (1, 2)
    time_resolution: int = 25
    width: int = 64
    depth: int = 1
    deform_position: bool = True
    deform_scale: bool = True
    deform_rotation: bool = True
    deform_opacity: bool = False
    deform_sh: bool = False
    sh_degree: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"HexPlaneConfig: {name} must be {expected}, got {getattr(self, name)!r}")

        for name, low in (("feature_dim", 1), ("base_resolution", 2), ("time_resolution", 2), ("width", 1),
                          ("depth", 1)):
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                raise bad(name, f"an integer >= {low}")
            object.__setattr__(self, name, int(getattr(self, name)))
        mr = self.multires
        if isinstance(mr, (list, tuple)) and mr and all(_is_int(m) and m >= 1 for m in mr):
            object.__setattr__(self, "multires", tuple(int(m) for m in mr))
        else:
            raise bad("multires", "a non-empty sequence of integers >= 1")
        if not isinstance(self.bounds_margin, numbers.Real) or isinstance(self.bounds_margin, bool) \
                or not math.isfinite(self.bounds_margin) or self.bounds_margin < 0:
            raise bad("bounds_margin", "a finite number >= 0")
        for name in ("deform_position", "deform_scale", "deform_rotation", "deform_opacity", "deform_sh"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        if not _is_int(self.sh_degree) or not 0 <= self.sh_degree <= 3:
            raise bad("sh_degree", "an integer in 0..3")
        if not any(getattr(self, n) for n in ("deform_position", "deform_scale", "deform_rotation",
                                               "deform_opacity", "deform_sh")):
            raise ValueError("HexPlaneConfig: at least one deform_* head must be enabled")
        if self.bounds is not None:
            try:
                lo, hi = (tuple(float(v) for v in corner) for corner in self.bounds)
            except (TypeError, ValueError) as exc:
                raise bad("bounds", "((xmin, ymin, zmin), (xmax, ymax, zmax))") from exc
            if len(lo) != 3 or len(hi) != 3 or not all(math.isfinite(v) for v in lo + hi) \
                    or not all(a < b for a, b in zip(lo, hi)):
                raise bad("bounds", "two finite corners with min < max on every axis")
            object.__setattr__(self, "bounds", (lo, hi))

    @property
    def spatial_resolutions(self) -> tuple[int, ...]:
        """Spatial plane resolutions, one per multires level (64, 128 by default)."""
        return tuple(self.base_resolution * m for m in self.multires)

    @property
    def feature_out_dim(self) -> int:
        """Length of the field's output feature (``feature_dim * len(multires)``)."""
        return self.feature_dim * len(self.multires)

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["bounds"] = None if self.bounds is None else [list(c) for c in self.bounds]
        d["multires"] = list(self.multires)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HexPlaneConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"HexPlaneConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"HexPlaneConfig.from_dict: unknown keys {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        if d.get("bounds") is not None:
            d["bounds"] = tuple(tuple(c) for c in d["bounds"])
        if "multires" in d and isinstance(d["multires"], list):
            d["multires"] = tuple(d["multires"])
        return cls(**d)


def time_samples_for(frames: int, cap: int) -> int:
    """Time samples of a field fitted to ``frames`` distinct frame times: the frame count, at most ``cap``.

    Each frame of a monocular clip is seen from one camera, so a field with a sample per frame can
    fit every frame on its own and interpolate poorly between them; 4DGS samples D-NeRF scenes (50
    to 200 such frames) 25 times. Short clips keep a sample per frame. On the 100-frame posed-frames
    bench (H100, one coarse fit) the fine stage scored 29.1 dB at 64 samples, 31.4 at 32, 33.0 at 25
    and 32.3 at 16 on held-out views at unseen times.
    """
    if frames < 1 or cap < 2:
        raise ValueError(f"time_samples_for: need frames >= 1 and cap >= 2, got {frames} and {cap}")
    return int(min(max(frames, 2), cap))


def bounds_from_means(means: Tensor, margin: float = 0.1) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bounding box of ``means [N,3]`` grown by ``margin × (largest extent)`` on every side.

    The same absolute padding is used on all axes so a flat set (e.g. a depth-lifted wall) still
    gets a box of positive width; a single point (or an empty set) gets a unit-sized box.

    Returns:
        ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` as Python floats.
    """
    if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"bounds_from_means: means must be [N,3], got {_shape(means)}")
    if means.shape[0] == 0:
        return (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)
    m = means.detach().double()
    if not torch.isfinite(m).all():
        raise ValueError("bounds_from_means: means holds NaN/inf values")
    lo, hi = m.min(0).values, m.max(0).values
    extent = float((hi - lo).max())
    pad = margin * extent if extent > 0 else 0.0
    pad = max(pad, 1e-3 * extent, 0.5 if extent == 0 else 0.0)
    return tuple((lo - pad).tolist()), tuple((hi + pad).tolist())


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _sample_planes(planes: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Bilinear samples of ``K`` planes ``[K,F,R_a,R_b]``, plane ``k`` at ``(a[k], b[k])``.

    ``a, b``: ``[K,M]`` coordinates in ``[-1,1]``. Returns ``[K,M,F]``. One ``grid_sample`` serves
    all ``K`` planes (planes of one shape are sampled together: fewer kernels per step).
    """
    # grid_sample's x indexes the last (width) axis and y the height axis.
    grid = torch.stack([b, a], dim=-1).unsqueeze(1)  # [K,1,M,2]
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0, :].transpose(1, 2)


class HexPlaneField(nn.Module):
    """Multi-resolution HexPlane feature field (Cao & Johnson 2023; K-planes; 4DGS §3.2).

    Args:
        config: field settings; ``config.bounds`` must be set (a :class:`Deformation` resolves it).
        generator: RNG for the spatial planes' uniform(0.1, 0.5) initialisation.

    Attributes:
        grids: one ``nn.ParameterDict`` per resolution with parameters ``xy, xz, yz, xt, yt, zt``,
            each ``[1, F, R_a, R_b]`` (``R`` = spatial resolution or ``time_resolution``).
    """

    def __init__(self, config: HexPlaneConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if config.bounds is None:
            raise ValueError("HexPlaneField: config.bounds must be set (use bounds_from_means)")
        self.config = config
        lo, hi = (torch.tensor(c, dtype=torch.float32) for c in config.bounds)
        self.register_buffer("_lo", lo, persistent=False)
        self.register_buffer("_span", hi - lo, persistent=False)
        self.grids = nn.ModuleList()
        for res in config.spatial_resolutions:
            sizes = (res, res, res, config.time_resolution)
            planes = nn.ParameterDict()
            for name, (i, j) in PLANES.items():
                shape = (1, config.feature_dim, sizes[i], sizes[j])
                if name in SPATIAL_PLANES:
                    lo_v, hi_v = _SPATIAL_INIT
                    value = torch.rand(shape, generator=generator) * (hi_v - lo_v) + lo_v
                else:
                    value = torch.ones(shape)
                planes[name] = nn.Parameter(value)
            self.grids.append(planes)

    # -- plane access ---------------------------------------------------------------------
    def planes(self, which: str = "all") -> Iterator[tuple[str, Tensor]]:
        """Yield ``(name, plane)`` over all resolutions; ``which`` in {"all", "spatial", "time"}."""
        names = {"all": tuple(PLANES), "spatial": SPATIAL_PLANES, "time": TIME_PLANES}.get(which)
        if names is None:
            raise ValueError(f"HexPlaneField.planes: which must be 'all', 'spatial' or 'time', got {which!r}")
        for grid in self.grids:
            for name in names:
                yield name, grid[name]

    # -- evaluation -----------------------------------------------------------------------
    def normalize(self, xyz: Tensor) -> Tensor:
        """World ``[N,3]`` -> ``[-1,1]^3`` by the bounds (outside points are clamped by border padding)."""
        lo, span = self._lo.to(xyz.dtype), self._span.to(xyz.dtype)
        return (xyz - lo) / span * 2.0 - 1.0

    def _spatial(self, grid: nn.ParameterDict, p: Tensor) -> Tensor:
        """Product of the xy, xz and yz samples at normalised points ``p [M,3]`` -> ``[M,F]``."""
        planes = torch.cat([grid[name] for name in SPATIAL_PLANES])
        # Stacked column views, not list indexing: a list index is a host tensor copied to the device
        # on every call, which CUDA-graph capture forbids.
        first = torch.stack([p[:, i] for i in _SPATIAL_AXES[0]])
        second = torch.stack([p[:, i] for i in _SPATIAL_AXES[1]])
        s = _sample_planes(planes, first, second)
        return s[0] * s[1] * s[2]

    def _temporal(self, grid: nn.ParameterDict, p: Tensor, tn: Tensor) -> Tensor:
        """Product of the xt, yt and zt samples at ``p [M,3]`` and normalised times ``tn [M]`` -> ``[M,F]``."""
        planes = torch.cat([grid[name] for name in TIME_PLANES])
        s = _sample_planes(planes, p.T, tn.unsqueeze(0).expand(3, -1))
        return s[0] * s[1] * s[2]

    def forward(self, xyz: Tensor, t: Tensor | float) -> Tensor:
        """Features at per-point times.

        Args:
            xyz: ``[N,3]`` world positions.
            t: scalar or ``[N]`` times in ``[0,1]`` (not validated here; :class:`Deformation` does).

        Returns:
            ``[N, F * len(multires)]`` features.
        """
        dtype = self._lo.dtype
        p = self.normalize(xyz.to(dtype))
        tn = torch.as_tensor(t, dtype=dtype, device=p.device).reshape(-1) * 2.0 - 1.0
        tn = tn.expand(p.shape[0]) if tn.numel() == 1 else tn
        feats = [self._spatial(g, p) * self._temporal(g, p, tn) for g in self.grids]
        return torch.cat(feats, dim=-1)

    def forward_batch(self, xyz: Tensor, times: Tensor) -> Tensor:
        """Features of every point at every time, spatial planes sampled once.

        Args:
            xyz: ``[N,3]`` world positions.
            times: ``[B]`` times in ``[0,1]``.

        Returns:
            ``[B, N, F * len(multires)]`` features.
        """
        dtype = self._lo.dtype
        p = self.normalize(xyz.to(dtype))
        n, b = p.shape[0], times.shape[0]
        tn = times.to(dtype=dtype, device=p.device).repeat_interleave(n) * 2.0 - 1.0  # [B*N]
        pb = p.repeat(b, 1)  # [B*N,3]
        feats = []
        for g in self.grids:
            spatial = self._spatial(g, p)  # [N,F]
            temporal = self._temporal(g, pb, tn).reshape(b, n, -1)  # [B,N,F]
            feats.append(spatial.unsqueeze(0) * temporal)
        return torch.cat(feats, dim=-1)


class StableLinear(nn.Linear):
    """``nn.Linear`` whose CPU products run in float64 and round back to the input's dtype.

    The weight gradient sums over every Gaussian (``x^T g``); the CPU BLAS splits that sum by thread,
    so in float32 the same fit gave last-bit different weights with 1 or 2 torch threads, and a fit
    that densifies or lifts by thresholds then ended with a different number of Gaussians. Summed in
    float64 the split changes only bits that rounding to float32 drops. Same parameters and state
    dict as ``nn.Linear``; on other devices it is ``nn.Linear``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype == torch.float64:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.double()
        return F.linear(x.double(), self.weight.double(), bias).to(x.dtype)


def _linear(fan_in: int, fan_out: int, generator: torch.Generator | None, zero: bool = False) -> nn.Linear:
    """:class:`StableLinear` initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from ``generator`` (or zeros)."""
    layer = torch.nn.utils.skip_init(StableLinear, fan_in, fan_out)  # no draw from the global RNG
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
            layer.bias.zero_()
        else:
            bound = 1.0 / math.sqrt(fan_in)
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
            layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
    return layer


class Deformation(nn.Module):
    """4DGS deformation network: HexPlane field, shared feature MLP and per-attribute heads.

    Args:
        config: settings; if ``config.bounds`` is None they are taken from ``canonical``
            (:func:`bounds_from_means` with ``config.bounds_margin``) and stored back in
            ``self.config`` so that saving reproduces the module exactly.
        canonical: the canonical :class:`Gaussians` or their means ``[N,3]`` (only for bounds).
        generator: RNG for all random initialisation (planes and hidden layers).

    Architecture (4DGS, Wu et al. 2024, §3.2): ``h = MLP_feat(field(μ, t))`` with ``depth``
    linear layers (ReLU between), and per head ``ReLU → Linear(W,W) → ReLU → Linear(W,d)``
    with the last layer zero so that ``Δ = 0`` at initialisation.
    """

    HEADS = ("position", "scale", "rotation", "opacity", "sh")

    def __init__(self, config: HexPlaneConfig | None = None, canonical: Gaussians | Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        config = HexPlaneConfig() if config is None else config
        if not isinstance(config, HexPlaneConfig):
            raise ValueError(f"Deformation: config must be a HexPlaneConfig, got {type(config).__name__}")
        if config.bounds is None:
            if canonical is None:
                log.warning("Deformation: no bounds and no canonical Gaussians given; using [-1,1]^3")
                config = replace(config, bounds=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)))
            else:
                means = canonical.means if isinstance(canonical, Gaussians) else canonical
                config = replace(config, bounds=bounds_from_means(means, config.bounds_margin))
        self.config = config
        self.field = HexPlaneField(config, generator)
        w = config.width
        layers: list[nn.Module] = [_linear(config.feature_out_dim, w, generator)]
        for _ in range(config.depth - 1):
            layers += [nn.ReLU(), _linear(w, w, generator)]
        self.feature_net = nn.Sequential(*layers)
        self.heads = nn.ModuleDict()
        for name, dim in self.head_dims().items():
            self.heads[name] = nn.Sequential(nn.ReLU(), _linear(w, w, generator), nn.ReLU(),
                                             _linear(w, dim, generator, zero=True))

    def head_dims(self) -> dict[str, int]:
        """Enabled heads and their output sizes."""
        c = self.config
        dims = {"position": 3, "scale": 3, "rotation": 4, "opacity": 1, "sh": 3 * num_sh_bases(c.sh_degree)}
        enabled = {"position": c.deform_position, "scale": c.deform_scale, "rotation": c.deform_rotation,
                   "opacity": c.deform_opacity, "sh": c.deform_sh}
        return {k: v for k, v in dims.items() if enabled[k]}

    @property
    def dtype(self) -> torch.dtype:
        return self.field._lo.dtype

    @property
    def device(self) -> torch.device:
        return self.field._lo.device

    # -- validation -----------------------------------------------------------------------
    def _check_gaussians(self, gaussians: Any, who: str) -> Gaussians:
        if not isinstance(gaussians, Gaussians):
            raise ValueError(f"{who}: gaussians must be Gaussians, got {type(gaussians).__name__}")
        if not torch.isfinite(gaussians.means).all():
            raise ValueError(f"{who}: gaussians.means holds NaN/inf values")
        if self.config.deform_sh and gaussians.sh.shape[1] != num_sh_bases(self.config.sh_degree):
            raise ValueError(f"{who}: the ΔSH head was built for sh_degree {self.config.sh_degree} "
                             f"({num_sh_bases(self.config.sh_degree)} bases), gaussians have "
                             f"{gaussians.sh.shape[1]} bases")
        return gaussians

    @staticmethod
    def _check_static_mask(mask: Tensor | None, n: int, who: str) -> Tensor | None:
        if mask is None:
            return None
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
            got = f"{_shape(mask)} {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"{who}: static_mask must be a bool tensor [{n}], got {got}")
        return mask

    # -- evaluation -----------------------------------------------------------------------
    def _heads(self, feats: Tensor) -> dict[str, Tensor]:
        h = self.feature_net(feats)
        return {name: head(h) for name, head in self.heads.items()}

    def deltas(self, means: Tensor, t: float | Tensor) -> dict[str, Tensor]:
        """Offsets at per-point or shared time.

        Args:
            means: ``[N,3]`` canonical centres.
            t: float, 0-dim tensor or ``[N]`` tensor of times in ``[0,1]``.

        Returns:
            ``{head: [N, d]}`` for the enabled heads (``position`` 3, ``scale`` 3, ``rotation`` 4,
            ``opacity`` 1, ``sh`` 3K), in the module's dtype.
        """
        means = _check_means(means, "Deformation.deltas")
        t = _check_times(t, "Deformation.deltas", "t", allow_per_point=means.shape[0])
        return self._heads(self.field(means, t))

    def deltas_batch(self, means: Tensor, times: Tensor | Sequence[float]) -> dict[str, Tensor]:
        """Offsets of every centre at each of ``B`` times in one pass: ``{head: [B, N, d]}``."""
        means = _check_means(means, "Deformation.deltas_batch")
        times = _check_times(times, "Deformation.deltas_batch", "times", batch=True)
        return self._heads(self.field.forward_batch(means, times.to(self.device)))

    def forward(self, gaussians: Gaussians, t: float | Tensor, static_mask: Tensor | None = None) -> Gaussians:
        """Deform ``gaussians`` to time ``t``.

        Args:
            gaussians: canonical set of ``N``.
            t: float, 0-dim tensor or ``[N]`` tensor of times in ``[0,1]``.
            static_mask: optional bool ``[N]``; True entries stay exactly canonical.

        Returns:
            Deformed :class:`Gaussians` (``means + Δμ``, ``log_scales + Δs``, ``quats + Δq`` raw;
            opacities / SH changed only when their heads are enabled).
        """
        g = self._check_gaussians(gaussians, "Deformation.forward")
        t = _check_times(t, "Deformation.forward", "t", allow_per_point=len(g))
        mask = self._check_static_mask(static_mask, len(g), "Deformation.forward")
        idx = None if mask is None else torch.nonzero(~mask.to(g.device)).squeeze(1)
        means = g.means if idx is None else g.means[idx]
        if isinstance(t, Tensor) and t.dim() == 1 and idx is not None:
            t = t[idx.to(t.device)]
        d = self._heads(self.field(means, t)) if means.shape[0] else {}
        return _apply_deltas(g, d, idx, batch=None)

    def forward_batch(self, gaussians: Gaussians, times: Tensor | Sequence[float],
                      static_mask: Tensor | None = None, check_values: bool = True,
                      deltas: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None) -> GaussianBatch:
        """Deform ``gaussians`` to each of ``B`` times with one pass over ``B*N`` points.

        Args:
            gaussians: canonical set of ``N``.
            times: ``[B]`` times in ``[0,1]`` (tensor or sequence of floats).
            static_mask: optional bool ``[N]``; True entries stay exactly canonical.
            check_values: read positions and times back to refuse NaN/inf or times outside
                ``[0,1]`` (a wait for the device); a fit loop whose times come from checked frames
                turns it off (shapes are checked either way).
            deltas: computes the heads' ``{head: [B,N,d]}`` from ``(means, times)`` in place of this
                module's own pass, e.g. its CUDA-graphed copy (``graphed_deformation``); not with
                ``static_mask``.

        Returns:
            the ``B`` deformed sets as a :class:`GaussianBatch`: their tensors are views of the
            stacked ``[B,N,...]`` results, and unchanged fields are shared with ``gaussians``.
        """
        if check_values or not isinstance(times, Tensor) or times.dim() != 1:
            g = self._check_gaussians(gaussians, "Deformation.forward_batch")
            times = _check_times(times, "Deformation.forward_batch", "times", batch=True)
        else:
            g = gaussians
        mask = self._check_static_mask(static_mask, len(g), "Deformation.forward_batch")
        if deltas is not None:
            if mask is not None:
                raise ValueError("Deformation.forward_batch: deltas replaces the whole pass; it takes no static_mask")
            return _apply_deltas(g, deltas(g.means, times.to(self.device)), None, batch=times.shape[0])
        idx = None if mask is None else torch.nonzero(~mask.to(g.device)).squeeze(1)
        means = g.means if idx is None else g.means[idx]
        d = self._heads(self.field.forward_batch(means, times.to(self.device))) if means.shape[0] else {}
        return _apply_deltas(g, d, idx, batch=times.shape[0])

    def extra_repr(self) -> str:
        c = self.config
        return (f"bounds={c.bounds}, F={c.feature_dim}, res={c.spatial_resolutions}x{c.time_resolution}, "
                f"width={c.width}, depth={c.depth}, heads={list(self.head_dims())}")


def _check_means(means: Any, who: str) -> Tensor:
    if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[1] != 3 or not means.is_floating_point():
        raise ValueError(f"{who}: means must be a float tensor [N,3], got {_shape(means)}")
    if not torch.isfinite(means).all():
        raise ValueError(f"{who}: means holds NaN/inf values")
    return means


def _check_times(t: Any, who: str, name: str, allow_per_point: int | None = None,
                 batch: bool = False) -> Tensor | float:
    """Validate times in ``[0,1]`` (1e-6 slack, then clamped).

    ``batch``: ``t`` is ``[B]`` (a sequence or a 1-D tensor, B >= 1), returned as a tensor.
    Otherwise ``t`` is a real, a one-element tensor, or a ``[allow_per_point]`` tensor.
    """
    if batch:
        if not isinstance(t, Tensor):
            try:
                t = torch.tensor([float(v) for v in t], dtype=torch.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{who}: {name} must be a 1-D tensor or sequence of floats, got "
                                 f"{type(t).__name__}") from exc
        if t.dim() != 1 or t.shape[0] < 1:
            raise ValueError(f"{who}: {name} must be a non-empty 1-D tensor [B], got {tuple(t.shape)}")
    elif isinstance(t, numbers.Real) and not isinstance(t, bool):
        value = float(t)
        if not (math.isfinite(value) and -_TIME_TOL <= value <= 1.0 + _TIME_TOL):
            raise ValueError(f"{who}: {name} must lie in [0, 1], got {value}")
        return min(max(value, 0.0), 1.0)
    elif not isinstance(t, Tensor):
        raise ValueError(f"{who}: {name} must be a float or a tensor, got {type(t).__name__}")
    elif t.numel() == 1:
        t = t.reshape(())
    elif t.dim() != 1 or t.shape[0] != allow_per_point:
        raise ValueError(f"{who}: {name} must be a scalar or a tensor [N={allow_per_point}], got "
                         f"{tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    td = t.detach()
    if not torch.isfinite(td).all():
        raise ValueError(f"{who}: {name} holds NaN/inf values")
    if (td < -_TIME_TOL).any() or (td > 1.0 + _TIME_TOL).any():
        raise ValueError(f"{who}: {name} must lie in [0, 1], got values in [{float(td.min())}, {float(td.max())}]")
    return t.clamp(0.0, 1.0)


def _apply_deltas(g: Gaussians, d: dict[str, Tensor], idx: Tensor | None,
                  batch: int | None) -> Gaussians | GaussianBatch:
    """Add head outputs ``d`` (``[M,·]`` or ``[B,M,·]``) to the rows ``idx`` (all if None) of ``g``.

    Fields without a head are passed through as the very same tensors.
    """
    order = ("position", "rotation", "scale", "opacity", "sh")  # Gaussians' field order
    base = dict(zip(order, (g.means, g.quats, g.log_scales, g.logit_opacities, g.sh)))
    out: dict[str, Tensor] = {}
    for name in order:
        if name not in d:
            continue
        value = base[name]
        delta = d[name].to(value.dtype)
        shape = value.shape[1:]
        delta = delta.reshape(*delta.shape[:-1], *shape) if shape else delta.squeeze(-1)
        if batch is None:
            out[name] = value + delta if idx is None else value.index_add(0, idx, delta)
        else:
            stacked = value.unsqueeze(0).expand(batch, *value.shape)
            out[name] = stacked + delta if idx is None else stacked.index_add(1, idx, delta)
    if batch is None:
        return Gaussians(*(out.get(k, base[k]) for k in order))
    names = ("means", "quats", "log_scales", "logit_opacities", "sh")
    return GaussianBatch({f: out.get(k, base[k]) for f, k in zip(names, order)}, batch)


@register_motion
class DeformationMotion(Motion):
    """A :class:`Deformation` as a scene motion (kind ``"hexplane"``).

    Args:
        deformation: the field (its parameters may require grad; ``apply`` keeps the graph).
        static_mask: optional bool ``[N]`` of Gaussians that never move; fixes ``N``.

    Persistence: ``state_dict`` is the module's tensors (plus ``static_mask``), ``config`` is the
    :class:`HexPlaneConfig` as JSON and the dtype; :meth:`from_state` rebuilds the module exactly.
    """

    kind = "hexplane"

    def __init__(self, deformation: Deformation, static_mask: Tensor | None = None) -> None:
        if not isinstance(deformation, Deformation):
            raise ValueError(f"DeformationMotion: deformation must be a Deformation, got "
                             f"{type(deformation).__name__}")
        if static_mask is not None and (not isinstance(static_mask, Tensor) or static_mask.dtype != torch.bool
                                        or static_mask.dim() != 1):
            raise ValueError(f"DeformationMotion: static_mask must be a 1-D bool tensor, got {_shape(static_mask)}")
        self.deformation = deformation
        self.static_mask = static_mask

    def check_compatible(self, num_gaussians: int) -> None:
        if self.static_mask is not None and self.static_mask.shape[0] != num_gaussians:
            raise ValueError(f"DeformationMotion: static_mask covers {self.static_mask.shape[0]} Gaussians, "
                             f"the part has {num_gaussians}")

    def apply(self, gaussians: Gaussians, t: float | Tensor) -> Gaussians:
        """Gaussians at time ``t`` (float or 0-dim tensor in ``[0,1]``); works with and without grad."""
        if isinstance(t, Tensor) and t.numel() != 1:
            raise ValueError(f"DeformationMotion.apply: t must be a scalar, got a tensor of shape {tuple(t.shape)}")
        self.check_compatible(len(gaussians))
        return self.deformation(gaussians, t, self.static_mask)

    def apply_batch(self, gaussians: Gaussians, times: Tensor | Sequence[float]) -> GaussianBatch:
        """Gaussians at each of ``times [B]`` in one pass (see :meth:`Deformation.forward_batch`)."""
        self.check_compatible(len(gaussians))
        return self.deformation.forward_batch(gaussians, times, self.static_mask)

    def state_dict(self) -> dict[str, Tensor]:
        tensors = dict(self.deformation.state_dict())
        if self.static_mask is not None:
            tensors["static_mask"] = self.static_mask
        return tensors

    def config(self) -> dict:
        dtype = str(self.deformation.dtype).replace("torch.", "")
        return {"hexplane": self.deformation.config.to_dict(), "dtype": dtype,
                "has_static_mask": self.static_mask is not None}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, Tensor]) -> "DeformationMotion":
        if not isinstance(config, dict) or "hexplane" not in config:
            raise ValueError("DeformationMotion: config lacks the 'hexplane' settings")
        cfg = HexPlaneConfig.from_dict(config["hexplane"])
        if cfg.bounds is None:
            raise ValueError("DeformationMotion: stored config has no bounds")
        tensors = dict(tensors)
        mask = tensors.pop("static_mask", None)
        if bool(config.get("has_static_mask", False)) != (mask is not None):
            raise ValueError("DeformationMotion: config 'has_static_mask' does not match the stored tensors")
        dtype = getattr(torch, str(config.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"DeformationMotion: unsupported dtype {config.get('dtype')!r}")
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        # A private generator: loading must not advance the global RNG (values are overwritten).
        module = Deformation(cfg, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"DeformationMotion: stored tensors do not fit the config: {exc}") from exc
        return cls(module, None if mask is None else mask.to(torch.bool))

    def to(self, device: torch.device | str) -> "DeformationMotion":
        """A copy on ``device`` (parameters keep their values; the copy is a new module)."""
        return type(self).from_state(self.config(), {k: v.detach().to(device) for k, v in self.state_dict().items()})


def param_groups(deformation: Deformation, deformation_lr: float = COCO4D_FOREGROUND_LR[0],
                 grid_lr: float = COCO4D_FOREGROUND_LR[1]) -> list[dict]:
    """Adam parameter groups: HexPlane planes at ``grid_lr``, MLPs at ``deformation_lr``.

    Defaults are CoCo4D App. A Tab. 3 (foreground dynamic training: 0.00064 / 0.0064); the
    background progressive outpaint uses Tab. 4, :data:`COCO4D_BACKGROUND_LR` (0.0064 / 0.064).

    Returns:
        ``[{"name": "grid", "params": [...], "lr": grid_lr},
        {"name": "deformation", "params": [...], "lr": deformation_lr}]``.
    """
    if not isinstance(deformation, Deformation):
        raise ValueError(f"param_groups: deformation must be a Deformation, got {type(deformation).__name__}")
    for name, lr in (("deformation_lr", deformation_lr), ("grid_lr", grid_lr)):
        if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"param_groups: {name} must be a finite number > 0, got {lr!r}")
    grid = list(deformation.field.parameters())
    grid_ids = {id(p) for p in grid}
    mlp = [p for p in deformation.parameters() if id(p) not in grid_ids]
    return [{"name": "grid", "params": grid, "lr": float(grid_lr)},
            {"name": "deformation", "params": mlp, "lr": float(deformation_lr)}]
