"""Posterior sampling for linear inverse problems (``dgm.sample_inverse``) against the exact posterior.

The Gaussian-mixture benchmark of MCGdiff (Cardoso et al. 2024, sec. 4.1) in dgm's data scale. Run by hand:

    .venv/bin/python benchmarks/posterior_sampling.py [--quick] [--out FILE.md]

Prior: 25 components in d = 8 and d = 80 with means (8i, 8j, 8i, 8j, ...) for i, j in {-2..2}, identity
covariances and weights proportional to squared standard normal draws (as MCGdiff's code), scaled by 1/20
(``GaussianMixture.affine``) so that the data lie in [-1, 1] as dgm's schedules assume: component std 0.05,
means within +-0.8. Everything below is in that scaled space, where the SW1 is measured.

Problems: A (d_y, d) = U diag(s) V^T with U, V the singular vectors of a standard normal matrix and s sorted
uniform draws in (0, 1) (MCGdiff's construction), d_y in {1, 2, 4}; x* drawn from the prior and y = A x* +
sigma_y n with sigma_y = 0.05 (in the scaled space: 1.0 in the units of the unscaled mixture). Ten random
problems per (d, d_y). For each, the sliced W1 (128 projections) of 1,000 draws to 1,000 exact posterior
draws (``gm.condition(y, A, sigma_y).sample``; components of posterior weight below 1e-30 are dropped first,
since ``condition`` refuses weights that underflow to 0), next to the two-sample floor: the same 1,000 exact draws
against 1,000 fresh exact draws (mean over 4 fresh sets). Reported: the mean over problems of SW1 / floor, so an
exact sampler scores about 1. The posterior is multimodal (several components lie near the observed
hyperplane), and SW1 weighs errors in the modes' weights heavily.

Every method is driven by the prior's exact eps* (G3); "exact" rows drive dgm's plain samplers with the
exact posterior's eps* (``gm.condition(...).eps_star``) with ``dgm.sample``'s default (quadratic) spacing; the
inverse methods use ``sample_inverse``'s (uniform, as in their papers). Levels per method: 1,000 for replace,
DPS and the exact ancestral sampler; 100 for RePaint (the paper's 250 would cost 2,410 NFE per draw), PiGDM
and the SMC with 16 particles per draw; 300 for the SMC cloud (MCGdiff's protocol: one run whose n particles,
resampled by weight, give the n draws). DPS's step, 0.1, was chosen with ``--tune-dps`` on held-out problems
(d_y = 2, three problems each; of 0.01, 0.03, 0.1, 0.3 and 1, 0.1 had the lowest mean SW1 / floor at d = 8,
12.6, and at d = 80, 7.1); its default, 1.0, is for images. Linear schedule, L = 1000. For speed the benchmark
evaluates eps* of these mixtures, whose components share one covariance, in closed form (``SharedCovEps``,
one eigendecomposition per mixture); it checks that against ``GaussianMixture.eps_star`` before running.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch

import dgm
from dgm.evaluation.distances import sliced_wasserstein
from dgm.samplers.inverse import sample_inverse

SCALE = 1 / 20
SIGMA_Y = 0.05
FLOOR_SETS = 4  # the floor is the mean SW1 of the reference to this many fresh exact sets (it steadies the ratio)


def grid_mixture(d: int, generator: torch.Generator) -> dgm.GaussianMixture:
    """The 25-component prior of MCGdiff in d dimensions (d even), scaled by SCALE."""
    means = torch.tensor([[8.0 * i, 8.0 * j] * (d // 2) for i in range(-2, 3) for j in range(-2, 3)],
                         dtype=torch.float64)
    w = torch.randn(25, generator=generator, dtype=torch.float64) ** 2
    gm = dgm.GaussianMixture(w / w.sum(), means, torch.eye(d, dtype=torch.float64).expand(25, d, d))
    return gm.affine(SCALE, 0.0)


def random_problem(gm: dgm.GaussianMixture, d_y: int, generator: torch.Generator):
    """(A (d_y, d), y (d_y,)): MCGdiff's A (random singular vectors, singular values uniform in (0, 1)) and
    y = A x* + SIGMA_Y n for x* from the prior."""
    d = gm.D
    U, _, Vh = torch.linalg.svd(torch.randn(d_y, d, generator=generator, dtype=torch.float64),
                                full_matrices=False)
    s = torch.rand(d_y, generator=generator, dtype=torch.float64).sort(descending=True).values
    A = U @ torch.diag(s) @ Vh
    x_star = gm.sample(1, generator)[0]
    return A, A @ x_star + SIGMA_Y * torch.randn(d_y, generator=generator, dtype=torch.float64)


def condition(gm: dgm.GaussianMixture, y, A, sigma_y: float, min_weight: float = 1e-30) -> dgm.GaussianMixture:
    """``gm.condition(y, A, sigma_y)`` on the components whose posterior weight is at least ``min_weight``
    (pi_k N(y; A m_k, A S_k A^T + sigma_y^2 I), normalized): the exact posterior up to that dropped mass.
    ``GaussianMixture.condition`` itself refuses posterior weights that underflow to 0."""
    C = A @ gm.covs @ A.T + sigma_y**2 * torch.eye(A.shape[0], dtype=torch.float64)
    log_ev = torch.distributions.MultivariateNormal(gm.means @ A.T, C).log_prob(y)
    keep = torch.softmax(torch.log(gm.weights) + log_ev, 0) >= min_weight
    w = gm.weights[keep]
    return dgm.GaussianMixture(w / w.sum(), gm.means[keep], gm.covs[keep]).condition(y, A, sigma_y)


class SharedCovEps:
    """eps*(x, i) (G3) of a mixture whose components share one covariance C = Q diag(lam) Q^T: with
    Sigma_i = Q diag(alpha_bar^2 lam + sigma_bar^2) Q^T the same for every component, the responsibilities
    need only whitened distances and eps* = sigma_bar Sigma_i^{-1} (x - alpha_bar sum_k r_k m_k)."""

    def __init__(self, gm: dgm.GaussianMixture, s: dgm.Schedule):
        C = gm.covs[0]
        assert torch.allclose(gm.covs, C.expand_as(gm.covs), atol=1e-12), "components must share a covariance"
        self.lam, self.Q = torch.linalg.eigh(C)
        self.means_q = gm.means @ self.Q  # (K, D)
        self.log_w, self.s = torch.log(gm.weights), s

    def __call__(self, x, i):
        level = int(i[0])
        a, sigma = self.s.alpha_bar[level].item(), self.s.sigma_bar[level].item()
        v = a**2 * self.lam + sigma**2  # (D,)
        z = x @ self.Q
        d2 = ((z**2 / v).sum(1, keepdim=True) - 2 * a * (z / v) @ self.means_q.T
              + a**2 * ((self.means_q**2) / v).sum(1)[None])
        r = torch.softmax(self.log_w[None] - 0.5 * d2, dim=1)
        return (sigma * (z - a * r @ self.means_q) / v) @ self.Q.T


def check_fast_eps(gm, s, generator) -> float:
    """Largest |SharedCovEps - GaussianMixture.eps_star| over draws from p_i at a few levels."""
    fast, worst = SharedCovEps(gm, s), 0.0
    for level in (1, 10, 100, 500, 1000):
        x = gm.at_level(s, level).sample(64, generator)
        i = torch.full((64,), level)
        worst = max(worst, (fast(x, i) - gm.eps_star(s, x, i)).abs().max().item())
    return worst


def methods(quick: bool, dps_step: float):
    """(label, method or exact sampler, steps, options). Costs: NFE per draw."""
    return [
        ("replace", "replace", 1000, {}),
        ("repaint (j 10, r 10, 100 levels)", "repaint", 50 if quick else 100, dict(jump=10, resamplings=10)),
        (f"dps (step {dps_step:g})", "dps", 1000, dict(step=dps_step)),
        ("pigdm (eta 1, 100 levels)", "pigdm", 100, {}),
        ("smc (16 particles per draw, 100 levels)", "smc", 100, dict(particles=16)),
        ("smc cloud (one run of n particles, 300 levels)", "smc-cloud", 300, {}),
        ("exact: ancestral, posterior eps*", "ancestral", 1000, {}),
        ("exact: dpm++2m (50 levels, quadratic), posterior eps*", "dpm++2m", 50, {}),
    ]


def run_problem(gm, s, d_y, n, seed, rows, quick, dps_step):
    """SW1 of every method for one random problem; appends to ``rows[label]`` (sw, floor, nfe, seconds)."""
    g = torch.Generator().manual_seed(seed)
    A, y = random_problem(gm, d_y, g)
    post = condition(gm, y, A, SIGMA_Y)
    ref = post.sample(n, g)
    proj = seed + 1
    floor = statistics.mean(sliced_wasserstein(ref, post.sample(n, g), generator=torch.Generator().manual_seed(proj))
                            for _ in range(FLOOR_SETS))
    prior_eps, post_eps = SharedCovEps(gm, s), SharedCovEps(post, s)
    for label, name, steps, options in methods(quick, dps_step):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed + 7)
        if name in ("ancestral", "dpm++2m"):
            x = dgm.sample(post_eps, s, (n, gm.D), sampler=name, steps=steps, generator=gen, dtype=torch.float64)
            nfe = steps
        elif name == "smc-cloud":  # MCGdiff's protocol: n draws from one weighted cloud of n particles
            _, stats = sample_inverse(prior_eps, s, y[None], A, SIGMA_Y, method="smc", steps=steps, particles=n,
                                      generator=gen, return_stats=True)
            pick = torch.multinomial(stats["log_weights"][0].exp(), n, replacement=True, generator=gen)
            x, nfe = stats["particles"][0, pick], stats["nfe"] // n
        else:
            x, stats = sample_inverse(prior_eps, s, y.expand(n, -1).clone(), A, SIGMA_Y, method=name, steps=steps,
                                      generator=gen, return_stats=True, **options)
            nfe = stats["nfe"]
        seconds = time.perf_counter() - t0
        sw = sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(proj))
        rows.setdefault(label, []).append((sw, floor, nfe, seconds))


def tune_dps(gm_by_d, s, n, steps_grid) -> None:
    """SW1 / floor of DPS for several step sizes on problems outside the benchmark's seeds (d_y = 2)."""
    for d, gm in gm_by_d.items():
        for step in steps_grid:
            ratios = []
            for seed in (9000, 9001, 9002):
                g = torch.Generator().manual_seed(seed)
                A, y = random_problem(gm, 2, g)
                post = condition(gm, y, A, SIGMA_Y)
                ref, ref2 = post.sample(n, g), post.sample(n, g)
                floor = sliced_wasserstein(ref, ref2, generator=torch.Generator().manual_seed(1))
                x = sample_inverse(SharedCovEps(gm, s), s, y.expand(n, -1).clone(), A, SIGMA_Y, method="dps",
                                   step=step, generator=torch.Generator().manual_seed(seed))
                ratios.append(sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(1)) / floor)
            print(f"tune dps d={d} step={step:g}: SW1/floor {statistics.mean(ratios):.2f} "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)


