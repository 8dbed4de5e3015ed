"""Poison-proof run directories and nothing lost: absurd configs refused before allocation, oversized files
refused before reading, a full disk or an unwritable folder during a checkpoint keeps the last good one, and a
reader of a run that is being written gets its last complete checkpoint."""

import json
import os
import resource
import subprocess
import sys

import pytest
import torch

from dgm.models import build_model
from dgm.runs import budget, resources
from dgm.runs import checkpoint as ckpt

NET = {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}
TINY = {"kind": "ddpm", "data_shape": [2], "levels": 20, "net": NET}


def _run_dir(path, config=TINY, step=3):
    torch.manual_seed(0)
    model = build_model(TINY)
    state = model.state_dict()
    tensors = {f"{p}.{k}": v.clone() + (p == "ema") for p in ("model", "ema") for k, v in state.items()}
    ckpt.write_config(path, {"model": config, "train": {"steps": 5}})
    ckpt.save_weights(path / ckpt.WEIGHTS, tensors, step=step, kind="ddpm")
    return model


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(("config", "match"), [
    (TINY | {"net": NET | {"hidden": 10**6, "depth": 2}}, r"a tensor \(3.64 TiB\) too large to allocate"),
    (TINY | {"levels": 10**11}, r"L = 100,000,000,000 levels, 23.3 TiB a copy\) needs about"),
], ids=["1e12 parameters", "1e11 levels"])
def test_absurd_configs_are_refused_before_allocation(config, match, tmp_path):
    """config.json edited to ask for 10^12 parameters or 10^11 levels: one-line ResourceError naming
    config.json, and the process's peak memory does not grow. Without the check ``build_model`` fails with a
    torch RuntimeError (a traceback) on these sizes; the refusal must come from the estimate."""
    _run_dir(tmp_path, config)
    before = _maxrss_mib()
    with pytest.raises(resources.ResourceError, match=match) as err:
        ckpt.load_model(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path / ckpt.CONFIG) in str(err.value)
    assert _maxrss_mib() - before < 200


def test_the_refusal_is_relative_to_the_available_memory(tmp_path, monkeypatch):
    """With 64 MiB "available", L = 10^6 levels (about 256 MB of tables) is refused and a 4M-parameter net
    (16 MB, x3 copies) too, while the tiny model loads. Catches an estimate that ignores the per-level
    tables or the parameters, or a fixed cap instead of the machine's memory."""
    monkeypatch.setattr(resources, "available_memory", lambda: 64 << 20)
    _run_dir(tmp_path, TINY | {"levels": 10**6})
    with pytest.raises(resources.ResourceError, match="L = 1,000,000 levels"):
        ckpt.load_model(tmp_path)
    _run_dir(tmp_path, TINY | {"net": NET | {"hidden": 2000, "depth": 1}})
    with pytest.raises(resources.ResourceError, match="4,0.*parameters"):
        ckpt.load_model(tmp_path)
    _run_dir(tmp_path)
    assert ckpt.load_model(tmp_path)[0].kind == "ddpm"


def test_the_estimate_counts_what_build_model_allocates():
    """The meta-device count equals the real model's parameters (a DDPM with UNet, a VAE), plus the per-level
    allowance. Catches parameters created before ``register_parameter`` being missed."""
    unet = {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4],
            "groups": 4, "head_channels": 8, "in_channels": 1, "image_size": 8}
    configs = [{"kind": "ddpm", "data_shape": [1, 8, 8], "levels": 50, "net": unet},
               {"kind": "vae", "data_shape": [2], "latent_dim": 2, "arch": "mlp", "hidden": [16, 16]}]
    for config in configs:
        nbytes, params = budget.estimate_model_bytes(config)
        model = build_model(config)
        assert params == sum(p.numel() for p in model.parameters())
        real = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        assert nbytes == real + budget.PER_LEVEL_BYTES * (config.get("levels", 0) + 1)


@pytest.mark.parametrize("case", ["huge", "nested", "not a table"])
def test_poisoned_config_json_is_a_one_line_error(case, tmp_path):
    """A 20 MB config.json is not read; JSON nested 10^5 deep (a RecursionError) and a model that is not a
    table are CheckpointErrors, not tracebacks."""
    _run_dir(tmp_path)
    path = tmp_path / ckpt.CONFIG
    if case == "huge":
        path.write_text('{"model": {"kind": "ddpm"}, "pad": "' + "x" * (20 << 20) + '"}')
    elif case == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(json.dumps({"model": {"kind": "ddpm", "net": [1, 2]}}))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_weights_and_state_larger_than_memory_are_not_read(tmp_path, monkeypatch):
    """With 1 KiB "available", the weights file and state.pt are refused before being read (ResourceError),
    so a multi-GB planted file cannot exhaust memory."""
    _run_dir(tmp_path)
    ckpt.save_state(tmp_path / ckpt.STATE, {"step": 3, "pad": torch.zeros(1000)})
    monkeypatch.setattr(resources, "available_memory", lambda: 1024)
    monkeypatch.setattr(ckpt, "check_model_budget", lambda *a: 0)
    with pytest.raises(resources.ResourceError, match="the weights file .* needs about"):
        ckpt.load_model(tmp_path)
    with pytest.raises(resources.ResourceError, match="the trainer state .* needs about"):
        ckpt.load_state(tmp_path / ckpt.STATE)


