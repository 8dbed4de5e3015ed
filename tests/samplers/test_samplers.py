import pytest
import torch

import dgm
from dgm.evaluation.metrics import sliced_wasserstein
from dgm.samplers import level_grid, sample_ddim, sample_dpmpp_2m

SAMPLER_STEPS = [("ancestral", None), ("ancestral", 25), ("ddim", 25), ("dpm++2m", 10), ("sde-dpm++2m", 25)]


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, i):
        self.calls += 1
        assert i.dtype == torch.long and i.shape == (x.shape[0],)
        return self.fn(x, i)


@pytest.mark.parametrize("sampler, steps", SAMPLER_STEPS)
def test_contract(sampler, steps, mixture):
    """Shapes, NFE, determinism under a seed, no NaN: one contract over every sampler (STYLE.md tests 5)."""
    s = dgm.Schedule.linear(100)
    fn = Counter(lambda x, i: mixture.eps_star(s, x, i))
    a = dgm.sample(fn, s, (64, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert a.shape == (64, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert fn.calls == (steps or s.L)
    b = dgm.sample(fn, s, (64, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler, steps", SAMPLER_STEPS)
def test_exact_eps_star_recovers_the_mixture(sampler, steps, mixture):
    """With eps* every sampler lands near the data: SW1 to fresh data within a few times the 2-sample floor."""
    s = dgm.Schedule.linear(200)
    g = torch.Generator().manual_seed(1)
    x = dgm.sample(lambda x, i: mixture.eps_star(s, x, i), s, (4000, 2), sampler=sampler, steps=steps,
                   generator=g, dtype=torch.float64)
    ref, ref2 = mixture.sample(4000, g), mixture.sample(4000, g)
    floor = sliced_wasserstein(ref, ref2, generator=torch.Generator().manual_seed(2))
    sw = sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(2))
    assert sw < 4 * floor + 0.02, (sw, floor)


def test_trajectory(mixture):
    s = dgm.Schedule.linear(50)
    x0, traj = dgm.sample(lambda x, i: mixture.eps_star(s, x, i), s, (8, 2), sampler="ddim", steps=5,
                          return_trajectory=True, generator=torch.Generator().manual_seed(0))
    assert traj["levels"] == level_grid(s, 5) and traj["levels"][0] == 50 and traj["levels"][-1] == 0
    assert traj["x"].shape == (6, 8, 2) and traj["x0_hat"].shape == (5, 8, 2)
    assert torch.equal(traj["x"][-1], x0)


def test_ddim_eta_one_single_step_is_the_ancestral_step(mixture, gen):
    """E40: with eta = 1 and j = i - 1 the DDIM step is E39 with sigma2(i)."""
    s = dgm.Schedule.cosine(30)
    x = torch.randn(10, 2, dtype=torch.float64, generator=gen)
    eps = torch.randn(10, 2, dtype=torch.float64, generator=gen)
    z = torch.randn(10, 2, dtype=torch.float64, generator=gen)
    i = 17
    ddim = dgm.ddim_step(s, x, eps, i, i - 1, eta=1.0, noise=z)
    anc = dgm.eps_to_mean(s, x, eps, i) + s.sigma2[i].sqrt() * z
    assert torch.allclose(ddim, anc, atol=1e-12)


def test_dpmpp_one_step_equals_ddim(mixture, gen):
    """E41: the first-order step is deterministic DDIM, so one step of each agrees."""
    s = dgm.Schedule.linear(100)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x_L = torch.randn(16, 2, dtype=torch.float64, generator=gen)
    grid = level_grid(s, 2)
    assert torch.allclose(sample_dpmpp_2m(fn, x_L, s, grid), sample_ddim(fn, x_L, s, grid), atol=1e-12)


def test_bad_arguments():
    s = dgm.Schedule.linear(10)
    with pytest.raises(ValueError, match="'euler'"):
        dgm.sample(lambda x, i: x, s, (2, 2), sampler="euler")
    with pytest.raises(ValueError, match="steps"):
        dgm.sample(lambda x, i: x, s, (2, 2), sampler="ddim", steps=11)
    with pytest.raises(ValueError, match="noise"):
        dgm.ddim_step(s, torch.zeros(1, 1), torch.zeros(1, 1), 5, 3, eta=1.0)
    with pytest.raises(ValueError, match="j=6"):
        dgm.ddim_step(s, torch.zeros(1, 1), torch.zeros(1, 1), 5, 6)
