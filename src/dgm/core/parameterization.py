"""eps / x0 / v / mean / score conversions (EQUATIONS.md E29-E33) and the Denoiser wrapper.

Each conversion is ``(s, x_i, pred, i) -> tensor`` at a level i in 1..L (int or LongTensor (B,)).
Samplers and losses only ever see eps_hat; :class:`Denoiser` turns whatever a network predicts into it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from dgm.core.forward import at_level
from dgm.core.schedule import Schedule

__all__ = [
    "eps_to_x0",
    "x0_to_eps",
    "eps_to_mean",
    "eps_to_v",
    "v_to_eps",
    "v_to_x0",
    "eps_to_score",
    "Denoiser",
    "PREDICTIONS",
]

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS = ("eps", "x0", "v")


def eps_to_x0(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """x0_hat = (x_i - sigma_bar_i eps_hat) / alpha_bar_i (EQUATIONS.md E31)."""
    return (x_i - at_level(s.sigma_bar, i, x_i) * eps) / at_level(s.alpha_bar, i, x_i)


def x0_to_eps(s: Schedule, x_i: Tensor, x0: Tensor, i) -> Tensor:
    """eps_hat = (x_i - alpha_bar_i x0_hat) / sigma_bar_i (EQUATIONS.md E31)."""
    return (x_i - at_level(s.alpha_bar, i, x_i) * x0) / at_level(s.sigma_bar, i, x_i)


def eps_to_mean(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """mu = (x_i - beta_i^2 / sigma_bar_i eps) / alpha_i: the reverse-kernel mean (EQUATIONS.md E29)."""
    beta2 = at_level(s.beta**2, i, x_i)
    return (x_i - beta2 / at_level(s.sigma_bar, i, x_i) * eps) / at_level(s.alpha, i, x_i)


def eps_to_v(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """v = alpha_bar_i eps - sigma_bar_i x0, with x0 from E31; equals (eps - sigma_bar_i x_i) / alpha_bar_i (E32)."""
    a, sb = at_level(s.alpha_bar, i, x_i), at_level(s.sigma_bar, i, x_i)
    return a * eps - sb * (x_i - sb * eps) / a


def v_to_eps(s: Schedule, x_i: Tensor, v: Tensor, i) -> Tensor:
    """eps_hat = sigma_bar_i x_i + alpha_bar_i v_hat (EQUATIONS.md E32)."""
    return at_level(s.sigma_bar, i, x_i) * x_i + at_level(s.alpha_bar, i, x_i) * v


def v_to_x0(s: Schedule, x_i: Tensor, v: Tensor, i) -> Tensor:
    """x0_hat = alpha_bar_i x_i - sigma_bar_i v_hat (EQUATIONS.md E32)."""
    return at_level(s.alpha_bar, i, x_i) * x_i - at_level(s.sigma_bar, i, x_i) * v


def eps_to_score(s: Schedule, x_i: Tensor, eps: Tensor, i) -> Tensor:
    """score = grad log p_i(x_i) = -eps* / sigma_bar_i (EQUATIONS.md E33)."""
    return -eps / at_level(s.sigma_bar, i, x_i)


class Denoiser(nn.Module):
    """Wraps a network ``net(x_i, i)`` that predicts eps, x0 or v so that it returns eps_hat.

    ``forward(x_i, i) -> eps_hat`` is the denoiser of shared/SPEC.md; ``x0_hat`` and ``predict_raw`` give
    the other views. The network itself knows nothing about the schedule (STYLE.md 4, 6).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, prediction: Prediction = "eps"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction

    def predict_raw(self, x_i: Tensor, i: Tensor) -> Tensor:
        """The network's own output (eps, x0 or v)."""
        return self.net(x_i, _as_levels(i, x_i))

    def forward(self, x_i: Tensor, i: Tensor) -> Tensor:
        i = _as_levels(i, x_i)
        out = self.net(x_i, i)
        if self.prediction == "eps":
            return out
        elif self.prediction == "x0":
            return x0_to_eps(self.schedule, x_i, out, i)
        elif self.prediction == "v":
            return v_to_eps(self.schedule, x_i, out, i)
        else:
            raise ValueError(f"unknown prediction {self.prediction!r}")

    def x0_hat(self, x_i: Tensor, i: Tensor) -> Tensor:
        """x0_hat(x_i, i), computed in the network's own parameterization when it predicts x0 or v."""
        i = _as_levels(i, x_i)
        out = self.net(x_i, i)
        if self.prediction == "eps":
            return eps_to_x0(self.schedule, x_i, out, i)
        elif self.prediction == "x0":
            return out
        elif self.prediction == "v":
            return v_to_x0(self.schedule, x_i, out, i)
        else:
            raise ValueError(f"unknown prediction {self.prediction!r}")


def _as_levels(i, x: Tensor) -> Tensor:
    """Levels as a LongTensor of shape (B,) on x's device."""
    i = torch.as_tensor(i, device=x.device)
    if i.ndim == 0:
        i = i.expand(x.shape[0])
    return i.long()
