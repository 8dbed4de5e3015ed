"""Per-class metrics of a conditional run (``dgm.evaluation.conditional``, ``dgm eval --metrics`` on a conditional
run): stub models whose samples are known examples of the digits, the options' one-line refusals, and one
end-to-end ``dgm eval`` on a tiny untrained conditional DDPM."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dgm.data import load_data
from dgm.data.spec import with_labels
from dgm.evaluation.conditional import (
    MIN_FD_EXAMPLES,
    check_class_options,
    classifier_digits,
    per_class_metrics,
)
from dgm.models import build_model, model_class
from dgm.runs import checkpoint as ckpt

N = 12  # samples per class (the digits' held-out split has 14 to 21 examples per class)
SPEC = {"spec": "digits", "seed": 0, "heldout_fraction": 0.1}


class Stub:
    """A "conditional model" whose samples of class c are real examples: ``source(c)`` gives them, cycled to n.
    It records the keywords of every ``sample`` call."""

    kind, conditional, num_classes = "ddpm", True, 10

    def __init__(self, source):
        self.source, self.calls = source, []

    def eval(self):
        return self

    def sample(self, n, *, generator=None, cond=None, **kw):
        self.calls.append({"cond": cond, **kw})
        if not isinstance(cond, int):
            raise AssertionError(f"expected one int class, got {cond!r}")
        x = self.source(cond)
        return x[torch.arange(n) % len(x)]


@pytest.fixture(scope="module")
def digits():
    return load_data(SPEC["spec"], seed=SPEC["seed"], heldout_fraction=SPEC["heldout_fraction"])


def _of(split, labels, c):
    return split[labels == c]


def test_samples_of_the_right_class_score_like_real_data(digits):
    """Held-out examples of class c as "samples": every class's accuracy near the classifier's accuracy on real
    data. Catches labels ignored (the stub gets no int class) and a class compared with another's digit."""
    stub = Stub(lambda c: _of(digits.heldout, digits.heldout_labels, c))
    out = per_class_metrics(stub, digits, n_per_class=N)
    assert list(out["per_class"]) == [str(k) for k in range(10)]
    assert [call["cond"] for call in stub.calls] == list(range(10))
    for name, row in out["per_class"].items():
        assert row["accuracy"] >= 0.9 and row["accuracy_heldout"] >= 0.9, (name, row)
    overall = out["per_class_overall"]
    assert overall["accuracy"] == pytest.approx(overall["accuracy_heldout"], abs=0.05)
    assert overall["n_samples"] == 10 * N and overall["classifier"] == "digits8"


def test_samples_of_another_class_score_zero(digits):
    """Class c answered with examples of class c + 1: accuracy ~0, and each FD far above its floor. Catches
    classes mixed up (samples scored against the digit or the held-out examples of the class they came from)."""
    stub = Stub(lambda c: _of(digits.heldout, digits.heldout_labels, (c + 1) % 10))
    out = per_class_metrics(stub, digits, n_per_class=N)
    assert out["per_class_overall"]["accuracy"] <= 0.05
    for name, row in out["per_class"].items():
        assert row["accuracy"] <= 0.1, (name, row)
        assert row["fd"] > 3 * row["fd_floor"], (name, row)


def test_fd_floor_is_training_data_of_the_class_at_the_same_size(digits):
    """A model that returns the first training examples of class c scores exactly the floor, class by class and
    pooled. Catches a floor from another class, at another sample size, or from the held-out examples."""
    out = per_class_metrics(Stub(lambda c: _of(digits.train, digits.train_labels, c)), digits, n_per_class=N)
    for name, row in out["per_class"].items():
        assert row["n_compared"] == N and row["fd"] == pytest.approx(row["fd_floor"], rel=1e-9), (name, row)
    overall = out["per_class_overall"]
    assert overall["fd"] == pytest.approx(overall["fd_floor"], rel=1e-9) and overall["n_compared"] == 10 * N


def test_classes_are_named_digits_not_indices(digits):
    """Classes listed 9..0 (class k is the digit 9 - k): the true examples of each class still score high.
    Catches the classifier's digit compared with the class index instead of the class name."""
    names = [str(9 - k) for k in range(10)]
    flipped = dataclasses.replace(digits, train_labels=9 - digits.train_labels,
                                  heldout_labels=9 - digits.heldout_labels, label_names=names)
    out = per_class_metrics(Stub(lambda c: _of(flipped.heldout, flipped.heldout_labels, c)), flipped, n_per_class=N)
    assert list(out["per_class"]) == names
    assert out["per_class_overall"]["accuracy"] >= 0.9


def test_a_class_with_few_heldout_examples_gets_accuracy_only(digits):
    """Class 0 left with 3 held-out examples: no FD, a note saying so, its accuracy still measured; the other
    classes keep their FD. Catches an FD from a handful of examples reported as if it meant something."""
    keep = (digits.heldout_labels != 0) | (torch.cumsum((digits.heldout_labels == 0).long(), 0) <= 3)
    few = dataclasses.replace(digits, heldout=digits.heldout[keep], heldout_labels=digits.heldout_labels[keep])
    out = per_class_metrics(Stub(lambda c: _of(digits.train, digits.train_labels, c)), few, n_per_class=N)
    row = out["per_class"]["0"]
    assert row["n_heldout"] == 3 < MIN_FD_EXAMPLES and row["fd"] is None and row["accuracy"] is not None
    assert "only 3 held-out examples" in row["note"] and "accuracy only" in row["note"]
    assert all(r["fd"] is not None for name, r in out["per_class"].items() if name != "0")


