"""What a guide for autoguidance costs a training step of the 28x28 recipe, measured in one process.

    .venv/bin/python benchmarks/guide_cost.py [--threads 2] [--repeats 12] [--iters 10]

Two models of the recipe's config (``DDPM_IMAGE``), one with its guide (``guide_step`` 500) and one without,
each with its EMA copy and AdamW, on the same batch of 64 random 28x28 images. A step is the training loop's
(``dgm.training.loop``): ``model.train()``, ``begin_step``, ``model.loss`` under the recipe's autocast (bfloat16
where ``resolve_precision("auto")`` picks it), backward, gradient clipping and ``loss.item()``, AdamW,
``ema_update``; each phase is timed. The two models run in turns of ``--iters`` steps, the first of them
alternating, so both see the same minute of a shared machine: separate ``dgm train`` runs of a few minutes differ
by 10% or more from one to the next on these 2 cores, which hides a cost of a few percent. Steps run from 0 past
the guide's step 500 unless ``--repeats x --iters`` is below it; ``--guide-step`` moves it. Reports milliseconds
per step, mean over all timed steps, by phase.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from dgm.models import build_model
from dgm.models.ddpm import DDPM
from dgm.training.loop import ema_update
from dgm.training.recipes import DDPM_IMAGE, resolve_precision

PHASES = ("train()", "begin_step", "loss", "backward", "clip", "AdamW", "ema_update")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=12, help="turns of each model")
    p.add_argument("--iters", type=int, default=10, help="steps per turn")
    p.add_argument("--guide-step", type=int, default=DDPM_IMAGE["model"]["guide_step"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.guide_step < 1:
        raise SystemExit(f"--guide-step {args.guide_step}: must be >= 1 (the model without a guide is the other row)")
    bf16 = resolve_precision(DDPM_IMAGE["train"]["mixed_precision"], "cpu") == "bf16"  # the recipe's, on this CPU
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    rows = {}
    for name, guide_step in ((f"with a guide (guide_step {args.guide_step})", args.guide_step), ("without", None)):
        torch.manual_seed(0)
        model = build_model(DDPM.complete_config({**DDPM_IMAGE["model"], "guide_step": guide_step}, [1, 28, 28],
                                                 256))
        ema = copy.deepcopy(model).eval()
        rows[name] = (model, ema, torch.optim.AdamW(model.parameters(), lr=1e-4), [0])
    times = {name: {phase: [] for phase in PHASES} for name in rows}

    def step(name: str, record: bool) -> None:
        model, ema, opt, count = rows[name]
        k = count[0]
        t = [time.perf_counter()]
        model.train()
        t.append(time.perf_counter())
        model.begin_step(k, x, ema)
        t.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(x, generator=torch.Generator().manual_seed(k))[0]
        loss = loss.float()
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        loss.item()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        ema_update(ema, model, min(0.9995, (1 + k) / (10 + k)))
        t.append(time.perf_counter())
        count[0] += 1
        if record:
            for phase, a, b in zip(PHASES, t[:-1], t[1:], strict=True):
                times[name][phase].append(b - a)

    names = list(rows)
    for name in names:  # untimed warm-up
        for _ in range(2):
            step(name, record=False)
    load0 = os.getloadavg()
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(args.iters):
                step(name, record=True)
    load1 = os.getloadavg()
    taken = {name: bool(rows[name][0].has_guide) for name in names}
    print(f"threads {args.threads}, {args.repeats} turns x {args.iters} steps per model, batch 64, "
          f"{'bfloat16 autocast' if bf16 else 'float32 (the recipe resolves to no autocast here)'}; "
          f"load average {load0[0]:.2f} -> {load1[0]:.2f}; torch {torch.__version__}; guide taken by the end: "
          f"{taken[names[0]]}\n")
    print("| model | ms per step | " + " | ".join(PHASES) + " |\n|---|---|" + "---|" * len(PHASES))
    totals = {}
    for name in names:
        means = [1000 * statistics.mean(times[name][phase]) for phase in PHASES]
        totals[name] = sum(means)
        print(f"| {name} | {totals[name]:.1f} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    print(f"\nwith / without: {totals[names[0]] / totals[names[1]]:.3f}")


if __name__ == "__main__":
    main()
