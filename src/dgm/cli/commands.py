"""The work behind ``dgm train``, ``dgm sample`` and ``dgm eval``: importable functions of parsed args."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dgm.data.spec import data_spec, load_run_data
from dgm.runs import checkpoint as ckpt
from dgm.runs.samples import sample_model, save_npy, save_png

DDPM_FLAGS = ("objective", "prediction", "weighting", "schedule", "levels")
TRAIN_FLAGS = {"steps": "steps", "minutes": "minutes", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
               "mixed_precision": "mixed_precision"}
CONFIG_TABLES = ("model", "train")


def _merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, recursively for nested tables."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


def train(args: argparse.Namespace) -> int:
    """``dgm train``: recipe < stored config (--resume) < --config file < flags; then ``fit``."""
    from dgm.models import build_model
    from dgm.training.loop import TrainConfig, fit
    from dgm.training.recipes import default_threads, recipe

    out = Path(args.out)
    stored = ckpt.read_config(out) if args.resume and (out / ckpt.CONFIG).exists() else None
    if args.resume and stored is None:
        raise ckpt.CheckpointError(f"--resume: {str(out)!r} has no run to resume (no {ckpt.CONFIG})")
    if args.data is None and stored is None:
        raise ValueError("--data is required (a built-in name or a path)")
    heldout_last = getattr(args, "heldout_last", None)
    if args.data is not None:
        spec = data_spec(args.data, heldout_last)
    elif heldout_last is not None:
        raise ValueError("--heldout-last needs --data")
    else:
        spec = stored["data"]
    data = load_run_data(spec)
    if stored is not None:
        model_cfg, train_cfg = stored["model"], stored["train"]
    else:
        model_cfg, train_cfg = recipe(args.kind, data.scaling)
    if stored is not None and stored["model"]["kind"] != args.kind:
        raise ckpt.CheckpointError(f"--resume: {str(out)!r} holds a {stored['model']['kind']} run, "
                                   f"not {args.kind}")
    if args.config:
        settings = read_settings(args.config)
        model_cfg = _merge(model_cfg, settings.get("model", {}))
        train_cfg = _merge(train_cfg, settings.get("train", {}))
    for flag in DDPM_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            if args.kind != "ddpm":
                raise ValueError(f"--{flag} applies to ddpm only, not {args.kind}")
            model_cfg[flag] = value
    for flag, key in TRAIN_FLAGS.items():
        if getattr(args, flag) is not None:
            train_cfg[key] = getattr(args, flag)
    model_cfg["kind"] = args.kind
    torch.manual_seed(train_cfg.get("seed", 0))
    model = build_model(model_cfg)
    config = TrainConfig.from_dict(train_cfg)
    threads, before = args.threads or default_threads(data.scaling), torch.get_num_threads()
    try:
        torch.set_num_threads(threads or before)
        result = fit(model, data, out, train_config=config, resume=args.resume, progress=not args.no_progress,
                     data_spec=spec, device=getattr(args, "device", "auto"))
    finally:
        torch.set_num_threads(before)
    if result.main:
        print(f"dgm: {args.kind} at step {result.step} (stopped by {result.stopped}) after "
              f"{result.seconds:.0f} s, last loss {result.loss:.4g}; checkpoint in {out}", file=sys.stderr)
    return 0


def _check_out_file(path: str, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"--out {path!r} must end in {' or '.join(suffixes)}")
    if p.parent and not p.parent.exists():
        raise FileNotFoundError(f"the folder of --out {path!r} does not exist")
    return p


def sample(args: argparse.Namespace) -> int:
    """``dgm sample``: samples of a run's EMA model, in data space, to .npy or .png."""
    from dgm.data import Scaling
    from dgm.runs.device import resolve_device

    out = _check_out_file(args.out, (".npy", ".png"))
    device = resolve_device(args.device)
    model, config = ckpt.load_model(Path(args.run))
    model.to(device)
    scaling = Scaling.from_dict(config["scaling"])
    x = sample_model(model, args.n, seed=args.seed, sampler=args.sampler, steps=args.steps)
    if out.suffix.lower() == ".npy":
        array = np.asarray(scaling.to_data(x))
        ckpt.atomic_write(out, lambda tmp: save_npy(tmp, array))
    else:
        save_png(out, x, scaling)
    print(f"dgm: wrote {args.n} samples to {out}", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``dgm eval``: one JSON object on stdout."""
    from dgm.evaluation.likelihood import evaluate_run

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else []
    result = evaluate_run(Path(args.run), data=args.data, metrics=metrics, n_samples=args.n_samples,
                          max_examples=args.max_examples, seed=args.seed, sampler=args.sampler,
                          steps=args.steps, device=args.device)
    print(json.dumps(result))
    return 0
