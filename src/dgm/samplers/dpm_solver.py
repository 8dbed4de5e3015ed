"""DPM-Solver++(2M) and (3M) in the data-prediction form (Lu et al. 2022b; EQUATIONS.md E41), and the stochastic
SDE-DPM-Solver++(2M)."""

from __future__ import annotations

import math

from torch import Tensor

from dgm.core.schedule import Schedule
from dgm.samplers.common import predict, randn_like
from dgm.samplers.grid import check_grid

__all__ = ["multistep_update", "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_sde_dpmpp_2m", "sde_multistep_update"]


def sample_dpmpp_2m(eps_fn, x_L: Tensor, s: Schedule, grid, *, generator=None, clip=None, callback=None,
                    cond=None) -> Tensor:
    """DPM-Solver++(2M) over the levels of ``grid``: one denoiser call per level but the last.

    With lambda = log(alpha_bar / sigma_bar) and h_j = lambda_j - lambda_{j-1}:
    x_j = (sigma_j / sigma_{j-1}) x - alpha_j expm1(-h_j) D_j, D_j = (1 + 1/(2 r)) x0_hat_{j-1} - 1/(2 r)
    x0_hat_{j-2}, r = h_{j-1} / h_j (first step: D = x0_hat). The final step to level 0 is first order
    (diffusers' lower_order_final), which returns the last x0_hat. ``generator`` is unused (deterministic).
    """
    return _multistep(eps_fn, x_L, s, grid, 2, clip=clip, callback=callback, cond=cond)


def sample_dpmpp_3m(eps_fn, x_L: Tensor, s: Schedule, grid, *, generator=None, clip=None, callback=None,
                    cond=None) -> Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022b, Algorithm 2 at order 3; diffusers' ``solver_order=3``).

    The step from lambda_{j-1} to lambda_j (h = lambda_j - lambda_{j-1}) uses the last three x0_hat m0, m1, m2
    at lambda_{j-1}, lambda_{j-2}, lambda_{j-3}: with r0 = h_{j-1} / h, r1 = h_{j-2} / h,
    D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
    D2 = (D1_0 - D1_1) / (r0 + r1),
    x_j = (sigma_j / sigma_{j-1}) x - alpha_j expm1(-h) m0 + alpha_j (expm1(-h) / h + 1) D1
    - alpha_j ((expm1(-h) + h) / h^2 - 1/2) D2.
    The first step is first order and the second second order (as 2M); the final step to level 0 is first
    order and returns the last x0_hat. ``generator`` is unused (deterministic).
    """
    return _multistep(eps_fn, x_L, s, grid, 3, clip=clip, callback=callback, cond=cond)


def sample_sde_dpmpp_2m(eps_fn, x_L: Tensor, s: Schedule, grid, *, generator=None, clip=None, callback=None,
                        cond=None) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, section 5; diffusers' ``algorithm_type="sde-dpmsolver++"``, midpoint
    form): the second-order multistep solver of the reverse SDE in the data-prediction form, fresh noise z ~ N(0, I)
    at every step but the last. With h = lambda_j - lambda_{j-1} and D as in DPM-Solver++(2M):

        x_j = (sigma_j / sigma_{j-1}) e^{-h} x + alpha_j (1 - e^{-2h}) D + sigma_j sqrt(1 - e^{-2h}) z.

    Its first-order step (D = x0_hat) is DDIM with eta = 1 (E40): the Gaussian posterior
    q(x_j | x_{j-1}, x0 = x0_hat) between two grid levels (E24, E25 when they are adjacent). The noise it adds
    corrects earlier errors of an imperfect denoiser, where the deterministic solvers carry them along (Karras et
    al. 2022, section 4). The final step to level 0 returns the last x0_hat, as DPM-Solver++(2M)'s.
    """
    return _multistep(eps_fn, x_L, s, grid, 2, clip=clip, callback=callback, cond=cond, generator=generator,
                      stochastic=True)


