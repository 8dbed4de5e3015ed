"""Run-directory files: atomic writes, round trips, and clear errors for truncated or foreign files."""

import json

import pytest
import torch
from safetensors.torch import save_file

from dgm.models import build_model
from dgm.runs import checkpoint as ckpt

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
        ckpt.atomic_write(path, failing)
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
    before = (tmp_path / "r" / ckpt.CONFIG).read_bytes()
    with pytest.raises(ckpt.CheckpointError, match="already holds this run; pass --resume"):
        ckpt.prepare_run_dir(tmp_path / "r", run | {"train": {"steps": 20, "lr": 1e-3}}, resume=False, write=True)
    with pytest.raises(ckpt.CheckpointError, match=r"different run \(train.lr: 0.001 -> 0.002\)"):
        ckpt.prepare_run_dir(tmp_path / "r", run | {"train": {"steps": 10, "lr": 2e-3}}, resume=False, write=True)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint to resume"):
        ckpt.prepare_run_dir(tmp_path / "r", run, resume=True, write=True)
    assert (tmp_path / "r" / ckpt.CONFIG).read_bytes() == before


def test_truncate_log_drops_later_and_torn_lines(tmp_path):
    log = tmp_path / ckpt.LOG
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    ckpt.truncate_log(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
