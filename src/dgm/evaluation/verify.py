"""``dgm verify``: the book's chapter-2 claims checked numerically, one table row each (EQUATIONS.md E17-E41,
G1-G7, V1-V4).

Every Monte Carlo row derives its tolerance from the sample size (a number of standard errors); errata rows
check that the chapter-2 summary post's version of a formula *fails* the same test that the corrected one
passes. ``run_checks`` returns the rows, ``format_table`` prints them; ``dgm.cli.verify`` is the command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dgm.core.forward import q_sample, q_step
from dgm.core.gaussian import normal_log_prob
from dgm.core.oracle import GaussianMixture
from dgm.core.parameterization import eps_to_mean
from dgm.core.reverse import posterior
from dgm.core.schedule import Schedule
from dgm.evaluation.distances import sliced_wasserstein
from dgm.models.vae.analysis import blur_floor, encoder_log_prob, optimal_decoder, sample_aggregate_posterior
from dgm.samplers import SAMPLERS, sample

__all__ = ["Row", "demo_mixture", "format_table", "run_checks"]

Z = 5.0  # standard errors allowed in Monte Carlo rows (a false alarm about once in a million runs)


@dataclass(frozen=True)
class Row:
    """One checked claim: what was measured, the tolerance it must meet (as text) and whether it did."""

    claim: str
    measured: float
    tolerance: str
    passed: bool


def demo_mixture() -> GaussianMixture:
    """A 2-D mixture with anisotropic components and unequal weights, used by the checks."""
    return GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-1.5, 0.0], [1.0, 1.0], [0.5, -1.2]],
        [[[0.05, 0.0], [0.0, 0.05]], [[0.20, 0.08], [0.08, 0.10]], [[0.02, -0.01], [-0.01, 0.15]]],
    )


def _bayes_posterior_on_grid(s: Schedule, x0: float, x_i: float, i: int) -> tuple[float, float]:
    """Mean and variance of p(x_{i-1}|x_i,x0) by Bayes' rule (E22) on a 1-D grid: no closed form used."""
    grid = torch.linspace(-6, 6, 60001, dtype=torch.float64)
    log_fwd = normal_log_prob(torch.tensor(x_i, dtype=torch.float64), s.alpha[i] * grid, s.beta[i] ** 2)
    a = s.alpha_bar[i - 1]
    log_pert = normal_log_prob(grid, a * x0, 1 - a**2)
    p = torch.softmax(log_fwd + log_pert, 0)
    m = (p * grid).sum()
    return m.item(), (p * (grid - m) ** 2).sum().item()


def check_forward(g, n) -> list[Row]:
    s = Schedule.linear(50)
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    x = x0
    i = 5
    for k in range(1, i + 1):
        x = q_step(s, x, k, torch.randn(x.shape, generator=g, dtype=torch.float64))
    a = s.alpha_bar[i].item()
    var_ok, var_post = 1 - a**2, (1 - a**2) ** 2  # E19 vs the post's missing square root (erratum 18)
    se = math.sqrt(2 / n) * var_ok
    measured = x.var().item()
    return [
        Row("5 forward steps (E18) compose to the perturbation kernel variance 1 - alpha_bar^2 (E19)",
            abs(measured - var_ok), f"< {Z * se:.1e}", abs(measured - var_ok) < Z * se),
        Row("erratum 18: the summary post's noise scale (1 - alpha_bar^2) misses the composed variance",
            abs(measured - var_post), f"> {Z * se:.1e}", abs(measured - var_post) > Z * se),
    ]


def check_posterior() -> list[Row]:
    s = Schedule.linear(10)  # a 10-step schedule, where the post's sigma2 is visibly wrong
    err_ok, err_post, err_mean = 0.0, 0.0, 0.0
    for i in range(2, s.L + 1):
        m, v = _bayes_posterior_on_grid(s, 0.3, -0.4, i)
        x_i, x0 = torch.tensor([[-0.4]], dtype=torch.float64), torch.tensor([[0.3]], dtype=torch.float64)
        mean, var = posterior(s, x_i, x0, i)
        post = (1 - s.alpha_bar[i - 1]) / (1 - s.alpha_bar[i]) * s.beta[i] ** 2  # the post's sigma2 (erratum 25)
        err_ok = max(err_ok, abs(var.item() / v - 1))
        err_post = max(err_post, abs(post.item() / v - 1))
        err_mean = max(err_mean, abs(mean.item() - m))
    return [
        Row("reverse conditional kernel (E24, E25) equals Bayes' rule (E22): max rel. error of sigma2, L=10",
            err_ok, "< 1e-4", err_ok < 1e-4),
        Row("reverse conditional mean A_i x0 + B_i x_i equals Bayes' rule: max abs error", err_mean, "< 1e-5",
            err_mean < 1e-5),
        Row("erratum 25: the summary post's sigma2 (no squares on alpha_bar) misses Bayes' rule on L=10", err_post,
            "> 1e-2", err_post > 1e-2),
    ]


