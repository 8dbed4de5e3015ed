"""Sinusoidal embedding of the level i (Ho et al. 2020, after Vaswani et al. 2017), and class embeddings.

The networks receive the level i itself (0..L), never a rescaled time such as ``i / L`` or
``t * 999``: the embedding is a fixed function of the integer, so a network trained with one
L can be read without knowing how the level was normalised.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# The longest period of the embedding, in levels. The frequencies are geometric from 1 down to
# 1/MAX_PERIOD (Vaswani et al. 2017, section 3.5), so the slowest pair of features still varies
# monotonically over many thousands of levels while the fastest one separates neighbouring levels.
MAX_PERIOD = 10_000.0


def level_embedding(i: Tensor, dim: int, *, max_period: float = MAX_PERIOD) -> Tensor:
    """emb(i)_k = [cos(i w_k), sin(i w_k)], w_k = max_period^(-k/(dim/2)), k = 0..dim/2-1.

    Args:
        i: LongTensor (B,) of levels; a float tensor of fractional levels works the same way.
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


class ClassEmbedding(nn.Module):
    """A learned vector per class label, plus one for the null class (index ``num_classes``), which stands
    for "no label" (unconditional use, and the labels dropped in classifier-free guidance training).

    Initialized to zero, so an untrained conditional net computes what the unconditional net would.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.zeros_(self.table.weight)

    def forward(self, cond: Tensor | None, batch: int) -> Tensor:
        """(B, dim) for labels ``cond`` (LongTensor (B,), values in 0..num_classes) or None (the null class)."""
        if cond is None:
            cond = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.table.weight.device)
        cond = torch.as_tensor(cond, device=self.table.weight.device)
        if cond.shape != (batch,) or cond.is_floating_point():
            raise ValueError(f"class labels must be an integer tensor of shape ({batch},), got {tuple(cond.shape)} "
                             f"{cond.dtype}")
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) > self.num_classes):
            raise ValueError(f"class labels must lie in 0..{self.num_classes - 1} (or {self.num_classes}, the null "
                             f"class), got {int(cond.min())}..{int(cond.max())}")
        return self.table(cond.long())


def no_labels(name: str, cond) -> None:
    """Raise ValueError when labels are given to a net built without ``num_classes``."""
    if cond is not None:
        raise ValueError(f"this {name} was built without num_classes, so it takes no class labels")
