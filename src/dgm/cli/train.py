"""``dgm train KIND --data DATA --out DIR``: settings from recipe < stored config (--resume) < --config file <
flags, then ``dgm.training.loop.fit``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgm.cli.arguments import DEVICE_HELP, nonneg_int, positive_float, positive_int, probability

EXAMPLES = """examples:
  dgm train ddpm --data gmm2d --out runs/gmm2d             # the recipe for 2-D data (a few minutes)
  dgm train ddpm --data digits --out runs/digits --minutes 10
  dgm train vae --data moons --out runs/moons-vae --steps 2000 --lr 1e-3
  dgm train ddpm --data images.npy --out runs/mine --config settings.toml
  dgm train ddpm --data gmm2d --out runs/gmm2d --resume --steps 8000   # continue to step 8000
  dgm train ddpm --data gmm2d --out runs/lr --lr 0.5 --on-nan skip    # skip steps whose loss is NaN or inf
  dgm train ddpm --data digits --out runs/digits-c --conditional      # p(x | class), classifier-free guidance
  dgm train vae --data labelled.npz --out runs/cvae --conditional --label-dropout 0.2
  dgm train ldm --data t10k-images-idx3-ubyte.gz --heldout-last 1000 --out runs/mnist-ldm --minutes 15

ldm (latent diffusion, images only) trains in two stages in one run directory: the VAE for the recipe's
vae_steps (1,500 for 28x28 images), then a DDPM on its latents; --steps counts both stages, a run stopped in
stage 1 goes on with --resume, and [model.vae] / [model.ddpm] tables in --config set each part.

Ctrl-C (SIGINT) or SIGTERM stops at the end of the current step with a checkpoint (exit status 130 or 143;
--resume continues exactly); a second one stops at once (the last checkpoint stays valid). One process at a time
trains in a run directory: a second `dgm train` on it (--resume too) is refused while the first runs.

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

# model flags; a model's CLI_OPTIONS say which apply to it
MODEL_FLAGS = ("objective", "prediction", "weighting", "schedule", "levels", "variance", "conditional", "label_dropout",
               "guide_step")
TRAIN_FLAGS = ("steps", "minutes", "batch_size", "lr", "seed", "mixed_precision")  # TrainConfig keys
CONFIG_TABLES = ("model", "train")


