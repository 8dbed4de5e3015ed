"""The built-in data sets: four 2-D toys (N = 20,000) and scikit-learn's 8x8 digits.

- ``gmm2d``: 8 equally weighted Gaussians with means on the circle of radius 4 (angles 2 pi k / 8),
  each elongated along the circle (std 0.5 tangential, 0.2 radial); its exact density comes with it
  (a ``GaussianMixture`` in data space);
- ``moons``: two interleaved half circles with Gaussian noise of std 0.05;
- ``swissroll``: (t cos t, t sin t), t uniform in [1.5 pi, 4.5 pi], Gaussian noise of std 0.3;
- ``checkerboard``: uniform on the 8 dark squares of a 4x4 board covering [-2, 2]^2;
- ``digits``: the 1,797 8x8 digits, gray levels 0..16, with their fixed scaling x = k / 8 - 1 (17 bins).

The toy sets are one fixed draw (seed ``TOY_SEED``); the seed of ``load_data`` only picks the split.
Class labels: gmm2d's are the components the points were drawn from (classes "0".."7", component k at
angle 2 pi k / 8), digits' the digits (scikit-learn's targets, classes "0".."9"); the other toys have none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dgm.data.labels import integer_names
from dgm.data.scaling import Scaling

__all__ = ["BUILTINS", "BuiltinSet", "builtin_set", "gmm2d_parameters"]

BUILTINS = ("gmm2d", "moons", "swissroll", "checkerboard", "digits")
N_TOY = 20_000
TOY_SEED = 0


@dataclass(frozen=True, eq=False)
class BuiltinSet:
    """A built-in set as stored: raw data-space array, its fixed scaling (or None: fit one), its exact
    density in data space (or None), and its class labels (N,) with their names (or None)."""

    raw: np.ndarray
    scaling: Scaling | None = None
    density: object | None = None
    labels: np.ndarray | None = None
    label_names: list[str] | None = None

    def __post_init__(self):
        if not isinstance(self.raw, np.ndarray) or self.raw.ndim < 2:
            raise ValueError(f"a built-in set holds an array (N, ...), got {type(self.raw).__name__}")


def builtin_set(name: str) -> BuiltinSet:
    """The raw array, fixed scaling and known density of the built-in set ``name`` (see ``BUILTINS``)."""
    rng = np.random.default_rng(TOY_SEED)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images[:, None]  # (1797, 1, 8, 8) float64, values 0..16
        scaling = Scaling("image", images.shape[1:], 8.0, 8.0, "float64", bins=17, layout="NCHW")
        return BuiltinSet(images, scaling, labels=digits.target, label_names=[str(t) for t in digits.target_names])
    elif name == "gmm2d":
        weights, means, covs = gmm2d_parameters()
        comp = rng.choice(len(weights), size=N_TOY, p=weights)
        z = rng.standard_normal((N_TOY, 2))
        x = means[comp] + np.einsum("nij,nj->ni", np.linalg.cholesky(covs)[comp], z)
        from dgm.core.oracle import GaussianMixture

        density = GaussianMixture(*(torch.from_numpy(a) for a in (weights, means, covs)))
        return BuiltinSet(x, density=density, labels=comp, label_names=integer_names(len(weights)))
    elif name == "moons":
        t = rng.uniform(0.0, math.pi, N_TOY)
        upper = rng.random(N_TOY) < 0.5
        x = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1),
                     np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1))
        return BuiltinSet(x + 0.05 * rng.standard_normal((N_TOY, 2)))
    elif name == "swissroll":
        t = 1.5 * math.pi * (1.0 + 2.0 * rng.random(N_TOY))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1)
        return BuiltinSet(x + 0.3 * rng.standard_normal((N_TOY, 2)))
    elif name == "checkerboard":
        col = rng.integers(0, 4, N_TOY)
        row = 2 * rng.integers(0, 2, N_TOY) + col % 2  # row and col of equal parity: the dark squares
        return BuiltinSet(np.stack([col, row], 1) - 2.0 + rng.random((N_TOY, 2)))
    else:
        raise ValueError(f"unknown data set {name!r}; built-ins are {', '.join(BUILTINS)}")


def gmm2d_parameters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weights (8,), means (8, 2), covs (8, 2, 2) of the gmm2d mixture in data space."""
    k = 8
    angle = 2.0 * math.pi * np.arange(k) / k
    radial = np.stack([np.cos(angle), np.sin(angle)], 1)  # (k, 2) unit vectors
    tangential = np.stack([-np.sin(angle), np.cos(angle)], 1)
    std_radial, std_tangential, radius = 0.2, 0.5, 4.0
    covs = (std_radial**2 * np.einsum("ki,kj->kij", radial, radial)
            + std_tangential**2 * np.einsum("ki,kj->kij", tangential, tangential))
    return np.full(k, 1.0 / k), radius * radial, covs
