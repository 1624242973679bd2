# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D's motion-magnitude conditioning and 3D-aware classifier-free guidance.

Public API:
    motion_magnitude           eq. 1: mean over frames of the squared L2 distance between a 4D
                               orbit video and the static orbit rendered at the same poses
    MotionMagnitudeEmbedding   sinusoidal code of m -> Linear -> SiLU -> Linear (zero-initialised),
                               to be added to the denoiser's timestep embedding (§3.3)
    aware_cfg                  eq. 3: 4D CFG plus a push away from the base 3D-aware model
    base_mode_cfg              plain CFG for the base mode (no 3D-aware prediction available)
    DEFAULT_W1, DEFAULT_W2     the guidance scales of §4.1 (7.0 and 0.5)
    OrbitalConfig              the sampling settings of §3.1 / §4.1 (24 frames, 256², DDIM 50, w1, w2)
    check_magnitude(m, what)   a user-given magnitude as a float, or ValueError (negative, NaN, inf)
    orbit_frame_index(n, T, what, convention)   which frames of a ``T``-view orbit share poses with an
                               ``n``-view one

Design notes:
    Torch only; nothing here knows about a particular denoiser. The noise predictions are any
    tensors of one shape (typically latents ``[B,T,c,h,w]``), so the guidance functions work for
    any backend. ``motion_magnitude`` is layout independent: eq. 1 sums squared differences over
    every pixel and channel of a frame, so ``[T,H,W,3]`` images, ``[T,C,H,W]`` images and
    ``[T,c,h,w]`` latents (eq. 2's ``m(z0)``, same formula) all give the same kind of number. That
    number is a sum, not a mean, over pixels, so it grows with resolution; the embedding therefore
    takes a ``scale`` applied before the sinusoidal code.

    Eq. 3 is written in the "cond + w (cond - other)" form, so with ``w1 = w2 = 0`` it returns the
    4D conditional prediction itself, and ``base_mode_cfg`` uses the same form (it equals
    ``aware_cfg`` with ``w2 = 0``); in the usual ``uncond + s (cond - uncond)`` form the scale is
    ``s = 1 + w1``. The coefficients of eq. 3 sum to one (``(1+w1+w2) cond - w1 uncond - w2 eps3d``),
    so it is an affine (extrapolating) combination of the three predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..engine.cameras import ORBIT_CONVENTIONS

__all__ = [
    "DEFAULT_W1",
    "DEFAULT_W2",
    "motion_magnitude",
    "MotionMagnitudeEmbedding",
    "aware_cfg",
    "base_mode_cfg",
    "OrbitalConfig",
    "check_magnitude",
    "orbit_frame_index",
]

DEFAULT_W1 = 7.0  # Diffusion4D §4.1, weight of the prompt/magnitude CFG term of eq. 3
DEFAULT_W2 = 0.5  # Diffusion4D §4.1, weight of the 3D-aware term of eq. 3


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def motion_magnitude(orbit_4d: Tensor, static_orbit: Tensor) -> Tensor:
    """3D-to-4D motion magnitude of an orbit video (Diffusion4D eq. 1).

    ``m(V) = (1/T) * sum_{i=1..T} || I_i - Ibar_i ||_2^2`` where ``I_i`` is frame ``i`` of the
    orbit around the moving asset and ``Ibar_i`` the frame at the same camera pose of the orbit
    around the static asset (frozen at the first timestamp). The squared norm sums over every
    pixel and channel of the frame. The same formula applied to latents is eq. 2's ``m(z0)``.

    Args:
        orbit_4d: ``[T,H,W,3]`` or ``[T,C,H,W]`` (any 4-D layout with frames first), real values.
        static_orbit: same shape as ``orbit_4d``.

    Returns:
        0-dim float tensor ``m >= 0`` (float32 unless the inputs are float64).

    Raises:
        ValueError: inputs are not tensors, not 4-D, differ in shape, have no frames or no
            elements, or hold NaN/inf.
    """
    for name, x in (("orbit_4d", orbit_4d), ("static_orbit", static_orbit)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"motion_magnitude: {name} must be a 4-D tensor [T,H,W,3] or [T,C,H,W], got {_shape(x)}")
        if x.numel() == 0:
            raise ValueError(f"motion_magnitude: {name} is empty, shape {_shape(x)}")
        if x.is_complex():
            raise ValueError(f"motion_magnitude: {name} must be real, got dtype {x.dtype}")
    if orbit_4d.shape != static_orbit.shape:
        raise ValueError(
            f"motion_magnitude: shapes differ: orbit_4d {_shape(orbit_4d)} vs static_orbit {_shape(static_orbit)}"
        )
    dtype = torch.float64 if torch.float64 in (orbit_4d.dtype, static_orbit.dtype) else torch.float32
    a, b = orbit_4d.to(dtype), static_orbit.to(dtype)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("motion_magnitude: inputs contain NaN or inf")
    t = a.shape[0]
    per_frame = (a - b).pow(2).flatten(1).sum(dim=1)  # ||I_i - Ibar_i||_2^2, [T]
    return per_frame.sum() / t


def _sinusoidal_code(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal code of scalars (as used for diffusion timesteps).

    Args:
        values: ``[B]`` real scalars.
        dim: even code width.
        max_period: longest period of the code.

    Returns:
        ``[B, dim]``: ``cos(v * f_k)`` then ``sin(v * f_k)`` with ``f_k = max_period^(-k/(dim/2))``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class MotionMagnitudeEmbedding(nn.Module):
    """Motion-magnitude embedding added to the timestep embedding (Diffusion4D §3.3, after eq. 1).

    ``emb(m) = W2 SiLU(W1 code(scale * m) + b1) + b2`` with ``code`` the sinusoidal code of
    :func:`_sinusoidal_code` and a two-layer MLP as in the paper. The denoiser then uses
    ``temb(t) + emb(m)``, so the noise prediction becomes ``eps(z_t, y, m, t)``.

    The last layer (``W2``, ``b2``) starts at zero, so a fresh embedding returns zeros for every
    ``m``: inserted into a pretrained 3D-aware denoiser, it leaves that model's predictions exactly
    unchanged at the start of fine-tuning (no random perturbation of the timestep embedding),
    while training is not blocked, because the gradient reaching ``W2`` is
    ``dL/demb * SiLU(...)^T``, which is non-zero, so after one step the output depends on ``m``.

    Args:
        embed_dim: ``D``, width of the denoiser's timestep embedding.
        freq_dim: width of the sinusoidal code (even).
        hidden_dim: width of the hidden layer (defaults to ``embed_dim``).
        scale: multiplies ``m`` before the code (eq. 1 sums over pixels, so raw values depend on
            the resolution; pick ``scale`` to bring typical magnitudes to a range of ~0..1000).
        max_period: longest period of the sinusoidal code.
    """

    def __init__(self, embed_dim: int, freq_dim: int = 256, hidden_dim: int | None = None,
                 scale: float = 1.0, max_period: float = 10000.0) -> None:
        super().__init__()
        hidden = embed_dim if hidden_dim is None else hidden_dim
        if embed_dim < 1 or hidden < 1:
            raise ValueError(
                f"MotionMagnitudeEmbedding: embed_dim and hidden_dim must be >= 1, got {embed_dim}, {hidden}"
            )
        if freq_dim < 2 or freq_dim % 2:
            raise ValueError(f"MotionMagnitudeEmbedding: freq_dim must be an even number >= 2, got {freq_dim}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"MotionMagnitudeEmbedding: scale must be positive and finite, got {scale}")
        if not (math.isfinite(max_period) and max_period > 1):
            raise ValueError(f"MotionMagnitudeEmbedding: max_period must be > 1, got {max_period}")
        self.embed_dim, self.freq_dim = int(embed_dim), int(freq_dim)
        self.scale, self.max_period = float(scale), float(max_period)
        self.linear_1 = nn.Linear(freq_dim, hidden)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, m: Tensor) -> Tensor:
        """Embed motion magnitudes.

        Args:
            m: ``[B]`` non-negative finite magnitudes (eq. 1).

        Returns:
            ``[B, D]`` embedding to add to the ``[B, D]`` timestep embedding.

        Raises:
            ValueError: ``m`` is not a 1-D real tensor, or holds negative, NaN or inf values.
        """
        if not isinstance(m, Tensor) or m.dim() != 1 or m.is_complex() or m.dtype == torch.bool:
            raise ValueError(f"MotionMagnitudeEmbedding: m must be a real 1-D tensor [B], got {_shape(m)}")
        if not torch.isfinite(m).all():
            raise ValueError("MotionMagnitudeEmbedding: m contains NaN or inf")
        if (m < 0).any():
            raise ValueError(f"MotionMagnitudeEmbedding: m must be >= 0, got min {float(m.min())}")
        code = _sinusoidal_code(m.float() * self.scale, self.freq_dim, self.max_period)
        code = code.to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(code)))


