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

import functools
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
from trioftp.client.streams import _ServerClosed, client_settings
from trioftp.client.tree import TreeConnection
from trioftp.client.upload import Uploads
from trioftp.config import DEFAULT_PORT, DEFAULT_TIMEOUT
from trioftp.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ProtocolViolation,
    TransferTimeout,
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
    Hello,
    Message,
)
from trioftp.transport.channel import Channel
from trioftp.transport.streams import ChannelClosed

T = TypeVar("T")

GREASE_CHANCE = 1 / 8  # of connections that send one GREASE frame after the HELLO exchange

# Servers this process found to take pipelined requests (spec 7, item 5): their HELLO listed
# "v2.1" and let clients in without AUTH. Keyed by where we connected and the digests we
# offered, that HELLO. The next connection there sends its HELLO and its first request in
# one write instead of waiting a round trip for the server's HELLO.
_Where = tuple[str, int, bool, tuple[str, ...]]
_PIPELINING: dict[_Where, Hello] = {}  # the last HELLO of each server that takes pipelining
_PIPELINING_MOST = 1024  # servers remembered; the table starts afresh when full


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
        settings = _with_our_features(settings or _default_settings())
        super().__init__(Channel(stream, Connection(Role.CLIENT, settings)))
        self.authorized: Authorized | None = None  # who the server says we are, after a login
        # After a pipelined start: the server's HELLO of last time (what server_hello and
        # digest_algorithm say until its new one comes), and where it is remembered.
        self._predicted_hello: Hello | None = None
        self._where: _Where | None = None
        self._nursery: trio.Nursery | None = None
        self._admitted: trio.Event | None = None  # set when a pipelined start's HELLO came, or the end

    @property
    def server_hello(self) -> Hello:
        """The server's HELLO: its limits, digests, features and agent string.

        On a connection that pipelined its start (to a server this process talked to
        before), until the server's HELLO arrives: the one it sent last time. The new
        one is checked against it (digest, version, logins) and the connection fails
        if they changed.

        Example:
            print(conn.server_hello.agent, conn.server_hello.max_streams)
        """
        hello = self.channel.machine.peer_hello or self._predicted_hello
        assert hello is not None  # open_connection returns after the handshake or a pipelined start
        return hello

    @property
    def digest_algorithm(self) -> str:
        """The digest algorithm agreed with the server (e.g. "blake3").

        Example:
            print(conn.digest_algorithm)  # "blake3", or "sha256" if only that is common
        """
        if self._predicted_hello is not None and self.channel.machine.peer_hello is None:
            # A PUT pipelined behind our HELLO carries its digest before the server has
            # chosen: the one it chose last time (its HELLO is checked against it).
            return self._predicted_hello.digests[0]
        return self.channel.machine.digest

    # ------------------------------------------------------------- lifecycle

    async def _close(self) -> None:
        """Close the socket.

        No GOODBYE first: either side may close at any time (spec 15), and a GOODBYE
        right before the close tells the server nothing the close does not. It cost a
        write and a scheduler pass per connection (bench/RESULTS.md, issue 13).
        """
        await self.channel.aclose()

    async def _handshake(self, user: str | None = None, password: str | None = None) -> None:
        """HELLO exchange, then AUTH if we have credentials."""
        await self.channel.send(_hello_of(self.channel.machine.settings))
        hello = await self._handshake_event(Hello)
        self._slots = trio.Semaphore(max(1, hello.max_streams))
        if FEATURE_V2_1 in hello.features and random.random() < GREASE_CHANCE:
            await self._send_grease()
        offers_auth = FEATURE_AUTH in hello.features
        if user is None:
            if offers_auth and FEATURE_ANONYMOUS not in hello.features:
                raise AuthenticationFailed("the server needs a user and password")
            return
        if not offers_auth:
            raise AuthenticationFailed("the server has no users: connect without a user and password")
        await self.channel.send(Auth(user=user, password=password or ""))
        self.authorized = await self._handshake_event(Authorized)

    async def _send_grease(self) -> None:
        # Now and then a frame of a reserved type, so a server that chokes on
        # unknown frames is found by its users' everyday traffic (spec 4.1).
        frame_type = random.choice(GREASE_FRAME_TYPES)
        with suppress(ChannelClosed):
            await self.channel.send_grease(frame_type, random.randbytes(random.randrange(16)))

    def _pipeline(self, where: _Where, last: Hello) -> None:
        """Start the handshake without waiting for it: our HELLO goes out with the first request.

        Until the server's HELLO arrives (the reader takes it) one stream may be open, as
        spec 7 allows; that HELLO then lifts the limit to the server's max_streams.
        """
        self._predicted_hello, self._where = last, where
        self._admitted = trio.Event()
        self.channel.queue(_hello_of(self.channel.machine.settings))

    def _raise_if_refused(self) -> None:
        """A pipelined start that ended before the server's HELLO: the server refused us (a
        connection limit, say), which is an error even if nothing was asked, as without pipelining."""
        if self._failure is not None and self.channel.machine.peer_hello is None:
            raise self._failure

    async def _reader(self) -> None:
        if self._predicted_hello is not None:
            # Our HELLO waits in the buffer for the first request (same scheduler pass);
            # without one it goes alone, so the server does not wait for it.
            with suppress(ChannelClosed):
                await self.channel.flush()
        await super()._reader()
        if self._admitted is not None:
            self._admitted.set()
            if self.channel.machine.peer_hello is None:
                # Closed before its HELLO: maybe no longer a v2.1 server (a v2.0 one closes on a
                # pipelined request). The next connection there waits for the HELLO again.
                _PIPELINING.pop(self._where, None)  # type: ignore[arg-type]

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Hello) and self._where is not None:  # only a pipelined start's
            self._pipelined_hello(message)
        super()._dispatch(message)

    def _pipelined_hello(self, hello: Hello) -> None:
        """The server's HELLO after a pipelined start: check it is still the server we knew."""
        where, last = self._where, self._predicted_hello
        assert where is not None and last is not None
        if _remember(where, hello) != last.digests[0]:
            raise _ServerClosed(
                "the server's HELLO is not what it said on the last connection (digest, users or "
                f"version changed: {list(hello.digests)}, {list(hello.features)}); connect again"
            )
        assert self._admitted is not None
        self._admitted.set()
        self._open_slots(max(1, hello.max_streams))
        if random.random() < GREASE_CHANCE and self._nursery is not None:
            self._nursery.start_soon(self._send_grease)

    def _open_slots(self, streams: int) -> None:
        """From the one stream allowed before the server's HELLO to the `streams` it allows."""
        early = self._slots
        held = 1 - early.value  # the pipelined request, if it still runs
        if streams - held >= 1 and not early.statistics().tasks_waiting:
            # A new semaphore, not streams - 1 releases of the old one (~10 us): the early
            # request gives its slot back to the old one, so `held` of them go unused.
            self._slots = trio.Semaphore(streams - held)
        else:
            for _ in range(streams - 1):
                early.release()

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


