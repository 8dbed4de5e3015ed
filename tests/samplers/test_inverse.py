"""``sample_inverse`` against exact references built on the GaussianMixture oracle.

Three kinds: the exact posterior (``GaussianMixture.condition``) where a method is exact in a limit; for a
Gaussian prior, the exact law of a method's own draws on its own grid, since every step is then linear-Gaussian
(``model_prior``: the target of the SMC; ``replacement_moments``: the draws of replace and RePaint, biased as
they are); and draw-by-draw equality (PiGDM with a standard normal prior is ancestral sampling with the exact
posterior's eps*). Moments are compared within Z standard errors of the sample (mean: sqrt(C_kk / n);
covariance entry: sqrt((C_kl^2 + C_kk C_ll) / n)). DPS has no exact reference: its test checks what is
certain (the known part reaches y). Each test names the bugs it catches; the z-scores quoted were computed
for the mutated formulas.
"""

import math

import pytest
import torch

import dgm
from dgm.samplers.grid import level_grid
from dgm.samplers.inverse import INVERSE_METHODS, INVERSE_OPTIONS, sample_inverse
from dgm.samplers.inverse_replacement import repaint_jump_points, repaint_nfe

S = dgm.Schedule.linear(1000)
Z = 5.0  # standard errors allowed for a sampler that should be exact
F64 = torch.float64


def oracle(gm, s=S):
    return lambda x, i: gm.eps_star(s, x, i)


def rows(y, n):
    """y (d_y,) repeated as n rows (n, d_y)."""
    return torch.as_tensor(y, dtype=F64).expand(n, -1).clone()


def moments(gm):
    """Mean (D,) and covariance (D, D) of a mixture: sum_k w_k m_k and sum_k w_k (S_k + m_k m_k^T) - mean mean^T."""
    mean = gm.weights @ gm.means
    second = torch.einsum("k,kde->de", gm.weights, gm.covs + gm.means[:, :, None] * gm.means[:, None, :])
    return mean, second - torch.outer(mean, mean)


def assert_moments(x, mean, cov, z=Z):
    """x's sample mean and covariance within z standard errors of (mean, cov)."""
    n = x.shape[0]
    var = torch.diagonal(cov)
    mean_err = (x.mean(0) - mean).abs()
    assert (mean_err <= z * torch.sqrt(var / n)).all(), (x.mean(0), mean)
    cov_se = torch.sqrt((cov**2 + torch.outer(var, var)) / n)
    cov_err = (torch.cov(x.T) - cov).abs()
    assert (cov_err <= z * cov_se).all(), (torch.cov(x.T), cov)


# ----------------------------------------------------------------------------------- the oracle path