def sde_multistep_update(x: Tensor, history: list[Tensor], lam: list[float], a_j: float, sig_ratio: float,
                         sig_j: float, order: int, noise: Tensor) -> Tensor:
    """One SDE-DPM-Solver++ step (order 1 or 2) to lambda ``lam[-1]`` from x at ``lam[-2]``, with ``noise`` ~ N(0, I);
    ``history`` as in :func:`multistep_update`, ``sig_ratio`` = sigma_j / sigma_{j-1}, ``sig_j`` = sigma_j."""
    h = lam[-1] - lam[-2]
    d = _data_term(history, lam, order)
    return sig_ratio * math.exp(-h) * x - a_j * math.expm1(-2 * h) * d + sig_j * math.sqrt(-math.expm1(-2 * h)) * noise


def _data_term(history: list[Tensor], lam: list[float], order: int) -> Tensor:
    """E41's D: x0_hat at order 1; (1 + 1/(2 r)) x0_hat_{j-1} - 1/(2 r) x0_hat_{j-2}, r = h_{j-1} / h_j, at order 2."""
    if order == 1:
        return history[0]
    r0 = (lam[-2] - lam[-3]) / (lam[-1] - lam[-2])
    return (1 + 1 / (2 * r0)) * history[0] - 1 / (2 * r0) * history[1]


def multistep_update(x: Tensor, history: list[Tensor], lam: list[float], a_j: float, sig_ratio: float,
                     order: int) -> Tensor:
    """One DPM-Solver++ multistep step to lambda ``lam[-1]`` from x at ``lam[-2]``, where ``history`` holds
    x0_hat at ``lam[-2], lam[-3], ...`` (newest first) and ``order`` <= len(history) is the order used."""
    h = lam[-1] - lam[-2]
    em = math.expm1(-h)
    if order < 3:
        return sig_ratio * x - a_j * em * _data_term(history, lam, order)
    m0 = history[0]
    r0 = (lam[-2] - lam[-3]) / h
    r1 = (lam[-3] - lam[-4]) / h
    d1_0, d1_1 = (m0 - history[1]) / r0, (history[1] - history[2]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    return sig_ratio * x - a_j * em * m0 + a_j * (em / h + 1) * d1 - a_j * ((em + h) / h**2 - 0.5) * d2


def _multistep(eps_fn, x_L: Tensor, s: Schedule, grid, order: int, *, clip=None, callback=None,
               cond=None, generator=None, stochastic: bool = False) -> Tensor:
    """DPM-Solver++ of ``order`` over ``grid`` (the SDE solver's where ``stochastic``): step j uses min(order, j)
    past x0_hat; the step to 0 is first order, x_0 = x0_hat (sigma ratio 0 and alpha (1 - e^{-h}) = 1)."""
    grid = check_grid(s, grid)
    a = [s.alpha_bar[t].item() for t in grid]
    sig = [s.sigma_bar[t].item() for t in grid]
    lam = [math.log(a_j / v) if v > 0 else math.inf for a_j, v in zip(a, sig, strict=True)]
    x = x_L
    history: list[Tensor] = []
    for j in range(1, len(grid)):
        _, x0_hat = predict(eps_fn, s, x, grid[j - 1], clip, cond)
        history = [x0_hat] + history[: order - 1]
        if grid[j] == 0:
            x = x0_hat
        elif stochastic:
            noise = randn_like(x, generator)
            x = sde_multistep_update(x, history, lam[max(0, j - order): j + 1], a[j], sig[j] / sig[j - 1], sig[j],
                                     min(order, len(history)), noise)
        else:
            x = multistep_update(x, history, lam[max(0, j - order): j + 1], a[j], sig[j] / sig[j - 1],
                                 min(order, len(history)))
        if callback is not None:
            callback({"level": grid[j - 1], "next_level": grid[j], "x": x, "x0_hat": x0_hat})
    return x
