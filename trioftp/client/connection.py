"""A client connection: many operations at once, each on its own stream.

    async with trioftp.open_connection("127.0.0.1") as conn:
        await conn.put("notes.txt", b"hello")
        data = await conn.get("notes.txt")

Resource handling: the connection owns one reader task, in a nursery opened by
`__aenter__` and closed by `__aexit__`; operations run in the caller's task.
Every operation cancels its stream if the caller leaves it early (timeout,
exception), so the server stops sending.

Error handling: every failure is a TrioftpError subclass: RemoteError (with
the server's code), ChecksumMismatch, ProtocolViolation, ConnectionClosed.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import attrs
import trio

from trioftp.client import tree
from trioftp.client.download import Downloads
from trioftp.client.streams import Progress as Progress  # re-exported from its former home
from trioftp.client.tree import DEFAULT_CONCURRENCY, Direction, Plan, TreeCallback
from trioftp.client.upload import Uploads
from trioftp.config import DEFAULT_PORT
from trioftp.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ProtocolViolation,
    TransferTimeout,
    TrioftpError,
    connect_reason,
)
from trioftp.protocol import (
    PEER_CLOSED,
    Connection,
    ErrorCode,
    RemoteProtocolError,
    Role,
    Settings,
)
from trioftp.protocol.frames import GREASE_FRAME_TYPES
from trioftp.protocol.messages import (
    FEATURE_ANONYMOUS,
    FEATURE_AUTH,
    FEATURE_ENTRY_KINDS,
    FEATURE_V2_1,
    Auth,
    Authorized,
    Delete,
    Done,
    Entry,
    Error,
    FileInfo,
    Goodbye,
    Hello,
    List,
    Listing,
    Message,
    Mkdir,
    Rename,
    Stat,
    Status,
    StatusInfo,
)
from trioftp.transport.channel import Channel, ChannelClosed

T = TypeVar("T")

GREASE_CHANCE = 1 / 8  # of connections that send one GREASE frame after the HELLO exchange
DEFAULT_TIMEOUT = 30.0  # seconds a server has to let us in (connect, TLS, HELLO, login)


class ClientConnection(Downloads, Uploads):
    """One v2 connection to a trioftp server. Use `open_connection()` to make one.

    Several tasks may use it at once: each operation runs on its own stream,
    with its own flow control, so a small `get` is not stuck behind a large
    download.

    Attributes:
        authorized: the server's answer to our login (user, rights), or None
            when we did not log in.

    Example:
        async with trioftp.open_connection("127.0.0.1") as conn:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.upload, "a.iso", "isos/a.iso")
                nursery.start_soon(conn.upload, "b.iso", "isos/b.iso")
    """

    def __init__(self, stream: trio.abc.Stream, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        # This client reads every Entry kind, and follows v2.1's rules.
        missing = tuple(f for f in (FEATURE_ENTRY_KINDS, FEATURE_V2_1) if f not in settings.features)
        if missing:
            settings = attrs.evolve(settings, features=(*settings.features, *missing))
        super().__init__(Channel(stream, Connection(Role.CLIENT, settings)))
        self.authorized: Authorized | None = None  # who the server says we are, after a login

    @property
    def server_hello(self) -> Hello:
        """The server's HELLO: its limits, digests, features and agent string.

        Example:
            print(conn.server_hello.agent, conn.server_hello.max_streams)
        """
        hello = self.channel.machine.peer_hello
        assert hello is not None
        return hello

    # ------------------------------------------------------------- lifecycle

    async def _close(self) -> None:
        """Say goodbye (if the connection still works) and close the socket."""
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            if self._failure is None:
                with suppress(ChannelClosed, TrioftpError):
                    await self.channel.send(Goodbye(message="client done"))
        await self.channel.aclose()

    async def _handshake(self, user: str | None = None, password: str | None = None) -> None:
        """HELLO exchange, then AUTH if we have credentials."""
        await self.channel.send(self.channel.machine.settings.hello())
        hello = await self._handshake_event(Hello)
        self._slots = trio.Semaphore(max(1, hello.max_streams))
        if FEATURE_V2_1 in hello.features and random.random() < GREASE_CHANCE:
            # Now and then a frame of a reserved type, so a server that chokes on
            # unknown frames is found by its users' everyday traffic (spec 4.1).
            frame_type = random.choice(GREASE_FRAME_TYPES)
            await self.channel.send_grease(frame_type, random.randbytes(random.randrange(16)))
        offers_auth = FEATURE_AUTH in hello.features
        if user is None:
            if offers_auth and FEATURE_ANONYMOUS not in hello.features:
                raise AuthenticationFailed("the server needs a user and password")
            return
        if not offers_auth:
            raise AuthenticationFailed("the server has no users: connect without a user and password")
        await self.channel.send(Auth(user=user, password=password or ""))
        self.authorized = await self._handshake_event(Authorized)

    async def _handshake_event(self, kind: type[T]) -> T:
        while True:
            try:
                events = await self.channel.receive_events()
            except RemoteProtocolError as exc:
                plain = not isinstance(self.channel.stream, trio.SSLStream)
                hint = " (if the server uses TLS, connect with TLS)" if plain else ""
                raise ProtocolViolation(f"not a trioftp v2 server, or a broken one: {exc}{hint}") from None
            except ChannelClosed as exc:
                raise ConnectionClosed(f"connection failed during the handshake: {exc}") from None
            for event in events:
                if event is PEER_CLOSED:
                    raise ConnectionClosed("the server closed the connection during the handshake")
                if isinstance(event, Error):
                    reason = f"the server refused the connection: {event.code.name}: {event.message}"
                    if event.code is ErrorCode.AUTH_FAILED:
                        raise AuthenticationFailed(reason)
                    raise ConnectionClosed(reason)
                if isinstance(event, kind):
                    return event

    # ------------------------------------------------------ the other verbs

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

    # --------------------------------------------------------- whole folders

    async def upload_tree(
        self,
        local: str | os.PathLike[str],
        remote: str = "",
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: TreeCallback | None = None,
        rules: tree.Rules | None = None,
    ) -> Plan:
        """Upload every file under a local folder, skipping files already identical on the server.

        Files go `concurrency` at a time, each on its own stream; an upload cut
        midway resumes from the server's partial on the next run.

        Args:
            local: the local folder.
            remote: the remote folder to fill ("" is the root); created as needed.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.

        Returns:
            The plan carried out: `copy` (the files sent), `unchanged`, `bytes_to_copy`.

        Raises:
            TreeTransferError: some entries failed or were skipped (a FIFO, a dangling
                link, a name the protocol refuses); the others were sent. See its
                `failures`, `skipped` and `done`.
            FileNotFoundError, NotADirectoryError: `local` is missing or not a folder.
            ConnectionClosed: the connection broke.

        Example:
            plan = await conn.upload_tree("photos", "backup/photos")
            print(len(plan.copy), "files sent,", plan.unchanged, "already there")
        """
        return await tree.upload_tree(
            self, local, remote, concurrency=concurrency, progress=progress, rules=rules
        )

    async def download_tree(
        self,
        remote: str,
        local: str | os.PathLike[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: TreeCallback | None = None,
        rules: tree.Rules | None = None,
    ) -> Plan:
        """Download every file under a remote folder, skipping files already identical here.

        A download cut midway resumes from its `.trioftp-part` file on the next run.

        Args:
            remote: the remote folder ("" is the root).
            local: the local folder to fill; created as needed.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.

        Returns:
            The plan carried out: `copy` (the files received), `unchanged`, `bytes_to_copy`.

        Raises:
            TreeTransferError: some entries failed or were skipped; the others were
                received. See its `failures`, `skipped` and `done`.
            NotFound: `remote` does not exist; RemoteError (WRONG_KIND): it is a file.
            ConnectionClosed: the connection broke.

        Example:
            await conn.download_tree("backup/photos", "photos-restored")
        """
        return await tree.download_tree(
            self, remote, local, concurrency=concurrency, progress=progress, rules=rules
        )

    async def sync(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        direction: Direction = Direction.UP,
        delete: bool = False,
        dry_run: bool = False,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: TreeCallback | None = None,
        rules: tree.Rules | None = None,
    ) -> Plan:
        """Make `remote` match `local` (Direction.UP) or `local` match `remote` (Direction.DOWN).

        Files are compared by size, then by digest where the sizes agree; only
        those that differ are copied.

        Args:
            local: the local folder.
            remote: the remote folder ("" is the root).
            direction: which side is the source.
            delete: also delete the target's files that the source does not have.
            dry_run: only compute the plan; change nothing on either side.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.

        Returns:
            The plan: `copy` and `delete` (relative paths), `unchanged`, `bytes_to_copy`.

        Raises:
            TreeTransferError: some entries failed (the others were copied, nothing was
                deleted) or were skipped (their copies on the target are never deleted).
            FileNotFoundError, NotADirectoryError, NotFound, RemoteError (WRONG_KIND): the
                source folder is missing or a file (read as empty, a run would copy nothing and
                report success, and with `delete` it would empty the target).
            ConnectionClosed: the connection broke.

        Example:
            plan = await conn.sync("site", "www", delete=True, dry_run=True)
            print("would copy", plan.copy, "and delete", plan.delete)
        """
        return await tree.sync(
            self,
            local,
            remote,
            direction=direction,
            delete=delete,
            dry_run=dry_run,
            concurrency=concurrency,
            progress=progress,
            rules=rules,
        )

    async def remove_tree(self, remote: str, *, concurrency: int = DEFAULT_CONCURRENCY) -> Plan:
        """Delete a remote folder and everything under it (files, then folders, deepest first).

        A file is deleted as it is, as `rm -r` does. The root cannot be removed.

        Returns:
            What was deleted: `delete` (files) and `rmdir` (folders; "" is `remote` itself).

        Raises:
            ValueError: `remote` is the root ("" or "/").
            NotFound: no such file or folder.
            TreeTransferError: some entries could not be deleted (nor the folders holding them).
            ConnectionClosed: the connection broke.

        Example:
            plan = await conn.remove_tree("backup/old-photos")
        """
        return await tree.remove_tree(self, remote, concurrency=concurrency)

    async def _simple(self, make: Callable[[int], Message]) -> None:
        async with self._stream(make) as inbox:
            await self._expect(inbox, Done)


async def _connect(host: str, port: int, tls: bool | ssl.SSLContext) -> trio.abc.Stream:
    try:
        tcp = await _open_tcp(host, port)
    except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
        raise ConnectionClosed(f"cannot connect to {host}:{port}: {connect_reason(exc)}") from None
    if tls is False:
        return tcp
    context = tls if isinstance(tls, ssl.SSLContext) else ssl.create_default_context()
    stream = trio.SSLStream(tcp, context, server_hostname=host)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__ or exc
        # A certificate problem is the server's TLS talking; anything else may be no TLS at all.
        hint = "" if isinstance(cause, ssl.SSLCertVerificationError) else " (does the server use TLS?)"
        raise ConnectionClosed(f"TLS with {host}:{port} failed: {cause}{hint}") from None
    return stream


async def _open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection; an IP address is dialled directly, a name through trio's happy eyeballs."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@asynccontextmanager
async def open_connection(
    host: str,
    port: int = DEFAULT_PORT,
    *,
    user: str | None = None,
    password: str | None = None,
    tls: bool | ssl.SSLContext = False,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (bounds the connecting only, not the operations)
    connect_timeout: float | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[ClientConnection]:
    """Connect to a trioftp server; use as `async with open_connection(host) as conn:`.

    Example:
        async with trioftp.open_connection("files.example", user="ann", password=pw, tls=True) as conn:
            await conn.download("report.pdf", "report.pdf")

    Args:
        host: name or address of the server.
        port: its port (8885 by default).
        user, password: credentials, for a server with users (sent after the
            HELLO exchange; use TLS so they do not cross the network in clear).
        tls: True for TLS with the system's trusted certificates, or an
            ssl.SSLContext (e.g. one that trusts a private CA).
        timeout: seconds the server has to let us in: TCP connect, TLS, HELLO and
            login together. Operations are not bounded by it: the server may
            legitimately take long to answer (a STAT hashes the whole file).
        connect_timeout: the former name of `timeout`; wins if given.
        settings: the limits this client advertises (window, frame size, digests).

    Yields:
        The ClientConnection; it says GOODBYE and closes when the block ends.

    Raises:
        ConnectionClosed: cannot connect, or the server refused us.
        AuthenticationFailed: wrong credentials, or the server needs some.
        TransferTimeout: connecting took longer than `timeout`.
        ProtocolViolation: the peer is not a trioftp v2 server.
    """
    if connect_timeout is not None:
        timeout = connect_timeout
    if not timeout > 0:  # also NaN
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    try:
        with trio.fail_after(timeout):
            stream = await _connect(host, port, tls)
            conn = ClientConnection(stream, settings or Settings(features=(FEATURE_AUTH,)))
            try:
                await conn._handshake(user, password)
            except BaseException:
                await conn.channel.aclose()
                raise
    except trio.TooSlowError:
        raise TransferTimeout(f"no answer from {host}:{port} within {timeout:g} s") from None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._reader)
            try:
                yield conn
            finally:
                await conn._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader never raises, so a group holds the caller's own exception:
        # hand it back as itself.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], trio.Cancelled):
            raise group.exceptions[0] from None
        raise
