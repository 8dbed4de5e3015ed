"""The command line: one-line errors (exit 2, no traceback, nothing overwritten), --help, end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dgm.cli import main
from dgm.runs import checkpoint as ckpt

DGM = [sys.executable, "-m", "dgm.cli"]


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def settings(tiny_settings) -> Path:
    return tiny_settings


@pytest.fixture(scope="module")
def run(tmp_path_factory, settings) -> Path:
    """A tiny trained DDPM run on gmm2d (3 steps)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings),
                 "--steps", "3", "--no-progress"]) == 0
    return out


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _train(out, data, *extra):
    return ["train", "ddpm", "--data", str(data), "--out", str(out), "--steps", "2", "--no-progress", *extra]


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["eval"], ["report"], ["demo"], ["verify"]])
def test_help(capsys, command):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dgm") and ("examples:" in out or not command)


def test_missing_data_path(capsys, tmp_path, one_line_error):
    line = one_line_error(_train(tmp_path / "out", tmp_path / "nowhere.npy"))
    assert "nowhere.npy" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, array, words", [
    ("empty.npy", np.zeros((0, 2)), "empty"),
    ("shape.npy", np.zeros((5, 2, 3, 4, 5)), "shape"),
    ("dtype.npy", np.array([["a", "b"]] * 4), "dtype"),
    ("nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), "nan"),
    ("inf.npy", np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 1.0]]), "inf"),
])
def test_bad_arrays(capsys, tmp_path, name, array, words, one_line_error):
    np.save(tmp_path / name, array)
    line = one_line_error(_train(tmp_path / "out", tmp_path / name))
    assert words in line.lower() and name in line
    assert not (tmp_path / "out").exists()


def test_unreadable_image(capsys, tmp_path, one_line_error):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    line = one_line_error(_train(tmp_path / "out", tmp_path / "images"))
    assert "broken.png" in line


def test_non_numeric_flag(capsys, tmp_path, one_line_error):
    line = one_line_error(["train", "ddpm", "--data", "gmm2d", "--out", str(tmp_path), "--steps", "many"])
    assert "'many'" in line


def test_non_numeric_flag_in_a_real_process(tmp_path):
    done = subprocess.run([*DGM, "sample", str(tmp_path), "-n", "ten", "--out", "x.npy"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "'ten'" in done.stderr


def test_resume_without_checkpoint(capsys, tmp_path, one_line_error):
    line = one_line_error(_train(tmp_path, "gmm2d", "--resume"))
    assert "no run to resume" in line and list(tmp_path.iterdir()) == []


def test_out_dir_with_a_different_run(capsys, run_copy, settings, one_line_error):
    before = _snapshot(run_copy)
    line = one_line_error(_train(run_copy, "gmm2d", "--config", str(settings), "--lr", "0.5"))
    assert "different run" in line and "train.lr" in line
    assert _snapshot(run_copy) == before


def test_out_dir_with_the_same_run_needs_resume(capsys, run_copy, settings, one_line_error):
    before = _snapshot(run_copy)
    line = one_line_error(_train(run_copy, "gmm2d", "--config", str(settings)))
    assert "--resume" in line
    assert _snapshot(run_copy) == before


def test_resume_of_another_kind(capsys, run_copy, one_line_error):
    line = one_line_error(["train", "vae", "--out", str(run_copy), "--resume", "--no-progress"])
    assert "ddpm" in line


def test_model_flag_of_another_kind(capsys, tmp_path, one_line_error):
    line = one_line_error(["train", "vae", "--data", "gmm2d", "--out", str(tmp_path / "o"), "--objective", "v"])
    assert line == "dgm: error: --objective applies to ddpm only, not vae" and not (tmp_path / "o").exists()


def test_verify_budget_errors(capsys, one_line_error):
    assert "got 10" in one_line_error(["verify", "--n", "10"])
    assert "'0'" in one_line_error(["verify", "--levels", "0"])


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_truncated_checkpoint(capsys, run_copy, tmp_path, command, one_line_error):
    weights = run_copy / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:200])
    (tmp_path / "old.npy").write_bytes(b"keep me")
    argv = ["sample", str(run_copy), "-n", "4", "--out", str(tmp_path / "old.npy")] if command == "sample" else [
        "eval", str(run_copy)]
    assert "truncated" in one_line_error(argv)
    assert (tmp_path / "old.npy").read_bytes() == b"keep me"


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_foreign_checkpoint(capsys, run_copy, tmp_path, command, one_line_error):
    import torch

    save_file({"conv.weight": torch.zeros(2, 2)}, str(run_copy / ckpt.WEIGHTS))
    argv = ["sample", str(run_copy), "-n", "4", "--out", str(tmp_path / "x.npy")] if command == "sample" else [
        "eval", str(run_copy)]
    assert "not a dgm checkpoint" in one_line_error(argv)
    assert not (tmp_path / "x.npy").exists()


def test_sample_from_a_missing_run(capsys, tmp_path, one_line_error):
    assert "does not exist" in one_line_error(["sample", str(tmp_path / "nope"), "-n", "2", "--out", "x.npy"])


def test_unknown_sampler(capsys, run, tmp_path, one_line_error):
    line = one_line_error(["sample", str(run), "-n", "4", "--out", str(tmp_path / "x.npy"), "--sampler", "euler"])
    assert "'euler'" in line and not (tmp_path / "x.npy").exists()


