"""Level grids (dgm.samplers.grid) and samplers driven by a given grid."""

import pytest
import torch

import dgm
from dgm.samplers import check_grid, full_grid, level_grid, sample_ancestral, sample_ddim, sampler_grid


def test_full_grid_and_level_grid_at_L_agree():
    s = dgm.Schedule.linear(30)
    assert full_grid(s) == list(range(30, -1, -1))
    assert level_grid(s, 30) == full_grid(s) == level_grid(s, 30, "uniform")


@pytest.mark.parametrize("bad", [[10, 5], [5, 5, 0], [3, 7, 0], [51, 0], [10.5, 0], [0], "abc"])
def test_check_grid_rejects(bad):
    with pytest.raises(ValueError, match="grid"):
        check_grid(dgm.Schedule.linear(50), bad)


def test_sampler_grid_defaults():
    s = dgm.Schedule.linear(100)
    assert sampler_grid(s, "ancestral") == full_grid(s)
    assert len(sampler_grid(s, "ddim")) == 51 and len(sampler_grid(s, "dpm++2m")) == 21
    assert sampler_grid(s, "ddim", 7, "uniform") == level_grid(s, 7, "uniform")
    with pytest.raises(ValueError, match="sampler"):
        sampler_grid(s, "euler")


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm++2m"])
def test_sample_with_a_grid_equals_sample_with_steps(sampler, mixture):
    """``grid=`` is the one way levels reach a solver: the grid that ``steps`` makes gives the same draw."""
    s = dgm.Schedule.linear(60)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    a = dgm.sample(fn, s, (16, 2), sampler=sampler, steps=9, generator=torch.Generator().manual_seed(0))
    b = dgm.sample(fn, s, (16, 2), sampler=sampler, grid=level_grid(s, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="steps=4"):
        dgm.sample(fn, s, (16, 2), sampler=sampler, steps=4, grid=level_grid(s, 9))


def test_a_grid_that_stops_short_of_L_starts_there(mixture):
    """A grid may start below L (e.g. SDEdit-style editing from a noised input): levels come from the grid."""
    s = dgm.Schedule.linear(40)
    seen = []
    fn = lambda x, i: seen.append(int(i[0])) or mixture.eps_star(s, x, i)  # noqa: E731
    x = torch.randn(4, 2, dtype=torch.float64)
    sample_ddim(fn, x, s, [20, 12, 5, 0])
    assert seen == [20, 12, 5]


def test_respaced_fixed_large_step_is_the_respaced_chain(gen):
    """Across skipped levels i -> j, ancestral sampling with "fixed_large" draws
    x_j = posterior mean of the respaced chain + sqrt(1 - alpha_bar_i^2 / alpha_bar_j^2) z.

    Reference: a two-level Schedule whose forward steps are the respaced ones, and dgm.posterior on it (E24),
    so an inverted ratio or a fixed-small variance in the skipped step would fail.
    """
    s = dgm.Schedule.cosine(50)
    i, j = 30, 12
    x_i = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    eps = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    seed, record = 5, []
    sample_ancestral(lambda x, lvl: eps, x_i, s, [i, j, 0], variance="fixed_large",
                     generator=torch.Generator().manual_seed(seed), callback=record.append)
    a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
    beta_1 = (1 - a_j**2) ** 0.5
    beta_2 = (1 - (a_i / a_j) ** 2) ** 0.5
    coarse = dgm.Schedule([beta_1, beta_2])  # level 1 = j, level 2 = i of the respaced chain
    x0_hat = dgm.eps_to_x0(s, x_i, eps, i)
    mean, _ = dgm.posterior(coarse, x_i, x0_hat, 2)
    z = torch.randn(x_i.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert record[0]["next_level"] == j
    torch.testing.assert_close(record[0]["x"], mean + beta_2 * z, rtol=1e-12, atol=1e-12)
