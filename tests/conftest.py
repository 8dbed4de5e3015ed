import importlib
import os

import pytest
import torch

import dgm


def in_ci() -> bool:
    """Whether the tests run in CI: the CI environment variable set (CI=true), as CI services and .ci/run do."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def require():
    """``require(name)`` imports and returns the module ``name`` of a dev dependency (pyproject's [dev]).

    Where it is missing, the calling test skips on a developer's machine and fails under CI (``CI`` set), so
    CI cannot pass by skipping what it was meant to check.
    """

    def _require(name: str):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:  # a broken install (another ImportError) is an error everywhere
            msg = f"{name} is not installed ({err}); it is a dev dependency: pip install -e '.[dev]'"
            if in_ci():
                pytest.fail(f"{msg}. CI is set, so a missing {name} fails instead of skipping", pytrace=False)
            pytest.skip(msg)

    return _require


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def mixture():
    """A 2-D mixture with anisotropic components and unequal weights."""
    return dgm.GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-1.5, 0.0], [1.0, 1.0], [0.5, -1.2]],
        [
            [[0.05, 0.0], [0.0, 0.05]],
            [[0.20, 0.08], [0.08, 0.10]],
            [[0.02, -0.01], [-0.01, 0.15]],
        ],
    )


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread is faster than two and steadier on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_line_error(capsys):
    """``one_line_error(argv)``: run ``dgm argv`` in-process; assert a one-line ``dgm: error:`` on stderr, exit
    status 2 and no traceback; return the line."""
    from dgm.cli import main

    def run(argv) -> str:
        code = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith("dgm: error:"), err
        assert "Traceback" not in err
        return lines[0]

    return run


# The other process loads lock.py by its path: it imports nothing of dgm, so it starts in milliseconds instead of
# importing torch through the package.
_LOCK_LOAD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", {path!r})
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
"""
_LOCK_HOLD = """
with lock.run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""
_LOCK_TRY = """
try:
    with lock.run_lock(sys.argv[1]):
        print("acquired")
except lock.RunLockedError as err:
    print(err)
"""


@pytest.fixture
def lock_process():
    """Another process and a run directory's lock (``dgm.runs.lock``): ``holder(run)`` starts one that holds the
    lock (it says "held" first; kill it when done); ``attempt(run)`` is what ``run_lock(run)`` does in a fresh
    process: "acquired" or the error message; ``probe(run)`` is "free" or "locked"."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from dgm.runs import lock

    load = _LOCK_LOAD.format(path=lock.__file__)

    def holder(run):
        proc = subprocess.Popen([sys.executable, "-c", load + _LOCK_HOLD, str(run)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "held"
        return proc

    def attempt(run) -> str:
        done = subprocess.run([sys.executable, "-c", load + _LOCK_TRY, str(run)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    return SimpleNamespace(holder=holder, attempt=attempt,
                           probe=lambda run: "free" if attempt(run) == "acquired" else "locked")


TINY_DDPM_TOML = ('[model]\nlevels = 50\n[model.net]\nhidden = 16\ndepth = 1\nemb_dim = 8\n'
                  '[train]\nbatch_size = 32\nlog_every = 5\n')


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory):
    """A `dgm train --config` file for DDPM runs on gmm2d that train in seconds (L = 50, a 16-wide MLP)."""
    path = tmp_path_factory.mktemp("tiny_settings") / "tiny.toml"
    path.write_text(TINY_DDPM_TOML)
    return path
