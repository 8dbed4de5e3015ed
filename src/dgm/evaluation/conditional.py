"""Per-class sample quality of a class-conditional run: ``dgm eval --metrics ...`` on a conditional run.

For each class c, ``n`` samples are drawn given c (a DDPM with classifier-free guidance w, (1 + w) eps(x, c)
- w eps(x, null), Ho & Salimans 2022; w = 0 is the plain conditional model) and compared with the held-out
examples of class c:

- **FD** (Frechet distance, Heusel et al. 2017) in the feature space of the shipped digit net for 8x8 and
  28x28 grey images (``dgm.evaluation.features``), on the vectors themselves for vector data; none for other
  images. Its **floor** is the FD between the same held-out examples and as many *training* examples of
  class c as samples compared: what a model that draws fresh data of class c scores at these sample sizes
  (FD is biased upward at small N, by the same amount for both). A class with fewer than
  ``MIN_FD_EXAMPLES`` held-out examples gets no FD, and a note says so.
- for **digit-like data** (a shipped classifier for the image size, and classes named by digits "0".."9"):
  ``accuracy``, the fraction of the class-c samples the classifier labels c, and ``confident``, the
  fraction whose most probable digit (whatever it is) has probability >= ``CONFIDENCE``; beside them the
  classifier's accuracy on the held-out examples of c (``accuracy_heldout``, what real data of class c
  score).

``per_class_metrics`` returns {"per_class": {class name: {...}}, "per_class_overall": {...}}: the overall
figures pool every class (FD of all samples against all held-out examples, the floor from training examples
in the samples' class proportions) and record how the samples were drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["CONFIDENCE", "MIN_FD_EXAMPLES", "check_class_options", "class_probabilities", "classifier_digits",
           "evaluate_classes", "format_per_class", "per_class_metrics"]

CONFIDENCE = 0.9  # a sample is "confident" when the classifier gives its top digit at least this probability
MIN_FD_EXAMPLES = 10  # held-out examples of a class below which its FD (a mean and a covariance) is not reported
CHUNK = 4096  # samples per call of model.sample


def classifier_digits(shape, names) -> list[int] | None:
    """The digit the shipped classifier should predict for each class (index k -> int(names[k])), or None
    where it does not apply: no feature net for one example of ``shape``, or a class not named "0".."9"."""
    from dgm.evaluation.features import kind_for_shape

    try:
        kind_for_shape(shape)
    except ValueError:
        return None
    if not names or not all(isinstance(n, str) and len(n) == 1 and n.isdigit() for n in names):
        return None
    return [int(n) for n in names]


@torch.no_grad()
def class_probabilities(x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """softmax of the shipped digit classifier: (N, 10) float64 for images as ``features.classify`` takes."""
    from dgm.evaluation.features import as_images, load_feature_net

    x = as_images(x)
    net = load_feature_net(x.shape[1:])
    if len(x) == 0:
        return torch.zeros(0, 10, dtype=torch.float64)
    return torch.cat([net(chunk.cpu()).double().softmax(1) for chunk in x.split(batch_size)])


def _fd_space(scaling) -> str | None:
    """Where FD is measured: the digit net's feature space, the data vectors, or None (other images)."""
    if scaling.kind != "image":
        return "data vectors in model space"
    from dgm.evaluation.features import kind_for_shape

    try:
        kind_for_shape(scaling.shape)
        return "feature space of the shipped digit net"
    except ValueError:
        return None


def _embed(x: torch.Tensor, image: bool) -> torch.Tensor:
    from dgm.evaluation.features import features

    return features(x) if image else x.reshape(len(x), -1).double().cpu()


def _draw(model, n: int, label: int, *, generator, guidance: float, sampler, steps) -> torch.Tensor:
    """n samples of class ``label`` (model space, CPU), ``CHUNK`` at a time from one generator."""
    kw = {k: v for k, v in (("sampler", sampler), ("steps", steps)) if v is not None}
    if guidance:
        kw["guidance"] = guidance
    parts = [model.sample(min(CHUNK, n - k), generator=generator, cond=label, **kw).cpu() for k in range(0, n, CHUNK)]
    x = torch.cat(parts)
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"a sample of class {label} holds a NaN or an infinity")
    return x