def _check_predictions(fn: str, **preds: Tensor) -> None:
    ref_name, ref = next(iter(preds.items()))
    for name, x in preds.items():
        if not isinstance(x, Tensor):
            raise ValueError(f"{fn}: {name} must be a tensor, got {type(x).__name__}")
        if x.shape != ref.shape:
            raise ValueError(f"{fn}: shape mismatch: {ref_name} {_shape(ref)} vs {name} {_shape(x)}")


def _check_weight(fn: str, name: str, w: float) -> float:
    w = float(w)
    if not math.isfinite(w):
        raise ValueError(f"{fn}: {name} must be finite, got {w}")
    return w


def aware_cfg(eps_4d_cond: Tensor, eps_uncond: Tensor, eps_3d: Tensor,
              w1: float = DEFAULT_W1, w2: float = DEFAULT_W2) -> Tensor:
    """3D-aware classifier-free guidance (Diffusion4D eq. 3).

    ``eps_hat(z_t, y, m, t) = eps(z_t, y, m, t) + w1 * (eps(z_t, y, m, t) - eps(z_t, t))
    + w2 * (eps(z_t, y, m, t) - epsbar(z_t, y, t))``

    with ``eps(z_t, y, m, t)`` the 4D model conditioned on prompt and magnitude, ``eps(z_t, t)``
    its unconditional prediction and ``epsbar(z_t, y, t)`` the base 3D-aware model conditioned on
    the prompt. The ``w2`` term pushes the sample away from the static 3D-aware prediction, i.e.
    towards more motion. Limits: ``w2 = 0`` gives :func:`base_mode_cfg`; ``w1 = w2 = 0`` gives
    ``eps_4d_cond``; ``w1 = 0, w2 = -1`` gives ``eps_3d``; ``w1 = -1, w2 = 0`` gives ``eps_uncond``;
    when ``eps_3d == eps_4d_cond`` the ``w2`` term vanishes.

    Args:
        eps_4d_cond: ``[...]`` 4D model prediction with prompt and magnitude, e.g. ``[B,T,c,h,w]``.
        eps_uncond: ``[...]`` same shape, the 4D model's unconditional prediction.
        eps_3d: ``[...]`` same shape, the base 3D-aware model's prompt-conditioned prediction.
        w1: prompt/magnitude guidance scale (paper: 7.0).
        w2: 3D-aware guidance scale (paper: 0.5).

    Returns:
        ``[...]`` the joint noise prediction, same shape as the inputs.

    Raises:
        ValueError: the predictions are not tensors of one shape, or a weight is not finite.
    """
    _check_predictions("aware_cfg", eps_4d_cond=eps_4d_cond, eps_uncond=eps_uncond, eps_3d=eps_3d)
    w1 = _check_weight("aware_cfg", "w1", w1)
    w2 = _check_weight("aware_cfg", "w2", w2)
    return eps_4d_cond + w1 * (eps_4d_cond - eps_uncond) + w2 * (eps_4d_cond - eps_3d)


