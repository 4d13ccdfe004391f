"""The legacy text protocol on the server: old clients keep working, unchanged.

Robust where the old server was not: every connection has its own state (the
old one shared a byte counter across clients), puts are stored atomically
(replace, not append), and a header may arrive split or with bytes behind it.
Legacy cannot carry a checksum or credentials; sessions are logged as legacy.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import trio

from trioftp.channel import ChannelClosed, send_file_range
from trioftp.digests import DEFAULT
from trioftp.protocol.legacy import (
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
from trioftp.server.operations import WRITE_BLOCK, TransferRecord
from trioftp.storage import StorageError, Upload

if TYPE_CHECKING:
    from trioftp.server import Server

log = logging.getLogger("trioftp.legacy")

RECEIVE_SIZE = 64 * 1024  # receive_some allocates this much per call; 64 KiB is its sweet spot


class LegacyClosed(Exception):
    """End the legacy connection; the message is the log line."""


class LegacySession:
    def __init__(self, server: Server, stream: trio.SocketStream, initial: bytes, peer: str) -> None:
        self.server = server
        self.config = server.config
        self.storage = server.storage
        self.stream = stream
        self.peer = peer
        self._buffer = bytearray(initial)
        self._eof = False
        self._draining = False
        self._idle_scope: trio.CancelScope | None = None

    async def run(self) -> None:
        log.info("%s legacy session (no checksum on the wire, no authentication)", self.peer)
        try:
            while not self._draining:
                header = await self._next_header()
                if header is None:
                    return
                if header.command is Command.PUT:
                    await self._put(header)
                else:
                    await self._get(header)
        except LegacyError as exc:
            log.warning("%s legacy connection closed: %s", self.peer, exc)
        except LegacyClosed as exc:
            log.warning("%s legacy connection closed: %s", self.peer, exc)
        except trio.TooSlowError:
            log.warning("%s legacy connection closed: silent for %g s", self.peer, self.config.legacy_timeout)
        except ChannelClosed as exc:
            log.info("%s legacy connection lost: %s", self.peer, exc)

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
            raise ChannelClosed(f"connection lost: {exc}", broken=True) from None
        if data:
            self._buffer += data
        else:
            self._eof = True

    async def _next_header(self) -> Header | None:
        """Read one header; None when the client closed cleanly between commands."""
        if not self._buffer:
            with trio.CancelScope() as self._idle_scope, trio.fail_after(self.config.idle_timeout):
                await self._receive()
            self._idle_scope = None
            if not self._buffer:
                return None
        with trio.fail_after(self.config.legacy_timeout):
            while True:
                parsed = parse_header(bytes(self._buffer), settled=self._eof)
                if parsed is None and complete_if_settled(bytes(self._buffer)):
                    # The size field may still be growing: give it a short quiet period.
                    with trio.move_on_after(self.config.legacy_settle):
                        await self._receive()
                        continue
                    parsed = parse_header(bytes(self._buffer), settled=True)
                if parsed is not None:
                    header, used = parsed
                    del self._buffer[:used]
                    return header
                if self._eof:
                    raise LegacyClosed("closed in the middle of a header")
                await self._receive()

    # ------------------------------------------------------------------- put

    def _stored_name(self, header: Header) -> str:
        if not self.config.legacy_layout:
            return header.name
        folder = "upload" if header.command is Command.PUT else "download"
        return f"{folder}/{header.name}"

    async def _put(self, header: Header) -> None:
        assert header.size is not None
        name = self._stored_name(header)
        record = TransferRecord(peer=self.peer, operation="LEGACY-PUT", name=name)
        try:
            upload: Upload = await trio.to_thread.run_sync(
                lambda: self.storage.begin_upload(name, header.size or 0, algorithm=DEFAULT)
            )
        except StorageError as exc:
            # The legacy protocol has no error reply: the old server closed too.
            record.result = f"{exc.code.name}: {exc}"
            record.log()
            raise LegacyClosed(f"put {name!r} refused: {exc}") from None
        try:
            await self._send(OK)
            record.bytes = await self._receive_body(upload, header.size)
            await trio.to_thread.run_sync(upload.commit, header.size, None)
        except BaseException as exc:
            record.result = f"failed: {type(exc).__name__}: {exc}" if str(exc) else f"failed: {type(exc).__name__}"
            raise
        finally:
            upload.abort(keep=False)
            record.log()

    async def _receive_body(self, upload: Upload, size: int) -> int:
        received = 0
        pending: list[bytes] = []
        pending_bytes = 0
        while received < size:
            if not self._buffer:
                with trio.fail_after(self.config.legacy_timeout):
                    await self._receive()
                if self._eof:
                    raise LegacyClosed(f"client disconnected mid-upload after {received} of {size} bytes")
            take = min(len(self._buffer), size - received)
            pending.append(bytes(self._buffer[:take]))
            del self._buffer[:take]
            received += take
            pending_bytes += take
            if pending_bytes >= WRITE_BLOCK or received == size:
                await trio.to_thread.run_sync(upload.write, pending)
                pending, pending_bytes = [], 0
        return received

    # ------------------------------------------------------------------- get

    async def _get(self, header: Header) -> None:
        name = self._stored_name(header)
        record = TransferRecord(peer=self.peer, operation="LEGACY-GET", name=name)
        try:
            fd, st = self.storage.open_read(name)
        except StorageError as exc:
            record.result = f"{exc.code.name}: answered NO|0"
            record.log()
            await self._send(NOT_FOUND_REPLY)
            return
        try:
            await self._send(found_reply(st.st_size))
            await self._expect_second_active()
            await send_file_range(self.stream, fd, 0, st.st_size)
            record.bytes = st.st_size
        except BaseException as exc:
            record.result = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            os.close(fd)
            record.log()

    async def _expect_second_active(self) -> None:
        with trio.fail_after(self.config.legacy_timeout):
            while len(self._buffer) < len(SECOND_ACTIVE):
                if not SECOND_ACTIVE.startswith(bytes(self._buffer)):
                    break
                await self._receive()
                if self._eof:
                    raise LegacyClosed("closed before sending second_active")
        if bytes(self._buffer[: len(SECOND_ACTIVE)]) != SECOND_ACTIVE:
            raise LegacyClosed(f"expected second_active, got {bytes(self._buffer[:20])!r}")
        del self._buffer[: len(SECOND_ACTIVE)]

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ChannelClosed(f"connection lost: {exc}", broken=True) from None
