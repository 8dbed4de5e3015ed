"""Peak memory of ``dgm eval`` on the digit and MNIST recipes, on a synthetic 60,000-image array and on the
10,000 MNIST test images: issue 14's bounded-memory promise (target: under 2 GiB). Run by hand, not a test:

    .venv/bin/python benchmarks/eval_memory.py                   # everything (20 minutes on 2 busy cores)
    .venv/bin/python benchmarks/eval_memory.py --keep /tmp/evalmem --cases digits-ddpm-60k,calls

Set-up (not measured): the recipes' DDPMs and VAEs (``dgm train KIND --data digits`` and ``--data`` the MNIST
test images: the recipes' networks and L = 1000 levels, trained 2 steps, since the weights do not change the
memory), a synthetic array of 60,000 uint8 images of each size (8x8 for the digit runs, 28x28 for the MNIST
runs) and ``shared/data/mnist/t10k-images-idx3-ubyte.gz``. Each measurement runs as its own process and its
peak resident set size is the kernel's ``ru_maxrss`` of that child (``os.wait4``), as ``/usr/bin/time -v``
reports it.

Commands: ``dgm eval RUN --data DATA --max-examples 4`` with the sample-quality metrics of 1,000 samples
against EVERY image of DATA (all 60,000 or 10,000: the part whose memory grows with the data). The bound is
taken on 4 examples only: it runs 1,000 levels per example (hours on a CPU for them all), and its memory does
not grow with the number of examples, only its time. ``calls`` then measures, each in a fresh process, one
network call of the size that ``dgm eval`` makes: a chunk of the bound's levels (``dgm.core.bound.vlb``: 2048
rows), a sampling chunk and one drift-and-divergence evaluation of the probability-flow ODE (its batch), so
that the ODE's memory is measured at the batch a full evaluation uses without solving it (minutes per solve).
Prints a Markdown table and one JSON line; exits 1 if a ``dgm eval`` command reaches 2 GiB (the calls are
diagnostics: two of them show the sizes used before, or still used by the bound).

Measured (this script, 2 busy cores; peak RSS in MiB): digits DDPM and VAE on 60,000 images 768 and 648;
MNIST VAE on the 10,000 images 1,022; MNIST DDPM 3,312 (60,000) and 3,292 (10,000): the bound's chunk of
2,048 rows of 28x28 images through the UNet (``dgm.core.bound.vlb``'s ``max_batch``) alone takes 3,104, and
167 rows (2**17 numbers) 635; with ``vlb`` patched by hand to 167 rows (``functools.partial(vlb,
max_batch=167)`` in ``dgm.models.ddpm``), the MNIST 10,000 command with all six metrics peaked at 1,297. One
metric and its floor against 60,000 digit images: precision and recall 534, MMD 661 (their distance blocks are
at most ``dgm.evaluation.distances.CHUNK_BYTES``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DGM = [sys.executable, "-m", "dgm.cli"]
ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
GIB = 1 << 30
METRICS = "fd,kid,precision,recall,sw,mmd"
METRICS_60K = "fd,kid,precision,recall,sw"  # MMD too on the 10,000 MNIST images: on 60,000 it takes 6 minutes


def peak(cmd: list[str]) -> tuple[int, float, str]:
    """(peak RSS in bytes, seconds, stdout) of ``cmd`` run as a child process; SystemExit if it fails."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, tail = out.read(), err.read()[-800:]
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {tail}")
    return usage.ru_maxrss * 1024, time.monotonic() - t0, stdout  # Linux reports kilobytes


def prepare(work: Path) -> dict[str, Path]:
    """Train the recipe runs (2 steps each) and write the synthetic arrays, unless already there."""
    paths = {"digits-ddpm": work / "digits-ddpm", "digits-vae": work / "digits-vae", "mnist-ddpm": work / "mnist-ddpm",
             "mnist-vae": work / "mnist-vae", "synthetic8": work / "synthetic8.npy",
             "synthetic28": work / "synthetic28.npy"}
    for name, data in (("digits", "digits"), ("mnist", str(MNIST))):
        for kind in ("ddpm", "vae"):
            run = paths[f"{name}-{kind}"]
            if not (run / "model.safetensors").exists():
                subprocess.run([*DGM, "train", kind, "--data", data, "--out", str(run), "--steps", "2",
                                "--no-progress"], check=True)
    rng = np.random.default_rng(0)
    for side in (8, 28):
        path = paths[f"synthetic{side}"]
        if not path.exists():  # gray levels like the data: 17 levels for the digits, 256 for MNIST
            top = 17 if side == 8 else 256
            np.save(path, rng.integers(0, top, size=(60_000, 1, side, side), dtype=np.int64).astype(np.uint8))
    return paths


