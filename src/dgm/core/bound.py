"""The full variational bound of a DDPM, nats per example (EQUATIONS.md E34-E37), and bits per dimension.

L_vb = L_L + sum_{i=2..L} L_{i-1} + L_0 with
- the prior term L_L = KL(q(x_L | x_0) || N(0, I)) (E35),
- the level terms L_{i-1} = KL(q(x_{i-1} | x_i, x_0) || p(x_{i-1} | x_i)) between the posterior
  N(mu, sigma2(i) I) and the model's reverse kernel N(mu_phi, v_i I) (E27, E29),
- the decoder term L_0 = -log p(x_0 | x_1) with variance v_1 (E36).
The reverse variance v is chosen once (``dgm.core.reverse.reverse_variance``): "fixed_small" (the default,
v_i = sigma2(i), so each L_{i-1} is lambda_i^eps |eps_hat - eps|^2, E30), "fixed_large", a per-level table
or a learned callable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.forward import prior_kl, q_sample
from dgm.core.gaussian import discretized_gaussian_log_prob, normal_kl, normal_log_prob, sum_flat
from dgm.core.parameterization import call_denoiser, eps_to_mean, eps_to_x0
from dgm.core.reverse import posterior, reverse_variance, variance_table
from dgm.core.schedule import Schedule

MAX_NUMBERS = 2**17  # numbers per denoiser call of vlb: bounds its memory whatever the example size

__all__ = ["vlb", "vlb_reference", "decoder_nll", "bits_per_dim"]


def _draw_noise(like: Tensor, generator) -> Tensor:
    """Standard normal noise shaped like ``like``, drawn in float64 and cast to its dtype.

    torch draws different numbers for float32 and float64 from the same seed (for 16 or more values), so
    drawing in one dtype is what lets two bounds, one in float32 (a network) and one in float64 (eps* of a
    mixture), share their noise and be compared example by example.
    """
    return rng.randn(like.shape, generator=generator, dtype=torch.float64, device=like.device).to(like.dtype)


def decoder_nll(x0: Tensor, x0_hat: Tensor, var, bins: int | None) -> Tensor:
    """L_0 = -log p(x0 | x_1) with p = N(x0_hat(x_1, 1), var I), or its discretization to ``bins`` values in
    [-1, 1] (E34, E36): shape (B,). ``var`` is v_1 of the reverse variance (a float or a tensor)."""
    if bins is None:
        return -sum_flat(normal_log_prob(x0, x0_hat, var))
    log_std = 0.5 * torch.log(torch.as_tensor(var, dtype=x0_hat.dtype, device=x0_hat.device))
    return -sum_flat(discretized_gaussian_log_prob(x0, x0_hat, log_std.expand_as(x0_hat), bins))


def _level_kl(s: Schedule, lvl: int, err: Tensor, v) -> Tensor:
    """KL(N(mu, sigma2(i)) || N(mu_phi, v)) summed over dims, from err = eps_hat - eps (float64, (n, ...)).

    mu - mu_phi = beta_i^2 / (sigma_bar_i alpha_i) (eps_hat - eps) (E29), so with v = sigma2(i) this is
    lambda_i^eps |eps_hat - eps|^2 (E30).
    """
    c2 = (s.beta[lvl] ** 2 / (s.sigma_bar[lvl] * s.alpha[lvl])).item() ** 2
    sigma2 = s.sigma2[lvl].item()
    if isinstance(v, float):
        D = err[0].numel()
        return D * 0.5 * (sigma2 / v - 1.0 + math.log(v / sigma2)) + c2 * sum_flat(err**2) / (2 * v)
    v = torch.as_tensor(v, dtype=torch.float64, device=err.device).expand_as(err)
    return sum_flat(0.5 * (sigma2 / v - 1.0 + torch.log(v / sigma2)) + c2 * err**2 / (2 * v))


@torch.no_grad()
def vlb(
    eps_fn,
    s: Schedule,
    x0: Tensor,
    *,
    bins: int | None = None,
    generator: torch.Generator | None = None,
    max_batch: int = 2048,
    return_terms: bool = False,
    cond=None,
    variance="fixed_small",
):
    """The full bound L_vb = L_L + sum_{i=2..L} L_{i-1} + L_0 in nats per example (EQUATIONS.md E34-E36).

    One x_i draw per level and example, the noise drawn in float64 whatever the dtype of ``x0`` (so a float32
    network and a float64 oracle given the same seed see the same noise). ``variance`` is the model's
    reverse variance (``dgm.core.reverse.reverse_variance``: "fixed_small", the default, "fixed_large", a
    table or a callable). The decoder at level 1 is N(x0_hat(x_1, 1), v_1) for continuous data
    (``bins=None``) or its discretization to ``bins`` values in [-1, 1] (E36). ``cond`` (labels (B,)) is
    passed to the denoiser. Levels are batched ``min(max_batch, MAX_NUMBERS // D) // B`` at a time (D numbers
    per example: at most 2**17 numbers a call, so 28x28 images go 167 rows a call). Returns (B,) float64, or with
    ``return_terms`` a dict with ``total``, ``prior`` (B,), ``decoder`` (B,) and ``levels`` (B, L + 1; the
    KL at level i, 0 at levels 0 and 1).
    """
    if bins is not None and (not isinstance(bins, int) or bins < 2):
        raise ValueError(f"bins must be an integer >= 2 or None, got {bins!r}")
    if isinstance(variance, str):
        variance = variance_table(s, variance)  # resolve the name once, not per level
    B = x0.shape[0]
    levels = torch.zeros(B, s.L + 1, dtype=torch.float64)
    decoder = torch.zeros(B, dtype=torch.float64)
    per_call = max(1, min(max_batch, MAX_NUMBERS // max(1, x0[0].numel())) // B)
    all_levels = list(range(1, s.L + 1))
    for start in range(0, s.L, per_call):
        chunk = all_levels[start : start + per_call]
        i = torch.tensor(chunk, device=x0.device).repeat_interleave(B)
        x0_rep = x0.repeat((len(chunk),) + (1,) * (x0.ndim - 1))
        cond_rep = None if cond is None else cond.repeat(len(chunk))
        eps = _draw_noise(x0_rep, generator)
        x_i = q_sample(s, x0_rep, i, eps)
        eps_hat = call_denoiser(eps_fn, x_i, i, cond_rep)
        err = (eps_hat.double() - eps.double()).reshape(len(chunk), B, *x0.shape[1:])
        for k, lvl in enumerate(chunk):
            rows = slice(k * B, (k + 1) * B)
            v = reverse_variance(variance, s, x_i[rows], lvl, cond)
            if lvl == 1:
                x0_hat = eps_to_x0(s, x_i[rows].double(), eps_hat[rows].double(), 1)
                decoder = decoder_nll(x0.double(), x0_hat, _double(v), bins).cpu()
            else:
                levels[:, lvl] = _level_kl(s, lvl, err[k], _double(v)).cpu()
    prior = prior_kl(s, x0.double()).cpu()
    total = prior + levels.sum(dim=1) + decoder
    if return_terms:
        return {"total": total, "prior": prior, "decoder": decoder, "levels": levels}
    return total


def _double(v):
    return v if isinstance(v, float) else v.double()


@torch.no_grad()
def vlb_reference(eps_fn, s: Schedule, x0: Tensor, *, bins=None, generator=None, cond=None) -> Tensor:
    """The same bound (fixed-small variance) computed level by level from Gaussian KLs of the means (E24, E27, E29).

    Slow (one network call per level) but shares no arithmetic shortcut with :func:`vlb`; used to check it.
    """
    x0 = x0.double()
    total = prior_kl(s, x0).cpu()
    for lvl in range(1, s.L + 1):
        i = torch.full((x0.shape[0],), lvl, dtype=torch.long, device=x0.device)
        eps = _draw_noise(x0, generator)
        x_i = q_sample(s, x0, i, eps)
        eps_hat = call_denoiser(eps_fn, x_i, i, cond).double()
        if lvl == 1:
            var = s.sigma2[2].item() if s.L >= 2 else s.beta[1].item() ** 2
            total = total + decoder_nll(x0, eps_to_x0(s, x_i, eps_hat, i), var, bins).cpu()
        else:
            mu, var = posterior(s, x_i, x0, i)
            mu_hat = eps_to_mean(s, x_i, eps_hat, i)
            total = total + sum_flat(normal_kl(mu, var, mu_hat, var)).cpu()
    return total


def bits_per_dim(nats, x0: Tensor) -> float:
    """bpd = mean nats per example / (D ln 2), D = numbers per example (EQUATIONS.md E37)."""
    D = x0[0].numel()
    return float(torch.as_tensor(nats, dtype=torch.float64).mean()) / (D * math.log(2))
