"""The decoder likelihoods p(x|z) of the VAEs (EQUATIONS.md E13, E36).

- `gaussian`    N(x; mu(z), sigma^2) per dim (E13), sigma fixed (`decoder_std` a float) or learned;
- `bernoulli`   a coin per dim on b = [x > 0] (data in {-1, 1} or {0, 1}; the mean is 2 p - 1);
- `discretized` the discretized Gaussian of E36 over `bins` = K evenly spaced values in [-1, 1]: bin
                half-width 1/(K-1), outer edges at -inf/+inf, so its NLL compares with a DDPM's bits/dim.
`decoder_std="learned"` is a learned global log-std per data dimension (a parameter of shape `data_shape`,
initialized to log 0.1: a small start keeps the posterior from collapsing while the std is still large),
floored at `LOG_STD_MIN`; it does not depend on z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dgm.core import rng
from dgm.core.gaussian import discretized_gaussian_log_prob, normal_log_prob_from_log_std, sum_flat

__all__ = ["DECODERS", "DecoderLikelihood", "snap_to_bins"]

DECODERS = ("gaussian", "bernoulli", "discretized")
LOG_STD_MIN = math.log(1e-3)  # floor of a learned decoder std: 1e-3 of the [-1, 1] range
LOG_STD_INIT = math.log(0.1)  # start of a learned decoder std: small, so that z is used from the start


def snap_to_bins(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Round x to the nearest of K = `bins` evenly spaced values in [-1, 1] (clamped); the ends are exact."""
    k = torch.round((x.clamp(-1, 1) + 1) * (bins - 1) / 2)
    return (2 * k - (bins - 1)) / (bins - 1)


class DecoderLikelihood(nn.Module):
    """p(x|z) given the decoder net's output `out` (same shape as x): a mean (gaussian, discretized)
    or logits (bernoulli). Holds the learned log-std when `decoder_std="learned"`."""

    def __init__(self, decoder: str, decoder_std, bins: int | None, data_shape: Sequence[int]):
        super().__init__()
        self.decoder, self.bins = decoder, bins
        if decoder == "bernoulli":
            self.log_std, self.fixed_log_std = None, None
        elif decoder_std == "learned":
            self.log_std = nn.Parameter(torch.full(tuple(data_shape), LOG_STD_INIT))
            self.fixed_log_std = None
        else:
            self.log_std, self.fixed_log_std = None, math.log(decoder_std)

    def get_log_std(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder log-std broadcastable to `out` (gaussian and discretized decoders)."""
        if self.log_std is not None:
            return self.log_std.clamp(min=LOG_STD_MIN)
        return torch.full((), self.fixed_log_std, dtype=out.dtype, device=out.device)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats summed over the data dims: x (B, *data_shape), out (*batch, B, *data_shape)
        -> (*batch, B)."""
        n_batch = out.dim() - x.dim() + 1
        if self.decoder == "gaussian":
            lp = normal_log_prob_from_log_std(x, out, self.get_log_std(out))
        elif self.decoder == "discretized":
            # E36 with K = bins; x is snapped to the grid so the end bins are recognized exactly
            x = snap_to_bins(x, self.bins)
            lp = discretized_gaussian_log_prob(x, out, self.get_log_std(out), self.bins)
        elif self.decoder == "bernoulli":
            b = (x > 0).to(out.dtype)
            lp = b * nn.functional.logsigmoid(out) + (1 - b) * nn.functional.logsigmoid(-out)
        else:
            raise ValueError(f"unknown decoder {self.decoder!r}")
        return sum_flat(lp.expand(out.shape), n_batch)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x|z] in model space: the Gaussian mean; 2 p - 1 for bernoulli (a {-1, 1} coin); for the
        discretized decoder sum_k x_k P(x_k) = -1 + 2/(K-1) sum_{k=1}^{K-1} Phi((mean - e_k) / s) over
        the inner bin edges e_k (always in [-1, 1], unlike the Gaussian location, which the end bins
        push outside)."""
        if self.decoder == "bernoulli":
            return 2 * torch.sigmoid(out) - 1
        elif self.decoder == "discretized":
            inv_std, step = torch.exp(-self.get_log_std(out)), 2.0 / (self.bins - 1)
            total = torch.zeros_like(out)
            for k in range(1, self.bins):
                total = total + torch.special.ndtr((out - (-1 + (k - 0.5) * step)) * inv_std)
            return total * step - 1
        return out

    def sample(self, out: torch.Tensor, generator=None) -> torch.Tensor:
        """x ~ p(x|z): gaussian adds noise; discretized adds noise, clamps and rounds to the bins;
        bernoulli returns values in {-1, 1}."""
        if self.decoder == "bernoulli":
            u = rng.rand(out.shape, generator=generator, device=out.device, dtype=out.dtype)
            return torch.where(u < torch.sigmoid(out), 1.0, -1.0).to(out.dtype)
        eps = rng.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        x = out + torch.exp(self.get_log_std(out)) * eps
        return snap_to_bins(x, self.bins) if self.decoder == "discretized" else x
