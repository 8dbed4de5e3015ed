"""The losses and the bound at eps* against their floors (EQUATIONS.md E28-E37, G6), and the VAE's optimal
decoder and blur floor (E15, E16, V1-V4), as rows of ``dgm verify``, with the summary post's errata 27 and 12
beside the rows whose floors show them."""

from __future__ import annotations

import math

import torch

from dgm.core.bound import vlb
from dgm.core.forward import q_sample
from dgm.core.losses import loss_ddpm, loss_simple
from dgm.core.parameterization import eps_to_mean
from dgm.core.reverse import posterior
from dgm.core.schedule import Schedule
from dgm.evaluation.verify.rows import Row, Z, det_row, erratum, oracle_denoiser, randn, tables, z_row
from dgm.models.vae.analysis import blur_floor, optimal_decoder

__all__ = ["check_losses", "check_vae"]

# --------------------------------------------------------------------------- losses and the bound (E28-E37, G6)


def _floors(gm, s: Schedule, g, m: int) -> tuple[list[float], list[float]]:
    """F_i = E tr Cov(x0 | x_i) (G5) at levels 1..L, m Monte Carlo draws each: F and the variance of each mean."""
    F, V = [0.0], [0.0]
    for i in range(1, s.L + 1):
        t = gm.posterior_cov_trace(s, q_sample(s, gm.sample(m, g), i, randn(g, m, gm.D)), i)
        F.append(t.mean().item())
        V.append(t.var().item() / m)
    return F, V


