"""Training losses: L_simple with its objectives and weightings, and L_DDPM (EQUATIONS.md E27-E33).

Every function takes a denoiser ``eps_fn(x_i, i, cond=None) -> eps_hat`` (i a LongTensor (B,); a
two-argument callable works too) and never branches on what the network predicts: the x0 and v objectives
are computed from eps_hat through E31/E32. ``cond`` (class labels) is passed through to the denoiser.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.forward import at_level, q_sample
from dgm.core.gaussian import sum_flat
from dgm.core.parameterization import call_denoiser, eps_to_mean, eps_to_v, eps_to_x0
from dgm.core.reverse import posterior
from dgm.core.schedule import Schedule

__all__ = ["loss_simple", "loss_hybrid", "loss_ddpm", "eps_weight", "level_weights", "OBJECTIVES", "WEIGHTINGS"]

Objective = Literal["eps", "x0", "v"]
Weighting = Literal["simple", "vlb", "min_snr"]
OBJECTIVES = ("eps", "x0", "v")
WEIGHTINGS = ("simple", "vlb", "min_snr")
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", gamma = 5


def eps_weight(s: Schedule) -> Tensor:
    """lambda_i^eps = C_i / (2 sigma2(i)) = beta_i^2 / (2 alpha_i^2 (1 - alpha_bar_{i-1}^2)) (EQUATIONS.md E30).

    Float64 table of length L + 1; entries 0 and 1 are inf (sigma2(1) = 0: level 1 is the decoder term).
    The seed post's weight 1/sqrt(2 sigma2) is wrong (erratum 27).
    """
    w = torch.full((s.L + 1,), math.inf, dtype=torch.float64)
    i = torch.arange(2, s.L + 1)
    w[2:] = s.beta[i] ** 2 / (2 * s.alpha[i] ** 2 * (1 - s.alpha_bar[i - 1] ** 2))
    return w


def level_weights(s: Schedule, objective: Objective, weighting: Weighting) -> Tensor:
    """Per-level weight on the squared error of ``objective`` (float64, length L + 1, index = level).

    - ``simple``: 1 (Ho et al.'s L_simple, E33).
    - ``vlb``: the true-bound weight (SNR_{i-1} - SNR_i) / 2 on the x0 error (E31), translated to the
      objective and normalized to mean 1 over levels 1..L; level 1 takes level 2's x0 weight (clipped,
      since SNR_0 = inf).
    - ``min_snr``: min(SNR_i, gamma) on the x0 error, gamma = 5 (Hang et al. 2023).

    Squared errors relate as |eps err|^2 = SNR |x0 err|^2 and |v err|^2 = (SNR + 1) |x0 err|^2 (E32).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    snr = s.snr.clone()
    factor = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[objective]
    if weighting == "simple":
        return torch.ones(s.L + 1, dtype=torch.float64)
    elif weighting == "vlb":
        w_x0 = torch.zeros_like(snr)
        w_x0[2:] = 0.5 * (snr[1:-1] - snr[2:])
        w_x0[1] = w_x0[2]
        w = w_x0 / factor
        w[0] = 0.0
        return w / w[1:].mean()
    elif weighting == "min_snr":
        w = torch.clamp(snr, max=MIN_SNR_GAMMA) / factor
        w[0] = 0.0
        return w
    else:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")


def _random_levels(s: Schedule, n: int, low: int, device, generator) -> Tensor:
    return rng.randint(low, s.L + 1, (n,), generator=generator, device=device)


