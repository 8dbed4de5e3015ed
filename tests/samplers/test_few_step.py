"""Few-step sampling (issue 13 B): DPM-Solver++(3M) and the level grid derived from the model alone."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

import dgm
from dgm.samplers import SAMPLERS, level_grid, sample_dpmpp_2m, sample_dpmpp_3m
from dgm.samplers.dpm_solver import multistep_update
from dgm.samplers.grid import grid_path, load_grid, save_grid
from dgm.samplers.optimized_grid import grid_error, optimized_grid, run_grid
from dgm.samplers.unipc import sample_unipc, unic_correct

MU = torch.tensor([0.7, -1.2], dtype=torch.float64)
VAR = torch.tensor([0.3, 2.0], dtype=torch.float64)  # data N(MU, diag VAR): the ODE is solved in closed form


def _a(lam):
    return math.sqrt(1 / (1 + math.exp(-2 * lam)))  # alpha_bar at half log-SNR lam


def _s(lam):
    return math.sqrt(1 / (1 + math.exp(2 * lam)))


def _exact(x_T, lam_T, lam):
    """The probability-flow ODE of N(MU, diag VAR) from x_T at lam_T to lam (per dimension, closed form)."""
    a_T, s_T, a, s = _a(lam_T), _s(lam_T), _a(lam), _s(lam)
    return a * MU + torch.sqrt(a**2 * VAR + s**2) / torch.sqrt(a_T**2 * VAR + s_T**2) * (x_T - a_T * MU)


def _x0_star(x, lam):
    a, s = _a(lam), _s(lam)
    return MU + a * VAR / (a**2 * VAR + s**2) * (x - a * MU)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_multistep_update_local_error_has_the_order(order):
    """One step with exact history: the local error is O(h^(order + 1)), so halving h divides it by about
    2^(order + 1). A wrong 3M coefficient (e.g. 1/2 -> 1/3 in the D2 term, or r0 <-> r1) drops it to 8."""
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for h in (0.4, 0.2, 0.1):
        lam = [-0.5 - k * h for k in range(order - 1, -1, -1)] + [-0.5 + h]  # oldest first, then the target
        xs = {lv: _exact(x_T, -3.0, lv) for lv in lam}
        history = [_x0_star(xs[lv], lv) for lv in reversed(lam[:-1])]  # newest first
        x = multistep_update(xs[lam[-2]], history, lam, _a(lam[-1]), _s(lam[-1]) / _s(lam[-2]), order)
        errs.append((x - xs[lam[-1]]).abs().max().item())
    for coarse, fine in zip(errs[:-1], errs[1:], strict=True):
        assert 0.75 * 2 ** (order + 1) < coarse / fine < 1.3 * 2 ** (order + 1)


def _lambda_uniform_schedule(L=64):
    """Levels evenly spaced in lambda (4 at level 0+, -4 at L): a grid of every k-th level has constant h."""
    lam = 4.0 - 8.0 * torch.arange(0, L + 1, dtype=torch.float64) / L
    ab = torch.sqrt(torch.sigmoid(2 * lam))
    ab[0] = 1.0
    return dgm.Schedule(torch.sqrt(1 - (ab[1:] / ab[:-1]) ** 2))


def test_3m_converges_and_beats_2m_on_a_gaussian():
    """Global error at level 8 against the closed-form ODE: 2M's shrinks by ~4 per halving of h (second order);
    3M's, whose first step is first order, is at least 2x smaller than 2M's on the finest grids. Catches a
    3M update that is not consistent (no convergence) or one of lower order."""
    s = _lambda_uniform_schedule()
    gm = dgm.GaussianMixture([1.0], MU[None], torch.diag(VAR)[None])
    fn = lambda x, i: gm.eps_star(s, x, i)  # noqa: E731
    x_L = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _exact(x_L, s.lam[s.L].item(), s.lam[8].item())
    errs = {}
    for solver in (sample_dpmpp_2m, sample_dpmpp_3m):
        for step in (4, 2, 1):
            record = []
            solver(fn, x_L, s, list(range(s.L, 7, -step)) + [0], callback=record.append)
            x = next(r["x"] for r in record if r["next_level"] == 8)
            errs[solver, step] = (x - exact).abs().max().item()
    assert 3.3 < errs[sample_dpmpp_2m, 2] / errs[sample_dpmpp_2m, 1] < 4.7
    assert errs[sample_dpmpp_3m, 2] / errs[sample_dpmpp_3m, 1] > 3.5
    for step in (2, 1):
        assert errs[sample_dpmpp_3m, step] < errs[sample_dpmpp_2m, step] / 2


def test_3m_and_unipc_match_diffusers(require):
    """dgm's dpm++3m equals diffusers' DPMSolverMultistepScheduler(solver_order=3) on the same levels (20
    steps: diffusers lowers the order of its second-to-last step below 15), and unipc equals
    UniPCMultistepScheduler(solver_order=2, solver_type="bh2") at 8 and 20 steps. Catches any wrong
    coefficient of the 3M step or of the UniC corrector, or a corrector applied at the wrong level."""
    diffusers = require("diffusers")
    s = dgm.Schedule.linear(1000)
    gm = dgm.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, 0.0]], [torch.eye(2) * 0.1, torch.eye(2) * 0.3])
    fn = lambda x, i: gm.eps_star(s, x, i)  # noqa: E731
    betas = s.to_diffusers()["betas"].numpy()
    x_L = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cases = [(diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=betas, solver_order=3,
                                                    algorithm_type="dpmsolver++"), 20, sample_dpmpp_3m)]
    for steps in (8, 20):
        cases.append((diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, trained_betas=betas,
                                                        solver_order=2, solver_type="bh2"), steps, sample_unipc))
    for sched, steps, ours in cases:
        sched.set_timesteps(steps)
        x = x_L.clone()
        for t in sched.timesteps:
            x = sched.step(fn(x, torch.full((256,), int(t) + 1)), t, x).prev_sample
        got = ours(fn, x_L, s, [int(t) + 1 for t in sched.timesteps] + [0])
        torch.testing.assert_close(got, x, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unic_local_error_is_one_order_above_its_predictor(order):
    """UniC of order k with exact inputs has local error O(h^(k + 2)): halving h divides it by ~2^(k + 2)
    (8, 16, 32). A wrong right-hand side b_i (e.g. a missing factorial) or r_k sign breaks the ratio."""
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for h in (0.2, 0.1, 0.05):
        lam = [-0.5 - k * h for k in range(order - 1, -1, -1)] + [-0.5 + h]
        xs = {lv: _exact(x_T, -3.0, lv) for lv in lam}
        history = [_x0_star(xs[lv], lv) for lv in reversed(lam[:-1])]
        x = unic_correct(xs[lam[-2]], history, lam[-2::-1], lam[-1], _a(lam[-1]), _s(lam[-1]) / _s(lam[-2]),
                         _x0_star(xs[lam[-1]], lam[-1]), order)
        errs.append((x - xs[lam[-1]]).abs().max().item())
    for coarse, fine in zip(errs[:-1], errs[1:], strict=True):
        assert 0.75 * 2 ** (order + 2) < coarse / fine < 1.3 * 2 ** (order + 2)


@pytest.mark.parametrize("name, solver", [("dpm++3m", sample_dpmpp_3m), ("unipc", sample_unipc),
                                          ("unipc3", lambda *a, **k: sample_unipc(*a, order=3, **k))])
def test_new_solvers_are_named_samplers(mixture, name, solver):
    """``dgm.sample(sampler=name)`` runs that solver (a missing or crossed branch in api.sample fails)."""
    s = dgm.Schedule.linear(100)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    assert name in SAMPLERS
    a = dgm.sample(fn, s, (8, 2), sampler=name, steps=6, generator=torch.Generator().manual_seed(0))
    x_L = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, solver(fn, x_L, s, level_grid(s, 6)))
    with pytest.raises(ValueError, match="order must be 2 or 3, got 4"):
        sample_unipc(fn, x_L, s, level_grid(s, 6), order=4)


SEARCH = dict(teacher_steps=60, sweeps=2, candidates=5)


def test_optimized_grid_is_valid_deterministic_and_beats_quadratic_on_fresh_points(mixture):
    """The grid is a valid grid from L; the same seed gives the same grid; and on start points it never saw
    (other training examples, other noise) it follows the teacher more closely than the quadratic grid at 5
    and 10 NFE. Catches a search that keeps the worse candidate, or one that ignores its objective."""
    s = dgm.Schedule.linear(1000)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x0 = mixture.sample(128, torch.Generator().manual_seed(1))
    fresh = mixture.sample(400, torch.Generator().manual_seed(2))
    x_L = s.alpha_bar[s.L].item() * fresh + s.sigma_bar[s.L].item() * torch.randn(
        400, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = sample_dpmpp_3m(fn, x_L, s, level_grid(s, 100))
    for nfe in (5, 10):
        grid = optimized_grid(fn, s, "dpm++2m", nfe, x0, generator=torch.Generator().manual_seed(0), **SEARCH)
        assert grid == dgm.samplers.check_grid(s, grid) and len(grid) == nfe + 1 and grid[0] == s.L
        if nfe == 5:
            again = optimized_grid(fn, s, "dpm++2m", nfe, x0, generator=torch.Generator().manual_seed(0), **SEARCH)
            assert again == grid
        quad = level_grid(s, nfe)
        assert grid != quad
        assert grid_error(fn, s, "dpm++2m", grid, x_L, target) < 0.8 * grid_error(fn, s, "dpm++2m", quad, x_L, target)


def test_optimized_grid_rejects_bad_input(mixture):
    s = dgm.Schedule.linear(50)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x0 = mixture.sample(10)
    with pytest.raises(ValueError, match="'ancestral'"):
        optimized_grid(fn, s, "ancestral", 5, x0, teacher_steps=20)
    with pytest.raises(ValueError, match="got 0"):
        optimized_grid(fn, s, "ddim", 0, x0, teacher_steps=20)
    with pytest.raises(ValueError, match="teacher_steps=51"):
        optimized_grid(fn, s, "ddim", 5, x0, teacher_steps=51)


def test_a_grid_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """save_grid writes a temporary of its own and renames it: if the rename fails the stored grid is the old
    one, whole, and no temporary is left. Catches a write straight onto the file or a temporary not removed."""
    import dgm.samplers.grid as grid_module

    s = dgm.Schedule.linear(100)
    path = save_grid(tmp_path, s, "ddim", [100, 40, 10, 3, 0], method="old")

    def broken(src, dst):
        assert Path(src).name == f".{path.name}.tmp{os.getpid()}"  # this process's own temporary, not a shared one
        raise OSError("disk full")

    monkeypatch.setattr(grid_module.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_grid(tmp_path, s, "ddim", [100, 50, 20, 5, 0], method="new")
    assert load_grid(tmp_path, s, "ddim", 4) == [100, 40, 10, 3, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_grid_store_round_trip_and_run_grid_computes_once(tmp_path, mixture):
    """save_grid/load_grid round-trip; a grid stored for another L is refused; run_grid computes the grid the
    first time (denoiser calls) and then reads grid_<sampler>_<nfe>.json (no calls). Catches a hook that
    recomputes every time or a loader that accepts another schedule's grid."""
    s = dgm.Schedule.linear(100)
    assert load_grid(tmp_path, s, "ddim", 4) is None
    path = save_grid(tmp_path, s, "ddim", [100, 40, 10, 3, 0], method="test")
    assert path == grid_path(tmp_path, "ddim", 4) and path.name == "grid_ddim_4.json"
    assert load_grid(tmp_path, s, "ddim", 4) == [100, 40, 10, 3, 0]
    assert json.loads(path.read_text())["method"] == "test"
    with pytest.raises(ValueError, match="L=100"):
        load_grid(tmp_path, dgm.Schedule.linear(200), "ddim", 4)
    calls = []

    def fn(x, i):
        calls.append(1)
        return mixture.eps_star(s, x, i)

    x0 = mixture.sample(50, torch.Generator().manual_seed(0))
    grid = run_grid(tmp_path, fn, s, "dpm++3m", 5, x0, generator=torch.Generator().manual_seed(0),
                    teacher_steps=30, sweeps=1, candidates=3)
    assert calls and json.loads(grid_path(tmp_path, "dpm++3m", 5).read_text())["grid"] == grid
    calls.clear()
    assert run_grid(tmp_path, fn, s, "dpm++3m", 5, x0) == grid and not calls
