"""The tractable reverse conditional kernel p(x_{i-1} | x_i, x_0) (EQUATIONS.md E22-E25), and the one place
where the variance of the model's reverse kernel p(x_{i-1} | x_i) is chosen."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core.forward import at_level, check_levels, q_sample
from dgm.core.schedule import Schedule

__all__ = [
    "VARIANCES",
    "AnalyticVariance",
    "data_variance",
    "estimate_gamma",
    "posterior",
    "posterior_coefficients",
    "reverse_variance",
    "step_variance",
    "variance_table",
]


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
    per level after training), an :class:`AnalyticVariance`, or a callable ``var_fn(x_i, i, cond=None) ->
    Tensor`` broadcastable to x_i (a learned variance: a model's denoiser output beside eps_hat). Returns a
    Python float, or a tensor for a callable. The bound (``vlb``, its decoder term) and ancestral sampling
    read the variance only through here (and :func:`step_variance` across skipped levels).
    """
    if isinstance(variance, AnalyticVariance):
        return variance.table(s)[i].item()
    elif isinstance(variance, str):
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


def step_variance(variance, s: Schedule, i: int, j: int) -> float:
    """The variance of a step i -> j < i of the respaced chain (forward step variance 1 - alpha_ij^2,
    alpha_ij = alpha_bar_i / alpha_bar_j): "fixed_small" its posterior variance lam2_ij (E25 for the
    respaced chain), "fixed_large" 1 - alpha_ij^2, an :class:`AnalyticVariance` its v*_ij (A2). Per-level
    tables and learned callables hold neighbouring steps only, so they raise for j < i - 1."""
    if isinstance(variance, AnalyticVariance):
        return variance.between(s, i, j)
    a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
    forward = 1.0 - (a_i / a_j) ** 2
    if variance == "fixed_small":
        return (1 - a_j**2) / (1 - a_i**2) * forward
    elif variance == "fixed_large":
        return forward
    elif j == i - 1:
        raise ValueError("step_variance is for skipped levels; use reverse_variance for neighbouring ones")
    else:
        raise ValueError(f"a per-level or learned reverse variance needs neighbouring levels; the grid skips from "
                         f"{i} to {j} (use the full grid, an analytic variance, or one of {', '.join(VARIANCES)})")


# ------------------------------------------------------------------------------- Analytic-DPM (Bao et al.)


