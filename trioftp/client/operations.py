"""The verbs that are one request and one answer: list, stat, status, delete, rename, mkdir."""

from __future__ import annotations

from collections.abc import Callable

from trioftp.client.streams import Streams
from trioftp.protocol.messages import (
    Delete,
    Done,
    Entry,
    FileInfo,
    List,
    Listing,
    Message,
    Mkdir,
    Rename,
    Stat,
    Status,
    StatusInfo,
)


class Operations(Streams):
    """The methods of `ClientConnection` that move no file: each is one stream, one answer."""

    async def list(self, folder: str = "") -> list[Entry]:
        """The entries of a remote folder ("" is the root), sorted by name.

        Raises:
            NotFound: no such folder.

        Example:
            for entry in await conn.list("isos"):
                print(entry.name, entry.kind.value, entry.size, entry.mtime_ns)
        """
        entries: list[Entry] = []
        async with self._stream(lambda sid: List(folder=folder, stream_id=sid)) as inbox:
            while True:
                part: Listing = await self._expect(inbox, Listing)
                entries.extend(part.entries)
                if part.last:
                    return entries

    async def stat(self, name: str) -> FileInfo:
        """Size, mtime, kind and (for files) digest of a remote file or folder.

        Raises:
            NotFound: no such file or folder.

        Example:
            info = await conn.stat("isos/big.iso")
            print(info.size, info.digest.hex() if info.digest else "(a folder)")
        """
        async with self._stream(lambda sid: Stat(name=name, stream_id=sid)) as inbox:
            info: FileInfo = await self._expect(inbox, FileInfo)
            return info

    async def status(self) -> StatusInfo:
        """The server's version, uptime, connections, transfers in flight and bytes moved.

        Raises:
            PermissionDenied: the server has users and we are not an administrator.

        Example:
            info = await conn.status()
            print(info.agent, info.uptime_ms / 1000, "s up,", info.transfers, "transfers in flight")
        """
        async with self._stream(lambda sid: Status(stream_id=sid)) as inbox:
            info: StatusInfo = await self._expect(inbox, StatusInfo)
            return info

    async def delete(self, name: str) -> None:
        """Delete a remote file or empty folder.

        Raises:
            NotFound: no such file or folder.
            RemoteError: the folder is not empty (code BAD_REQUEST).

        Example:
            await conn.delete("old/big.iso")
        """
        await self._simple(lambda sid: Delete(name=name, stream_id=sid))

    async def rename(self, old: str, new: str, *, replace: bool = False) -> None:
        """Rename a remote file or folder; an existing `new` is replaced only with replace=True.

        Missing folders of `new` are created; the move is atomic.

        Raises:
            NotFound: `old` does not exist.
            AlreadyExists: `new` exists and replace is False.

        Example:
            await conn.rename("isos/big.iso", "old/big.iso", replace=True)
        """
        await self._simple(lambda sid: Rename(old=old, new=new, replace=replace, stream_id=sid))

    async def mkdir(self, name: str) -> None:
        """Create a remote folder and its missing parents (an existing folder is fine).

        Raises:
            AlreadyExists: a file of that name is in the way.
            RemoteError: a parent is a file (code WRONG_KIND).

        Example:
            await conn.mkdir("new/folder")
        """
        await self._simple(lambda sid: Mkdir(name=name, stream_id=sid))

    async def _simple(self, make: Callable[[int], Message]) -> None:
        async with self._stream(make) as inbox:
            await self._expect(inbox, Done)
