"""What `VAE` and `HVAE` share: config checks, dynamic binarization, and `LatentVariableModel` (the
training loss, sampling and IWAE evaluation).

Conventions (EQUATIONS.md section 3):
- data live in model space, roughly [-1, 1]; one example has shape `data_shape`, D = prod(data_shape);
- a Gaussian is carried as `(mean, log_std)`; densities and KLs are summed over the trailing dims and
  returned per example, in nats;
- the decoder likelihood p(x|z) is one of `dgm.models.vae.likelihoods.DECODERS`;
- a conditional model (the VAE's `conditional`, Sohn et al. 2015) takes class labels `cond` (B,) in
  `loss`, `sample` and `evaluate` and passes them to `_elbo_terms`, `_log_weights` and `_decode_prior`;
  its bounds are then on -log p(x | c). Without labels, `sample` and `evaluate` use the null class, the
  unconditional model that label dropout trained (`dgm.nets.embeddings.model_labels`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dgm.core import rng
from dgm.models.vae.likelihoods import DECODERS, DecoderLikelihood
from dgm.nets.coders import ARCHS
from dgm.nets.embeddings import LABEL_DROPOUT, drop_labels, model_labels

__all__ = ["LatentVariableModel", "check_common", "check_positive_int", "dynamic_binarize"]



def check_positive_int(name: str, value) -> int:
    """`value` as an int > 0, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_common(data_shape, arch, hidden, decoder, decoder_std, bins, beta, kl_warmup_steps,
                 binarize=False) -> dict:
    """Validate the config fields shared by VAE and HVAE; returns them normalized (JSON-able)."""
    if isinstance(data_shape, int):
        data_shape = [data_shape]
    if not isinstance(data_shape, Sequence) or len(data_shape) == 0:
        raise ValueError(f"data_shape must be a non-empty list of positive ints, got {data_shape!r}")
    data_shape = [check_positive_int("data_shape entry", d) for d in data_shape]
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if arch == "conv" and len(data_shape) != 3:
        raise ValueError(f"arch 'conv' needs data_shape (C, H, W), got {data_shape!r}")
    if isinstance(hidden, int):
        hidden = [hidden, hidden]
    if not isinstance(hidden, Sequence) or len(hidden) == 0:
        raise ValueError(f"hidden must be a positive int or a non-empty list of them, got {hidden!r}")
    hidden = [check_positive_int("hidden entry", h) for h in hidden]
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
    if decoder_std != "learned":
        if isinstance(decoder_std, bool) or not isinstance(decoder_std, int | float) or not decoder_std > 0:
            raise ValueError(f"decoder_std must be a positive number or 'learned', got {decoder_std!r}")
        decoder_std = float(decoder_std)
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 2):
        raise ValueError(f"bins must be None or an int >= 2, got {bins!r}")
    if decoder == "discretized" and bins is None:
        raise ValueError("decoder 'discretized' needs bins (the number of data values), got None")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta >= 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if isinstance(kl_warmup_steps, bool) or not isinstance(kl_warmup_steps, int) or kl_warmup_steps < 0:
        raise ValueError(f"kl_warmup_steps must be an int >= 0, got {kl_warmup_steps!r}")
    if not isinstance(binarize, bool):
        raise ValueError(f"binarize must be true or false, got {binarize!r}")
    if binarize and decoder != "bernoulli":
        raise ValueError(f"binarize needs the bernoulli decoder, got decoder {decoder!r}")
    return dict(data_shape=data_shape, arch=arch, hidden=hidden, decoder=decoder,
                decoder_std=decoder_std, bins=bins, beta=float(beta), kl_warmup_steps=kl_warmup_steps,
                binarize=binarize)


def dynamic_binarize(x: torch.Tensor, generator=None) -> torch.Tensor:
    """A fresh binary draw b ~ Bernoulli((x + 1) / 2) of model-space gray levels, returned in {-1, 1}."""
    u = rng.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(u < (x + 1) / 2, 1.0, -1.0).to(x.dtype)


