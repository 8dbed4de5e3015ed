"""Class labels of a data set: checking and encoding them, and finding them beside the examples.

Labels are one class index per example, 0..K-1, with K class names (index k is class k):
- integer labels keep their values; their names are "0".."K-1" with K = the largest label + 1;
- string labels become the positions of their values in the sorted list of distinct values, which are the
  names (so class folders "cat", "dog" are 0 and 1);
- floats, booleans, negative values, a wrong count, object arrays and more than ``MAX_CLASSES`` classes (an
  absurd label such as 10**12 would otherwise ask for 10**12 class names) are refused with one line naming
  the file (or source) and the bad value.

Where the loaders find them (``dgm.data.files``): ``y`` beside ``x`` in an ``.npz``; the labels file beside
MNIST images (``*-images-idx3-ubyte[.gz]`` -> ``*-labels-idx1-ubyte[.gz]``); the class subfolders of an image
folder. Built-ins: ``dgm.data.builtin_sets``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["MAX_CLASSES", "NO_LABELS_HINT", "encode_labels", "idx_labels_path", "integer_names"]

MAX_CLASSES = 1 << 16  # 65,536 classes (ImageNet-21k has 21,841); every class costs a name and a network row

NO_LABELS_HINT = ("give an .npz with arrays x and y, a folder of class folders, MNIST images with their "
                  "*-labels-idx1-ubyte file beside them, or the built-in gmm2d or digits")


def integer_names(k: int) -> list[str]:
    """The names of integer classes 0..k-1: "0", "1", ..."""
    return [str(c) for c in range(k)]


def encode_labels(labels, n: int, where: str, names: list[str] | None = None) -> tuple[Tensor, list[str]]:
    """``(LongTensor (n,), names)``: the class indices of ``n`` examples and the K class names.

    ``labels``: integers 0..K-1 or strings (see the module docstring). With ``names`` given, integer labels
    must lie in 0..len(names)-1 and string labels must be among ``names``. ValueError naming ``where`` and
    the bad value otherwise.
    """
    a = np.asarray(labels)
    if a.dtype.kind in "US":
        if a.shape != (n,):
            raise ValueError(f"{where}: labels must be {n} integers or strings (one per example), got shape {a.shape}")
        values = a.astype(str)
        if names is None:
            names = sorted(set(values.tolist()))
        if len(names) > MAX_CLASSES:
            raise ValueError(f"{where}: {len(names):,} distinct labels; dgm takes at most {MAX_CLASSES:,} classes")
        order = {name: k for k, name in enumerate(names)}
        unknown = next((v for v in values.tolist() if v not in order), None)
        if unknown is not None:
            raise ValueError(f"{where}: label {unknown!r} is not one of the class names {names}")
        return torch.tensor([order[v] for v in values.tolist()], dtype=torch.int64), list(names)
    if a.shape != (n,) or a.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be {n} integers (one per example), got {a.dtype} of shape {a.shape}")
    if n and a.min() < 0:
        raise ValueError(f"{where}: labels must be class indices >= 0, got {a.min()}")
    k = int(a.max()) + 1 if n else 0
    if k > MAX_CLASSES:
        raise ValueError(f"{where}: label {k - 1} would make {k:,} classes; dgm takes at most {MAX_CLASSES:,} "
                         "(labels are class indices 0..K-1)")
    if names is None:
        names = integer_names(k)
    elif k > len(names):
        raise ValueError(f"{where}: labels must lie in 0..{len(names) - 1} ({len(names)} class names), got {k - 1}")
    return torch.from_numpy(a.astype(np.int64)), list(names)


def idx_labels_path(images: Path) -> Path | None:
    """The MNIST labels file beside an images file (``t10k-images-idx3-ubyte.gz`` ->
    ``t10k-labels-idx1-ubyte.gz``, gzipped or not), or None where there is none."""
    name = images.name
    lower = name.lower()
    at = lower.find("images-idx3-ubyte")
    if at < 0:
        return None
    stem = name[:at] + "labels-idx1-ubyte"
    for suffix in (name[at + len("images-idx3-ubyte"):], ".gz", ""):
        candidate = images.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None
