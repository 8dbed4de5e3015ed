"""Seeded random draws that work when the generator and the tensors live on different devices.

``torch.randn(..., generator=g, device="cuda")`` fails for a CPU generator ``g``; these draw on the
generator's device and move the result, so one seeded CPU generator drives CPU and GPU runs alike.
"""

from __future__ import annotations

import torch

__all__ = ["randn", "rand", "randint"]


def _where(generator, device):
    """(device to draw on, device to return on)."""
    if generator is not None and device is not None and torch.device(device).type != generator.device.type:
        return generator.device, torch.device(device)
    return device, None


def randn(*size, generator=None, dtype=None, device=None) -> torch.Tensor:
    """torch.randn on the generator's device, then moved to ``device``."""
    draw, move = _where(generator, device)
    out = torch.randn(*size, generator=generator, dtype=dtype, device=draw)
    return out if move is None else out.to(move)


def rand(*size, generator=None, dtype=None, device=None) -> torch.Tensor:
    """torch.rand on the generator's device, then moved to ``device``."""
    draw, move = _where(generator, device)
    out = torch.rand(*size, generator=generator, dtype=dtype, device=draw)
    return out if move is None else out.to(move)


def randint(low: int, high: int, size, *, generator=None, device=None) -> torch.Tensor:
    """torch.randint on the generator's device, then moved to ``device``."""
    draw, move = _where(generator, device)
    out = torch.randint(low, high, size, generator=generator, device=draw)
    return out if move is None else out.to(move)