def test_bad_sample_suffix(capsys, run, tmp_path, one_line_error):
    assert ".npy or .png" in one_line_error(["sample", str(run), "-n", "4", "--out", str(tmp_path / "x.txt")])


def test_sample_and_eval_on_a_named_device(capsys, run, tmp_path, one_line_error):
    """--device cpu gives the same numbers as the default on a CPU-only machine; cuda without one is an error."""
    for name, extra in (("a", []), ("b", ["--device", "cpu"])):
        assert main(["sample", str(run), "-n", "20", "--out", str(tmp_path / f"{name}.npy"), "--steps", "5",
                     "--sampler", "ddim", *extra]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    capsys.readouterr()
    assert main(["eval", str(run), "--max-examples", "8", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["n_examples"] == 8
    if not torch.cuda.is_available():
        for command in (["sample", str(run), "-n", "2", "--out", str(tmp_path / "c.npy")], ["eval", str(run)]):
            assert "no CUDA device" in one_line_error([*command, "--device", "cuda"])
        assert not (tmp_path / "c.npy").exists()


def test_eval_on_data_of_another_shape(capsys, run, tmp_path, one_line_error):
    np.save(tmp_path / "three.npy", np.random.default_rng(0).normal(size=(10, 3)))
    assert "shape" in one_line_error(["eval", str(run), "--data", str(tmp_path / "three.npy")])


def test_bad_config_file(capsys, tmp_path, one_line_error):
    (tmp_path / "bad.toml").write_text("[model\n")
    assert "not valid TOML" in one_line_error(_train(tmp_path / "o", "gmm2d", "--config", str(tmp_path / "bad.toml")))
    (tmp_path / "typo.toml").write_text("[trian]\nsteps = 3\n")
    assert "'trian'" in one_line_error(_train(tmp_path / "o", "gmm2d", "--config", str(tmp_path / "typo.toml")))


def test_model_that_does_not_fit_the_data(capsys, tmp_path, one_line_error):
    (tmp_path / "dim3.toml").write_text("[model.net]\ndim = 3\nhidden = 8\ndepth = 1\n")
    line = one_line_error(_train(tmp_path / "o", "gmm2d", "--config", str(tmp_path / "dim3.toml")))
    assert "does not fit data of shape (2,)" in line and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_sample_eval_end_to_end(capsys, tmp_path, settings):
    out = tmp_path / "run"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings),
                 "--steps", "200", "--no-progress"]) == 0
    assert main(["sample", str(out), "-n", "500", "--out", str(tmp_path / "s.npy"), "--sampler", "ddim",
                 "--steps", "10"]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (500, 2) and samples.dtype == np.float64 and np.isfinite(samples).all()
    assert np.abs(samples).max() < 20  # data space: the modes sit on the circle of radius 4
    assert main(["sample", str(out), "-n", "300", "--out", str(tmp_path / "s.png"), "--sampler", "dpm++2m"]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["eval", str(out), "--max-examples", "50", "--metrics", "sw", "--n-samples", "200",
                 "--sampler", "ddim", "--steps", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"nll_nats", "bits_per_dim", "data_nll_nats", "sw", "sw_floor"} <= result.keys()
    assert result["nll_nats"] > result["data_nll_nats"]  # an upper bound, and far from tight after 200 steps
    assert result["bits_per_dim"] == pytest.approx(result["nll_nats"] / (2 * np.log(2)))


@pytest.mark.slow
def test_vae_on_digits_end_to_end(capsys, tmp_path, one_line_error):
    out = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--out", str(out), "--steps", "30", "--no-progress"]) == 0
    assert main(["sample", str(out), "-n", "16", "--out", str(tmp_path / "grid.png")]) == 0
    assert main(["sample", str(out), "-n", "16", "--out", str(tmp_path / "d.npy")]) == 0
    digits = np.load(tmp_path / "d.npy")
    assert digits.shape == (16, 1, 8, 8) and digits.min() >= 0 and digits.max() <= 16
    capsys.readouterr()
    assert "sampler" in one_line_error(["sample", str(out), "-n", "4", "--out", str(tmp_path / "x.npy"),
                                        "--sampler", "ddim"])
    capsys.readouterr()
    assert main(["eval", str(out), "--max-examples", "20", "--metrics", "fd", "--n-samples", "400"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nll_nats"] <= result["elbo_nats"] + 1e-6
    assert "data_nll_nats" not in result
    # FD against all 1,797 digits (not the 180 held out): 400 samples against 400 of the other half
    assert result["reference"] == "all data" and result["n_compared"] == 400 and result["n_reference"] == 899


@pytest.mark.parametrize("fast", [True, False])
def test_mixed_precision_auto_is_recorded_resolved(tmp_path, settings, monkeypatch, fast):
    # catches: "auto" passed on to TrainConfig (not a precision: the run fails) or recorded unresolved (a resume on
    # another machine would change precision), or bf16 chosen where the probe says it is not faster
    import dgm.training.recipes as recipes

    monkeypatch.setattr(recipes, "bf16_is_fast", lambda device: fast)
    out = tmp_path / "run"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings), "--steps", "2",
                 "--mixed-precision", "auto", "--no-progress"]) == 0
    assert ckpt.read_config(out)["train"]["mixed_precision"] == ("bf16" if fast else "no")
