"""dgm.launch: which ``accelerate launch`` command lines make dgm start the gloo workers itself."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from dgm.training.launch import _exit_status, parent_argv, plan

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
    assert _exit_status(failures) == expected
