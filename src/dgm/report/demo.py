"""``dgm demo [--out DIR]``: the embedded default job. Trains a VAE and a DDPM on the 8x8 digits that ship
with scikit-learn (the recipes of ``dgm.recipes``, time-capped), evaluates both (NLL bound, bits/dim,
feature-space FD/KID/precision/recall with their floors), prints a summary table and writes the report.

About 10 minutes on 2 CPU cores: at most ``VAE_MINUTES`` for the VAE and ``DDPM_MINUTES`` for the DDPM,
then evaluation and the report. DIR receives ``vae/`` and ``ddpm/`` (run directories), ``summary.json``
and ``report.html``. A DIR that already holds a demo is never overwritten without ``--force``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from dgm.runs import checkpoint as ckpt

DATA = {"spec": "digits", "seed": 0, "heldout_fraction": 0.1}
KINDS = ("vae", "ddpm")
VAE_MINUTES, DDPM_MINUTES = 1.5, 6.0  # training caps; evaluation and the report take ~2 minutes more
N_EVAL_SAMPLES = 1000  # samples behind the summary's quality metrics
N_REPORT_SAMPLES = 400  # samples per point of the report's NFE sweep
SUMMARY, REPORT = "summary.json", "report.html"
# test-only: a tiny UNet and 20 levels, so the whole demo runs in seconds
TINY_DDPM = {"levels": 20, "net": {"base_channels": 8, "channel_mults": [1], "attn_resolutions": [], "groups": 4,
                                   "head_channels": 8}}
TINY_VAE = {"hidden": [32, 32], "latent_dim": 4}


def check_out(out: Path, *, force: bool, can_force: bool = True) -> None:
    """Refuse a DIR that holds a demo (finished or not) unless ``force``; with ``force`` remove it (only the
    demo's own files: vae/, ddpm/, summary.json, report.html). Anything else in DIR is left alone."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    held = [name for name in (*KINDS, SUMMARY, REPORT) if (out / name).exists()]
    if not held:
        return
    state = "a finished demo" if (out / REPORT).exists() else f"an unfinished demo ({', '.join(held)})"
    if not force:
        how = "pass --force to overwrite it" if can_force else "delete it"
        raise ValueError(f"--out {str(out)!r} already holds {state}; {how} or choose another --out")
    for kind in KINDS:
        run = out / kind
        if run.exists():
            if not run.is_dir() or (any(run.iterdir()) and not (run / ckpt.CONFIG).is_file()):
                raise ValueError(f"--force: {str(run)!r} is not a dgm run directory; not removing it")
            shutil.rmtree(run)
    for name in (SUMMARY, REPORT):
        (out / name).unlink(missing_ok=True)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def train(kind: str, data, out: Path, *, minutes: float, steps: int | None, tiny: bool, seed: int,
          progress: bool):
    """Train the recipe's ``kind`` on ``data`` into ``out`` for at most ``minutes`` (and ``steps``)."""
    from dgm.models import build_model
    from dgm.training.loop import TrainConfig, fit
    from dgm.training.recipes import recipe

    model_cfg, train_cfg = recipe(kind, data.scaling)
    if tiny:
        model_cfg = _merge(model_cfg, TINY_DDPM if kind == "ddpm" else TINY_VAE)
        train_cfg |= {"batch_size": 64, "log_every": 2, "warmup_steps": 2}
    train_cfg |= {"minutes": minutes, "seed": seed}
    if steps is not None:
        train_cfg["steps"] = steps
    torch.manual_seed(seed)
    model = build_model(model_cfg)
    return fit(model, data, out, train_config=TrainConfig.from_dict(train_cfg), progress=progress,
               data_spec=dict(DATA))


def summary_table(runs, evals: dict) -> str:
    """A plain-text table: one line per run (time, NLL, bits/dim, FD/KID/precision/recall with floors)."""
    lines = [f"{'run':<6}{'steps':>7}{'train':>8}{'NLL nats':>10}{'bits/dim':>9}{'FD':>8}{'(floor)':>9}"
             f"{'KID':>9}{'(floor)':>9}{'prec':>6}{'recall':>7}  samples"]
    for r in runs:
        e = evals[str(r.path)]
        lines.append(f"{r.name:<6}{r.steps:>7}{r.train_seconds / 60:>6.1f} m{e['nll_nats']:>10.2f}"
                     f"{e['bits_per_dim']:>9.3f}{e['fd']:>8.3f}{e['fd_floor']:>9.3f}{e['kid']:>9.4f}"
                     f"{e['kid_floor']:>9.4f}{e['precision']:>6.2f}{e['recall']:>7.2f}  {e['sampled_with']}")
    return "\n".join(lines)


def run_demo(out, *, force: bool = False, can_force: bool = True, vae_minutes: float = VAE_MINUTES,
             ddpm_minutes: float = DDPM_MINUTES, steps: int | None = None, tiny: bool = False, seed: int = 0,
             n_eval: int = N_EVAL_SAMPLES, n_report: int = N_REPORT_SAMPLES, progress: bool = True) -> dict:
    """Train, evaluate and report into ``out``; returns the summary (also written to ``out/summary.json``).

    ``steps`` caps the training steps of both models and ``tiny`` swaps in tiny networks (tests only).
    """
    from dgm.data.spec import load_run_data
    from dgm.training.recipes import default_threads

    t0 = time.monotonic()
    out = Path(out)
    check_out(out, force=force, can_force=can_force)
    out.mkdir(parents=True, exist_ok=True)
    data = load_run_data(DATA)
    threads = torch.get_num_threads()
    torch.set_num_threads(default_threads(data.scaling) or threads)  # as `dgm train` does for 8x8 images
    try:
        return _run(out, data, t0, force=force, vae_minutes=vae_minutes, ddpm_minutes=ddpm_minutes, steps=steps,
                    tiny=tiny, seed=seed, n_eval=n_eval, n_report=n_report, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, data, t0: float, *, force, vae_minutes, ddpm_minutes, steps, tiny, seed, n_eval, n_report,
         progress) -> dict:
    from dgm.report.compute import evaluate, load_runs
    from dgm.report.html import build_report

    seconds = {}
    for kind, minutes in (("vae", vae_minutes), ("ddpm", ddpm_minutes)):
        print(f"dgm demo: training the {kind} (at most {minutes:g} min)", file=sys.stderr, flush=True)
        result = train(kind, data, out / kind, minutes=minutes, steps=steps, tiny=tiny, seed=seed,
                       progress=progress)
        seconds[f"train_{kind}"] = result.seconds
    print("dgm demo: evaluating (NLL on the held-out digits, FD/KID/precision/recall on "
          f"{n_eval} samples)", file=sys.stderr, flush=True)
    t1 = time.monotonic()
    runs = load_runs([out / kind for kind in KINDS])
    evals = {str(r.path): evaluate(r, n_samples=n_eval, seed=seed, nll_examples=None) for r in runs}
    seconds["evaluate"] = time.monotonic() - t1
    table = summary_table(runs, evals)
    print(table)
    vae, ddpm = (evals[str(out / kind)] for kind in KINDS)
    verdict = (f"DDPM {'beats' if ddpm['fd'] < vae['fd'] else 'does NOT beat'} the VAE on feature-space FD: "
               f"{ddpm['fd']:.3f} vs {vae['fd']:.3f} (floor {ddpm['fd_floor']:.3f})")
    print(verdict)
    print("dgm demo: writing the report", file=sys.stderr, flush=True)
    t2 = time.monotonic()
    report = build_report([out / kind for kind in KINDS], out / REPORT, n_samples=n_report, seed=seed,
                          evals=evals, progress=progress)
    seconds["report"] = time.monotonic() - t2
    seconds["total"] = time.monotonic() - t0
    summary = {"runs": {kind: {"steps": r.steps, "train_seconds": r.train_seconds, **evals[str(r.path)]}
                        for kind, r in zip(KINDS, runs, strict=True)},
               "ddpm_beats_vae_fd": ddpm["fd"] < vae["fd"], "seconds": seconds, "report": str(report)}
    ckpt.atomic_write_bytes(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    print(f"dgm demo: done in {seconds['total'] / 60:.1f} min; report: {report}", file=sys.stderr)
    print(report)
    return summary


def main(args) -> int:
    """``dgm demo [--out DIR] [--force]`` (args: an argparse Namespace; ``force`` may be absent)."""
    tiny = bool(getattr(args, "tiny", False))  # test-only: tiny nets and sample counts
    minutes = getattr(args, "minutes", None)  # a total training budget, split 1 : 4 between VAE and DDPM
    caps = {"vae_minutes": minutes / 5, "ddpm_minutes": 4 * minutes / 5} if minutes else {}
    run_demo(args.out, force=bool(getattr(args, "force", False)), can_force=hasattr(args, "force"),
             steps=getattr(args, "steps", None), tiny=tiny, progress=not getattr(args, "no_progress", False),
             **caps, **({"n_eval": 64, "n_report": 64} if tiny else {}))
    return 0
