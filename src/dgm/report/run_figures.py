"""The figures of ``dgm report`` for each run, as data: PNG bytes and the numbers printed beside them.

``run_figures(run)`` samples a run with every sampler at a few NFE (DDPM; the ancestral sampler runs all
L levels once, on a small batch for images and on ``n_samples`` points for vector data), draws the grids,
nearest training neighbours, the forward process, a reverse trajectory, quality against NFE, the 2-D
density, and (``dgm.report.conditioning``) the class-by-guidance grid of a conditional DDPM and the inpainting
figure of an image DDPM, and returns them as a ``RunFigures``. ``blur_figure`` compares a VAE's reconstructions with the
optimal decoder. The drawings themselves are ``dgm.report.plots``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dgm.report import plots
from dgm.report.compute import Run, draw, headline_labels, metric_kind, quality
from dgm.report.conditioning import ClassGrid, Inpainting, class_grid, inpainting_figure

SWEEP_SAMPLERS = ("ddim", "dpm++2m")
SWEEP_NFE = (10, 20, 50)
GRID = 16  # samples per grid panel
N_ANCESTRAL_IMAGES = 16  # images drawn with the full-L ancestral sampler (and kept as a trajectory)
LEVEL_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)  # image strips
LEVEL_FRACTIONS_VECTOR = (0.0, 0.05, 0.15, 0.3, 0.6, 1.0)  # scatter plots (wider panels)


@dataclass(frozen=True)
class Neighbours:
    """Samples against their nearest training examples (L2 in model space): the figure (images only, else
    None) and the median nearest-training distance of samples and of held-out data (nan without any)."""

    png: bytes | None
    median_sample: float
    median_heldout: float

    def __post_init__(self):
        if self.png is not None and not isinstance(self.png, bytes):
            raise ValueError(f"Neighbours png must be PNG bytes or None, got {type(self.png).__name__}")


@dataclass(frozen=True)
class NfeSweep:
    """Quality and time against NFE: the figure, one row per (sampler, NFE) — dicts with "sampler", "nfe",
    "n", ``metric`` (None where not measured) and "seconds" — and the metric's floor (None if unknown)."""

    png: bytes
    rows: tuple[dict, ...]
    metric: str
    floor: float | None

    def __post_init__(self):
        missing = [r for r in self.rows if not {"sampler", "nfe", "n", "seconds", self.metric} <= r.keys()]
        if missing:
            raise ValueError(f"NfeSweep row {missing[0]!r} lacks a key of sampler, nfe, n, seconds, {self.metric}")


@dataclass(frozen=True)
class RunFigures:
    """Every per-run figure of the report (PNG bytes) with its numbers; ``samples`` are the run's headline
    samples (model space), which the summary table and the blur figure reuse. A figure that does not apply
    to the run (e.g. the forward process of a VAE, the class grid of an unconditional run) is None."""

    grids: tuple[tuple[str, bytes], ...]
    grid_note: str
    samples: torch.Tensor
    neighbours: Neighbours
    forward: bytes | None = None
    reverse: bytes | None = None
    nfe: NfeSweep | None = None
    density: bytes | None = None
    class_grid: ClassGrid | None = None
    inpainting: Inpainting | None = None

    def __post_init__(self):
        if not self.grids or not all(isinstance(t, str) and isinstance(p, bytes) for t, p in self.grids):
            raise ValueError(f"RunFigures grids must be (title, PNG bytes) pairs, got {len(self.grids)} entries")
        if not isinstance(self.samples, torch.Tensor):
            raise ValueError(f"RunFigures samples must be a tensor, got {type(self.samples).__name__}")


@dataclass(frozen=True)
class DdpmSweep:
    """What ``ddpm_sweep`` measured: the table rows, the metric's floor, the samples per (sampler, NFE) and
    the ancestral trajectory (``model.sample(..., return_trajectory=True)``)."""

    rows: tuple[dict, ...]
    floor: float | None
    samples: dict
    trajectory: dict


@dataclass(frozen=True)
class BlurFigure:
    """Why the VAE blurs: the figure, ``blur_report``'s numbers and the ``sharpness`` of each image set."""

    png: bytes
    numbers: dict
    sharpness: dict


