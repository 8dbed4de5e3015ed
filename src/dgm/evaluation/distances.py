"""Distances between two samples of vectors (N, D), and the cross-entropy under a known density.

All take 2-D arrays of vectors (torch tensors or numpy arrays; computed in float64) and return Python
floats. Each is nonzero even between two samples of the SAME distribution at finite N; ``quality_metrics``
(``dgm.evaluation.metrics``) reports that floor beside every value.

References: Frechet distance, Dowson & Landau 1982, FID: Heusel et al. 2017; KID: Binkowski et al. 2018;
precision/recall: Kynkaanniemi et al. 2019; sliced Wasserstein: Rabin et al. 2011, Bonneel et al. 2015;
MMD: Gretton et al. 2012.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["as_vectors", "cross_entropy_nats", "frechet_distance", "frechet_distance_gaussians", "kid",
           "knn_radii", "median_bandwidth", "mmd_rbf", "polynomial_kernel", "precision_recall",
           "sliced_wasserstein", "sqrtm_psd", "trace_sqrt_product", "wasserstein1_sorted"]


def as_vectors(x, name: str = "x", min_rows: int = 1) -> torch.Tensor:
    """x: (N, D) or (N,) (1-D data) -> float64 CPU tensor (N, D); ValueError on NaN/inf or too few rows."""
    x = torch.as_tensor(x).detach().cpu().double()
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected an array of vectors (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} vectors, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


CHUNK_BYTES = 64 << 20  # at most this much per block of pairwise distances (float64), whatever N and M


def _rows(chunk_size: int, columns: int) -> int:
    """Rows per block of a (rows, ``columns``) float64 distance matrix: ``chunk_size`` at most, and at most
    ``CHUNK_BYTES``, so that memory stays bounded when the other sample is large (60,000 images: 30,000 columns)."""
    return max(1, min(chunk_size, CHUNK_BYTES // (8 * max(1, columns))))


def _check_dims(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a.shape[1]} vs {b.shape[1]}")


# ---------------------------------------------------------------------------------------- Frechet


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """The PSD square root of a symmetric PSD matrix a (D, D): V diag(sqrt(max(lambda, 0))) V^T."""
    a = torch.as_tensor(a).double()
    lam, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * lam.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """tr sqrt(s1 s2) for symmetric PSD s1, s2 (D, D), computed stably as tr sqrt(s1^1/2 s2 s1^1/2):
    that product is symmetric PSD and similar to s1 s2, so it has the same eigenvalues."""
    r = sqrtm_psd(s1)
    m = r @ torch.as_tensor(s2).double() @ r
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()


def frechet_distance_gaussians(mu1, s1, mu2, s2) -> float:
    """FD = |mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr sqrt(s1 s2): the squared 2-Wasserstein distance
    between N(mu1, s1) and N(mu2, s2) (Dowson & Landau 1982). mu: (D,), s: (D, D)."""
    mu1, mu2, s1, s2 = (torch.as_tensor(t).double() for t in (mu1, mu2, s1, s2))
    fd = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * trace_sqrt_product(s1, s2)
    return max(float(fd), 0.0)


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two samples (N, D), (M, D): FID's formula
    (Heusel et al. 2017) with unbiased covariances. Its expected value between two samples of one
    distribution is positive and shrinks like 1/N (see ``quality_metrics`` for the floor)."""
    a, b = as_vectors(feats_a, "feats_a", 2), as_vectors(feats_b, "feats_b", 2)
    _check_dims(a, b)
    return frechet_distance_gaussians(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1),
                                      b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))


# ------------------------------------------------------------------------------------ kernel MMDs


