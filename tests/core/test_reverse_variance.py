"""The reverse variance, one choice read by the bound, its decoder term and ancestral sampling
(dgm.core.reverse.reverse_variance)."""

import pytest
import torch

import dgm
from dgm.core.reverse import reverse_variance, variance_table
from dgm.samplers import full_grid, sample_ancestral


def test_variance_tables():
    """fixed_small is sigma2(i) (E25), fixed_large beta_i^2; level 1 (the decoder) takes sigma2(2) in both."""
    s = dgm.Schedule.cosine(40)
    small, large = variance_table(s, "fixed_small"), variance_table(s, "fixed_large")
    torch.testing.assert_close(small[2:], s.sigma2[2:], rtol=0, atol=0)
    torch.testing.assert_close(large[2:], s.beta[2:] ** 2, rtol=0, atol=0)
    assert small[1] == large[1] == s.sigma2[2]
    assert (small[2:] < large[2:]).all()  # sigma2(i) = beta_i^2 (1 - a_{i-1}^2) / (1 - a_i^2) < beta_i^2
    with pytest.raises(ValueError, match="reverse variance 'tiny'"):
        variance_table(s, "tiny")


def test_reverse_variance_forms_agree():
    s = dgm.Schedule.linear(20)
    x = torch.zeros(3, 2)
    table = variance_table(s, "fixed_large")
    assert reverse_variance("fixed_large", s, x, 7) == reverse_variance(table, s, x, 7) == table[7].item()
    got = reverse_variance(lambda x_i, i: torch.full_like(x_i, 0.25) * (i[:, None] == 7), s, x, 7)
    assert torch.equal(got, torch.full_like(x, 0.25))
    with pytest.raises(ValueError, match="shape"):
        reverse_variance(table[:-1], s, x, 7)


def test_bound_with_fixed_large_matches_the_gaussian_kl(mixture):
    """vlb's level terms with v_i = beta_i^2 equal KL(N(mu, sigma2) || N(mu_phi, beta^2)) computed from the
    posterior (E24) and eps_to_mean (E29) with normal_kl on the same noise: the variance term of the KL,
    which fixed_small makes zero, is what this checks (drop it, or read sigma2 for v, and it fails)."""
    from dgm.core.gaussian import normal_kl, sum_flat

    s = dgm.Schedule.linear(12)
    x0 = mixture.sample(50, torch.Generator().manual_seed(0))
    fn = lambda x, i: 0.9 * mixture.eps_star(s, x, i)  # noqa: E731  an imperfect model
    terms = dgm.vlb(fn, s, x0, variance="fixed_large", return_terms=True, generator=torch.Generator().manual_seed(3),
                    max_batch=50)
    g = torch.Generator().manual_seed(3)
    for lvl in range(1, s.L + 1):  # with max_batch = B, vlb draws one float64 noise block per level, level 1 first
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        i = torch.full((50,), lvl)
        x_i = dgm.q_sample(s, x0, i, eps)
        if lvl == 1:
            continue
        mu, var = dgm.posterior(s, x_i, x0, i)
        mu_hat = dgm.eps_to_mean(s, x_i, fn(x_i, i), i)
        want = sum_flat(normal_kl(mu, var, mu_hat, s.beta[lvl] ** 2))
        torch.testing.assert_close(terms["levels"][:, lvl], want, rtol=1e-9, atol=1e-12)
    small = dgm.vlb(fn, s, x0, generator=torch.Generator().manual_seed(3), return_terms=True, max_batch=50)
    torch.testing.assert_close(small["prior"], terms["prior"])
    torch.testing.assert_close(small["decoder"], terms["decoder"])  # v_1 = sigma2(2) for both


