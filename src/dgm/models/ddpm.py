"""``DDPM``: a denoising network, a schedule and a training objective, following the model protocol.

The model works in model space (docs/ARCHITECTURE.md). ``model.denoiser(x_i, i, cond=None) -> eps_hat`` is
the denoiser of shared/SPEC.md whatever the network predicts; losses, samplers and the bound take it.
A class-conditional DDPM (``conditional``) learns eps(x_i, i, c) and, through label dropout, the unconditional
eps(x_i, i) as the null class c = num_classes (classifier-free guidance training, Ho & Salimans 2022).
With ``guide_step`` it keeps its EMA of that step as the guide of autoguidance (Karras et al. 2024).

Longer than 300 lines because the protocol's methods, the reverse-variance choice and the guide's training hook
all read the same model state; the guide itself lives in ``dgm.models.guide``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core import rng
from dgm.core.bound import vlb
from dgm.core.losses import OBJECTIVES, WEIGHTINGS, loss_hybrid, loss_simple
from dgm.core.parameterization import PREDICTIONS, Denoiser, autoguided_denoiser, guided_denoiser
from dgm.core.reverse import AnalyticVariance
from dgm.core.schedule import Schedule
from dgm.models.guide import Guide, require_guide
from dgm.nets import build_net
from dgm.nets.embeddings import LABEL_DROPOUT, check_class_options, drop_labels, model_labels
from dgm.samplers import sample as run_sampler

SCHEDULES = ("linear", "cosine")
MODEL_VARIANCES = ("fixed_small", "fixed_large", "learned", "analytic")


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
        variance: the reverse variance of the bound and of ancestral sampling (docs/LIKELIHOOD.md):
            "fixed_small" (sigma2(i), default), "fixed_large" (beta_i^2), "learned" (the net outputs twice
            the channels and trains with L_hybrid, Nichol & Dhariwal 2021) or "analytic" (Bao et al. 2022:
            Gamma_i estimated after training and set with ``set_analytic``; a run stores it beside its
            weights).
        conditional: a class-conditional model p(x | c) over ``num_classes`` classes (the net gets a class
            embedding with a null class at index ``num_classes``); ``loss``, ``sample`` and ``evaluate`` take
            ``cond``, one label per example. Without labels, ``sample`` and ``evaluate`` use the null class, the
            unconditional model p(x) that label dropout trained (an error when ``label_dropout`` = 0); ``loss``
            needs them. An unconditional DDPM given labels raises ValueError.
        num_classes: K, the data's classes (``complete_config`` fills it in from the data).
        label_dropout: the probability that a training label is replaced by the null class, drawn from the
            ``generator`` of ``loss`` in training mode (Ho & Salimans 2022).
        guide_step: at this training step the EMA's denoiser is copied into ``guide`` (``dgm.models.guide``), the
            guide of ``sample(..., autoguidance=w)``: eps + w (eps - eps_guide). None or 0: no guide.
    """

    kind = "ddpm"
    ema_fixed_buffers = ("guide.",)  # the guide: written into model and EMA by begin_step, not copied every step
    CLI_OPTIONS = ("objective", "prediction", "weighting", "schedule", "levels", "variance", "conditional",
                   "label_dropout", "guide_step")

    def __init__(self, *, data_shape, net: dict, schedule: str = "cosine", levels: int = 1000,
                 prediction: str = "eps", objective: str = "eps", weighting: str = "simple",
                 bins: int | None = None, dequantize: bool = False, variance: str = "fixed_small",
                 conditional: bool = False, num_classes: int | None = None, label_dropout: float = LABEL_DROPOUT,
                 guide_step: int | None = None):
        super().__init__()
        check_class_options("DDPM", conditional, num_classes, label_dropout)
        if conditional and isinstance(net, dict):  # the net takes the model's classes (build_net checks the rest)
            if net.get("num_classes", num_classes) != num_classes:
                raise ValueError(f"DDPM: the net's num_classes={net['num_classes']!r} differs from num_classes="
                                 f"{num_classes!r}")
            net = dict(net, num_classes=num_classes)
        self.conditional, self.label_dropout = conditional, float(label_dropout)
        checks = (("schedule", schedule, SCHEDULES), ("prediction", prediction, PREDICTIONS),
                  ("objective", objective, OBJECTIVES), ("weighting", weighting, WEIGHTINGS),
                  ("variance", variance, MODEL_VARIANCES))
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
        self.variance = variance
        self.denoiser = Denoiser(build_net(net), self.schedule, prediction, learn_variance=variance == "learned")
        self.analytic: AnalyticVariance | None = None  # Gamma of an "analytic" variance, once estimated
        # the labels the net takes: a conditional model's classes, or those of a bare net built with num_classes
        self.num_classes: int | None = self.net.config().get("num_classes")
        self.guide = None if guide_step in (None, 0) else Guide(self.denoiser, guide_step)  # autoguidance's snapshot

    @property
    def net(self) -> nn.Module:
        """The network (registered once, inside ``denoiser``)."""
        return self.denoiser.net

    def config(self) -> dict:
        """JSON-able config; ``dgm.models.build_model(config)`` rebuilds an untrained copy."""
        return {"kind": self.kind, "data_shape": list(self.data_shape), "net": self.net.config(),
                "schedule": self.schedule_name, "levels": self.levels, "prediction": self.prediction,
                "objective": self.objective, "weighting": self.weighting, "bins": self.bins,
                "dequantize": self.dequantize} | self._options_not_at_default()

    def _options_not_at_default(self) -> dict:
        """The options config.json records only away from their defaults, so older files read the same."""
        out = {} if self.variance == "fixed_small" else {"variance": self.variance}
        if self.conditional:
            out |= {"conditional": True, "num_classes": self.num_classes}
        if self.label_dropout != LABEL_DROPOUT:
            out["label_dropout"] = self.label_dropout
        if self.guide is not None:
            out["guide_step"] = self.guide.step
        return out

    @classmethod
    def complete_config(cls, config: dict, shape: list[int], bins: int | None, num_classes: int | None = None) -> dict:
        """A recipe's model config with the data-dependent fields filled in: data_shape, bins, the net's input
        size (an MLP's dim, a UNet's channels and image size), and for a conditional model the data's
        ``num_classes`` (ValueError without it); continuous data are never dequantized."""
        config = dict(config, kind=cls.kind, data_shape=list(shape), bins=bins)
        if bins is None:
            config["dequantize"] = False
        net = dict(config["net"])
        if config.get("conditional"):
            if num_classes is None:
                raise ValueError("a conditional ddpm needs class labels in the data (num_classes)")
            config["num_classes"] = net["num_classes"] = num_classes
        outputs = 2 if config.get("variance") == "learned" else 1  # a learned variance doubles the output
        if net["kind"] == "mlp":
            net["dim"] = math.prod(shape)
            net.pop("out_dim", None)
            if outputs == 2:
                net["out_dim"] = 2 * net["dim"]
        elif net["kind"] == "unet":
            net |= {"in_channels": shape[0], "image_size": max(shape[-2:])}
            net.pop("out_channels", None)
            if outputs == 2:
                net["out_channels"] = 2 * shape[0]
        else:
            raise ValueError(f"unknown net kind {net['kind']!r} in a DDPM recipe")
        config["net"] = net
        return config

    def describe(self) -> str:
        """One line: the net, the schedule and what the net predicts."""
        classes = f", conditional on {self.num_classes} classes" if self.conditional else ""
        return (f"{self.net.config()['kind']} net, {self.schedule_name} schedule, L = {self.levels}, predicts "
                f"{self.prediction}, objective {self.objective} ({self.weighting}), {self.variance} variance{classes}")

    def labels(self, cond, n: int, *, train: bool = False, device=None):
        """``cond`` checked for this model (``dgm.nets.embeddings.model_labels``): LongTensor (n,) or None."""
        return model_labels(cond, n, kind=self.kind, num_classes=self.num_classes, conditional=self.conditional,
                            label_dropout=self.label_dropout, train=train, device=device)

    # ------------------------------------------------------------------ autoguidance
    @property
    def has_guide(self) -> bool:
        """Whether the guide holds its snapshot (training passed ``guide_step``)."""
        return self.guide is not None and self.guide.taken

    def begin_step(self, step: int, x: Tensor, ema: DDPM) -> None:
        """Called by the training loop before each step on the model it trains (``ema``: its EMA copy): at
        ``guide_step`` the EMA's denoiser is copied into the guide of both copies, once."""
        if self.guide is None or step < self.guide.step or getattr(self, "_guide_seen", False):
            return
        if not self.has_guide:  # a resumed run past guide_step has it already (read once: no sync per step)
            for m in (self, ema):
                m.guide.take(ema.denoiser)
        self._guide_seen = True

    # ------------------------------------------------------------------ reverse variance
    def set_analytic(self, variance: AnalyticVariance | None) -> None:
        """Set (or clear) the estimated Gamma of an analytic variance (``dgm.core.reverse.AnalyticVariance``)."""
        if variance is not None and variance.gamma.shape != (self.levels + 1,):
            raise ValueError(f"Gamma has {variance.gamma.numel()} entries; this DDPM has L = {self.levels}")
        self.analytic = variance

    def variance_for(self, name: str | None = None):
        """What ``vlb`` and the samplers take as ``variance`` for ``name`` (default: the model's own choice):
        a name, the ``AnalyticVariance`` (estimated), or the learned ``denoiser.reverse_variance``."""
        name = self.variance if name is None else name
        if name in ("fixed_small", "fixed_large"):
            return name
        elif name == "analytic":
            if self.analytic is None:
                raise ValueError("the analytic variance has no estimated Gamma yet (estimate it on training data: "
                                 "dgm.evaluation.likelihood.estimate_analytic_variance)")
            return self.analytic
        elif name == "learned":
            if not self.denoiser.learn_variance:
                raise ValueError("this DDPM was trained without a learned variance (--variance learned)")
            return self.denoiser.reverse_variance
        else:
            raise ValueError(f"unknown reverse variance {name!r}; choose one of {', '.join(MODEL_VARIANCES)}")

    def quick_sampling(self) -> tuple[dict, str]:
        """DPM-Solver++(2M) at 20 NFE (at most L): good samples fast. An unconditional model with its guide:
        SDE-DPM-Solver++(2M) at 20 steps with autoguidance w = 1.5 (40 NFE): on the 15-minute MNIST recipe FD 0.91
        and a confident rate of 0.954 (w = 1: 0.75 and 0.935), against 1.49 and 0.875 unguided
        (benchmarks/RESULTS.md, "Tenth session")."""
        steps = min(20, self.levels)
        if self.has_guide and not self.conditional:
            return ({"sampler": "sde-dpm++2m", "steps": steps, "autoguidance": 1.5},
                    f"sde-dpm++2m, {steps} steps, autoguidance 1.5 ({2 * steps} NFE)")
        return {"sampler": "dpm++2m", "steps": steps}, f"dpm++2m, {steps} NFE"

    def continuous_view(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, float]:
        """(y, offset): the continuous data the model's density is defined on, and what turns a density of y
        into a bound on -log P(x0): y = x0 for continuous data (offset 0); y = x0 + u and offset
        -D log(2h) for dequantized discrete data (E37), so -log P(x0) <= E_u[-log p(y)] + offset. Discrete data
        without dequantization have no continuous density here: ValueError."""
        if self.bins is None:
            return x0, 0.0
        if not self.dequantize:
            raise ValueError("this DDPM models discrete data with a discretized decoder (no dequantization), so it "
                             "has no continuous density for the probability-flow ODE")
        return self._dequantized(x0, generator), -x0[0].numel() * math.log(2.0 / (self.bins - 1))

    def _dequantized(self, x0: Tensor, generator) -> Tensor:
        """y = x0 + u, u ~ U(-h, h) per coordinate, h = 1 / (bins - 1): uniform dequantization (E37)."""
        h = 1.0 / (self.bins - 1)
        u = rng.rand(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return x0 + (2 * u - 1) * h

    def forward(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        """eps_hat(x_i, i, cond): the model is itself a denoiser."""
        return self.denoiser(x_i, i, cond)

    def loss(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> tuple[Tensor, dict]:
        """The weighted L_simple of ``objective`` on a batch in model space (EQUATIONS.md E33); a conditional
        model's labels ``cond`` (B,) are dropped to the null class with probability ``label_dropout`` in
        training mode."""
        cond = self.labels(cond, len(x0), train=True, device=x0.device)
        if self.conditional and self.training:
            cond = drop_labels(cond, self.label_dropout, self.num_classes, generator)
        if self.dequantize:
            x0 = self._dequantized(x0, generator)
        if self.variance == "learned":
            loss = loss_hybrid(self.denoiser, self.schedule, x0, objective=self.objective, weighting=self.weighting,
                               generator=generator, cond=cond, bins=None if self.dequantize else self.bins)
        else:
            loss = loss_simple(self.denoiser, self.schedule, x0, objective=self.objective,
                               weighting=self.weighting, generator=generator, cond=cond)
        return loss, {}

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: str = "ancestral",
               steps: int | None = None, cond=None, guidance: float = 0.0, autoguidance: float = 0.0,
               **kw) -> Tensor:
        """n samples in model space with the named sampler and ``steps`` denoiser calls (``dgm.sample``'s
        keywords pass through: ``grid``, ``variance``, ``eta``, ...); ``cond`` holds n labels, one int class for
        all, or None (a conditional model's null class: the unconditional model). ``guidance`` w >= 0 samples
        with classifier-free guidance, (1 + w) eps(x, c) - w eps(x, null) (Ho & Salimans 2022; diffusers'
        guidance_scale = 1 + w; ``dgm.core.parameterization.guided_denoiser``), with any sampler.
        ``autoguidance`` w >= 0 samples with eps + w (eps - eps_guide), the guide being the run's early EMA
        snapshot (``guide_step``; Karras et al. 2024; ``autoguided_denoiser``); not together with ``guidance``.

        Discrete data (``bins``) clip x0_hat to [-1, 1] at every step.
        """
        cond = self.labels(cond, n, device=next(self.parameters()).device)
        h = 1.0 / (self.bins - 1) if self.dequantize else 0.0
        clip = (-1.0 - h, 1.0 + h) if self.bins is not None else None
        kw.setdefault("clip", clip)
        kw.setdefault("device", next(self.parameters()).device)
        if sampler == "ancestral":
            kw["variance"] = self.variance_for(kw.get("variance"))
        eps_fn = self.denoiser
        if guidance != 0:
            if not self.conditional:
                raise ValueError(f"guidance {guidance!r} needs a class-conditional model (train with --conditional)")
            if cond is None:
                raise ValueError(f"guidance {guidance!r} needs class labels (the null class is the unconditional "
                                 "model, which guidance would leave unchanged)")
            eps_fn = guided_denoiser(self.denoiser, guidance, self.num_classes)
        if autoguidance != 0:
            if guidance != 0:
                raise ValueError(f"guidance {guidance!r} and autoguidance {autoguidance!r}: choose one")
            eps_fn = autoguided_denoiser(self.denoiser, self.guide, autoguidance)  # checks w first
            require_guide(self.guide, autoguidance)
        return run_sampler(eps_fn, self.schedule, (n, *self.data_shape), sampler=sampler, steps=steps,
                           generator=generator, cond=cond, **kw)

    @torch.no_grad()
    def evaluate(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None,
                 variance: str | None = None) -> dict[str, Tensor]:
        """{"nll_nats": the full variational bound per example (B,), nats in model space} (E34-E37); for a
        conditional model given labels ``cond`` (B,), a bound on -log p(x0 | c) (without them, on the null
        class's -log p(x0)).

        ``variance`` names the reverse variance the bound uses (default: the model's; see ``variance_for``).

        With ``dequantize`` it is E_u[L_vb(x0 + u)] - D log(2h) (one draw of u), an upper bound on the
        discrete -log P(x0) since P(x0) = (2h)^D E_u p(x0 + u).
        """
        cond = self.labels(cond, len(x0), device=x0.device)
        if self.dequantize:
            y = self._dequantized(x0, generator)
            D = x0[0].numel()
            variance = self.variance_for(variance)
            nll = vlb(self.denoiser, self.schedule, y, bins=None, generator=generator, cond=cond, variance=variance)
            return {"nll_nats": nll - D * math.log(2.0 / (self.bins - 1))}
        nll = vlb(self.denoiser, self.schedule, x0, bins=self.bins, generator=generator, cond=cond,
                  variance=self.variance_for(variance))
        return {"nll_nats": nll}
