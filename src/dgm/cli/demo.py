"""``dgm demo [--out DIR]``: the embedded default job (``dgm.report.demo.run_demo``)."""

from __future__ import annotations

import argparse

from dgm.cli.arguments import positive_float, positive_int

EXAMPLES = """examples:
  dgm demo                 # trains a VAE and a DDPM on the 8x8 digits, writes demo_out/report.html
  dgm demo --out /tmp/demo --minutes 3
  dgm demo --force         # replace the demo already in demo_out"""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a VAE and a DDPM on the digits and write the report",
                       epilog=EXAMPLES, description="The embedded default job.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--force", action="store_true", help="replace a demo already in --out")
    p.add_argument("--minutes", type=positive_float, help="total training budget (default 7.5: 1.5 VAE, 6 DDPM)")
    p.add_argument("--steps", type=positive_int, help="training steps per model (default: the recipes')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``dgm demo``: train, evaluate, report (the summary table on stdout)."""
    from dgm.report.demo import MINUTES, run_demo

    run_demo(args.out, force=args.force, minutes=args.minutes or MINUTES, steps=args.steps,
             progress=not args.no_progress)
    return 0