def test_bound_reads_a_learned_variance_callable(mixture):
    """A callable variance (a learned one) reaches every level and the decoder term: returning the
    fixed-small table through a callable gives the fixed-small bound."""
    s = dgm.Schedule.linear(10)
    x0 = mixture.sample(20, torch.Generator().manual_seed(0))
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    table = variance_table(s, "fixed_small")
    calls = []

    def var_fn(x_i, i):
        calls.append(int(i[0]))
        return table[i][:, None].expand_as(x_i)

    a = dgm.vlb(fn, s, x0, generator=torch.Generator().manual_seed(1))
    b = dgm.vlb(fn, s, x0, generator=torch.Generator().manual_seed(1), variance=var_fn)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert sorted(calls) == list(range(1, s.L + 1))


def test_ancestral_step_uses_the_chosen_variance(gen):
    """One E39 step: x_{i-1} = mu_phi + sqrt(v_i) z, with v from the name, a table or a callable alike."""
    s = dgm.Schedule.linear(10)
    x_L = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    eps = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    table = variance_table(s, "fixed_large")
    outs = {}
    for name, variance in [("name", "fixed_large"), ("table", table),
                           ("callable", lambda x, i: table[i][:, None].expand_as(x))]:
        record = []
        sample_ancestral(lambda x, i: eps, x_L, s, full_grid(s), variance=variance,
                         generator=torch.Generator().manual_seed(4), callback=record.append)
        outs[name] = record[0]["x"]
    z = torch.randn(x_L.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    want = dgm.eps_to_mean(s, x_L, eps, s.L) + s.beta[s.L] * z
    for name, got in outs.items():
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)


def test_skipped_levels_need_a_named_variance(mixture):
    s = dgm.Schedule.linear(20)
    with pytest.raises(ValueError, match="neighbouring levels"):
        dgm.sample(lambda x, i: mixture.eps_star(s, x, i), s, (4, 2), steps=5,
                   variance=variance_table(s, "fixed_small"))


def test_callable_variance_that_differs_from_sigma2_matches_the_named_one(mixture):
    """A callable returning beta_i^2 gives the "fixed_large" bound: the per-element KL branch of vlb (used by
    learned variances) must include the variance term 0.5 (sigma2/v - 1 + log(v/sigma2)), which the fixed-small
    table makes zero (so a callable returning sigma2 could not catch a dropped or mis-signed log term)."""
    s = dgm.Schedule.linear(10)
    x0 = mixture.sample(20, torch.Generator().manual_seed(0))
    fn = lambda x, i: 0.9 * mixture.eps_star(s, x, i)  # noqa: E731
    table = variance_table(s, "fixed_large")
    named = dgm.vlb(fn, s, x0, generator=torch.Generator().manual_seed(1), variance="fixed_large")
    called = dgm.vlb(fn, s, x0, generator=torch.Generator().manual_seed(1),
                     variance=lambda x_i, i: table[i][:, None].expand_as(x_i))
    torch.testing.assert_close(called, named, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("L", [1, 2])
def test_variance_tables_of_one_and_two_levels(L):
    """Level 1 (the decoder) takes sigma2(2) when L >= 2, beta_1^2 when L = 1 (sigma2(1) = 0 and there is no
    level 2). Catches ``L >= 2`` written ``L > 2`` and beta_1 squared wrongly."""
    s = dgm.Schedule(torch.tensor([0.1, 0.3][:L]))
    want = s.sigma2[2] if L == 2 else s.beta[1] ** 2
    for name in ("fixed_small", "fixed_large"):
        assert variance_table(s, name)[1] == want


def test_bound_of_a_single_example(mixture):
    """A batch of one example: the bound and bits per dim index the example's own dimension, not another row."""
    s = dgm.Schedule.linear(8)
    x0 = mixture.sample(1, torch.Generator().manual_seed(0))
    nats = dgm.vlb(lambda x, i: mixture.eps_star(s, x, i), s, x0, generator=torch.Generator().manual_seed(1))
    assert nats.shape == (1,) and torch.isfinite(nats).all()
    assert dgm.bits_per_dim(nats, x0) == pytest.approx(nats.item() / (2 * torch.log(torch.tensor(2.0)).item()))
