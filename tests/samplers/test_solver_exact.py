"""Exact references for the deterministic solvers: DDIM (eta = 0, EQUATIONS.md E40) and DPM-Solver++(2M) (E41);
and, at the end, the stochastic SDE-DPM-Solver++(2M) against DDIM with eta = 1 and against diffusers, noise for noise.

The reference is the probability-flow ODE of Gaussian data x0 ~ N(M, S), solved in closed form. With
a = alpha_bar, sigma = sigma_bar and lam = log(a / sigma), the ODE that DDIM and DPM-Solver++ discretize
(the data-prediction form of Lu et al. 2022) is

    d(x / sigma) / d lam = e^lam x0*(x, lam),    x0*(x) = M + a S (a^2 S + sigma^2 I)^{-1} (x - a M).

In the eigenbasis S = Q diag(kappa) Q^T every coordinate decouples. Write y_k = q_k . (x - a M) and
w_k = y_k / sigma. Since d(a M / sigma) / d lam = e^lam M, the ODE becomes
dw_k / d lam = e^{2 lam} kappa_k w_k / (e^{2 lam} kappa_k + 1) = (1/2) d/d lam log(e^{2 lam} kappa_k + 1) w_k,
so w_k / sqrt(e^{2 lam} kappa_k + 1) is constant, i.e.

    y_k / sqrt(a^2 kappa_k + sigma^2) = const                                          (flow_map below).

The map between two levels depends only on (a, sigma) at those levels, so it is exact between integer levels
of any schedule, however lam varies in between. Solver states at positive levels are read from the callback
(``next_level``), so the first-order final step to level 0 never masks the order.
"""

import math

import pytest
import torch

import dgm
from dgm.core import rng
from dgm.samplers import sample_ddim, sample_dpmpp_2m, sample_sde_dpmpp_2m

M = torch.tensor([0.7, -0.4, 1.5], dtype=torch.float64)
S = torch.tensor([[1.2, 0.5, 0.1], [0.5, 0.6, -0.2], [0.1, -0.2, 0.2]], dtype=torch.float64)
KAPPA, Q = torch.linalg.eigh(S)  # S = Q diag(KAPPA) Q^T; KAPPA ~ (0.028, 0.49, 1.48): anisotropic
GAUSSIAN = dgm.GaussianMixture([1.0], M[None], S[None])


def gaussian_eps_star(s):
    """eps*(x, i) = sigma_bar_i (alpha_bar_i^2 S + sigma_bar_i^2 I)^{-1} (x - alpha_bar_i M), in S's eigenbasis.

    Linear in x, and cheaper than the general mixture oracle (it agrees with it: test below), so the
    thousands-of-steps reference runs stay fast."""

    def eps_fn(x, i):
        level = int(i[0])
        assert (i == level).all()
        a, sigma = s.alpha_bar[level].item(), s.sigma_bar[level].item()
        return sigma * (((x - a * M) @ Q) / (a**2 * KAPPA + sigma**2)) @ Q.T

    return eps_fn


def flow_map(s, x, i, j):
    """The exact probability-flow ODE map from level i to level j (module docstring): (N, 3) -> (N, 3)."""
    a_i, sigma_i = s.alpha_bar[i].item(), s.sigma_bar[i].item()
    a_j, sigma_j = s.alpha_bar[j].item(), s.sigma_bar[j].item()
    y = (x - a_i * M) @ Q
    y = y * torch.sqrt((a_j**2 * KAPPA + sigma_j**2) / (a_i**2 * KAPPA + sigma_i**2))
    return a_j * M + y @ Q.T


def states(solver, eps_fn, x, s, grid):
    """Run ``solver`` over ``grid`` and return {level: x at that level} for every level after the first."""
    out = {}
    solver(eps_fn, x, s, grid, callback=lambda d: out.__setitem__(d["next_level"], d["x"]))
    return out


def x_at(s, level, n=16, seed=0):
    """n draws of x_level from the Gaussian's marginal at ``level`` (G1), float64."""
    return GAUSSIAN.at_level(s, level).sample(n, torch.Generator().manual_seed(seed))


def max_err(a, b):
    return (a - b).abs().max().item()


