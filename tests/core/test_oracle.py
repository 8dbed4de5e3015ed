import math

import pytest
import torch

import dgm


def test_log_prob_normalizes_on_a_grid(mixture):
    g = torch.linspace(-4, 4, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    mass = mixture.log_prob(pts).exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_eps_star_is_conditional_mean_of_noise(mixture, gen):
    """G3 against a Monte Carlo regression: E[eps | x_i] is the L2 minimizer, so it beats a perturbed one."""
    s = dgm.Schedule.linear(1000)
    x0 = mixture.sample(50_000, gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    for i in (10, 200, 700):
        x_i = dgm.q_sample(s, x0, i, eps)
        e_star = mixture.eps_star(s, x_i, i)
        loss = ((e_star - eps) ** 2).sum(1).mean().item()
        worse = ((e_star * 1.05 - eps) ** 2).sum(1).mean().item()
        assert loss < worse
        # G6: the minimum equals SNR_i E tr Cov(x0 | x_i), up to Monte Carlo error
        floor = (s.snr[i] * mixture.posterior_cov_trace(s, x_i, i)).mean().item()
        se = ((e_star - eps) ** 2).sum(1).std().item() / math.sqrt(x0.shape[0])
        assert loss == pytest.approx(floor, abs=5 * se)


def test_x0_star_score_and_level_consistency(mixture):
    s = dgm.Schedule.cosine(100)
    x = torch.randn(7, 2, dtype=torch.float64)
    i = 40
    e = mixture.eps_star(s, x, i)
    assert torch.allclose(mixture.x0_star(s, x, i), dgm.eps_to_x0(s, x, e, i), atol=1e-10)
    # score is the gradient of log p_i (G1, G2)
    xg = x.clone().requires_grad_(True)
    mixture.at_level(s, i).log_prob(xg).sum().backward()
    assert torch.allclose(mixture.score(s, x, i), xg.grad, atol=1e-8)


def test_batched_levels_match_single(mixture):
    s = dgm.Schedule.linear(50)
    x = torch.randn(5, 2, dtype=torch.float64)
    i = torch.tensor([1, 7, 7, 50, 20])
    batched = mixture.eps_star(s, x, i)
    for b in range(5):
        assert torch.allclose(batched[b], mixture.eps_star(s, x[b : b + 1], int(i[b]))[0])


def test_float32_is_stable_far_from_modes(mixture):
    s = dgm.Schedule.linear(1000)
    x = torch.tensor([[60.0, -80.0], [0.0, 0.0]], dtype=torch.float32)
    for i in (1, 2, 500, 1000):
        out = mixture.eps_star(s, x, i)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_reverse_kernel_is_a_density_and_matches_bayes(mixture, gen):
    """G7: p(x_{i-1}|x_i) integrates to 1 and equals p(x_i|x_{i-1}) p_{i-1}(x_{i-1}) / p_i(x_i) (E21)."""
    s = dgm.Schedule.linear(10)
    i = 4
    x_i = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    g = torch.linspace(-4, 4, 301, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    logp = mixture.reverse_log_prob(s, pts, x_i.expand(pts.shape[0], 2), i)
    assert logp.exp().sum().item() * (g[1] - g[0]).item() ** 2 == pytest.approx(1.0, abs=1e-3)
    fwd = -0.5 * ((x_i - s.alpha[i] * pts) ** 2).sum(1) / s.beta[i] ** 2 - math.log(2 * math.pi * s.beta[i] ** 2)
    bayes = fwd + mixture.at_level(s, i - 1).log_prob(pts) - mixture.at_level(s, i).log_prob(x_i)
    assert torch.allclose(logp, bayes, atol=1e-8)


def test_affine(mixture, gen):
    t = mixture.affine(torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0]))
    x = mixture.sample(4, gen)
    y = x * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])
    assert torch.allclose(t.log_prob(y), mixture.log_prob(x) - math.log(2.0 * 0.5))


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]]), "sum to 1"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "not positive definite"),
        (([1.0], [[0.0, 0.0]], [[[1.0]]]), "shape mismatch"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
    ],
)
def test_bad_mixtures(args, match):
    with pytest.raises(ValueError, match=match):
        dgm.GaussianMixture(*args)


def test_condition_matches_bayes_rule_on_a_grid(mixture):
    """condition(y, A, sigma_y) against prior x likelihood normalized numerically on a 2-D grid.

    Catches a dropped evidence term in the weights (wrong mixing), a sign error in the mean update, or a
    missing sigma_y^2 in C_k."""
    A, y, sigma_y = torch.tensor([[0.8, -0.6]], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64), 0.5
    post = mixture.condition(y, A, sigma_y)
    g = torch.linspace(-6, 6, 601, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_lik = -0.5 * ((y - X @ A.T) ** 2).sum(-1) / sigma_y**2
    log_un = mixture.log_prob(X) + log_lik
    cell = (g[1] - g[0]) ** 2
    bayes = log_un - torch.logsumexp(log_un, 0) - torch.log(cell)
    mask = bayes > -12
    assert torch.allclose(post.log_prob(X)[mask], bayes[mask], atol=2e-3)
    # the posterior mean from the grid against the mixture's means
    p = (bayes.exp() * cell)[:, None]
    assert torch.allclose((p * X).sum(0), post.weights @ post.means, atol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (dict(y=torch.zeros(2), A=torch.zeros(1, 2), sigma_y=0.1), "expected y"),
    (dict(y=torch.zeros(1), A=torch.zeros(1, 3), sigma_y=0.1), "expected y"),
    (dict(y=torch.zeros(1), A=torch.zeros(1, 2), sigma_y=0.0), "sigma_y must be positive"),
])
def test_condition_rejects_bad_input(mixture, bad, match):
    with pytest.raises(ValueError, match=match):
        mixture.condition(**bad)


def test_condition_drops_components_whose_weight_underflows():
    """A component 1e3 standard deviations from y gets posterior weight exp(-5e5) = 0 in float64: it is
    dropped, not an error (catches the constructor's positive-weight check reached with a zero weight)."""
    gm = dgm.GaussianMixture([0.5, 0.5], [[0.0], [1000.0]], [[[1.0]], [[1.0]]])
    post = gm.condition(torch.tensor([0.0]), torch.tensor([[1.0]]), 0.1)
    assert post.K == 1 and torch.allclose(post.means, torch.tensor([[0.0]], dtype=torch.float64))
