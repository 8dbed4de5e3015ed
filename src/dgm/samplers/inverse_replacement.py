"""Replacement methods for linear inverse problems: "replace" and RePaint ("repaint").

Both run the ancestral sampler (E39; across skipped levels the posterior step of the respaced chain, E40 with
eta = 1) and, after every step to a level j, overwrite the component of x_j in A's row space with the
observation forward-noised to level j (E19):

    x_j <- (I - V V^T) x_j + alpha_bar_j A^+ y + sigma_bar_j V V^T z,        z ~ N(0, I),

which for a mask replaces the known entries by alpha_bar_j y + sigma_bar_j z (A^+, V: ``LinearObservation``).
Both treat y as noiseless: sigma_y is not used, and at level 0 the row-space component of the draw is A^+ y
exactly (for a mask: the known entries equal y).

``den(x, level) -> eps_hat`` is the counted denoiser on rows (N, D) of ``inverse``; x_L is given.
"""

from __future__ import annotations

import math

from torch import Tensor

from dgm.core.schedule import Schedule
from dgm.samplers.common import randn_like
from dgm.samplers.ddim import ddim_step
from dgm.samplers.inverse_operator import LinearObservation

__all__ = ["sample_replace", "sample_repaint", "repaint_jump_points", "repaint_nfe", "replace_known"]


def replace_known(s: Schedule, op: LinearObservation, x: Tensor, y: Tensor, level: int, generator) -> Tensor:
    """x with its row-space component replaced by y forward-noised to ``level`` (module docstring)."""
    a, sigma = s.alpha_bar[level].item(), s.sigma_bar[level].item()
    known = a * op.pinv(y)
    if sigma > 0:
        known = known + sigma * op.project(randn_like(x, generator))
    return x - op.project(x) + known


def _ancestral_step(den, s: Schedule, x: Tensor, i: int, j: int, generator) -> Tensor:
    """One ancestral step i -> j < i: the posterior step given x0_hat (E40 with eta = 1; x0_hat at j = 0)."""
    eps = den(x, i)
    return ddim_step(s, x, eps, i, j, eta=1.0, noise=randn_like(x, generator) if j > 0 else None)


def sample_replace(den, s: Schedule, x_L: Tensor, grid: list[int], op: LinearObservation, y: Tensor, *,
                   generator=None) -> Tensor:
    """Ancestral sampling with the known part replaced after every step (Song et al. 2021, "Score-based
    generative modeling through SDEs", app. I.2 imputation; the replacement baseline of Lugmayr et al. 2022).

    One denoiser call per level of ``grid`` but the last. It ignores the coupling between the known and the
    unknown part at each level, so its draws are biased (the unknown part is not conditioned on y).
    """
    x = x_L
    for i, j in zip(grid[:-1], grid[1:], strict=True):
        x = replace_known(s, op, _ancestral_step(den, s, x, i, j, generator), y, j, generator)
    return x


def repaint_jump_points(steps: int, jump: int) -> list[int]:
    """Grid positions k (0 = the first level of the grid) where RePaint jumps back: the positions with a
    positive multiple of ``jump`` steps left and at least ``jump`` steps taken (Lugmayr et al. 2022, sec. 4.2;
    their schedule with t_T = 250, j = 10 has the same 24 jump points)."""
    return [steps - m * jump for m in range(1, steps // jump + 1) if steps - m * jump >= jump]


def repaint_nfe(steps: int, jump: int, resamplings: int) -> int:
    """Denoiser calls of RePaint per draw: steps + (resamplings - 1) * jump * (number of jump points)."""
    return steps + (resamplings - 1) * jump * len(repaint_jump_points(steps, jump))


def sample_repaint(den, s: Schedule, x_L: Tensor, grid: list[int], op: LinearObservation, y: Tensor, *,
                   jump: int, resamplings: int, generator=None) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1 with the jumps of sec. 4.2): replacement (``sample_replace``) plus
    resampling, so that the unknown part harmonizes with the known part.

    The grid is walked down one replacement step at a time; at each of ``repaint_jump_points`` the first
    ``resamplings - 1`` arrivals noise x back up ``jump`` grid steps in one draw of the forward kernel,
    x_b = (alpha_bar_b / alpha_bar_a) x_a + sqrt(1 - alpha_bar_b^2 / alpha_bar_a^2) z (equal in law to
    the paper's ``jump`` single forward steps), and walk down again. ``resamplings = 1`` is ``replace``.
    Denoiser calls per draw: :func:`repaint_nfe`.
    """
    n = len(grid) - 1
    left = {k: resamplings - 1 for k in repaint_jump_points(n, jump)}
    x, k = x_L, 0
    while k < n:
        i, j = grid[k], grid[k + 1]
        x = replace_known(s, op, _ancestral_step(den, s, x, i, j, generator), y, j, generator)
        k += 1
        if left.get(k, 0) > 0:
            left[k] -= 1
            lo, hi = grid[k], grid[k - jump]
            ratio = s.alpha_bar[hi].item() / s.alpha_bar[lo].item()
            x = ratio * x + math.sqrt(1.0 - ratio**2) * randn_like(x, generator)
            k -= jump
    return x
