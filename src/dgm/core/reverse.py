"""The tractable reverse conditional kernel p(x_{i-1} | x_i, x_0) (EQUATIONS.md E22-E25), and the one place
where the variance of the model's reverse kernel p(x_{i-1} | x_i) is chosen."""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core.forward import at_level, check_levels
from dgm.core.schedule import Schedule

__all__ = ["VARIANCES", "posterior", "posterior_coefficients", "reverse_variance", "variance_table"]


def posterior_coefficients(s: Schedule) -> tuple[Tensor, Tensor]:
    """A_i = alpha_bar_{i-1} beta_i^2 / (1 - alpha_bar_i^2), B_i = (1 - alpha_bar_{i-1}^2) alpha_i / (1 - ...) (E24).

    Float64 tables of length L + 1 (index 0 unused and set to 0); A_1 = 1, B_1 = 0. The schedule computes
    them once (``s.A``, ``s.B``).
    """
    return s.A, s.B


def posterior(s: Schedule, x_i: Tensor, x0: Tensor, i) -> tuple[Tensor, Tensor]:
    """p(x_{i-1} | x_i, x_0) = N(A_i x_0 + B_i x_i, sigma2(i) I): the reverse conditional kernel (E22, E24, E25).

    Returns ``(mean, var)``; ``var`` is shaped to broadcast against ``mean`` (a 0-d tensor for an int level).
    The seed post's sigma2(i) omits the squares on alpha_bar (erratum 25).
    """
    check_levels(s, i, x_i, x0)
    mean = at_level(s.A, i, x0) * x0 + at_level(s.B, i, x0) * x_i
    var = at_level(s.sigma2, i, x0)
    return mean, var


# ----------------------------------------------------------------------------------- reverse variances


def variance_table(s: Schedule, name: str) -> Tensor:
    """The per-level variance of the model's reverse kernel p(x_{i-1} | x_i) = N(mu_phi, v_i I) (E26, E39).

    Float64, length L + 1, index = level (entry 0 unused):
    - ``"fixed_small"``: v_i = sigma2(i) (E25), the true posterior variance given x_0: right when x_0 is
      a point mass; Ho et al.'s default;
    - ``"fixed_large"``: v_i = beta_i^2, right when x_0 ~ N(0, I) (Ho et al. 2020, section 3.2).
    Level 1 is the decoder p(x_0 | x_1): sigma2(1) = 0, so both use sigma2(2) there (Ho et al.'s clipped
    choice; beta_1^2 when L = 1).
    """
    if name == "fixed_small":
        v = s.sigma2.clone()
    elif name == "fixed_large":
        v = s.beta**2
    else:
        raise ValueError(f"unknown reverse variance {name!r}; choose one of {', '.join(VARIANCES)}")
    v[0] = 0.0
    v[1] = s.sigma2[2] if s.L >= 2 else s.beta[1] ** 2
    return v


VARIANCES = ("fixed_small", "fixed_large")


def reverse_variance(variance, s: Schedule, x_i: Tensor, i, cond=None):
    """v_i of the model's reverse kernel at level ``i`` (an int), from one description of the variance.

    ``variance`` is a name in ``VARIANCES``, a float64 table of length L + 1 (index = level, e.g. fitted
    per level after training), or a callable ``var_fn(x_i, i, cond=None) -> Tensor`` broadcastable to x_i
    (a learned variance: a model's denoiser output beside eps_hat). Returns a Python float for the first
    two, a tensor for a callable. The bound (``vlb``, its decoder term) and ancestral sampling read the
    variance only through here.
    """
    if isinstance(variance, str):
        return variance_table(s, variance)[i].item()
    elif isinstance(variance, Tensor):
        if variance.shape != (s.L + 1,):
            raise ValueError(f"a variance table must have shape ({s.L + 1},), got {tuple(variance.shape)}")
        return variance[i].item()
    elif callable(variance):
        levels = torch.full((x_i.shape[0],), i, dtype=torch.long, device=x_i.device)
        return variance(x_i, levels) if cond is None else variance(x_i, levels, cond=cond)
    else:
        raise ValueError(f"variance must be a name ({', '.join(VARIANCES)}), a per-level table or a callable, "
                         f"got {type(variance).__name__}")
