"""``run_demo(out)``, the embedded default job of ``dgm demo``. Trains a VAE and a DDPM on the 8x8 digits that
ship with scikit-learn (the recipes of ``dgm.training.recipes``, time-capped), evaluates both (NLL bound,
bits/dim, feature-space FD/KID/precision/recall with their floors), prints a summary table and writes the
report.

About 10 minutes on 2 CPU cores: a training budget of ``MINUTES`` (7.5), a fifth of it for the VAE and the
rest for the DDPM, then evaluation and the report. DIR receives ``vae/`` and ``ddpm/`` (run directories),
``summary.json`` and ``report.html``. A DIR that already holds a demo is never overwritten without ``force``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from dgm.runs import checkpoint as ckpt
from dgm.runs.atomic import atomic_write_bytes

DATA = {"spec": "digits", "seed": 0, "heldout_fraction": 0.1}
KINDS = ("vae", "ddpm")
MINUTES = 7.5  # training budget: 1.5 for the VAE, 6 for the DDPM; evaluation and the report take ~2 more
N_EVAL_SAMPLES = 1000  # samples behind the summary's quality metrics
N_REPORT_SAMPLES = 400  # samples per point of the report's NFE sweep
SUMMARY, REPORT = "summary.json", "report.html"
# ``tiny=True``: a tiny UNet and 20 levels, tiny VAE nets and 64 samples, so the whole demo runs in seconds
TINY_DDPM = {"levels": 20, "net": {"base_channels": 8, "channel_mults": [1], "attn_resolutions": [], "groups": 4,
                                   "head_channels": 8}}
TINY_VAE = {"hidden": [32, 32], "latent_dim": 4}
TINY_MODELS = {"vae": TINY_VAE, "ddpm": TINY_DDPM}
TINY_TRAIN = {"batch_size": 64, "log_every": 2, "warmup_steps": 2}
TINY_SAMPLES = 64


def check_out(out: Path, *, force: bool) -> None:
    """Refuse a DIR that holds a demo (finished or not) unless ``force``; with ``force`` remove it (only the
    demo's own files: vae/, ddpm/, summary.json, report.html). Anything else in DIR is left alone."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    held = [name for name in (*KINDS, SUMMARY, REPORT) if (out / name).exists()]
    if not held:
        return
    state = "a finished demo" if (out / REPORT).exists() else f"an unfinished demo ({', '.join(held)})"
    if not force:
        raise ValueError(f"--out {str(out)!r} already holds {state}; pass --force to overwrite it or choose "
                         "another --out")
    for kind in KINDS:
        run = out / kind
        if run.exists():
            if not run.is_dir() or (any(run.iterdir()) and not (run / ckpt.CONFIG).is_file()):
                raise ValueError(f"--force: {str(run)!r} is not a dgm run directory; not removing it")
            shutil.rmtree(run)
    for name in (SUMMARY, REPORT):
        (out / name).unlink(missing_ok=True)


def train(kind: str, data, out: Path, *, minutes: float, steps: int | None, tiny: bool, seed: int,
          progress: bool):
    """Train the recipe's ``kind`` on ``data`` into ``out`` for at most ``minutes`` (and ``steps``)."""
    from dgm.models import build_model
    from dgm.training.config import TrainConfig, merge_settings
    from dgm.training.loop import fit
    from dgm.training.recipes import recipe

    model_cfg, train_cfg = recipe(kind, data.scaling)
    if tiny:
        model_cfg = merge_settings(model_cfg, TINY_MODELS[kind])
        train_cfg |= TINY_TRAIN
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


def run_demo(out, *, force: bool = False, minutes: float = MINUTES, steps: int | None = None, tiny: bool = False,
             seed: int = 0, n_eval: int | None = None, n_report: int | None = None, progress: bool = True) -> dict:
    """Train, evaluate and report into ``out``; returns the summary (also written to ``out/summary.json``).

    ``force``: replace a demo already in ``out`` (else that is a ValueError). ``minutes``: the training
    budget, a fifth for the VAE and the rest for the DDPM. ``steps`` caps the training steps of both models.
    ``tiny`` swaps in tiny networks and ``TINY_SAMPLES`` samples (a demo of seconds, for tests).
    ``n_eval``: samples behind the summary's quality metrics (default ``N_EVAL_SAMPLES``); ``n_report``:
    samples per point of the report's NFE sweep (default ``N_REPORT_SAMPLES``). ``progress``: progress bars.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < float("inf"):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    vae_minutes, ddpm_minutes = minutes / 5, 4 * minutes / 5
    n_eval = n_eval or (TINY_SAMPLES if tiny else N_EVAL_SAMPLES)
    n_report = n_report or (TINY_SAMPLES if tiny else N_REPORT_SAMPLES)
    from dgm.data.spec import load_run_data
    from dgm.training.recipes import default_threads

    t0 = time.monotonic()
    out = Path(out)
    check_out(out, force=force)
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
    atomic_write_bytes(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    print(f"dgm demo: done in {seconds['total'] / 60:.1f} min; report: {report}", file=sys.stderr)
    print(report)
    return summary
