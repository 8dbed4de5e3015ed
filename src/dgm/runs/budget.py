"""What a model config asks of memory, estimated without allocating it, so a run directory whose config.json
asks for an absurd model (10^12 parameters, 10^9 levels) is refused before anything is built.

The parameters are counted by building the model with every parameter moved to the meta device as it is
registered (``torch.empty`` reserves address space but touches no page; an address space too large even to
reserve is itself the answer). Per-level tables (a DDPM's schedule and variances, float64 of length L + 1)
are counted from ``levels``, building with two levels instead, since the schedule's checks need real numbers.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from dgm.runs.resources import ResourceError, gib, require_memory

__all__ = ["PER_LEVEL_BYTES", "check_model_budget", "estimate_model_bytes"]

# Per level of a DDPM: the schedule's 9 float64 tables (core/schedule.py), the reverse-variance tables and the
# temporaries of computing them, with room to spare: the point is to refuse absurd sizes, not to count bytes.
PER_LEVEL_BYTES = 8 * 32
MODEL_COPIES = 3  # model + EMA (training) or model + the weights being loaded; parameters and gradients


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """While active, ``nn.Module.register_parameter`` moves each new parameter to the meta device."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _levels(config: dict) -> int:
    levels = config.get("levels", 0)
    return levels if isinstance(levels, int) and not isinstance(levels, bool) and levels > 0 else 0


def estimate_model_bytes(config: dict) -> tuple[int, int]:
    """(bytes, parameters) of one copy of the model ``config`` describes, parameters and buffers plus its
    per-level tables, found without allocating the parameters.

    Raises ``ResourceError`` when even the address space of a parameter cannot be reserved, and what
    ``build_model`` raises for an invalid config (ValueError, TypeError, KeyError).
    """
    from dgm.models import build_model

    levels = _levels(config)
    small = {**config, "levels": min(levels, 2)} if levels else config
    try:
        with _parameters_on_meta(), torch.no_grad():
            model = build_model(small)
    except RuntimeError as err:
        if "allocate" not in str(err):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(err))
        size = f" ({gib(int(asked[1]))})" if asked else ""
        raise ResourceError(f"the model config asks for a tensor{size} too large to allocate on this machine") from None
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in model.buffers())
    return nbytes + PER_LEVEL_BYTES * (levels + 1), params


def check_model_budget(config: dict, where: str) -> int:
    """Refuse (``ResourceError``, one line naming ``where``) a model config whose model would not fit in the
    available memory (``MODEL_COPIES`` copies of it); return the estimated bytes of one copy."""
    try:
        nbytes, params = estimate_model_bytes(config)
    except ResourceError as err:
        raise ResourceError(f"{where}: {err}") from None
    levels = _levels(config)
    size = f"{params:,} parameters" + (f", L = {levels:,} levels" if levels else "")
    require_memory(MODEL_COPIES * nbytes, f"{where}: the model it describes ({size}, {gib(nbytes)} a copy)")
    return nbytes

