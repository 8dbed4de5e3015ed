"""``DDPM``: a denoising network, a schedule and a training objective, following the model protocol.

The model works in model space (docs/ARCHITECTURE.md). ``model.denoiser(x_i, i, cond=None) -> eps_hat`` is
the denoiser of shared/SPEC.md whatever the network predicts; losses, samplers and the bound take it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core import rng
from dgm.core.bound import vlb
from dgm.core.losses import OBJECTIVES, WEIGHTINGS, loss_simple
from dgm.core.parameterization import PREDICTIONS, Denoiser
from dgm.core.schedule import Schedule
from dgm.nets import build_net
from dgm.samplers import sample as run_sampler

SCHEDULES = ("linear", "cosine")


class DDPM(nn.Module):
    """Denoising diffusion model: net (``build_net(net)``) + ``Schedule`` + ``Denoiser`` + objective.

    Args:
        data_shape: the shape of one example, e.g. (2,) or (1, 8, 8).
        net: a ``build_net`` config ({"kind": "mlp" | "unet", ...}).
        schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal), with ``levels`` = L levels.
        prediction: what the network outputs: "eps", "x0" or "v".
        objective: the regression target of the loss: "eps", "x0" or "v".
        weighting: per-level loss weight: "simple", "vlb" (E30, mean 1) or "min_snr" (gamma = 5).
        bins: number of evenly spaced values of discrete data in [-1, 1] (None: continuous data).
        dequantize: for discrete data, train and evaluate on y = x0 + u, u ~ U(-h, h)^D with h = 1/(bins-1)
            the half-width of a bin (uniform dequantization, EQUATIONS.md E37): the data become continuous,
            so eps* stays smooth at low noise instead of a sawtooth no network can fit. ``evaluate`` then
            bounds the discrete NLL by -log P(x0) <= E_u[L_vb(x0 + u)] - D log(2h), and samples are rounded
            to the bins in data space. Without it the discretized decoder of E36 is used.
    """

    kind = "ddpm"
    CLI_OPTIONS = ("objective", "prediction", "weighting", "schedule", "levels")

    def __init__(self, *, data_shape, net: dict, schedule: str = "cosine", levels: int = 1000,
                 prediction: str = "eps", objective: str = "eps", weighting: str = "simple",
                 bins: int | None = None, dequantize: bool = False):
        super().__init__()
        checks = (("schedule", schedule, SCHEDULES), ("prediction", prediction, PREDICTIONS),
                  ("objective", objective, OBJECTIVES), ("weighting", weighting, WEIGHTINGS))
        for name, value, choices in checks:
            if value not in choices:
                raise ValueError(f"DDPM: unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 2):
            raise ValueError(f"DDPM: bins must be an integer >= 2 or None, got {bins!r}")
        if not isinstance(dequantize, bool) or (dequantize and bins is None):
            raise ValueError(f"DDPM: dequantize must be true or false and needs bins, got {dequantize!r} with "
                             f"bins={bins!r}")
        self.dequantize = dequantize
        self.data_shape = tuple(int(d) for d in data_shape)
        self.schedule_name, self.levels = schedule, levels
        self.prediction, self.objective, self.weighting, self.bins = prediction, objective, weighting, bins
        self.schedule = Schedule.named(schedule, levels)
        self.denoiser = Denoiser(build_net(net), self.schedule, prediction)

    @property
    def net(self) -> nn.Module:
        """The network (registered once, inside ``denoiser``)."""
        return self.denoiser.net

    def config(self) -> dict:
        """JSON-able config; ``dgm.models.build_model(config)`` rebuilds an untrained copy."""
        return {"kind": self.kind, "data_shape": list(self.data_shape), "net": self.net.config(),
                "schedule": self.schedule_name, "levels": self.levels, "prediction": self.prediction,
                "objective": self.objective, "weighting": self.weighting, "bins": self.bins,
                "dequantize": self.dequantize}

    @classmethod
    def complete_config(cls, config: dict, shape: list[int], bins: int | None) -> dict:
        """A recipe's model config with the data-dependent fields filled in: data_shape, bins, the net's input
        size (an MLP's dim, a UNet's channels and image size); continuous data are never dequantized."""
        config = dict(config, kind=cls.kind, data_shape=list(shape), bins=bins)
        if bins is None:
            config["dequantize"] = False
        net = dict(config["net"])
        if net["kind"] == "mlp":
            net["dim"] = math.prod(shape)
        elif net["kind"] == "unet":
            net |= {"in_channels": shape[0], "image_size": max(shape[-2:])}
        else:
            raise ValueError(f"unknown net kind {net['kind']!r} in a DDPM recipe")
        config["net"] = net
        return config

    def describe(self) -> str:
        """One line: the net, the schedule and what the net predicts."""
        return (f"{self.net.config()['kind']} net, {self.schedule_name} schedule, L = {self.levels}, predicts "
                f"{self.prediction}, objective {self.objective} ({self.weighting})")

    def quick_sampling(self) -> tuple[dict, str]:
        """DPM-Solver++(2M) at 20 NFE (at most L): good samples fast."""
        steps = min(20, self.levels)
        return {"sampler": "dpm++2m", "steps": steps}, f"dpm++2m, {steps} NFE"

    def _dequantized(self, x0: Tensor, generator) -> Tensor:
        """y = x0 + u, u ~ U(-h, h) per coordinate, h = 1 / (bins - 1): uniform dequantization (E37)."""
        h = 1.0 / (self.bins - 1)
        u = rng.rand(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return x0 + (2 * u - 1) * h

    def forward(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        """eps_hat(x_i, i, cond): the model is itself a denoiser."""
        return self.denoiser(x_i, i, cond)

    def loss(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> tuple[Tensor, dict]:
        """The weighted L_simple of ``objective`` on a batch in model space (EQUATIONS.md E33)."""
        if self.dequantize:
            x0 = self._dequantized(x0, generator)
        loss = loss_simple(self.denoiser, self.schedule, x0, objective=self.objective,
                           weighting=self.weighting, generator=generator, cond=cond)
        return loss, {}

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: str = "ancestral",
               steps: int | None = None, cond=None, **kw) -> Tensor:
        """n samples in model space with the named sampler and ``steps`` denoiser calls (``dgm.sample``'s
        keywords pass through: ``grid``, ``variance``, ``eta``, ...); ``cond`` holds n labels or None.

        Discrete data (``bins``) clip x0_hat to [-1, 1] at every step.
        """
        h = 1.0 / (self.bins - 1) if self.dequantize else 0.0
        clip = (-1.0 - h, 1.0 + h) if self.bins is not None else None
        kw.setdefault("clip", clip)
        kw.setdefault("device", next(self.parameters()).device)
        return run_sampler(self.denoiser, self.schedule, (n, *self.data_shape), sampler=sampler, steps=steps,
                           generator=generator, cond=cond, **kw)

    @torch.no_grad()
    def evaluate(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None,
                 variance="fixed_small") -> dict[str, Tensor]:
        """{"nll_nats": the full variational bound per example (B,), nats in model space} (E34-E37).

        ``variance`` is the reverse variance the bound uses (``dgm.core.reverse.reverse_variance``).

        With ``dequantize`` it is E_u[L_vb(x0 + u)] - D log(2h) (one draw of u), an upper bound on the
        discrete -log P(x0) since P(x0) = (2h)^D E_u p(x0 + u).
        """
        if self.dequantize:
            y = self._dequantized(x0, generator)
            D = x0[0].numel()
            nll = vlb(self.denoiser, self.schedule, y, bins=None, generator=generator, cond=cond, variance=variance)
            return {"nll_nats": nll - D * math.log(2.0 / (self.bins - 1))}
        nll = vlb(self.denoiser, self.schedule, x0, bins=self.bins, generator=generator, cond=cond, variance=variance)
        return {"nll_nats": nll}
