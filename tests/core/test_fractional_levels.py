"""Fractional levels t in [0, L] (for ODE solvers): the schedule's interpolation, the perturbation kernel,
the conversions, the oracle and the nets all take them, and agree with the tables at integer levels."""

import math

import pytest
import torch

import dgm
from dgm.nets import MLP, UNet


def test_alpha_bar_at_integers_is_the_table():
    s = dgm.Schedule.cosine(50)
    t = torch.arange(51, dtype=torch.float64)
    assert torch.equal(s.alpha_bar_at(t), s.alpha_bar)
    torch.testing.assert_close(s.sigma_bar_at(t), s.sigma_bar, rtol=0, atol=1e-15)


def test_alpha_bar_at_is_log_linear_between_levels():
    """Halfway between i and i + 1, alpha_bar is the geometric mean of the neighbours (log-linear, as
    documented): a linear interpolation would give the arithmetic mean and fail at the high-noise end."""
    s = dgm.Schedule.linear(20)
    i = torch.arange(20, dtype=torch.float64)
    want = torch.sqrt(s.alpha_bar[:-1] * s.alpha_bar[1:])
    torch.testing.assert_close(s.alpha_bar_at(i + 0.5), want, rtol=1e-14, atol=0)
    assert (s.alpha_bar_at(i + 0.5) < 0.5 * (s.alpha_bar[:-1] + s.alpha_bar[1:])).all()


@pytest.mark.parametrize("bad", [-0.5, 20.5, float("nan")])
def test_fractional_levels_out_of_range(bad):
    with pytest.raises(ValueError, match="level"):
        dgm.Schedule.linear(20).alpha_bar_at(torch.tensor([bad]))


def test_integer_levels_still_reject_floats_where_a_step_is_discrete():
    s = dgm.Schedule.linear(20)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="integers"):
        dgm.q_step(s, x, torch.tensor([1.5, 2.5]), x)


def test_perturbation_and_conversions_at_fractional_levels(gen):
    """x_t = alpha_bar(t) x0 + sigma_bar(t) eps, and the conversions invert it at the same t."""
    s = dgm.Schedule.cosine(100)
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    eps = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    t = torch.tensor([0.5, 3.25, 50.0, 77.7, 99.5], dtype=torch.float64)
    x_t = dgm.q_sample(s, x0, t, eps)
    a, sig = s.alpha_bar_at(t)[:, None], s.sigma_bar_at(t)[:, None]
    torch.testing.assert_close(x_t, a * x0 + sig * eps, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dgm.eps_to_x0(s, x_t, eps, t), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dgm.x0_to_eps(s, x_t, x0, t), eps, rtol=1e-9, atol=1e-9)
    v = dgm.eps_to_v(s, x_t, eps, t)
    torch.testing.assert_close(dgm.v_to_eps(s, x_t, v, t), eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dgm.v_to_x0(s, x_t, v, t), x0, rtol=1e-9, atol=1e-9)


def test_oracle_eps_star_at_a_fractional_level(mixture, gen):
    """eps*(x, t) = E[eps | x_t = x] (G3) with alpha_bar(t): checked against the mixture at that level,
    whose score is -eps*/sigma_bar (E33), by autograd of its log density."""
    s = dgm.Schedule.linear(60)
    t = 17.4
    a = s.alpha_bar_at(t).item()
    eye = torch.eye(2, dtype=torch.float64)
    p_t = dgm.GaussianMixture(mixture.weights, a * mixture.means, a**2 * mixture.covs + (1 - a**2) * eye)
    x = torch.randn(7, 2, dtype=torch.float64, generator=gen).requires_grad_(True)
    score = torch.autograd.grad(p_t.log_prob(x).sum(), x)[0]
    eps_star = mixture.eps_star(s, x.detach(), t)
    torch.testing.assert_close(eps_star, -math.sqrt(1 - a**2) * score, rtol=1e-9, atol=1e-10)
    per_example = mixture.eps_star(s, x.detach(), torch.full((7,), t, dtype=torch.float64))
    torch.testing.assert_close(per_example, eps_star, rtol=0, atol=0)


@pytest.mark.parametrize("net, shape", [(MLP(3, hidden=16, depth=1, emb_dim=8), (4, 3)),
                                        (UNet(base_channels=8, image_size=8, num_res_blocks=1, groups=4,
                                              head_channels=8), (4, 1, 8, 8))])
def test_nets_and_denoiser_take_fractional_levels(net, shape):
    s = dgm.Schedule.linear(100)
    x = torch.randn(shape)
    t = torch.tensor([0.5, 10.0, 10.25, 99.0])
    den = dgm.Denoiser(net, s, "v")
    out = den(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(den(x[1:2], torch.tensor([10.0])), den(x[1:2], torch.tensor([10])))
