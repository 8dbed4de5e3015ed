"""``dgm.evaluation.ode.ode_nll``: the probability-flow ODE likelihood (F3) with the exact eps* of a mixture is
the mixture's own -log p(x); Hutchinson's estimate agrees within its reported error; arguments are checked."""

import math

import pytest
import torch

import dgm
from dgm.evaluation.ode import ode_nll

N = 200


@pytest.fixture(scope="module")
def oracle(mixture):
    """The 2-D test mixture, its exact eps* under a cosine schedule (L = 1000), and N data points."""
    s = dgm.Schedule.cosine(1000)
    x = mixture.sample(N, torch.Generator().manual_seed(0))
    return mixture, s, x, (lambda x_t, t: mixture.eps_star(s, x_t, t))


@pytest.fixture(scope="module")
def exact_run(oracle):
    gm, s, x, eps_fn = oracle
    return ode_nll(eps_fn, s, x, return_stats=True)


def test_exact_ode_nll_of_eps_star_is_the_true_nll(oracle, exact_run):
    """With eps* of the mixture the ODE's -log p(x) is the mixture's -log p(x): within 2e-3 nats on average
    over 200 points and 2e-2 at worst (measured: ~2e-6 and ~1e-3 at the default start level and tolerances).
    Catches the divergence integral's sign (error ~ 2x the integral, several nats), a dropped prior term
    (-log N(x_L; 0, I), ~3 nats), a dropped D/2 log 2 pi, the drift's sign (the state runs away), and a rate or
    sigma_bar from the wrong level."""
    gm, s, x, _ = oracle
    nll, stats = exact_run
    assert nll.shape == (N,) and nll.dtype == torch.float64
    err = nll - (-gm.log_prob(x))
    assert abs(err.mean().item()) < 2e-3, err.mean().item()
    assert err.abs().max().item() < 2e-2, err.abs().max().item()
    assert stats["hutchinson_se"] == 0.0


def test_return_stats(oracle, exact_run):
    """return_stats gives (nll, {"nfe", "t_start", "hutchinson_se", "se"}) with se the standard error of the batch
    mean; without it only the tensor. Catches a renamed or missing key, an se over probes instead of examples,
    and an nfe that is not counted."""
    nll, stats = exact_run
    assert set(stats) == {"nfe", "t_start", "hutchinson_se", "se"}
    assert isinstance(stats["nfe"], int) and stats["nfe"] > 10
    assert stats["t_start"] == pytest.approx(1e-3)
    assert stats["se"] == pytest.approx(nll.std().item() / math.sqrt(N), rel=1e-12)
    gm, s, x, eps_fn = oracle
    plain = ode_nll(eps_fn, s, x[:3], rtol=1e-3, atol=1e-3)
    assert isinstance(plain, torch.Tensor) and plain.shape == (3,)


def test_hutchinson_agrees_with_exact_within_its_error(oracle, exact_run):
    """Hutchinson's estimate (two Rademacher probes per example, fixed along the path) on the same points is within
    4 of its own reported hutchinson_se of the exact run's mean (paired), the se is positive, the solver takes
    about as many steps as the exact run, and a seeded generator makes it reproducible. Catches probes redrawn at
    every evaluation (the solver then sees a noisy field: measured 33,734 drift evaluations against 266), a vjp not
    multiplied by the probe again (v^T J instead of v^T J v), and an se scaled down (0.1 x fails)."""
    gm, s, x, eps_fn = oracle
    exact, exact_stats = exact_run
    nll, stats = ode_nll(eps_fn, s, x, divergence="hutchinson", generator=torch.Generator().manual_seed(3),
                         return_stats=True)
    se = stats["hutchinson_se"]
    assert 0 < se < 0.2
    diff = (nll - exact).mean().item()
    assert abs(diff) < 4 * se, (diff, se)
    assert stats["nfe"] < 2 * exact_stats["nfe"], (stats["nfe"], exact_stats["nfe"])
    loose = {"divergence": "hutchinson", "rtol": 1e-3, "atol": 1e-3}
    again = ode_nll(eps_fn, s, x[:5], generator=torch.Generator().manual_seed(3), **loose)
    twice = ode_nll(eps_fn, s, x[:5], generator=torch.Generator().manual_seed(3), **loose)
    torch.testing.assert_close(again, twice, rtol=0, atol=0)


def test_image_shaped_input_and_a_cond_argument(gen):
    """(B, C, H, W) data go through the ODE flattened per example, and ``cond`` reaches the denoiser. With data
    N(0, I) and eps* = sigma_bar x (the exact noise prediction), -log p(x) = |x|^2 / 2 + D/2 log 2 pi. Catches a
    D that is a channel count instead of C*H*W, and a cond that is dropped."""
    s = dgm.Schedule.cosine(1000)
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=gen)
    seen = []

    def eps_fn(x_t, t, cond=None):
        seen.append(cond)
        return s.sigma_bar_at(t).reshape(-1, 1, 1, 1) * x_t

    labels = torch.tensor([0, 1, 2, 3])
    nll = ode_nll(eps_fn, s, x, cond=labels)
    want = 0.5 * (x**2).sum((1, 2, 3)) + 0.5 * 4 * math.log(2 * math.pi)
    torch.testing.assert_close(nll, want, rtol=0, atol=1e-3)
    assert all(c is labels for c in seen)


@pytest.mark.parametrize("kwargs, value", [
    ({"divergence": "trace"}, "'trace'"),
    ({"rtol": 0.0}, "0.0"),
    ({"rtol": 1.5}, "1.5"),
    ({"atol": -1e-5}, "-1e-05"),
    ({"atol": "small"}, "'small'"),
    ({"t_start": 0.0}, "0.0"),
    ({"t_start": 1000.0}, "1000.0"),
])
def test_bad_arguments_raise_with_the_value(oracle, kwargs, value):
    """A bad divergence, tolerance or start level raises ValueError that quotes the bad value (STYLE.md), before
    any solve. Catches a dispatch without an else (an unknown divergence silently exact) and unchecked tolerances
    handed to scipy."""
    gm, s, x, eps_fn = oracle
    with pytest.raises(ValueError) as err:
        ode_nll(eps_fn, s, x[:2], **kwargs)
    assert value in str(err.value)
