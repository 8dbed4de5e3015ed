"""The probability-flow ODE of x_t = alpha_bar(t) x0 + sigma_bar(t) eps (dgm.core.flow, F1/F2), the slope of the
schedule's interpolation, and the oracle's closed forms that the exact ODE likelihood rests on: div eps* and
tr Cov[eps | x_t]."""

import math

import pytest
import torch

import dgm
from dgm.core.flow import pf_divergence, pf_drift

H = 1e-6  # finite-difference step in levels (float64; well inside one interval [k, k + 1))


def _single_gaussian(mean, cov) -> dgm.GaussianMixture:
    return dgm.GaussianMixture([1.0], [mean], [cov])


def _log_ab(s, t: float) -> float:
    return math.log(s.alpha_bar_at(torch.tensor(t, dtype=torch.float64)).item())


def _autograd_divergence(fn, x: torch.Tensor) -> torch.Tensor:
    """sum_k d fn(x)_k / d x_k per row, by D backward passes (rows are independent)."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    div = torch.zeros(x.shape[0], dtype=torch.float64)
    for k in range(x.shape[1]):
        (g,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)
        div += g[:, k]
    return div


# ------------------------------------------------------------------------------------ log_alpha_bar_rate


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 6.5, 13.999, 19.0, 19.75])
def test_rate_is_the_right_derivative_of_log_alpha_bar_at(t):
    """log_alpha_bar_rate(t) = d log alpha_bar_at / dt on the interval [k, k + 1) holding t: a forward
    difference of ``alpha_bar_at`` at interior and integer levels. Catches the slope of the wrong interval
    (floor(t) - 1, or ceil(t) at an integer), a slope of alpha_bar instead of its log, and a sign flip."""
    s = dgm.Schedule.cosine(20)
    want = (_log_ab(s, t + H) - _log_ab(s, t)) / H
    got = s.log_alpha_bar_rate(torch.tensor(t, dtype=torch.float64)).item()
    assert got == pytest.approx(want, rel=1e-5)
    assert got < 0  # alpha_bar decreases


def test_rate_at_the_last_level_is_the_last_interval_and_is_vectorized():
    """At t = L there is no interval to the right: the slope of [L - 1, L] (a backward difference); a tensor of
    levels gives one rate per level. Catches an index L + 1 (IndexError) and a rate that ignores t's shape."""
    s = dgm.Schedule.linear(30)
    L = float(s.L)
    want_last = (_log_ab(s, L) - _log_ab(s, L - H)) / H
    t = torch.tensor([L, 2.5, 0.0], dtype=torch.float64)
    got = s.log_alpha_bar_rate(t)
    assert got.shape == (3,) and got.dtype == torch.float64
    assert got[0].item() == pytest.approx(want_last, rel=1e-5)
    log_ab = torch.log(s.alpha_bar)
    torch.testing.assert_close(got[1:], torch.stack([log_ab[3] - log_ab[2], log_ab[1] - log_ab[0]]),
                               rtol=1e-14, atol=0)


@pytest.mark.parametrize("bad", [-0.1, 30.5, float("nan")])
def test_rate_rejects_levels_out_of_range(bad):
    """Catches a rate that clamps (or NaN-propagates) a level outside [0, L] instead of raising."""
    with pytest.raises(ValueError, match="level"):
        dgm.Schedule.linear(30).log_alpha_bar_rate(torch.tensor([bad]))


# ------------------------------------------------------------------------------------ drift and divergence


def test_pf_drift_is_f_x_minus_half_g2_times_the_score(gen):
    """F1 from its definition: dx/dt = f x - g^2 / 2 * score with f = d log alpha_bar / dt, g^2 = d sigma_bar^2 / dt
    - 2 f sigma_bar^2 (both by central differences of the schedule's interpolation) and score = -eps / sigma_bar
    (E33), per example at its own level, for images too. Catches a drift with +eps, eps * sigma_bar instead of
    / sigma_bar, a missing c(t) factor, or levels applied to the wrong rows."""
    s = dgm.Schedule.cosine(50)
    t = torch.tensor([0.4, 7.5, 25.25, 49.5], dtype=torch.float64)
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=gen)
    eps = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=gen)
    got = pf_drift(s, x, eps, t)
    assert got.shape == x.shape
    for b, tb in enumerate(t.tolist()):
        f = (_log_ab(s, tb + H) - _log_ab(s, tb - H)) / (2 * H)
        s2 = lambda u: 1.0 - math.exp(2 * _log_ab(s, u))  # noqa: E731
        g2 = (s2(tb + H) - s2(tb - H)) / (2 * H) - 2 * f * s2(tb)
        score = -eps[b] / math.sqrt(s2(tb))
        torch.testing.assert_close(got[b], f * x[b] - 0.5 * g2 * score, rtol=1e-6, atol=1e-9)


