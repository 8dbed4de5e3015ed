"""``dgm eval DIR``: NLL bound and sample-quality metrics of a run, one JSON object on stdout
(``dgm.evaluation.likelihood.evaluate_run``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_int, positive_int

EXAMPLES = """examples:
  dgm eval runs/gmm2d                          # NLL bound on the run's held-out split
  dgm eval runs/digits --metrics fd,kid --n-samples 1000
  dgm eval runs/mine --data other.npy          # every example of other.npy, in the run's data space"""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="NLL and sample-quality metrics of a run", epilog=EXAMPLES,
                       description="Print one JSON object: nll_nats (an upper bound, nats per example in "
                       "data space), bits_per_dim, elbo_nats (VAE), data_nll_nats (data with a known "
                       "density) and the metrics asked for.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="DIR", help="the run directory")
    p.add_argument("--data", help="evaluate every example of DATA (default: the run's held-out split)")
    p.add_argument("--metrics", help="comma-separated: fd, kid, precision, recall, sw, mmd (against the "
                   "known density, else all the run's data, or --data)")
    p.add_argument("--n-samples", type=positive_int, default=1000, help="samples for --metrics (1000)")
    p.add_argument("--max-examples", type=positive_int, help="NLL on at most this many examples")
    p.add_argument("--sampler", help="DDPM sampler for --metrics (default ancestral)")
    p.add_argument("--steps", type=positive_int, help="DDPM denoiser calls for --metrics")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``dgm eval``: one JSON object on stdout."""
    from dgm.evaluation.likelihood import evaluate_run

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else []
    result = evaluate_run(Path(args.run), data=args.data, metrics=metrics, n_samples=args.n_samples,
                          max_examples=args.max_examples, seed=args.seed, sampler=args.sampler,
                          steps=args.steps, device=args.device)
    print(json.dumps(result))
    return 0
