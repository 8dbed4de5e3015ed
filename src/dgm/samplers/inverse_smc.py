"""Sequential Monte Carlo for linear-Gaussian inverse problems ("smc"), in the family of MCGdiff (Cardoso,
Janati, Le Corff, Moulines 2024): asymptotically exact as the number of particles grows.

The model's reverse chain over the grid t_0 = L' > ... > t_M = 0 (the posterior steps of E40 with eta = 1,
Gaussian with mean mu(x_i) and variance v_ij I) defines a path measure whose x_0 marginal is the model's
prior. The target is that path measure reweighted by the likelihood of y. In the rotated coordinates of
``LinearObservation`` the observation reads y_bar = V^T x_0 + varsigma n' with varsigma = sigma_y / s, one
independent coordinate per singular value; the twisting potential at level t is, per rotated coordinate,

    h_t(x_t) = N(alpha_bar_t y_bar; V^T x_t, sigma_bar_t^2 + alpha_bar_t^2 varsigma^2),

the likelihood of y_bar given x_t if x_0 had a flat prior. At level 0 it is the likelihood itself, so the
particle system targets the exact posterior on any grid and for any sigma_y >= 0. As in MCGdiff's Alg. 1
the proposal is locally optimal, p(x_j | x_i) h_j(x_j) normalized (Gaussian: the reverse kernel on the
unobserved directions, its product with h_j on the observed ones), and the incremental weight
int p(x_j | x_i) h_j(x_j) dx_j / h_i(x_i) depends on x_i only (a fully adapted particle filter: weigh,
resample, then move), so the sampler costs no network call beyond the particles' one per level.
MCGdiff uses h_t = the forward kernel from a level tau_k matched to varsigma_k instead, which needs a grid
level with sigma_bar / alpha_bar = varsigma_k exactly; this choice needs none.

The last step to level 0 returns x0_hat on the unobserved directions (as dgm's samplers do) and, on the
observed ones, draws from N(V^T x0_hat, v_dec) h_0 with v_dec the variance of the grid's last noisy step
(sigma2(2) on the full grid, the decoder variance of Ho et al.): with sigma_y = 0 the observed part equals
y_bar exactly. Particles are resampled (systematic resampling) in the rows whose effective sample size falls
below ``ESS_THRESHOLD`` times the number of particles; each row of y returns one particle drawn by weight.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.parameterization import eps_to_x0
from dgm.core.schedule import Schedule
from dgm.samplers.common import randn_like
from dgm.samplers.inverse_operator import LinearObservation

__all__ = ["ESS_THRESHOLD", "posterior_step", "sample_smc"]

ESS_THRESHOLD = 0.5  # resample a row when its effective sample size drops below this fraction of particles
LOG_2PI = math.log(2 * math.pi)


def posterior_step(s: Schedule, i: int, j: int) -> tuple[float, float, float]:
    """(c0, ci, v): q(x_j | x_i, x0) = N(c0 x0 + ci x_i, v I) for levels j < i, the respaced chain's posterior
    step (E24 with the forward step j -> i of variance 1 - alpha_bar_i^2 / alpha_bar_j^2; E40 with eta = 1)."""
    a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
    fwd = 1.0 - (a_i / a_j) ** 2
    c0 = a_j * fwd / (1.0 - a_i**2)
    ci = (a_i / a_j) * (1.0 - a_j**2) / (1.0 - a_i**2)
    return c0, ci, fwd * (1.0 - a_j**2) / (1.0 - a_i**2)


def _log_normal(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """sum_k log N(x_k; mean_k, var_k) over the last dimension, in float64: (N, d) -> (N,)."""
    var = var.double()
    return -0.5 * (LOG_2PI + torch.log(var) + (x.double() - mean.double()) ** 2 / var).sum(-1)


def _propose(op: LinearObservation, mu: Tensor, v: float, v_obs: float, target: Tensor, c: Tensor,
             xi: Tensor) -> Tensor:
    """A draw of N(mu, v I) on the unobserved directions and of N(V^T mu, v_obs) N(target; ., c) on the
    observed ones, from the standard normal xi (N, D): the Gaussian product has gain K = v_obs / (v_obs + c)."""
    K = v_obs / (v_obs + c)
    z = (1 - K) * op.rotate(mu) + K * target + torch.sqrt((1 - K) * v_obs) * op.rotate(xi)  # K = 1: z = target
    x = mu + math.sqrt(v) * xi if v > 0 else mu
    return x - op.project(x) + op.unrotate(z)


def _systematic(log_w: Tensor, generator, device) -> Tensor:
    """Systematic resampling indices per row: log weights (B, P) -> ancestor indices (B, P)."""
    B, P = log_w.shape
    cdf = torch.softmax(log_w, dim=1).cumsum(1)
    u = (rng.rand(B, 1, generator=generator, dtype=torch.float64, device=device)
         + torch.arange(P, dtype=torch.float64, device=device)) / P
    return torch.searchsorted(cdf.contiguous(), u).clamp_max(P - 1)


def sample_smc(den, s: Schedule, x_L: Tensor, grid: list[int], op: LinearObservation, y: Tensor, sigma_y: float,
               *, particles: int, generator=None) -> tuple[Tensor, dict]:
    """The twisted particle filter of the module docstring, ``particles`` per row of y (B, d_y).

    ``x_L`` holds B * particles standard normal rows (row b * particles + p is particle p of row b); they
    become the first particles, drawn from N(0, I) h_L. Returns the draws (B, D) and
    ``{"resamples": mean resampling events per row, "ess_min": the smallest effective sample size seen,
    "particles": the final cloud (B, P, D), "log_weights": its normalized log weights (B, P)}``: each row's
    weighted cloud approximates p(x | y) as a whole (MCGdiff's output), with correlated particles.
    """
    B, P, D = y.shape[0], particles, op.D
    dev = y.device
    y_bar = op.rotate_observation(y).repeat_interleave(P, 0)  # (B P, d_y)
    noise_var = op.noise_std(sigma_y) ** 2  # varsigma^2 (d_y,)

    def a(level: int) -> float:
        return s.alpha_bar[level].item()

    def twist_var(level: int) -> Tensor:
        return s.sigma_bar[level].item() ** 2 + a(level) ** 2 * noise_var

    v_dec = posterior_step(s, grid[-3], grid[-2])[2] if len(grid) >= 3 else s.sigma_bar[grid[0]].item() ** 2
    x = _propose(op, torch.zeros_like(x_L), 1.0, 1.0, a(grid[0]) * y_bar, twist_var(grid[0]), x_L)
    log_w = torch.zeros(B, P, dtype=torch.float64, device=dev)
    resamples = torch.zeros(B, dtype=torch.float64, device=dev)
    ess_min = float(P)
    for i, j in zip(grid[:-1], grid[1:], strict=True):
        x0_hat = eps_to_x0(s, x, den(x, i), i)
        c0, ci, v = posterior_step(s, i, j)
        mu = c0 * x0_hat + ci * x
        v_obs = v if j > 0 else v_dec
        c_j = twist_var(j)
        log_w = log_w + (_log_normal(a(j) * y_bar, op.rotate(mu), v_obs + c_j)
                         - _log_normal(a(i) * y_bar, op.rotate(x), twist_var(i))).view(B, P)
        w = torch.softmax(log_w, dim=1)
        ess = 1.0 / (w**2).sum(1)
        ess_min = min(ess_min, ess.min().item())
        low = ess < ESS_THRESHOLD * P
        if low.any():
            idx = torch.where(low[:, None], _systematic(log_w, generator, dev),
                              torch.arange(P, device=dev).expand(B, P))
            rows = (idx + P * torch.arange(B, device=dev)[:, None]).flatten()
            mu = mu[rows]
            log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
            resamples += low.double()
        x = _propose(op, mu, v if j > 0 else 0.0, v_obs, a(j) * y_bar, c_j, randn_like(x, generator))
    cdf = torch.softmax(log_w, dim=1).cumsum(1)
    u = rng.rand(B, 1, generator=generator, dtype=torch.float64, device=dev)
    pick = torch.searchsorted(cdf.contiguous(), u).clamp_max(P - 1).squeeze(1)
    cloud = x.view(B, P, D)
    return cloud[torch.arange(B, device=dev), pick], {
        "resamples": resamples.mean().item(), "ess_min": ess_min, "particles": cloud,
        "log_weights": torch.log_softmax(log_w, dim=1)}
