"""The samplers driven by eps* against the mixture's exact statistics (EQUATIONS.md E39-E41) as rows of
``dgm verify``, with each sampler's discretization bias, measured once (``measure_sampler_bias``)."""

from __future__ import annotations

import math

import torch

from dgm.core.oracle import GaussianMixture
from dgm.core.schedule import Schedule
from dgm.evaluation.verify.rows import Row, Z, demo_mixture, oracle_denoiser
from dgm.samplers import sample

__all__ = ["BIAS_LEVELS", "FEATURES", "SAMPLER_BIAS", "SAMPLER_RUNS", "check_samplers", "measure_sampler_bias"]

SAMPLER_RUNS = (("ancestral", None), ("ddim", 50), ("dpm++2m", 10))  # NFE: L (every level), 50, 10
FEATURES = ("mean x1", "mean x2", "cov 11", "cov 12", "cov 22", "weight 1", "weight 2", "weight 3")
BIAS_LEVELS = 1000
# Discretization bias of each statistic of FEATURES at L = 1000 with eps* (sampler mean - exact value) and its
# standard error, over 4 seeds x 100,000 draws (2026-12-01, printed by
#   OMP_NUM_THREADS=1 .venv/bin/python -c "from dgm.evaluation.verify import measure_sampler_bias as m; m()"
# with the per-seed values, which agree with these SEs). DDIM at 50 NFE under-disperses (cov 11 -0.043 = 20 SE,
# cov 22 -0.038); DPM-Solver++(2M) at 10 NFE over-disperses (cov 22 +0.046, cov 11 +0.022) and shifts mass
# between modes (weight 1 -0.006); ancestral sampling over all 1000 levels is within 2.6 SE of exact. A row
# allows |error| <= |bias| + Z sqrt(SE^2 + SE_bias^2): its measured value is (|error| - |bias|) / that root.
SAMPLER_BIAS = {
    "ancestral": ((-0.00036, 0.00016, -0.00503, -0.00152, -0.00395, -0.00029, 0.00068, -0.00039),
                  (0.00159, 0.00159, 0.00218, 0.00091, 0.00153, 0.00063, 0.00079, 0.00072)),
    "ddim": ((-0.00025, -0.00060, -0.04274, -0.01185, -0.03799, -0.00390, 0.00253, 0.00137),
             (0.00156, 0.00156, 0.00213, 0.00088, 0.00149, 0.00063, 0.00079, 0.00072)),
    "dpm++2m": ((0.00804, 0.00038, 0.02232, 0.00909, 0.04556, -0.00593, 0.00449, 0.00144),
                (0.00161, 0.00163, 0.00225, 0.00095, 0.00160, 0.00063, 0.00079, 0.00072)),
}


def _features(gm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Per-draw statistics whose expectations under the mixture are exact: x, the products (x - mean)_a (x -
    mean)_b for a <= b, and the responsibilities r_k(x), whose mean is pi_k (written out, not the oracle's)."""
    mean = (gm.weights[:, None] * gm.means).sum(0)
    c = x - mean
    a, b = torch.triu_indices(gm.D, gm.D)
    diff = x[:, None] - gm.means[None]
    quad = torch.einsum("nkd,kde,nke->nk", diff, torch.linalg.inv(gm.covs), diff)
    r = torch.softmax(torch.log(gm.weights) - 0.5 * torch.logdet(gm.covs) - 0.5 * quad, dim=1)
    return torch.cat([x, c[:, a] * c[:, b], r], 1)


def _exact_features(gm: GaussianMixture) -> torch.Tensor:
    """E x = sum pi_k m_k, Cov x = sum pi_k (S_k + m_k m_k^T) - E x E x^T, E r_k = pi_k."""
    mean = (gm.weights[:, None] * gm.means).sum(0)
    second = (gm.weights[:, None, None] * (gm.covs + gm.means[:, :, None] * gm.means[:, None, :])).sum(0)
    a, b = torch.triu_indices(gm.D, gm.D)
    return torch.cat([mean, (second - mean[:, None] * mean[None])[a, b], gm.weights])


def _sampler_draws(gm, s: Schedule, name: str, nfe: int, n: int, g) -> torch.Tensor:
    return sample(oracle_denoiser(gm, s), s, (n, gm.D), sampler=name, steps=nfe, generator=g, dtype=torch.float64)


def check_samplers(gm, g, n, levels, runs=SAMPLER_RUNS) -> list[Row]:
    """Each sampler of ``runs`` driven by eps*: 8 statistics of its draws against their exact values under the
    mixture, the mean and covariance in closed form and each mode's weight E r_k(x) = pi_k."""
    s = Schedule.linear(levels)
    exact = _exact_features(gm)
    rows = []
    for name, steps in runs:
        nfe = levels if steps is None else min(steps, levels)
        f = _features(gm, _sampler_draws(gm, s, name, nfe, n, g))
        err, se = f.mean(0) - exact, f.std(0) / math.sqrt(n)
        if levels == BIAS_LEVELS:
            bias, bias_se = (torch.tensor(v, dtype=torch.float64) for v in SAMPLER_BIAS[name])
        else:  # no bias measured at this L: none allowed
            bias = bias_se = torch.zeros_like(err)
        excess = (err.abs() - bias.abs()) / torch.sqrt(se**2 + bias_se**2)
        k = int(excess.argmax())
        note = f"bias {bias[k]:+.4f}" if levels == BIAS_LEVELS else f"no bias allowed (measured at L={BIAS_LEVELS})"
        rows.append(Row(f"E39-E41 {name}, {nfe} NFE, eps*: mean, cov, mode weights vs exact; worst {FEATURES[k]} "
                        f"{err[k]:+.4f}, {note}", excess.max().item(), f"(|err|-|bias|)/SE < {Z:.2f}",
                        excess.max().item() < Z, key=f"sampler-{name}",
                        stats=len(FEATURES)))
    return rows


def measure_sampler_bias(n: int = 100_000, seeds=(100, 101, 102, 103), levels: int = BIAS_LEVELS) -> dict:
    """Measure each sampler's bias in the statistics of ``check_samplers`` (the numbers of SAMPLER_BIAS): print,
    per sampler, the error of every statistic per seed, their mean over all draws and its standard error."""
    gm, s = demo_mixture(), Schedule.linear(levels)
    exact, out = _exact_features(gm), {}
    for name, steps in SAMPLER_RUNS:
        nfe = levels if steps is None else min(steps, levels)
        f = torch.cat([_features(gm, _sampler_draws(gm, s, name, nfe, n, torch.Generator().manual_seed(k)))
                       for k in seeds])
        per_seed = f.reshape(len(seeds), n, -1).mean(1) - exact
        bias, se = f.mean(0) - exact, f.std(0) / math.sqrt(f.shape[0])
        out[name] = (bias.tolist(), se.tolist())
        print(f"{name} ({nfe} NFE, L={levels}, {len(seeds)} seeds x {n}):")
        for j, feat in enumerate(FEATURES):
            seeds_txt = " ".join(f"{v:+.5f}" for v in per_seed[:, j].tolist())
            print(f"  {feat:<9} bias {bias[j]:+.5f}  se {se[j]:.5f}  per seed {seeds_txt}")
    return out

