"""Divergence: a loss or a gradient that turns NaN or infinite never reaches a checkpoint (issue 14).

``fit`` asks ``NonFiniteSteps.allow`` after every backward pass whether the step may be applied. The policy
(``dgm train --on-nan``):

- ``"stop"`` (the default): a non-finite loss or gradient norm raises ``DivergenceError`` naming the step;
  nothing is written, so the last checkpoint (all of whose numbers were finite) stays as it was.
- ``"skip"``: the step is skipped (no optimizer and no EMA update; the step counter moves on, so the next
  step draws another batch and other noise) and counted in ``skipped_nonfinite`` (log.jsonl, the final
  summary line); after ``MAX_CONSECUTIVE_SKIPS`` steps in a row without an update the run stops anyway.

Steps that fp16's GradScaler skips by design (an overflowing gradient while the loss scale is being found)
are neither divergence nor counted; only ``MAX_CONSECUTIVE_SKIPS`` of them in a row (the scale halved that
many times, far past any scale a finite gradient needs) stop the run. ``check_finite_weights`` is the last
guard before every checkpoint: weights or EMA weights that are not finite are never saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MAX_CONSECUTIVE_SKIPS", "ON_NAN", "DivergenceError", "NonFiniteSteps", "check_finite_weights",
           "first_nonfinite"]

ON_NAN = ("stop", "skip")
MAX_CONSECUTIVE_SKIPS = 100  # steps in a row without an update (skipped or the scaler's) that end a run
ADVICE = "try a smaller --lr (or --on-nan skip to skip such steps)"


class DivergenceError(FloatingPointError):
    """Training produced a NaN or an infinity; the last checkpoint was kept."""


def _kept(last_saved: int | None) -> str:
    return "no checkpoint was written" if last_saved is None else f"the checkpoint of step {last_saved} is kept"


@dataclass
class NonFiniteSteps:
    """The ``--on-nan`` policy and its counts: ``skipped`` (non-finite steps skipped over the whole run) and
    ``consecutive`` (steps in a row without an update). Both travel in the trainer state (``state``/``load``),
    so a resumed run keeps counting exactly where it stopped."""

    policy: str = "stop"
    skipped: int = 0
    consecutive: int = 0

    def __post_init__(self):
        if self.policy not in ON_NAN:
            raise ValueError(f"on_nan must be one of {ON_NAN}, got {self.policy!r}")

    def allow(self, step: int, loss: float, grad_norm: float, *, last_saved: int | None,
              scaler_decides: bool = False) -> bool:
        """Whether step ``step`` (0-based: the step that makes the run's step ``step + 1``) may be applied.

        ``loss`` and ``grad_norm`` are this step's (the same on every process). ``scaler_decides``: fp16's
        GradScaler is on, so a finite loss with a non-finite gradient is its business (``scaler_skipped``
        counts it). Raises ``DivergenceError`` (one line) under "stop", or after too many skips in a row.
        """
        bad = not _finite(loss) or (not _finite(grad_norm) and not scaler_decides)
        if not bad:
            return True
        what = f"the loss is {loss}" if not _finite(loss) else f"the gradient norm is {grad_norm}"
        if self.policy == "stop":
            raise DivergenceError(f"training diverged at step {step + 1}: {what}; {_kept(last_saved)}; {ADVICE}")
        self.skipped += 1
        self._no_update(step, what, last_saved)
        return False

    def applied(self) -> None:
        """A step updated the weights."""
        self.consecutive = 0

    def scaler_skipped(self, step: int, last_saved: int | None) -> None:
        """fp16's GradScaler skipped step ``step`` (a gradient overflowed): not counted as divergence."""
        self._no_update(step, "the fp16 gradient overflowed at every loss scale tried", last_saved)

    def _no_update(self, step: int, what: str, last_saved: int | None) -> None:
        self.consecutive += 1
        if self.consecutive >= MAX_CONSECUTIVE_SKIPS:
            raise DivergenceError(f"training diverged: {self.consecutive} steps in a row up to step {step + 1} "
                                  f"made no update ({what}); {_kept(last_saved)}; try a smaller --lr")

    def state(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load(self, state: dict | None) -> None:
        """Restore the counts of a trainer state (a checkpoint written before the counts existed: zeros)."""
        state = state or {}
        self.skipped, self.consecutive = int(state.get("skipped", 0)), int(state.get("consecutive", 0))


def _finite(value) -> bool:
    return bool(torch.isfinite(torch.as_tensor(value)).all())


def first_nonfinite(module: torch.nn.Module) -> str | None:
    """The name of the first floating-point tensor of ``module``'s state dict holding a NaN or an infinity."""
    for name, t in module.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def check_finite_weights(model: torch.nn.Module, ema: torch.nn.Module, step: int, last_saved: int | None) -> None:
    """The last guard before a checkpoint of ``step``: ``DivergenceError`` if a weight of the model or of its
    EMA is not finite (so it is never saved)."""
    for prefix, module in (("model", model), ("ema", ema)):
        name = first_nonfinite(module)
        if name is not None:
            raise DivergenceError(f"the weights at step {step} are not finite ({prefix}.{name}), so they were "
                                  f"not saved; {_kept(last_saved)}; {ADVICE}")
