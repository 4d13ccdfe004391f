"""Uploads: `put` from memory, `upload` from a file (by os.sendfile), resumed and verified.

The server stores a file only once its size and digest check out; a local file
is hashed on a worker thread while it is sent, and refused if it changed
meanwhile, so what was stored is what was read.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from pathlib import Path

import trio

from trioftp.client.streams import WRITE_BLOCK, Progress, Streams
from trioftp.disk.digests import Hasher, hash_range, new_hasher
from trioftp.errors import LocalFileChanged, RemoteChecksumMismatch
from trioftp.protocol.messages import Data, End, FileInfo, Put, Ready
from trioftp.transport.concurrency import both
from trioftp.transport.inbox import StreamInbox
from trioftp.transport.streams import FileChanged

# A file up to this size is read into memory and hashed on the event loop (microseconds),
# then sent from memory: see Uploads._upload_small.
SMALL_UPLOAD = 64 * 1024


class Uploads(Streams):
    """`put` and `upload`, the methods of `ClientConnection` that send a file."""

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
        make = lambda sid: Put(name=name, size=size, digest=digest, mtime_ns=mtime_ns, stream_id=sid)  # noqa: E731
        async with self._stream(make) as inbox:
            answer = await self._expect(inbox, Ready, FileInfo)
            if isinstance(answer, FileInfo):
                return answer  # an identical file is already there
            await self._send_bytes(inbox, memoryview(data), answer.offset, digest, progress)
            info: FileInfo = await self._expect(inbox, FileInfo)
            return info

    async def _send_bytes(
        self, inbox: StreamInbox, view: memoryview, position: int, digest: bytes, progress: Progress | None
    ) -> None:
        """Send view[position:] as DATA, and END; the last DATA frame and END go in one write."""
        size = len(view)
        while True:
            credit = await self._wait_credit(inbox) if position < size else 0
            count = min(credit, size - position)
            piece = view[position : position + count]
            position += count
            if position == size:
                end = End(size=size, digest=digest, stream_id=inbox.stream_id)
                messages = (Data(payload=bytes(piece), stream_id=inbox.stream_id), end) if count else (end,)
                await self._send(self.channel.send_if_open(*messages))
            else:
                await self._send(self.channel.send_data(inbox.stream_id, piece))
            if progress is not None and count:
                progress(position, size)
            if position == size:
                return

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
                if size <= SMALL_UPLOAD:
                    await self._upload_small(inbox, fd, st, local, answer.offset, hasher, progress)
                    return await self._expect_stored(inbox, answer)
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
                return await self._expect_stored(inbox, answer)
        finally:
            os.close(fd)

    async def _upload_small(
        self,
        inbox: StreamInbox,
        fd: int,
        st: os.stat_result,
        local: Path,
        offset: int,
        hasher: Hasher,
        progress: Progress | None,
    ) -> None:
        """Send a small file from memory: read and hashed here, with no thread and no sendfile.

        A thread hop to hash a few KiB, and a sendfile that takes the wire for
        itself, cost more than the bytes (bench/RESULTS.md, issue 13: put -r);
        the bytes go into the output buffer with the other streams' frames.
        """
        data = os.pread(fd, st.st_size + 1, 0)  # one byte more: a file that grew shows it
        if len(data) != st.st_size or _changed(os.fstat(fd), st):
            raise LocalFileChanged(f"{str(local)!r} changed while being uploaded; nothing was stored")
        hasher.update(data)
        await self._send_bytes(inbox, memoryview(data), offset, hasher.digest(), progress)

    async def _expect_stored(self, inbox: StreamInbox, answer: Ready) -> FileInfo:
        try:
            info: FileInfo = await self._expect(inbox, FileInfo)
        except RemoteChecksumMismatch:
            if answer.offset:  # the server's part was not ours: it has discarded it
                raise _StalePartial from None
            raise
        return info


def _changed(now: os.stat_result, before: os.stat_result) -> bool:
    return (now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ctime_ns,
    )


class _StalePartial(Exception):
    """A resumed upload failed its digest check: the server's partial was another file's."""
