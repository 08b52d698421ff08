"""The package's shape, checked: modules and functions small enough to read, imports that only point down.

"Down" means: no import cycle between emotion_vit's modules (so each can be read, tested and loaded
without the ones that use it), and no module importing the package it belongs to (its __init__
re-exports; submodules import the submodule that defines a name).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "emotion_vit"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path) -> set[str]:
    """The emotion_vit modules `path` imports, anywhere in it (lazy imports inside functions too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("emotion_vit"):
                names = [f"{base}.{alias.name}" for alias in node.names]
                found |= {name for name in names if name in KNOWN} or {base}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("emotion_vit")}
    return found


KNOWN = {module_name(path) for path in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_functions_are_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [(name, target) for name, targets in graph.items() for target in targets
            if name.startswith(target + ".") and target != "emotion_vit"]


def modules_in_cycles(graph: dict[str, set[str]]) -> set[str]:
    """Repeatedly drop modules that import nothing left; what remains is in (or behind) a cycle."""
    remaining = dict(graph)
    while True:
        leaves = {name for name, targets in remaining.items() if not targets & remaining.keys()}
        if not leaves:
            return set(remaining)
        remaining = {name: targets for name, targets in remaining.items() if name not in leaves}


def test_imports_only_point_down():
    graph = {module_name(path): internal_imports(path) & KNOWN for path in MODULES}
    assert not upward_imports(graph), "modules importing their own package's __init__"
    # The package root imports only for side effects (settings), so it is left out of the cycle check.
    assert not modules_in_cycles({name: targets - {"emotion_vit"} for name, targets in graph.items()
                                  if name != "emotion_vit"})


def test_the_layout_checks_can_fail():
    assert internal_imports(PACKAGE / "webapp" / "live.py") >= {"emotion_vit.service", "emotion_vit.webapp.controls"}
    assert modules_in_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == {"a", "b", "c", "d"}
    assert upward_imports({"emotion_vit.adapt.gates": {"emotion_vit.adapt"}}) == [
        ("emotion_vit.adapt.gates", "emotion_vit.adapt")]