class LatentVariableModel(nn.Module):
    """What VAE and HVAE share: the decoder likelihood, the beta / KL warm-up weight, the training loss
    (E10), ancestral sampling and the IWAE evaluation (E13). Subclasses implement

    - `_elbo_terms(x, generator, cond) -> (recon (B,), [kl_1 (B,), ..., kl_L (B,)])`: a one-sample estimate
      of E_q log p(x|z) and the per-layer KLs (analytic given the sampled upper layers);
    - `_log_weights(x, k, generator, cond) -> (k, B)`: log p(x, z_k) - log q(z_k|x) for k draws z_k ~ q(z|x);
    - `_decode_prior(n, generator, cond) -> (n, *data_shape)`: the decoder output for n draws from the prior.
    `cond` is the checked labels (B,) of a conditional model, else None.

    KL warm-up: the KL weight at training step t is beta * min(1, t / kl_warmup_steps) (beta when
    kl_warmup_steps = 0). t is the `step` argument of `loss` when given, else the persistent buffer
    `kl_step`, which `loss` increments in training mode (so any training loop warms up, and a resumed
    checkpoint carries it on); `set_step(t)` sets it.
    """

    kind: str
    CLI_OPTIONS: tuple[str, ...] = ()  # the `dgm train` flags that set an option (other options: --config)
    conditional: bool = False  # a class-conditional model sets these three
    num_classes: int | None = None
    label_dropout: float = LABEL_DROPOUT

    @classmethod
    def complete_config(cls, config: dict, shape: list[int], bins: int | None, num_classes: int | None = None) -> dict:
        """A recipe's model config with the data-dependent fields filled in: data_shape, bins and for a
        conditional model the data's ``num_classes`` (ValueError without it); continuous data take the
        Gaussian decoder where the recipe names the discretized one."""
        config = dict(config, kind=cls.kind, data_shape=list(shape), bins=bins)
        if bins is None and config.get("decoder") == "discretized":
            config["decoder"] = "gaussian"
        if config.get("conditional"):
            if num_classes is None:
                raise ValueError(f"a conditional {cls.kind} needs class labels in the data (num_classes)")
            config["num_classes"] = num_classes
        return config

    def describe(self) -> str:
        """One line: the encoder/decoder nets, the latents and the decoder likelihood."""
        cfg = self.config()
        latent = cfg.get("latent_dim", cfg.get("latent_dims"))
        classes = f", conditional on {self.num_classes} classes" if self.conditional else ""
        return f"{cfg['arch']} encoder/decoder, latent {latent}, {cfg['decoder']} decoder{classes}"

    def labels(self, cond, n: int, *, train: bool = False, device=None):
        """``cond`` checked for this model (``dgm.nets.embeddings.model_labels``): LongTensor (n,) or None."""
        return model_labels(cond, n, kind=self.kind, num_classes=self.num_classes, conditional=self.conditional,
                            label_dropout=self.label_dropout, train=train, device=device)

    def quick_sampling(self) -> tuple[dict, str]:
        """The decoder means of prior draws (the usual VAE picture)."""
        return {}, "decoder means"

    def _setup(self, cfg: dict) -> None:
        self._cfg = cfg
        self.data_shape = tuple(cfg["data_shape"])
        self.D = math.prod(self.data_shape)
        self.likelihood = DecoderLikelihood(cfg["decoder"], cfg["decoder_std"], cfg["bins"], self.data_shape)
        self.register_buffer("kl_step", torch.zeros((), dtype=torch.long))

    def set_step(self, step: int) -> None:
        """Set the training step that the KL warm-up reads."""
        self.kl_step.fill_(int(step))

    def kl_weight(self, step: int) -> float:
        """beta * min(1, step / kl_warmup_steps): the linear KL warm-up."""
        beta, warmup = self._cfg["beta"], self._cfg["kl_warmup_steps"]
        return beta if warmup == 0 else beta * min(1.0, step / warmup)

    def loss(self, x0: torch.Tensor, *, generator=None, step: int | None = None, cond=None):
        """The beta-weighted negative ELBO (E10) in nats per data dimension, averaged over the batch:
        (-E_q log p(x|z) + w_t * KL) / D with w_t = `kl_weight(t)`. x0: (B, *data_shape).

        Logs (floats): `loss`; `rate` = KL / D and `distortion` = -recon / D (nats per data dim);
        `elbo_nats` = the negative ELBO in nats per example (as in `evaluate`); `kl_weight`; and for more
        than one stochastic layer `kl_1`, `kl_2`, ... in nats per example (1 = the layer next to x).
        A conditional model's labels `cond` (B,) are dropped to the null class with probability
        `label_dropout` in training mode (drawn from `generator`).
        """
        cond = self.labels(cond, len(x0), train=True, device=x0.device)
        if self.conditional and self.training:
            cond = drop_labels(cond, self.label_dropout, self.num_classes, generator)
        if step is None:
            step = int(self.kl_step)
            if self.training:
                self.kl_step += 1
        if self._cfg.get("binarize"):
            x0 = dynamic_binarize(x0, generator)
        recon, kls = self._elbo_terms(x0, generator, cond)
        kl = torch.stack(kls).sum(0)
        w = self.kl_weight(step)
        loss = (w * kl - recon).mean() / self.D
        logs = {"loss": loss.item(), "rate": kl.mean().item() / self.D,
                "distortion": -recon.mean().item() / self.D,
                "elbo_nats": (kl - recon).mean().item(), "kl_weight": w}
        if len(kls) > 1:
            logs.update({f"kl_{i + 1}": k_l.mean().item() for i, k_l in enumerate(kls)})
        return loss, logs

    @torch.no_grad()
    def sample(self, n: int, *, generator=None, noise: bool = False, sampler=None,
               steps=None, cond=None) -> torch.Tensor:
        """n samples in model space, (n, *data_shape): z from the prior, then the decoder mean E[x|z]
        (noise=False, the usual VAE picture) or a draw from p(x|z) (noise=True, a sample of the model
        p(x)); a conditional model's from p(x | c) for n labels `cond` (None: the null class). A VAE has no
        sampler or steps: passing either raises ValueError."""
        cond = self.labels(cond, n, device=next(self.parameters()).device)
        if sampler is not None or steps is not None:
            raise ValueError(f"a {self.kind} samples by decoding prior draws; got sampler={sampler!r}, "
                             f"steps={steps!r}")
        out = self._decode_prior(check_positive_int("n", n), generator, cond)
        return self.likelihood.sample(out, generator) if noise else self.likelihood.mean(out)

    @torch.no_grad()
    def evaluate(self, x0: torch.Tensor, *, generator=None, k: int = 1000, max_rows: int = 2048, cond=None) -> dict:
        """Per-example bounds in nats, model space. x0: (B, *data_shape) -> dict of (B,) tensors:

        - `nll_nats`  = -log (1/K) sum_k w_k, the IWAE bound of E13 with K = `k` draws z_k ~ q(z|x),
          w_k = p(x, z_k) / q(z_k|x) (for an HVAE the joint over all layers); an upper bound on -log p(x)
          that tightens as K grows. K = 1000 by default, at K decoder passes per example: on 2-D blobs
          it has converged by K = 100 (changes < 0.01 nats); on 8x8 digits after 3000 steps it still
          moves 0.5-1.4 nats (about 0.01-0.03 bits/dim) from K = 100 to 1000.
        - `elbo_nats` = -(1/K) sum_k log w_k, the negative ELBO (E9) estimated with the same draws, so
          `nll_nats <= elbo_nats` holds for every example (Jensen).

        The K draws are taken in chunks, at most `max_rows` decoder rows at a time (examples x draws). With
        labels `cond` (B,) a conditional model's bounds are on -log p(x | c) (without them, the null class's).
        """
        cond = self.labels(cond, len(x0), device=x0.device)
        k = check_positive_int("k", k)
        k_chunk = min(k, check_positive_int("max_rows", max_rows))
        if self._cfg.get("binarize"):
            x0 = dynamic_binarize(x0, generator)  # one binarization per call: seed the generator to fix it
        nll, elbo = [], []
        rows = max(1, max_rows // k_chunk)
        for b, xb in enumerate(x0.split(rows)):
            cb = None if cond is None else cond[b * rows : b * rows + len(xb)]
            lse = torch.full(xb.shape[:1], -math.inf, dtype=xb.dtype, device=xb.device)
            total = torch.zeros_like(lse)
            for start in range(0, k, k_chunk):
                log_w = self._log_weights(xb, min(k_chunk, k - start), generator, cb)  # (k_chunk, b)
                lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
                total = total + log_w.sum(0)
            nll.append(math.log(k) - lse)
            elbo.append(-total / k)
        return {"nll_nats": torch.cat(nll), "elbo_nats": torch.cat(elbo)}

    def _common_config(self) -> dict:
        return {key: (list(v) if isinstance(v, list) else v) for key, v in self._cfg.items()}
