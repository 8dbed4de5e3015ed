"""How far a trained VAE's decoder is from the averaging optimum, and how sharp images are.

For a fixed encoder q(z|x) and the training set, the best decoder mean is mu*(z) = E_{q(x|z)}[x] (E16,
V1), and no decoder reconstructs better than the blur floor (V4). Since mu*(z) is the conditional mean,
for pairs (x, z) with z ~ q(z|x) the reconstruction error of any decoder f splits as
    E |x - f(z)|^2 = E |x - mu*(z)|^2 + E |mu*(z) - f(z)|^2 = blur floor + decoder gap,
so `blur_report` measures both terms on the same draws.
"""

from __future__ import annotations

import torch

from dgm.core import rng
from dgm.models.vae.analysis import blur_floor, optimal_decoder


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
