"""The layering of docs/ARCHITECTURE.md, checked on the source (ast, no import):

    core -> samplers, nets -> models -> data -> runs -> training, evaluation -> report -> cli

A module imports only from its own subpackage or a layer to its left; nothing imports the public facade
(``dgm/__init__.py``) or ``dgm.cli``; only dgm/cli knows argparse; there is no import cycle between modules;
and the public API covers shared/SPEC.md.

Catches: an upward import (core importing models, evaluation importing the CLI), a lazy import that hides
a cycle, an argparse Namespace passed into the library, a SPEC name dropped from ``dgm.__all__``.
"""

import ast
import re
from pathlib import Path

import pytest

import dgm

SRC = Path(dgm.__file__).parent
SPEC = Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"
LAYERS = [("core",), ("samplers", "nets"), ("models",), ("data",), ("runs",), ("training", "evaluation"),
          ("report",), ("cli",)]
RANK = {pkg: k for k, group in enumerate(LAYERS) for pkg in group}
MAX_LINES = 320  # "roughly 80-300 lines" (STYLE.md); longer modules say why in their docstring
LONG_REASON = "Longer than 300 lines because"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["dgm", *parts])] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported dgm module, line) for every import in the file, at any depth (lazy imports included)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] in ("dgm", "argparse")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write dgm.… in full")
            if node.module == "dgm" or node.module.startswith("dgm."):
                for a in node.names:  # `from dgm.core import rng` imports the module dgm.core.rng
                    sub = f"{node.module}.{a.name}"
                    found.append((sub if sub in MODULES else node.module, node.lineno))
            elif node.module.split(".")[0] == "argparse":
                found.append(("argparse", node.lineno))
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_layer():
    packages = {_package(m) for m in MODULES} - {None, "__main__"}
    assert packages == set(RANK), f"subpackages without a layer: {packages - set(RANK)}"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "dgm"])
def test_imports_point_down(module):
    here = _package(module)
    for target, line in _imports(MODULES[module]):
        where = f"{MODULES[module].relative_to(SRC)}:{line} imports {target}"
        if target == "argparse":
            assert here == "cli", f"{where}: only dgm/cli knows argparse"
            continue
        assert target != "dgm", f"{where}: the facade dgm/__init__.py is for users; import the module itself"
        there = _package(target)
        assert there in RANK, f"{where}: unknown subpackage"
        assert there == here or RANK[there] < RANK[here], (
            f"{where}: {here} (layer {RANK[here]}) may not import {there} (layer {RANK[there]})")


def test_no_namespace_below_the_cli():
    for module, path in MODULES.items():
        if _package(module) != "cli":
            assert "Namespace" not in path.read_text(), f"{path}: an argparse Namespace below dgm/cli"


def test_no_import_cycles():
    graph = {m: {t for t, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items() if m != "dgm"}
    # a package's __init__ re-exporting its own modules is not a cycle of concepts: drop edges into parents
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in graph.get(m, ()):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", list(MODULES))
def test_module_size(module):
    text = MODULES[module].read_text()
    lines = text.count("\n")
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert LONG_REASON in doc, f"{MODULES[module]} has {lines} lines; split it or say why in its docstring"


def _spec_names(section: str) -> set[str]:
    text = SPEC.read_text()
    head, _, additions = text.partition("## Additions settled for the open issues")
    part = head if section == "base" else additions
    python = part.split("## Command line")[0]
    return set(re.findall(r"`dgm\.([A-Za-z_][A-Za-z0-9_]*)", python)) - {"cli"}


PENDING: dict[str, str] = {}  # SPEC names for open issues not built yet, with the issue


@pytest.mark.skipif(not SPEC.exists(), reason="shared/SPEC.md is not beside the repository")
def test_public_api_covers_spec():
    missing = sorted(_spec_names("base") - set(dgm.__all__))
    assert not missing, f"dgm.__all__ lacks SPEC names {missing}"
    for name in dgm.__all__:
        assert hasattr(dgm, name), name


@pytest.mark.skipif(not SPEC.exists(), reason="shared/SPEC.md is not beside the repository")
@pytest.mark.parametrize("name", sorted(PENDING))
def test_spec_additions_not_built_yet(name):
    """The names SPEC settles for open issues: listed in PENDING until built. When one is built this test
    fails, to say: move it out of PENDING."""
    assert name in _spec_names("additions")
    assert name not in dgm.__all__, f"dgm.{name} exists now: remove it from PENDING"


@pytest.mark.skipif(not SPEC.exists(), reason="shared/SPEC.md is not beside the repository")
def test_built_spec_additions_are_public():
    """Every name SPEC settles for the open issues is public once built (all but PENDING)."""
    missing = sorted(_spec_names("additions") - set(PENDING) - set(dgm.__all__))
    assert not missing, f"dgm.__all__ lacks {missing}"
