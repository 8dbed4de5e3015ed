"""Class conditioning, classifier-free guidance and conditioning on an observation (issue 12) as rows of
``dgm verify``, against exact Gaussian-mixture posteriors (dgm.core.guidance, GaussianMixture.condition):

- the conditional eps*(x_i, i, c) from the full mixture's responsibilities restricted to the class, against
  the eps* of the class's components alone;
- dgm's CFG denoiser (``guided_denoiser``, Ho & Salimans 2022 eq. 6) over the exact eps*, against
  (1 + w) eps*(x, i, c) - w eps*(x, i) written out;
- on a 1-D two-component mixture, the Wasserstein-1 distance W1 = int |F_samples - F| dx of draws to a CDF F
  from numerical integration of the normalized density on a fine grid, against the ECDF noise floor (the W1
  of as many exact draws, simulated by inverting F): the exact rejection sampler of the tilted target
  p(x|c)^(1+w) p(x)^(-w) and unguided (w = 0) ancestral sampling of p(x|c) sit at the floor, and CFG at w = 2
  with the exact eps* sits far above it: CFG does not sample the tilted target (Chidambaram et al. 2024;
  Bradley & Nakkiran 2024);
- ``condition(y, A, sigma_y)`` against Bayes' rule: prior x likelihood normalized on a 2-D grid, and the
  score identity grad log p(x | y) = grad log p(x) + A^T (y - A x) / sigma_y^2.

Floors. A W1 row's z is (log W1 - m) / sd, with m and sd the mean and std of log W1 over FLOOR_REPEATS sets
of as many exact draws. W1 itself is skewed right, so a Z-test on it would fail a correct sampler far more
often than FALSE_ALARM allows; its log is close to normal. Over 20,000 sets of 2,000 exact draws of the tilted
target, P(z > 3), P(z > 3.5), P(z > 4) were 1.2e-2, 6.5e-3, 3.2e-3 for W1 (max z 6.76) and 1.9e-3, 1.0e-4, 0
for log W1 (max z 3.86); a normal gives 1.3e-3, 2.3e-4, 3.2e-5 (20,000 sets cannot reach the 1e-6 tail that Z
stands for: that the log stays near normal there is an assumption). Over seeds 100-109, |z| of the tilted sampler
was 0.04-2.35; of w = 0 ancestral sampling 0.04-2.53, 0.02-2.48 and 0.04-1.51 at L = 250, 1000 and 4000; and
CFG's z was 7.41-8.72, 7.55-9.23 and 7.39-8.87, its W1 0.156, 0.156 and 0.154 on average (13x the floor): the
gap does not close as L grows, so it is not the discretization of ancestral sampling.
(2026-12-01, printed by
  OMP_NUM_THREADS=1 .venv/bin/python -c "from dgm.evaluation.verify.conditioning import measure_guidance as m; m()"
.)
"""

from __future__ import annotations

import math

import torch

from dgm.core.gaussian import append_dims
from dgm.core.guidance import (
    class_denoiser,
    class_eps_star,
    class_mixture,
    guided_eps_star,
    num_classes,
    sample_tilted,
    tilted_log_prob_unnormalized,
)
from dgm.core.oracle import GaussianMixture
from dgm.core.parameterization import guided_denoiser
from dgm.core.schedule import Schedule
from dgm.evaluation.verify.rows import Row, Z, demo_mixture, det_row, randn, z_row
from dgm.samplers import sample

__all__ = ["CFG_DRAWS", "CFG_LEVELS", "CFG_W", "CLASS_LABELS", "FLOOR_REPEATS", "check_class_eps_star",
           "check_condition", "check_guidance", "cfg_mixture", "measure_guidance", "w1_to_cdf"]

CLASS_LABELS = (0, 1, 1)  # of the demo mixture: class 0 = component 0, class 1 = components 1 and 2
CFG_W = 2.0  # guidance of the CFG rows (diffusers' guidance_scale 3)
CFG_LEVELS = 1000  # linear schedule of the CFG rows' ancestral sampling
CFG_DRAWS = 2000  # draws per W1, whatever dgm verify's n (CFG's z: 8.0 at 1,000 draws, 8.5 at 2,000)
FLOOR_REPEATS = 200  # simulated exact draw sets per floor
PER_ROW_LEVELS = torch.tensor([1, 2, 50, 400, 1000])  # of the class-eps-star row's call with per-row levels
GRID = (-5.0, 5.0, 4001)  # the 1-D grid of the CDFs, h = 2.5e-3, 9 stds past the means (wider if draws are)


