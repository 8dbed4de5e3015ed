"""dgm.training.launch: which ``accelerate launch`` command lines make dgm start the gloo workers itself, and
two gloo processes through the command line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dgm.runs.checkpoint import WEIGHTS, load_weights
from dgm.runs.log import LOG
from dgm.training.launch import exit_status, parent_argv, plan

ENV = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "OMP_NUM_THREADS": "1"}
PYTHON = "/venv/bin/python3"
DGM = ["-m", "dgm.cli", "train", "ddpm", "--data", "gmm2d", "--out", "RUN", "--steps", "200"]


def _accelerate(*flags: str) -> list[str]:
    """The launcher's /proc cmdline: the console script run by its interpreter."""
    return [PYTHON, "/venv/bin/accelerate", "launch", *flags, *DGM]


@pytest.mark.parametrize(
    "parent, n",
    [
        (_accelerate("--cpu", "--num_processes", "2"), 2),
        (_accelerate("--cpu", "--num_processes=3"), 3),
        (_accelerate("--cpu", "--num-processes", "4", "--num_machines", "1"), 4),
        (["/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "/venv/bin/dgm", *DGM[2:]], 2),
        ([PYTHON, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", *DGM], 2),
        ([PYTHON, "-m", "accelerate.commands.accelerate_cli", "launch", "--cpu", "--num_processes", "2", *DGM], 2),
    ],
)
def test_the_cpu_launch_asks_for_n_processes(parent, n):
    assert plan(ENV, parent) == n


@pytest.mark.parametrize(
    "parent",
    [
        _accelerate("--multi_gpu", "--num_processes", "2"),
        _accelerate("--num_processes", "2"),  # not --cpu
        _accelerate("--cpu", "--num_processes", "1"),
        _accelerate("--cpu"),
        _accelerate("--cpu", "--num_processes", "2", "--mpirun_hostfile", "hosts"),
        _accelerate("--cpu", "--num_processes", "4", "--num_machines", "2"),
        _accelerate("--cpu", "--num_processes", "two"),
        [PYTHON, "/venv/bin/accelerate", "env"],
        ["/bin/bash", "-c", "dgm train ddpm --data gmm2d --out RUN"],
        [PYTHON, "train.py", "--cpu", "--num_processes", "2"],
        ["\ufffd\x01", "", "accelerate"],
        [],
        None,
    ],
)
def test_other_parents_run_one_process(parent):
    assert plan(ENV, parent) is None


@pytest.mark.parametrize(
    "env",
    [
        ENV | {"WORLD_SIZE": "2", "RANK": "0"},  # a torchrun worker, ours included
        ENV | {"RANK": "1"},
        ENV | {"PMI_SIZE": "2", "PMI_RANK": "0"},  # mpirun (--mpirun_hostfile)
        ENV | {"OMPI_COMM_WORLD_SIZE": "2"},
        ENV | {"ACCELERATE_USE_CPU": "False"},
        ENV | {"ACCELERATE_USE_CPU": "maybe"},
        {k: v for k, v in ENV.items() if k != "ACCELERATE_USE_CPU"},
    ],
)
def test_other_environments_run_one_process(env):
    assert plan(env, _accelerate("--cpu", "--num_processes", "2")) is None


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_parent_argv_reads_proc():
    assert parent_argv() == Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.parametrize(
    "codes, expected",
    [
        ({0: (-15, 2.0), 1: (2, 1.0)}, (1, 2)),  # rank 1's error, rank 0 stopped by SIGTERM
        ({0: (2, 2.0), 1: (2, 1.0)}, (0, 2)),  # both reported the error: rank 0's is on the terminal
        ({0: (-9, 1.0), 1: (-15, 2.0)}, (0, 137)),  # killed: 128 + signal
    ],
)
def test_exit_status_of_the_workers(codes, expected):
    failures = {rank: SimpleNamespace(exitcode=code, timestamp=t) for rank, (code, t) in codes.items()}
    assert exit_status(failures) == expected


TINY_TOML = ('[model]\nlevels = 50\n[model.net]\nhidden = 16\ndepth = 1\nemb_dim = 8\n'
             '[train]\nbatch_size = 32\nlog_every = 5\n')


def _digests(path: Path) -> dict[str, str]:
    """sha256 of the bytes (C order) of every tensor in a model.safetensors, by name ("model.*", "ema.*")."""
    tensors, _ = load_weights(path)
    return {name: hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()
            for name, t in tensors.items()}


@pytest.mark.slow
def test_two_processes_with_accelerate(tmp_path):
    """Two gloo processes, each on its shard with batch 32, track one process with batch 64, and end with
    the same weights, bit for bit.

    accelerate 1.15 starts one process for ``--cpu --num_processes 2``; dgm starts the two (dgm.training.launch).
    With DGM_RANK_CHECKSUMS set, each rank writes the sha256 of every model and EMA tensor at the end of fit:
    both ranks' files must equal the digests of the model.safetensors that rank 0 wrote.
    Mutation caught: ``ProcessGroup.mean_grads_`` returning without its all-reduce (each rank then steps on
    its own shard's gradient: rank 1's digests differ from rank 0's, while the loss curves still agree).
    """
    settings = tmp_path / "tiny.toml"
    settings.write_text(TINY_TOML)
    sums = tmp_path / "sums"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    env.pop("DGM_RANK_CHECKSUMS", None)
    common = ["--data", "gmm2d", "--config", str(settings), "--steps", "150", "--no-progress"]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--cpu", "--num_processes", "2", "-m", "dgm.cli"]
    for attempt in range(2):  # one retry: gloo's rendezvous has aborted once on a heavily loaded machine
        shutil.rmtree(tmp_path / "two", ignore_errors=True)
        for old in tmp_path.glob("sums.rank*.json"):
            old.unlink()
        two = subprocess.run([*launch, "train", "ddpm", "--out", str(tmp_path / "two"), "--batch-size", "32",
                              *common], capture_output=True, text=True, env=env | {"DGM_RANK_CHECKSUMS": str(sums)},
                             timeout=300)
        if two.returncode == 0:
            break
        print(f"attempt {attempt}: two-process run failed; stderr head:\n{two.stderr[:3000]}")
    assert two.returncode == 0, two.stderr[:2000] + "\n...\n" + two.stderr[-2000:]
    assert "starting 2 gloo processes" in two.stderr
    ranks = {p.name: json.loads(p.read_text()) for p in sorted(tmp_path.glob("sums.rank*.json"))}
    assert sorted(ranks) == ["sums.rank0.json", "sums.rank1.json"]
    saved = _digests(tmp_path / "two" / WEIGHTS)
    assert {k.split(".")[0] for k in saved} == {"model", "ema"} and len(saved) >= 4
    assert ranks["sums.rank0.json"] == saved, "rank 0's weights at the end differ from its checkpoint"
    differ = sorted(k for k in saved if ranks["sums.rank1.json"].get(k) != saved[k])
    assert ranks["sums.rank1.json"].keys() == saved.keys() and not differ, f"rank 1's weights differ: {differ}"
    one = subprocess.run([sys.executable, "-m", "dgm.cli", "train", "ddpm", "--out", str(tmp_path / "one"),
                          "--batch-size", "64", *common],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    logs = {k: [json.loads(x) for x in (tmp_path / k / LOG).read_text().splitlines()] for k in ("one", "two")}
    assert {r["processes"] for r in logs["two"]} == {2} and {r["processes"] for r in logs["one"]} == {1}
    n_train = 18_000  # gmm2d: 20,000 points, 10% held out
    assert {(r["shard_size"], r["batch_per_process"]) for r in logs["two"]} == {(n_train // 2, 32)}
    assert {(r["shard_size"], r["batch_per_process"]) for r in logs["one"]} == {(n_train, 64)}
    assert [r["step"] for r in logs["two"]] == [r["step"] for r in logs["one"]]
    late = {k: np.mean([r["loss"] for r in v[-10:]]) for k, v in logs.items()}
    early = np.mean([r["loss"] for r in logs["one"][:2]])
    print(f"2 processes x {logs['two'][-1]['shard_size']} examples; late loss: one process {late['one']:.4f}, "
          f"two {late['two']:.4f} (early {early:.4f})")
    assert late["two"] < early and abs(late["two"] - late["one"]) < 0.15 * late["one"]
