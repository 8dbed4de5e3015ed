"""Samplers as stateless functions (EQUATIONS.md E39-E41; STYLE.md 5).

Each ``sample_*(eps_fn, x_L, s, *, steps, generator, clip, callback) -> x_0`` starts from a given x_L and
calls ``eps_fn(x_i, i)`` exactly ``steps`` times (the NFE). ``callback`` receives a dict
``{"level", "next_level", "x", "x0_hat"}`` after every denoiser call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.parameterization import eps_to_mean, eps_to_x0, x0_to_eps
from dgm.core.schedule import Schedule

__all__ = [
    "SAMPLERS",
    "level_grid",
    "ddim_step",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample",
]

SAMPLERS = ("ancestral", "ddim", "dpm++2m")


def level_grid(s: Schedule, steps: int, spacing: str = "quadratic") -> list[int]:
    """``steps + 1`` strictly decreasing levels from L to 0: the ``steps`` visited levels, then 0.

    ``spacing="uniform"``: evenly spaced levels (rounded). ``"quadratic"`` (default): level
    1 + (L - 1) (1 - k/steps)^2, which puts more steps at low noise, as in Song et al.'s DDIM "quad"
    sequence; with the exact eps* of a mixture it reaches the same accuracy with about half the NFE
    (benchmarks/RESULTS.md).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= s.L:
        raise ValueError(f"steps must be an integer in 1..{s.L}, got {steps!r}")
    k = torch.arange(steps, dtype=torch.float64)
    if spacing == "uniform":
        values = s.L - k * s.L / steps
    elif spacing == "quadratic":
        values = 1 + (s.L - 1) * (1 - k / steps) ** 2
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose 'uniform' or 'quadratic'")
    levels = values.round().long().tolist()
    for j in range(steps - 1, -1, -1):  # make them distinct: level of step j >= steps - j
        floor = 1 if j == steps - 1 else levels[j + 1] + 1
        levels[j] = max(levels[j], floor)
    return levels + [0]


def _predict(eps_fn, s: Schedule, x: Tensor, level: int, clip) -> tuple[Tensor, Tensor]:
    """(eps_hat, x0_hat) at ``level``; with ``clip=(lo, hi)`` x0_hat is clamped and eps_hat made consistent."""
    i = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
    eps = eps_fn(x, i)
    x0_hat = eps_to_x0(s, x, eps, level)
    if clip is not None:
        x0_hat = x0_hat.clamp(clip[0], clip[1])
        eps = x0_to_eps(s, x, x0_hat, level)
    return eps, x0_hat


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


def _randn_like(x: Tensor, generator) -> Tensor:
    return rng.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def sample_ancestral(eps_fn, x_L: Tensor, s: Schedule, *, steps=None, generator=None, clip=None, callback=None,
                     spacing: str = "quadratic"):
    """Ancestral sampling with the reverse kernel N(mu_phi, sigma2(i)) (E39); last step x0 = x0_hat(x_1, 1).

    ``steps=None`` (or L) runs all L levels exactly as E39. Fewer steps respace the chain to the levels of
    :func:`level_grid` and take the posterior step of that coarser chain (DDIM with eta = 1, E40).
    """
    x = x_L
    if steps is None or steps == s.L:
        for lvl in range(s.L, 0, -1):
            eps, x0_hat = _predict(eps_fn, s, x, lvl, clip)
            if lvl > 1:
                x = eps_to_mean(s, x, eps, lvl) + math.sqrt(s.sigma2[lvl].item()) * _randn_like(x, generator)
            else:
                x = x0_hat
            if callback is not None:
                callback({"level": lvl, "next_level": lvl - 1, "x": x, "x0_hat": x0_hat})
        return x
    return _sample_eta(eps_fn, x, s, steps=steps, eta=1.0, generator=generator, clip=clip, callback=callback,
                       spacing=spacing)


