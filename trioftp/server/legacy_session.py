"""The legacy text protocol on the server: old clients keep working, unchanged.

Robust where the old server was not: every connection has its own state (the
old one shared a byte counter across clients), puts are stored atomically
(replace, not append), and a header may arrive split or with bytes behind it.
Legacy cannot carry a checksum or credentials; sessions are logged as legacy.

Resource handling: a session owns no file between commands. A put holds one
partial file under `.trioftp/partial/`, removed in `finally` unless the upload
was committed; a get holds one read fd, closed in `finally`.

Error handling: the legacy protocol has no error reply, so anything that goes
wrong ends the connection (as the old server did), with one warning line that
says why. The only answer that is not a close is `NO|0` for a get that cannot
be served; the connection stays usable after it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from trioftp.disk.digests import DEFAULT
from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.legacy_codec import (
    NOT_FOUND_REPLY,
    OK,
    SECOND_ACTIVE,
    Command,
    Header,
    LegacyError,
    complete_if_settled,
    found_reply,
    parse_header,
)
from trioftp.server.auth import NOBODY, Right
from trioftp.server.budget import BudgetTimeout, ByteBudget
from trioftp.server.mapping import Refusal, error_code
from trioftp.server.rate import RateFloor
from trioftp.server.shared import Shared
from trioftp.server.transfers import WRITE_BLOCK, TransferRecord, interruption
from trioftp.storage.interface import ReadHandle, StorageError, Upload
from trioftp.transport.streams import ChannelClosed, FileChanged, send_file_range
from trioftp.transport.writer import BlockWriter

log = logging.getLogger("trioftp.legacy")

RECEIVE_SIZE = 64 * 1024  # receive_some allocates this much per call; 64 KiB is its sweet spot
T = TypeVar("T")
SEND_STEP = 1024 * 1024  # a get's body goes out in steps of this much, each under legacy_timeout


def _upload_buffers(size: int, stream: trio.abc.Stream) -> int:
    """The bytes a put of `size` holds in memory while it is received (see `_receive_body`)."""
    if not isinstance(stream, trio.SocketStream):
        return min(size, WRITE_BLOCK + RECEIVE_SIZE)
    block = min(size, WRITE_BLOCK)
    return block * 2 if size > block else block


class LegacyClosed(Exception):
    """End the legacy connection; the message is the log line."""


class LegacyTooSlow(LegacyClosed):
    """The transfer fell below `min_rate`."""


def _interruption(exc: BaseException, *, draining: bool) -> tuple[str, str]:
    """The (outcome, reason) of a legacy transfer that `exc` ended."""
    # LegacyClosed: the client went away or fell silent mid-command; the connection ends either way.
    if isinstance(exc, LegacyTooSlow):
        return ErrorCode.TIMEOUT.name, f"failed: {exc}"  # as v2's min-rate drop is counted
    if isinstance(exc, LegacyClosed):
        return "connection_lost", f"failed: {exc}"
    # A legacy session is cancelled by the server's shutdown once the drain time is up.
    why = "interrupted: server shutting down (drain timeout passed)" if draining else "interrupted: cancelled"
    return interruption(exc, cancelled=("interrupted", why))


class LegacySession:
    """One legacy connection: headers, puts and gets one after another until EOF."""

    def __init__(self, shared: Shared, stream: trio.SocketStream, initial: bytes, peer: str) -> None:
        self.shared = shared
        self.config = shared.config
        # With users, a legacy client is the anonymous user: its home, its rights.
        self.user = shared.open_user if shared.users is None else (shared.users.anonymous or NOBODY)
        self.storage = shared.storage.scoped(self.user.home)
        self.stream = stream
        self.peer = peer
        self.address = peer.rpartition(":")[0]  # who shares the server's budgets with this connection
        self._buffer = bytearray(initial)
        self._eof = False
        self._draining = False
        self._idle_scope: trio.CancelScope | None = None
        # After NO|0 some old clients send `second_active` anyway; it is skipped.
        self._after_not_found = False
        self.bytes_received = len(initial)  # on the wire, headers included
        self.bytes_sent = 0

    async def run(self) -> None:
        log.info("%s legacy session (no checksum on the wire, no authentication)", self.peer)
        self.shared.metrics.legacy_session()
        try:
            while not self._draining:
                header = await self._next_header()
                if header is None:
                    return
                if header.command is Command.PUT:
                    await self._put(header)
                else:
                    await self._get(header)
        except (LegacyError, LegacyClosed) as exc:
            log.warning("%s legacy connection closed: %s", self.peer, exc)
        except ChannelClosed as exc:
            log.warning("%s legacy %s", self.peer, exc)

    async def drain(self) -> None:
        """Shutdown: finish the command in flight, then close."""
        self._draining = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    # ----------------------------------------------------------------- input

    async def _receive(self) -> None:
        """Append what the peer sends next to the buffer; at EOF set `_eof`."""
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ChannelClosed(f"connection lost: {exc or type(exc).__name__}", broken=True) from None
        if data:
            self._buffer += data
            self.bytes_received += len(data)
        else:
            self._eof = True

    async def _receive_within(self, what: str) -> None:
        """`_receive()`, or LegacyClosed if the peer stays silent for `legacy_timeout`."""
        try:
            with trio.fail_after(self.config.legacy_timeout):
                await self._receive()
        except trio.TooSlowError:
            raise LegacyClosed(f"silent for {self.config.legacy_timeout:g} s {what}") from None

    async def _next_header(self) -> Header | None:
        """Read one header; None when the client closed (or we drain) between commands."""
        if not self._buffer and not self._eof:
            try:
                with trio.CancelScope() as self._idle_scope, trio.fail_after(self.config.idle_timeout):
                    await self._receive()
            except trio.TooSlowError:
                raise LegacyClosed(f"idle for {self.config.idle_timeout:g} s between commands") from None
            finally:
                self._idle_scope = None
        if not self._buffer:
            return None
        if self._after_not_found:
            await self._skip_stray_second_active()
            if not self._buffer:
                return None if self._eof else await self._next_header()
        try:
            # One deadline for the whole header: a client dribbling it byte by byte gets no more.
            with trio.fail_after(self.config.legacy_timeout):
                return await self._parse_header()
        except trio.TooSlowError:
            raise LegacyClosed(
                f"no complete header within {self.config.legacy_timeout:g} s: {bytes(self._buffer[:40])!r}"
            ) from None

    async def _parse_header(self) -> Header:
        while True:
            parsed = parse_header(bytes(self._buffer), settled=self._eof)
            if parsed is None and complete_if_settled(bytes(self._buffer)):
                # The header has no terminator: the last field (a put's size, a
                # get's ignored third field) ends when the line stays quiet.
                with trio.move_on_after(self.config.legacy_settle):
                    await self._receive()
                    continue
                parsed = parse_header(bytes(self._buffer), settled=True)
            if parsed is not None:
                header, used = parsed
                del self._buffer[:used]
                return header
            if self._eof:
                raise LegacyClosed(f"closed in the middle of a header {bytes(self._buffer[:40])!r}")
            await self._receive()

    async def _skip_stray_second_active(self) -> None:
        self._after_not_found = False
        while SECOND_ACTIVE.startswith(bytes(self._buffer[: len(SECOND_ACTIVE)])):
            if len(self._buffer) >= len(SECOND_ACTIVE):
                del self._buffer[: len(SECOND_ACTIVE)]
                log.debug("%s skipped a second_active sent after NO|0", self.peer)
                return
            if self._eof:
                return
            await self._receive_within("in the middle of a command")

    # ------------------------------------------------------------------- put

    def _stored_name(self, header: Header) -> str:
        if not self.config.legacy_layout:
            return header.name
        folder = "upload" if header.command is Command.PUT else "download"
        return f"{folder}/{header.name}"

    async def _put(self, header: Header) -> None:
        size = header.size or 0
        name = self._stored_name(header)
        record = TransferRecord(
            peer=self.peer, operation="LEGACY-PUT", name=name, metrics=self.shared.metrics
        )
        try:
            if not self.user.may(Right.WRITE):
                raise Refusal(ErrorCode.PERMISSION_DENIED, "legacy clients may not upload here")
            upload: Upload = await trio.to_thread.run_sync(
                lambda: self.storage.begin_upload(name, size, algorithm=DEFAULT)
            )
        except (StorageError, Refusal) as exc:
            # The legacy protocol has no error reply: the old server closed too.
            code = error_code(exc)
            record.fail(code.name, f"refused: {code.name}: {exc}")
            record.log()
            raise LegacyClosed(f"put {name!r} refused: {exc}") from None
        try:
            # The same budget as v2 uploads: the body is gathered in two blocks of
            # WRITE_BLOCK (one filled while the other is written), or what one receive
            # adds to a block (TLS). OK is the legacy READY: sent once there is room.
            need = _upload_buffers(size, self.stream)
            async with self._reserved(self.shared.upload_budget, need, "upload_memory"):
                await self._send(OK)
                await self._receive_body(upload, size, record)
            facts = await trio.to_thread.run_sync(upload.commit, size, None)
            record.digest = facts.digest
        except StorageError as exc:
            code = error_code(exc)
            record.fail(code.name, f"failed: {code.name}: {exc}")
            raise LegacyClosed(f"put {name!r} failed: {exc}") from None
        except BaseException as exc:
            record.fail(*_interruption(exc, draining=self._draining))
            raise
        finally:
            upload.abort(keep=False)  # a no-op once committed
            record.log()

    @asynccontextmanager
    async def _reserved(self, budget: ByteBudget, amount: int, setting: str) -> AsyncIterator[None]:
        """Reserve buffers from a server-wide budget; past min_rate_window, close (legacy has no BUSY)."""
        patience = self.config.min_rate_window
        try:
            amount = await budget.acquire(amount, group=self.address, patience=patience)
        except BudgetTimeout:
            why = f"no memory free within {patience:g} s ({setting} in use)"
            raise LegacyClosed(why) from None
        try:
            yield
        finally:
            budget.release(amount, group=self.address)

    async def _receive_body(self, upload: Upload, size: int, record: TransferRecord) -> None:
        """Receive the body straight into two blocks; a writer thread writes and hashes one
        while the socket fills the other.

        The old way (receive_some, then copies into a buffer, a list of bytes and
        one thread call per MiB that the receiving waited for) cost the server
        1.4 s of CPU per 512 MiB against raw's 0.3, and half raw's speed
        (bench/RESULTS.md, issue 13). TLS keeps that way (`_receive_body_through`).
        """
        if not isinstance(self.stream, trio.SocketStream) or size == 0:
            await self._receive_body_through(upload, size, record)
            return
        sock = self.stream.socket
        block_size = min(size, WRITE_BLOCK)
        free = [bytearray(block_size) for _ in range(_upload_buffers(size, self.stream) // block_size)]
        returned = trio.Event()

        def written(block: memoryview) -> None:
            free.append(block.obj)  # type: ignore[arg-type]  # one of ours: a bytearray
            returned.set()

        def stopped() -> None:
            returned.set()

        writer = BlockWriter(lambda block: upload.write((block,)), on_written=written, on_stopped=stopped)
        floor = RateFloor(self.config.min_rate, self.config.min_rate_window, trio.current_time())
        received = 0
        try:
            while received < size:
                if not free:  # both blocks wait for the disk: that time is the server's
                    started = trio.current_time()
                    while not free:
                        if not writer.running:
                            await writer.finish()  # raises what the write raised
                        await returned.wait()
                        returned = trio.Event()
                    floor.pause(trio.current_time() - started)
                block = free.pop()
                view = memoryview(block)[: min(block_size, size - received)]
                fill = 0
                while fill < len(view):
                    if self._buffer:  # what came with the header
                        n = min(len(self._buffer), len(view) - fill)
                        view[fill : fill + n] = self._buffer[:n]
                        del self._buffer[:n]
                    else:
                        n = await self._receive_into(sock, view[fill:], received + fill, size)
                        slow = floor.too_slow(trio.current_time(), received + fill + n)
                        if slow is not None:
                            raise LegacyTooSlow(f"upload {slow}, after {received + fill + n} of {size} bytes")
                    fill += n
                    record.bytes = received + fill
                received += fill
                writer.submit(view)
            await writer.finish()
        finally:
            await writer.stop()

    async def _receive_into(
        self, sock: trio.socket.SocketType, view: memoryview, done: int, size: int
    ) -> int:
        """One read of body bytes into `view`; LegacyClosed at EOF or after legacy_timeout of silence."""
        try:
            with trio.fail_after(self.config.legacy_timeout):
                n = await sock.recv_into(view)
        except trio.TooSlowError:
            raise LegacyClosed(
                f"silent for {self.config.legacy_timeout:g} s mid-upload after {done} of {size} bytes"
            ) from None
        except OSError as exc:
            raise ChannelClosed(f"connection lost: {exc}", broken=True) from None
        if not n:
            self._eof = True
            raise LegacyClosed(f"client disconnected mid-upload after {done} of {size} bytes")
        self.bytes_received += n
        return n

    async def _receive_body_through(self, upload: Upload, size: int, record: TransferRecord) -> None:
        received = 0
        pending: list[bytes] = []
        pending_bytes = 0
        floor = RateFloor(self.config.min_rate, self.config.min_rate_window, trio.current_time())
        while received < size:
            if not self._buffer:
                await self._receive_within(f"mid-upload after {received} of {size} bytes")
                if self._eof:
                    raise LegacyClosed(f"client disconnected mid-upload after {received} of {size} bytes")
                slow = floor.too_slow(trio.current_time(), received + len(self._buffer))
                if slow is not None:
                    raise LegacyTooSlow(f"upload {slow}, after {received} of {size} bytes")
            take = min(len(self._buffer), size - received)
            pending.append(bytes(self._buffer[:take]))
            del self._buffer[:take]
            received += take
            record.bytes = received
            pending_bytes += take
            if pending_bytes >= WRITE_BLOCK or received == size:
                started = trio.current_time()
                await trio.to_thread.run_sync(upload.write, pending)
                floor.pause(trio.current_time() - started)
                pending, pending_bytes = [], 0

    # ------------------------------------------------------------------- get

    async def _get(self, header: Header) -> None:
        name = self._stored_name(header)
        record = TransferRecord(
            peer=self.peer, operation="LEGACY-GET", name=name, metrics=self.shared.metrics
        )
        try:
            if not self.user.may(Right.READ):
                raise Refusal(ErrorCode.PERMISSION_DENIED, "legacy clients may not download here")
            handle = await self._store_work(self.storage.open_read, name)
        except (StorageError, Refusal) as exc:
            code = error_code(exc)
            record.fail(code.name, f"{code.name}: answered NO|0")
            record.log()
            await self._send(NOT_FOUND_REPLY)
            self._after_not_found = True
            return
        try:
            size = handle.facts.size
            await self._send(found_reply(size))
            await self._expect_second_active()
            await self._send_file(handle, size, record)
        except (FileChanged, StorageError):
            record.fail("BUSY", "failed: the file shrank while it was sent")
            raise LegacyClosed(f"{name!r} shrank while it was sent; the client got too few bytes") from None
        except BaseException as exc:
            record.fail(*_interruption(exc, draining=self._draining))
            raise
        finally:
            handle.close()
            record.log()

    async def _expect_second_active(self) -> None:
        while len(self._buffer) < len(SECOND_ACTIVE) and SECOND_ACTIVE.startswith(bytes(self._buffer)):
            if self._eof:
                raise LegacyClosed("closed before sending second_active")
            await self._receive_within("instead of sending second_active")
        if bytes(self._buffer[: len(SECOND_ACTIVE)]) != SECOND_ACTIVE:
            raise LegacyClosed(f"expected second_active, got {bytes(self._buffer[:20])!r}")
        del self._buffer[: len(SECOND_ACTIVE)]

    async def _store_work(self, function: Callable[..., T], *args: Any) -> T:
        if self.storage.quick:  # see operations._store_work
            return function(*args)
        return await trio.to_thread.run_sync(function, *args)

    async def _send_file(self, handle: ReadHandle, size: int, record: TransferRecord) -> None:
        fd = handle.fileno()
        offset = 0
        while offset < size:
            step = min(SEND_STEP, size - offset)
            if fd is not None:
                await self._send_step(send_file_range(self.stream, fd, offset, step), offset, size)
            else:  # a store without a descriptor (S3): each step is read into memory first
                async with self._reserved(self.shared.send_budget, step, "send_memory"):
                    piece = await trio.to_thread.run_sync(handle.read, offset, step)
                    await self._send_step(self.stream.send_all(piece), offset, size)
            self.bytes_sent += step
            offset += step
            record.bytes = offset  # as it goes, so a cut get logs and counts what it sent

    async def _send_step(self, sending: Awaitable[None], offset: int, size: int) -> None:
        try:
            with trio.fail_after(self.config.legacy_timeout):
                await sending
        except trio.TooSlowError:
            raise LegacyClosed(
                f"client read nothing for {self.config.legacy_timeout:g} s, {offset} of {size} bytes sent"
            ) from None

    async def _send(self, data: bytes) -> None:
        try:
            with trio.fail_after(self.config.legacy_timeout):
                await self.stream.send_all(data)
            self.bytes_sent += len(data)
        except trio.TooSlowError:
            raise LegacyClosed(f"client read nothing for {self.config.legacy_timeout:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ChannelClosed(f"connection lost: {exc or type(exc).__name__}", broken=True) from None
