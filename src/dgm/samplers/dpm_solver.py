"""DPM-Solver++(2M) in the data-prediction form (Lu et al. 2022; EQUATIONS.md E41)."""

from __future__ import annotations

import math

from torch import Tensor

from dgm.core.schedule import Schedule
from dgm.samplers.common import predict
from dgm.samplers.grid import check_grid

__all__ = ["sample_dpmpp_2m"]


def sample_dpmpp_2m(eps_fn, x_L: Tensor, s: Schedule, grid, *, generator=None, clip=None, callback=None,
                    cond=None) -> Tensor:
    """DPM-Solver++(2M) over the levels of ``grid``: one denoiser call per level but the last.

    With lambda = log(alpha_bar / sigma_bar) and h_j = lambda_j - lambda_{j-1}:
    x_j = (sigma_j / sigma_{j-1}) x - alpha_j expm1(-h_j) D_j, D_j = (1 + 1/(2 r)) x0_hat_{j-1} - 1/(2 r)
    x0_hat_{j-2}, r = h_{j-1} / h_j (first step: D = x0_hat). The final step to level 0 is first order
    (diffusers' lower_order_final), which returns the last x0_hat. ``generator`` is unused (deterministic).
    """
    grid = check_grid(s, grid)
    a = [s.alpha_bar[t].item() for t in grid]
    sig = [s.sigma_bar[t].item() for t in grid]
    lam = [math.log(a_j / v) if v > 0 else math.inf for a_j, v in zip(a, sig, strict=True)]
    x = x_L
    prev_x0 = None
    for j in range(1, len(grid)):
        _, x0_hat = predict(eps_fn, s, x, grid[j - 1], clip, cond)
        if grid[j] == 0:
            x = x0_hat  # sigma ratio 0 and a (1 - e^{-h}) = 1: the first-order step returns x0_hat
        else:
            h = lam[j] - lam[j - 1]
            if prev_x0 is None:
                D = x0_hat
            else:
                r = (lam[j - 1] - lam[j - 2]) / h
                D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * prev_x0
            x = (sig[j] / sig[j - 1]) * x - a[j] * math.expm1(-h) * D
        prev_x0 = x0_hat
        if callback is not None:
            callback({"level": grid[j - 1], "next_level": grid[j], "x": x, "x0_hat": x0_hat})
    return x
