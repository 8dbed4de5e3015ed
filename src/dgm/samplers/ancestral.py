"""Ancestral sampling with the model's reverse kernel N(mu_phi, v_i I) (EQUATIONS.md E39, E40).

The reverse variance v is read through ``dgm.core.reverse.reverse_variance`` (the same choice as the
bound): "fixed_small" (default), "fixed_large", a per-level table or a learned callable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core.parameterization import eps_to_mean
from dgm.core.reverse import reverse_variance, step_variance, variance_table
from dgm.core.schedule import Schedule
from dgm.samplers.common import predict, randn_like
from dgm.samplers.ddim import ddim_step
from dgm.samplers.grid import check_grid

__all__ = ["sample_ancestral"]


def sample_ancestral(eps_fn, x_L: Tensor, s: Schedule, grid, *, variance="fixed_small", generator=None, clip=None,
                     callback=None, cond=None) -> Tensor:
    """Ancestral sampling over ``grid`` (``dgm.samplers.grid.full_grid`` for the chain of E39).

    Between neighbouring levels (i -> i - 1) it draws x_{i-1} = mu_phi(x_i, i) + sqrt(v_i) z (E29, E39).
    Across skipped levels (i -> j < i - 1) it takes the step of the respaced chain, whose forward step has
    variance 1 - alpha_bar_i^2 / alpha_bar_j^2: with "fixed_small" the posterior step (DDIM with eta = 1,
    E40), otherwise the same mean with ``dgm.core.reverse.step_variance`` (fixed large: that forward
    variance; analytic: Bao et al.'s v*_ij). The last step to level 0 returns x0_hat. ``callback`` receives
    ``{"level", "next_level", "x", "x0_hat"}`` after every denoiser call.
    """
    grid = check_grid(s, grid)
    name = variance if isinstance(variance, str) else None
    if name is not None:
        variance = variance_table(s, name)  # resolve the name once (it also checks it)
    x = x_L
    for lvl, nxt in zip(grid[:-1], grid[1:], strict=True):
        eps, x0_hat = predict(eps_fn, s, x, lvl, clip, cond)
        if nxt == 0:
            x = x0_hat
        elif nxt == lvl - 1:
            v = reverse_variance(variance, s, x, lvl, cond)
            std = math.sqrt(v) if isinstance(v, float) else torch.sqrt(v)
            x = eps_to_mean(s, x, eps, lvl) + std * randn_like(x, generator)
        elif name == "fixed_small":
            x = ddim_step(s, x, eps, lvl, nxt, eta=1.0, noise=randn_like(x, generator))
        else:  # skipped levels: the respaced chain's posterior mean, the chosen variance of that step
            v = step_variance(name or variance, s, lvl, nxt)
            x = _respaced_mean(s, x, x0_hat, lvl, nxt) + math.sqrt(v) * randn_like(x, generator)
        if callback is not None:
            callback({"level": lvl, "next_level": nxt, "x": x, "x0_hat": x0_hat})
    return x


def _respaced_mean(s: Schedule, x_i: Tensor, x0_hat: Tensor, i: int, j: int) -> Tensor:
    """The posterior mean of x_j given x_i and x0_hat in the respaced chain (E24 with the step j -> i)."""
    a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
    var_ij = 1.0 - (a_i / a_j) ** 2  # the variance of the respaced forward step j -> i
    return (a_j * var_ij * x0_hat + (1 - a_j**2) * (a_i / a_j) * x_i) / (1 - a_i**2)
