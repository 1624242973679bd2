# SPDX-License-Identifier: Apache-2.0
"""Image-space losses and metrics for fitting Gaussians to frames.

Public API:
    l1_loss, l2_loss          (optionally mask-weighted) mean absolute / squared error
    ssim                      Gaussian-window SSIM (Wang et al. 2004)
    dssim_loss                ``(1 - SSIM) / 2``
    mask_loss                 rendered alpha vs. a silhouette mask (MSE or BCE)
    depth_smoothness_loss     edge-aware first-order depth smoothness (Godard et al. 2017)
    depth_smoothness_squared  squared neighbour depth differences (RegNeRF), Diffusion4D's depth term
    psnr                      peak signal-to-noise ratio in dB
    LPIPSLoss                 optional LPIPS (Zhang et al. 2018) from a local weights file
    AlexLPIPS                 LPIPS v0.1 with AlexNet in plain torch (loads an lpips.LPIPS(net="alex") state dict)
    ReconstructionLoss        weighted sum of the above for one rendered batch

Design notes:
    Images are ComfyUI's layout, ``[B,H,W,C]`` float in 0..1, masks ``[B,H,W]`` (``[B,H,W,1]``
    is accepted too). Convolutions run on ``[B,C,H,W]`` internally.

    SSIM uses an ``11x11`` Gaussian window with ``sigma = 1.5`` and ``C1 = 0.01^2``,
    ``C2 = 0.03^2`` (data range 1). Local statistics are computed with a separable, depthwise
    (per-channel) convolution (``core.engine.image_filter``: on CUDA its backward pass is the adjoint
    forward convolution, much cheaper than cuDNN's grouped backward); ``padding="valid"`` (the default)
    evaluates only windows that lie fully inside the image, as Wang et al.'s reference code does, so the map is
    ``[B,C,H-10,W-10]``; ``padding="reflect"`` keeps the full size by mirroring the borders.
    (The 3DGS code pads with zeros, which darkens the statistics at the border; we do not.)

    Diffusion4D §3.4 fits 4DGS with ``L1 + LPIPS + depth smoothness``; its depth term cites RegNeRF
    [25] (Niemeyer et al. 2022, the depth smoothness loss on rendered patches) and Charbonnier et
    al. [5] (half-quadratic regularisation), both penalties on depth differences alone, with no
    image-edge weighting. :func:`depth_smoothness_squared` is RegNeRF's sum of squared differences
    of horizontally and vertically neighbouring depths, as a weighted mean over neighbour pairs:
    ``sum_p w_p (d_p - d_p')^2 / sum_p w_p`` with ``w_p`` the product of the two pixels' weights.
    :class:`ReconstructionLoss` weights each pair by the rendered (detached) alpha of both pixels,
    because the expected depth of an object render is undefined (0) off the object, where RegNeRF's
    scene renders have no such pixels. The edge-aware form of Godard et al. (``mean(|d_x d|
    exp(-|d_x I|)) + ...``) stays available as ``depth_smoothness_mode="edge_aware"``.

    LPIPS is optional and never downloaded: :meth:`LPIPSLoss.maybe_create` returns ``None``
    (logging "LPIPS off: ..." once per reason) when no weights path is given. The AlexNet variant
    (LPIPS's default, the one 4DGS uses) is built here in plain torch, so it needs neither the
    ``lpips`` package nor torchvision; the VGG / SqueezeNet variants go through the ``lpips``
    package and are off (logged) when it cannot be imported. The weights file must hold the
    *whole* LPIPS state dict (backbone and linear heads), e.g.
    ``torch.save(lpips.LPIPS(net="alex").state_dict(), path)`` or the same as safetensors; the
    linear-heads-only files shipped inside the ``lpips`` package are not enough because the
    backbone would otherwise be fetched from torchvision's hub.

    :class:`ReconstructionLoss` is ``total = sum_i w_i L_i`` with the weights used as given.
    The default ``l1=1.0, dssim=0.2`` gives ``L1 + 0.1 (1 - SSIM)``; the exact 3DGS objective
    ``0.8 L1 + 0.2 (1 - SSIM)`` (Kerbl et al. 2023 §7.1) is ``l1=0.8, dssim=0.4``. Parts are
    returned weighted (they sum to the total) and detached, for logging.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .image_filter import gaussian_window, separable_filter

__all__ = [
    "l1_loss",
    "l2_loss",
    "ssim",
    "dssim_loss",
    "mask_loss",
    "depth_smoothness_squared",
    "depth_smoothness_loss",
    "psnr",
    "LPIPSLoss",
    "AlexLPIPS",
    "LPIPS_MIN_SIZE",
    "ReconstructionLoss",
    "SSIM_C1",
    "SSIM_C2",
]

logger = logging.getLogger(__name__)

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
_LOGGED: set[str] = set()


def _log_once(message: str, level: int = logging.INFO) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.log(level, message)


# -- helpers ---------------------------------------------------------------------------------
def _check_images(name: str, x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name}: expected tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"{name}: expected two [B,H,W,C] images of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")


def _mask_bhw1(name: str, mask: Tensor, like: Tensor) -> Tensor:
    """``[B,H,W]`` or ``[B,H,W,1]`` mask -> ``[B,H,W,1]`` in ``like``'s dtype."""
    b, h, w = like.shape[:3]
    if mask.dim() == 3:
        mask = mask[..., None]
    if mask.dim() != 4 or tuple(mask.shape) != (b, h, w, 1):
        raise ValueError(f"{name}: mask must be [B,H,W]=[{b},{h},{w}] (or [B,H,W,1]), got {tuple(mask.shape)}")
    return mask.to(like.dtype)


