"""Exact references for the variational bound (EQUATIONS.md E24-E38, G5-G8), the loss weights and the
dequantized bound.

Every reference here is written from the formulas in plain torch / math on the schedule's ``beta`` alone
(alpha, alpha_bar, sigma_bar, sigma2, A, B and SNR are recomputed below), and shares no helper with
``dgm.core.bound`` (no prior_kl, decoder_nll, q_sample, eps_to_x0, posterior or normal_kl). Each test names,
in its docstring, the mutation of the source it was seen to catch.
"""

import math

import pytest
import torch

import dgm
from dgm.core.losses import level_weights

F64 = torch.float64


# ----------------------------------------------------------------------------- the formulas, by hand


class Tables:
    """The schedule's per-level numbers recomputed from beta (index = level, level 0 = data)."""

    def __init__(self, s: dgm.Schedule):
        beta = s.beta.clone()  # beta[0] = 0, so alpha[0] = alpha_bar[0] = 1
        self.L = s.L
        self.beta = beta
        self.alpha = torch.sqrt(1 - beta**2)  # E17
        self.alpha_bar = torch.cumprod(self.alpha, 0)  # E19
        self.sigma_bar = torch.sqrt(1 - self.alpha_bar**2)  # E19
        ab2 = self.alpha_bar**2
        self.sigma2 = torch.zeros_like(beta)
        self.A = torch.zeros_like(beta)
        self.B = torch.zeros_like(beta)
        for i in range(1, s.L + 1):
            self.sigma2[i] = (1 - ab2[i - 1]) / (1 - ab2[i]) * beta[i] ** 2  # E25
            self.A[i] = self.alpha_bar[i - 1] * beta[i] ** 2 / (1 - ab2[i])  # E24
            self.B[i] = (1 - ab2[i - 1]) * self.alpha[i] / (1 - ab2[i])  # E24
        self.snr = ab2 / (1 - ab2)  # inf at level 0


def gauss_kl(m1, v1, m2, v2):
    """sum_d KL(N(m1_d, v1) || N(m2_d, v2)) = 1/2 sum_d [v1/v2 - 1 + log(v2/v1) + (m1_d - m2_d)^2 / v2] (E27)."""
    v1 = torch.as_tensor(v1, dtype=F64)
    v2 = torch.as_tensor(v2, dtype=F64)
    per = 0.5 * (v1 / v2 - 1 + torch.log(v2 / v1) + (m1 - m2) ** 2 / v2)
    return per.reshape(per.shape[0], -1).sum(1)


def gauss_nll(x, m, v):
    """-log N(x; m, v I) = sum_d [ (x_d - m_d)^2 / (2 v) + log(2 pi v) / 2 ] (E13)."""
    per = (x - m) ** 2 / (2 * v) + 0.5 * math.log(2 * math.pi * v)
    return per.reshape(per.shape[0], -1).sum(1)


def binned_nll(x, m, std, bins):
    """-log prod_d [Phi((d+ - m)/std) - Phi((d- - m)/std)], d+- = x +- h, opened to +-inf at x = +-1 (E36).

    The difference is taken on the tail side where it keeps its digits (upper tail when the bin lies above
    the mean), with torch.special.ndtr, not dgm's log-space helper.
    """
    h = 1.0 / (bins - 1)
    up = torch.where(x > 1 - 1e-9, torch.full_like(x, math.inf), (x + h - m) / std)
    lo = torch.where(x < -1 + 1e-9, torch.full_like(x, -math.inf), (x - h - m) / std)
    nd = torch.special.ndtr
    p = torch.where(lo > 0, nd(-lo) - nd(-up), nd(up) - nd(lo))
    return -torch.log(p).reshape(x.shape[0], -1).sum(1)


