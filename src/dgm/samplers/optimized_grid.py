"""A level grid derived from the model alone: the visited levels that make a few-step solver follow the
model's own probability-flow ODE (GITS, Chen et al. 2024; in the spirit of Align Your Steps, Sabour et al.
2024, and Analytic-DPM's search over trajectories, Bao et al. 2022).

The objective uses only the denoiser ``eps_fn`` and training examples x0: start points
x_L = alpha_bar_L x0 + sigma_bar_L z (E22, the true marginal at level L), a teacher that solves the ODE
from them with DPM-Solver++(3M) on a fine quadratic grid, and the mean squared distance between the
few-step solver's end points and the teacher's, E |x_0^few - x_0^teacher|^2, an upper bound on the squared
Wasserstein-2 distance between the two samplers' distributions (same x_L: a coupling). The interior levels
are optimized by coordinate descent in log(level) with a shrinking set of candidates, starting from the
quadratic grid; level L and the final 0 stay. Never given a density or exact samples, so the same call
serves a trained network.
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

__all__ = ["GRID_SOLVERS", "optimized_grid", "run_grid"]

GRID_SOLVERS = {"ddim": sample_ddim, "dpm++2m": sample_dpmpp_2m, "dpm++3m": sample_dpmpp_3m, "unipc": sample_unipc,
                "unipc3": partial(sample_unipc, order=3)}


def _start(s: Schedule, x0: Tensor, generator) -> Tensor:
    """x_L = alpha_bar_L x0 + sigma_bar_L z for the training examples x0 (E22)."""
    z = rng.randn(tuple(x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
    return s.alpha_bar[s.L].item() * x0 + s.sigma_bar[s.L].item() * z


def grid_error(eps_fn, s: Schedule, sampler: str, grid, x_L: Tensor, target: Tensor, cond=None) -> float:
    """Mean over examples of |x_0 - target|^2 for ``sampler`` on ``grid`` from ``x_L``."""
    x = GRID_SOLVERS[sampler](eps_fn, x_L, s, grid, cond=cond)
    return float(((x - target) ** 2).flatten(1).sum(1).mean())


def optimized_grid(eps_fn, s: Schedule, sampler: str, nfe: int, x0: Tensor, *, generator=None,
                   teacher_steps: int = 200, sweeps: int = 4, candidates: int = 9, cond=None,
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
    Returns the grid (a list of ints); with ``return_info`` also a dict with the objective of the
    quadratic grid and of the result ("error_quadratic", "error") and the settings.
    """
    if sampler not in GRID_SOLVERS:
        raise ValueError(f"cannot optimize a grid for sampler {sampler!r}; choose one of {tuple(GRID_SOLVERS)}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or not 1 <= nfe <= s.L:
        raise ValueError(f"nfe must be an integer in 1..{s.L}, got {nfe!r}")
    if not isinstance(x0, Tensor) or x0.ndim < 2 or len(x0) < 2:
        raise ValueError(f"x0 must be a tensor of at least 2 training examples (m, ...), got {type(x0).__name__}")
    if not 1 <= teacher_steps <= s.L or sweeps < 0 or candidates < 2:
        raise ValueError(f"bad search settings: teacher_steps={teacher_steps!r} (1..{s.L}), sweeps={sweeps!r}, "
                         f"candidates={candidates!r}")
    with torch.no_grad():
        x_L = _start(s, x0, generator)
        target = sample_dpmpp_3m(eps_fn, x_L, s, level_grid(s, teacher_steps), cond=cond)
        grid = level_grid(s, nfe)
        best = start = grid_error(eps_fn, s, sampler, grid, x_L, target, cond)
        width = 0.5
        for _ in range(sweeps):
            for k in range(nfe - 1, 0, -1):  # interior levels, low noise first
                lo, hi = grid[k + 1] + 1, grid[k - 1] - 1
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
                    err = grid_error(eps_fn, s, sampler, trial, x_L, target, cond)
                    if err < best:
                        best, grid = err, trial
            width /= 2
    grid = check_grid(s, grid)
    if not return_info:
        return grid
    return grid, {"method": "teacher-matching coordinate descent (GITS-style)", "error_quadratic": start,
                  "error": best, "teacher_steps": teacher_steps, "sweeps": sweeps, "examples": len(x0)}


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
