"""Sinusoidal embedding of the level i (Ho et al. 2020, after Vaswani et al. 2017), class embeddings, and the
class labels of a conditional model: their checks, the null class and label dropout (Ho & Salimans 2022).

The networks receive the level i itself (0..L), never a rescaled time such as ``i / L`` or
``t * 999``: the embedding is a fixed function of the integer, so a network trained with one
L can be read without knowing how the level was normalised.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core import rng

# The longest period of the embedding, in levels. The frequencies are geometric from 1 down to
# 1/MAX_PERIOD (Vaswani et al. 2017, section 3.5), so the slowest pair of features still varies
# monotonically over many thousands of levels while the fastest one separates neighbouring levels.
MAX_PERIOD = 10_000.0
# The probability that a training label is replaced by the null class (classifier-free guidance training;
# Ho & Salimans 2022 found 0.1-0.2 best), so that one net learns p(x | c) and p(x) together.
LABEL_DROPOUT = 0.1


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
        return self.table(check_labels(cond, batch, self.num_classes, device=self.table.weight.device))


def check_labels(cond, batch: int, num_classes: int, *, device=None) -> Tensor:
    """``cond`` as a LongTensor (batch,) on ``device``, its values in 0..num_classes (num_classes: the null
    class); ValueError naming the bad shape, dtype or value."""
    cond = torch.as_tensor(cond, device=device)
    if cond.shape != (batch,) or cond.is_floating_point() or cond.dtype == torch.bool or cond.is_complex():
        raise ValueError(f"class labels must be an integer tensor of shape ({batch},), got {tuple(cond.shape)} "
                         f"{cond.dtype}")
    if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) > num_classes):
        raise ValueError(f"class labels must lie in 0..{num_classes - 1} (or {num_classes}, the null "
                         f"class), got {int(cond.min())}..{int(cond.max())}")
    return cond.long()


def drop_labels(cond: Tensor, p: float, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Each label replaced by the null class ``num_classes`` with probability ``p``, independently, drawn from
    ``generator``: classifier-free guidance training (Ho & Salimans 2022), LongTensor (B,) -> (B,)."""
    if p == 0:
        return cond
    u = rng.rand(cond.shape, generator=generator, dtype=torch.float64, device=cond.device)
    return torch.where(u < p, torch.full_like(cond, num_classes), cond)


def check_class_options(kind: str, conditional, num_classes, label_dropout) -> None:
    """Validate a model's ``conditional``, ``num_classes`` (needed by, and only with, a conditional model)
    and ``label_dropout`` (in [0, 1); other than the default only with a conditional model)."""
    if not isinstance(conditional, bool):
        raise ValueError(f"{kind}: conditional must be true or false, got {conditional!r}")
    if conditional and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"{kind}: a conditional model needs num_classes, a positive integer (the data's classes), "
                         f"got {num_classes!r}")
    if not conditional and num_classes is not None:
        raise ValueError(f"{kind}: num_classes={num_classes!r} needs conditional=true")
    if isinstance(label_dropout, bool) or not isinstance(label_dropout, int | float) or not 0 <= label_dropout < 1:
        raise ValueError(f"{kind}: label_dropout must be a number in [0, 1), got {label_dropout!r}")
    if not conditional and label_dropout != LABEL_DROPOUT:
        raise ValueError(f"{kind}: label_dropout={label_dropout!r} needs conditional=true")


def model_labels(cond, batch: int, *, kind: str, num_classes: int | None, conditional: bool,
                 label_dropout: float, train: bool, device=None) -> Tensor | None:
    """The labels a model passes to its net, checked: a LongTensor (batch,) or None (the null class). An int
    ``cond`` is one class for every example of the batch.

    ``num_classes`` is None for a net without a class embedding: labels are then an error. A conditional
    model trains on labels (``train``: None is an error); elsewhere None means the null class, the
    unconditional model that label dropout trained, so a conditional model trained with ``label_dropout``
    = 0 needs labels there too.
    """
    if isinstance(cond, int) and not isinstance(cond, bool):  # one class for the whole batch
        cond = torch.full((batch,), cond, dtype=torch.long)
    if num_classes is None:
        if cond is not None:
            raise ValueError(f"this {kind} is unconditional: it takes no class labels (train it with --conditional)")
        return None
    if cond is not None:
        return check_labels(cond, batch, num_classes, device=device)
    if conditional and train:
        raise ValueError(f"a conditional {kind} trains on class labels: give cond, one label per example")
    if conditional and label_dropout == 0:
        raise ValueError(f"this conditional {kind} was trained without label dropout, so its null class (no label) "
                         "is untrained: give class labels")
    return None


def no_labels(name: str, cond) -> None:
    """Raise ValueError when labels are given to a net built without ``num_classes``."""
    if cond is not None:
        raise ValueError(f"this {name} was built without num_classes, so it takes no class labels")
