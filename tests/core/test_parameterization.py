import pytest
import torch

import dgm
from dgm.core.forward import at_level


@pytest.fixture
def setup(gen):
    s = dgm.Schedule.cosine(100)
    x0 = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    eps = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    i = torch.randint(1, 101, (8,), generator=gen)
    return s, x0, eps, i, dgm.q_sample(s, x0, i, eps)


def test_round_trips(setup):
    s, x0, eps, i, x_i = setup
    assert torch.allclose(dgm.eps_to_x0(s, x_i, eps, i), x0, atol=1e-9)
    assert torch.allclose(dgm.x0_to_eps(s, x_i, x0, i), eps, atol=1e-9)
    v = dgm.eps_to_v(s, x_i, eps, i)
    v_true = at_level(s.alpha_bar, i, x0) * eps - at_level(s.sigma_bar, i, x0) * x0  # E32
    assert torch.allclose(v, v_true, atol=1e-9)
    assert torch.allclose(dgm.v_to_eps(s, x_i, v, i), eps, atol=1e-9)
    assert torch.allclose(dgm.v_to_x0(s, x_i, v, i), x0, atol=1e-9)


def test_eps_mean_equals_posterior_mean(setup):
    """E29: the posterior mean written with the true eps equals A_i x0 + B_i x_i."""
    s, x0, eps, i, x_i = setup
    mean, _ = dgm.posterior(s, x_i, x0, i)
    assert torch.allclose(dgm.eps_to_mean(s, x_i, eps, i), mean, atol=1e-9)


def test_mean_error_constant_C(setup):
    """E30: |mu_phi - mu|^2 = C_i |eps_phi - eps|^2 with C_i = beta^4 / (alpha^2 (1 - alpha_bar^2))."""
    s, x0, eps, i, x_i = setup
    eps_hat = eps + 0.1
    d_mu = ((dgm.eps_to_mean(s, x_i, eps_hat, i) - dgm.eps_to_mean(s, x_i, eps, i)) ** 2).sum(1)
    C = s.beta[i] ** 4 / (s.alpha[i] ** 2 * (1 - s.alpha_bar[i] ** 2))
    assert torch.allclose(d_mu, C * (0.1**2 * 5), rtol=1e-9)


def test_score(mixture):
    s = dgm.Schedule.linear(100)
    x = torch.randn(6, 2, dtype=torch.float64)
    eps = mixture.eps_star(s, x, 30)
    assert torch.allclose(dgm.eps_to_score(s, x, eps, 30), mixture.score(s, x, 30), atol=1e-10)


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, i):
        return self.value(x, i)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_denoiser_returns_eps(setup, prediction):
    s, x0, eps, i, x_i = setup
    target = {"eps": eps, "x0": x0, "v": dgm.eps_to_v(s, x_i, eps, i)}[prediction]
    d = dgm.Denoiser(_Const(lambda x, lv: target), s, prediction)
    assert torch.allclose(d(x_i, i), eps, atol=1e-9)
    assert torch.allclose(d.x0_hat(x_i, i), x0, atol=1e-9)


def test_denoiser_rejects_unknown_prediction():
    with pytest.raises(ValueError, match="'score'"):
        dgm.Denoiser(torch.nn.Identity(), dgm.Schedule.linear(10), "score")


def _label_denoiser(x, i, cond=None):
    """A toy denoiser whose output depends on x, the level and the label in distinguishable ways."""
    c = torch.zeros(x.shape[0]) if cond is None else cond.to(x.dtype)
    return torch.sin(x) * (1 + c[:, None]) + 0.01 * i.to(x.dtype)[:, None] * c[:, None] ** 2


def test_guided_denoiser_is_cfg_of_two_calls():
    """eps_w = (1 + w) eps(x, c) - w eps(x, null) against two separate calls. Catches an inverted w
    (w eps_c - (1 + w) eps_u), the null rows mixed up with the conditional ones, or the wrong null label."""
    from dgm.core.parameterization import guided_denoiser

    x, i = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 7, 1, 9, 4])
    cond, null, w = torch.tensor([0, 2, 1, 2, 0]), 3, 1.5
    got = guided_denoiser(_label_denoiser, w, null)(x, i, cond=cond)
    want = (1 + w) * _label_denoiser(x, i, cond) - w * _label_denoiser(x, i, torch.full_like(cond, null))
    assert torch.allclose(got, want, atol=1e-6)
    # rows already at the null class are the unconditional model for any w
    nulls = torch.full_like(cond, null)
    assert torch.allclose(guided_denoiser(_label_denoiser, 4.0, null)(x, i, cond=nulls), _label_denoiser(x, i, nulls))
    # w = 0 is the conditional model itself (no second call)
    assert guided_denoiser(_label_denoiser, 0.0, null) is _label_denoiser


@pytest.mark.parametrize("w", [-0.5, float("nan"), float("inf")])
def test_guided_denoiser_rejects_bad_guidance(w):
    from dgm.core.parameterization import guided_denoiser

    with pytest.raises(ValueError, match="guidance must be"):
        guided_denoiser(_label_denoiser, w, 3)


def test_guided_denoiser_needs_labels():
    from dgm.core.parameterization import guided_denoiser

    with pytest.raises(ValueError, match="needs class labels"):
        guided_denoiser(_label_denoiser, 1.0, 3)(torch.zeros(2, 3), torch.tensor([1, 2]))
