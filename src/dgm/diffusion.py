"""The fixed forward process and its tractable reverse conditional (EQUATIONS.md E17-E25, E35).

Levels ``i`` are an int or a LongTensor of shape (B,) with values in 1..L; per-level factors broadcast over
the trailing dimensions of ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gaussian import append_dims, sum_flat
from .schedule import Schedule

__all__ = ["at_level", "q_step", "q_sample", "posterior", "posterior_coefficients", "prior_kl"]


def at_level(vec: Tensor, i, like: Tensor) -> Tensor:
    """Pick ``vec[i]`` (a float64 per-level table) and broadcast it over ``like``'s shape and dtype.

    ``i`` is an int (a scalar factor) or a LongTensor of shape (B,) with B = like.shape[0].
    """
    if isinstance(i, int):
        return vec[i].to(dtype=like.dtype, device=like.device)
    i = torch.as_tensor(i, device=vec.device)
    if i.ndim == 0:
        return vec[i].to(dtype=like.dtype, device=like.device)
    if i.ndim != 1 or i.shape[0] != like.shape[0]:
        raise ValueError(f"levels must have shape ({like.shape[0]},) to match x, got {tuple(i.shape)}")
    return append_dims(vec[i].to(dtype=like.dtype, device=like.device), like.ndim)


def _check(s: Schedule, i, *tensors: Tensor) -> None:
    s.check_level(i)
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"shape mismatch: {tuple(shape)} vs {tuple(t.shape)}")


def q_step(s: Schedule, x_prev: Tensor, i, eps: Tensor) -> Tensor:
    """x_i = alpha_i x_{i-1} + beta_i eps_i: one step of the forward kernel (EQUATIONS.md E17, E18)."""
    _check(s, i, x_prev, eps)
    return at_level(s.alpha, i, x_prev) * x_prev + at_level(s.beta, i, x_prev) * eps


def q_sample(s: Schedule, x0: Tensor, i, eps: Tensor) -> Tensor:
    """x_i = alpha_bar_i x_0 + sqrt(1 - alpha_bar_i^2) eps: the perturbation kernel (EQUATIONS.md E19).

    The seed post drops the square root on the noise coefficient (erratum 18).
    """
    _check(s, i, x0, eps)
    return at_level(s.alpha_bar, i, x0) * x0 + at_level(s.sigma_bar, i, x0) * eps


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
    _check(s, i, x_i, x0)
    A, B = _coefficients(s)
    mean = at_level(A, i, x0) * x0 + at_level(B, i, x0) * x_i
    var = at_level(s.sigma2, i, x0)
    return mean, var


def prior_kl(s: Schedule, x0: Tensor) -> Tensor:
    """L_L = KL(q(x_L | x_0) || N(0, I)) in nats per example (EQUATIONS.md E35): shape (B,)."""
    a2 = s.alpha_bar[-1].item() ** 2
    D = x0[0].numel()
    sq = sum_flat(x0.to(torch.float64) ** 2)
    return (0.5 * (a2 * sq - D * a2 - D * torch.log1p(torch.tensor(-a2, dtype=torch.float64)))).to(x0.dtype)


def _coefficients(s: Schedule) -> tuple[Tensor, Tensor]:
    cached = getattr(s, "_posterior_coefficients", None)
    if cached is None:
        cached = posterior_coefficients(s)
        s._posterior_coefficients = cached
    return cached