def test_exact_posterior_denoiser_reproduces_the_posterior(mixture):
    """The benchmark's reference path: ancestral sampling with gm.condition(...).eps_star draws the exact
    posterior. Catches a condition() whose weights or means are off (e.g. responsibilities not renormalized)."""
    A = torch.tensor([[1.0, 0.6]], dtype=F64)
    post = mixture.condition(torch.tensor([0.4], dtype=F64), A, 0.1)
    x = dgm.sample(oracle(post), S, (3000, 2), steps=250, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean, cov = moments(post)
    assert_moments(x, mean, cov)


# ----------------------------------------------------------------------------------- exact methods


def _prob_first_positive(gm):
    """P(x[0] > 0) under a mixture: sum_k w_k Phi(m_k0 / sqrt(S_k00))."""
    return (gm.weights * torch.special.ndtr(gm.means[:, 0] / gm.covs[:, 0, 0].sqrt())).sum().item()


def test_smc_error_shrinks_with_particles(mixture):
    """The posterior mass of x[0] > 0 given the second coordinate (prior 0.70): exact 0.089 for y = 0.2 and
    0.9997 for y = -1, rows alternating. One particle (the twisted proposal alone) is far off; 32 particles
    land close. Catches ignored or sign-flipped weights (no gain from particles) and ancestors drawn across
    rows (the two groups would blend)."""
    mask = torch.tensor([False, True])
    ys = torch.tensor([0.2, -1.0], dtype=F64)
    y = ys.repeat(300)[:, None]
    exact = [_prob_first_positive(mixture.condition(v[None], mask[None].to(F64), 0.05)) for v in ys]
    errors = {}
    for particles in (1, 32):
        x = sample_inverse(oracle(mixture), S, y, mask, 0.05, method="smc", steps=40, particles=particles,
                           generator=torch.Generator().manual_seed(0))
        frac = [(x[k::2, 0] > 0).double().mean().item() for k in range(2)]
        errors[particles] = max(abs(f - e) for f, e in zip(frac, exact, strict=True))
    # 300 draws per group: standard error <= 0.029; seeds 0-4 gave errors of 0.64-0.68 (1) and 0.03-0.06 (32)
    assert errors[32] < 0.09 and errors[32] < errors[1] / 4, errors


def gaussian_eps(mean, cov, s=S):
    """eps*(x, i) = sigma_bar_i (alpha_bar_i^2 S + sigma_bar_i^2 I)^{-1} (x - alpha_bar_i m) for x0 ~ N(m, S) (G3),
    in closed form (cheaper than the oracle for the many particle rows)."""

    def eps_fn(x, i):
        level = int(i[0])
        a, sigma = s.alpha_bar[level].item(), s.sigma_bar[level].item()
        Sigma = a**2 * cov + sigma**2 * torch.eye(cov.shape[0], dtype=F64)
        return sigma * torch.linalg.solve(Sigma, (x - a * mean).T).T

    return eps_fn


def model_prior(mean, cov, s, grid, row_space):
    """The x0 law of the respaced chain over ``grid`` driven by the exact eps* of N(mean, cov): Gaussian, since
    every step is linear-Gaussian. x0_hat = P x + q with P = (I - sigma^2 Sigma^{-1}) / alpha_bar and
    q = sigma^2 Sigma^{-1} mean (E31, G3); a step i -> j is x_j = c0 x0_hat + ci x_i + sqrt(v) z (E24 for the
    respaced pair); the last step returns x0_hat plus, as SMC's model, N(0, v_dec) on A's row space, v_dec the
    variance of the grid's last noisy step. Returns (mean, covariance) of x0, starting from x_L ~ N(0, I)."""
    D = mean.shape[0]
    eye = torch.eye(D, dtype=F64)
    mu, C = torch.zeros(D, dtype=F64), eye.clone()

    def step_var(i, j):
        a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
        return (1 - a_i**2 / a_j**2) * (1 - a_j**2) / (1 - a_i**2)

    for i, j in zip(grid[:-1], grid[1:], strict=True):
        a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
        inv = torch.linalg.inv(a_i**2 * cov + (1 - a_i**2) * eye)
        P, q = (eye - (1 - a_i**2) * inv) / a_i, (1 - a_i**2) * inv @ mean
        if j == 0:
            return P @ mu + q, P @ C @ P.T + step_var(grid[-3], grid[-2]) * row_space
        fwd = 1 - a_i**2 / a_j**2
        c0, ci = a_j * fwd / (1 - a_i**2), (a_i / a_j) * (1 - a_j**2) / (1 - a_i**2)
        M = c0 * P + ci * eye
        mu, C = M @ mu + c0 * q, M @ C @ M.T + step_var(i, j) * eye
    raise AssertionError("a grid ends at level 0")


@pytest.mark.parametrize("steps", [20, 5])
def test_smc_targets_the_posterior_of_its_chain(steps):
    """For a Gaussian prior the chain's own x0 law is Gaussian (``model_prior``) and the SMC's target, that
    law times the likelihood, is known exactly, whatever the grid: 20 or 5 levels here, far from the data's
    posterior (z = 10 and 20 against it). A correlated 3-D prior, a general 2 x 3 matrix, sigma_y = 0.2, 32
    particles. Catches errors in the weights (one particle: z = 7 on 20 levels), the proposals, the twist,
    the rotation of y (diag(1/s) U^T, noise sigma_y / s) or the last step's v_dec (z = 18 on 5 levels)."""
    mean = torch.tensor([0.2, -0.1, 0.3], dtype=F64)
    cov = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]], dtype=F64)
    A = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]], dtype=F64)
    y0 = torch.tensor([0.5, -0.4], dtype=F64)
    grid = level_grid(S, steps, "uniform")
    m0, C0 = model_prior(mean, cov, S, grid, torch.linalg.pinv(A) @ A)
    target = dgm.GaussianMixture([1.0], m0[None], C0[None]).condition(y0, A, 0.2)
    x = sample_inverse(gaussian_eps(mean, cov), S, rows(y0, 2000), A, 0.2, method="smc", steps=steps, particles=32,
                       generator=torch.Generator().manual_seed(0))
    assert_moments(x, *moments(target))


