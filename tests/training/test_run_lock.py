"""One writer per run: ``fit`` holds the run directory's lock (``dgm.runs.lock``) for the whole run, so a second
``dgm train`` on it, with or without --resume, is refused with one line; a SIGKILLed holder leaves it free.

The other process is a small Python that holds or probes the lock with lock.py loaded by its path (no torch:
it starts in milliseconds).
"""

import os
import signal
from contextlib import ExitStack
from types import SimpleNamespace

import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs.lock import RunLockedError, run_lock
from dgm.training.config import TrainConfig
from dgm.training.loop import _lock, fit

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 20,
        "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}}
TOML = '[model]\nlevels = 20\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n[train]\nbatch_size = 16\n'
@pytest.fixture(scope="module")
def gmm2d():
    return load_data("gmm2d")


def _train(data, out, steps, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=16, log_every=1, checkpoint_every=2)
    return fit(build_model(TINY), data, out, train_config=cfg, progress=False, **kw)


def test_the_lock_is_held_for_the_whole_run_and_released_after(gmm2d, tmp_path, lock_process):
    """Probed from another process during a step and in ``finish`` (after the final checkpoint, where dgm train
    estimates an analytic variance): locked; after fit: free. Catches fit not taking the lock, or releasing it
    before ``finish``."""
    out, seen = tmp_path / "run", []
    torch.manual_seed(0)
    model = build_model(TINY)
    loss = model.loss

    def probing(x0, generator=None):
        if model.training and not seen:
            seen.append(lock_process.probe(out))
        return loss(x0, generator=generator)

    model.loss = probing
    fit(model, gmm2d, out, train_config=TrainConfig(steps=3, batch_size=16), progress=False,
        finish=lambda result: seen.append(lock_process.probe(out)))
    assert seen == ["locked", "locked"]
    assert lock_process.probe(out) == "free"


def test_a_second_writer_is_refused_and_a_killed_one_leaves_the_lock_free(gmm2d, tmp_path, one_line_error,
                                                                           lock_process):
    """Another process holds the lock of a run directory: `dgm train --out DIR --resume` and `dgm train --out
    DIR` both answer "in use" in one line (not "already holds this run", which would send the user to
    --resume) and write nothing. After the holder is SIGKILLed the resume trains. Catches the lock not taken
    by fit, or taken after the run-directory check."""
    out = tmp_path / "run"
    _train(gmm2d, out, 2)
    settings = tmp_path / "tiny.toml"
    settings.write_text(TOML)
    argv = ["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings), "--steps", "4",
            "--no-progress"]
    holder = lock_process.holder(out)
    try:
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
        for extra in (["--resume"], []):
            line = one_line_error([*argv, *extra])
            assert f"run directory {str(out)!r} is in use by another dgm process (pid {holder.pid})" in line
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    _train(gmm2d, out, 4, resume=True)
    assert ckpt.load_state(out / ckpt.STATE)["step"] == 4


def test_a_new_run_directory_is_locked_before_anything_is_written(gmm2d, tmp_path, lock_process):
    """fit on an empty directory that another process holds locked: refused, nothing written. Catches a lock
    taken only once the run directory holds a run."""
    out = tmp_path / "new"
    holder = lock_process.holder(out)  # creates the directory and holds its lock
    try:
        with pytest.raises(RunLockedError, match="is in use"):
            _train(gmm2d, out, 2)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_only_rank_0_takes_the_lock(tmp_path, lock_process):
    """The other processes of a multi-process run take no lock (rank 0 holds it): were every rank to lock, rank
    1 would be refused by rank 0. Catches the lock taken on every process."""
    with ExitStack() as held:
        _lock(tmp_path / "r", SimpleNamespace(main=False), held)
        assert lock_process.probe(tmp_path / "r") == "free"
        _lock(tmp_path / "r", SimpleNamespace(main=True), held)
        assert lock_process.probe(tmp_path / "r") == "locked"
    with run_lock(tmp_path / "r"):  # and released when the run ends
        pass
