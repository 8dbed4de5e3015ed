"""The Gaussian start (dgm.samplers.gaussian_start) and the grid objectives of dgm.samplers.optimized_grid."""

import pytest
import torch

import dgm
from dgm.core.flow import gaussian_flow
from dgm.samplers import level_grid, sample_dpmpp_3m, sample_unipc
from dgm.samplers.gaussian_start import GaussianStart
from dgm.samplers.optimized_grid import _descend, grid_error, optimized_grid


def test_fit_is_the_sample_mean_and_covariance(mixture, gen):
    """fit's eigenpairs rebuild torch.cov of the examples, images flattened. Catches a covariance of the wrong
    orientation (examples as variables) or an unflattened image batch."""
    x0 = mixture.sample(500, gen)
    g = GaussianStart.fit(x0)
    torch.testing.assert_close(g.mean, x0.mean(0))
    torch.testing.assert_close(g.eigvecs @ torch.diag(g.eigvals) @ g.eigvecs.T, torch.cov(x0.T))
    images = torch.randn(50, 1, 2, 3, generator=gen)
    gi = GaussianStart.fit(images)
    assert gi.mean.shape == (6,) and gi.eigvecs.shape == (6, 6)
    rebuilt = gi.eigvecs @ torch.diag(gi.eigvals) @ gi.eigvecs.T
    torch.testing.assert_close(rebuilt, torch.cov(images.flatten(1).T.double()))


def test_carry_is_the_flow_from_L_and_keeps_the_shape(mixture, gen):
    s = dgm.Schedule.linear(100)
    g = GaussianStart.fit(torch.randn(40, 1, 2, 2, generator=gen))
    x_L = torch.randn(3, 1, 2, 2, generator=gen)
    assert g.carry(s, x_L, s.L) is x_L
    got = g.carry(s, x_L, 30)
    assert got.shape == x_L.shape and got.dtype == x_L.dtype
    torch.testing.assert_close(got.flatten(1), gaussian_flow(s, x_L.flatten(1), s.L, 30, g.mean, g.eigvecs, g.eigvals))


