"""MNIST time to quality: dgm's default recipe against diffusers' train_unconditional recipe, same 2 cores.

    .venv/bin/python benchmarks/mnist_time_to_quality.py --out DIR [--budgets 5 10 15] [--seeds 0 1 2]
        [--sides dgm diffusers ldm] [--dgm-config FILE.toml] [--label NAME] [--threads 2] [--bpd-examples 50]
    .venv/bin/python benchmarks/mnist_time_to_quality.py --out DIR --sides dgm --fixed-steps 300 --dgm-config F
        (a lever: dgm's recipe with the settings of F layered on it, judged after a fixed number of steps)
    .venv/bin/python benchmarks/mnist_time_to_quality.py --out DIR --judge RUN_DIR --dgm-samplers S:N ...
        (no training: a trained run's samples, judged by the same protocol, e.g. to compare samplers; and
        --judge-diffusers DIR/diffusers/ema_15min.pt [--diffusers-sde] the same for the peer's saved EMA weights)

Both sides train on the first 9,000 images of the MNIST t10k file and are judged on the last 1,000 (issue 13):

- **dgm**: ``dgm train ddpm --data <t10k images> --heldout-last 1000 --minutes B`` (the default recipe, no flags;
  ``--dgm-config`` layers a settings file on it, to measure a lever), then ``--resume --minutes (B' - B)`` for each
  next budget: checkpoints of one run, each segment timed by dgm itself (process start-up and evaluation are
  outside the budget). Samples: the EMA weights, ``dpm++2m`` at 20 steps (dgm's quadratic level grid), and in
  rows of their own the samplers of ``--dgm-samplers`` (e.g. ``ancestral:100:uniform``).
- **ldm** (``--sides ldm``): the same with ``dgm train ldm``: latent diffusion, dgm's conv VAE for the recipe's
  first steps, then a DDPM on its latents (``dgm.models.ldm``); sampled the same way (the latent DDPM's
  ``dpm++2m`` at 20 steps, then the decoder means; and, in rows of their own, with its default sampler, ancestral
  over all 1,000 levels, which costs about as much as the pixel DDPM's 20 steps).
- **diffusers**: ``UNet2DModel(sample_size=28, block_out_channels=(32, 64, 64), layers_per_block=1,
  down Down/Down/AttnDown, norm_num_groups=8, attention_head_dim=32)``, ``DDPMScheduler(1000)`` (linear),
  AdamW lr 1e-3 (weight decay 1e-6, 200 warm-up steps, then constant: a run cut by the clock has no length for a
  cosine), batch 64, gradient clipping at 1, ``EMAModel(decay=0.9999, use_ema_warmup=True, power=3/4)``; no
  horizontal flips (digits are not mirror-symmetric). Trained in this process; the clock stops while it is
  evaluated. Samples: the EMA weights, ``DPMSolverMultistepScheduler`` at 20 steps.

Metrics, in the feature space of the shipped MNIST net (``dgm.evaluation.features``): FD of 1,000 samples against
the 1,000 held-out images; the real-data baseline is FD of the first 1,000 training images against the same
held-out images, and the excess is FD minus it; precision/recall (k = 3) against the held-out features; the
classifier's confident rate (top probability >= 0.9). At the last budget over ``--seeds`` sampling seeds (mean,
min..max), at the others the first seed (``--all-seeds``: all).
Bits/dim at the last budget: dgm's variational bound (``dgm.evaluation.likelihood.evaluate_nll``, all 1,000
levels) on the first ``--bpd-examples`` held-out images, for both nets (the diffusers net is wrapped as a dgm
denoiser: its timestep t is level t + 1, and DDPMScheduler's linear betas are the variances of dgm's linear
schedule; its bound is Ho et al.'s discretized one, dgm's the dequantized one: both bound -log P of the 8-bit
images).

Writes DIR/results.json (every number), DIR/table.md, and DIR/<side>/ (the dgm run; diffusers weights).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DGM = str(Path(sys.executable).with_name("dgm"))
N_TRAIN, N_HELDOUT = 9000, 1000


def mnist_dir(arg: str | None) -> Path:
    d = Path(arg) if arg else ROOT.parent / "shared" / "data" / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"no MNIST t10k images in {str(d)!r} (--mnist DIR)")
    return d


def load_images(d: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(train (9000, 1, 28, 28), heldout (1000, 1, 28, 28)) in model space [-1, 1]."""
    from dgm.evaluation.features import training_data

    x_train, _, x_held, _ = training_data("mnist28", d)
    return x_train, x_held


