"""Tight likelihoods checked with the mixture's exact eps* (docs/LIKELIHOOD.md A1-A3, F1-F4) as rows of
``dgm verify``: Gamma_i of Analytic-DPM estimated from a denoiser, the closed-form divergence of eps*, the
probability-flow ODE's NLL, and the bound with the analytic reverse variance, each against the oracle.

Sample sizes are smaller than the other rows' n (whose default is 20,000), to keep these rows to about two
seconds: at most GAMMA_DRAWS draws for Gamma, BOUND_POINTS points for the bounds, ODE_POINTS for the ODE.
"""

from __future__ import annotations

import math

import torch

from dgm.core.bound import vlb
from dgm.core.reverse import AnalyticVariance, estimate_gamma
from dgm.core.schedule import Schedule
from dgm.evaluation.ode import T_START, ode_nll
from dgm.evaluation.verify.rows import Row, Z, demo_mixture, det_row, oracle_denoiser, z_row

__all__ = ["BOUND_POINTS", "GAMMA_DRAWS", "GAMMA_LEVELS", "ODE_BIAS", "ODE_POINTS", "check_analytic_bound",
           "check_eps_star_divergence", "check_gamma", "check_ode", "measure_ode_bias"]

GAMMA_DRAWS = 4000  # draws of x_i per level for Gamma_i, on each side (estimate_gamma and the oracle)
GAMMA_LEVELS = (1, 10, 50, 90)  # of cosine L = 100: 1 - Gamma_i = 0.989, 0.709, 0.408, 0.024
BOUND_POINTS = 2000  # points x0 for the analytic and fixed-small bounds (about 0.5 s for both)
ODE_POINTS = 300  # points x0 for the ODE NLL (about 1 s: about 260 function evaluations of eps* and its divergence)
# The ODE NLL's bias at its defaults (RK45, rtol = atol = 1e-5, start level t0 = 1e-3) with eps* of the demo
# mixture on cosine L = 1000, on 10 batches of 300 points (2026-12-02, 10 minutes, printed by
#   OMP_NUM_THREADS=1 .venv/bin/python -c "from dgm.evaluation.verify.likelihood import measure_ode_bias as m; m()"
# ). The solver's tolerance dominates it: the batch mean of the default minus rtol = atol = 1e-8 ranged from
# -1.19e-4 to +1.10e-4 (std 6.1e-5 over the batches), and the 1e-8 solve was within 2.3e-5 of the exact NLL.
# The start level (E[log p_0 - log p_t0] = -3e-10 +- 1.5e-9) and the N(0, I) prior (KL(p_L || N(0, I)) =
# 4e-8 +- 3e-8) are below 1e-7. The solver's batch error is not in the SE over points, so a row allows
# |mean difference| <= ODE_BIAS + Z SE, with ODE_BIAS = 2.5x the largest batch error measured (5 std).
ODE_BIAS = 3e-4


