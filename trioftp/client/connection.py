"""A client connection: many operations at once, each on its own stream.

    async with trioftp.open_connection("127.0.0.1") as conn:
        await conn.put("notes.txt", b"hello")
        data = await conn.get("notes.txt")

This module connects, greets (HELLO, login) and closes. The methods come from
one class per job: streams.Streams (a stream per operation, the reader task),
download.Downloads (get, download), upload.Uploads (put, upload),
operations.Operations (list, stat, status, delete, rename, mkdir) and
folders.Folders (upload_tree, download_tree, sync, remove_tree, which call
trioftp.client.tree).

Resource handling: the connection owns one reader task, in a nursery opened by
`__aenter__` and closed by `__aexit__`; operations run in the caller's task.
Every operation cancels its stream if the caller leaves it early (timeout,
exception), so the server stops sending.

Error handling: every failure is a TrioftpError subclass: RemoteError (with
the server's code), ChecksumMismatch, ProtocolViolation, ConnectionClosed.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import attrs
import trio

from trioftp.client.download import Downloads
from trioftp.client.folders import Folders
from trioftp.client.operations import Operations
from trioftp.client.streams import Progress as Progress  # re-exported from its former home
from trioftp.client.streams import client_settings
from trioftp.client.tree import TreeConnection
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
    Error,
    Goodbye,
    Hello,
)
from trioftp.transport.channel import Channel
from trioftp.transport.streams import ChannelClosed

T = TypeVar("T")

GREASE_CHANCE = 1 / 8  # of connections that send one GREASE frame after the HELLO exchange
DEFAULT_TIMEOUT = 30.0  # seconds a server has to let us in (connect, TLS, HELLO, login)


class ClientConnection(Downloads, Uploads, Operations, Folders):
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
        settings = settings or client_settings()
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


# Where mypy checks that the tree code's Protocol is met (Folders passes `self` to that code).
_IS_A_TREE_CONNECTION: type[TreeConnection] = ClientConnection


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
            conn = ClientConnection(stream, settings or client_settings(features=(FEATURE_AUTH,)))
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
