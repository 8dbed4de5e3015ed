"""``dgm inpaint``: posterior samples of a trained pixel-space DDPM given the known pixels of an input.

The observation is y = M x + sigma n: the known entries (mask M) of the input, in model space (images in
[-1, 1], vectors standardised), with noise std sigma (``DEFAULT_NOISE``). ``dgm.sample_inverse`` draws from
p(x | y) by the chosen method (replacement, RePaint, DPS, PiGDM or SMC); see its docstring for each method's
options and network calls.

Inputs: a ``.npy`` in the run's data space (N examples, or one example, in the layout the run was trained on)
or, for image runs, a ``.png`` (grey or RGB, 0..255 mapped to [-1, 1]). The mask: a ``.npy`` of 0/1 or bool of
one example's data-space shape, or a ``.png`` of the image's size (light pixels, >= 128, are known).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dgm.data.scaling import to_nchw
from dgm.runs.samples import tile
from dgm.samplers.inverse import INVERSE_METHODS, sample_inverse

__all__ = ["DEFAULT_NOISE", "inpaint", "inpainting_grid", "read_input", "read_mask"]

# Noise std of the observation in model space. At 0 the posterior is a point mass on the known pixels (every
# method still runs: replacement copies them, SMC and PiGDM keep the observed part equal to y), but real
# inputs are quantized and a model's prior is not exact, so a small positive noise keeps the posterior from
# forcing the completion through values the model finds unlikely. 0.05 is 2.5% of the [-1, 1] range, about
# 6 grey levels of an 8-bit image: below what a person sees.
DEFAULT_NOISE = 0.05


def _png(path: Path, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {str(path)!r} as a .npy array: {e}") from None


def _existing(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if p.suffix.lower() not in (".npy", ".png"):
        raise ValueError(f"{what} {str(path)!r} must be a .npy or .png file")
    return p


def read_input(path, scaling) -> torch.Tensor:
    """The input examples in model space, (N, *scaling.shape) float32."""
    p = _existing(path, "--input")
    shape = tuple(scaling.shape)
    if p.suffix.lower() == ".png":
        if scaling.kind != "image":
            raise ValueError(f"--input {str(path)!r}: a .png input needs an image run; this run's data are vectors")
        img = _png(p, shape[0])
        if img.shape != shape:
            raise ValueError(f"--input {str(path)!r} is an image of shape {img.shape}; the run's images are {shape}")
        return torch.from_numpy(img.astype(np.float32) / 127.5 - 1)[None]
    a = _npy(p)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"--input {str(path)!r} has dtype {a.dtype}; expected numbers")
    probe = scaling.to_data(np.zeros((1, *shape)))  # one example in data space: its shape and layout
    if scaling.kind == "image" and shape[0] == 1 and probe.ndim == 4 and a.shape[-2:] == shape[1:] and a.ndim <= 3:
        a = np.expand_dims(a, 1 if probe.shape[1] == 1 else -1).reshape(-1, *probe.shape[1:])  # grey (N, H, W)
    if a.shape == probe.shape[1:]:
        a = a[None]
    if a.shape[1:] != probe.shape[1:] or len(a) == 0:
        want = ", ".join(map(str, probe.shape[1:]))
        raise ValueError(f"--input {str(path)!r} has shape {a.shape}; expected (N, {want}) in the run's data space,"
                         " or one such example")
    if not np.isfinite(a.astype(np.float64)).all():
        raise ValueError(f"--input {str(path)!r} holds NaN or infinite values")
    return scaling.to_model(a.astype(probe.dtype) if probe.dtype.kind in "iu" else a)


def read_mask(path, scaling) -> torch.Tensor:
    """The mask as a bool tensor of the model-space example shape (True = known)."""
    p = _existing(path, "--mask")
    shape = tuple(scaling.shape)
    if p.suffix.lower() == ".png":
        if scaling.kind != "image":
            raise ValueError(f"--mask {str(path)!r}: a .png mask needs an image run; give a .npy for vectors")
        m = _png(p, 1)[0] >= 128  # (H, W): the same mask for every channel
        if m.shape != shape[1:]:
            raise ValueError(f"--mask {str(path)!r} is {m.shape[1]}x{m.shape[0]} pixels; the run's images are "
                             f"{shape[2]}x{shape[1]}")
        mask = np.broadcast_to(m, shape)
    else:
        m = _npy(p)
        if m.dtype != np.bool_ and (m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all()):
            raise ValueError(f"--mask {str(path)!r} must hold only 0/1 or True/False, got dtype {m.dtype}")
        m = m.astype(bool)
        probe = scaling.to_data(np.zeros((1, *shape)))[0]  # one example's data-space shape (its layout)
        if m.shape == probe.shape:
            mask = to_nchw(m[None], scaling.layout)[0] if scaling.kind == "image" else m
        elif scaling.kind == "image" and m.shape == shape[1:]:
            mask = np.broadcast_to(m, shape)  # (H, W): the same mask for every channel
        else:
            raise ValueError(f"--mask {str(path)!r} has shape {m.shape}; expected one example's shape {probe.shape}")
    mask = torch.from_numpy(np.array(mask, dtype=bool))  # a writable copy
    if not mask.any():
        raise ValueError(f"--mask {str(path)!r} marks no pixel as known; there is nothing to condition on")
    return mask


def inpaint(model, x: torch.Tensor, mask: torch.Tensor, *, method: str, noise: float = DEFAULT_NOISE,
            per_input: int = 1, steps: int | None = None, seed: int = 0, cond=None, **options):
    """``per_input`` completions of each input x (N, *shape) given its pixels under ``mask``: returns
    (completions (N, per_input, *shape) in model space, the method's stats from ``sample_inverse``)."""
    if getattr(model, "kind", None) != "ddpm":
        raise ValueError(f"inpainting needs a pixel-space DDPM run; this run is a {getattr(model, 'kind', '?')}")
    if method not in INVERSE_METHODS:
        raise ValueError(f"unknown --method {method!r}; choose one of {', '.join(INVERSE_METHODS)}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"--noise must be a finite number >= 0, got {noise!r}")
    if tuple(mask.shape) != tuple(x.shape[1:]):
        raise ValueError(f"the mask has shape {tuple(mask.shape)}; the inputs are {tuple(x.shape[1:])}")
    x = x.to(torch.float32)
    y = x[:, mask].repeat_interleave(per_input, 0)  # (N * K, d_y): K rows per input
    if cond is not None:
        cond = torch.as_tensor(cond).repeat_interleave(per_input, 0)
    g = torch.Generator().manual_seed(seed)
    model.eval()
    out, stats = sample_inverse(model.denoiser, model.schedule, y, mask, noise, method=method, steps=steps,
                                generator=g, cond=cond, return_stats=True, **options)
    return out.reshape(len(x), per_input, *x.shape[1:]), stats


def inpainting_grid(x: torch.Tensor, mask: torch.Tensor, completions: torch.Tensor, truth=None) -> bytes:
    """A PNG: one row per input with the masked input (unknown pixels grey), the mask, the completions and,
    when given, the truth. Images in model space; ``completions`` (N, K, C, H, W)."""
    n, k = completions.shape[:2]
    shown = torch.where(mask, x, torch.zeros_like(x))
    cols = [shown[:, None], mask.to(x.dtype).mul(2).sub(1).expand_as(x)[:, None], completions]
    if truth is not None:
        cols.append(truth[:, None])
    rows = torch.cat(cols, 1)
    pic = tile(rows.reshape(-1, *x.shape[1:]), ncol=rows.shape[1])
    zoom = max(1, 32 // max(x.shape[-2:]))
    img = Image.fromarray(pic).resize((pic.shape[1] * zoom, pic.shape[0] * zoom), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()

