"""The tractable reverse conditional kernel p(x_{i-1} | x_i, x_0) (EQUATIONS.md E22-E25)."""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core.forward import at_level, check_levels
from dgm.core.schedule import Schedule

__all__ = ["posterior", "posterior_coefficients"]


def posterior_coefficients(s: Schedule) -> tuple[Tensor, Tensor]:
    """A_i = alpha_bar_{i-1} beta_i^2 / (1 - alpha_bar_i^2), B_i = (1 - alpha_bar_{i-1}^2) alpha_i / (1 - a_i^2) (E24).

    (a_i = alpha_bar_i.)
    Returned as float64 tables of length L + 1 (index 0 unused and set to 0); A_1 = 1, B_1 = 0.
    """
    A = torch.zeros(s.L + 1, dtype=torch.float64)
    B = torch.zeros(s.L + 1, dtype=torch.float64)
    denom = 1.0 - s.alpha_bar[1:] ** 2
    A[1:] = s.alpha_bar[:-1] * s.beta[1:] ** 2 / denom
    B[1:] = (1.0 - s.alpha_bar[:-1] ** 2) * s.alpha[1:] / denom
    return A, B


def posterior(s: Schedule, x_i: Tensor, x0: Tensor, i) -> tuple[Tensor, Tensor]:
    """p(x_{i-1} | x_i, x_0) = N(A_i x_0 + B_i x_i, sigma2(i) I): the reverse conditional kernel (E22, E24, E25).

    Returns ``(mean, var)``; ``var`` is shaped to broadcast against ``mean`` (a 0-d tensor for an int level).
    The seed post's sigma2(i) omits the squares on alpha_bar (erratum 25).
    """
    check_levels(s, i, x_i, x0)
    A, B = _coefficients(s)
    mean = at_level(A, i, x0) * x0 + at_level(B, i, x0) * x_i
    var = at_level(s.sigma2, i, x0)
    return mean, var


def _coefficients(s: Schedule) -> tuple[Tensor, Tensor]:
    cached = getattr(s, "_posterior_coefficients", None)
    if cached is None:
        cached = posterior_coefficients(s)
        s._posterior_coefficients = cached
    return cached
