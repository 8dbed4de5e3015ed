"""Likelihood evaluation (nats and bits per dim, in data space) and ``dgm eval`` of a run directory.

Models report nats per example in model space (docs/ARCHITECTURE.md). For continuous data the change of
variables x = (data - shift) / scale adds ``scaling.log_abs_det()`` = sum(log scale) to every negative
log-density; discrete data (``bins``) have probabilities, which the scaling does not change. Every mean
comes with its standard error over the examples (``*_se``).

Never a silent NaN (issue 14): a bound, an NLL or a metric that is not finite is a one-line
FloatingPointError naming it (and how many examples). Bounded memory: examples are evaluated batch by batch,
and the ODE's batches and the sampling chunks of ``--metrics`` hold a fixed count of numbers (``ODE_NUMBERS``,
``SAMPLE_NUMBERS``), so 28x28 images go fewer at a time than 2-D points (``benchmarks/eval_memory.py``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

DENSITY_KEYS = ("nll_nats", "elbo_nats")  # negative log-densities of x: they move with the scaling
LIKELIHOODS = ("vlb", "ode", "all")
GAMMA_EXAMPLES = {"vector": 4096, "image": 512}  # training examples behind Gamma_i (each level sees each once)
EXACT_DIVERGENCE_MAX_DIM = 16  # "auto": the exact divergence up to this D, Hutchinson above
# Bounded memory (issue 14): examples per network call counted in numbers, not rows, so 28x28 images go fewer
# at a time than 2-D points. One call of the MNIST recipe's UNet (benchmarks/eval_memory.py, peak RSS of the
# process): the ODE's drift and divergence 1,124 MiB at 83 examples, 8,428 MiB at the former 1,000; a DDIM
# sampling chunk of 334 examples 1,190 MiB.
ODE_NUMBERS = 1 << 16  # per ODE batch: 1,000 vectors or 8x8 images (the cap), 83 MNIST images
ODE_BATCH = 1000
SAMPLE_NUMBERS = 1 << 18  # per call of model.sample: 4,096 vectors or 8x8 images (the cap), 334 MNIST images
SAMPLE_CHUNK = 4096


def examples_per_call(numbers: int, dim: int, cap: int) -> int:
    """How many examples of ``dim`` numbers make ``numbers`` numbers, between 1 and ``cap``."""
    return max(1, min(cap, numbers // max(1, dim)))


def _mean_se(values: torch.Tensor, name: str) -> tuple[float, float]:
    """(mean, standard error) of per-example ``values``; FloatingPointError (one line, naming ``name``, how many
    examples and the first) when one is NaN or infinite: a NaN is an error, never a silent number."""
    values = values.double()
    bad = (~torch.isfinite(values)).nonzero().flatten()
    if len(bad):
        first = int(bad[0])
        raise FloatingPointError(f"{name} is not finite for {len(bad)} of {len(values)} examples (example {first}: "
                                 f"{values[first].item()}); the model is broken or diverged")
    se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return values.mean().item(), se


@torch.no_grad()
def evaluate_nll(model, data: torch.Tensor, *, scaling=None, batch_size: int = 256,
                 generator: torch.Generator | None = None, variance: str | None = None,
                 labels: torch.Tensor | None = None) -> dict[str, float]:
    """Mean of ``model.evaluate`` over ``data`` (model space), batch by batch, with standard errors.

    With ``scaling`` the negative log-densities (``nll_nats``, ``elbo_nats``) are moved to data space
    (continuous data add ``scaling.log_abs_det()``), and ``bits_per_dim`` = nll_nats / (D ln 2) is added;
    each key has its ``*_se``. ``variance`` (a DDPM's reverse variance for the bound) is passed on when given;
    so are the class ``labels`` (N,) of a conditional model, batch by batch, as ``cond``.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate an empty data set")
    model.eval()
    device = next(model.parameters()).device
    kw = {} if variance is None else {"variance": variance}
    parts: dict[str, list[torch.Tensor]] = {}
    for k, batch in enumerate(data.split(batch_size)):
        if labels is not None:
            kw["cond"] = labels[k * batch_size : k * batch_size + len(batch)].to(device)
        for key, value in model.evaluate(batch.to(device), generator=generator, **kw).items():
            parts.setdefault(key, []).append(torch.as_tensor(value, dtype=torch.float64).cpu().reshape(-1))
    result: dict[str, float] = {}
    for key, chunks in parts.items():
        result[key], result[f"{key}_se"] = _mean_se(torch.cat(chunks), f"the model's {key}")
    if scaling is not None and scaling.bins is None:
        shift = float(scaling.log_abs_det())
        result |= {key: result[key] + shift for key in DENSITY_KEYS if key in result}
    D = data[0].numel()
    result["bits_per_dim"] = result["nll_nats"] / (D * math.log(2))
    result["bits_per_dim_se"] = result["nll_nats_se"] / (D * math.log(2))
    _check_finite(result)
    return result


def _check_finite(result: dict) -> None:
    """FloatingPointError naming the first number of ``result`` that is NaN or infinite (a standard error of
    a single example, ``inf``, aside)."""
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value) and not (key.endswith("_se") and value == math.inf):
            raise FloatingPointError(f"{key} is {value}: not a finite number")


