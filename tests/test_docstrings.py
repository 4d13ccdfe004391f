"""Every public name of the client and server API has a docstring with an `Example:` that parses."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import pytest

import trioftp
from trioftp.client import tree


def _members(cls: type[Any]) -> list[tuple[str, Any]]:
    found = []
    seen: set[str] = set()
    # The class and trioftp's own bases (ClientConnection is built of one class per job).
    for klass in (k for k in cls.__mro__ if k.__module__.startswith("trioftp")):
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            target = value.fget if isinstance(value, property) else value
            if callable(target):
                found.append((f"{cls.__name__}.{name}", target))
    return found


PUBLIC: list[tuple[str, Any]] = [
    ("trioftp.get", trioftp.get),
    ("trioftp.put", trioftp.put),
    ("trioftp.open_connection", trioftp.open_connection),
    ("trioftp.serve", trioftp.serve),
    ("ClientConnection", trioftp.ClientConnection),
    *_members(trioftp.ClientConnection),
    ("Server", trioftp.Server),
    *_members(trioftp.Server),
    ("ServerConfig", trioftp.ServerConfig),
    ("ServerConfig.evolve", trioftp.ServerConfig.evolve),
    ("Rules.excludes", trioftp.Rules.excludes),
    ("trioftp.blocking.get", trioftp.blocking.get),
    ("trioftp.blocking.put", trioftp.blocking.put),
    ("blocking.Client", trioftp.blocking.Client),
    *_members(trioftp.blocking.Client),
    ("Rules.from_options", trioftp.Rules.from_options),
    *[(f"trioftp.legacy.{name}", getattr(trioftp.legacy, name)) for name in trioftp.legacy.__all__],
    *[
        (f"tree.{name}", getattr(tree, name))
        for name in ("sync", "upload_tree", "download_tree", "walk_local", "walk_remote", "plan_sync")
    ],
    *[
        (name, getattr(trioftp, name))
        for name in (
            "Direction",
            "Plan",
            "TreeProgress",
            "TreeTransferError",
            "TrioftpError",
            "RemoteError",
            "Rules",
        )
    ],
]


def _example(doc: str) -> str:
    """The indented block under `Example:` in a Google-style docstring."""
    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index("Example:") + 1
    block = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break  # the next section
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip()


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_api_has_a_docstring_with_an_example(name: str, obj: Any) -> None:
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert "Example:" in doc.splitlines(), f"{name}'s docstring has no Example: section"
    example = _example(doc)
    assert example, f"{name}'s Example: section is empty"
    # Examples may use await / async with at the top level, as in an async function.
    compile(example, f"<{name} example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