def base_mode_cfg(eps_cond: Tensor, eps_uncond: Tensor, w1: float = DEFAULT_W1) -> Tensor:
    """Plain classifier-free guidance for the base mode (eq. 3 without its 3D-aware term).

    ``eps_hat = eps_cond + w1 * (eps_cond - eps_uncond)``, i.e. eq. 3 with ``w2 = 0``. Used when
    no base 3D-aware prediction is available (e.g. sampling the 3D-aware model itself, or a 4D
    model without its base): the motion magnitude, if any, only enters through ``eps_cond`` and
    ``w2`` has no effect. Equivalent to ``eps_uncond + (1 + w1) * (eps_cond - eps_uncond)``.

    Args:
        eps_cond: ``[...]`` conditional prediction.
        eps_uncond: ``[...]`` unconditional prediction, same shape.
        w1: guidance scale.

    Returns:
        ``[...]`` guided prediction, same shape.

    Raises:
        ValueError: the predictions are not tensors of one shape, or ``w1`` is not finite.
    """
    _check_predictions("base_mode_cfg", eps_cond=eps_cond, eps_uncond=eps_uncond)
    w1 = _check_weight("base_mode_cfg", "w1", w1)
    return eps_cond + w1 * (eps_cond - eps_uncond)


@dataclass(frozen=True)
class OrbitalConfig:
    """Sampling settings of the 4D-aware orbital video model (Diffusion4D §3.1, §4.1).

    Attributes:
        steps: DDIM steps (§4.1: 50).
        w1, w2: the guidance scales of eq. 3 (§4.1: 7.0 and 0.5).
        num_frames: ``T`` views of the orbit, one per timestamp (§4.1: 24).
        size: image side in pixels (§4.1: 256x256).
        elevation_deg, distance: the orbit's fixed elevation and camera distance (§4.1: 0 and 2).
        magnitude: eq. 1 motion magnitude ``m`` requested from the 4D model, measured on 0..1 RGB
            frames at ``size`` (the object world's 24-view orbit at 256² measures about 2900).
        fps: frame-rate micro-condition of the I2VGen-XL UNet (its pipeline default).
        eta: DDIM stochasticity (0 = deterministic DDIM).
    """

    steps: int = 50
    w1: float = DEFAULT_W1
    w2: float = DEFAULT_W2
    num_frames: int = 24
    size: int = 256
    elevation_deg: float = 0.0
    distance: float = 2.0
    magnitude: float = 3000.0
    fps: int = 16
    eta: float = 0.0