def cfg_mixture() -> GaussianMixture:
    """The 1-D mixture of the CFG rows: 0.5 N(-0.5, 0.5^2) + 0.5 N(0.5, 0.5^2), class k = component k.

    Its components overlap, so guidance matters: the tilted target of class 0 at w = 2 (mean -0.72, std 0.40)
    is W1 0.22 from p(x|0) and 0.05 from the tilted target at w = 3 (numerical integration)."""
    return GaussianMixture([0.5, 0.5], [[-0.5], [0.5]], [[[0.25]], [[0.25]]])


def _grid(x: torch.Tensor | None = None) -> torch.Tensor:
    lo, hi, m = GRID
    if x is not None:  # widen to hold every draw, so that W1 counts all of it
        lo, hi = min(lo, x.min().item() - 0.1), max(hi, x.max().item() + 0.1)
    return torch.linspace(lo, hi, m, dtype=torch.float64)


def _cdf(log_density, grid: torch.Tensor) -> torch.Tensor:
    """F on the grid from an unnormalized log density: cumulative trapezoid rule, normalized to F(end) = 1."""
    p = torch.exp(log_density(grid[:, None]) - log_density(grid[:, None]).max())
    F = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (p[1:] + p[:-1]), 0)])
    return F / F[-1]


def w1_to_cdf(x: torch.Tensor, log_density) -> float:
    """W1 = int |F_n - F| dx between the ECDF of 1-D draws x (n,) and the distribution of the unnormalized
    ``log_density`` (a function of (m, 1) points), integrated on a grid holding every draw."""
    grid = _grid(x)
    F = _cdf(log_density, grid)
    Fn = torch.searchsorted(torch.sort(x.flatten().double()).values, grid, right=True).double() / x.numel()
    return torch.trapezoid((Fn - F).abs(), grid).item()


def _floor_draws(log_density, n: int, g, repeats: int) -> torch.Tensor:
    """W1 of ``repeats`` sets of n exact draws (repeats,), drawn by inverting F on the grid (linear between grid
    points): independent of every sampler under test."""
    grid = _grid()
    F = _cdf(log_density, grid)
    out = []
    for r in range(0, repeats, 250):  # (250, grid) at a time
        u = torch.rand(min(250, repeats - r), n, generator=g, dtype=torch.float64)
        k = torch.searchsorted(F, u).clamp(1, grid.numel() - 1)
        x = grid[k - 1] + (u - F[k - 1]) / (F[k] - F[k - 1]).clamp_min(1e-300) * (grid[k] - grid[k - 1])
        at = grid.expand(u.shape[0], -1).contiguous()
        Fn = torch.searchsorted(torch.sort(x, dim=1).values, at, right=True).double() / n
        out.append(torch.trapezoid((Fn - F).abs(), grid, dim=1))
    return torch.cat(out)


def _floor(log_density, n: int, g) -> tuple[float, float, float]:
    """The ECDF noise floor of n exact draws over FLOOR_REPEATS simulated sets: (mean W1, mean log W1, std log W1)."""
    w1 = _floor_draws(log_density, n, g, FLOOR_REPEATS)
    return w1.mean().item(), w1.log().mean().item(), w1.log().std().item()


def _against_floor(x: torch.Tensor, log_density, floor) -> tuple[float, float]:
    """(W1 of the draws x to the density, z of its log against the floor)."""
    w1 = w1_to_cdf(x, log_density)
    return w1, (math.log(w1) - floor[1]) / floor[2]


