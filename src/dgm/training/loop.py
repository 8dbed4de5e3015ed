"""``fit``: the training loop shared by every model (AdamW, warm-up, clipping, EMA, checkpoints, resume).

Settings: ``dgm.training.config``; several processes: ``dgm.training.distributed``; the files written:
``dgm.runs.checkpoint`` (the checkpoint protocol) and ``dgm.runs.log`` (log.jsonl). Reliability (issue 14):
one writer per run directory (``dgm.runs.lock``, held by the process of rank 0 for the whole run), NaN and
infinity never reach a checkpoint (``dgm.training.divergence``), SIGINT and SIGTERM stop at a step boundary
with a checkpoint (``dgm.training.signals``).

Resuming is exact: the data order is a function of (seed, epoch) and the noise of step ``t`` on rank
``r`` comes from a generator seeded with (seed, r, t), so nothing but the model, EMA, optimizer, step,
the global RNG states and the counts of skipped steps has to be saved.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dgm.data.spec import with_labels
from dgm.runs.checkpoint import get_rng_state, prepare_run_dir, restore_checkpoint, save_checkpoint, set_rng_state
from dgm.runs.device import resolve_device
from dgm.runs.lock import run_lock
from dgm.runs.log import LogWriter, truncate_log
from dgm.training.config import TrainConfig, learning_rate
from dgm.training.distributed import ProcessGroup, shard_batch, shard_batches, write_rank_digests
from dgm.training.divergence import NonFiniteSteps, check_finite_weights
from dgm.training.signals import EXIT_STATUS, StopSignals, signal_name

__all__ = ["FitResult", "ema_update", "fit", "step_generator"]

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FitResult:
    """What ``fit`` returns: the final step, why it stopped ("steps", "minutes", or the signal "SIGINT" /
    "SIGTERM"), the last logged loss, the EMA model and the steps skipped for a NaN or an infinity."""

    step: int
    stopped: str
    loss: float
    seconds: float
    ema: torch.nn.Module
    main: bool = True  # False on the processes of a multi-process run other than rank 0
    skipped_nonfinite: int = 0


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator of the noise drawn at ``step`` on process ``rank``: a function of (seed, rank, step)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied, except those whose names start
    with one of the model's ``ema_fixed_buffers`` (a DDPM's guide, which it writes into both copies itself)."""
    e_params = [p for p in ema.parameters()]
    m_params = [p.detach() for p in model.parameters()]
    if e_params:
        torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    fixed = tuple(getattr(model, "ema_fixed_buffers", ()))
    for (name, e), m in zip(ema.named_buffers(), model.buffers(), strict=True):
        if not name.startswith(fixed):
            e.copy_(m)


def _stage(model, cfg: TrainConfig, step: int) -> tuple[int, TrainConfig]:
    """(the step within the model's training stage, the settings with that stage's length as ``steps``): the
    step and ``cfg`` themselves for a model trained in one stage. The warm-ups and decays run on these."""
    if not hasattr(model, "stage_steps"):
        return step, cfg
    in_stage, length = model.stage_steps(step, cfg.steps)
    return in_stage, dataclasses.replace(cfg, steps=length)


