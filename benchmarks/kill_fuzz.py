"""The long form of tests/test_kill_fuzz.py: many SIGKILLs of ``dgm train`` at seeded random moments, resumed each
time, and the end compared bit for bit with an uninterrupted run (weights, EMA, optimizer and RNG states, the
log without its timing fields).

    python benchmarks/kill_fuzz.py --kills 100 --steps 1500 --seed 1
    python benchmarks/kill_fuzz.py --kills 20 --fresh          # every process a new `python -m dgm.cli`

By default the processes are forked from a zygote that has imported torch and dgm (as in the test); with
``--fresh`` each one is a new interpreter, as a user's would be (~5 s of imports each). Prints one JSON line:
the kills landed, where they landed (read from the files each kill left), the seconds, and "same": true when the
runs agree. The driver is the test's (``fuzz``, ``assert_same_run``), loaded from tests/test_kill_fuzz.py.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_driver():
    spec = importlib.util.spec_from_file_location("kill_fuzz_driver", ROOT / "tests" / "test_kill_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Fresh:
    """The launcher of the test's ``fuzz`` with a new ``python -m dgm.cli`` process per command."""

    def __init__(self, log: Path):
        self.log, self.proc = log, None

    def start(self, argv: list[str]) -> None:
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "dgm.cli", *argv], stderr=err, env=env)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text()[-2000:]

    def close(self) -> None:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=1, help="of the kill moments")
    p.add_argument("--jitter", type=float, default=0.1, help="seconds of random delay after each target step")
    p.add_argument("--fresh", action="store_true", help="a new interpreter per process instead of forks")
    p.add_argument("--keep", help="a folder to keep the two run directories in (default: a temporary one)")
    args = p.parse_args()
    driver = load_driver()
    root = Path(args.keep or tempfile.mkdtemp(prefix="kill-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    launcher = Fresh(root / "processes.log") if args.fresh else driver.Zygote(root / "zygote.log")
    try:
        found = driver.fuzz(root, launcher, kills=args.kills, steps=args.steps, seed=args.seed, jitter=args.jitter)
    finally:
        launcher.close()
    try:
        driver.assert_same_run(root / "reference", root / "killed", note=found["note"])
        same, why = True, ""
    except AssertionError as err:
        same, why = False, str(err)[:500]
    print(json.dumps({"kills": found["kills"], "landed": dict(collections.Counter(found["after"])),
                      "steps": args.steps, "seed": args.seed, "fresh": args.fresh, "same": same, "why": why,
                      "reference_s": round(found["reference_s"], 1), "total_s": round(found["total_s"], 1),
                      "root": str(root)}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