def test_pigdm_is_the_exact_guided_sampler_for_a_standard_normal_prior():
    """x0 ~ N(0, I): Cov(x0 | x_i) = sigma_bar_i^2 I = r_i^2 I and x0_hat is linear, so eq. 7 is the exact
    likelihood score and PiGDM is ancestral sampling with the exact posterior's eps* (gm.condition): the same
    draws under the same seed. Catches any change to r_i^2 (e.g. sigma^2 / alpha^2), sigma_y in the Gram
    matrix, the Jacobian, the sign of the guidance or its conversion to eps."""
    prior = dgm.GaussianMixture([1.0], torch.zeros(1, 3, dtype=F64), torch.eye(3, dtype=F64)[None])
    A = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]], dtype=F64)
    y0 = torch.tensor([0.7, -0.4], dtype=F64)
    x = sample_inverse(oracle(prior), S, rows(y0, 200), A, 0.1, method="pigdm", steps=50,
                       generator=torch.Generator().manual_seed(0))
    ref = dgm.sample(oracle(prior.condition(y0, A, 0.1)), S, (200, 3), grid=level_grid(S, 50, "uniform"),
                     generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.allclose(x, ref, atol=1e-8), (x - ref).abs().max()
    x = sample_inverse(oracle(prior), S, rows(y0, 200), A, 0.0, method="pigdm", steps=50,
                       generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x @ A.T, rows(y0, 200), atol=1e-10)  # sigma_y = 0: the last x0_hat solves A x = y


# ----------------------------------------------------------------------------------- biased methods


@pytest.mark.parametrize("method", ["replace", "repaint", "smc"])
def test_known_part_equals_y_when_noiseless(method, mixture):
    """replace and repaint set the row-space component to A^+ y at level 0; smc with sigma_y = 0 conditions on
    it exactly. Catches a missing last replacement or A^T in place of A^+ (A below is not orthonormal)."""
    mask = torch.tensor([True, False])
    y = torch.tensor([[0.3], [-1.2], [1.0]], dtype=F64)
    kw = {"repaint": dict(jump=2, resamplings=2), "smc": dict(particles=4)}.get(method, {})
    x = sample_inverse(oracle(mixture), S, y, mask, 0.0, method=method, steps=10, generator=torch.Generator(),
                       **kw)
    assert torch.equal(x[:, :1], y)
    A = torch.tensor([[2.0, 0.5]], dtype=F64)
    x = sample_inverse(oracle(mixture), S, y, A, 0.0, method=method, steps=10, generator=torch.Generator(), **kw)
    assert torch.allclose(x @ A.T, y, atol=1e-9)


def replacement_moments(mean, cov, s, grid, A, y, jump_points=(), jump=1, resamplings=1):
    """Mean and covariance of the draws of replace/RePaint for x0 ~ N(mean, cov), walked exactly: every map is
    linear-Gaussian. An ancestral step x_j = (c0 P + ci I) x + c0 q + sqrt(v) z (x0_hat = P x + q as in
    ``model_prior``; the last step returns x0_hat), the replacement x <- (I - Pi) x + alpha_bar_j A^+ y +
    sigma_bar_j Pi z (Pi = A^+ A), a RePaint jump lo -> hi x <- r x + sqrt(1 - r^2) z, r = alpha_bar_hi /
    alpha_bar_lo, at ``jump_points`` (grid positions), ``resamplings - 1`` times each."""
    D = mean.shape[0]
    eye = torch.eye(D, dtype=F64)
    pinv = torch.linalg.pinv(A)
    Pi = pinv @ A
    mu, C = torch.zeros(D, dtype=F64), eye.clone()

    def affine(M, b, noise):
        return M @ mu + b, M @ C @ M.T + noise

    left = {k: resamplings - 1 for k in jump_points}
    k, n = 0, len(grid) - 1
    while k < n:
        i, j = grid[k], grid[k + 1]
        a_i, a_j = s.alpha_bar[i].item(), s.alpha_bar[j].item()
        inv = torch.linalg.inv(a_i**2 * cov + (1 - a_i**2) * eye)
        P, q = (eye - (1 - a_i**2) * inv) / a_i, (1 - a_i**2) * inv @ mean
        fwd = 1 - a_i**2 / a_j**2
        c0, ci = a_j * fwd / (1 - a_i**2), (a_i / a_j) * (1 - a_j**2) / (1 - a_i**2)
        v = fwd * (1 - a_j**2) / (1 - a_i**2)
        mu, C = affine(c0 * P + ci * eye, c0 * q, v * eye)
        mu, C = affine(eye - Pi, a_j * pinv @ y, (1 - a_j**2) * Pi)
        k += 1
        if left.get(k, 0) > 0:
            left[k] -= 1
            r = s.alpha_bar[grid[k - jump]].item() / s.alpha_bar[grid[k]].item()
            mu, C = affine(r * eye, torch.zeros(D, dtype=F64), (1 - r**2) * eye)
            k -= jump
    return mu, C


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_replacement_draws_have_the_moments_of_their_algorithm(method):
    """For a Gaussian prior replace and RePaint are chains of linear-Gaussian maps, so their draws' law is known
    exactly (``replacement_moments``), biased as it is. A correlated 3-D prior, a 1 x 3 matrix that is not a
    unit vector, 6 levels (coarse, so that each level matters), jumps of 1 with 3 resamplings. Catches, with
    z-scores computed for this setup (replace / repaint), the known part not noised (10 / 8.5), y not scaled
    by alpha_bar_j (17 / 10) and a jump without its forward noise (15)."""
    mean = torch.tensor([0.2, -0.1, 0.3], dtype=F64)
    cov = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.1], [0.0, 0.1, 0.8]], dtype=F64)
    A, y0 = torch.tensor([[1.5, 0.5, 0.0]], dtype=F64), torch.tensor([2.0], dtype=F64)
    grid, kw = level_grid(S, 6, "uniform"), dict(jump=1, resamplings=3) if method == "repaint" else {}
    x = sample_inverse(gaussian_eps(mean, cov), S, rows(y0, 2000), A, 0.0, method=method, steps=6,
                       generator=torch.Generator().manual_seed(0), **kw)
    points = repaint_jump_points(6, 1) if method == "repaint" else ()
    mu, C = replacement_moments(mean, cov, S, grid, A, y0, points, **kw)
    assert_moments(x, mu, C)


