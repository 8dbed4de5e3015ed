"""The report's figures of conditional sampling: a class-by-guidance grid and an inpainting figure.

``class_grid(run)``: for a class-conditional DDPM, a few samples of every class (rows) at each
classifier-free guidance weight w in ``GUIDANCE`` (column blocks), eps_w = (1 + w) eps(x, c) - w eps(x, null)
(Ho & Salimans 2022; w = 0 is the conditional model), drawn as the model's ``quick_sampling()`` says, with
the same x_L for every w; for digit-like classes also the shipped classifier's accuracy at each w
(``dgm.evaluation.conditional``).

``inpainting_figure(run)``: for a DDPM on images, held-out examples with one half hidden (left, right, top,
bottom: one per row), completed by ``dgm.runs.inpainting.inpaint`` with "replace" and "smc" at
``INPAINT_STEPS`` levels (SMC with ``SMC_PARTICLES`` particles), cheap settings for the demo's time budget
(the methods' defaults are 1000 levels and 100 levels x 16 particles); a conditional run completes each
example given its true label. Both return frozen dataclasses that ``dgm.report.html`` lays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dgm.report import plots
from dgm.report.compute import Run, draw

GUIDANCE = (0.0, 1.0, 2.0, 3.0, 4.0)  # the columns of the class grid
GRID_IMAGES = 4  # samples per (class, w) cell for images
GRID_POINTS = 200  # samples per (class, w) cell for vector data
INPAINT_EXAMPLES = 4  # held-out examples, one per hidden half
HALVES = ("left", "right", "top", "bottom")  # the hidden half of each example
INPAINT_METHODS = ("replace", "smc")
INPAINT_STEPS = 25  # visited levels of each method in the figure
SMC_PARTICLES = 4  # particles per SMC draw: INPAINT_STEPS * SMC_PARTICLES NFE per completion
COMPLETIONS = 2  # completions per method and example


@dataclass(frozen=True)
class ClassGrid:
    """Samples of each class at each guidance weight: the figure, the class names (rows), the weights
    (column blocks), the samples (K, W, n, *shape) in model space, how they were drawn, and per weight the
    classifier's figures ({"guidance", "accuracy", "confident", "n"}; empty where no classifier applies)."""

    png: bytes
    classes: tuple[str, ...]
    guidance: tuple[float, ...]
    samples: torch.Tensor
    sampled_with: str
    accuracy: tuple[dict, ...] = ()

    def __post_init__(self):
        if not isinstance(self.png, bytes):
            raise ValueError(f"ClassGrid png must be PNG bytes, got {type(self.png).__name__}")
        want = (len(self.classes), len(self.guidance))
        if not isinstance(self.samples, torch.Tensor) or tuple(self.samples.shape[:2]) != want:
            shape = tuple(getattr(self.samples, "shape", ()))
            raise ValueError(f"ClassGrid samples must be (classes, guidance values, n, ...) = {want}, got {shape}")


@dataclass(frozen=True)
class Inpainting:
    """Held-out examples with a hidden half and their completions: the figure, the hidden half of each row,
    the methods as (name, settings) pairs and the caption."""

    png: bytes
    halves: tuple[str, ...]
    methods: tuple[tuple[str, dict], ...]
    caption: str

    def __post_init__(self):
        if not isinstance(self.png, bytes):
            raise ValueError(f"Inpainting png must be PNG bytes, got {type(self.png).__name__}")
        unknown = [h for h in self.halves if h not in HALVES]
        if unknown:
            raise ValueError(f"unknown hidden half {unknown[0]!r}; choose from {', '.join(HALVES)}")


def class_names(run: Run) -> list[str]:
    """The run's class names (config.json's data record), else "0".."K-1"."""
    names = run.config["data"].get("label_names")
    return list(names) if names else [str(k) for k in range(run.model.num_classes)]


