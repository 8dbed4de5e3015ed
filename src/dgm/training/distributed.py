"""Several training processes: the process group and each process's shard of the data.

One process runs a plain loop. Under ``accelerate launch`` or torchrun (``WORLD_SIZE > 1``) every process
trains on its own shard of each epoch's permutation, the gradients are averaged with one all-reduce per
step (so the global batch is ``batch_size * processes``), and only rank 0 writes files. Class labels
travel with their examples (``shard_batch``).
``write_rank_digests`` is the debugging check that the processes stayed in step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

__all__ = ["ProcessGroup", "batch_indices", "shard_batch", "shard_batches", "write_rank_digests"]


class ProcessGroup:
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

    def mean_grads_(self, module: torch.nn.Module) -> None:
        """Average the gradients of ``module`` over processes (one all-reduce of all of them, flattened)."""
        if self.world == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = self.mean_(torch.cat([g.reshape(-1) for g in grads]))
        parts = flat.split([g.numel() for g in grads])
        torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(parts, grads, strict=True)])

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def max_each(self, values: list[float]) -> list[float]:
        """The largest value of each entry of ``values`` over processes (one all-reduce): flags that every
        process must act on together (a signal, a non-finite loss, the time limit)."""
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return t.tolist()

    def broadcast_(self, module: torch.nn.Module):
        """Copy rank 0's weights and buffers of ``module`` to every process."""
        if self.world > 1:
            for t in module.state_dict().values():
                torch.distributed.broadcast(t, src=0)


def shard_batches(n: int, batch_size: int, group: ProcessGroup) -> tuple[int, int]:
    """(examples per process, batch size per process) for ``n`` training examples."""
    per_rank = n // group.world
    if per_rank == 0:
        raise ValueError(f"{n} training examples cannot be split over {group.world} processes")
    if batch_size > per_rank and group.main:
        print(f"dgm: warning: batch size {batch_size} > {per_rank} examples per process; using {per_rank}",
              file=sys.stderr)
    return per_rank, min(batch_size, per_rank)


def batch_indices(step: int, *, n: int, per_rank: int, batch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Indices of process ``rank``'s batch at ``step`` among ``n`` examples.

    Each epoch is a permutation of the examples seeded by (seed, epoch); process ``rank`` of ``world`` takes
    its slice of ``per_rank`` examples and walks through it ``batch`` at a time, so the processes' batches
    are disjoint and a resumed run draws the same batches.
    """
    if not 0 <= rank < world or per_rank * world > n:
        raise ValueError(f"batch_indices: rank {rank} of {world} processes with {per_rank} examples each "
                         f"does not fit {n} examples")
    per_epoch = per_rank // batch
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    mine = perm[rank * per_rank : (rank + 1) * per_rank]
    return mine[k * batch : (k + 1) * batch]


def shard_batch(step: int, x: torch.Tensor, labels: torch.Tensor | None, *, per_rank: int, batch: int, seed: int,
                rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(examples, labels) of process ``rank``'s batch at ``step`` (``batch_indices`` over the ``len(x)``
    examples): the same indices pick both, so every label stays with its example; labels None stay None."""
    idx = batch_indices(step, n=len(x), per_rank=per_rank, batch=batch, seed=seed, rank=rank, world=world)
    idx = idx.to(x.device)
    return x[idx], None if labels is None else labels[idx.to(labels.device)]


def write_rank_digests(prefix: str, rank: int, modules: dict[str, torch.nn.Module]) -> None:
    """Write ``{"model.<name>": sha256, ...}`` of this process's weights to ``PREFIX.rank{rank}.json``.

    One sha256 per tensor of each module's state dict, of its bytes in C order on the CPU, named as in
    model.safetensors; processes that stayed in step write identical files (``fit``'s DGM_RANK_CHECKSUMS).
    """
    digests = {f"{key}.{name}": hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                                                  .numpy()).hexdigest()
               for key, module in modules.items() for name, t in module.state_dict().items()}
    with open(f"{prefix}.rank{rank}.json", "w") as f:
        json.dump(digests, f, indent=1, sort_keys=True)
