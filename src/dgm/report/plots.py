"""The drawings of ``dgm report``: image grids (PIL) and plots (matplotlib, Agg), each returned as PNG bytes.

Everything here is a pure function of arrays: no model, no file, no global matplotlib state (figures are
``matplotlib.figure.Figure`` objects rendered by the Agg canvas, never pyplot). Images come in model
space (N, C, H, W) with values in [-1, 1] (-1 black, +1 white); 2-D points come as (N, 2) arrays. Image
grids are tiled by ``dgm.runs.samples.tile``, as ``dgm sample`` tiles them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from dgm.runs.samples import tile

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (fixed margins: constrained layout costs seconds per figure)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: Figure, *, left: float = 0.6, right: float = 0.15, bottom: float = 0.45, top: float = 0.3,
             wspace: float = 0.3, hspace: float = 0.3) -> None:
    """subplots_adjust with margins in inches."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace,
                        hspace=hspace)


def fig_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes (no metadata text)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _show(ax, grid: np.ndarray) -> None:
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def panels_png(rows: Sequence[Sequence[tuple[str, object]]], ncol: int = 4, *,
               panel_inches: float = 2.0) -> bytes:
    """Titled image grids in a table: ``rows`` = [[(title, images (N, C, H, W)), ...], ...]; each panel
    tiles its images ``ncol`` to a row."""
    title_in, gap = 0.3, 0.15
    width = max(len(r) for r in rows) * (panel_inches + gap) + gap
    height = len(rows) * (panel_inches + title_in + gap) + gap
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    for r, row in enumerate(rows):
        for c, (title, images) in enumerate(row):
            left = gap + c * (panel_inches + gap)
            bottom = height - (r + 1) * (panel_inches + title_in + gap)
            ax = fig.add_axes((left / width, bottom / height, panel_inches / width, panel_inches / height))
            _show(ax, tile(images, ncol))
            ax.set_title(title, fontsize=9)
    return fig_png(fig)


def rows_png(rows: Sequence[tuple[str, object]], col_titles: Sequence[str] | None = None, *,
             cell_inches: float = 0.5) -> bytes:
    """Labelled strips of images: ``rows`` = [(label, images (K, C, H, W))], every row K tiles long;
    ``col_titles`` (K labels) go above the first row."""
    k = max(len(torch.as_tensor(images)) for _, images in rows)
    label_in, top_in, gap = 1.0, (0.25 if col_titles else 0.05), 0.08
    width = label_in + cell_inches * k + 0.1
    height = top_in + len(rows) * (cell_inches + gap) + 0.05
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    for r, (label, images) in enumerate(rows):
        bottom = height - top_in - (r + 1) * (cell_inches + gap) + gap
        ax = fig.add_axes((label_in / width, bottom / height, cell_inches * k / width, cell_inches / height))
        grid = tile(images, k)
        _show(ax, grid)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        if r == 0 and col_titles:
            step = grid.shape[1] / k
            ax.set_xticks([step * (c + 0.5) for c in range(len(col_titles))], list(col_titles), fontsize=7)
            ax.xaxis.tick_top()
            ax.tick_params(length=0)
    return fig_png(fig)


def _label(text: str) -> str:
    """A user's string as literal matplotlib text: "$" would start mathtext."""
    return str(text).replace("$", r"\$")


