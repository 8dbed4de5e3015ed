"""`dgm verify`: every check of dgm passes on a small budget, and each one fails when the dgm function it
exercises is broken. Each mutation test monkeypatches one function with a plausible bug, named in its
docstring, and asserts that the row it targets no longer passes."""

import math

import pytest
import torch

import dgm.evaluation.ode
import dgm.evaluation.verify as verify
import dgm.evaluation.verify.kernels as verify_kernels
import dgm.evaluation.verify.likelihood as verify_likelihood
import dgm.evaluation.verify.losses as verify_losses
import dgm.evaluation.verify.samplers as verify_samplers
import dgm.samplers.ancestral
import dgm.samplers.ddim
from dgm.cli import verify as cli_verify
from dgm.cli.main import main
from dgm.core import bound, flow, losses, reverse
from dgm.core.forward import at_level
from dgm.core.oracle import GaussianMixture
from dgm.evaluation.verify import CHECKS, ERRATA, Row, demo_mixture, format_table, run_checks
from dgm.models.vae.analysis import decoder_weights, encoder_log_prob

ERRATA_KEYS = {"erratum-18", "erratum-25", "errata-22-24", "erratum-27", "erratum-12"}


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _row(rows, key: str) -> Row:
    (row,) = [r for r in rows if r.key == key]
    return row


def _catches(monkeypatch, target, name: str, mutant, run, keys) -> None:
    """The rows ``keys`` of ``run()`` pass with dgm as it is, and all fail once ``target.name`` is ``mutant``
    (``run`` seeds its own generator, so both runs see the same draws)."""
    rows = run()
    assert all(_row(rows, k).passed for k in keys), format_table(rows)
    monkeypatch.setattr(target, name, mutant)
    rows = run()
    assert not any(_row(rows, k).passed for k in keys), format_table(rows)


@pytest.fixture(scope="module")
def small_run():
    return run_checks(n=3000, levels=1000, seed=0)


def test_every_check_passes_small(small_run):
    table = format_table(small_run)
    checks = [r for r in small_run if r.section == CHECKS]
    assert len(checks) == 28 and all(r.passed for r in checks), table
    errata = [r for r in small_run if r.section == ERRATA]
    assert {r.key for r in errata} == ERRATA_KEYS and all(r.passed for r in errata), table


def test_z_is_derived_from_the_number_of_statistics(small_run):
    assert sum(r.stats for r in small_run if r.section == CHECKS) == verify.N_STATS
    assert all(r.stats == 0 for r in small_run if r.section == ERRATA)
    # Z is the two-sided normal quantile at FALSE_ALARM / N_STATS
    assert math.erfc(verify.Z / math.sqrt(2)) == pytest.approx(verify.FALSE_ALARM / verify.N_STATS, rel=1e-6)


def test_table_has_two_sections_and_names_the_post(small_run):
    table = format_table(small_run)
    assert table.index(CHECKS) < table.index(ERRATA)
    assert "summary post" in table and "seed" not in table.lower()


# ---------------------------------------------------------------------------------------- forward process


def _q_step_returns_x_prev(s, x_prev, i, eps):
    return x_prev


def _q_step_no_root(s, x_prev, i, eps):
    return at_level(s.alpha, i, x_prev) * x_prev + at_level(s.beta**2, i, x_prev) * eps


def _q_step_alpha_bar(s, x_prev, i, eps):
    return at_level(s.alpha_bar, i, x_prev) * x_prev + at_level(s.beta, i, x_prev) * eps


def _q_sample_alpha(s, x0, i, eps):
    return at_level(s.alpha, i, x0) * x0 + at_level(s.sigma_bar, i, x0) * eps


def _q_sample_no_root(s, x0, i, eps):
    return at_level(s.alpha_bar, i, x0) * x0 + at_level(s.sigma_bar**2, i, x0) * eps


@pytest.mark.parametrize("name, mutant, keys", [
    ("q_step", _q_step_returns_x_prev, ("forward-step", "composition")),
    ("q_step", _q_step_no_root, ("forward-step", "composition")),
    ("q_step", _q_step_alpha_bar, ("forward-step", "composition")),
    ("q_sample", _q_sample_alpha, ("perturbation",)),
    ("q_sample", _q_sample_no_root, ("perturbation",)),
])
def test_forward_rows_catch(monkeypatch, name, mutant, keys):
    """Mutations: q_step returns x_prev unchanged; q_step's noise scale beta_i^2 (a dropped square root);
    q_step scales by alpha_bar_i instead of alpha_i; q_sample scales by alpha_i instead of alpha_bar_i;
    q_sample's noise scale 1 - alpha_bar_i^2 (the summary post's dropped root, erratum 18)."""
    _catches(monkeypatch, verify_kernels, name, mutant, lambda: verify_kernels.check_forward(_g(), 1000), keys)


