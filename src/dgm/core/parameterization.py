"""eps / x0 / v / mean / score conversions (EQUATIONS.md E29-E33) and the Denoiser wrapper.

Each conversion is ``(s, x_i, pred, i) -> tensor`` at a level i in 1..L (an int or a LongTensor (B,)); all
but ``eps_to_mean`` (a discrete reverse step) also take fractional levels (a float tensor in [0, L]).
Samplers and losses only ever see eps_hat; :class:`Denoiser` turns whatever a network predicts into it.

The denoiser signature, everywhere in dgm: ``eps_fn(x_i, i, cond=None) -> eps_hat``, with ``i`` a
LongTensor (B,) (or a float tensor of fractional levels) and ``cond`` the class labels (None =
unconditional). A two-argument ``eps_fn(x_i, i)`` keeps working: :func:`call_denoiser` passes ``cond``
only when it is given.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from dgm.core.forward import at_level, signal_and_noise
from dgm.core.schedule import Schedule

__all__ = [
    "eps_to_x0",
    "x0_to_eps",
    "eps_to_mean",
    "eps_to_v",
    "v_to_eps",
    "v_to_x0",
    "eps_to_score",
    "call_denoiser",
    "guided_denoiser",
    "autoguided_denoiser",
    "Denoiser",
    "PREDICTIONS",
]

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS = ("eps", "x0", "v")


def call_denoiser(eps_fn, x_i: Tensor, i, cond=None) -> Tensor:
    """``eps_fn(x_i, i)`` when ``cond`` is None, else ``eps_fn(x_i, i, cond=cond)``: so a two-argument
    denoiser (the oracle's ``lambda x, i: gm.eps_star(s, x, i)``, a user's function) works wherever no
    labels are passed."""
    return eps_fn(x_i, i) if cond is None else eps_fn(x_i, i, cond=cond)


def _weight(name: str, value) -> float:
    """A guidance weight w as a float, checked: finite and >= 0 (a one-line ValueError naming it otherwise)."""
    w = float(value)
    if not w >= 0 or w == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return w


def guided_denoiser(eps_fn, guidance: float, null_class: int):
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): the denoiser
    ``eps_w(x_i, i, cond) = (1 + w) eps(x_i, i, cond) - w eps(x_i, i, null)``.

    ``w = guidance >= 0``; w = 0 is the plain conditional model (returned unchanged, one call per step),
    w > 0 makes one batched call of the conditional and the unconditional rows. diffusers' ``guidance_scale``
    is s = 1 + w. ``null_class`` is the label of the unconditional model (dgm's nets: ``num_classes``). Rows
    whose label is already the null class get the unconditional output for any w. The guided denoiser needs
    labels: calling it with ``cond=None`` raises ValueError.
    """
    w = _weight("guidance", guidance)
    if w == 0:
        return eps_fn

    def eps_w(x_i: Tensor, i, cond=None) -> Tensor:
        if cond is None:
            raise ValueError("classifier-free guidance needs class labels (cond), got None")
        cond = torch.as_tensor(cond, device=x_i.device)
        i = _as_levels(i, x_i)
        null = torch.full_like(cond, null_class)
        out = eps_fn(torch.cat([x_i, x_i]), torch.cat([i, i]), cond=torch.cat([cond, null]))
        eps_c, eps_u = out.chunk(2)
        return (1 + w) * eps_c - w * eps_u

    return eps_w


def autoguided_denoiser(eps_fn, guide_fn, guidance: float):
    """Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", eq. 2): the
    denoiser ``eps_w(x_i, i, cond) = eps(x_i, i, cond) + w (eps(x_i, i, cond) - eps_guide(x_i, i, cond))``.

    ``guide_fn`` is a weaker model of the same data (dgm's: an early EMA snapshot of the same run), so the
    difference points where the good model is more sure than the bad one; unlike classifier-free guidance it
    needs no labels. ``w = guidance >= 0``; w = 0 returns ``eps_fn`` unchanged (one call per step), w > 0 makes
    two calls. The paper's guidance weight is 1 + w. x0_hat and v are affine in eps_hat at a fixed (x_i, i), so
    guiding eps is guiding D(x_i) as the paper writes it.
    """
    w = _weight("autoguidance", guidance)
    if w == 0:
        return eps_fn

    def eps_w(x_i: Tensor, i, cond=None) -> Tensor:
        eps = call_denoiser(eps_fn, x_i, i, cond)
        return eps + w * (eps - call_denoiser(guide_fn, x_i, i, cond))

    return eps_w


