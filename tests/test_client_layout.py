"""The client's layout: the tree code sees a connection only through its Protocol.

`trioftp.client.connection` imports the tree code (for `upload_tree`, `sync`, ...);
if the tree code imported the connection back, even only for type hints, the
two would be one tangle again. The same holds for the job modules the
connection is built of (streams, download, upload, operations, folders). Read
from the source (an AST walk), so an import under `if TYPE_CHECKING:` or inside
a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TREE_FILES = sorted((REPO / "trioftp" / "client" / "tree").glob("*.py"))
CONNECTION = "trioftp.client.connection"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` imports, by absolute name; `from X import y` gives X and X.y.

    `package` is the package the file is in, to resolve relative imports.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_tree_folder_is_found() -> None:
    assert len(TREE_FILES) >= 5, TREE_FILES


@pytest.mark.parametrize("path", TREE_FILES, ids=lambda path: path.name)
def test_the_tree_code_never_imports_the_connection(path: Path) -> None:
    names = imported_modules(path.read_text(), "trioftp.client.tree")
    bad = sorted(name for name in names if name == CONNECTION or name.startswith(CONNECTION + "."))
    assert not bad, f"{path.name} imports {bad}: type it against tree.peer.TreeConnection"


JOB_FILES = [
    REPO / "trioftp" / "client" / f"{job}.py"
    for job in ("streams", "download", "upload", "operations", "folders")
]


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda path: path.name)
def test_the_job_modules_never_import_the_connection(path: Path) -> None:
    """ClientConnection is built of them: they must not need it back."""
    names = imported_modules(path.read_text(), "trioftp.client")
    assert not any(name == CONNECTION or name.startswith(CONNECTION + ".") for name in names)


@pytest.mark.parametrize(
    "line",
    [
        "import trioftp.client.connection",
        "from trioftp.client import connection",
        "from trioftp.client.connection import ClientConnection",
        "from .. import connection",
        "from ..connection import ClientConnection",
        "if TYPE_CHECKING:\n    from trioftp.client.connection import ClientConnection",
        "def f():\n    from trioftp.client import connection as c",
    ],
)
def test_every_kind_of_import_is_seen(line: str) -> None:
    assert CONNECTION in imported_modules(line, "trioftp.client.tree")


def test_other_imports_are_not_taken_for_it() -> None:
    names = imported_modules(
        "from trioftp.client.targets import partial_of\nfrom . import model\nimport trioftp.client",
        "trioftp.client.tree",
    )
    assert not any(name.startswith(CONNECTION) for name in names)
    assert "trioftp.client.tree.model" in names