def add_parser(sub) -> None:
    from dgm.core.losses import OBJECTIVES, WEIGHTINGS
    from dgm.core.parameterization import PREDICTIONS
    from dgm.models import MODEL_KINDS
    from dgm.models.ddpm import MODEL_VARIANCES, SCHEDULES
    from dgm.training.config import PRECISIONS
    from dgm.training.divergence import MAX_CONSECUTIVE_SKIPS, ON_NAN

    p = sub.add_parser("train", help="train a model", description="Train a DDPM, VAE, HVAE or LDM (a "
                       "VAE and a DDPM on its latents); write "
                       "checkpoints, config.json and log.jsonl to --out.", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=MODEL_KINDS, help="the model")
    p.add_argument("--data", help="built-in name (gmm2d, moons, swissroll, checkerboard, digits) or a path "
                   "(.npy/.npz array, an MNIST-style IDX file or a folder of images); optional with --resume")
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--heldout-last", type=positive_int, metavar="N",
                   help="hold out the last N examples (default: a seeded random 10%%)")
    p.add_argument("--steps", type=positive_int, help="train until this many steps in total")
    p.add_argument("--minutes", type=positive_float, help="stop after this many minutes of wall time")
    p.add_argument("--batch-size", type=positive_int, help="examples per step (per process)")
    p.add_argument("--lr", type=positive_float, help="AdamW learning rate")
    p.add_argument("--seed", type=nonneg_int, help="seed of the initialisation, data order and noise")
    p.add_argument("--config", help="a TOML file with [model] and [train] tables")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--objective", choices=OBJECTIVES, help="DDPM regression target")
    p.add_argument("--prediction", choices=PREDICTIONS, help="what the DDPM network outputs")
    p.add_argument("--weighting", choices=WEIGHTINGS, help="DDPM per-level loss weight")
    p.add_argument("--schedule", choices=SCHEDULES, help="DDPM noise schedule")
    p.add_argument("--levels", type=positive_int, help="DDPM number of levels L")
    p.add_argument("--variance", choices=MODEL_VARIANCES, help="DDPM reverse variance of the bound and of ancestral "
                   "sampling: fixed_small (default), fixed_large, learned (the net learns it, hybrid loss) or "
                   "analytic (Analytic-DPM: Gamma estimated on the training data after training, stored in DIR)")
    p.add_argument("--conditional", action="store_true", default=None,
                   help="DDPM and VAE: a class-conditional model p(x | class) on the data's labels (gmm2d, digits, "
                   "y of an .npz, class folders, MNIST's labels file)")
    p.add_argument("--label-dropout", type=probability, metavar="P", help="with --conditional: the probability "
                   "that a training label is replaced by the null class, which learns p(x) too (default 0.1)")
    p.add_argument("--guide-step", type=nonneg_int, metavar="N", help="DDPM: keep the EMA weights of step N as "
                   "a guide for autoguidance (dgm sample --autoguidance W; the 28x28 image recipe keeps step 500's); "
                   "0: no guide")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: 1 for vectors and images of "
                   "side <= 16, whose small tensors only lose from threading; torch's default otherwise)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--mixed-precision", choices=(*PRECISIONS, "auto"),
                   help="autocast the forward pass (fp16 with loss scaling); auto: bf16 where it is measured faster "
                   "(CPUs with AMX or AVX-512 BF16), else no (the 28x28 image recipe's default)")
    p.add_argument("--on-nan", choices=ON_NAN, default="stop", help="a loss or gradient norm that is NaN or "
                   "infinite: stop with an error naming the step (default; the last checkpoint is kept), or skip the "
                   f"step (no update; counted as skipped_nonfinite in log.jsonl; {MAX_CONSECUTIVE_SKIPS} in a row "
                   "stop the run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def read_settings(path: str) -> dict:
    """The [model] and [train] tables of a TOML settings file (other tables are an error)."""
    import tomllib  # Python >= 3.11

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {path!r} does not exist")
    try:
        settings = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path!r} is not valid TOML ({err})") from None
    unknown = sorted(set(settings) - set(CONFIG_TABLES))
    if unknown:
        raise ValueError(f"--config {path!r}: unknown table or key {unknown[0]!r} "
                         "(expected [model] and [train])")
    return settings


