"""Why VAEs blur: the optimal decoder of a fixed Gaussian encoder averages (EQUATIONS.md E15, E16, V1-V4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["encoder_log_prob", "decoder_weights", "optimal_decoder", "blur_floor", "sample_aggregate_posterior"]


def _check(q_mean: Tensor, q_std: Tensor, data: Tensor) -> None:
    if q_mean.ndim != 2 or q_mean.shape != q_std.shape:
        raise ValueError(f"q_mean and q_std must both be (N, m); got {tuple(q_mean.shape)} and {tuple(q_std.shape)}")
    if data.shape[0] != q_mean.shape[0]:
        raise ValueError(f"data has {data.shape[0]} rows but the encoder statistics have {q_mean.shape[0]}")
    if (q_std <= 0).any():
        raise ValueError("encoder standard deviations must be positive")


def encoder_log_prob(z: Tensor, q_mean: Tensor, q_std: Tensor) -> Tensor:
    """log q(z_b | x^(n)) = sum_d log N(z_bd; m_nd, s_nd^2): (B, m), (N, m) -> (B, N)."""
    z, m, sd = z.double(), q_mean.double(), q_std.double()
    quad = (((z[:, None, :] - m[None]) / sd[None]) ** 2).sum(-1)
    return -0.5 * quad - torch.log(sd).sum(-1)[None] - 0.5 * m.shape[1] * math.log(2 * math.pi)


def decoder_weights(z: Tensor, q_mean: Tensor, q_std: Tensor) -> Tensor:
    """w_n(z) = q(x^(n) | z) = softmax_n log q(z | x^(n)) (V1; Bayes with the aggregate posterior, E15): (B, N)."""
    return torch.softmax(encoder_log_prob(z, q_mean, q_std), dim=1)


def optimal_decoder(q_mean: Tensor, q_std: Tensor, data: Tensor, *, chunk: int = 1024):
    """mu*(z) = sum_n w_n(z) x^(n) = E[q(z|x) x] / E[q(z|x)] over the data set (EQUATIONS.md E16, V1).

    q_mean, q_std: (N, m) encoder statistics of the N data points; data: (N, ...). Returns a callable
    z (B, m) -> (B, ...) in float64. The seed post's last line has q(z|x) without x in the numerator
    (erratum 14) and the prior as the denominator (erratum 12); the denominator is the aggregate posterior.
    """
    _check(q_mean, q_std, data)
    flat = data.reshape(data.shape[0], -1).double()

    def mu_star(z: Tensor) -> Tensor:
        outs = [decoder_weights(zc, q_mean, q_std) @ flat for zc in z.split(chunk)]
        return torch.cat(outs).reshape((z.shape[0],) + tuple(data.shape[1:]))

    return mu_star


def blur_floor(q_mean: Tensor, q_std: Tensor, data: Tensor, z: Tensor, *, chunk: int = 1024) -> float:
    """E_{q(z)} sum_n w_n(z) |x^(n) - mu*(z)|^2, the minimal reconstruction MSE of any decoder (V4).

    ``z`` (B, m) are draws from the aggregate posterior q(z) (V3), e.g. from
    :func:`sample_aggregate_posterior`. Returned as the mean over z of the summed squared error per example.
    """
    _check(q_mean, q_std, data)
    flat = data.reshape(data.shape[0], -1).double()
    sq = (flat**2).sum(1)
    total = 0.0
    for zc in z.split(chunk):
        w = decoder_weights(zc, q_mean, q_std)
        mu = w @ flat
        total += (w @ sq - (mu**2).sum(1)).clamp_min(0).sum().item()
    return total / z.shape[0]


def sample_aggregate_posterior(q_mean: Tensor, q_std: Tensor, n: int, generator=None) -> Tensor:
    """n draws of z ~ q(z) = (1/N) sum_n q(z | x^(n)) (V3): pick a data point, then z ~ q(z | x): (n, m)."""
    idx = torch.randint(0, q_mean.shape[0], (n,), generator=generator)
    eps = torch.randn(n, q_mean.shape[1], generator=generator, dtype=torch.float64)
    return q_mean.double()[idx] + q_std.double()[idx] * eps
