"""The computations behind ``dgm report``: load runs, evaluate them (with metric floors), sample with every
sampler at a few NFE, and turn the results into the PNG figures of ``dgm.figures``.

Costs are kept modest (the report of two digit runs builds in about a minute on 2 CPU cores): metrics and
each point of the NFE sweep use ``n_samples`` samples; the ancestral sampler runs all L levels once, on a
small batch for images (time only) and on ``n_samples`` points for vector data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgm.report import plots as figures
from dgm.runs import checkpoint as ckpt

SWEEP_SAMPLERS = ("ddim", "dpm++2m")
SWEEP_NFE = (10, 20, 50)
HEADLINE = ("dpm++2m", 20)  # the DDPM sampler and NFE of the summary table's quality metrics
GRID = 16  # samples per grid panel
N_ANCESTRAL_IMAGES = 16  # images drawn with the full-L ancestral sampler (and kept as a trajectory)
LEVEL_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)  # image strips
LEVEL_FRACTIONS_VECTOR = (0.0, 0.05, 0.15, 0.3, 0.6, 1.0)  # scatter plots (wider panels)


@dataclass
class Run:
    """A trained run directory, loaded: EMA model, config, data set (model space) and training log."""

    path: Path
    name: str
    anchor: str
    model: torch.nn.Module
    config: dict
    data: object  # dgm.data.DataSet
    log: list[dict] = field(default_factory=list)
    steps: int = 0

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def scaling(self):
        return self.data.scaling

    @property
    def data_name(self) -> str:
        return Path(str(self.config["data"].get("spec", self.data.name))).name

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def train_seconds(self) -> float:
        """Wall time of training: the sum over the log's segments (``elapsed_s`` restarts on --resume)."""
        total, last = 0.0, 0.0
        for rec in self.log:
            t = float(rec.get("elapsed_s", 0.0))
            if t < last:
                total += last
            last = t
        return total + last

    def loss_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, losses) of the log records that have both."""
        recs = [r for r in self.log if "loss" in r and "step" in r and math.isfinite(r["loss"])]
        return np.array([r["step"] for r in recs]), np.array([r["loss"] for r in recs])


def read_log(path: Path) -> list[dict]:
    """The JSON records of a log.jsonl (torn or foreign lines skipped)."""
    import json

    recs = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                recs.append(rec)
    return recs


def load_runs(dirs: list[Path]) -> list[Run]:
    """Load every run directory (names: the folder names, made unique with their parents if needed)."""
    from dgm.data.spec import load_run_data

    names = [d.resolve().name for d in dirs]
    runs = []
    for k, d in enumerate(dirs):
        model, config = ckpt.load_model(d)
        _, meta = ckpt.load_weights(d / ckpt.WEIGHTS)
        name = names[k] if names.count(names[k]) == 1 else f"{d.resolve().parent.name}/{names[k]}"
        runs.append(Run(path=d, name=name, anchor=f"run-{k + 1}", model=model, config=config,
                        data=load_run_data(config["data"]), log=read_log(d / ckpt.LOG), steps=int(meta["step"])))
    return runs


# ------------------------------------------------------------------------------------------ evaluation

def metric_kind(run: Run) -> tuple[str, str]:
    """(``quality_metrics`` kind, a label): digit images in the feature net's space, else raw vectors."""
    if run.scaling.kind == "image":
        from dgm.evaluation.features import kind_for_shape

        try:
            kind_for_shape(run.scaling.shape)
            return "image", "feature space of the shipped digit net"
        except ValueError:
            return "vector", "pixel space (no feature net for this image size)"
    return "vector", "data vectors in model space"


def real_data(run: Run, n: int, generator: torch.Generator) -> torch.Tensor:
    """The real sample the metrics compare against: 2n draws of a known density, else all the data."""
    if run.data.density is not None:
        return run.data.density.sample(2 * n, generator=generator).float()
    return torch.cat([run.data.train, run.data.heldout])


def draw(model, n: int, *, seed: int, sampler: str | None = None, steps: int | None = None, **kw):
    """(n samples in model space, seconds) from one seeded generator (same seed: same x_L)."""
    g = torch.Generator().manual_seed(seed)
    kw |= {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None}
    t0 = time.perf_counter()
    out = model.sample(n, generator=g, **kw)
    return out, time.perf_counter() - t0


