"""Data sets in model space: built-in toys and digits, ``.npy``/``.npz`` arrays, image folders, MNIST IDX.

``load_data(spec)`` returns a ``DataSet`` whose ``train`` and ``heldout`` tensors are in model space,
``x = (data - shift) / scale``, with the ``Scaling`` that maps samples back to data space:

- continuous vectors (N, D): per-dimension standardisation, shift = mean and scale = std of the train
  split (scale 1 for a constant dimension);
- uint8 images (N, H, W), (N, C, H, W) or (N, H, W, C), C in {1, 3}: x = k / 127.5 - 1, bins = 256;
- ``digits`` (scikit-learn's 8x8 digits, gray levels 0..16): x = k / 8 - 1, bins = 17.

In general a discrete set with ``bins = K`` has values k = 0..K-1 and x = 2k / (K - 1) - 1, so the
bins are K evenly spaced points of [-1, 1]. Built-in toy sets (N = 20,000, 2-D):

- ``gmm2d``: 8 equally weighted Gaussians with means on the circle of radius 4 (angles 2 pi k / 8),
  each elongated along the circle (std 0.5 tangential, 0.2 radial); its exact density is
  ``DataSet.density`` (a ``GaussianMixture`` in model space);
- ``moons``: two interleaved half circles with Gaussian noise of std 0.05;
- ``swissroll``: (t cos t, t sin t), t uniform in [1.5 pi, 4.5 pi], Gaussian noise of std 0.3;
- ``checkerboard``: uniform on the 8 dark squares of a 4x4 board covering [-2, 2]^2.

The toy sets are one fixed draw (seed ``TOY_SEED``); the ``seed`` of ``load_data`` only picks the split.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

BUILTINS = ("gmm2d", "moons", "swissroll", "checkerboard", "digits")
N_TOY = 20_000
TOY_SEED = 0
LAYOUTS = ("NCHW", "NHWC", "NHW")


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

    def _shift_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """shift, scale as float64 arrays broadcasting against (N, *shape)."""
        return np.asarray(self.shift, dtype=np.float64), np.asarray(self.scale, dtype=np.float64)

    def to_model(self, data) -> Tensor:
        """Data-space array (N, ...) in this scaling's layout -> float32 tensor (N, *shape) in model space."""
        data = np.asarray(data)
        data = _to_nchw(data, self.layout) if self.kind == "image" else data
        if data.shape[1:] != self.shape:
            raise ValueError(f"data of example shape {data.shape[1:]} do not match the scaling's {self.shape}")
        shift, scale = self._shift_scale()
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
        shift, scale = self._shift_scale()
        data = x * scale + shift
        if self.bins is not None:
            data = np.clip(np.rint(data), 0, self.bins - 1)
        data = data.astype(self.dtype)
        return _from_nchw(data, self.layout) if self.kind == "image" else data

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


@dataclass(frozen=True, eq=False)
class DataSet:
    """train (N, ...) and heldout (M, ...) float32 tensors in model space, their Scaling and known density."""

    name: str
    train: Tensor
    heldout: Tensor
    scaling: Scaling
    density: object | None = field(default=None, repr=False)

    @property
    def bins(self) -> int | None:
        return self.scaling.bins

    @property
    def shape(self) -> tuple[int, ...]:
        return self.scaling.shape

    @property
    def dim(self) -> int:
        """D, the numbers per example (C*H*W for images)."""
        return math.prod(self.scaling.shape)


