"""Noise schedules in the book's notation (EQUATIONS.md section 0, E17-E20, E25, E42, E43).

Every per-level tensor has length ``L + 1`` and is indexed by the level itself; level 0 is the data:
``beta[0] = 0``, ``alpha[0] = 1``, ``alpha_bar[0] = 1``, ``sigma_bar[0] = 0``, ``sigma2[0] = sigma2[1] = 0``.

``beta_i`` is the *standard deviation* of the step-i noise. Ho et al. and diffusers call ``beta**2``
"betas" and ``alpha_bar**2`` "alphas_cumprod"; :meth:`Schedule.to_diffusers` translates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Schedule"]


class Schedule:
    """A fixed Gaussian forward process: ``x_i = alpha_i x_{i-1} + beta_i eps_i`` (E17, E18).

    Args:
        beta: the L standard deviations of levels 1..L, each in (0, 1) (a sequence or 1-D tensor).

    Attributes (float64 tensors of length L + 1, index = level):
        beta, alpha (E17), alpha_bar (E19), sigma_bar (E19, the sheet's s_i), sigma2 (E25),
        A, B (E24: the reverse-conditional mean is A_i x_0 + B_i x_i; A_1 = 1, B_1 = 0, index 0 unused),
        snr (alpha_bar**2 / sigma_bar**2, ``inf`` at level 0), lam (half log-SNR, E41).

    Fractional levels t in [0, L] (for ODE solvers): :meth:`alpha_bar_at` and :meth:`sigma_bar_at`
    interpolate log alpha_bar linearly between neighbouring levels, so they equal the tables at integers.
    """

    def __init__(self, beta):
        b = torch.as_tensor(beta, dtype=torch.float64).flatten()
        if b.numel() < 1:
            raise ValueError("Schedule needs at least one level, got an empty beta")
        bad = ~((b > 0) & (b < 1))
        if bad.any():
            k = int(bad.nonzero()[0])
            raise ValueError(f"beta must lie in (0, 1); beta at level {k + 1} is {b[k].item()!r}")
        L = b.numel()
        self.L = L
        self.beta = torch.cat([b.new_zeros(1), b])
        self.alpha = torch.sqrt(1.0 - self.beta**2)
        self.alpha_bar = torch.cumprod(self.alpha, 0)
        self.sigma_bar = torch.sqrt(1.0 - self.alpha_bar**2)
        # E25: sigma2(i) = (1 - alpha_bar_{i-1}^2) / (1 - alpha_bar_i^2) * beta_i^2; sigma2(1) = 0 exactly.
        sigma2 = torch.zeros(L + 1, dtype=torch.float64)
        sigma2[1:] = (1.0 - self.alpha_bar[:-1] ** 2) / (1.0 - self.alpha_bar[1:] ** 2) * b**2
        self.sigma2 = sigma2
        # E24: A_i = alpha_bar_{i-1} beta_i^2 / (1 - alpha_bar_i^2),
        #      B_i = (1 - alpha_bar_{i-1}^2) alpha_i / (1 - alpha_bar_i^2)
        denom = 1.0 - self.alpha_bar[1:] ** 2
        self.A = torch.cat([b.new_zeros(1), self.alpha_bar[:-1] * b**2 / denom])
        self.B = torch.cat([b.new_zeros(1), (1.0 - self.alpha_bar[:-1] ** 2) * self.alpha[1:] / denom])
        with torch.no_grad():
            self.snr = self.alpha_bar**2 / self.sigma_bar**2  # inf at level 0
            self.lam = torch.log(self.alpha_bar) - torch.log(self.sigma_bar)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, L: int = 1000, var_start: float = 1e-4, var_end: float = 0.02, max_var: float = 0.999) -> Schedule:
        """Ho et al. 2020: variances beta_i^2 linear from var_start to var_end (EQUATIONS.md E42).

        The endpoints are those of L = 1000; for other L both are scaled by 1000 / L, as in
        improved-diffusion, so that alpha_bar_L stays small, and capped at ``max_var`` (which only binds
        for L < 50).
        """
        _check_levels(L)
        if not (0 < var_start < 1 and 0 < var_end < 1):
            raise ValueError(f"linear schedule variances must lie in (0, 1), got {var_start!r}..{var_end!r}")
        scale = 1000.0 / L
        lo, hi = min(var_start * scale, max_var), min(var_end * scale, max_var)
        var = torch.linspace(lo, hi, L, dtype=torch.float64)
        return cls(torch.sqrt(var))

    @classmethod
    def cosine(cls, L: int = 1000, s: float = 0.008, max_var: float = 0.999) -> Schedule:
        """Nichol & Dhariwal 2021 (EQUATIONS.md E43): alpha_bar_i = cos((i/L + s)/(1 + s) pi/2) / f(0).

        beta_i = sqrt(min(1 - alpha_bar_i^2 / alpha_bar_{i-1}^2, max_var)); alpha_bar is then recomputed
        from the clipped beta.
        """
        _check_levels(L)
        if not 0 < max_var < 1:
            raise ValueError(f"max_var must lie in (0, 1), got {max_var!r}")
        i = torch.arange(L + 1, dtype=torch.float64)
        f = torch.cos((i / L + s) / (1 + s) * math.pi / 2)
        a_bar = f / f[0]
        var = torch.clamp(1.0 - a_bar[1:] ** 2 / a_bar[:-1] ** 2, max=max_var)
        return cls(torch.sqrt(var))

    @classmethod
    def from_diffusers(cls, betas) -> Schedule:
        """From diffusers'/Ho's ``betas`` (step *variances*, length L, Ho index t = i - 1)."""
        var = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.sqrt(var))

    @classmethod
    def named(cls, name: str, L: int = 1000) -> Schedule:
        """``"linear"`` or ``"cosine"`` with L levels."""
        if name == "linear":
            return cls.linear(L)
        elif name == "cosine":
            return cls.cosine(L)
        else:
            raise ValueError(f"unknown schedule {name!r}; choose 'linear' or 'cosine'")

    # ------------------------------------------------------------------ translation
    def to_diffusers(self) -> dict[str, Tensor]:
        """Ho/diffusers names: ``betas`` = beta**2 (variances, length L), ``alphas_cumprod`` = alpha_bar**2."""
        return {
            "betas": self.beta[1:] ** 2,
            "alphas": self.alpha[1:] ** 2,
            "alphas_cumprod": self.alpha_bar[1:] ** 2,
            "posterior_variance": self.sigma2[1:],
        }

    # ------------------------------------------------------------------ fractional levels
    def alpha_bar_at(self, t) -> Tensor:
        """alpha_bar at fractional levels t in [0, L] (float64, t's shape): log alpha_bar is linear between
        the neighbouring integer levels, so alpha_bar_at(i) == alpha_bar[i] at every integer i."""
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        self.check_level(t, fractional=True)
        lo = torch.clamp(torch.floor(t), max=self.L - 1).long()
        frac = t - lo
        log_ab = torch.log(self.alpha_bar)
        inner = torch.exp(log_ab[lo] + frac * (log_ab[lo + 1] - log_ab[lo]))
        return torch.where(frac == 0, self.alpha_bar[lo], torch.where(frac == 1, self.alpha_bar[lo + 1], inner))

    def sigma_bar_at(self, t) -> Tensor:
        """sigma_bar = sqrt(1 - alpha_bar^2) at fractional levels t in [0, L] (float64), as :meth:`alpha_bar_at`."""
        return torch.sqrt(1.0 - self.alpha_bar_at(t) ** 2)

    def log_alpha_bar_rate(self, t) -> Tensor:
        """d log alpha_bar / dt at fractional levels t (float64): log alpha_bar_{k+1} - log alpha_bar_k on the
        interval [k, k + 1) that holds t (the last interval at t = L), the slope of :meth:`alpha_bar_at`."""
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        self.check_level(t, fractional=True)
        lo = torch.clamp(torch.floor(t), max=self.L - 1).long()
        log_ab = torch.log(self.alpha_bar)
        return log_ab[lo + 1] - log_ab[lo]

    def check_level(self, i, *, fractional: bool = False) -> None:
        """Raise ValueError unless every level in ``i`` (int or tensor) lies in 1..L; with ``fractional``,
        float levels in [0, L] are accepted too."""
        t = torch.as_tensor(i)
        if t.is_complex() or (t.is_floating_point() and not fractional):
            raise ValueError(f"levels must be integers in 1..{self.L}, got dtype {t.dtype}")
        low = 0 if fractional and t.is_floating_point() else 1
        if t.is_floating_point() and t.isnan().any():
            raise ValueError("a level is NaN")
        if t.numel() and (float(t.min()) < low or float(t.max()) > self.L):
            bad = t.flatten()[((t.flatten() < low) | (t.flatten() > self.L)).nonzero()[0]].item()
            raise ValueError(f"level {bad} is outside {low}..{self.L}")

    def __repr__(self) -> str:
        return (
            f"Schedule(L={self.L}, beta_1={self.beta[1].item():.4g}, beta_L={self.beta[-1].item():.4g}, "
            f"alpha_bar_L={self.alpha_bar[-1].item():.3g})"
        )


def _check_levels(L) -> None:
    if isinstance(L, bool) or not isinstance(L, int) or L < 1:
        raise ValueError(f"the number of levels L must be a positive integer, got {L!r}")
