"""``run_checks``, the whole table of ``dgm verify`` (every group of rows, one generator), and
``format_table``, its plain-text form."""

from __future__ import annotations

import torch

from dgm.evaluation.verify.conditioning import check_class_eps_star, check_condition, check_guidance
from dgm.evaluation.verify.kernels import (
    check_eps_star,
    check_forward,
    check_mean,
    check_posterior,
    check_reverse_kernel,
    check_theorem,
)
from dgm.evaluation.verify.likelihood import check_analytic_bound, check_eps_star_divergence, check_gamma, check_ode
from dgm.evaluation.verify.losses import check_losses, check_vae
from dgm.evaluation.verify.rows import CHECKS, ERRATA, Row, demo_mixture
from dgm.evaluation.verify.samplers import check_samplers

__all__ = ["format_table", "run_checks"]


def run_checks(*, n: int = 20_000, levels: int = 1000, seed: int = 0, progress=None) -> list[Row]:
    """Run every check; ``n`` Monte Carlo draws per check (>= 100; the likelihood rows cap theirs, see
    ``dgm.evaluation.verify.likelihood``; the CFG rows use their own number, see
    ``dgm.evaluation.verify.conditioning``), ``levels`` L of the sampler checks (10..100000). ``progress(rows)``,
    if given, is called with the rows so far after each group of checks."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 100:
        raise ValueError(f"n (Monte Carlo draws per check) must be an integer >= 100, got {n!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 10 <= levels <= 100_000:
        raise ValueError(f"levels must be an integer between 10 and 100000, got {levels!r}")
    g = torch.Generator().manual_seed(seed)
    gm = demo_mixture()
    rows: list[Row] = []
    steps = [
        lambda: check_forward(g, n),
        check_posterior,
        lambda: check_reverse_kernel(gm, g, n),
        lambda: check_theorem(gm, g, n),
        lambda: check_eps_star(gm, g, n),
        lambda: check_mean(g),
        lambda: check_losses(gm, g, n),
        lambda: check_vae(g, n),
        lambda: check_samplers(gm, g, n, levels),
        lambda: check_gamma(gm, g, n),
        lambda: check_eps_star_divergence(gm, g),
        lambda: check_ode(gm, g, n),
        lambda: check_analytic_bound(gm, g, n),
        lambda: check_class_eps_star(gm, g, n),
        lambda: check_guidance(g),
        lambda: check_condition(g),
    ]
    for fn in steps:
        rows.extend(fn())
        if progress is not None:
            progress(rows)
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows as plain text, one block per section: claim, measured value, tolerance, and PASS/FAIL (checks)
    or shown/NOT SHOWN (errata: whether the post's formula failed where dgm's passes)."""
    width = max(len(r.claim) for r in rows)
    lines: list[str] = []
    for section, ok, bad in ((CHECKS, "PASS", "FAIL"), (ERRATA, "shown", "NOT SHOWN")):
        part = [r for r in rows if r.section == section]
        if not part:
            continue
        if lines:
            lines.append("")
        lines += [f"{section}:", f"{'claim':<{width}}  {'measured':>10}  {'tolerance':<25}  result",
                  "-" * (width + 49)]
        lines += [f"{r.claim:<{width}}  {r.measured:>10.4g}  {r.tolerance:<25}  {ok if r.passed else bad}"
                  for r in part]
    return "\n".join(lines)