def quality(run: Run, fake: torch.Tensor, names, *, seed: int) -> dict:
    """``quality_metrics`` of ``fake`` against the run's real data, with floors; for vector data with a
    known density also ``cross_entropy`` = E_fake[-log p_data] in data space (floor: on real draws)."""
    from dgm.evaluation.metrics import cross_entropy_nats, quality_metrics

    g = torch.Generator().manual_seed(seed + 1)
    real = real_data(run, len(fake), g)
    kind, _ = metric_kind(run)
    flat = kind == "vector" and run.scaling.kind == "image"
    out = quality_metrics(real.flatten(1) if flat else real, fake.flatten(1) if flat else fake, kind=kind,
                          names=list(names), generator=g)
    density = run.data.density
    if density is not None and "sw" in names:
        shift = float(run.scaling.log_abs_det())
        out["cross_entropy"] = cross_entropy_nats(density, fake.double()) + shift
        out["cross_entropy_floor"] = cross_entropy_nats(density, real[: len(fake)].double()) + shift
    return out


def headline(run: Run) -> dict:
    """How the summary table's samples are drawn: sampler keywords and a label."""
    if run.kind == "ddpm":
        sampler, nfe = HEADLINE[0], min(HEADLINE[1], run.model.schedule.L)
        return {"kw": {"sampler": sampler, "steps": nfe}, "label": f"{sampler}, {nfe} NFE"}
    return {"kw": {}, "label": "decoder means"}


def evaluate(run: Run, *, n_samples: int = 500, seed: int = 0, nll_examples: int | None = 100,
             fake: torch.Tensor | None = None) -> dict:
    """The numbers of the summary tables: NLL bound (``dgm.evaluate.evaluate_nll`` on the first
    ``nll_examples`` held-out examples, data space) and sample-quality metrics with their floors, of
    ``n_samples`` samples drawn as ``headline(run)`` says (or of ``fake``, samples drawn that way)."""
    from dgm.evaluation.likelihood import data_nll, evaluate_nll

    held = run.data.heldout if len(run.data.heldout) else run.data.train
    held = held[:nll_examples] if nll_examples else held
    g = torch.Generator().manual_seed(seed)
    out = {"kind": run.kind, "n_examples": len(held)}
    out |= evaluate_nll(run.model, held, scaling=run.scaling, generator=g)
    if run.data.density is not None:
        out["data_nll_nats"] = data_nll(run.data.density, held, run.scaling)
    how = headline(run)
    if fake is None:
        fake, _ = draw(run.model, n_samples, seed=seed, **how["kw"])
    names = ("fd", "kid", "precision", "recall") if metric_kind(run)[0] == "image" else ("sw", "mmd")
    out |= quality(run, fake, names, seed=seed)
    out["sampled_with"] = how["label"]
    return out


# ------------------------------------------------------------------------------------------ figures

def chosen_levels(L: int, fractions=LEVEL_FRACTIONS) -> list[int]:
    """A few levels from 0 to L (more of them at low noise)."""
    return sorted({round(f * L) for f in fractions})


def to_points(run: Run, x: torch.Tensor) -> np.ndarray:
    """Model-space vectors -> data-space points (N, 2) for plots (first two dims)."""
    return np.asarray(run.scaling.to_data(x), dtype=np.float64).reshape(len(x), -1)[:, :2]


def neighbours(run: Run, samples: torch.Tensor) -> dict:
    """Nearest training examples of samples (L2 in model space), and the median distances of samples
    and of held-out data to their nearest training example."""
    train = run.data.train.flatten(1)

    def nearest(x):
        d = torch.cat([torch.cdist(c.flatten(1), train) for c in x.split(512)])
        return d.min(1)

    dist, idx = nearest(samples)
    held = run.data.heldout
    out = {"median_sample": float(dist.median()),
           "median_heldout": float(nearest(held).values.median()) if len(held) else float("nan"), "png": None}
    if run.scaling.kind == "image":
        k = min(12, len(samples))
        titles = [f"{v:.2f}" for v in dist[:k].tolist()]
        out["png"] = figures.rows_png([("samples", samples[:k]), ("nearest train", run.data.train[idx[:k]])],
                                      titles)
    return out


