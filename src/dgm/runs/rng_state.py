"""The global RNG states (torch, numpy, python) as tensors, ints, floats and lists only, so that the trainer state
that holds them loads with ``torch.load(weights_only=True)``; ``dgm.runs.checkpoint`` re-exports both."""

from __future__ import annotations

import torch

__all__ = ["get_rng_state", "set_rng_state"]


def get_rng_state() -> dict:
    """The torch, numpy and python global RNG states."""
    import random

    import numpy as np

    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state),
                   "gauss_next": [] if gauss_next is None else [float(gauss_next)]},
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``get_rng_state`` returned."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"][0] if p["gauss_next"] else None))
