"""``Guide``: a frozen snapshot of a DDPM's denoiser taken during training, the "bad version of itself" that
autoguidance steers away from (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself").

A DDPM built with ``guide_step`` holds one as ``guide``. Its net is a copy of the model's whose weights are
buffers (``frozen_copy``): no optimizer, gradient clipping or parameter count sees them, the training loop's EMA
update leaves them alone (the DDPM's ``ema_fixed_buffers``; ``take`` fills both copies), and ``state_dict`` (so
checkpoints, ``--resume`` and ``load_model``) carries them with the ``ready`` flag. ``take`` fills it once, at
``step``, from the EMA's denoiser.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from dgm.core.parameterization import Denoiser


class Guide(nn.Module):
    """The snapshot slot: ``denoiser`` (eps_hat of the snapshot), ``step`` (when training takes it), ``ready``."""

    def __init__(self, denoiser: Denoiser, step: int):
        super().__init__()
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"DDPM: guide_step must be a positive integer, or 0 or None for no guide, got {step!r}")
        self.step = step
        self.denoiser = Denoiser(frozen_copy(denoiser.net), denoiser.schedule, denoiser.prediction,
                                 learn_variance=denoiser.learn_variance)
        self.register_buffer("ready", torch.zeros((), dtype=torch.long))

    @property
    def taken(self) -> bool:
        """Whether the snapshot has been taken (training passed ``step``)."""
        return bool(self.ready)

    @torch.no_grad()
    def take(self, denoiser: Denoiser) -> None:
        """Copy ``denoiser``'s weights (the EMA's) into the snapshot and mark it taken."""
        self.denoiser.load_state_dict(denoiser.state_dict())
        self.ready.fill_(1)

    def forward(self, x_i: Tensor, i: Tensor, cond=None) -> Tensor:
        """eps_hat of the snapshot."""
        return self.denoiser(x_i, i, cond)


def require_guide(guide: Guide | None, autoguidance: float) -> Guide:
    """``guide`` if its snapshot is taken, else a ValueError saying why there is none."""
    if guide is None or not guide.taken:
        why = ("has no guide (train with guide_step: a ddpm option)" if guide is None else
               f"has no guide yet: it is the EMA of step {guide.step}, and training has not run past that step")
        raise ValueError(f"autoguidance {autoguidance!r} needs a guide; this DDPM {why}")
    return guide


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` with every parameter turned into a buffer of the same name."""
    net = copy.deepcopy(net)
    for module in net.modules():
        for name, p in list(module._parameters.items()):
            del module._parameters[name]
            module.register_buffer(name, None if p is None else p.detach().clone())
    return net