def cloud_sweep(gm, s, d_y: int, n: int, problems: int, particles=(1000, 4000, 16000)) -> None:
    """SW1 / floor of the SMC cloud (300 levels) against its number of particles, on the benchmark's first
    ``problems`` problems of (d, d_y) (same seeds): the error should shrink as the particles grow."""
    ratios: dict = {}
    for k in range(problems):
        seed = 1000 * gm.D + 10 * d_y + k
        g = torch.Generator().manual_seed(seed)
        A, y = random_problem(gm, d_y, g)
        post = condition(gm, y, A, SIGMA_Y)
        ref = post.sample(n, g)
        floor = statistics.mean(sliced_wasserstein(ref, post.sample(n, g), generator=torch.Generator().manual_seed(
            seed + 1)) for _ in range(FLOOR_SETS))
        for P in particles:
            gen = torch.Generator().manual_seed(seed + 7)
            _, stats = sample_inverse(SharedCovEps(gm, s), s, y[None], A, SIGMA_Y, method="smc", steps=300,
                                      particles=P, generator=gen, return_stats=True)
            pick = torch.multinomial(stats["log_weights"][0].exp(), n, replacement=True, generator=gen)
            sw = sliced_wasserstein(stats["particles"][0, pick], ref, generator=torch.Generator().manual_seed(seed + 1))
            ratios.setdefault(P, []).append(sw / floor)
    for P, r in ratios.items():
        print(f"smc cloud d={gm.D} d_y={d_y} {P} particles: SW1/floor {statistics.mean(r):.2f} "
              f"({', '.join(f'{v:.2f}' for v in r)})", flush=True)