def test_weights_whose_names_or_shapes_do_not_match_are_one_line_errors(tmp_path):
    """Weights of a wider net, or with a tensor renamed, under the tiny config: CheckpointError naming the
    tensor (not torch's multi-line load_state_dict error)."""
    _run_dir(tmp_path)
    wide = build_model(TINY | {"net": NET | {"hidden": 16}}).state_dict()
    ckpt.save_weights(tmp_path / ckpt.WEIGHTS, {f"ema.{k}": v for k, v in wide.items()}, step=3, kind="ddpm")
    with pytest.raises(ckpt.CheckpointError, match=r"shape of '.*' is \(16,?.*\), expected \(8,?.*\)"):
        ckpt.load_model(tmp_path)
    renamed = {f"ema.{k}".replace("inp", "input"): v for k, v in build_model(TINY).state_dict().items()}
    ckpt.save_weights(tmp_path / ckpt.WEIGHTS, renamed, step=3, kind="ddpm")
    with pytest.raises(ckpt.CheckpointError, match="missing") as err:
        ckpt.load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_a_reader_gets_the_last_complete_checkpoint_while_one_is_written(tmp_path, monkeypatch):
    """``dgm sample``/``eval`` during training: with state.next.pt of step 9 and a half-written temporary of
    the weights beside them, load_model reads the step-3 weights whole. Catches a reader that prefers
    state.next.pt or a temporary file."""
    model = _run_dir(tmp_path)
    ckpt.save_state(tmp_path / ckpt.STATE_NEXT, {"step": 9})
    (tmp_path / ".model.safetensors.tmp99").write_bytes(b"\x00" * 100)
    loaded, _ = ckpt.load_model(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v + 1) for k, v in model.state_dict().items())


FULL_DISK = """
import json, resource, sys, torch
from pathlib import Path
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
config = json.loads(sys.argv[2])
run = Path(sys.argv[1])
torch.manual_seed(0)
model, ema = build_model(config), build_model(config)
ckpt.save_checkpoint(run, model, ema, step=4, state={"pad": torch.zeros(10)})
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
answers = []
for limit, pad in ((2000, 10_000), (20_000, 10)):  # fails writing state.next.pt; then writing the weights
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        ckpt.save_checkpoint(run, model, ema, step=9, state={"pad": torch.zeros(pad)})
        answers.append("saved")
    except ValueError as err:
        answers.append(str(err))
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    fresh = build_model(config)
    state = ckpt.restore_checkpoint(run, fresh, build_model(config))
    answers.append([state["step"], sorted(p.name for p in run.iterdir())])
print(json.dumps(answers))
"""


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(tmp_path):
    """RLIMIT_FSIZE (``ulimit -f``) in a subprocess makes the writes fail as on a full disk, first while
    writing state.next.pt, then while writing the weights: each time a one-line CheckpointError, and the
    step-4 checkpoint restores; no temporary is left. Catches a torch RuntimeError escaping as a traceback,
    and a write order that replaces the weights before their state is safe."""
    config = TINY | {"net": NET | {"hidden": 64}}  # weights of ~50 kB, above the second limit
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path), json.dumps(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, after_first, second, after_second = json.loads(done.stdout)
    for message in (first, second):
        assert message.startswith(f"could not write the checkpoint of step 9 to {str(tmp_path)!r}")
        assert message.endswith("the last complete checkpoint there is kept") and "\n" not in message
    assert "File too large" in second
    assert after_first == [4, [ckpt.WEIGHTS, ckpt.STATE]]
    assert after_second == [4, sorted([ckpt.WEIGHTS, ckpt.STATE, ckpt.STATE_NEXT])]


def _unwritable_save(tmp_path):
    torch.manual_seed(0)
    model, ema = build_model(TINY), build_model(TINY)
    ckpt.save_checkpoint(tmp_path, model, ema, step=4, state={})
    return model, ema


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder (see the test below)")
def test_an_unwritable_folder_keeps_the_last_checkpoint(tmp_path):
    model, ema = _unwritable_save(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ckpt.CheckpointError, match="step 9 .*Permission denied.*is kept"):
            ckpt.save_checkpoint(tmp_path, model, ema, step=9, state={})
    finally:
        tmp_path.chmod(0o755)
    assert ckpt.restore_checkpoint(tmp_path, build_model(TINY), build_model(TINY))["step"] == 4


def test_a_refused_write_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """What a read-only folder does to a non-root writer, simulated for root: the OS refuses to create the
    temporary file (PermissionError) -> a one-line CheckpointError; step 4 restores."""
    model, ema = _unwritable_save(tmp_path)

    def refused(obj, f, *a, **k):
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr(ckpt.torch, "save", refused)
    with pytest.raises(ckpt.CheckpointError, match=r"step 9 .* \(Permission denied\); the last complete"):
        ckpt.save_checkpoint(tmp_path, model, ema, step=9, state={})
    monkeypatch.undo()
    assert ckpt.restore_checkpoint(tmp_path, build_model(TINY), build_model(TINY))["step"] == 4