def test_bad_starts_are_one_line_errors(mixture):
    s = dgm.Schedule.linear(100)
    g = GaussianStart.fit(mixture.sample(20))
    with pytest.raises(ValueError, match="got 0"):
        g.carry(s, torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="fitted to 2 dimensions cannot carry examples of 3"):
        g.carry(s, torch.zeros(2, 3), 50)
    with pytest.raises(ValueError, match="at least 2 training examples"):
        GaussianStart.fit(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="finite"):
        GaussianStart.fit(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    with pytest.raises(ValueError, match="not ancestral"):
        dgm.sample(fn, s, (4, 2), sampler="ancestral", start=g)
    with pytest.raises(ValueError, match="objective 'w2'"):
        optimized_grid(fn, s, "unipc", 4, mixture.sample(20), objective="w2", teacher_steps=20)
    with pytest.raises(ValueError, match=r"tops must be .* got \(\)"):
        optimized_grid(fn, s, "unipc", 4, mixture.sample(20), start=g, tops=(), teacher_steps=20)
    with pytest.raises(ValueError, match=r"got \(1.5,\)"):
        optimized_grid(fn, s, "unipc", 4, mixture.sample(20), start=g, tops=(1.5,), teacher_steps=20)


def test_sample_with_a_start_runs_the_solver_from_the_carried_point(mixture):
    """dgm.sample(start=...) = the solver on the grid from x_L carried to the grid's first level; a grid from L is
    unchanged by a start. Catches a start that is ignored, or applied at L instead of at grid[0]."""
    s = dgm.Schedule.linear(1000)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    g = GaussianStart.fit(mixture.sample(1000, torch.Generator().manual_seed(1)))
    grid = [400, 200, 80, 20, 0]
    got = dgm.sample(fn, s, (16, 2), sampler="unipc", grid=grid, start=g, generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    x_L = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(got, sample_unipc(fn, g.carry(s, x_L, 400), s, grid))
    plain = level_grid(s, 4)
    torch.testing.assert_close(
        dgm.sample(fn, s, (16, 2), sampler="unipc", grid=plain, start=g, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64),
        sample_unipc(fn, x_L, s, plain))


def test_sw_objective_compares_sets_not_pairs(mixture, gen):
    """The "sw" distance is 0 between a set and its own permutation, which "mse" charges; and it is D times
    the mean squared difference of sorted projections. Catches sw computed on the pairs, or without sorting."""
    s = dgm.Schedule.linear(200)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x_L = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    grid = level_grid(s, 6)
    out = sample_dpmpp_3m(fn, x_L, s, grid)
    theta = torch.nn.functional.normalize(torch.randn(2, 16, generator=gen, dtype=torch.float64), dim=0)
    shuffled = out[torch.randperm(300, generator=gen)]
    assert grid_error(fn, s, "dpm++3m", grid, x_L, shuffled, theta=theta) < 1e-20
    assert grid_error(fn, s, "dpm++3m", grid, x_L, shuffled) > 0.1
    target = out + 0.1 * torch.randn(300, 2, generator=gen, dtype=torch.float64)
    u, v = (out @ theta).sort(0).values, (target @ theta).sort(0).values
    expected = 2 * ((u - v) ** 2).mean().item()
    assert grid_error(fn, s, "dpm++3m", grid, x_L, target, theta=theta) == pytest.approx(expected, rel=1e-12)


def test_gaussian_start_grid_starts_lower_and_beats_the_plain_optimized_grid_on_fresh_points(mixture):
    """With a start fitted to training examples, the search moves the first level below L, and on start points it
    never saw its end points are closer to the teacher's (sliced W2) than those of the grid optimized without a
    start, at 4 NFE. Catches a search that never moves the first level, or scores grids without carrying x_L."""
    s = dgm.Schedule.linear(1000)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x0 = mixture.sample(1000, torch.Generator().manual_seed(1))
    g = GaussianStart.fit(x0)
    search = dict(teacher_steps=100, sweeps=2, candidates=5, objective="sw")
    plain = optimized_grid(fn, s, "unipc", 4, x0, generator=torch.Generator().manual_seed(0), **search)
    grid, info = optimized_grid(fn, s, "unipc", 4, x0, generator=torch.Generator().manual_seed(0), start=g,
                                return_info=True, **search)
    assert plain[0] == s.L and grid[0] < s.L and info["start"] == "gaussian" and info["objective"] == "sw"
    fresh = mixture.sample(2000, torch.Generator().manual_seed(2))
    x_L = s.alpha_bar[s.L].item() * fresh + s.sigma_bar[s.L].item() * torch.randn(
        2000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = sample_dpmpp_3m(fn, x_L, s, level_grid(s, 100))
    theta = torch.nn.functional.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(4),
                                                      dtype=torch.float64), dim=0)

    def sliced(x):  # sliced W2^2 to the teacher's end points, computed here, not by grid_error
        return ((x @ theta).sort(0).values - (target @ theta).sort(0).values).pow(2).mean().item()

    with_start = sliced(sample_unipc(fn, g.carry(s, x_L, grid[0]), s, grid))
    assert grid_error(fn, s, "unipc", grid, x_L, target, theta=theta, start=g) == pytest.approx(2 * with_start)
    assert with_start < 0.8 * sliced(sample_unipc(fn, x_L, s, plain))


def test_descent_moves_the_first_level_only_when_asked():
    """_descend on a known objective (squared log distance to [600, 300, 120, 30]): with move_first every level
    approaches its target; without, the first stays. Catches a search that never moves the first level."""
    import math

    want = [600, 300, 120, 30]

    def error(grid):
        return sum((math.log(a) - math.log(b)) ** 2 for a, b in zip(grid[:-1], want, strict=True))

    _, moved = _descend(error, [1000, 563, 251, 63, 0], 1000, 4, 9, True)
    _, kept = _descend(error, [1000, 563, 251, 63, 0], 1000, 4, 9, False)
    assert kept[0] == 1000 and all(abs(math.log(a / b)) < 0.1 for a, b in zip(kept[1:-1], want[1:], strict=True))
    assert all(abs(math.log(a / b)) < 0.1 for a, b in zip(moved[:-1], want, strict=True)) and moved[-1] == 0
