import math

import pytest
import torch

import dgm
from dgm.core.bound import vlb_reference
from dgm.core.losses import eps_weight, level_weights


def test_eps_weight_values_from_equation_sheet():
    lam = eps_weight(dgm.Schedule.linear(1000))  # E30
    for i, v in [(2, 0.60), (10, 0.086), (100, 0.010), (500, 0.0055), (1000, 0.010)]:
        assert lam[i].item() == pytest.approx(v, rel=0.03)
    assert math.isinf(lam[1].item())


def test_eps_weight_equals_snr_form():
    s = dgm.Schedule.cosine(50)
    i = torch.arange(2, 51)
    assert torch.allclose(eps_weight(s)[2:], 0.5 * (s.snr[i - 1] / s.snr[i] - 1))


def test_loss_simple_minimized_by_eps_star(mixture, gen):
    s = dgm.Schedule.linear(200)
    x0 = mixture.sample(4096, gen).float()
    oracle = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    for objective in ("eps", "x0", "v"):
        for weighting in ("simple", "vlb", "min_snr"):
            g1 = torch.Generator().manual_seed(1)
            g2 = torch.Generator().manual_seed(1)
            best = dgm.loss_simple(oracle, s, x0, objective=objective, weighting=weighting, generator=g1)
            worse = dgm.loss_simple(lambda x, i: 0.9 * oracle(x, i), s, x0, objective=objective,
                                    weighting=weighting, generator=g2)
            assert best < worse, (objective, weighting)


def test_level_weights_relations():
    s = dgm.Schedule.linear(100)
    w_eps = level_weights(s, "eps", "vlb")
    lam = eps_weight(s)
    ratio = w_eps[2:] / lam[2:]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))  # proportional to the true-bound weight
    with pytest.raises(ValueError, match="'snr2'"):
        level_weights(s, "eps", "snr2")
    with pytest.raises(ValueError, match="'score'"):
        dgm.loss_simple(lambda x, i: x, s, torch.zeros(2, 2), objective="score")


def test_loss_ddpm_matches_weighted_eps_loss(mixture, gen):
    """E28 with E30: L_DDPM = (L - 1) E_i lambda_i |eps_hat - eps|^2 for the same draws."""
    s = dgm.Schedule.linear(100)
    x0 = mixture.sample(64, gen)
    model = lambda x, i: 0.8 * mixture.eps_star(s, x, i)  # noqa: E731
    a = dgm.loss_ddpm(model, s, x0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    i = torch.randint(2, 101, (64,), generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    x_i = dgm.q_sample(s, x0, i, eps)
    ref = 99 * (eps_weight(s)[i] * ((model(x_i, i) - eps) ** 2).sum(1)).mean()
    assert a.item() == pytest.approx(ref.item(), rel=1e-9)


def test_vlb_matches_independent_computation(mixture, gen):
    s = dgm.Schedule.linear(40)
    x0 = mixture.sample(3000, gen)
    model = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    a = dgm.vlb(model, s, x0, generator=torch.Generator().manual_seed(0))
    b = vlb_reference(model, s, x0, generator=torch.Generator().manual_seed(1))
    se = math.sqrt(a.var().item() / 3000 + b.var().item() / 3000)
    assert a.mean().item() == pytest.approx(b.mean().item(), abs=4 * se)
    # the bound holds: E L_vb >= H(p_data) (E38), checked against the exact NLL of the same points
    nll = -mixture.log_prob(x0)
    diff = a - nll
    assert diff.mean().item() > -3 * diff.std().item() / math.sqrt(3000)


def test_vlb_terms_and_discrete(gen):
    s = dgm.Schedule.linear(20)
    x0 = (torch.randint(0, 17, (5, 1, 2, 2), generator=gen).double() / 8 - 1)
    out = dgm.vlb(lambda x, i: torch.zeros_like(x), s, x0, bins=17, return_terms=True, generator=gen)
    assert torch.allclose(out["total"], out["prior"] + out["decoder"] + out["levels"].sum(1))
    assert (out["decoder"] >= 0).all()  # a probability is at most 1
    with pytest.raises(ValueError, match="bins"):
        dgm.vlb(lambda x, i: x, s, x0, bins=1)


def test_bits_per_dim():
    x0 = torch.zeros(3, 1, 4, 4)
    assert dgm.bits_per_dim(torch.full((3,), 16 * math.log(2)), x0) == pytest.approx(1.0)


def test_discretized_gaussian_sums_to_one():
    from dgm.core.gaussian import discretized_gaussian_log_prob

    bins = 17
    values = torch.linspace(-1, 1, bins, dtype=torch.float64)
    for mean, log_std in [(0.1, -1.0), (0.9, -5.0), (-3.0, 0.5), (0.0, -8.0)]:
        m, ls = torch.full_like(values, mean), torch.full_like(values, log_std)
        lp = discretized_gaussian_log_prob(values, m, ls, bins)
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        assert torch.isfinite(lp).all() or mean != 0.0


def test_vlb_draws_the_same_noise_in_float32_and_float64(mixture, gen):
    """A float32 network and a float64 oracle given the same seed are compared example by example."""
    s = dgm.Schedule.linear(40)
    x0 = mixture.sample(500, gen)
    model = lambda x, i: mixture.eps_star(s, x.double(), i).to(x.dtype)  # noqa: E731
    a = dgm.vlb(model, s, x0.float(), generator=torch.Generator().manual_seed(0))
    b = dgm.vlb(model, s, x0.double(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)
