import math

import pytest
import torch

import dgm


def test_linear_matches_equation_sheet():
    s = dgm.Schedule.linear(1000)
    assert s.L == 1000 and s.beta.shape == (1001,) and s.beta.dtype == torch.float64
    assert s.beta[0] == 0 and s.alpha[0] == 1 and s.alpha_bar[0] == 1 and s.sigma_bar[0] == 0
    assert s.beta[1].item() == pytest.approx(0.01)  # E42
    assert s.beta[-1].item() == pytest.approx(math.sqrt(0.02))
    assert s.alpha_bar[-1].item() == pytest.approx(6.35e-3, rel=2e-3)  # E20
    assert s.sigma2[1].item() == 0.0 and s.sigma2[2].item() == pytest.approx(5.45e-5, rel=2e-3)  # E25


def test_identities():
    s = dgm.Schedule.cosine(200)
    assert torch.allclose(s.alpha**2 + s.beta**2, torch.ones_like(s.alpha))
    assert torch.allclose(s.alpha_bar**2 + s.sigma_bar**2, torch.ones_like(s.alpha))
    assert torch.allclose(s.alpha_bar[1:], torch.cumprod(s.alpha[1:], 0))
    # E25 second form: 1/sigma2 = 1/(1 - alpha_bar_{i-1}^2) + alpha_i^2/beta_i^2 for i >= 2
    i = torch.arange(2, s.L + 1)
    inv = 1 / (1 - s.alpha_bar[i - 1] ** 2) + s.alpha[i] ** 2 / s.beta[i] ** 2
    assert torch.allclose(1 / s.sigma2[i], inv)


def test_cosine_matches_equation_sheet():
    s = dgm.Schedule.cosine(1000)
    assert s.beta[1].item() == pytest.approx(0.0064, abs=1e-4)  # E43
    assert s.alpha_bar[-1].item() == pytest.approx(4.9e-5, rel=0.05)
    assert (s.beta[1:-1] ** 2 < 0.999).all()


def test_diffusers_translation_round_trip():
    s = dgm.Schedule.linear(100)
    d = s.to_diffusers()
    assert torch.allclose(d["alphas_cumprod"], s.alpha_bar[1:] ** 2)
    back = dgm.Schedule.from_diffusers(d["betas"])
    assert torch.allclose(back.beta, s.beta)


@pytest.mark.parametrize("bad", [[0.1, 1.0], [0.0, 0.2], [-0.1], [float("nan")]])
def test_bad_beta_names_value(bad):
    with pytest.raises(ValueError, match="beta"):
        dgm.Schedule(bad)


def test_bad_levels():
    with pytest.raises(ValueError, match="L"):
        dgm.Schedule.linear(0)
    with pytest.raises(ValueError, match="unknown schedule"):
        dgm.Schedule.named("quadratic")
    s = dgm.Schedule.linear(10)
    with pytest.raises(ValueError, match="11"):
        s.check_level(torch.tensor([3, 11]))