def load_data(spec, *, seed: int = 0, heldout_fraction: float = 0.1, heldout_last: int | None = None,
              scaling: Scaling | None = None) -> DataSet:
    """Load a built-in set (see ``BUILTINS``), a path or an array into model space.

    Args:
        spec: built-in name, path (``.npy``, ``.npz``, ``*-idx3-ubyte[.gz]``, folder of images) or ndarray.
        seed: seeds the held-out split (a random ``heldout_fraction`` of the examples).
        heldout_fraction: in [0, 1).
        heldout_last: if set, the last ``heldout_last`` examples (file order) are held out instead.
        scaling: reuse this scaling (e.g. a trained run's) instead of fitting one.

    Raises:
        ValueError naming the problem: unknown built-in, missing path, bad shape, dtype or values.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    density, fixed = None, None
    if isinstance(spec, np.ndarray):
        name, raw = "array", spec
    elif str(spec) in BUILTINS:
        name = str(spec)
        raw, fixed, density = _builtin(name)
    else:
        path = Path(spec)
        if not path.exists():
            if path.suffix or len(path.parts) > 1:
                raise ValueError(f"no such file or folder: '{path}'")
            raise ValueError(f"unknown data set {str(spec)!r}; built-ins are {', '.join(BUILTINS)}, "
                             "or give a path to an .npy/.npz file, an MNIST IDX file or an image folder")
        name, raw = path.name, _read_path(path)
    where = name if isinstance(spec, np.ndarray) or name in BUILTINS else f"'{spec}'"
    kind, layout = _check_array(raw, where) if fixed is None else (fixed.kind, fixed.layout)
    train_idx, held_idx = _split(len(raw), seed, heldout_fraction, heldout_last)
    if scaling is None:
        scaling = fixed or _fit_scaling(raw, kind, layout, train_idx)
    elif scaling.kind != kind:
        raise ValueError(f"{where} holds {kind} data but the given scaling is for {scaling.kind} data")
    if kind == "image" and layout != scaling.layout:
        raw = _from_nchw(_to_nchw(raw, layout), scaling.layout)
    x = scaling.to_model(raw)
    if density is not None:
        shift, scale = scaling._shift_scale()
        density = density.affine(torch.from_numpy(1.0 / scale), torch.from_numpy(-shift / scale))
    return DataSet(name, x[train_idx].contiguous(), x[held_idx].contiguous(), scaling, density)


def _split(n: int, seed: int, fraction: float, last: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, heldout), each sorted: the last ``last`` examples, or a seeded random fraction."""
    if last is not None:
        if not 0 <= last < n:
            raise ValueError(f"heldout_last={last} must be in [0, {n}) for {n} examples")
        return np.arange(n - last), np.arange(n - last, n)
    n_held = round(n * fraction)
    if fraction > 0 and n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def _fit_scaling(raw: np.ndarray, kind: str, layout: str | None, train_idx: np.ndarray) -> Scaling:
    if kind == "image":  # uint8, checked by check_array
        shape = _to_nchw(raw[:1], layout).shape[1:]
        return Scaling("image", shape, 127.5, 127.5, "uint8", bins=256, layout=layout)
    train = raw[train_idx].astype(np.float64)
    std = train.std(axis=0)
    return Scaling("vector", raw.shape[1:], train.mean(axis=0), np.where(std > 0, std, 1.0), str(raw.dtype))


def _builtin(name: str) -> tuple[np.ndarray, Scaling | None, object | None]:
    """(raw data, fixed scaling or None, density in data space or None) of a built-in set."""
    rng = np.random.default_rng(TOY_SEED)
    if name == "digits":
        from sklearn.datasets import load_digits

        images = load_digits().images[:, None]  # (1797, 1, 8, 8) float64, values 0..16
        return images, Scaling("image", images.shape[1:], 8.0, 8.0, "float64", bins=17, layout="NCHW"), None
    if name == "gmm2d":
        weights, means, covs = _gmm2d_parameters()
        comp = rng.choice(len(weights), size=N_TOY, p=weights)
        z = rng.standard_normal((N_TOY, 2))
        x = means[comp] + np.einsum("nij,nj->ni", np.linalg.cholesky(covs)[comp], z)
        from dgm.core.oracle import GaussianMixture

        mixture = GaussianMixture(*(torch.from_numpy(a) for a in (weights, means, covs)))
        return x, None, mixture
    if name == "moons":
        t = rng.uniform(0.0, math.pi, N_TOY)
        upper = rng.random(N_TOY) < 0.5
        x = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1),
                     np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1))
        return x + 0.05 * rng.standard_normal((N_TOY, 2)), None, None
    if name == "swissroll":
        t = 1.5 * math.pi * (1.0 + 2.0 * rng.random(N_TOY))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1)
        return x + 0.3 * rng.standard_normal((N_TOY, 2)), None, None
    if name == "checkerboard":
        col = rng.integers(0, 4, N_TOY)
        row = 2 * rng.integers(0, 2, N_TOY) + col % 2  # row and col of equal parity: the dark squares
        return np.stack([col, row], 1) - 2.0 + rng.random((N_TOY, 2)), None, None
    raise ValueError(f"unknown data set {name!r}; built-ins are {', '.join(BUILTINS)}")


