"""SIGINT and SIGTERM during training (``dgm.training.signals``): a checkpoint at the step boundary, a clean
exit (130 / 143 through the CLI) and a resumed run that continues bit for bit.

The signals are raised inside the process at a chosen step (``signal.raise_signal`` from the model's loss), so
the tests are exact; each first installs a fallback handler that raises ``NotCaught``, so a missing dgm
handler fails the test instead of killing pytest.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs.log import read_log
from dgm.training import signals
from dgm.training.config import TrainConfig
from dgm.training.loop import fit
from dgm.training.signals import EXIT_STATUS, StopSignals

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 20,
        "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}}
CONFIG = dict(batch_size=16, log_every=1, checkpoint_every=100, warmup_steps=1)
SIGNALS = [signal.SIGINT, signal.SIGTERM]


class NotCaught(Exception):
    """The signal reached the handler that was there before dgm's."""


@pytest.fixture
def fallback():
    """Handlers of SIGINT and SIGTERM that raise NotCaught (restored to the originals afterwards)."""
    def handler(signum, frame):
        raise NotCaught(signal.Signals(signum).name)

    before = {s: signal.signal(s, handler) for s in SIGNALS}
    yield handler
    for s, h in before.items():
        signal.signal(s, h)


@pytest.fixture(scope="module")
def gmm2d():
    return load_data("gmm2d")


def _model(signum=None, at=(), times=1):
    """The tiny DDPM; its loss raises ``signum`` ``times`` times during training step number ``at`` (1-based)."""
    torch.manual_seed(0)
    model = build_model(TINY)
    calls, loss = {"n": 0}, model.loss

    def signalling(x0, generator=None):
        if model.training:
            calls["n"] += 1
            if calls["n"] in at:
                for _ in range(times):
                    signal.raise_signal(signum)
        return loss(x0, generator=generator)

    model.loss = signalling
    return model


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_stops_at_the_step_boundary_and_the_resume_is_exact(signum, fallback, gmm2d, tmp_path):
    """The signal lands inside step 4's loss: step 4 completes, the checkpoint is of step 4, the handlers are
    restored, and resuming to step 8 gives the weights, EMA and log of a run never stopped. Catches the handler
    removed (NotCaught), no checkpoint on a signal, a checkpoint in the middle of a step, or handlers that
    stay installed after fit."""
    stopped = fit(_model(signum, at=(4,)), gmm2d, tmp_path / "stopped", train_config=TrainConfig(steps=8, **CONFIG),
                  progress=False)
    assert (stopped.stopped, stopped.step) == (signum.name, 4)
    assert signal.getsignal(signum) is fallback
    assert ckpt.load_state(tmp_path / "stopped" / ckpt.STATE)["step"] == 4
    fit(_model(), gmm2d, tmp_path / "stopped", train_config=TrainConfig(steps=8, **CONFIG), resume=True,
        progress=False)
    fit(_model(), gmm2d, tmp_path / "whole", train_config=TrainConfig(steps=8, **CONFIG), progress=False)
    a, b = (ckpt.load_weights(tmp_path / run / ckpt.WEIGHTS)[0] for run in ("whole", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = ("it_per_s", "elapsed_s")
    logs = [[{k: v for k, v in r.items() if k not in drop} for r in read_log(tmp_path / run)]
            for run in ("whole", "stopped")]
    assert logs[0] == logs[1]


def test_a_second_signal_gets_the_previous_behaviour_and_keeps_the_last_checkpoint(fallback, gmm2d, tmp_path,
                                                                                    monkeypatch):
    """Two SIGTERMs in step 3 (the repeat window set to 0): the second goes to the handler that was there
    before (here NotCaught; by default termination), and the step-2 checkpoint stays. Catches a second signal
    swallowed (no way to stop a hung step) or a checkpoint written mid-step."""
    monkeypatch.setattr(signals, "REPEAT_WINDOW_S", 0.0)
    cfg = TrainConfig(steps=8, **(CONFIG | {"checkpoint_every": 2}))
    with pytest.raises(NotCaught, match="SIGTERM"):
        fit(_model(signal.SIGTERM, at=(3,), times=2), gmm2d, tmp_path / "r", train_config=cfg, progress=False)
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is fallback


def test_a_signal_delivered_twice_at_once_is_one_request(fallback, gmm2d, tmp_path):
    """Under torchrun a Ctrl-C reaches each worker twice within milliseconds (from the terminal and forwarded
    by the agent): still a clean stop at the step boundary. Catches the repeat taken for a second Ctrl-C."""
    result = fit(_model(signal.SIGINT, at=(3,), times=2), gmm2d, tmp_path / "r",
                 train_config=TrainConfig(steps=8, **CONFIG), progress=False)
    assert (result.stopped, result.step) == ("SIGINT", 3)
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 3


def test_an_ignored_signal_stays_ignored():
    """A process started with SIGINT ignored (a background job, nohup) must not start stopping on Ctrl-C."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert stop.received is None
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_the_command_line_exits_128_plus_the_signal_with_one_line(signum, fallback, tmp_path, capsys, monkeypatch):
    """`dgm train` stopped by a signal: exit status 130 / 143, one line naming the signal, the step and the
    run directory, no summary of a finished run. Catches exit 0 (a scheduler would take the run as done)."""
    from dgm.cli import main
    from dgm.models.ddpm import DDPM

    loss, calls = DDPM.loss, {"n": 0}

    def signalling(self, x0, **kw):
        calls["n"] += self.training
        if self.training and calls["n"] == 3:
            signal.raise_signal(signum)
        return loss(self, x0, **kw)

    monkeypatch.setattr(DDPM, "loss", signalling)
    settings = tmp_path / "tiny.toml"
    settings.write_text('[model]\nlevels = 20\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n'
                        '[train]\nbatch_size = 16\n')
    out = tmp_path / "run"
    code = main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings), "--steps", "50",
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_STATUS[signum.name] == 128 + signum
    assert err == [f"dgm: {signum.name}: ddpm stopped at step 3; checkpoint in {out} (dgm train ... --resume "
                   "continues it)"]
    assert ckpt.load_state(out / ckpt.STATE)["step"] == 3


@pytest.mark.slow
def test_sigterm_from_another_process(tmp_path):
    """A real `kill -TERM` of a training `dgm train` process: exit status 143 and a checkpoint past step 0."""
    settings = tmp_path / "tiny.toml"
    settings.write_text('[model]\nlevels = 20\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n'
                        '[train]\nbatch_size = 16\nlog_every = 1\n')
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dgm.cli", "train", "ddpm", "--data", "gmm2d", "--out", str(out),
                             "--config", str(settings), "--steps", "1000000", "--no-progress"],
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not read_log(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    step = ckpt.load_state(out / ckpt.STATE)["step"]
    assert step > 0 and err.strip().splitlines()[-1].startswith(f"dgm: SIGTERM: ddpm stopped at step {step};")