def test_repaint_reduces_the_replacement_bias():
    """x ~ N(0, [[1, 0.9], [0.9, 1]]) with x[0] = 1 known: E[x[1] | y] = 0.9. Plain replacement leaves the
    unknown part under-conditioned (about 0.62); RePaint's resampling moves it most of the way (about 0.82).
    Catches jumps that never happen, go the wrong way or skip the forward noise."""
    prior = dgm.GaussianMixture([1.0], torch.zeros(1, 2, dtype=F64), torch.tensor([[[1.0, 0.9], [0.9, 1.0]]]))
    mask, y = torch.tensor([True, False]), rows([1.0], 1000)
    err = {}
    for method, kw in [("replace", {}), ("repaint", dict(jump=5, resamplings=5))]:
        x = sample_inverse(oracle(prior), S, y, mask, 0.0, method=method, steps=100,
                           generator=torch.Generator().manual_seed(0), **kw)
        err[method] = abs(x[:, 1].mean().item() - 0.9)
    # standard error of each mean: sqrt(0.3 / 1000) = 0.017
    assert err["replace"] > 0.2 and err["repaint"] < err["replace"] / 2, err


def test_dps_pulls_the_known_part_to_y():
    """DPS's gradient step drives A x0_hat toward y: with x0 ~ N(0, I), sigma_y = 0.05, step 0.02 and all
    1,000 levels the known coordinate ends within the step size of y (unguided draws miss it by 1.3 on
    average, measured). Catches a flipped sign, a residual norm taken over the whole batch (each example's
    step would shrink by sqrt(B)), or a missing last correction."""
    y = torch.tensor([1.5, -1.0], dtype=F64).repeat(100)[:, None]
    x = sample_inverse(gaussian_eps(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)), S, y,
                       torch.tensor([False, True]), 0.05, method="dps", step=0.02,
                       generator=torch.Generator().manual_seed(0))
    assert (x[:, 1:] - y).abs().mean() < 0.02


