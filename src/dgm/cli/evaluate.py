"""``dgm eval DIR``: NLL bound and sample-quality metrics of a run, one JSON object on stdout
(``dgm.evaluation.likelihood.evaluate_run``); with --metrics on a class-conditional run also the per-class
metrics (``dgm.evaluation.conditional``), in the JSON and as a table on stderr."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_float, nonneg_int, positive_int, unit_float
from dgm.cli.sample import GRIDS, autoguidance_options, grid_options

EXAMPLES = """examples:
  dgm eval runs/gmm2d                          # NLL bound on the run's held-out split
  dgm eval runs/digits --metrics fd,kid --n-samples 1000
  dgm eval runs/mine --data other.npy          # every example of other.npy, in the run's data space
  dgm eval runs/gmm2d --likelihood all         # the bound and the probability-flow ODE NLL side by side
  dgm eval runs/digits --variance analytic     # the bound with Analytic-DPM's variance (Gamma estimated if needed)
  dgm eval runs/digits-cond --metrics fd --sampler dpm++2m --steps 20 --guidance 2   # + per-class FD, accuracy
  dgm eval runs/digits --metrics fd --sampler unipc --steps 10 --grid optimized   # on the run's derived grid
  dgm eval runs/mnist --metrics fd --sampler sde-dpm++2m --steps 20 --autoguidance 1   # guided by its early EMA"""


def add_parser(sub) -> None:
    from dgm.evaluation.likelihood import LIKELIHOODS
    from dgm.evaluation.ode import DIVERGENCES
    from dgm.models.ddpm import MODEL_VARIANCES

    p = sub.add_parser("eval", help="NLL and sample-quality metrics of a run", epilog=EXAMPLES,
                       description="Print one JSON object: nll_nats (an upper bound, nats per example in "
                       "data space) and bits_per_dim with their standard errors (*_se), elbo_nats (VAE), "
                       "ode_nll_nats and ode_bits_per_dim (--likelihood ode/all: the probability-flow ODE), "
                       "data_nll_nats (data with a known density) and the metrics asked for; on a "
                       "class-conditional run --metrics adds per_class (each class's samples against its held-out "
                       "examples: FD with its floor, and for digits the shipped classifier's accuracy) and "
                       "per_class_overall, also printed as a table on stderr.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="DIR", help="the run directory")
    p.add_argument("--data", help="evaluate every example of DATA (default: the run's held-out split)")
    p.add_argument("--metrics", help="comma-separated: fd, kid, precision, recall, sw, mmd (against the "
                   "known density, else all the run's data, or --data)")
    p.add_argument("--n-samples", type=positive_int, default=1000, help="samples for --metrics (1000; a "
                   "conditional run also draws n-samples / K of each of its K classes)")
    p.add_argument("--guidance", type=nonneg_float, metavar="W", help="classifier-free guidance w of the per-class "
                   "samples of a conditional DDPM run, (1 + w) eps(x, c) - w eps(x) (default 0: the conditional model)")
    p.add_argument("--autoguidance", type=nonneg_float, default=0.0, metavar="W", help="autoguidance w of the "
                   "--metrics samples of a DDPM run with a guide, eps + w (eps - eps_guide), as in dgm sample")
    p.add_argument("--max-examples", type=positive_int, help="NLL on at most this many examples")
    p.add_argument("--sampler", help="sampler of a DDPM or an ldm's latent DDPM for --metrics (default ancestral)")
    p.add_argument("--steps", type=positive_int,
                   help="solver steps of --sampler for --metrics (the NFE without guidance)")
    p.add_argument("--grid", choices=GRIDS, help="DDPM levels visited for --metrics, as in dgm sample --grid "
                   "(optimized: the run's stored grid for --sampler and --steps, derived and stored if absent)")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="vlb", help="vlb: the variational bound "
                   "(default); ode: the probability-flow ODE NLL (DDPM); all: both")
    p.add_argument("--variance", choices=MODEL_VARIANCES, help="DDPM reverse variance of the bound (default: "
                   "the run's own)")
    p.add_argument("--rtol", type=unit_float, default=1e-5, help="ODE solver relative tolerance (1e-5)")
    p.add_argument("--atol", type=unit_float, default=1e-5, help="ODE solver absolute tolerance (1e-5)")
    p.add_argument("--divergence", choices=("auto", *DIVERGENCES), default="auto", help="ODE divergence: exact, "
                   "hutchinson, or auto (exact up to 16 dimensions)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``dgm eval``: one JSON object on stdout."""
    from dgm.evaluation.conditional import check_class_options, evaluate_classes, format_per_class
    from dgm.evaluation.likelihood import evaluate_run
    from dgm.runs.checkpoint import read_config

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else []
    per_class = check_class_options(read_config(Path(args.run)), metrics=metrics, guidance=args.guidance,
                                    n_samples=args.n_samples, run=args.run)
    sample_kw = {}
    for option in (f"--grid {args.grid}" if args.grid else None,
                   f"--autoguidance {args.autoguidance:g}" if args.autoguidance else None):
        if option and not metrics:
            raise ValueError(f"{option} applies to the samples of --metrics; none were asked for")
        if option and per_class is not None:
            raise ValueError(f"{option} does not apply to the per-class metrics of --guidance")
    if args.grid is not None or args.autoguidance:
        from dgm.runs.checkpoint import load_model

        model, config = load_model(Path(args.run))
        sample_kw = autoguidance_options(args, model)  # checked before a grid is derived
        sample_kw |= grid_options(args, model, config)
    result = evaluate_run(Path(args.run), data=args.data, metrics=metrics, n_samples=args.n_samples,
                          max_examples=args.max_examples, seed=args.seed, sampler=args.sampler,
                          steps=args.steps, device=args.device, likelihood=args.likelihood,
                          variance=args.variance, rtol=args.rtol, atol=args.atol, divergence=args.divergence,
                          sample_kw=sample_kw)
    if per_class is not None:
        result |= evaluate_classes(Path(args.run), n_per_class=per_class, guidance=args.guidance or 0.0,
                                   seed=args.seed, sampler=args.sampler, steps=args.steps, device=args.device)
        print(format_per_class(result), file=sys.stderr)
    print(json.dumps(_json_numbers(result), allow_nan=False))
    return 0


def _json_numbers(result: dict) -> dict:
    """``result`` as valid JSON: the standard error of a single example (infinite) is null; any other number
    that is not finite is an error naming it, never a NaN in the output."""
    out = {}
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            if not (key.endswith("_se") and value == math.inf):
                raise FloatingPointError(f"{key} is {value}: not a finite number")
            value = None
        out[key] = value
    return out
