"""A minimal, honest mutation runner (run by hand, not in CI).

Usage (from a worktree or copy of the repository, never a checkout others are editing):

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/mutation_run.py --root /tmp/mut_after \
        --module src/dgm/core/bound.py --tests tests/core/test_bound_exact.py tests/core/test_losses.py \
        [--functions vlb decoder_nll ...] [--workers 2] [--json out.json]

What it does, one mutant at a time:
  1. parses the module with ``ast`` and lists every mutation site of a fixed operator set (below) inside the
     chosen functions (all top-level code when ``--functions`` is not given; docstrings, ``__all__`` and
     ``raise`` statements are never mutated);
  2. for each mutant writes ``ast.unparse`` of the mutated tree over the module in a private copy of the
     root's ``src``/``tests`` (one copy per worker) and runs ``pytest -x -q -p no:cacheprovider <tests>`` in
     a forked child of a process that has already imported torch, numpy, scipy and pytest (dgm itself is
     imported fresh in each child, from the copy), with a timeout of max(90 s, 6 x the baseline run);
  3. counts killed (tests failed or errored), survived (tests passed) and timeout (counted as killed, shown
     apart).
The unmutated module is round-tripped through ``ast.unparse`` and must pass the tests first (baseline).

Operators (each applied to one AST node at a time):
  binop      + <-> -, * <-> /, ** -> *, // -> /
  dropterm   a + b -> a, a - b -> a  (drop the right term of a sum)
  compare    < <-> <=, > <-> >=, == <-> !=, is <-> is not, in <-> not in
  const      numeric constant c -> c + 1 (booleans: True <-> False)
  unary      -x -> x, not x -> x
  boolop     and <-> or
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import sys
import tempfile
import time

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
               ast.FloorDiv: ast.Div}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}


def _skip_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: docstrings, __all__, raise statements and everything under them."""
    skip: set[int] = set()

    def under(node):
        for n in ast.walk(node):
            skip.add(id(n))

    for node in ast.walk(tree):
        if isinstance(node, ast.Raise):
            under(node)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            under(node)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            if docstring and isinstance(first.value.value, str):
                under(first)
    return skip


def _scopes(tree: ast.Module, functions: list[str] | None):
    if not functions:
        return [tree]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in functions:
            found.append(node)
    missing = set(functions) - {n.name for n in found}
    if missing:
        raise SystemExit(f"functions not found: {sorted(missing)}")
    return found


def list_mutants(source: str, functions: list[str] | None):
    """[(index path, kind, lineno, description)] for every mutation site; the index path is the position of
    the node in ``ast.walk`` order of the whole module (stable for one source)."""
    tree = ast.parse(source)
    skip = _skip_nodes(tree)
    in_scope = set()
    for sc in _scopes(tree, functions):
        for n in ast.walk(sc):
            in_scope.add(id(n))
    out = []
    for idx, node in enumerate(ast.walk(tree)):
        if id(node) in skip or id(node) not in in_scope:
            continue
        seg = ast.get_source_segment(source, node) or ast.unparse(node)
        seg = " ".join(seg.split())
        if isinstance(node, ast.BinOp):
            if type(node.op) in _BINOP_SWAP:
                out.append((idx, "binop", node.lineno, seg))
            if isinstance(node.op, (ast.Add, ast.Sub)):
                out.append((idx, "dropterm", node.lineno, seg))
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    out.append((idx, f"compare:{k}", node.lineno, seg))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, complex)):
            out.append((idx, "const", node.lineno, seg))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            out.append((idx, "unary", node.lineno, seg))
        elif isinstance(node, ast.BoolOp):
            out.append((idx, "boolop", node.lineno, seg))
    return out


class _Replace(ast.NodeTransformer):
    def __init__(self, target, new):
        self.target, self.new = target, new

    def visit(self, node):
        if node is self.target:
            return self.new
        return self.generic_visit(node)


def mutate(source: str, idx: int, kind: str) -> tuple[str, str]:
    """(mutated module source, the mutated expression as text)."""
    tree = ast.parse(source)
    node = list(ast.walk(tree))[idx]
    new = copy.deepcopy(node)
    if kind == "binop":
        new.op = _BINOP_SWAP[type(node.op)]()
    elif kind == "dropterm":
        new = copy.deepcopy(node.left)
    elif kind.startswith("compare:"):
        k = int(kind.split(":")[1])
        new.ops[k] = _CMP_SWAP[type(node.ops[k])]()
    elif kind == "const":
        new.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif kind == "unary":
        new = copy.deepcopy(node.operand)
    elif kind == "boolop":
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    else:
        raise ValueError(kind)
    ast.copy_location(new, node)
    tree = _Replace(node, new).visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n", ast.unparse(new)


# ------------------------------------------------------------------------------------------- running


