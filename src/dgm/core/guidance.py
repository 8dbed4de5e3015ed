"""Exact oracles for class-conditional generation and classifier-free guidance (CFG) on Gaussian-mixture data.

A class is a set of mixture components: ``component_labels`` (K,) gives each component's class in 0..C-1
(gmm2d: component k is class k), so p(x | c) = sum_{k in c} pi_k N(m_k, S_k) / p(c) with p(c) = sum_{k in c}
pi_k. The null class (the unconditional model, as in dgm's nets) is C = max(component_labels) + 1.

- ``class_mixture``: p(x | c) as a GaussianMixture (its ``eps_star`` is the conditional eps*).
- ``class_eps_star``: eps*(x_i, i, c) = E[eps | x_i, c] computed from the full mixture's responsibilities at
  level i restricted to the class: sigma_bar_i sum_{k in c} r_k u_k / sum_{k in c} r_k, with
  u_k = Sigma_{k,i}^{-1} (x - alpha_bar_i m_k) and Sigma_{k,i} = alpha_bar_i^2 S_k + sigma_bar_i^2 I
  (EQUATIONS.md G3 given c). It is written apart from the oracle's eps_star, so the two check each other.
- ``guided_eps_star``: the CFG denoiser (1 + w) eps*(x, i, c) - w eps*(x, i) (Ho & Salimans 2022, eq. 6;
  diffusers' guidance_scale = 1 + w); ``class_denoiser``: eps* with a null class, for ``guided_denoiser``.
- The tilted target p_w(x | c) proportional to p(x | c)^(1+w) p(x)^(-w) = p(x | c) (p(c | x) / p(c))^w:
  ``tilted_log_prob_unnormalized`` and ``sample_tilted``, an exact rejection sampler (proposal p(x | c),
  acceptance probability p(c | x)^w <= 1, for w >= 0).

CFG with the exact eps*(x, i, c) and eps*(x, i) does NOT sample the tilted target: the guided score at level i
is the score of p_i(x | c)^(1+w) p_i(x)^(-w), and these tilted marginals are not the noised versions of p_w
(Chidambaram et al. 2024, "What does guidance do?"; Bradley & Nakkiran 2024, "Classifier-free guidance is a
predictor-corrector"). ``dgm verify`` measures the gap on a 1-D mixture.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core.oracle import GaussianMixture
from dgm.core.schedule import Schedule

__all__ = ["class_denoiser", "class_eps_star", "class_log_posterior", "class_mixture", "guided_eps_star",
           "num_classes", "sample_tilted", "tilted_log_prob_unnormalized"]

MAX_PROPOSALS = 10**7  # sample_tilted gives up (ValueError) past max(MAX_PROPOSALS, 100 n) proposals
CHUNK = 10**6  # most proposals drawn at once by sample_tilted


def num_classes(component_labels) -> int:
    """C = max(component_labels) + 1: the classes are 0..C-1 and the null class is C."""
    labels = torch.as_tensor(component_labels)
    if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise ValueError(f"component_labels must be a non-empty 1-D integer sequence, got {labels.tolist()}")
    if (labels < 0).any():
        raise ValueError(f"component_labels must be >= 0, got {labels.tolist()}")
    return int(labels.max()) + 1


def class_mixture(gm: GaussianMixture, component_labels, c: int) -> GaussianMixture:
    """p(x | c) = sum_{k in c} pi_k N(x; m_k, S_k) / sum_{k in c} pi_k: the class's components, renormalized."""
    labels = _check_labels(gm, component_labels)
    keep = labels == _check_class(labels, c)
    w = gm.weights[keep]
    return GaussianMixture(w / w.sum(), gm.means[keep], gm.covs[keep])


def class_eps_star(gm: GaussianMixture, component_labels, s: Schedule, x_i: Tensor, i, cond) -> Tensor:
    """eps*(x_i, i, c) = E[eps | x_i, c] = sigma_bar_i sum_{k in c} r_k u_k / sum_{k in c} r_k (G3 given c).

    x_i: (N, D); i: a level (int, float, 0-d tensor) or levels (N,); cond: classes (N,), each in 0..C-1 with
    at least one component. r_k are the responsibilities of the full mixture at level i and u_k =
    Sigma_{k,i}^{-1} (x - alpha_bar_i m_k). Returns (N, D) in x_i's dtype.
    """
    labels = _check_labels(gm, component_labels)
    x = x_i.double().cpu()
    if x.ndim != 2 or x.shape[1] != gm.D:
        raise ValueError(f"x_i must have shape (N, {gm.D}), got {tuple(x_i.shape)}")
    cond = _check_cond(labels, cond, x.shape[0])
    member = labels[None, :] == cond[:, None]  # (N, K): component k belongs to row n's class
    out = torch.empty_like(x)
    for lvl, rows in _by_level(i, x.shape[0]):
        a, sigma = _signal(s, lvl)
        log_w, u = _component_terms(gm, a, sigma, x[rows])
        r_c = torch.softmax(log_w.masked_fill(~member[rows], -math.inf), dim=1)  # restricted to the class
        out[rows] = sigma * (r_c[..., None] * u).sum(1)
    return out.to(dtype=x_i.dtype, device=x_i.device)