@torch.no_grad()
def _check_model_fits_data(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> None:
    """One loss evaluation on two examples (eval mode, own generator), so a model that does not fit the
    data fails before anything is written."""
    was_training = model.training
    model.eval()
    try:
        labelled = {} if labels is None else {"cond": labels[:2]}
        model.loss(x[:2], generator=torch.Generator().manual_seed(0), **labelled)
    except (RuntimeError, ValueError) as err:
        msg = " ".join(str(err).split())
        raise ValueError(f"the {model.kind} model does not fit data of shape {tuple(x.shape[1:])}: {msg}") from None
    finally:
        model.train(was_training)


class _Checkpoints:
    """Writes the checkpoints of one run (rank 0 only) and remembers the step of the last one."""

    def __init__(self, out: Path, group: ProcessGroup, model, ema, optimizer, scaler, guard: NonFiniteSteps):
        self.out, self.main, self.last = out, group.main, None
        self.model, self.ema, self.optimizer, self.scaler, self.guard = model, ema, optimizer, scaler, guard

    def save(self, step: int) -> None:
        """A checkpoint with the trainer state (optimizer, global RNGs, skip counts, fp16's loss scale), after
        checking that every weight is finite (``check_finite_weights``)."""
        check_finite_weights(self.model, self.ema, step, self.last)
        if self.main:
            state = {"optimizer": self.optimizer.state_dict(), "rng": get_rng_state(), "nonfinite": self.guard.state()}
            if self.scaler.is_enabled():
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(self.out, self.model, self.ema, step=step, state=state)
        self.last = step

    def restore(self) -> int:
        """Load the last checkpoint into model, EMA, optimizer, loss scale, skip counts and the global RNGs."""
        state = restore_checkpoint(self.out, self.model, self.ema)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.guard.load(state.get("nonfinite"))
        set_rng_state(state["rng"])
        self.last = int(state["step"])
        return self.last


def _lock(out: Path, group: ProcessGroup, held: contextlib.ExitStack) -> None:
    """Rank 0 takes the run directory's lock (``dgm.runs.lock``) until ``held`` closes: a second ``dgm train``
    on the directory is refused at once. The other processes of a run take none (rank 0 writes every file);
    when rank 0 fails to get it, it exits with the error and the launcher stops the others."""
    if group.main:
        held.enter_context(run_lock(out))


def fit(model: torch.nn.Module, data, out: Path, *, train_config: TrainConfig, resume: bool = False,
        progress: bool = True, data_spec: dict | None = None, device: str | torch.device | None = None,
        on_nan: str = "stop", finish: Callable[[FitResult], None] | None = None) -> FitResult:
    """Train ``model`` on ``data.train`` and write checkpoints and a JSONL log to ``out``.

    Stops after ``train_config.steps`` steps in total or ``train_config.minutes`` of wall time (whichever
    comes first), or at the step boundary after a SIGINT or SIGTERM, with a checkpoint each time
    (``stopped`` says which; ``dgm.training.signals``). ``resume=True`` continues from ``out``'s last
    checkpoint; a run directory that already holds a run is an error without it, and so is one that another
    process is training in (``dgm.runs.lock``). ``on_nan``: "stop" (a NaN or infinite loss or gradient norm
    is a ``DivergenceError``) or "skip" (skip such steps, counted in ``skipped_nonfinite``); see
    ``dgm.training.divergence``. ``finish(result)``, if given, runs on rank 0 after the final checkpoint,
    still holding the lock (not after a signal). ``data_spec`` (how to reload the data, e.g.
    ``{"spec": "gmm2d", "seed": 0}``) is saved in config.json. ``device`` ("auto" by default: CUDA when
    available) is where the model, the data and the optimizer live; with several processes each takes
    accelerate's device (its own GPU, or the CPU). Random draws come from CPU generators seeded by (seed, rank,
    step) on every device (``dgm.core.rng``). CUDA runs follow the same code path but were not exercised on
    a GPU in this repository's tests.

    Debugging several processes: with the environment variable ``DGM_RANK_CHECKSUMS=PREFIX`` set, every
    process writes at the end the sha256 of each tensor of its model and EMA to ``PREFIX.rank{r}.json``
    (``dgm.training.distributed.write_rank_digests``); processes that stayed in step write identical files,
    equal to the digests of rank 0's model.safetensors.
    """
    cfg, out, group = train_config, Path(out), ProcessGroup(resolve_device(device))
    guard = NonFiniteSteps(on_nan)
    conditional = getattr(model, "conditional", False)  # a class-conditional model trains on the data's labels
    spec = data_spec or {"spec": data.name}
    run_config = {
        "model": model.config(),
        "data": with_labels(spec, data) if conditional else spec,
        "scaling": data.scaling.to_dict(),
        "train": dataclasses.asdict(cfg),
    }
    with contextlib.ExitStack() as held:
        locked_early = out.is_dir()  # "in use" comes before "already holds a run"; a new directory is made late
        if locked_early:
            _lock(out, group, held)
        prepare_run_dir(out, run_config, resume=resume, write=False)  # every rank checks before rank 0 writes
        model.to(group.device)
        x = data.train.to(group.device)
        labels = data.train_labels.to(group.device) if conditional else None
        per_rank, batch = shard_batches(len(x), cfg.batch_size, group)
        _check_model_fits_data(model, x, labels)
        if not locked_early:
            _lock(out, group, held)  # creates the directory
            prepare_run_dir(out, run_config, resume=resume, write=False)  # again: no other writer now
        group.barrier()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)  # so state.pt's Python RNG state is the same for the same seed
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # fp16 scales the loss so small gradients survive (a no-op for "no" and "bf16")
        scaler = torch.amp.GradScaler(group.device.type, enabled=cfg.mixed_precision == "fp16")
        ema = copy.deepcopy(model).requires_grad_(False)
        checkpoints = _Checkpoints(out, group, model, ema, optimizer, scaler, guard)
        if resume:
            step = checkpoints.restore()
        else:
            group.broadcast_(model)
            ema.load_state_dict(model.state_dict())
            step = 0
        if group.main:
            prepare_run_dir(out, run_config, resume=resume, write=True)
            if resume:
                truncate_log(out, step)
        if not resume:
            checkpoints.save(step)
        with StopSignals() as signals:
            result = _train(model, ema, optimizer, scaler, x, labels, cfg, group, checkpoints, signals, step,
                            where=dict(per_rank=per_rank, batch=batch, seed=cfg.seed, rank=group.rank,
                                       world=group.world), progress=progress)
        if finish is not None and group.main and result.stopped not in EXIT_STATUS:
            finish(result)
    if os.environ.get("DGM_RANK_CHECKSUMS"):
        write_rank_digests(os.environ["DGM_RANK_CHECKSUMS"], group.rank, {"model": model, "ema": ema})
    group.barrier()
    return result