def check_magnitude(m, what: str = "magnitude") -> float:
    """A user-given eq. 1 magnitude as a float.

    Raises:
        ValueError: not a real number, NaN / inf, or negative (eq. 1 is a sum of squares).
    """
    if isinstance(m, Tensor):
        if m.numel() != 1:
            raise ValueError(f"{what}: expected one number, got a tensor of shape {_shape(m)}")
        m = m.item()
    if isinstance(m, bool) or not isinstance(m, (int, float)):
        raise ValueError(f"{what}: expected a number >= 0, got {type(m).__name__}")
    m = float(m)
    if not math.isfinite(m):
        raise ValueError(f"{what}: expected a finite number >= 0, got {m}")
    if m < 0:
        raise ValueError(f"{what}: the motion magnitude (eq. 1, a mean of squared norms) cannot be negative, "
                         f"got {m}; use 0 for no motion")
    return m


def orbit_frame_index(num_views: int, orbit_frames: int, what: str = "orbit",
                      convention: str = "render_script") -> Tensor:
    """Frames of a ``orbit_frames``-view orbit at the poses of a ``num_views``-view orbit.

    Both orbits start at the same azimuth and turn 360° in equal steps
    (``core.engine.cameras.orbit_azimuth_steps``). With the official render script's spacing
    (``"render_script"``, view ``j`` of ``n`` at ``360 j / (n-1)``, the last view back at the first)
    view ``j`` of the shorter orbit is frame ``j (T-1) / (n-1)`` of the longer one, which lands on
    frames when ``n - 1`` divides ``T - 1`` (for T = 24 only n = 2 and 24, as 23 is prime; a single
    view is frame 0). With ``"open_loop"`` (``360 j / n``) it is frame ``j T / n``, which needs ``n``
    to divide ``T``.

    Args:
        num_views: views of the (static) orbit to match, ``>= 1``.
        orbit_frames: frames of the reference orbit, ``>= 1``.
        what: name used in errors.
        convention: how both orbits space their views (``ORBIT_CONVENTIONS``).

    Returns:
        ``[num_views]`` long indices into the reference orbit.

    Raises:
        ValueError: a count below one, an unknown convention, or views that fall between frames.
    """
    n, t = int(num_views), int(orbit_frames)
    if convention not in ORBIT_CONVENTIONS:
        raise ValueError(f"{what}: orbit convention must be one of {ORBIT_CONVENTIONS}, got {convention!r}")
    if n < 1 or t < 1:
        raise ValueError(f"{what}: need at least one frame in each orbit, got {n} and {t}")
    if convention == "open_loop":
        if t % n:
            raise ValueError(f"{what}: {n} views do not divide into the {t}-frame orbit; both orbits turn 360° in "
                             f"equal steps of 360/T (open_loop), so {t} must be a multiple of {n} for every view to "
                             f"share a pose with a frame (azimuth step {360.0 / t:g}° vs {360.0 / n:g}°)")
        return torch.arange(n, dtype=torch.long) * (t // n)
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    if t < n or (t - 1) % (n - 1):
        raise ValueError(f"{what}: {n} views do not divide into the {t}-frame orbit; both orbits turn 360° in "
                         f"steps of 360/(T-1) (render_script: the last view returns to the first), so {t} - 1 must "
                         f"be a multiple of {n} - 1 for every view to share a pose with a frame (azimuth step "
                         f"{360.0 / max(t - 1, 1):g}° vs {360.0 / (n - 1):g}°)")
    return torch.arange(n, dtype=torch.long) * ((t - 1) // (n - 1))
