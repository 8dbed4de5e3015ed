"""How a run's config.json records its data set, and loading it back."""

from __future__ import annotations

from pathlib import Path

from dgm.data.builtin_sets import BUILTINS
from dgm.data.dataset import DataSet, load_data

__all__ = ["data_spec", "load_run_data"]


def data_spec(spec: str, heldout_last: int | None = None) -> dict:
    """How config.json records the data: a built-in name, or an existing path made absolute, and the split
    (a seeded random 10% held out, or the last ``heldout_last`` examples, e.g. MNIST's last 1,000)."""
    p = Path(spec)
    # A built-in name wins over a folder of the same name in the working directory (write ./name for that).
    resolved = spec if spec in BUILTINS or not p.exists() else str(p.resolve())
    out = {"spec": resolved, "seed": 0, "heldout_fraction": 0.1}
    if heldout_last is not None:
        out["heldout_last"] = heldout_last
    return out


def load_run_data(spec: dict) -> DataSet:
    """Load the data set a run's config.json names."""
    return load_data(spec["spec"], seed=spec.get("seed", 0),
                     heldout_fraction=spec.get("heldout_fraction", 0.1), heldout_last=spec.get("heldout_last"))
