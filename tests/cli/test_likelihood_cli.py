"""``dgm train --variance`` and ``dgm eval --likelihood/--variance/--rtol/--atol/--divergence``: the stored Gamma of an
analytic variance (DIR/analytic_variance.json), the probability-flow ODE NLL, and their one-line errors."""

import json
import math
import shutil
from pathlib import Path

import pytest

import dgm.evaluation.likelihood as likelihood
from dgm.cli import main
from dgm.runs.analytic import ANALYTIC

TINY_TOML = ('[model]\nlevels = 50\n[model.net]\nhidden = 16\ndepth = 1\nemb_dim = 8\n'
             '[train]\nbatch_size = 32\nlog_every = 5\n')
FEW = 256  # training examples behind Gamma in the fast tests (the default, 4096, takes seconds)


def _eval(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["eval", *map(str, argv)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture
def few_gamma_examples(monkeypatch):
    monkeypatch.setitem(likelihood.GAMMA_EXAMPLES, "vector", FEW)


@pytest.fixture(scope="module")
def analytic_run(tmp_path_factory, settings) -> Path:
    """A tiny DDPM trained 3 steps on gmm2d with --variance analytic (Gamma from FEW examples)."""
    out = tmp_path_factory.mktemp("runs") / "analytic"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(likelihood.GAMMA_EXAMPLES, "vector", FEW)
        assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings),
                     "--steps", "3", "--no-progress", "--variance", "analytic"]) == 0
    return out


@pytest.fixture
def run_copy(analytic_run, tmp_path) -> Path:
    shutil.copytree(analytic_run, tmp_path / "run")
    return tmp_path / "run"


def test_train_with_an_analytic_variance_stores_gamma(analytic_run):
    """Training with --variance analytic writes DIR/analytic_variance.json for the final step: L + 1 Gammas (entry 0
    unused) with their standard errors, the number of examples; config.json records the variance. Catches the
    estimate skipped, a file stamped with another step (it would then be ignored as stale), and a config without
    "variance" (the run would evaluate as fixed_small)."""
    record = json.loads((analytic_run / ANALYTIC).read_text())
    assert record["step"] == 3 and record["examples"] == FEW
    assert len(record["gamma"]) == len(record["gamma_se"]) == 51
    assert all(0 < g < 1.5 for g in record["gamma"][1:]) and all(se > 0 for se in record["gamma_se"][1:])
    config = json.loads((analytic_run / "config.json").read_text())
    assert config["model"]["variance"] == "analytic"


def test_eval_uses_the_stored_gamma(capsys, analytic_run, few_gamma_examples):
    """``dgm eval`` of an analytic run reports variance "analytic" and the bound's standard errors, reading the
    stored Gamma (no gamma_seconds: nothing re-estimated), and --variance fixed_large overrides it. Catches
    load_model not attaching the stored Gamma (eval would estimate it again) and --variance ignored."""
    result = _eval(capsys, analytic_run, "--max-examples", 20)
    assert result["variance"] == "analytic" and "gamma_seconds" not in result
    assert result["nll_nats_se"] > 0 and result["bits_per_dim_se"] > 0
    assert "ode_nll_nats" not in result  # --likelihood defaults to the bound
    large = _eval(capsys, analytic_run, "--max-examples", 20, "--variance", "fixed_large")
    assert large["variance"] == "fixed_large" and large["nll_nats"] != result["nll_nats"]


@pytest.mark.parametrize("spoil", ["step", "garbage"])
def test_a_stale_or_unreadable_gamma_is_ignored_and_re_estimated(capsys, run_copy, few_gamma_examples, spoil):
    """An analytic_variance.json whose step differs from the weights' (left by an older checkpoint), or that is not
    JSON, is ignored: eval estimates Gamma again (gamma_examples, gamma_seconds in the output) and leaves the file
    alone. Catches load_analytic without the step check (a stale Gamma silently used) and an unreadable file
    raising instead of being re-estimated."""
    path = run_copy / ANALYTIC
    if spoil == "step":
        record = json.loads(path.read_text())
        record["step"] = 2
        path.write_text(json.dumps(record))
    else:
        path.write_text("{not json")
    before = path.read_bytes()
    result = _eval(capsys, run_copy, "--max-examples", 20)
    assert result["variance"] == "analytic"
    assert result["gamma_examples"] == FEW and result["gamma_seconds"] >= 0
    assert math.isfinite(result["nll_nats"])
    assert path.read_bytes() == before