# ------------------------------------------------------------------------------------------- metrics


class Judge:
    """The fixed parts of the protocol: held-out features, the real-data baseline, the classifier."""

    def __init__(self, x_train: torch.Tensor, x_held: torch.Tensor):
        from dgm.evaluation.distances import frechet_distance
        from dgm.evaluation.features import features

        self.held, self.x_held = features(x_held), x_held
        real = x_train[:N_HELDOUT]
        self.baseline = {"fd": frechet_distance(features(real), self.held), **self._others(real)}

    def _others(self, x: torch.Tensor) -> dict:
        from dgm.evaluation.distances import precision_recall
        from dgm.evaluation.features import features, load_feature_net

        p, r = precision_recall(self.held, features(x), k=3)
        net = load_feature_net(x.shape[1:])
        with torch.no_grad():
            prob = torch.cat([net(c).softmax(1) for c in x.float().split(500)])
        return {"precision": p, "recall": r, "confident": prob.max(1).values.ge(0.9).double().mean().item()}

    def __call__(self, x: torch.Tensor) -> dict:
        from dgm.evaluation.distances import frechet_distance
        from dgm.evaluation.features import features

        x = x.clamp(-1, 1).float()
        fd = frechet_distance(features(x), self.held)
        return {"fd": fd, "excess_fd": fd - self.baseline["fd"], **self._others(x)}


def spread(rows: list[dict]) -> dict:
    """{key: {"mean", "min", "max"}} over the seeds."""
    return {k: {"mean": sum(r[k] for r in rows) / len(rows), "min": min(r[k] for r in rows),
                "max": max(r[k] for r in rows)} for k in rows[0]}


def bits_per_dim(model, x_held: torch.Tensor, n: int) -> dict:
    from dgm.evaluation.likelihood import evaluate_nll

    r = evaluate_nll(model, x_held[:n], batch_size=50, generator=torch.Generator().manual_seed(0))
    return {"bits_per_dim": r["bits_per_dim"], "bits_per_dim_se": r["bits_per_dim_se"], "n": n}


# ------------------------------------------------------------------------------------------------ dgm