def markdown(rows_by_col: dict, columns: list, quick: bool, dps_step: float) -> str:
    labels = [m[0] for m in methods(quick, dps_step)]
    head = "| method | NFE | " + " | ".join(f"d={d}, d_y={d_y}" for d, d_y in columns) + " | s / problem |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    floors = [statistics.mean(r[1] for r in rows_by_col[c][labels[0]]) for c in columns]
    lines.append("| two-sample floor (mean SW1) | | " + " | ".join(f"{f:.4f}" for f in floors) + " | |")
    for label in labels:
        cells, nfe, secs = [], None, []
        for c in columns:
            rs = rows_by_col[c][label]
            cells.append(f"{statistics.mean(sw / fl for sw, fl, _, _ in rs):.2f}")
            nfe = rs[0][2]
            secs += [r[3] for r in rs]
        lines.append(f"| {label} | {nfe} | " + " | ".join(cells) + f" | {statistics.mean(secs):.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 problems per setting, 500 draws, RePaint on 50 levels")
    p.add_argument("--problems", type=int, default=None, help="random problems per (d, d_y) (default 10; quick 3)")
    p.add_argument("--n", type=int, default=None, help="draws per method (default 1000; quick 500)")
    p.add_argument("--dims", type=int, nargs="+", default=[8, 80])
    p.add_argument("--dps-step", type=float, default=0.1, help="DPS step (chosen with --tune-dps)")
    p.add_argument("--tune-dps", action="store_true", help="only sweep the DPS step on held-out problems")
    p.add_argument("--cloud-sweep", action="store_true",
                   help="only run the SMC cloud with 1,000 / 4,000 / 16,000 particles on 5 problems (d_y = 2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="posterior_sampling.md", help="where to write the Markdown table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    problems = args.problems or (3 if args.quick else 10)
    n = args.n or (500 if args.quick else 1000)
    s = dgm.Schedule.linear(1000)
    gm_by_d = {d: grid_mixture(d, torch.Generator().manual_seed(d)) for d in args.dims}
    for d, gm in gm_by_d.items():
        err = check_fast_eps(gm, s, torch.Generator().manual_seed(0))
        post = gm.condition(torch.zeros(2, dtype=torch.float64), torch.eye(2, d, dtype=torch.float64), SIGMA_Y)
        err = max(err, check_fast_eps(post, s, torch.Generator().manual_seed(0)))
        assert err < 1e-8, f"closed-form eps* differs from the oracle by {err}"
        print(f"d={d}: closed-form eps* matches GaussianMixture.eps_star (max |diff| {err:.1e})", flush=True)
    if args.tune_dps:
        tune_dps(gm_by_d, s, n, (0.01, 0.03, 0.1, 0.3, 1.0))
        return
    if args.cloud_sweep:
        for gm in gm_by_d.values():
            cloud_sweep(gm, s, 2, n, 5)
        return
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    t_start = time.perf_counter()
    columns = [(d, d_y) for d in args.dims for d_y in (1, 2, 4)]
    rows_by_col: dict = {}
    for d, d_y in columns:
        rows: dict = {}
        for k in range(problems):
            run_problem(gm_by_d[d], s, d_y, n, 1000 * d + 10 * d_y + k, rows, args.quick, args.dps_step)
        rows_by_col[(d, d_y)] = rows
        print(f"d={d} d_y={d_y}: " + ", ".join(
            f"{label} {statistics.mean(sw / fl for sw, fl, _, _ in r):.2f}" for label, r in rows.items()), flush=True)
    table = markdown(rows_by_col, columns, args.quick, args.dps_step)
    load_end = " ".join(f"{v:.2f}" for v in os.getloadavg())
    head = (f"{datetime.date.today()}, torch {torch.__version__}, {args.threads} thread(s), {problems} problems "
            f"per column, {n} draws, SW1 / floor (mean over problems); {time.perf_counter() - t_start:.0f} s in "
            f"all; load average start {load_start}, end {load_end}")
    print(head)
    print(table)
    with open(args.out, "w") as f:
        f.write(head + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