def estimate_analytic_variance(model, x_train: torch.Tensor, *, generator: torch.Generator | None = None,
                               max_examples: int | None = None):
    """Gamma_i of a DDPM's analytic reverse variance on (at most ``max_examples``) training examples, in the
    space the model was trained in (dequantized for discrete data): ``(AnalyticVariance, examples, seconds)``."""
    from dgm.core.reverse import AnalyticVariance, data_variance, estimate_gamma

    if not hasattr(model, "set_analytic"):
        raise ValueError(f"a {model.kind} has no reverse variance to estimate")
    kind = "vector" if x_train.ndim == 2 else "image"
    n = min(len(x_train), max_examples or GAMMA_EXAMPLES[kind])
    device = next(model.parameters()).device
    g = generator or torch.Generator().manual_seed(0)
    y = x_train[:n].to(device)
    if model.dequantize:  # the model was trained on x0 + u
        y = model.continuous_view(y, g)[0]
    t0 = time.monotonic()
    gamma, se = estimate_gamma(model.denoiser, model.schedule, y, generator=g)
    return AnalyticVariance(gamma, se, data_variance(y)), n, time.monotonic() - t0


def evaluate_ode(model, data: torch.Tensor, *, scaling=None, generator: torch.Generator | None = None,
                 divergence: str = "auto", rtol: float = 1e-5, atol: float = 1e-5, batch_size: int | None = None,
                 labels: torch.Tensor | None = None) -> dict:
    """The probability-flow ODE likelihood of a DDPM on ``data`` (``dgm.evaluation.ode.ode_nll``), in data
    space like :func:`evaluate_nll`: ``ode_nll_nats``, ``ode_bits_per_dim`` with their ``*_se`` over examples,
    ``ode_hutchinson_se`` (the probes' share of the error; 0 with the exact divergence), ``ode_nfe`` (drift
    evaluations, summed over batches), ``ode_divergence`` and ``ode_t_start``. For dequantized discrete data
    it is the bound E_u[-log p(x0 + u)] - D log(2h) on -log P(x0), one draw of u per example (E37). A
    conditional model's class ``labels`` (N,) are passed as ``cond`` (the NLL of x given c). ``batch_size``
    (examples per ODE solve; default ``ODE_NUMBERS`` numbers, at most 1,000 examples) bounds the memory."""
    from dgm.evaluation.ode import ode_nll

    if not hasattr(model, "continuous_view"):
        raise ValueError(f"a {model.kind} has no probability-flow ODE; the ODE likelihood is for DDPMs")
    if len(data) == 0:
        raise ValueError("cannot evaluate an empty data set")
    D = data[0].numel()
    batch_size = batch_size or examples_per_call(ODE_NUMBERS, D, ODE_BATCH)
    if divergence == "auto":
        divergence = "exact" if D <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson"
    model.eval()
    device = next(model.parameters()).device
    values, hutch_var, nfe, t_start = [], 0.0, 0, None
    for k, batch in enumerate(data.split(batch_size)):
        y, offset = model.continuous_view(batch.to(device), generator)
        cond = model.labels(None if labels is None else labels[k * batch_size : k * batch_size + len(batch)],
                            len(batch), device=device)  # None: the null class of a conditional model
        nll, stats = ode_nll(model.denoiser, model.schedule, y, divergence=divergence, rtol=rtol, atol=atol,
                             generator=generator, return_stats=True, cond=cond)
        values.append(nll.cpu() + offset)
        hutch_var += (stats["hutchinson_se"] * len(batch)) ** 2  # se of a batch mean, back to a sum's variance
        nfe, t_start = nfe + stats["nfe"], stats["t_start"]
    mean, se = _mean_se(torch.cat(values), "the model's ODE NLL")
    if scaling is not None and scaling.bins is None:
        mean += float(scaling.log_abs_det())
    result = {"ode_nll_nats": mean, "ode_nll_nats_se": se, "ode_hutchinson_se": math.sqrt(hutch_var) / len(data),
              "ode_bits_per_dim": mean / (D * math.log(2)), "ode_bits_per_dim_se": se / (D * math.log(2)),
              "ode_nfe": nfe, "ode_divergence": divergence, "ode_t_start": t_start}
    _check_finite(result)
    return result


def data_nll(density, x: torch.Tensor, scaling) -> float:
    """The exact NLL (nats per example, data space) of model-space ``x`` under a known ``density``."""
    nll = _mean_se(-density.log_prob(x.double()), "the data's exact NLL")[0]
    return nll + (float(scaling.log_abs_det()) if scaling.bins is None else 0.0)


