"""Likelihood evaluation (nats and bits per dim, in data space) and ``dgm eval`` of a run directory.

Models report nats per example in model space (docs/ARCHITECTURE.md). For continuous data the change of
variables x = (data - shift) / scale adds ``scaling.log_abs_det()`` = sum(log scale) to every negative
log-density; discrete data (``bins``) have probabilities, which the scaling does not change.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

DENSITY_KEYS = ("nll_nats", "elbo_nats")  # negative log-densities of x: they move with the scaling


@torch.no_grad()
def evaluate_nll(model, data: torch.Tensor, *, scaling=None, batch_size: int = 256,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean of ``model.evaluate`` over ``data`` (model space), batch by batch.

    With ``scaling`` the negative log-densities (``nll_nats``, ``elbo_nats``) are moved to data space
    (continuous data add ``scaling.log_abs_det()``), and ``bits_per_dim`` = nll_nats / (D ln 2) is added.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate an empty data set")
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    for batch in data.split(batch_size):
        for key, value in model.evaluate(batch.to(device), generator=generator).items():
            sums[key] = sums.get(key, 0.0) + float(torch.as_tensor(value, dtype=torch.float64).sum())
    result = {key: total / len(data) for key, total in sums.items()}
    if scaling is not None and scaling.bins is None:
        shift = float(scaling.log_abs_det())
        result |= {key: result[key] + shift for key in DENSITY_KEYS if key in result}
    D = data[0].numel()
    result["bits_per_dim"] = result["nll_nats"] / (D * math.log(2))
    for key, value in result.items():
        if not math.isfinite(value):
            raise FloatingPointError(f"the model's {key} is {value} on this data")
    return result


def data_nll(density, x: torch.Tensor, scaling) -> float:
    """The exact NLL (nats per example, data space) of model-space ``x`` under a known ``density``."""
    nll = -density.log_prob(x.double()).mean().item()
    return nll + (float(scaling.log_abs_det()) if scaling.bins is None else 0.0)


def evaluate_run(run_dir: Path, *, data: str | None = None, metrics=(), n_samples: int = 1000,
                 max_examples: int | None = None, seed: int = 0, sampler: str | None = None,
                 steps: int | None = None, device: str | torch.device | None = None) -> dict:
    """``dgm eval``: NLL of a run's EMA model on its held-out split (or every example of ``data``).

    Returns a JSON-able dict with ``nll_nats``, ``bits_per_dim``, for a VAE ``elbo_nats``, for data with a
    known density ``data_nll_nats``, and the sample-quality ``metrics``
    (``dgm.evaluation.metrics.quality_metrics``) of ``n_samples`` samples against a reference named in
    ``reference``: the run's ``dgm.evaluation.reference.reference_set`` (as ``dgm report`` uses), or every
    example of ``data``.
    ``max_examples`` limits the NLL evaluation, not the reference set of the metrics. ``device``: where the
    model runs ("auto": CUDA when available); seeded draws come from CPU generators, so a seed gives the same
    noise on every device.
    """
    from dgm.data import Scaling
    from dgm.data.spec import load_run_data
    from dgm.runs import checkpoint as ckpt
    from dgm.runs.device import resolve_device
    from dgm.runs.samples import sample_model

    device = resolve_device(device)
    model, config = ckpt.load_model(Path(run_dir))
    model.to(device)
    scaling = Scaling.from_dict(config["scaling"])
    if data is None:
        dataset = load_run_data(config["data"])
        x, density, name = dataset.heldout, dataset.density, "heldout"
    else:
        x, density, name = load_in_scaling(data, scaling), None, data
    if tuple(x.shape[1:]) != tuple(scaling.shape):
        raise ValueError(f"--data {data!r} has examples of shape {tuple(x.shape[1:])}, the run was trained "
                         f"on {tuple(scaling.shape)}")
    examples = x if max_examples is None else x[:max_examples]
    g = torch.Generator().manual_seed(seed)
    result = {"kind": model.kind, "data": name, "n_examples": len(examples)}
    result |= evaluate_nll(model, examples, scaling=scaling, generator=g)
    if density is not None:
        result["data_nll_nats"] = data_nll(density, examples, scaling)
    if metrics:
        from dgm.evaluation.metrics import quality_metrics
        from dgm.evaluation.reference import reference_set

        fake = sample_model(model, n_samples, seed=seed, sampler=sampler, steps=steps)
        if data is None:
            real, result["reference"] = reference_set(dataset, n_samples, generator=g)
        else:
            real, result["reference"] = x, data  # every example of DATA, whatever max_examples says
        result |= quality_metrics(real, fake, kind=scaling.kind, names=list(metrics), generator=g)
    return result


def load_in_scaling(spec: str, scaling) -> torch.Tensor:
    """Every example of the data set ``spec``, mapped to model space with a run's ``scaling``."""
    from dgm.data import load_data

    return load_data(spec, seed=0, heldout_fraction=0.0, scaling=scaling).train