def dgm_side(args, data: Path, judge: Judge, out: Path, kind: str = "ddpm") -> list[dict]:
    """dgm's side: ``dgm train ddpm`` (side "dgm") or ``dgm train ldm`` (side "ldm") on the default recipe."""
    from dgm.runs.checkpoint import load_model

    side = "dgm" if kind == "ddpm" else kind
    run = out / side
    rows, done = [], 0.0
    for budget in args.budgets:
        cmd = [DGM, "train", kind, "--out", str(run), "--no-progress"]
        cmd += ["--steps", str(args.fixed_steps)] if args.fixed_steps else ["--minutes", f"{budget - done:g}"]
        if done == 0:
            cmd += ["--data", str(data / "t10k-images-idx3-ubyte.gz"), "--heldout-last", str(N_HELDOUT)]
            if args.dgm_config:
                cmd += ["--config", args.dgm_config]
        else:
            cmd += ["--resume"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        done = budget
        steps = int(torch.load(run / "state.pt", weights_only=True)["step"])
        model, _ = load_model(run)
        if int(getattr(model, "stage", 1)) == 0:  # an ldm still training its VAE: nothing to sample yet
            print(f"{side}: {budget:g} min, step {steps}: still in stage 1 (the VAE); no row", flush=True)
            continue
        rows += judge_samplers(args, judge, model, budget, steps, side, run)
    return rows


def judge_samplers(args, judge: Judge, model, budget: float, steps: int, side: str, run: Path) -> list[dict]:
    """Rows for one trained model: dpm++2m 20, then an ldm's own sampler or the ``--dgm-samplers``."""
    samplers = [("dpm++2m", 20, "quadratic", 0.0)]
    if model.kind == "ldm":  # also its default sampler (dgm sample's): ancestral over all levels, cheap on latents
        how = model.quick_sampling()[0]
        samplers.append((how["sampler"], how["steps"], "quadratic", 0.0))
    else:
        samplers += [spec for spec in dict.fromkeys(args.dgm_samplers) if spec not in samplers]
    bound = functools.cache(lambda m=model: bits_per_dim(m, judge.x_held, args.bpd_examples))  # one per model
    rows = []
    for sampler, nfe, spacing, w in samplers:
        if w and not getattr(model, "has_guide", False):
            print(f"{side}: no guide in this run (guide_step); no row for {sampler} {nfe} ag{w:g}", flush=True)
            continue
        how = f"{sampler} {nfe}" + ("" if spacing == "quadratic" else f" {spacing}") + (f" ag{w:g}" if w else "")
        label = side if (sampler, nfe, spacing, w) == ("dpm++2m", 20, "quadratic", 0.0) else f"{side} ({how})"
        guided = {"autoguidance": w} if w else {}
        rows.append(judge_model(args, judge, budget, steps, label,
                                lambda seed, m=model, s=sampler, n=nfe, sp=spacing, g=guided: m.sample(
                                    args.n_samples, sampler=s, steps=n, spacing=sp,
                                    generator=torch.Generator().manual_seed(seed), **g),
                                bound, run))
    return rows


def judge_run(args, judge: Judge, run: Path, out: Path) -> list[dict]:
    """``--judge RUN_DIR``: a trained run's samples, judged as its side would be at its last budget (no training).
    The side is named after the run's kind ("dgm" for a DDPM); its sample grids go to ``out``."""
    from dgm.runs.checkpoint import load_model

    model, _ = load_model(run)
    steps = int(torch.load(run / "state.pt", weights_only=True)["step"])
    return judge_samplers(args, judge, model, args.budgets[-1], steps, "dgm" if model.kind == "ddpm" else model.kind,
                          out)


def judge_model(args, judge: Judge, budget: float, steps: int, side: str, draw, bpd, where: Path) -> dict:
    per_seed, t0 = [], time.monotonic()
    last = budget == args.budgets[-1]
    seeds = args.seeds if last or args.all_seeds else args.seeds[:1]
    for seed in seeds:
        with torch.no_grad():
            x = draw(seed)
        per_seed.append(judge(x))
        if seed == args.seeds[0]:
            tag = "" if "(" not in side else "_" + "_".join(side.split("(")[1].rstrip(")").split())  # _ancestral_100
            save_grid(x[:100], where / f"samples_{budget:g}min{tag}.png")
    sample_s = (time.monotonic() - t0) / len(seeds)
    row = {"side": side, "minutes": budget, "steps": steps, "per_seed": per_seed, **spread(per_seed),
           "sample_seconds": sample_s, "seeds": seeds}
    if args.bpd_examples and last and bpd is not None:
        row["bpd"] = bpd()
    print(json.dumps({k: v for k, v in row.items() if k != "per_seed"}), flush=True)
    return row


def save_grid(x: torch.Tensor, path: Path) -> None:
    from PIL import Image

    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:100, 0]
    side = int(math.sqrt(len(x)))
    x = x[: side * side].reshape(side, side, 28, 28).permute(0, 2, 1, 3).reshape(side * 28, side * 28)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x.numpy()).save(path)


# ------------------------------------------------------------------------------------------ diffusers


class DiffusersAsDenoiserNet(torch.nn.Module):
    """A diffusers UNet2DModel as a dgm net: level i is diffusers' timestep i - 1."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, i, cond=None):
        t = (torch.as_tensor(i, device=x.device).reshape(-1).expand(x.shape[0]) - 1).clamp(min=0)
        return self.unet(x, t).sample


def diffusers_bpd(unet, judge: Judge, n: int) -> dict:
    from dgm.models import build_model
    from dgm.models.ddpm import DDPM

    small = {"kind": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "groups": 8,
             "head_channels": 8}  # replaced by the diffusers net below
    model = build_model(DDPM.complete_config({"net": small, "schedule": "linear", "levels": 1000, "prediction": "eps",
                                              "objective": "eps", "weighting": "simple", "dequantize": False},
                                             [1, 28, 28], 256))
    model.denoiser.net = DiffusersAsDenoiserNet(unet)
    return bits_per_dim(model, judge.x_held.reshape(-1, 1, 28, 28), n)


def diffusers_side(args, x_train: torch.Tensor, judge: Judge, out: Path) -> list[dict]:
    import diffusers
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    unet = peer_unet()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=1e-6)
    lr_sched = diffusers.optimization.get_scheduler("constant_with_warmup", opt, num_warmup_steps=200)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, power=3 / 4)
    g = torch.Generator().manual_seed(0)
    rows, step, trained, where = [], 0, 0.0, out / "diffusers"
    perm, pos = torch.randperm(len(x_train), generator=g), 0
    for budget in args.budgets:
        t0 = time.monotonic()
        while trained + (time.monotonic() - t0) < 60 * budget:
            if pos + 64 > len(perm):
                perm, pos = torch.randperm(len(x_train), generator=g), 0
            x0 = x_train[perm[pos : pos + 64]]
            pos += 64
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, 1000, (len(x0),), generator=g)
            loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            ema.step(unet.parameters())
            step += 1
            if step % 200 == 0:
                print(f"diffusers step {step} loss {loss.item():.4f} {trained + time.monotonic() - t0:.0f} s",
                      flush=True)
        trained += time.monotonic() - t0
        ema_unet = copy.deepcopy(unet)
        ema.copy_to(ema_unet.parameters())
        ema_unet.eval()
        where.mkdir(parents=True, exist_ok=True)
        torch.save(ema_unet.state_dict(), where / f"ema_{budget:g}min.pt")

        rows += judge_peer(args, judge, ema_unet, budget, step, where)
    return rows


def peer_unet():
    """The peer recipe's ``UNet2DModel`` (1.1 M parameters), freshly initialized."""
    import diffusers

    return diffusers.UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=32)


