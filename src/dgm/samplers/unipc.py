"""UniPC (Zhao et al. 2023): a DPM-Solver++ multistep predictor with the UniC corrector (B(h) = e^h - 1, "bh2").

After each denoiser call at a newly reached level t, UniC re-takes the step that led there, now using the
new x0_hat(x_t) as one more point of the polynomial; the corrected x_t starts the next step. The corrector
needs no extra denoiser call, so the NFE is that of the predictor. With order 2 this is diffusers'
``UniPCMultistepScheduler(solver_order=2, solver_type="bh2")``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core.schedule import Schedule
from dgm.samplers.common import predict
from dgm.samplers.dpm_solver import multistep_update
from dgm.samplers.grid import check_grid

__all__ = ["sample_unipc", "unic_correct"]


def unic_correct(x_s: Tensor, history: list[Tensor], lam_hist: list[float], lam_t: float, a_t: float,
                 sig_ratio: float, x0_t: Tensor, order: int) -> Tensor:
    """UniC of ``order`` (Zhao et al. 2023, Algorithm 2, data prediction, B(h) = e^h - 1 in -h).

    ``x_s`` at lambda ``lam_hist[0]``; ``history`` the x0_hat at ``lam_hist`` (newest first, at least
    ``order``); ``x0_t`` the new x0_hat at ``lam_t``; ``sig_ratio`` = sigma_t / sigma_s. With h = lam_t -
    lam_s, r_k = (lambda_{s_k} - lambda_s) / h, D_k = (m_k - m_0) / r_k (k < order) and r = 1 for x0_t,
    the weights rho solve sum_k rho_k r_k^(i-1) = i! phi_{i+1}(-h) (-h) / B(-h), i = 1..order (rho = 1/2
    at order 1), and x_t = sig_ratio x_s - a_t expm1(-h) m_0 - a_t B(-h) (sum_k rho_k D_k + rho_t (x0_t - m_0)).
    """
    m0 = history[0]
    h = lam_t - lam_hist[0]
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1
    rks = [(lam_hist[k] - lam_hist[0]) / h for k in range(1, order)] + [1.0]
    d1s = [(history[k] - m0) / rks[k - 1] for k in range(1, order)]
    if order == 1:
        rhos = [0.5]
    else:
        h_phi_k, fact, b = h_phi_1 / hh - 1, 1, []
        for i in range(1, order + 1):
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        R = torch.tensor([[r ** (i - 1) for r in rks] for i in range(1, order + 1)], dtype=torch.float64)
        rhos = torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()
    corr = sum((rho * d for rho, d in zip(rhos[:-1], d1s, strict=True)), torch.zeros_like(m0))
    return sig_ratio * x_s - a_t * h_phi_1 * m0 - a_t * b_h * (corr + rhos[-1] * (x0_t - m0))


def sample_unipc(eps_fn, x_L: Tensor, s: Schedule, grid, *, order: int = 2, generator=None, clip=None,
                 callback=None, cond=None) -> Tensor:
    """UniPC over the levels of ``grid``: DPM-Solver++ of ``order`` (2 or 3) as predictor, UniC as corrector
    at every visited level after the first; the step to level 0 is first order (x0_hat), as in
    :func:`dgm.samplers.dpm_solver.sample_dpmpp_2m`. ``generator`` is unused (deterministic)."""
    if order not in (2, 3):
        raise ValueError(f"UniPC order must be 2 or 3, got {order!r}")
    grid = check_grid(s, grid)
    a = [s.alpha_bar[t].item() for t in grid]
    sig = [s.sigma_bar[t].item() for t in grid]
    lam = [math.log(a_j / v) if v > 0 else math.inf for a_j, v in zip(a, sig, strict=True)]
    x, x_prev, used = x_L, None, 0
    history: list[Tensor] = []
    for j in range(1, len(grid)):
        _, x0_hat = predict(eps_fn, s, x, grid[j - 1], clip, cond)
        if x_prev is not None:  # correct the step that reached grid[j - 1]
            x = unic_correct(x_prev, history, lam[j - 2::-1], lam[j - 1], a[j - 1], sig[j - 1] / sig[j - 2],
                             x0_hat, used)
        history = [x0_hat] + history[: order - 1]
        if grid[j] == 0:
            x = x0_hat
        else:
            used = min(order, len(history))
            x_prev = x
            x = multistep_update(x, history, lam[max(0, j - order): j + 1], a[j], sig[j] / sig[j - 1], used)
        if callback is not None:
            callback({"level": grid[j - 1], "next_level": grid[j], "x": x, "x0_hat": x0_hat})
    return x
