"""``dgm verify``: the book's chapter-2 claims checked numerically against dgm's code
(``dgm.evaluation.verify``); the exit status is 0 only if every check of dgm passes. The errata of the
chapter-2 summary post are printed as illustrations in their own section and never counted."""

from __future__ import annotations

import argparse
import sys
import time

from dgm.cli.arguments import nonneg_int, positive_int

EXAMPLES = """examples:
  dgm verify
  dgm verify --n 5000 --seed 1      # fewer Monte Carlo draws, another random seed"""


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check the book's chapter-2 claims numerically against dgm's code",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Check the book's chapter-2 claims numerically: each check calls dgm's code and\n"
                       "compares it with a value computed another way (Bayes' rule on a grid, a closed form, an\n"
                       "exact oracle, an independent Monte Carlo), within a tolerance derived from its standard\n"
                       "error or round-off. Print a table of claim, measured value, tolerance, pass/fail.\n"
                       "A second section shows the errata of the chapter-2 summary post: the post's version of a\n"
                       "formula failing where dgm's passes. It is an illustration and does not count: the exit\n"
                       "status is 0 only if every check of dgm passes.")
    p.add_argument("--n", type=positive_int, default=20_000,
                   help="Monte Carlo draws per check (default 20000, at least 100)")
    p.add_argument("--levels", type=positive_int, default=1000,
                   help="levels L of the sampler checks (default 1000, 10 to 100000); the samplers' measured "
                   "discretization bias is allowed for at L=1000 only")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table and the count of checks passed; 1 if any check of dgm fails."""
    from dgm.evaluation import verify

    t0 = time.time()
    rows = verify.run_checks(n=args.n, levels=args.levels, seed=args.seed,
                             progress=lambda r: print(f"  ... {len(r)} rows done", file=sys.stderr, flush=True))
    print(f"n = {args.n} Monte Carlo draws per check, samplers at L = {args.levels}, seed {args.seed}; Monte Carlo "
          f"checks pass below Z = {verify.Z:.2f} standard errors (a false alarm in 1 of {1 / verify.FALSE_ALARM:.0f} "
          f"runs over {verify.N_STATS} statistics)\n")
    print(verify.format_table(rows))
    checks = [r for r in rows if r.section == verify.CHECKS]
    errata = [r for r in rows if r.section == verify.ERRATA]
    passed = sum(r.passed for r in checks)
    print(f"\n{passed} of {len(checks)} checks passed, {len(checks) - passed} failed; "
          f"{sum(r.passed for r in errata)} of {len(errata)} errata shown (not counted) ({time.time() - t0:.1f} s)")
    return 0 if passed == len(checks) else 1
