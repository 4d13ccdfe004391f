"""The client for code that is not async: plain calls that return when done.

One file, one call::

    data = trioftp.blocking.get("127.0.0.1", "reports/2026.csv")

Many transfers over one connection::

    with trioftp.blocking.Client("127.0.0.1") as client:
        client.upload("big.iso", "isos/big.iso")
        for entry in client.list("isos"):
            print(entry.name, entry.size)

As httpx has `Client` beside `AsyncClient`: the same operations, raising the same
exceptions (trioftp.NotFound, ...), as `trioftp.get`, `trioftp.put` and the
connection of `trioftp.open_connection`. A `Client` runs Trio on a thread of its
own, holding the connection there; each call hands its operation to that thread
and waits for the result. Several threads may call one Client at once: their
operations run concurrently on the connection, as tasks sharing an async one do.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import trio

from trioftp.client import oneshot
from trioftp.client.connection import ClientConnection, Progress, open_connection
from trioftp.client.tree import Direction, Plan, Rules, TreeCallback
from trioftp.errors import ConnectionClosed
from trioftp.protocol.messages import Entry, FileInfo, StatusInfo

T = TypeVar("T")

__all__ = ["Client", "get", "put"]


def get(host: str, name: str, *, port: int | None = None, **connect: Any) -> bytes:
    """Download one file into memory, verified, over a connection of its own; blocks until done.

    Args:
        host: the server's name or address.
        name: the remote file.
        port: the server's port (default 8885).
        **connect: as for trioftp.open_connection(): user, password, tls, timeout.

    Raises:
        NotFound, ChecksumMismatch, ConnectionClosed, ...: as trioftp.get.

    Example:
        data = trioftp.blocking.get("127.0.0.1", "reports/2026.csv")
    """
    if port is not None:
        connect["port"] = port
    return trio.run(partial(oneshot.get, host, name, **connect))


def put(host: str, name: str, data: bytes, *, port: int | None = None, **connect: Any) -> None:
    """Upload bytes as one file, verified and stored atomically; blocks until done.

    Args:
        host: the server's name or address.
        name: the remote file; missing folders are created.
        data: its bytes.
        port: the server's port (default 8885).
        **connect: as for trioftp.open_connection(): user, password, tls, timeout.

    Raises:
        RemoteChecksumMismatch, PermissionDenied, ConnectionClosed, ...: as trioftp.put.

    Example:
        trioftp.blocking.put("127.0.0.1", "notes.txt", b"hello")
    """
    if port is not None:
        connect["port"] = port
    trio.run(partial(oneshot.put, host, name, data, **connect))


class Client:
    """One connection to a trioftp server, for code that is not async.

    Connects when made (raising as open_connection does: ConnectionClosed,
    AuthenticationFailed, TransferTimeout, ...); `close()`, or the end of a
    `with` block, says goodbye, closes the connection and joins its thread.
    A call still running in another thread then raises ConnectionClosed.
    Progress callbacks are called on the Client's own thread.

    Args:
        host: the server's name or address.
        port: its port (default 8885).
        **connect: as for trioftp.open_connection(): user, password, tls, timeout.

    Example:
        with trioftp.blocking.Client("127.0.0.1") as client:
            client.put("notes.txt", b"hello")
            print(client.get("notes.txt"))
    """

    def __init__(self, host: str, port: int | None = None, **connect: Any) -> None:
        if port is not None:
            connect["port"] = port
        self._started: queue.Queue[BaseException | None] = queue.Queue(maxsize=1)
        self._token: trio.lowlevel.TrioToken | None = None
        self._conn: ClientConnection | None = None
        self._stop: trio.Event | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, args=(host, connect), name=f"trioftp-client-{host}", daemon=True
        )
        self._thread.start()
        failure = self._started.get()
        if failure is not None:
            self._thread.join()
            raise failure

    def _run(self, host: str, connect: dict[str, Any]) -> None:
        try:
            trio.run(self._serve, host, connect)
        except BaseException as exc:  # reported to the constructor if it came before the connection
            if self._started.empty() and self._token is None:
                self._started.put(exc)

    async def _serve(self, host: str, connect: dict[str, Any]) -> None:
        async with open_connection(host, **connect) as conn:
            self._conn = conn
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._started.put(None)
            await self._stop.wait()

    @property
    def connection(self) -> ClientConnection:
        """The async connection underneath (for what the Client does not wrap), used on its thread.

        Example:
            print(client.connection.digest_algorithm)
        """
        assert self._conn is not None
        return self._conn

    def _call(self, operation: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one async operation on the Client's thread and wait for it; its exception is raised here."""
        if self._closed or self._token is None:
            raise ConnectionClosed("the client is closed")
        try:
            return trio.from_thread.run(partial(operation, *args, **kwargs), trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):  # closed before or during the call
            raise ConnectionClosed("the client is closed") from None

    def close(self) -> None:
        """Say goodbye, close the connection and join the Client's thread; a second call does nothing.

        Example:
            client = trioftp.blocking.Client("127.0.0.1")
            try:
                client.mkdir("new")
            finally:
                client.close()
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._token is not None and self._stop is not None:
            # RunFinishedError: the connection's run already ended.
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # Each method is the ClientConnection's of the same name; see its docstring for the details.

    def get(self, name: str, *, progress: Progress | None = None) -> bytes:
        """A remote file's bytes, verified (ClientConnection.get).

        Example:
            data = client.get("reports/2026.csv")
        """
        return self._call(self.connection.get, name, progress=progress)

    def put(
        self, name: str, data: bytes, *, mtime_ns: int | None = None, progress: Progress | None = None
    ) -> FileInfo:
        """Store bytes as a remote file, verified and atomically (ClientConnection.put).

        Example:
            info = client.put("notes/today.txt", b"hello")
        """
        return self._call(self.connection.put, name, data, mtime_ns=mtime_ns, progress=progress)

    def download(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        resume: bool = True,
        progress: Progress | None = None,
        fsync: bool = False,
    ) -> FileInfo:
        """Download a remote file to a local path, verified, resuming (ClientConnection.download).

        Example:
            client.download("isos/big.iso", "big.iso")
        """
        return self._call(self.connection.download, name, path, resume=resume, progress=progress, fsync=fsync)

    def upload(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        resume: bool = True,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Upload a local file, verified, resuming (ClientConnection.upload).

        Example:
            client.upload("big.iso", "isos/big.iso")
        """
        return self._call(self.connection.upload, path, name, resume=resume, progress=progress)

    def list(self, folder: str = "") -> list[Entry]:
        """The entries of a remote folder, sorted by name (ClientConnection.list).

        Example:
            names = [entry.name for entry in client.list("isos")]
        """
        return self._call(self.connection.list, folder)

    def stat(self, name: str) -> FileInfo:
        """A remote file's size, mtime and digest (ClientConnection.stat).

        Example:
            print(client.stat("isos/big.iso").size)
        """
        return self._call(self.connection.stat, name)

    def status(self) -> StatusInfo:
        """The server's version, uptime, load and bytes moved (ClientConnection.status).

        Example:
            print(client.status().agent)
        """
        return self._call(self.connection.status)

    def delete(self, name: str) -> None:
        """Delete a remote file or empty folder (ClientConnection.delete).

        Example:
            client.delete("old/big.iso")
        """
        self._call(self.connection.delete, name)

    def rename(self, old: str, new: str, *, replace: bool = False) -> None:
        """Rename a remote file or folder (ClientConnection.rename).

        Example:
            client.rename("isos/big.iso", "old/big.iso")
        """
        self._call(self.connection.rename, old, new, replace=replace)

    def mkdir(self, name: str) -> None:
        """Create a remote folder and its parents (ClientConnection.mkdir).

        Example:
            client.mkdir("new/folder")
        """
        self._call(self.connection.mkdir, name)

    def upload_tree(
        self,
        local: str | os.PathLike[str],
        remote: str = "",
        *,
        progress: TreeCallback | None = None,
        rules: Rules | None = None,
    ) -> Plan:
        """Upload a local folder, skipping files already identical (ClientConnection.upload_tree).

        Example:
            plan = client.upload_tree("photos", "backup/photos")
        """
        return self._call(self.connection.upload_tree, local, remote, progress=progress, rules=rules)

    def download_tree(
        self,
        remote: str,
        local: str | os.PathLike[str],
        *,
        progress: TreeCallback | None = None,
        rules: Rules | None = None,
    ) -> Plan:
        """Download a remote folder, skipping files already identical (ClientConnection.download_tree).

        Example:
            plan = client.download_tree("backup/photos", "photos-restored")
        """
        return self._call(self.connection.download_tree, remote, local, progress=progress, rules=rules)

    def sync(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        direction: Direction = Direction.UP,
        delete: bool = False,
        dry_run: bool = False,
        rules: Rules | None = None,
    ) -> Plan:
        """Make one side match the other (ClientConnection.sync).

        Example:
            plan = client.sync("site", "www", delete=True)
        """
        return self._call(
            self.connection.sync,
            local,
            remote,
            direction=direction,
            delete=delete,
            dry_run=dry_run,
            rules=rules,
        )