def check_class_eps_star(gm, g, n) -> list[Row]:
    """class_eps_star (restricted responsibilities) against class_mixture(...).eps_star, and dgm's CFG denoiser
    ``guided_denoiser`` over ``class_denoiser`` against (1 + w) eps*_c - w eps* written out, on exact draws of
    p_i at integer and fractional levels of cosine L=1000 and on one call with per-row levels."""
    s, m, err, err_cfg = Schedule.cosine(1000), min(n, 2000), 0.0, 0.0
    labels = torch.tensor(CLASS_LABELS)
    eps_fn = class_denoiser(gm, labels, s)
    for t in (1, 100, 500, 999, 250.5, "per-row"):
        lv = PER_ROW_LEVELS[torch.randint(0, 5, (m,), generator=g)] if t == "per-row" else t
        a, sigma = (s.alpha_bar[lv], s.sigma_bar[lv]) if t == "per-row" else (s.alpha_bar_at(t), s.sigma_bar_at(t))
        x = append_dims(a, 2) * gm.sample(m, g) + append_dims(sigma, 2) * randn(g, m, gm.D)  # exact draws of p_i
        cond = torch.randint(0, 2, (m,), generator=g)
        eps_c = class_eps_star(gm, labels, s, x, lv, cond)
        for c in (0, 1):
            rows = cond == c
            ref = class_mixture(gm, labels, c).eps_star(s, x[rows], lv if isinstance(lv, (int, float)) else lv[rows])
            err = max(err, ((eps_c[rows] - ref).abs() / (1 + ref.abs())).max().item())
        levels = torch.full((m,), t) if isinstance(t, (int, float)) else lv
        for w in (0.0, CFG_W):
            ref = (1 + w) * eps_c - w * gm.eps_star(s, x, lv)
            out = guided_denoiser(eps_fn, w, null_class=num_classes(labels))(x, levels, cond=cond)
            err_cfg = max(err_cfg, ((out - ref).abs() / (1 + ref.abs())).max().item(),
                          ((guided_eps_star(gm, labels, s, x, lv, cond, w) - ref).abs() / (1 + ref.abs())).max().item())
    return [
        det_row("class-eps-star", "G3 given c: eps*(x_i,i,c) from responsibilities restricted to class c vs eps* of "
                "the class's components alone, demo mixture, classes {0},{1,2}, cosine L=1000: max rel. error", err),
        det_row("cfg-denoiser", f"CFG (Ho & Salimans eq. 6): guided_denoiser over the exact eps* vs (1+w) eps*_c - w "
                f"eps*, w=0 and {CFG_W:g}: max rel. error", err_cfg),
    ]


def check_guidance(g, levels: int = CFG_LEVELS, draws: int = CFG_DRAWS) -> list[Row]:
    """On ``cfg_mixture``, class 0, all with the exact eps* and ``draws`` draws: W1 of the rejection sampler to the
    tilted target, and of ancestral sampling at w = 0 (the conditional eps*) to p(x|c), both at the floor (|z| < Z);
    W1 of ancestral sampling with CFG at w = CFG_W (dgm's guided_denoiser) to the tilted target, above the floor
    (z > Z). Ancestral sampling runs over every level of linear L = ``levels``."""
    gm, c, m = cfg_mixture(), 0, draws
    labels = torch.tensor([0, 1])
    tilted = lambda x: tilted_log_prob_unnormalized(gm, labels, c, CFG_W, x)  # noqa: E731
    conditional = class_mixture(gm, labels, c).log_prob
    floor_t, floor_c = _floor(tilted, m, g), _floor(conditional, m, g)
    s = Schedule.linear(levels)
    eps_fn, cond = class_denoiser(gm, labels, s), torch.full((m,), c)

    def ancestral(w: float) -> torch.Tensor:
        eps_w = guided_denoiser(eps_fn, w, null_class=num_classes(labels))
        return sample(eps_w, s, (m, 1), generator=g, dtype=torch.float64, cond=cond)

    w1_exact, z_exact = _against_floor(sample_tilted(gm, labels, c, CFG_W, m, g), tilted, floor_t)
    w1_w0, z_w0 = _against_floor(ancestral(0.0), conditional, floor_c)
    w1_cfg, z_cfg = _against_floor(ancestral(CFG_W), tilted, floor_t)
    where = f"1-D 2-component mixture, class 0, {m} draws; z of log W1"
    return [
        z_row("tilted-sampler", f"sample_tilted (rejection, accept p(c|x)^w), w={CFG_W:g}: W1 {w1_exact:.4f} to the "
              f"tilted target p(x|c)^(1+w) p(x)^-w (numerical CDF), floor {floor_t[0]:.4f}, {where}", [z_exact]),
        z_row("cfg-conditional", f"ancestral L={levels} with CFG w=0 (the conditional eps*): W1 {w1_w0:.4f} to p(x|c), "
              f"floor {floor_c[0]:.4f}, {where}", [z_w0]),
        Row(f"CFG w={CFG_W:g} with the exact eps* does not sample the tilted target: W1 {w1_cfg:.4f} = "
            f"{w1_cfg / floor_t[0]:.0f}x the floor, ancestral L={levels}, {where}",
            z_cfg, f"z > Z = {Z:.2f}", z_cfg > Z, key="cfg-not-tilted", stats=1),
    ]