def alternating_grid(i_start, i_stop, pairs):
    """Levels from i_start to i_stop (then 0) with level steps d, 2d, d, 2d, ...: step ratios r ~ 2 and ~ 1/2."""
    d, rem = divmod(i_start - i_stop, 3 * pairs)
    assert rem == 0
    levels = [i_start]
    for _ in range(pairs):
        levels += [levels[-1] - d, levels[-1] - 3 * d]
    assert levels[-1] == i_stop
    return levels + [0]


# ----------------------------------------------------------------------------- 1. the closed form


def test_flow_map_is_the_limit_of_solvers_on_every_level():
    """The closed form is the ODE both solvers discretize: on every level of linear(10000) from 5000 to 1000.

    The eps* used here equals dgm's oracle (1-component mixture). DDIM is first order: its error is
    2.2e-4 at this resolution (O(1/L)), bound 5e-4. DPM-Solver++(2M) is second order: 3.6e-8, bound 2e-7.
    A wrong reference would fail both.
    Mutations caught: DDIM's direction coefficient written as a variance (1 - alpha_bar_j^2) instead of
    its square root, or with sigma_bar_i in place of sigma_bar_j (DDIM errors ~2); the 2M multistep
    correction dropped (2M error 2.2e-4 > 2e-7).
    """
    s = dgm.Schedule.linear(10000)
    eps_fn = gaussian_eps_star(s)
    x = x_at(s, 5000)
    for level in (1, 1000, 5000, 10000):
        i = torch.full((x.shape[0],), level)
        assert max_err(eps_fn(x, i), GAUSSIAN.eps_star(s, x, i)) < 1e-12
    grid = list(range(5000, 999, -1)) + [0]
    exact = flow_map(s, x, 5000, 1000)
    assert max_err(states(sample_ddim, eps_fn, x, s, grid)[1000], exact) < 5e-4
    assert max_err(states(sample_dpmpp_2m, eps_fn, x, s, grid)[1000], exact) < 2e-7


# ----------------------------------------------------------------------------- 2. convergence order


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("solver, lo, hi", [(sample_ddim, 0.8, 1.3), (sample_dpmpp_2m, 1.7, 2.5)],
                         ids=["ddim", "dpm++2m"])
def test_global_convergence_order(solver, lo, hi, schedule):
    """Global error at level 50 from level 434 falls like h (DDIM) and h^2 (DPM-Solver++(2M)).

    Grids of 16, 32, 64, 128 steps alternate level steps d, 2d (r ~ 2 and ~ 1/2, so the variable-step
    formula is exercised); the observed orders log2(e_n / e_2n) are 0.99-1.01 (DDIM) and 1.83-2.06 (2M) on
    both schedules and 6 seeds. The end levels stay inside both schedules: cosine(1000) jumps by 3.5 in lam
    between levels 1000 and 999 (max_var clipping), a step that refinement never shrinks, and runs from
    level 1000 are still pre-asymptotic (2M orders 1.4-1.7) at 128 steps.
    Mutations caught: the multistep correction dropped (2M becomes DDIM: orders 1.00); DDIM stepping with
    the current level's sigma_bar_i instead of sigma_bar_j in the eps direction (no convergence).
    Not caught, by design of the mathematics: r -> 1/r. Its leading local error (h_{j-1}^2 - h_j^2)/2 times
    a smooth factor telescopes over the steps, so the global order stays 2 (measured 1.8-1.95, with 2-3x
    larger errors); test_local_order_of_the_multistep_update catches it.
    """
    s = dgm.Schedule.named(schedule, 1000)
    eps_fn = gaussian_eps_star(s)
    x = x_at(s, 434)
    exact = flow_map(s, x, 434, 50)
    errors = [max_err(states(solver, eps_fn, x, s, alternating_grid(434, 50, pairs))[50], exact)
              for pairs in (8, 16, 32, 64)]
    orders = [math.log2(e / e_half) for e, e_half in zip(errors, errors[1:], strict=False)]
    assert all(lo <= p <= hi for p in orders), (errors, orders)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_local_order_of_the_multistep_update(schedule):
    """One multistep update of DPM-Solver++(2M) has local error O(h^3); r -> 1/r or no correction gives O(h^2).

    Grid [400, 400 - d, 400 - 3d, 0], d = 16, 8, 4, 2: the step 400 - d -> 400 - 3d (r ~ 1/2) is compared
    with the exact flow from the solver's own x at 400 - d. The history x0_hat(400) sits on the exact
    trajectory through that x only up to the first step's O(d^2) error, which enters the update as O(d^3).
    Observed orders 2.89-3.13 over 10 seeds and both schedules (bounds 2.7-3.4).
    Mutations caught: r inverted (orders 2.0-2.1); the multistep correction dropped, or the second step
    left first order (orders 2.0-2.1).
    """
    s = dgm.Schedule.named(schedule, 1000)
    eps_fn = gaussian_eps_star(s)
    x = x_at(s, 400)
    errors = []
    for d in (16, 8, 4, 2):
        out = states(sample_dpmpp_2m, eps_fn, x, s, [400, 400 - d, 400 - 3 * d, 0])
        errors.append(max_err(out[400 - 3 * d], flow_map(s, out[400 - d], 400 - d, 400 - 3 * d)))
    orders = [math.log2(e / e_half) for e, e_half in zip(errors, errors[1:], strict=False)]
    assert all(2.7 <= p <= 3.4 for p in orders), (errors, orders)


