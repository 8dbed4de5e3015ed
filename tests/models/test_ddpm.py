"""DDPM (dgm.models.ddpm): the dequantized bound on discrete data (EQUATIONS.md E37)."""

import math

import pytest
import torch
from torch import nn

import dgm
from dgm.models.ddpm import DDPM

F64 = torch.float64


class MixtureEps(nn.Module):
    """A stand-in network: the exact eps* of a Gaussian mixture at every level (G3), as an eps predictor."""

    def __init__(self, mixture: dgm.GaussianMixture, s: dgm.Schedule):
        super().__init__()
        self.mixture, self.s = mixture, s

    def forward(self, x, i, cond=None):
        return self.mixture.eps_star(self.s, x.to(F64), i).to(x.dtype)


def test_dequantized_ddpm_bound_is_a_valid_discrete_bound():
    """With dequantize, evaluate = E_u L_vb(x0 + u) - D log(2h) bounds the discrete NLL: averaged over data
    x0 ~ P it is at least the entropy H(P), by Gibbs' inequality, whatever the model (E37).

    P: a discretized Gaussian (std 0.4) on the 17 values of [-1, 1] (h = 1/16, D = 1, H(P) = 2.54 nats),
    2000 draws. The model: a cosine DDPM with 200 levels whose network is the exact eps* of the mixture
    that smooths P (components at the 17 values, weights P, variance h^2 / 3 of the uniform U(-h, h)), so
    the bound is near its best (measured mean - H(P) = 0.68 nats, 16 standard errors: the DDPM's own gap).
    The check is that mean - H(P) > 4 standard errors of the mean (sample std / sqrt(2000)).
    tests/core/test_bound_exact.py pins evaluate to the formula vlb(x0 + u) - D log(2h) draw by draw; this
    test checks that the formula is a bound on the discrete data, i.e. that the units line up.
    Mutations caught (each seen to fail): the sign of D log(2h) flipped (mean - H = -3.5 nats); the term
    dropped (-1.4). The old version of this test (an untrained net, ``nll > 0``) passed both. Not caught
    here: evaluating the continuous bound at the grid values without u (that stays above H(P) for this
    model), which the exact test catches.
    """
    bins, h = 17, 1 / 16
    values = torch.linspace(-1, 1, bins, dtype=F64)
    P = torch.exp(-(values**2) / (2 * 0.4**2))
    P = P / P.sum()
    entropy = -(P * P.log()).sum().item()
    net = {"kind": "mlp", "dim": 1, "hidden": 8, "depth": 1, "emb_dim": 8}
    model = DDPM(data_shape=[1], net=net, schedule="cosine", levels=200, bins=bins, dequantize=True)
    smooth = dgm.GaussianMixture(P.tolist(), values[:, None].tolist(), [[[h**2 / 3]]] * bins)
    model.denoiser.net = MixtureEps(smooth, model.schedule)
    n = 2000
    x0 = values[torch.multinomial(P, n, replacement=True, generator=torch.Generator().manual_seed(0))][:, None]
    nll = model.evaluate(x0, generator=torch.Generator().manual_seed(1))["nll_nats"]
    assert nll.shape == (n,) and torch.isfinite(nll).all()
    se = nll.std().item() / math.sqrt(n)
    gap = nll.mean().item() - entropy
    assert gap > 4 * se, f"E[bound] - H(P) = {gap:.3f} nats, standard error {se:.3f}"


def test_dequantize_needs_bins():
    net = {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "emb_dim": 8}
    with pytest.raises(ValueError, match="dequantize"):
        DDPM(data_shape=[2], net=net, bins=None, dequantize=True)
