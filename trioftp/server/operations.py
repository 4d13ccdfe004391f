"""What the server does for each v2 request, one function per operation.

Each runs as its own task in the connection's nursery and answers on its stream.
Storage errors become ERROR frames with their code; nothing here touches the
served folder except through `Storage`.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from trioftp.disk.digests import hash_file
from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import (
    FEATURE_ENTRY_KINDS,
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Error,
    FileInfo,
    Get,
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
)
from trioftp.server.auth import Right
from trioftp.server.budget import BudgetTimeout, ByteBudget
from trioftp.server.rate import RateFloor
from trioftp.storage.local import FileFacts, StorageError, Upload
from trioftp.transport.channel import ChannelClosed, FileChanged
from trioftp.transport.concurrency import both
from trioftp.transport.sink import BlockSink, next_piece_or_news
from trioftp.transport.writer import SinkWriter

if TYPE_CHECKING:
    from trioftp.server.metrics import Metrics
    from trioftp.server.session import V2Session
    from trioftp.transport.inbox import StreamInbox

log = logging.getLogger("trioftp.transfer")
T = TypeVar("T")

INLINE_HASH_LIMIT = 256 * 1024  # below this, hashing on the loop beats a thread hop
SMALL_FILE_LIMIT = 64 * 1024  # below this, a GET's whole answer goes out in one write
# GETs one connection runs at once (each holds its file open); the session keeps those
# over it as bare requests until one ends: a peer that asks for many files and reads
# none holds a few descriptors, buffers and tasks, not one of each per request.
READ_HANDLES = 8
CONNECTION_SHARE = 4  # one connection holds at most 1/4 of upload_memory (or one upload's need)
WRITE_BLOCK = 1024 * 1024  # uploads reach the disk in blocks of about this much
LISTING_CHUNK = 256  # entries per LISTING frame at most
ENTRY_MAX_BYTES = 320  # an encoded Entry: a 255-byte name, kind, size and mtime, with their keys


def _file_info(stream_id: int, facts: FileFacts) -> FileInfo:
    return FileInfo(
        name=facts.name, kind=facts.kind, size=facts.size, mtime_ns=facts.mtime_ns,
        digest=facts.digest, stream_id=stream_id,
    )  # fmt: skip


def _count_bytes(record: TransferRecord, _attribute: attrs.Attribute[int], value: int) -> int:
    """On `record.bytes = n`: add the bytes new since the last time to the server's counters."""
    if record.metrics is not None:
        moved = value - record.bytes
        if record.operation.endswith("PUT"):
            record.metrics.transfer_moved(received=moved)
        else:
            record.metrics.transfer_moved(sent=moved)
    return value