def _weighted_mean(err: Tensor, mask: Tensor | None, name: str) -> Tensor:
    """Mean of ``err [B,H,W,C]``; with a mask, ``sum(m e) / (sum(m) C)``."""
    if mask is None:
        return err.mean()
    m = _mask_bhw1(name, mask, err)
    denom = (m.sum() * err.shape[-1]).clamp_min(1e-8)
    return (err * m).sum() / denom


# -- pixel losses ------------------------------------------------------------------------------
def l1_loss(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error.

    Args:
        x, y: ``[B,H,W,C]`` images.
        mask: optional ``[B,H,W]`` weights in 0..1; the mean is taken over the weighted pixels.

    Returns:
        Scalar tensor.
    """
    _check_images("l1_loss", x, y)
    return _weighted_mean((x - y).abs(), mask, "l1_loss")


def l2_loss(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error (the CoCo4D / DreamGaussian reference-view loss).

    Args:
        x, y: ``[B,H,W,C]`` images.
        mask: optional ``[B,H,W]`` weights in 0..1.

    Returns:
        Scalar tensor.
    """
    _check_images("l2_loss", x, y)
    return _weighted_mean((x - y).square(), mask, "l2_loss")


# -- SSIM --------------------------------------------------------------------------------------
def _filter(x: Tensor, g: Tensor, padding: str) -> Tensor:
    """Separable depthwise Gaussian filter of ``x [B,C,H,W]`` (``"reflect"``: mirrored borders first)."""
    if padding == "reflect":
        p = g.numel() // 2
        x = F.pad(x, (p, p, p, p), mode="reflect")
    return separable_filter(x, g)


def ssim(
    x: Tensor,
    y: Tensor,
    window: int = 11,
    sigma: float = 1.5,
    padding: Literal["valid", "reflect"] = "valid",
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004, eq. 13).

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with Gaussian-weighted local statistics, ``C1 = 0.01^2``, ``C2 = 0.03^2`` (data range 1).

    Args:
        x, y: ``[B,H,W,C]`` images in 0..1.
        window: odd window size in pixels.
        sigma: standard deviation of the Gaussian window in pixels.
        padding: ``"valid"`` (only windows inside the image; needs ``H, W >= window``) or
            ``"reflect"`` (mirror the borders, full-size map; needs ``H, W > window // 2``).
        reduction: ``"mean"`` -> scalar; ``"none"`` -> ``[B]`` per-image mean SSIM.

    Returns:
        Scalar or ``[B]`` tensor; 1 for identical images.
    """
    _check_images("ssim", x, y)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"ssim: window must be a positive odd integer, got {window}")
    if sigma <= 0:
        raise ValueError(f"ssim: sigma must be > 0, got {sigma}")
    if padding not in ("valid", "reflect"):
        raise ValueError(f"ssim: padding must be 'valid' or 'reflect', got {padding!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"ssim: reduction must be 'mean' or 'none', got {reduction!r}")
    h, w = x.shape[1:3]
    need = window if padding == "valid" else window // 2 + 1
    if h < need or w < need:
        raise ValueError(f"ssim: images of {h}x{w} are too small for a {window}-pixel window with "
                         f"padding={padding!r} (need at least {need}x{need})")
    xc = x.permute(0, 3, 1, 2)
    yc = y.permute(0, 3, 1, 2)
    g = gaussian_window(window, sigma, x.dtype, x.device)
    # The five local means in one depthwise filter pass (two convolutions, not ten, and as many in backward).
    stats = _filter(torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1), g, padding)
    mu_x, mu_y, exx, eyy, exy = stats.chunk(5, dim=1)
    sxx = exx - mu_x * mu_x
    syy = eyy - mu_y * mu_y
    sxy = exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sxx + syy + SSIM_C2)
    smap = num / den
    return smap.mean() if reduction == "mean" else smap.flatten(1).mean(1)


def dssim_loss(x: Tensor, y: Tensor, **kwargs) -> Tensor:
    """Structural dissimilarity ``(1 - SSIM) / 2`` in [0, 1]; ``kwargs`` go to :func:`ssim`."""
    return (1.0 - ssim(x, y, **kwargs)) / 2.0


# -- silhouettes and geometry ------------------------------------------------------------------
def mask_loss(alpha: Tensor, mask: Tensor, mode: Literal["mse", "bce"] = "mse") -> Tensor:
    """Rendered alpha against a silhouette mask.

    Args:
        alpha: ``[B,H,W,1]`` (or ``[B,H,W]``) rendered opacity in 0..1.
        mask: ``[B,H,W]`` (or ``[B,H,W,1]``) target in 0..1.
        mode: ``"mse"`` (DreamGaussian's mask term) or ``"bce"`` (alpha clamped to ``[1e-6, 1-1e-6]``).

    Returns:
        Scalar tensor; zero (MSE) when ``alpha`` equals ``mask``.
    """
    if alpha.dim() == 3:
        alpha = alpha[..., None]
    if alpha.dim() != 4 or alpha.shape[-1] != 1:
        raise ValueError(f"mask_loss: alpha must be [B,H,W,1], got {tuple(alpha.shape)}")
    m = _mask_bhw1("mask_loss", mask, alpha)
    if mode == "mse":
        return (alpha - m).square().mean()
    if mode == "bce":
        eps = 1e-6
        return F.binary_cross_entropy(alpha.clamp(eps, 1.0 - eps), m)
    raise ValueError(f"mask_loss: mode must be 'mse' or 'bce', got {mode!r}")


def depth_smoothness_loss(
    depth: Tensor,
    image: Tensor | None = None,
    mask: Tensor | None = None,
    edge_weight: float = 1.0,
) -> Tensor:
    """Edge-aware first-order depth smoothness (Godard et al. 2017, eq. 3; Diffusion4D §3.4).

    ``mean(|d_x D| exp(-k |d_x I|)) + mean(|d_y D| exp(-k |d_y I|))`` with forward differences
    and ``|d I|`` averaged over colour channels; without ``image`` the weights are 1.

    Args:
        depth: ``[B,H,W,1]`` (or ``[B,H,W]``) depth.
        image: optional ``[B,H,W,C]`` guide image (the target frame).
        mask: optional ``[B,H,W]`` weights; a difference counts where both pixels are inside.
        edge_weight: ``k``, how strongly image edges relax the penalty.

    Returns:
        Scalar tensor; zero for constant depth.
    """
    if depth.dim() == 3:
        depth = depth[..., None]
    if depth.dim() != 4 or depth.shape[-1] != 1:
        raise ValueError(f"depth_smoothness_loss: depth must be [B,H,W,1], got {tuple(depth.shape)}")
    b, h, w = depth.shape[:3]
    d = depth[..., 0]
    dx = (d[:, :, 1:] - d[:, :, :-1]).abs()  # [B,H,W-1]
    dy = (d[:, 1:, :] - d[:, :-1, :]).abs()  # [B,H-1,W]
    if image is not None:
        if image.dim() != 4 or tuple(image.shape[:3]) != (b, h, w):
            raise ValueError(f"depth_smoothness_loss: image must be [B,H,W,C]=[{b},{h},{w},C], "
                             f"got {tuple(image.shape)}")
        img = image.to(d.dtype)
        ix = (img[:, :, 1:] - img[:, :, :-1]).abs().mean(-1)
        iy = (img[:, 1:, :] - img[:, :-1, :]).abs().mean(-1)
        dx = dx * torch.exp(-edge_weight * ix)
        dy = dy * torch.exp(-edge_weight * iy)
    if mask is None:
        return dx.mean() + dy.mean()
    m = _mask_bhw1("depth_smoothness_loss", mask, depth)[..., 0]
    mx = m[:, :, 1:] * m[:, :, :-1]
    my = m[:, 1:, :] * m[:, :-1, :]
    return (dx * mx).sum() / mx.sum().clamp_min(1e-8) + (dy * my).sum() / my.sum().clamp_min(1e-8)


def depth_smoothness_squared(depth: Tensor, weights: Tensor | None = None) -> Tensor:
    """RegNeRF's depth smoothness (Niemeyer et al. 2022; Diffusion4D §3.4, refs [5, 25]).

    ``sum_pairs w (d_i,j - d_i,j+1)^2 + sum_pairs w (d_i,j - d_i+1,j)^2``, divided by the summed pair
    weights ``w = weights_a * weights_b`` of the two pixels of each horizontal / vertical pair (all
    ones without ``weights``: the mean over pairs).

    Args:
        depth: ``[B,H,W,1]`` (or ``[B,H,W]``) depth.
        weights: optional ``[B,H,W]`` (or ``[B,H,W,1]``) per-pixel weights in 0..1 (e.g. rendered alpha).

    Returns:
        Scalar tensor; zero for constant depth.
    """
    if depth.dim() == 3:
        depth = depth[..., None]
    if depth.dim() != 4 or depth.shape[-1] != 1:
        raise ValueError(f"depth_smoothness_squared: depth must be [B,H,W,1], got {tuple(depth.shape)}")
    d = depth[..., 0]
    dx = (d[:, :, 1:] - d[:, :, :-1]).square()
    dy = (d[:, 1:, :] - d[:, :-1, :]).square()
    if weights is None:
        return (dx.sum() + dy.sum()) / (dx.numel() + dy.numel())
    w = _mask_bhw1("depth_smoothness_squared", weights, depth)[..., 0].to(d.dtype)
    wx = w[:, :, 1:] * w[:, :, :-1]
    wy = w[:, 1:, :] * w[:, :-1, :]
    return ((dx * wx).sum() + (dy * wy).sum()) / (wx.sum() + wy.sum()).clamp_min(1e-8)


# -- metrics -----------------------------------------------------------------------------------
def psnr(
    x: Tensor,
    y: Tensor,
    mask: Tensor | None = None,
    data_range: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` per image, in dB.

    Args:
        x, y: ``[B,H,W,C]`` images.
        mask: optional ``[B,H,W]`` weights; MSE over the weighted pixels of each image.
        data_range: ``R``, the peak value (1 for ComfyUI images).
        reduction: ``"mean"`` -> mean over the batch of per-image PSNR (the usual video
            figure); ``"none"`` -> ``[B]``.

    Returns:
        Scalar or ``[B]`` tensor (``inf`` for identical images).
    """
    _check_images("psnr", x, y)
    err = (x - y).square()
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = _mask_bhw1("psnr", mask, err)
        mse = (err * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * err.shape[-1]).clamp_min(1e-8)
    out = 10.0 * torch.log10(data_range**2 / mse)
    if reduction == "none":
        return out
    if reduction == "mean":
        return out.mean()
    raise ValueError(f"psnr: reduction must be 'mean' or 'none', got {reduction!r}")


# -- LPIPS -------------------------------------------------------------------------------------
_ALEX_LAYERS = (  # (slice, index in torchvision's alexnet.features, in, out, kernel, stride, padding, pool first)
    (1, 0, 3, 64, 11, 4, 2, False),
    (2, 3, 64, 192, 5, 1, 2, True),
    (3, 6, 192, 384, 3, 1, 1, True),
    (4, 8, 384, 256, 3, 1, 1, False),
    (5, 10, 256, 256, 3, 1, 1, False),
)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_MIN_SIZE = 32


class AlexLPIPS(torch.nn.Module):
    """LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), in plain torch (no torchvision, no ``lpips``).

    ``d(x, y) = sum_l mean_hw( w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2 )`` over the five ReLU outputs
    ``f_l`` of AlexNet's convolutions, with channel-unit-normalised features, the learned non-negative
    channel weights ``w_l`` (1x1 convolutions) and inputs ``(x - shift) / scale`` in -1..1. The weights
    come from a state dict saved from ``lpips.LPIPS(net="alex")`` (keys ``scaling_layer.*``,
    ``net.slice{1..5}.{i}.weight|bias``, ``lin{0..4}.model.1.weight``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(c_in, c_out, k, stride, pad)
                                         for _, _, c_in, c_out, k, stride, pad, _ in _ALEX_LAYERS)
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c_out, 1, 1, bias=False)
                                        for _, _, _, c_out, _, _, _, _ in _ALEX_LAYERS)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], where: str = "state dict") -> "AlexLPIPS":
        """Build from an ``lpips.LPIPS(net="alex")`` state dict.

        Raises:
            ValueError: a tensor is missing or has the wrong shape (names the key).
        """
        model = cls()
        wanted: dict[str, Tensor] = {}
        for k, (slice_no, index, *_rest) in enumerate(_ALEX_LAYERS):
            for part in ("weight", "bias"):
                wanted[f"convs.{k}.{part}"] = _lpips_key(state, where, f"net.slice{slice_no}.{index}.{part}")
            wanted[f"lins.{k}.weight"] = _lpips_key(state, where, f"lin{k}.model.1.weight", f"lins.{k}.model.1.weight",
                                                    f"lin{k}.model.0.weight")
        for name, key in (("shift", "scaling_layer.shift"), ("scale", "scaling_layer.scale")):
            wanted[name] = state[key].reshape(1, 3, 1, 1) if key in state else getattr(model, name)
        own = model.state_dict()
        for name, tensor in wanted.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ValueError(f"AlexLPIPS: {where}: {name} has shape {tuple(tensor.shape)}, expected "
                                 f"{tuple(own[name].shape)} (an lpips.LPIPS(net='alex') state dict)")
        model.load_state_dict({k: v.float() for k, v in wanted.items()})
        return model

    def forward(self, x: Tensor, y: Tensor, normalize: bool = False) -> Tensor:
        """``[B,1,1,1]`` distances of ``[B,3,H,W]`` images in -1..1 (0..1 with ``normalize``)."""
        if normalize:
            x, y = x * 2.0 - 1.0, y * 2.0 - 1.0
        fx, fy = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = x.new_zeros(x.shape[0], 1, 1, 1)
        for (_, _, _, _, _, _, _, pool_first), conv, lin in zip(_ALEX_LAYERS, self.convs, self.lins):
            if pool_first:
                fx, fy = F.max_pool2d(fx, 3, 2), F.max_pool2d(fy, 3, 2)
            fx, fy = F.relu(conv(fx)), F.relu(conv(fy))
            nx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny).square()).mean((2, 3), keepdim=True)
        return total


def _lpips_key(state: dict[str, Tensor], where: str, *keys: str) -> Tensor:
    for key in keys:
        if key in state:
            return state[key]
    raise ValueError(f"AlexLPIPS: {where} has no {keys[0]!r}; expected a whole lpips.LPIPS(net='alex') state dict "
                     "(backbone and linear heads; the heads-only files inside the lpips package are not enough)")


def _load_state(path: str) -> dict[str, Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # noqa: PLC0415 - optional

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class LPIPSLoss(torch.nn.Module):
    """LPIPS distance (Zhang et al. 2018) with weights from a local file only.

    Build it with :meth:`maybe_create`; the network is frozen and in eval mode. Images smaller than
    :data:`LPIPS_MIN_SIZE` pixels on a side are enlarged (bilinear) first, as AlexNet's pooling needs
    about 31 pixels.

    Args:
        net: an :class:`AlexLPIPS` or ``lpips.LPIPS`` module (any module ``net(x, y, normalize=False)
            -> [B,1,1,1]`` taking ``[B,3,H,W]`` images in -1..1).
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @classmethod
    def maybe_create(cls, path: str | os.PathLike | None, net: str = "alex") -> "LPIPSLoss | None":
        """LPIPS from a local state-dict file, or ``None`` when it cannot be had offline.

        Args:
            path: ``.safetensors`` or torch file holding the full ``lpips.LPIPS`` state dict
                (backbone + linear heads). ``None``/``""`` switches LPIPS off.
            net: backbone name the file was saved from: ``"alex"`` (built here in plain torch),
                ``"vgg"`` or ``"squeeze"`` (through the ``lpips`` package, which needs torchvision).

        Returns:
            The loss module, or ``None`` (logging "LPIPS off: ..." once per reason) when no path
            is given or, for ``vgg`` / ``squeeze``, the ``lpips`` package cannot be imported.

        Raises:
            ValueError: the path is not a file, or its keys do not match the chosen ``net``.
        """
        if path is None or str(path) == "":
            _log_once("LPIPS off: no local LPIPS weights file given (weights are never downloaded)")
            return None
        path = os.fspath(path)
        if net == "alex":
            if not os.path.isfile(path):
                raise ValueError(f"LPIPSLoss: weights path {path!r} is not a file; expected a full "
                                 "lpips.LPIPS(net='alex') state dict (.safetensors or torch.save)")
            return cls(AlexLPIPS.from_state_dict(_load_state(path), repr(path)))
        try:
            import lpips  # noqa: PLC0415 - optional, needs torchvision
        except ImportError as exc:
            _log_once(f"LPIPS off: the 'lpips' package is not importable ({exc}); install lpips "
                      f"and torchvision to use the LPIPS loss with net={net!r} (net='alex' needs neither)")
            return None
        if not os.path.isfile(path):
            raise ValueError(f"LPIPSLoss: weights path {path!r} is not a file; expected a full "
                             "lpips.LPIPS state dict (.safetensors or torch.save)")
        state = _load_state(path)
        # pretrained=False, pnet_rand=True: build the architecture without fetching anything.
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("shift") and not k.endswith("scale")]
        if missing or unexpected:
            raise ValueError(f"LPIPSLoss: {path!r} does not hold a full lpips.LPIPS(net={net!r}) state dict "
                             f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected "
                             f"{list(unexpected)[:4]}); a linear-heads-only file is not enough offline")
        return cls(model)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean LPIPS distance of ``[B,H,W,3]`` images in 0..1 (scalar)."""
        _check_images("LPIPSLoss", x, y)
        p = next(self.net.parameters(), None)
        if p is not None and p.device != x.device:
            self.net.to(x.device)
        xc = x.permute(0, 3, 1, 2) * 2.0 - 1.0
        yc = y.permute(0, 3, 1, 2) * 2.0 - 1.0
        short = min(xc.shape[-2:])
        if short < LPIPS_MIN_SIZE:
            size = [math.ceil(n * LPIPS_MIN_SIZE / short) for n in xc.shape[-2:]]
            xc = F.interpolate(xc, size=size, mode="bilinear", align_corners=False)
            yc = F.interpolate(yc, size=size, mode="bilinear", align_corners=False)
        return self.net(xc, yc, normalize=False).mean()


# -- combined ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconstructionLoss:
    """Weighted photometric / silhouette / geometry loss for one rendered batch.

    ``total = l1 L1 + l2 L2 + dssim (1-SSIM)/2 + mask L_mask + depth_smoothness L_depth + lpips LPIPS``.

    Attributes:
        l1, l2, dssim, mask, depth_smoothness, lpips: non-negative weights (0 skips a term).
        mask_mode: ``"mse"`` or ``"bce"`` for the silhouette term.
        depth_smoothness_mode: ``"regnerf"`` (Diffusion4D's citation: squared neighbour depth
            differences over pixel pairs the render covers, weighted by both pixels' detached alpha)
            or ``"edge_aware"`` (Godard et al.: absolute differences relaxed at target-image edges).
        lpips_path: local LPIPS weights file (see :class:`LPIPSLoss`); when LPIPS is off the
            term is skipped and logged once.
        lpips_net: backbone the LPIPS file was saved from.
        mask_rgb: weight the colour terms (L1, L2) with the target mask when one is given.
    """

    l1: float = 1.0
    l2: float = 0.0
    dssim: float = 0.2
    mask: float = 0.0
    depth_smoothness: float = 0.0
    lpips: float = 0.0
    mask_mode: str = "mse"
    depth_smoothness_mode: str = "regnerf"
    lpips_path: str | None = None
    lpips_net: str = "alex"
    mask_rgb: bool = False
    _lpips_cache: list = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def needs_depth(self) -> bool:
        """Whether a term reads the rendered depth (a fit may then render without it)."""
        return self.depth_smoothness > 0

    def __post_init__(self) -> None:
        for name in ("l1", "l2", "dssim", "mask", "depth_smoothness", "lpips"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"ReconstructionLoss: weight {name} must be a finite number >= 0, got {value!r}")
        if self.mask_mode not in ("mse", "bce"):
            raise ValueError(f"ReconstructionLoss: mask_mode must be 'mse' or 'bce', got {self.mask_mode!r}")
        if self.depth_smoothness_mode not in ("regnerf", "edge_aware"):
            raise ValueError(f"ReconstructionLoss: depth_smoothness_mode must be 'regnerf' or 'edge_aware', got "
                             f"{self.depth_smoothness_mode!r}")

    def _lpips_module(self) -> LPIPSLoss | None:
        if not self._lpips_cache:
            self._lpips_cache.append(LPIPSLoss.maybe_create(self.lpips_path, self.lpips_net))
        return self._lpips_cache[0]

    def __call__(
        self, rendered: dict[str, Tensor], target: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Evaluate the weighted loss.

        Args:
            rendered: ``{"rgb": [B,H,W,3], "alpha": [B,H,W,1] (for mask), "depth": [B,H,W,1]
                (for depth_smoothness)}``.
            target: ``[B,H,W,3]`` target frames.
            mask: optional ``[B,H,W]`` target silhouette (needed when ``mask > 0``).

        Returns:
            ``(total, parts)``: scalar total with gradients, and the weighted terms by name
            (detached; they sum to ``total``).

        Raises:
            ValueError: a needed entry is missing from ``rendered`` or ``mask`` is absent.
        """
        if not isinstance(rendered, dict) or "rgb" not in rendered:
            raise ValueError("ReconstructionLoss: rendered must be a dict with at least 'rgb' [B,H,W,3]")
        rgb = rendered["rgb"]
        pixel_mask = mask if (self.mask_rgb and mask is not None) else None
        terms: dict[str, Tensor] = {}
        if self.l1 > 0:
            terms["l1"] = self.l1 * l1_loss(rgb, target, pixel_mask)
        if self.l2 > 0:
            terms["l2"] = self.l2 * l2_loss(rgb, target, pixel_mask)
        if self.dssim > 0:
            terms["dssim"] = self.dssim * dssim_loss(rgb, target)
        if self.mask > 0:
            if mask is None or "alpha" not in rendered:
                raise ValueError("ReconstructionLoss: mask weight > 0 needs rendered['alpha'] and a target mask")
            terms["mask"] = self.mask * mask_loss(rendered["alpha"], mask, self.mask_mode)
        if self.depth_smoothness > 0:
            if "depth" not in rendered:
                raise ValueError("ReconstructionLoss: depth_smoothness weight > 0 needs rendered['depth']")
            if self.depth_smoothness_mode == "edge_aware":
                smooth = depth_smoothness_loss(rendered["depth"], target)
            else:
                alpha = rendered.get("alpha")
                smooth = depth_smoothness_squared(rendered["depth"], None if alpha is None else alpha.detach())
            terms["depth_smoothness"] = self.depth_smoothness * smooth
        if self.lpips > 0:
            module = self._lpips_module()
            if module is not None:
                terms["lpips"] = self.lpips * module(rgb, target)
        if terms:
            total = torch.stack(list(terms.values())).sum()
        else:
            total = rgb.sum() * 0.0
        return total, {k: v.detach() for k, v in terms.items()}
