"""Drawing samples from a loaded run, chunk by chunk, and writing them as .npy or .png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dgm.runs import checkpoint as ckpt

__all__ = ["sample_model", "save_npy", "save_png"]


def sample_model(model, n: int, *, seed: int, sampler: str | None, steps: int | None, chunk: int = 4096):
    """n samples in model space, drawn ``chunk`` at a time from one seeded generator."""
    kw = {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None}
    g = torch.Generator().manual_seed(seed)
    parts = [model.sample(min(chunk, n - k), generator=g, **kw).cpu() for k in range(0, n, chunk)]
    return torch.cat(parts)


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def save_png(path: Path, x: torch.Tensor, scaling) -> None:
    """Images (N, C, H, W) in model space -> a PNG grid; vectors -> a scatter of the first two data dims."""
    if scaling.kind == "image":
        from PIL import Image

        img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        img = img[:, :3] if img.shape[1] >= 3 else img[:, :1]
        n, c, h, w = img.shape
        ncol = max(1, int(np.ceil(np.sqrt(n))))
        nrow = int(np.ceil(n / ncol))
        pad = 1
        grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
        for k in range(n):
            r, q = divmod(k, ncol)
            top, left = pad + r * (h + pad), pad + q * (w + pad)
            grid[:, top : top + h, left : left + w] = img[k]
        array = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
        zoom = max(1, 32 // max(h, w))
        pic = Image.fromarray(array).resize((array.shape[1] * zoom, array.shape[0] * zoom), Image.NEAREST)
        ckpt.atomic_write(path, lambda tmp: pic.save(tmp, format="PNG"))
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
        ckpt.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