def class_grid(run: Run, *, seed: int = 0, guidance=GUIDANCE, n: int | None = None) -> ClassGrid | None:
    """The class-by-guidance grid of a class-conditional DDPM run; None for any other run."""
    from dgm.evaluation.conditional import CONFIDENCE, class_probabilities, classifier_digits

    if run.kind != "ddpm" or not getattr(run.model, "conditional", False):
        return None
    names, image = class_names(run), run.scaling.kind == "image"
    n = n or (GRID_IMAGES if image else GRID_POINTS)
    how, label = run.model.quick_sampling()
    labels = torch.arange(len(names)).repeat_interleave(n)  # class k: rows k*n .. k*n + n - 1
    cells = []
    for w in guidance:  # the same seed, so the same x_L, for every w
        x, _ = draw(run.model, len(labels), seed=seed, cond=labels, guidance=float(w), **how)
        cells.append(x.cpu().reshape(len(names), n, *x.shape[1:]))
    samples = torch.stack(cells, 1)  # (K, W, n, *shape)
    titles = [f"w = {w:g}" for w in guidance]
    if image:
        png = plots.class_grid_png(samples, names, titles)
    else:
        png = plots.scatter_rows_png([(name, [(t, _points(run, samples[k, j])) for j, t in enumerate(titles)])
                                      for k, name in enumerate(names)], cell_inches=1.2)
    accuracy = []
    digits = classifier_digits(run.scaling.shape, names)
    if digits is not None:
        want = torch.tensor(digits).repeat_interleave(n)
        for j, w in enumerate(guidance):
            p = class_probabilities(samples[:, j].reshape(-1, *samples.shape[3:]))
            accuracy.append({"guidance": float(w), "accuracy": (p.argmax(1) == want).double().mean().item(),
                             "confident": p.max(1).values.ge(CONFIDENCE).double().mean().item(), "n": len(want)})
    return ClassGrid(png=png, classes=tuple(names), guidance=tuple(float(w) for w in guidance), samples=samples,
                     sampled_with=label, accuracy=tuple(accuracy))


def _points(run: Run, x: torch.Tensor):
    import numpy as np

    return np.asarray(run.scaling.to_data(x), dtype=np.float64).reshape(len(x), -1)[:, :2]


def half_mask(shape, half: str) -> torch.Tensor:
    """The known pixels (True) of an image (C, H, W) whose ``half`` ("left", "right", "top", "bottom") is hidden."""
    c, h, w = shape
    mask = torch.ones(c, h, w, dtype=torch.bool)
    if half == "left":
        mask[..., : w // 2] = False
    elif half == "right":
        mask[..., w // 2 :] = False
    elif half == "top":
        mask[:, : h // 2] = False
    elif half == "bottom":
        mask[:, h // 2 :] = False
    else:
        raise ValueError(f"unknown half {half!r}; choose from {', '.join(HALVES)}")
    return mask


def inpainting_figure(run: Run, *, seed: int = 0) -> Inpainting | None:
    """The inpainting figure of a DDPM run on images; None for any other run."""
    from dgm.runs.inpainting import DEFAULT_NOISE, inpaint
    from dgm.samplers.inverse import INVERSE_OPTIONS, INVERSE_STEPS

    if run.kind != "ddpm" or run.scaling.kind != "image":
        return None
    source = run.data.heldout if len(run.data.heldout) else run.data.train
    source_labels = run.data.heldout_labels if len(run.data.heldout) else run.data.train_labels
    k = min(INPAINT_EXAMPLES, len(source))
    idx = torch.linspace(0, len(source) - 1, k).long()
    conditional = getattr(run.model, "conditional", False)
    steps = min(INPAINT_STEPS, run.model.schedule.L)
    methods = tuple((m, {"steps": steps, "particles": SMC_PARTICLES} if m == "smc" else {"steps": steps})
                    for m in INPAINT_METHODS)
    rows, halves = [], HALVES[:k]
    for j, half in enumerate(halves):
        x = source[idx[j : j + 1]]
        mask = half_mask(x.shape[1:], half)
        cond = source_labels[idx[j : j + 1]] if conditional and source_labels is not None else None
        done = [inpaint(run.model, x, mask, method=m, noise=DEFAULT_NOISE, per_input=COMPLETIONS, seed=seed + j,
                        cond=cond, **opts)[0][0] for m, opts in methods]
        shown = torch.where(mask, x[0], torch.zeros_like(x[0]))  # unknown pixels grey
        mask_img = mask.to(x.dtype) * 2 - 1  # known white, hidden black
        rows.append((f"{half} hidden", torch.cat([shown[None], mask_img[None], *done, x])))
    titles = ["input", "mask"] + [f"{m} {c + 1}" for m, _ in methods for c in range(COMPLETIONS)] + ["truth"]
    png = plots.rows_png(rows, titles, cell_inches=0.7)
    settings = "; ".join(f"{m}: {opts['steps']} levels" + (f" x {opts['particles']} particles" if "particles" in opts
                                                            else "") for m, opts in methods)
    L = run.model.schedule.L
    defaults = "; ".join(f"{m}: {min(INVERSE_STEPS[m] or L, L)} levels" + (
        f" x {INVERSE_OPTIONS[m]['particles']} particles" if m == "smc" else "") for m, _ in methods)
    caption = (f"Held-out examples with one half hidden (grey in the input; black in the mask), observed with noise "
               f"std {DEFAULT_NOISE:g} in model space, and {COMPLETIONS} completions per method "
               f"(dgm.runs.inpainting.inpaint with {settings}: cheap settings for the report's time budget; the "
               f"methods' defaults are {defaults}), then the truth"
               + (", each completed given its true class" if conditional else "") + ".")
    return Inpainting(png=png, halves=halves, methods=methods, caption=caption)
