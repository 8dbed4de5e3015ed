"""``load_data(spec) -> DataSet``: a built-in set, an array, a file or a folder, split and scaled to model space.

``DataSet.train`` and ``DataSet.heldout`` are float32 tensors in model space, x = (data - shift) / scale,
with the ``Scaling`` (``dgm.data.scaling``) that maps samples back to data space. The held-out split is a
seeded random fraction of the examples or the last N of them (file order, e.g. MNIST's last 1,000).
Sources: ``dgm.data.builtin_sets`` (the built-ins) and ``dgm.data.files`` (arrays, image folders, IDX).
Class labels, where the source has them (``dgm.data.labels``), are split with their examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dgm.data.builtin_sets import BUILTINS, builtin_set
from dgm.data.files import check_array, read_path
from dgm.data.labels import encode_labels
from dgm.data.scaling import Scaling, fit_scaling, from_nchw, to_nchw

__all__ = ["DataSet", "load_data", "split_indices"]


def _check_labels(labels, n: int, name: str, n_classes: int | None) -> None:
    if labels is None:
        return
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (n,):
        what = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"DataSet {name} must be a LongTensor of shape ({n},) or None, got {what}")
    if n and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
        raise ValueError(f"DataSet {name} must lie in 0..{'K-1' if n_classes is None else n_classes - 1}, "
                         f"got values in {int(labels.min())}..{int(labels.max())}")


@dataclass(frozen=True, eq=False)
class DataSet:
    """A data set in model space: examples, optional class labels, their ``Scaling`` and known density.

    train (N, ...) and heldout (M, ...): float32 tensors in model space. scaling: the map back to data space.
    density: the exact density in model space (a ``GaussianMixture`` for gmm2d), else None.
    train_labels (N,) and heldout_labels (M,): class indices (LongTensor, values 0..K-1) of the same
    examples, split with them, or None for unlabelled data. label_names: the K class names (index k is class
    k), or None. ``load_data`` fills them from the source (``dgm.data.labels``).
    """

    name: str
    train: Tensor
    heldout: Tensor
    scaling: Scaling
    density: object | None = field(default=None, repr=False)
    train_labels: Tensor | None = field(default=None, repr=False)
    heldout_labels: Tensor | None = field(default=None, repr=False)
    label_names: list[str] | None = None

    def __post_init__(self):
        if (self.train_labels is None) != (self.heldout_labels is None):
            raise ValueError("DataSet: train_labels and heldout_labels must both be given or both be None, got "
                             f"{'a tensor' if self.train_labels is not None else None} and "
                             f"{'a tensor' if self.heldout_labels is not None else None}")
        names = self.label_names
        if names is not None and (not isinstance(names, list) or not all(isinstance(s, str) for s in names)):
            raise ValueError(f"DataSet label_names must be a list of str or None, got {names!r}")
        n_classes = None if names is None else len(names)
        _check_labels(self.train_labels, len(self.train), "train_labels", n_classes)
        _check_labels(self.heldout_labels, len(self.heldout), "heldout_labels", n_classes)

    @property
    def bins(self) -> int | None:
        return self.scaling.bins

    @property
    def shape(self) -> tuple[int, ...]:
        return self.scaling.shape

    @property
    def num_classes(self) -> int | None:
        """K, the number of classes of labelled data (len(label_names), else the largest label + 1); None
        for unlabelled data."""
        if self.train_labels is None:
            return None
        if self.label_names is not None:
            return len(self.label_names)
        return int(torch.cat([self.train_labels, self.heldout_labels]).max()) + 1

    @property
    def dim(self) -> int:
        """D, the numbers per example (C*H*W for images)."""
        return math.prod(self.scaling.shape)


def split_indices(n: int, *, seed: int, fraction: float, last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, heldout) of ``n`` examples, each sorted: the last ``last`` examples held out, or a
    random ``fraction`` of them drawn with ``seed`` (at least one each way when ``fraction`` > 0 and n >= 2)."""
    if last is not None:
        if not 0 <= last < n:
            raise ValueError(f"heldout_last={last} must be in [0, {n}) for {n} examples")
        return np.arange(n - last), np.arange(n - last, n)
    n_held = round(n * fraction)
    if fraction > 0 and n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def load_data(spec, *, seed: int = 0, heldout_fraction: float = 0.1, heldout_last: int | None = None,
              scaling: Scaling | None = None, labels=None, label_names: list[str] | None = None) -> DataSet:
    """Load a built-in set (see ``BUILTINS``), a path or an array into model space.

    Args:
        spec: built-in name, path (``.npy``, ``.npz``, ``*-idx3-ubyte[.gz]``, folder of images) or ndarray.
        seed: seeds the held-out split (a random ``heldout_fraction`` of the examples).
        heldout_fraction: in [0, 1).
        heldout_last: if set, the last ``heldout_last`` examples (file order) are held out instead.
        scaling: reuse this scaling (e.g. a trained run's) instead of fitting one.
        labels: class labels (N,) of the examples (integers 0..K-1 or strings, ``dgm.data.labels``), split
            with them into ``train_labels`` and ``heldout_labels``; None (the default) takes the source's
            labels: gmm2d's components, the digits, y of an .npz, MNIST's labels file, class folders.
        label_names: the K class names (default: "0".."K-1" for integers, the sorted strings).

    Raises:
        ValueError naming the problem: unknown built-in, missing path, bad shape, dtype or values.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    density, fixed, found, found_names = None, None, None, None
    if isinstance(spec, np.ndarray):
        name, raw = "array", spec
    elif str(spec) in BUILTINS:
        name = str(spec)
        source = builtin_set(name)
        raw, fixed, density = source.raw, source.scaling, source.density
        found, found_names = source.labels, source.label_names
    else:
        path = Path(spec)
        if not path.exists():
            if path.suffix or len(path.parts) > 1:
                raise ValueError(f"no such file or folder: '{path}'")
            raise ValueError(f"unknown data set {str(spec)!r}; built-ins are {', '.join(BUILTINS)}, "
                             "or give a path to an .npy/.npz file, an MNIST IDX file or an image folder")
        name = path.name
        raw, found, found_names = read_path(path)
    where = name if isinstance(spec, np.ndarray) or name in BUILTINS else f"'{spec}'"
    kind, layout = check_array(raw, where) if fixed is None else (fixed.kind, fixed.layout)
    if labels is None and found is not None:
        labels, label_names = found, label_names or found_names
    if labels is not None:
        labels, label_names = encode_labels(labels, len(raw), where, label_names)
    train_idx, held_idx = split_indices(len(raw), seed=seed, fraction=heldout_fraction, last=heldout_last)
    if scaling is None:
        scaling = fixed or fit_scaling(raw, kind, layout, train_idx)
    elif scaling.kind != kind:
        raise ValueError(f"{where} holds {kind} data but the given scaling is for {scaling.kind} data")
    if kind == "image" and layout != scaling.layout:
        raw = from_nchw(to_nchw(raw, layout), scaling.layout)
    x = scaling.to_model(raw)
    if density is not None:
        shift, scale = scaling.shift_scale()
        density = density.affine(torch.from_numpy(1.0 / scale), torch.from_numpy(-shift / scale))
    return DataSet(name, x[train_idx].contiguous(), x[held_idx].contiguous(), scaling, density,
                   train_labels=None if labels is None else labels[train_idx],
                   heldout_labels=None if labels is None else labels[held_idx], label_names=label_names)
