"""``fit``: the training loop shared by every model (AdamW, warm-up, clipping, EMA, checkpoints, resume).

One process runs a plain loop. Under ``accelerate launch`` (``WORLD_SIZE > 1``) every process trains on
its own shard of each epoch's permutation, the gradients are averaged with one all-reduce per step (so
the global batch is ``batch_size * processes``), and only rank 0 writes files.

Resuming is exact: the data order is a function of (seed, epoch) and the noise of step ``t`` on rank
``r`` comes from a generator seeded with (seed, r, t), so nothing but the model, EMA, optimizer, step
and the global RNG states has to be saved.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dgm.runs import checkpoint as ckpt
from dgm.runs.checkpoint import get_rng_state, prepare_run_dir, set_rng_state, truncate_log
from dgm.runs.device import resolve_device

LR_DECAYS = ("none", "cosine")
PRECISIONS = ("no", "bf16", "fp16")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIN_LR_RATIO = 0.05  # where the cosine decay ends, as a fraction of lr


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (``lr_decay="none"``) or a cosine decay to
    ``lr * MIN_LR_RATIO`` at ``steps``. A function of the step alone, so a resumed run follows the same curve."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_decay == "cosine" and step >= cfg.warmup_steps:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        lr = cfg.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))
    return lr


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


@dataclass
class FitResult:
    """What ``fit`` returns: the final step, why it stopped, the last logged loss and the EMA model."""

    step: int
    stopped: str
    loss: float
    seconds: float
    ema: torch.nn.Module
    main: bool = True  # False on the processes of a multi-process run other than rank 0


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator of the noise drawn at ``step`` on process ``rank``: a function of (seed, rank, step)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


class _Dist:
    """The process group: a plain single process, or accelerate's when launched with WORLD_SIZE > 1."""

    def __init__(self, device: torch.device):
        self.acc = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=device.type == "cpu")
        self.rank = self.acc.process_index if self.acc else 0
        self.world = self.acc.num_processes if self.acc else 1
        self.main = self.rank == 0
        self.device = self.acc.device if self.acc else device

    def barrier(self):
        if self.acc:
            self.acc.wait_for_everyone()

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce ``t`` in place to its mean over processes."""
        if self.world > 1:
            torch.distributed.all_reduce(t)
            t /= self.world
        return t

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_(self, module: torch.nn.Module):
        if self.world > 1:
            for t in module.state_dict().values():
                torch.distributed.broadcast(t, src=0)


def _shard_batches(n: int, batch_size: int, dist: _Dist) -> tuple[int, int]:
    """(examples per process, batch size per process) for ``n`` training examples."""
    per_rank = n // dist.world
    if per_rank == 0:
        raise ValueError(f"{n} training examples cannot be split over {dist.world} processes")
    if batch_size > per_rank and dist.main:
        print(f"dgm: warning: batch size {batch_size} > {per_rank} examples per process; using {per_rank}",
              file=sys.stderr)
    return per_rank, min(batch_size, per_rank)


def _batch_indices(step: int, *, n: int, per_rank: int, batch: int, seed: int, dist: _Dist) -> torch.Tensor:
    """Indices of this process's batch at ``step``: epoch permutation (seeded by seed, epoch), then shard."""
    per_epoch = per_rank // batch
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    mine = perm[dist.rank * per_rank : (dist.rank + 1) * per_rank]
    return mine[k * batch : (k + 1) * batch]


