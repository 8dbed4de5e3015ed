"""Drawing samples from a loaded run, chunk by chunk, and writing them as .npy or .png (images tiled into a
grid, also the grids of ``dgm report``; vectors as a scatter plot)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dgm.runs.atomic import atomic_write, atomic_write_bytes

__all__ = ["grid_png", "sample_model", "save_npy", "save_png", "tile", "to_uint8"]

PAD = 1  # pixels of white between tiles


def sample_model(model, n: int, *, seed: int, sampler: str | None, steps: int | None, chunk: int = 4096):
    """n samples in model space, drawn ``chunk`` at a time from one seeded generator."""
    kw = {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None}
    g = torch.Generator().manual_seed(seed)
    parts = [model.sample(min(chunk, n - k), generator=g, **kw).cpu() for k in range(0, n, chunk)]
    return torch.cat(parts)


def to_uint8(x) -> np.ndarray:
    """Model-space images (N, C, H, W) in [-1, 1] -> uint8 (N, H, W) grey or (N, H, W, 3) colour."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() == 3:
        x = x[:, None]
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return img[:, 0] if img.shape[1] != 3 else img.transpose(0, 2, 3, 1)


def tile(x, ncol: int | None = None, pad: int = PAD) -> np.ndarray:
    """Images (N, C, H, W) in model space -> one uint8 grid (rows of ``ncol`` tiles, white gaps)."""
    img = to_uint8(x)
    n, h, w = img.shape[:3]
    ncol = max(1, min(n, ncol or math.ceil(math.sqrt(n))))
    nrow = max(1, math.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, *img.shape[3:]), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = img[k]
    return grid


def grid_png(x, ncol: int | None = None, zoom: int | None = None) -> bytes:
    """A PNG of ``tile(x, ncol)``, enlarged ``zoom`` times with nearest-neighbour pixels (default: to ~32 px
    per tile)."""
    grid = tile(x, ncol)
    side = max(torch.as_tensor(x).shape[-2:])
    zoom = zoom or max(1, 32 // side)
    pic = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST)
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def save_png(path: Path, x: torch.Tensor, scaling) -> None:
    """Images (N, C, H, W) in model space -> a PNG grid; vectors -> a scatter of the first two data dims."""
    if scaling.kind == "image":
        atomic_write_bytes(path, grid_png(x))
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        y = np.asarray(scaling.to_data(x), dtype=np.float64).reshape(len(x), -1)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
        if y.shape[1] == 1:
            ax.hist(y[:, 0], bins=100)
        else:
            ax.scatter(y[:, 0], y[:, 1], s=2, alpha=min(1.0, 2000 / len(y)), linewidths=0)
            ax.set_aspect("equal")
        ax.set_title(f"{len(y)} samples")
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
