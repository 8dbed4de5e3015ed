"""The numbers behind ``dgm report`` and ``dgm demo``: load run directories, draw samples, and evaluate them
(NLL bound and sample-quality metrics with their floors). The figures: ``dgm.report.run_figures``.

Costs are kept modest (the report of two digit runs builds in about a minute on 2 CPU cores): metrics use
``n_samples`` samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgm.runs import checkpoint as ckpt
from dgm.runs.log import read_log


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
                        data=load_run_data(config["data"]), log=read_log(d), steps=int(meta["step"])))
    return runs


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


def headline_labels(model, n: int) -> torch.Tensor | None:
    """The labels of a run's headline samples: None (the null class: the unconditional model), except for a
    conditional model trained without label dropout, whose null class is untrained: every class in turn."""
    if getattr(model, "conditional", False) and getattr(model, "label_dropout", None) == 0:
        return torch.arange(n) % model.num_classes
    return None


def draw(model, n: int, *, seed: int, sampler: str | None = None, steps: int | None = None, **kw):
    """(n samples in model space, seconds) from one seeded generator (same seed: same x_L); without ``cond``, the
    labels of ``headline_labels``."""
    g = torch.Generator().manual_seed(seed)
    kw |= {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None}
    if "cond" not in kw and (labels := headline_labels(model, n)) is not None:
        kw["cond"] = labels
    t0 = time.perf_counter()
    out = model.sample(n, generator=g, **kw)
    return out, time.perf_counter() - t0


def quality(run: Run, fake: torch.Tensor, names, *, seed: int) -> dict:
    """``quality_metrics`` of ``fake`` against the run's ``reference_set``, with floors; for vector data with
    a known density also ``cross_entropy`` = E_fake[-log p_data] in data space (floor: on real draws)."""
    from dgm.evaluation.distances import cross_entropy_nats
    from dgm.evaluation.metrics import quality_metrics
    from dgm.evaluation.reference import reference_set

    g = torch.Generator().manual_seed(seed + 1)
    real, _ = reference_set(run.data, len(fake), generator=g)
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


def evaluate(run: Run, *, n_samples: int = 500, seed: int = 0, nll_examples: int | None = 100,
             fake: torch.Tensor | None = None, likelihood: str = "vlb") -> dict:
    """The numbers of the summary tables: NLL bound (``dgm.evaluation.likelihood.evaluate_nll`` on the first
    ``nll_examples`` held-out examples, data space) and sample-quality metrics with their floors, of
    ``n_samples`` samples drawn as the model's ``quick_sampling()`` says (or of ``fake``, samples drawn
    that way). With ``likelihood="all"`` a DDPM also gets the bound with the analytic variance
    (``analytic_*``; Gamma estimated on the training data when the run has none) and the probability-flow ODE
    NLL (``ode_*``), on the same examples (docs/LIKELIHOOD.md). A class-conditional model is scored given the
    examples' true labels (a bound on -log p(x | c), as ``dgm eval`` does)."""
    from dgm.evaluation.likelihood import (
        LIKELIHOODS,
        data_nll,
        estimate_analytic_variance,
        evaluate_nll,
        evaluate_ode,
    )

    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    held, labels = (run.data.heldout, run.data.heldout_labels) if len(run.data.heldout) else (run.data.train,
                                                                                            run.data.train_labels)
    held = held[:nll_examples] if nll_examples else held
    labels = labels[: len(held)] if getattr(run.model, "conditional", False) and labels is not None else None
    g = torch.Generator().manual_seed(seed)
    out = {"kind": run.kind, "n_examples": len(held)}
    out |= evaluate_nll(run.model, held, scaling=run.scaling, generator=g, labels=labels)
    if likelihood != "vlb" and hasattr(run.model, "variance_for"):
        if run.model.analytic is None:
            estimate, _, _ = estimate_analytic_variance(run.model, run.data.train,
                                                        generator=torch.Generator().manual_seed(seed))
            run.model.set_analytic(estimate)
        bound = evaluate_nll(run.model, held, scaling=run.scaling, generator=torch.Generator().manual_seed(seed),
                             variance="analytic", labels=labels)
        out |= {f"analytic_{k}": bound[k] for k in ("nll_nats", "nll_nats_se", "bits_per_dim", "bits_per_dim_se")}
        out |= evaluate_ode(run.model, held, scaling=run.scaling, generator=torch.Generator().manual_seed(seed),
                            labels=labels)
    if run.data.density is not None:
        out["data_nll_nats"] = data_nll(run.data.density, held, run.scaling)
    how, label = run.model.quick_sampling()
    if fake is None:
        fake, _ = draw(run.model, n_samples, seed=seed, **how)
    names = ("fd", "kid", "precision", "recall") if metric_kind(run)[0] == "image" else ("sw", "mmd")
    out |= quality(run, fake, names, seed=seed)
    out["sampled_with"] = label
    return out
