"""Downloads: `get` into memory, `download` to a file, resumed and verified.

The payload goes from the socket straight into reused blocks (see
trioftp.transport.sink); each block is hashed as it comes in and written on a
worker thread, and a file takes its name only once its size and digest match
the server's.
Where bytes land on the local side (partials, pipes, devices) is
trioftp.client.targets.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path

import attrs
import trio

from trioftp.client import targets
from trioftp.client.streams import DOWNLOAD_BLOCK, DOWNLOAD_WINDOW, WRITE_BLOCK, Progress, Streams
from trioftp.disk.digests import Hasher, hash_range, new_hasher
from trioftp.disk.syscalls import write_at
from trioftp.disk.writeback import EarlyWriteback
from trioftp.errors import ChecksumMismatch, ConnectionClosed, ProtocolViolation, RemoteError, remote_error
from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import Data, End, Error, FileInfo, Get
from trioftp.transport.inbox import StreamInbox
from trioftp.transport.sink import BlockPool, BlockSink, next_piece, next_piece_or_news
from trioftp.transport.writer import SinkWriter

# A download up to this size (one WRITE_BLOCK) is written in the Trio thread, not handed to a
# writer thread: 200 clients fetching 1 MiB each went 0.54-0.63x -> 0.57-0.67x raw (W4, issue 13,
# bench/RESULTS.md). Only the client's own transfers wait on it; the server keeps INLINE_LIMIT.
INLINE_DOWNLOAD = WRITE_BLOCK
# Blocks kept between downloads of this process (a server drops its blocks instead:
# its memory should go back once a burst of uploads is over): small files' blocks,
# and large files' blocks up to one window's worth.
_RECEIVE_BLOCKS = {
    WRITE_BLOCK: BlockPool(WRITE_BLOCK, max_blocks=8),
    DOWNLOAD_BLOCK: BlockPool(DOWNLOAD_BLOCK, max_blocks=DOWNLOAD_WINDOW // DOWNLOAD_BLOCK),
}


class Downloads(Streams):
    """`get` and `download`, the methods of `ClientConnection` that receive a file."""

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
            elif os.fstat(fd).st_size:
                # Not on an empty file: ext4 takes a truncation to 0 for a rewrite
                # in place and writes the whole file back when it is closed, 0.2 s
                # of a 512 MiB download spent in close() (bench/RESULTS.md, issue 13).
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
                        position = _write(fd, block, position, writeback)
                    except OSError as exc:  # a full disk, say: name the partial, which keeps what came
                        raise OSError(exc.errno, exc.strerror, str(partial)) from None

                try:
                    digest = await self._receive_body(
                        inbox, info, held, hasher, _unused_write, progress,
                        block=DOWNLOAD_BLOCK, on_thread=write,
                    )  # fmt: skip
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
        With `on_thread`, each block is hashed here and then goes to that blocking
        function, called on one writer thread block after block
        (trioftp.transport.writer), and is acknowledged once written.
        """
        if offset > info.size:
            raise ChecksumMismatch(
                f"{info.name!r} is shorter ({info.size}) than what we already hold ({offset})"
            )
        received = written = offset
        # The server gets more credit only once half our window is consumed:
        # a block larger than that would stall both sides.
        block = min(block, max(1, self.channel.machine.settings.initial_window // 2))
        if block > WRITE_BLOCK and info.size - offset < 2 * block:
            block = WRITE_BLOCK  # a block this large only pays off over many of them
        block = min(block, max(1, info.size - offset))  # a small file gets a small block
        sink = BlockSink(block, inbox.notify, limit=info.size - offset, pool=_RECEIVE_BLOCKS.get(block))
        writer = (
            SinkWriter(sink, inbox, on_thread, size=info.size - offset, inline_limit=INLINE_DOWNLOAD)
            if on_thread
            else None
        )
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
                        # Hashed here, not on the writer thread: BLAKE3 frees the GIL
                        # while it runs, so the writer's small writes (write_at) go on
                        # meanwhile, where hashing on that thread made it the slowest
                        # part of a download (bench/RESULTS.md, issue 13).
                        hasher.update(payload)
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
        except ConnectionClosed:
            # Blocks that arrived whole are written before the error goes up: a
            # resume then asks for less (up to a window of large blocks).
            if writer is not None:
                with suppress(OSError):  # the connection's end is the news
                    await writer.finish()
            raise
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


async def _unused_write(_block: bytes | memoryview, _hasher: Hasher) -> None:
    raise AssertionError("blocks go to the writer thread")


def _write(fd: int, block: bytes | memoryview, position: int, writeback: EarlyWriteback) -> int:
    position = write_at(fd, block, position)  # in small pieces: see write_at
    writeback.wrote_up_to(position)
    return position
