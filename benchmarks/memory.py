"""Peak memory (the maximum resident set size of the process, from ``os.wait4``) of ``dgm sample`` with many
samples and of ``dgm eval`` on a large array: the bounded-memory promises of issue 14 (target: < 2 GiB).

    .venv/bin/python benchmarks/memory.py                       # 200,000 samples; 60,000 images
    .venv/bin/python benchmarks/memory.py --samples 1000000 --images 60000 --keep /tmp/mem

Set-up (not measured): a small digits DDPM (the demo's tiny UNet, L = 20 levels, 20 training steps) and a
synthetic array of 60,000 digit-like images (uint8 integers 0..16, shape (N, 1, 8, 8), the digits' layout). Then
each command runs as its own process, and its peak RSS is read from the kernel's rusage of that child:

- ``python -c "import dgm"``: the floor (the interpreter, torch and dgm imported);
- ``dgm sample RUN -n N --out s.npy --sampler ddim --steps 5``: N samples streamed to a .npy (N x 512 bytes);
- ``dgm eval RUN --data synthetic.npy``: the NLL bound on every one of the images.

Prints a Markdown table (command, samples or images, output size, peak RSS, seconds) and one JSON line.
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
TINY = """[model]
levels = 20
[model.net]
base_channels = 8
channel_mults = [1]
attn_resolutions = []
groups = 4
head_channels = 8
[train]
batch_size = 64
log_every = 5
warmup_steps = 2
"""
GIB = 1 << 30


def peak(cmd: list[str]) -> tuple[int, float, str]:
    """(peak RSS in bytes, seconds, stderr tail) of ``cmd`` run as a child process."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-600:]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {tail}")
    return usage.ru_maxrss * 1024, time.monotonic() - t0, tail  # Linux reports kilobytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--images", type=int, default=60_000)
    p.add_argument("--keep", help="work in this folder (default: a temporary one)")
    args = p.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="dgm-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    run, settings, array = work / "digits", work / "tiny.toml", work / "synthetic.npy"
    settings.write_text(TINY)
    if not (run / "model.safetensors").exists():
        subprocess.run([*DGM, "train", "ddpm", "--data", "digits", "--out", str(run), "--config", str(settings),
                        "--steps", "20", "--no-progress"], check=True)
    rng = np.random.default_rng(0)
    np.save(array, rng.integers(0, 17, size=(args.images, 1, 8, 8)).astype(np.uint8))  # images are uint8 files
    out = work / "samples.npy"
    rows = []
    for name, cmd, target in (
        ("import dgm (floor)", [sys.executable, "-c", "import dgm"], None),
        (f"dgm sample -n {args.samples:,}", [*DGM, "sample", str(run), "-n", str(args.samples), "--out", str(out),
                                            "--sampler", "ddim", "--steps", "5"], out),
        (f"dgm eval --data ({args.images:,} images)", [*DGM, "eval", str(run), "--data", str(array)], array),
    ):
        rss, seconds, _ = peak(cmd)
        nbytes = target.stat().st_size if target else 0
        rows.append({"command": name, "file_mib": round(nbytes / 2**20, 1), "peak_rss_mib": round(rss / 2**20),
                     "seconds": round(seconds, 1), "under_2_gib": rss < 2 * GIB})
    print("| command | file (MiB) | peak RSS (MiB) | seconds |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['command']}` | {r['file_mib'] or ''} | {r['peak_rss_mib']} | {r['seconds']} |")
    print(json.dumps({"rows": rows, "work": str(work), "load": os.getloadavg()}))
    return 0 if all(r["under_2_gib"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
