"""What the tree code needs of a connection, as a typing.Protocol.

`trioftp.client.connection.ClientConnection` has all of it; the tree code is
typed against this instead, so it never imports the connection (which imports
the tree code for its `upload_tree`, `download_tree`, `sync` and `remove_tree`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from trioftp.protocol.messages import Entry, FileInfo


class TreeConnection(Protocol):
    """The operations a folder run uses: one file at a time, each on its own stream."""

    @property
    def digest_algorithm(self) -> str:
        """The digest the server gives for a file: local files are hashed the same way."""
        ...

    async def stat(self, name: str) -> FileInfo: ...

    async def mkdir(self, name: str) -> None: ...

    async def delete(self, name: str) -> None: ...

    async def rename(self, old: str, new: str) -> None: ...

    async def upload(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> FileInfo: ...

    async def download(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> FileInfo: ...

    # Last: within the class body, `list` names this method from here on.
    async def list(self, folder: str = "") -> list[Entry]: ...
