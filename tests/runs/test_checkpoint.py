"""Run-directory files: atomic writes, round trips, the checkpoint protocol under a kill at any moment, and
clear errors for truncated or foreign files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs.atomic import atomic_write

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 20,
        "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}}


def _run_dir(tmp_path, step=3):
    torch.manual_seed(0)
    model = build_model(TINY)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v + 1 for k, v in model.state_dict().items()}
    ckpt.write_config(tmp_path, {"model": model.config(), "train": {"steps": 5}})
    ckpt.save_weights(tmp_path / ckpt.WEIGHTS, tensors, step=step, kind="ddpm")
    return model


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary left behind


def test_weights_round_trip_and_load_model_uses_ema(tmp_path):
    model = _run_dir(tmp_path)
    tensors, meta = ckpt.load_weights(tmp_path / ckpt.WEIGHTS)
    assert meta == {"format": "dgm", "step": "3", "kind": "ddpm"}
    loaded, config = ckpt.load_model(tmp_path)
    assert config["model"] == json.loads(json.dumps(model.config()))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v + 1)  # the EMA copy
    raw, _ = ckpt.load_model(tmp_path, ema=False)
    assert all(torch.equal(raw.state_dict()[k], v) for k, v in model.state_dict().items())


def test_state_round_trip_with_rng(tmp_path):
    state = {"step": 7, "rng": ckpt.get_rng_state(), "lists": [1, 2.5]}
    ckpt.save_state(tmp_path / ckpt.STATE, state)
    back = ckpt.load_state(tmp_path / ckpt.STATE)
    assert back["step"] == 7 and back["lists"] == [1, 2.5]
    a = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    ckpt.set_rng_state(back["rng"])
    b = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_truncated_weights_are_a_clear_error(tmp_path):
    _run_dir(tmp_path)
    path = tmp_path / ckpt.WEIGHTS
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="truncated or not a safetensors file"):
        ckpt.load_model(tmp_path)


def test_truncated_state_is_a_clear_error(tmp_path):
    ckpt.save_state(tmp_path / ckpt.STATE, {"step": 1})
    path = tmp_path / ckpt.STATE
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ckpt.CheckpointError, match="truncated or not a dgm trainer state"):
        ckpt.load_state(path)


def test_foreign_safetensors_is_a_clear_error(tmp_path):
    _run_dir(tmp_path)
    save_file({"weight": torch.zeros(3)}, str(tmp_path / ckpt.WEIGHTS))
    with pytest.raises(ckpt.CheckpointError, match="not a dgm checkpoint"):
        ckpt.load_model(tmp_path)


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    _run_dir(tmp_path)
    config = json.loads((tmp_path / ckpt.CONFIG).read_text())
    config["model"]["net"]["hidden"] = 16
    (tmp_path / ckpt.CONFIG).write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="does not match the model"):
        ckpt.load_model(tmp_path)


def test_missing_and_foreign_config(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.read_config(tmp_path / "nowhere")
    with pytest.raises(ckpt.CheckpointError, match="not a dgm run directory"):
        ckpt.read_config(tmp_path)
    (tmp_path / ckpt.CONFIG).write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="not a readable dgm config"):
        ckpt.read_config(tmp_path)


def test_prepare_run_dir_refuses_to_overwrite(tmp_path):
    run = {"model": {"kind": "ddpm", "levels": 5}, "train": {"steps": 10, "lr": 1e-3}}
    ckpt.prepare_run_dir(tmp_path / "r", run, resume=False, write=True)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint to resume .*without --resume"):
        ckpt.prepare_run_dir(tmp_path / "r", run, resume=True, write=True)
    (tmp_path / "r" / ckpt.WEIGHTS).write_bytes(b"a checkpoint")
    before = (tmp_path / "r" / ckpt.CONFIG).read_bytes()
    with pytest.raises(ckpt.CheckpointError, match="already holds this run; pass --resume"):
        ckpt.prepare_run_dir(tmp_path / "r", run | {"train": {"steps": 20, "lr": 1e-3}}, resume=False, write=True)
    with pytest.raises(ckpt.CheckpointError, match=r"different run \(train.lr: 0.001 -> 0.002\)"):
        ckpt.prepare_run_dir(tmp_path / "r", run | {"train": {"steps": 10, "lr": 2e-3}}, resume=False, write=True)
    assert (tmp_path / "r" / ckpt.CONFIG).read_bytes() == before


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    """Only config.json (a kill between writing it and the step-0 checkpoint): the same run may start again
    without --resume (which has nothing to resume); another run may not. Catches the stuck state where
    --resume says "no checkpoint" and a fresh start says "pass --resume"."""
    run = {"model": {"kind": "ddpm", "levels": 5}, "train": {"steps": 10, "lr": 1e-3}}
    ckpt.prepare_run_dir(tmp_path / "r", run, resume=False, write=True)
    ckpt.prepare_run_dir(tmp_path / "r", run | {"train": {"steps": 20, "lr": 1e-3}}, resume=False, write=True)
    assert ckpt.read_config(tmp_path / "r")["train"]["steps"] == 20
    with pytest.raises(ckpt.CheckpointError, match="different run"):
        ckpt.prepare_run_dir(tmp_path / "r", run | {"model": {"kind": "ddpm", "levels": 6}}, resume=False, write=True)


def test_the_writer_removes_temporaries_left_by_a_kill(tmp_path):
    """``.model.safetensors.tmp123`` (a write killed mid-way) is deleted when the run's writer starts; other
    files stay. Catches a run directory that grows by one model per kill."""
    run = {"model": {"kind": "ddpm", "levels": 5}, "train": {"steps": 10}}
    ckpt.prepare_run_dir(tmp_path, run, resume=False, write=True)
    for name in (".model.safetensors.tmp123", ".state.next.pt.tmp9", ".mine.tmp1", ".state.pt.tmpx", "notes"):
        (tmp_path / name).write_bytes(b"x")
    ckpt.prepare_run_dir(tmp_path, run, resume=False, write=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mine.tmp1", ".state.pt.tmpx", ckpt.CONFIG, "notes"]


def _weights(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Killed(BaseException):
    """A SIGKILL stand-in: nothing after it runs, no except clause of the library catches it."""


def test_save_and_restore_round_trip(tmp_path):
    torch.manual_seed(0)
    model, ema = build_model(TINY), build_model(TINY)
    ckpt.save_checkpoint(tmp_path, model, ema, step=7, state={"note": [1, 2]})
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.WEIGHTS, ckpt.STATE]
    a, b = build_model(TINY), build_model(TINY)
    state = ckpt.restore_checkpoint(tmp_path, a, b)
    assert state == {"note": [1, 2], "step": 7}
    assert _same(_weights(a), _weights(model)) and _same(_weights(b), _weights(ema))


def test_a_kill_at_any_moment_of_save_checkpoint_leaves_a_resumable_run(tmp_path, monkeypatch):
    """Killed before the new weights are written, the old checkpoint restores; killed after them but before
    state.next.pt is renamed, the new one does (its state is read from state.next.pt)."""
    torch.manual_seed(0)
    model, ema = build_model(TINY), build_model(TINY)
    ckpt.save_checkpoint(tmp_path, model, ema, step=4, state={"at": 4})
    old = _weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def kill(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:  # killed after state.next.pt, before model.safetensors
        m.setattr(ckpt, "save_weights", kill)
        with pytest.raises(Killed):
            ckpt.save_checkpoint(tmp_path, model, ema, step=9, state={"at": 9})
    assert (tmp_path / ckpt.STATE_NEXT).exists()
    fresh = build_model(TINY)
    assert ckpt.restore_checkpoint(tmp_path, fresh, build_model(TINY)) == {"at": 4, "step": 4}
    assert _same(_weights(fresh), old)

    replace = ckpt.os.replace

    def replace_but_the_state(src, dst):
        if Path(src).name == ckpt.STATE_NEXT:
            raise Killed
        replace(src, dst)

    with monkeypatch.context() as m:  # killed after model.safetensors, before state.next.pt -> state.pt
        m.setattr(ckpt.os, "replace", replace_but_the_state)
        with pytest.raises(Killed):
            ckpt.save_checkpoint(tmp_path, model, ema, step=9, state={"at": 9})
    assert ckpt.load_state(tmp_path / ckpt.STATE)["step"] == 4
    fresh = build_model(TINY)
    assert ckpt.restore_checkpoint(tmp_path, fresh, build_model(TINY)) == {"at": 9, "step": 9}
    assert _same(_weights(fresh), _weights(model))
    ckpt.save_checkpoint(tmp_path, model, ema, step=10, state={})
    assert ckpt.load_state(tmp_path / ckpt.STATE)["step"] == 10 and not (tmp_path / ckpt.STATE_NEXT).exists()


def test_weights_and_state_of_different_checkpoints_are_an_error(tmp_path):
    model = _run_dir(tmp_path, step=3)
    ckpt.save_state(tmp_path / ckpt.STATE, {"step": 2})
    with pytest.raises(ckpt.CheckpointError, match="different checkpoints"):
        ckpt.restore_checkpoint(tmp_path, model, build_model(TINY))