def _run_child(workdir: str, tests: list[str], log: str) -> int:
    """Fork; the child runs pytest on ``tests`` in ``workdir`` with its src first on sys.path."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.chdir(workdir)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.path.insert(0, os.path.join(workdir, "src"))
            import dgm

            if not os.path.abspath(dgm.__file__).startswith(workdir):  # the copy's code, not an installed one
                os._exit(98)
            import pytest

            rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])
            os._exit(int(rc))
        except BaseException:  # noqa: BLE001
            os._exit(99)
    return pid


def _wait(pid: int, timeout: float) -> tuple[str, float]:
    t0 = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            return ("survived" if rc == 0 else "killed"), time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - t0
        time.sleep(0.05)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a worktree or copy of the repository (not the live checkout)")
    ap.add_argument("--module", required=True, help="path of the module to mutate, relative to --root")
    ap.add_argument("--tests", nargs="+", required=True, help="pytest files, relative to --root")
    ap.add_argument("--functions", nargs="*", default=None, help="mutate only inside these functions/classes")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the per-mutant results here")
    ap.add_argument("--list", action="store_true", help="only list the mutants")
    args = ap.parse_args(argv)

    root = os.path.abspath(args.root)
    tests = [t for t in args.tests if os.path.exists(os.path.join(root, t))]
    source = open(os.path.join(root, args.module)).read()
    mutants = list_mutants(source, args.functions)
    if args.list:
        for m in mutants:
            print(f"{args.module}:{m[2]} {m[1]} {m[3]}")
        print(len(mutants), "mutants")
        return

    import numpy  # noqa: F401  (imported once, before forking)
    import pytest  # noqa: F401
    import scipy  # noqa: F401
    import torch  # noqa: F401

    tmp = tempfile.mkdtemp(prefix="mutrun_")
    workers = []
    for w in range(max(1, args.workers)):
        wd = os.path.join(tmp, f"w{w}")
        os.makedirs(wd)
        for sub in ("src", "tests"):
            shutil.copytree(os.path.join(root, sub), os.path.join(wd, sub))
        for f in ("pyproject.toml", "conftest.py"):
            if os.path.exists(os.path.join(root, f)):
                shutil.copy(os.path.join(root, f), wd)
        workers.append(wd)

    t_start = time.monotonic()
    baseline_src = ast.unparse(ast.parse(source)) + "\n"
    with open(os.path.join(workers[0], args.module), "w") as fh:
        fh.write(baseline_src)
    pid = _run_child(workers[0], tests, os.path.join(tmp, "baseline.log"))
    outcome, base_s = _wait(pid, 900)
    if outcome != "survived":
        print(open(os.path.join(tmp, "baseline.log")).read()[-3000:])
        raise SystemExit(f"baseline does not pass ({outcome}); not mutating")
    timeout = max(90.0, 6 * base_s)
    print(f"baseline passed in {base_s:.1f}s; {len(mutants)} mutants; timeout {timeout:.0f}s; tests {tests}",
          flush=True)

    results = []
    queue = list(enumerate(mutants))
    running: dict[int, tuple] = {}  # worker -> (pid, t0, mutant index)
    free = list(range(len(workers)))
    while queue or running:
        while queue and free:
            w = free.pop()
            k, (idx, kind, line, seg) = queue.pop(0)
            mutated, new = mutate(source, idx, kind)
            with open(os.path.join(workers[w], args.module), "w") as fh:
                fh.write(mutated)
            pid = _run_child(workers[w], tests, os.path.join(tmp, f"w{w}.log"))
            running[w] = (pid, time.monotonic(), k, line, kind, seg, new)
        for w, (pid, t0, k, line, kind, seg, new) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            outcome = None
            if done:
                outcome = "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
            elif time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                outcome = "timeout"
            if outcome:
                dt = time.monotonic() - t0
                results.append({"n": k, "file": args.module, "line": line, "op": kind, "from": seg, "to": new,
                                "outcome": outcome, "seconds": round(dt, 1)})
                print(f"[{len(results)}/{len(mutants)}] {args.module}:{line} {kind}: {seg!r} -> {new!r}: "
                      f"{outcome} ({dt:.1f}s)", flush=True)
                del running[w]
                free.append(w)
        time.sleep(0.05)

    wall = time.monotonic() - t_start
    killed = sum(r["outcome"] == "killed" for r in results)
    tout = sum(r["outcome"] == "timeout" for r in results)
    surv = [r for r in results if r["outcome"] == "survived"]
    print(f"SUMMARY {args.module}: killed {killed + tout}/{len(results)} (timeouts {tout}); "
          f"survived {len(surv)}; wall {wall:.0f}s", flush=True)
    for r in sorted(surv, key=lambda r: r["line"]):
        print(f"SURVIVED {r['file']}:{r['line']} {r['op']}: {r['from']!r} -> {r['to']!r}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"module": args.module, "tests": tests, "root": root, "functions": args.functions,
                       "baseline_s": base_s, "wall_s": wall, "results": sorted(results, key=lambda r: r["n"])},
                      fh, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
