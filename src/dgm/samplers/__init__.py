"""Stateless solvers over a given level grid (STYLE.md 5); ``grid`` is the one home of level grids.

Each solver is ``sample_x(eps_fn, x_L, s, grid, *, generator=None, clip=None, callback=None, cond=None)``;
``sample`` makes the grid from ``steps`` and runs one by name; ``sample_inverse`` samples p(x | y) for a linear
inverse problem y = A x + sigma_y n (``INVERSE_METHODS``).
"""

from dgm.samplers.ancestral import sample_ancestral
from dgm.samplers.api import DEFAULT_STEPS, SAMPLERS, sample, sampler_grid
from dgm.samplers.ddim import ddim_step, sample_ddim
from dgm.samplers.dpm_solver import sample_dpmpp_2m, sample_dpmpp_3m, sample_sde_dpmpp_2m
from dgm.samplers.grid import check_grid, full_grid, level_grid, load_grid, save_grid
from dgm.samplers.inverse import INVERSE_METHODS, INVERSE_OPTIONS, INVERSE_STEPS, sample_inverse
from dgm.samplers.optimized_grid import optimized_grid, run_grid
from dgm.samplers.unipc import sample_unipc

__all__ = [
    "SAMPLERS",
    "DEFAULT_STEPS",
    "sample",
    "sampler_grid",
    "ddim_step",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_3m",
    "sample_sde_dpmpp_2m",
    "sample_unipc",
    "optimized_grid",
    "run_grid",
    "check_grid",
    "full_grid",
    "level_grid",
    "load_grid",
    "save_grid",
    "INVERSE_METHODS",
    "INVERSE_OPTIONS",
    "INVERSE_STEPS",
    "sample_inverse",
]