def judge_peer(args, judge: Judge, net, budget: float, steps: int, where: Path) -> list[dict]:
    """Rows for the peer's EMA net: ``DPMSolverMultistepScheduler`` at 20 steps, and with ``--diffusers-sde`` its
    ``algorithm_type="sde-dpmsolver++"`` at 20 steps too (the same solver as dgm's sde-dpm++2m)."""
    import diffusers

    def draw(seed, algorithm="dpmsolver++"):
        solver = diffusers.DPMSolverMultistepScheduler.from_config(diffusers.DDPMScheduler(1000).config,
                                                                   algorithm_type=algorithm)
        solver.set_timesteps(20)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((args.n_samples, 1, 28, 28), generator=g)
        for t in solver.timesteps:
            x = solver.step(net(x, t).sample, t, x, generator=g).prev_sample
        return x

    rows = [judge_model(args, judge, budget, steps, "diffusers", draw,
                        lambda: diffusers_bpd(net, judge, args.bpd_examples), where)]
    if args.diffusers_sde:
        rows.append(judge_model(args, judge, budget, steps, "diffusers (sde-dpmsolver++ 20)",
                                lambda seed: draw(seed, "sde-dpmsolver++"), None, where))
    return rows


# ---------------------------------------------------------------------------------------------- table


