"""Drawing samples from a loaded run, chunk by chunk, and writing them as .npy or .png (images tiled into a
grid, also the grids of ``dgm report``; vectors as a scatter plot).

``write_samples`` (``dgm sample``) is bounded and atomic: the output's size is checked against the free disk,
the file-size limit and (for a .png, drawn in memory) the available memory before anything is drawn; a .npy
streams chunk by chunk into a temporary sibling, so its size is bounded by the disk, not the memory; a sample
with a NaN or an infinity is an error and is never written; the file appears whole, by a rename, or not at all,
and an existing file survives any error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dgm.runs.atomic import atomic_write, atomic_write_bytes
from dgm.runs.resources import require_disk, require_memory

__all__ = ["PNG_MEMORY_FACTOR", "grid_png", "sample_chunks", "sample_model", "save_npy",
           "save_png", "tile", "to_uint8", "write_samples"]

PAD = 1  # pixels of white between tiles
CHUNK = 4096  # samples drawn per call of model.sample
PNG_MEMORY_FACTOR = 4  # x 8 bytes a number: a .png holds every sample in memory (model and data space, picture)


def sample_chunks(model, n: int, *, seed: int, sampler: str | None = None, steps: int | None = None,
                  chunk: int = CHUNK, **sample_kw) -> Iterator[torch.Tensor]:
    """The n samples in model space, ``chunk`` at a time (on the CPU), from one seeded generator; the chunks
    concatenated do not depend on how they are consumed. ``sample_kw`` go to ``model.sample``."""
    kw = {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None} | sample_kw
    g = torch.Generator().manual_seed(seed)
    for k in range(0, n, chunk):
        yield model.sample(min(chunk, n - k), generator=g, **kw).cpu()


def sample_model(model, n: int, *, seed: int, sampler: str | None, steps: int | None, chunk: int = CHUNK,
                 **sample_kw):
    """n samples in model space, drawn ``chunk`` at a time from one seeded generator (``sample_kw``: as in
    ``sample_chunks``, e.g. a DDPM's ``grid`` or ``spacing``)."""
    return torch.cat(list(sample_chunks(model, n, seed=seed, sampler=sampler, steps=steps, chunk=chunk, **sample_kw)))


def _finite(x: torch.Tensor, first: int, out: Path) -> torch.Tensor:
    """``x`` (samples ``first``, ...), or a ValueError when one holds a NaN or an infinity."""
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    if bad.any():
        k = first + int(bad.nonzero()[0, 0])
        raise ValueError(f"sample {k} (and {int(bad.sum()) - 1} more of draws {first}..{first + len(x) - 1}) "
                         f"holds a NaN or an infinity; nothing was written to {str(out)!r}")
    return x


def write_samples(model, n: int, out: Path, scaling, *, seed: int, sampler: str | None = None,
                  steps: int | None = None, chunk: int = CHUNK, **sample_kw) -> Path:
    """Draw n samples and write them, in data space, to ``out`` (.npy) or as a picture (.png); return ``out``.

    Refused before any draw (ValueError, one line) when the file would not fit on the disk or under the
    file-size limit, or, for a .png, in memory. A .npy is streamed: memory stays at one chunk whatever n.
    A non-finite sample raises ValueError. ``out`` is replaced atomically; on any error it is untouched.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".png"):
        raise ValueError(f"--out {str(out)!r} must end in .npy or .png")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory")
    shape = tuple(scaling.shape)
    draws = sample_chunks(model, n, seed=seed, sampler=sampler, steps=steps, chunk=chunk, **sample_kw)
    if suffix == ".png":
        require_memory(PNG_MEMORY_FACTOR * n * math.prod(shape) * 8, f"a picture of {n:,} samples")
        parts, k = [], 0
        for x in draws:
            parts.append(_finite(x, k, out))
            k += len(x)
        save_png(out, torch.cat(parts), scaling)
        return out
    probe = scaling.to_data(torch.zeros(1, *shape))
    header = io.BytesIO()  # the header np.save writes (format 1.0, padded to 64 bytes)
    shape_n = (n, *probe.shape[1:])
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(probe.dtype),
                                                  "fortran_order": False, "shape": shape_n})
    require_disk(header.tell() + n * probe.nbytes, out, f"{n:,} samples ({probe.dtype}, shape {shape_n})")

    def stream(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(header.getvalue())
            k = 0
            for x in draws:
                f.write(np.ascontiguousarray(scaling.to_data(_finite(x, k, out))).tobytes())
                k += len(x)

    atomic_write(out, stream)
    return out


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
