"""``dgm verify``: the book's chapter-2 claims checked numerically against dgm's own code, one table row each
(EQUATIONS.md E17-E41, G1-G8, V1-V4; docs/LIKELIHOOD.md A1-A3, F1-F4), and the errata of the chapter-2
summary post as illustrations.

Two sections:
- ``CHECKS``: each row calls dgm's function (q_step, q_sample, posterior, eps_to_mean, the losses and the
  bound, the oracle, the VAE decoder, the samplers, estimate_gamma, the analytic variance, ode_nll) and
  compares it with a value computed another way (Bayes' rule on a grid, a closed form written out from beta
  alone, autograd of an exact density, an independent Monte Carlo). These rows decide the pass/fail count
  and the exit status.
- ``ERRATA``: the summary post's version of a formula beside dgm's, showing that the post's fails the
  comparison dgm's passes. Illustrations only: never counted. Each erratum reuses the draws or the floor of
  the check beside it, so it lives in that check's module.

Modules: ``rows`` (Row, Z and N_STATS, the round-off tolerance, the row builders, the demo mixture),
``kernels`` (forward process, posterior, reverse kernel, E23, eps*, the mean), ``losses`` (losses, bound,
VAE blur), ``samplers`` (samplers at eps*, their measured bias), ``likelihood`` (Gamma, div eps*, the ODE NLL,
the analytic bound), ``conditioning`` (class eps*, CFG against the tilted target, condition against Bayes' rule),
``table`` (run_checks, format_table).
"""

from dgm.evaluation.verify.rows import CHECKS, ERRATA, FALSE_ALARM, N_STATS, Row, Z, demo_mixture
from dgm.evaluation.verify.samplers import measure_sampler_bias
from dgm.evaluation.verify.table import format_table, run_checks

__all__ = ["CHECKS", "ERRATA", "FALSE_ALARM", "N_STATS", "Row", "Z", "demo_mixture", "format_table",
           "measure_sampler_bias", "run_checks"]