def _gmm2d_parameters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weights (8,), means (8, 2), covs (8, 2, 2) of the gmm2d mixture in data space."""
    k = 8
    angle = 2.0 * math.pi * np.arange(k) / k
    radial = np.stack([np.cos(angle), np.sin(angle)], 1)  # (k, 2) unit vectors
    tangential = np.stack([-np.sin(angle), np.cos(angle)], 1)
    std_radial, std_tangential, radius = 0.2, 0.5, 4.0
    covs = (std_radial**2 * np.einsum("ki,kj->kij", radial, radial)
            + std_tangential**2 * np.einsum("ki,kj->kij", tangential, tangential))
    return np.full(k, 1.0 / k), radius * radial, covs


# ---- reading files and checking arrays -------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_IDX_NAME = re.compile(r"idx\d-ubyte(\.gz)?$")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _to_nchw(a: np.ndarray, layout: str | None) -> np.ndarray:
    """Images in ``layout`` -> (N, C, H, W); None means already NCHW."""
    if layout == "NHW":
        return a[:, None]
    return a.transpose(0, 3, 1, 2) if layout == "NHWC" else a


def _from_nchw(a: np.ndarray, layout: str | None) -> np.ndarray:
    """(N, C, H, W) -> images in ``layout``; None means NCHW."""
    if layout == "NHW":
        return a[:, 0]
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if layout == "NHWC" else a


def _check_array(a: np.ndarray, where: str) -> tuple[str, str | None]:
    """Validate a raw array; return (kind, layout). Vectors: float (N, D); images: uint8, see module doc."""
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{where}: unsupported dtype {a.dtype}; expected float vectors or uint8 images")
    if a.ndim < 2 or a.ndim > 4:
        raise ValueError(f"{where}: array of shape {a.shape} has {a.ndim} dimensions; expected (N, D) "
                         "vectors or (N, H, W), (N, C, H, W), (N, H, W, C) images")
    if a.shape[0] == 0 or a.size == 0:
        raise ValueError(f"{where}: empty data set (shape {a.shape})")
    if a.ndim == 2:
        if a.dtype.kind != "f":
            raise ValueError(f"{where}: (N, D) vectors must be float, got {a.dtype} of shape {a.shape} "
                             "(convert with .astype(float), or give uint8 images as (N, H, W))")
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: the data contain NaN or Inf")
        return "vector", None
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 (0..255), got {a.dtype} of shape {a.shape}")
    if a.ndim == 3:
        return "image", "NHW"
    if a.shape[1] in (1, 3):
        return "image", "NCHW"
    if a.shape[3] in (1, 3):
        return "image", "NHWC"
    raise ValueError(f"{where}: cannot find the channel axis of images of shape {a.shape}; expected "
                     "(N, C, H, W) or (N, H, W, C) with C in {1, 3}")


def _read_path(path: Path) -> np.ndarray:
    """The raw array stored at ``path`` (a file or a folder of images)."""
    if path.is_dir():
        return _read_image_folder(path)
    name = path.name.lower()
    if _IDX_NAME.search(name):
        return _read_idx(path)
    if not name.endswith((".npy", ".npz")):
        raise ValueError(f"unsupported data file '{path}': expected .npy, .npz, an MNIST IDX file "
                         "(*-idx3-ubyte[.gz]) or a folder of images")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            keys = list(loaded.files)
            if not keys:
                raise ValueError(f"'{path}' holds no arrays")
            return loaded["x" if "x" in keys else "data" if "data" in keys else keys[0]]
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read '{path}': {err}") from None
    except ValueError as err:  # e.g. an object array, which would need pickle
        raise ValueError(f"cannot read '{path}': {err}") from None


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), gzipped or raw: magic 0 0 type ndim, big-endian dims."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file '{path}': {err}") from None
    if len(buf) < 4 or buf[0] or buf[1] or buf[2] not in _IDX_TYPES:
        raise ValueError(f"'{path}' is not an IDX file (bad magic number {buf[:4].hex()})")
    ndim, header = buf[3], 4 + 4 * buf[3]
    if len(buf) < header:
        raise ValueError(f"IDX file '{path}' is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = np.dtype(_IDX_TYPES[buf[2]])
    if len(buf) - header != math.prod(dims) * dtype.itemsize:
        raise ValueError(f"IDX file '{path}' holds {len(buf) - header} data bytes but its header "
                         f"{dims} needs {math.prod(dims) * dtype.itemsize}")
    return np.frombuffer(buf, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _read_image_folder(folder: Path) -> np.ndarray:
    """Images of a folder (sorted by name) -> uint8 (N, C, H, W); gray stays 1 channel, colour becomes RGB.

    Alpha is dropped; if the folder mixes gray and colour images, the gray ones are repeated to RGB.
    """
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"folder '{folder}' holds no image files ({' '.join(IMAGE_SUFFIXES)})")
    images = []
    for p in files:
        try:
            with Image.open(p) as im:
                if im.mode in ("I", "I;16", "I;16B", "F"):
                    raise ValueError(f"image '{p}' has {im.mode} pixels; only 8-bit images are supported")
                im = im.convert("L" if im.mode in ("1", "L", "LA") else "RGB")
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError) as err:
            raise ValueError(f"unreadable image '{p}': {err}") from None
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        if images[-1].shape[1:] != images[0].shape[1:]:
            raise ValueError(f"images in '{folder}' differ in size: '{files[0].name}' is "
                             f"{images[0].shape[2]}x{images[0].shape[1]}, '{p.name}' is {a.shape[1]}x{a.shape[0]}")
    channels = max(a.shape[0] for a in images)
    return np.stack([np.repeat(a, channels // a.shape[0], axis=0) for a in images])
