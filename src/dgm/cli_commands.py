"""The work behind ``dgm train``, ``dgm sample`` and ``dgm eval``: importable functions of parsed args."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dgm import checkpoint as ckpt

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


def data_spec(spec: str, heldout_last: int | None = None) -> dict:
    """How config.json records the data: a built-in name, or an existing path made absolute, and the split
    (a seeded random 10% held out, or the last ``heldout_last`` examples, e.g. MNIST's last 1,000)."""
    from dgm.data import BUILTINS

    p = Path(spec)
    # A built-in name wins over a folder of the same name in the working directory (write ./name for that).
    resolved = spec if spec in BUILTINS or not p.exists() else str(p.resolve())
    out = {"spec": resolved, "seed": 0, "heldout_fraction": 0.1}
    if heldout_last is not None:
        out["heldout_last"] = heldout_last
    return out


def load_run_data(spec: dict):
    """Load the data set a run's config.json names."""
    from dgm.data import load_data

    return load_data(spec["spec"], seed=spec.get("seed", 0),
                     heldout_fraction=spec.get("heldout_fraction", 0.1), heldout_last=spec.get("heldout_last"))


def train(args: argparse.Namespace) -> int:
    """``dgm train``: recipe < stored config (--resume) < --config file < flags; then ``fit``."""
    from dgm.models import build_model
    from dgm.recipes import default_threads, recipe
    from dgm.train import TrainConfig, fit

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


def sample_model(model, n: int, *, seed: int, sampler: str | None, steps: int | None, chunk: int = 4096):
    """n samples in model space, drawn ``chunk`` at a time from one seeded generator."""
    kw = {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None}
    g = torch.Generator().manual_seed(seed)
    parts = [model.sample(min(chunk, n - k), generator=g, **kw).cpu() for k in range(0, n, chunk)]
    return torch.cat(parts)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def save_png(path: Path, x: torch.Tensor, scaling) -> None:
    """Images (N, C, H, W) in model space -> a PNG grid; vectors -> a scatter of the first two data dims."""
    if scaling.kind == "image":
        from PIL import Image

        img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        img = img[:, :3] if img.shape[1] >= 3 else img[:, :1]
        n, c, h, w = img.shape
        ncol = max(1, int(np.ceil(np.sqrt(n))))
        nrow = int(np.ceil(n / ncol))
        pad = 1
        grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
        for k in range(n):
            r, q = divmod(k, ncol)
            top, left = pad + r * (h + pad), pad + q * (w + pad)
            grid[:, top : top + h, left : left + w] = img[k]
        array = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
        zoom = max(1, 32 // max(h, w))
        pic = Image.fromarray(array).resize((array.shape[1] * zoom, array.shape[0] * zoom), Image.NEAREST)
        ckpt.atomic_write(path, lambda tmp: pic.save(tmp, format="PNG"))
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        y = np.asarray(scaling.to_data(x), dtype=np.float64).reshape(len(x), -1)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
        if y.shape[1] == 1:
            ax.hist(y[:, 0], bins=100)
        else:
            ax.scatter(y[:, 0], y[:, 1], s=2, alpha=min(1.0, 2000 / len(y)), linewidths=0)
            ax.set_aspect("equal")
        ax.set_title(f"{len(y)} samples")
        ckpt.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)


def sample(args: argparse.Namespace) -> int:
    """``dgm sample``: samples of a run's EMA model, in data space, to .npy or .png."""
    from dgm.data import Scaling
    from dgm.train import resolve_device

    out = _check_out_file(args.out, (".npy", ".png"))
    device = resolve_device(args.device)
    model, config = ckpt.load_model(Path(args.run))
    model.to(device)
    scaling = Scaling.from_dict(config["scaling"])
    x = sample_model(model, args.n, seed=args.seed, sampler=args.sampler, steps=args.steps)
    if out.suffix.lower() == ".npy":
        array = np.asarray(scaling.to_data(x))
        ckpt.atomic_write(out, lambda tmp: _save_npy(tmp, array))
    else:
        save_png(out, x, scaling)
    print(f"dgm: wrote {args.n} samples to {out}", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``dgm eval``: one JSON object on stdout."""
    from dgm.evaluate import evaluate_run

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else []
    result = evaluate_run(Path(args.run), data=args.data, metrics=metrics, n_samples=args.n_samples,
                          max_examples=args.max_examples, seed=args.seed, sampler=args.sampler,
                          steps=args.steps, device=args.device)
    print(json.dumps(result))
    return 0
