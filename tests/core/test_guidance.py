"""Class-conditional oracles and classifier-free guidance (dgm.core.guidance) against exact references: the
class's own mixture, Bayes' rule, autograd of exact tilted marginals, and moments of the tilted target by
numerical integration. Each test names the bug it catches."""

import math

import pytest
import torch

import dgm.core.guidance as guidance
from dgm.core.guidance import (
    class_denoiser,
    class_eps_star,
    class_log_posterior,
    class_mixture,
    guided_eps_star,
    num_classes,
    sample_tilted,
    tilted_log_prob_unnormalized,
)
from dgm.core.oracle import GaussianMixture
from dgm.core.parameterization import guided_denoiser
from dgm.core.schedule import Schedule

LABELS = torch.tensor([0, 1, 1])  # the fixture mixture: class 0 = component 0, class 1 = components 1 and 2


def _mixture_1d() -> GaussianMixture:
    """A 1-D mixture whose class 1 has two components, with overlapping classes (so tilting matters)."""
    return GaussianMixture([0.3, 0.3, 0.4], [[-1.0], [0.2], [1.0]], [[[0.16]], [[0.09]], [[0.25]]])


def _draws(gm, s, i, n, gen):
    """Exact draws of p_i (G1) for a level i or per-row levels (n,)."""
    a = s.alpha_bar_at(torch.as_tensor(i, dtype=torch.float64))
    a = a[:, None] if a.ndim else a
    return a * gm.sample(n, gen) + torch.sqrt(1 - a**2) * torch.randn(n, gm.D, generator=gen, dtype=torch.float64)


def test_class_mixture_keeps_the_class_components_renormalized(mixture):
    """Catches the wrong components kept (class c vs not c) or weights left unnormalized."""
    part = class_mixture(mixture, LABELS, 1)
    assert torch.allclose(part.weights, torch.tensor([0.5, 0.3], dtype=torch.float64) / 0.8)
    assert torch.equal(part.means, mixture.means[1:]) and torch.equal(part.covs, mixture.covs[1:])
    assert torch.equal(class_mixture(mixture, LABELS, 0).means, mixture.means[:1])


def test_class_log_prob_is_bayes_rule(mixture, gen):
    """log p(x|c) = log p(x) + log p(c|x) - log p(c), and the tilted log density in both of its forms.
    Catches class_log_posterior normalized over the wrong set, and a tilted density with w and 1 + w swapped."""
    x = mixture.sample(500, gen) * 1.5
    post = class_log_posterior(mixture, LABELS, x)
    assert torch.allclose(post.exp().sum(1), torch.ones(500, dtype=torch.float64))
    log_pc = torch.log(torch.tensor([0.2, 0.8], dtype=torch.float64))
    for c in (0, 1):
        bayes = mixture.log_prob(x) + post[:, c] - log_pc[c]
        assert torch.allclose(class_mixture(mixture, LABELS, c).log_prob(x), bayes, atol=1e-12)
        w = 2.5
        tilted = class_mixture(mixture, LABELS, c).log_prob(x) + w * (post[:, c] - log_pc[c])
        assert torch.allclose(tilted_log_prob_unnormalized(mixture, LABELS, c, w, x), tilted, atol=1e-11)


