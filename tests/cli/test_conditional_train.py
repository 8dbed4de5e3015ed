"""``dgm train ddpm|vae --conditional [--label-dropout P]``: one-line refusals, and one end-to-end run (train,
resume, eval given the true held-out labels, sample) on gmm2d's component labels."""

import json
import re

import numpy as np
import pytest
import torch

from dgm.cli import main
from dgm.data.builtin_sets import builtin_set
from dgm.data.spec import load_run_data
from dgm.evaluation.likelihood import evaluate_nll
from dgm.runs import checkpoint as ckpt


@pytest.mark.parametrize("argv, pattern", [
    (["ddpm", "--data", "moons", "--conditional"], "--data 'moons' has no class labels; give an .npz with arrays x"),
    (["hvae", "--data", "gmm2d", "--conditional"], "--conditional applies to ddpm and vae only, not hvae"),
    (["ddpm", "--data", "gmm2d", "--label-dropout", "0.2"], "--label-dropout 0.2 needs --conditional"),
    (["vae", "--data", "gmm2d", "--conditional", "--label-dropout", "1"], r"expected a number in \[0, 1\), got '1'"),
], ids=["unlabelled data", "hvae", "dropout alone", "dropout 1"])
def test_refusals_are_one_line_and_write_nothing(one_line_error, tmp_path, argv, pattern):
    out = tmp_path / "run"
    line = one_line_error(["train", *argv, "--out", str(out), "--no-progress"])
    assert re.search(pattern, line), line
    assert not out.exists()


@pytest.mark.slow
def test_conditional_ddpm_and_vae_end_to_end(tmp_path, capsys):
    """Mutation: --conditional not reaching the model or config.json, a resumed run rebuilt unconditional, or
    dgm eval scoring the held-out examples without their labels (the null class instead)."""
    out = tmp_path / "ddpm"
    assert main(["train", "ddpm", "--data", "gmm2d", "--conditional", "--steps", "20", "--out", str(out),
                 "--no-progress"]) == 0
    config = ckpt.read_config(out)
    assert config["model"]["conditional"] is True and config["model"]["net"]["num_classes"] == 8
    assert config["data"]["num_classes"] == 8 and config["data"]["label_names"] == [str(k) for k in range(8)]
    assert main(["train", "ddpm", "--out", str(out), "--resume", "--steps", "24", "--no-progress"]) == 0
    assert ckpt.load_state(out / ckpt.STATE)["step"] == 24
    capsys.readouterr()

    assert main(["eval", str(out), "--max-examples", "40", "--seed", "1", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labels"] == "true"
    model, _ = ckpt.load_model(out)
    data = load_run_data(config["data"])
    x, y = data.heldout[:40], data.heldout_labels[:40]

    def nll(labels):
        g = torch.Generator().manual_seed(1)
        return evaluate_nll(model, x, scaling=data.scaling, generator=g, labels=labels)["nll_nats"]

    assert result["nll_nats"] == pytest.approx(nll(y), rel=1e-9)
    assert result["nll_nats"] != pytest.approx(nll(None), rel=1e-6)
    source = builtin_set("gmm2d")
    np.savez(tmp_path / "xy.npz", x=source.raw[:10], y=source.labels[:10])
    np.savez(tmp_path / "x.npz", x=source.raw[:10])
    for name, labels in (("xy.npz", "true"), ("x.npz", "null class")):  # --data: its labels, matched by name
        assert main(["eval", str(out), "--data", str(tmp_path / name), "--device", "cpu"]) == 0
        assert json.loads(capsys.readouterr().out)["labels"] == labels
    assert main(["sample", str(out), "-n", "5", "--out", str(tmp_path / "s.npy"), "--sampler", "ddim", "--steps",
                 "4"]) == 0  # no class given: the null class, the unconditional model
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()

    out = tmp_path / "vae"
    assert main(["train", "vae", "--data", "gmm2d", "--conditional", "--label-dropout", "0.2", "--steps", "5",
                 "--out", str(out), "--no-progress"]) == 0
    assert ckpt.read_config(out)["model"]["label_dropout"] == 0.2
    capsys.readouterr()
    assert main(["eval", str(out), "--max-examples", "8", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labels"] == "true" and result["nll_nats"] <= result["elbo_nats"]
