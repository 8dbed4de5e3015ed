"""Labels through training: each process's shard keeps its labels aligned (shard_batch), fit passes a
conditional model the labels of its batch (and an unconditional one none), config.json records the classes,
and a conditional run resumes exactly."""

import numpy as np
import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.training.config import TrainConfig
from dgm.training.distributed import shard_batch
from dgm.training.loop import fit

NET = {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "emb_dim": 8}
K = 3


def labelled(n: int = 60):
    """Vectors whose first coordinate is the example's index and label = index % K, so a batch can be checked."""
    x = np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], 1)
    return load_data(x, labels=np.arange(n) % K, label_names=["a", "b", "c"], heldout_fraction=0.1)


def index_of(data, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.rint(data.scaling.to_data(x)[:, 0]).astype(np.int64))


def model(conditional: bool):
    torch.manual_seed(0)
    extra = {"conditional": True, "num_classes": K} if conditional else {}
    return build_model({"kind": "ddpm", "data_shape": [2], "levels": 20, "net": dict(NET), **extra})


def spy(m) -> list:
    """Record (batch, labels given) of every training-mode call of ``m.loss``."""
    calls, loss = [], m.loss

    def recorded(x0, generator=None, **kw):
        if m.training:
            calls.append((x0.detach().clone(), kw.get("cond")))
        return loss(x0, generator=generator, **kw)

    m.loss = recorded
    return calls


def test_shard_batch_keeps_labels_with_their_examples():
    """Two processes, several epochs: every (example, label) pair is the data's, and the shards are disjoint.
    Mutation: labels picked by another permutation, rank or step than the examples."""
    n, world = 101, 2
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = (torch.arange(n) * 5) % 7
    per_rank, batch = 50, 10
    seen = [set(), set()]
    for rank in range(world):
        for step in range(12):  # more than two epochs of 5 batches
            xb, yb = shard_batch(step, x, y, per_rank=per_rank, batch=batch, seed=3, rank=rank, world=world)
            idx = xb[:, 0].long()
            assert torch.equal(yb, y[idx])
            seen[rank] |= set(idx.tolist()) if step < 5 else set()
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == per_rank
    xb, yb = shard_batch(0, x, None, per_rank=per_rank, batch=batch, seed=3, rank=0, world=world)
    assert yb is None and xb.shape == (batch, 1)


def test_fit_passes_each_batch_its_labels_and_records_the_classes(tmp_path):
    """Mutation: labels not passed, or passed from another batch or split; classes missing from config.json."""
    data, m = labelled(), model(True)
    calls = spy(m)
    fit(m, data, tmp_path / "run", train_config=TrainConfig(steps=5, batch_size=16, log_every=5), progress=False)
    assert len(calls) == 5
    for xb, cond in calls:
        assert torch.equal(cond, index_of(data, xb) % K)
    config = ckpt.read_config(tmp_path / "run")
    assert config["data"]["num_classes"] == K and config["data"]["label_names"] == ["a", "b", "c"]
    assert config["model"]["conditional"] is True and config["model"]["num_classes"] == K


def test_unconditional_fit_on_labelled_data_is_unchanged(tmp_path):
    """Old behaviour: no labels reach the loss and config.json records no classes."""
    m = model(False)
    calls = spy(m)
    fit(m, labelled(), tmp_path / "run", train_config=TrainConfig(steps=2, batch_size=16), progress=False)
    assert [cond for _, cond in calls] == [None, None]
    assert "num_classes" not in ckpt.read_config(tmp_path / "run")["data"]


def test_conditional_fit_needs_labelled_data(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(ValueError, match="has no class labels"):
        fit(model(True), load_data(x), tmp_path / "run", train_config=TrainConfig(steps=2), progress=False)
    assert not (tmp_path / "run").exists()


def test_conditional_run_resumes_exactly(tmp_path):
    """4 + 2 steps equal 6 steps (the batches' labels, and their dropout drawn from each step's generator).
    Mutation: a resumed run pairing other labels with its batches, or rebuilding another model."""
    data = labelled()
    cfg = dict(batch_size=16, checkpoint_every=2, log_every=1)
    fit(model(True), data, tmp_path / "whole", train_config=TrainConfig(steps=6, **cfg), progress=False)
    fit(model(True), data, tmp_path / "split", train_config=TrainConfig(steps=4, **cfg), progress=False)
    fit(model(True), data, tmp_path / "split", train_config=TrainConfig(steps=6, **cfg), progress=False, resume=True)
    whole = ckpt.load_weights(tmp_path / "whole" / ckpt.WEIGHTS)[0]
    split = ckpt.load_weights(tmp_path / "split" / ckpt.WEIGHTS)[0]
    assert all(torch.equal(whole[k], split[k]) for k in whole)

