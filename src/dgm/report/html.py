"""``dgm report DIR [DIR ...] --out FILE.html``: one self-contained HTML page comparing trained runs.

The page (images inline as base64 PNG, CSS inline, no script, no external URL; every string that comes from
the user, a run directory or a log, such as run names, paths, data names and given evaluations, escaped with
``html.escape``, so a run named ``<script>...`` shows as text) holds a likelihood table
(``nll_nats``, ``bits_per_dim``) and a sample-quality table with every metric's floor (feature-space
FD/KID/precision/recall for digit images; sliced W1, MMD and the exact cross-entropy for vector data), the
loss curves, and per run: sample grids per sampler and NFE, nearest training neighbours of samples, the
forward process and a reverse trajectory with x0_hat (DDPM), quality and time against NFE, a density plot
and scatters for 2-D data; and, for a VAE on images, the blur figure (data | VAE reconstructions | the
optimal averaging decoder | VAE samples | DDPM samples) with ``blur_report`` and ``sharpness`` numbers.

A class-conditional DDPM also gets a class-by-guidance grid, and a DDPM on images an inpainting figure
(``dgm.report.conditioning``).

The numbers come from ``dgm.report.compute``, the per-run figures from ``dgm.report.run_figures`` and the
drawings from ``dgm.report.plots``; this module checks the arguments, lays out the page and writes it.
"""

from __future__ import annotations

import base64
import html
import math
import os
import sys
import time
from pathlib import Path