# ----------------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("method", INVERSE_METHODS)
def test_mask_equals_its_selection_matrix(method):
    """A mask and the selection matrix of its known entries give the same draws under the same seed (the
    SVD of a selection matrix is a signed permutation, and every method draws its noise in data space).
    Catches a mask whose values are taken out of order or scattered back to the wrong entries."""
    prior = dgm.GaussianMixture([0.4, 0.6], torch.tensor([[0.5, -0.5, 0.2, 0.0], [-0.4, 0.3, 0.0, 0.6]]),
                                (0.3 * torch.eye(4) + 0.1)[None].repeat(2, 1, 1))
    mask = torch.tensor([False, True, True, False])
    matrix = torch.eye(4, dtype=F64)[mask].flip(0)  # rows in reverse order: y reversed too
    y = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.1]], dtype=F64)
    kw = {"repaint": dict(jump=2, resamplings=2), "dps": dict(step=0.1), "smc": dict(particles=4)}.get(method, {})
    a = sample_inverse(oracle(prior), S, y, mask, 0.1, method=method, steps=8,
                       generator=torch.Generator().manual_seed(3), **kw)
    b = sample_inverse(oracle(prior), S, y.flip(1), matrix, 0.1, method=method, steps=8,
                       generator=torch.Generator().manual_seed(3), **kw)
    assert torch.allclose(a, b, atol=1e-8), (a, b)


class Counter:
    """Counts the denoiser's calls and the rows it sees, independently of sample_inverse's own count."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, x, i):
        assert i.dtype == torch.long and i.shape == (x.shape[0],)
        self.calls += 1
        self.rows += x.shape[0]
        return self.fn(x, i)


@pytest.mark.parametrize("method, options, nfe, calls", [
    ("replace", {}, 20, 20),
    ("repaint", dict(jump=5, resamplings=3), 50, 50),  # jump points 15, 10, 5: 20 + 3 * 2 * 5
    ("dps", dict(step=0.1), 20, 20),
    ("pigdm", {}, 20, 20),
    ("smc", dict(particles=6), 120, 20),
])
def test_nfe_accounting(method, options, nfe, calls, mixture):
    """nfe = denoiser evaluations per draw, calls = batched calls, vjp = backward passes per draw. Catches
    SMC counted per call instead of per particle, RePaint's jumps left out or off by one."""
    fn = Counter(oracle(mixture))
    y = rows([0.3], 5)
    _, stats = sample_inverse(fn, S, y, torch.tensor([True, False]), 0.1, method=method, steps=20,
                              generator=torch.Generator().manual_seed(0), return_stats=True, **options)
    assert (stats["nfe"], stats["calls"]) == (nfe, calls) == (fn.rows // 5, fn.calls)
    assert stats["vjp"] == (20 if method in ("dps", "pigdm") else 0) and stats["steps"] == 20
    if method == "smc":  # the final weighted cloud of each row
        assert stats["particles"].shape == (5, 6, 2) and stats["log_weights"].shape == (5, 6)
        assert torch.allclose(stats["log_weights"].logsumexp(1), torch.zeros(5, dtype=F64))


def test_repaint_schedule_of_the_paper():
    """T = 250, j = 10, r = 10 (Lugmayr et al. 2022): 24 jump points, 250 + 9 * 10 * 24 = 2,410 calls."""
    assert len(repaint_jump_points(250, 10)) == 24 and repaint_nfe(250, 10, 10) == 2410
    assert repaint_jump_points(20, 5) == [15, 10, 5] and repaint_nfe(20, 5, 1) == 20


@pytest.mark.parametrize("method", INVERSE_METHODS)
def test_image_shapes_and_labels(method):
    """A (C, H, W) mask: the denoiser sees (N, C, H, W) and labels (N,) (repeated per SMC particle), the draws
    come back as (B, C, H, W), finite, deterministic under a seed."""
    mask = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5
    seen = []

    def eps_fn(x, i, cond=None):  # eps* of x0 ~ N(0, I): sigma_bar_i x
        assert x.ndim == 4 and x.shape[1:] == (2, 4, 4) and cond.shape == (x.shape[0],)
        seen.append(cond)
        return S.sigma_bar[i].to(x.dtype)[:, None, None, None] * x

    y = torch.randn(3, int(mask.sum()), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2])
    kw = {"repaint": dict(jump=2, resamplings=2), "smc": dict(particles=2)}.get(method, {})
    draws = [sample_inverse(eps_fn, S, y, mask, 0.1, method=method, steps=6, cond=labels,
                            generator=torch.Generator().manual_seed(2), **kw) for _ in range(2)]
    assert draws[0].shape == (3, 2, 4, 4) and draws[0].dtype == torch.float32
    assert torch.isfinite(draws[0]).all() and torch.equal(draws[0], draws[1])
    per_row = kw.get("particles", 1)
    assert torch.equal(seen[0], labels.repeat_interleave(per_row))


