"""dgm.evaluation.reference: the one choice of what samples are compared against (dgm eval and dgm report)."""

import pytest
import torch

from dgm.data import load_data
from dgm.evaluation.reference import reference_set


def test_a_known_density_gives_fresh_draws():
    data = load_data("gmm2d")
    real, label = reference_set(data, 50, generator=torch.Generator().manual_seed(3))
    want = data.density.sample(100, generator=torch.Generator().manual_seed(3)).float()
    assert label == "density" and torch.equal(real, want)


def test_otherwise_every_example_train_and_heldout():
    data = load_data("moons")
    real, label = reference_set(data, 50)
    assert label == "all data" and torch.equal(real, torch.cat([data.train, data.heldout]))


def test_only_a_data_set():
    with pytest.raises(ValueError, match="Tensor"):
        reference_set(torch.zeros(3, 2), 5)
