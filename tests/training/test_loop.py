"""fit(): run directory, exact resume, EMA, caps, interrupts, mixed precision, and a SIGKILL through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs.log import LOG
from dgm.training.config import TrainConfig
from dgm.training.loop import ema_update, fit

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 50,
        "net": {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "emb_dim": 8}}
DGM = [sys.executable, "-m", "dgm.cli"]


@pytest.fixture(scope="module")
def gmm2d():
    return load_data("gmm2d")


def _fit(data, out, *, resume=False, seed=0, **train):
    torch.manual_seed(seed)
    model = build_model(TINY)
    config = TrainConfig(**({"batch_size": 32, "log_every": 1, "checkpoint_every": 4, "seed": seed} | train))
    return fit(model, data, out, train_config=config, resume=resume, progress=False)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG).read_text().splitlines()]


def test_fit_writes_the_run_directory(gmm2d, tmp_path):
    result = _fit(gmm2d, tmp_path / "run", steps=6)
    assert result.step == 6 and result.stopped == "steps"
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [".lock", "config.json", "log.jsonl", "model.safetensors", "state.pt"]  # .lock: runs/lock.py
    config = ckpt.read_config(tmp_path / "run")
    assert config["model"]["kind"] == "ddpm" and config["train"]["steps"] == 6
    assert config["scaling"]["kind"] == "vector" and config["data"]["spec"] == "gmm2d"
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, 7))
    assert all(r["loss"] > 0 and r["it_per_s"] > 0 and r["processes"] == 1 for r in log)
    assert ckpt.load_weights(tmp_path / "run" / ckpt.WEIGHTS)[1]["step"] == "6"
    assert ckpt.load_state(tmp_path / "run" / ckpt.STATE)["step"] == 6


def test_resume_continues_exactly(gmm2d, tmp_path):
    _fit(gmm2d, tmp_path / "whole", steps=10)
    _fit(gmm2d, tmp_path / "split", steps=5)
    _fit(gmm2d, tmp_path / "split", steps=10, resume=True, seed=0)
    whole, split = _log(tmp_path / "whole"), _log(tmp_path / "split")
    assert [r["loss"] for r in whole] == [r["loss"] for r in split]
    a, _ = ckpt.load_weights(tmp_path / "whole" / ckpt.WEIGHTS)
    b, _ = ckpt.load_weights(tmp_path / "split" / ckpt.WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_ignores_log_lines_after_the_checkpoint(gmm2d, tmp_path):
    _fit(gmm2d, tmp_path / "r", steps=6, checkpoint_every=100)  # final checkpoint at 6
    with open(tmp_path / "r" / LOG, "a") as f:
        f.write('{"step": 7, "loss": 1.0}\n{"step": 8, "lo')  # as if killed after step 8 was half-logged
    _fit(gmm2d, tmp_path / "r", steps=8, resume=True, checkpoint_every=100)
    assert [r["step"] for r in _log(tmp_path / "r")] == list(range(1, 9))


def test_ema_is_an_exponential_average():
    torch.manual_seed(0)
    model, ema = build_model(TINY), build_model(TINY)
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for e, b, m in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * m)


def test_ema_weights_are_saved_and_used(gmm2d, tmp_path):
    _fit(gmm2d, tmp_path / "r", steps=20, ema_decay=0.9)
    tensors, _ = ckpt.load_weights(tmp_path / "r" / ckpt.WEIGHTS)
    raw, ema = ckpt.split_prefix(tensors, "model"), ckpt.split_prefix(tensors, "ema")
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    model, _ = ckpt.load_model(tmp_path / "r")
    assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)


def test_minutes_cap_stops_early(gmm2d, tmp_path):
    result = _fit(gmm2d, tmp_path / "r", steps=10**6, minutes=0.02, log_every=50)
    assert result.stopped == "minutes" and 0 < result.step < 10**6
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == result.step


def test_keyboard_interrupt_saves_a_checkpoint(gmm2d, tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    calls = {"n": 0}
    loss = model.loss

    def interrupted(x0, generator=None):
        calls["n"] += model.training  # fit first checks the model on two examples in eval mode
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return loss(x0, generator=generator)

    model.loss = interrupted
    with pytest.raises(KeyboardInterrupt):
        fit(model, gmm2d, tmp_path / "r", train_config=TrainConfig(steps=100, batch_size=8), progress=False)
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 3


def _wait_for_checkpoint(out: Path, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(ckpt.load_weights(out / ckpt.WEIGHTS)[1]["step"]) > 0:
                return
        except ckpt.CheckpointError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("no checkpoint after step 0")


def test_sigkill_then_resume(tmp_path):
    settings = tmp_path / "tiny.toml"
    settings.write_text('[model]\nlevels = 50\n[model.net]\nhidden = 16\ndepth = 1\nemb_dim = 8\n'
                        '[train]\nbatch_size = 32\nlog_every = 1\ncheckpoint_every = 20\n')
    out = tmp_path / "run"
    args = ["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings), "--no-progress"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*DGM, *args, "--steps", "100000"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_checkpoint(out, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = int(ckpt.load_weights(out / ckpt.WEIGHTS)[1]["step"])  # the last checkpoint's weights
    assert killed_at > 0 and killed_at % 20 == 0
    done = subprocess.run([*DGM, *args, "--resume", "--steps", str(killed_at + 30)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ckpt.load_state(out / ckpt.STATE)["step"] == killed_at + 30
    steps = [r["step"] for r in _log(out)]
    assert steps == list(range(1, killed_at + 31))
    model, config = ckpt.load_model(out)
    assert config["train"]["steps"] == killed_at + 30 and model.kind == "ddpm"


def test_fit_resumes_from_a_kill_between_weights_and_state(tmp_path, monkeypatch):
    """The window of ``save_checkpoint`` between writing the weights and renaming state.next.pt: the next
    ``fit(resume=True)`` starts from the new weights and that state."""
    data = load_data("gmm2d")
    net = {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}
    model = build_model({"kind": "ddpm", "data_shape": [2], "net": net, "levels": 10})
    cfg = TrainConfig(steps=4, batch_size=16, log_every=1, checkpoint_every=2)
    out = tmp_path / "r"
    fit(model, data, out, train_config=cfg, progress=False)
    opt = torch.optim.AdamW(model.parameters())
    replace = ckpt.os.replace

    def killed_before_the_rename(src, dst):
        if src == out / ckpt.STATE_NEXT:
            raise SystemExit("killed")
        replace(src, dst)

    with monkeypatch.context() as m, pytest.raises(SystemExit):
        m.setattr(ckpt.os, "replace", killed_before_the_rename)
        ckpt.save_checkpoint(out, model, model, step=9,
                             state={"optimizer": opt.state_dict(), "rng": ckpt.get_rng_state()})
    assert ckpt.load_state(out / ckpt.STATE)["step"] == 4 and (out / ckpt.STATE_NEXT).exists()
    resumed = fit(model, data, out, train_config=TrainConfig(steps=10, batch_size=16, log_every=1,
                                                             checkpoint_every=2), resume=True, progress=False)
    assert resumed.step == 10 and [r["step"] for r in _log(out)] == [1, 2, 3, 4, 10]
    assert ckpt.load_state(out / ckpt.STATE)["step"] == 10 and not (out / ckpt.STATE_NEXT).exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    """The forward pass under autocast: the loss stays finite and falls; fp16's loss scale is checkpointed."""
    data = load_data("gmm2d")
    net = {"kind": "mlp", "dim": 2, "hidden": 32, "depth": 1, "emb_dim": 16}
    model = build_model({"kind": "ddpm", "data_shape": [2], "net": net, "levels": 50})
    cfg = TrainConfig(steps=60, batch_size=64, log_every=10, warmup_steps=5, mixed_precision=precision)
    result = fit(model, data, tmp_path / "r", train_config=cfg, progress=False)
    losses = [r["loss"] for r in _log(tmp_path / "r")]
    assert result.step == 60 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    state = ckpt.load_state(tmp_path / "r" / ckpt.STATE)
    assert ("scaler" in state) == (precision == "fp16")
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0
        model = build_model({"kind": "ddpm", "data_shape": [2], "net": net, "levels": 50})
        cfg = TrainConfig(steps=70, batch_size=64, log_every=10, warmup_steps=5, mixed_precision=precision)
        assert fit(model, data, tmp_path / "r", train_config=cfg, progress=False, resume=True).step == 70
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
