"""Networks: denoisers ``net(x, i, cond=None) -> tensor of x's shape`` that know nothing about diffusion, and
the VAE encoder/decoder nets (``coders``)."""

from __future__ import annotations

from torch import nn

from dgm.nets.embeddings import level_embedding
from dgm.nets.mlp import MLP
from dgm.nets.unet import UNet

__all__ = ["MLP", "UNet", "build_net", "level_embedding"]


def build_net(config: dict) -> nn.Module:
    """Build an untrained net from ``{"kind": "mlp" | "unet", **kwargs}`` (the output of ``net.config()``)."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"build_net expects a dict with a 'kind' key, got {config!r}")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    kind = config["kind"]
    if kind == "mlp":
        cls = MLP
    elif kind == "unet":
        cls = UNet
    else:
        raise ValueError(f"unknown net kind {kind!r}; known kinds: 'mlp', 'unet'")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for net kind {kind!r}: {err}") from None