@pytest.mark.parametrize("kwargs, message", [
    (dict(y=torch.zeros(3)), r"y must be 2-D \(B, d_y\), got shape \(3,\)"),
    (dict(y=torch.zeros(3, 2)), r"y has d_y = 2 columns, but there are 1 known entries"),
    (dict(y=torch.full((3, 1), math.nan)), r"y holds NaN"),
    (dict(sigma_y=-0.1), r"sigma_y must be a finite number >= 0, got -0.1"),
    (dict(sigma_y=math.nan), r"sigma_y must be a finite number >= 0, got nan"),
    (dict(method="ddrm"), r"unknown method 'ddrm'; choose one of replace, repaint, dps, pigdm, smc"),
    (dict(method="dps", jump=3), r"unknown option\(s\) jump for method 'dps'; its options: step"),
    (dict(method="replace", particles=3), r"unknown option\(s\) particles for method 'replace'; its options: none"),
    (dict(method="smc", particles=0), r"particles must be an integer >= 1, got 0"),
    (dict(method="repaint", jump=2.5), r"jump must be an integer >= 1, got 2.5"),
    (dict(method="repaint", resamplings=0), r"resamplings must be an integer >= 1, got 0"),
    (dict(method="dps", step=-1.0), r"step must be a finite number >= 0, got -1.0"),
    (dict(method="pigdm", eta=math.inf), r"eta must be a finite number >= 0, got inf"),
    (dict(steps=0), r"steps must be an integer in 1..1000, got 0"),
    (dict(spacing="cubic"), r"unknown spacing 'cubic'"),
    (dict(A=torch.zeros(2, dtype=torch.bool)), r"the mask of shape \(2,\) marks no known values"),
    (dict(A=torch.ones(1, 2, 2)), r"A must be a \(d_y, D\) matrix or a boolean mask, got shape \(1, 2, 2\)"),
    (dict(A=torch.tensor([[1.0, 2.0], [2.0, 4.0]]), y=torch.zeros(3, 2)), r"has rank 1 < d_y = 2"),
    (dict(cond=torch.zeros(2, dtype=torch.long)), r"cond must hold one label per row of y, shape \(3,\)"),
])
def test_bad_input(kwargs, message, mixture):
    """Every bad input raises one ValueError whose message names the bad value."""
    args = dict(y=torch.zeros(3, 1), A=torch.tensor([True, False]), sigma_y=0.1, method="replace")
    args.update(kwargs)
    y, A, sigma_y = args.pop("y"), args.pop("A"), args.pop("sigma_y")
    with pytest.raises(ValueError, match=message):
        sample_inverse(oracle(mixture), S, y, A, sigma_y, steps=args.pop("steps", 4), **args)


def test_every_method_has_documented_defaults():
    assert set(INVERSE_OPTIONS) == set(INVERSE_METHODS)
    assert INVERSE_OPTIONS["repaint"] == {"jump": 10, "resamplings": 10} and INVERSE_OPTIONS["dps"] == {"step": 1.0}


def test_pigdm_divergence_is_an_error_not_nan():
    """A denoiser with a large Jacobian (as a trained net has at high noise, benchmarks/RESULTS.md) makes PiGDM's
    guidance step unstable: the draws blow up, and that is a one-line error naming the level, never NaN output.
    Catches the finiteness check removed."""
    s = dgm.Schedule.linear(100)
    A = torch.tensor([[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"pigdm diverged at level \d+"):
        sample_inverse(lambda x, i: 200.0 * x, s, torch.tensor([[0.5]]), A, 0.05, method="pigdm", steps=50,
                       generator=torch.Generator().manual_seed(0))
