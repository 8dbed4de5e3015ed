"""dgm.evaluation.distances against closed forms: Frechet, KID, MMD, precision/recall, Wasserstein,
cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.evaluation import distances as M


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_spd(d: int, g: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T + (0 if rank else 0.1) * torch.eye(d, dtype=torch.float64)


# ----------------------------------------------------------------------------------- Frechet


@pytest.mark.parametrize("rank", [None, 3])
def test_sqrtm_psd_squares_back(rank):
    a = random_spd(8, gen(1), rank)
    r = M.sqrtm_psd(a)
    torch.testing.assert_close(r, r.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(r @ r, a, rtol=0, atol=1e-9)
    assert torch.linalg.eigvalsh(r).min() > -1e-7


def test_trace_sqrt_product_commuting_and_general():
    a, b = torch.rand(5, dtype=torch.float64) + 0.1, torch.rand(5, dtype=torch.float64) + 0.1
    expected = (a * b).sqrt().sum()
    torch.testing.assert_close(M.trace_sqrt_product(a.diag(), b.diag()), expected, rtol=1e-12, atol=0)
    s1, s2 = random_spd(6, gen(2)), random_spd(6, gen(3))  # eigenvalues of s1 s2 are real and >= 0
    lam = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0)
    torch.testing.assert_close(M.trace_sqrt_product(s1, s2), lam.sqrt().sum(), rtol=1e-10, atol=0)


def test_fd_of_identical_gaussians_and_samples_is_zero():
    s = random_spd(10, gen(4))
    mu = torch.randn(10, generator=gen(5), dtype=torch.float64)
    assert M.frechet_distance_gaussians(mu, s, mu, s) < 1e-9
    x = torch.randn(500, 10, generator=gen(6))
    assert M.frechet_distance(x, x) < 1e-9


def test_fd_matches_closed_form_for_diagonal_gaussians():
    # FD(N(mu1, diag(s1^2)), N(mu2, diag(s2^2))) = |mu1 - mu2|^2 + sum (s1 - s2)^2
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 1.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([2.0, 1.0, 0.5])
    closed = float((mu1 - mu2).square().sum() + (s1 - s2).square().sum())  # 4.25 + 2 = 6.25
    assert M.frechet_distance_gaussians(mu1, s1.square().diag(), mu2, s2.square().diag()) == pytest.approx(
        closed, rel=1e-12)
    n = 200_000
    a = mu1 + s1 * torch.randn(n, 3, generator=gen(7), dtype=torch.float64)
    b = mu2 + s2 * torch.randn(n, 3, generator=gen(8), dtype=torch.float64)
    assert M.frechet_distance(a, b) == pytest.approx(closed, abs=0.05)


# ------------------------------------------------------------------------------------ KID, MMD


def test_kid_matches_direct_formula_and_is_unbiased():
    x = torch.randn(30, 4, generator=gen(9), dtype=torch.float64)
    y = torch.randn(30, 4, generator=gen(10), dtype=torch.float64) + 0.3
    k = lambda u, v: (u @ v / 4 + 1) ** 3  # noqa: E731
    m = 30
    direct = (sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
              - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2)
    mean, std = M.kid(x, y, subsets=3, subset_size=m, generator=gen(0))
    assert mean == pytest.approx(float(direct), rel=1e-10) and std < 1e-12
    # unbiased: averaged over many independent small samples of one distribution it is 0
    g = gen(11)
    est = torch.tensor([M.kid(torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g),
                              subsets=1, subset_size=10, generator=g)[0] for _ in range(300)])
    assert abs(est.mean()) < 4 * est.std() / math.sqrt(len(est))
    far = M.kid(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 1, subsets=5,
                subset_size=100, generator=g)[0]
    assert far > 10 * est.std() / math.sqrt(len(est))


def test_mmd_rbf_same_near_zero_different_positive():
    g = gen(12)
    x, y = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    same, diff = M.mmd_rbf(x, y), M.mmd_rbf(x, y + 1.0)
    assert abs(same) < 0.01 < 0.1 < diff
    # the unbiased U-statistic, written out for one bandwidth
    a, b = x[:20].double(), y[:25].double() + 0.5
    kern = lambda u, v: torch.exp(-torch.cdist(u, v).square() / 2)  # noqa: E731  h = 1
    kaa, kbb = kern(a, a), kern(b, b)
    direct = ((kaa.sum() - 20) / (20 * 19) + (kbb.sum() - 25) / (25 * 24) - 2 * kern(a, b).mean())
    assert M.mmd_rbf(a, b, bandwidths=[1.0], chunk_size=7) == pytest.approx(float(direct), rel=1e-10)


# ------------------------------------------------------------------------------- precision/recall


def test_precision_recall_identical_and_disjoint():
    x = torch.randn(300, 5, generator=gen(13))
    assert M.precision_recall(x, x.clone(), k=3, chunk_size=64) == (1.0, 1.0)
    assert M.precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)
    with pytest.raises(ValueError):
        M.precision_recall(x[:3], x, k=3)


# ------------------------------------------------------------------------------------ Wasserstein


def w1_by_cdf(u: torch.Tensor, v: torch.Tensor) -> float:
    """W1 = integral |F_u - F_v| dx, exact for empirical 1-D measures."""
    z = torch.cat([u, v]).sort().values.double()
    f_u = torch.searchsorted(u.sort().values.double(), z[:-1], right=True).double() / len(u)
    f_v = torch.searchsorted(v.sort().values.double(), z[:-1], right=True).double() / len(v)
    return float(((f_u - f_v).abs() * z.diff()).sum())


def test_sliced_wasserstein_exact_for_1d_shift():
    a = torch.randn(1000, 1, generator=gen(14), dtype=torch.float64)
    for c in (0.0, 0.7, -2.5):
        assert M.sliced_wasserstein(a, a + c, n_projections=4, generator=gen(0)) == pytest.approx(
            abs(c), abs=1e-12)


def test_w1_unequal_sizes_is_exact():
    assert float(M.wasserstein1_sorted(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0, 2.0]))) == \
        pytest.approx(0.5, abs=1e-12)
    g = gen(15)
    u = torch.randn(37, generator=g, dtype=torch.float64)
    v = torch.randn(50, generator=g, dtype=torch.float64)
    w = float(M.wasserstein1_sorted(u.sort().values, v.sort().values))
    assert w == pytest.approx(w1_by_cdf(u, v), abs=1e-12)
    assert M.sliced_wasserstein(u, v, n_projections=2) == pytest.approx(w, abs=1e-12)


def test_cross_entropy_nats_of_standard_normal():
    class StdNormal:
        def log_prob(self, x):
            return -0.5 * (x.square() + math.log(2 * math.pi)).sum(-1)

    x = torch.randn(20000, 2, generator=gen(16), dtype=torch.float64)
    assert M.cross_entropy_nats(StdNormal(), x) == pytest.approx(1 + math.log(2 * math.pi), abs=0.03)
    with pytest.raises(TypeError):
        M.cross_entropy_nats(object(), x)