def test_pf_divergence_is_the_divergence_of_pf_drift(mixture, gen):
    """F2: div_x of F1 with eps = eps*(x, t) is c(t) (D - div eps* / sigma_bar(t)); autograd through pf_drift
    itself is the reference. Catches a divergence with + div_eps, a missing D, or div_eps times sigma_bar."""
    s = dgm.Schedule.cosine(20)
    x = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    for tv in (0.5, 3.0, 12.7):
        t = torch.full((6,), tv, dtype=torch.float64)
        want = _autograd_divergence(lambda z, t=t: pf_drift(s, z, mixture.eps_star(s, z, t), t), x)
        got = pf_divergence(s, x, mixture.eps_star_divergence(s, x, t), t)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("which", ["gaussian_1d", "gaussian_2d", "mixture"])
def test_flow_transports_the_oracle_marginals(which, mixture, gen):
    """Along the probability-flow ODE, d/dt log p_t(x_t) = d_t log p_t + grad log p_t . drift = -div(drift) (the
    continuity equation; F1, F2), with p_t the exact marginal at fractional t (G1 with alpha_bar_at): the time
    derivative by central differences of log p_t, the drift from the exact eps*, the divergence from the oracle's
    closed form. Catches a drift or divergence of the wrong sign or scale, a rate from the wrong interval, and
    an eps_star_divergence that drops the responsibilities' gradient (the mixture case)."""
    data = {
        "gaussian_1d": _single_gaussian([0.7], [[0.3]]),
        "gaussian_2d": _single_gaussian([0.5, -1.0], [[0.4, 0.1], [0.1, 0.2]]),
        "mixture": mixture,
    }[which]
    s = dgm.Schedule.cosine(20)
    for tv in (0.35, 4.5, 11.2, 18.6):
        x = data.at_level(s, tv).sample(8, gen)
        t = torch.full((8,), tv, dtype=torch.float64)
        dt_log_p = (data.at_level(s, tv + H).log_prob(x) - data.at_level(s, tv - H).log_prob(x)) / (2 * H)
        drift = pf_drift(s, x, data.eps_star(s, x, t), t)
        along = dt_log_p + (data.score(s, x, tv) * drift).sum(1)
        div = pf_divergence(s, x, data.eps_star_divergence(s, x, t), t)
        torch.testing.assert_close(along, -div, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ the oracle's closed forms


@pytest.mark.parametrize("level", [1, 5, 20, 0.25, 7.5, 13.9])
def test_eps_star_divergence_matches_autograd(mixture, gen, level):
    """div_x eps*(x, t) in closed form equals autograd's trace of the Jacobian of eps_star, at integer and fractional
    levels. Catches a missing |sum_k r_k u_k|^2 term (the responsibilities' gradient), tr Sigma instead of
    tr Sigma^-1, and a missing sigma_bar factor."""
    s = dgm.Schedule.cosine(20)
    x = mixture.at_level(s, level).sample(10, gen)
    want = _autograd_divergence(lambda z: mixture.eps_star(s, z, level), x)
    got = mixture.eps_star_divergence(s, x, level)
    assert got.shape == (10,)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_eps_star_divergence_takes_per_example_levels(mixture, gen):
    """A tensor of per-example levels (as the ODE passes) gives each row the divergence at its own level.
    Catches rows written back to the wrong places when levels are grouped."""
    s = dgm.Schedule.cosine(20)
    x = torch.randn(5, 2, dtype=torch.float64, generator=gen)
    t = torch.tensor([3.5, 10.0, 3.5, 0.75, 19.0], dtype=torch.float64)
    got = mixture.eps_star_divergence(s, x, t)
    want = torch.stack([mixture.eps_star_divergence(s, x[b : b + 1], t[b].item())[0] for b in range(5)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("level", [1, 9, 0.5, 14.25])
def test_eps_posterior_cov_trace_is_snr_times_the_x0_one(mixture, gen, level):
    """tr Cov[eps | x_t] = (alpha_bar / sigma_bar)^2 tr Cov[x0 | x_t] (E19, G5), at integer and fractional levels.
    Catches the inverse ratio, a missing square, or the table's alpha_bar at a fractional level."""
    s = dgm.Schedule.cosine(20)
    x = mixture.at_level(s, level).sample(12, gen)
    a = s.alpha_bar_at(torch.tensor(float(level), dtype=torch.float64)).item()
    got = mixture.eps_posterior_cov_trace(s, x, level)
    torch.testing.assert_close(got, (a**2 / (1 - a**2)) * mixture.posterior_cov_trace(s, x, level),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("level", [2, 10, 3.5])
def test_eps_posterior_cov_trace_is_second_order_tweedie(mixture, gen, level):
    """Cov[eps | x_t] = I - sigma_bar * Jacobian of eps* (Tweedie's second-order formula: Cov[x0 | x] =
    (s^2 / a^2)(I + s^2 Hessian log p), with eps* = -s grad log p), so tr Cov[eps | x_t] = D - sigma_bar div eps*:
    two of the oracle's closed forms (G5 and the divergence) tied by an identity neither uses. Catches an error
    in either one, e.g. a missing spread term |c_k - x0*|^2 between components."""
    s = dgm.Schedule.cosine(20)
    x = mixture.at_level(s, level).sample(12, gen)
    sigma = s.sigma_bar_at(torch.tensor(float(level), dtype=torch.float64)).item()
    want = mixture.D - sigma * mixture.eps_star_divergence(s, x, level)
    torch.testing.assert_close(mixture.eps_posterior_cov_trace(s, x, level), want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("level", [1, 6, 20, 8.5])
def test_eps_posterior_cov_trace_of_one_gaussian_is_closed_form(gen, level):
    """For data N(m, S), eps and x_t = a x0 + s eps are jointly Gaussian with Cov(eps, x_t) = s I, so
    Cov[eps | x_t] = I - s^2 Sigma^-1 (Sigma = a^2 S + s^2 I) whatever x_t: tr = D - s^2 tr Sigma^-1. For
    S = I it is a^2 D, and 1 - tr / D is Gamma = s^2 (fixed large). Catches any error in the posterior covariance
    that a single component exposes (P_k's sign, a^2 vs a, an x-dependence)."""
    s = dgm.Schedule.cosine(20)
    mean, cov = [0.5, -1.0, 2.0], [[0.4, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.9]]
    g = _single_gaussian(mean, cov)
    x = torch.randn(7, 3, dtype=torch.float64, generator=gen) * 3
    a = s.alpha_bar_at(torch.tensor(float(level), dtype=torch.float64)).item()
    sig2 = 1 - a**2
    Sigma = a**2 * torch.tensor(cov, dtype=torch.float64) + sig2 * torch.eye(3, dtype=torch.float64)
    want = 3 - sig2 * torch.linalg.inv(Sigma).trace().item()
    torch.testing.assert_close(g.eps_posterior_cov_trace(s, x, level), torch.full((7,), want, dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)
    std = _single_gaussian([0.0, 0.0, 0.0], torch.eye(3).tolist())
    torch.testing.assert_close(std.eps_posterior_cov_trace(s, x, level),
                               torch.full((7,), 3 * a**2, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_gaussian_flow_is_the_solved_ode_of_a_correlated_gaussian(gen):
    """F3 against the probability-flow ODE of N(m, C) (C correlated) solved numerically: DPM-Solver++(3M) with the
    oracle's eps* through every level from L, read at level 300 and at level 40. Catches an inverted or unsquared
    variance ratio, a dropped mean term, the levels swapped, and a map that ignores the eigenvectors (C
    diagonal would not)."""
    from dgm.core.flow import gaussian_flow
    from dgm.samplers import full_grid, sample_dpmpp_3m

    s = dgm.Schedule.linear(1000)
    mean = torch.tensor([0.7, -1.2, 0.3], dtype=torch.float64)
    a = torch.tensor([[0.5, 0.3, 0.0], [0.0, 0.2, -0.4], [0.1, 0.0, 0.3]], dtype=torch.float64)
    cov = a @ a.T + 0.01 * torch.eye(3, dtype=torch.float64)
    gm = _single_gaussian(mean, cov)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    x_L = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    seen = {}
    sample_dpmpp_3m(lambda x, i: gm.eps_star(s, x, i), x_L, s, full_grid(s),
                    callback=lambda r: seen.setdefault(r["next_level"], r["x"]))
    for level in (300, 40):
        torch.testing.assert_close(gaussian_flow(s, x_L, s.L, level, mean, eigvecs, eigvals), seen[level],
                                   rtol=0, atol=2e-5)
    back = gaussian_flow(s, seen[40], 40, 300, mean, eigvecs, eigvals)  # the flow runs either way
    torch.testing.assert_close(back, seen[300], rtol=0, atol=4e-5)
