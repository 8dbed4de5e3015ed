"""A level grid derived from the model alone: the visited levels that make a few-step solver follow the
model's own probability-flow ODE (GITS, Chen et al. 2024; in the spirit of Align Your Steps, Sabour et al.
2024, and Analytic-DPM's search over trajectories, Bao et al. 2022).

The objective uses only the denoiser ``eps_fn`` and training examples x0: start points
x_L = alpha_bar_L x0 + sigma_bar_L z (E22, the true marginal at level L), a teacher that solves the ODE
from them with DPM-Solver++(3M) on a fine quadratic grid, and a distance between the few-step solver's end
points and the teacher's. Two distances (``objective``):

- ``"mse"``: E |x_0^few - x_0^teacher|^2 over the paired end points, an upper bound on the squared
  Wasserstein-2 distance between the two samplers' distributions (same x_L: a coupling). It asks every
  start point to land where the teacher's lands, so a solver that sends a point to another mode of the
  same mass is charged for it.
- ``"sw"``: the sliced Wasserstein-2 distance squared (Bonneel et al. 2015) between the two sets of end
  points, D times the mean over random unit directions theta of the mean squared difference of the sorted
  projections theta^T x. It compares the distributions, not the pairs, which is what a sampler is judged
  by; it needs enough examples to estimate a distribution (a thousand or more).

The interior levels are optimized by coordinate descent in log(level) with a shrinking set of candidates,
starting from the quadratic grid; level L and the final 0 stay. With a Gaussian start
(``dgm.samplers.gaussian_start``, fitted to the training data) the first level is searched too: the few-step
solver starts there from x_L carried along the Gaussian's exact flow, and the descent runs from quadratic
grids below several top levels (``tops``), keeping the best. Never given a density or exact samples, so the
same call serves a trained network.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.schedule import Schedule
from dgm.samplers.ddim import sample_ddim
from dgm.samplers.dpm_solver import sample_dpmpp_2m, sample_dpmpp_3m
from dgm.samplers.grid import check_grid, level_grid, load_grid, save_grid
from dgm.samplers.unipc import sample_unipc

__all__ = ["GRID_SOLVERS", "OBJECTIVES", "grid_error", "optimized_grid", "run_grid"]

GRID_SOLVERS = {"ddim": sample_ddim, "dpm++2m": sample_dpmpp_2m, "dpm++3m": sample_dpmpp_3m, "unipc": sample_unipc,
                "unipc3": partial(sample_unipc, order=3)}
OBJECTIVES = ("mse", "sw")


def _start(s: Schedule, x0: Tensor, generator) -> Tensor:
    """x_L = alpha_bar_L x0 + sigma_bar_L z for the training examples x0 (E22)."""
    z = rng.randn(tuple(x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
    return s.alpha_bar[s.L].item() * x0 + s.sigma_bar[s.L].item() * z


def grid_error(eps_fn, s: Schedule, sampler: str, grid, x_L: Tensor, target: Tensor, cond=None,
               theta: Tensor | None = None, start=None) -> float:
    """The distance between ``sampler``'s end points on ``grid`` from ``x_L`` and ``target``: the mean over
    examples of |x_0 - target|^2 ("mse"); with ``theta`` (D, P) unit directions, the sliced squared
    Wasserstein-2 distance D mean_p mean_n (sort(x_0 theta_p)_n - sort(target theta_p)_n)^2 ("sw"). With a
    Gaussian ``start`` the solver starts at grid[0] from x_L carried there."""
    x_start = x_L if start is None else start.carry(s, x_L, grid[0])
    x = GRID_SOLVERS[sampler](eps_fn, x_start, s, grid, cond=cond)
    if theta is None:
        return float(((x - target) ** 2).flatten(1).sum(1).mean())
    u = (x.flatten(1).to(theta.dtype) @ theta).sort(0).values
    v = (target.flatten(1).to(theta.dtype) @ theta).sort(0).values
    return float(((u - v) ** 2).mean()) * theta.shape[0]


def _directions(x0: Tensor, projections: int) -> Tensor:
    """``projections`` random unit directions (D, P) in x0's flattened space (seeded: the search is
    deterministic)."""
    D = x0[0].numel()
    theta = torch.randn(D, projections, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (theta / theta.norm(dim=0, keepdim=True)).to(device=x0.device, dtype=x0.dtype)


def optimized_grid(eps_fn, s: Schedule, sampler: str, nfe: int, x0: Tensor, *, generator=None,
                   teacher_steps: int = 200, sweeps: int = 4, candidates: int = 9, cond=None,
                   objective: str = "mse", projections: int = 256, start=None, tops=(1.0, 0.8, 0.6, 0.45),
                   return_info: bool = False):
    """The grid of ``nfe + 1`` levels (L, ..., 0) that minimizes the few-step error against the teacher.

    Args:
        eps_fn: the denoiser, ``eps_fn(x, i)`` (or ``(x, i, cond)``).
        sampler: one of ``GRID_SOLVERS`` ("ddim", "dpm++2m", "dpm++3m", "unipc", "unipc3").
        nfe: denoiser calls of the grid (2..L); 1 has no interior level and gives [L, 0].
        x0: training examples (m, ...) in model space; a few hundred to a few thousand suffice.
        generator: draws the noise of the start points (the result is deterministic given it).
        teacher_steps: NFE of the teacher (DPM-Solver++(3M), quadratic grid), at most L.
        sweeps: coordinate-descent passes; the candidate range in log(level) halves each pass.
        candidates: levels tried per coordinate and pass.
        objective: "mse" (paired end points) or "sw" (sliced Wasserstein-2 between the sets); module docstring.
        projections: directions of the "sw" objective.
        start: a ``GaussianStart`` fitted to the training data: the first level is searched too (module
            docstring); None keeps level L.
        tops: with ``start``, the descent runs from the quadratic grid below each level round(top L).
    Returns the grid (a list of ints); with ``return_info`` also a dict with the objective of the
    quadratic grid and of the result ("error_quadratic", "error") and the settings.
    """
    if sampler not in GRID_SOLVERS:
        raise ValueError(f"cannot optimize a grid for sampler {sampler!r}; choose one of {tuple(GRID_SOLVERS)}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or not 1 <= nfe <= s.L:
        raise ValueError(f"nfe must be an integer in 1..{s.L}, got {nfe!r}")
    if not isinstance(x0, Tensor) or x0.ndim < 2 or len(x0) < 2:
        raise ValueError(f"x0 must be a tensor of at least 2 training examples (m, ...), got {type(x0).__name__}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown grid objective {objective!r}; choose one of {OBJECTIVES}")
    if start is not None and (not tops or not all(0 < top <= 1 for top in tops)):
        raise ValueError(f"tops must be fractions of L in (0, 1], at least one, got {tops!r}")
    if not 1 <= teacher_steps <= s.L or sweeps < 0 or candidates < 2 or projections < 1:
        raise ValueError(f"bad search settings: teacher_steps={teacher_steps!r} (1..{s.L}), sweeps={sweeps!r}, "
                         f"candidates={candidates!r}, projections={projections!r}")
    with torch.no_grad():
        x_L = _start(s, x0, generator)
        target = sample_dpmpp_3m(eps_fn, x_L, s, level_grid(s, teacher_steps), cond=cond)
        theta = _directions(x0, projections) if objective == "sw" else None

        def error(grid):
            return grid_error(eps_fn, s, sampler, grid, x_L, target, cond, theta, start)

        start_error = error(level_grid(s, nfe))
        best, grid = math.inf, None
        firsts = [s.L] if start is None else sorted({max(nfe, round(top * s.L)) for top in tops}, reverse=True)
        for top in firsts:
            first = level_grid(s, nfe) if top == s.L else _quadratic_below(top, nfe)
            err, trial = _descend(error, first, s.L, sweeps, candidates, start is not None)
            if err < best:
                best, grid = err, trial
    grid = check_grid(s, grid)
    if not return_info:
        return grid
    return grid, {"method": "teacher-matching coordinate descent (GITS-style)", "objective": objective,
                  "start": "gaussian" if start is not None else "x_L", "error_quadratic": start_error,
                  "error": best, "teacher_steps": teacher_steps, "sweeps": sweeps, "examples": len(x0)}


def _quadratic_below(top: int, nfe: int) -> list[int]:
    """``nfe`` distinct levels 1 + (top - 1) (1 - k/nfe)^2, k = 0..nfe-1, then 0 (level_grid's spacing below
    ``top`` >= nfe)."""
    levels = [round(1 + (top - 1) * (1 - k / nfe) ** 2) for k in range(nfe)]
    for j in range(nfe - 1, -1, -1):
        levels[j] = max(levels[j], 1 if j == nfe - 1 else levels[j + 1] + 1)
    return levels + [0]


def _descend(error, grid: list[int], L: int, sweeps: int, candidates: int, move_first: bool):
    """Coordinate descent on the levels of ``grid`` (all but the final 0; the first only if ``move_first``)
    in log(level), ``candidates`` per coordinate in a range that halves each sweep: (error, grid)."""
    best, width, nfe = error(grid), 0.5, len(grid) - 1
    for _ in range(sweeps):
        for k in range(nfe - 1, -1 if move_first else 0, -1):  # low noise first
            lo, hi = grid[k + 1] + 1, L if k == 0 else grid[k - 1] - 1
            if lo >= hi:
                continue
            u = math.log(grid[k])
            tried = {grid[k]}
            for c in torch.linspace(-width, width, candidates).tolist():
                lvl = min(max(round(math.exp(u + c)), lo), hi)
                if lvl in tried:
                    continue
                tried.add(lvl)
                trial = grid[:k] + [lvl] + grid[k + 1:]
                err = error(trial)
                if err < best:
                    best, grid = err, trial
        width /= 2
    return best, grid


def run_grid(run_dir, eps_fn, s: Schedule, sampler: str, nfe: int, x0: Tensor, *, generator=None,
             cond=None, step: int | None = None, **search) -> list[int]:
    """The optimized grid for ``sampler`` and ``nfe`` stored in ``run_dir`` (grid_<sampler>_<nfe>.json);
    computed with :func:`optimized_grid` and stored there (with the checkpoint's ``step``) the first time, and
    again when the stored one was derived at another step. The hook for ``dgm sample --grid optimized``."""
    grid = load_grid(run_dir, s, sampler, nfe, step=step)
    if grid is None:
        grid, info = optimized_grid(eps_fn, s, sampler, nfe, x0, generator=generator, cond=cond,
                                    return_info=True, **search)
        if step is not None:
            info["step"] = int(step)
        save_grid(run_dir, s, sampler, grid, **info)
    return grid
