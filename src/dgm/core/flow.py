"""The probability-flow ODE of the forward process in continuous levels t in [0, L] (EQUATIONS.md E19,
E33; Song et al. 2021), as docs/LIKELIHOOD.md derives it in the book's notation.

With x_t = a(t) x_0 + s(t) eps, a = alpha_bar (interpolated: log a linear between levels,
``Schedule.alpha_bar_at``) and s = sigma_bar = sqrt(1 - a^2), the forward SDE has drift f x and diffusion
g with f = d log a / dt = c(t) and g^2 = d s^2/dt - 2 f s^2 = -2 c(t). Its probability-flow ODE is

    dx/dt = f x - g^2 / 2 * score = c(t) (x - eps*(x, t) / s(t))                               (F1)

(score = -eps* / s, E33), and along a solution d log p_t(x_t) / dt = -div(drift) with

    div(drift) = c(t) (D - div_x eps*(x, t) / s(t)).                                            (F2)

For Gaussian data N(m, U diag(lam) U^T) the marginal at level i is N(a_i m, U diag(a_i^2 lam + s_i^2) U^T)
(E22) and F1 is linear, with the exact solution from level i to level j

    x_j = a_j m + U diag(sqrt((a_j^2 lam + s_j^2) / (a_i^2 lam + s_i^2))) U^T (x_i - a_i m)      (F3)

(each eigen-direction is scaled by the ratio of the marginal's standard deviations; the flow of a Gaussian
is the linear map between its marginals that keeps the directions; Wang & Vastola 2023).
"""

from __future__ import annotations

from torch import Tensor

from dgm.core.forward import signal_and_noise
from dgm.core.schedule import Schedule

__all__ = ["gaussian_flow", "pf_drift", "pf_divergence"]


def pf_drift(s: Schedule, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """dx/dt = c(t) (x_t - eps_hat / sigma_bar(t)), c = d log alpha_bar / dt (F1); t a float tensor (B,)."""
    c = _rate(s, t, x_t)
    _, sigma = signal_and_noise(s, t, x_t)
    return c * (x_t - eps / sigma)


def pf_divergence(s: Schedule, x_t: Tensor, div_eps: Tensor, t: Tensor) -> Tensor:
    """div(drift) = c(t) (D - div eps_hat / sigma_bar(t)) per example (F2): div_eps (B,) -> (B,)."""
    D = x_t[0].numel()
    c = s.log_alpha_bar_rate(t).to(dtype=x_t.dtype, device=x_t.device)
    sigma = s.sigma_bar_at(t).to(dtype=x_t.dtype, device=x_t.device)
    return c * (D - div_eps / sigma)


def gaussian_flow(s: Schedule, x_i: Tensor, i: int, j: int, mean: Tensor, eigvecs: Tensor,
                  eigvals: Tensor) -> Tensor:
    """The probability-flow ODE of Gaussian data N(mean, eigvecs diag(eigvals) eigvecs^T) solved exactly from
    level ``i`` to level ``j`` (F3): x_i (B, ...) -> x_j, each example flattened to the D of ``mean`` (D,),
    ``eigvecs`` (D, D) orthonormal columns, ``eigvals`` (D,) >= 0."""
    a_i, s_i = s.alpha_bar[i].item(), s.sigma_bar[i].item()
    a_j, s_j = s.alpha_bar[j].item(), s.sigma_bar[j].item()
    lam = eigvals.to(dtype=x_i.dtype, device=x_i.device)
    U = eigvecs.to(dtype=x_i.dtype, device=x_i.device)
    m = mean.to(dtype=x_i.dtype, device=x_i.device)
    ratio = ((a_j**2 * lam + s_j**2) / (a_i**2 * lam + s_i**2)).sqrt()
    x = x_i.flatten(1)
    return (a_j * m + ((x - a_i * m) @ U * ratio) @ U.T).reshape(x_i.shape)


def _rate(s: Schedule, t: Tensor, like: Tensor) -> Tensor:
    c = s.log_alpha_bar_rate(t).to(dtype=like.dtype, device=like.device)
    return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))