def _gamma_with_oracle(gm, s: Schedule, g, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gamma_i = E|eps*(x_i, i)|^2 / D at every level of ``s`` by dgm's estimate_gamma (A1, A3): (gamma, se)."""
    return estimate_gamma(oracle_denoiser(gm, s), s, gm.sample(min(n, GAMMA_DRAWS), g), generator=g)


def check_gamma(gm, g, n) -> list[Row]:
    """estimate_gamma with eps* against the oracle: 1 - Gamma_i = E tr Cov[eps | x_i] / D (A3, G5).

    Independent draws on each side, z = (1 - Gamma_est - oracle) / sqrt(se_est^2 + se_oracle^2). It checks
    1 - Gamma, not v*_i: at the upper levels v* is lam2 + a tiny multiple of 1 - Gamma, so a check of the
    variance could not fail there.
    """
    s = Schedule.cosine(100)
    gamma, se = _gamma_with_oracle(gm, s, g, n)
    z, est, ref = [], [], []
    for i in GAMMA_LEVELS:
        _, one_minus_gamma, se_ref = gm.optimal_reverse_variance(s, i, n=min(n, GAMMA_DRAWS), generator=g)
        est.append(1.0 - gamma[i].item())
        ref.append(one_minus_gamma)
        z.append((est[-1] - ref[-1]) / math.hypot(se[i].item(), se_ref))
    k = max(range(len(z)), key=lambda j: abs(z[j]))
    levels = ",".join(map(str, GAMMA_LEVELS))
    return [z_row("analytic-gamma", f"A3 estimate_gamma at eps*: 1 - Gamma_i vs oracle tr Cov[eps|x_i]/D, cosine "
                  f"L=100, i={levels}; worst i={GAMMA_LEVELS[k]} {est[k]:.3f}/{ref[k]:.3f}", z)]


def check_eps_star_divergence(gm, g) -> list[Row]:
    """The oracle's closed-form div eps* (F4) against autograd's divergence of its eps* (G3), at integer and
    fractional levels of cosine L=1000 (where alpha_bar is interpolated), on draws of p_t.

    Round-off: besides ROUNDOFF's sources, F4 cancels sum_k r_k |u_k|^2 against |sum_k r_k u_k|^2, each below
    1e3 on these draws (|u_k|^2 <= 2e4 where r_k is negligible), which costs at most 1e3 x 2^-53 = 1e-13
    (measured: 3e-15 at most over seeds 0-4). A dropped term of F4 is an error of order 1.
    """
    s, m, err = Schedule.cosine(1000), 500, 0.0
    for t in (1, 250, 0.5, 612.25):
        x = gm.at_level(s, t).sample(m, g).requires_grad_(True)
        eps = gm.eps_star(s, x, t)
        ref = sum(torch.autograd.grad(eps[:, k].sum(), x, retain_graph=k < gm.D - 1)[0][:, k] for k in range(gm.D))
        div = gm.eps_star_divergence(s, x.detach(), t)
        err = max(err, ((div - ref).abs() / (1 + ref.abs())).max().item())
    return [det_row("eps-star-divergence", "F4 oracle div eps* vs autograd of eps* (G3), cosine L=1000, levels 1, "
                    "250, 0.5, 612.25: max rel. error", err)]


def check_ode(gm, g, n) -> list[Row]:
    """ode_nll with eps* and the exact divergence (F1-F3) against the exact -log p(x0) (G8), paired per point:
    |mean difference| <= ODE_BIAS + Z SE, its measured value (|mean| - ODE_BIAS) / SE."""
    s = Schedule.cosine(1000)
    m = min(n, ODE_POINTS)
    x0 = gm.sample(m, g)
    nll = ode_nll(oracle_denoiser(gm, s), s, x0, divergence="exact")
    true = -gm.log_prob(x0)
    d = nll - true
    mean, se = d.mean().item(), d.std().item() / math.sqrt(m)
    excess = (abs(mean) - ODE_BIAS) / se
    return [Row(f"F1-F3 ode_nll at eps*, exact div., cosine L=1000, {m} points: {nll.mean():.4f} nats, minus exact "
                f"-log p {mean:+.1e}, bias <= {ODE_BIAS:.0e}",
                excess, f"(|d|-bias)/SE < {Z:.2f}", excess < Z, key="ode-nll", stats=1)]


def measure_ode_bias(points: int = ODE_POINTS, seeds=range(100, 110)) -> dict:
    """Measure the bias of ``check_ode`` (the numbers behind ODE_BIAS): per batch of ``points`` draws, the mean of
    ode_nll at its defaults minus the exact -log p, minus ode_nll at rtol = atol = 1e-8, and the latter minus
    the exact; then the start level's and the prior's biases from the oracle, with 400,000 draws."""
    gm, s = demo_mixture(), Schedule.cosine(1000)
    eps_fn, out = oracle_denoiser(gm, s), {"batches": []}
    for k in seeds:
        x0 = gm.sample(points, torch.Generator().manual_seed(k))
        true = -gm.log_prob(x0)
        default, tight = ode_nll(eps_fn, s, x0), ode_nll(eps_fn, s, x0, rtol=1e-8, atol=1e-8)
        row = [(default - true).mean().item(), (default - tight).mean().item(), (tight - true).mean().item()]
        out["batches"].append(row)
        print(f"seed {k}: default - exact {row[0]:+.2e}, default - tight {row[1]:+.2e}, tight - exact {row[2]:+.2e}")
    g, m = torch.Generator().manual_seed(0), 400_000
    for name, p, x in (("start level: log p_0 - log p_t0", gm.at_level(s, T_START), gm.sample(m, g)),
                       ("prior: log p_L - log N(0, I)", None, gm.at_level(s, s.L).sample(m, g))):
        d = (gm.log_prob(x) - p.log_prob(x) if p is not None
             else gm.at_level(s, s.L).log_prob(x) + 0.5 * (x**2).sum(1) + 0.5 * gm.D * math.log(2 * math.pi))
        out[name] = (d.mean().item(), d.std().item() / math.sqrt(m))
        print(f"{name}: {out[name][0]:+.1e} +- {out[name][1]:.1e}")
    return out


def check_analytic_bound(gm, g, n) -> list[Row]:
    """vlb with the analytic variance (A2, Gamma from eps* by estimate_gamma) against the true NLL and against
    vlb with the fixed-small variance, on linear L=100, the noise paired across the two bounds (same seed).

    Any reverse variance gives an upper bound, so E[vlb_analytic - true NLL] >= 0: z of its paired mean must
    exceed -Z. v* minimizes every level's expected KL (Bao et al. Theorem 1), so the analytic bound lies below
    the fixed-small one: on the demo mixture it is 0.06 nats above the true NLL and 2.2 below the fixed-small
    bound (8 seeds of 2,000 points: -0.05..+0.11 above, SE 0.035; gain z 42..45), and the z of that gain must
    exceed Z.

    Linear, not cosine: cosine's last step is clipped to beta_L^2 = 0.999, where v*_L = lam2 + 999 (1 - Gamma_L)
    (0.999 at Gamma_L = 1, 999 at 0) turns the Monte Carlo error of Gamma_L (SE 0.016 at 4,000 draws, where the
    true 1 - Gamma_L is 2.5e-7) into a v*_L up to tens of times too large whenever the estimate of 1 - Gamma_L
    is positive: the bound was 1.6-2.0 nats above the truth in 4 of 8 seeds, worse than fixed small. That is a
    weakness of Monte Carlo Gamma at a clipped step (measured by the same code on cosine L=100), not of A2.
    """
    s = Schedule.linear(100)
    eps_fn = oracle_denoiser(gm, s)
    gamma, gamma_se = _gamma_with_oracle(gm, s, g, n)
    m = min(n, BOUND_POINTS)
    x0 = gm.sample(m, g)
    true = -gm.log_prob(x0)
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    analytic = vlb(eps_fn, s, x0, generator=torch.Generator().manual_seed(seed),
                   variance=AnalyticVariance(gamma, gamma_se))
    small = vlb(eps_fn, s, x0, generator=torch.Generator().manual_seed(seed), variance="fixed_small")
    over, gain = analytic - true, small - analytic
    z_over = over.mean().item() / (over.std().item() / math.sqrt(m))
    z_gain = gain.mean().item() / (gain.std().item() / math.sqrt(m))
    return [Row(f"A2/E34 vlb, analytic variance (Gamma from eps*), linear L=100: {over.mean():+.3f} nats over true "
                f"NLL, {gain.mean():.3f} under fixed small (z {z_gain:.0f})",
                z_over, f"z > -{Z:.2f}, gain z > {Z:.2f}", z_over > -Z and z_gain > Z, key="analytic-bound",
                stats=2)]
