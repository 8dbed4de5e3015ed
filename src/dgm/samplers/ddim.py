"""DDIM (Song et al. 2021): the generalized step from level i to any j < i (EQUATIONS.md E40)."""

from __future__ import annotations

import math

from torch import Tensor

from dgm.core.parameterization import eps_to_x0
from dgm.core.schedule import Schedule
from dgm.samplers.common import predict, randn_like
from dgm.samplers.grid import check_grid

__all__ = ["ddim_step", "sample_ddim"]


def ddim_step(s: Schedule, x_i: Tensor, eps: Tensor, i: int, j: int, *, eta: float = 0.0, noise=None) -> Tensor:
    """x_j = alpha_bar_j x0_hat + sqrt(1 - alpha_bar_j^2 - eta_ij^2) eps_hat + eta_ij z, for j < i (E40).

    eta_ij^2 = eta^2 (1 - alpha_bar_j^2) / (1 - alpha_bar_i^2) (1 - alpha_bar_i^2 / alpha_bar_j^2);
    eta = 0 is deterministic DDIM, eta = 1 the ancestral (posterior) step. ``j = 0`` returns x0_hat.
    """
    if not (isinstance(i, int) and isinstance(j, int)) or not 0 <= j < i <= s.L:
        raise ValueError(f"ddim_step needs integer levels 0 <= j < i <= {s.L}, got i={i!r}, j={j!r}")
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta!r}")
    a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
    x0_hat = eps_to_x0(s, x_i, eps, i)
    eta2 = eta**2 * (1 - a_j**2) / (1 - a_i**2) * (1 - a_i**2 / a_j**2)
    dir_coef = math.sqrt(max(1 - a_j**2 - eta2, 0.0))
    x_j = a_j * x0_hat + dir_coef * eps
    if eta2 > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        x_j = x_j + math.sqrt(eta2) * noise
    return x_j


def sample_ddim(eps_fn, x_L: Tensor, s: Schedule, grid, *, eta: float = 0.0, generator=None, clip=None,
                callback=None, cond=None) -> Tensor:
    """DDIM (E40) over the levels of ``grid`` (one denoiser call per level but the last, 0).

    ``eta = 0`` is deterministic; ``eta = 1`` takes the posterior step of the respaced chain. The last step
    to level 0 returns x0_hat. ``callback`` receives ``{"level", "next_level", "x", "x0_hat"}`` per call.
    """
    grid = check_grid(s, grid)
    x = x_L
    for lvl, nxt in zip(grid[:-1], grid[1:], strict=True):
        eps, x0_hat = predict(eps_fn, s, x, lvl, clip, cond)
        noise = randn_like(x, generator) if eta > 0 and nxt > 0 else None
        x = ddim_step(s, x, eps, lvl, nxt, eta=eta if nxt > 0 else 0.0, noise=noise)
        if callback is not None:
            callback({"level": lvl, "next_level": nxt, "x": x, "x0_hat": x0_hat})
    return x