def evaluate_run(run_dir: Path, *, data: str | None = None, metrics=(), n_samples: int = 1000,
                 max_examples: int | None = None, seed: int = 0, sampler: str | None = None,
                 steps: int | None = None, device: str | torch.device | None = None, likelihood: str = "vlb",
                 variance: str | None = None, rtol: float = 1e-5, atol: float = 1e-5,
                 divergence: str = "auto", sample_kw: dict | None = None) -> dict:
    """``dgm eval``: NLL of a run's EMA model on its held-out split (or every example of ``data``).

    Returns a JSON-able dict with ``nll_nats`` (the variational bound), ``bits_per_dim`` and their ``*_se``,
    for a VAE ``elbo_nats``, for data with a known density ``data_nll_nats``, and the sample-quality
    ``metrics`` (``dgm.evaluation.metrics.quality_metrics``) of ``n_samples`` samples against a reference
    named in ``reference``: the run's ``dgm.evaluation.reference.reference_set`` (as ``dgm report`` uses), or
    every example of ``data``. ``likelihood``: "vlb" (the bound), "ode" (the probability-flow ODE NLL:
    :func:`evaluate_ode`'s keys) or "all" (both). ``variance`` overrides a DDPM's reverse variance in the
    bound ("fixed_small", "fixed_large", "analytic", "learned"); an analytic variance without a stored Gamma
    is estimated on the training data first (``gamma_examples``, ``gamma_seconds``). ``sample_kw`` go to the
    model's ``sample`` for the metrics (a DDPM's level ``grid`` or ``spacing``: ``dgm eval --grid``).
    ``max_examples`` limits the NLL evaluation, not the reference set of the metrics. A class-conditional
    run is evaluated given the examples' true labels (``"labels": "true"``; matched to the run's classes by
    name), or, for ``data`` without labels, with the null class (``"labels": "null class"``). ``device``: where the
    model runs ("auto": CUDA when available); seeded draws come from CPU generators, so a seed gives the same
    noise on every device.
    """
    from dgm.data import Scaling
    from dgm.data.spec import labels_in, load_run_data
    from dgm.runs import checkpoint as ckpt
    from dgm.runs.device import resolve_device
    from dgm.runs.samples import sample_model

    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    device = resolve_device(device)
    model, config = ckpt.load_model(Path(run_dir))
    model.to(device)
    scaling = Scaling.from_dict(config["scaling"])
    if variance is not None and not hasattr(model, "variance_for"):
        raise ValueError(f"--variance applies to a DDPM's bound; this run is a {model.kind}")
    dataset, conditional = None, getattr(model, "conditional", False)
    if data is None:
        dataset = load_run_data(config["data"])
        x, density, name = dataset.heldout, dataset.density, "heldout"
        labels = dataset.heldout_labels if conditional else None
    else:
        given = load_in_scaling(data, scaling)
        x, density, name = given.train, None, data
        names = config["data"].get("label_names") or [str(k) for k in range(model.num_classes or 0)]
        labels = labels_in(given, names, f"--data {data!r}") if conditional else None
    if tuple(x.shape[1:]) != tuple(scaling.shape):
        raise ValueError(f"--data {data!r} has examples of shape {tuple(x.shape[1:])}, the run was trained "
                         f"on {tuple(scaling.shape)}")
    examples = x if max_examples is None else x[:max_examples]
    labels = None if labels is None else labels[: len(examples)]
    g = torch.Generator().manual_seed(seed)
    result = {"kind": model.kind, "data": name, "n_examples": len(examples)}
    if conditional:
        result["labels"] = "null class" if labels is None else "true"
    chosen = variance or getattr(model, "variance", None)
    if chosen == "analytic" and model.analytic is None:
        train = (dataset or load_run_data(config["data"])).train
        estimate, n, seconds = estimate_analytic_variance(model, train, generator=torch.Generator().manual_seed(seed))
        model.set_analytic(estimate)
        result |= {"gamma_examples": n, "gamma_seconds": seconds}
    if chosen is not None:
        result["variance"] = chosen
    if likelihood in ("vlb", "all"):
        result |= evaluate_nll(model, examples, scaling=scaling, generator=g, variance=variance, labels=labels)
    if likelihood in ("ode", "all"):
        result |= evaluate_ode(model, examples, scaling=scaling, generator=torch.Generator().manual_seed(seed),
                               divergence=divergence, rtol=rtol, atol=atol, labels=labels)
    if density is not None:
        result["data_nll_nats"] = data_nll(density, examples, scaling)
    if metrics:
        from dgm.evaluation.metrics import quality_metrics
        from dgm.evaluation.reference import reference_set

        fake = sample_model(model, n_samples, seed=seed, sampler=sampler, steps=steps,
                            chunk=examples_per_call(SAMPLE_NUMBERS, math.prod(scaling.shape), SAMPLE_CHUNK),
                            **(sample_kw or {}))
        if data is None:
            real, result["reference"] = reference_set(dataset, n_samples, generator=g)
        else:
            real, result["reference"] = x, data  # every example of DATA, whatever max_examples says
        result |= quality_metrics(real, fake, kind=scaling.kind, names=list(metrics), generator=g)
    _check_finite(result)
    return result


def load_in_scaling(spec: str, scaling):
    """The data set ``spec`` mapped to model space with a run's ``scaling``: every example (and its label, if
    any) in ``train``."""
    from dgm.data import load_data

    return load_data(spec, seed=0, heldout_fraction=0.0, scaling=scaling)
