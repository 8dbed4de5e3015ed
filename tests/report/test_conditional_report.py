"""The report's conditional figures (``dgm.report.conditioning``): the class-by-guidance grid of a conditional DDPM
and the inpainting figure of an image DDPM, on tiny untrained runs, with a hostile class name; and the report's
likelihood of a conditional run given the true labels."""

from __future__ import annotations

import base64
import html
import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dgm.data.builtin_sets import builtin_set
from dgm.data.spec import data_spec, load_run_data, with_labels
from dgm.evaluation.likelihood import evaluate_nll
from dgm.models import build_model, model_class
from dgm.report import compute, conditioning, plots
from dgm.report.conditioning import GUIDANCE, ClassGrid, class_grid, half_mask
from dgm.report.html import build_report
from dgm.runs import checkpoint as ckpt
from dgm.runs.log import LogWriter

HOSTILE = "<b>x</b>"  # a class name that is HTML
NET = {"kind": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "attn_resolutions": [],
       "groups": 4, "head_channels": 8}


def _run(path, npz, conditional: bool):
    """An untrained tiny DDPM (8 levels) on the labelled images of ``npz``, saved as a run directory; its weights
    are jittered, as the zero-initialised output layer and class embedding would ignore the class."""
    spec = data_spec(str(npz))
    data = load_run_data(spec)
    if conditional:
        spec = with_labels(spec, data)
    config = model_class("ddpm").complete_config({"net": NET, "levels": 8, "conditional": conditional},
                                                 list(data.scaling.shape), data.scaling.bins,
                                                 num_classes=spec.get("num_classes"))
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path.mkdir()
    ckpt.write_config(path, {"model": model.config(), "data": spec, "scaling": data.scaling.to_dict(),
                             "train": {"steps": 2}})
    ckpt.save_checkpoint(path, model, model, step=2, state={})
    with LogWriter(path) as log:
        for step in (1, 2):
            log.write({"step": step, "loss": 1.0 / step, "elapsed_s": 0.1 * step})
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A conditional and an unconditional DDPM on 300 digits labelled "plain" (even) and HOSTILE (odd)."""
    root = tmp_path_factory.mktemp("cond")
    digits = builtin_set("digits")
    x = (digits.raw[:300] * 15).astype(np.uint8)  # (300, 1, 8, 8), 0..240
    y = np.where(digits.labels[:300] % 2 == 0, "plain", HOSTILE)
    np.savez(root / "labelled.npz", x=x, y=y)
    return {"cond": _run(root / "cond", root / "labelled.npz", True),
            "unc": _run(root / "unc", root / "labelled.npz", False)}


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("page") / "report.html"
    build_report([runs["cond"], runs["unc"]], out, n_samples=8)
    return out.read_text()


def _article(page: str, k: int) -> str:
    """The HTML of the k-th run's article."""
    return re.findall(r'<article class="run">.*?</article>', page, re.S)[k]


def test_sections_appear_only_where_they_apply(page):
    """The conditional image DDPM gets the class grid and inpainting; the unconditional one inpainting only.
    Catches a class grid drawn for an unconditional run (its null class under 'guidance') or sections lost."""
    cond, unc = _article(page, 0), _article(page, 1)
    assert 'data-section="classes"' in cond and 'data-section="inpainting"' in cond
    assert 'data-section="classes"' not in unc and 'data-section="inpainting"' in unc
    assert "given its true class" in cond and "given its true class" not in unc
    for src in re.findall(r'src="data:image/png;base64,([^"]*)"', cond):
        assert Image.open(io.BytesIO(base64.b64decode(src))).format == "PNG"


def test_class_names_are_escaped(page):
    """A class named "<b>x</b>" shows as text. Catches a class name written into the page unescaped."""
    assert HOSTILE not in page
    assert html.escape(HOSTILE) in _article(page, 0)


def test_grid_is_classes_by_guidance_and_guidance_changes_samples(runs):
    """The grid holds (classes, guidance values, n, *shape) samples; w changes them from the same x_L. Catches a
    transposed grid and guidance not reaching the sampler (every column the same)."""
    run = compute.load_runs([runs["cond"]])[0]
    grid = class_grid(run, seed=0)
    assert grid.classes == (HOSTILE, "plain") and grid.guidance == GUIDANCE
    assert tuple(grid.samples.shape) == (2, len(GUIDANCE), conditioning.GRID_IMAGES, 1, 8, 8)
    assert not torch.allclose(grid.samples[:, 0], grid.samples[:, -1])
    assert grid.accuracy == ()  # the classes are not digits: no classifier
    assert class_grid(compute.load_runs([runs["unc"]])[0]) is None
    with pytest.raises(ValueError, match=r"\(classes, guidance values, n, \.\.\.\) = \(2, 5\)"):
        ClassGrid(png=grid.png, classes=grid.classes, guidance=grid.guidance, samples=grid.samples.transpose(0, 1),
                  sampled_with="x")