def check_condition(g) -> list[Row]:
    """GaussianMixture.condition(y, A, sigma_y) against Bayes' rule (E1): log p(x | y) against the log of prior x
    likelihood normalized on a 2-D grid (where p(x | y) > 1e-8 of its maximum), and the score identity
    grad log p(x | y) = grad log p(x) + A^T (y - A x) / sigma_y^2 at level 0 on exact posterior draws.

    The grid [-6, 6]^2 with h = 0.02 holds the posterior (its components' stds are 0.12 to 0.42, the edges 11
    stds or more from their means), and the Riemann sum of a Gaussian of std >= 6 h has a relative error of about
    exp(-2 pi^2 6^2) = 1e-309 (Poisson summation), so the normalizer is exact up to round-off (measured: 1e-13)."""
    gm = demo_mixture()
    A, y, sigma_y = torch.tensor([[0.8, -0.6]], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64), 0.2
    post = gm.condition(y, A, sigma_y)
    t = torch.linspace(-6, 6, 601, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    log_un = gm.log_prob(X) - 0.5 * ((y - X @ A.T) ** 2).sum(-1) / sigma_y**2
    bayes = log_un - torch.logsumexp(log_un, 0) - 2 * math.log(t[1] - t[0])
    keep = bayes > bayes.max() - math.log(1e8)
    err_grid = (post.log_prob(X[keep]) - bayes[keep]).abs().max().item()
    s = Schedule.linear(10)
    x = post.sample(2000, g)
    ref = gm.score(s, x, 0) + (y - x @ A.T) @ A / sigma_y**2
    err_score = ((post.score(s, x, 0) - ref).abs() / (1 + ref.abs())).max().item()
    return [
        det_row("condition-grid", "E1 condition(y, A, sigma_y) vs prior x likelihood normalized on a 2-D grid, demo "
                "mixture, A=[0.8,-0.6], sigma_y=0.2: max |log p(x|y) error|", err_grid),
        det_row("condition-score", "E1 grad log p(x|y) of condition(...) vs grad log p(x) + A^T (y - Ax)/sigma_y^2 on "
                "posterior draws: max rel. error", err_score),
    ]


def measure_guidance(seeds=range(100, 110), tail_repeats: int = 20_000) -> dict:
    """Measure what the CFG rows rest on (the numbers of this module's docstring): the tail of z for W1 and for
    log W1 over ``tail_repeats`` sets of CFG_DRAWS exact draws of the tilted target, and per seed the z of every
    row of ``check_guidance`` and CFG's W1 at L = 250, 1000 and 4000 (L = 4000 takes about 10 s a seed)."""
    gm, labels, out = cfg_mixture(), torch.tensor([0, 1]), {}
    tilted = lambda x: tilted_log_prob_unnormalized(gm, labels, 0, CFG_W, x)  # noqa: E731
    w1 = _floor_draws(tilted, CFG_DRAWS, torch.Generator().manual_seed(0), tail_repeats)
    for name, v in (("W1", w1), ("log W1", w1.log())):
        z = (v - v.mean()) / v.std()
        out[name] = [z.max().item()] + [(z > k).double().mean().item() for k in (3, 3.5, 4)]
        print(f"{name} over {tail_repeats} exact sets: max z {out[name][0]:.2f}, P(z > 3, 3.5, 4) = "
              + ", ".join(f"{p:.1e}" for p in out[name][1:]) + " (normal: 1.3e-03, 2.3e-04, 3.2e-05)")
    for levels in (250, CFG_LEVELS, 4000):
        for k in seeds:
            rows = check_guidance(torch.Generator().manual_seed(k), levels)
            out[levels, k] = [r.measured for r in rows]
            print(f"L={levels} seed {k}: " + ", ".join(f"{r.key} {r.measured:.2f}" for r in rows)
                  + f" ({rows[-1].claim.split(': ')[1].split(',')[0]})", flush=True)
    return out
