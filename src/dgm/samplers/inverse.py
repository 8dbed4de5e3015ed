"""``dgm.sample_inverse``: posterior sampling for linear inverse problems y = A x + sigma_y n with a pixel-space
(or vector) DDPM denoiser, by replacement, RePaint, DPS, PiGDM or sequential Monte Carlo.

A is a (d_y, D) matrix or a boolean mask of the per-example data shape (True = known; inpainting): a mask is
the selection matrix of its known entries, and y then holds the known values in mask order (row-major).
The methods live in ``inverse_replacement`` ("replace", "repaint"), ``inverse_guidance`` ("dps", "pigdm")
and ``inverse_smc`` ("smc"); ``inverse_operator`` holds A. Each method's settings are keyword options with
the defaults of ``INVERSE_OPTIONS``; ``INVERSE_STEPS`` gives the default number of visited levels.

Network calls. The denoiser is wrapped and counted: ``nfe`` is the number of denoiser evaluations per
output draw (the rows it was called on, divided by the rows of y), ``calls`` the number of batched calls
(one per visited level for all methods but RePaint, whose jumps revisit levels), ``vjp`` the backward passes
through the network per draw (DPS and PiGDM: one per level). ``steps`` is the NFE only for "replace",
"dps" and "pigdm"; RePaint costs ``repaint_nfe(steps, jump, resamplings)`` and SMC ``steps * particles``
per draw (its particles go through the network in one batch, so its ``calls`` is still ``steps``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core import rng
from dgm.core.parameterization import call_denoiser
from dgm.core.schedule import Schedule
from dgm.samplers.grid import level_grid
from dgm.samplers.inverse_guidance import sample_dps, sample_pigdm
from dgm.samplers.inverse_operator import LinearObservation, check_sigma_y
from dgm.samplers.inverse_replacement import sample_repaint, sample_replace
from dgm.samplers.inverse_smc import sample_smc

__all__ = ["INVERSE_METHODS", "INVERSE_OPTIONS", "INVERSE_STEPS", "sample_inverse"]

INVERSE_METHODS = ("replace", "repaint", "dps", "pigdm", "smc")
# Each method's options and their defaults:
# repaint: jump length and resamplings of Lugmayr et al. 2022 (j = 10, r = 10);
# dps: the normalized step of Chung et al. 2023 (1.0, their FFHQ inpainting setting);
# pigdm: DDIM's eta (1.0: ancestral steps; Song et al. 2023 sample with eta = 1);
# smc: particles per draw (16; the cost per draw is steps * particles).
INVERSE_OPTIONS = {
    "replace": {},
    "repaint": {"jump": 10, "resamplings": 10},
    "dps": {"step": 1.0},
    "pigdm": {"eta": 1.0},
    "smc": {"particles": 16},
}
# Levels visited when ``steps`` is None (capped at L); None = every level. RePaint's 250 and PiGDM's 100 are
# the papers' respaced schedules; DPS runs all 1000 levels in Chung et al.; SMC's 100 keeps 16 particles
# at 1,600 NFE.
INVERSE_STEPS = {"replace": None, "repaint": 250, "dps": None, "pigdm": 100, "smc": 100}


class _CountedDenoiser:
    """``den(x (N, D), level) -> eps_hat (N, D)``: the user's denoiser on rows, reshaped to the data shape,
    with ``cond`` repeated for the N // B particles per row; counts calls, rows and backward passes."""

    def __init__(self, eps_fn, shape: tuple, cond, batch: int):
        self.eps_fn, self.shape, self.cond, self.batch = eps_fn, shape, cond, batch
        self.calls = self.rows = self.vjps = 0

    def __call__(self, x: Tensor, level: int) -> Tensor:
        n = x.shape[0]
        i = torch.full((n,), level, dtype=torch.long, device=x.device)
        cond = self.cond
        if cond is not None and n != self.batch:
            cond = cond.repeat_interleave(n // self.batch, 0)
        eps = call_denoiser(self.eps_fn, x.reshape(n, *self.shape), i, cond)
        if tuple(eps.shape) != (n, *self.shape):
            raise ValueError(f"the denoiser returned shape {tuple(eps.shape)} for input {(n, *self.shape)}")
        self.calls += 1
        self.rows += n
        return eps.reshape(n, -1)

    def vjp(self, out: Tensor, x: Tensor, v: Tensor) -> Tensor:
        """v^T d out / d x by one backward pass (counted)."""
        self.vjps += x.shape[0]
        return torch.autograd.grad(out, x, grad_outputs=v)[0]


def _check_options(method: str, options: dict) -> dict:
    """The method's options (defaults filled in), or ValueError naming an unknown option or a bad value."""
    allowed = INVERSE_OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        names = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for method {method!r}; its options: {names}")
    opts = {**allowed, **options}
    for name in ("jump", "resamplings", "particles"):
        if name in opts:
            value = opts[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("step", "eta"):
        if name in opts:
            value = opts[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return opts


def _check_y(y, op: LinearObservation, device) -> Tensor:
    y = torch.as_tensor(y, device=device)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (B, d_y), got shape {tuple(y.shape)}")
    if y.shape[1] != op.d_y:
        what = "known entries in the mask" if op.mask is not None else "rows of A"
        raise ValueError(f"y has d_y = {y.shape[1]} columns, but there are {op.d_y} {what}")
    if y.shape[0] < 1:
        raise ValueError(f"y must hold at least one row, got shape {tuple(y.shape)}")
    if not y.is_floating_point():
        y = y.to(torch.get_default_dtype())
    if not torch.isfinite(y).all():
        raise ValueError("y holds NaN or infinite values")
    return y


def sample_inverse(eps_fn, s: Schedule, y, A, sigma_y, *, method: str, steps: int | None = None,
                   generator: torch.Generator | None = None, spacing: str = "uniform", cond=None,
                   return_stats: bool = False, **options):
    """One draw of x from p(x | y) per row of y (B, d_y), for y = A x + sigma_y n, n ~ N(0, I).

    ``A``: a (d_y, D) matrix of full row rank (x is (B, D)) or a boolean mask of the per-example data shape,
    True = known (x is (B, *mask.shape), y holds the known values in mask order). ``sigma_y`` >= 0 is the
    noise std: "replace" and "repaint" treat y as noiseless whatever it is (their draws match y on the known
    part exactly); "dps" does not read it (its step absorbs it); "pigdm" uses it in (r^2 A A^T + sigma_y^2 I);
    "smc" targets the exact posterior for any sigma_y >= 0 (at 0 its draws match y exactly).

    ``method``: one of ``INVERSE_METHODS``; its options (``INVERSE_OPTIONS``): repaint ``jump``,
    ``resamplings``; dps ``step``; pigdm ``eta``; smc ``particles``. ``steps``: the number of visited levels
    (default ``INVERSE_STEPS``: every level for replace and dps, 250 for repaint, 100 for pigdm and smc),
    spaced by ``spacing`` ("uniform", the papers' respacing, or "quadratic") with ``dgm.samplers.grid``.
    ``cond``: labels (B,) for a conditional denoiser. ``generator`` seeds every draw.

    Returns the draws in y's floating dtype on y's device; with ``return_stats`` also a dict with ``nfe``
    (denoiser evaluations per draw), ``calls`` (batched denoiser calls), ``vjp`` (backward passes per
    draw), ``steps`` (visited levels) and, for "smc", ``resamples``, ``ess_min``, ``particles`` (the final
    cloud, (B, particles, *shape)) and ``log_weights`` ((B, particles), normalized): the weighted cloud of a
    row approximates p(x | y) as a whole, so one row with many particles gives many (correlated) draws.
    """
    if method not in INVERSE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(INVERSE_METHODS)}")
    opts = _check_options(method, options)
    sigma_y = check_sigma_y(sigma_y)
    device = y.device if isinstance(y, Tensor) else None
    y_in = torch.as_tensor(y, device=device)
    dtype = y_in.dtype if y_in.is_floating_point() else torch.get_default_dtype()
    op = LinearObservation(A, dtype=dtype, device=y_in.device)
    y = _check_y(y_in, op, y_in.device).to(dtype)
    if steps is None:
        steps = INVERSE_STEPS[method]
        steps = s.L if steps is None else min(steps, s.L)
    grid = level_grid(s, steps, spacing)
    B = y.shape[0]
    if cond is not None:
        cond = torch.as_tensor(cond, device=y.device)
        if cond.shape != (B,):
            raise ValueError(f"cond must hold one label per row of y, shape ({B},), got {tuple(cond.shape)}")
    den = _CountedDenoiser(eps_fn, op.shape, cond, B)
    n = B * opts.get("particles", 1)
    x_L = rng.randn((n, *op.shape), generator=generator, dtype=dtype, device=y.device).reshape(n, op.D)
    extra: dict = {}
    kw = dict(generator=generator)
    with torch.no_grad():
        if method == "replace":
            x = sample_replace(den, s, x_L, grid, op, y, **kw)
        elif method == "repaint":
            x = sample_repaint(den, s, x_L, grid, op, y, jump=opts["jump"], resamplings=opts["resamplings"], **kw)
        elif method == "dps":
            x = sample_dps(den, s, x_L, grid, op, y, step=float(opts["step"]), **kw)
        elif method == "pigdm":
            x = sample_pigdm(den, s, x_L, grid, op, y, sigma_y, eta=float(opts["eta"]), **kw)
        elif method == "smc":
            x, extra = sample_smc(den, s, x_L, grid, op, y, sigma_y, particles=opts["particles"], **kw)
        else:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(INVERSE_METHODS)}")
    x = x.detach().reshape(B, *op.shape)
    if not return_stats:
        return x
    if "particles" in extra:
        extra["particles"] = extra["particles"].detach().reshape(B, -1, *op.shape)
    stats = {"nfe": den.rows // B, "calls": den.calls, "vjp": den.vjps // B, "steps": steps, **extra}
    return x, stats