@attrs.define
class TransferRecord:
    """One transfer (GET, PUT, LEGACY-GET, LEGACY-PUT): its log line, and its part of the metrics.

    With `metrics`, the transfer counts as in flight from its creation until
    `log()`, and its bytes count as they are set. `outcome` is a metrics label
    (ok, cancelled, connection_lost, interrupted or an error code's name);
    `result` is the text the log line ends with.
    """

    peer: str
    operation: str
    name: str
    metrics: Metrics | None = None
    user: str = "anonymous"
    started: float = attrs.field(factory=time.monotonic)
    bytes: int = attrs.field(default=0, on_setattr=_count_bytes)
    result: str = "ok"
    outcome: str = "ok"
    digest: builtins.bytes | None = None  # builtins: the `bytes` field above shadows the type
    _logged: bool = False

    def __attrs_post_init__(self) -> None:
        if self.metrics is not None:
            self.metrics.transfer_started()

    def fail(self, outcome: str, result: str) -> None:
        self.outcome, self.result = outcome, result

    def log(self) -> None:
        """Write the transfer's line and count it as finished; only the first call does anything."""
        if self._logged:
            return
        self._logged = True
        elapsed = time.monotonic() - self.started
        if log.isEnabledFor(logging.INFO):  # a busy server logging at WARNING builds no line per file
            rate = self.bytes / elapsed / 1e6 if elapsed > 0 else 0.0
            fields = {
                "event": "transfer", "peer": self.peer, "user": self.user, "operation": self.operation,
                "file": self.name, "bytes": self.bytes, "duration": round(elapsed, 6),
                "digest": self.digest.hex() if self.digest is not None else None,
                "outcome": self.outcome, "reason": None if self.outcome == "ok" else self.result,
            }  # fmt: skip
            log.info(
                "%s %s %r %d bytes in %.3f s (%.1f MB/s): %s",
                self.peer, self.operation, self.name, self.bytes, elapsed, rate, self.result, extra=fields,
            )  # fmt: skip
        if self.metrics is not None:
            self.metrics.transfer_finished(self.operation, self.outcome, elapsed)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc`'s exception groups, however nested; `[exc]` if it is no group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def interruption(exc: BaseException, *, cancelled: tuple[str, str]) -> tuple[str, str]:
    """The (outcome, reason) of a transfer that `exc` ended, for its record.

    Exception groups (a nursery's, around a cancelled send and hash) are looked
    into: the first leaf that is not a Cancelled is what went wrong, the
    Cancelled beside it only its consequence. If every leaf is a Cancelled,
    the task was cancelled, and `cancelled` says why: only the caller knows.
    """
    causes = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if not causes:
        return cancelled
    cause = causes[0]
    if isinstance(cause, StorageError):
        return cause.code.name, f"{cause.code.name}: {cause}"
    if isinstance(cause, ChannelClosed):
        return "connection_lost", f"interrupted: {cause}"
    detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return ErrorCode.INTERNAL.name, f"failed: internal error: {detail}"


def why_cancelled(session: V2Session) -> tuple[str, str]:
    """Why the session cancelled its stream tasks, as (outcome, reason)."""
    if session.ending is not None:  # the ERROR it closes with: SHUTTING_DOWN, TIMEOUT, ...
        code, message = session.ending
        return code.name, f"interrupted: {code.name}: {message}"
    if session.lost is not None:
        return "connection_lost", f"interrupted: {session.lost}"
    return "interrupted", "interrupted: cancelled"  # from outside the session: the server's task


def never_started(session: V2Session, request: Get, outcome: str, reason: str) -> None:
    """The log line and metrics of a GET that ended while waiting for a read handle (no task ran)."""
    record = TransferRecord(
        peer=session.peer, operation="GET", name=request.name, metrics=session.server.metrics,
        user=session.user.name,
    )  # fmt: skip
    record.fail(outcome, reason)
    record.log()


async def run_request(session: V2Session, request: Message, inbox: StreamInbox) -> None:
    """Answer one request; a StorageError becomes an ERROR frame on its stream."""
    record = TransferRecord(
        peer=session.peer, operation=type(request).__name__.upper(), name=_name_of(request),
        metrics=session.server.metrics if isinstance(request, Get | Put) else None, user=session.user.name,
    )  # fmt: skip
    try:
        _check_right(session, request)
        if isinstance(request, Get):
            await _get(session, request, inbox, record)
        elif isinstance(request, Put):
            await _put(session, request, inbox, record)
        elif isinstance(request, List):
            await _list(session, request)
        elif isinstance(request, Stat):
            await _stat(session, request)
        elif isinstance(request, Delete | Rename | Mkdir):
            await _change(session, request)
        elif isinstance(request, Status):
            await _status(session, request)
        else:  # pragma: no cover - the machine only opens streams for requests
            raise AssertionError(request)
    except StorageError as exc:
        record.fail(exc.code.name, f"{exc.code.name}: {exc}")
        session.server.metrics.error_sent(exc.code)
        await session.channel.send_if_open(
            Error(code=exc.code, message=str(exc), stream_id=request.stream_id)
        )
    except BaseException as exc:  # connection lost, server stopping, internal error: not a success
        record.fail(*interruption(exc, cancelled=why_cancelled(session)))
        raise
    finally:
        if inbox.cancelled and record.result == "ok":
            record.fail("cancelled", "cancelled by the client")
        if isinstance(request, Get | Put):
            record.log()
        else:
            log.debug("%s %s %r: %s", record.peer, record.operation, record.name, record.result)


async def _server_work(session: V2Session, function: Callable[..., T], *args: Any) -> T:
    """Run blocking storage work on a thread; the rate watchdog does not hold its time against the peer."""
    session.server_busy += 1
    try:
        return await trio.to_thread.run_sync(function, *args)
    finally:
        session.server_busy -= 1


async def _hashing_work(session: V2Session, function: Callable[..., T], *args: Any) -> T:
    """Like _server_work, for work that hashes whole files: a few threads at a time, server-wide.

    Each hashing thread reads 1 MiB at a time; forty at once (trio's default
    thread limit) kept ~30 MiB of RSS after a burst of first downloads (bench W5).
    """
    session.server_busy += 1
    try:
        return await trio.to_thread.run_sync(function, *args, limiter=session.server.hash_limiter)
    finally:
        session.server_busy -= 1


RIGHT_OF_REQUEST: dict[type[Any], Right] = {
    Get: Right.READ,
    Put: Right.WRITE,
    List: Right.LIST,
    Stat: Right.LIST,
    Delete: Right.DELETE,
    Rename: Right.RENAME,
    Mkdir: Right.MKDIR,
}


def _check_right(session: V2Session, request: Message) -> None:
    right = RIGHT_OF_REQUEST.get(type(request))
    if right is not None and not session.user.may(right):
        raise StorageError(
            ErrorCode.PERMISSION_DENIED, f"user {session.user.name!r} has no {right.value!r} right"
        )


def _name_of(request: Message) -> str:
    if isinstance(request, Rename):
        return f"{request.old} -> {request.new}"
    if isinstance(request, List):
        return request.folder
    return getattr(request, "name", "")


# ---------------------------------------------------------------------- GET


async def _get(session: V2Session, request: Get, inbox: StreamInbox, record: TransferRecord) -> None:
    storage, channel, stream_id = session.storage, session.channel, request.stream_id
    fd, st = storage.open_read(request.name)
    try:
        size = st.st_size
        if request.offset > size:
            raise StorageError(ErrorCode.BAD_REQUEST, f"offset {request.offset} is past the end ({size})")
        end = size if request.length is None else min(size, request.offset + request.length)
        algorithm = channel.machine.digest
        digest = storage.cached_digest(st, algorithm)
        if digest is None and size <= INLINE_HASH_LIMIT:
            digest = storage.digest_of_open(fd, st, algorithm)
        facts = storage.facts(request.name, st, digest)
        info = _file_info(stream_id, facts)
        if digest is not None and end - request.offset <= min(SMALL_FILE_LIMIT, _initial_credit(session)):
            await channel.wait_for_room()  # read nothing into memory that could not be sent now
            async with _reserved(session, session.server.send_budget, end - request.offset, "to send"):
                payload = os.pread(fd, end - request.offset, request.offset)
                if len(payload) != end - request.offset:
                    raise StorageError(ErrorCode.BUSY, "the file changed while being read; try again")
                end_message = End(size=size, digest=digest, stream_id=stream_id)
                await _send_small_file(session, info, payload, end_message)
            record.bytes = len(payload)
            record.digest = digest
            return
        if not await channel.send_if_open(info):
            return
        if digest is None:
            # Hash on a worker thread while sendfile moves the same pages: the
            # digest costs no extra wall time on a second core.
            _, digest = await both(
                lambda: _send_body(session, inbox, fd, request.offset, end, record),
                lambda: _hashing_work(session, storage.digest_of_open, fd, st, algorithm),
            )
        else:
            await _send_body(session, inbox, fd, request.offset, end, record)
        if inbox.cancelled:
            return
        if not storage.unchanged(fd, st):
            raise StorageError(ErrorCode.BUSY, "the file changed while being sent; try again")
        await channel.send_if_open(End(size=size, digest=digest, stream_id=stream_id))
        record.digest = digest
    finally:
        os.close(fd)


def _initial_credit(session: V2Session) -> int:
    hello = session.channel.machine.peer_hello
    assert hello is not None
    return min(hello.initial_window, hello.max_frame_size)


async def _send_small_file(session: V2Session, info: FileInfo, payload: bytes, end: End) -> None:
    # FILE_INFO, DATA and END in one write: one syscall and no Nagle stall
    # between a header and its body.
    await session.channel.send_if_open(info, Data(payload=payload, stream_id=info.stream_id), end)


async def _send_body(
    session: V2Session, inbox: StreamInbox, fd: int, start: int, end: int, record: TransferRecord
) -> int:
    channel, stream_id = session.channel, inbox.stream_id
    position = start
    while position < end and not inbox.cancelled:
        credit = channel.machine.send_credit(stream_id)
        if credit == 0:
            await inbox.wait_change()
            continue
        count = min(credit, end - position)
        try:
            sent = await channel.send_file_data(stream_id, fd, position, count)
        except FileChanged:
            raise StorageError(ErrorCode.BUSY, "the file shrank while being sent; try again") from None
        if not sent:
            break
        position += count
        record.bytes = position - start  # as it goes, so a cut transfer logs what it sent
    return position - start


# ---------------------------------------------------------------------- PUT


async def _put(session: V2Session, request: Put, inbox: StreamInbox, record: TransferRecord) -> None:
    channel, stream_id = session.channel, request.stream_id
    algorithm = channel.machine.digest
    # The short-cut answers whether the file holds the bytes of the given digest:
    # a user who may not read the file must not learn that by guessing.
    if request.digest is not None and session.user.may(Right.READ):
        existing = await _hashing_work(session, _identical_facts, session, request, algorithm)
        if existing is not None:
            record.result = "identical file already there"
            record.digest = existing.digest
            await channel.send_if_open(_file_info(stream_id, existing))
            return
    window = channel.machine.settings.initial_window
    # The client gets more credit only once half our window is written: with
    # a window under two blocks, waiting for a whole block would stall both.
    block = min(WRITE_BLOCK, max(1, window // 2))
    # The sink holds at most the window (flow control) plus the block being filled.
    need = min(window + block, request.size)
    if session.upload_share is None:
        total = session.server.config.upload_memory
        session.upload_share = ByteBudget(max(window + block, total // CONNECTION_SHARE))
    # First this connection's share: a wait behind its own uploads, which the peer
    # moves (or the rate checks end), so it is not counted as the server's slowness.
    async with (
        session.upload_share.reserve(need),
        _reserved(session, session.server.upload_budget, need, "for uploads"),
    ):
        await _receive_upload(session, request, inbox, record, block)


@asynccontextmanager
async def _reserved(session: V2Session, budget: ByteBudget, amount: int, use: str) -> AsyncIterator[None]:
    """Reserve buffer memory from a server-wide budget, waiting in turn; BUSY if none comes in time.

    The wait is the server's slowness, not the peer's, so the rate check skips it;
    and it ends after `min_rate_window`: by then every holder has either moved
    bytes at `min_rate` or been dropped, so a longer wait is the server at capacity.
    """
    patience = session.server.config.min_rate_window
    session.server_busy += 1
    try:
        amount = await budget.acquire(amount, group=session.address, patience=patience)
    except BudgetTimeout:
        raise StorageError(
            ErrorCode.BUSY, f"the server has no memory free {use} (waited {patience:g} s); try again later"
        ) from None
    finally:
        session.server_busy -= 1
    try:
        yield
    finally:
        budget.release(amount, group=session.address)


async def _receive_upload(
    session: V2Session, request: Put, inbox: StreamInbox, record: TransferRecord, block: int
) -> None:
    storage, channel, stream_id = session.storage, session.channel, request.stream_id
    upload: Upload = await _server_work(
        session,
        lambda: storage.begin_upload(
            request.name, request.size, algorithm=channel.machine.digest, digest=request.digest,
            resume=request.resume,
        ),
    )  # fmt: skip
    keep = True
    block = min(block, max(1, upload.size - upload.written))  # a small file gets a small block
    # The payload is read from the socket straight into the sink's blocks.
    sink = BlockSink(block, inbox.notify, limit=upload.size - upload.written)
    # Blocks are written on one thread while the next arrive (trioftp.transport.writer).
    writer = SinkWriter(
        sink, inbox, lambda b: upload.write([b]), busy=lambda d: _count_busy(session, d),
        size=upload.size - upload.written,
    )  # fmt: skip
    channel.add_sink(stream_id, sink)
    try:
        if not await channel.send_if_open(Ready(offset=upload.offset, stream_id=stream_id)):
            return
        config = session.server.config
        # The memory reserved for this upload is held only while its own bytes come at
        # min_rate: a peer cannot park reservations behind one stream that moves. (A
        # stream alone on its connection is the connection's check: TIMEOUT for both.)
        floor = RateFloor(config.min_rate, config.min_rate_window, trio.current_time())
        from_messages = 0  # payload that came as Data messages; the sink counts its own
        while True:
            if writer.unacknowledged:
                await channel.acknowledge(stream_id, writer.take())
            with trio.move_on_at(floor.since + floor.window if floor.rate else math.inf) as waiting:
                piece = await next_piece_or_news(inbox, sink, writer.news)
            if waiting.cancelled_caught:
                now, moved = trio.current_time(), sink.received + from_messages
                slow = floor.too_slow(now, moved)
                if slow is not None and writer.pending:  # the peer waits for our disk: not its slowness
                    slow, floor = None, RateFloor(config.min_rate, config.min_rate_window, now, moved)
                if slow is not None and session.open_streams > 1:
                    raise StorageError(
                        ErrorCode.BUSY, f"upload {slow}: its memory is given back; resume it later"
                    )
                if slow is not None:
                    floor = RateFloor(config.min_rate, config.min_rate_window, now, moved)
                continue
            if piece is None:
                continue
            if isinstance(piece, memoryview | Data):
                payload = piece if isinstance(piece, memoryview) else piece.payload
                if isinstance(piece, Data):
                    from_messages += len(payload)
                if upload.written + len(payload) > upload.size:
                    keep = False
                    raise StorageError(ErrorCode.BAD_REQUEST, f"more than the announced {upload.size} bytes")
                if payload:
                    writer.submit(memoryview(payload))  # acknowledged once written
                record.bytes += len(payload)
            elif isinstance(piece, End):
                keep = False
                await writer.finish()
                facts = await _server_work(session, upload.commit, piece.size, piece.digest, request.mtime_ns)
                record.digest = facts.digest
                await channel.send_if_open(_file_info(stream_id, facts))
                return
            elif isinstance(piece, Cancel):
                return
    except StorageError as exc:
        keep = keep and exc.code not in (
            ErrorCode.NO_SPACE,
            ErrorCode.CHECKSUM_MISMATCH,
            ErrorCode.BAD_REQUEST,
        )
        raise
    finally:
        await writer.stop()  # the thread no longer touches the file
        channel.remove_sink(stream_id)
        upload.abort(keep=keep)


def _count_busy(session: V2Session, change: int) -> None:
    session.server_busy += change  # blocks waiting for our disk: the rate watchdog's time is ours


def _identical_facts(session: V2Session, request: Put, algorithm: str) -> FileFacts | None:
    """The facts of the target if it already holds exactly these bytes."""
    try:
        fd, st = session.storage.open_read(request.name)
    except StorageError:
        return None
    try:
        if st.st_size != request.size:
            return None
        digest = session.storage.cached_digest(st, algorithm)
        if digest is None:
            digest = hash_file(fd, st.st_size, algorithm)
            session.storage.digests.put(st, algorithm, digest)
        if digest != request.digest:
            return None
        if request.mtime_ns is not None and st.st_mtime_ns != request.mtime_ns:
            # The bytes are there; the time the client brings is not, and a sync tool
            # comparing times would send the file again on every run (spec 11.2).
            os.utime(fd, ns=(st.st_atime_ns, request.mtime_ns))
            st = os.fstat(fd)
            session.storage.digests.put(st, algorithm, digest)
        return session.storage.facts(request.name, st, digest)
    finally:
        os.close(fd)


# --------------------------------------------------------------- the others


async def _list(session: V2Session, request: List) -> None:
    hello = session.channel.machine.peer_hello
    assert hello is not None
    kinds = FEATURE_ENTRY_KINDS in hello.features  # else the kinds an older client knows (spec 11.3)
    entries = await _server_work(session, session.storage.list, request.folder, kinds)
    stream_id = request.stream_id
    # Each frame must fit the client's max_frame_size, which may be as low as 16 KiB.
    per_frame = max(1, min(LISTING_CHUNK, (hello.max_frame_size - 64) // ENTRY_MAX_BYTES))
    chunks = [entries[i : i + per_frame] for i in range(0, len(entries), per_frame)] or [[]]
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        if not await session.channel.send_if_open(Listing(entries=chunk, last=last, stream_id=stream_id)):
            return


async def _stat(session: V2Session, request: Stat) -> None:
    storage = session.storage
    facts, st = storage.stat(request.name)
    # The digest is content information: `list` alone gives only name, kind, size and time.
    if facts.kind.value == "file" and session.user.may(Right.READ):
        algorithm = session.channel.machine.digest
        digest = storage.cached_digest(st, algorithm)
        if digest is None:
            digest = await _hashing_work(session, _digest_by_name, session, request.name, algorithm)
        facts = attrs.evolve(facts, digest=digest)
    await session.channel.send_if_open(_file_info(request.stream_id, facts))


def _digest_by_name(session: V2Session, name: str, algorithm: str) -> bytes:
    fd, st = session.storage.open_read(name)
    try:
        return session.storage.digest_of_open(fd, st, algorithm)
    finally:
        os.close(fd)


async def _status(session: V2Session, request: Status) -> None:
    server = session.server
    if getattr(server, "users", None) is not None and not session.user.admin:
        raise StorageError(ErrorCode.PERMISSION_DENIED, "STATUS is for administrators")
    metrics = server.metrics
    info = StatusInfo(
        agent=server.agent, uptime_ms=int(server.uptime * 1000), connections=server.connection_count,
        transfers=metrics.running, bytes_received=metrics.received, bytes_sent=metrics.sent,
        stream_id=request.stream_id,
    )  # fmt: skip
    await session.channel.send_if_open(info)


async def _change(session: V2Session, request: Delete | Rename | Mkdir) -> None:
    storage = session.storage
    if isinstance(request, Delete):
        await _server_work(session, storage.delete, request.name)
    elif isinstance(request, Rename):
        await _server_work(session, lambda: storage.rename(request.old, request.new, replace=request.replace))
    else:
        await _server_work(session, storage.mkdir, request.name)
    await session.channel.send_if_open(Done(stream_id=request.stream_id))
