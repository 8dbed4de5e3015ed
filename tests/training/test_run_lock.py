"""One writer per run: ``fit`` holds the run directory's lock (``dgm.runs.lock``) for the whole run, so a second
``dgm train`` on it, with or without --resume, is refused with one line; a SIGKILLed holder leaves it free.

The other process is a small Python that holds or probes the lock with lock.py loaded by its path (no torch:
it starts in milliseconds).
"""

import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs import lock as lock_module
from dgm.runs.lock import RunLockedError, run_lock
from dgm.training.config import TrainConfig
from dgm.training.loop import _lock, fit

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 20,
        "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}}
TOML = '[model]\nlevels = 20\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n[train]\nbatch_size = 16\n'
LOAD = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", {str(Path(lock_module.__file__))!r})
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
"""
HOLD = LOAD + """
with lock.run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""
PROBE = LOAD + """
try:
    with lock.run_lock(sys.argv[1]):
        print("free")
except lock.RunLockedError:
    print("locked")
"""


def _probe(run: Path) -> str:
    """Whether another process finds the lock of ``run`` "locked" or "free"."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(run)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def gmm2d():
    return load_data("gmm2d")


def _train(data, out, steps, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=16, log_every=1, checkpoint_every=2)
    return fit(build_model(TINY), data, out, train_config=cfg, progress=False, **kw)


def test_the_lock_is_held_for_the_whole_run_and_released_after(gmm2d, tmp_path):
    """Probed from another process during a step and in ``finish`` (after the final checkpoint, where dgm train
    estimates an analytic variance): locked; after fit: free. Catches fit not taking the lock, or releasing it
    before ``finish``."""
    out, seen = tmp_path / "run", []
    torch.manual_seed(0)
    model = build_model(TINY)
    loss = model.loss

    def probing(x0, generator=None):
        if model.training and not seen:
            seen.append(_probe(out))
        return loss(x0, generator=generator)

    model.loss = probing
    fit(model, gmm2d, out, train_config=TrainConfig(steps=3, batch_size=16), progress=False,
        finish=lambda result: seen.append(_probe(out)))
    assert seen == ["locked", "locked"]
    assert _probe(out) == "free"


def test_a_second_writer_is_refused_and_a_killed_one_leaves_the_lock_free(gmm2d, tmp_path, one_line_error):
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
    holder = _holder(out)
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


def test_a_new_run_directory_is_locked_before_anything_is_written(gmm2d, tmp_path):
    """fit on an empty directory that another process holds locked: refused, nothing written. Catches a lock
    taken only once the run directory holds a run."""
    out = tmp_path / "new"
    holder = _holder(out)  # creates the directory and holds its lock
    try:
        with pytest.raises(RunLockedError, match="is in use"):
            _train(gmm2d, out, 2)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_only_rank_0_takes_the_lock(tmp_path):
    """The other processes of a multi-process run take no lock (rank 0 holds it): were every rank to lock, rank
    1 would be refused by rank 0. Catches the lock taken on every process."""
    with ExitStack() as held:
        _lock(tmp_path / "r", SimpleNamespace(main=False), held)
        assert _probe(tmp_path / "r") == "free"
        _lock(tmp_path / "r", SimpleNamespace(main=True), held)
        assert _probe(tmp_path / "r") == "locked"
    with run_lock(tmp_path / "r"):  # and released when the run ends
        pass
