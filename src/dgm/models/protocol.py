"""The model protocol that DDPM, VAE and HVAE share, and ``build_model(config)``.

Training, checkpoints, evaluation, the report and the command line see a model only through this protocol,
so a new kind of model plugs in with one entry in ``MODEL_CLASSES``. The table is written out here, not
filled by import side effects.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dgm.models.ddpm import DDPM
from dgm.models.ldm import LDM
from dgm.models.vae import HVAE, VAE

__all__ = ["GenerativeModel", "MODEL_CLASSES", "MODEL_KINDS", "build_model", "model_class"]

MODEL_CLASSES = {"ddpm": DDPM, "vae": VAE, "hvae": HVAE, "ldm": LDM}
MODEL_KINDS = tuple(MODEL_CLASSES)


@runtime_checkable
class GenerativeModel(Protocol):
    """What every trainable model is (an ``nn.Module`` that also has these members).

    - ``kind``: its name in ``MODEL_KINDS``; ``CLI_OPTIONS``: the config keys that ``dgm train`` flags set;
    - ``config()``: JSON-able; ``build_model(config)`` rebuilds an untrained copy;
      ``complete_config(config, shape, bins, num_classes=None)`` (a classmethod) fills in a recipe's
      data-dependent fields (``num_classes``: the data's classes, needed by a conditional config);
    - ``loss(x0, *, generator=None, cond=None) -> (scalar, dict of floats for the log)``: the training
      objective on a batch in model space;
    - ``sample(n, *, generator=None, cond=None, **kw) -> (n, *data_shape)`` in model space;
    - ``evaluate(x0, *, generator=None, cond=None) -> dict of (B,) tensors``, nats per example in model
      space: at least ``nll_nats`` (an upper bound), for a VAE ``elbo_nats`` too;
    - ``describe() -> str``: one line for a report; ``quick_sampling() -> (sampler keywords, label)``: how
      to draw good samples fast (a DDPM's few-step solver, a VAE's decoder means).

    A model trained in stages (the LDM) also has ``begin_step(step, x, ema)``, which the training loop calls
    before every step (``x``: the training data; ``ema``: the EMA copy), and ``stage_steps(step, total) ->
    (step within the stage, the stage's length)``, from which the loop's warm-ups restart at each stage. A DDPM
    has ``begin_step`` too, to take its autoguidance guide from the EMA at ``guide_step`` (no stages).

    ``cond`` carries class labels (LongTensor (B,), values 0..K-1, or K for the null class) for
    class-conditional models (``conditional`` true: DDPM and VAE with the ``conditional`` option). Such a
    model trains on labels (``fit`` passes each batch's; ``loss`` without them is a ValueError), drops them
    to the null class with probability ``label_dropout`` in training, and reads None in ``sample`` and
    ``evaluate`` as the null class, the unconditional model (a ValueError when ``label_dropout`` = 0). An
    unconditional model given labels raises ValueError.
    """

    kind: str
    CLI_OPTIONS: tuple[str, ...]
    conditional: bool

    def config(self) -> dict: ...

    @classmethod
    def complete_config(cls, config: dict, shape: list[int], bins: int | None,
                        num_classes: int | None = None) -> dict: ...

    def loss(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> tuple[Tensor, dict]: ...

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond=None, **kw) -> Tensor: ...

    def evaluate(self, x0: Tensor, *, generator: torch.Generator | None = None, cond=None) -> dict: ...

    def describe(self) -> str: ...

    def quick_sampling(self) -> tuple[dict, str]: ...


def model_class(kind: str) -> type:
    """The class of a model kind ("ddpm" | "vae" | "hvae" | "ldm")."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return MODEL_CLASSES[kind]


def build_model(config: dict) -> torch.nn.Module:
    """An untrained model from ``model.config()``: ``{"kind": "ddpm" | "vae" | "hvae" | "ldm", **options}``."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"a model config must be a dict with a 'kind' key, got {config!r}")
    cls = model_class(config["kind"])
    rest = {k: v for k, v in config.items() if k != "kind"}
    try:
        return cls(**rest)
    except TypeError as err:
        raise ValueError(f"bad options for a {config['kind']} model: {err}") from None
