"""``dgm.sample``: draw x_L ~ N(0, I), make the level grid, and run a named solver."""

from __future__ import annotations

import torch

from dgm.core import rng
from dgm.core.schedule import Schedule
from dgm.samplers.ancestral import sample_ancestral
from dgm.samplers.ddim import sample_ddim
from dgm.samplers.dpm_solver import sample_dpmpp_2m, sample_dpmpp_3m, sample_sde_dpmpp_2m
from dgm.samplers.grid import check_grid, full_grid, level_grid
from dgm.samplers.unipc import sample_unipc

__all__ = ["SAMPLERS", "DEFAULT_STEPS", "sample", "sampler_grid"]

SAMPLERS = ("ancestral", "ddim", "dpm++2m", "dpm++3m", "unipc", "unipc3", "sde-dpm++2m")
# None: every level (E39). The SDE solver's 50, as DDIM's: stochastic steps gain from more NFE than the ODE solvers;
# on the MNIST recipe's model (benchmarks/RESULTS.md, "Eighth session") FD 1.25 and confident 0.895 at 50 NFE,
# 1.28 and 0.874 at 20 (seed 0, quadratic grid).
DEFAULT_STEPS = {"ancestral": None, "ddim": 50, "dpm++2m": 20, "dpm++3m": 20, "unipc": 20, "unipc3": 20,
                 "sde-dpm++2m": 50}


def sampler_grid(s: Schedule, sampler: str, steps: int | None = None, spacing: str = "quadratic") -> list[int]:
    """The level grid that ``sample`` uses for ``sampler`` with ``steps`` denoiser calls (NFE): its default
    (``DEFAULT_STEPS``, at most L) when None; every level for ancestral sampling at None or L."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if steps is None:
        steps = DEFAULT_STEPS[sampler]
        steps = None if steps is None else min(steps, s.L)
    return full_grid(s) if steps is None else level_grid(s, steps, spacing)


def sample(
    eps_fn,
    s: Schedule,
    shape,
    *,
    sampler: str = "ancestral",
    steps: int | None = None,
    grid=None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    clip=None,
    eta: float = 0.0,
    spacing: str = "quadratic",
    device=None,
    dtype=torch.float32,
    cond=None,
    variance="fixed_small",
    start=None,
):
    """Draw x_L ~ N(0, I) of ``shape`` and run the named sampler (``SAMPLERS``): "ancestral", "ddim",
    "dpm++2m", "dpm++3m", "unipc" (2M predictor with the UniC corrector), "unipc3" (3M predictor, UniC-3),
    "sde-dpm++2m" (stochastic: SDE-DPM-Solver++(2M)).

    ``steps`` is the number of denoiser calls (NFE): default L for ancestral, 50 for DDIM and SDE-DPM-Solver++(2M),
    20 for the other multistep solvers; the levels visited are :func:`sampler_grid`'s, or ``grid`` when given (a
    decreasing list of levels ending at 0, from ``dgm.samplers.grid``; then ``steps`` must be None or len(grid) - 1).
    ``cond`` (labels (n,)) is passed to the denoiser; ``variance`` is the reverse variance of ancestral
    sampling; ``eta`` DDIM's. With ``return_trajectory`` it returns ``(x0, trajectory)`` where the trajectory
    is a dict of ``levels`` (visited levels, then 0), ``x`` (len(levels), *shape) and ``x0_hat``.
    ``start``: a ``dgm.samplers.gaussian_start.GaussianStart``; a grid that begins below L then starts from x_L
    carried there along the fitted Gaussian's exact flow (no denoiser call). Without it such a grid starts from
    x_L ~ N(0, I) as drawn.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if grid is None:
        grid = sampler_grid(s, sampler, steps, spacing)
    else:
        grid = check_grid(s, grid)
        if steps is not None and steps != len(grid) - 1:
            raise ValueError(f"steps={steps} does not match a grid of {len(grid) - 1} denoiser calls")
    if device is None and generator is not None:
        device = generator.device
    x_L = rng.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    if start is not None:
        if sampler == "ancestral":
            raise ValueError("a Gaussian start is for the deterministic solvers, not ancestral sampling")
        x_L = start.carry(s, x_L, grid[0])
    record: list[dict] = []
    kw = dict(generator=generator, clip=clip, callback=record.append if return_trajectory else None, cond=cond)
    with torch.no_grad():
        if sampler == "ancestral":
            x0 = sample_ancestral(eps_fn, x_L, s, grid, variance=variance, **kw)
        elif sampler == "ddim":
            x0 = sample_ddim(eps_fn, x_L, s, grid, eta=eta, **kw)
        elif sampler == "dpm++2m":
            x0 = sample_dpmpp_2m(eps_fn, x_L, s, grid, **kw)
        elif sampler == "dpm++3m":
            x0 = sample_dpmpp_3m(eps_fn, x_L, s, grid, **kw)
        elif sampler == "sde-dpm++2m":
            x0 = sample_sde_dpmpp_2m(eps_fn, x_L, s, grid, **kw)
        elif sampler in ("unipc", "unipc3"):
            x0 = sample_unipc(eps_fn, x_L, s, grid, order=3 if sampler == "unipc3" else 2, **kw)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if not return_trajectory:
        return x0
    traj = {
        "levels": [grid[0]] + [r["next_level"] for r in record],
        "x": torch.stack([x_L] + [r["x"] for r in record]),
        "x0_hat": torch.stack([r["x0_hat"] for r in record]),
    }
    return x0, traj