def chosen_levels(L: int, fractions=LEVEL_FRACTIONS) -> list[int]:
    """A few levels from 0 to L (more of them at low noise)."""
    return sorted({round(f * L) for f in fractions})


def to_points(run: Run, x: torch.Tensor) -> np.ndarray:
    """Model-space vectors -> data-space points (N, 2) for plots (first two dims)."""
    return np.asarray(run.scaling.to_data(x), dtype=np.float64).reshape(len(x), -1)[:, :2]


def neighbours(run: Run, samples: torch.Tensor) -> Neighbours:
    """Nearest training examples of samples (L2 in model space), and the median distances of samples
    and of held-out data to their nearest training example."""
    train = run.data.train.flatten(1)

    def nearest(x):
        d = torch.cat([torch.cdist(c.flatten(1), train) for c in x.split(512)])
        return d.min(1)

    dist, idx = nearest(samples)
    held = run.data.heldout
    png = None
    if run.scaling.kind == "image":
        k = min(12, len(samples))
        titles = [f"{v:.2f}" for v in dist[:k].tolist()]
        png = plots.rows_png([("samples", samples[:k]), ("nearest train", run.data.train[idx[:k]])], titles)
    return Neighbours(png=png, median_sample=float(dist.median()),
                      median_heldout=float(nearest(held).values.median()) if len(held) else float("nan"))


def ddpm_sweep(run: Run, n: int, seed: int, metric: str) -> DdpmSweep:
    """Samples of every sampler at a few NFE (same x_L), timed and scored; also the full-L ancestral run."""
    L, image = run.model.schedule.L, run.scaling.kind == "image"
    rows, samples, floor = [], {}, None
    for sampler in SWEEP_SAMPLERS:
        for nfe in sorted({min(k, L) for k in SWEEP_NFE}):
            x, sec = draw(run.model, n, seed=seed, sampler=sampler, steps=nfe)
            q = quality(run, x, [metric], seed=seed)
            rows.append({"sampler": sampler, "nfe": nfe, "n": n, metric: q[metric], "seconds": sec})
            floor = q[metric + "_floor"]
            samples[sampler, nfe] = x
    n_anc = min(n, N_ANCESTRAL_IMAGES) if image else n
    t0 = time.perf_counter()
    x, traj = run.model.sample(n_anc, generator=torch.Generator().manual_seed(seed), sampler="ancestral",
                               return_trajectory=True, cond=headline_labels(run.model, n_anc))
    row = {"sampler": "ancestral", "nfe": L, "n": n_anc, metric: None, "seconds": time.perf_counter() - t0}
    if not image:
        row[metric] = quality(run, x, [metric], seed=seed)[metric]
    rows.append(row)
    samples["ancestral", L] = x
    return DdpmSweep(rows=tuple(rows), floor=floor, samples=samples, trajectory=traj)


