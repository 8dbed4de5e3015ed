import pytest
import torch

import dgm
from dgm.models.vae.analysis import decoder_weights, sample_aggregate_posterior


def test_optimal_decoder_averages_and_is_the_mse_minimizer(gen):
    """V1 is the L2-optimal decoder (E14, E16): any other decoder has larger expected MSE."""
    N, m = 40, 2
    data = torch.randn(N, 5, generator=gen, dtype=torch.float64)
    q_mean = torch.randn(N, m, generator=gen, dtype=torch.float64)
    q_std = torch.full((N, m), 0.8, dtype=torch.float64)
    mu = dgm.optimal_decoder(q_mean, q_std, data)
    idx = torch.randint(0, N, (20000,), generator=gen)
    z = q_mean[idx] + q_std[idx] * torch.randn(20000, m, generator=gen, dtype=torch.float64)
    mse_opt = ((data[idx] - mu(z)) ** 2).sum(1).mean().item()
    mse_other = ((data[idx] - 0.9 * mu(z)) ** 2).sum(1).mean().item()
    assert mse_opt < mse_other
    floor = dgm.blur_floor(q_mean, q_std, data, z)
    assert floor == pytest.approx(mse_opt, rel=0.03)  # V4 is the same expectation computed in closed form
    assert floor > 0  # overlapping encoders blur


def test_no_overlap_means_no_blur():
    data = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    q_mean = torch.tensor([[-10.0], [10.0]], dtype=torch.float64)
    q_std = torch.full((2, 1), 0.1, dtype=torch.float64)
    z = sample_aggregate_posterior(q_mean, q_std, 1000, torch.Generator().manual_seed(0))
    assert dgm.blur_floor(q_mean, q_std, data, z) < 1e-12
    w = decoder_weights(z, q_mean, q_std)
    assert torch.allclose(w.sum(1), torch.ones(1000, dtype=torch.float64))


def test_bad_inputs():
    with pytest.raises(ValueError, match="rows"):
        dgm.optimal_decoder(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="positive"):
        dgm.optimal_decoder(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 5))
