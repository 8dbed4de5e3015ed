"""dgm.blur: the trained decoder against the optimal averaging decoder (E16, V1, V4), and sharpness."""

import pytest
import torch

from dgm.models.vae import HVAE, VAE
from dgm.models.vae.analysis import blur_report, optimal_decoder, sharpness

torch.set_num_threads(1)


def blobs(n: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    return centers[torch.randint(0, 4, (n,), generator=g)] + 0.08 * torch.randn(n, 2, generator=g)


def test_blur_report_of_the_optimal_decoder():
    """With the decoder replaced by mu* (V1) the decoder gap is 0, the reconstruction MSE is the Monte
    Carlo blur floor, and that agrees with V4's exact inner expectation within sampling error."""
    torch.manual_seed(0)
    x = blobs()
    vae = VAE(data_shape=[2], latent_dim=2, hidden=[16])
    with torch.no_grad():
        q_mean, q_std = vae.encode(x)
    mu_star = optimal_decoder(q_mean, q_std, x)
    vae.decode = lambda z: mu_star(z).float()
    rep = blur_report(vae, x, n_latents=20000, generator=torch.Generator().manual_seed(1))
    assert set(rep) >= {"decoder_gap", "blur_floor", "recon_mse", "optimal_recon_mse", "dim"}
    assert rep["decoder_gap"] < 1e-10
    assert abs(rep["recon_mse"] - rep["optimal_recon_mse"]) < 1e-6
    assert rep["blur_floor"] > 0  # an untrained encoder's posteriors overlap
    assert abs(rep["recon_mse"] - rep["blur_floor"]) < 0.05 * rep["blur_floor"]


def test_blur_report_of_a_trained_vae():
    """No decoder beats the blur floor: recon_mse ~ blur_floor + decoder_gap >= blur_floor."""
    torch.manual_seed(0)
    x = blobs()
    vae = VAE(data_shape=[2], latent_dim=2, hidden=[16, 16])
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(100):
        loss, _ = vae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rep = blur_report(vae, x, n_latents=20000, generator=torch.Generator().manual_seed(1))
    assert rep["decoder_gap"] > 0
    total = rep["blur_floor"] + rep["decoder_gap"]
    assert abs(rep["recon_mse"] - total) < 0.1 * total
    with pytest.raises(ValueError, match="HVAE"):
        blur_report(HVAE(data_shape=[2]), x)


def test_sharpness():
    assert sharpness(torch.full((2, 1, 5, 5), 0.3)) == 0.0
    checker = (torch.arange(6)[:, None] + torch.arange(6)[None, :]) % 2 * 2.0 - 1  # +-1 checkerboard
    assert sharpness(checker[None]) == pytest.approx(8.0)  # every difference is +-2 along H and W
    ramp = torch.arange(4.0)[None, None, None, :].expand(1, 1, 4, 4)  # a unit slope along W only
    assert sharpness(ramp) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        sharpness(torch.zeros(3, 2))
