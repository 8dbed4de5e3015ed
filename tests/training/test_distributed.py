"""dgm.training.distributed: every process trains on its own shard, and the batches are a function of the step."""

import pytest
import torch

from dgm.training.distributed import batch_indices


def test_processes_see_disjoint_shards():
    per_rank, batch = 50, 10
    seen = []
    for rank in range(2):
        idx = torch.cat([batch_indices(k, n=101, per_rank=per_rank, batch=batch, seed=3, rank=rank, world=2)
                         for k in range(5)])  # one epoch
        assert len(set(idx.tolist())) == per_rank
        seen.append(set(idx.tolist()))
    assert not seen[0] & seen[1]


def test_batches_depend_on_step_and_seed_only():
    kw = dict(n=100, per_rank=100, batch=10, rank=0, world=1)
    assert torch.equal(batch_indices(13, seed=1, **kw), batch_indices(13, seed=1, **kw))
    assert not torch.equal(batch_indices(3, seed=1, **kw), batch_indices(13, seed=1, **kw))  # another epoch
    with pytest.raises(ValueError, match="rank 2 of 2"):
        batch_indices(0, n=100, per_rank=50, batch=10, seed=0, rank=2, world=2)