# ---------------------------------------------------------------------------------------- reverse kernels


def _posterior_post_sigma2(s, x_i, x0, i):
    mean, _ = reverse.posterior(s, x_i, x0, i)
    v = torch.zeros_like(s.beta)
    v[1:] = (1 - s.alpha_bar[:-1]) / (1 - s.alpha_bar[1:]) * s.beta[1:] ** 2
    return mean, at_level(v, i, x0)


def _posterior_wrong_A(s, x_i, x0, i):
    _, var = reverse.posterior(s, x_i, x0, i)
    A = s.alpha_bar * s.beta**2 / (1 - s.alpha_bar**2).clamp_min(1e-300)
    return at_level(A, i, x0) * x0 + at_level(s.B, i, x0) * x_i, var


@pytest.mark.parametrize("mutant", [_posterior_post_sigma2, _posterior_wrong_A])
def test_posterior_row_catches(monkeypatch, mutant):
    """Mutations: posterior's variance is the summary post's (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i) beta_i^2
    (erratum 25); posterior's A_i uses alpha_bar_i where E24 has alpha_bar_{i-1}."""
    _catches(monkeypatch, verify_kernels, "posterior", mutant, verify_kernels.check_posterior, ["posterior"])


def test_reverse_kernel_row_catches(monkeypatch):
    """Mutation: the oracle's reverse kernel (G7) takes the responsibilities r_k at level i - 1 instead of i."""
    original = GaussianMixture.reverse_kernel

    def broken(self, s, x_i, i):
        _, m_t, S_t = original(self, s, x_i, i)
        return self._parts(s, x_i.double(), i - 1)[0], m_t, S_t

    _catches(monkeypatch, GaussianMixture, "reverse_kernel", broken,
             lambda: verify_kernels.check_reverse_kernel(demo_mixture(), _g(), 500), ["reverse-kernel"])


def test_theorem_row_catches(monkeypatch):
    """Mutation: posterior's A_i uses alpha_bar_i where E24 has alpha_bar_{i-1}, so the conditional KL and C'
    of E23 are computed against the wrong kernel."""
    _catches(monkeypatch, verify_kernels, "posterior", _posterior_wrong_A,
             lambda: verify_kernels.check_theorem(demo_mixture(), _g(), 6000), ["theorem"])


# --------------------------------------------------------------------------------------- eps* and the mean


def test_eps_star_row_catches(monkeypatch):
    """Mutation: the oracle's eps* omits the factor sigma_bar_i (it returns -grad log p_i, the score's negative)."""
    original = GaussianMixture.eps_star
    _catches(monkeypatch, GaussianMixture, "eps_star", lambda self, s, x, i: original(self, s, x, i) / s.sigma_bar[i],
             lambda: verify_kernels.check_eps_star(demo_mixture(), _g(), 200), ["eps-star"])


def _eps_to_mean_no_alpha(s, x_i, eps, i):
    return x_i - at_level(s.beta**2, i, x_i) / at_level(s.sigma_bar, i, x_i) * eps


def _eps_to_mean_beta(s, x_i, eps, i):
    return (x_i - at_level(s.beta, i, x_i) / at_level(s.sigma_bar, i, x_i) * eps) / at_level(s.alpha, i, x_i)


@pytest.mark.parametrize("mutant, key", [(_eps_to_mean_no_alpha, "eps-to-mean"), (_eps_to_mean_beta, "constant-C")])
def test_mean_rows_catch(monkeypatch, mutant, key):
    """Mutations: eps_to_mean forgets the 1/alpha_i of E29 (caught by the E29 row); eps_to_mean scales eps by
    beta_i / sigma_bar_i instead of beta_i^2 / sigma_bar_i (caught by the E30 row)."""
    _catches(monkeypatch, verify_kernels, "eps_to_mean", mutant, lambda: verify_kernels.check_mean(_g()), [key])


# ------------------------------------------------------------------------------------- losses and the bound


def _loss_simple_ho_t(eps_fn, s, x0, **kw):
    return losses.loss_simple(lambda x, i: eps_fn(x, i - 1), s, x0, **kw)


def _vlb_fixed_large(eps_fn, s, x0, **kw):
    return bound.vlb(eps_fn, s, x0, variance="fixed_large", **kw)