def _forward_figure(run: Run, levels: list[int], seed: int) -> bytes:
    from dgm.core.forward import q_sample

    g = torch.Generator().manual_seed(seed)
    s, image = run.model.schedule, run.scaling.kind == "image"
    x0 = run.data.train[torch.linspace(0, len(run.data.train) - 1, 4 if image else min(2000, len(run.data.train)))
                        .long()]
    eps = torch.randn(x0.shape, generator=g)
    xs = [x0 if i == 0 else q_sample(s, x0, i, eps).float() for i in levels]
    if image:
        return plots.rows_png([(f"example {k + 1}", torch.stack([x[k] for x in xs])) for k in range(len(x0))],
                              [f"i={i}" for i in levels])
    return plots.scatter_rows_png([("x_i", [(f"i={i}", to_points(run, x)) for i, x in zip(levels, xs,
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
        return plots.rows_png(rows, [f"i={i}" for i in shown])
    return plots.scatter_rows_png([("x_i", [(f"i={i}", to_points(run, x)) for i, x in zip(shown, xs, strict=True)]),
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


def run_figures(run: Run, *, n_samples: int = 500, seed: int = 0) -> RunFigures:
    """Every per-run figure (PNG bytes) and the numbers printed beside them."""
    image = run.scaling.kind == "image"
    metric = "fd" if metric_kind(run)[0] == "image" else "sw"
    diffusion = {}
    if run.kind == "ddpm":
        sweep = ddpm_sweep(run, n_samples, seed, metric)
        L = run.model.schedule.L
        by_sampler: dict = {}
        for (sampler, nfe), x in sweep.samples.items():
            by_sampler.setdefault(sampler, []).append((f"{sampler}, {nfe} NFE", x))
        if image:
            png = plots.panels_png([[(t, x[:GRID]) for t, x in row] for row in by_sampler.values()], 4)
        else:
            png = plots.scatter_rows_png([(name, [(t, to_points(run, x)) for t, x in row])
                                          for name, row in by_sampler.items()])
        grids = (("samples per sampler and NFE", png),)
        how, _ = run.model.quick_sampling()
        if set(how) != {"sampler", "steps"}:  # e.g. autoguidance: not among the sweep's samples; drawn as said
            main, _ = draw(run.model, n_samples, seed=seed, **how)
        else:
            main = sweep.samples.get((how["sampler"], how["steps"]), next(iter(sweep.samples.values())))
        note = (f"The same x_L for every sampler and NFE (ddim and dpm++2m are deterministic, so their samples "
                f"converge as the NFE grows); ancestral runs all L = {L} levels.")
        levels = chosen_levels(L, LEVEL_FRACTIONS if image else LEVEL_FRACTIONS_VECTOR)
        diffusion = {"forward": _forward_figure(run, levels, seed),
                     "reverse": _reverse_figure(run, sweep.trajectory, levels),
                     "nfe": NfeSweep(png=plots.nfe_png(sweep.rows, metric, sweep.floor), rows=sweep.rows,
                                     metric=metric, floor=sweep.floor),
                     "class_grid": class_grid(run, seed=seed), "inpainting": inpainting_figure(run, seed=seed)}
    elif run.kind in ("vae", "hvae"):
        main, _ = draw(run.model, n_samples, seed=seed)
        noisy, _ = draw(run.model, min(n_samples, 64), seed=seed, noise=True)
        if image:
            png = plots.panels_png([[("decoder means E[x|z], z ~ N(0, I)", main[:36]),
                                     ("draws x ~ p(x|z)", noisy[:36])]], 6, panel_inches=2.6)
        else:
            png = plots.scatter_rows_png([(run.kind, [("decoder means", to_points(run, main)),
                                                      ("draws x ~ p(x|z)", to_points(run, noisy))])])
        grids = (("samples, decoder", png),)
        note = "A VAE's usual samples are its decoder means; draws from p(x|z) add the decoder noise."
    elif run.kind == "ldm":
        how, label = run.model.quick_sampling()
        main, _ = draw(run.model, n_samples, seed=seed, **how)
        grids = (("samples", plots.panels_png([[(label, main[:36])]], 6, panel_inches=2.6)),)
        note = ("Latents z drawn by the latent DDPM, then the VAE's decoder means E[x|z] (an ldm models images "
                "only).")
    else:
        raise ValueError(f"the report has no figures for a {run.kind!r} model")
    density = None
    if not image and run.scaling.shape == (2,):
        density = plots.density_png(to_points(run, run.data.train), to_points(run, main), _log_density_fn(run))
    return RunFigures(grids=grids, grid_note=note, samples=main, neighbours=neighbours(run, main),
                      density=density, **diffusion)


def blur_figure(runs: list[Run], found: list[RunFigures], *, seed: int = 0) -> BlurFigure | None:
    """The blur figure of the first VAE on images (with a DDPM on the same data if one is given): data |
    VAE reconstructions | optimal decoder mu*(z) at the same z | VAE samples | DDPM samples, the numbers of
    ``dgm.models.vae.analysis.blur_report`` and the ``sharpness`` of each image set. None without such a VAE."""
    from dgm.models.vae.analysis import blur_report, optimal_decoder, sharpness

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
            "VAE samples": found[vae].samples, "mu*(z), z ~ N(0, I)": optimal_prior}
    if ddpm is not None:
        sets["DDPM samples"] = found[ddpm].samples
    png = plots.panels_png([[(k, v[:GRID]) for k, v in sets.items()]], 4, panel_inches=1.9)
    numbers = blur_report(model, train, n_latents=1024, generator=g)
    return BlurFigure(png=png, numbers=numbers, sharpness={k: sharpness(v) for k, v in sets.items()})