@pytest.mark.parametrize("level", [1, 10, 300, 999, 250.5, "per-row"])
def test_class_eps_star_is_the_eps_star_of_the_class_alone(mixture, gen, level):
    """eps*(x, i, c) from the full mixture's responsibilities restricted to c equals the eps* of p(x | c) (G3).
    Catches responsibilities not restricted to the class (that gives the unconditional eps*), restricted but
    not renormalized, or the class's membership inverted; on per-row levels, rows mixed up between levels."""
    s, n = Schedule.cosine(1000), 400
    lv = torch.randint(1, s.L + 1, (n,), generator=gen) if level == "per-row" else level
    x = _draws(mixture, s, lv, n, gen)
    cond = torch.randint(0, 2, (n,), generator=gen)
    eps = class_eps_star(mixture, LABELS, s, x, lv, cond)
    for c in (0, 1):
        rows = cond == c
        ref = class_mixture(mixture, LABELS, c).eps_star(s, x[rows], lv if level != "per-row" else lv[rows])
        assert torch.allclose(eps[rows], ref, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(eps, mixture.eps_star(s, x, lv), atol=1e-3)  # conditioning matters here


def test_class_eps_star_of_a_single_class_is_eps_star(mixture, gen):
    """With every component in one class, the conditional eps* is the unconditional one (G3). Catches a
    missing sigma_bar_i factor or a wrong Sigma_i, independently of class_mixture."""
    s = Schedule.linear(1000)
    x = _draws(mixture, s, 200, 300, gen)
    cond = torch.zeros(300, dtype=torch.long)
    assert torch.allclose(class_eps_star(mixture, [0, 0, 0], s, x, 200, cond), mixture.eps_star(s, x, 200),
                          atol=1e-12)


def test_guided_eps_star_w0_and_w1(mixture, gen):
    """w = 0 is the conditional eps*; w = 1 is 2 eps*_c - eps*. Catches an inverted w ((1 - w) or w and 1 + w
    swapped) and a dropped unconditional term."""
    s = Schedule.linear(1000)
    x, cond = _draws(mixture, s, 300, 200, gen), torch.randint(0, 2, (200,), generator=gen)
    eps_c, eps = class_eps_star(mixture, LABELS, s, x, 300, cond), mixture.eps_star(s, x, 300)
    assert torch.equal(guided_eps_star(mixture, LABELS, s, x, 300, cond, 0), eps_c)
    assert torch.allclose(guided_eps_star(mixture, LABELS, s, x, 300, cond, 1.0), 2 * eps_c - eps, atol=1e-12)


@pytest.mark.parametrize("level", [5, 400])
def test_guided_eps_star_is_the_score_of_the_tilted_marginal(mixture, gen, level):
    """CFG's eps at level i is -sigma_bar_i grad log [p_i(x|c)^(1+w) p_i(x)^(-w)] (Ho & Salimans eq. 6 via
    G2-G3), by autograd of the exact level-i densities. Catches a sign error or w misplaced."""
    s, w, c = Schedule.linear(1000), 2.0, 1
    x = _draws(mixture, s, level, 200, gen).requires_grad_(True)
    log_tilted = ((1 + w) * class_mixture(mixture, LABELS, c).at_level(s, level).log_prob(x)
                  - w * mixture.at_level(s, level).log_prob(x))
    (grad,) = torch.autograd.grad(log_tilted.sum(), x)
    cond = torch.full((200,), c)
    eps = guided_eps_star(mixture, LABELS, s, x.detach(), level, cond, w)
    assert torch.allclose(eps, -s.sigma_bar[level].item() * grad, atol=1e-10)


def test_class_denoiser_routes_the_null_class(mixture, gen):
    """Rows labelled with the null class C = 2 (and every row when cond is None) get the unconditional eps*.
    Catches the null class taken as C - 1 (then class 1 would be unconditional) or rows routed to the other."""
    s = Schedule.linear(100)
    eps_fn = class_denoiser(mixture, LABELS, s)
    x, i = _draws(mixture, s, 50, 300, gen), torch.full((300,), 50)
    cond = torch.randint(0, 3, (300,), generator=gen)
    out = eps_fn(x, i, cond=cond)
    null = cond == num_classes(LABELS)
    assert num_classes(LABELS) == 2 and null.any()
    assert torch.allclose(out[null], mixture.eps_star(s, x[null], 50), atol=1e-12)
    assert torch.allclose(out[~null], class_eps_star(mixture, LABELS, s, x[~null], 50, cond[~null]), atol=1e-12)
    assert torch.allclose(eps_fn(x, i), mixture.eps_star(s, x, 50), atol=1e-12)


def test_guided_denoiser_over_class_denoiser_is_guided_eps_star(mixture, gen):
    """dgm's guided_denoiser (one batched call of conditional and null rows) over the exact denoiser is the
    exact CFG denoiser. Catches class_denoiser mixing up rows when a call holds both kinds, at per-row levels."""
    s, w = Schedule.cosine(200), 1.5
    lv = torch.randint(1, s.L + 1, (300,), generator=gen)
    x, cond = _draws(mixture, s, lv, 300, gen), torch.randint(0, 2, (300,), generator=gen)
    out = guided_denoiser(class_denoiser(mixture, LABELS, s), w, null_class=2)(x, lv, cond=cond)
    assert torch.allclose(out, guided_eps_star(mixture, LABELS, s, x, lv, cond, w), atol=1e-12)


def _tilted_moments(gm, labels, c, w):
    """Mean, variance and fourth central moment of the normalized tilted density by numerical integration."""
    grid = torch.linspace(-8, 8, 32_001, dtype=torch.float64)
    log_p = tilted_log_prob_unnormalized(gm, labels, c, w, grid[:, None])
    p = torch.exp(log_p - log_p.max())
    p = p / torch.trapezoid(p, grid)
    mean = torch.trapezoid(p * grid, grid)
    var = torch.trapezoid(p * (grid - mean) ** 2, grid)
    return mean.item(), var.item(), torch.trapezoid(p * (grid - mean) ** 4, grid).item()


@pytest.mark.parametrize("c", [0, 1])
def test_sample_tilted_moments_match_numerical_integration(gen, c):
    """Mean and variance of 100,000 rejection draws against the tilted density p(x|c)^3 p(x)^-2 integrated on a
    grid, |z| < 4. Catches acceptance with p(c|x)^(1+w) (the w = 3 target: mean off by 6 SE for class 1, 11 for
    class 0), the proposal from the other class, or acceptance 1 (draws of p(x|c))."""
    gm, labels, w, n = _mixture_1d(), torch.tensor([0, 1, 1]), 2.0, 100_000
    x = sample_tilted(gm, labels, c, w, n, gen)[:, 0]
    mean, var, m4 = _tilted_moments(gm, labels, c, w)
    assert abs(x.mean().item() - mean) / math.sqrt(var / n) < 4
    assert abs(x.var().item() - var) / math.sqrt((m4 - var**2) / n) < 4


def test_sample_tilted_at_w0_is_the_class_mixture():
    """At w = 0 every proposal is accepted: the draws are class_mixture's, draw for draw under one seed.
    Catches an acceptance test that rejects at w = 0 (p(c|x)^(1+w))."""
    gm, labels = _mixture_1d(), [0, 1, 1]
    x = sample_tilted(gm, labels, 1, 0.0, 1000, torch.Generator().manual_seed(3))
    assert torch.equal(x, class_mixture(gm, labels, 1).sample(1000, torch.Generator().manual_seed(3)))
    again = sample_tilted(gm, labels, 1, 2.0, 500, torch.Generator().manual_seed(4))
    assert again.shape == (500, 1)
    assert torch.equal(again, sample_tilted(gm, labels, 1, 2.0, 500, torch.Generator().manual_seed(4)))


def test_sample_tilted_gives_up_on_a_vanishing_acceptance_rate(monkeypatch):
    """Identical components give p(c|x) = 1/2 everywhere, so the acceptance rate is 2^-60: one clear error
    instead of a loop that never ends."""
    monkeypatch.setattr(guidance, "MAX_PROPOSALS", 1000)
    gm = GaussianMixture([0.5, 0.5], [[0.0], [0.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(ValueError, match=r"acceptance rate .* too low for w=60.0 and class 0"):
        sample_tilted(gm, [0, 1], 0, 60.0, 5, torch.Generator().manual_seed(0))


def _bad_calls(gm):
    s, x = Schedule.linear(1000), torch.zeros(4, 2, dtype=torch.float64)
    cond = torch.zeros(4, dtype=torch.long)
    return [
        (lambda: class_mixture(gm, [0, 1], 0), r"one class per component \(3\), got \[0, 1\]"),
        (lambda: class_mixture(gm, [0, -1, 1], 0), r"must be >= 0, got \[0, -1, 1\]"),
        (lambda: class_mixture(gm, [0.0, 1.0, 1.0], 0), "1-D integer sequence"),
        (lambda: class_mixture(gm, torch.tensor([True, False, False]), 0), "1-D integer sequence"),
        (lambda: class_mixture(gm, [0, 2, 2], 1), r"class 1 has no components \(component_labels \[0, 2, 2\]\)"),
        (lambda: class_mixture(gm, LABELS, 5), "class 5 has no components"),
        (lambda: guided_eps_star(gm, LABELS, s, x, 10, cond, -1.0), "w must be a finite number >= 0, got -1.0"),
        (lambda: guided_eps_star(gm, LABELS, s, x, 10, cond, float("nan")), "got nan"),
        (lambda: sample_tilted(gm, LABELS, 0, float("inf"), 10), "got inf"),
        (lambda: sample_tilted(gm, LABELS, 0, -0.5, 10), "got -0.5"),
        (lambda: sample_tilted(gm, LABELS, 0, 1.0, 0), "n must be a positive integer, got 0"),
        (lambda: sample_tilted(gm, LABELS, 2, 1.0, 10), "class 2 has no components"),
        (lambda: tilted_log_prob_unnormalized(gm, LABELS, 0, -2, x), "got -2"),
        (lambda: class_eps_star(gm, LABELS, s, x, 10, cond[:3]), r"shape \(4,\), got torch.int64 \(3,\)"),
        (lambda: class_eps_star(gm, LABELS, s, x, 10, cond.double()), "integer classes"),
        (lambda: class_eps_star(gm, LABELS, s, x, 10, cond + 2), "class 2 has no components"),
        (lambda: class_eps_star(gm, LABELS, s, x[:, :1], 10, cond), r"x_i must have shape \(N, 2\)"),
        (lambda: class_eps_star(gm, LABELS, s, x, 1001, cond), r"level 1001 is outside 0..1000"),
        (lambda: class_eps_star(gm, LABELS, s, x, torch.tensor([1, 2]), cond), r"levels must have shape \(4,\)"),
        (lambda: class_denoiser(gm, LABELS, s)(x, torch.full((4,), 3), cond=cond[:2]), r"cond must have shape"),
    ]


@pytest.mark.parametrize("k", range(20))
def test_bad_input_is_one_clear_error(mixture, k):
    """Each bad argument raises one line that names the bad value (not a torch error deep inside)."""
    call, match = _bad_calls(mixture)[k]
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
