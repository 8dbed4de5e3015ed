"""dgm.evaluation.metrics: quality_metrics with floors, and the Inception FID's local weights file."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.evaluation import metrics as M


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------- quality_metrics


def test_quality_metrics_vectors_with_floors():
    g = gen(17)
    real = torch.randn(400, 2, generator=g)
    fake = torch.randn(300, 2, generator=g) * 0.5 + 1.0
    out = M.quality_metrics(real, fake, kind="vector", names=M.METRICS, generator=gen(0), kid_subsets=5)
    for name in ("fd", "kid", "kid_std", "precision", "recall", "sw", "mmd"):
        assert math.isfinite(out[name]) and math.isfinite(out[name + "_floor"])
    assert out["n_reference"] == 200 and out["n_compared"] == 200
    for name in ("fd", "kid", "sw", "mmd"):
        assert out[name] > out[name + "_floor"]
    assert out["recall"] < out["recall_floor"]
    assert set(M.quality_metrics(real, fake, kind="vector", names=["recall"])) == {
        "recall", "recall_floor", "n_reference", "n_compared"}
    with pytest.raises(ValueError, match="unknown metric"):
        M.quality_metrics(real, fake, kind="vector", names=["fid"])
    with pytest.raises(ValueError, match="unknown kind"):
        M.quality_metrics(real, fake, kind="audio")
    with pytest.raises(ValueError, match="differ in shape"):
        M.quality_metrics(real, fake[:, :1], kind="vector")


def test_inception_fd_needs_a_local_weights_file(tmp_path):
    missing = tmp_path / M.FID_WEIGHTS_NAME
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        M.inception_fd(None, None, missing)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        M.inception_fd(None, None, bad)
    fake_state = tmp_path / "state.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, fake_state)
    with pytest.raises(ValueError, match="not pytorch-fid's Inception state dict: missing key"):
        M.inception_fd(None, None, fake_state)