# ----------------------------------------------------------------------------- 3. the update by hand


def test_dpmpp_2m_steps_by_hand(mixture):
    """Every step of DPM-Solver++(2M) on a non-uniform grid equals E41 written out here, to 1e-10 in float64.

    Grid [83, 52, 31, 9, 0] of cosine(100) (r = 1.78, then 0.55), driven by the 3-component mixture oracle.
    Mutations caught: the multistep correction dropped; r inverted; the second step left first order.
    """
    s = dgm.Schedule.cosine(100)
    eps_fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    grid = [83, 52, 31, 9, 0]
    x_L = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    seen = []
    out = sample_dpmpp_2m(eps_fn, x_L, s, grid, callback=lambda d: seen.append((d["next_level"], d["x"])))

    a = [s.alpha_bar[t].item() for t in grid]
    sigma = [s.sigma_bar[t].item() for t in grid]
    lam = [math.log(a[j] / sigma[j]) for j in range(len(grid) - 1)]  # lam at level 0 is +inf

    def x0_hat(x, j):
        eps = mixture.eps_star(s, x, grid[j])
        return (x - sigma[j] * eps) / a[j]  # E31

    x, x0_prev = x_L, None
    for j in range(1, len(grid)):
        x0_cur = x0_hat(x, j - 1)
        if grid[j] == 0:
            x = x0_cur  # lower-order final step: sigma_M = 0, a_M (1 - e^{-h}) = 1
        else:
            h = lam[j] - lam[j - 1]
            if j == 1:
                D = x0_cur
            else:
                r = (lam[j - 1] - lam[j - 2]) / h
                D = (1 + 1 / (2 * r)) * x0_cur - 1 / (2 * r) * x0_prev
            x = (sigma[j] / sigma[j - 1]) * x - a[j] * math.expm1(-h) * D
        x0_prev = x0_cur
        assert seen[j - 1][0] == grid[j]
        assert max_err(seen[j - 1][1], x) < 1e-10, (grid[j], max_err(seen[j - 1][1], x))
    assert max_err(out, x) < 1e-10


# ----------------------------------------------------------------------------- 4. diffusers


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers' set_timesteps
def test_dpmpp_2m_matches_diffusers_dpmsolver_multistep(mixture, require):
    """dgm's DPM-Solver++(2M) equals diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, epsilon) at
    every step, the final (first-order) step included, on a non-uniform grid of linear(1000).

    The scheduler gets the schedule as ``trained_betas`` = beta**2 and timesteps = levels - 1 (Ho index);
    ``final_sigmas_type="zero"`` makes its last step first order, returning x0_hat, as dgm does. Its
    midpoint form D0 + D1/2 with D1 = (m0 - m1)/r equals E41's D.
    Tolerance 2e-5: diffusers holds the schedule, its sigmas and the state in float32. The first x0_hat
    divides by alpha_bar_1000 = 6.4e-3, so float32 roundoff (6e-8 relative on |x| ~ 3) becomes ~3e-5 in
    x0_hat and ~6e-7 in x after the first step; measured max gap 2.6e-6 over all steps, the same as dgm's own
    float32 run against its float64 run (2.0e-6). (The cosine schedule, with alpha_bar_1000 = 5e-5, is
    float32-ill-conditioned there: both gaps are ~2e-3, so it is not used.)
    Mutations caught: the multistep correction dropped (gap 1.8e-3 at the first multistep step); r inverted
    (gap 3.1e-4 there); the second step left first order.
    """
    diffusers = require("diffusers")  # a skip without it; a failure under CI (tests/conftest.py)
    s = dgm.Schedule.linear(1000)
    grid = [1000, 870, 700, 560, 400, 290, 170, 90, 35, 0]
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=s.L, trained_betas=s.to_diffusers()["betas"].numpy(), solver_order=2,
        algorithm_type="dpmsolver++", prediction_type="epsilon", lower_order_final=True,
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(timesteps=[level - 1 for level in grid[:-1]])
    assert scheduler.timesteps.tolist() == [level - 1 for level in grid[:-1]]

    x_L = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = []
    sample_dpmpp_2m(lambda x, i: mixture.eps_star(s, x, i), x_L, s, grid, callback=lambda d: ours.append(d["x"]))
    x = x_L.float()
    for t, ours_x in zip(scheduler.timesteps.tolist(), ours, strict=True):
        eps = mixture.eps_star(s, x, torch.full((x.shape[0],), t + 1))
        x = scheduler.step(eps, t, x).prev_sample
        assert max_err(x.double(), ours_x) < 2e-5, (t, max_err(x.double(), ours_x))


