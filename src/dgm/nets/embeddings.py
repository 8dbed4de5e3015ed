"""Sinusoidal embedding of the integer level i (Ho et al. 2020, after Vaswani et al. 2017).

The networks receive the level i itself (0..L), never a rescaled time such as ``i / L`` or
``t * 999``: the embedding is a fixed function of the integer, so a network trained with one
L can be read without knowing how the level was normalised.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The longest period of the embedding, in levels. The frequencies are geometric from 1 down to
# 1/MAX_PERIOD (Vaswani et al. 2017, section 3.5), so the slowest pair of features still varies
# monotonically over many thousands of levels while the fastest one separates neighbouring levels.
MAX_PERIOD = 10_000.0


def level_embedding(i: Tensor, dim: int, *, max_period: float = MAX_PERIOD) -> Tensor:
    """emb(i)_k = [cos(i w_k), sin(i w_k)], w_k = max_period^(-k/(dim/2)), k = 0..dim/2-1.

    Args:
        i: LongTensor (B,) of levels (any integer or float dtype is accepted).
        dim: embedding size; must be even and positive.
        max_period: the longest period, in levels.

    Returns:
        float32 tensor (B, dim): the cosines in the first half, the sines in the second.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"level_embedding needs an even positive dim, got {dim}")
    if i.ndim != 1:
        raise ValueError(f"level_embedding expects levels of shape (B,), got {tuple(i.shape)}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=i.device)
    w = torch.exp(-math.log(max_period) * k / half)  # (half,)
    phase = i.to(torch.float32)[:, None] * w[None, :]  # (B, half)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
