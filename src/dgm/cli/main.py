"""``dgm``: the command line, a thin argparse layer over ``dgm.cli_commands``.

User errors (bad data, bad flags, a missing or foreign checkpoint) print one line
``dgm: error: ...`` on stderr and exit with status 2, without a traceback and without touching existing
files. Set ``DGM_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from dgm.samplers import SAMPLERS

TRAIN_EXAMPLES = """examples:
  dgm train ddpm --data gmm2d --out runs/gmm2d             # the recipe for 2-D data (a few minutes)
  dgm train ddpm --data digits --out runs/digits --minutes 10
  dgm train vae --data moons --out runs/moons-vae --steps 2000 --lr 1e-3
  dgm train ddpm --data images.npy --out runs/mine --config settings.toml
  dgm train ddpm --data gmm2d --out runs/gmm2d --resume --steps 8000   # continue to step 8000

several processes (each trains on its shard; global batch = --batch-size x processes; on CPU they talk
over gloo; with --cpu, accelerate 1.15 starts one process and dgm starts the others, on Linux):
  accelerate launch --cpu --num_processes 2 -m dgm.cli train ddpm --data gmm2d --out runs/2p
  accelerate launch --multi_gpu --num_processes 2 -m dgm.cli train ddpm --data gmm2d --out runs/2p
  torchrun --nproc-per-node 2 -m dgm.cli train ddpm --data gmm2d --out runs/2p

settings.toml may hold a [model] table (with [model.net]) and a [train] table, e.g.
  [model]
  schedule = "linear"
  [model.net]
  hidden = 128
  [train]
  lr = 1e-3
  checkpoint_every = 250
Flags override the file, and the file overrides the recipe for the data."""

SAMPLE_EXAMPLES = """examples:
  dgm sample runs/gmm2d -n 20000 --out samples.npy
  dgm sample runs/gmm2d -n 2000 --out scatter.png
  dgm sample runs/digits -n 64 --out grid.png --sampler ddim --steps 50 --seed 1"""

EVAL_EXAMPLES = """examples:
  dgm eval runs/gmm2d                          # NLL bound on the run's held-out split
  dgm eval runs/digits --metrics fd,kid --n-samples 1000
  dgm eval runs/mine --data other.npy          # every example of other.npy, in the run's data space"""

REPORT_EXAMPLES = """examples:
  dgm report runs/digits runs/digits-vae --out report.html"""

DEMO_EXAMPLES = """examples:
  dgm demo                 # trains a VAE and a DDPM on the 8x8 digits, writes demo_out/report.html
  dgm demo --out /tmp/demo --minutes 3
  dgm demo --force         # replace the demo already in demo_out"""

