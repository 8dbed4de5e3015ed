"""Stateless solvers over a given level grid; ``grid`` is the one home of level grids."""

from dgm.samplers.solvers import SAMPLERS, ddim_step, level_grid, sample, sample_ancestral, sample_ddim, sample_dpmpp_2m

__all__ = ["SAMPLERS", "ddim_step", "level_grid", "sample", "sample_ancestral", "sample_ddim", "sample_dpmpp_2m"]
