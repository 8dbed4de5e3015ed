"""What every check of ``dgm verify`` shares: the table's ``Row``, the one global Z, the round-off tolerance,
the schedule arithmetic written out from beta, the row builders, and the demo mixture with eps* as a denoiser.

Tolerances. A Monte Carlo row reports the worst |z| of its statistics, z = (estimate - reference) / its
standard error at the row's sample size, and passes below Z. Z is one global number: a run computes
N_STATS z-statistics, and Z = Phi^-1(1 - FALSE_ALARM / (2 N_STATS)) keeps the chance that any of them
exceeds Z by luck below FALSE_ALARM = 1e-4 per run (union bound; 45 statistics give Z = 4.73). Where an
estimator has a known bias (a sampler's discretization at a given NFE, the ODE solver's tolerance) the bias
was measured once and is stated with the command that measured it. A deterministic row compares float64
computations: its tolerance ROUNDOFF is derived from the round-off of the computations it compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from dgm.core.oracle import GaussianMixture
from dgm.core.schedule import Schedule

__all__ = ["CHECKS", "ERRATA", "FALSE_ALARM", "N_STATS", "ROUNDOFF", "Row", "Z", "demo_mixture", "det_row",
           "erratum", "oracle_denoiser", "randn", "tables", "z_gauss", "z_row"]

CHECKS = "checks of dgm"
ERRATA = "errata of the chapter-2 summary post (illustrations, not counted)"

# z-statistics per run: 3 forward rows x 2, E23, 3 loss/bound rows, V4, 3 samplers x 8 (35), and the
# likelihood rows: Gamma at 4 levels, the ODE NLL, the analytic bound x 2 (7), and the conditioning rows: the
# tilted sampler, w = 0 ancestral sampling, CFG against the tilted target (3)
N_STATS = 45
FALSE_ALARM = 1e-4  # chance per run that some correct row fails by Monte Carlo luck (union bound)
Z = NormalDist().inv_cdf(1 - FALSE_ALARM / (2 * N_STATS))  # 4.73
# Deterministic rows compare float64 results. Their largest round-off: the cancellation in 1 - alpha_bar_i^2
# amplifies 2^-53 = 1.1e-16 by at most 1 / (1 - alpha_bar_1^2) = 1e4 (linear L=1000; 1.6e3 for cosine
# L=100), and a sum of 2^16 grid weights with log-weights up to 1e3 loses about 1e3 * 2^-53 = 1.1e-13 per
# weight: both stay below 1e-11 (measured: 3e-14 at most). ROUNDOFF = 1e-9 is 100x that bound, and 1e5x
# below the formula errors these rows are there to catch (1e-4 relative or more: a dropped 1/alpha_i at
# beta_i^2 = 1e-4, the summary post's sigma2).
ROUNDOFF = 1e-9


@dataclass(frozen=True)
class Row:
    """One row: the claim, the measured value, its tolerance (as text), whether it passed, its section
    (``CHECKS`` or ``ERRATA``; for an erratum, ``passed`` means the post's formula was shown to fail), a short
    ``key`` naming the row, and ``stats``, the number of z-statistics a Monte Carlo check is the worst of."""

    claim: str
    measured: float
    tolerance: str
    passed: bool
    section: str = CHECKS
    key: str = ""
    stats: int = 0


def demo_mixture() -> GaussianMixture:
    """A 2-D mixture with anisotropic components and unequal weights, used by the checks."""
    return GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-1.5, 0.0], [1.0, 1.0], [0.5, -1.2]],
        [[[0.05, 0.0], [0.0, 0.05]], [[0.20, 0.08], [0.08, 0.10]], [[0.02, -0.01], [-0.01, 0.15]]],
    )


def tables(s: Schedule) -> tuple[list[float], list[float]]:
    """alpha_i = sqrt(1 - beta_i^2) and alpha_bar_i = prod_{k<=i} alpha_k from beta alone (E17, E19), in
    Python floats: independent of the Schedule's own tables."""
    alpha = [math.sqrt(1.0 - b * b) for b in s.beta.tolist()]
    abar = [1.0]
    for a in alpha[1:]:
        abar.append(abar[-1] * a)
    return alpha, abar


def randn(g, *shape) -> torch.Tensor:
    """Standard normal draws (float64) from the generator ``g``."""
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def z_gauss(x: torch.Tensor, mean: float, var: float) -> list[float]:
    """z of the sample mean and variance of draws x against N(mean, var): SE = sqrt(var / n) and
    var sqrt(2 / (n - 1)) (exact for Gaussian draws)."""
    n = x.numel()
    return [(x.mean().item() - mean) / math.sqrt(var / n),
            (x.var().item() - var) / (var * math.sqrt(2 / (n - 1)))]


def z_row(key: str, claim: str, z: list[float]) -> Row:
    """A Monte Carlo check: passes when its worst |z| is below Z; counts len(z) statistics."""
    worst = max(abs(v) for v in z)
    return Row(claim, worst, f"|z| < Z = {Z:.2f}", worst < Z, key=key, stats=len(z))


def det_row(key: str, claim: str, err: float) -> Row:
    """A deterministic check: passes when the float64 error is below ROUNDOFF."""
    return Row(claim, err, f"< {ROUNDOFF:.0e} (round-off)", err < ROUNDOFF, key=key)


def erratum(key: str, claim: str, measured: float, tolerance: str, shown: bool) -> Row:
    """An erratum of the summary post: ``shown`` when the post's formula fails where dgm's passes."""
    return Row(claim, measured, tolerance, shown, section=ERRATA, key=key)


def oracle_denoiser(gm: GaussianMixture, s: Schedule):
    """eps* as a denoiser eps_fn(x, i); one level per call (as the samplers and the ODE call it) takes the
    oracle's fast path, at that level as an int or, for fractional levels, a float."""

    def eps_fn(x, i):
        if i.ndim == 1 and bool((i == i[0]).all()):
            return gm.eps_star(s, x, i[0].item())
        return gm.eps_star(s, x, i)

    return eps_fn
