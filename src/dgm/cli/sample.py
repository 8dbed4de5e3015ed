"""``dgm sample DIR -n N --out FILE``: samples of a run's EMA model, in data space, to .npy or .png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_int, positive_int

EXAMPLES = """examples:
  dgm sample runs/gmm2d -n 20000 --out samples.npy
  dgm sample runs/gmm2d -n 2000 --out scatter.png
  dgm sample runs/digits -n 64 --out grid.png --sampler ddim --steps 50 --seed 1"""
SUFFIXES = (".npy", ".png")


def add_parser(sub) -> None:
    from dgm.samplers import SAMPLERS

    p = sub.add_parser("sample", help="draw samples from a trained run", epilog=EXAMPLES,
                       description="Draw samples from a run's EMA weights, in data space.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="DIR", help="the run directory")
    p.add_argument("-n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy (data space) or FILE.png (grid or scatter)")
    p.add_argument("--sampler", help=f"DDPM sampler: {', '.join(SAMPLERS)} (default ancestral)")
    p.add_argument("--steps", type=positive_int, help="DDPM denoiser calls (default: the sampler's)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(handler=run)


def check_out_file(path: str) -> Path:
    """The --out file, checked before any work: it ends in .npy or .png and its folder exists."""
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--out {path!r} must end in {' or '.join(SUFFIXES)}")
    if p.parent and not p.parent.exists():
        raise FileNotFoundError(f"the folder of --out {path!r} does not exist")
    return p


def run(args: argparse.Namespace) -> int:
    """``dgm sample``: draw, map to data space, write atomically (an existing file survives any error)."""
    import numpy as np

    from dgm.data import Scaling
    from dgm.runs import checkpoint as ckpt
    from dgm.runs.atomic import atomic_write
    from dgm.runs.device import resolve_device
    from dgm.runs.samples import sample_model, save_npy, save_png

    out = check_out_file(args.out)
    device = resolve_device(args.device)
    model, config = ckpt.load_model(Path(args.run))
    model.to(device)
    scaling = Scaling.from_dict(config["scaling"])
    x = sample_model(model, args.n, seed=args.seed, sampler=args.sampler, steps=args.steps)
    if out.suffix.lower() == ".npy":
        array = np.asarray(scaling.to_data(x))
        atomic_write(out, lambda tmp: save_npy(tmp, array))
    else:
        save_png(out, x, scaling)
    print(f"dgm: wrote {args.n} samples to {out}", file=sys.stderr)
    return 0
