"""The fixed forward process: one step, the perturbation kernel and the prior term (EQUATIONS.md E17-E20, E35).

Levels ``i`` are an int or a LongTensor of shape (B,) with values in 1..L; per-level factors broadcast over
the trailing dimensions of ``x``. The perturbation kernel, and every conversion built on
:func:`signal_and_noise`, also takes fractional levels: a float tensor of levels in [0, L].
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core.gaussian import append_dims, sum_flat
from dgm.core.schedule import Schedule

__all__ = ["at_level", "check_levels", "signal_and_noise", "q_step", "q_sample", "prior_kl"]


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


def signal_and_noise(s: Schedule, i, like: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_bar_i, sigma_bar_i) broadcast over ``like``: the tables at integer levels, the schedule's
    interpolation (:meth:`Schedule.alpha_bar_at`) at fractional ones (a float tensor of levels)."""
    if isinstance(i, Tensor) and i.is_floating_point():
        if i.ndim not in (0, 1) or (i.ndim == 1 and i.shape[0] != like.shape[0]):
            raise ValueError(f"levels must have shape ({like.shape[0]},) to match x, got {tuple(i.shape)}")
        a = s.alpha_bar_at(i)
        sigma = torch.sqrt(1.0 - a**2)
        ndim = like.ndim if i.ndim == 1 else 0
        return (append_dims(a.to(dtype=like.dtype, device=like.device), ndim),
                append_dims(sigma.to(dtype=like.dtype, device=like.device), ndim))
    return at_level(s.alpha_bar, i, like), at_level(s.sigma_bar, i, like)


def check_levels(s: Schedule, i, *tensors: Tensor, fractional: bool = False) -> None:
    """Raise ValueError unless the levels ``i`` lie in 1..L (fractional: [0, L]) and the tensors' shapes agree."""
    s.check_level(i, fractional=fractional)
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"shape mismatch: {tuple(shape)} vs {tuple(t.shape)}")


def q_step(s: Schedule, x_prev: Tensor, i, eps: Tensor) -> Tensor:
    """x_i = alpha_i x_{i-1} + beta_i eps_i: one step of the forward kernel (EQUATIONS.md E17, E18)."""
    check_levels(s, i, x_prev, eps)
    return at_level(s.alpha, i, x_prev) * x_prev + at_level(s.beta, i, x_prev) * eps


def q_sample(s: Schedule, x0: Tensor, i, eps: Tensor) -> Tensor:
    """x_i = alpha_bar_i x_0 + sqrt(1 - alpha_bar_i^2) eps: the perturbation kernel (EQUATIONS.md E19).

    The seed post drops the square root on the noise coefficient (erratum 18).
    """
    check_levels(s, i, x0, eps, fractional=True)
    a, sigma = signal_and_noise(s, i, x0)
    return a * x0 + sigma * eps


def prior_kl(s: Schedule, x0: Tensor) -> Tensor:
    """L_L = KL(q(x_L | x_0) || N(0, I)) in nats per example (EQUATIONS.md E35): shape (B,)."""
    a2 = s.alpha_bar[-1].item() ** 2
    D = x0[0].numel()
    sq = sum_flat(x0.to(torch.float64) ** 2)
    return (0.5 * (a2 * sq - D * a2 - D * torch.log1p(torch.tensor(-a2, dtype=torch.float64)))).to(x0.dtype)