def check_theorem(gm, g, n) -> list[Row]:
    """E23 for a deliberately imperfect model p_phi = N(mu(0.7 eps* + 0.1), sigma2(i))."""
    s, i = Schedule.linear(10), 4
    var = s.sigma2[i].item()

    def mu_phi(x):
        return eps_to_mean(s, x, 0.7 * gm.eps_star(s, x, i) + 0.1, i)

    # Left: E_{x_i ~ p_i} KL(p(x_{i-1}|x_i) || p_phi), x_{i-1} drawn from the exact reverse kernel (G7).
    x0 = gm.sample(n, g)
    x_i = q_sample(s, x0, i, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    x_prev = gm.reverse_sample(s, x_i, i, generator=g)
    lhs_terms = gm.reverse_log_prob(s, x_prev, x_i, i) - normal_log_prob(x_prev, mu_phi(x_i), var).sum(1)
    # Right: E KL(p(x_{i-1}|x_i,x0) || p_phi) (closed form, E27) - C'_i, on fresh draws.
    x0 = gm.sample(n, g)
    x_i = q_sample(s, x0, i, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    mean, _ = posterior(s, x_i, x0, i)
    cond = ((mean - mu_phi(x_i)) ** 2).sum(1) / (2 * var)
    x_prev = mean + math.sqrt(var) * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    c_terms = normal_log_prob(x_prev, mean, var).sum(1) - gm.reverse_log_prob(s, x_prev, x_i, i)
    rhs_terms = cond - c_terms
    lhs, rhs = lhs_terms.mean().item(), rhs_terms.mean().item()
    se = math.sqrt(lhs_terms.var().item() / n + rhs_terms.var().item() / n)
    c, c_se = c_terms.mean().item(), c_terms.std().item() / math.sqrt(n)
    return [
        Row(f"E23: marginal KL ({lhs:.4f}) = conditional KL - C' ({rhs:.4f}), imperfect model, L=10, i=4",
            abs(lhs - rhs), f"< {Z * se:.1e}", abs(lhs - rhs) < Z * se),
        Row(f"E23/erratum 22, 24: C'_i > 0 (so marginal and conditional KL differ), C' = {c:.4f}", c,
            f"> {Z * c_se:.1e}", c > Z * c_se),
    ]


def check_eps_star(gm, g, n) -> list[Row]:
    s = Schedule.linear(1000)
    rows = []
    worst_gap, beats = 0.0, True
    tol_used = 0.0
    for i in (10, 300, 800):
        x0 = gm.sample(n, g)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_i = q_sample(s, x0, i, eps)
        e_star = gm.eps_star(s, x_i, i)
        per = ((e_star - eps) ** 2).sum(1)
        floor = (s.snr[i] * gm.posterior_cov_trace(s, x_i, i)).mean().item()  # G6
        se = per.std().item() / math.sqrt(n)
        worst_gap = max(worst_gap, abs(per.mean().item() - floor) / se)
        tol_used = Z
        for other in (0.95 * e_star, e_star + 0.05):
            beats &= per.mean().item() < ((other - eps) ** 2).sum(1).mean().item()
    rows.append(Row("eps* = E[eps|x_i] (G3) beats perturbed predictors in L_simple (E33), i = 10, 300, 800",
                    float(beats), "= 1", beats))
    rows.append(Row("L_simple at eps* meets the floor SNR_i E tr Cov(x0|x_i) (G6): worst gap in std. errors",
                    worst_gap, f"< {tol_used:.0f}", worst_gap < tol_used))
    return rows


def check_constant_C(g) -> list[Row]:
    s = Schedule.cosine(100)
    x_i = torch.randn(256, 3, generator=g, dtype=torch.float64)
    eps, eps_hat = torch.randn_like(x_i), torch.randn_like(x_i)
    i = torch.randint(2, 101, (256,), generator=g)
    d_mu = ((eps_to_mean(s, x_i, eps_hat, i) - eps_to_mean(s, x_i, eps, i)) ** 2).sum(1)
    ratio = d_mu / ((eps_hat - eps) ** 2).sum(1)
    C = s.beta[i] ** 4 / (s.alpha[i] ** 2 * (1 - s.alpha_bar[i] ** 2))  # E30
    err = (ratio / C - 1).abs().max().item()
    # The post's L_DDPM weight 1/sqrt(2 sigma2) (erratum 27) against the Gaussian KL E27 it should equal.
    lvl = 50
    var = s.sigma2[lvl].item()
    d2 = 0.01
    kl = 0.5 * d2 / var
    post = d2 / math.sqrt(2 * var)
    return [
        Row("E30: |mu_phi - mu|^2 = C_i |eps_phi - eps|^2 with C_i = beta^4/(alpha^2(1-alpha_bar^2)): max rel. err",
            err, "< 1e-10", err < 1e-10),
        Row("erratum 27: the summary post's weight 1/sqrt(2 sigma2) gives a KL off by this factor (i=50, cosine L=100)",
            post / kl, "!= 1 (> 1.01 or < 0.99)", abs(post / kl - 1) > 0.01),
    ]


def check_vae_blur(g, n) -> list[Row]:
    N, m = 60, 2
    data = torch.randn(N, 4, generator=g, dtype=torch.float64)
    q_mean = 1.5 * torch.randn(N, m, generator=g, dtype=torch.float64)  # an aggregate posterior unlike the prior
    q_std = torch.full((N, m), 0.4, dtype=torch.float64)
    mu = optimal_decoder(q_mean, q_std, data)
    idx = torch.randint(0, N, (n,), generator=g)
    z = q_mean[idx] + q_std[idx] * torch.randn(n, m, generator=g, dtype=torch.float64)
    per = ((data[idx] - mu(z)) ** 2).sum(1)
    mse = per.mean().item()
    worse = min(((data[idx] - f(z)) ** 2).sum(1).mean().item() for f in (lambda z: 0.9 * mu(z), lambda z: mu(z) + 0.05))
    floor = blur_floor(q_mean, q_std, data, sample_aggregate_posterior(q_mean, q_std, n, g))
    se = per.std().item() / math.sqrt(n)
    # The post's denominator (erratum 12): the prior p(z) instead of the aggregate posterior q(z). Its weights
    # q(z|x_n) p_data(x_n) / p(z) sum to q(z) / p(z), not 1, so it is no average of the data.
    w_sum = torch.exp(encoder_log_prob(z, q_mean, q_std)).mean(1)  # q(z) = (1/N) sum_n q(z|x_n), V3
    log_prior = normal_log_prob(z, torch.zeros_like(z), 1.0).sum(1)
    off = (w_sum / torch.exp(log_prior) - 1).abs().median().item()
    return [
        Row("V1: the averaging decoder mu*(z) has lower reconstruction MSE than perturbed decoders (E14, E16)",
            worse - mse, "> 0", worse - mse > 0),
        Row(f"V4: blur floor ({floor:.4f}) equals the MSE of mu* ({mse:.4f}) and is > 0: |difference|",
            abs(floor - mse), f"< {Z * se:.1e}", abs(floor - mse) < Z * se and floor > 0),
        Row("erratum 12: with the prior as denominator the decoder weights sum to q(z)/p(z), not 1: median |sum - 1|",
            off, "> 0.1", off > 0.1),
    ]


def check_samplers(gm, g, n, levels) -> list[Row]:
    """Each sampler driven by eps* against fresh data, relative to the two-sample floor.

    SW1 between two samples of n points fluctuates by about its own size, so both the sampler's SW1 and
    the floor are averaged over 4 independent reference sets.

    Few-step samplers carry a discretization bias that does not shrink with n, so they run at NFE where it
    is small: DDIM at 100, DPM-Solver++(2M) at 20 (benchmarks/RESULTS.md has the sweep).
    """
    s = Schedule.linear(levels)
    refs = [gm.sample(n, g) for _ in range(4)]
    proj = torch.Generator
    floor = sum(sliced_wasserstein(gm.sample(n, g), ref, generator=proj().manual_seed(k))
                for k, ref in enumerate(refs)) / len(refs)
    rows = []
    for name, steps in (("ancestral", None), ("ddim", min(100, levels)), ("dpm++2m", min(20, levels))):
        assert name in SAMPLERS
        x = sample(lambda x, i: gm.eps_star(s, x, i), s, (n, 2), sampler=name, steps=steps, generator=g,
                   dtype=torch.float64)
        sw = sum(sliced_wasserstein(x, ref, generator=proj().manual_seed(k)) for k, ref in enumerate(refs)) / len(refs)
        nfe = steps or levels
        rows.append(Row(f"{name} ({nfe} NFE) driven by eps* recovers the mixture: SW1 / two-sample floor "
                        f"({floor:.4f}), n={n}", sw / floor, "< 2", sw / floor < 2))
    return rows


def run_checks(*, n: int = 20_000, levels: int = 1000, seed: int = 0, progress=None) -> list[Row]:
    """Run every check; ``n`` Monte Carlo draws per check (>= 100), ``levels`` L of the sampler checks
    (10..100000). ``progress(rows)``, if given, is called with the rows so far after each group of checks."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 100:
        raise ValueError(f"n (Monte Carlo draws per check) must be an integer >= 100, got {n!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 10 <= levels <= 100_000:
        raise ValueError(f"levels must be an integer between 10 and 100000, got {levels!r}")
    g = torch.Generator().manual_seed(seed)
    gm = demo_mixture()
    rows: list[Row] = []
    steps = [
        lambda: check_forward(g, n),
        check_posterior,
        lambda: check_theorem(gm, g, n),
        lambda: check_eps_star(gm, g, n),
        lambda: check_constant_C(g),
        lambda: check_vae_blur(g, n),
        lambda: check_samplers(gm, g, n, levels),
    ]
    for fn in steps:
        rows.extend(fn())
        if progress is not None:
            progress(rows)
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows as a plain-text table: claim, measured value, tolerance, PASS/FAIL."""
    width = max(len(r.claim) for r in rows)
    lines = [f"{'claim':<{width}}  {'measured':>10}  {'tolerance':<24}  pass", "-" * (width + 46)]
    for r in rows:
        lines.append(f"{r.claim:<{width}}  {r.measured:>10.4g}  {r.tolerance:<24}  {'PASS' if r.passed else 'FAIL'}")
    return "\n".join(lines)
