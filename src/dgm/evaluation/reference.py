"""The reference set of sample-quality metrics: what a run's samples are compared against.

``dgm eval --metrics`` and ``dgm report`` both compare against the set chosen here, so their numbers agree.
"""

from __future__ import annotations

import torch

from dgm.data import DataSet

__all__ = ["reference_set"]


def reference_set(data: DataSet, n: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, str]:
    """(real examples in model space, a label) to compare ``n`` samples against.

    With a known density (gmm2d): 2n fresh draws of it from ``generator``, labelled "density". Else every
    example of the data set, train and held-out, labelled "all data": a held-out split of a small data set
    (180 digits) leaves FD and KID too few examples.
    """
    if not isinstance(data, DataSet):
        raise ValueError(f"reference_set needs a dgm DataSet, got {type(data).__name__}")
    if data.density is not None:
        return data.density.sample(2 * n, generator=generator).float(), "density"
    else:
        return torch.cat([data.train, data.heldout]), "all data"
