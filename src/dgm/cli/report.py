"""``dgm report DIR [DIR ...] --out FILE.html``: one self-contained page comparing runs
(``dgm.report.html.build_report``)."""

from __future__ import annotations

import argparse
import sys
import time

from dgm.cli.arguments import nonneg_int, positive_int

EXAMPLES = """examples:
  dgm report runs/digits runs/digits-vae --out report.html
  dgm report runs/digits runs/digits-vae --out report.html --likelihood all   # + analytic bound and ODE NLL"""


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="an HTML page comparing runs", epilog=EXAMPLES,
                       description="Write a self-contained HTML page comparing runs.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories")
    p.add_argument("--out", required=True, help="FILE.html")
    p.add_argument("--n-samples", type=positive_int, default=400,
                   help="samples per run and sampler setting (default 400)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--likelihood", choices=("vlb", "all"), default="vlb", help="vlb: the bound (default); all: "
                   "for DDPMs also the bound with the analytic variance and the probability-flow ODE NLL, in a "
                   "likelihood table (minutes of CPU for images)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``dgm report``: build the page, say where it is (stdout: its path)."""
    from dgm.report.html import build_report

    t0 = time.monotonic()
    out = build_report(args.runs, args.out, n_samples=args.n_samples, seed=args.seed, progress=True,
                       likelihood=args.likelihood)
    print(f"dgm: wrote {out} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    print(out)
    return 0