class _Labeller:
    """A conditional DDPM stand-in whose sample of class c at guidance w is the constant image c/10 + w/100 - 1."""

    kind, conditional, num_classes = "ddpm", True, 3

    def quick_sampling(self):
        return {"sampler": "ddim", "steps": 2}, "ddim, 2 NFE"

    def sample(self, n, *, generator=None, sampler=None, steps=None, cond=None, guidance=0.0):
        assert cond.shape == (n,)
        return (cond.double() / 10 + guidance / 100 - 1).float()[:, None, None, None].expand(n, 1, 8, 8).clone()


def test_each_row_is_its_class_and_each_block_its_weight():
    """Row k holds samples of class k, block j those of GUIDANCE[j], and digit classes get the classifier's
    accuracy per w. Catches labels repeated in the wrong order (rows mixing classes) and blocks out of order."""
    run = SimpleNamespace(kind="ddpm", model=_Labeller(), config={"data": {"label_names": ["0", "1", "2"]}},
                          scaling=SimpleNamespace(kind="image", shape=(1, 8, 8)))
    grid = class_grid(run, seed=0, n=3)
    for k in range(3):
        for j, w in enumerate(GUIDANCE):
            assert torch.allclose(grid.samples[k, j], torch.tensor(k / 10 + w / 100 - 1)), (k, w)
    assert [a["guidance"] for a in grid.accuracy] == list(GUIDANCE) and all(a["n"] == 9 for a in grid.accuracy)


def test_vector_runs_get_a_scatter_grid():
    """A conditional DDPM on gmm2d (untrained MLP, 20 levels): one scatter per (class, w), no classifier, no
    inpainting. Catches the grid assuming images."""
    spec = {"spec": "gmm2d", "seed": 0, "heldout_fraction": 0.1}
    data = load_run_data(spec)
    spec = with_labels(spec, data)
    config = model_class("ddpm").complete_config({"net": {"kind": "mlp", "hidden": 16, "depth": 1, "emb_dim": 16},
                                                  "levels": 20, "conditional": True}, [2], None, num_classes=8)
    run = compute.Run(path=None, name="gmm2d", anchor="run-1", model=build_model(config), config={"data": spec},
                      data=data)
    grid = class_grid(run, seed=0, n=50)
    assert tuple(grid.samples.shape) == (8, len(GUIDANCE), 50, 2) and grid.accuracy == ()
    assert Image.open(io.BytesIO(grid.png)).format == "PNG"
    assert conditioning.inpainting_figure(run) is None


def test_labels_with_mathtext_draw():
    """A class name with "$...$" is drawn as text. Catches matplotlib parsing it as mathtext (an error)."""
    png = plots.class_grid_png(torch.zeros(2, 1, 2, 1, 8, 8), [r"$\frac$", "a$b"], ["w = 0"])
    assert Image.open(io.BytesIO(png)).format == "PNG"


@pytest.mark.parametrize("half, hidden", [("left", (slice(None), slice(0, 4))), ("right", (slice(None), slice(4, 8))),
                                          ("top", (slice(0, 4), slice(None))), ("bottom", (slice(4, 8), slice(None)))])
def test_half_mask_hides_the_named_half(half, hidden):
    """Catches a mask with known and hidden swapped, or the wrong axis."""
    mask = half_mask((1, 8, 8), half)
    assert not mask[0][hidden].any() and mask.sum() == 32


def test_report_scores_a_conditional_run_given_its_labels(runs):
    """Catches the report's NLL of a conditional run computed with the null class instead of the true labels."""
    run = compute.load_runs([runs["cond"]])[0]
    held, labels = run.data.heldout[:8], run.data.heldout_labels[:8]
    out = compute.evaluate(run, n_samples=16, nll_examples=8, fake=run.data.train[:16])

    def nll(y):
        return evaluate_nll(run.model, held, scaling=run.scaling, generator=torch.Generator().manual_seed(0),
                            labels=y)["nll_nats"]

    assert out["nll_nats"] == pytest.approx(nll(labels), rel=1e-9)
    assert out["nll_nats"] != pytest.approx(nll(None), rel=1e-6)


def test_headline_samples_of_a_run_without_label_dropout_cycle_the_classes(runs):
    """A conditional run trained with label dropout 0 has an untrained null class: the report's headline samples
    take every class in turn instead. Catches the report failing on such a run (the model refuses the null
    class) or labelling the samples of a run with dropout (its unconditional model) by class."""
    config = ckpt.read_config(runs["cond"])["model"]
    with_dropout = build_model(config)
    without = build_model(config | {"label_dropout": 0.0})
    assert compute.headline_labels(with_dropout, 5) is None
    assert compute.headline_labels(without, 5).tolist() == [0, 1, 0, 1, 0]
    x, _ = compute.draw(without, 5, seed=0, sampler="ddim", steps=2)
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()