def test_eval_with_a_learned_variance_of_a_fixed_run_is_a_one_lineone_line_error(analytic_run, one_line_error):
    """``dgm eval --variance learned`` on a run trained without a learned variance: one line, exit 2, saying so.
    Catches a silent fallback to another variance."""
    line = one_line_error(["eval", str(analytic_run), "--variance", "learned", "--max-examples", "5"])
    assert "learned variance" in line


@pytest.mark.parametrize("flags, words", [
    (["--rtol", "2"], "'2'"),
    (["--atol", "0"], "'0'"),
    (["--rtol", "tight"], "'tight'"),
    (["--likelihood", "elbo"], "'elbo'"),
    (["--divergence", "trace"], "'trace'"),
    (["--variance", "huge"], "'huge'"),
])
def test_bad_likelihood_flags_are_one_line_argparse_errors(capsys, tmp_path, flags, words, one_line_error):
    """Tolerances outside (0, 1) and unknown likelihoods, divergences and variances stop at argparse with one line
    quoting the value, before any run directory is read. Catches --rtol typed as a plain float (2 reaches scipy)."""
    line = one_line_error(["eval", str(tmp_path / "nowhere"), *flags])
    assert words in line


def test_train_with_a_learned_variance(capsys, tmp_path, settings):
    """--variance learned doubles the MLP's output in the saved config (complete_config after the flags), trains
    with the hybrid loss and evaluates with variance "learned". Catches the output size completed before the flag
    is applied (a D-output net, which fails at the first step)."""
    out = tmp_path / "learned"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings),
                 "--steps", "2", "--no-progress", "--variance", "learned"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["variance"] == "learned" and config["model"]["net"]["out_dim"] == 4
    assert not (out / ANALYTIC).exists()
    result = _eval(capsys, out, "--max-examples", 10)
    assert result["variance"] == "learned" and math.isfinite(result["nll_nats"])


@pytest.mark.slow
def test_analytic_train_and_eval_all_end_to_end(capsys, tmp_path, settings):
    """The documented workflow with default settings: train 30 steps with --variance analytic (Gamma from the default
    number of examples), then ``dgm eval --likelihood all``: the bound with its standard error and variance
    "analytic" from the stored Gamma, beside the probability-flow ODE NLL (exact divergence in 2-D), which is an
    exact NLL of the model and so not below the data's own NLL beyond its standard error; --likelihood ode gives
    the ODE keys only. Catches the ODE keys missing under "all", an ODE NLL without the scaling's log-determinant
    (data space), and --rtol/--atol not reaching the solver (ode_nfe unchanged)."""
    out = tmp_path / "run"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings),
                 "--steps", "30", "--no-progress", "--variance", "analytic"]) == 0
    record = json.loads((out / ANALYTIC).read_text())
    assert record["step"] == 30 and record["examples"] == likelihood.GAMMA_EXAMPLES["vector"]
    result = _eval(capsys, out, "--likelihood", "all", "--max-examples", 50)
    assert result["variance"] == "analytic" and "gamma_seconds" not in result
    assert {"nll_nats", "nll_nats_se", "bits_per_dim", "ode_nll_nats", "ode_nll_nats_se", "ode_bits_per_dim",
            "ode_hutchinson_se", "ode_nfe", "data_nll_nats"} <= result.keys()
    assert result["ode_divergence"] == "exact" and result["ode_hutchinson_se"] == 0
    assert result["ode_nll_nats"] > result["data_nll_nats"] - 4 * result["ode_nll_nats_se"]
    assert result["ode_bits_per_dim"] == pytest.approx(result["ode_nll_nats"] / (2 * math.log(2)))
    ode = _eval(capsys, out, "--likelihood", "ode", "--max-examples", 50, "--rtol", "1e-3", "--atol", "1e-3")
    assert "nll_nats" not in ode and ode["ode_nfe"] < result["ode_nfe"]
    assert ode["ode_nll_nats"] == pytest.approx(result["ode_nll_nats"], abs=0.05)
