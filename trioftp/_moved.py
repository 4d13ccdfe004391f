"""Old module paths from before the layer folders, kept importable for a while.

`import trioftp.channel` (and `from trioftp.storage import Storage` for the local
store) still works and gives the very module that now lives at the new
path, private names included, so code written against 0.x keeps running while
it moves to the new paths.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import importlib.abc

MOVED: dict[str, str] = {
    "trioftp.channel": "trioftp.transport.channel",
    "trioftp.inbox": "trioftp.transport.inbox",
    "trioftp.sink": "trioftp.transport.sink",
    "trioftp.concurrency": "trioftp.transport.concurrency",
    "trioftp.syscalls": "trioftp.disk.syscalls",
    "trioftp.writeback": "trioftp.disk.writeback",
    "trioftp.digests": "trioftp.disk.digests",
    "trioftp.beneath": "trioftp.disk.beneath",
    "trioftp.budget": "trioftp.server.budget",
    "trioftp.metrics": "trioftp.server.metrics",
    "trioftp.auth": "trioftp.server.auth",
    "trioftp.progress": "trioftp.cli.progress",
    "trioftp.protocol.legacy": "trioftp.protocol.legacy_codec",
    "trioftp.server.legacy": "trioftp.server.legacy_session",
    "trioftp.client.legacy": "trioftp.client.legacy_servers",
}


# A finder and loader by shape, not by the importlib.abc classes: importing those
# loads importlib.resources too, for every process (bench W5).
class _Alias:
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, cast("importlib.abc.Loader", self))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The module object itself, not a copy: monkeypatching either name
        # patches both.
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        pass


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