def guided_eps_star(gm: GaussianMixture, component_labels, s: Schedule, x_i: Tensor, i, cond, w: float) -> Tensor:
    """The CFG denoiser (1 + w) eps*(x_i, i, c) - w eps*(x_i, i) (Ho & Salimans 2022, eq. 6) with the exact
    conditional and unconditional eps*; w >= 0, w = 0 is the conditional eps* (diffusers' guidance_scale 1 + w)."""
    w = _check_w(w)
    eps_c = class_eps_star(gm, component_labels, s, x_i, i, cond)
    return eps_c if w == 0 else (1 + w) * eps_c - w * gm.eps_star(s, x_i, i)


def class_denoiser(gm: GaussianMixture, component_labels, s: Schedule):
    """The exact denoiser ``eps_fn(x_i, i, cond=None)`` with a null class: rows whose label is the null class
    C = num_classes(component_labels), and every row when ``cond`` is None, get the unconditional eps*; the
    others get eps*(x_i, i, c). Wrapped by ``guided_denoiser(eps_fn, w, null_class=C)`` it is exact CFG."""
    labels = _check_labels(gm, component_labels)
    null = num_classes(labels)

    def eps_fn(x_i: Tensor, i, cond=None) -> Tensor:
        if cond is None:
            return gm.eps_star(s, x_i, _uniform(i))
        cond = torch.as_tensor(cond).cpu()
        if cond.shape != (x_i.shape[0],):
            raise ValueError(f"cond must have shape ({x_i.shape[0]},), got {tuple(cond.shape)}")
        i, is_null = _uniform(i), cond == null
        if not is_null.any():
            return class_eps_star(gm, labels, s, x_i, i, cond)
        per_row = isinstance(i, Tensor) and i.ndim == 1
        out = torch.empty_like(x_i)
        for rows, unconditional in ((is_null, True), (~is_null, False)):
            if rows.any():
                lv = _uniform(i.cpu()[rows]) if per_row else i
                out[rows] = (gm.eps_star(s, x_i[rows], lv) if unconditional
                             else class_eps_star(gm, labels, s, x_i[rows], lv, cond[rows]))
        return out

    return eps_fn


def class_log_posterior(gm: GaussianMixture, component_labels, x: Tensor) -> Tensor:
    """log p(c | x) = logsumexp_{k in c} [log pi_k + log N(x; m_k, S_k)] - log p(x), for c = 0..C-1: (N, C)
    float64 (-inf for a class without components)."""
    labels = _check_labels(gm, component_labels)
    log_w, _ = _component_terms(gm, 1.0, 0.0, x.double().cpu())
    member = labels[None, :] == torch.arange(num_classes(labels))[:, None]  # (C, K)
    joint = torch.logsumexp(log_w[:, None, :].masked_fill(~member[None], -math.inf), dim=2)  # (N, C)
    return joint - torch.logsumexp(log_w, dim=1, keepdim=True)


def tilted_log_prob_unnormalized(gm: GaussianMixture, component_labels, c: int, w: float, x: Tensor) -> Tensor:
    """log of the tilted target p(x | c)^(1+w) p(x)^(-w), unnormalized: (1 + w) log p(x | c) - w log p(x): (N,)."""
    w = _check_w(w)
    x = x.double()
    return (1 + w) * class_mixture(gm, component_labels, c).log_prob(x) - w * gm.log_prob(x)


