"""``DIR/analytic_variance.json``: the Gamma_i of an analytic reverse variance (Bao et al. 2022), estimated on
the run's training data after training, stored beside the checkpoint it belongs to.

JSON (readable, no code): ``{"step", "gamma", "gamma_se", "data_var", "examples", "seconds"}``; ``gamma`` has L + 1
entries (index = level, entry 0 unused). A file whose step differs from the weights' step is stale and is
ignored (``dgm eval --variance analytic`` then estimates Gamma again).
"""

from __future__ import annotations

import json
from pathlib import Path

from dgm.core.reverse import AnalyticVariance
from dgm.runs.atomic import atomic_write_bytes

__all__ = ["ANALYTIC", "load_analytic", "save_analytic"]

ANALYTIC = "analytic_variance.json"


def save_analytic(run_dir: Path, variance: AnalyticVariance, *, step: int, examples: int, seconds: float) -> None:
    """Write the estimated Gamma (and its standard errors) for the checkpoint at ``step``, atomically."""
    se = variance.gamma_se.tolist() if variance.gamma_se is not None else None
    record = {"step": int(step), "gamma": variance.gamma.tolist(), "gamma_se": se, "data_var": variance.data_var,
              "examples": int(examples), "seconds": float(seconds)}
    atomic_write_bytes(Path(run_dir) / ANALYTIC, (json.dumps(record) + "\n").encode())


def load_analytic(run_dir: Path, *, step: int) -> AnalyticVariance | None:
    """The stored Gamma of the checkpoint at ``step``, or None (no file, a stale one, or an unreadable one)."""
    path = Path(run_dir) / ANALYTIC
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if int(record["step"]) != int(step):
            return None
        gamma = [float(g) for g in record["gamma"]]
        se = None if record.get("gamma_se") is None else [float(v) for v in record["gamma_se"]]
        data_var = None if record.get("data_var") is None else float(record["data_var"])
        return AnalyticVariance(gamma, se, data_var)
    except (OSError, ValueError, KeyError, TypeError):
        return None
