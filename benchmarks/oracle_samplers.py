"""Samplers driven by the exact eps* of a 2-D Gaussian mixture: dgm vs diffusers at equal NFE.

Run by hand: ``.venv/bin/python benchmarks/oracle_samplers.py [--n 20000]``. Prints sliced Wasserstein-1
of n samples to n fresh data points, next to the two-sample floor (two independent data sets of size n).
Linear schedule, L = 1000. Results go into benchmarks/RESULTS.md.

The seconds are the wall clock of the sampling call alone, min / median / max over ``--timing-repeats``
runs (one run for the 1000-step ancestral sampler; every run draws the same samples): diffusers is
imported and its scheduler constructed before the clock starts, and the SW1 evaluation is outside the
clock for every sampler. Setting the scheduler's timesteps is inside the clock, as dgm's level grid is
computed inside ``dgm.sample``. On a shared machine single runs swing by 10x; the load average at start
and end is printed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch
from diffusers import DPMSolverMultistepScheduler

import dgm
from dgm.evaluation.distances import sliced_wasserstein
from dgm.evaluation.verify import demo_mixture


def diffusers_scheduler() -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++(2M) with its defaults for everything but the schedule (setup, not timed)."""
    return DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                       algorithm_type="dpmsolver++", solver_order=2)


def diffusers_dpmpp(sched: DPMSolverMultistepScheduler, eps_fn, n: int, steps: int, seed: int) -> torch.Tensor:
    """Sample with a freshly constructed ``sched`` (it keeps state between steps, so one per run)."""
    sched.set_timesteps(steps)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for t in sched.timesteps:
        x = sched.step(eps_fn(x, torch.full((n,), int(t) + 1)), t, x).prev_sample  # Ho's t = level - 1
    return x


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    load_start = load()
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing-repeats", type=int, default=5, help="timed runs of each few-step sampler")
    args = p.parse_args()
    gm, s, n = demo_mixture(), dgm.Schedule.linear(1000), args.n
    g = torch.Generator().manual_seed(args.seed)
    ref = gm.sample(n, g)
    proj = torch.Generator
    floor = sliced_wasserstein(ref, gm.sample(n, g), generator=proj().manual_seed(0))
    eps_fn = lambda x, i: gm.eps_star(s, x, i)  # noqa: E731
    print(f"# {datetime.date.today()}  torch {torch.__version__}  threads={torch.get_num_threads()}")
    print(f"two-sample floor SW1 (n={n}): {floor:.4f}")
    print(f"{'sampler':<34} {'NFE':>5} {'SW1':>8} {'SW1/floor':>10}  seconds: min / median / max")

    def report(label: str, nfe: int, draw) -> None:
        times = []
        for _ in range(1 if nfe >= s.L else args.timing_repeats):
            t0 = time.perf_counter()
            x = draw()
            times.append(time.perf_counter() - t0)
        sw = sliced_wasserstein(x, ref, generator=proj().manual_seed(0))
        spread = f"{min(times):.2f} / {statistics.median(times):.2f} / {max(times):.2f}"
        print(f"{label:<34} {nfe:>5} {sw:>8.4f} {sw / floor:>10.2f}  {spread}")

    runs = [
        ("dgm ancestral", "ancestral", None, "quadratic"),
        ("dgm ddim (quadratic grid)", "ddim", 50, "quadratic"),
        ("dgm ddim (uniform grid)", "ddim", 50, "uniform"),
        ("dgm dpm++2m (quadratic grid)", "dpm++2m", 10, "quadratic"),
        ("dgm dpm++2m (uniform grid)", "dpm++2m", 10, "uniform"),
        ("dgm dpm++2m (quadratic grid)", "dpm++2m", 20, "quadratic"),
        ("dgm dpm++2m (uniform grid)", "dpm++2m", 20, "uniform"),
    ]
    for label, name, steps, spacing in runs:
        report(label, steps or s.L, lambda name=name, steps=steps, spacing=spacing: dgm.sample(
            eps_fn, s, (n, 2), sampler=name, steps=steps, spacing=spacing,
            generator=torch.Generator().manual_seed(args.seed + 1), dtype=torch.float64))
    for steps in (10, 20):
        # the scheduler keeps state between steps: a fresh one per run, constructed before the clock starts
        scheds = [diffusers_scheduler() for _ in range(args.timing_repeats)]
        report("diffusers DPMSolverMultistep (2M)", steps,
               lambda steps=steps, scheds=scheds: diffusers_dpmpp(scheds.pop(), eps_fn, n, steps, args.seed + 1))
    print(f"load average (1, 5, 15 min): start {load_start}, end {load()}")


if __name__ == "__main__":
    main()
