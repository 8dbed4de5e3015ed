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


def test_vlb_terms_and_discrete():
    """Every term of vlb in closed form for a denoiser whose error eps_hat - eps is a known constant c.

    eps_hat = (x_i - alpha_bar_i x0) / sigma_bar_i + c is the exact eps of each example plus c (one level a
    call, max_batch = B), whatever the noise: so levels[:, i] = lambda_i^eps |c|^2 (E30, eps_weight) for
    i >= 2, and x0_hat = x0 - (sigma_bar_1 / alpha_bar_1) c, so the decoder (E36, 17 bins, h = 1/16,
    std sqrt(sigma2(2))) is -sum_d log[Phi((x0 + h - x0_hat) / std) - Phi((x0 - h - x0_hat) / std)], the
    end bins x0 = -1 and 1 opened to -inf and +inf, computed here with math.erf. The total adds
    prior_kl (checked by hand in test_bound_exact.py).
    Mutations caught (each seen to fail; the old test, ``total == prior + decoder + sum(levels)`` and
    ``decoder >= 0``, which no bug of a probability can break, passed all four): the end bins not opened
    to +-inf (``edge`` past 1 in discretized_gaussian_log_prob); _level_kl's 1/(2 v) written 1/v; the level
    terms stored one level down; the decoder variance sigma2(3) instead of sigma2(2).
    """
    s = dgm.Schedule.linear(20)
    bins, h = 17, 1 / 16
    x0 = torch.tensor([[-1.0, -0.5, 0.125, 1.0], [1.0, 0.875, -1.0, -0.25]], dtype=torch.float64)  # on the grid
    c = torch.tensor([[0.5, -0.4, 0.3, 0.8], [-0.7, 0.2, -0.5, 0.9]], dtype=torch.float64)

    def eps_fn(x, i):
        lvl = int(i[0])
        return (x - s.alpha_bar[lvl] * x0) / s.sigma_bar[lvl] + c

    out = dgm.vlb(eps_fn, s, x0, bins=bins, return_terms=True, max_batch=2,
                  generator=torch.Generator().manual_seed(0))
    sq = (c**2).sum(1)
    lam = eps_weight(s)
    for i in range(2, s.L + 1):
        assert out["levels"][:, i].tolist() == pytest.approx((lam[i] * sq).tolist(), rel=1e-9), i
    assert (out["levels"][:, :2] == 0).all()

    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    std = math.sqrt(s.sigma2[2].item())
    x0_hat = x0 - (s.sigma_bar[1] / s.alpha_bar[1]).item() * c
    decoder = []
    for row, row_hat in zip(x0.tolist(), x0_hat.tolist(), strict=True):
        nll = 0.0
        for x, m in zip(row, row_hat, strict=True):
            upper = 1.0 if x == 1 else phi((x + h - m) / std)
            lower = 0.0 if x == -1 else phi((x - h - m) / std)
            nll -= math.log(upper - lower)
        decoder.append(nll)
    assert out["decoder"].tolist() == pytest.approx(decoder, rel=1e-9)
    total = dgm.prior_kl(s, x0) + (lam[2:].sum() * sq) + torch.tensor(decoder, dtype=torch.float64)
    assert out["total"].tolist() == pytest.approx(total.tolist(), rel=1e-9)
    with pytest.raises(ValueError, match="bins"):
        dgm.vlb(lambda x, i: x, s, x0, bins=1)


def test_bits_per_dim():
    x0 = torch.zeros(3, 1, 4, 4)
    assert dgm.bits_per_dim(torch.full((3,), 16 * math.log(2)), x0) == pytest.approx(1.0)


def test_discretized_gaussian_sums_to_one_and_matches_arbitrary_precision():
    """E36's log P over all 17 values sums to one, and every log P equals a 50-digit mpmath reference.

    The reference takes Phi(u) - Phi(l) on the side of the mean where it keeps its digits, end bins opened to
    +-inf; it reaches the far bins (log P = -3.9e6 at 3e3 stds), which float64 Phi differences round to 0.
    Mutation caught: the clamped logs of Ho et al.'s code (log max(P, 1e-12), as improved-diffusion's
    discretized_gaussian_log_likelihood): log P = -27.6 in every far bin, which still sums to one within
    1e-9 and is finite, so the old ``isfinite(lp) or mean != 0.0`` passed it (it also only looked at one of
    the four cases).
    """
    import mpmath  # comes with torch (through sympy)

    from dgm.core.gaussian import discretized_gaussian_log_prob

    mpmath.mp.dps = 50
    bins = 17
    h = mpmath.mpf(1) / (bins - 1)
    values = torch.linspace(-1, 1, bins, dtype=torch.float64)

    def reference(x, mean, std):
        x, mean, std = mpmath.mpf(x), mpmath.mpf(mean), mpmath.mpf(std)
        u = mpmath.inf if x > 1 - h / 2 else (x + h - mean) / std
        lo = -mpmath.inf if x < -1 + h / 2 else (x - h - mean) / std
        p = mpmath.ncdf(-lo) - mpmath.ncdf(-u) if lo > 0 else mpmath.ncdf(u) - mpmath.ncdf(lo)
        return float(mpmath.log(p))

    for mean, log_std in [(0.1, -1.0), (0.9, -5.0), (-3.0, 0.5), (0.0, -8.0)]:
        m, ls = torch.full_like(values, mean), torch.full_like(values, log_std)
        lp = discretized_gaussian_log_prob(values, m, ls, bins)
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        ref = [reference(x, mean, math.exp(log_std)) for x in values.tolist()]
        assert lp.tolist() == pytest.approx(ref, rel=1e-12, abs=1e-14), (mean, log_std)


def test_vlb_draws_the_same_noise_in_float32_and_float64(mixture, gen):
    """A float32 network and a float64 oracle given the same seed are compared example by example."""
    s = dgm.Schedule.linear(40)
    x0 = mixture.sample(500, gen)
    model = lambda x, i: mixture.eps_star(s, x.double(), i).to(x.dtype)  # noqa: E731
    a = dgm.vlb(model, s, x0.float(), generator=torch.Generator().manual_seed(0))
    b = dgm.vlb(model, s, x0.double(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)
