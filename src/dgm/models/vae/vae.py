"""The Gaussian VAE of EQUATIONS.md section 3 (E7-E13): encoder q(z|x) = N(m(x), diag s(x)^2), prior
p(z) = N(0, I), decoder p(x|z) gaussian / bernoulli / discretized (see `dgm.models.vae.likelihoods`).

Trained on the ELBO (E10) with an analytic KL (E13), evaluated with the IWAE bound (E13). The
hierarchical model lives in `dgm.models.vae.hvae`.

Conditional (Sohn et al. 2015, "CVAE"): encoder q(z | x, c) and decoder p(x | z, c) both see a learned
embedding of the class c (`dgm.nets.embeddings.ClassEmbedding`, zero at the start, with a null class), the
prior stays N(0, I); the ELBO and IWAE are then bounds on log p(x | c).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dgm.core import rng
from dgm.core.gaussian import normal_kl_from_log_std, normal_log_prob_from_log_std, reparameterize, sum_flat
from dgm.models.vae.base import LatentVariableModel, check_common, check_positive_int
from dgm.nets.coders import build_decoder_net, build_trunk
from dgm.nets.embeddings import LABEL_DROPOUT, ClassEmbedding, check_class_options, no_labels

__all__ = ["VAE"]

LABEL_DIM = 16  # size of the class embedding that the encoder (beside x's features) and the decoder (beside z) get


class VAE(LatentVariableModel):
    """A VAE with one Gaussian latent layer; follows the model protocol of docs/ARCHITECTURE.md.

    Config (the constructor's keywords; `config()` returns them with `kind="vae"`):
    - `data_shape`: one example's shape, (D,) for vectors or (C, H, W) for images;
    - `latent_dim`: m > 0;
    - `arch`: "mlp" (any data, flattened) or "conv" (images; stride-2 convs, 28 -> 14 -> 7);
    - `hidden`: widths of the MLP layers, or channels per conv stage (an int means [int, int]);
    - `decoder`: "gaussian", "bernoulli" or "discretized"; `decoder_std`: a fixed std or "learned"
      (a global learned log-std per data dim); `bins`: K values per dim for "discretized";
    - `beta`: weight of the KL; `kl_warmup_steps`: linear warm-up of that weight from 0 (0 = none);
    - `binarize`: dynamic binarization for the bernoulli decoder: every batch (training and evaluation)
      is a fresh draw b ~ Bernoulli((x + 1) / 2) of the gray levels (Salakhutdinov & Murray 2008);
    - `conditional`, `num_classes`, `label_dropout`: a conditional VAE over K = `num_classes` classes (module
      docstring), training labels replaced by the null class with probability `label_dropout`. Its
      `encode`, `decode` and `reconstruct` take `cond` (B,) too; None there is the null class.
    """

    kind = "vae"
    CLI_OPTIONS = ("conditional", "label_dropout")

    def __init__(self, data_shape: Sequence[int], latent_dim: int = 16, arch: str = "mlp",
                 hidden: Sequence[int] | int = (256, 256), decoder: str = "gaussian",
                 decoder_std: float | str = "learned", bins: int | None = None, beta: float = 1.0,
                 kl_warmup_steps: int = 0, binarize: bool = False, conditional: bool = False,
                 num_classes: int | None = None, label_dropout: float = LABEL_DROPOUT):
        super().__init__()
        cfg = check_common(data_shape, arch, hidden, decoder, decoder_std, bins, beta, kl_warmup_steps,
                           binarize)
        check_class_options("VAE", conditional, num_classes, label_dropout)
        self.conditional, self.num_classes, self.label_dropout = conditional, num_classes, float(label_dropout)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self._setup(cfg)
        extra = LABEL_DIM if conditional else 0
        self.label = ClassEmbedding(num_classes, LABEL_DIM) if conditional else None
        trunk, width = build_trunk(arch, self.data_shape, cfg["hidden"])
        self.encoder = nn.Sequential(trunk, nn.Linear(width + extra, 2 * self.latent_dim))
        self.decoder_net = build_decoder_net(arch, self.latent_dim + extra, self.data_shape, cfg["hidden"])

    def config(self) -> dict:
        """JSON-able config; `VAE(**{k: v for k, v in config.items() if k != "kind"})` rebuilds it. The class
        options appear only away from their defaults, so unconditional configs read as before."""
        config = {"kind": self.kind, **self._common_config(), "latent_dim": self.latent_dim}
        if self.conditional:
            config |= {"conditional": True, "num_classes": self.num_classes}
        if self.label_dropout != LABEL_DROPOUT:
            config["label_dropout"] = self.label_dropout
        return config

    def _with_label(self, h: torch.Tensor, cond) -> torch.Tensor:
        """[h, emb(c)] for a conditional model (cond None: the null class); h itself for an unconditional one."""
        if self.label is None:
            no_labels(self.kind, cond)
            return h
        return torch.cat([h, self.label(cond, h.shape[0]).to(h.dtype)], dim=-1)

    def encode_log_std(self, x: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) (or q(z|x, c)) as (mean, log_std), each (B, m); x: (B, *data_shape), cond: (B,) or None."""
        if self.label is None:  # the encoder as one module (x -> its statistics), as in unconditional checkpoints
            no_labels(self.kind, cond)
            return self.encoder(x).chunk(2, dim=-1)
        trunk, head = self.encoder
        mean, log_std = head(self._with_label(trunk(x), cond)).chunk(2, dim=-1)
        return mean, log_std

    def encode(self, x: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mean, diag std^2) as (mean, std), each (B, m); x: (B, *data_shape)."""
        mean, log_std = self.encode_log_std(x, cond)
        return mean, torch.exp(log_std)

    def decode_raw(self, z: torch.Tensor, cond=None) -> torch.Tensor:
        """The decoder net's output (B, *data_shape): the mean, or the logits for bernoulli; z: (B, m)."""
        return self.decoder_net(self._with_label(z, cond))

    def decode(self, z: torch.Tensor, cond=None) -> torch.Tensor:
        """The decoder mean E[x|z] (or E[x|z, c]) in model space, (B, *data_shape); z: (B, m)."""
        return self.likelihood.mean(self.decode_raw(z, cond))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, n: int = 1, generator=None, cond=None) -> torch.Tensor:
        """n reconstructions per example, (n, B, *data_shape): z ~ q(z|x) decoded to E[x|z]."""
        mean, log_std = self.encode_log_std(x, cond)
        z = reparameterize(mean, torch.exp(log_std), n=check_positive_int("n", n), generator=generator)  # (n, B, m)
        return self.decode(z.flatten(0, 1), _repeat(cond, n)).unflatten(0, (n, x.shape[0]))

    def _elbo_terms(self, x, generator, cond=None):
        """One-sample E_q log p(x|z) and the analytic KL(q(z|x) || N(0, I)) of E13, each (B,)."""
        mean, log_std = self.encode_log_std(x, cond)
        z = reparameterize(mean, torch.exp(log_std), generator=generator)
        recon = self.likelihood.log_prob(x, self.decode_raw(z, cond))
        kl = sum_flat(normal_kl_from_log_std(mean, log_std, torch.zeros_like(mean), torch.zeros_like(log_std)))
        return recon, [kl]

    def _log_weights(self, x, k, generator, cond=None):
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k draws z_k ~ q(z|x) (E13): (k, B)."""
        mean, log_std = self.encode_log_std(x, cond)
        z = reparameterize(mean, torch.exp(log_std), n=k, generator=generator)  # (k, B, m)
        out = self.decode_raw(z.flatten(0, 1), _repeat(cond, k)).unflatten(0, (k, x.shape[0]))
        zeros = torch.zeros_like(z)
        log_pz = normal_log_prob_from_log_std(z, zeros, zeros).sum(-1)
        log_qz = normal_log_prob_from_log_std(z, mean, log_std).sum(-1)
        return self.likelihood.log_prob(x, out) + log_pz - log_qz

    def _decode_prior(self, n, generator, cond=None):
        p = next(self.parameters())
        z = rng.randn(n, self.latent_dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.decode_raw(z, cond)


def _repeat(cond, k: int):
    """Labels (B,) for k draws per example flattened draw-major, (k * B,); None stays None."""
    return None if cond is None else cond.repeat(k)
