"""Likelihoods and reverse variances against the exact answer, with the exact eps* of 2-D mixtures.

    .venv/bin/python benchmarks/likelihood_oracle.py [--mixture gmm2d|user] [--schedule cosine|linear]
                                                     [--n 2000] [--gamma-draws 10000] [--sampling]

For the mixture in model space (gmm2d: its known density; user: benchmarks/make_user_mixture.py's SPEC,
standardized per dimension as `dgm train` would), on n held-out-like points:
- the true NLL; the probability-flow ODE NLL with the exact divergence and with Hutchinson's estimate
  (seconds, function evaluations, standard errors); the start level's bias (t0 = 1e-3 against 1e-5);
- Gamma_i estimated from eps* (A3) against 1 - E tr Cov[eps | x_i] / D from the oracle, as z-scores;
- the variational bound (E34-E36) with the fixed-small, fixed-large and analytic reverse variances, the
  noise paired across the three (same seed);
- with --sampling: SW1 of 20,000 ancestral samples to fresh draws (mean over 4 reference sets) at 10, 25
  and 100 steps for each variance, against the two-sample floor.
Numbers are nats per example in model space (docs/LIKELIHOOD.md).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import dgm
from dgm.core.reverse import AnalyticVariance, data_variance, estimate_gamma
from dgm.evaluation.distances import sliced_wasserstein
from dgm.evaluation.ode import ode_nll


def user_mixture() -> dgm.GaussianMixture:
    """The user mixture of make_user_mixture.py, standardized with its 20,000 draws' mean and std."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mum", Path(__file__).with_name("make_user_mixture.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gm = dgm.GaussianMixture(mod.SPEC["weights"], mod.SPEC["means"], mod.SPEC["covs"])
    x = gm.sample(20_000, torch.Generator().manual_seed(0))
    mean, std = x.mean(0), x.std(0)
    return gm.affine(1 / std, -mean / std)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mixture", choices=["gmm2d", "user"], default="gmm2d")
    p.add_argument("--schedule", choices=["cosine", "linear"], default="cosine")
    p.add_argument("--levels", type=int, default=1000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--gamma-draws", type=int, default=10_000)
    p.add_argument("--sampling", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.mixture == "gmm2d":
        from dgm.data import load_data

        gm = load_data("gmm2d").density
    else:
        gm = user_mixture()
    s = dgm.Schedule.named(args.schedule, args.levels)
    fn = lambda x, t: gm.eps_star(s, x, t)  # noqa: E731
    x0 = gm.sample(args.n, torch.Generator().manual_seed(123))
    true = -gm.log_prob(x0)
    print(f"{args.mixture}, {args.schedule} L = {args.levels}, n = {args.n}: true NLL {true.mean():.4f} nats "
          f"(SE {true.std() / math.sqrt(args.n):.4f})")

    for divergence in ("exact", "hutchinson"):
        t0 = time.perf_counter()
        nll, st = ode_nll(fn, s, x0, divergence=divergence, generator=torch.Generator().manual_seed(1),
                          return_stats=True)
        gap = (nll - true).mean().item()
        print(f"ODE {divergence:10s}: {nll.mean():.4f}, minus true {gap:+.5f}, Hutchinson SE "
              f"{st['hutchinson_se']:.4f}, NFE {st['nfe']}, {time.perf_counter() - t0:.1f} s")
    low = ode_nll(fn, s, x0, t_start=1e-5)
    high = ode_nll(fn, s, x0, t_start=1e-3)
    print(f"start level bias: t0 = 1e-3 minus t0 = 1e-5: {(high - low).mean():+.6f} nats")

    t0 = time.perf_counter()
    xg = gm.sample(args.gamma_draws, torch.Generator().manual_seed(5))
    gamma, se = estimate_gamma(fn, s, xg, generator=torch.Generator().manual_seed(6))
    seconds = time.perf_counter() - t0
    g = torch.Generator().manual_seed(7)
    z_max, worst = 0.0, None
    for lvl in range(1, s.L + 1):
        eps = torch.randn(xg.shape, generator=g, dtype=torch.float64)
        x_i = dgm.q_sample(s, xg, torch.full((len(xg),), lvl), eps)
        tr = gm.eps_posterior_cov_trace(s, x_i, lvl) / gm.D
        diff = (1 - gamma[lvl].item()) - tr.mean().item()
        z = abs(diff) / math.hypot(se[lvl].item(), tr.std().item() / math.sqrt(len(tr)))
        if z > z_max:
            z_max, worst = z, lvl
    print(f"Gamma from {args.gamma_draws} draws in {seconds:.0f} s; 1 - Gamma vs oracle E tr Cov[eps|x_i]/D: "
          f"largest |z| over all {s.L} levels {z_max:.2f} (level {worst})")

    analytic = AnalyticVariance(gamma, se, data_variance(xg))
    for name, variance in (("fixed_small", "fixed_small"), ("fixed_large", "fixed_large"), ("analytic", analytic)):
        b = dgm.vlb(fn, s, x0, generator=torch.Generator().manual_seed(11), variance=variance)
        d = b - true
        se_d = d.std() / math.sqrt(len(d))
        print(f"bound {name:11s}: {b.mean():.4f}, minus true {d.mean():+.4f} (paired SE {se_d:.4f})")

    if args.sampling:
        n = 20_000
        refs = [gm.sample(n, torch.Generator().manual_seed(1000 + r)) for r in range(4)]
        floor = sum(sliced_wasserstein(gm.sample(n, torch.Generator().manual_seed(2000 + r)), refs[r],
                                       generator=torch.Generator().manual_seed(r)) for r in range(4)) / 4
        print(f"sampling, SW1 of {n} ancestral samples (mean over 4 reference sets); two-sample floor {floor:.4f}")
        for steps in (10, 25, 100):
            row = []
            for name, variance in (("fixed_small", "fixed_small"), ("fixed_large", "fixed_large"),
                                   ("analytic", analytic)):
                x = dgm.sample(fn, s, (n, gm.D), sampler="ancestral", steps=steps, variance=variance,
                               generator=torch.Generator().manual_seed(3), dtype=torch.float64)
                sw = sum(sliced_wasserstein(x, refs[r], generator=torch.Generator().manual_seed(r))
                         for r in range(4)) / 4
                row.append(f"{name} {sw:.4f}")
            print(f"  {steps:4d} steps: " + ", ".join(row))


if __name__ == "__main__":
    main()
