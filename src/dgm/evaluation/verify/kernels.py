"""The forward process, the reverse kernels, eps* and the mean (EQUATIONS.md E17-E33, G1-G7) as rows of
``dgm verify``: dgm's q_step, q_sample, posterior, the oracle's reverse kernel and eps*, and eps_to_mean
against the same quantities computed another way (written out from beta, Bayes' rule on a grid, autograd of
the exact density), with the summary post's errata 18, 22, 24 and 25 beside the rows whose draws show them."""

from __future__ import annotations

import math

import torch

from dgm.core.forward import q_sample, q_step
from dgm.core.parameterization import eps_to_mean
from dgm.core.reverse import posterior
from dgm.core.schedule import Schedule
from dgm.evaluation.verify.rows import ROUNDOFF, Row, Z, det_row, erratum, randn, tables, z_gauss, z_row

__all__ = ["check_eps_star", "check_forward", "check_mean", "check_posterior", "check_reverse_kernel",
           "check_theorem"]

# ---------------------------------------------------------------------------- forward process (E17-E19)


def check_forward(g, n) -> list[Row]:
    """q_step and q_sample draws against N(alpha x, beta^2) and N(alpha_bar x0, 1 - alpha_bar^2) written out."""
    s, i, x0 = Schedule.linear(20), 5, 1.5  # alpha_5 = 0.886, alpha_bar_5 = 0.742: alpha vs alpha_bar is visible
    alpha, abar = tables(s)
    beta2, var_i = s.beta[i].item() ** 2, 1 - abar[i] ** 2  # var_i = 0.450, its square 0.203: a root is visible
    start = torch.full((n, 1), x0, dtype=torch.float64)
    one = q_step(s, start, i, randn(g, n, 1)).flatten()
    pert = q_sample(s, start, i, randn(g, n, 1)).flatten()
    x = start
    for k in range(1, i + 1):
        x = q_step(s, x, k, randn(g, n, 1))
    x = x.flatten()
    z_post = z_gauss(x, abar[i] * x0, var_i**2)[1]  # the post's variance (1 - alpha_bar^2)^2 (erratum 18)
    return [
        z_row("forward-step", f"E17/E18 q_step, level {i} of linear L=20, x_prev={x0}: mean {one.mean():.4f}, var "
               f"{one.var():.4f} vs alpha_i x_prev {alpha[i] * x0:.4f}, beta_i^2 {beta2:.4f}",
               z_gauss(one, alpha[i] * x0, beta2)),
        z_row("perturbation", f"E19 q_sample, level {i}, x0={x0}: mean {pert.mean():.4f}, var {pert.var():.4f} vs "
               f"alpha_bar_i x0 {abar[i] * x0:.4f}, 1 - alpha_bar_i^2 {var_i:.4f}",
               z_gauss(pert, abar[i] * x0, var_i)),
        z_row("composition", f"E18->E19 {i} q_step steps from x0={x0}: mean {x.mean():.4f}, var {x.var():.4f} vs the "
               "perturbation kernel", z_gauss(x, abar[i] * x0, var_i)),
        erratum("erratum-18", f"erratum 18: the post's noise scale 1 - alpha_bar^2 (no root) gives var "
                 f"{var_i**2:.4f}; {i} q_step steps give {x.var():.4f} (|z|)",
                 abs(z_post), f"> Z = {Z:.2f}", abs(z_post) > Z),
    ]


# --------------------------------------------------------------------------- reverse kernels (E22-E25, G7)


