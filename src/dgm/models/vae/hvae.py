"""A hierarchical VAE with a top-down inference ladder (Sonderby et al. 2016, "Ladder VAE").

Generative model, L >= 2 Gaussian layers (z_1 next to x, z_L on top):
    p(z_L) = N(0, I),  p(z_l | z_{l+1}) = N(mu_p, s_p^2),  p(x | z_1) as in `dgm.models.vae.likelihoods`.
Inference: one deterministic bottom-up pass d_1 = f_1(x), d_l = f_l(d_{l-1}) gives per-layer "likelihood"
Gaussians N(mu_hat_l, s_hat_l^2); then top-down, q(z_L | x) = N(mu_hat_L, s_hat_L^2) and for l < L the
posterior q(z_l | z_{l+1}, x) is the precision-weighted product of N(mu_hat_l, s_hat_l^2) and the prior
p(z_l | z_{l+1}):
    1/s_q^2 = 1/s_hat^2 + 1/s_p^2,   mu_q = s_q^2 (mu_hat / s_hat^2 + mu_p / s_p^2).
The ELBO (E10) is E_q log p(x|z_1) - sum_l E_q KL(q(z_l | z_{l+1}, x) || p(z_l | z_{l+1})); each KL is
analytic (both Gaussian) given one sample of the layers above it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dgm.core import rng
from dgm.core.gaussian import normal_kl_from_log_std, normal_log_prob_from_log_std, reparameterize
from dgm.models.vae.base import LatentVariableModel, check_common, check_positive_int
from dgm.nets.coders import build_decoder_net, build_trunk, mlp


def precision_weighted(mean_hat, log_std_hat, mean_p, log_std_p) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of N(mean_hat, s_hat^2) and N(mean_p, s_p^2), normalized: (mean_q, log_std_q) with
    1/s_q^2 = 1/s_hat^2 + 1/s_p^2 and mu_q = s_q^2 (mu_hat/s_hat^2 + mu_p/s_p^2) (Sonderby et al. 2016)."""
    log_std_q = -0.5 * torch.logaddexp(-2 * log_std_hat, -2 * log_std_p)
    mean_q = (mean_hat * torch.exp(2 * (log_std_q - log_std_hat))
              + mean_p * torch.exp(2 * (log_std_q - log_std_p)))
    return mean_q, log_std_q