def run(args: argparse.Namespace) -> int:
    """``dgm train``: recipe < stored config (--resume) < --config file < flags; then ``fit``."""
    import torch

    from dgm.data.spec import data_spec, load_run_data, with_labels
    from dgm.models import MODEL_KINDS, build_model, model_class
    from dgm.runs import checkpoint as ckpt
    from dgm.training.config import TrainConfig, merge_settings
    from dgm.training.loop import fit
    from dgm.training.recipes import default_threads, recipe, resolve_precision
    from dgm.training.signals import EXIT_STATUS

    out = Path(args.out)
    stored = ckpt.read_config(out) if args.resume and (out / ckpt.CONFIG).exists() else None
    if args.resume and stored is None:
        raise ckpt.CheckpointError(f"--resume: {str(out)!r} has no run to resume (no {ckpt.CONFIG})")
    if args.data is None and stored is None:
        raise ValueError("--data is required (a built-in name or a path)")
    if args.data is not None:
        spec = data_spec(args.data, args.heldout_last)
    elif args.heldout_last is not None:
        raise ValueError("--heldout-last needs --data")
    else:
        spec = stored["data"]
    data = load_run_data(spec)
    if stored is not None:
        model_cfg, train_cfg = stored["model"], stored["train"]
    else:
        model_cfg, train_cfg = recipe(args.kind, data.scaling, args.device)
    if stored is not None and stored["model"]["kind"] != args.kind:
        raise ckpt.CheckpointError(f"--resume: {str(out)!r} holds a {stored['model']['kind']} run, "
                                   f"not {args.kind}")
    if args.config:
        settings = read_settings(args.config)
        model_cfg = merge_settings(model_cfg, settings.get("model", {}))
        train_cfg = merge_settings(train_cfg, settings.get("train", {}))
    for flag in MODEL_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            if flag not in model_class(args.kind).CLI_OPTIONS:
                kinds = [k for k in MODEL_KINDS if flag in model_class(k).CLI_OPTIONS]
                raise ValueError(f"--{flag.replace('_', '-')} applies to {' and '.join(kinds)} only, not {args.kind}")
            model_cfg[flag] = value
    train_cfg = merge_settings(train_cfg, {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None})
    model_cfg["kind"] = args.kind
    if train_cfg.get("mixed_precision") == "auto":
        train_cfg["mixed_precision"] = resolve_precision("auto", args.device)
    net = model_cfg.get("net", {})
    learned = model_cfg.get("variance") == "learned" and not {"out_dim", "out_channels"} & set(net)
    if args.label_dropout is not None and not model_cfg.get("conditional"):
        raise ValueError(f"--label-dropout {args.label_dropout} needs --conditional")
    if model_cfg.get("conditional"):
        spec = with_labels(spec, data)  # one line if the data have no labels; config.json records the classes
    if (stored is None and learned) or model_cfg.get("conditional"):
        # a learned variance doubles the net's output, a conditional model takes the data's classes (asked for by
        # a flag or the file): size the model for the data (a resumed run must come out as it was stored)
        model_cfg = model_class(args.kind).complete_config(model_cfg, list(data.scaling.shape), data.scaling.bins,
                                                           num_classes=spec.get("num_classes"))
    torch.manual_seed(train_cfg.get("seed", 0))
    model = build_model(model_cfg)
    config = TrainConfig.from_dict(train_cfg)
    threads, before = args.threads or default_threads(data.scaling), torch.get_num_threads()

    def finish(result) -> None:  # rank 0, after the final checkpoint, while the run directory is still locked
        skipped = f", {result.skipped_nonfinite} non-finite steps skipped" if result.skipped_nonfinite else ""
        print(f"dgm: {args.kind} at step {result.step} (stopped by {result.stopped}) after "
              f"{result.seconds:.0f} s, last loss {result.loss:.4g}{skipped}; checkpoint in {out}{_stage_note(model)}",
              file=sys.stderr)
        torch.set_num_threads(before)
        if getattr(model, "variance", None) == "analytic":
            _estimate_analytic(result, data, out)

    try:
        torch.set_num_threads(threads or before)
        result = fit(model, data, out, train_config=config, resume=args.resume, progress=not args.no_progress,
                     data_spec=spec, device=args.device, on_nan=args.on_nan, finish=finish)
    finally:
        torch.set_num_threads(before)
    if result.stopped in EXIT_STATUS:  # SIGINT or SIGTERM: a checkpoint at a step boundary
        if result.main:
            print(f"dgm: {result.stopped}: {args.kind} stopped at step {result.step}; checkpoint in {out} "
                  "(dgm train ... --resume continues it)", file=sys.stderr)
        return EXIT_STATUS[result.stopped]
    return 0


def _stage_note(model) -> str:
    """For a model trained in stages (an ldm) that has not reached its last: which stage, and how to go on."""
    if getattr(model, "stage", None) is None or int(model.stage) == 1:
        return ""
    return (f" (stage 1 of 2, the VAE; the latent DDPM trains from step {model.vae_steps} on: continue with "
            "--resume)")


def _estimate_analytic(result, data, out: Path) -> None:
    """Analytic-DPM after training: Gamma_i of the EMA model on the training data, stored beside the weights."""
    import torch

    from dgm.evaluation.likelihood import estimate_analytic_variance
    from dgm.runs.analytic import ANALYTIC, save_analytic

    print("dgm: estimating the analytic reverse variance (Gamma_i at every level) on the training data",
          file=sys.stderr, flush=True)
    result.ema.eval()
    g = torch.Generator().manual_seed(0)
    estimate, n, seconds = estimate_analytic_variance(result.ema, data.train, generator=g)
    save_analytic(out, estimate, step=result.step, examples=n, seconds=seconds)
    print(f"dgm: Gamma from {n} training examples in {seconds:.0f} s; wrote {out / ANALYTIC}", file=sys.stderr)