def eps_to_x0(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """x0_hat = (x_i - sigma_bar_i eps_hat) / alpha_bar_i (EQUATIONS.md E31)."""
    a, sigma = signal_and_noise(s, i, x_i)
    return (x_i - sigma * eps) / a


def x0_to_eps(s: Schedule, x_i: Tensor, x0: Tensor, i) -> Tensor:
    """eps_hat = (x_i - alpha_bar_i x0_hat) / sigma_bar_i (EQUATIONS.md E31)."""
    a, sigma = signal_and_noise(s, i, x_i)
    return (x_i - a * x0) / sigma


def eps_to_mean(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """mu = (x_i - beta_i^2 / sigma_bar_i eps) / alpha_i: the reverse-kernel mean (EQUATIONS.md E29)."""
    beta2 = at_level(s.beta**2, i, x_i)
    return (x_i - beta2 / at_level(s.sigma_bar, i, x_i) * eps) / at_level(s.alpha, i, x_i)


def eps_to_v(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """v = alpha_bar_i eps - sigma_bar_i x0, with x0 from E31; equals (eps - sigma_bar_i x_i) / alpha_bar_i (E32)."""
    a, sb = signal_and_noise(s, i, x_i)
    return a * eps - sb * (x_i - sb * eps) / a


def v_to_eps(s: Schedule, x_i: Tensor, v: Tensor, i) -> Tensor:
    """eps_hat = sigma_bar_i x_i + alpha_bar_i v_hat (EQUATIONS.md E32)."""
    a, sigma = signal_and_noise(s, i, x_i)
    return sigma * x_i + a * v


def v_to_x0(s: Schedule, x_i: Tensor, v: Tensor, i) -> Tensor:
    """x0_hat = alpha_bar_i x_i - sigma_bar_i v_hat (EQUATIONS.md E32)."""
    a, sigma = signal_and_noise(s, i, x_i)
    return a * x_i - sigma * v


def eps_to_score(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """score = grad log p_i(x_i) = -eps* / sigma_bar_i (EQUATIONS.md E33)."""
    return -eps / signal_and_noise(s, i, x_i)[1]


class Denoiser(nn.Module):
    """Wraps a network ``net(x_i, i, cond=None)`` that predicts eps, x0 or v so that it returns eps_hat.

    ``forward(x_i, i, cond=None) -> eps_hat`` is the denoiser of shared/SPEC.md; ``x0_hat`` and
    ``predict_raw`` give the other views. The network itself knows nothing about the schedule (STYLE.md 4,
    6). Levels may be integers or fractional (a float tensor), as the net's level embedding allows.

    With ``learn_variance`` the net outputs twice the channels (dim 1): the prediction, then v in roughly
    [-1, 1] that sets the reverse variance (Nichol & Dhariwal 2021, docs/LIKELIHOOD.md L1):
    log v_i = f log beta_i^2 + (1 - f) log sigma2(i), f = (v + 1) / 2 (sigma2(1) clipped to sigma2(2)).
    ``reverse_variance(x_i, i, cond=None)`` returns it, a method beside eps_hat (read by
    ``dgm.core.reverse.reverse_variance``), never a change to ``forward``.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, prediction: Prediction = "eps",
                 learn_variance: bool = False):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.learn_variance = learn_variance

    def _net(self, x_i: Tensor, i: Tensor, cond) -> tuple[Tensor, Tensor | None]:
        """(the prediction, the variance output v or None) from one network call."""
        out = call_denoiser(self.net, x_i, i, cond)
        if not self.learn_variance:
            return out, None
        if out.shape[1] != 2 * x_i.shape[1]:
            raise ValueError(f"a net with a learned variance must output 2 x {x_i.shape[1]} channels, got "
                             f"{out.shape[1]}")
        pred, v = out.chunk(2, dim=1)
        return pred, v

    def predict_raw(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        """The network's own prediction (eps, x0 or v)."""
        return self._net(x_i, _as_levels(i, x_i), cond)[0]

    def forward(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        i = _as_levels(i, x_i)
        return self._to_eps(x_i, self._net(x_i, i, cond)[0], i)

    def eps_and_variance(self, x_i: Tensor, i: Tensor, cond=None) -> tuple[Tensor, Tensor]:
        """(eps_hat, the learned reverse variance v_i (B, ...)) from one network call."""
        if not self.learn_variance:
            raise ValueError("this denoiser has no learned variance (built with learn_variance=False)")
        i = _as_levels(i, x_i)
        pred, v = self._net(x_i, i, cond)
        return self._to_eps(x_i, pred, i), self._variance(v, i)

    def reverse_variance(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        """The learned variance of p(x_{i-1} | x_i) at integer levels i (L1), shaped like x_i."""
        return self.eps_and_variance(x_i, i, cond)[1]

    def _variance(self, v: Tensor, i: Tensor) -> Tensor:
        s = self.schedule
        small = s.sigma2.clone()
        small[1] = s.sigma2[2] if s.L >= 2 else s.beta[1] ** 2
        small[0] = 1.0  # unused; keeps the log finite
        large = s.beta**2
        large[0] = 1.0
        f = (v + 1) / 2
        log_v = f * at_level(torch.log(large), i, v) + (1 - f) * at_level(torch.log(small), i, v)
        return torch.exp(log_v)

    def _to_eps(self, x_i: Tensor, out: Tensor, i: Tensor) -> Tensor:
        if self.prediction == "eps":
            return out
        elif self.prediction == "x0":
            return x0_to_eps(self.schedule, x_i, out, i)
        elif self.prediction == "v":
            return v_to_eps(self.schedule, x_i, out, i)
        else:
            raise ValueError(f"unknown prediction {self.prediction!r}")

    def x0_hat(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        """x0_hat(x_i, i), computed in the network's own parameterization when it predicts x0 or v."""
        i = _as_levels(i, x_i)
        out = self._net(x_i, i, cond)[0]
        if self.prediction == "eps":
            return eps_to_x0(self.schedule, x_i, out, i)
        elif self.prediction == "x0":
            return out
        elif self.prediction == "v":
            return v_to_x0(self.schedule, x_i, out, i)
        else:
            raise ValueError(f"unknown prediction {self.prediction!r}")


def _as_levels(i, x: Tensor) -> Tensor:
    """Levels as a tensor of shape (B,) on x's device: integer levels as a LongTensor, fractional ones
    (a float tensor) kept as they are."""
    i = torch.as_tensor(i, device=x.device)
    if i.ndim == 0:
        i = i.expand(x.shape[0])
    return i if i.is_floating_point() else i.long()