class HVAE(LatentVariableModel):
    """A ladder VAE with `latent_dims` = (m_1, ..., m_L), L >= 2, m_1 next to x; model protocol of
    docs/ARCHITECTURE.md. Other config fields as `dgm.VAE` (`data_shape`, `arch`, `hidden`, `decoder`,
    `decoder_std`, `bins`, `beta`, `kl_warmup_steps`); the ladder MLPs are `hidden[-1]` wide.
    `loss` logs `kl_1` ... `kl_L` (nats per example). It is unconditional: `conditional=True` is refused
    (class conditioning is built for the DDPM and the VAE)."""

    kind = "hvae"

    def __init__(self, data_shape: Sequence[int], latent_dims: Sequence[int] = (16, 8), arch: str = "mlp",
                 hidden: Sequence[int] | int = (256, 256), decoder: str = "gaussian",
                 decoder_std: float | str = "learned", bins: int | None = None, beta: float = 1.0,
                 kl_warmup_steps: int = 0, binarize: bool = False, conditional: bool = False):
        super().__init__()
        if conditional is not False:
            raise ValueError(f"HVAE: conditional={conditional!r}, but the hvae is unconditional; class conditioning "
                             "is built for the ddpm and the vae")
        cfg = check_common(data_shape, arch, hidden, decoder, decoder_std, bins, beta, kl_warmup_steps,
                           binarize)
        if isinstance(latent_dims, str) or not isinstance(latent_dims, Sequence) or len(latent_dims) < 2:
            raise ValueError(f"latent_dims must list >= 2 positive ints (z_1 first), got {latent_dims!r}")
        self.latent_dims = [check_positive_int("latent_dims entry", m) for m in latent_dims]
        self._setup(cfg)
        self.trunk, width = build_trunk(arch, self.data_shape, cfg["hidden"])
        w = cfg["hidden"][-1]
        self.up = nn.ModuleList(mlp([width if i == 0 else w, w, w], final_act=True)
                                for i in range(len(self.latent_dims)))
        self.up_heads = nn.ModuleList(nn.Linear(w, 2 * m) for m in self.latent_dims)
        self.down = nn.ModuleList(mlp([self.latent_dims[i + 1], w, w, 2 * self.latent_dims[i]])
                                  for i in range(len(self.latent_dims) - 1))
        self.decoder_net = build_decoder_net(arch, self.latent_dims[0], self.data_shape, cfg["hidden"])

    @classmethod
    def complete_config(cls, config: dict, shape: list[int], bins: int | None, num_classes: int | None = None) -> dict:
        """As `LatentVariableModel.complete_config`; a conditional config is refused (see the class docstring)."""
        if config.get("conditional"):
            raise ValueError("the hvae is unconditional; class conditioning (--conditional) is built for the ddpm "
                             "and the vae")
        return super().complete_config(config, shape, bins)

    def config(self) -> dict:
        """JSON-able config; `HVAE(**{k: v for k, v in config.items() if k != "kind"})` rebuilds it."""
        return {"kind": self.kind, **self._common_config(), "latent_dims": list(self.latent_dims)}

    def bottom_up(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The deterministic pass: [(mean_hat_l, log_std_hat_l), each (B, m_l)] for l = 1..L."""
        d, stats = self.trunk(x), []
        for up, head in zip(self.up, self.up_heads, strict=True):
            d = up(d)
            stats.append(tuple(head(d).chunk(2, dim=-1)))
        return stats

    def prior_params(self, l: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_l | z_{l+1}) as (mean, log_std), l a 0-based layer index < L-1; z_above (..., m_{l+1})."""
        mean, log_std = self.down[l](z_above).chunk(2, dim=-1)
        return mean, log_std

    def top_down(self, x: torch.Tensor, n: int, generator=None) -> list[dict]:
        """n joint draws from q(z_1..z_L | x), top layer first in the computation, returned bottom first:
        per layer a dict of (n, B, m_l) tensors `z`, `q` = (mean, log_std), `p` = (mean, log_std)."""
        stats = self.bottom_up(x)
        mean_top, log_std_top = stats[-1]
        z = reparameterize(mean_top, torch.exp(log_std_top), n=n, generator=generator)
        zeros = torch.zeros_like(z)
        layers = [{"z": z, "q": (mean_top.expand_as(z), log_std_top.expand_as(z)), "p": (zeros, zeros)}]
        for l in range(len(self.latent_dims) - 2, -1, -1):
            mean_p, log_std_p = self.prior_params(l, z)
            mean_q, log_std_q = precision_weighted(*stats[l], mean_p, log_std_p)
            z = mean_q + torch.exp(log_std_q) * rng.randn(
                mean_q.shape, generator=generator, device=mean_q.device, dtype=mean_q.dtype)
            layers.append({"z": z, "q": (mean_q, log_std_q), "p": (mean_p, log_std_p)})
        return layers[::-1]

    def _decoder_out(self, z1: torch.Tensor) -> torch.Tensor:
        """(n, B, m_1) -> decoder output (n, B, *data_shape)."""
        return self.decoder_net(z1.flatten(0, 1)).unflatten(0, z1.shape[:2])

    def _elbo_terms(self, x, generator, cond=None):  # cond is always None: the hvae is unconditional
        """One joint draw: log p(x|z_1) and per layer KL(q(z_l|z_{l+1},x) || p(z_l|z_{l+1})), each (B,)."""
        layers = self.top_down(x, 1, generator)
        recon = self.likelihood.log_prob(x, self._decoder_out(layers[0]["z"]))[0]
        kls = [normal_kl_from_log_std(*layer["q"], *layer["p"]).sum(-1)[0] for layer in layers]
        return recon, kls

    def _log_weights(self, x, k, generator, cond=None):
        """log p(x|z_1) + sum_l [log p(z_l|z_{l+1}) - log q(z_l|z_{l+1},x)], k joint draws (E13): (k, B)."""
        layers = self.top_down(x, k, generator)
        log_w = self.likelihood.log_prob(x, self._decoder_out(layers[0]["z"]))
        for layer in layers:
            log_p = normal_log_prob_from_log_std(layer["z"], *layer["p"])
            log_w = log_w + (log_p - normal_log_prob_from_log_std(layer["z"], *layer["q"])).sum(-1)
        return log_w

    def _decode_prior(self, n, generator, cond=None):
        p = next(self.parameters())
        z = rng.randn(n, self.latent_dims[-1], generator=generator, device=p.device, dtype=p.dtype)
        for l in range(len(self.latent_dims) - 2, -1, -1):
            mean_p, log_std_p = self.prior_params(l, z)
            z = reparameterize(mean_p, torch.exp(log_std_p), generator=generator)
        return self.decoder_net(z)

