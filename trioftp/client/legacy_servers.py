"""A client for OLD servers that speak only the legacy text protocol.

    data = await trioftp.legacy.get("old-host", "report.csv")
    await trioftp.legacy.put("old-host", "notes.txt", b"hello")

One command per connection: the old server counted bytes with one counter for
all its connections and never reset it, so a second put on any connection could
not end. The protocol carries no checksum, no error reply and no confirmation
of a put; use the v2 client (`trioftp.get`/`trioftp.put`) with a trioftp server.
A trioftp server speaks this protocol too, so these work against it as well.

This module is the Trio side of it, public as `trioftp.legacy`; the wire
format (header, replies) is in `trioftp.protocol.legacy_codec`, which does no
I/O, and the server's side is `trioftp.server.legacy_session`. For a machine
without trioftp, compat/legacy_client.py is a standard-library client to copy.

Error handling: every failure is a TrioftpError: NotFound for `NO|0`,
ConnectionClosed when the server closes without an answer (the old server's
only way to refuse), ProtocolViolation for an answer that is not legacy,
TransferTimeout when the server makes no progress for `timeout` seconds, and
BadName for a name that cannot be sent.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trioftp.client import targets
from trioftp.config import DEFAULT_PORT
from trioftp.disk.writeback import EarlyWriteback
from trioftp.errors import (
    BadName,
    ConnectionClosed,
    NotFound,
    ProtocolViolation,
    TransferTimeout,
    TrioftpError,
    connect_reason,
)
from trioftp.protocol.legacy_codec import (
    MAX_HEADER_BYTES,
    OK,
    SECOND_ACTIVE,
    Command,
    LegacyError,
    encode_header,
    parse_get_reply,
)
from trioftp.protocol.names import BadName as InvalidName
from trioftp.protocol.names import check_path
from trioftp.transport.streams import ChannelClosed, FileChanged, send_file_range

DEFAULT_SETTLE = 0.05  # quiet time that ends a `YES|size` answer (it has no terminator)
DEFAULT_TIMEOUT = 30.0  # seconds the server may make no progress
DEFAULT_LINGER = 0.25  # seconds a finished put waits for the server to read and close
RECEIVE_SIZE = 64 * 1024
WRITE_BLOCK = 1024 * 1024
SEND_STEP = 1024 * 1024

Progress = Callable[[int, int], None]
"""Called as progress(bytes_done, bytes_total) while a transfer runs."""


async def get(
    host: str,
    name: str,
    *,
    port: int = DEFAULT_PORT,
    settle: float = DEFAULT_SETTLE,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (no progress for this long, not a deadline)
    progress: Progress | None = None,
) -> bytes:
    """Download one file from a legacy server into memory.

    Nothing checks the bytes: the legacy protocol has no checksum.

    Args:
        host: the server's name or address.
        name: the remote file name (the old server looks for it in its download/ folder).
        port: the server's port.
        settle: seconds of quiet that end the `YES|size` answer.
        timeout: seconds the server may make no progress (connect, answer, each read).
        progress: called as progress(received, size).

    Returns:
        The file's bytes.

    Raises:
        NotFound: the server answered `NO|0`.
        ConnectionClosed, ProtocolViolation, TransferTimeout, BadName: see the module.

    Example:
        data = await trioftp.legacy.get("old-host", "report.csv", port=8885)
    """
    chunks: list[bytes] = []

    async def keep(blocks: list[bytes]) -> None:
        chunks.extend(blocks)

    header = _header(Command.GET, name, 0)
    async with _connect(host, port, timeout) as link:
        size = await link.request_file(name, header, settle)
        await link.receive_body(size, keep, progress, block=RECEIVE_SIZE)
    return b"".join(chunks)


async def download(
    host: str,
    name: str,
    path: str | os.PathLike[str],
    *,
    port: int = DEFAULT_PORT,
    settle: float = DEFAULT_SETTLE,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (no progress for this long, not a deadline)
    progress: Progress | None = None,
) -> int:
    """Download one file from a legacy server to `path`; returns its size.

    The bytes go to `path + ".trioftp-part"`, renamed to `path` once all have
    arrived; on failure the partial file is removed and `path` is untouched.
    A symlink is followed; a pipe, terminal or device is written in place (as
    ClientConnection.download does).
    Arguments and errors as for `get`, plus `path`, the local file to write.

    Returns:
        The file's size in bytes.

    Example:
        size = await trioftp.legacy.download("old-host", "big.iso", "/tmp/big.iso")
    """
    target = Path(path)
    header = _header(Command.GET, name, 0)
    if targets.writes_in_place(target):
        writer = await targets.InPlaceWriter.open(target)
        try:
            async with _connect(host, port, timeout) as link:
                size = await link.request_file(name, header, settle)

                async def write_in_place(blocks: list[bytes]) -> None:
                    for block in blocks:
                        await writer.write(block)

                await link.receive_body(size, write_in_place, progress, block=WRITE_BLOCK)
        finally:
            await writer.aclose()
        return size
    target, partial = targets.file_and_partial(target)
    async with _connect(host, port, timeout) as link:
        size = await link.request_file(name, header, settle)
        fd = targets.open_partial(partial, target)
        os.ftruncate(fd, 0)  # a legacy get cannot resume
        done = False
        writeback = EarlyWriteback(fd)
        try:

            async def write(blocks: list[bytes]) -> None:
                await trio.to_thread.run_sync(_write_blocks, fd, blocks, writeback)

            await link.receive_body(size, write, progress, block=WRITE_BLOCK)
            await trio.to_thread.run_sync(os.fsync, fd)
            os.replace(partial, target)
            done = True
        finally:
            os.close(fd)
            if not done:
                partial.unlink(missing_ok=True)
    return size


async def put(
    host: str,
    name: str,
    data: bytes,
    *,
    port: int = DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (no progress for this long, not a deadline)
    linger: float = DEFAULT_LINGER,
    progress: Progress | None = None,
) -> None:
    """Upload bytes to a legacy server as one file.

    There is no confirmation: the legacy protocol answers nothing after the
    bytes, so this returns once every byte is sent, the sending side is shut
    down, and the server either closed the connection or had `linger` seconds
    to read what was sent. An old server appends to upload/<name> and keeps a
    partial file if the connection breaks; a trioftp server replaces the file
    atomically, and closes only after storing it.

    Args:
        host: the server's name or address.
        name: the remote file name.
        data: the file's bytes.
        port: the server's port.
        timeout: seconds the server may make no progress (connect, `OK`, each write).
        linger: seconds to wait at the end for the server to close.
        progress: called as progress(sent, size).

    Raises:
        ConnectionClosed: the server closed instead of answering `OK` (a refusal),
            or broke the connection while the bytes were sent.
        ProtocolViolation, TransferTimeout, BadName: see the module.

    Example:
        await trioftp.legacy.put("old-host", "notes.txt", b"hello")
    """
    view = memoryview(data)
    size = len(view)
    header = _header(Command.PUT, name, size)
    async with _connect(host, port, timeout) as link:
        await link.offer_file(name, header)
        position = 0
        while position < size:
            step = min(SEND_STEP, size - position)
            await link.send(view[position : position + step], f"after {position} of {size} bytes")
            position += step
            if progress is not None:
                progress(position, size)
        await link.finish(linger)


async def upload(
    host: str,
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    port: int = DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (no progress for this long, not a deadline)
    linger: float = DEFAULT_LINGER,
    progress: Progress | None = None,
) -> int:
    """Upload a local file to a legacy server (by os.sendfile); returns its size.

    `name` defaults to the file's own name. No confirmation, as for `put`.
    The other arguments are those of `put`.

    Returns:
        The file's size in bytes.

    Raises:
        OSError: the local file cannot be read.
        TrioftpError: the local file shrank while it was sent; the others as for `put`.

    Example:
        await trioftp.legacy.upload("old-host", "/tmp/notes.txt", "notes.txt")
    """
    local = Path(path)
    remote = name if name is not None else local.name
    fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block the loop
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(local))
        size = st.st_size
        header = _header(Command.PUT, remote, size)
        async with _connect(host, port, timeout) as link:
            await link.offer_file(remote, header)
            await link.send_file(fd, size, progress)
            await link.finish(linger)
    finally:
        os.close(fd)
    return size


# ------------------------------------------------------------------ the link


@asynccontextmanager
async def _connect(host: str, port: int, stall: float) -> AsyncIterator[_Link]:
    try:
        with trio.fail_after(stall):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise TransferTimeout(f"cannot connect to {host}:{port} within {stall:g} s") from None
    except OSError as exc:
        raise ConnectionClosed(f"cannot connect to {host}:{port}: {connect_reason(exc)}") from None
    try:
        yield _Link(stream, f"{host}:{port}", stall)
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


class _Link:
    """One legacy connection, every read and write under the no-progress timeout."""

    def __init__(self, stream: trio.SocketStream, where: str, timeout: float) -> None:
        self.stream = stream
        self.where = where
        self.timeout = timeout
        self.buffer = bytearray()
        self.eof = False

    async def send(self, data: bytes | memoryview, when: str) -> None:
        try:
            with trio.fail_after(self.timeout):
                await self.stream.send_all(data)
        except trio.TooSlowError:
            raise TransferTimeout(f"{self.where} read nothing for {self.timeout:g} s {when}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"{self.where} broke the connection {when}: {exc}") from None

    async def send_file(self, fd: int, size: int, progress: Progress | None) -> None:
        position = 0
        while position < size:
            step = min(SEND_STEP, size - position)
            try:
                with trio.fail_after(self.timeout):
                    await send_file_range(self.stream, fd, position, step)
            except trio.TooSlowError:
                raise TransferTimeout(
                    f"{self.where} read nothing for {self.timeout:g} s after {position} of {size} bytes"
                ) from None
            except ChannelClosed as exc:
                raise ConnectionClosed(f"{self.where}: {exc} after {position} of {size} bytes") from None
            except FileChanged:
                raise TrioftpError(
                    f"the local file shrank while it was sent ({size} bytes announced)"
                ) from None
            position += step
            if progress is not None:
                progress(position, size)

    async def receive(self, when: str) -> None:
        """Append the server's next bytes to `buffer`; at EOF set `eof`."""
        try:
            with trio.fail_after(self.timeout):
                data = await self.stream.receive_some(RECEIVE_SIZE)
        except trio.TooSlowError:
            raise TransferTimeout(f"{self.where} sent nothing for {self.timeout:g} s {when}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"{self.where} broke the connection {when}: {exc}") from None
        if data:
            self.buffer += data
        else:
            self.eof = True

    # ------------------------------------------------------------- commands

    async def offer_file(self, name: str, header: bytes) -> None:
        """Send a put header and wait for `OK`."""
        await self.send(header, "before the put header")
        while len(self.buffer) < len(OK) and not self.eof:
            await self.receive(f"instead of answering put {name!r}")
        if self.eof and not self.buffer:
            raise ConnectionClosed(f"{self.where} closed the connection instead of accepting put {name!r}")
        if bytes(self.buffer[: len(OK)]) != OK:
            raise ProtocolViolation(f"{self.where} answered put with {bytes(self.buffer[:40])!r}, not OK")
        del self.buffer[: len(OK)]

    async def finish(self, linger: float) -> None:
        """After a put: shut our side, then give the server `linger` s to read it all and close."""
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"{self.where} broke the connection at the end of a put: {exc}") from None
        with trio.move_on_after(linger):
            try:
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass  # nothing is expected; an old server sends nothing here
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # every byte was sent; whether it was kept, the protocol cannot say

    async def request_file(self, name: str, header: bytes, settle: float) -> int:
        """Send a get header and read the answer; on `YES|size` send `second_active`."""
        await self.send(header, "before the get header")
        while True:
            if self.eof and not self.buffer:
                raise ConnectionClosed(
                    f"{self.where} closed the connection instead of answering get {name!r}"
                )
            parsed = self._parse_reply(settled=self.eof)
            if parsed is None and self._parse_reply(settled=True) is not None:
                # `YES|12` may still be `YES|1234`: wait for a quiet moment.
                with trio.move_on_after(settle):
                    await self.receive(f"in the middle of its answer to get {name!r}")
                    continue
                parsed = self._parse_reply(settled=True)
            if parsed is not None:
                break
            if self.eof:
                raise ProtocolViolation(
                    f"{self.where} closed in the middle of its answer {bytes(self.buffer)!r}"
                )
            await self.receive(f"instead of answering get {name!r}")
        size, used = parsed
        if size is None:
            raise NotFound(f"{self.where} has no file {name!r} (answered NO|0)")
        if len(self.buffer) > used:
            raise ProtocolViolation(
                f"{self.where} sent {bytes(self.buffer[used : used + 20])!r} after YES|{size}"
            )
        del self.buffer[:used]
        await self.send(SECOND_ACTIVE, f"before second_active for {name!r}")
        return size

    def _parse_reply(self, *, settled: bool) -> tuple[int | None, int] | None:
        try:
            return parse_get_reply(bytes(self.buffer), settled=settled)
        except LegacyError as exc:
            if not settled or self.eof:
                raise ProtocolViolation(f"{self.where}: {exc}") from None
            return None  # not complete even if the line settled: wait for more

    async def receive_body(
        self,
        size: int,
        keep: Callable[[list[bytes]], Awaitable[None]],
        progress: Progress | None,
        *,
        block: int,
    ) -> None:
        received = 0
        pending: list[bytes] = []
        pending_bytes = 0
        while received < size:
            if not self.buffer:
                await self.receive(f"after {received} of {size} bytes")
                if self.eof:
                    raise ConnectionClosed(
                        f"{self.where} closed the connection after {received} of {size} bytes"
                    )
            if received + len(self.buffer) > size:
                raise ProtocolViolation(f"{self.where} sent more than the {size} bytes it announced")
            chunk = bytes(self.buffer)
            self.buffer.clear()
            pending.append(chunk)
            pending_bytes += len(chunk)
            received += len(chunk)
            if pending_bytes >= block or received == size:
                await keep(pending)
                pending, pending_bytes = [], 0
            if progress is not None:
                progress(received, size)


def _header(command: Command, name: str, size: int) -> bytes:
    if "|" in name:
        raise BadName(f"{name!r} cannot be sent in a legacy header: it holds '|'")
    try:
        header = encode_header(command, check_path(name), size)
    except InvalidName as exc:
        raise BadName(f"{name!r} refused: {exc}") from None
    if len(header) > MAX_HEADER_BYTES:
        raise BadName(f"{name!r} makes a header over {MAX_HEADER_BYTES} bytes")
    return header


def _write_blocks(fd: int, blocks: list[bytes], writeback: EarlyWriteback) -> None:
    for block in blocks:
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view) :]
    writeback.wrote_up_to(os.lseek(fd, 0, os.SEEK_CUR))
