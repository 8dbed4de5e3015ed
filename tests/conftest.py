import pytest
import torch

import dgm


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def mixture():
    """A 2-D mixture with anisotropic components and unequal weights."""
    return dgm.GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-1.5, 0.0], [1.0, 1.0], [0.5, -1.2]],
        [
            [[0.05, 0.0], [0.0, 0.05]],
            [[0.20, 0.08], [0.08, 0.10]],
            [[0.02, -0.01], [-0.01, 0.15]],
        ],
    )


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread is faster than two and steadier on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
