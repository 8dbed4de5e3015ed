"""The Gaussian start: carry x_L down to a lower level with the exact probability-flow ODE of a Gaussian fitted
to the training data, at no denoiser call ("analytical teleportation", Wang & Vastola 2023).

At high noise a data distribution's marginal is close to that of the Gaussian with the data's mean and
covariance, and so is its flow; there the denoiser's calls buy little. A grid that starts at a level t < L
(``dgm.samplers.grid.check_grid`` allows it) is sampled from x_t = F3(x_L; L -> t) (EQUATIONS.md E22 and
``dgm.core.flow.gaussian_flow``), and every denoiser call goes to levels <= t. ``optimized_grid`` with a
``start`` searches t with the other levels. The Gaussian comes from training data only, never from a density.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dgm.core.flow import gaussian_flow
from dgm.core.schedule import Schedule

__all__ = ["GaussianStart"]


@dataclass(frozen=True)
class GaussianStart:
    """The data's mean (D,) and covariance as orthonormal eigenvectors (D, D) and eigenvalues (D,) >= 0."""

    mean: Tensor
    eigvecs: Tensor
    eigvals: Tensor

    @classmethod
    def fit(cls, x0: Tensor) -> GaussianStart:
        """The sample mean and covariance of training examples x0 (n, ...), n >= 2, in float64."""
        if not isinstance(x0, Tensor) or x0.ndim < 2 or len(x0) < 2:
            raise ValueError(f"a Gaussian start needs a tensor of at least 2 training examples (n, ...), "
                             f"got {type(x0).__name__}")
        x = x0.detach().flatten(1).double().cpu()
        if not torch.isfinite(x).all():
            raise ValueError("a Gaussian start needs finite training examples")
        eigvals, eigvecs = torch.linalg.eigh(torch.cov(x.T).reshape(x.shape[1], x.shape[1]))
        return cls(x.mean(0), eigvecs, eigvals.clamp_min(0))

    def carry(self, s: Schedule, x_L: Tensor, level: int) -> Tensor:
        """x at ``level`` from x at level L along the Gaussian's exact flow (F3); ``level`` = L returns x_L."""
        if not 0 < level <= s.L:
            raise ValueError(f"a Gaussian start carries x_L to a level in 1..{s.L}, got {level!r}")
        if x_L[0].numel() != self.mean.numel():
            raise ValueError(f"a Gaussian start fitted to {self.mean.numel()} dimensions cannot carry examples of "
                             f"{x_L[0].numel()}")
        return x_L if level == s.L else gaussian_flow(s, x_L, s.L, level, self.mean, self.eigvecs, self.eigvals)
