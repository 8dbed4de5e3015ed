"""The one Normal toolkit of dgm, shared by the diffusion and VAE code (EQUATIONS.md E10, E13, E27, E36).

Densities and KLs are elementwise: they return a tensor shaped like the broadcast of their inputs, and the
caller sums over the data dimensions with :func:`sum_flat`. A Gaussian is given either by a variance
(``normal_log_prob``, ``normal_kl``: the diffusion code, whose variances are per-level tables) or by a
log standard deviation (``*_from_log_std``: the VAE code, whose networks output log-stds).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core import rng

__all__ = [
    "LOG_2PI",
    "append_dims",
    "sum_flat",
    "normal_kl",
    "normal_kl_from_log_std",
    "normal_log_prob",
    "normal_log_prob_from_log_std",
    "discretized_gaussian_log_prob",
    "reparameterize",
]

LOG_2PI = math.log(2 * math.pi)


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a per-example ``v`` of shape (B,) broadcasts over (B, ...)."""
    extra = ndim - v.ndim
    if extra < 0:
        raise ValueError(f"cannot broadcast a tensor of {v.ndim} dims to {ndim} dims")
    return v.reshape(v.shape + (1,) * extra)


def sum_flat(x: Tensor, batch_dims: int = 1) -> Tensor:
    """Sum over every dimension but the first ``batch_dims``: (*batch, ...) -> (*batch,)."""
    return x.reshape(*x.shape[:batch_dims], -1).sum(dim=-1)


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) per coordinate (EQUATIONS.md E27, one dimension)."""
    var1 = torch.as_tensor(var1, dtype=mean1.dtype, device=mean1.device)
    var2 = torch.as_tensor(var2, dtype=mean1.dtype, device=mean1.device)
    return 0.5 * (var1 / var2 - 1.0 + torch.log(var2) - torch.log(var1) + (mean1 - mean2) ** 2 / var2)


def normal_kl_from_log_std(mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor, log_std_p: Tensor) -> Tensor:
    """KL(N(mean_q, s_q^2) || N(mean_p, s_p^2)) per coordinate, from log-stds (E27; with p = N(0, 1) it is
    E13's (m^2 + s^2 - 1 - log s^2) / 2)."""
    var_ratio = torch.exp(2 * (log_std_q - log_std_p))
    return 0.5 * (var_ratio + ((mean_q - mean_p) * torch.exp(-log_std_p)) ** 2 - 1) - (log_std_q - log_std_p)


def normal_log_prob(x: Tensor, mean: Tensor, var) -> Tensor:
    """log N(x; mean, var) per coordinate (E13)."""
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)


def normal_log_prob_from_log_std(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(x; mean, exp(log_std)^2) per coordinate (E13), from a log-std."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI


def _log1mexp(a: Tensor) -> Tensor:
    """log(1 - exp(a)) for a < 0, stable at both ends (Maechler 2012); a is clamped below 0 so that both
    branches of ``torch.where`` stay finite and gradients never see inf * 0."""
    a = torch.clamp(a, max=-1e-30)
    near = torch.log(-torch.expm1(torch.clamp(a, min=-math.log(2))))
    far = torch.log1p(-torch.exp(torch.clamp(a, max=-math.log(2))))
    return torch.where(a > -math.log(2), near, far)


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor, bins: int) -> Tensor:
    """log P(x) of a Gaussian discretized to ``bins`` evenly spaced values in [-1, 1] (EQUATIONS.md E36).

    The bin of value x is [x - h, x + h] with half-width h = 1 / (bins - 1), widened to -inf at x = -1
    and +inf at x = 1 (Ho et al. 2020 use bins = 256, h = 1/255). Computed in log space with log_ndtr on
    the tail that keeps precision, so it stays finite, with finite gradients, in float32 for tiny std.
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins!r}")
    h = 1.0 / (bins - 1)
    inv_std = torch.exp(-log_std)
    upper = (x + h - mean) * inv_std
    lower = (x - h - mean) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # log Phi(upper): the bin at x = -1
    log_sf_lower = torch.special.log_ndtr(-lower)  # log (1 - Phi(lower)): the bin at x = 1
    # log(Phi(u) - Phi(l)) through the left tail, or through the right tail when the bin lies above the mean.
    mid_left = log_cdf_upper + _log1mexp(torch.special.log_ndtr(lower) - log_cdf_upper)
    mid_right = log_sf_lower + _log1mexp(torch.special.log_ndtr(-upper) - log_sf_lower)
    mid = torch.where(lower > 0, mid_right, mid_left)
    edge = 1.0 - 1e-6 * h  # tolerance for float rounding of the end values
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, mid))


def reparameterize(mean: Tensor, std: Tensor, *, n: int | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """z = mean + std * eps, eps ~ N(0, I): the reparameterization trick (E10).

    (B, ...) -> (B, ...), or (n, B, ...) with ``n`` draws per row when ``n`` is given.
    """
    shape = mean.shape if n is None else (n, *mean.shape)
    eps = rng.randn(shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + std * eps
