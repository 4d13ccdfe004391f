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

import errno
import ipaddress
import os
import random
import socket
import ssl
import stat as stat_module
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from trioftp.client import targets, tree
from trioftp.client.tree import DEFAULT_CONCURRENCY, Direction, Plan, TreeCallback
from trioftp.config import DEFAULT_PORT
from trioftp.disk.digests import Hasher, hash_range, new_hasher
from trioftp.disk.syscalls import sync_filesystem
from trioftp.disk.writeback import EarlyWriteback
from trioftp.errors import (
    AuthenticationFailed,
    BadName,
    ChecksumMismatch,
    ConnectionClosed,
    LocalFileChanged,
    ProtocolViolation,
    RemoteChecksumMismatch,
    RemoteError,
    TransferTimeout,
    TrioftpError,
    connect_reason,
    remote_error,
)
from trioftp.protocol import (
    NEED_DATA,
    PEER_CLOSED,
    Connection,
    ConnectionState,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    Settings,
    names,
)
from trioftp.protocol.frames import GREASE_FRAME_TYPES
from trioftp.protocol.messages import (
    FEATURE_ANONYMOUS,
    FEATURE_AUTH,
    FEATURE_ENTRY_KINDS,
    FEATURE_V2_1,
    Auth,
    Authorized,
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Entry,
    Error,
    FileInfo,
    Get,
    Goodbye,
    Hello,
    List,
    Listing,
    Message,
    Mkdir,
    Put,
    Ready,
    Rename,
    Stat,
    Status,
    StatusInfo,
    Window,
)
from trioftp.protocol.state import StreamState
from trioftp.transport.channel import Channel, ChannelClosed, FileChanged
from trioftp.transport.concurrency import both
from trioftp.transport.inbox import StreamInbox
from trioftp.transport.sink import BlockPool, BlockSink, next_piece, next_piece_or_news
from trioftp.transport.writer import SinkWriter

T = TypeVar("T")

Progress = Callable[[int, int], None]
"""Called as progress(bytes_done, bytes_total) while a transfer runs."""

WRITE_BLOCK = 1024 * 1024
GREASE_CHANCE = 1 / 8  # of connections that send one GREASE frame after the HELLO exchange
DEFAULT_TIMEOUT = 30.0  # seconds a server has to let us in (connect, TLS, HELLO, login)
# Blocks kept between downloads of this process (a server drops its blocks instead:
# its memory should go back once a burst of uploads is over).
_RECEIVE_BLOCKS = BlockPool(WRITE_BLOCK, max_blocks=8)