def class_grid_png(samples, classes: Sequence[str], col_titles: Sequence[str], *, cell_inches: float = 0.42) -> bytes:
    """Samples of each class under each setting: ``samples`` (K, W, n, C, H, W) images; row k is labelled
    ``classes[k]``, column block j ``col_titles[j]``, each block tiles its n images in one row."""
    samples = torch.as_tensor(samples)
    k, w, n = samples.shape[:3]
    if (len(classes), len(col_titles)) != (k, w):
        raise ValueError(f"{len(classes)} class names and {len(col_titles)} column titles for samples of shape "
                         f"{tuple(samples.shape)}")
    label_in, top_in, gap = 0.9, 0.5, 0.08
    block = n * cell_inches
    width = label_in + w * (block + gap) + 0.1
    height = top_in + k * (cell_inches + gap) + 0.1
    fig = _figure(width, height)
    for r in range(k):
        for c in range(w):
            left = label_in + c * (block + gap)
            bottom = height - top_in - (r + 1) * (cell_inches + gap) + gap
            ax = fig.add_axes((left / width, bottom / height, block / width, cell_inches / height))
            _show(ax, tile(samples[r, c], n))
            if c == 0:
                ax.set_ylabel(_label(classes[r]), rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                ax.set_title(_label(col_titles[c]), fontsize=8)
    fig.text(0.5 * (label_in + width) / width, 1 - 0.12 / height, "classifier-free guidance", ha="center",
             va="top", fontsize=8)
    fig.text(0.1 / width, 1 - 0.12 / height, "class", ha="left", va="top", fontsize=8)
    return fig_png(fig)


def loss_png(curves: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """Training loss against step, one panel per run: ``curves`` = [(run name, steps, losses)]."""
    fig = _figure(min(4.0 * len(curves), 12.0), 2.8)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    _margins(fig, left=0.7, wspace=0.35)
    for k, (ax, (name, steps, loss)) in enumerate(zip(axes, curves, strict=True)):
        ax.plot(steps, loss, color=COLORS[k % len(COLORS)], lw=1.2)
        if len(loss) and np.all(loss > 0) and loss.max() > 10 * loss.min():
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig_png(fig)


def nfe_png(sweep: Sequence[dict], metric: str, floor: float | None) -> bytes:
    """Quality and time against NFE per sampler. ``sweep`` = [{"sampler", "nfe", metric, "seconds", "n"}]
    (metric may be None: time only); ``floor`` is the metric's floor (a dashed line)."""
    fig = _figure(8.0, 2.9)
    ax_q, ax_t = fig.subplots(1, 2)
    _margins(fig, left=0.7, wspace=0.35)
    for k, name in enumerate(dict.fromkeys(r["sampler"] for r in sweep)):
        rows = sorted((r for r in sweep if r["sampler"] == name), key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in rows]
        color = COLORS[k % len(COLORS)]
        scored = [(r["nfe"], r[metric]) for r in rows if r.get(metric) is not None]
        if scored:
            ax_q.plot(*zip(*scored, strict=True), "o-", color=color, label=name, ms=4)
        ax_t.plot(nfe, [100 * r["seconds"] / r["n"] for r in rows], "o-", color=color, label=name, ms=4)
    if floor is not None:
        ax_q.axhline(floor, color="grey", ls="--", lw=1, label="floor (data vs data)")
    ax_q.set_ylabel(metric.upper(), fontsize=8)
    ax_t.set_ylabel("seconds per 100 samples", fontsize=8)
    for ax in (ax_q, ax_t):
        ax.set_xscale("log")
        ax.set_xlabel("NFE (denoiser calls)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    ax_t.set_yscale("log")
    ax_t.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ticks = sorted({r["nfe"] for r in sweep})
    for ax in (ax_q, ax_t):
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    return fig_png(fig)


def _limits(points: Sequence[np.ndarray], margin: float = 0.05) -> tuple[tuple[float, float], ...]:
    """Common (x, y) limits of several 2-D point sets: the 0.5%..99.5% quantiles plus a margin."""
    allp = np.concatenate([p[:, :2] for p in points])
    lo, hi = np.quantile(allp, 0.005, axis=0), np.quantile(allp, 0.995, axis=0)
    pad = margin * (hi - lo) + 1e-9
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _scatter(ax, p: np.ndarray, color: str, lims) -> None:
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=min(1.0, 1500 / max(len(p), 1)), color=color, linewidths=0)
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize=7)


def density_png(data: np.ndarray, samples: np.ndarray, log_density=None, *, bins: int = 80) -> bytes:
    """2-D data: [exact density | histogram of samples | data scatter | samples scatter].

    ``log_density(points (M, 2)) -> (M,)`` in data space, or None (the first panel is then a histogram
    of the data)."""
    lims = _limits([data, samples])
    fig = _figure(12.0, 3.2)
    axes = fig.subplots(1, 4)
    _margins(fig, left=0.4, wspace=0.25)
    if log_density is not None:
        gx, gy = np.linspace(*lims[0], 200), np.linspace(*lims[1], 200)
        xx, yy = np.meshgrid(gx, gy)
        dens = np.exp(np.asarray(log_density(np.stack([xx.ravel(), yy.ravel()], 1)))).reshape(xx.shape)
        axes[0].imshow(dens, origin="lower", extent=(*lims[0], *lims[1]), cmap="viridis", aspect="equal")
        axes[0].set_title("exact data density", fontsize=9)
    else:
        axes[0].hist2d(data[:, 0], data[:, 1], bins=bins, range=lims, cmap="viridis")
        axes[0].set_title("data histogram (density unknown)", fontsize=9)
    axes[1].hist2d(samples[:, 0], samples[:, 1], bins=bins, range=lims, cmap="viridis")
    axes[1].set_title(f"histogram of {len(samples)} samples", fontsize=9)
    _scatter(axes[2], data, COLORS[0], lims)
    axes[2].set_title(f"data ({len(data)})", fontsize=9)
    _scatter(axes[3], samples, COLORS[1], lims)
    axes[3].set_title(f"samples ({len(samples)})", fontsize=9)
    for ax in axes[:2]:
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=7)
    return fig_png(fig)


def scatter_rows_png(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], *,
                     cell_inches: float = 1.7) -> bytes:
    """2-D point clouds in a table: ``rows`` = [(row label, [(column title, points (N, 2))])]. Each row
    shares one pair of axis limits."""
    ncol = max(len(cols) for _, cols in rows)
    fig = _figure(cell_inches * ncol + 0.6, cell_inches * len(rows) + 0.3)
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    _margins(fig, left=0.4, right=0.1, bottom=0.1, top=0.3, wspace=0.1, hspace=0.25)
    for r, (label, cols) in enumerate(rows):
        lims = _limits([p for _, p in cols])
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(cols):
                ax.set_axis_off()
                continue
            title, p = cols[c]
            _scatter(ax, p, COLORS[r % len(COLORS)], lims)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    return fig_png(fig)
