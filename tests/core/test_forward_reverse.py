import math

import pytest
import torch

import dgm


def test_forward_steps_compose_to_perturbation_kernel(gen):
    """E18 applied i times has the law of E19: mean alpha_bar_i x0, variance 1 - alpha_bar_i^2."""
    s = dgm.Schedule.linear(50)
    n, i = 200_000, 37
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    x = x0
    for k in range(1, i + 1):
        x = dgm.q_step(s, x, k, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    mean_se = math.sqrt(1 / n)
    assert x.mean().item() == pytest.approx(s.alpha_bar[i].item() * 0.7, abs=5 * mean_se)
    assert x.var().item() == pytest.approx(1 - s.alpha_bar[i].item() ** 2, abs=5 * math.sqrt(2 / n))


def test_posterior_is_bayes_rule():
    """p(x_{i-1}|x_i,x0) from E24/E25 equals forward kernel x perturbation kernel / perturbation kernel (E22)."""
    s = dgm.Schedule.cosine(20)
    x0, x_i, i = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-0.4]], dtype=torch.float64), 7
    mean, var = dgm.posterior(s, x_i, x0, i)
    grid = torch.linspace(-4, 4, 20001, dtype=torch.float64)
    a_prev = s.alpha_bar[i - 1]
    log_num = -0.5 * (x_i.item() - s.alpha[i] * grid) ** 2 / s.beta[i] ** 2
    log_num = log_num - 0.5 * (grid - a_prev * x0.item()) ** 2 / (1 - a_prev**2)
    p = torch.softmax(log_num, 0)
    m = (p * grid).sum()
    v = (p * (grid - m) ** 2).sum()
    assert mean.item() == pytest.approx(m.item(), abs=1e-6)
    assert var.item() == pytest.approx(v.item(), rel=1e-4)


def test_posterior_level_one_is_point_mass():
    s = dgm.Schedule.linear(10)
    x0, x1 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    mean, var = dgm.posterior(s, x1, x0, 1)
    assert torch.allclose(mean, x0) and var.item() == 0.0


def test_batched_levels_broadcast(gen):
    s = dgm.Schedule.linear(100)
    x0 = torch.randn(4, 1, 3, 3, generator=gen)
    eps = torch.randn(4, 1, 3, 3, generator=gen)
    i = torch.tensor([1, 5, 50, 100])
    xi = dgm.q_sample(s, x0, i, eps)
    for b in range(4):
        assert torch.allclose(xi[b], dgm.q_sample(s, x0[b : b + 1], int(i[b]), eps[b : b + 1])[0])


def test_prior_kl_closed_form():
    s = dgm.Schedule.linear(1000)
    x0 = torch.zeros(1, 3, dtype=torch.float64)
    a2 = s.alpha_bar[-1].item() ** 2
    expected = 0.5 * (-3 * a2 - 3 * math.log(1 - a2))
    assert dgm.prior_kl(s, x0).item() == pytest.approx(expected)


def test_bad_inputs():
    s = dgm.Schedule.linear(10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="11"):
        dgm.q_sample(s, x, 11, x)
    with pytest.raises(ValueError, match="0 is outside"):
        dgm.q_sample(s, x, 0, x)
    with pytest.raises(ValueError, match="shape mismatch"):
        dgm.q_sample(s, x, 3, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape"):
        dgm.q_sample(s, x, torch.tensor([1, 2, 3]), x)