def sample_ddim(eps_fn, x_L: Tensor, s: Schedule, *, steps=None, eta: float = 0.0, generator=None, clip=None,
                callback=None, spacing: str = "quadratic"):
    """DDIM (E40) on :func:`level_grid` with ``steps`` denoiser calls (default 50, at most L)."""
    steps = min(50, s.L) if steps is None else steps
    return _sample_eta(eps_fn, x_L, s, steps=steps, eta=eta, generator=generator, clip=clip, callback=callback,
                       spacing=spacing)


def _sample_eta(eps_fn, x, s, *, steps, eta, generator, clip, callback, spacing):
    grid = level_grid(s, steps, spacing)
    for lvl, nxt in zip(grid[:-1], grid[1:], strict=True):
        eps, x0_hat = _predict(eps_fn, s, x, lvl, clip)
        noise = _randn_like(x, generator) if eta > 0 and nxt > 0 else None
        x = ddim_step(s, x, eps, lvl, nxt, eta=eta if nxt > 0 else 0.0, noise=noise)
        if callback is not None:
            callback({"level": lvl, "next_level": nxt, "x": x, "x0_hat": x0_hat})
    return x


def sample_dpmpp_2m(eps_fn, x_L: Tensor, s: Schedule, *, steps=None, generator=None, clip=None, callback=None,
                    spacing: str = "quadratic"):
    """DPM-Solver++(2M) in the data-prediction form (E41) on :func:`level_grid`; ``steps`` NFE (default 20).

    First step first order; the final step to level 0 is first order too (diffusers' lower_order_final),
    which returns the last x0_hat. ``generator`` is unused (the solver is deterministic).
    """
    steps = min(20, s.L) if steps is None else steps
    grid = level_grid(s, steps, spacing)
    a = [s.alpha_bar[t].item() for t in grid]
    sig = [s.sigma_bar[t].item() for t in grid]
    lam = [math.log(a_j / v) if v > 0 else math.inf for a_j, v in zip(a, sig, strict=True)]
    x = x_L
    prev_x0 = None
    for j in range(1, len(grid)):
        _, x0_hat = _predict(eps_fn, s, x, grid[j - 1], clip)
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


def sample(
    eps_fn,
    s: Schedule,
    shape,
    *,
    sampler: str = "ancestral",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    clip=None,
    eta: float = 0.0,
    spacing: str = "quadratic",
    device=None,
    dtype=torch.float32,
):
    """Draw x_L ~ N(0, I) of ``shape`` and run the named sampler ("ancestral", "ddim", "dpm++2m").

    ``steps`` is the number of denoiser calls (NFE): default L for ancestral, 50 for DDIM, 20 for
    DPM-Solver++(2M); fewer steps than L visit the levels of :func:`level_grid` with ``spacing``.
    With ``return_trajectory`` it returns ``(x0, trajectory)`` where the trajectory is a
    dict of ``levels`` (visited levels, then 0), ``x`` (len(levels), *shape) and ``x0_hat``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if device is None and generator is not None:
        device = generator.device
    x_L = rng.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    record: list[dict] = []
    cb = record.append if return_trajectory else None
    with torch.no_grad():
        if sampler == "ancestral":
            x0 = sample_ancestral(eps_fn, x_L, s, steps=steps, generator=generator, clip=clip, callback=cb,
                                  spacing=spacing)
        elif sampler == "ddim":
            x0 = sample_ddim(eps_fn, x_L, s, steps=steps, eta=eta, generator=generator, clip=clip, callback=cb,
                             spacing=spacing)
        elif sampler == "dpm++2m":
            x0 = sample_dpmpp_2m(eps_fn, x_L, s, steps=steps, generator=generator, clip=clip, callback=cb,
                                 spacing=spacing)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if not return_trajectory:
        return x0
    traj = {
        "levels": [s.L] + [r["next_level"] for r in record],
        "x": torch.stack([x_L] + [r["x"] for r in record]),
        "x0_hat": torch.stack([r["x0_hat"] for r in record]),
    }
    return x0, traj
