"""Exact oracles for Gaussian-mixture data (EQUATIONS.md G1-G8).

p_data = sum_k pi_k N(m_k, S_k). Everything below is closed form: the marginal p_i at every level (G1), its
score (G2), eps* = E[eps | x_i] (G3), x0* = E[x0 | x_i] (G4), posterior covariances (G5) and the exact
reverse kernel p(x_{i-1} | x_i) (G7). Computations run in float64 with log-sum-exp responsibilities and are
returned in the dtype of the input. Levels are integers or fractional (a float, or a float tensor of
per-example levels), where alpha_bar is the schedule's interpolation (``Schedule.alpha_bar_at``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core.gaussian import LOG_2PI
from dgm.core.schedule import Schedule

__all__ = ["GaussianMixture"]



class GaussianMixture:
    """A Gaussian mixture with weights (K,), means (K, D) and full covariances (K, D, D).

    Raises ValueError for weights that are not positive or do not sum to 1, mismatched shapes, or a
    covariance that is not symmetric positive definite.
    """

    def __init__(self, weights, means, covs):
        w, m, S = _as64(weights), _as64(means), _as64(covs)
        if w.ndim != 1 or m.ndim != 2 or S.ndim != 3:
            raise ValueError(
                f"expected weights (K,), means (K, D), covs (K, D, D); got {tuple(w.shape)}, "
                f"{tuple(m.shape)}, {tuple(S.shape)}"
            )
        K, D = m.shape
        if w.shape[0] != K or S.shape != (K, D, D):
            raise ValueError(
                f"shape mismatch: weights {tuple(w.shape)}, means {tuple(m.shape)}, covs {tuple(S.shape)}"
            )
        if (w <= 0).any() or abs(w.sum().item() - 1.0) > 1e-6:
            raise ValueError(f"mixture weights must be positive and sum to 1, got {w.tolist()}")
        if not torch.allclose(S, S.transpose(1, 2), atol=1e-10, rtol=1e-8):
            raise ValueError("covariances must be symmetric")
        chol, info = torch.linalg.cholesky_ex(S)
        if (info != 0).any():
            k = int((info != 0).nonzero()[0])
            raise ValueError(f"covariance of component {k} is not positive definite: {S[k].tolist()}")
        self.weights, self.means, self.covs, self._chol = w / w.sum(), m, S, chol
        self.K, self.D = K, D

    # ------------------------------------------------------------------ the data distribution
    def sample(self, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False):
        """n draws, float64 (n, D); with ``return_labels`` also each draw's component index (n,) (LongTensor)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.D, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self._chol[k], z)
        return (x, k) if return_labels else x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_k [log pi_k + log N(x; m_k, S_k)] (G8): (N, D) -> (N,)."""
        return torch.logsumexp(self._log_joint(x.double(), self.means, self._chol), dim=1).to(x.dtype)

    def entropy(self, n: int = 200_000, generator: torch.Generator | None = None) -> float:
        """Monte Carlo H(p) = -E log p(x), the true NLL floor (G8), in nats."""
        return -self.log_prob(self.sample(n, generator)).mean().item()

    def affine(self, scale, shift) -> GaussianMixture:
        """The mixture of ``scale * x + shift`` (elementwise, per dimension)."""
        a = torch.as_tensor(scale, dtype=torch.float64).expand(self.D)
        b = torch.as_tensor(shift, dtype=torch.float64).expand(self.D)
        covs = self.covs * a[None, :, None] * a[None, None, :]
        return GaussianMixture(self.weights, self.means * a + b, covs)

    def condition(self, y, A, sigma_y: float) -> GaussianMixture:
        """The exact posterior p(x | y) for one observation y = A x + sigma_y n, n ~ N(0, I): a mixture again.

        y: (d_y,); A: (d_y, D); sigma_y > 0. By Bayes' rule per component (Murphy 2012, 4.125), with
        C_k = A S_k A^T + sigma_y^2 I and G_k = S_k A^T C_k^{-1}: weights pi_k N(y; A m_k, C_k) renormalized,
        means m_k + G_k (y - A m_k), covariances S_k - G_k A S_k. Its ``eps_star`` is the exact guided
        denoiser of the inverse problem and its ``sample`` the exact posterior sampler. (Not to be confused
        with ``dgm.posterior``, the reverse conditional kernel.)
        """
        y, A = _as64(y), _as64(A)
        if A.ndim != 2 or A.shape[1] != self.D or y.shape != (A.shape[0],):
            raise ValueError(f"condition: expected y (d_y,) and A (d_y, {self.D}), got y {tuple(y.shape)} "
                             f"and A {tuple(A.shape)}")
        if not float(sigma_y) > 0:
            raise ValueError(f"condition: sigma_y must be positive, got {sigma_y}")
        AS = torch.einsum("ed,kdf->kef", A, self.covs)  # A S_k: (K, d_y, D)
        C = AS @ A.T + float(sigma_y) ** 2 * torch.eye(A.shape[0], dtype=torch.float64)
        G = torch.linalg.solve(C, AS).transpose(1, 2)  # S_k A^T C_k^{-1} (C_k, S_k symmetric): (K, D, d_y)
        resid = y[None] - self.means @ A.T  # (K, d_y)
        chol = torch.linalg.cholesky(C)
        z = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        log_w = torch.log(self.weights) - 0.5 * (log_det + (z**2).sum(-1))
        covs = self.covs - G @ AS
        w = torch.softmax(log_w, 0)
        keep = w > 0  # components whose posterior weight underflows to 0 in float64 are dropped
        return GaussianMixture(w[keep] / w[keep].sum(), (self.means + torch.einsum("kde,ke->kd", G, resid))[keep],
                               (0.5 * (covs + covs.transpose(1, 2)))[keep])

    # ------------------------------------------------------------------ level i
    def at_level(self, s: Schedule, i: int) -> GaussianMixture:
        """p_i = sum_k pi_k N(alpha_bar_i m_k, alpha_bar_i^2 S_k + (1 - alpha_bar_i^2) I) (G1)."""
        a = _alpha_bar(s, i)
        eye = torch.eye(self.D, dtype=torch.float64)
        return GaussianMixture(self.weights, a * self.means, a**2 * self.covs + (1 - a**2) * eye)

    def _parts(self, s: Schedule, x: Tensor, i: int):
        """Responsibilities r (N, K), Sigma^{-1}(x - a m) (N, K, D), and a = alpha_bar_i at one level."""
        a = _alpha_bar(s, i)
        eye = torch.eye(self.D, dtype=torch.float64)
        Sigma = a**2 * self.covs + (1 - a**2) * eye
        chol = torch.linalg.cholesky(Sigma)
        diff = x[:, None, :] - a * self.means[None]  # (N, K, D)
        log_r = torch.log_softmax(self._log_joint(x, a * self.means, chol), dim=1)
        sol = torch.einsum("kde,nke->nkd", torch.cholesky_inverse(chol), diff)  # Sigma^{-1} (x - a m): (N, K, D)
        return log_r.exp(), sol, a

    def _per_level(self, fn, s: Schedule, x_i: Tensor, i) -> Tensor:
        """Apply ``fn(x (N, D) float64, level) -> (N, D)`` for an int level or per-example levels (B,)."""
        x = x_i.double()
        if isinstance(i, (int, float)) or torch.as_tensor(i).ndim == 0:
            out = fn(x, i if isinstance(i, (int, float)) else i.item())
        else:
            i = torch.as_tensor(i).cpu()
            if i.shape != (x.shape[0],):
                raise ValueError(f"levels must have shape ({x.shape[0]},), got {tuple(i.shape)}")
            out = None
            for lvl in i.unique().tolist():
                rows = (i == lvl).nonzero().squeeze(1).to(x.device)
                part = fn(x[rows], lvl)
                if out is None:
                    out = x.new_empty((x.shape[0], *part.shape[1:]))
                out[rows] = part
        return out.to(x_i.dtype)

    def score(self, s: Schedule, x_i: Tensor, i) -> Tensor:
        """grad log p_i(x) = -sum_k r_k Sigma_{k,i}^{-1} (x - alpha_bar_i m_k) (G2)."""

        def fn(x, lvl):
            r, sol, _ = self._parts(s, x, lvl)
            return -(r[..., None] * sol).sum(1)

        return self._per_level(fn, s, x_i, i)

    def eps_star(self, s: Schedule, x_i: Tensor, i) -> Tensor:
        """eps*(x, i) = E[eps | x_i = x] = sigma_bar_i sum_k r_k Sigma_{k,i}^{-1} (x - alpha_bar_i m_k) (G3).

        With a fixed ``s`` this is a denoiser: ``lambda x, i: gm.eps_star(s, x, i)``.
        """

        def fn(x, lvl):
            r, sol, _ = self._parts(s, x, lvl)
            return _sigma_bar(s, lvl) * (r[..., None] * sol).sum(1)

        return self._per_level(fn, s, x_i, i)

    def x0_star(self, s: Schedule, x_i: Tensor, i) -> Tensor:
        """x0*(x, i) = sum_k r_k (m_k + alpha_bar_i S_k Sigma_{k,i}^{-1} (x - alpha_bar_i m_k)) (G4)."""

        def fn(x, lvl):
            r, sol, a = self._parts(s, x, lvl)
            c = self.means[None] + a * torch.einsum("kde,nke->nkd", self.covs, sol)
            return (r[..., None] * c).sum(1)

        return self._per_level(fn, s, x_i, i)

    def posterior_cov_trace(self, s: Schedule, x_i: Tensor, i: int) -> Tensor:
        """tr Cov(x0 | x_i) = sum_k r_k [tr P_k + |c_k - x0*|^2], P_k = S_k - a^2 S_k Sigma^{-1} S_k (G5): (N,)."""
        x = x_i.double()
        r, sol, a = self._parts(s, x, i)
        eye = torch.eye(self.D, dtype=torch.float64)
        Sigma = a**2 * self.covs + (1 - a**2) * eye
        P = self.covs - a**2 * self.covs @ torch.linalg.solve(Sigma, self.covs)
        c = self.means[None] + a * torch.einsum("kde,nke->nkd", self.covs, sol)
        x0 = (r[..., None] * c).sum(1)
        spread = ((c - x0[:, None]) ** 2).sum(-1)
        return (r * (torch.diagonal(P, dim1=1, dim2=2).sum(-1)[None] + spread)).sum(1)

    def eps_posterior_cov_trace(self, s: Schedule, x_i: Tensor, i) -> Tensor:
        """tr Cov[eps | x_i] = (alpha_bar_i / sigma_bar_i)^2 tr Cov[x0 | x_i] (E19, G5): (N,).

        Its mean over x_i ~ p_i, divided by D, is 1 - Gamma_i of Analytic-DPM, since E|eps|^2 = D splits
        into E|eps*(x_i)|^2 + E tr Cov[eps | x_i] (docs/LIKELIHOOD.md).
        """
        a, sigma = _alpha_bar(s, i), _sigma_bar(s, i)
        return (a / sigma) ** 2 * self.posterior_cov_trace(s, x_i, i)

    def optimal_reverse_variance(self, s: Schedule, i: int, j: int | None = None, *, n: int = 10_000,
                                 generator: torch.Generator | None = None) -> tuple[float, float, float]:
        """The optimal variance v*_ij of the reverse step i -> j (default i - 1) for this mixture (Bao et al.
        2022; docs/LIKELIHOOD.md A2), with 1 - Gamma_i = E tr Cov[eps | x_i] / D from the exact posterior
        covariance (G5) averaged over n exact draws x_i ~ p_i: returns ``(v*, 1 - Gamma_i, its standard error)``.

        An oracle for Analytic-DPM: dgm estimates Gamma_i from a denoiser's |eps_hat|^2; here it comes from the
        mixture's own posterior, so the two agree for eps* only if both are right.
        """
        from dgm.core.reverse import AnalyticVariance

        j = i - 1 if j is None else j
        x0 = self.sample(n, generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        a, sigma = _alpha_bar(s, i), _sigma_bar(s, i)
        tr = self.eps_posterior_cov_trace(s, a * x0 + sigma * eps, i) / self.D
        one_minus_gamma, se = tr.mean().item(), tr.std().item() / n**0.5
        gamma = torch.zeros(s.L + 1, dtype=torch.float64)
        gamma[i] = 1.0 - one_minus_gamma
        return AnalyticVariance(gamma).between(s, i, j), one_minus_gamma, se

    def eps_star_divergence(self, s: Schedule, x_i: Tensor, i) -> Tensor:
        """div_x eps*(x, i) = sigma_bar_i [sum_k r_k tr Sigma_k^-1 - sum_k r_k |u_k|^2 + |sum_k r_k u_k|^2]: (N,).

        u_k = Sigma_k^-1 (x - alpha_bar_i m_k) with Sigma_k = alpha_bar_i^2 S_k + sigma_bar_i^2 I; from
        G3 with grad r_k = r_k (sum_j r_j u_j - u_k). It gives the divergence of the probability-flow drift in
        closed form (docs/LIKELIHOOD.md F2).
        """

        def fn(x, lvl):
            r, sol, a = self._parts(s, x, lvl)
            eye = torch.eye(self.D, dtype=torch.float64)
            Sigma = a**2 * self.covs + (1 - a**2) * eye
            tr_inv = torch.diagonal(torch.cholesky_inverse(torch.linalg.cholesky(Sigma)), dim1=1, dim2=2).sum(-1)
            mean_u = (r[..., None] * sol).sum(1)
            inner = (r * (tr_inv[None] - (sol**2).sum(-1))).sum(1) + (mean_u**2).sum(-1)
            return (_sigma_bar(s, lvl) * inner)[:, None]

        return self._per_level(fn, s, x_i, i)[:, 0]

    # ------------------------------------------------------------------ exact reverse kernel (G7)
    def reverse_kernel(self, s: Schedule, x_i: Tensor, i: int):
        """p(x_{i-1} | x_i) = sum_k r_k(x_i) N(m~_k, S~_k) (G7): returns (r (N, K), m~ (N, K, D), S~ (K, D, D))."""
        if not 1 <= i <= s.L:
            raise ValueError(f"level {i} is outside 1..{s.L}")
        x = x_i.double()
        eye = torch.eye(self.D, dtype=torch.float64)
        a_prev, alpha = s.alpha_bar[i - 1].item(), s.alpha[i].item()
        Sig_prev = a_prev**2 * self.covs + (1 - a_prev**2) * eye
        r, sol, a = self._parts(s, x, i)
        m_t = a_prev * self.means[None] + alpha * torch.einsum("kde,nke->nkd", Sig_prev, sol)
        Sigma = a**2 * self.covs + (1 - a**2) * eye
        S_t = Sig_prev - alpha**2 * Sig_prev @ torch.linalg.solve(Sigma, Sig_prev)
        S_t = 0.5 * (S_t + S_t.transpose(1, 2))
        return r, m_t, S_t

    def reverse_log_prob(self, s: Schedule, x_prev: Tensor, x_i: Tensor, i: int) -> Tensor:
        """log p(x_{i-1} = x_prev | x_i) under G7: (N,)."""
        r, m_t, S_t = self.reverse_kernel(s, x_i, i)
        chol = torch.linalg.cholesky(S_t)
        diff = x_prev.double()[:, None, :] - m_t  # (N, K, D)
        eye = torch.eye(self.D, dtype=chol.dtype).expand_as(chol)
        z = torch.einsum("kde,nke->nkd", torch.linalg.solve_triangular(chol, eye, upper=False), diff)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        log_n = -0.5 * (self.D * LOG_2PI + log_det[None] + (z**2).sum(-1))
        return torch.logsumexp(torch.log(r.clamp_min(1e-300)) + log_n, dim=1)

    def reverse_sample(self, s: Schedule, x_i: Tensor, i: int, generator=None) -> Tensor:
        """One draw of x_{i-1} ~ p(x_{i-1} | x_i) per row (G7): (N, D) float64."""
        r, m_t, S_t = self.reverse_kernel(s, x_i, i)
        k = torch.multinomial(r, 1, generator=generator).squeeze(1)
        z = torch.randn(x_i.shape[0], self.D, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(S_t)
        return m_t[torch.arange(x_i.shape[0]), k] + torch.einsum("nij,nj->ni", chol[k], z)

    # ------------------------------------------------------------------ helpers
    def _log_joint(self, x: Tensor, means: Tensor, chol: Tensor) -> Tensor:
        """log pi_k + log N(x; means_k, chol_k chol_k^T): (N, K)."""
        diff = x[:, None, :] - means[None]  # (N, K, D)
        eye = torch.eye(self.D, dtype=chol.dtype).expand_as(chol)
        chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (K, D, D)
        z = torch.einsum("kde,nke->nkd", chol_inv, diff)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        return torch.log(self.weights)[None] - 0.5 * (self.D * LOG_2PI + log_det[None] + (z**2).sum(-1))

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.K}, D={self.D})"


def _as64(x) -> Tensor:
    if isinstance(x, (list, tuple)) and any(isinstance(e, Tensor) for e in x):
        return torch.stack([torch.as_tensor(e, dtype=torch.float64) for e in x])
    return torch.as_tensor(x, dtype=torch.float64)


def _alpha_bar(s: Schedule, i) -> float:
    """alpha_bar at an integer level (the table) or a fractional one (the schedule's interpolation)."""
    if isinstance(i, float) and not i.is_integer():
        return s.alpha_bar_at(i).item()
    i = int(i)
    if not 0 <= i <= s.L:
        raise ValueError(f"level {i} is outside 0..{s.L}")
    return s.alpha_bar[i].item()


def _sigma_bar(s: Schedule, i) -> float:
    """sigma_bar = sqrt(1 - alpha_bar^2) at an integer or fractional level."""
    if isinstance(i, float) and not i.is_integer():
        return s.sigma_bar_at(i).item()
    return s.sigma_bar[int(i)].item()