def loss_simple(
    eps_fn,
    s: Schedule,
    x0: Tensor,
    *,
    objective: Objective = "eps",
    weighting: Weighting = "simple",
    generator: torch.Generator | None = None,
    cond=None,
) -> Tensor:
    """L_simple = E_i E_x0 E_eps |target_hat - target|^2 with i ~ U{1..L} (EQUATIONS.md E33).

    The squared error is averaged over data dimensions and the batch. ``objective`` picks the target
    (eps, x0 = E31, v = E32); ``weighting`` multiplies each example by :func:`level_weights`.
    Its minimizer is eps* = E[eps | x_i] for every positive weighting; it is not a likelihood bound.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    i, eps, x_i = _draw(s, x0, generator)
    eps_hat = call_denoiser(eps_fn, x_i, i, cond)
    return _weighted_mse(s, x0, x_i, i, eps, eps_hat, objective, weighting)


def _draw(s: Schedule, x0: Tensor, generator) -> tuple[Tensor, Tensor, Tensor]:
    """(i ~ U{1..L} per example, eps ~ N(0, I), x_i = q_sample(x0, i, eps)): the draws of L_simple."""
    i = _random_levels(s, x0.shape[0], 1, x0.device, generator)
    eps = rng.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return i, eps, q_sample(s, x0, i, eps)


def _weighted_mse(s, x0, x_i, i, eps, eps_hat, objective, weighting) -> Tensor:
    """The batch mean of the per-example squared error of ``objective``, times its level weight."""
    w_table = level_weights(s, objective, weighting)
    B = x0.shape[0]
    if objective == "eps":
        err = eps_hat - eps
    elif objective == "x0":
        err = eps_to_x0(s, x_i, eps_hat, i) - x0
    else:  # "v", checked above
        v = at_level(s.alpha_bar, i, x0) * eps - at_level(s.sigma_bar, i, x0) * x0
        err = eps_to_v(s, x_i, eps_hat, i) - v
    mse = err.pow(2).reshape(B, -1).mean(dim=1)
    if weighting != "simple":
        mse = mse * w_table[i.cpu()].to(mse.dtype).to(mse.device)
    return mse.mean()


LAMBDA_VLB = 1e-3  # Nichol & Dhariwal 2021: L_hybrid = L_simple + 0.001 L_vlb


def loss_hybrid(denoiser, s: Schedule, x0: Tensor, *, objective: Objective = "eps", weighting: Weighting = "simple",
                generator: torch.Generator | None = None, cond=None, lambda_vlb: float = LAMBDA_VLB,
                bins: int | None = None) -> Tensor:
    """L_hybrid = L_simple + lambda L_vlb for a denoiser with a learned variance (Nichol & Dhariwal 2021; L2).

    One draw (i, eps) serves both terms. L_vlb's one-sample estimate is L times the term at level i: the KL
    of E27 between the posterior N(mu, sigma2(i)) and N(mu_phi, v_i) for i >= 2, the decoder NLL (E34/E36,
    ``bins`` for discrete data) at i = 1, each averaged over data dimensions; mu_phi uses eps_hat with its
    gradient stopped, so L_vlb trains the variance only (L_simple trains the mean). ``denoiser`` has
    ``eps_and_variance(x_i, i, cond)`` (``dgm.core.parameterization.Denoiser`` with ``learn_variance``).
    The L_vlb term is in nats per dimension; improved-diffusion's is in bits, so at equal lambda dgm's
    weight on it is ln 2 of theirs.
    """
    from dgm.core.bound import decoder_nll
    from dgm.core.gaussian import normal_kl

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    i, eps, x_i = _draw(s, x0, generator)
    eps_hat, var = denoiser.eps_and_variance(x_i, i, cond)
    simple = _weighted_mse(s, x0, x_i, i, eps, eps_hat, objective, weighting)
    frozen = eps_hat.detach()
    D = x0[0].numel()
    term = torch.zeros(x0.shape[0], dtype=var.dtype, device=var.device)
    first, rest = i == 1, i > 1  # each row takes one term (no masked-out branch, whose gradient could be NaN)
    if first.any():
        x0_hat = eps_to_x0(s, x_i[first], frozen[first], i[first])
        term[first] = decoder_nll(x0[first], x0_hat, var[first], bins) / D
    if rest.any():
        x_r, i_r = x_i[rest], i[rest]
        mu, post_var = posterior(s, x_r, x0[rest], i_r)
        mu_hat = eps_to_mean(s, x_r, frozen[rest], i_r)
        term[rest] = sum_flat(normal_kl(mu, post_var.expand_as(mu), mu_hat, var[rest])) / D
    return simple + lambda_vlb * s.L * term.mean()


def loss_ddpm(eps_fn, s: Schedule, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> Tensor:
    """L_DDPM = sum_{i=2..L} E |mu_phi(x_i, i) - mu(x_i, x0, i)|^2 / (2 sigma2(i)) (EQUATIONS.md E28).

    An unbiased one-sample estimate: (L - 1) times the term at i ~ U{2..L}, averaged over the batch. The
    weight is 1 / (2 sigma2(i)), not the seed post's 1 / sqrt(2 sigma2(i)) (erratum 27).
    """
    if s.L < 2:
        raise ValueError(f"L_DDPM needs at least 2 levels, the schedule has L={s.L}")
    B = x0.shape[0]
    i = _random_levels(s, B, 2, x0.device, generator)
    eps = rng.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_i = q_sample(s, x0, i, eps)
    mu, var = posterior(s, x_i, x0, i)
    mu_hat = eps_to_mean(s, x_i, call_denoiser(eps_fn, x_i, i, cond), i)
    term = sum_flat((mu_hat - mu) ** 2 / (2 * var))
    return (s.L - 1) * term.mean()
