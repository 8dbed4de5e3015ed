"""Level grids: the one home of the sequences of levels that samplers visit (EQUATIONS.md E39-E41).

A grid is a strictly decreasing list of integer levels that starts at some level <= L and ends at 0; a
sampler makes one denoiser call per level before the last, so ``len(grid) - 1`` is the NFE. Grids are
plain lists, made here and passed to the solvers, so a new spacing (or one derived from a trained model)
plugs in without touching any solver. A grid derived from a model (``dgm.samplers.optimized_grid``) is
stored in the run directory as JSON (:func:`save_grid`, :func:`load_grid`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dgm.core.schedule import Schedule

__all__ = ["SPACINGS", "check_grid", "full_grid", "grid_path", "level_grid", "load_grid", "save_grid"]

SPACINGS = ("uniform", "quadratic")


def full_grid(s: Schedule) -> list[int]:
    """[L, L - 1, ..., 1, 0]: every level, as ancestral sampling with the reverse kernel visits them (E39)."""
    return list(range(s.L, -1, -1))


def level_grid(s: Schedule, steps: int, spacing: str = "quadratic") -> list[int]:
    """``steps + 1`` strictly decreasing levels from L to 0: the ``steps`` visited levels, then 0.

    ``spacing="uniform"``: evenly spaced levels (rounded). ``"quadratic"`` (default): level
    1 + (L - 1) (1 - k/steps)^2, which puts more steps at low noise, as in Song et al.'s DDIM "quad"
    sequence; with the exact eps* of a mixture it reaches the same accuracy with about half the NFE
    (benchmarks/RESULTS.md). ``steps = L`` gives :func:`full_grid` with either spacing.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= s.L:
        raise ValueError(f"steps must be an integer in 1..{s.L}, got {steps!r}")
    k = torch.arange(steps, dtype=torch.float64)
    if spacing == "uniform":
        values = s.L - k * s.L / steps
    elif spacing == "quadratic":
        values = 1 + (s.L - 1) * (1 - k / steps) ** 2
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    levels = values.round().long().tolist()
    for j in range(steps - 1, -1, -1):  # make them distinct: level of step j >= steps - j
        floor = 1 if j == steps - 1 else levels[j + 1] + 1
        levels[j] = max(levels[j], floor)
    return levels + [0]


def check_grid(s: Schedule, grid) -> list[int]:
    """``grid`` as a list of ints, or ValueError: strictly decreasing integer levels in 0..L ending at 0."""
    try:
        levels = [int(t) for t in grid]
    except (TypeError, ValueError):
        raise ValueError(f"a level grid must be a sequence of integer levels, got {grid!r}") from None
    if any(int(t) != t for t in grid):
        raise ValueError(f"a level grid must hold integer levels, got {list(grid)!r}")
    if len(levels) < 2 or levels[-1] != 0 or levels[0] > s.L:
        raise ValueError(f"a level grid must run from a level <= {s.L} down to 0, got {levels!r}")
    if any(a <= b for a, b in zip(levels[:-1], levels[1:], strict=True)):
        raise ValueError(f"a level grid must be strictly decreasing, got {levels!r}")
    return levels


def grid_path(run_dir, sampler: str, nfe: int) -> Path:
    """Where a run keeps the grid derived for ``sampler`` at ``nfe`` denoiser calls: grid_<sampler>_<nfe>.json."""
    return Path(run_dir) / f"grid_{sampler}_{nfe}.json"


def save_grid(run_dir, s: Schedule, sampler: str, grid, **info) -> Path:
    """Write ``grid`` (checked against ``s``) to :func:`grid_path` with ``info`` (how it was derived); returns
    the path. The write is atomic, named as ``dgm.runs.atomic`` names its temporaries (a layer above this one): a
    temporary sibling ``.NAME.tmpPID`` of this process, fsynced, renamed onto the file and removed if anything
    fails, so two ``dgm sample --grid optimized`` deriving the same grid at once leave one whole file, never half
    of one. Unlike ``atomic_write`` it does not fsync the folder: after a power cut the grid may be the old one
    or missing, and is derived again."""
    levels = check_grid(s, grid)
    path = grid_path(run_dir, sampler, len(levels) - 1)
    text = json.dumps({"sampler": sampler, "nfe": len(levels) - 1, "L": s.L, "grid": levels, **info}, indent=1)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_grid(run_dir, s: Schedule, sampler: str, nfe: int, *, step: int | None = None) -> list[int] | None:
    """The grid :func:`save_grid` stored for ``sampler`` and ``nfe`` in ``run_dir``, or None if there is none,
    or if ``step`` is given and the grid was derived from the checkpoint of another step (a stale grid: the run
    was trained on since); a grid stored without a step (made by hand) is always used. ValueError if the file is
    not such a grid for this schedule (another L, sampler or NFE)."""
    path = grid_path(run_dir, sampler, nfe)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        levels, L, who = record["grid"], record["L"], record["sampler"]
        stored_step = None if record.get("step") is None else int(record["step"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a stored level grid") from None
    if L != s.L or who != sampler or not isinstance(levels, list) or len(levels) != nfe + 1:
        raise ValueError(f"{path} holds a grid for {who!r} with L={L} and {len(levels) - 1} calls, "
                         f"not for {sampler!r} with L={s.L} and {nfe}")
    if step is not None and stored_step is not None and stored_step != int(step):
        return None
    return check_grid(s, levels)
