"""``dgm sample DIR -n N --out FILE``: samples of a run's EMA model, in data space, to .npy or .png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_float, nonneg_int, positive_int

EXAMPLES = """examples:
  dgm sample runs/gmm2d -n 20000 --out samples.npy
  dgm sample runs/gmm2d -n 2000 --out scatter.png
  dgm sample runs/digits -n 64 --out grid.png --sampler ddim --steps 50 --seed 1
  dgm sample runs/digits-cond -n 64 --out threes.png --class 3 --guidance 2
  dgm sample runs/digits-cond -n 64 --out any.png --unconditional"""
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
    p.add_argument("--class", dest="label", metavar="C",
                   help="class index or name of a conditional run (default: the unconditional model)")
    p.add_argument("--guidance", type=nonneg_float, default=0.0, metavar="W",
                   help="classifier-free guidance w >= 0 with --class: (1 + w) eps(x, c) - w eps(x); 0 (default) "
                        "is the plain conditional model; diffusers' guidance_scale is 1 + w")
    p.add_argument("--unconditional", action="store_true",
                   help="sample a conditional run's unconditional model (its null class); the default without --class")
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


def class_options(args, model, config) -> dict:
    """The keywords of ``model.sample`` for --class, --guidance and --unconditional, checked: one line for a
    class the run lacks, guidance without a class, or a class on an unconditional run."""
    from dgm.data.spec import class_index

    conditional = getattr(model, "conditional", False)
    if args.label is not None and args.unconditional:
        raise ValueError("--class and --unconditional exclude each other")
    if args.guidance and args.label is None:
        raise ValueError(f"--guidance {args.guidance:g} needs --class C (guidance sharpens a class)")
    if args.label is None:
        if args.unconditional and not conditional:
            raise ValueError(f"--unconditional: the run {args.run!r} is unconditional already; drop the flag")
        return {}
    if not conditional:
        raise ValueError(f"--class {args.label!r}: the run {args.run!r} is not class-conditional (train with "
                         "--conditional)")
    kw = {"cond": class_index(config["data"], args.label)}
    if args.guidance:
        if model.kind != "ddpm":
            raise ValueError(f"--guidance applies to DDPM runs; {args.run!r} is a {model.kind}")
        kw["guidance"] = args.guidance
    return kw


def run(args: argparse.Namespace) -> int:
    """``dgm sample``: draw, map to data space, write atomically (an existing file survives any error); too
    many samples for the disk (or, for a .png, the memory) are refused before drawing."""
    from dgm.data import Scaling
    from dgm.runs import checkpoint as ckpt
    from dgm.runs.device import resolve_device
    from dgm.runs.samples import write_samples

    out = check_out_file(args.out)
    device = resolve_device(args.device)
    model, config = ckpt.load_model(Path(args.run))
    model.to(device)
    scaling = Scaling.from_dict(config["scaling"])
    write_samples(model, args.n, out, scaling, seed=args.seed, sampler=args.sampler, steps=args.steps,
                  **class_options(args, model, config))
    print(f"dgm: wrote {args.n} samples to {out}", file=sys.stderr)
    return 0