VERIFY_EXAMPLES = """examples:
  dgm verify
  dgm verify --n 5000 --seed 1      # fewer Monte Carlo draws"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ``dgm: error: ...`` (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"dgm: error: {self.prog}: {message}\n")


def _number(convert, ok, rule: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok``, else an error quoting the text."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")


def build_parser() -> argparse.ArgumentParser:
    """The ``dgm`` parser with its subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="dgm", description="Deep generative models, from VAEs to DDPMs.",
                     formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model", description="Train a DDPM, VAE or HVAE; write "
                       "checkpoints, config.json and log.jsonl to --out.", epilog=TRAIN_EXAMPLES,
                       formatter_class=fmt)
    p.add_argument("kind", choices=["ddpm", "vae", "hvae"], help="the model")
    p.add_argument("--data", help="built-in name (gmm2d, moons, swissroll, checkerboard, digits) or a path "
                   "(.npy/.npz array or a folder of images); optional with --resume")
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--heldout-last", type=_positive_int, metavar="N",
                   help="hold out the last N examples (default: a seeded random 10%%)")
    p.add_argument("--steps", type=_positive_int, help="train until this many steps in total")
    p.add_argument("--minutes", type=_positive_float, help="stop after this many minutes of wall time")
    p.add_argument("--batch-size", type=_positive_int, help="examples per step (per process)")
    p.add_argument("--lr", type=_positive_float, help="AdamW learning rate")
    p.add_argument("--seed", type=_nonneg_int, help="seed of the initialisation, data order and noise")
    p.add_argument("--config", help="a TOML file with [model] and [train] tables")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--objective", choices=["eps", "x0", "v"], help="DDPM regression target")
    p.add_argument("--prediction", choices=["eps", "x0", "v"], help="what the DDPM network outputs")
    p.add_argument("--weighting", choices=["simple", "vlb", "min_snr"], help="DDPM per-level loss weight")
    p.add_argument("--schedule", choices=["linear", "cosine"], help="DDPM noise schedule")
    p.add_argument("--levels", type=_positive_int, help="DDPM number of levels L")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: 1 for vectors and 8x8 "
                   "images, whose small tensors only lose from threading; torch's default otherwise)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu or cuda")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"],
                   help="autocast the forward pass (fp16 with loss scaling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func="train")

    p = sub.add_parser("sample", help="draw samples from a trained run", epilog=SAMPLE_EXAMPLES,
                       description="Draw samples from a run's EMA weights, in data space.",
                       formatter_class=fmt)
    p.add_argument("run", metavar="DIR", help="the run directory")
    p.add_argument("-n", type=_positive_int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy (data space) or FILE.png (grid or scatter)")
    p.add_argument("--sampler", help=f"DDPM sampler: {', '.join(SAMPLERS)} (default ancestral)")
    p.add_argument("--steps", type=_positive_int, help="DDPM denoiser calls (default: the sampler's)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu or cuda")
    p.set_defaults(func="sample")

    p = sub.add_parser("eval", help="NLL and sample-quality metrics of a run", epilog=EVAL_EXAMPLES,
                       description="Print one JSON object: nll_nats (an upper bound, nats per example in "
                       "data space), bits_per_dim, elbo_nats (VAE), data_nll_nats (data with a known "
                       "density) and the metrics asked for.", formatter_class=fmt)
    p.add_argument("run", metavar="DIR", help="the run directory")
    p.add_argument("--data", help="evaluate every example of DATA (default: the run's held-out split)")
    p.add_argument("--metrics", help="comma-separated: fd, kid, precision, recall, sw, mmd (against the "
                   "known density, else all the run's data, or --data)")
    p.add_argument("--n-samples", type=_positive_int, default=1000, help="samples for --metrics (1000)")
    p.add_argument("--max-examples", type=_positive_int, help="NLL on at most this many examples")
    p.add_argument("--sampler", help="DDPM sampler for --metrics (default ancestral)")
    p.add_argument("--steps", type=_positive_int, help="DDPM denoiser calls for --metrics")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu or cuda")
    p.set_defaults(func="eval")

    p = sub.add_parser("report", help="an HTML page comparing runs", epilog=REPORT_EXAMPLES,
                       description="Write a self-contained HTML page comparing runs.", formatter_class=fmt)
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories")
    p.add_argument("--out", required=True, help="FILE.html")
    p.add_argument("--n-samples", type=_positive_int, help="samples per run and sampler setting (default 400)")
    p.add_argument("--seed", type=_nonneg_int, help="seed (default 0)")
    p.set_defaults(func="report")

    p = sub.add_parser("demo", help="train a VAE and a DDPM on the digits and write the report",
                       epilog=DEMO_EXAMPLES, description="The embedded default job.", formatter_class=fmt)
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--force", action="store_true", help="replace a demo already in --out")
    p.add_argument("--minutes", type=_positive_float, help="total training budget (default 7.5: 1.5 VAE, 6 DDPM)")
    p.add_argument("--steps", type=_positive_int, help="training steps per model (default: the recipes')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func="demo")

    p = sub.add_parser("verify", help="check the seed's theorems numerically", epilog=VERIFY_EXAMPLES,
                       description="Print a table of claim, measured value, tolerance, pass/fail.",
                       formatter_class=fmt)
    from dgm.evaluation.verify import add_arguments as verify_arguments

    verify_arguments(p)
    p.set_defaults(func="verify")
    return parser


def _run(args: argparse.Namespace) -> int:
    """Dispatch a parsed command (modules imported lazily, so ``--help`` stays fast)."""
    if args.func == "train":
        from dgm.cli.commands import train as command
    elif args.func == "sample":
        from dgm.cli.commands import sample as command
    elif args.func == "eval":
        from dgm.cli.commands import evaluate as command
    elif args.func == "report":
        from dgm.report.html import main as command
    elif args.func == "demo":
        from dgm.report.demo import main as command
    elif args.func == "verify":
        from dgm.evaluation.verify import main as command
    else:
        raise ValueError(f"unknown command {args.func!r}")
    return command(args) or 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dgm``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed
        return stop.code if isinstance(stop.code, int) else 2
    if args.func == "train":  # `accelerate launch --cpu --num_processes N` starts one process: start N
        from dgm.training.launch import relaunch

        if (workers := relaunch(sys.argv[1:] if argv is None else argv)) is not None:
            return workers
    if os.environ.get("DGM_DEBUG"):
        return _run(args)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("dgm: interrupted; the last checkpoint is saved (dgm train ... --resume continues)",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError) as err:  # CheckpointError is a ValueError
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"dgm: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
