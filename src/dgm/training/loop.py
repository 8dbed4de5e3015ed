"""``fit``: the training loop shared by every model (AdamW, warm-up, clipping, EMA, checkpoints, resume).

Settings: ``dgm.training.config``; several processes: ``dgm.training.distributed``; the files written:
``dgm.runs.checkpoint`` (the checkpoint protocol) and ``dgm.runs.log`` (log.jsonl).

Resuming is exact: the data order is a function of (seed, epoch) and the noise of step ``t`` on rank
``r`` comes from a generator seeded with (seed, r, t), so nothing but the model, EMA, optimizer, step
and the global RNG states has to be saved.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dgm.data.spec import with_labels
from dgm.runs.checkpoint import get_rng_state, prepare_run_dir, restore_checkpoint, save_checkpoint, set_rng_state
from dgm.runs.device import resolve_device
from dgm.runs.log import LogWriter, truncate_log
from dgm.training.config import TrainConfig, learning_rate
from dgm.training.distributed import ProcessGroup, shard_batch, shard_batches, write_rank_digests

__all__ = ["FitResult", "ema_update", "fit", "step_generator"]

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters()]
    m_params = [p.detach() for p in model.parameters()]
    if e_params:
        torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(m)


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


def _save(out: Path, model, ema, optimizer, step: int, scaler) -> None:
    """A checkpoint with the trainer state: optimizer, global RNGs and (fp16) the loss scale."""
    state = {"optimizer": optimizer.state_dict(), "rng": get_rng_state()}
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    save_checkpoint(out, model, ema, step=step, state=state)


def _restore(out: Path, model, ema, optimizer, scaler) -> int:
    """Load the last checkpoint into model, EMA, optimizer, loss scale and the global RNGs; its step."""
    state = restore_checkpoint(out, model, ema)
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def fit(model: torch.nn.Module, data, out: Path, *, train_config: TrainConfig, resume: bool = False,
        progress: bool = True, data_spec: dict | None = None, device: str | torch.device | None = None) -> FitResult:
    """Train ``model`` on ``data.train`` and write checkpoints and a JSONL log to ``out``.

    Stops after ``train_config.steps`` steps in total or ``train_config.minutes`` of wall time (whichever
    comes first), and on KeyboardInterrupt (after a final checkpoint, re-raising it). ``resume=True``
    continues from ``out``'s last checkpoint; a run directory that already holds a run is an error
    without it. ``data_spec`` (how to reload the data, e.g. ``{"spec": "gmm2d", "seed": 0}``) is saved
    in config.json. ``device`` ("auto" by default: CUDA when available) is where the model, the data and the
    optimizer live; with several processes each takes accelerate's device (its own GPU, or the CPU). Random
    draws come from CPU generators seeded by (seed, rank, step) on every device (``dgm.core.rng``). CUDA runs
    follow the same code path but were not exercised on a GPU in this repository's tests.

    Debugging several processes: with the environment variable ``DGM_RANK_CHECKSUMS=PREFIX`` set, every
    process writes at the end the sha256 of each tensor of its model and EMA to ``PREFIX.rank{r}.json``
    (``dgm.training.distributed.write_rank_digests``); processes that stayed in step write identical files,
    equal to the digests of rank 0's model.safetensors.
    """
    cfg, out, group = train_config, Path(out), ProcessGroup(resolve_device(device))
    conditional = getattr(model, "conditional", False)  # a class-conditional model trains on the data's labels
    spec = data_spec or {"spec": data.name}
    run_config = {
        "model": model.config(),
        "data": with_labels(spec, data) if conditional else spec,
        "scaling": data.scaling.to_dict(),
        "train": dataclasses.asdict(cfg),
    }
    prepare_run_dir(out, run_config, resume=resume, write=False)  # every rank checks before rank 0 writes
    model.to(group.device)
    x = data.train.to(group.device)
    labels = data.train_labels.to(group.device) if conditional else None
    per_rank, batch = shard_batches(len(x), cfg.batch_size, group)
    _check_model_fits_data(model, x, labels)
    group.barrier()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fp16 scales the loss so small gradients survive (a no-op for "no" and "bf16")
    scaler = torch.amp.GradScaler(group.device.type, enabled=cfg.mixed_precision == "fp16")
    ema = copy.deepcopy(model).requires_grad_(False)
    if resume:
        step = _restore(out, model, ema, optimizer, scaler)
    else:
        group.broadcast_(model)
        ema.load_state_dict(model.state_dict())
        step = 0
    if group.main:
        prepare_run_dir(out, run_config, resume=resume, write=True)
        if resume:
            truncate_log(out, step)
        else:
            _save(out, model, ema, optimizer, step, scaler)
    where = dict(per_rank=per_rank, batch=batch, seed=cfg.seed, rank=group.rank, world=group.world)
    bar = tqdm(total=cfg.steps, initial=step, file=sys.stderr, disable=not (progress and group.main),
               dynamic_ncols=True, desc=f"train {model.kind}")
    t0 = last_t = time.monotonic()
    window, last_loss, stopped = [], float("nan"), "steps"
    log = LogWriter(out) if group.main else None
    try:
        while step < cfg.steps:
            if cfg.minutes is not None and group.any(time.monotonic() - t0 >= 60 * cfg.minutes):
                stopped = "minutes"
                break
            model.train()
            lr = learning_rate(cfg, step)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            xb, yb = shard_batch(step, x, labels, **where)
            with torch.autocast(group.device.type, dtype=AUTOCAST.get(cfg.mixed_precision),
                                enabled=cfg.mixed_precision in AUTOCAST):
                labelled = {} if yb is None else {"cond": yb}  # labels only for a conditional model
                loss, numbers = model.loss(xb, generator=step_generator(cfg.seed, group.rank, step), **labelled)
            loss = loss.float()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {step}; try a smaller --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            group.mean_grads_(model)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            scaler.step(optimizer)  # skipped by fp16's scaler when a gradient overflowed
            scaler.update()
            ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)
            window.append(loss.detach())
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_loss = group.mean_(torch.stack(window).mean()).item()
                now = time.monotonic()
                record = {"step": step, "loss": last_loss, "lr": lr, "grad_norm": float(grad_norm),
                          "it_per_s": len(window) / max(now - last_t, 1e-9), "elapsed_s": now - t0,
                          "processes": group.world, "batch_per_process": batch, "shard_size": per_rank,
                          **{k: float(v) for k, v in numbers.items()}}
                window, last_t = [], now
                bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
                if log:
                    log.write(record)
            if step % cfg.checkpoint_every == 0 and group.main and step < cfg.steps:
                _save(out, model, ema, optimizer, step, scaler)
    except KeyboardInterrupt:
        if group.main:
            _save(out, model, ema, optimizer, step, scaler)
        raise
    finally:
        bar.close()
        if log:
            log.close()
    if group.main:
        _save(out, model, ema, optimizer, step, scaler)
    if os.environ.get("DGM_RANK_CHECKSUMS"):
        write_rank_digests(os.environ["DGM_RANK_CHECKSUMS"], group.rank, {"model": model, "ema": ema})
    group.barrier()
    return FitResult(step=step, stopped=stopped, loss=last_loss, seconds=time.monotonic() - t0, ema=ema,
                     main=group.main)
