"""Divergence stops cleanly (``dgm.training.divergence``): a NaN or infinite loss or gradient never reaches a
checkpoint; ``on_nan="skip"`` skips and counts such steps; fp16's own skipped steps are not divergence."""

import json
import math

import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs.log import read_log
from dgm.training import divergence
from dgm.training.config import TrainConfig
from dgm.training.divergence import DivergenceError, NonFiniteSteps, check_finite_weights
from dgm.training.loop import fit

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 20,
        "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}}


@pytest.fixture(scope="module")
def gmm2d():
    return load_data("gmm2d")


def _model(poison=None):
    """The tiny DDPM; ``poison(n, loss, model)`` may replace the loss of the n-th training step (1-based)."""
    torch.manual_seed(0)
    model = build_model(TINY)
    if poison is not None:
        calls, loss = {"n": 0}, model.loss

        def poisoned(x0, generator=None):
            value, numbers = loss(x0, generator=generator)
            if not model.training:  # fit first checks the model on two examples in eval mode
                return value, numbers
            calls["n"] += 1
            return poison(calls["n"], value, model), numbers

        model.loss = poisoned
    return model


def _nan_at(*steps):
    return lambda n, value, model: value * math.nan if n in steps else value


def _cfg(**kw):
    return TrainConfig(**({"steps": 6, "batch_size": 16, "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1}
                          | kw))


def _weights(run):
    return ckpt.load_weights(run / ckpt.WEIGHTS)[0]


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(gmm2d, tmp_path):
    """Catches the loss check removed (the NaN gradient reaches AdamW; the step-6 checkpoint would hold NaN or
    the weights guard would answer instead) or a checkpoint written after the NaN."""
    with pytest.raises(DivergenceError) as info:
        fit(_model(_nan_at(5)), gmm2d, tmp_path / "r", train_config=_cfg(), progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("training diverged at step 5: the loss is nan")
    assert "the checkpoint of step 4 is kept" in message
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 4
    assert all(torch.isfinite(t).all() for t in _weights(tmp_path / "r").values())


def test_an_infinite_gradient_with_a_finite_loss_stops_too(gmm2d, tmp_path):
    """sqrt at 0 has an infinite derivative: the loss stays finite, the gradient norm does not. Catches a check
    of the loss alone."""
    def inf_grad(n, value, model):
        w = next(model.parameters()).sum()
        return value + torch.sqrt(w - w.detach()) if n == 3 else value

    with pytest.raises(DivergenceError, match="at step 3: the gradient norm is (inf|nan)"):
        fit(_model(inf_grad), gmm2d, tmp_path / "r", train_config=_cfg(), progress=False)
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 2


def test_skip_makes_no_optimizer_or_ema_update_and_counts(gmm2d, tmp_path):
    """Steps 3..6 all NaN under "skip": the run ends at step 6 with model and EMA weights bit for bit those of
    a clean run stopped at step 2, AdamW's step count 2, and 4 skips in the log and the result. Catches an
    optimizer or EMA update on a skipped step, a skip not counted, or a skip that stops the run."""
    result = fit(_model(_nan_at(3, 4, 5, 6)), gmm2d, tmp_path / "skip", train_config=_cfg(), progress=False,
                 on_nan="skip")
    fit(_model(), gmm2d, tmp_path / "clean", train_config=_cfg(steps=2), progress=False)
    assert result.step == 6 and result.skipped_nonfinite == 4
    skipped, clean = _weights(tmp_path / "skip"), _weights(tmp_path / "clean")
    assert skipped.keys() == clean.keys() and all(torch.equal(skipped[k], clean[k]) for k in clean)
    state = ckpt.load_state(tmp_path / "skip" / ckpt.STATE)
    assert state["nonfinite"] == {"skipped": 4, "consecutive": 4}
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {2}
    log = read_log(tmp_path / "skip")
    assert [r["skipped_nonfinite"] for r in log] == [0, 0, 1, 2, 3, 4]
    assert ["loss" in r for r in log] == [True, True, False, False, False, False]  # no NaN in log.jsonl
    json.loads((tmp_path / "skip" / "log.jsonl").read_text().splitlines()[-1])  # strict JSON


def test_skip_stops_after_too_many_in_a_row(gmm2d, tmp_path, monkeypatch):
    """Catches an unbounded "skip" (a run that only skips until its last step)."""
    monkeypatch.setattr(divergence, "MAX_CONSECUTIVE_SKIPS", 3)
    with pytest.raises(DivergenceError, match="3 steps in a row up to step 5 made no update"):
        fit(_model(_nan_at(3, 4, 5, 6)), gmm2d, tmp_path / "r", train_config=_cfg(), progress=False, on_nan="skip")
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 4  # finite, unchanged since step 2


def test_fp16_loss_scale_search_is_not_divergence(gmm2d, tmp_path):
    """A gradient of 1e35 overflows float32 once scaled by GradScaler's 65536, so the scaler skips 5 steps
    (halving the scale to 2048) before it fits; "stop" must let it. Catches fp16's skips counted as divergence."""
    def huge_grad(n, value, model):
        w = next(model.parameters()).sum()
        return value + 1e35 * (w - w.detach())

    result = fit(_model(huge_grad), gmm2d, tmp_path / "r", train_config=_cfg(steps=8, mixed_precision="fp16"),
                 progress=False)
    state = ckpt.load_state(tmp_path / "r" / ckpt.STATE)
    assert result.step == 8 and result.skipped_nonfinite == 0 and state["scaler"]["scale"] == 2048.0
    assert state["nonfinite"] == {"skipped": 0, "consecutive": 0}


def test_weights_that_are_not_finite_are_never_saved(gmm2d, tmp_path):
    """The last guard: a buffer turned NaN at step 3 (as a corrupted normalisation statistic would) stops the
    run at the step-4 checkpoint, which is not written. Catches the guard removed."""
    model = _model(lambda n, value, m: (m.probe.fill_(math.nan), value)[1] if n == 3 else value)
    model.register_buffer("probe", torch.zeros(1))
    with pytest.raises(DivergenceError, match=r"weights at step 4 are not finite \(model.probe\)"):
        fit(model, gmm2d, tmp_path / "r", train_config=_cfg(), progress=False)
    assert ckpt.load_state(tmp_path / "r" / ckpt.STATE)["step"] == 2
    assert torch.equal(_weights(tmp_path / "r")["model.probe"], torch.zeros(1))


def test_the_policy_and_the_guard_directly():
    """Unknown policies are refused; an EMA weight is checked as well as the model's."""
    with pytest.raises(ValueError, match="'ignore'"):
        NonFiniteSteps("ignore")
    model = torch.nn.Linear(2, 2)
    ema = torch.nn.Linear(2, 2)
    with torch.no_grad():
        ema.bias[1] = math.inf
    with pytest.raises(DivergenceError, match=r"\(ema.bias\).*the checkpoint of step 7 is kept"):
        check_finite_weights(model, ema, 9, 7)


def test_the_command_line_stops_a_huge_learning_rate(tmp_path, one_line_error):
    """`dgm train --lr 1e6` diverges within a few steps: one line naming the step, exit 2; the run directory
    holds only the finite step-0 checkpoint. Catches a traceback, or a checkpoint written from the NaN."""
    settings = tmp_path / "tiny.toml"
    settings.write_text('[model]\nlevels = 20\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n'
                        '[train]\nbatch_size = 16\nwarmup_steps = 1\ncheckpoint_every = 1\n')
    out = tmp_path / "run"
    line = one_line_error(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings),
                           "--steps", "50", "--lr", "1e6", "--no-progress"])
    assert "training diverged at step" in line and "--on-nan skip" in line
    step = int(line.split("at step ")[1].split(":")[0])
    assert ckpt.load_state(out / ckpt.STATE)["step"] == step - 1
    assert all(torch.isfinite(t).all() for t in _weights(out).values())


