"""``Scaling``: the map between data space and model space, x = (data - shift) / scale, and back.

- continuous vectors (N, D): per-dimension standardisation, shift = mean and scale = std of the train
  split (scale 1 for a constant dimension);
- uint8 images (N, H, W), (N, C, H, W) or (N, H, W, C), C in {1, 3}: x = k / 127.5 - 1, bins = 256;
- ``digits`` (scikit-learn's 8x8 digits, gray levels 0..16): x = k / 8 - 1, bins = 17.

In general a discrete set with ``bins = K`` has values k = 0..K-1 and x = 2k / (K - 1) - 1, so the
bins are K evenly spaced points of [-1, 1]. Images are kept as (N, C, H, W) in model space; the original
layout is restored by ``to_data``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["LAYOUTS", "Scaling", "from_nchw", "to_nchw"]

LAYOUTS = ("NCHW", "NHWC", "NHW")


def to_nchw(a: np.ndarray, layout: str | None) -> np.ndarray:
    """Images in ``layout`` -> (N, C, H, W); None means already NCHW."""
    if layout == "NHW":
        return a[:, None]
    elif layout == "NHWC":
        return a.transpose(0, 3, 1, 2)
    elif layout in (None, "NCHW"):
        return a
    else:
        raise ValueError(f"unknown image layout {layout!r}; expected one of {LAYOUTS}")


def from_nchw(a: np.ndarray, layout: str | None) -> np.ndarray:
    """(N, C, H, W) -> images in ``layout``; None means NCHW."""
    if layout == "NHW":
        return a[:, 0]
    elif layout == "NHWC":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    elif layout in (None, "NCHW"):
        return a
    else:
        raise ValueError(f"unknown image layout {layout!r}; expected one of {LAYOUTS}")


def _floats(value) -> float | tuple[float, ...]:
    if isinstance(value, (list, tuple, np.ndarray, Tensor)):
        return tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    return float(value)


@dataclass(frozen=True)
class Scaling:
    """Model space x = (data - shift) / scale, and back (rounded to the bins for discrete data).

    kind: "vector" | "image"; shape: one example in model space, (D,) or (C, H, W); shift, scale: a
    float or one value per dimension (vectors); dtype: of the original data; bins: number of evenly
    spaced values of discrete data (None for continuous); layout: the original image layout
    ("NCHW", "NHWC" or "NHW"), restored by ``to_data``.
    """

    kind: str
    shape: tuple[int, ...]
    shift: float | tuple[float, ...]
    scale: float | tuple[float, ...]
    dtype: str
    bins: int | None = None
    layout: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "shift", _floats(self.shift))
        object.__setattr__(self, "scale", _floats(self.scale))
        if self.kind not in ("vector", "image"):
            raise ValueError(f"Scaling kind must be 'vector' or 'image', got {self.kind!r}")
        if len(self.shape) != (1 if self.kind == "vector" else 3) or min(self.shape) < 1:
            raise ValueError(f"bad Scaling shape {self.shape} for kind {self.kind!r}")
        for name in ("shift", "scale"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != self.shape[0]:
                raise ValueError(f"Scaling {name} has {len(value)} values for shape {self.shape}")
        if min(np.atleast_1d(self.scale)) <= 0:
            raise ValueError(f"Scaling scale must be positive, got {self.scale}")
        if self.bins is not None and (int(self.bins) != self.bins or self.bins < 2):
            raise ValueError(f"Scaling bins must be an integer >= 2 or None, got {self.bins}")
        try:
            np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"Scaling dtype must name a numpy dtype, got {self.dtype!r}") from None
        if self.kind == "vector" and self.layout is not None:
            raise ValueError(f"a vector Scaling has no layout, got {self.layout!r}")
        if self.kind == "image" and self.layout not in (None, *LAYOUTS):
            raise ValueError(f"Scaling layout must be one of {LAYOUTS}, got {self.layout!r}")

    def shift_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """shift, scale as float64 arrays broadcasting against (N, *shape)."""
        return np.asarray(self.shift, dtype=np.float64), np.asarray(self.scale, dtype=np.float64)

    def to_model(self, data) -> Tensor:
        """Data-space array (N, ...) in this scaling's layout -> float32 tensor (N, *shape) in model space."""
        data = np.asarray(data)
        data = to_nchw(data, self.layout) if self.kind == "image" else data
        if data.shape[1:] != self.shape:
            raise ValueError(f"data of example shape {data.shape[1:]} do not match the scaling's {self.shape}")
        shift, scale = self.shift_scale()
        return torch.from_numpy(((data.astype(np.float64) - shift) / scale).astype(np.float32))

    def to_data(self, x) -> np.ndarray:
        """Model-space (N, *shape) tensor or array -> data-space array (N, ...) in the original dtype and layout.

        Discrete data (``bins`` set) are rounded to the nearest bin and clipped to 0..bins-1.
        """
        if isinstance(x, Tensor):
            x = x.detach().cpu().double().numpy()
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] != self.shape:
            raise ValueError(f"to_data expects shape (N, {', '.join(map(str, self.shape))}), got {x.shape}")
        shift, scale = self.shift_scale()
        data = x * scale + shift
        if self.bins is not None:
            data = np.clip(np.rint(data), 0, self.bins - 1)
        data = data.astype(self.dtype)
        return from_nchw(data, self.layout) if self.kind == "image" else data

    def log_abs_det(self) -> float:
        """sum_d log scale_d over the D numbers of one example: nll_data = nll_model + log_abs_det."""
        scale = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), (math.prod(self.shape),))
        return float(np.log(scale).sum())

    def to_dict(self) -> dict:
        """JSON-able dict; ``Scaling.from_dict`` reads it back."""
        def plain(v):
            return list(v) if isinstance(v, tuple) else v

        return {"kind": self.kind, "shape": list(self.shape), "shift": plain(self.shift),
                "scale": plain(self.scale), "dtype": self.dtype, "bins": self.bins, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: dict) -> Scaling:
        return cls(**d)


def fit_scaling(raw: np.ndarray, kind: str, layout: str | None, train_idx: np.ndarray) -> Scaling:
    """The scaling of raw data: uint8 images to [-1, 1] (256 bins); vectors standardised on ``train_idx``."""
    if kind == "image":  # uint8, checked by files.check_array
        shape = to_nchw(raw[:1], layout).shape[1:]
        return Scaling("image", shape, 127.5, 127.5, "uint8", bins=256, layout=layout)
    elif kind == "vector":
        train = raw[train_idx].astype(np.float64)
        std = train.std(axis=0)
        return Scaling("vector", raw.shape[1:], train.mean(axis=0), np.where(std > 0, std, 1.0), str(raw.dtype))
    else:
        raise ValueError(f"unknown data kind {kind!r}; expected 'vector' or 'image'")