CALL = """
import math, sys, torch
from pathlib import Path
from dgm.evaluation.likelihood import ODE_BATCH, ODE_NUMBERS, SAMPLE_CHUNK, SAMPLE_NUMBERS, examples_per_call
from dgm.evaluation.ode import _eps_and_divergence
from dgm.runs.checkpoint import load_model
what, rows = sys.argv[2], sys.argv[3]
METRIC_NAMES = ("fd", "kid", "precision", "recall", "sw", "mmd")
model, _ = load_model(Path(sys.argv[1]))
D = model.config()["data_shape"]
budget, cap = {"ode": (ODE_NUMBERS, ODE_BATCH), "sample": (SAMPLE_NUMBERS, SAMPLE_CHUNK)}.get(what, (0, 0))
n = int(rows) if rows.isdigit() else examples_per_call(budget, math.prod(D), cap)
g = torch.Generator().manual_seed(0)
x = torch.rand(n, *D, generator=g) * 2 - 1
if what in METRIC_NAMES:  # one metric and its floor, against 60,000 digit-like images
    from dgm.evaluation.metrics import quality_metrics
    real = torch.randint(0, 17, (60_000, 1, 8, 8), generator=g).float() / 8 - 1
    quality_metrics(real, real[:1000].flip(0), kind="image", names=[what], generator=g)
elif what == "bound":
    with torch.no_grad():
        model.denoiser(x, torch.full((n,), 500))
elif what == "sample":
    model.sample(n, generator=g, sampler="ddim", steps=2)
else:
    _eps_and_divergence(model.denoiser, x, torch.full((n,), 500.0), torch.randn(1, *x.shape, generator=g), None)
print(n)
"""


def cases(paths: dict[str, Path], max_examples: int) -> dict[str, list[str]]:
    """name -> the command line of each measured case."""
    def evaluate(run: str, data: Path, metrics: str) -> list[str]:
        sampling = ["--n-samples", "1000"] + (["--sampler", "ddim", "--steps", "10"] if "ddpm" in run else [])
        return [*DGM, "eval", str(paths[run]), "--data", str(data), "--max-examples", str(max_examples),
                "--metrics", metrics, *sampling]

    def call(run: str, what: str, rows: str = "auto") -> list[str]:
        return [sys.executable, "-c", CALL, str(paths[run]), what, rows]

    return {
        "import dgm (floor)": [sys.executable, "-c", "import dgm, torch"],
        "digits-ddpm-60k": evaluate("digits-ddpm", paths["synthetic8"], METRICS_60K),
        "digits-vae-60k": evaluate("digits-vae", paths["synthetic8"], METRICS_60K),
        "mnist-ddpm-60k": evaluate("mnist-ddpm", paths["synthetic28"], METRICS_60K),
        "mnist-ddpm-10k": evaluate("mnist-ddpm", MNIST, METRICS),
        "mnist-vae-10k": evaluate("mnist-vae", MNIST, METRICS),
        "call: digits bound chunk (2048 rows)": call("digits-ddpm", "bound", "2048"),
        "call: digits sampling chunk": call("digits-ddpm", "sample"),
        "call: digits ODE batch": call("digits-ddpm", "ode"),
        "call: MNIST bound chunk (2048 rows, vlb today)": call("mnist-ddpm", "bound", "2048"),
        "call: MNIST bound chunk (167 rows = 2**17 numbers)": call("mnist-ddpm", "bound", "167"),
        "call: MNIST sampling chunk": call("mnist-ddpm", "sample"),
        "call: MNIST ODE batch": call("mnist-ddpm", "ode"),
        "call: MNIST ODE batch before (1000)": call("mnist-ddpm", "ode", "1000"),
        "call: precision and recall on 60000 digits": call("digits-ddpm", "precision", "60000"),
        "call: mmd on 60000 digits": call("digits-ddpm", "mmd", "60000"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", help="work in this folder (default: a temporary one)")
    p.add_argument("--max-examples", type=int, default=4, help="examples of the bound (default 4)")
    p.add_argument("--cases", help="comma-separated names of the cases to run, or calls (default: all)")
    args = p.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="dgm-eval-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    table = cases(prepare(work), args.max_examples)
    chosen = args.cases.split(",") if args.cases else list(table)
    chosen = [name for c in chosen for name in ([n for n in table if n.startswith("call:")] if c == "calls" else [c])]
    rows = []
    for name in chosen:
        rss, seconds, stdout = peak(table[name])
        result = json.loads(stdout) if stdout.strip().startswith("{") else {}
        rows.append({"case": name, "examples": result.get("n_reference") or stdout.strip() or None,
                     "peak_rss_mib": round(rss / 2**20),
                     "seconds": round(seconds, 1), "under_2_gib": rss < 2 * GIB})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| case | reference half of --data (metrics), or rows of the call | peak RSS (MiB) | seconds |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['examples'] or ''} | {r['peak_rss_mib']} | {r['seconds']} |")
    print(json.dumps({"rows": rows, "work": str(work), "max_examples": args.max_examples, "load": os.getloadavg()}))
    return 0 if all(r["under_2_gib"] for r in rows if not r["case"].startswith("call:")) else 1


if __name__ == "__main__":
    sys.exit(main())
