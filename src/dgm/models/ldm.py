"""Latent diffusion (Rombach et al. 2022) with dgm's own pieces: a VAE (E7-E13) whose latents a DDPM
(E34) models in place of the VAE's N(0, I) prior. The book's two halves combined: the VAE compresses, the
DDPM gives the latent density that the VAE's prior is too simple to be.

Trained in two stages by one ``fit`` in one run directory (``dgm train ldm``):

1. steps 0 .. ``vae_steps`` - 1: the VAE on its ELBO (E10), alone;
2. at step ``vae_steps``: the VAE is frozen at its EMA weights, its latents are standardized per
   dimension (shift and scale: the mean and standard deviation of the encoder means over the training
   data), and from then on the DDPM trains on z_s = (z - shift) / scale, z ~ q(z|x) drawn afresh for every
   batch.

The stage, shift and scale are buffers, so a checkpoint carries them and ``--resume`` continues either
stage (across the switch too). The training loop asks ``begin_step`` to switch and ``stage_steps`` for
the step within the stage, so the learning-rate warm-up and the EMA warm-up start again for the DDPM.

Bound (E9 with the DDPM's bound as the prior term): for one draw z ~ q(z|x),

    -log p(x) <= E_q[ -log p(x|z) + log q(z|x) - log p(z) ],  -log p(z) <= L_DDPM(z_s) + sum_j log scale_j,

the DDPM's variational bound (E34) on z_s plus the log-Jacobian of the standardization. ``evaluate``
returns that one-draw estimate as ``nll_nats`` (an unbiased estimate of an upper bound on -log P(x) for
the VAE's discretized decoder). Samples: z_s from the DDPM's sampler, z = shift + scale z_s, then the
decoder mean E[x|z].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgm.core import rng
from dgm.core.gaussian import normal_log_prob_from_log_std, sum_flat
from dgm.models.ddpm import DDPM
from dgm.models.vae import VAE
from dgm.models.vae.base import check_positive_int

__all__ = ["LDM"]

ENCODE_CHUNK = 1000  # training examples per encoder call when the latent statistics are computed


class LDM(nn.Module):
    """A VAE and a DDPM on its standardized latents; follows the model protocol (``dgm.models.protocol``).

    Config (the constructor's keywords; ``config()`` returns them with ``kind="ldm"``):
    - ``vae``: a VAE config (``kind`` "vae"; one latent layer of ``latent_dim`` m, unconditional);
    - ``ddpm``: a DDPM config on vectors of size m (``data_shape`` [m], no bins);
    - ``vae_steps``: training steps of stage 1 (the VAE); the DDPM trains from then on.
    """

    kind = "ldm"
    CLI_OPTIONS = ()
    conditional = False

    def __init__(self, *, vae: dict, ddpm: dict, vae_steps: int):
        super().__init__()
        for name, cfg, kind in (("vae", vae, "vae"), ("ddpm", ddpm, "ddpm")):
            if not isinstance(cfg, dict) or cfg.get("kind", kind) != kind:
                raise ValueError(f"LDM: {name} must be a {kind} config, got {cfg!r}")
        self.vae_steps = check_positive_int("vae_steps", vae_steps)
        self.vae = VAE(**{k: v for k, v in vae.items() if k != "kind"})
        if self.vae.conditional:
            raise ValueError("LDM: a conditional VAE is not supported (the latent DDPM is unconditional)")
        m = self.vae.latent_dim
        if ddpm.get("guide_step"):
            raise ValueError(f"LDM: the latent ddpm keeps no guide (guide_step {ddpm['guide_step']!r}); autoguidance "
                             "is for pixel-space DDPM runs")
        self.ddpm = DDPM(**{k: v for k, v in ddpm.items() if k != "kind"})
        if list(self.ddpm.data_shape) != [m] or self.ddpm.bins is not None or self.ddpm.conditional:
            raise ValueError(f"LDM: the ddpm must model unconditional continuous vectors of the VAE's latent size "
                             f"[{m}], got data_shape {list(self.ddpm.data_shape)} with bins {self.ddpm.bins!r}")
        self.data_shape = self.vae.data_shape
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))  # 0: the VAE trains; 1: the DDPM
        self.register_buffer("z_shift", torch.zeros(m))
        self.register_buffer("z_scale", torch.ones(m))

    def config(self) -> dict:
        """JSON-able config; ``dgm.models.build_model(config)`` rebuilds an untrained copy."""
        return {"kind": self.kind, "vae": self.vae.config(), "ddpm": self.ddpm.config(), "vae_steps": self.vae_steps}

    @classmethod
    def complete_config(cls, config: dict, shape: list[int], bins: int | None, num_classes: int | None = None) -> dict:
        """A recipe's config with the data-dependent fields filled in: the VAE's (data shape, bins) and the
        DDPM's (vectors of the VAE's latent size, continuous)."""
        if len(shape) != 3:
            raise ValueError(f"an ldm models images (C, H, W); this data has examples of shape {list(shape)}")
        if config.get("conditional") or config["vae"].get("conditional"):
            raise ValueError("an ldm is unconditional: drop --conditional")
        vae = VAE.complete_config(config["vae"], shape, bins)
        ddpm = DDPM.complete_config(config["ddpm"], [vae["latent_dim"]], None)
        return {"kind": cls.kind, "vae": vae, "ddpm": ddpm, "vae_steps": config["vae_steps"]}

    def describe(self) -> str:
        """One line: the VAE and the latent DDPM."""
        return f"VAE ({self.vae.describe()}) with a latent DDPM ({self.ddpm.describe()})"

    def quick_sampling(self) -> tuple[dict, str]:
        """Ancestral sampling over all L levels of the latent DDPM, then the decoder means: on latent vectors a
        level costs little (1,000 MNIST samples in 44 s on two CPU cores), and on MNIST it gave better samples
        than DPM-Solver++(2M) at 20 NFE (FD 1.35 vs 1.80 after 15 minutes; benchmarks/RESULTS.md, "Latent
        diffusion")."""
        L = self.ddpm.levels
        return {"sampler": "ancestral", "steps": L}, f"latent ancestral, {L} levels, decoder means"

    # ------------------------------------------------------------------ the two stages

    def stage_steps(self, step: int, total: int) -> tuple[int, int]:
        """(the step within the stage that ``step`` belongs to, that stage's length) for a run of ``total``
        steps: the training loop's warm-ups (learning rate, EMA) restart with the DDPM."""
        if step < self.vae_steps:
            return step, min(self.vae_steps, total)
        return step - self.vae_steps, max(1, total - self.vae_steps)

    @torch.no_grad()
    def begin_step(self, step: int, x: Tensor, ema: LDM) -> None:
        """Called by the training loop before each step on the model it trains (``ema`` its EMA copy, ``x``
        the training data): at ``vae_steps`` the switch to stage 2 (module docstring), in both copies."""
        if step < self.vae_steps or int(self.stage) == 1:
            return
        self.vae.load_state_dict(ema.vae.state_dict())
        means = torch.cat([self.vae.encode(c)[0] for c in x.split(ENCODE_CHUNK)])
        shift, scale = means.mean(0), means.std(0).clamp_min(1e-6)
        for m in (self, ema):
            m.z_shift.copy_(shift)
            m.z_scale.copy_(scale)
            m.stage.fill_(1)

    def _trained(self, what: str) -> None:
        if int(self.stage) != 1:
            raise ValueError(f"this ldm is still in stage 1 (its VAE trains for {self.vae_steps} steps): its latent "
                             f"DDPM is not trained, so it has no {what} yet (continue with dgm train ldm --out RUN "
                             "--resume)")

    def _latents(self, x0: Tensor, generator) -> tuple[Tensor, Tensor, Tensor]:
        """(z ~ q(z|x), its standardized z_s, log q(z|x) (B,)) with the frozen encoder."""
        mean, log_std = self.vae.encode_log_std(x0)
        z = mean + torch.exp(log_std) * rng.randn(mean.shape, generator=generator, device=mean.device,
                                                   dtype=mean.dtype)
        log_q = sum_flat(normal_log_prob_from_log_std(z, mean, log_std))
        return z, (z - self.z_shift) / self.z_scale, log_q

    def loss(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> tuple[Tensor, dict]:
        """Stage 1: the VAE's loss (its negative ELBO per data dimension, E10). Stage 2: the DDPM's loss on
        the standardized latents of the frozen encoder (z ~ q(z|x), no gradient into the VAE)."""
        if cond is not None:
            raise ValueError("an ldm is unconditional; got class labels")
        if int(self.stage) == 0:
            loss, logs = self.vae.loss(x0, generator=generator)
            return loss, {**logs, "stage": 1}
        with torch.no_grad():
            _, z_s, _ = self._latents(x0, generator)
        loss, logs = self.ddpm.loss(z_s, generator=generator)
        return loss, {**logs, "stage": 2}

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: str = "ancestral",
               steps: int | None = None, cond=None, **kw) -> Tensor:
        """n images in model space: latents from the DDPM (``sampler``, ``steps`` and ``dgm.sample``'s other
        keywords), un-standardized, then the VAE's decoder mean E[x|z]."""
        if cond is not None:
            raise ValueError("an ldm is unconditional; got class labels")
        self._trained("samples")
        z_s = self.ddpm.sample(n, generator=generator, sampler=sampler, steps=steps, **kw)
        return self.vae.decode(self.z_shift + self.z_scale * z_s)

    @torch.no_grad()
    def evaluate(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> dict[str, Tensor]:
        """{"nll_nats", "elbo_nats"} (B,): the one-draw bound of the module docstring, nats per example in
        model space (both keys hold the same estimate: an ELBO whose prior term is itself a bound)."""
        if cond is not None:
            raise ValueError("an ldm is unconditional; got class labels")
        self._trained("bound")
        z, z_s, log_q = self._latents(x0, generator)
        recon = self.vae.likelihood.log_prob(x0, self.vae.decode_raw(z))
        prior = self.ddpm.evaluate(z_s, generator=generator)["nll_nats"] + torch.log(self.z_scale).sum()
        nll = -recon + log_q + prior
        return {"nll_nats": nll, "elbo_nats": nll}
