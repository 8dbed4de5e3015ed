"""``TrainConfig``: the optimisation settings of ``fit`` (saved in config.json), the learning-rate curve, and
``merge_settings``, how the recipe, a settings file and flags combine into one config."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["LR_DECAYS", "PRECISIONS", "TrainConfig", "learning_rate", "merge_settings"]

LR_DECAYS = ("none", "cosine")
PRECISIONS = ("no", "bf16", "fp16")
MIN_LR_RATIO = 0.05  # where the cosine decay ends, as a fraction of lr


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; saved in config.json beside every checkpoint."""

    steps: int = 2000
    minutes: float | None = None
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_decay: str = "none"  # "none" or "cosine": cosine from lr down to lr * MIN_LR_RATIO at `steps`
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    mixed_precision: str = "no"  # "bf16" / "fp16": the forward pass under torch.autocast (fp16 with loss scaling)

    def __post_init__(self):
        def need(ok: bool, name: str, rule: str):
            if not ok:
                raise ValueError(f"train config: {name} must be {rule}, got {getattr(self, name)!r}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        need(self.minutes is None or (is_num(self.minutes) and self.minutes > 0), "minutes", "a number > 0")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        need(self.lr_decay in LR_DECAYS, "lr_decay", f"one of {LR_DECAYS}")
        need(self.mixed_precision in PRECISIONS, "mixed_precision", f"one of {PRECISIONS}")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.grad_clip is None or (is_num(self.grad_clip) and self.grad_clip > 0), "grad_clip", "> 0")
        need(is_num(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(is_int(self.log_every) and self.log_every >= 1, "log_every", "an integer >= 1")
        need(is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every", "an int >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict, rejecting unknown keys by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"train config: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        return cls(**d)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (``lr_decay="none"``) or a cosine decay to
    ``lr * MIN_LR_RATIO`` at ``steps``. A function of the step alone, so a resumed run follows the same curve."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_decay == "cosine" and step >= cfg.warmup_steps:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        lr = cfg.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))
    return lr


def merge_settings(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, recursively for nested tables (a new dict; neither input changes).

    How ``dgm train`` layers its settings: recipe < stored config (--resume) < --config file < flags.
    """
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
