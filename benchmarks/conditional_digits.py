"""Issue 12 on the 8x8 digits: class-conditional sampling with classifier-free guidance, the null class against
an unconditional model, and inpainting by every method of ``dgm.sample_inverse``.

    .venv/bin/python benchmarks/conditional_digits.py --work /tmp/cd --png docs/conditional-digits.png
    .venv/bin/python benchmarks/conditional_digits.py --cond-run RUN_C --uncond-run RUN_U   # no training
    .venv/bin/python benchmarks/conditional_digits.py --quick --work /tmp/cdq                # smoke run

1. Trains (unless runs are given) ``dgm train ddpm --data digits [--conditional] --minutes M --heldout-last 360``
   one after the other with the default digits recipe (its 3,000 steps or M minutes, whichever comes first).
   ``--heldout-last 360`` holds out the same 360 digits as the shipped digit classifier (it trained on the first
   1,437 of scikit-learn's 1,797), so neither model nor classifier has seen the held-out digits.
2. Guidance sweep on the conditional run (``dgm.evaluation.conditional.per_class_metrics``): for each w,
   ``--per-class`` samples of every class by DPM-Solver++(2M) with 20 steps (each step one batched call of the
   guided denoiser (1 + w) eps(x, c) - w eps(x, null), Ho & Salimans 2022) -> the classifier's accuracy (the
   fraction labelled with the requested class), the confident rate (top probability >= 0.9) and FD in the
   shipped digit feature space against the held-out digits; the floor is FD of as many training digits.
3. Parity: FD of ``--parity-n`` samples of the conditional run's null class (unconditional) and of the
   unconditional run, over 3 sampling seeds each; the same sampler.
4. Inpainting on the unconditional run: ``--inpaint-n`` held-out digits, balanced over the classes, each with its
   left, right, top or bottom half unknown (cycled, so each half is unknown in a quarter of the digits), y = the
   known half with noise std ``dgm.runs.inpainting.DEFAULT_NOISE``; per method (settings in ``METHODS``) the
   classifier's accuracy on the completions against the true labels and the mean squared error on the unknown
   (and the known) pixels in model space, beside two references: the true digits and the training mean filled in.
   A method with non-finite completions is re-run with a traced denoiser that prints max |x_i| per level.
   For PiGDM it also estimates the first step's gain on the residual (``pigdm_gain``).
Prints Markdown tables (also written to WORK/results.md) and draws the guidance grid PNG (rows = classes,
columns = w; one draw per cell, the same starting noise along a row).

Longer than 300 lines because it holds the four measurements of the issue and their tables in one script run
by hand, like the other benchmarks.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from dgm.data.spec import load_run_data
from dgm.evaluation.conditional import CONFIDENCE, class_probabilities, per_class_metrics
from dgm.evaluation.distances import frechet_distance
from dgm.evaluation.features import classify, features
from dgm.runs.checkpoint import WEIGHTS, load_model, load_weights
from dgm.runs.inpainting import DEFAULT_NOISE, inpaint
from dgm.runs.samples import grid_png
from dgm.samplers.grid import level_grid
from dgm.samplers.inverse_replacement import repaint_nfe

DGM = [sys.executable, "-m", "dgm.cli"]
HELDOUT_LAST = 360  # the shipped digits8 classifier's held-out digits (feature_net.json)
SAMPLER, STEPS = "dpm++2m", 20
GUIDANCE = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
PARITY_SEEDS = (0, 1, 2)
HALVES = ("left", "right", "top", "bottom")  # the unknown half
# Inpainting settings (the defaults of dgm.samplers.inverse are 1000 levels for replace and dps, 2,410 NFE for
# RePaint and 1,600 for SMC: too slow on 2 shared cores); method -> (steps, options)
METHODS = {"replace": (250, {}), "repaint": (100, {"jump": 10, "resamplings": 5}), "dps": (250, {"step": 1.0}),
           "pigdm": (100, {"eta": 1.0}), "smc": (100, {"particles": 8})}
QUICK_METHODS = {"replace": (10, {}), "repaint": (10, {"jump": 2, "resamplings": 2}), "dps": (10, {"step": 1.0}),
                 "pigdm": (10, {"eta": 1.0}), "smc": (10, {"particles": 2})}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def train(out: Path, *, conditional: bool, minutes: float, steps: int | None) -> dict:
    """``dgm train ddpm --data digits`` into ``out``; the wall time, the steps reached and the load averages."""
    if out.exists():
        raise SystemExit(f"{out} exists: pass it as --cond-run/--uncond-run, or remove it to retrain")
    cmd = ["dgm", "train", "ddpm", "--data", "digits", "--out", str(out), "--heldout-last", str(HELDOUT_LAST),
           "--no-progress"] + (["--conditional"] if conditional else [])
    cmd += ["--steps", str(steps)] if steps else ["--minutes", f"{minutes:g}"]
    before, t0 = load_average(), time.perf_counter()
    subprocess.run(DGM + cmd[1:], check=True)
    wall = time.perf_counter() - t0
    return {"command": " ".join(cmd), "wall_s": wall, "load_before": before, "load_after": load_average()}


def run_step(run: Path) -> int:
    return int(load_weights(run / WEIGHTS, "ema")[1]["step"])


def fd_to(held_f: torch.Tensor, x: torch.Tensor) -> float:
    return frechet_distance(held_f, features(x))


def guidance_sweep(model, data, n_per_class: int, seed: int) -> list[dict]:
    rows = []
    for w in GUIDANCE:
        t0 = time.perf_counter()
        r = per_class_metrics(model, data, n_per_class=n_per_class, guidance=w, seed=seed, sampler=SAMPLER,
                              steps=STEPS)
        rows.append({"w": w, "seconds": time.perf_counter() - t0, **r})
        o = r["per_class_overall"]
        print(f"  w = {w:g}: accuracy {o['accuracy']:.3f}, confident {o['confident']:.3f}, FD {o['fd']:.3f} "
              f"(floor {o['fd_floor']:.3f}), {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def guidance_grid(model, num_classes: int, seed: int) -> bytes:
    """Rows = classes, columns = w; in a row every cell starts from the same x_L (DPM-Solver++ is deterministic
    given x_L), so a row shows what the guidance weight alone changes."""
    cells = []
    for c in range(num_classes):
        for w in GUIDANCE:
            g = torch.Generator().manual_seed(seed + c)
            cells.append(model.sample(1, generator=g, sampler=SAMPLER, steps=STEPS, cond=c, guidance=w))
    return grid_png(torch.cat(cells), ncol=len(GUIDANCE), zoom=6)


def parity(cond_model, uncond_model, held_f: torch.Tensor, train: torch.Tensor, n: int) -> dict:
    """FD of n unconditional samples (the conditional run's null class; the unconditional run) per seed, and
    the floor: n training digits (drawn without replacement, per seed) against the same held-out digits."""
    out = {"cond (null class)": [], "uncond": [], "floor (training digits)": [], "confident": {}}
    for seed in PARITY_SEEDS:
        for name, model in (("cond (null class)", cond_model), ("uncond", uncond_model)):
            x = model.sample(n, generator=torch.Generator().manual_seed(seed), sampler=SAMPLER, steps=STEPS)
            out[name].append(fd_to(held_f, x))
            conf = (class_probabilities(x).max(1).values >= CONFIDENCE).double().mean().item()
            out["confident"].setdefault(name, []).append(conf)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        out["floor (training digits)"].append(fd_to(held_f, train[pick]))
        print(f"  seed {seed}: " + ", ".join(f"{k} FD {v[-1]:.3f}" for k, v in out.items() if k != "confident"),
              flush=True)
    return out


def inpainting_set(data, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n held-out digits, n // 10 per class (the first of each class), and the unknown half of each: the
    k-th digit of class c gets HALVES[(c + k) % 4], so every class sees every half."""
    idx, halves = [], []
    for c in range(10):
        members = (data.heldout_labels == c).nonzero().squeeze(1)[: n // 10]
        idx += members.tolist()
        halves += [HALVES[(c + k) % 4] for k in range(len(members))]
    idx_t = torch.tensor(idx)
    return data.heldout[idx_t], data.heldout_labels[idx_t], halves


def known_mask(half: str, shape) -> torch.Tensor:
    """Bool (C, H, W), True = known: everything but the named half."""
    m = torch.ones(shape, dtype=torch.bool)
    h, w = shape[-2] // 2, shape[-1] // 2
    unknown = {"left": (..., slice(None), slice(0, w)), "right": (..., slice(None), slice(w, None)),
               "top": (..., slice(0, h), slice(None)), "bottom": (..., slice(h, None), slice(None))}[half]
    m[unknown] = False
    return m


def scores(x: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, halves: list[str]) -> dict:
    """Accuracy (also per unknown half) and MSEs over the rows of x that are finite; ``masks`` True = known."""
    finite = torch.isfinite(x.reshape(len(x), -1)).all(1)
    hit = torch.zeros(len(x), dtype=torch.bool)
    if finite.any():
        hit[finite] = classify(x[finite]) == labels[finite]
    err = (x - truth)[finite] ** 2
    mean = lambda v: v.double().mean().item() if v.numel() else math.nan  # noqa: E731
    by_half = {h: mean(hit[finite & torch.tensor([hh == h for hh in halves])]) for h in HALVES}
    return {"accuracy": mean(hit[finite]), "by_half": by_half, "mse_unknown": mean(err[~masks[finite]]),
            "mse_known": mean(err[masks[finite]]), "nonfinite": int((~finite).sum())}


def traced_denoiser(eps_fn, s, trace: list):
    """eps_fn recording (level, max |x_i|, max |x0_hat|) of every call, to see where a method diverges."""
    def fn(x, i, cond=None):
        eps = eps_fn(x, i) if cond is None else eps_fn(x, i, cond)
        lvl = int(i.reshape(-1)[0])
        x0 = (x - s.sigma_bar[lvl].item() * eps) / s.alpha_bar[lvl].item()
        trace.append((lvl, x.detach().abs().max().item(), x0.detach().abs().max().item()))
        return eps
    return fn


def inpainting(model, data, n: int, methods: dict, seed: int) -> tuple[list[dict], list[str]]:
    x, labels, halves = inpainting_set(data, n)
    masks = torch.stack([known_mask(h, x.shape[1:]) for h in halves])
    mean = data.train.mean(0, keepdim=True)
    rows = [{"method": "truth (the held-out digits)", **scores(x, x, labels, masks, halves)},
            {"method": "training mean filled in", **scores(torch.where(masks, x, mean), x, labels, masks, halves)}]
    notes = []
    for method, (steps, opts) in methods.items():
        t0, out, stats = time.perf_counter(), torch.empty_like(x), None
        for half in HALVES:
            sel = torch.tensor([h == half for h in halves])
            if sel.any():
                comp, stats = inpaint(model, x[sel], known_mask(half, x.shape[1:]), method=method, steps=steps,
                                      seed=seed, **opts)
                out[sel] = comp[:, 0]
        row = {"method": method, "steps": steps, "options": opts, "nfe": stats["nfe"], "vjp": stats["vjp"],
               "seconds": time.perf_counter() - t0, **scores(out, x, labels, masks, halves)}
        rows.append(row)
        print(f"  {method}: accuracy {row['accuracy']:.3f}, MSE unknown {row['mse_unknown']:.4f}, non-finite "
              f"{row['nonfinite']}/{len(x)}, NFE {row['nfe']}, {row['seconds']:.0f} s", flush=True)
        if row["nonfinite"]:
            notes.append(diagnose(model, data, x, halves, out, method, steps, opts, seed))
    return rows, notes


def diagnose(model, data, x, halves, out, method, steps, opts, seed) -> str:
    """Re-run the first half-group with a non-finite completion, tracing max |x_i| and max |x0_hat| per level."""
    bad = ~torch.isfinite(out.reshape(len(out), -1)).all(1)
    half = halves[int(bad.nonzero()[0, 0])]
    sel = torch.tensor([h == half for h in halves])
    trace: list = []
    traced = SimpleNamespace(kind=model.kind, schedule=model.schedule, eval=model.eval,
                             denoiser=traced_denoiser(model.denoiser, model.schedule, trace))
    inpaint(traced, x[sel], known_mask(half, x.shape[1:]), method=method, steps=steps, seed=seed, **opts)
    first = next((k for k, t in enumerate(trace) if not math.isfinite(t[1])), len(trace))
    shown = trace[: min(first + 1, 8)]
    text = (f"{method}, unknown half {half}: max |x_i| and max |x0_hat| by level: "
            + "; ".join(f"{lvl}: {a:.3g}, {b:.3g}" for lvl, a, b in shown)
            + (f"; the input is non-finite at call {first + 1} of {len(trace)}" if first < len(trace) else ""))
    if method == "pigdm":
        text += "\n\n" + pigdm_gain(model, data, known_mask(half, x.shape[1:]), steps, seed)
    print("  " + text, flush=True)
    return text


def pigdm_gain(model, data, mask: torch.Tensor, steps: int, seed: int, n: int = 8) -> str:
    """PiGDM's first step i -> j as a map of the residual r = y - A x0_hat (inverse_guidance.sample_pigdm): it
    moves x_i by c g, g = J^T A^T r / (sigma_bar_i^2 + sigma_y^2), J = d x0_hat / d x_i, c = (sigma_bar_i^2 -
    sigma_bar_j^2) / (alpha_bar_i alpha_bar_j), so to first order r shrinks only while the gain
    c ||A J||_2^2 / (sigma_bar_i^2 + sigma_y^2) < 2. ||A J||_2 at x_L ~ N(0, I) by 20 rounds of power iteration
    (one VJP and one JVP each), median over n draws; beside it the exact denoiser's alpha_bar_i ||A Cov[x0] A^T||_2
    (J = alpha_bar_i Cov[x0 | x_i] / sigma_bar_i^2, and Cov[x0 | x_L] ~ Cov[x0] at the top level)."""
    s = model.schedule
    i, j = level_grid(s, steps, "uniform")[:2]
    ab, abj = float(s.alpha_bar[i]), float(s.alpha_bar[j])
    sb, sbj = float(s.sigma_bar[i]), float(s.sigma_bar[j])
    c = (sb**2 - sbj**2) / (ab * abj)
    level = torch.full((n,), i)
    f = lambda z: ((z - sb * model.denoiser(z, level)) / ab)[:, mask]  # noqa: E731  A x0_hat(z)
    g = torch.Generator().manual_seed(seed)
    x, v = torch.randn(n, *mask.shape, generator=g), torch.randn(n, int(mask.sum()), generator=g)
    v = v / v.norm(dim=1, keepdim=True)
    for _ in range(20):
        with torch.enable_grad():
            xr = x.clone().requires_grad_(True)
            u = torch.autograd.grad(f(xr), xr, v)[0]  # J^T A^T v
        w = torch.func.jvp(f, (x,), (u,))[1]  # A J J^T A^T v
        lam = (w * v).sum(1)
        v = w / w.norm(dim=1, keepdim=True)
    norm = lam.clamp(min=0).sqrt().median().item()
    known = data.train[:, mask].double()
    exact = ab * torch.linalg.eigvalsh(torch.cov(known.T)).max().item()
    gain = lambda a: c * a**2 / (sb**2 + DEFAULT_NOISE**2)  # noqa: E731
    return (f"pigdm's first step {i} -> {j} (alpha_bar {ab:.4f}, c = {c:.3f}): ||A J||_2 = {norm:.3g} (exact "
            f"denoiser ~ {exact:.2g}), first-order gain on the residual {gain(norm):.3g} (exact ~ {gain(exact):.2g});"
            " stable only below 2")


def settings(method: str, steps: int, opts: dict) -> str:
    parts = [f"{steps} steps"] + [f"{k} {v:g}" for k, v in opts.items()]
    if method == "repaint":
        parts.append(f"= {repaint_nfe(steps, opts['jump'], opts['resamplings'])} NFE")
    return ", ".join(parts)


def f3(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def f4(v: float) -> str:
    """An MSE: 4 decimals, or 3 significant digits when it is huge (a diverging method)."""
    return "-" if not math.isfinite(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.3g}"


def md_training(r: dict) -> list[str]:
    out = [f"Sampler for every generated digit: {SAMPLER}, {STEPS} steps (guided: one batched call of the "
           "conditional and null rows per step). Classifier: the shipped digits8 net; FD in its feature space.", "",
           "| run | command | steps reached | wall (s) | load average before / after |", "|---" * 5 + "|"]
    for name, t in r["training"].items():
        wall = f"{t['wall_s']:.0f}" if "wall_s" in t else "-"
        out.append(f"| {name} | `{t['command']}` | {t['steps']} | {wall} | "
                   f"{t.get('load_before', '-')} / {t.get('load_after', '-')} |")
    return out + ["", f"Classifier accuracy on the {r['n_heldout']} held-out digits: **{r['heldout_accuracy']:.3f}** "
                  f"(confident {r['heldout_confident']:.3f})."]


def md_sweep(r: dict) -> list[str]:
    out = ["| w | accuracy | confident (p >= 0.9) | FD vs held-out | FD floor | seconds |", "|---" * 6 + "|"]
    for row in r["sweep"]:
        o = row["per_class_overall"]
        best = " **(best)**" if row["w"] == r["best_w"] else ""
        out.append(f"| {row['w']:g}{best} | {f3(o['accuracy'])} | {f3(o['confident'])} | {f3(o['fd'])} | "
                   f"{f3(o['fd_floor'])} | {row['seconds']:.0f} |")
    best = next(row for row in r["sweep"] if row["w"] == r["best_w"])
    out += ["", f"Per class at w = {r['best_w']:g} ({best['per_class_overall']['samples_per_class']} samples each):",
            "", "| class | accuracy | confident | classifier on held-out digits of the class |", "|---" * 4 + "|"]
    for name, c in best["per_class"].items():
        out.append(f"| {name} | {f3(c['accuracy'])} | {f3(c['confident'])} | {f3(c['accuracy_heldout'])} |")
    return out


def md_parity(r: dict) -> list[str]:
    p = r["parity"]
    out = [f"Unconditional parity: FD of {r['parity_n']} samples against the held-out digits, seeds "
           f"{', '.join(map(str, PARITY_SEEDS))}.", "",
           "| samples | FD per seed | mean | min..max | confident (mean) |", "|---" * 5 + "|"]
    for name in ("cond (null class)", "uncond", "floor (training digits)"):
        v = p[name]
        conf = f3(sum(p["confident"][name]) / len(v)) if name in p["confident"] else "-"
        out.append(f"| {name} | {', '.join(f'{x:.3f}' for x in v)} | {sum(v) / len(v):.3f} | "
                   f"{min(v):.3f}..{max(v):.3f} | {conf} |")
    return out + ["", f"Met (mean of the null class within the unconditional seeds' min..max): **{r['parity_met']}**."]


def md_inpainting(r: dict) -> list[str]:
    out = [f"Inpainting on the unconditional run: {r['inpaint_n']} held-out digits, unknown half cycled over "
           f"{', '.join(HALVES)}; y = known half, noise std {DEFAULT_NOISE}; MSE in model space ([-1, 1]).", "",
           "| method | settings | NFE (VJP) per digit | accuracy | MSE unknown | MSE known | non-finite | "
           + " | ".join(f"acc. {h}" for h in HALVES) + " | seconds |", "|---" * (8 + len(HALVES)) + "|"]
    for row in r["inpainting"]:
        halves = " | ".join(f3(row["by_half"][h]) for h in HALVES)
        if "steps" not in row:
            out.append(f"| {row['method']} | - | 0 | {f3(row['accuracy'])} | {f4(row['mse_unknown'])} | "
                       f"{f4(row['mse_known'])} | 0 | {halves} | - |")
            continue
        mark = " **(non-finite)**" if row["nonfinite"] else ""
        out.append(f"| {row['method']}{mark} | {settings(row['method'], row['steps'], row['options'])} | "
                   f"{row['nfe']} ({row['vjp']}) | {f3(row['accuracy'])} | {f4(row['mse_unknown'])} | "
                   f"{f4(row['mse_known'])} | {row['nonfinite']} | {halves} | {row['seconds']:.0f} |")
    return out + [f"\n{n}" for n in r["notes"]]


def markdown(r: dict) -> str:
    parts = [md_training(r)] + [fn(r) for key, fn in (("sweep", md_sweep), ("parity", md_parity),
                                                      ("inpainting", md_inpainting)) if key in r]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/dgm-conditional-digits"))
    p.add_argument("--cond-run", type=Path)
    p.add_argument("--uncond-run", type=Path)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--parity-n", type=int, default=1000)
    p.add_argument("--inpaint-n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", type=Path, help="the guidance grid (default WORK/conditional-digits.png)")
    p.add_argument("--parts", default="sweep,parity,inpaint", help="comma-separated: sweep, parity, inpaint")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated inpainting methods")
    p.add_argument("--quick", action="store_true", help="smoke run: 30 training steps, few samples, few levels")
    a = p.parse_args()
    parts = set(a.parts.split(","))
    if parts - {"sweep", "parity", "inpaint"}:
        raise SystemExit(f"--parts {a.parts!r}: choose from sweep, parity, inpaint")
    table = QUICK_METHODS if a.quick else METHODS
    if set(a.methods.split(",")) - set(table):
        raise SystemExit(f"--methods {a.methods!r}: choose from {', '.join(table)}")
    methods = {k: v for k, v in table.items() if k in a.methods.split(",")}
    if a.quick:
        a.per_class, a.parity_n, a.inpaint_n = 3, 40, 20
    torch.set_num_threads(1)
    a.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    runs, training = {}, {}
    for name, given, conditional in (("cond", a.cond_run, True), ("uncond", a.uncond_run, False)):
        runs[name] = given or a.work / name
        training[name] = {"command": f"(given: {given})"} if given else train(
            runs[name], conditional=conditional, minutes=a.minutes, steps=30 if a.quick else None)
        training[name]["steps"] = run_step(runs[name])
        print(f"{name}: {training[name]}", flush=True)
    cond_model, config = load_model(runs["cond"])
    uncond_model, _ = load_model(runs["uncond"])
    data = load_run_data(config["data"])
    t_measure, load_measure = time.perf_counter(), load_average()
    held_f = features(data.heldout)
    probs = class_probabilities(data.heldout)
    r = {"training": training, "n_heldout": len(data.heldout), "parity_n": a.parity_n, "inpaint_n": a.inpaint_n,
         "heldout_accuracy": (probs.argmax(1) == data.heldout_labels).double().mean().item(),
         "heldout_confident": (probs.max(1).values >= CONFIDENCE).double().mean().item()}
    print(f"classifier on the held-out digits: {r['heldout_accuracy']:.3f}", flush=True)
    with torch.no_grad():
        if "sweep" in parts:
            print("guidance sweep:", flush=True)
            r["sweep"] = guidance_sweep(cond_model, data, a.per_class, a.seed)
            key = lambda row: (row["per_class_overall"]["accuracy"], -row["per_class_overall"]["fd"])  # noqa: E731
            r["best_w"] = max(r["sweep"], key=key)["w"]
            png = a.png or a.work / "conditional-digits.png"
            png.write_bytes(guidance_grid(cond_model, cond_model.num_classes, a.seed))
            print(f"wrote {png}", flush=True)
        if "parity" in parts:
            print("parity:", flush=True)
            r["parity"] = parity(cond_model, uncond_model, held_f, data.train, a.parity_n)
            u = r["parity"]["uncond"]
            r["parity_met"] = min(u) <= sum(r["parity"]["cond (null class)"]) / len(u) <= max(u)
    if "inpaint" in parts:
        print("inpainting:", flush=True)
        r["inpainting"], r["notes"] = inpainting(uncond_model, data, a.inpaint_n, methods, a.seed)
    text = markdown(r) + (f"\nMeasurement: {time.perf_counter() - t_measure:.0f} s wall (whole script "
                          f"{time.perf_counter() - t_start:.0f} s); load average (1, 5, 15 min) at its start "
                          f"{load_measure}, at its end {load_average()}; 1 torch thread.\n")
    (a.work / "results.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