def _ddpm_sweep(run: Run, n: int, seed: int, metric: str, found: dict) -> list[dict]:
    """Samples of every sampler at a few NFE (same x_L), timed and scored; also the full-L ancestral run."""
    L, image = run.model.schedule.L, run.scaling.kind == "image"
    sweep, samples = [], {}
    for sampler in SWEEP_SAMPLERS:
        for nfe in sorted({min(k, L) for k in SWEEP_NFE}):
            x, sec = draw(run.model, n, seed=seed, sampler=sampler, steps=nfe)
            q = quality(run, x, [metric], seed=seed)
            sweep.append({"sampler": sampler, "nfe": nfe, "n": n, metric: q[metric], "seconds": sec})
            found["floor"] = q[metric + "_floor"]
            samples[sampler, nfe] = x
    n_anc = min(n, N_ANCESTRAL_IMAGES) if image else n
    t0 = time.perf_counter()
    x, traj = run.model.sample(n_anc, generator=torch.Generator().manual_seed(seed), sampler="ancestral",
                               return_trajectory=True)
    row = {"sampler": "ancestral", "nfe": L, "n": n_anc, metric: None, "seconds": time.perf_counter() - t0}
    if not image:
        row[metric] = quality(run, x, [metric], seed=seed)[metric]
    sweep.append(row)
    samples["ancestral", L] = x
    found["traj"], found["samples"] = traj, samples
    return sweep


def _forward_figure(run: Run, levels: list[int], seed: int) -> bytes:
    from dgm.core.forward import q_sample

    g = torch.Generator().manual_seed(seed)
    s, image = run.model.schedule, run.scaling.kind == "image"
    x0 = run.data.train[torch.linspace(0, len(run.data.train) - 1, 4 if image else min(2000, len(run.data.train)))
                        .long()]
    eps = torch.randn(x0.shape, generator=g)
    xs = [x0 if i == 0 else q_sample(s, x0, i, eps).float() for i in levels]
    if image:
        return figures.rows_png([(f"example {k + 1}", torch.stack([x[k] for x in xs])) for k in range(len(x0))],
                                [f"i={i}" for i in levels])
    return figures.scatter_rows_png([("x_i", [(f"i={i}", to_points(run, x)) for i, x in zip(levels, xs,
                                                                                          strict=True)])])


def _reverse_figure(run: Run, traj: dict, levels: list[int]) -> bytes:
    order = traj["levels"]
    shown = [i for i in sorted(levels, reverse=True) if i in order]
    pos = [order.index(i) for i in shown]
    xs = [traj["x"][p] for p in pos]
    x0s = [traj["x0_hat"][p] if p < len(traj["x0_hat"]) else traj["x"][p] for p in pos]
    if run.scaling.kind == "image":
        rows = []
        for k in range(min(3, xs[0].shape[0])):
            rows += [(f"x_i #{k + 1}", torch.stack([x[k] for x in xs])),
                     (f"x0_hat #{k + 1}", torch.stack([x[k] for x in x0s]))]
        return figures.rows_png(rows, [f"i={i}" for i in shown])
    return figures.scatter_rows_png([("x_i", [(f"i={i}", to_points(run, x)) for i, x in zip(shown, xs, strict=True)]),
                                     ("x0_hat", [(f"i={i}", to_points(run, x)) for i, x in zip(shown, x0s,
                                                                                                strict=True)])])


def _log_density_fn(run: Run):
    """Data-space log-density of points (M, 2) under the run's known density, or None."""
    density = run.data.density
    if density is None or run.scaling.shape != (2,):
        return None

    def log_density(points):
        x = run.scaling.to_model(points).double()
        return (density.log_prob(x) - float(run.scaling.log_abs_det())).numpy()

    return log_density