def _train(model, ema, optimizer, scaler, x, labels, cfg: TrainConfig, group: ProcessGroup,
           checkpoints: _Checkpoints, signals: StopSignals, step: int, *, where: dict, progress: bool) -> FitResult:
    """The steps of ``fit`` from ``step`` on, ending with the final checkpoint."""
    guard, out = checkpoints.guard, checkpoints.out
    bar = tqdm(total=cfg.steps, initial=step, file=sys.stderr, disable=not (progress and group.main),
               dynamic_ncols=True, desc=f"train {model.kind}")
    t0 = last_t = time.monotonic()
    window, done, last_loss, stopped, good = [], 0, float("nan"), "steps", {}
    log = LogWriter(out) if group.main else None
    committing = False  # between the optimizer's update and the step count: no checkpoint there
    try:
        while step < cfg.steps:
            over, signum = group.max_each([cfg.minutes is not None and time.monotonic() - t0 >= 60 * cfg.minutes,
                                           signals.number])
            if signum or over:
                stopped = signal_name(int(signum)) if signum else "minutes"
                break
            model.train()
            if hasattr(model, "begin_step"):  # the LDM switches stages here; a DDPM takes its guide (models/guide.py)
                model.begin_step(step, x, ema)
            in_stage, stage_cfg = _stage(model, cfg, step)
            lr = learning_rate(stage_cfg, in_stage)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            xb, yb = shard_batch(step, x, labels, **where)
            with torch.autocast(group.device.type, dtype=AUTOCAST.get(cfg.mixed_precision),
                                enabled=cfg.mixed_precision in AUTOCAST):
                labelled = {} if yb is None else {"cond": yb}  # labels only for a conditional model
                loss, numbers = model.loss(xb, generator=step_generator(cfg.seed, group.rank, step), **labelled)
            loss = loss.float()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            group.mean_grads_(model)
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf))
            loss_value = loss.item()
            if group.max_each([not math.isfinite(loss_value)])[0] and math.isfinite(loss_value):
                loss_value = math.nan  # another process's loss is not finite: every process skips or stops
            if guard.allow(step, loss_value, grad_norm, last_saved=checkpoints.last,
                           scaler_decides=scaler.is_enabled()):
                committing = True
                scale = scaler.get_scale() if scaler.is_enabled() else None
                scaler.step(optimizer)  # skipped by fp16's scaler when a gradient overflowed
                scaler.update()
                if scale is not None and scaler.get_scale() < scale:
                    guard.scaler_skipped(step, checkpoints.last)
                else:
                    guard.applied()
                    good = {"grad_norm": grad_norm, **{k: float(v) for k, v in numbers.items()}}
                ema_update(ema, model, min(cfg.ema_decay, (1 + in_stage) / (10 + in_stage)))
                window.append(loss.detach())
            else:
                scaler.update()  # fp16: ends the scaler's step (it halves the scale); else a no-op
                if guard.skipped == 1 and group.main:
                    print(f"dgm: warning: skipped step {step + 1} (loss {loss_value}, gradient norm {grad_norm}); "
                          "log.jsonl counts such steps in skipped_nonfinite", file=sys.stderr)
            step, done, committing = step + 1, done + 1, False
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.monotonic()
                record = {"step": step}
                if window:  # else every step since the last record was skipped: no loss to show
                    last_loss = group.mean_(torch.stack(window).mean()).item()
                    record["loss"] = last_loss
                    bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
                record |= {"lr": lr, **good, "it_per_s": done / max(now - last_t, 1e-9), "elapsed_s": now - t0,
                           "processes": group.world, "batch_per_process": where["batch"],
                           "shard_size": where["per_rank"], "skipped_nonfinite": guard.skipped}
                window, done, last_t = [], 0, now
                if log:
                    log.write(record)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                checkpoints.save(step)
    except KeyboardInterrupt:
        if not committing:  # a step boundary (the step's draws aside): a checkpoint a resume can start from
            checkpoints.save(step)
        raise
    finally:
        bar.close()
        if log:
            log.close()
    checkpoints.save(step)
    return FitResult(step=step, stopped=stopped, loss=last_loss, seconds=time.monotonic() - t0, ema=ema,
                     main=group.main, skipped_nonfinite=guard.skipped)
