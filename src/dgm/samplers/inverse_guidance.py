"""Gradient guidance for linear inverse problems: DPS ("dps") and PiGDM ("pigdm").

Both differentiate x0_hat(x_i) = (x_i - sigma_bar_i eps_hat(x_i, i)) / alpha_bar_i (E31) through the denoiser
with autograd: one denoiser call and one backward pass (a vector-Jacobian product) per visited level. Rows
are independent, so the per-example gradients come from one backward pass over the batch.

``den(x, level) -> eps_hat`` is the counted denoiser on rows (N, D) of ``inverse``, and ``den.vjp(out, x, v)``
its counted backward pass; x_L is given.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core.parameterization import eps_to_x0
from dgm.core.schedule import Schedule
from dgm.samplers.common import randn_like
from dgm.samplers.ddim import ddim_step
from dgm.samplers.inverse_operator import LinearObservation

__all__ = ["sample_dps", "sample_pigdm"]


def _with_x0_hat(den, s: Schedule, x: Tensor, i: int) -> tuple[Tensor, Tensor, Tensor]:
    """(x that requires grad, eps_hat, x0_hat) at level i, with the graph from x to x0_hat kept."""
    x = x.detach().requires_grad_(True)
    eps = den(x, i)
    return x, eps, eps_to_x0(s, x, eps, i)


def sample_dps(den, s: Schedule, x_L: Tensor, grid: list[int], op: LinearObservation, y: Tensor, *,
               step: float, generator=None) -> Tensor:
    """Diffusion Posterior Sampling (Chung et al. 2023, Alg. 1): the ancestral step, then a gradient step
    on the residual of the denoised estimate,

        x_j = x'_j - step * grad_{x_i} ||y - A x0_hat(x_i)||,    x'_j the ancestral step i -> j (E39/E40),

    per example. This is Alg. 1's zeta_i grad ||y - A x0_hat||^2 with zeta_i = step / (2 ||y - A x0_hat||),
    the normalized step size of the paper's experiments (app. C), written as in the authors' code; the
    paper uses step = 1 for FFHQ inpainting. The step is not scaled by sigma_y (DPS absorbs the noise
    level into it), so sigma_y = 0 changes nothing. DPS approximates p(y | x_i) by p(y | x0_hat(x_i)):
    its draws are biased, and an observation the step overshoots (||residual|| < step near the end) leaves
    the known part jittering around y. The correction is applied at every level, the last included.
    """
    x = x_L
    for i, j in zip(grid[:-1], grid[1:], strict=True):
        with torch.enable_grad():
            x_in, eps, x0_hat = _with_x0_hat(den, s, x, i)
            norm = torch.linalg.vector_norm(y - op.forward(x0_hat), dim=1)  # (B,)
            grad = den.vjp(norm, x_in, torch.ones_like(norm))
        noise = randn_like(x, generator) if j > 0 else None
        x = ddim_step(s, x_in.detach(), eps.detach(), i, j, eta=1.0, noise=noise) - step * grad
    return x


def sample_pigdm(den, s: Schedule, x_L: Tensor, grid: list[int], op: LinearObservation, y: Tensor,
                 sigma_y: float, *, eta: float, generator=None) -> Tensor:
    """Pseudoinverse-guided diffusion (Song, Vahdat, Mardani, Kautz 2023, eq. 7): the likelihood score

        g = grad_{x_i} log p(y | x_i) ~ ((y - A x0_hat)^T (r_i^2 A A^T + sigma_y^2 I)^{-1} A dx0_hat/dx_i)^T,

    from p(x0 | x_i) ~ N(x0_hat, r_i^2 I) with r_i^2 = sigma_bar_i^2 / (alpha_bar_i^2 + sigma_bar_i^2)
    = sigma_bar_i^2 (the paper's r_t^2 for data of unit variance; alpha_bar^2 + sigma_bar^2 = 1 here).

    g enters as the score it approximates: eps_cond = eps_hat - sigma_bar_i g (E33), and the step is
    DDIM (E40) with ``eta`` (default 1: the ancestral step with the conditional score, which moves x_j by
    (sigma_bar_i^2 - sigma_bar_j^2) / (alpha_bar_i alpha_bar_j) g). The paper's Alg. 1 adds g with a
    heuristic weight instead. For data x0 ~ N(0, I) the approximation is exact (Cov(x0 | x_i) = r_i^2 I
    and x0_hat is linear), so the draws follow the exact posterior as the grid refines; otherwise they are
    biased. At sigma_y = 0 the Gram matrix r_i^2 A A^T stays invertible at every level i >= 1, and the last
    step returns x0_hat + (sigma_bar_i^2 / alpha_bar_i) g, whose known part is close to y.
    """
    x = x_L
    for i, j in zip(grid[:-1], grid[1:], strict=True):
        r2 = s.sigma_bar[i].item() ** 2
        with torch.enable_grad():
            x_in, eps, x0_hat = _with_x0_hat(den, s, x, i)
            v = op.adjoint(op.gram_solve(y - op.forward(x0_hat.detach()), r2, sigma_y))
            g = den.vjp(x0_hat, x_in, v)
        eps_cond = eps.detach() - s.sigma_bar[i].item() * g
        noise = randn_like(x, generator) if eta > 0 and j > 0 else None
        x = ddim_step(s, x_in.detach(), eps_cond, i, j, eta=eta if j > 0 else 0.0, noise=noise)
        if not torch.isfinite(x).all():
            raise ValueError(f"pigdm diverged at level {j} (from {i}): its guidance step grows faster than the "
                             "steps shrink it for this denoiser; try more --steps, or method dps or smc")
    return x