def table(results: dict) -> str:
    b = results["baseline"]
    lines = [f"Real data (1,000 training images vs the 1,000 held-out): FD {b['fd']:.2f}, precision "
             f"{b['precision']:.3f}, recall {b['recall']:.3f}, confident {b['confident']:.3f}.", "",
             "| side | minutes | steps | FD (mean, min..max) | excess FD | precision | recall | confident | "
             "bits/dim | sampling s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        bpd = f"{r['bpd']['bits_per_dim']:.3f} +- {r['bpd']['bits_per_dim_se']:.3f}" if "bpd" in r else "-"
        steps = "-" if r["steps"] is None else r["steps"]  # --judge-diffusers: not known
        lines.append(f"| {r['side']} | {r['minutes']:g} | {steps} | {r['fd']['mean']:.2f} "
                     f"({r['fd']['min']:.2f}..{r['fd']['max']:.2f}) | {r['excess_fd']['mean']:.2f} | "
                     f"{r['precision']['mean']:.3f} | {r['recall']['mean']:.3f} | {r['confident']['mean']:.3f} "
                     f"({r['confident']['min']:.3f}..{r['confident']['max']:.3f}) | {bpd} | "
                     f"{r['sample_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def sampler_spec(text: str) -> tuple[str, int, str, float]:
    """"ancestral:100:uniform" -> ("ancestral", 100, "uniform", 0.0); "sde-dpm++2m:20:ag1" -> ("sde-dpm++2m",
    20, "quadratic", 1.0) (autoguidance w = 1 by the run's guide). The spacing defaults to quadratic, w to 0."""
    from dgm.samplers import SAMPLERS

    parts = text.split(":")
    w = 0.0
    if len(parts) >= 3 and parts[-1].startswith("ag"):
        try:
            w = float(parts.pop()[2:])
        except ValueError:
            w = -1.0
    if len(parts) not in (2, 3) or parts[0] not in SAMPLERS or not parts[1].isdigit() or int(parts[1]) < 1 or (
            len(parts) == 3 and parts[2] not in ("quadratic", "uniform")) or not 0 <= w < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not SAMPLER:NFE[:quadratic|uniform][:agW] with a sampler of "
                                         f"{', '.join(SAMPLERS)} and an autoguidance weight W >= 0")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else "quadratic", w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--mnist", help="folder of the MNIST t10k IDX files (default ../shared/data/mnist)")
    p.add_argument("--budgets", type=float, nargs="+", default=[5, 10, 15], help="minutes of training")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sides", nargs="+", default=["dgm", "diffusers"], choices=["dgm", "diffusers", "ldm"],
                   help="dgm: dgm train ddpm (pixel space); ldm: dgm train ldm (latent diffusion); diffusers")
    p.add_argument("--dgm-config", help="a dgm train --config TOML file layered on the recipe (a lever)")
    p.add_argument("--dgm-samplers", nargs="+", type=sampler_spec, default=[], metavar="SAMPLER:NFE[:SPACING][:agW]",
                   help="side dgm: rows for these samplers too, beside dpm++2m 20 (e.g. ancestral:100:uniform, the "
                   "pixel DDPM's stochastic sampler at a fifth of its levels; sde-dpm++2m:20:ag1, autoguided with "
                   "w = 1 by the run's guide: twice the net calls)")
    p.add_argument("--all-seeds", action="store_true", help="every seed at every budget (default: the first "
                   "seed only, but every seed at the last budget)")
    p.add_argument("--fixed-steps", type=int, help="dgm only: train for this many steps instead of --budgets (one "
                   "budget; compares levers at equal steps)")
    p.add_argument("--label", default="", help="a name for this run in results.json")
    p.add_argument("--judge", metavar="RUN_DIR", help="no training: judge this trained run's samples with dpm++2m 20 "
                   "and --dgm-samplers (--budgets' last value labels the rows)")
    p.add_argument("--judge-diffusers", metavar="EMA.pt", help="no training: judge the peer's EMA weights saved by "
                   "an earlier run (DIR/diffusers/ema_<B>min.pt)")
    p.add_argument("--diffusers-sde", action="store_true", help="side diffusers: a row with sde-dpmsolver++ at 20 "
                   "steps too")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-samples", type=int, default=N_HELDOUT, help="samples per seed (1,000; fewer only for a "
                   "smoke test)")
    p.add_argument("--bpd-examples", type=int, default=50, help="held-out images for bits/dim at the last budget "
                   "(0: skip)")
    args = p.parse_args()
    if args.fixed_steps:
        if len(args.sides) != 1 or args.sides[0] not in ("dgm", "ldm"):
            raise SystemExit("--fixed-steps needs --sides dgm or --sides ldm")
        args.budgets = [0.0]
    if args.judge and not (Path(args.judge) / "config.json").is_file():
        raise SystemExit(f"--judge {args.judge!r} is not a dgm run directory (no config.json)")
    if args.judge_diffusers and not Path(args.judge_diffusers).is_file():
        raise SystemExit(f"--judge-diffusers {args.judge_diffusers!r} is not a file")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"--out {str(out)!r} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    data = mnist_dir(args.mnist)
    x_train, x_held = load_images(data)
    judge = Judge(x_train, x_held)
    results = {"label": args.label, "args": vars(args), "baseline": judge.baseline, "rows": [],
               "load_start": os.getloadavg(), "torch": torch.__version__, "started": time.ctime()}
    if args.judge or args.judge_diffusers:  # no training
        results["rows"] = judge_run(args, judge, Path(args.judge), out) if args.judge else []
        if args.judge_diffusers:
            net = peer_unet()
            net.load_state_dict(torch.load(args.judge_diffusers, weights_only=True))
            results["rows"] += judge_peer(args, judge, net.eval(), args.budgets[-1], None, out / "diffusers")
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(table(results))
    else:
        for side in args.sides:
            if side == "diffusers":
                rows = diffusers_side(args, x_train, judge, out)
            else:
                rows = dgm_side(args, data, judge, out, kind="ddpm" if side == "dgm" else "ldm")
            results["rows"] += rows
            results["load_end"] = os.getloadavg()
            (out / "results.json").write_text(json.dumps(results, indent=1))
            (out / "table.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