class ClientConnection:
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
        self.channel = Channel(stream, Connection(Role.CLIENT, settings))
        self._inboxes: dict[int, StreamInbox] = {}
        self._failure: TrioftpError | None = None
        self._server_goodbye = False
        self._slots = trio.Semaphore(1)
        self.authorized: Authorized | None = None  # who the server says we are, after a login

    @property
    def digest_algorithm(self) -> str:
        """The digest algorithm agreed with the server (e.g. "blake3").

        Example:
            print(conn.digest_algorithm)  # "blake3", or "sha256" if only that is common
        """
        return self.channel.machine.digest

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

    async def _reader(self) -> None:
        failure: TrioftpError
        try:
            while True:
                for event in await self.channel.receive_events():
                    if event is PEER_CLOSED:
                        raise ChannelClosed("the server closed the connection", broken=True)
                    assert event is not NEED_DATA
                    self._dispatch(event)
        except RemoteProtocolError as exc:
            if self.channel.eof_received:  # cut mid-frame: the transport ended, not the protocol
                failure = ConnectionClosed(f"the connection was cut: {exc}")
            else:
                failure = ProtocolViolation(f"the server broke the protocol: {exc}")
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    with suppress(Exception):
                        await self.channel.send(Error(code=exc.error_code, message=str(exc)[:1000]))
        except ChannelClosed as exc:
            failure = ConnectionClosed(str(exc))
        except _ServerClosed as exc:
            failure = ConnectionClosed(str(exc))
        self._failure = failure
        for inbox in list(self._inboxes.values()):
            inbox.fail(failure)

    def _dispatch(self, message: Message) -> None:
        if message.stream_id == 0:
            if isinstance(message, Error):
                raise _ServerClosed(
                    f"the server closed the connection: {message.code.name}: {message.message}"
                )
            if isinstance(message, Goodbye):
                self._server_goodbye = True
            return
        inbox = self._inboxes.get(message.stream_id)
        if inbox is None:
            return
        if isinstance(message, Window):
            inbox.notify()
        else:
            inbox.deliver(message)

    # ------------------------------------------------------ stream plumbing

    @asynccontextmanager
    async def _stream(self, make: Callable[[int], Message]) -> AsyncIterator[StreamInbox]:
        if self._failure is not None:
            raise self._failure
        if self._server_goodbye:
            raise ConnectionClosed("the server is shutting down and accepts no new operations")
        async with self._slots:
            inboxes = self._inboxes
            request = await self._send(
                self.channel.send_request(_checking_names(make), lambda sid: _register(inboxes, sid))
            )
            inbox = self._inboxes[request.stream_id]
            try:
                yield inbox
            finally:
                del self._inboxes[request.stream_id]
                if self.channel.machine.stream_state(request.stream_id) is not StreamState.CLOSED:
                    with trio.move_on_after(1.0) as scope:
                        scope.shield = True
                        # LocalProtocolError: the machine already failed with the connection.
                        with suppress(ChannelClosed, TrioftpError, LocalProtocolError):
                            await self.channel.send_if_open(
                                Cancel(message="client gave up", stream_id=request.stream_id)
                            )

    async def _send(self, sending: Awaitable[Any]) -> Any:
        try:
            return await sending
        except ChannelClosed as exc:
            raise self._failure or ConnectionClosed(str(exc)) from None
        except LocalProtocolError as exc:
            if self.channel.machine.state not in (ConnectionState.CLOSED, ConnectionState.ERROR):
                raise  # a bug of ours, not a connection that ended
            raise self._failure or ConnectionClosed(str(exc)) from None

    @staticmethod
    async def _expect(inbox: StreamInbox, *types: type[Any]) -> Any:
        message = await inbox.get()
        if isinstance(message, Error):
            raise remote_error(message.code, message.message)
        if not isinstance(message, types):
            raise ProtocolViolation(
                f"expected {' or '.join(t.__name__ for t in types)}, got {type(message).__name__}"
            )
        return message

    async def _wait_credit(self, inbox: StreamInbox) -> int:
        """Wait until the server lets us send on this stream; raise if it answered ERROR."""
        while True:
            if inbox.pending:
                # While we send, the server speaks on this stream only to refuse.
                unexpected = await inbox.get()
                if isinstance(unexpected, Error):
                    raise remote_error(unexpected.code, unexpected.message)
                raise ProtocolViolation(f"unexpected {type(unexpected).__name__} during an upload")
            credit = self.channel.machine.send_credit(inbox.stream_id)
            if credit:
                return credit
            await inbox.wait_change()

    # ------------------------------------------------------------- downloads

    async def get(self, name: str, *, progress: Progress | None = None) -> bytes:
        """Download a file into memory; its digest is checked before it is returned.

        Args:
            name: the remote file, a '/'-separated path under the server's root.
            progress: called as progress(bytes_received, size).

        Returns:
            The file's bytes.

        Raises:
            NotFound: no such file.
            ChecksumMismatch: the bytes do not match the server's digest.
            ConnectionClosed, PermissionDenied, ...: see trioftp.errors.

        Example:
            data = await conn.get("reports/2026.csv")
        """
        chunks: list[bytes] = []

        async def keep(block: bytes | memoryview, hasher: Hasher) -> None:
            hasher.update(block)
            chunks.append(bytes(block))  # the block buffer is reused

        async with self._stream(lambda sid: Get(name=name, stream_id=sid)) as inbox:
            info: FileInfo = await self._expect(inbox, FileInfo)
            hasher = new_hasher(self.digest_algorithm)
            await self._receive_body(inbox, info, 0, hasher, keep, progress, block=WRITE_BLOCK)
        return b"".join(chunks)

    async def download(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        resume: bool = True,
        progress: Progress | None = None,
        fsync: bool = False,
    ) -> FileInfo:
        """Download a file to `path`, verified, resuming a partial download left by a cut connection.

        Bytes go to `path + ".trioftp-part"` and are renamed to `path` only once
        size and digest match. As cp, scp and curl do, the file is left to the
        kernel to write back: `fsync=True` makes it durable before this returns.
        If the resumed prefix turns out not to match (the remote file changed),
        the download starts over once from the beginning.
        A symlink is followed: the file it leads to is replaced. A pipe, terminal
        or device (a FIFO, /dev/stdout, /dev/null) is written in place as the
        bytes arrive, with no resume; the digest is still checked at the end,
        but what was written by then has reached the reader.

        Args:
            name: the remote file.
            path: the local file to write (its folder must exist).
            resume: continue from a `.trioftp-part` file left by an earlier try.
            progress: called as progress(bytes_received, size).
            fsync: fsync the file before it is renamed into place.

        Returns:
            The remote file's facts (size, mtime, digest).

        Raises:
            NotFound: no such remote file.
            ChecksumMismatch: the bytes do not match the server's digest; `path` is untouched.
            OSError: the local file cannot be written.
            ConnectionClosed, ...: see trioftp.errors.

        Example:
            await conn.download("big.iso", "/tmp/big.iso", progress=print)
        """
        target = Path(path)
        if targets.writes_in_place(target):
            return await self._download_in_place(name, target, progress=progress)
        target, partial = targets.file_and_partial(target)
        try:
            return await self._download_once(
                name, target, partial, resume=resume, progress=progress, fsync=fsync
            )
        except ChecksumMismatch:
            if not resume:
                raise
            return await self._download_once(
                name, target, partial, resume=False, progress=progress, fsync=fsync
            )

    async def _download_once(
        self, name: str, target: Path, partial: Path, *, resume: bool, progress: Progress | None, fsync: bool
    ) -> FileInfo:
        fd = targets.open_partial(partial, target)
        keep_partial = True
        try:
            held = os.fstat(fd).st_size if resume else 0
            hasher = new_hasher(self.digest_algorithm)
            if held:
                await trio.to_thread.run_sync(hash_range, fd, 0, held, hasher)
            else:
                os.ftruncate(fd, 0)
            async with self._stream(lambda sid: Get(name=name, offset=held, stream_id=sid)) as inbox:
                try:
                    info: FileInfo = await self._expect(inbox, FileInfo)
                except RemoteError as exc:
                    if held and exc.code is ErrorCode.BAD_REQUEST:  # offset past the end: a stale partial
                        keep_partial = False
                        raise ChecksumMismatch(
                            f"{name!r} is now shorter than the {held} bytes held"
                        ) from None
                    raise
                position = held
                writeback = EarlyWriteback(fd, held)

                def write(block: memoryview) -> None:  # on the writer thread, block after block
                    nonlocal position
                    try:
                        position = _write_and_hash(fd, block, position, hasher, writeback)
                    except OSError as exc:  # a full disk, say: name the partial, which keeps what came
                        raise OSError(exc.errno, exc.strerror, str(partial)) from None

                try:
                    digest = await self._receive_body(
                        inbox, info, held, hasher, _unused_write, progress, block=WRITE_BLOCK, on_thread=write
                    )
                except ChecksumMismatch:
                    keep_partial = False
                    raise
            try:
                if fsync:
                    await trio.to_thread.run_sync(os.fsync, fd)
            except OSError as exc:  # a delayed allocation can fail only here
                raise OSError(exc.errno, exc.strerror, str(partial)) from None
            if info.mtime_ns:
                os.utime(fd, ns=(info.mtime_ns, info.mtime_ns))
            os.replace(partial, target)
            keep_partial = True  # it is the target now
            return attrs.evolve(info, digest=digest)  # FILE_INFO may not have known it yet
        finally:
            held_nothing = os.fstat(fd).st_size == 0
            os.close(fd)
            if not keep_partial or held_nothing:  # an empty partial is nothing to resume
                with suppress(FileNotFoundError):
                    os.unlink(partial)

    async def _download_in_place(self, name: str, target: Path, *, progress: Progress | None) -> FileInfo:
        writer = await targets.InPlaceWriter.open(target)
        try:
            async with self._stream(lambda sid: Get(name=name, stream_id=sid)) as inbox:
                info: FileInfo = await self._expect(inbox, FileInfo)

                async def write(block: bytes | memoryview, hasher: Hasher) -> None:
                    hasher.update(block)
                    await writer.write(block)

                hasher = new_hasher(self.digest_algorithm)
                digest = await self._receive_body(inbox, info, 0, hasher, write, progress, block=WRITE_BLOCK)
        finally:
            await writer.aclose()
        return attrs.evolve(info, digest=digest)

    async def _receive_body(
        self,
        inbox: StreamInbox,
        info: FileInfo,
        offset: int,
        hasher: Hasher,
        write: Callable[[bytes | memoryview, Hasher], Awaitable[None]],
        progress: Progress | None,
        *,
        block: int,
        on_thread: Callable[[memoryview], object] | None = None,
    ) -> bytes:
        """Receive DATA up to END and check it; return the verified digest.

        The payload is read from the socket straight into blocks of a sink
        (trioftp.transport.sink): `write` gets each block (a view of a reused buffer).
        With `on_thread`, blocks go instead to that blocking function, called on one
        writer thread block after block (trioftp.transport.writer), and each block is
        acknowledged once written.
        """
        if offset > info.size:
            raise ChecksumMismatch(
                f"{info.name!r} is shorter ({info.size}) than what we already hold ({offset})"
            )
        received = written = offset
        # The server gets more credit only once half our window is consumed:
        # a block larger than that would stall both sides.
        block = min(block, max(1, self.channel.machine.settings.initial_window // 2))
        block = min(block, max(1, info.size - offset))  # a small file gets a small block
        sink = BlockSink(block, inbox.notify, limit=info.size - offset, pool=_RECEIVE_BLOCKS)
        writer = SinkWriter(sink, inbox, on_thread, size=info.size - offset) if on_thread else None
        self.channel.add_sink(inbox.stream_id, sink)
        try:
            while True:
                if writer is not None:
                    if writer.unacknowledged:
                        done = writer.take()
                        written += done
                        await self._send(self.channel.acknowledge(inbox.stream_id, done))
                        if progress is not None:
                            progress(written, info.size)
                    piece = await next_piece_or_news(inbox, sink, writer.news)
                    if piece is None:
                        continue
                else:
                    piece = await next_piece(inbox, sink)
                if isinstance(piece, memoryview | Data):
                    payload = piece if isinstance(piece, memoryview) else piece.payload
                    received += len(payload)
                    if received > info.size:
                        raise ProtocolViolation(
                            f"the server sent more than the {info.size} bytes it announced"
                        )
                    if not payload:
                        continue
                    if writer is not None:
                        writer.submit(memoryview(payload))  # acknowledged and reported once written
                        continue
                    try:
                        await write(payload, hasher)
                    finally:
                        if isinstance(piece, memoryview):
                            sink.release(piece)
                    await self._send(self.channel.acknowledge(inbox.stream_id, len(payload)))
                    if progress is not None:
                        progress(received, info.size)
                    continue
                if isinstance(piece, Error):
                    raise remote_error(piece.code, piece.message)
                if not isinstance(piece, End):
                    raise ProtocolViolation(f"expected Data or End, got {type(piece).__name__}")
                message = piece
                break
            if writer is not None:
                await writer.finish()
        finally:
            if writer is not None:
                await writer.stop()
            self.channel.remove_sink(inbox.stream_id)
        if progress is not None:
            progress(received, info.size)
        if message.size != info.size or received != info.size:
            raise ChecksumMismatch(
                f"{info.name!r}: got {received} bytes, the server announced {info.size}"
                f" and ended at {message.size}"
            )
        if hasher.digest() != message.digest or (info.digest is not None and info.digest != message.digest):
            raise ChecksumMismatch(f"{info.name!r}: the bytes received do not match the server's digest")
        return message.digest

    # --------------------------------------------------------------- uploads

    async def put(
        self, name: str, data: bytes, *, mtime_ns: int | None = None, progress: Progress | None = None
    ) -> FileInfo:
        """Upload bytes as a file; the server stores it only if size and digest check out.

        The file replaces any file of that name atomically; missing folders are created.

        Args:
            name: the remote file.
            data: its bytes.
            mtime_ns: the modification time to give it (ns since the epoch); None: now.
            progress: called as progress(bytes_sent, size).

        Returns:
            The stored file's facts (size, mtime, digest).

        Raises:
            RemoteChecksumMismatch: the server received other bytes; it kept nothing.
            PermissionDenied, BadName, ConnectionClosed, ...: see trioftp.errors.

        Example:
            await conn.put("notes/today.txt", b"hello")
        """
        hasher = new_hasher(self.digest_algorithm)
        if len(data) > WRITE_BLOCK:
            await trio.to_thread.run_sync(hasher.update, data)
        else:
            hasher.update(data)
        digest = hasher.digest()
        size = len(data)
        view = memoryview(data)
        make = lambda sid: Put(name=name, size=size, digest=digest, mtime_ns=mtime_ns, stream_id=sid)  # noqa: E731
        async with self._stream(make) as inbox:
            answer = await self._expect(inbox, Ready, FileInfo)
            if isinstance(answer, FileInfo):
                return answer  # an identical file is already there
            position = answer.offset
            while position < size:
                credit = await self._wait_credit(inbox)
                count = min(credit, size - position)
                await self._send(self.channel.send_data(inbox.stream_id, view[position : position + count]))
                position += count
                if progress is not None:
                    progress(position, size)
            await self._send(
                self.channel.send_if_open(End(size=size, digest=digest, stream_id=inbox.stream_id))
            )
            info: FileInfo = await self._expect(inbox, FileInfo)
            return info

    async def upload(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        resume: bool = True,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Upload a local file (by os.sendfile), resuming a partial upload the server kept.

        The file is hashed on a worker thread while it is sent, so it is read
        once for the digest and sent zero-copy. Its mtime goes with it.

        If the server resumed from a partial that turns out not to be a prefix
        of this file (another file of the same name and size was cut), the
        upload starts over once from the beginning.

        Args:
            path: the local file.
            name: the remote name; None: the local file's own name, at the root.
            resume: let the server continue a partial upload it kept.
            progress: called as progress(bytes_sent, size).

        Returns:
            The stored file's facts (size, mtime, digest).

        Raises:
            IsADirectoryError, OSError: `path` is a folder or cannot be read.
            LocalFileChanged: the local file changed while it was sent; nothing was stored.
            RemoteChecksumMismatch, PermissionDenied, ConnectionClosed, ...: see trioftp.errors.

        Example:
            await conn.upload("/tmp/big.iso", "isos/big.iso", progress=print)
        """
        local = Path(path)
        remote = name if name is not None else local.name
        try:
            return await self._upload_once(local, remote, resume=resume, progress=progress)
        except _StalePartial:
            return await self._upload_once(local, remote, resume=False, progress=progress)

    async def _upload_once(
        self, local: Path, remote: str, *, resume: bool, progress: Progress | None
    ) -> FileInfo:
        # O_NONBLOCK: opening a FIFO would otherwise wait, on the event loop,
        # for a writer; it is refused as not a regular file right after.
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stat_module.S_ISDIR(st.st_mode):  # os.open reads folders too; sendfile cannot
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(local))
            if not stat_module.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(local))
            size = st.st_size
            make = lambda sid: Put(  # noqa: E731
                name=remote, size=size, resume=resume, mtime_ns=st.st_mtime_ns, stream_id=sid
            )
            async with self._stream(make) as inbox:
                answer = await self._expect(inbox, Ready, FileInfo)
                if isinstance(answer, FileInfo):
                    return answer
                hasher = new_hasher(self.digest_algorithm)
                shrank = LocalFileChanged(f"{str(local)!r} shrank while being uploaded; nothing was stored")

                async def send_body() -> None:
                    position = answer.offset
                    while position < size:
                        credit = await self._wait_credit(inbox)
                        count = min(credit, size - position)
                        try:
                            sent = await self._send(
                                self.channel.send_file_data(inbox.stream_id, fd, position, count)
                            )
                        except FileChanged:
                            raise shrank from None
                        if not sent:
                            await self._wait_credit(inbox)  # raises the server's ERROR
                        position += count
                        if progress is not None:
                            progress(position, size)

                def hash_all() -> bool:
                    try:
                        hash_range(fd, 0, size, hasher)
                    except EOFError:
                        return False
                    return True

                _, whole = await both(send_body, lambda: trio.to_thread.run_sync(hash_all))
                if not whole:
                    raise shrank
                if _changed(os.fstat(fd), st):  # written to while we read it: what we sent may be torn
                    raise LocalFileChanged(f"{str(local)!r} changed while being uploaded; nothing was stored")
                digest = hasher.digest()
                await self._send(
                    self.channel.send_if_open(End(size=size, digest=digest, stream_id=inbox.stream_id))
                )
                try:
                    info: FileInfo = await self._expect(inbox, FileInfo)
                except RemoteChecksumMismatch:
                    if answer.offset:  # the server's part was not ours: it has discarded it
                        raise _StalePartial from None
                    raise
                return info
        finally:
            os.close(fd)

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
        fsync: bool = False,
    ) -> Plan:
        """Download every file under a remote folder, skipping files already identical here.

        A download cut midway resumes from its `.trioftp-part` file on the next run.
        With `fsync`, the local file system is synced once at the end (syncfs), also
        after a failure, so what was received is durable; no fsync per file.

        Args:
            remote: the remote folder ("" is the root).
            local: the local folder to fill; created as needed.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.
            fsync: sync the local file system once at the end (see above).

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
        try:
            return await tree.download_tree(
                self, remote, local, concurrency=concurrency, progress=progress, rules=rules
            )
        finally:
            if fsync:
                await trio.to_thread.run_sync(sync_filesystem, local, True)

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


def _changed(now: os.stat_result, before: os.stat_result) -> bool:
    return (now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ctime_ns,
    )


class _ServerClosed(Exception):
    pass


class _StalePartial(Exception):
    """A resumed upload failed its digest check: the server's partial was another file's."""


def _checking_names(make: Callable[[int], Message]) -> Callable[[int], Message]:
    """`make`, raising trioftp.BadName (not the codec's ValueError) for a name the protocol refuses."""

    def checked(stream_id: int) -> Message:
        try:
            return make(stream_id)
        except names.BadName as exc:
            raise BadName(f"bad name: {exc}") from None

    return checked


def _register(inboxes: dict[int, StreamInbox], stream_id: int) -> None:
    inboxes[stream_id] = StreamInbox(stream_id)


async def _unused_write(_block: bytes | memoryview, _hasher: Hasher) -> None:
    raise AssertionError("blocks go to the writer thread")


def _write_and_hash(
    fd: int, block: bytes | memoryview, position: int, hasher: Hasher, writeback: EarlyWriteback
) -> int:
    view = memoryview(block)
    while view:
        n = os.pwrite(fd, view, position)
        position += n
        view = view[n:]
    hasher.update(block)
    writeback.wrote_up_to(position)
    return position


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
