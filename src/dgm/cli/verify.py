"""``dgm verify``: the book's chapter-2 claims checked numerically (``dgm.evaluation.verify``); exit status 0
only if every row passes."""

from __future__ import annotations

import argparse
import sys
import time

from dgm.cli.arguments import nonneg_int, positive_int

EXAMPLES = """examples:
  dgm verify
  dgm verify --n 5000 --seed 1      # fewer Monte Carlo draws"""


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check the book's chapter-2 theorems numerically", epilog=EXAMPLES,
                       description="Check the book's chapter-2 claims, and the errata of the chapter-2 summary "
                       "post, numerically.\nPrint a table of claim, measured value, tolerance, pass/fail.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=positive_int, default=20_000,
                   help="Monte Carlo draws per check (default 20000, at least 100)")
    p.add_argument("--levels", type=positive_int, default=1000,
                   help="levels L of the sampler checks (default 1000, 10 to 100000)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table and a count; 1 if any row fails."""
    from dgm.evaluation.verify import format_table, run_checks

    t0 = time.time()
    rows = run_checks(n=args.n, levels=args.levels, seed=args.seed,
                      progress=lambda r: print(f"  ... {len(r)} checks done", file=sys.stderr, flush=True))
    print(format_table(rows))
    failed = sum(not r.passed for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed ({time.time() - t0:.1f} s)")
    return 0 if failed == 0 else 1
