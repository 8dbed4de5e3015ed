"""Samplers driven by the exact eps* of a 2-D Gaussian mixture: dgm vs diffusers at equal NFE.

Run by hand: ``.venv/bin/python benchmarks/oracle_samplers.py [--n 20000]``. Prints sliced Wasserstein-1
of n samples to n fresh data points, next to the two-sample floor (two independent data sets of size n).
Linear schedule, L = 1000. Results go into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import torch

import dgm
from dgm.evaluation.distances import sliced_wasserstein
from dgm.evaluation.verify import demo_mixture


def diffusers_dpmpp(eps_fn, n: int, steps: int, seed: int) -> torch.Tensor:
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                        algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(steps)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for t in sched.timesteps:
        x = sched.step(eps_fn(x, torch.full((n,), int(t) + 1)), t, x).prev_sample  # Ho's t = level - 1
    return x


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    gm, s, n = demo_mixture(), dgm.Schedule.linear(1000), args.n
    g = torch.Generator().manual_seed(args.seed)
    ref = gm.sample(n, g)
    proj = torch.Generator
    floor = sliced_wasserstein(ref, gm.sample(n, g), generator=proj().manual_seed(0))
    eps_fn = lambda x, i: gm.eps_star(s, x, i)  # noqa: E731
    print(f"two-sample floor SW1 (n={n}): {floor:.4f}")
    print(f"{'sampler':<34} {'NFE':>5} {'SW1':>8} {'SW1/floor':>10} {'s':>6}")
    runs = [
        ("dgm ancestral", "ancestral", None, "quadratic"),
        ("dgm ddim (quadratic grid)", "ddim", 50, "quadratic"),
        ("dgm ddim (uniform grid)", "ddim", 50, "uniform"),
        ("dgm dpm++2m (quadratic grid)", "dpm++2m", 10, "quadratic"),
        ("dgm dpm++2m (uniform grid)", "dpm++2m", 10, "uniform"),
        ("dgm dpm++2m (quadratic grid)", "dpm++2m", 20, "quadratic"),
    ]
    for label, name, steps, spacing in runs:
        t0 = time.time()
        x = dgm.sample(eps_fn, s, (n, 2), sampler=name, steps=steps, spacing=spacing,
                       generator=torch.Generator().manual_seed(args.seed + 1), dtype=torch.float64)
        sw = sliced_wasserstein(x, ref, generator=proj().manual_seed(0))
        print(f"{label:<34} {steps or s.L:>5} {sw:>8.4f} {sw / floor:>10.2f} {time.time() - t0:>6.1f}")
    for steps in (10, 20):
        t0 = time.time()
        x = diffusers_dpmpp(eps_fn, n, steps, args.seed + 1)
        sw = sliced_wasserstein(x, ref, generator=proj().manual_seed(0))
        label = "diffusers DPMSolverMultistep (2M)"
        print(f"{label:<34} {steps:>5} {sw:>8.4f} {sw / floor:>10.2f} {time.time() - t0:>6.1f}")


if __name__ == "__main__":
    main()