@pytest.mark.parametrize("name, mutant, key, n", [
    ("loss_simple", _loss_simple_ho_t, "loss-simple", 20_000),
    ("loss_ddpm", verify_losses._loss_ddpm_post_weight, "loss-ddpm", 2000),
    ("vlb", _vlb_fixed_large, "vlb", 2000),
])
def test_loss_rows_catch(monkeypatch, name, mutant, key, n):
    """Mutations: loss_simple calls the denoiser with Ho's index t = i - 1 instead of the level i (an 11%
    excess over the floor: z = 10 at the default n = 20000, too little to see at n = 2000); loss_ddpm weighs by
    the summary post's 1 / sqrt(2 sigma2(i)) (erratum 27); vlb uses the reverse variance beta_i^2 (fixed
    large) where the model's is sigma2(i)."""
    _catches(monkeypatch, verify_losses, name, mutant, lambda: verify_losses.check_losses(demo_mixture(), _g(), n),
             [key])


# --------------------------------------------------------------------------------------------- VAE blur


def _decoder_numerator_only(q_mean, q_std, data):
    return lambda z: torch.exp(encoder_log_prob(z, q_mean, q_std)) @ data.double() / data.shape[0]


def _blur_floor_no_mean(q_mean, q_std, data, z):
    return (decoder_weights(z, q_mean, q_std) @ (data.double() ** 2).sum(1)).mean().item()


@pytest.mark.parametrize("name, mutant, key", [
    ("optimal_decoder", _decoder_numerator_only, "optimal-decoder"),
    ("blur_floor", _blur_floor_no_mean, "blur-floor"),
])
def test_vae_rows_catch(monkeypatch, name, mutant, key):
    """Mutations: optimal_decoder returns E16's numerator E[q(z|x) x] without dividing by q(z); blur_floor
    forgets to subtract |mu*(z)|^2 (it returns E sum_n w_n |x_n|^2)."""
    _catches(monkeypatch, verify_losses, name, mutant, lambda: verify_losses.check_vae(_g(), 1000), [key])


# ----------------------------------------------------------------------------------------------- samplers


def test_ancestral_row_catches(monkeypatch):
    """Mutation: ancestral sampling adds no noise in its reverse steps (the reverse variance reads as 0)."""
    _catches(monkeypatch, dgm.samplers.ancestral, "reverse_variance", lambda *a, **k: 0.0,
             lambda: verify_samplers.check_samplers(demo_mixture(), _g(), 500, 1000, runs=(("ancestral", None),)),
             ["sampler-ancestral"])


def test_ddim_row_catches(monkeypatch):
    """Mutation: DDIM's direction coefficient is 1 - alpha_bar_j^2 instead of its square root (E40)."""
    original = dgm.samplers.ddim.ddim_step

    def no_root(s, x_i, eps, i, j, *, eta=0.0, noise=None):
        a2 = s.alpha_bar[j].item() ** 2
        return original(s, x_i, eps, i, j, eta=eta, noise=noise) + ((1 - a2) - math.sqrt(1 - a2)) * eps

    _catches(monkeypatch, dgm.samplers.ddim, "ddim_step", no_root,
             lambda: verify_samplers.check_samplers(demo_mixture(), _g(), 2000, 1000, runs=(("ddim", 50),)),
             ["sampler-ddim"])


def test_dpm_solver_row_catches(monkeypatch):
    """Mutation: DPM-Solver++(2M) loses its second-order term D_j, which leaves the first-order step, that is
    deterministic DDIM (E41), at the same 10 NFE."""
    original = verify_samplers.sample
    _catches(monkeypatch, verify_samplers, "sample",
             lambda *a, sampler, **k: original(*a, sampler="ddim" if sampler == "dpm++2m" else sampler, **k),
             lambda: verify_samplers.check_samplers(demo_mixture(), _g(), 3000, 1000, runs=(("dpm++2m", 10),)),
             ["sampler-dpm++2m"])


# ------------------------------------------------------------------------------------- tight likelihoods


def _gamma_of_abs(eps_fn, s, x0, **kw):
    # |sqrt|eps_hat||^2 = |eps_hat|: the mean of |eps_hat| per coordinate where A1 has |eps_hat|^2
    return reverse.estimate_gamma(lambda x, i: eps_fn(x, i).abs().sqrt(), s, x0, **kw)


def _gamma_over_d_twice(eps_fn, s, x0, **kw):
    gamma, se = reverse.estimate_gamma(eps_fn, s, x0, **kw)
    return gamma / x0.shape[1], se / x0.shape[1]