def _remember(where: _Where, hello: Hello) -> str | None:
    """Note whether the next connection to `where` may pipeline; return the digest it would expect."""
    features = hello.features
    anyone = FEATURE_AUTH not in features or FEATURE_ANONYMOUS in features
    if FEATURE_V2_1 not in features or not anyone:
        _PIPELINING.pop(where, None)
        return None
    if where not in _PIPELINING and len(_PIPELINING) >= _PIPELINING_MOST:
        _PIPELINING.clear()
    _PIPELINING[where] = hello
    return hello.digests[0]


@functools.cache
def _default_settings(*features: str) -> Settings:
    return client_settings(features=features)


@functools.lru_cache(maxsize=64)
def _with_our_features(settings: Settings) -> Settings:
    """`settings` listing what this client does: it reads every Entry kind, and follows v2.1's rules.

    Cached (Settings is frozen): a connection costs no new Settings, and its HELLO is the
    same object as the last one's (see _hello_of).
    """
    missing = tuple(f for f in (FEATURE_ENTRY_KINDS, FEATURE_V2_1) if f not in settings.features)
    return attrs.evolve(settings, features=(*settings.features, *missing)) if missing else settings


@functools.lru_cache(maxsize=64)
def _hello_of(settings: Settings) -> Hello:
    return settings.hello()


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


@functools.lru_cache(maxsize=256)
def _address_family(host: str) -> socket.AddressFamily | None:
    """The family of an IP address (parsed once per host: ~3 us a connection), None for a name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


async def _open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection; an IP address is dialled directly, a name through trio's happy eyeballs."""
    family = _address_family(host)
    if family is None:
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
        The ClientConnection; it closes when the block ends (no GOODBYE: spec 15).

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
    too_slow = f"no answer from {host}:{port} within {timeout:g} s"
    settings = settings or _default_settings(FEATURE_AUTH)
    where: _Where = (host, port, tls is not False, settings.digests)
    # Without credentials, to a server known to take it: pipelined (its HELLO is read by the reader).
    predicted = _PIPELINING.get(where) if user is None else None
    try:
        with trio.fail_after(timeout):
            stream = await _connect(host, port, tls)
            conn = ClientConnection(stream, settings)
            try:
                if predicted is None:
                    await conn._handshake(user, password)
                    _remember(where, conn.server_hello)
                else:
                    conn._pipeline(where, predicted)
            except BaseException:
                await conn.channel.aclose()
                raise
    except trio.TooSlowError:
        raise TransferTimeout(too_slow) from None
    try:
        async with trio.open_nursery() as nursery:
            conn._nursery = nursery
            nursery.start_soon(conn._reader)
            try:
                yield conn
                admitted = conn._admitted  # only a pipelined start can still be unanswered
                if admitted is not None:
                    if not admitted.is_set():  # nothing was asked: wait for the server's HELLO
                        try:
                            with trio.fail_after(timeout):
                                await admitted.wait()
                        except trio.TooSlowError:
                            raise TransferTimeout(too_slow) from None
                    conn._raise_if_refused()
            finally:
                await conn._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader never raises, so a group holds the caller's own exception:
        # hand it back as itself.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], trio.Cancelled):
            raise group.exceptions[0] from None
        raise