def _fd(held: torch.Tensor, fake: torch.Tensor, floor: torch.Tensor) -> dict:
    from dgm.evaluation.distances import frechet_distance

    return {"fd": frechet_distance(held, fake), "fd_floor": frechet_distance(held, floor) if len(floor) >= 2
            else None, "n_compared": len(fake)}


def per_class_metrics(model, data, *, n_per_class: int, names: list[str] | None = None, guidance: float = 0.0,
                      seed: int = 0, sampler: str | None = None, steps: int | None = None) -> dict:
    """Samples of each class against the held-out examples of that class (see the module docstring).

    ``model``: a class-conditional model (``model.sample(n, generator=, cond=int, guidance=)``); ``data``: its
    ``DataSet`` (model space) with ``heldout_labels`` and ``train_labels``; ``names``: the run's class names
    (default ``data.label_names``, else "0".."K-1"); ``n_per_class`` samples per class, all classes drawn in
    turn from one generator seeded with ``seed``. Returns {"per_class": {name: {"n_heldout", "n_samples",
    "fd", "fd_floor", "n_compared", "accuracy", "confident", "accuracy_heldout", "note"}},
    "per_class_overall": {the same pooled over classes, "guidance", "samples_per_class", "fd_space",
    "classifier", "reference"}}; a figure that does not apply is None.
    """
    if not getattr(model, "conditional", False):
        raise ValueError(f"per-class metrics need a class-conditional run; this {model.kind} is unconditional")
    if data.heldout_labels is None:
        raise ValueError(f"the data {data.name!r} have no class labels")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 2:
        raise ValueError(f"n_per_class must be an integer >= 2, got {n_per_class!r}")
    names = list(names or data.label_names or [str(k) for k in range(model.num_classes)])
    if len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class names for a model of {model.num_classes} classes")
    space, digits = _fd_space(data.scaling), classifier_digits(data.scaling.shape, names)
    image = data.scaling.kind == "image"
    g = torch.Generator().manual_seed(seed)
    model.eval()
    rows, pooled = {}, {"fake": [], "floor": [], "held": [], "hits": [], "sure": [], "held_hits": []}
    for c, name in enumerate(names):
        fake = _draw(model, n_per_class, c, generator=g, guidance=guidance, sampler=sampler, steps=steps)
        held, train = data.heldout[data.heldout_labels == c], data.train[data.train_labels == c]
        m = min(n_per_class, len(train)) if len(train) >= 2 else n_per_class
        row = {"n_heldout": len(held), "n_samples": n_per_class, "fd": None, "fd_floor": None, "n_compared": None,
               "accuracy": None, "confident": None, "accuracy_heldout": None, "note": None}
        if space is not None:
            fake_f, floor_f = _embed(fake[:m], image), _embed(train[:m], image) if len(train) >= 2 else None
            pooled["fake"].append(fake_f)
            if floor_f is not None:
                pooled["floor"].append(floor_f)
            if len(held):
                pooled["held"].append(_embed(held, image))
            if len(held) >= MIN_FD_EXAMPLES:
                row |= _fd(pooled["held"][-1], fake_f, floor_f if floor_f is not None else fake_f[:0])
            else:
                row["note"] = f"only {len(held)} held-out examples (FD needs >= {MIN_FD_EXAMPLES})" + (
                    ": accuracy only" if digits is not None else "")
        if digits is not None:
            p = class_probabilities(fake)
            hits = p.argmax(1) == digits[c]
            sure = p.max(1).values >= CONFIDENCE
            row["accuracy"], row["confident"] = hits.double().mean().item(), sure.double().mean().item()
            pooled["hits"].append(hits)
            pooled["sure"].append(sure)
            if len(held):
                held_hits = class_probabilities(held).argmax(1) == digits[c]
                row["accuracy_heldout"] = held_hits.double().mean().item()
                pooled["held_hits"].append(held_hits)
        rows[name] = row
    overall = _overall(pooled, data, n_per_class * len(names), space, digits)
    overall |= {"samples_per_class": n_per_class, "guidance": guidance}
    return {"per_class": rows, "per_class_overall": overall}