def test_guidance_reaches_the_model_and_the_result(digits):
    """Catches --guidance dropped on the way to ``model.sample`` (or passed when it is 0)."""
    stub = Stub(lambda c: _of(digits.heldout, digits.heldout_labels, c))
    out = per_class_metrics(stub, digits, n_per_class=2, guidance=2.5, sampler="ddim", steps=3)
    assert all(call | {"cond": 0} == {"cond": 0, "guidance": 2.5, "sampler": "ddim", "steps": 3} for call in stub.calls)
    assert out["per_class_overall"]["guidance"] == 2.5
    stub.calls.clear()
    per_class_metrics(stub, digits, n_per_class=2)
    assert all("guidance" not in call for call in stub.calls)


@pytest.mark.parametrize("shape, names, want", [
    ((1, 8, 8), ["0", "1", "2"], [0, 1, 2]),
    ((1, 28, 28), ["7", "3"], [7, 3]),
    ((2,), ["0", "1"], None),  # vectors: no classifier
    ((3, 8, 8), ["0", "1"], None),  # colour: no shipped net
    ((1, 8, 8), ["cat", "dog"], None),
    ((1, 8, 8), ["0", "10"], None),  # "10" is no digit
])
def test_classifier_applies_to_digit_images_named_by_digits(shape, names, want):
    """Catches the classifier run on classes it does not know (it would score any names as digits 0..K-1)."""
    assert classifier_digits(shape, names) == want


def _config(kind="ddpm", conditional=True, classes=10):
    data = {"spec": "digits"} | ({"num_classes": classes} if conditional else {})
    return {"model": {"kind": kind, "conditional": conditional}, "data": data}


@pytest.mark.parametrize("config, kw, message", [
    (_config(conditional=False), {"guidance": 1.0}, "--guidance 1: the run 'R' is not class-conditional"),
    (_config(kind="vae"), {"guidance": 1.0}, "--guidance applies to DDPM runs; 'R' is a vae"),
    (_config(), {"guidance": 1.0, "metrics": []}, "--guidance 1 sets the per-class samples of --metrics"),
    (_config(), {"n_samples": 15}, "--n-samples 15 leaves 1 samples per class for 10 classes; give at least 20"),
], ids=["unconditional", "vae", "no metrics", "too few samples"])
def test_bad_options_are_refused_before_any_work(config, kw, message):
    """Catches guidance accepted where it changes nothing (or crashes later), and a per-class FD of one sample."""
    kw = {"metrics": ["fd"], "guidance": None, "n_samples": 1000} | kw
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as err:
        check_class_options(config, run="R", **kw)
    assert "\n" not in str(err.value)


def test_options_of_runs_without_per_class_metrics():
    """Unconditional runs, and conditional runs without --metrics, get no per-class metrics (None); a
    conditional run with --metrics gets n_samples // K per class. Catches the split of --n-samples."""
    unconditional = _config(conditional=False)
    assert check_class_options(unconditional, metrics=["fd"], guidance=None, n_samples=100, run="R") is None
    assert check_class_options(_config(), metrics=[], guidance=None, n_samples=100, run="R") is None
    assert check_class_options(_config(), metrics=["fd"], guidance=0.0, n_samples=105, run="R") == 10


def _tiny_conditional_run(path, digits):
    """An untrained conditional DDPM on the digits (tiny UNet, 8 levels), saved as a run directory."""
    spec = with_labels(dict(SPEC), digits)
    net = {"kind": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "attn_resolutions": [],
           "groups": 4, "head_channels": 8}
    config = model_class("ddpm").complete_config({"net": net, "levels": 8, "conditional": True},
                                                 list(digits.scaling.shape), digits.scaling.bins, num_classes=10)
    torch.manual_seed(0)
    model = build_model(config)
    path.mkdir()
    ckpt.write_config(path, {"model": model.config(), "data": spec, "scaling": digits.scaling.to_dict(),
                             "train": {"steps": 0}})
    ckpt.save_checkpoint(path, model, model, step=0, state={})
    return path


def test_cli_refuses_guidance_on_an_unconditional_run(one_line_error, tmp_path):
    """The check runs before the run is loaded: config.json alone is enough to refuse."""
    run = tmp_path / "run"
    run.mkdir()
    ckpt.write_config(run, _config(conditional=False))
    line = one_line_error(["eval", str(run), "--metrics", "fd", "--guidance", "2"])
    assert "is not class-conditional" in line


@pytest.mark.slow
def test_dgm_eval_prints_per_class_metrics(tmp_path, capsys, digits):
    """End to end: the JSON holds per_class (every class by name) and per_class_overall with the guidance, and
    stderr the table. Catches the CLI not wiring --guidance or the per-class result."""
    from dgm.cli import main

    run = _tiny_conditional_run(tmp_path / "cond", digits)
    argv = ["eval", str(run), "--metrics", "fd", "--n-samples", "20", "--sampler", "ddim", "--steps", "2",
            "--max-examples", "8", "--guidance", "1.5", "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert list(result["per_class"]) == [str(k) for k in range(10)]
    assert result["per_class_overall"]["guidance"] == 1.5 and result["per_class_overall"]["samples_per_class"] == 2
    assert all(0 <= r["accuracy"] <= 1 for r in result["per_class"].values())
    assert "per-class samples" in captured.err and "\nall " in captured.err