def test_the_command_line_skip_counts_in_the_summary(tmp_path, capsys, monkeypatch):
    """`--on-nan skip`: a warning at the first skip, then exit 0 with the count in the final summary line.
    Catches the count missing from the summary (a skipped step would go unnoticed)."""
    from dgm.cli import main
    from dgm.models.ddpm import DDPM

    loss, calls = DDPM.loss, {"n": 0}

    def nan_at_2_and_3(self, x0, **kw):
        value, numbers = loss(self, x0, **kw)
        calls["n"] += self.training
        return (value * math.nan if self.training and calls["n"] in (2, 3) else value), numbers

    monkeypatch.setattr(DDPM, "loss", nan_at_2_and_3)
    settings = tmp_path / "tiny.toml"
    settings.write_text('[model]\nlevels = 20\n[model.net]\nhidden = 8\ndepth = 1\nemb_dim = 8\n'
                        '[train]\nbatch_size = 16\nlog_every = 1\n')
    out = tmp_path / "run"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(settings), "--steps", "5",
                 "--on-nan", "skip", "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("dgm: warning: skipped step 2 (loss nan")
    assert err[-1].startswith("dgm: ddpm at step 5 (stopped by steps)") and ", 2 non-finite steps skipped;" in err[-1]
    assert [r["skipped_nonfinite"] for r in read_log(out)] == [0, 1, 2, 2, 2]