def run_figures(run: Run, *, n_samples: int = 500, seed: int = 0) -> dict:
    """Every per-run figure (PNG bytes) and the numbers printed beside them."""
    image = run.scaling.kind == "image"
    metric = "fd" if metric_kind(run)[0] == "image" else "sw"
    found: dict = {"grids": []}
    if run.kind == "ddpm":
        work: dict = {}
        sweep = _ddpm_sweep(run, n_samples, seed, metric, work)
        samples, L = work["samples"], run.model.schedule.L
        by_sampler: dict = {}
        for (sampler, nfe), x in samples.items():
            by_sampler.setdefault(sampler, []).append((f"{sampler}, {nfe} NFE", x))
        if image:
            png = figures.panels_png([[(t, x[:GRID]) for t, x in row] for row in by_sampler.values()], 4)
        else:
            png = figures.scatter_rows_png([(name, [(t, to_points(run, x)) for t, x in row])
                                            for name, row in by_sampler.items()])
        found["grids"].append(("samples per sampler and NFE", png))
        how = headline(run)["kw"]
        main = samples.get((how["sampler"], how["steps"]), next(iter(samples.values())))
        found["grid_note"] = (f"The same x_L for every sampler and NFE (ddim and dpm++2m are deterministic, so "
                              f"their samples converge as the NFE grows); ancestral runs all L = {L} levels.")
        levels = chosen_levels(L, LEVEL_FRACTIONS if image else LEVEL_FRACTIONS_VECTOR)
        found["forward"] = _forward_figure(run, levels, seed)
        found["reverse"] = _reverse_figure(run, work["traj"], levels)
        found["nfe"] = {"png": figures.nfe_png(sweep, metric, work.get("floor")), "sweep": sweep,
                        "metric": metric, "floor": work.get("floor")}
    else:
        main, _ = draw(run.model, n_samples, seed=seed)
        noisy, _ = draw(run.model, min(n_samples, 64), seed=seed, noise=True)
        if image:
            png = figures.panels_png([[("decoder means E[x|z], z ~ N(0, I)", main[:36]),
                                       ("draws x ~ p(x|z)", noisy[:36])]], 6, panel_inches=2.6)
        else:
            png = figures.scatter_rows_png([(run.kind, [("decoder means", to_points(run, main)),
                                                        ("draws x ~ p(x|z)", to_points(run, noisy))])])
        found["grids"].append(("samples, decoder", png))
        found["grid_note"] = "A VAE's usual samples are its decoder means; draws from p(x|z) add the decoder noise."
    found["main_samples"] = main
    found["neighbours"] = neighbours(run, main)
    if not image and run.scaling.shape == (2,):
        found["density"] = figures.density_png(to_points(run, run.data.train), to_points(run, main),
                                               _log_density_fn(run))
    return found


def blur_figure(runs: list[Run], found: list[dict], *, seed: int = 0) -> dict | None:
    """The blur figure of the first VAE on images (with a DDPM on the same data if one is given): data |
    VAE reconstructions | optimal decoder mu*(z) at the same z | VAE samples | DDPM samples, the numbers of
    ``dgm.blur.blur_report`` and the ``sharpness`` of each image set."""
    from dgm.models.vae.analysis import optimal_decoder
    from dgm.models.vae.blur import blur_report, sharpness

    vae = next((k for k, r in enumerate(runs) if r.kind == "vae" and r.scaling.kind == "image"), None)
    if vae is None:
        return None
    r = runs[vae]
    ddpm = next((k for k, d in enumerate(runs) if d.kind == "ddpm" and d.data_name == r.data_name
                 and d.scaling.shape == r.scaling.shape), None)
    train, model = r.data.train, r.model
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        stats = [model.encode(c) for c in train.split(512)]
        q_mean, q_std = torch.cat([m for m, _ in stats]), torch.cat([s for _, s in stats])
        mu_star = optimal_decoder(q_mean, q_std, train)
        idx = torch.linspace(0, len(train) - 1, min(500, len(train))).long()
        z = q_mean[idx] + q_std[idx] * torch.randn(q_mean[idx].shape, generator=g)
        recon, optimal = model.decode(z), mu_star(z).float()
        prior_z = torch.randn(len(idx), q_mean.shape[1], generator=g)
        optimal_prior = mu_star(prior_z).float()
    sets = {"data": train[idx], "VAE reconstructions": recon, "optimal decoder mu*(z)": optimal,
            "VAE samples": found[vae]["main_samples"], "mu*(z), z ~ N(0, I)": optimal_prior}
    if ddpm is not None:
        sets["DDPM samples"] = found[ddpm]["main_samples"]
    png = figures.panels_png([[(k, v[:GRID]) for k, v in sets.items()]], 4, panel_inches=1.9)
    numbers = blur_report(model, train, n_latents=1024, generator=g)
    return {"png": png, "numbers": numbers, "sharpness": {k: sharpness(v) for k, v in sets.items()}}