@pytest.mark.parametrize("mutant", [_gamma_of_abs, _gamma_over_d_twice])
def test_gamma_row_catches(monkeypatch, mutant):
    """Mutations: estimate_gamma averages |eps_hat| instead of |eps_hat|^2; estimate_gamma divides by D twice."""
    _catches(monkeypatch, verify_likelihood, "estimate_gamma", mutant,
             lambda: verify_likelihood.check_gamma(demo_mixture(), _g(), 2000), ["analytic-gamma"])


def test_eps_star_divergence_row_catches(monkeypatch):
    """Mutation: the oracle's div eps* drops the term |sum_k r_k u_k|^2 of F4."""

    def broken(self, s, x_i, i):
        r, sol, a = self._parts(s, x_i.double(), i)
        Sigma = a**2 * self.covs + (1 - a**2) * torch.eye(self.D, dtype=torch.float64)
        tr_inv = torch.diagonal(torch.linalg.inv(Sigma), dim1=1, dim2=2).sum(-1)
        sigma = math.sqrt(1 - a**2)
        return sigma * (r * (tr_inv[None] - (sol**2).sum(-1))).sum(1)

    _catches(monkeypatch, GaussianMixture, "eps_star_divergence", broken,
             lambda: verify_likelihood.check_eps_star_divergence(demo_mixture(), _g()), ["eps-star-divergence"])


@pytest.mark.parametrize("name, mutant", [
    ("pf_divergence", lambda *a: -flow.pf_divergence(*a)),
    ("LOG_2PI", 0.0),
])
def test_ode_row_catches(monkeypatch, name, mutant):
    """Mutations: the divergence of the probability-flow drift (F2) with its sign flipped; the prior term
    -log N(x_L; 0, I) of F3 without its normalizer D/2 log 2 pi."""
    _catches(monkeypatch, dgm.evaluation.ode, name, mutant,
             lambda: verify_likelihood.check_ode(demo_mixture(), _g(), 300), ["ode-nll"])


_ORIGINAL_BETWEEN = reverse.AnalyticVariance.between
_ORIGINAL_LEVEL_KL = bound._level_kl


def _between_gamma_swapped(self, s, i, j):
    return _ORIGINAL_BETWEEN(reverse.AnalyticVariance(1 - self.gamma), s, i, j)


def _level_kl_no_log(s, lvl, err, v):
    # KL(N(mu, sigma2) || N(mu_phi, v)) without its D/2 log(v / sigma2); v is a float for an analytic variance
    return _ORIGINAL_LEVEL_KL(s, lvl, err, v) - 0.5 * err[0].numel() * math.log(v / s.sigma2[lvl].item())


@pytest.mark.parametrize("target, name, mutant", [
    (reverse.AnalyticVariance, "between", _between_gamma_swapped),
    (bound, "_level_kl", _level_kl_no_log),
])
def test_analytic_bound_row_catches(monkeypatch, target, name, mutant):
    """Mutations: A2 with (1 - Gamma_i) replaced by Gamma_i (caught by the gain over fixed small); the bound's
    level KL without its log-variance term D/2 log(v / sigma2(i)) (no longer an upper bound)."""
    _catches(monkeypatch, target, name, mutant,
             lambda: verify_likelihood.check_analytic_bound(demo_mixture(), _g(), 2000), ["analytic-bound"])


# ---------------------------------------------------------------------------------------- the command


def test_exit_status_counts_checks_only(monkeypatch, capsys):
    ok = Row("a check", 0.0, "< 1", True)
    bad_erratum = Row("an erratum", 0.0, "> 1", False, section=ERRATA)
    monkeypatch.setattr(verify, "run_checks", lambda **kw: [ok, bad_erratum])
    assert main(["verify", "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 checks passed" in out and out.index(CHECKS) < out.index(ERRATA)
    monkeypatch.setattr(verify, "run_checks", lambda **kw: [Row("a check", 2.0, "< 1", False), bad_erratum])
    assert main(["verify", "--n", "100"]) == 1


def test_help_names_the_book_and_the_post(capsys):
    assert main(["verify", "--help"]) == 0
    out = capsys.readouterr().out
    assert "the book" in out and "summary post" in out and "the seed" not in out.lower()
    assert cli_verify.EXAMPLES in out


def test_rejects_a_tiny_budget():
    with pytest.raises(ValueError, match="n .* must be an integer >= 100, got 10"):
        run_checks(n=10)
    with pytest.raises(ValueError, match="levels must be an integer between 10 and 100000, got 5"):
        run_checks(levels=5)