def reference_bound(eps_fn, s, x0, *, generator, bins=None, variance="fixed_small"):
    """(prior, decoder, levels (B, L + 1)) of L_vb (E34) from the formulas, one (B, D) float64 noise block per
    level 1, 2, ..., L in that order: x_i = alpha_bar_i x0 + sigma_bar_i eps (E19); the posterior mean
    A_i x0 + B_i x_i (E24) against mu_phi = (x_i - beta_i^2 / sigma_bar_i eps_hat) / alpha_i (E29) with the
    Gaussian KL (E27); the decoder N(x0_hat, sigma2(2)) with x0_hat = (x_1 - sigma_bar_1 eps_hat) /
    alpha_bar_1, or its discretization (E36); the prior KL(N(alpha_bar_L x0, 1 - alpha_bar_L^2) || N(0, 1))."""
    t = Tables(s)
    B = x0.shape[0]
    levels = torch.zeros(B, s.L + 1, dtype=F64)
    decoder = None
    for i in range(1, s.L + 1):
        eps = torch.randn(x0.shape, generator=generator, dtype=F64)
        x_i = t.alpha_bar[i] * x0 + t.sigma_bar[i] * eps
        eps_hat = eps_fn(x_i, torch.full((B,), i, dtype=torch.long)).double()
        if i == 1:
            x0_hat = (x_i - t.sigma_bar[1] * eps_hat) / t.alpha_bar[1]
            v1 = t.sigma2[2].item()
            decoder = gauss_nll(x0, x0_hat, v1) if bins is None else binned_nll(x0, x0_hat, math.sqrt(v1), bins)
        else:
            mu = t.A[i] * x0 + t.B[i] * x_i
            mu_phi = (x_i - t.beta[i] ** 2 / t.sigma_bar[i] * eps_hat) / t.alpha[i]
            v_phi = {"fixed_small": t.sigma2[i], "fixed_large": t.beta[i] ** 2}[variance]
            levels[:, i] = gauss_kl(mu, t.sigma2[i], mu_phi, v_phi)
    aL = t.alpha_bar[s.L]
    prior = gauss_kl(aL * x0, 1 - aL**2, torch.zeros_like(x0), 1.0)
    return prior, decoder, levels


def x0_predictor(s, m):
    """The denoiser whose x0_hat = (x_i - sigma_bar_i eps_hat) / alpha_bar_i is the constant ``m`` (B, D):
    eps_hat = (x_i - alpha_bar_i m) / sigma_bar_i (E31). Call the bound with max_batch = B (one level a call)."""
    t = Tables(s)

    def eps_fn(x, i):
        lvl = int(i[0])
        return (x - t.alpha_bar[lvl] * m) / t.sigma_bar[lvl]

    return eps_fn


# ----------------------------------------------------------------------------- 1. paired reference


