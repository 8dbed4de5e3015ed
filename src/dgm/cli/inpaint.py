"""``dgm inpaint DIR --input X --mask M --method NAME``: completions of the unknown pixels of X given its known
pixels (mask M), drawn from a trained DDPM's posterior with ``dgm.sample_inverse``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_float, nonneg_int, positive_int

EXAMPLES = """examples:
  dgm inpaint runs/digits --input digit.npy --mask left_half.npy --method repaint -n 4 --out done.npy
  dgm inpaint runs/mnist --input seven.png --mask mask.png --method smc --particles 32 --out seven.npy
  dgm inpaint runs/digits --input x.npy --mask m.npy --method dps --step-size 0.5 --class 3 --out x3.npy

The mask is a .npy of one example's shape (1/True = known) or a .png (light pixels known). The noise std
SIGMA is in model space (images scaled to [-1, 1], vectors standardised); the default 0.05 keeps the
posterior well posed (at 0 it is a point mass on the known pixels). --out FILE.npy holds the completions in
data space, shape (N, K, ...); FILE.png beside it shows each input, its mask and the K completions. Without
--out they go to X_METHOD.npy (and .png for images) beside X, e.g. digit_repaint.npy, never over an existing
file."""

OPTION_FLAGS = (("jump", "repaint"), ("resamplings", "repaint"), ("step_size", "dps"), ("eta", "pigdm"),
                ("particles", "smc"))


def add_parser(sub) -> None:
    from dgm.runs.inpainting import DEFAULT_NOISE
    from dgm.samplers.inverse import INVERSE_METHODS, INVERSE_OPTIONS, INVERSE_STEPS

    p = sub.add_parser("inpaint", help="fill in the unknown pixels of an input (posterior sampling)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Draw K completions of each input from a trained DDPM's posterior given the "
                                   "known pixels, by replacement, RePaint, DPS, PiGDM or sequential Monte Carlo.")
    p.add_argument("run", metavar="DIR", help="the run directory (a DDPM)")
    p.add_argument("--input", required=True, metavar="X", help="X.npy (data space; N examples or one) or X.png")
    p.add_argument("--mask", required=True, metavar="M", help="M.npy or M.png: the known pixels")
    p.add_argument("--method", required=True, choices=INVERSE_METHODS, help="posterior sampler")
    p.add_argument("--noise", type=nonneg_float, default=DEFAULT_NOISE, metavar="SIGMA",
                   help=f"observation noise std in model space (default {DEFAULT_NOISE})")
    p.add_argument("-n", type=positive_int, default=1, metavar="K", help="completions per input (default 1)")
    p.add_argument("--out", metavar="FILE.npy", help="where to write (and FILE.png, the grid); default X_METHOD.npy "
                   "beside X, which must not exist yet")
    steps = ", ".join(f"{m} {'all' if v is None else v}" for m, v in INVERSE_STEPS.items())
    p.add_argument("--steps", type=positive_int, help=f"levels visited (default: {steps})")
    p.add_argument("--class", dest="label", metavar="C", help="class index or name (conditional runs)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    o = INVERSE_OPTIONS
    p.add_argument("--jump", type=positive_int, help=f"repaint: jump length (default {o['repaint']['jump']})")
    p.add_argument("--resamplings", type=positive_int,
                   help=f"repaint: resamplings per jump (default {o['repaint']['resamplings']})")
    p.add_argument("--step-size", type=nonneg_float, help=f"dps: step size (default {o['dps']['step']})")
    p.add_argument("--eta", type=nonneg_float, help=f"pigdm: DDIM eta (default {o['pigdm']['eta']})")
    p.add_argument("--particles", type=positive_int,
                   help=f"smc: particles per completion (default {o['smc']['particles']})")
    p.set_defaults(handler=run)


def _options(args) -> dict:
    """The method's options given on the command line; one given for another method is an error."""
    out = {}
    for flag, method in OPTION_FLAGS:
        value = getattr(args, flag)
        if value is None:
            continue
        if method != args.method:
            raise ValueError(f"--{flag.replace('_', '-')} is an option of --method {method}, not {args.method}")
        out["step" if flag == "step_size" else flag] = value
    return out


def default_out(args: argparse.Namespace) -> Path:
    """X_METHOD.npy beside the input X, for a command without --out: refused if it exists, since the user did not
    name it (:func:`refuse_existing`; its .png grid is checked once the run says it holds images)."""
    x = Path(args.input)
    if not x.name or x.name in (".", ".."):
        raise ValueError(f"--input {args.input!r} is not a file name; pass --input X.npy or X.png")
    out = x.with_name(f"{x.stem}_{args.method}.npy")
    if not out.parent.exists():
        raise FileNotFoundError(f"the folder of --input {args.input!r} does not exist")
    refuse_existing(out, args)
    return out


def refuse_existing(path: Path, args: argparse.Namespace) -> None:
    """One line if ``path``, part of the default output (no --out), exists."""
    if path.exists():
        raise FileExistsError(f"{str(path)!r} exists (the default output for --input {args.input!r} and "
                              f"--method {args.method}); pass --out FILE.npy")


def run(args: argparse.Namespace) -> int:
    """``dgm inpaint``: check everything, draw, then write the .npy and its grid atomically."""
    import numpy as np
    import torch

    from dgm.data import Scaling
    from dgm.data.spec import class_index
    from dgm.runs import checkpoint as ckpt
    from dgm.runs.atomic import atomic_write, atomic_write_bytes
    from dgm.runs.device import resolve_device
    from dgm.runs.inpainting import inpaint, inpainting_grid, read_input, read_mask
    from dgm.runs.samples import save_npy

    out = default_out(args) if args.out is None else Path(args.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out {args.out!r} must end in .npy (the grid goes beside it as .png)")
    if not out.parent.exists():
        raise FileNotFoundError(f"the folder of --out {args.out!r} does not exist")
    options = _options(args)
    model, config = ckpt.load_model(Path(args.run))
    scaling = Scaling.from_dict(config["scaling"])
    x, mask = read_input(args.input, scaling), read_mask(args.mask, scaling)
    if args.out is None and scaling.kind == "image":
        refuse_existing(out.with_suffix(".png"), args)
    cond = None
    if args.label is not None:
        if not getattr(model, "conditional", False):
            raise ValueError(f"--class {args.label!r}: the run {args.run!r} is not class-conditional")
        cond = torch.full((len(x),), class_index(config["data"], args.label), dtype=torch.long)
    model.to(resolve_device(args.device))
    done, stats = inpaint(model, x.to(next(model.parameters()).device), mask.to(next(model.parameters()).device),
                          method=args.method, noise=args.noise, per_input=args.n, steps=args.steps, seed=args.seed,
                          cond=cond, **options)
    done = done.cpu()
    if not torch.isfinite(done).all():
        raise ValueError(f"the {args.method} completions hold NaN or infinite values; nothing was written")
    data = scaling.to_data(done.reshape(-1, *done.shape[2:]))
    array = np.asarray(data).reshape(len(x), args.n, *data.shape[1:])
    if args.out is None:  # the default output, checked again after the sampling: never over a file made meanwhile
        refuse_existing(out, args)
        if scaling.kind == "image":
            refuse_existing(out.with_suffix(".png"), args)
    atomic_write(out, lambda tmp: save_npy(tmp, array))
    if scaling.kind == "image":
        atomic_write_bytes(out.with_suffix(".png"), inpainting_grid(x, mask, done))
    print(f"dgm: wrote {len(x)} x {args.n} completions to {out} ({args.method}, {stats['nfe']} network calls "
          "per completion)", file=sys.stderr)
    return 0