def _mmd2_unbiased(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) from kernel matrices (m, m), (n, n), (m, n):
    off-diagonal means of k_xx and k_yy minus twice the mean of k_xy."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    t_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    t_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return t_xx + t_yy - 2 * k_xy.mean()


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel k(x, y) = (x . y / D + 1)^3 (Binkowski et al. 2018). x (m, D), y (n, D) -> (m, n)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid(feats_a, feats_b, *, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over
    ``subsets`` random subsets of min(subset_size, N, M) examples drawn from each sample without
    replacement (Binkowski et al. 2018). Returns (mean, std over subsets); unbiased, so its mean is ~0
    (and may be negative) for two samples of one distribution. The std measures the spread between
    subsets only: it is 0 when subset_size >= N and M (every subset is then the whole sample)."""
    a, b = as_vectors(feats_a, "feats_a", 2), as_vectors(feats_b, "feats_b", 2)
    _check_dims(a, b)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, a.shape[0], b.shape[0])
    values = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        values[s] = _mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    return float(values.mean()), float(values.std(correction=0))


def _pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square()


def median_bandwidth(a: torch.Tensor, b: torch.Tensor, max_points: int = 1000) -> float:
    """The median heuristic: the median distance between distinct points of the pooled sample
    (on at most ``max_points`` evenly spaced points of it)."""
    z = torch.cat([a, b])
    z = z[torch.linspace(0, z.shape[0] - 1, min(max_points, z.shape[0])).long()]
    d = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
    h = float(d[torch.triu_indices(*d.shape, offset=1).unbind()].median())
    return h if h > 0 else 1.0


def mmd_rbf(a, b, *, bandwidths: Sequence[float] | None = None, chunk_size: int = 2048) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the kernel mean_h exp(-|x - y|^2 / (2 h^2)) over
    ``bandwidths`` h (default: the median heuristic, one h). a (N, D), b (M, D), N, M >= 2.
    ~0 (possibly slightly negative) for two samples of one distribution, > 0 for different ones."""
    a, b = as_vectors(a, "a", 2), as_vectors(b, "b", 2)
    _check_dims(a, b)
    hs = [median_bandwidth(a, b)] if bandwidths is None else [float(h) for h in bandwidths]
    if not hs or min(hs) <= 0:
        raise ValueError(f"bandwidths must be positive, got {bandwidths}")

    def kernel_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for xc in x.split(_rows(chunk_size, y.shape[0])):
            d2 = _pairwise_sq_dists(xc, y)
            total += sum(torch.div(d2, -2 * h * h).exp_().sum() for h in hs) / len(hs)  # one temporary
        return total

    m, n = a.shape[0], b.shape[0]  # k(x, x) = 1 on the diagonal
    t_xx = (kernel_sum(a, a) - m) / (m * (m - 1))
    t_yy = (kernel_sum(b, b) - n) / (n * (n - 1))
    return float(t_xx + t_yy - 2 * kernel_sum(a, b) / (m * n))


# ------------------------------------------------------------------------------- precision/recall


def knn_radii(x: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """Distance of each row of x (N, D) to its k-th nearest neighbour among the other rows -> (N,), in blocks
    of at most ``chunk_size`` rows and ``CHUNK_BYTES``."""
    out = [torch.cdist(xc, x, compute_mode="donot_use_mm_for_euclid_dist").topk(k + 1, largest=False)
           .values[:, k] for xc in x.split(_rows(chunk_size, x.shape[0]))]
    return torch.cat(out)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk_size: int) -> float:
    """Fraction of ``points`` inside at least one ball B(centres_j, radii_j)."""
    inside = [(torch.cdist(pc, centres, compute_mode="donot_use_mm_for_euclid_dist") <= radii).any(1)
              for pc in points.split(_rows(chunk_size, centres.shape[0]))]
    return float(torch.cat(inside).double().mean())


def precision_recall(real_feats, fake_feats, *, k: int = 3, chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the real manifold is the union of balls
    around each real point with radius its k-th nearest-neighbour distance; precision = fraction of fake
    points inside it; recall = fraction of real points inside the fake manifold built the same way.
    real (N, D), fake (M, D) with N, M > k. Distances are computed in row chunks. Returns (P, R)."""
    real, fake = as_vectors(real_feats, "real_feats", k + 1), as_vectors(fake_feats, "fake_feats", k + 1)
    _check_dims(real, fake)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    precision = _coverage(fake, real, knn_radii(real, k, chunk_size), chunk_size)
    recall = _coverage(real, fake, knn_radii(fake, k, chunk_size), chunk_size)
    return precision, recall


# --------------------------------------------------------------------------------------- Wasserstein


def wasserstein1_sorted(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact W1 = int_0^1 |F_u^-1(t) - F_v^-1(t)| dt between the empirical measures of sorted rows
    u (..., N) and v (..., M) -> (...). The quantile functions are step functions; integrating over the
    merged breakpoints {i/N} U {j/M} makes it exact for any N, M (for N = M: mean |u - v|)."""
    n, m = u.shape[-1], v.shape[-1]
    t = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                   torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()  # sorted, ends at 1
    lo = torch.cat([torch.zeros(1, dtype=torch.float64), t[:-1]])
    mid, width = (lo + t) / 2, t - lo
    iu = (mid * n).long().clamp_max(n - 1)
    iv = (mid * m).long().clamp_max(m - 1)
    return ((u[..., iu] - v[..., iv]).abs() * width).sum(-1)


def sliced_wasserstein(a, b, *, n_projections: int = 128, generator: torch.Generator | None = None) -> float:
    """Sliced 1-Wasserstein distance SW1 = E_theta W1(theta . a, theta . b), theta uniform on the unit
    sphere, estimated with ``n_projections`` random directions (Rabin et al. 2011). a (N, D), b (M, D);
    each 1-D W1 is exact (``wasserstein1_sorted``), also for N != M. For D = 1 it is W1 itself."""
    a, b = as_vectors(a, "a"), as_vectors(b, "b")
    _check_dims(a, b)
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    u = (a @ theta).T.sort(-1).values  # (P, N)
    v = (b @ theta).T.sort(-1).values  # (P, M)
    return float(wasserstein1_sorted(u, v).mean())


# ------------------------------------------------------------------------------------- likelihood


def cross_entropy_nats(density, x) -> float:
    """H(data, p) estimated as mean_n -log p(x_n) in nats, under a density with ``.log_prob(x) -> (N,)``
    (e.g. the exact ``dgm.GaussianMixture`` of gmm2d); x (N, D) in the density's space."""
    if not callable(getattr(density, "log_prob", None)):
        raise TypeError(f"density must have a log_prob method, got {type(density).__name__}")
    log_p = torch.as_tensor(density.log_prob(torch.as_tensor(x))).double()
    if log_p.ndim != 1 or log_p.numel() == 0:
        raise ValueError(f"log_prob must return one value per example, got shape {tuple(log_p.shape)}")
    return float(-log_p.mean())
