"""Names a package exports, imported from their modules only when first used.

A server process never touches the client, and a one-shot client never touches
the server; importing either half through `trioftp` or `trioftp.client` used to
load both (~1.4 MiB of a fresh server's RSS, bench W5).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module `__getattr__` and `__dir__` for `package`: each name in `where` is looked up,
    on first use, in the module `where` gives for it (a name that maps to `package.name`
    is that submodule itself), and then kept in the package.

    Example (in a package's __init__.py)::

        __getattr__, __dir__ = lazy_exports(__name__, {"Server": "trioftp.server.server"})
    """
    namespace = importlib.import_module(package).__dict__
    listed = sorted({*where, *namespace})

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        namespace[name] = value  # later lookups do not come back here
        return value

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