def _overall(pooled: dict, data, n_samples: int, space, digits) -> dict:
    """The per-class figures pooled over every class."""
    from dgm.evaluation.features import kind_for_shape

    out = {"n_heldout": len(data.heldout), "n_samples": n_samples,
           "fd_space": space,
           "classifier": kind_for_shape(data.scaling.shape) if digits is not None else None,
           "reference": "the held-out examples of each class", "fd": None, "fd_floor": None, "n_compared": None,
           "accuracy": None, "confident": None, "accuracy_heldout": None}
    held = torch.cat(pooled["held"]) if pooled["held"] else None
    if held is not None and len(held) >= MIN_FD_EXAMPLES:
        floor = torch.cat(pooled["floor"]) if pooled["floor"] else held[:0]
        out |= _fd(held, torch.cat(pooled["fake"]), floor)
    if digits is not None:
        out["accuracy"] = torch.cat(pooled["hits"]).double().mean().item()
        out["confident"] = torch.cat(pooled["sure"]).double().mean().item()
        if pooled["held_hits"]:
            out["accuracy_heldout"] = torch.cat(pooled["held_hits"]).double().mean().item()
    return out


def check_class_options(config: dict, *, metrics, guidance: float | None, n_samples: int, run: str) -> int | None:
    """Check ``dgm eval``'s per-class options before any work: samples per class for a conditional run with
    ``metrics`` (None when there are no per-class metrics), or ValueError: ``guidance`` without metrics, on an
    unconditional run or on a VAE, or fewer than 2 samples per class."""
    model, classes = config.get("model") or {}, (config.get("data") or {}).get("num_classes")
    conditional = bool(model.get("conditional")) and classes is not None
    if guidance is not None:
        if not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"--guidance must be a finite number >= 0, got {guidance!r}")
        if not conditional:
            raise ValueError(f"--guidance {guidance:g}: the run {run!r} is not class-conditional (train it with "
                             "--conditional)")
        if model.get("kind") != "ddpm":
            raise ValueError(f"--guidance applies to DDPM runs; {run!r} is a {model.get('kind')}")
        if not metrics:
            raise ValueError(f"--guidance {guidance:g} sets the per-class samples of --metrics; give --metrics too")
    if not (conditional and metrics):
        return None
    per_class = n_samples // classes
    if per_class < 2:
        raise ValueError(f"--n-samples {n_samples} leaves {per_class} samples per class for {classes} classes; "
                         f"give at least {2 * classes}")
    return per_class


def evaluate_classes(run_dir, *, n_per_class: int, guidance: float = 0.0, seed: int = 0, sampler: str | None = None,
                     steps: int | None = None, device=None) -> dict:
    """``per_class_metrics`` of a run directory's EMA model against its own held-out split."""
    from dgm.data.spec import load_run_data
    from dgm.runs import checkpoint as ckpt
    from dgm.runs.device import resolve_device

    model, config = ckpt.load_model(Path(run_dir))
    model.to(resolve_device(device))
    if guidance and model.kind != "ddpm":
        raise ValueError(f"--guidance applies to DDPM runs; {str(run_dir)!r} is a {model.kind}")
    data = load_run_data(config["data"])
    return per_class_metrics(model, data, n_per_class=n_per_class, names=config["data"].get("label_names"),
                             guidance=guidance, seed=seed, sampler=sampler, steps=steps)


def _cell(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_per_class(result: dict) -> str:
    """The per-class table of ``per_class_metrics`` (or a ``dgm eval`` result holding it) as plain text."""
    rows, overall = result["per_class"], result["per_class_overall"]
    head = (f"per-class samples: {overall['samples_per_class']} per class, guidance w = {overall['guidance']:g}, "
            f"against {overall['reference']}; FD in the {overall['fd_space'] or 'no feature space'} (floor: "
            f"training examples of the class); accuracy and confident (p >= {CONFIDENCE:g}) by "
            f"{'the shipped ' + overall['classifier'] + ' classifier' if overall['classifier'] else 'no classifier'}")
    width = max(5, *(len(n) for n in rows))
    cols = ("n_heldout", "fd", "fd_floor", "accuracy", "acc_heldout", "confident")
    lines = [head, f"{'class':<{width}}" + "".join(f"{c:>12}" for c in cols)]
    for name, r in [*rows.items(), ("all", overall)]:
        cells = (r["n_heldout"], r["fd"], r["fd_floor"], r["accuracy"], r["accuracy_heldout"], r["confident"])
        line = f"{name:<{width}}" + "".join(f"{_cell(v):>12}" for v in cells)
        lines.append(line + (f"  {r['note']}" if r.get("note") else ""))
    return "\n".join(lines)