# ----------------------------------------------------------------------------- 5. SDE-DPM-Solver++(2M)


def test_sde_dpmpp_2m_first_order_step_is_ddim_eta_one(mixture):
    """Its first step (first order) is DDIM's with eta = 1 (E40) from the same noise; so on a grid with one
    positive level between L and 0 the whole samplers agree. Mutations caught: the noise scaled by
    sqrt(1 - e^{-h}) (gap ~0.3), the e^{-h} on x dropped, x0_hat's weight alpha (1 - e^{-h})."""
    s = dgm.Schedule.linear(1000)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x_L = torch.randn(512, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for grid in ([1000, 400, 0], [1000, 120, 0], [700, 650, 0]):
        ours = sample_sde_dpmpp_2m(fn, x_L, s, grid, generator=torch.Generator().manual_seed(1))
        ddim = sample_ddim(fn, x_L, s, grid, eta=1.0, generator=torch.Generator().manual_seed(1))
        assert max_err(ours, ddim) < 1e-12, (grid, max_err(ours, ddim))


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers' set_timesteps
def test_sde_dpmpp_2m_matches_diffusers_sde_dpmsolver(mixture, require):
    """dgm's SDE-DPM-Solver++(2M) equals diffusers' DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++",
    order 2, midpoint) at every step when both get the same noise (diffusers' ``variance_noise``), on the grid and
    schedule of the DPM-Solver++(2M) test above (same float32 tolerance, same reason).
    Mutations caught: the second-order term dropped or doubled (diffusers' midpoint form has D0 + D1/2), the
    noise's sqrt(1 - e^{-2h}) as sqrt(1 - e^{-h}), sigma_j e^{-h} / sigma_{j-1} on x without e^{-h}."""
    diffusers = require("diffusers")
    s = dgm.Schedule.linear(1000)
    grid = [1000, 870, 700, 560, 400, 290, 170, 90, 35, 0]
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=s.L, trained_betas=s.to_diffusers()["betas"].numpy(), solver_order=2,
        algorithm_type="sde-dpmsolver++", solver_type="midpoint", prediction_type="epsilon",
        lower_order_final=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(timesteps=[level - 1 for level in grid[:-1]])
    x_L = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = []
    sample_sde_dpmpp_2m(lambda x, i: mixture.eps_star(s, x, i), x_L, s, grid,
                        generator=torch.Generator().manual_seed(1), callback=lambda d: ours.append(d["x"]))
    replay = torch.Generator().manual_seed(1)  # the noises dgm drew, in order (none for the step to level 0)
    noises = [rng.randn(x_L.shape, generator=replay, dtype=torch.float64) for _ in grid[1:-1]]
    noises.append(torch.zeros_like(x_L))
    x = x_L.float()
    for t, z, ours_x in zip(scheduler.timesteps.tolist(), noises, ours, strict=True):
        eps = mixture.eps_star(s, x, torch.full((x.shape[0],), t + 1))
        x = scheduler.step(eps, t, x, variance_noise=z.float()).prev_sample
        assert max_err(x.double(), ours_x) < 2e-5, (t, max_err(x.double(), ours_x))