from dgm.report import compute, plots
from dgm.report.run_figures import BlurFigure, RunFigures, blur_figure, run_figures
from dgm.runs import checkpoint as ckpt
from dgm.runs.atomic import atomic_write_bytes

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;
color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{margin:20px 0 6px}.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.86em;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:6px 0;image-rendering:pixelated}
.note{color:#555;font-size:.88em;max-width:1000px}.run{border-left:4px solid #9ab;padding-left:14px;margin:18px 0}
.floor{color:#888}
"""
TABLE_METRICS = {"image": ("fd", "kid", "precision", "recall"), "vector": ("sw", "mmd", "cross_entropy")}


# ------------------------------------------------------------------------------------------ checks

def check_out(out) -> Path:
    """The --out path of the page, checked before any work: ends in .html, its folder exists and is
    writable, and an existing file there is an HTML page (anything else is never overwritten)."""
    p = Path(out)
    if p.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {str(out)!r} must end in .html")
    if p.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory, not an .html file")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"the folder of --out {str(out)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"the folder of --out {str(out)!r} is not writable")
    if p.exists():
        with open(p, "rb") as f:
            head = f.read(512).lstrip().lower()
        if not (head.startswith(b"<!doctype html") or head.startswith(b"<html")):
            raise ValueError(f"--out {str(out)!r} exists and is not an HTML page; not overwriting it")
    return p


def check_runs(run_dirs) -> list[Path]:
    """Each DIR must be a dgm run directory with a checkpoint (CheckpointError, a ValueError, if not)."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("no run directory given (dgm report DIR [DIR ...] --out FILE.html)")
    for d in dirs:
        ckpt.read_config(d)
        if not (d / ckpt.WEIGHTS).is_file():
            raise ckpt.CheckpointError(f"{str(d)!r} holds no checkpoint ({ckpt.WEIGHTS}); train it first")
    return dirs


# ------------------------------------------------------------------------------------------ HTML

def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&mdash;"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c) if not isinstance(c, _Raw) else c}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


class _Raw(str):
    """A table cell that is already HTML."""


def _section(name: str, title: str, body: str, level: int = 3) -> str:
    return f'<section data-section="{name}"><h{level}>{title}</h{level}>{body}</section>'


def _summary_tables(runs, evals) -> str:
    head = ["run", "kind", "data", "steps", "train time", "params", "NLL nats", "bits/dim", "ELBO nats",
            "data NLL (exact)", "NLL examples"]
    rows = [[r.name, r.kind, r.data_name, r.steps, f"{r.train_seconds / 60:.1f} min", f"{r.params:,}",
             e.get("nll_nats"), e.get("bits_per_dim"), e.get("elbo_nats"), e.get("data_nll_nats"),
             e.get("n_examples")] for r, e in zip(runs, evals, strict=True)]
    out = _table(head, rows)
    out += ('<p class="note">NLL: an upper bound in nats per example in data space on held-out data (DDPM: '
            "the full variational bound; VAE: the IWAE bound with K = 1000); bits/dim = NLL / (D ln 2). "
            "Data NLL (exact): the true density's NLL on the same examples, the floor of any model.</p>")
    out += _likelihood_table(runs, evals)
    for kind in ("image", "vector"):
        group = [(r, e) for r, e in zip(runs, evals, strict=True) if compute.metric_kind(r)[0] == kind]
        if not group:
            continue
        names = [m for m in TABLE_METRICS[kind] if any(m in e for _, e in group)]
        head = ["run", "samples from", "n"] + [h for m in names for h in (m, f"{m} floor")]
        rows = [[r.name, e.get("sampled_with"), e.get("n_compared")]
                + [c for m in names for c in (e.get(m), _Raw(f'<span class="floor">{_fmt(e.get(m + "_floor"))}'
                                                              "</span>"))] for r, e in group]
        space = compute.metric_kind(group[0][0])[1]
        out += f"<h3>Sample quality ({html.escape(space)})</h3>" + _table(head, rows)
    out += ('<p class="note">Each floor is the same metric between two disjoint halves of real data at the '
            "same sample sizes: a model matching the data reaches it (precision/recall: the real data's "
            "own value). FD/KID/precision/recall use the shipped digit feature net; for vector data SW is "
            "the sliced 1-Wasserstein distance, MMD the RBF MMD^2, and cross_entropy the exact "
            "E_samples[-log p_data] (floor: the data's entropy estimate).</p>")
    return out


def _likelihood_table(runs, evals) -> str:
    """Bits/dim of every estimator an evaluation holds, with standard errors (empty when only the bound)."""
    estimators = (("bits_per_dim", "bound, the run's variance"), ("analytic_bits_per_dim", "bound, analytic variance"),
                  ("ode_bits_per_dim", "probability-flow ODE"))
    if not any("ode_bits_per_dim" in e or "analytic_bits_per_dim" in e for e in evals):
        return ""
    head = ["run", "kind"] + [label for _, label in estimators]

    def cell(e, key):
        if key not in e:
            return None
        return _Raw(f"{_fmt(e[key])} &plusmn; {_fmt(e.get(key + '_se'))}")  # _fmt escapes

    rows = [[r.name, r.kind] + [cell(e, key) for key, _ in estimators] for r, e in zip(runs, evals, strict=True)]
    return ("<h3>Likelihood (bits/dim on the same held-out examples, &plusmn; standard error)</h3>" + _table(head, rows)
            + '<p class="note">The bounds are the variational bound with the run\'s reverse variance and with '
            "Analytic-DPM's; the ODE is the NLL through the probability-flow ODE (for discrete data the "
            "dequantized bound). docs/LIKELIHOOD.md has the formulas.</p>")


def _run_header(r) -> str:
    return (f'<h3 id="{html.escape(r.anchor)}">{html.escape(r.name)}: {html.escape(r.kind)} on '
            f'{html.escape(r.data_name)}</h3><p class="meta">{html.escape(str(r.path))} &middot; {int(r.steps)} steps '
            f"&middot; trained {r.train_seconds / 60:.1f} min &middot; {r.params:,} parameters &middot; "
            f"{html.escape(r.model.describe())}</p>")


def _run_sections(r, found: RunFigures) -> str:
    """The per-run sections from what ``run_figures`` found."""
    body = _run_header(r)
    grids = "".join(_img(png, alt) for alt, png in found.grids)
    body += _section("samples", "Samples", grids + f'<p class="note">{html.escape(found.grid_note)}</p>')
    nb = found.neighbours
    text = (f"Top: samples; below: their nearest training images (L2 in model space, distance above each "
            f"pair). Median nearest-training distance: samples {nb.median_sample:.3g}, held-out data "
            f"{nb.median_heldout:.3g} (samples much closer than held-out data would mean memorization).")
    figure = _img(nb.png, "neighbours") if nb.png else ""
    body += _section("neighbours", "Nearest training neighbours", figure + f'<p class="note">{text}</p>')
    if found.forward is not None:
        body += _section("forward", "Forward process x_0 &rarr; x_L", _img(found.forward, "forward process"))
    if found.reverse is not None:
        body += _section("reverse", "Reverse trajectory (ancestral): x_i and x0_hat",
                         _img(found.reverse, "reverse trajectory"))
    if found.nfe is not None:
        nfe = found.nfe
        body += _section("nfe", "Quality and time against NFE", _img(nfe.png, "quality vs NFE")
                         + _table(["sampler", "NFE", "n", nfe.metric, "floor", "seconds"],
                                  [[s["sampler"], s["nfe"], s["n"], s.get(nfe.metric), nfe.floor, s["seconds"]]
                                   for s in nfe.rows]))
    if found.density is not None:
        body += _section("density", "2-D density and scatter", _img(found.density, "density"))
    if found.class_grid is not None:
        body += _class_grid_section(found.class_grid)
    if found.inpainting is not None:
        paint = found.inpainting
        body += _section("inpainting", "Inpainting", _img(paint.png, "inpainting")
                         + f'<p class="note">{html.escape(paint.caption)}</p>')
    return f'<article class="run">{body}</article>'


def _class_grid_section(grid) -> str:
    """The class-by-guidance grid of a conditional DDPM (``dgm.report.conditioning.ClassGrid``)."""
    from dgm.evaluation.conditional import CONFIDENCE

    names = ", ".join(html.escape(c) for c in grid.classes)
    text = (f"Rows, top to bottom: the classes {names}; column blocks: classifier-free guidance w = "
            f"{', '.join(f'{w:g}' for w in grid.guidance)}, eps = (1 + w) eps(x, c) - w eps(x) (Ho &amp; Salimans "
            f"2022; w = 0 is the conditional model), {grid.samples.shape[2]} samples per cell drawn with "
            f"{html.escape(grid.sampled_with)}, the same x_L for every w.")
    table = ""
    if grid.accuracy:
        table = _table(["guidance w", "accuracy", "confident", "samples"],
                       [[a["guidance"], a["accuracy"], a["confident"], a["n"]] for a in grid.accuracy])
        text += (" Accuracy: the fraction of the samples the shipped digit classifier labels as their class; "
                 f"confident: the fraction it gives its top digit a probability of at least {CONFIDENCE:g}.")
    return _section("classes", "Classes and guidance", _img(grid.png, "class-by-guidance grid")
                    + f'<p class="note">{text}</p>' + table)


def _blur_section(blur: BlurFigure) -> str:
    numbers = blur.numbers
    d = numbers["dim"]
    rows = [[k, numbers[k], numbers[k] / d] for k in ("recon_mse", "optimal_recon_mse", "blur_floor",
                                                      "decoder_gap")]
    sharp = [[k, v] for k, v in blur.sharpness.items()]
    share = numbers["blur_floor"] / max(numbers["recon_mse"], 1e-300)
    text = ("Columns: training images; the VAE's reconstructions (decoder means at z ~ q(z|x)); the optimal "
            "decoder mu*(z) = E[q(z|x) x] / E[q(z|x)] over the training set at the same z "
            "(dgm.optimal_decoder); VAE samples (decoder means at z ~ N(0, I)); the optimal decoder at prior "
            "draws z ~ N(0, I); DDPM samples. No decoder reconstructs with less squared error than the blur floor "
            "(the averaging forced by overlapping encoder posteriors); recon_mse = blur_floor + decoder_gap. "
            f"Here the blur floor is {100 * share:.1f}% of the VAE's reconstruction error"
            + (" (the posteriors barely overlap, so mu* nearly copies training images and the blur of the "
               "VAE's decoder is its own gap to mu*)" if share < 0.1 else "")
            + ". Sharpness: the mean squared finite difference of the images (higher is sharper).")
    return _section("blur", "Why the VAE blurs", _img(blur.png, "blur figure")
                    + '<p class="note">' + text + "</p>"
                    + _table(["blur_report (squared error)", "per example", "per dim"], rows)
                    + _table(["images", "sharpness"], sharp), level=2)


def render(runs, evals, found, loss_png, blur) -> str:
    """The whole page as a string."""
    when = time.strftime("%Y-%m-%d %H:%M")
    links = " &middot; ".join(f'<a href="#{html.escape(r.anchor)}">{html.escape(r.name)}</a>' for r in runs)
    body = (f"<h1>dgm report</h1><p class=\"meta\">{len(runs)} run(s), written {when}: {links}</p>"
            + _section("summary", "Summary", _summary_tables(runs, evals), level=2)
            + _section("loss", "Training loss", _img(loss_png, "loss curves"), level=2)
            + (_blur_section(blur) if blur else "")
            + '<h2>Runs</h2>' + "".join(_run_sections(r, f) for r, f in zip(runs, found, strict=True)))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>dgm report</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


# ------------------------------------------------------------------------------------------ entry points

def build_report(run_dirs, out, *, n_samples: int = 400, seed: int = 0, evals: dict | None = None,
                 nll_examples: int = 64, progress: bool = False, likelihood: str = "vlb") -> Path:
    """Write the comparison page of ``run_dirs`` to ``out`` (atomically) and return its path.

    ``n_samples``: samples per metric and per point of the NFE sweep. ``evals``: {run dir: the dict of
    ``dgm.report.compute.evaluate`` (or ``dgm.evaluation.likelihood.evaluate_run``)} already computed, used
    as they are; runs without one are evaluated here (NLL on the first ``nll_examples`` held-out examples).
    Raises ValueError (one line) for a bad DIR or --out before doing any work. ``progress``: say on stderr
    what is being done. ``likelihood="all"``: the DDPMs' bound with the analytic variance and their ODE NLL
    too, in a likelihood table.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 8:
        raise ValueError(f"n_samples must be an integer >= 8, got {n_samples!r}")
    out = check_out(out)
    dirs = check_runs(run_dirs)
    say = (lambda msg: print(f"dgm report: {msg}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    runs = compute.load_runs(dirs)
    given = {Path(k).resolve(): v for k, v in (evals or {}).items()}
    table, found = [], []
    for r in runs:
        say(f"sampling and drawing {r.name} ({r.kind} on {r.data_name})")
        found.append(run_figures(r, n_samples=n_samples, seed=seed))
        e = given.get(r.path.resolve())
        if e is None:
            say(f"evaluating {r.name}")
            e = compute.evaluate(r, n_samples=n_samples, seed=seed, nll_examples=nll_examples,
                                 fake=found[-1].samples, likelihood=likelihood)
        table.append(e)
    blur = blur_figure(runs, found, seed=seed)
    loss_png = plots.loss_png([(r.name, *r.loss_curve()) for r in runs])
    page = render(runs, table, found, loss_png, blur)
    atomic_write_bytes(out, page.encode())
    return out
