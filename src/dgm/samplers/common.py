"""What every solver does at a visited level: one denoiser call, giving eps_hat and x0_hat."""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.parameterization import call_denoiser, eps_to_x0, x0_to_eps
from dgm.core.schedule import Schedule

__all__ = ["predict", "randn_like"]


def predict(eps_fn, s: Schedule, x: Tensor, level: int, clip=None, cond=None) -> tuple[Tensor, Tensor]:
    """(eps_hat, x0_hat) at an integer ``level`` (E31); with ``clip=(lo, hi)`` x0_hat is clamped and eps_hat
    made consistent with it. ``cond`` (labels (B,)) is passed to the denoiser."""
    i = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
    eps = call_denoiser(eps_fn, x, i, cond)
    x0_hat = eps_to_x0(s, x, eps, level)
    if clip is not None:
        x0_hat = x0_hat.clamp(clip[0], clip[1])
        eps = x0_to_eps(s, x, x0_hat, level)
    return eps, x0_hat


def randn_like(x: Tensor, generator) -> Tensor:
    """N(0, I) noise shaped like x, from ``generator`` (on its own device, moved to x's)."""
    return rng.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
