"""Exact likelihood through the probability-flow ODE (Song et al. 2021; docs/LIKELIHOOD.md F1-F4).

The ODE of ``dgm.core.flow`` carries x_{t0} (the data, at a small start level t0) to x_L; along the way
d log p_t(x_t) / dt = -div(drift), so

    -log p_{t0}(x0) = -log N(x_L; 0, I) - int_{t0}^{L} div(drift)(x_t, t) dt.                        (F3)

The integral is solved with scipy's adaptive ``solve_ivp`` (RK45 by default) over the whole batch at once,
in float64. The divergence is exact (D vector-Jacobian products, for low dimension) or Hutchinson's
estimate v^T (d eps_hat / dx) v with Rademacher probes v fixed along the path (Grathwohl et al. 2019); two
independent probes per example give both the estimate and its standard error. The start level t0 is a
bias (p_{t0} is p_0 convolved with a Gaussian of variance sigma_bar(t0)^2): docs/LIKELIHOOD.md measures it
with the exact eps* of mixtures (below 0.005 nats at the default ``T_START``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from dgm.core.flow import pf_divergence, pf_drift
from dgm.core.gaussian import LOG_2PI
from dgm.core.parameterization import call_denoiser
from dgm.core.schedule import Schedule

__all__ = ["DIVERGENCES", "T_START", "ode_nll"]

DIVERGENCES = ("exact", "hutchinson")
T_START = 1e-3  # start level: sigma_bar(t0)^2 = 1e-3 (1 - alpha_bar_1^2), e.g. 1e-7 for the linear schedule


def _eps_and_divergence(eps_fn, x: Tensor, t: Tensor, probes: Tensor | None, cond):
    """(eps_hat, div eps_hat (B, P)): the exact divergence (P = 1) or one Hutchinson estimate per probe."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        eps = call_denoiser(eps_fn, x, t, cond)
        flat = eps.reshape(x.shape[0], -1)
        if probes is None:
            div = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            for k in range(flat.shape[1]):
                (grad,) = torch.autograd.grad(flat[:, k].sum(), x, retain_graph=True)
                div = div + grad.reshape(x.shape[0], -1)[:, k].double()
            return eps.detach(), div[:, None]
        out = []
        for p in range(probes.shape[0]):
            v = probes[p].to(eps.dtype)
            (vjp,) = torch.autograd.grad((eps * v).sum(), x, retain_graph=p < probes.shape[0] - 1)
            out.append((vjp * v).reshape(x.shape[0], -1).sum(1).double())
        return eps.detach(), torch.stack(out, dim=1)


def ode_nll(eps_fn, s: Schedule, x0: Tensor, *, divergence: str = "exact", rtol: float = 1e-5,
            atol: float = 1e-5, generator: torch.Generator | None = None, return_stats: bool = False,
            t_start: float = T_START, method: str = "RK45", cond=None):
    """-log p(x0) in nats per example through the probability-flow ODE (F3): (B,) float64.

    ``eps_fn(x_t, t, cond=None)`` is called at fractional levels t (a float tensor (B,)); ``divergence`` is
    "exact" or "hutchinson" (two Rademacher probes per example from ``generator``). ``rtol``/``atol`` go to
    scipy's ``solve_ivp``. With ``return_stats`` it returns ``(nll, stats)``: ``nfe`` (drift evaluations),
    ``t_start``, ``hutchinson_se`` (the standard error of the batch mean due to the probes; 0 when exact)
    and ``se`` (the standard error of the batch mean over examples).
    """
    from scipy.integrate import solve_ivp

    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if not 0 < t_start < s.L:
        raise ValueError(f"t_start must lie in (0, {s.L}), got {t_start!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise ValueError(f"{name} must be a number in (0, 1), got {tol!r}")
    B, shape, device = x0.shape[0], tuple(x0.shape), x0.device
    D = x0[0].numel()
    dtype = x0.dtype
    probes = None
    if divergence == "hutchinson":
        u = torch.rand((2, *shape), generator=generator, dtype=torch.float64)
        probes = torch.where(u < 0.5, -1.0, 1.0).to(device)
    n_div = 1 if probes is None else 2
    nfe = 0

    def rhs(t: float, state: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        x = torch.from_numpy(state[: B * D]).reshape(shape).to(device=device, dtype=dtype)
        levels = torch.full((B,), t, dtype=torch.float64, device=device)
        eps, div_eps = _eps_and_divergence(eps_fn, x, levels, probes, cond)
        drift = pf_drift(s, x.double(), eps.double(), levels)
        div = torch.stack([pf_divergence(s, x.double(), div_eps[:, p], levels) for p in range(n_div)], dim=1)
        return np.concatenate([drift.reshape(-1).cpu().numpy(), div.reshape(-1).cpu().numpy()])

    state0 = np.concatenate([x0.double().reshape(-1).cpu().numpy(), np.zeros(B * n_div)])
    with torch.no_grad():
        sol = solve_ivp(rhs, (float(t_start), float(s.L)), state0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise FloatingPointError(f"the probability-flow ODE solver failed: {sol.message}")
    end = torch.from_numpy(sol.y[:, -1])
    x_L = end[: B * D].reshape(B, D)
    integral = end[B * D :].reshape(B, n_div)
    prior = 0.5 * (x_L**2).sum(1) + 0.5 * D * LOG_2PI
    per_probe = prior[:, None] - integral  # (B, n_div)
    nll = per_probe.mean(1)
    if not torch.isfinite(nll).all():
        raise FloatingPointError("the probability-flow NLL is not finite")
    if not return_stats:
        return nll
    hutch_se = 0.0 if n_div == 1 else math.sqrt(((per_probe[:, 0] - per_probe[:, 1]) ** 2).mean().item() / (4 * B))
    se = nll.std().item() / math.sqrt(B) if B > 1 else math.inf
    return nll, {"nfe": nfe, "t_start": float(t_start), "hutchinson_se": hutch_se, "se": se}
