"""``dgm sample DIR -n N --out FILE``: samples of a run's EMA model, in data space, to .npy or .png.

``--grid optimized`` samples a DDPM run on the level grid derived from the run itself
(``dgm.samplers.optimized_grid``: its EMA denoiser and a subset of its training data, never a known density),
stored in the run directory as grid_<sampler>_<nfe>.json the first time and reused after. On an
unconditional run with at most ``GAUSSIAN_START_MAX_DIM`` dimensions the grid may start below L, from a
Gaussian fitted to the training data (``dgm.samplers.gaussian_start``). On vector data (2-D toys, a user's
arrays) the search matches the teacher's end points as a set ("sw", 2,000 examples); on images it matches them
point by point ("mse", 64 examples). Conditional runs keep level L.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_float, nonneg_int, positive_int

EXAMPLES = """examples:
  dgm sample runs/gmm2d -n 20000 --out samples.npy
  dgm sample runs/gmm2d -n 2000 --out scatter.png
  dgm sample runs/digits -n 64 --out grid.png --sampler ddim --steps 50 --seed 1
  dgm sample runs/digits -n 1000 --out few.npy --sampler unipc --steps 10 --grid optimized
  dgm sample runs/digits-cond -n 64 --out threes.png --class 3 --guidance 2
  dgm sample runs/digits-cond -n 64 --out any.png --unconditional
  dgm sample runs/mnist -n 100 --out ag.png --sampler sde-dpm++2m --steps 20 --autoguidance 1"""
SUFFIXES = (".npy", ".png")
GRIDS = ("quadratic", "uniform", "optimized")
# the optimized grid's derivation: training examples and search settings (affordable on a CPU: digits, 10 NFE,
# about a thousand calls of the net on 64 images; benchmarks/RESULTS.md, few-step section)
GRID_EXAMPLES = 64
GRID_SEARCH = {"sweeps": 2, "candidates": 5}
# on vector data the net is cheap and a distribution distance needs many examples: with the Gaussian start this
# is the setting that took mix8d at 5 NFE from 3.5x to 1.4x the floor (benchmarks/RESULTS.md, few-step section)
GRID_EXAMPLES_VECTOR = 2000
GRID_SEARCH_VECTOR = {"sweeps": 4, "candidates": 9, "objective": "sw"}
# the Gaussian start needs the data's covariance (D x D, an eigendecomposition): up to 64x64 gray or 32x32 RGB
GAUSSIAN_START_MAX_DIM = 4096


def add_parser(sub) -> None:
    from dgm.samplers import SAMPLERS

    p = sub.add_parser("sample", help="draw samples from a trained run", epilog=EXAMPLES,
                       description="Draw samples from a run's EMA weights, in data space.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="DIR", help="the run directory")
    p.add_argument("-n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy (data space) or FILE.png (grid or scatter)")
    p.add_argument("--sampler",
                   help=f"sampler of a DDPM or an ldm's latent DDPM: {', '.join(SAMPLERS)} (default ancestral)")
    p.add_argument("--steps", type=positive_int,
                   help="solver steps of --sampler, the NFE without guidance (default: the sampler's)")
    p.add_argument("--grid", choices=GRIDS,
                   help="DDPM levels visited: quadratic (the default of every sampler but ancestral with all "
                        "levels), uniform, or optimized: derived from this run's denoiser and "
                        f"{GRID_EXAMPLES} of its training examples (vector data: {GRID_EXAMPLES_VECTOR}), starting "
                        "below L from a Gaussian fitted to the training data (unconditional runs), for --sampler "
                        "and --steps (ddim, dpm++2m, dpm++3m, unipc, unipc3), stored in DIR as "
                        "grid_SAMPLER_STEPS.json the first time and reused after")
    p.add_argument("--class", dest="label", metavar="C",
                   help="class index or name of a conditional run (default: the unconditional model)")
    p.add_argument("--guidance", type=nonneg_float, default=0.0, metavar="W",
                   help="classifier-free guidance w >= 0 with --class: (1 + w) eps(x, c) - w eps(x); 0 (default) "
                        "is the plain conditional model; diffusers' guidance_scale is 1 + w")
    p.add_argument("--autoguidance", type=nonneg_float, default=0.0, metavar="W",
                   help="autoguidance w >= 0 (Karras et al. 2024): eps + w (eps - eps_guide), the guide being the "
                        "run's EMA weights of an early step (DDPM runs trained with guide_step, as the 28x28 "
                        "recipe is); two net calls per step; 0 (default) is off")
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
    kw = class_options(args, model, config) | autoguidance_options(args, model)  # checked before a grid is derived
    kw |= grid_options(args, model, config)
    write_samples(model, args.n, out, scaling, seed=args.seed, sampler=args.sampler, steps=args.steps, **kw)
    print(f"dgm: wrote {args.n} samples to {out}", file=sys.stderr)
    return 0


def autoguidance_options(args, model) -> dict:
    """The keywords of ``model.sample`` for --autoguidance, checked before any work: one line for a run that is
    not a DDPM, a DDPM without its guide, or --autoguidance beside --guidance."""
    w = getattr(args, "autoguidance", 0.0) or 0.0
    if not w:
        return {}
    if model.kind != "ddpm":
        raise ValueError(f"--autoguidance applies to DDPM runs; {args.run!r} is a {model.kind}")
    if getattr(args, "guidance", None):
        raise ValueError(f"--guidance {args.guidance:g} and --autoguidance {w:g}: choose one")
    if not model.has_guide:
        step = None if model.guide is None else model.guide.step
        why = ("was trained without one (the ddpm option guide_step)" if step is None else
               f"has not trained past step {step}, where its guide is taken (continue with dgm train --resume)")
        raise ValueError(f"--autoguidance {w:g} needs the run's guide; {args.run!r} {why}")
    return {"autoguidance": w}


def grid_options(args, model, config) -> dict:
    """The keywords of ``model.sample`` for --grid: ``spacing`` for quadratic and uniform, ``grid`` (the run's
    stored or newly derived optimized grid) for optimized; one-line errors for a run that is not a DDPM or a
    sampler without an optimized grid."""
    if args.grid is None:
        return {}
    if model.kind != "ddpm":
        raise ValueError(f"--grid {args.grid}: the run {args.run!r} is a {model.kind}; level grids apply to DDPM runs")
    if args.grid != "optimized":
        return {"spacing": args.grid}
    from dgm.samplers import DEFAULT_STEPS
    from dgm.samplers.optimized_grid import GRID_SOLVERS

    sampler = args.sampler or "ancestral"
    if sampler not in GRID_SOLVERS:
        raise ValueError(f"--grid optimized needs --sampler one of {', '.join(GRID_SOLVERS)}, not {sampler!r}")
    steps = args.steps or min(DEFAULT_STEPS[sampler], model.schedule.L)
    return run_level_grid(Path(args.run), model, config, sampler, steps)


def run_level_grid(run_dir: Path, model, config, sampler: str, steps: int) -> dict:
    """``model.sample``'s keywords for the optimized grid of ``sampler`` at ``steps`` NFE stored in ``run_dir``:
    ``grid``, and ``start`` (the Gaussian fitted to all the run's training data) where the grid was derived with
    one. Where there is none, derived with ``dgm.samplers.optimized_grid.run_grid`` from the run's EMA denoiser
    and ``GRID_EXAMPLES`` training examples (a seeded subset, with their labels on a conditional run) with
    ``GRID_SEARCH``'s coordinate descent (on vector data of an unconditional run: ``GRID_EXAMPLES_VECTOR`` and
    ``GRID_SEARCH_VECTOR``), with a Gaussian start on an unconditional run of at most
    ``GAUSSIAN_START_MAX_DIM`` dimensions, stored, and said on stderr."""
    import json

    import torch

    from dgm.data.spec import load_run_data
    from dgm.runs.checkpoint import checkpoint_step
    from dgm.samplers.gaussian_start import GaussianStart
    from dgm.samplers.grid import grid_path, load_grid
    from dgm.samplers.optimized_grid import run_grid

    s = model.schedule
    path = grid_path(run_dir, sampler, steps)
    step = checkpoint_step(run_dir)
    grid = load_grid(run_dir, s, sampler, steps, step=step)
    if grid is not None:
        print(f"dgm: using the optimized grid stored in {path}", file=sys.stderr)
        if json.loads(path.read_text()).get("start") != "gaussian":
            return {"grid": grid}
        return {"grid": grid, "start": GaussianStart.fit(load_run_data(config["data"]).train)}
    if path.exists():
        print(f"dgm: the grid in {path} was derived from another checkpoint than step {step}'s; deriving it "
              "again", file=sys.stderr)
    if not 1 <= steps <= s.L:
        raise ValueError(f"--steps {steps}: the run has L = {s.L} levels, so 1..{s.L} denoiser calls")
    data = load_run_data(config["data"])
    device = next(model.parameters()).device
    conditional = getattr(model, "conditional", False)
    vector = len(model.data_shape) == 1 and not conditional
    examples, search = (GRID_EXAMPLES_VECTOR, GRID_SEARCH_VECTOR) if vector else (GRID_EXAMPLES, GRID_SEARCH)
    search = dict(search)
    gaussian = not conditional and data.train[0].numel() <= GAUSSIAN_START_MAX_DIM
    if gaussian:
        search["start"] = GaussianStart.fit(data.train)
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:examples]
    x0 = data.train[pick].to(device)
    cond = data.train_labels[pick].to(device) if conditional else None
    began = time.perf_counter()
    grid = run_grid(run_dir, model.denoiser, s, sampler, steps, x0, cond=cond, teacher_steps=min(200, s.L),
                    generator=torch.Generator(device=device).manual_seed(0), step=step, **search)
    how = " with a Gaussian start" if gaussian else ""
    print(f"dgm: derived the optimized {sampler} grid for {steps} NFE{how} from {len(x0)} training examples in "
          f"{time.perf_counter() - began:.1f} s; stored in {path}", file=sys.stderr)
    return {"grid": grid} | ({"start": search["start"]} if gaussian else {})
