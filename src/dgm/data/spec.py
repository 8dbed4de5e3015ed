"""How a run's config.json records its data set, and loading it back.

A class-conditional run also records its classes: ``num_classes`` and ``label_names`` (index k is class k),
so that a class can be named later (``class_index``) and a changed data set is caught on loading. Runs of
unconditional models, and config files written before labels existed, have neither key.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dgm.data.builtin_sets import BUILTINS
from dgm.data.dataset import DataSet, load_data
from dgm.data.labels import NO_LABELS_HINT

__all__ = ["class_index", "data_spec", "labels_in", "load_run_data", "with_labels"]


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


def with_labels(spec: dict, data: DataSet) -> dict:
    """``spec`` with the classes of ``data`` (``num_classes``, ``label_names``), for a class-conditional run;
    ValueError if ``data`` has no class labels."""
    if data.num_classes is None:
        raise ValueError(f"--data {spec.get('spec', data.name)!r} has no class labels; {NO_LABELS_HINT}")
    names = data.label_names or [str(k) for k in range(data.num_classes)]
    return dict(spec, num_classes=data.num_classes, label_names=list(names))


def load_run_data(spec: dict) -> DataSet:
    """Load the data set a run's config.json names; where it records classes, the data must still have them."""
    data = load_data(spec["spec"], seed=spec.get("seed", 0),
                     heldout_fraction=spec.get("heldout_fraction", 0.1), heldout_last=spec.get("heldout_last"))
    if "num_classes" in spec:
        recorded = (spec["num_classes"], spec.get("label_names"))
        now = (data.num_classes, data.label_names)
        if now[0] is None or (recorded[1] is not None and list(recorded[1]) != list(now[1] or [])):
            raise ValueError(f"the data {spec['spec']!r} changed since the run was trained: config.json records the "
                             f"classes {recorded[1]}, the data now has {now[1]}")
    return data


def class_index(spec: dict, name: str) -> int:
    """The index of the class ``name`` of a run whose config.json records the data ``spec``: a class name
    first, else an integer index 0..K-1 (so with classes "1", "10", "2", "2" is the name, index 2).

    ValueError for a run without classes or an unknown class, listing the classes.
    """
    names = spec.get("label_names")
    if names is None and "num_classes" in spec:
        names = [str(k) for k in range(spec["num_classes"])]
    if names is None:
        raise ValueError(f"the data {spec.get('spec')!r} of this run has no classes (it was trained without "
                         "--conditional)")
    text = str(name)
    if text in names:
        return names.index(text)
    if text.strip().lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    raise ValueError(f"unknown class {text!r}; the classes are {shown} (or an index 0..{len(names) - 1})")


def labels_in(data: DataSet, names: list[str], where: str) -> torch.Tensor | None:
    """The labels of ``data.train`` as indices into a run's class ``names``, matched by name (``dgm eval --data``
    loads every example into ``train``); None for unlabelled data. ValueError naming a class the run lacks."""
    if data.train_labels is None:
        return None
    own = data.label_names or [str(k) for k in range(data.num_classes)]
    unknown = [n for n in own if n not in names]
    if unknown:
        raise ValueError(f"{where} has the class {unknown[0]!r}, which the run was not trained on (its classes: "
                         f"{', '.join(names)})")
    to_run = torch.tensor([names.index(n) for n in own], dtype=torch.int64)
    return to_run[data.train_labels]
