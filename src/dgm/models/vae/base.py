"""Parts shared by `VAE` and `HVAE`: config checks, Gaussian helpers, decoder likelihoods, networks.

Conventions (EQUATIONS.md section 3):
- data live in model space, roughly [-1, 1]; one example has shape `data_shape`, D = prod(data_shape);
- a Gaussian is carried as `(mean, log_std)`; densities and KLs are summed over the trailing dims and
  returned per example, in nats;
- the decoder likelihood p(x|z) is one of
  `gaussian`    N(x; mu(z), sigma^2) per dim (E13), sigma fixed (`decoder_std` a float) or learned;
  `bernoulli`   a coin per dim on b = [x > 0] (data in {-1, 1} or {0, 1}; the mean is 2 p - 1);
  `discretized` the discretized Gaussian of E36 over `bins` = K evenly spaced values in [-1, 1]: bin
                half-width 1/(K-1), outer edges at -inf/+inf, so its NLL compares with a DDPM's bits/dim.
  `decoder_std="learned"` is a learned global log-std per data dimension (a parameter of shape
  `data_shape`, initialized to log 0.1 (a small start keeps the posterior from collapsing while the
  std is still large), floored at `LOG_STD_MIN`; it does not depend on z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dgm.core import rng
from dgm.core.gaussian import discretized_gaussian_log_prob  # noqa: F401  (E36, shared with the DDPM bound)

DECODERS = ("gaussian", "bernoulli", "discretized")
ARCHS = ("mlp", "conv")
LOG_STD_MIN = math.log(1e-3)  # floor of a learned decoder std: 1e-3 of the [-1, 1] range
LOG_STD_INIT = math.log(0.1)  # start of a learned decoder std: small, so that z is used from the start
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------- config


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


# --------------------------------------------------------------------------------------------- Gaussians


def sum_except_batch(x: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
    """Sum over all but the first `batch_dims` dims: (*batch, ...) -> (*batch,)."""
    return x.reshape(*x.shape[:batch_dims], -1).sum(-1)


def log_normal(x, mean, log_std) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2) per element (E13's Gaussian density; shapes broadcast). Takes a
    log-std, unlike `dgm.gaussian.normal_log_prob`, which takes a variance."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI


def kl_normals(mean_q, log_std_q, mean_p, log_std_p) -> torch.Tensor:
    """KL(N(mean_q, s_q^2) || N(mean_p, s_p^2)) per element, analytic, from log-stds (with p = N(0, 1)
    this is E13's (m^2 + s^2 - 1 - log s^2) / 2, `dgm.gaussian.std_normal_kl`)."""
    var_ratio = torch.exp(2 * (log_std_q - log_std_p))
    return 0.5 * (var_ratio + ((mean_q - mean_p) * torch.exp(-log_std_p)) ** 2 - 1) - (log_std_q - log_std_p)


def reparameterize(mean, log_std, n: int | None = None, generator=None) -> torch.Tensor:
    """z = mean + std * eps, eps ~ N(0, I): (B, m) -> (B, m), or (n, B, m) when n is given."""
    shape = mean.shape if n is None else (n, *mean.shape)
    eps = rng.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(log_std) * eps


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
            lp = log_normal(x, out, self.get_log_std(out))
        elif self.decoder == "discretized":
            # E36 with K = bins; x is snapped to the grid so the end bins are recognized exactly
            x = snap_to_bins(x, self.bins)
            lp = discretized_gaussian_log_prob(x, out, self.get_log_std(out), self.bins)
        elif self.decoder == "bernoulli":
            b = (x > 0).to(out.dtype)
            lp = b * nn.functional.logsigmoid(out) + (1 - b) * nn.functional.logsigmoid(-out)
        else:
            raise ValueError(f"unknown decoder {self.decoder!r}")
        return sum_except_batch(lp.expand(out.shape), n_batch)

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


# --------------------------------------------------------------------------------------------- networks


def mlp(widths: Sequence[int], final_act: bool = False) -> nn.Sequential:
    """Linear layers widths[0] -> ... -> widths[-1], SiLU between (and after the last if final_act)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if final_act or i < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def _conv_sizes(h: int, w: int, n: int) -> list[tuple[int, int]]:
    """Spatial sizes after each of n stride-2 convs (kernel 3, padding 1): ceil halving."""
    sizes = [(h, w)]
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> features (B, hidden[-1] * h * w): one stride-2 conv + SiLU per entry of hidden,
    each followed by a 3x3 conv + SiLU (28 -> 14 -> 7, 8 -> 4 -> 2)."""

    def __init__(self, data_shape: Sequence[int], hidden: Sequence[int]):
        super().__init__()
        c, h, w = data_shape
        layers: list[nn.Module] = []
        for c_out in hidden:
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), nn.SiLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU()]
            c = c_out
        self.net = nn.Sequential(*layers, nn.Flatten())
        h_l, w_l = _conv_sizes(h, w, len(hidden))[-1]
        self.out_dim = hidden[-1] * h_l * w_l

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """z (B, m) -> (B, C, H, W): a linear map to the coarsest grid, then per stage a nearest upsample to
    the encoder's size there and a 3x3 conv + SiLU, the mirror of `ConvEncoder`; a linear last conv."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden: Sequence[int]):
        super().__init__()
        c_data, h, w = data_shape
        sizes = _conv_sizes(h, w, len(hidden))
        self.shape0 = (hidden[-1], *sizes[-1])
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.shape0)), nn.SiLU())
        layers: list[nn.Module] = []
        chans = list(hidden[::-1]) + [hidden[0]]
        for k in range(len(hidden)):
            c_in, c_out = chans[k], chans[k + 1]
            layers += [nn.Upsample(size=sizes[len(hidden) - 1 - k], mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(chans[-1], c_data, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).reshape(-1, *self.shape0))


def build_trunk(arch: str, data_shape: Sequence[int], hidden: Sequence[int]) -> tuple[nn.Module, int]:
    """The deterministic bottom-up feature net: x (B, *data_shape) -> (B, width); returns (net, width)."""
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), mlp([math.prod(data_shape), *hidden], final_act=True)), hidden[-1]
    elif arch == "conv":
        enc = ConvEncoder(data_shape, hidden)
        return enc, enc.out_dim
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def build_decoder_net(arch: str, latent_dim: int, data_shape: Sequence[int],
                      hidden: Sequence[int]) -> nn.Module:
    """z (B, m) -> decoder output (B, *data_shape) (a mean, or logits for bernoulli)."""
    if arch == "mlp":
        return nn.Sequential(mlp([latent_dim, *hidden[::-1], math.prod(data_shape)]),
                             nn.Unflatten(1, tuple(data_shape)))
    elif arch == "conv":
        return ConvDecoder(latent_dim, data_shape, hidden)
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


# ------------------------------------------------------------------------------------ shared model half


class LatentVariableModel(nn.Module):
    """What VAE and HVAE share: the decoder likelihood, the beta / KL warm-up weight, the training loss
    (E10), ancestral sampling and the IWAE evaluation (E13). Subclasses implement

    - `_elbo_terms(x, generator) -> (recon (B,), [kl_1 (B,), ..., kl_L (B,)])`: a one-sample estimate of
      E_q log p(x|z) and the per-layer KLs (analytic given the sampled upper layers);
    - `_log_weights(x, k, generator) -> (k, B)`: log p(x, z_k) - log q(z_k|x) for k draws z_k ~ q(z|x);
    - `_decode_prior(n, generator) -> (n, *data_shape)`: the decoder output for n draws from the prior.

    KL warm-up: the KL weight at training step t is beta * min(1, t / kl_warmup_steps) (beta when
    kl_warmup_steps = 0). t is the `step` argument of `loss` when given, else the persistent buffer
    `kl_step`, which `loss` increments in training mode (so any training loop warms up, and a resumed
    checkpoint carries it on); `set_step(t)` sets it.
    """

    kind: str

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

    def loss(self, x0: torch.Tensor, *, generator=None, step: int | None = None):
        """The beta-weighted negative ELBO (E10) in nats per data dimension, averaged over the batch:
        (-E_q log p(x|z) + w_t * KL) / D with w_t = `kl_weight(t)`. x0: (B, *data_shape).

        Logs (floats): `loss`; `rate` = KL / D and `distortion` = -recon / D (nats per data dim);
        `elbo_nats` = the negative ELBO in nats per example (as in `evaluate`); `kl_weight`; and for more
        than one stochastic layer `kl_1`, `kl_2`, ... in nats per example (1 = the layer next to x).
        """
        if step is None:
            step = int(self.kl_step)
            if self.training:
                self.kl_step += 1
        if self._cfg.get("binarize"):
            x0 = dynamic_binarize(x0, generator)
        recon, kls = self._elbo_terms(x0, generator)
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
               steps=None) -> torch.Tensor:
        """n samples in model space, (n, *data_shape): z from the prior, then the decoder mean E[x|z]
        (noise=False, the usual VAE picture) or a draw from p(x|z) (noise=True, a sample of the model
        p(x)). A VAE has no sampler or steps: passing either raises ValueError."""
        if sampler is not None or steps is not None:
            raise ValueError(f"a {self.kind} samples by decoding prior draws; got sampler={sampler!r}, "
                             f"steps={steps!r}")
        out = self._decode_prior(check_positive_int("n", n), generator)
        return self.likelihood.sample(out, generator) if noise else self.likelihood.mean(out)

    @torch.no_grad()
    def evaluate(self, x0: torch.Tensor, *, generator=None, k: int = 1000, max_rows: int = 2048) -> dict:
        """Per-example bounds in nats, model space. x0: (B, *data_shape) -> dict of (B,) tensors:

        - `nll_nats`  = -log (1/K) sum_k w_k, the IWAE bound of E13 with K = `k` draws z_k ~ q(z|x),
          w_k = p(x, z_k) / q(z_k|x) (for an HVAE the joint over all layers); an upper bound on -log p(x)
          that tightens as K grows. K = 1000 by default, at K decoder passes per example: on 2-D blobs
          it has converged by K = 100 (changes < 0.01 nats); on 8x8 digits after 3000 steps it still
          moves 0.5-1.4 nats (about 0.01-0.03 bits/dim) from K = 100 to 1000.
        - `elbo_nats` = -(1/K) sum_k log w_k, the negative ELBO (E9) estimated with the same draws, so
          `nll_nats <= elbo_nats` holds for every example (Jensen).

        The K draws are taken in chunks, at most `max_rows` decoder rows at a time (examples x draws).
        """
        k = check_positive_int("k", k)
        k_chunk = min(k, check_positive_int("max_rows", max_rows))
        if self._cfg.get("binarize"):
            x0 = dynamic_binarize(x0, generator)  # one binarization per call: seed the generator to fix it
        nll, elbo = [], []
        for xb in x0.split(max(1, max_rows // k_chunk)):
            lse = torch.full(xb.shape[:1], -math.inf, dtype=xb.dtype, device=xb.device)
            total = torch.zeros_like(lse)
            for start in range(0, k, k_chunk):
                log_w = self._log_weights(xb, min(k_chunk, k - start), generator)  # (k_chunk, b)
                lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
                total = total + log_w.sum(0)
            nll.append(math.log(k) - lse)
            elbo.append(-total / k)
        return {"nll_nats": torch.cat(nll), "elbo_nats": torch.cat(elbo)}

    def _common_config(self) -> dict:
        return {key: (list(v) if isinstance(v, list) else v) for key, v in self._cfg.items()}