def _batches(loss, eps_fn, s, gm, g, n) -> tuple[float, float]:
    """A loss's estimate over n draws as K = 100 calls of n / 100, and its standard error from their spread.
    With 99 degrees of freedom P(|t_99| > 4.68) = 9.1e-6 against the normal 2.9e-6 that Z assumes: the two
    batched rows add 1.2e-5 to FALSE_ALARM."""
    K = 100
    vals = torch.tensor([loss(eps_fn, s, gm.sample(max(n // K, 2), g), generator=g).item() for _ in range(K)])
    return vals.mean().item(), vals.std().item() / math.sqrt(K)


def _loss_ddpm_post_weight(eps_fn, s: Schedule, x0, *, generator=None):
    """L_DDPM with the summary post's weight 1 / sqrt(2 sigma2(i)) instead of 1 / (2 sigma2(i)) (erratum 27),
    built like ``loss_ddpm`` from dgm.posterior and eps_to_mean."""
    i = torch.randint(2, s.L + 1, (x0.shape[0],), generator=generator)
    x_i = q_sample(s, x0, i, randn(generator, *x0.shape))
    mu, var = posterior(s, x_i, x0, i)
    mu_hat = eps_to_mean(s, x_i, eps_fn(x_i, i), i)
    return (s.L - 1) * ((mu_hat - mu) ** 2 / torch.sqrt(2 * var)).sum(1).mean()


def check_losses(gm, g, n) -> list[Row]:
    """loss_simple, loss_ddpm and vlb at eps* against the G6 floors, on linear L=10 (all levels are cheap)."""
    s = Schedule.linear(10)
    alpha, abar = tables(s)
    L, D = s.L, gm.D
    snr = [math.inf] + [abar[i] ** 2 / (1 - abar[i] ** 2) for i in range(1, L + 1)]
    F, V = _floors(gm, s, g, max(n // L, 2))
    eps_fn = oracle_denoiser(gm, s)
    # E33 at the minimizer: E |eps* - eps|^2 = SNR_i F_i (G6); loss_simple averages over i ~ U{1..L} and D dims.
    c_simple = [0.0] + [snr[i] / (L * D) for i in range(1, L + 1)]
    # E28 with fixed-small variance: the KL at level i is (SNR_{i-1} - SNR_i) / 2 F_i (G6), summed over i >= 2.
    c_kl = [0.0, 0.0] + [0.5 * (snr[i - 1] - snr[i]) for i in range(2, L + 1)]

    def floor(c):
        return sum(a * f for a, f in zip(c, F, strict=True)), sum(a * a * v for a, v in zip(c, V, strict=True))

    rows = []
    ref, var_ref = floor(c_simple)
    est, se = _batches(loss_simple, eps_fn, s, gm, g, n)
    rows.append(z_row("loss-simple", f"E33/G6 loss_simple at eps* {est:.4f} vs floor mean_i SNR_i E tr Cov(x0|x_i)/D "
                       f"{ref:.4f}, L=10", [(est - ref) / math.sqrt(se**2 + var_ref)]))
    ref, var_ref = floor(c_kl)
    est, se = _batches(loss_ddpm, eps_fn, s, gm, g, n)
    rows.append(z_row("loss-ddpm", f"E28/G6 loss_ddpm at eps* {est:.3f} vs KL floor sum_i (SNR_(i-1) - SNR_i)/2 F_i "
                       f"{ref:.3f}", [(est - ref) / math.sqrt(se**2 + var_ref)]))
    post, se_post = _batches(_loss_ddpm_post_weight, eps_fn, s, gm, g, n)
    z_post = (post - ref) / math.sqrt(se_post**2 + var_ref)
    # E34-E36 at eps*: L_L (E35 at E|x0|^2 = sum_k pi_k (|m_k|^2 + tr S_k)) + the KL floor + the Gaussian decoder
    # N(x0*(x_1), v_1) with v_1 = sigma2(2) (Ho's clipped choice): D/2 log(2 pi v_1) + F_1 / (2 v_1).
    sq = (gm.weights * ((gm.means**2).sum(1) + torch.diagonal(gm.covs, dim1=1, dim2=2).sum(1))).sum().item()
    a2 = abar[L] ** 2
    v1 = (1 - abar[1] ** 2) / (1 - abar[2] ** 2) * s.beta[2].item() ** 2
    ref_vlb = 0.5 * (a2 * sq - D * a2 - D * math.log(1 - a2)) + ref + 0.5 * D * math.log(2 * math.pi * v1)
    ref_vlb += F[1] / (2 * v1)
    var_vlb = var_ref + V[1] / (2 * v1) ** 2
    total = vlb(eps_fn, s, gm.sample(n, g), generator=g)
    z = (total.mean().item() - ref_vlb) / math.sqrt(total.var().item() / n + var_vlb)
    rows.append(z_row("vlb", f"E34-E36 vlb at eps* {total.mean():.3f} nats vs L_L + KL floor + decoder term "
                       f"{ref_vlb:.3f}", [z]))
    rows.append(erratum("erratum-27", f"erratum 27: the post's weight 1/sqrt(2 sigma2) gives L_DDPM {post:.3f} at "
                         f"eps*, not the KL floor {ref:.3f} (|z|)", abs(z_post), f"> Z = {Z:.2f}",
                         abs(z_post) > Z))
    return rows


# ------------------------------------------------------------------------------------ VAE blur (E15, E16, V1-V4)


def check_vae(g, n) -> list[Row]:
    """optimal_decoder against Bayes' rule written out, and blur_floor against the Monte Carlo MSE of mu*."""
    N, m = 60, 2
    data = randn(g, N, 4)
    q_mean = 1.5 * randn(g, N, m)  # an aggregate posterior unlike the prior
    q_std = torch.full((N, m), 0.4, dtype=torch.float64)
    idx = torch.randint(0, N, (n,), generator=g)
    z = q_mean[idx] + q_std[idx] * randn(g, n, m)  # pairs (x^(idx), z ~ q(z|x^(idx))): z ~ q(z) (V3)
    # E15/E16 written out: q(x^(n)|z) = q(z|x^(n)) (1/N) / q(z), q(z) = (1/N) sum_n q(z|x^(n)).
    log_q = (-((z[:, None] - q_mean[None]) ** 2) / (2 * q_std[None] ** 2) - torch.log(q_std[None])).sum(-1)
    log_q = log_q - 0.5 * m * math.log(2 * math.pi)  # (n, N): log q(z_b | x^(n))
    w = torch.exp(log_q - torch.logsumexp(log_q, 1, keepdim=True))
    mu_ref = w @ data
    mu = optimal_decoder(q_mean, q_std, data)(z)
    err = ((mu - mu_ref).abs() / (1 + mu_ref.abs())).max().item()
    # V4: floor = E_z sum_n w_n(z) |x^(n) - mu*(z)|^2, and E[|x - mu*(z)|^2 | z] is that sum, so the paired
    # difference d = |x - mu*(z)|^2 - sum_n w_n |x^(n) - mu*(z)|^2 has mean 0: its spread gives the SE.
    sq = ((data[idx] - mu) ** 2).sum(1)
    d = sq - (w * ((data[None] - mu_ref[:, None]) ** 2).sum(-1)).sum(1)
    floor = blur_floor(q_mean, q_std, data, z)
    z_floor = (sq.mean().item() - floor) / (d.std().item() / math.sqrt(n))
    # The post's Bayes denominator (erratum 12): the prior p(z) = N(0, I) instead of q(z).
    log_prior = (-(z**2) / 2).sum(1, keepdim=True) - 0.5 * m * math.log(2 * math.pi)
    mu_post = torch.exp(log_q - log_prior) @ data / N
    mse_post = ((data[idx] - mu_post) ** 2).sum(1).mean().item()
    z_post = (mse_post - floor) / (sq.std().item() / math.sqrt(n))  # in SE of dgm's MSE estimate
    return [
        det_row("optimal-decoder", "E16/V1 optimal_decoder vs Bayes' rule with the aggregate posterior written out: "
                 "max rel. error", err),
        z_row("blur-floor", f"V4 blur_floor {floor:.4f} vs the MSE of mu* on pairs (x, z ~ q(z|x)) {sq.mean():.4f}",
               [z_floor]),
        erratum("erratum-12", f"erratum 12: the post's decoder (prior p(z) as denominator) has MSE {mse_post:.3g}, "
                 f"not the floor {floor:.3f} (|z|)",
                 abs(z_post), f"> Z = {Z:.2f}", abs(z_post) > Z),
    ]