def sample_tilted(gm: GaussianMixture, component_labels, c: int, w: float, n: int,
                  generator: torch.Generator | None = None) -> Tensor:
    """n exact draws (n, D) float64 of p_w(x | c) proportional to p(x | c)^(1+w) p(x)^(-w), by rejection.

    p(x | c)^(1+w) p(x)^(-w) = p(x | c) (p(c | x) / p(c))^w, so proposals x ~ p(x | c) accepted with
    probability p(c | x)^w (<= 1) are exact draws for every w >= 0 (w = 0 accepts all). The acceptance rate is
    E_{p(x|c)} p(c | x)^w; past max(MAX_PROPOSALS, 100 n) proposals it raises ValueError.
    """
    w = _check_w(w)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"sample_tilted: n must be a positive integer, got {n!r}")
    labels = _check_labels(gm, component_labels)
    proposal = class_mixture(gm, labels, c)
    kept, have, proposed, batch = [], 0, 0, n
    while have < n:
        x = proposal.sample(batch, generator)
        log_u = torch.log(torch.rand(batch, generator=generator, dtype=torch.float64))
        x = x[log_u < w * class_log_posterior(gm, labels, x)[:, c]]
        kept.append(x)
        have, proposed = have + x.shape[0], proposed + batch
        if have < n and proposed >= max(MAX_PROPOSALS, 100 * n):
            raise ValueError(f"sample_tilted: acceptance rate {have / proposed:.1e} after {proposed} proposals is "
                             f"too low for w={w} and class {c}")
        rate = max(have, 1) / proposed
        batch = min(math.ceil(1.2 * (n - have) / rate) + 16, CHUNK)
    return torch.cat(kept)[:n]


# ------------------------------------------------------------------------------------------------ helpers


def _component_terms(gm: GaussianMixture, a: float, sigma: float, x: Tensor) -> tuple[Tensor, Tensor]:
    """log pi_k + log N(x; a m_k, Sigma_k) + D/2 log 2 pi (N, K) and u_k = Sigma_k^{-1} (x - a m_k) (N, K, D),
    with Sigma_k = a^2 S_k + sigma^2 I (the level-i components, G1); x float64 on the CPU."""
    Sigma = a * a * gm.covs + sigma * sigma * torch.eye(gm.D, dtype=torch.float64)
    chol = torch.linalg.cholesky(Sigma)  # (K, D, D)
    diff = x[:, None, :] - a * gm.means[None]  # (N, K, D)
    z = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)  # chol^{-1} diff: (K, D, N)
    u = torch.linalg.solve_triangular(chol.transpose(1, 2), z, upper=True).permute(2, 0, 1)  # (N, K, D)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    return torch.log(gm.weights)[None] - 0.5 * (log_det[None] + (diff * u).sum(-1)), u


def _signal(s: Schedule, lvl) -> tuple[float, float]:
    """(alpha_bar, sigma_bar) at an integer level (the tables) or a fractional one (the interpolation)."""
    if isinstance(lvl, float) and not lvl.is_integer():
        return s.alpha_bar_at(lvl).item(), s.sigma_bar_at(lvl).item()
    lvl = int(lvl)
    if not 0 <= lvl <= s.L:
        raise ValueError(f"level {lvl} is outside 0..{s.L}")
    return s.alpha_bar[lvl].item(), s.sigma_bar[lvl].item()


def _by_level(i, n: int):
    """(level, rows) for one level of all n rows (``slice(None)``) or per-row levels (n,), grouped by value."""
    if isinstance(i, (int, float)) or torch.as_tensor(i).ndim == 0:
        return [(i if isinstance(i, (int, float)) else torch.as_tensor(i).item(), slice(None))]
    i = torch.as_tensor(i).cpu()
    if i.shape != (n,):
        raise ValueError(f"levels must have shape ({n},), got {tuple(i.shape)}")
    return [(lvl, (i == lvl).nonzero().squeeze(1)) for lvl in i.unique().tolist()]


def _uniform(i):
    """A tensor of per-row levels that are all equal, as that one level (the oracle's fast path)."""
    if isinstance(i, Tensor) and i.ndim == 1 and i.numel() and bool((i == i[0]).all()):
        return i[0].item()
    return i


def _check_labels(gm: GaussianMixture, component_labels) -> Tensor:
    labels = torch.as_tensor(component_labels)
    num_classes(labels)
    if labels.shape != (gm.K,):
        raise ValueError(f"component_labels must give one class per component ({gm.K}), got {labels.tolist()}")
    return labels.long().cpu()


def _check_class(labels: Tensor, c) -> int:
    if isinstance(c, Tensor) and c.ndim == 0:
        c = c.item()
    if isinstance(c, bool) or not isinstance(c, int) or not (labels == c).any():
        raise ValueError(f"class {c!r} has no components (component_labels {labels.tolist()})")
    return c


def _check_cond(labels: Tensor, cond, n: int) -> Tensor:
    cond = torch.as_tensor(cond).cpu()
    if cond.shape != (n,) or cond.is_floating_point() or cond.is_complex():
        raise ValueError(f"cond must be integer classes of shape ({n},), got {cond.dtype} {tuple(cond.shape)}")
    empty = set(cond.unique().tolist()) - set(labels.tolist())
    if empty:
        raise ValueError(f"class {min(empty)} has no components (component_labels {labels.tolist()})")
    return cond.long()


def _check_w(w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf:
        raise ValueError(f"guidance w must be a finite number >= 0, got {w!r}")
    return float(w)
