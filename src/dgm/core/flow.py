"""The probability-flow ODE of the forward process in continuous levels t in [0, L] (EQUATIONS.md E19,
E33; Song et al. 2021), as docs/LIKELIHOOD.md derives it in the book's notation.

With x_t = a(t) x_0 + s(t) eps, a = alpha_bar (interpolated: log a linear between levels,
``Schedule.alpha_bar_at``) and s = sigma_bar = sqrt(1 - a^2), the forward SDE has drift f x and diffusion
g with f = d log a / dt = c(t) and g^2 = d s^2/dt - 2 f s^2 = -2 c(t). Its probability-flow ODE is

    dx/dt = f x - g^2 / 2 * score = c(t) (x - eps*(x, t) / s(t))                               (F1)

(score = -eps* / s, E33), and along a solution d log p_t(x_t) / dt = -div(drift) with

    div(drift) = c(t) (D - div_x eps*(x, t) / s(t)).                                            (F2)
"""

from __future__ import annotations

from torch import Tensor

from dgm.core.forward import signal_and_noise
from dgm.core.schedule import Schedule

__all__ = ["pf_drift", "pf_divergence"]


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


def _rate(s: Schedule, t: Tensor, like: Tensor) -> Tensor:
    c = s.log_alpha_bar_rate(t).to(dtype=like.dtype, device=like.device)
    return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))