@pytest.mark.parametrize("bins", [None, 17], ids=["continuous", "bins17"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_vlb_equals_reference_example_by_example(mixture, bins, variance):
    """vlb == the formulas, example by example and term by term, to 1e-10 (float64), same noise.

    An imperfect denoiser 0.8 eps* + 0.05 x on the 2-D mixture, L = 15 (linear), 96 examples; max_batch = B
    makes vlb draw one (B, D) float64 block per level 1..L, which the reference reproduces. With bins = 17
    the data are put on the grid of 17 values in [-1, 1] (clipped, so both end bins occur).
    Mutations caught (each seen to fail): q_sample's noise coefficient 1 - alpha_bar^2 without the square
    root; _level_kl's c2 not squared; the decoder variance sigma2(3) instead of sigma2(2); eps_to_x0 with
    sigma_bar_i^2; the discretized bin half-width 1/bins instead of 1/(bins - 1); the end bins not opened
    to +-inf; fixed_large's constant 0.5 D (sigma2/v - 1 + log v/sigma2) dropped; the levels' noise drawn
    in reverse order; the prior's |x0|^2 term dropped.
    """
    s = dgm.Schedule.linear(15)
    g = torch.Generator().manual_seed(5)
    x0 = mixture.sample(96, g)
    if bins is not None:
        x0 = torch.round((x0.clamp(-1, 1) + 1) * (bins - 1) / 2) * 2 / (bins - 1) - 1
        assert (x0 == -1).any() and (x0 == 1).any() and ((x0 > -1) & (x0 < 1)).any()
    eps_fn = lambda x, i: 0.8 * mixture.eps_star(s, x, i) + 0.05 * x  # noqa: E731
    B = x0.shape[0]
    out = dgm.vlb(eps_fn, s, x0, bins=bins, generator=torch.Generator().manual_seed(11), max_batch=B,
                  return_terms=True, variance=variance)
    prior, decoder, levels = reference_bound(eps_fn, s, x0, generator=torch.Generator().manual_seed(11),
                                             bins=bins, variance=variance)
    tol = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["prior"], prior, **tol)
    torch.testing.assert_close(out["decoder"], decoder, **tol)
    torch.testing.assert_close(out["levels"], levels, **tol)
    torch.testing.assert_close(out["total"], prior + decoder + levels.sum(1), **tol)
    assert (levels[:, 2:] > 0).all() and torch.isfinite(decoder).all()  # a non-trivial comparison


# ----------------------------------------------------------------------------- 2. L_L and L_0 by hand

# A 3-level schedule with a large alpha_bar_L, so the prior term's |x0|^2 part is not negligible.
BETA3 = [0.3, 0.4, 0.5]


def test_prior_term_by_hand():
    """L_L for x0 = (0.6, -0.8) and (3, 4), D = 2, beta = (0.3, 0.4, 0.5).

    q(x_L | x0) = N(a x0, (1 - a^2) I) with a^2 = alpha_bar_L^2 = 0.91 * 0.84 * 0.75 = 0.5733. Per
    coordinate KL(N(mu, v) || N(0, 1)) = 1/2 (v + mu^2 - 1 - log v), so
    L_L = 1/2 [a^2 |x0|^2 + D (1 - a^2) - D - D log(1 - a^2)] = 1/2 [a^2 |x0|^2 - D a^2 - D log(1 - a^2)]
    = 0.565024 (|x0|^2 = 1) and 7.444624 (|x0|^2 = 25).
    Mutations caught: the a^2 |x0|^2 term dropped (x0 = 0 alone would not see it); log1p(+a^2) instead of
    log1p(-a^2); a instead of a^2 on |x0|^2.
    """
    s = dgm.Schedule(BETA3)
    x0 = torch.tensor([[0.6, -0.8], [3.0, 4.0]], dtype=F64)
    a2 = (1 - 0.3**2) * (1 - 0.4**2) * (1 - 0.5**2)
    D = 2
    hand = [0.5 * (a2 * sq - D * a2 - D * math.log(1 - a2)) for sq in (1.0, 25.0)]
    assert hand == pytest.approx([0.565024, 7.444624], abs=1e-6)  # the numbers of the docstring
    assert dgm.prior_kl(s, x0).tolist() == pytest.approx(hand, rel=1e-12)
    out = dgm.vlb(lambda x, i: torch.zeros_like(x), s, x0, generator=torch.Generator().manual_seed(0),
                  return_terms=True)
    assert out["prior"].tolist() == pytest.approx(hand, rel=1e-12)


def test_continuous_decoder_and_levels_by_hand():
    """L_0 and every L_{i-1} in closed form when x0_hat is a known constant m (x0-predictor, E31).

    beta = (0.3, 0.4, 0.5): v_1 = sigma2(2) = beta_1^2 beta_2^2 / (1 - alpha_1^2 alpha_2^2) = 0.0144 / 0.2356
    = 0.061121; L_0 = |x0 - m|^2 / (2 v_1) + (D / 2) log(2 pi v_1), whatever x_1 is. For i >= 2 the model
    mean A_i m + B_i x_i misses the posterior mean A_i x0 + B_i x_i by A_i (m - x0), so L_{i-1} =
    A_i^2 |m - x0|^2 / (2 sigma2(i)) = (SNR_{i-1} - SNR_i) |m - x0|^2 / 2 exactly (E31), for every noise draw;
    with fixed_large (v_i = beta_i^2) it is (D/2) (sigma2/beta^2 - 1 + log(beta^2/sigma2)) + A_i^2 |m - x0|^2
    / (2 beta_i^2).
    Mutations caught: decoder variance sigma2(1) (= 0: inf) or beta_1^2 instead of sigma2(2); the decoder's
    log(2 pi v) / 2 dropped; _level_kl's c2 not squared; the level KL's 1/(2 v) written 1/v.
    """
    s = dgm.Schedule(BETA3)
    t = Tables(s)
    x0 = torch.tensor([[0.6, -0.8], [-1.0, 0.25]], dtype=F64)
    m = torch.tensor([[0.1, -0.5], [0.3, 0.3]], dtype=F64)
    sq = ((x0 - m) ** 2).sum(1)
    v1 = 0.3**2 * 0.4**2 / (1 - (1 - 0.3**2) * (1 - 0.4**2))
    assert v1 == pytest.approx(0.0611205, abs=1e-7)
    assert t.sigma2[2].item() == pytest.approx(v1, rel=1e-14)
    L0 = sq / (2 * v1) + 0.5 * 2 * math.log(2 * math.pi * v1)  # D = 2
    out = dgm.vlb(x0_predictor(s, m), s, x0, generator=torch.Generator().manual_seed(0), max_batch=2,
                  return_terms=True)
    torch.testing.assert_close(out["decoder"], L0, rtol=1e-11, atol=0)
    for i in (2, 3):
        snr_form = 0.5 * (t.snr[i - 1] - t.snr[i]) * sq
        torch.testing.assert_close(t.A[i] ** 2 * sq / (2 * t.sigma2[i]), snr_form, rtol=1e-12, atol=0)
        torch.testing.assert_close(out["levels"][:, i], snr_form, rtol=1e-9, atol=0)
    assert (out["levels"][:, :2] == 0).all()
    large = dgm.vlb(x0_predictor(s, m), s, x0, generator=torch.Generator().manual_seed(0), max_batch=2,
                    return_terms=True, variance="fixed_large")
    torch.testing.assert_close(large["decoder"], L0, rtol=1e-11, atol=0)  # sigma2(2) for both (E36)
    for i in (2, 3):
        r = (t.sigma2[i] / t.beta[i] ** 2).item()
        hand = (0.5 * 2 * (r - 1 - math.log(r))) + t.A[i] ** 2 * sq / (2 * t.beta[i] ** 2)
        torch.testing.assert_close(large["levels"][:, i], hand, rtol=1e-9, atol=0)


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_discrete_decoder_by_hand():
    """L_0 for bins = 5 (h = 1/4, values -1, -0.5, 0, 0.5, 1) from Phi differences computed with math.erf.

    sigma_1 = sqrt(sigma2(2)) = 0.24723 for beta = (0.3, 0.4, 0.5). Example 0: x0 = (-1, 0.5), x0_hat =
    (-0.7, 0.3): P = Phi((-0.75 + 0.7)/sigma_1) [end bin, from -inf] * (Phi((0.75 - 0.3)/sigma_1) -
    Phi((0.25 - 0.3)/sigma_1)). Example 1: x0 = (1, 0), x0_hat = (0.9, 0.2): P = (1 - Phi((0.75 - 0.9)/sigma_1))
    [end bin, to +inf] * (Phi((0.25 - 0.2)/sigma_1) - Phi((-0.25 - 0.2)/sigma_1)). L_0 = -log P.
    Mutations caught: the end bins not opened to +-inf; half-width 1/bins or 2/(bins - 1) instead of
    1/(bins - 1); the std sigma2(2) used as if it were a variance.
    """
    s = dgm.Schedule(BETA3)
    x0 = torch.tensor([[-1.0, 0.5], [1.0, 0.0]], dtype=F64)
    m = torch.tensor([[-0.7, 0.3], [0.9, 0.2]], dtype=F64)
    sd = math.sqrt(0.3**2 * 0.4**2 / (1 - (1 - 0.3**2) * (1 - 0.4**2)))
    p0 = _phi((-0.75 + 0.7) / sd) * (_phi((0.75 - 0.3) / sd) - _phi((0.25 - 0.3) / sd))
    p1 = (1 - _phi((0.75 - 0.9) / sd)) * (_phi((0.25 - 0.2) / sd) - _phi((-0.25 - 0.2) / sd))
    out = dgm.vlb(x0_predictor(s, m), s, x0, bins=5, generator=torch.Generator().manual_seed(0), max_batch=2,
                  return_terms=True)
    assert out["decoder"].tolist() == pytest.approx([-math.log(p0), -math.log(p1)], rel=1e-10)


# ----------------------------------------------------------------------------- 3. Gaussian data, eps*

M_G = [0.5, -0.3]
S_G = [[0.3, 0.1], [0.1, 0.2]]


def _gaussian_closed_forms(s):
    """For x0 ~ N(m, S) and the exact eps*: per level i the posterior covariance C_i = Cov[x0 | x_i] =
    S - a^2 S (a^2 S + s^2 I)^{-1} S (G5, constant in x_i), E L_{i-1} = 1/2 (SNR_{i-1} - SNR_i) tr C_i (G6),
    Var L_{i-1} = 2 w_i^2 tr C_i^2 (a quadratic form w |x0 - x0*|^2 of a Gaussian), and E L_vb (E34-E36)."""
    t = Tables(s)
    m, S = torch.tensor(M_G, dtype=F64), torch.tensor(S_G, dtype=F64)
    D, eye = 2, torch.eye(2, dtype=F64)
    C = [None] + [S - t.alpha_bar[i] ** 2 * S @ torch.linalg.solve(t.alpha_bar[i] ** 2 * S
                                                                   + t.sigma_bar[i] ** 2 * eye, S)
                  for i in range(1, s.L + 1)]
    mean = torch.zeros(s.L + 1, dtype=F64)
    var = torch.zeros(s.L + 1, dtype=F64)
    for i in range(2, s.L + 1):
        w = 0.5 * (t.snr[i - 1] - t.snr[i])
        mean[i], var[i] = w * torch.trace(C[i]), 2 * w**2 * torch.trace(C[i] @ C[i])
    a2 = t.alpha_bar[s.L] ** 2
    prior = 0.5 * (a2 * (m @ m + torch.trace(S)) - D * a2 - D * torch.log(1 - a2))
    v1 = t.sigma2[2]
    decoder = 0.5 * D * torch.log(2 * math.pi * v1) + torch.trace(C[1]) / (2 * v1)
    return t, m, S, C, mean, var, (prior + decoder + mean.sum()).item()


def test_gaussian_levels_match_g6_and_the_expected_bound():
    """Single Gaussian N(m, S) in D = 2, exact eps*, cosine L = 12, N = 20000 examples.

    Per level i = 2..L: the Monte Carlo mean of levels[:, i] lies within 4 standard errors of G6's
    1/2 (SNR_{i-1} - SNR_i) tr C_i, SE = (sample std) / sqrt(N); the closed-form variance 2 w^2 tr C^2 of
    the term (x0 - x0* ~ N(0, C_i)) agrees with the sample variance to 10% (the sample variance of a scaled
    chi-square-like variable has relative SE sqrt(2 + kurtosis excess) / sqrt(N) ~ 2.5%).
    The total: mean within 4 SE of E L_vb = E L_L + sum G6 + E L_0, where E L_L uses E|x0|^2 = |m|^2 + tr S
    and E L_0 = (D/2) log(2 pi v_1) + tr C_1 / (2 v_1); E L_vb >= H = 1/2 log det(2 pi e S) (E38), and the
    paired per-example gap L_vb(x0) + log p(x0) is positive on average by more than 4 SE.
    Mutations caught: _level_kl's posterior variance sigma2(i) replaced by beta_i^2; the level terms stored
    one level down (levels[:, i - 1]; the total is unchanged, only the per-level check sees it); _level_kl's
    mean-difference factor beta^2/(sigma_bar alpha) written beta^2/sigma_bar; c2 not squared; the level KL's
    1/(2 v) written 1/v; the decoder's log(2 pi v)/2 dropped; sigma2 without the squares on alpha_bar
    (erratum 25, in Schedule).
    """
    s = dgm.Schedule.cosine(12)
    t, m, S, C, mean, var, expected = _gaussian_closed_forms(s)
    gm = dgm.GaussianMixture([1.0], [M_G], [S_G])
    n = 20000
    x0 = gm.sample(n, torch.Generator().manual_seed(1))
    out = dgm.vlb(lambda x, i: gm.eps_star(s, x, i), s, x0, generator=torch.Generator().manual_seed(2),
                  return_terms=True)
    lv = out["levels"]
    for i in range(2, s.L + 1):
        se = lv[:, i].std().item() / math.sqrt(n)
        assert lv[:, i].mean().item() == pytest.approx(mean[i].item(), abs=4 * se), i
        assert lv[:, i].var().item() == pytest.approx(var[i].item(), rel=0.10), i
    total = out["total"]
    assert total.mean().item() == pytest.approx(expected, abs=4 * total.std().item() / math.sqrt(n))
    entropy = 0.5 * torch.logdet(2 * math.pi * math.e * S).item()
    assert expected > entropy
    gap = total + gm.log_prob(x0)
    assert gap.mean().item() > 4 * gap.std().item() / math.sqrt(n)


def test_gaussian_gap_identity_e38_in_closed_form():
    """E38 for Gaussian data, with no Monte Carlo: E L_vb (G6 route) = H + KL(p_L || N(0, I)) +
    sum_{i=1..L} KL(p(x_{i-1} | x_i) || p_phi(x_{i-1} | x_i)), each marginal KL in closed form.

    With eps* the model mean equals the true reverse mean E[x_{i-1} | x_i], and the true reverse kernel is
    N(m~, S~) with S~ from dgm's G7 oracle (constant in x_i), so KL = 1/2 [tr S~ / v_i - D + D log v_i -
    log det S~] with v_1 = sigma2(2), v_i = sigma2(i); p_L = N(a m, a^2 S + s^2 I). Holds to 1e-9 nats.
    Mutation caught: the oracle's G7 covariance S~ with alpha_i instead of alpha_i^2. (The same closed form
    E L_vb is tied to vlb's Monte Carlo mean in the previous test.)
    """
    s = dgm.Schedule.cosine(12)
    t, m, S, C, mean, var, expected = _gaussian_closed_forms(s)
    gm = dgm.GaussianMixture([1.0], [M_G], [S_G])
    D, eye = 2, torch.eye(2, dtype=F64)
    entropy = 0.5 * torch.logdet(2 * math.pi * math.e * S)
    aL, sL = t.alpha_bar[s.L], t.sigma_bar[s.L]
    SigL = aL**2 * S + sL**2 * eye
    kl_prior = 0.5 * (torch.trace(SigL) + aL**2 * (m @ m) - D - torch.logdet(SigL))
    kls = []
    for i in range(1, s.L + 1):
        _, _, S_t = gm.reverse_kernel(s, torch.zeros(1, D, dtype=F64), i)
        v = t.sigma2[2] if i == 1 else t.sigma2[i]
        kls.append(0.5 * (torch.trace(S_t[0]) / v - D + D * torch.log(v) - torch.logdet(S_t[0])))
    torch.testing.assert_close(C[1], gm.reverse_kernel(s, torch.zeros(1, D, dtype=F64), 1)[2][0], rtol=1e-9,
                               atol=1e-12)
    assert all(k > 0 for k in kls)
    assert (entropy + kl_prior + sum(kls)).item() == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------- 4. the E38 worked example

# EQUATIONS.md E38 does not name its 1-D mixture. This round one, three equal components at -2, 0, 2 of
# std 1/4, has H = 1.1305 and reproduces the sheet's -ELBO = 1.58 and H = 1.13 (linear schedule, L = 1000).
GM_E38 = ([1 / 3] * 3, [[-2.0], [0.0], [2.0]], [[[0.0625]]] * 3)


def test_e38_worked_example():
    """EQUATIONS.md E38's example: -ELBO = 1.58 nats against H = 1.13 nats; about 0.37 of the gap from i <= 10.

    The sheet's -ELBO is the optimal fixed-small DDPM of G8: L_L + sum_{i>=2} G6 + (D/2) log(2 pi e vs2),
    with the decoder variance vs2 = E tr Cov(x0 | x_1) / D. Every expectation over x_i is a quadrature on a
    grid (spacing 0.004, p_i and tr Cov(x0 | x) from dgm's oracle), not Monte Carlo, so both numbers are
    checked to the sheet's two decimals. The split: the marginal KLs of E38 at levels 1..10, each
    E log p(x_{i-1} | x_i) (dgm's G7) - log N(x_{i-1}; mu*(x_i), v_i) over 40000 pairs (x_{i-1}, x_i) per level
    (0.381 here, SE about 0.005); with 200000 pairs, or a Gaussian approximation of each reverse kernel, it is
    0.390 +- 0.002, against the sheet's "~0.37" (5% lower), so that number is checked to +-0.03 only.
    Mutations caught: the oracle's tr Cov(x0 | x_i) without its between-component spread (G5); the linear
    schedule's end variance 0.015 instead of 0.02 (E42); prior_kl with alpha_bar_L instead of alpha_bar_L^2
    on |x0|^2 (1.587 -> 1.59).
    """
    s = dgm.Schedule.linear(1000)
    gm = dgm.GaussianMixture(*GM_E38)
    x = torch.linspace(-4, 4, 2001, dtype=F64)[:, None]
    dx = 8 / 2000
    p0 = gm.log_prob(x).exp()
    entropy = -(p0 * gm.log_prob(x)).sum().item() * dx
    prior = (p0 * dgm.prior_kl(s, x)).sum().item() * dx
    tr = torch.zeros(s.L + 1, dtype=F64)
    for i in range(1, s.L + 1):
        tr[i] = (gm.at_level(s, i).log_prob(x).exp() * gm.posterior_cov_trace(s, x, i)).sum() * dx
    g6 = (0.5 * (s.snr[1:-1] - s.snr[2:]) * tr[2:]).sum().item()
    D = 1
    neg_elbo = prior + g6 + 0.5 * D * math.log(2 * math.pi * math.e * tr[1].item() / D)
    assert round(entropy, 2) == 1.13 and round(neg_elbo, 2) == 1.58

    g = torch.Generator().manual_seed(0)
    n, first10 = 40000, 0.0
    vs2 = tr[1].item() / D
    for i in range(1, 11):
        x0 = gm.sample(n, g)
        a_prev = s.alpha_bar[i - 1]
        x_prev = a_prev * x0 + torch.sqrt(1 - a_prev**2) * torch.randn(x0.shape, generator=g, dtype=F64)
        x_i = s.alpha[i] * x_prev + s.beta[i] * torch.randn(x0.shape, generator=g, dtype=F64)
        eps = gm.eps_star(s, x_i, i)
        x0_star = (x_i - s.sigma_bar[i] * eps) / s.alpha_bar[i]
        mu = s.A[i] * x0_star + s.B[i] * x_i
        v = vs2 if i == 1 else s.sigma2[i].item()
        log_q = -0.5 * (math.log(2 * math.pi * v) + ((x_prev - mu) ** 2).sum(1) / v)
        first10 += (gm.reverse_log_prob(s, x_prev, x_i, i) - log_q).mean().item()
    gap = neg_elbo - entropy
    assert first10 == pytest.approx(0.37, abs=0.03)
    assert 0.8 * gap < first10 < gap  # "most of the gap"


# ----------------------------------------------------------------------------- 5. loss weights, values


def _hand_weights(s, objective, weighting):
    """level_weights from its docstring, in plain Python: min(SNR, 5) or the bound's (SNR_{i-1} - SNR_i)/2
    (level 1 taking level 2's) on the x0 error, divided by the objective's factor (|eps err|^2 = SNR |x0 err|^2,
    |v err|^2 = (SNR + 1) |x0 err|^2); vlb normalized to mean 1 over levels 1..L; level 0 weight 0."""
    snr = Tables(s).snr.tolist()
    factor = {"x0": lambda i: 1.0, "eps": lambda i: snr[i], "v": lambda i: snr[i] + 1}[objective]
    if weighting == "min_snr":
        return [0.0] + [min(snr[i], 5.0) / factor(i) for i in range(1, s.L + 1)]
    w_x0 = [0.0, 0.5 * (snr[1] - snr[2])] + [0.5 * (snr[i - 1] - snr[i]) for i in range(2, s.L + 1)]
    w = [0.0] + [w_x0[i] / factor(i) for i in range(1, s.L + 1)]
    mean = sum(w[1:]) / s.L
    return [x / mean for x in w]


@pytest.mark.parametrize("objective", ["x0", "eps", "v"])
@pytest.mark.parametrize("weighting", ["min_snr", "vlb"])
def test_level_weights_values(objective, weighting):
    """level_weights against its docstring's formulas at every level of cosine L = 10 (SNR from 34.8 down to
    2.4e-5, so min(SNR, 5) binds at levels 1 and 2 and not after), plus spot values computed by hand.

    Spot values (cosine L = 10): SNR_1 = 34.833, SNR_2 = 8.872, SNR_3 = 3.693, so the min_snr weights at
    level 1 are 5 (x0), 5/34.833 (eps), 5/35.833 (v), and at level 3 they are 3.693, 1, 3.693/4.693; the vlb
    x0 weight at levels 1 and 2 is (34.833 - 8.872)/2 = 12.980 before normalization.
    Mutations caught: gamma 1 instead of 5 / max instead of min; v's factor SNR instead of SNR + 1; eps's
    factor 1/SNR (lambda inverted); vlb's level 1 taking level 2's weight after the objective's factor
    instead of before; the vlb normalization over levels 0..L; (SNR_i - SNR_{i+1}) instead of
    (SNR_{i-1} - SNR_i).
    """
    s = dgm.Schedule.cosine(10)
    got = level_weights(s, objective, weighting)
    hand = _hand_weights(s, objective, weighting)
    assert got.dtype == F64 and got.shape == (11,)
    assert got.tolist() == pytest.approx(hand, rel=1e-12, abs=0)
    snr = Tables(s).snr
    assert snr[1:4].tolist() == pytest.approx([34.833, 8.872, 3.693], abs=1e-3)
    if weighting == "min_snr":
        first = {"x0": 5.0, "eps": 5.0 / 34.833, "v": 5.0 / 35.833}[objective]
        third = {"x0": 3.693, "eps": 1.0, "v": 3.693 / 4.693}[objective]
        assert got[1].item() == pytest.approx(first, rel=1e-4)
        assert got[3].item() == pytest.approx(third, rel=1e-4)
    else:
        # levels 1 and 2 share the x0 weight 12.980, so their ratio is the ratio of the objective's factors
        ratio = {"x0": 1.0, "eps": 8.872 / 34.833, "v": 9.872 / 35.833}[objective]
        assert (got[1] / got[2]).item() == pytest.approx(ratio, rel=1e-4)
        factor_2_over_3 = {"x0": 1.0, "eps": 8.872 / 3.693, "v": 9.872 / 4.693}[objective]
        w3_over_w2 = (8.872 - 3.693) / (34.833 - 8.872) * factor_2_over_3
        assert (got[3] / got[2]).item() == pytest.approx(w3_over_w2, rel=1e-3)
        assert got[1:].mean().item() == pytest.approx(1.0, rel=1e-12)
        assert got[0].item() == 0.0


@pytest.mark.parametrize("objective", ["x0", "eps", "v"])
def test_loss_simple_min_snr_value(objective):
    """loss_simple(objective, "min_snr") == mean_b w[i_b] * mean_d (target_hat - target)^2 with the same draws
    (levels i ~ U{1..L} by randint, then eps by randn, from the generator), an imperfect denoiser, and the
    weights of the previous test: x0_hat = (x_i - s eps_hat)/a, v = a eps - s x0, v_hat = a eps_hat - s x0_hat.
    Mutations caught: the weight table indexed at i - 1; eps_to_x0 with sigma_bar^2 (x0 objective); v's
    target s eps - a x0; q_sample without the square root on the noise coefficient."""
    s = dgm.Schedule.cosine(10)
    t = Tables(s)
    x0 = torch.tensor([[0.5, -1.0], [0.2, 0.3], [-0.7, 0.9], [1.1, 0.0]] * 8, dtype=F64)
    eps_fn = lambda x, i: 0.3 * x + 0.1  # noqa: E731
    got = dgm.loss_simple(eps_fn, s, x0, objective=objective, weighting="min_snr",
                          generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    i = torch.randint(1, s.L + 1, (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    a, sb = t.alpha_bar[i][:, None], t.sigma_bar[i][:, None]
    x_i = a * x0 + sb * eps
    eps_hat = eps_fn(x_i, i)
    x0_hat = (x_i - sb * eps_hat) / a
    err = {"eps": eps_hat - eps, "x0": x0_hat - x0, "v": (a * eps_hat - sb * x0_hat) - (a * eps - sb * x0)}[objective]
    w = torch.tensor(_hand_weights(s, objective, "min_snr"), dtype=F64)
    assert got.item() == pytest.approx((w[i] * (err**2).mean(1)).mean().item(), rel=1e-10)


# ----------------------------------------------------------------------------- 6. the dequantized bound


def test_dequantized_evaluate_is_vlb_of_x0_plus_u_minus_d_log_2h():
    """DDPM(bins = 5, dequantize): evaluate(x0)["nll_nats"] == vlb(denoiser, schedule, x0 + u) - D log(2h),
    h = 1/(bins - 1) = 1/4, D = 2, so -D log(2h) = +2 log 2 = 1.386 nats.

    The model's draws, reproduced: first u ~ U(0, 1)^D in x0's dtype (torch.rand), y = x0 + (2u - 1) h, then
    vlb's noise from the same generator. The net's weights are randomized (a fresh MLP outputs exactly 0).
    Mutations caught: D log(2h) with the wrong sign; D log h instead of D log(2h); h = 1/bins in the draw;
    u not centred (x0 + u h); the discrete bins also passed to the dequantized bound (a discretized decoder
    on continuous y).
    """
    model = dgm.models.build_model({"kind": "ddpm", "data_shape": [2], "levels": 10, "bins": 5,
                                    "dequantize": True,
                                    "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}})
    gp = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gp))
    x0 = torch.tensor([[-1.0, 0.5], [0.0, 1.0], [0.5, -0.5], [1.0, -1.0]])
    got = model.evaluate(x0, generator=torch.Generator().manual_seed(3))["nll_nats"]
    g = torch.Generator().manual_seed(3)
    h, D = 1 / (5 - 1), 2
    u = torch.rand(x0.shape, generator=g, dtype=x0.dtype)
    y = x0 + (2 * u - 1) * h
    assert ((y - x0).abs() <= h).all() and not torch.equal(y, x0)
    ref = dgm.vlb(model.denoiser, model.schedule, y, generator=g) - D * math.log(2 * h)
    assert D * math.log(2 * h) == pytest.approx(-2 * math.log(2))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    eps_hat = model.denoiser(y, torch.full((4,), 5))
    assert eps_hat.abs().min() > 1e-3  # the randomized net is not the zero denoiser of a fresh MLP


def test_vlb_bounds_the_numbers_per_call():
    """28x28 images go at most 2**17 numbers (167 rows) a denoiser call, not max_batch = 2048 rows (3 GiB of
    activations for an MNIST UNet). Catches the chunking by rows alone."""
    from dgm.core.bound import MAX_NUMBERS

    rows = []

    def record(x, i):
        rows.append(x.shape[0])
        return torch.zeros_like(x)

    s = dgm.Schedule.linear(400)
    dgm.vlb(record, s, torch.zeros(2, 1, 28, 28), bins=256)
    assert max(rows) * 784 <= MAX_NUMBERS and sum(rows) == 2 * 400
