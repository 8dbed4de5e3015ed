"""The conditioning rows of `dgm verify` (dgm.evaluation.verify.conditioning): they pass and are in the table,
and each fails when the function it exercises is broken. Each mutation test monkeypatches one function with a
plausible bug, named in its docstring, and asserts that the row it targets no longer passes."""

import torch

import dgm.evaluation.verify.conditioning as conditioning
import dgm.evaluation.verify.table as table
import dgm.samplers.ancestral
from dgm.core.guidance import class_denoiser, sample_tilted
from dgm.core.oracle import GaussianMixture
from dgm.evaluation.verify import CHECKS, Row, demo_mixture, format_table, run_checks

KEYS = {"class-eps-star", "cfg-denoiser", "tilted-sampler", "cfg-conditional", "cfg-not-tilted", "condition-grid",
        "condition-score"}


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _row(rows, key: str) -> Row:
    (row,) = [r for r in rows if r.key == key]
    return row


def _catches(monkeypatch, target, name: str, mutant, run, keys) -> None:
    """The rows ``keys`` of ``run()`` pass with dgm as it is, and all fail once ``target.name`` is ``mutant``."""
    rows = run()
    assert all(_row(rows, k).passed for k in keys), format_table(rows)
    monkeypatch.setattr(target, name, mutant)
    rows = run()
    assert not any(_row(rows, k).passed for k in keys), format_table(rows)


def _fast_guidance():
    return conditioning.check_guidance(_g(), levels=250, draws=1000)


def test_rows_are_in_the_table_and_pass(monkeypatch):
    """run_checks holds the seven conditioning rows (the other groups stubbed out, the CFG rows made smaller),
    they pass, and three of them are z-statistics (counted in N_STATS)."""
    for name in [n for n in vars(table) if n.startswith("check_")]:
        monkeypatch.setattr(table, name, lambda *a, **k: [])
    monkeypatch.setattr(table, "check_guidance", lambda *a, **k: _fast_guidance())
    monkeypatch.setattr(table, "check_class_eps_star", conditioning.check_class_eps_star)
    monkeypatch.setattr(table, "check_condition", conditioning.check_condition)
    rows = run_checks(n=500)
    assert {r.key for r in rows} == KEYS and all(r.section == CHECKS and r.passed for r in rows), format_table(rows)
    assert sum(r.stats for r in rows) == 3


def test_class_eps_star_row_catches(monkeypatch):
    """Mutation: the conditional eps* uses the responsibilities of every component, not only the class's (it is
    then the unconditional eps*)."""
    _catches(monkeypatch, conditioning, "class_eps_star", lambda gm, labels, s, x, i, cond: gm.eps_star(s, x, i),
             lambda: conditioning.check_class_eps_star(demo_mixture(), _g(), 500), ["class-eps-star"])


def _guided_halves_swapped(eps_fn, guidance, null_class):
    """CFG with the conditional and unconditional outputs swapped: (1 + w) eps_null - w eps_c."""

    def eps_w(x, i, cond=None):
        eps_c, eps_u = eps_fn(x, i, cond=cond), eps_fn(x, i, cond=torch.full_like(cond, null_class))
        return (1 + guidance) * eps_u - guidance * eps_c

    return eps_w


def test_cfg_denoiser_row_catches(monkeypatch):
    """Mutation: guided_denoiser swaps the conditional and the null-class halves of its batched call."""
    _catches(monkeypatch, conditioning, "guided_denoiser", _guided_halves_swapped,
             lambda: conditioning.check_class_eps_star(demo_mixture(), _g(), 500), ["cfg-denoiser"])


def test_tilted_sampler_row_catches(monkeypatch):
    """Mutation: the rejection sampler ignores w (accepts every proposal, so it draws p(x|c): W1 0.22 from the
    tilted target, 13x the floor of 1,000 draws)."""
    _catches(monkeypatch, conditioning, "sample_tilted",
             lambda gm, labels, c, w, n, g: sample_tilted(gm, labels, c, 0.0, n, g), _fast_guidance, ["tilted-sampler"])


def test_cfg_conditional_row_catches_a_broken_sampler(monkeypatch):
    """Mutation: ancestral sampling adds no noise in its reverse steps (the reverse variance reads as 0)."""
    _catches(monkeypatch, dgm.samplers.ancestral, "reverse_variance", lambda *a, **k: 0.0, _fast_guidance,
             ["cfg-conditional"])


def test_cfg_conditional_row_catches_a_denoiser_that_ignores_the_class(monkeypatch):
    """Mutation: the exact denoiser ignores cond (every row gets the unconditional eps*, so w = 0 samples p(x))."""
    _catches(monkeypatch, conditioning, "class_denoiser",
             lambda gm, labels, s: lambda x, i, cond=None: class_denoiser(gm, labels, s)(x, i), _fast_guidance,
             ["cfg-conditional"])


def test_cfg_not_tilted_row_fails_for_a_sampler_of_the_tilted_target(monkeypatch):
    """The row can fail: with a 'sampler' that returns exact draws of the tilted target, CFG's W1 sits at the
    floor and the row reports it."""
    gm = conditioning.cfg_mixture()

    def tilted_draws(eps_fn, s, shape, *, generator, **kw):
        return sample_tilted(gm, [0, 1], 0, conditioning.CFG_W, shape[0], generator)

    _catches(monkeypatch, conditioning, "sample", tilted_draws, _fast_guidance, ["cfg-not-tilted"])


_CONDITION = GaussianMixture.condition


def _condition_prior_weights(self, y, A, sigma_y):
    post = _CONDITION(self, y, A, sigma_y)
    return GaussianMixture(self.weights, post.means, post.covs)


def _condition_prior_covs(self, y, A, sigma_y):
    post = _CONDITION(self, y, A, sigma_y)
    return GaussianMixture(post.weights, post.means, self.covs)


def test_condition_rows_catch(monkeypatch):
    """Mutations: condition keeps the prior's weights (no evidence N(y; A m_k, C_k) in them); condition keeps the
    prior's covariances (no update S_k - G_k A S_k). Both rows fail for each."""
    for mutant in (_condition_prior_weights, _condition_prior_covs):
        with monkeypatch.context() as m:
            _catches(m, GaussianMixture, "condition", mutant, lambda: conditioning.check_condition(_g()),
                     ["condition-grid", "condition-score"])
