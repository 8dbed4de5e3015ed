"""A NaN in an evaluation is an error, never a silent number: the bound, the ODE NLL, the exact NLL, every
quality metric and the JSON of `dgm eval` name what is not finite, in one line."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from dgm.evaluation import likelihood
from dgm.evaluation.likelihood import data_nll, evaluate_nll, evaluate_ode
from dgm.evaluation.metrics import quality_metrics


class Broken(torch.nn.Module):
    """A model whose per-example NLL is the example's first coordinate (so a NaN in the data makes it NaN)."""

    kind = "broken"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def evaluate(self, x0, *, generator=None, **kw):
        return {"nll_nats": x0[:, 0].double(), "elbo_nats": x0[:, 0].double() + 1}


def _data(bad=()):
    x = torch.ones(10, 2)
    for i in bad:
        x[i, 0] = math.nan
    return x


def test_a_nan_bound_names_the_key_and_the_examples():
    """Catches the per-example check removed (the message no longer counts the examples) and both checks
    removed (nll_nats comes back NaN)."""
    with pytest.raises(FloatingPointError) as info:
        evaluate_nll(Broken(), _data(bad=(3, 7)), batch_size=4)
    assert str(info.value).startswith("the model's nll_nats is not finite for 2 of 10 examples (example 3: nan)")


def test_one_example_has_an_infinite_standard_error_but_a_finite_value():
    """The standard error of one example is infinite by definition: not an error (the JSON shows null)."""
    result = evaluate_nll(Broken(), _data()[:1])
    assert result["nll_nats"] == 1.0 and result["nll_nats_se"] == math.inf


def test_a_nan_ode_nll_is_an_error(monkeypatch):
    """Catches evaluate_ode returning a NaN mean (its solver's own check bypassed)."""
    from dgm.evaluation import ode

    class Flow(Broken):
        schedule, denoiser = None, None

        def continuous_view(self, x, generator):
            return x, 0.0

        def labels(self, labels, n, device=None):
            return None

    def ode_nll(eps_fn, s, y, **kw):
        return y[:, 0].double(), {"hutchinson_se": 0.0, "nfe": 1, "t_start": 0.0}

    monkeypatch.setattr(ode, "ode_nll", ode_nll)
    with pytest.raises(FloatingPointError, match=r"the model's ODE NLL is not finite for 1 of 10 examples"):
        evaluate_ode(Flow(), _data(bad=(5,)))


def test_an_exact_nll_of_minus_infinity_is_an_error(mixture):
    """A point where the known density underflows to 0 (log p = -inf): an error, not an infinite NLL."""
    scaling = SimpleNamespace(bins=None, log_abs_det=lambda: 0.0)
    with pytest.raises(FloatingPointError, match="the data's exact NLL is not finite for 1 of 2 examples"):
        data_nll(mixture, torch.tensor([[0.0, 0.0], [1e200, 0.0]], dtype=torch.float64), scaling)


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_nan_samples_are_named_before_any_metric(kind, gen):
    """Catches NaN samples reaching the feature net or the distances (an anonymous error, or NaN metrics)."""
    shape = (2,) if kind == "vector" else (1, 8, 8)
    real, fake = torch.rand(40, *shape, generator=gen), torch.rand(20, *shape, generator=gen)
    fake[[4, 9]] = math.nan
    with pytest.raises(FloatingPointError, match="2 of the 20 generated samples hold a NaN or an infinity"):
        quality_metrics(real, fake, kind=kind, names=["fd"], generator=gen)


@pytest.mark.parametrize("name", ["fd", "kid", "mmd"])
def test_a_metric_that_overflows_is_an_error(name, gen):
    """Features of size 1e200 overflow float64 in FD's covariances (eigh fails), KID's cubic kernel and MMD's
    bandwidth: each is one named error. Catches a NaN metric returned, or LinAlgError escaping as a traceback."""
    real = torch.randn(60, 3, generator=gen, dtype=torch.float64) * 1e200
    fake = torch.randn(30, 3, generator=gen, dtype=torch.float64) * 1e200
    with pytest.raises(FloatingPointError, match=f"the metric {name}"):
        quality_metrics(real, fake, kind="vector", names=[name], generator=gen)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny DDPM run on gmm2d (2 steps)."""
    from dgm.cli import main

    root = tmp_path_factory.mktemp("nonfinite")
    settings = root / "tiny.toml"
    settings.write_text('[model]\nlevels = 10\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n'
                        '[train]\nbatch_size = 16\n')
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(root / "run"), "--config", str(settings),
                 "--steps", "2", "--no-progress"]) == 0
    return root / "run"


def test_dgm_eval_prints_valid_json_or_one_line(run, monkeypatch, capsys, one_line_error):
    """A NaN anywhere in the result is `dgm: error: KEY is nan ...` (exit 2); an infinite standard error is
    printed as null, so stdout is strict JSON. Catches json.dumps writing NaN or Infinity."""
    from dgm.cli import main

    answer = {"nll_nats": 1.0, "nll_nats_se": math.inf, "fd": math.nan}
    monkeypatch.setattr(likelihood, "evaluate_run", lambda *a, **k: dict(answer))
    assert one_line_error(["eval", str(run)]) == "dgm: error: fd is nan: not a finite number"
    del answer["fd"]
    assert main(["eval", str(run)]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    assert json.loads(capsys.readouterr().out, parse_constant=refuse) == {"nll_nats": 1.0, "nll_nats_se": None}


def test_dgm_eval_of_a_run_with_nan_weights_is_one_line(run, tmp_path, one_line_error):
    """End to end: a run whose EMA weights were turned NaN. Catches every check removed (NaN printed, exit 0)."""
    from safetensors.torch import load_file, save_file

    from dgm.runs import checkpoint as ckpt

    broken = shutil.copytree(run, tmp_path / "run")
    path = broken / ckpt.WEIGHTS
    tensors = {k: (v * math.nan if k.startswith("ema.") else v) for k, v in load_file(path).items()}
    save_file(tensors, path, metadata=ckpt.load_weights(path)[1])
    line = one_line_error(["eval", str(broken), "--max-examples", "20"])
    assert line.startswith("dgm: error: the model's nll_nats is not finite for 20 of 20 examples")