@torch.no_grad()
def _check_model_fits_data(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One loss evaluation on two examples (eval mode, own generator), so a model that does not fit the
    data fails before anything is written."""
    was_training = model.training
    model.eval()
    try:
        model.loss(x[:2], generator=torch.Generator().manual_seed(0))
    except (RuntimeError, ValueError) as err:
        msg = " ".join(str(err).split())
        raise ValueError(f"the {model.kind} model does not fit data of shape {tuple(x.shape[1:])}: {msg}") from None
    finally:
        model.train(was_training)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters()]
    m_params = [p.detach() for p in model.parameters()]
    if e_params:
        torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(m)


def _save(out: Path, model, ema, optimizer, step: int, scaler=None) -> None:
    """Write a checkpoint that a SIGKILL at any moment leaves resumable.

    1. state.next.pt (optimizer, RNG, step, fp16 loss scale), 2. model.safetensors (model and EMA weights,
    step), 3. rename state.next.pt to state.pt; each file is written to a temporary file and renamed into
    place. Killed before 2, the old weights and state.pt agree; between 2 and 3, the new weights and
    state.next.pt do.
    """
    state = {"step": step, "optimizer": optimizer.state_dict(), "rng": get_rng_state()}
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    ckpt.save_state(out / ckpt.STATE_NEXT, state)
    tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.detach().cpu().clone() for k, v in ema.state_dict().items()}
    ckpt.save_weights(out / ckpt.WEIGHTS, tensors, step=step, kind=model.kind)
    os.replace(out / ckpt.STATE_NEXT, out / ckpt.STATE)


def _restore(out: Path, model, ema, optimizer, scaler=None) -> int:
    """Load the last checkpoint of ``out`` into model/ema/optimizer and the global RNGs; return its step.

    The state is state.pt, or state.next.pt when the run was killed after writing the weights of a
    checkpoint but before renaming its state (see :func:`_save`).
    """
    tensors, meta = ckpt.load_weights(out / ckpt.WEIGHTS)
    step = int(meta["step"])
    state = ckpt.load_state(out / ckpt.STATE)
    if int(state["step"]) != step and (out / ckpt.STATE_NEXT).exists():
        state = ckpt.load_state(out / ckpt.STATE_NEXT)
    if int(state["step"]) != step:
        raise ckpt.CheckpointError(
            f"{str(out)!r}: model.safetensors is at step {step} but state.pt at step {state['step']}"
            " (the files come from different checkpoints)")
    ckpt.load_into(model, ckpt.split_prefix(tensors, "model"), str(out / ckpt.WEIGHTS))
    ckpt.load_into(ema, ckpt.split_prefix(tensors, "ema"), str(out / ckpt.WEIGHTS))
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and scaler.is_enabled() and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return step


def fit(model: torch.nn.Module, data, out: Path, *, train_config: TrainConfig, resume: bool = False,
        progress: bool = True, data_spec: dict | None = None, device: str | torch.device | None = None) -> FitResult:
    """Train ``model`` on ``data.train`` and write checkpoints and a JSONL log to ``out``.

    Stops after ``train_config.steps`` steps in total or ``train_config.minutes`` of wall time (whichever
    comes first), and on KeyboardInterrupt (after a final checkpoint, re-raising it). ``resume=True``
    continues from ``out``'s last checkpoint; a run directory that already holds a run is an error
    without it. ``data_spec`` (how to reload the data, e.g. ``{"spec": "gmm2d", "seed": 0}``) is saved
    in config.json. ``device`` ("auto" by default: CUDA when available) is where the model, the data and the
    optimizer live; with several processes each takes accelerate's device (its own GPU, or the CPU). Random
    draws come from CPU generators seeded by (seed, rank, step) on every device (``dgm.rng``). CUDA runs
    follow the same code path but were not exercised on a GPU in this repository's tests.
    """
    cfg, out, dist = train_config, Path(out), _Dist(resolve_device(device))
    run_config = {
        "model": model.config(),
        "data": data_spec or {"spec": data.name},
        "scaling": data.scaling.to_dict(),
        "train": dataclasses.asdict(cfg),
    }
    prepare_run_dir(out, run_config, resume=resume, write=False)  # every rank checks before rank 0 writes
    model.to(dist.device)
    x = data.train.to(dist.device)
    per_rank, batch = _shard_batches(len(x), cfg.batch_size, dist)
    _check_model_fits_data(model, x)
    dist.barrier()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fp16 scales the loss so small gradients survive (a no-op for "no" and "bf16")
    scaler = torch.amp.GradScaler(dist.device.type, enabled=cfg.mixed_precision == "fp16")
    ema = copy.deepcopy(model).requires_grad_(False)
    if resume:
        step = _restore(out, model, ema, optimizer, scaler)
    else:
        dist.broadcast_(model)
        ema.load_state_dict(model.state_dict())
        step = 0
    if dist.main:
        prepare_run_dir(out, run_config, resume=resume, write=True)
        if resume:
            truncate_log(out / ckpt.LOG, step)
        else:
            _save(out, model, ema, optimizer, step, scaler)
    where = dict(n=len(x), per_rank=per_rank, batch=batch, seed=cfg.seed, dist=dist)
    bar = tqdm(total=cfg.steps, initial=step, file=sys.stderr, disable=not (progress and dist.main),
               dynamic_ncols=True, desc=f"train {model.kind}")
    t0 = last_t = time.monotonic()
    window, last_loss, stopped = [], float("nan"), "steps"
    log = open(out / ckpt.LOG, "a") if dist.main else None  # noqa: SIM115 - closed in finally
    try:
        while step < cfg.steps:
            if cfg.minutes is not None and dist.any(time.monotonic() - t0 >= 60 * cfg.minutes):
                stopped = "minutes"
                break
            model.train()
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            xb = x[_batch_indices(step, **where).to(dist.device)]
            with torch.autocast(dist.device.type, dtype=AUTOCAST.get(cfg.mixed_precision),
                                enabled=cfg.mixed_precision in AUTOCAST):
                loss, numbers = model.loss(xb, generator=step_generator(cfg.seed, dist.rank, step))
            loss = loss.float()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {step}; try a smaller --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if dist.world > 1:
                flat = dist.mean_(torch.cat([g.reshape(-1) for g in grads]))
                parts = flat.split([g.numel() for g in grads])
                torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(parts, grads, strict=True)])
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            scaler.step(optimizer)  # skipped by fp16's scaler when a gradient overflowed
            scaler.update()
            _ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)
            window.append(loss.detach())
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_loss = dist.mean_(torch.stack(window).mean()).item()
                now = time.monotonic()
                record = {"step": step, "loss": last_loss, "lr": lr, "grad_norm": float(grad_norm),
                          "it_per_s": len(window) / max(now - last_t, 1e-9), "elapsed_s": now - t0,
                          "processes": dist.world, "batch_per_process": batch, "shard_size": per_rank,
                          **{k: float(v) for k, v in numbers.items()}}
                window, last_t = [], now
                bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
                if log:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            if step % cfg.checkpoint_every == 0 and dist.main and step < cfg.steps:
                _save(out, model, ema, optimizer, step, scaler)
    except KeyboardInterrupt:
        if dist.main:
            _save(out, model, ema, optimizer, step, scaler)
        raise
    finally:
        bar.close()
        if log:
            log.close()
    if dist.main:
        _save(out, model, ema, optimizer, step, scaler)
    dist.barrier()
    return FitResult(step=step, stopped=stopped, loss=last_loss, seconds=time.monotonic() - t0, ema=ema,
                     main=dist.main)
