"""Why VAEs blur: the optimal decoder of a fixed Gaussian encoder averages (EQUATIONS.md E15, E16, V1-V4).

For a fixed encoder q(z|x) and the training set, the best decoder mean is mu*(z) = E_{q(x|z)}[x] (E16,
V1), and no decoder reconstructs better than the blur floor (V4). Since mu*(z) is the conditional mean,
for pairs (x, z) with z ~ q(z|x) the reconstruction error of any decoder f splits as
    E |x - f(z)|^2 = E |x - mu*(z)|^2 + E |mu*(z) - f(z)|^2 = blur floor + decoder gap,
so `blur_report` measures both terms on the same draws.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core import rng

__all__ = [
    "encoder_log_prob",
    "decoder_weights",
    "optimal_decoder",
    "blur_floor",
    "sample_aggregate_posterior",
    "blur_report",
    "sharpness",
]


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



@torch.no_grad()
def blur_report(vae, x_train: torch.Tensor, n_latents: int = 2048, generator=None,
                chunk: int = 512) -> dict:
    """Blur diagnostics of a trained `dgm.VAE` on its training set x_train (N, *data_shape).

    Draws `n_latents` pairs (x^(n), z) with n uniform and z ~ q(z|x^(n)), i.e. z from the aggregate
    posterior q(z) (V3), and returns floats, squared errors summed over the D data dims and averaged
    over the draws (divide by `dim` for per-dim values):
    - `decoder_gap`: E |f(z) - mu*(z)|^2, the trained decoder mean f against the optimal mu* (V1);
    - `blur_floor`: E_{q(z)} sum_n w_n(z) |x^(n) - mu*(z)|^2 (V4), the least MSE of any decoder;
    - `recon_mse`: E |x^(n) - f(z)|^2, the trained decoder's reconstruction MSE;
    - `optimal_recon_mse`: E |x^(n) - mu*(z)|^2 on the same draws (a Monte Carlo blur floor);
    - `dim`, `n_latents`.
    In expectation recon_mse = blur_floor + decoder_gap (module docstring).
    """
    if not hasattr(vae, "encode") or not hasattr(vae, "decode"):
        raise ValueError(f"blur_report needs a VAE (encode and decode), got {type(vae).__name__}")
    if n_latents <= 0:
        raise ValueError(f"n_latents must be positive, got {n_latents!r}")
    stats = [vae.encode(xb) for xb in x_train.split(chunk)]
    q_mean = torch.cat([m for m, _ in stats])
    q_std = torch.cat([s for _, s in stats])
    data = x_train.reshape(x_train.shape[0], -1)
    mu_star = optimal_decoder(q_mean, q_std, data)

    idx = rng.randint(0, x_train.shape[0], (n_latents,), generator=generator, device=q_mean.device)
    eps = rng.randn(n_latents, q_mean.shape[1], generator=generator, dtype=q_mean.dtype,
                      device=q_mean.device)
    z = q_mean[idx] + q_std[idx] * eps  # (n_latents, m), z ~ q(z)
    f = torch.cat([vae.decode(zc).reshape(zc.shape[0], -1) for zc in z.split(chunk)]).double()
    mu = mu_star(z).reshape(n_latents, -1).double()
    x = data[idx].double()
    return {
        "decoder_gap": ((f - mu) ** 2).sum(1).mean().item(),
        "blur_floor": float(blur_floor(q_mean, q_std, data, z)),
        "recon_mse": ((x - f) ** 2).sum(1).mean().item(),
        "optimal_recon_mse": ((x - mu) ** 2).sum(1).mean().item(),
        "dim": data.shape[1],
        "n_latents": n_latents,
    }


def sharpness(x: torch.Tensor) -> float:
    """Mean gradient energy of images: mean (dx/dh)^2 + mean (dx/dw)^2 with forward finite differences
    along H and W. x: (B, C, H, W) or (B, H, W). Blurrier images (VAE decoder means) score lower."""
    if x.dim() not in (3, 4) or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"sharpness needs images (B, C, H, W) or (B, H, W), H, W >= 2; got {tuple(x.shape)}")
    x = x.double()
    d_h = x[..., 1:, :] - x[..., :-1, :]
    d_w = x[..., :, 1:] - x[..., :, :-1]
    return ((d_h**2).mean() + (d_w**2).mean()).item()