def _bayes_on_grid(s: Schedule, x0: torch.Tensor, x_i: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of p(x_{i-1} | x_i, x0) by Bayes' rule (E22) on a grid, for 1-D pairs (P,).

    p(x_{i-1} | x_i, x0) is proportional to N(x_i; alpha_i x_{i-1}, beta_i^2) N(x_{i-1}; alpha_bar_{i-1} x0,
    1 - alpha_bar_{i-1}^2), both written out from beta. The grid [-12, 12] with h = 24 / 2^16 holds every
    posterior here (|mean| < 3, std <= 1: tails past 9 std carry 2e-19); a Gaussian of std >= 0.096 on
    spacing h has moment errors ~ exp(-2 pi^2 (0.096 / h)^2) = 0 (Poisson summation), so only round-off is left.
    """
    alpha, abar = tables(s)
    grid = torch.linspace(-12, 12, 2**16 + 1, dtype=torch.float64)[None]
    beta2, a, v = s.beta[i].item() ** 2, abar[i - 1], 1 - abar[i - 1] ** 2
    log_w = -((x_i[:, None] - alpha[i] * grid) ** 2) / (2 * beta2) - (grid - a * x0[:, None]) ** 2 / (2 * v)
    w = torch.softmax(log_w, dim=1)
    m = (w * grid).sum(1)
    return m, (w * (grid - m[:, None]) ** 2).sum(1)


def check_posterior() -> list[Row]:
    """dgm.posterior (one batched call over levels and pairs) against Bayes' rule on a grid."""
    s = Schedule.linear(10)  # a 10-step schedule, where the post's sigma2 is visibly wrong
    _, abar = tables(s)
    pairs = [(a, b) for a in (-1.0, 0.3, 1.2) for b in (-0.4, 0.8, 2.0)]
    x0 = torch.tensor([p[0] for p in pairs] * s.L, dtype=torch.float64)
    x_i = torch.tensor([p[1] for p in pairs] * s.L, dtype=torch.float64)
    lv = torch.arange(1, s.L + 1).repeat_interleave(len(pairs))
    mean, var = posterior(s, x_i[:, None], x0[:, None], lv)
    mean, var = mean.flatten(), var.flatten()
    first = lv == 1  # sigma2(1) = 0, A_1 = 1, B_1 = 0: a point mass at x0 (E25)
    err = max((mean[first] - x0[first]).abs().max().item(), var[first].abs().max().item())
    err_post = 0.0
    for i in range(2, s.L + 1):
        rows = lv == i
        m, v = _bayes_on_grid(s, x0[rows], x_i[rows], i)
        err = max(err, (mean[rows] - m).abs().max().item(), (var[rows] / v - 1).abs().max().item())
        post = (1 - abar[i - 1]) / (1 - abar[i]) * s.beta[i].item() ** 2  # the post's sigma2 (erratum 25)
        err_post = max(err_post, (post / v - 1).abs().max().item())
    return [
        det_row("posterior", "E22-E25 posterior vs Bayes' rule on a grid, levels 1..10 of linear L=10: max mean "
                 "error, var rel. error", err),
        erratum("erratum-25", f"erratum 25: the post's sigma2 (no squares on alpha_bar) vs Bayes' rule, L=10: max "
                 f"rel. error (posterior: {err:.0e})", err_post,
                 f"> {ROUNDOFF:.0e}", err_post > ROUNDOFF),
    ]


def check_reverse_kernel(gm, g, n) -> list[Row]:
    """The oracle's exact reverse kernel (G7) against Bayes' rule (E21) with the exact marginals (G1)."""
    s = Schedule.linear(10)
    alpha, _ = tables(s)
    m, err = min(n, 2000), 0.0
    for i in range(1, s.L + 1):
        x_i = gm.at_level(s, i).sample(m, g)
        x_prev = gm.reverse_sample(s, x_i, i, generator=g)
        beta2 = s.beta[i].item() ** 2
        fwd = (-(x_i - alpha[i] * x_prev) ** 2 / (2 * beta2) - 0.5 * math.log(2 * math.pi * beta2)).sum(1)
        bayes = fwd + gm.at_level(s, i - 1).log_prob(x_prev) - gm.at_level(s, i).log_prob(x_i)
        err = max(err, (gm.reverse_log_prob(s, x_prev, x_i, i) - bayes).abs().max().item())
    return [det_row("reverse-kernel", "G7 oracle log p(x_(i-1)|x_i) vs Bayes' rule (E21) with the exact marginals "
                     "(G1), L=10: max abs error", err)]


def _mi_c_prime(gm, s: Schedule, i: int, g, n) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample terms of C'_i two ways, on chain draws x0 -> x_{i-1} -> x_i (so x_{i-1} ~ p(.|x_i, x0)):
    through dgm.posterior and G7 (log q(x_{i-1}|x_i,x0) - log p(x_{i-1}|x_i)), and through the marginals alone,
    C'_i = I(x0; x_{i-1}) - I(x0; x_i) with I(x0; x_j) = E[-log p_j(x_j)] - D/2 log(2 pi e (1 - alpha_bar_j^2))."""
    _, abar = tables(s)
    x0 = gm.sample(n, g)
    x_prev = q_sample(s, x0, i - 1, randn(g, *x0.shape))
    x_i = q_step(s, x_prev, i, randn(g, *x0.shape))
    mean, var = posterior(s, x_i, x0, i)
    log_q = (-(x_prev - mean) ** 2 / (2 * var) - 0.5 * torch.log(2 * math.pi * var)).sum(1)
    via_posterior = log_q - gm.reverse_log_prob(s, x_prev, x_i, i)
    via_mi = (-gm.at_level(s, i - 1).log_prob(x_prev) + gm.at_level(s, i).log_prob(x_i)
              - 0.5 * gm.D * math.log((1 - abar[i - 1] ** 2) / (1 - abar[i] ** 2)))
    return via_posterior, via_mi


def check_theorem(gm, g, n, inner: int = 8) -> list[Row]:
    """E23 for a deliberately imperfect model p_phi = N(mu(0.7 eps* + 0.1), sigma2(i)), and C' (errata 22, 24).

    Paired design: both sides use the same (x0, x_i) ~ p(x0, x_i), whose x_i is a draw of p_i, and ``inner``
    draws of x_{i-1} per pair; the SE is the spread of the per-pair difference over the n pairs.
    """
    s, i = Schedule.linear(10), 4
    var_phi = s.sigma2[i].item()

    def log_phi(x_prev, m_phi):
        return (-(x_prev - m_phi) ** 2 / (2 * var_phi) - 0.5 * math.log(2 * math.pi * var_phi)).sum(1)

    x0 = gm.sample(n, g)
    x_i = q_sample(s, x0, i, randn(g, *x0.shape))
    m_phi = eps_to_mean(s, x_i, 0.7 * gm.eps_star(s, x_i, i) + 0.1, i)
    x_rep, m_rep = x_i.repeat(inner, 1), m_phi.repeat(inner, 1)
    # Left: KL(p(x_{i-1}|x_i) || p_phi), x_{i-1} drawn from the exact reverse kernel (G7).
    x_prev = gm.reverse_sample(s, x_rep, i, generator=g)
    lhs = (gm.reverse_log_prob(s, x_prev, x_rep, i) - log_phi(x_prev, m_rep)).reshape(inner, n).mean(0)
    # Right: KL(N(mean, var) || p_phi) with dgm.posterior's (mean, var) (E27 written out), minus
    # C' = E_{x_{i-1} ~ N(mean, var)} [log N(x_{i-1}; mean, var) - log p(x_{i-1}|x_i)].
    mean, var = posterior(s, x_i, x0, i)
    var = var.expand_as(mean)
    cond = 0.5 * (var / var_phi - 1 + torch.log(var_phi / var) + (mean - m_phi) ** 2 / var_phi).sum(1)
    mean, var = mean.repeat(inner, 1), var.repeat(inner, 1)
    x_prev = mean + var.sqrt() * randn(g, *mean.shape)
    log_q = (-(x_prev - mean) ** 2 / (2 * var) - 0.5 * torch.log(2 * math.pi * var)).sum(1)
    rhs = cond - (log_q - gm.reverse_log_prob(s, x_prev, x_rep, i)).reshape(inner, n).mean(0)
    diff = lhs - rhs
    z = diff.mean().item() / (diff.std().item() / math.sqrt(n))
    # C' two ways, for the mixture and for the same mixture scaled by 1/2 (same schedule).
    a, b = _mi_c_prime(gm, s, i, g, n)
    _, b2 = _mi_c_prime(gm.affine(0.5, 0.0), s, i, g, n)
    c, c2 = b.mean().item(), b2.mean().item()
    se_c, se_d = b.std().item() / math.sqrt(n), math.sqrt(b.var().item() / n + b2.var().item() / n)
    z_c, z_d = c / se_c, (c - c2) / se_d
    return [
        z_row("theorem", f"E23 marginal KL {lhs.mean():.4f} = conditional KL - C' {rhs.mean():.4f} (posterior, an "
               f"imperfect model, L=10, i={i})", [z]),
        erratum("errata-22-24", f"errata 22, 24: C'_{i} = {c:.4f} (posterior and G7: {a.mean():.4f}) is not 0, and is "
                 f"{c2:.4f} for the mixture x 1/2 (min |z|)", min(abs(z_c), abs(z_d)), f"> Z = {Z:.2f}",
                 min(abs(z_c), abs(z_d)) > Z),
    ]


# ------------------------------------------------------------------------------ eps* and the mean (E29-E33)


def check_eps_star(gm, g, n) -> list[Row]:
    """The oracle's eps* against -sigma_bar_i grad log p_i, the gradient by autograd of the exact density."""
    s = Schedule.linear(1000)
    _, abar = tables(s)
    m, err = min(n, 2000), 0.0
    for i in (1, 10, 300, 800, 1000):
        x = q_sample(s, gm.sample(m, g), i, randn(g, m, gm.D)).requires_grad_(True)
        (score,) = torch.autograd.grad(gm.at_level(s, i).log_prob(x).sum(), x)
        ref = -math.sqrt(1 - abar[i] ** 2) * score
        err = max(err, ((gm.eps_star(s, x.detach(), i) - ref).abs() / (1 + ref.abs())).max().item())
    return [det_row("eps-star", "G3/E33 oracle eps* vs -sigma_bar_i grad log p_i, autograd of the exact density (G1), "
                     "L=1000: max rel. error", err)]


def check_mean(g) -> list[Row]:
    """eps_to_mean against the posterior mean (E24) and the constant C_i (E30), both written out from beta."""
    s, n = Schedule.cosine(100), 256
    alpha, abar = tables(s)
    i = torch.randint(2, s.L + 1, (n,), generator=g)
    alpha, abar = torch.tensor(alpha, dtype=torch.float64), torch.tensor(abar, dtype=torch.float64)
    al, ab, ab_prev, b2 = alpha[i, None], abar[i, None], abar[i - 1, None], s.beta[i, None] ** 2
    x0, eps, eps_hat = randn(g, n, 3), randn(g, n, 3), randn(g, n, 3)
    x_i = ab * x0 + torch.sqrt(1 - ab**2) * eps  # E19 written out: this row tests eps_to_mean alone
    mu = eps_to_mean(s, x_i, eps, i)
    ref = ab_prev * b2 / (1 - ab**2) * x0 + (1 - ab_prev**2) * al / (1 - ab**2) * x_i  # A_i x0 + B_i x_i (E24)
    err29 = ((mu - ref).abs() / (1 + ref.abs())).max().item()
    C = (b2**2 / (al**2 * (1 - ab**2))).flatten()  # E30
    ratio = ((eps_to_mean(s, x_i, eps_hat, i) - mu) ** 2).sum(1) / ((eps_hat - eps) ** 2).sum(1)
    err30 = (ratio / C - 1).abs().max().item()
    return [
        det_row("eps-to-mean", "E29 eps_to_mean vs A_i x0 + B_i x_i written out from beta, cosine L=100: max rel. "
                 "error", err29),
        det_row("constant-C", "E30 |mu_phi - mu|^2 / |eps_phi - eps|^2 via eps_to_mean vs C_i written out: max rel. "
                 "error", err30),
    ]

