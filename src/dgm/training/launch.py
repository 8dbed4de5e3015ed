"""``accelerate launch --cpu --num_processes N``: start the N gloo workers that accelerate does not.

accelerate 1.15 runs ``--cpu --num_processes N`` on one machine through mpirun only (with
``--mpirun_hostfile``); without it, its simple launcher starts one process and passes N on nowhere. That
process is ``dgm train``, and on Linux its parent is the launcher, so :func:`plan` reads the parent's command
line back with accelerate's own parser, and :func:`relaunch` runs the same command as N workers under
torch.distributed.run. The workers have WORLD_SIZE set, so they do not relaunch, and
``dgm.training.distributed.ProcessGroup`` joins them in one gloo group (accelerate's MULTI_CPU).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

# A process that already belongs to a group (torchrun's or MPI's) is a worker, never a launcher.
GROUP_VARIABLES = (
    "WORLD_SIZE",
    "RANK",
    "PMI_SIZE",
    "PMI_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK",
)


def parent_argv() -> list[str] | None:
    """The command line of this process's parent, from /proc (Linux); None where it cannot be read."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] or None


def _launch_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments of accelerate's ``launch`` in a command line, or None if it is not one.

    Spellings: ``accelerate launch ...`` (the console script, maybe after its interpreter),
    ``python -m accelerate.commands.accelerate_cli launch ...`` and ``python -m accelerate.commands.launch ...``.
    """
    for k, word in enumerate(argv):
        if word == "accelerate.commands.launch" and k > 0 and argv[k - 1] == "-m":
            return list(argv[k + 1 :])
        is_cli = Path(word).name == "accelerate" or (
            word == "accelerate.commands.accelerate_cli" and k > 0 and argv[k - 1] == "-m"
        )
        if is_cli and argv[k + 1 : k + 2] == ["launch"]:
            return list(argv[k + 2 :])
    return None


def plan(env: Mapping[str, str], parent: Sequence[str] | None) -> int | None:
    """The number of processes that ``accelerate launch --cpu --num_processes N`` asked for and did not start.

    ``env`` is this process's environment and ``parent`` its parent's command line. None (run as one
    process) unless accelerate's simple launcher started this process for ``--cpu`` with N > 1 on one
    machine without mpirun; None as well for anything unexpected.
    """
    if "ACCELERATE_USE_CPU" not in env or any(name in env for name in GROUP_VARIABLES) or not parent:
        return None
    rest = _launch_args(parent)
    if rest is None:
        return None
    try:
        from accelerate.commands.launch import launch_command_parser
        from accelerate.utils import str_to_bool

        if not str_to_bool(env["ACCELERATE_USE_CPU"]):
            return None
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = launch_command_parser().parse_args(rest)
    except (Exception, SystemExit):  # not accelerate's launch after all: a plain single process
        return None
    cpu = getattr(args, "cpu", False) or getattr(args, "use_cpu", False)
    n = getattr(args, "num_processes", None)
    one_machine = getattr(args, "num_machines", None) in (None, 1)
    if cpu and isinstance(n, int) and n > 1 and one_machine and getattr(args, "mpirun_hostfile", None) is None:
        return n
    return None


def _port_free(addr: str, port: int) -> bool:
    """Whether this machine can listen on ``addr:port`` (the rendezvous of the workers)."""
    with socket.socket() as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def exit_status(failures: Mapping) -> tuple[int, int]:
    """(rank, exit status) of the worker to report, from torch.distributed.run's ``failures`` (rank -> a
    record with ``exitcode`` and ``timestamp``): the lowest rank that exited with an error of its own, else
    the first to fail (killed by a signal s: status 128 + s)."""
    own = sorted(rank for rank, f in failures.items() if f.exitcode > 0)
    rank = own[0] if own else min(failures, key=lambda r: failures[r].timestamp)
    code = failures[rank].exitcode
    return rank, code if code > 0 else 128 - code


def _torchrun(n: int, argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``python -m dgm.cli argv`` as ``n`` workers under torch.distributed.run; return the exit status.

    Rank 0 writes to this terminal; the other ranks' stderr goes to files, shown only when one of them fails
    and rank 0 did not report an error itself, so a user error stays one line.
    """
    import logging

    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    addr, port = env.get("MASTER_ADDR", "127.0.0.1"), env.get("MASTER_PORT", "29500")
    free = port.isdigit() and _port_free(addr, int(port))
    where = ["--master-addr", addr, "--master-port", port] if free else []  # else torchrun picks a free port
    quiet = ",".join(f"{rank}:2" for rank in range(1, n))  # ranks 1.. : stderr to files
    disabled = logging.root.manager.disable
    logging.disable(logging.ERROR)  # the launcher's own report of a failure repeats the workers' errors
    with tempfile.TemporaryDirectory(prefix="dgm-workers-") as logs:
        try:
            torchrun.main(
                ["--nproc-per-node", str(n), *where, "--log-dir", logs, "--redirects", quiet, "-m", "dgm.cli", *argv]
            )
            return 0
        except ChildFailedError as err:
            rank, code = exit_status(err.failures)
            if rank != 0:  # rank 0 was stopped or succeeded: show the failed worker's stderr
                for path in Path(logs).glob(f"*/attempt_*/{rank}/stderr.log"):
                    sys.stderr.write(path.read_text(errors="replace"))
            return code
        except SignalException as err:  # Ctrl-C or a kill: the workers are stopped
            return 128 + int(err.sigval)
        except Exception as err:  # noqa: BLE001 - the launcher itself failed (rendezvous, port): one line
            print(
                f"dgm: error: torch.distributed.run: {' '.join(str(err).split()) or type(err).__name__}",
                file=sys.stderr,
            )
            return 1
        finally:
            logging.disable(disabled)


def relaunch(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int | None:
    """Run ``dgm argv`` as the N processes that ``accelerate launch --cpu --num_processes N`` asked for.

    Returns the workers' exit status, or None when this process is not such a launch (train as usual).
    """
    env = os.environ if env is None else env
    n = plan(env, parent_argv())
    if n is None:
        return None
    print(
        f"dgm: accelerate launch --cpu started one process (accelerate runs --cpu --num_processes {n} through "
        f"MPI only); starting {n} gloo processes with torch.distributed.run",
        file=sys.stderr,
    )
    return _torchrun(n, argv, env)
