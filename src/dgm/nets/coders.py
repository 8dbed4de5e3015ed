"""Encoder and decoder networks of the VAEs: MLPs for any data, stride-2 convolutions for images.

They know nothing about the likelihood or the latent distribution: a trunk maps x to features, a decoder
net maps z to an output of the data's shape (a mean, or logits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ARCHS", "ConvDecoder", "ConvEncoder", "build_decoder_net", "build_trunk", "mlp"]

ARCHS = ("mlp", "conv")


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
