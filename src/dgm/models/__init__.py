"""``build_model(config)``: rebuild an untrained model of the protocol (DDPM, VAE, HVAE) from its config."""

from __future__ import annotations

from torch import nn

KINDS = ("ddpm", "vae", "hvae")


def build_model(config: dict) -> nn.Module:
    """An untrained model from ``model.config()``: ``{"kind": "ddpm" | "vae" | "hvae", **options}``."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"a model config must be a dict with a 'kind' key, got {config!r}")
    kind = config["kind"]
    rest = {k: v for k, v in config.items() if k != "kind"}
    if kind == "ddpm":
        from dgm.models.ddpm import DDPM as cls
    elif kind == "vae":
        from dgm.models.vae import VAE as cls
    elif kind == "hvae":
        from dgm.models.vae import HVAE as cls
    else:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        return cls(**rest)
    except TypeError as err:
        raise ValueError(f"bad options for a {kind} model: {err}") from None
