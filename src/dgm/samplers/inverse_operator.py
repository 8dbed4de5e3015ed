"""The linear observation y = A x + sigma_y n of an inverse problem, as the methods of ``inverse`` read it.

A is a (d_y, D) matrix of full row rank, or a boolean mask of the per-example data shape (True = known): the
selection matrix of the known entries in row-major order, so y holds the known values in mask order. Every
method reads A through its thin SVD A = U diag(s) V^T (V: D x d_y with orthonormal columns):

- the pseudo-inverse A^+ = V diag(1/s) U^T and the projection V V^T onto A's row space (replace, RePaint);
- the Gram solve (r^2 A A^T + sigma_y^2 I)^{-1} = U diag(1 / (r^2 s^2 + sigma_y^2)) U^T (PiGDM, eq. 7);
- the rotated observation y_bar = diag(1/s) U^T y = V^T x + (sigma_y / s) n', coordinate by coordinate
  (the SMC sampler, as in MCGdiff, Cardoso et al. 2024, sec. 3).

A mask never builds a matrix: V^T x gathers the known entries, V z scatters them back, s = 1 and U = I.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LinearObservation", "check_sigma_y"]


class LinearObservation:
    """A (a matrix or a boolean mask) with its thin SVD, in the working ``dtype`` on ``device``.

    ``shape`` is the per-example shape of x (``(D,)`` for a matrix, the mask's shape for a mask), ``D`` its
    size, ``d_y`` the number of observed values, ``singular`` the singular values s (d_y,). Raises
    ValueError for a matrix that is not 2-D, is empty, holds NaN or has rank below d_y, and for a mask
    that marks nothing known.
    """

    def __init__(self, A, *, dtype=torch.float64, device=None):
        A = torch.as_tensor(A, device=device)
        self.dtype, self.device = dtype, A.device
        if A.dtype == torch.bool:
            if A.ndim == 0:
                raise ValueError("a mask must have the per-example data shape, got a 0-d tensor")
            self.mask = A
            self.shape = tuple(A.shape)
            self.index = A.flatten().nonzero().squeeze(1)
            self.D, self.d_y = A.numel(), int(self.index.numel())
            if self.d_y == 0:
                raise ValueError(f"the mask of shape {self.shape} marks no known values")
            self.singular = torch.ones(self.d_y, dtype=dtype, device=self.device)
            self._U = self._V = None
            return
        self.mask = None
        if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
            raise ValueError(f"A must be a (d_y, D) matrix or a boolean mask, got shape {tuple(A.shape)}")
        A64 = A.to(torch.float64)
        if not torch.isfinite(A64).all():
            raise ValueError("A holds NaN or infinite entries")
        U, s, Vh = torch.linalg.svd(A64, full_matrices=False)
        tol = s.max().item() * max(A.shape) * torch.finfo(torch.float64).eps
        rank = int((s > tol).sum())
        if rank < A.shape[0]:
            raise ValueError(f"A of shape {tuple(A.shape)} has rank {rank} < d_y = {A.shape[0]}; "
                             "drop the dependent rows of A and y")
        self.shape, self.D, self.d_y = (A.shape[1],), A.shape[1], A.shape[0]
        self.matrix = A64.to(dtype)
        self.singular = s.to(dtype)
        self._U, self._V = U.to(dtype), Vh.T.to(dtype)

    # ------------------------------------------------------------------ the maps, on rows (B, D) / (B, d_y)
    def forward(self, x: Tensor) -> Tensor:
        """A x: (B, D) -> (B, d_y)."""
        return x[:, self.index] if self.mask is not None else x @ self.matrix.T

    def adjoint(self, v: Tensor) -> Tensor:
        """A^T v: (B, d_y) -> (B, D)."""
        return self.unrotate(v) if self.mask is not None else v @ self.matrix

    def rotate(self, x: Tensor) -> Tensor:
        """V^T x, the coordinates of x along A's right singular vectors: (B, D) -> (B, d_y)."""
        return x[:, self.index] if self.mask is not None else x @ self._V

    def unrotate(self, z: Tensor) -> Tensor:
        """V z, back to data space (zero off A's row space): (B, d_y) -> (B, D)."""
        if self.mask is not None:
            out = z.new_zeros(z.shape[0], self.D)
            out[:, self.index] = z
            return out
        return z @ self._V.T

    def project(self, x: Tensor) -> Tensor:
        """V V^T x = A^+ A x, the component of x in A's row space (for a mask: x on the known entries)."""
        return self.unrotate(self.rotate(x))

    def rotate_observation(self, y: Tensor) -> Tensor:
        """y_bar = diag(1/s) U^T y, so that y_bar = V^T x + (sigma_y / s) n': (B, d_y) -> (B, d_y)."""
        return y if self.mask is not None else (y @ self._U) / self.singular

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = V diag(1/s) U^T y: (B, d_y) -> (B, D)."""
        return self.unrotate(self.rotate_observation(y))

    def gram_solve(self, r: Tensor, r2: float, sigma_y: float) -> Tensor:
        """(r2 A A^T + sigma_y^2 I)^{-1} r = U diag(1 / (r2 s^2 + sigma_y^2)) U^T r: (B, d_y) -> (B, d_y)."""
        scale = 1.0 / (r2 * self.singular**2 + sigma_y**2)
        if self.mask is not None:
            return r * scale
        return ((r @ self._U) * scale) @ self._U.T

    def noise_std(self, sigma_y: float) -> Tensor:
        """sigma_y / s: the noise std of each rotated coordinate of y_bar (d_y,)."""
        return sigma_y / self.singular

    def __repr__(self) -> str:
        kind = "mask" if self.mask is not None else "matrix"
        return f"LinearObservation({kind}, D={self.D}, d_y={self.d_y}, shape={self.shape})"


def check_sigma_y(sigma_y) -> float:
    """sigma_y as a float, or ValueError unless it is a finite number >= 0."""
    try:
        value = float(sigma_y)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_y must be a number >= 0, got {sigma_y!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y!r}")
    return value