class AnalyticVariance:
    """The optimal reverse variance of Analytic-DPM (Bao et al. 2022, Theorem 1), from Gamma_i = E|eps_hat(x_i,
    i)|^2 / D per level (docs/LIKELIHOOD.md A1-A3). For the step i -> j < i of the (respaced) chain,

        v*_ij = lam2_ij + (sigma_bar_i / alpha_ij - sqrt(sigma_bar_j^2 - lam2_ij))^2 (1 - Gamma_i),     (A2)

    alpha_ij = alpha_bar_i / alpha_bar_j and lam2_ij = (1 - alpha_bar_j^2) / (1 - alpha_bar_i^2) (1 - alpha_ij^2)
    its posterior variance (sigma2(i) when j = i - 1). At j = 0 it is sigma_bar_i^2 / alpha_bar_i^2 (1 - Gamma_i),
    the decoder's variance E tr Cov[x0 | x_i] / D when eps_hat = eps*.

    1 - Gamma_i = E tr Cov[eps | x_i] / D (for eps*) is clipped to [0, min(1, (alpha_bar_i / sigma_bar_i)^2
    data_var)] (A4): Cov[eps | x_i] = (alpha_bar_i / sigma_bar_i)^2 Cov[x0 | x_i] and, by the law of total
    variance, E tr Cov[x0 | x_i] <= tr Cov[x0] = D data_var. Without that cap a Monte Carlo Gamma one standard
    error low at the cosine schedule's last level (where 1 - Gamma is about 1e-6 but the coefficient of A2 about
    1e3) inflates v* many times. Checks: Gamma = 1 (a point mass) gives lam2 (fixed small); data N(0, I) has
    Gamma_i = sigma_bar_i^2 and gives 1 - alpha_ij^2 (fixed large).

    ``gamma``: float64 (L + 1,) (entry 0 unused); ``gamma_se``: its standard errors, kept for reports;
    ``data_var``: tr Cov[x0] / D of the data the model was trained on (None: no cap beyond 1).
    """

    def __init__(self, gamma, gamma_se=None, data_var: float | None = None):
        self.gamma = torch.as_tensor(gamma, dtype=torch.float64).flatten()
        self.gamma_se = None if gamma_se is None else torch.as_tensor(gamma_se, dtype=torch.float64).flatten()
        if not torch.isfinite(self.gamma[1:]).all():
            raise ValueError("Gamma of an analytic variance must be finite")
        if data_var is not None and not (math.isfinite(data_var) and data_var > 0):
            raise ValueError(f"data_var must be a positive number, got {data_var!r}")
        self.data_var = data_var
        self._cache: tuple[Schedule, Tensor] | None = None

    def one_minus_gamma(self, s: Schedule, i: int) -> float:
        """1 - Gamma_i clipped to [0, min(1, (alpha_bar_i / sigma_bar_i)^2 data_var)] (A4)."""
        cap = 1.0
        if self.data_var is not None:
            cap = min(cap, (s.alpha_bar[i].item() / s.sigma_bar[i].item()) ** 2 * self.data_var)
        return min(max(1.0 - self.gamma[i].item(), 0.0), cap)

    def between(self, s: Schedule, i: int, j: int) -> float:
        """v*_ij of the step i -> j (A2), for integer levels 0 <= j < i <= L."""
        if self.gamma.shape != (s.L + 1,):
            raise ValueError(f"Gamma has {self.gamma.numel()} entries; a schedule with L = {s.L} needs {s.L + 1}")
        if not 0 <= j < i <= s.L:
            raise ValueError(f"an analytic variance step needs levels 0 <= j < i <= {s.L}, got i={i}, j={j}")
        a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
        alpha_ij = a_i / a_j
        lam2 = (1 - a_j**2) / (1 - a_i**2) * (1 - alpha_ij**2)
        coef = math.sqrt(1 - a_i**2) / alpha_ij - math.sqrt(max(1 - a_j**2 - lam2, 0.0))
        return lam2 + coef**2 * self.one_minus_gamma(s, i)

    def table(self, s: Schedule) -> Tensor:
        """v*_i of the neighbouring steps i -> i - 1 as a float64 table of length L + 1 (entry 0 unused)."""
        if self._cache is None or self._cache[0] is not s:
            v = torch.zeros(s.L + 1, dtype=torch.float64)
            for i in range(1, s.L + 1):
                v[i] = self.between(s, i, i - 1)
            self._cache = (s, v)
        return self._cache[1]


@torch.no_grad()
def estimate_gamma(eps_fn, s: Schedule, x0: Tensor, *, generator: torch.Generator | None = None,
                   max_batch: int = 4096, cond=None) -> tuple[Tensor, Tensor]:
    """Gamma_i = E|eps_hat(x_i, i)|^2 / D at every level, one draw of x_i per example (A3): (gamma, se).

    Monte Carlo over the examples of ``x0`` (model space) and the forward noise; ``se`` is the standard error
    of each level's mean. Float64 tensors of length L + 1 (entry 0 unused). For an ``AnalyticVariance`` also
    pass ``data_variance(x0)``.
    """
    from dgm.core.parameterization import call_denoiser

    B, D = x0.shape[0], x0[0].numel()
    gamma = torch.zeros(s.L + 1, dtype=torch.float64)
    se = torch.zeros(s.L + 1, dtype=torch.float64)
    for lvl in range(1, s.L + 1):
        sums = []
        for start in range(0, B, max_batch):
            xb = x0[start : start + max_batch]
            cb = None if cond is None else cond[start : start + max_batch]
            eps = torch.randn(xb.shape, generator=generator, dtype=torch.float64).to(xb.device, xb.dtype)
            levels = torch.full((xb.shape[0],), lvl, dtype=torch.long, device=xb.device)
            eps_hat = call_denoiser(eps_fn, q_sample(s, xb, levels, eps), levels, cb)
            sums.append(eps_hat.double().reshape(xb.shape[0], -1).pow(2).sum(1).cpu() / D)
        per = torch.cat(sums)
        gamma[lvl] = per.mean()
        se[lvl] = per.std() / math.sqrt(B) if B > 1 else math.inf
    return gamma, se


def data_variance(x0: Tensor) -> float:
    """tr Cov[x0] / D: the per-dimension variance of the data, averaged over dimensions (the cap of A4)."""
    flat = x0.double().reshape(x0.shape[0], -1)
    return flat.var(dim=0).mean().item()
