"""The package's layers: no import cycles, and the sans-I/O core imports no I/O.

An AST walk of every module under trioftp/ (imports inside functions and
under TYPE_CHECKING count too: a cycle there is still two modules that each
need the other). `from pkg import name` counts as importing pkg.name when that
is a module, else pkg itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trioftp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    return groups


def test_the_walk_sees_the_imports() -> None:
    """Guards the test itself: a walk that found nothing would pass every check below."""
    assert "trioftp.protocol.frames" in GRAPH["trioftp.protocol.codec"]
    assert "trioftp.storage.interface" in GRAPH["trioftp.server.mapping"]


def test_no_module_imports_itself_back() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("core", sorted(name for name in MODULES if name.startswith("trioftp.protocol")))
def test_the_protocol_core_does_no_io(core: str) -> None:
    tree = ast.parse(MODULES[core].read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"trio", "socket", "ssl", "os", "asyncio", "selectors"}
    assert not {m for m in GRAPH[core] if not m.startswith("trioftp.protocol")}


def test_the_store_does_not_know_the_protocol() -> None:
    """Stores speak in their own terms (storage.interface); the server maps them to the wire."""
    for name in MODULES:
        if name.startswith("trioftp.storage"):
            wire = {
                m for m in GRAPH[name] if m.startswith("trioftp.protocol") and m != "trioftp.protocol.names"
            }
            assert not wire, (name, wire)
            assert not {m for m in GRAPH[name] if m.startswith(("trioftp.server", "trioftp.client"))}, name


def test_old_module_paths_still_import_as_the_same_module() -> None:
    """Code written against the flat layout keeps working during the move (trioftp/_moved.py)."""
    import importlib

    from trioftp._moved import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
