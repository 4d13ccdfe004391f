"""What the server does for each v2 request, one function per operation.

Each runs as its own task in the connection's nursery and answers on its stream.
Storage errors become ERROR frames with their code; nothing here touches the
served folder except through `Storage`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import (
    FEATURE_ENTRY_KINDS,
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Error,
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
from trioftp.server.mapping import Refusal, entry, error_code, file_info
from trioftp.server.rate import RateFloor
from trioftp.server.shared import StreamSession
from trioftp.server.transfers import WRITE_BLOCK, TransferRecord, interruption
from trioftp.storage.interface import FileFacts, Kind, Problem, ReadHandle, StorageError, Upload
from trioftp.transport.concurrency import both
from trioftp.transport.sink import BlockSink, next_piece_or_news
from trioftp.transport.streams import FileChanged
from trioftp.transport.writer import SinkWriter

if TYPE_CHECKING:
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
READ_PIECE = 1024 * 1024  # a download from a store without sendfile is read in pieces of this much
KEEP_QUEUED_PATIENCE = 10.0  # seconds a cut upload may take to write what it had queued
LISTING_CHUNK = 256  # entries per LISTING frame at most
ENTRY_MAX_BYTES = 320  # an encoded Entry: a 255-byte name, kind, size and mtime, with their keys


def why_cancelled(session: StreamSession) -> tuple[str, str]:
    """Why the session cancelled its stream tasks, as (outcome, reason)."""
    if session.ending is not None:  # the ERROR it closes with: SHUTTING_DOWN, TIMEOUT, ...
        code, message = session.ending
        return code.name, f"interrupted: {code.name}: {message}"
    if session.lost is not None:
        return "connection_lost", f"interrupted: {session.lost}"
    return "interrupted", "interrupted: cancelled"  # from outside the session: the server's task


def never_started(session: StreamSession, request: Get, outcome: str, reason: str) -> None:
    """The log line and metrics of a GET that ended while waiting for a read handle (no task ran)."""
    record = TransferRecord(
        peer=session.peer, operation="GET", name=request.name, metrics=session.shared.metrics,
        user=session.user.name,
    )  # fmt: skip
    record.fail(outcome, reason)
    record.log()


async def run_request(session: StreamSession, request: Message, inbox: StreamInbox) -> None:
    """Answer one request; a StorageError becomes an ERROR frame on its stream."""
    record = TransferRecord(
        peer=session.peer, operation=type(request).__name__.upper(), name=_name_of(request),
        metrics=session.shared.metrics if isinstance(request, Get | Put) else None, user=session.user.name,
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
    except (StorageError, Refusal) as exc:
        code = error_code(exc)
        record.fail(code.name, f"{code.name}: {exc}")
        session.shared.metrics.error_sent(code)
        await session.channel.send_if_open(Error(code=code, message=str(exc), stream_id=request.stream_id))
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


async def _server_work(session: StreamSession, function: Callable[..., T], *args: Any) -> T:
    """Run blocking storage work on a thread; the rate watchdog does not hold its time against the peer."""
    session.server_busy += 1
    try:
        return await trio.to_thread.run_sync(function, *args)
    finally:
        session.server_busy -= 1


async def _store_work(session: StreamSession, function: Callable[..., T], *args: Any) -> T:
    """Store calls that are quick on a local disk run inline (a thread hop would cost more
    than the call); on a networked store they are round trips, and go to a thread."""
    if session.storage.quick:
        return function(*args)
    return await _server_work(session, function, *args)


async def _hashing_work(session: StreamSession, function: Callable[..., T], *args: Any) -> T:
    """Like _server_work, for work that hashes whole files: a few threads at a time, server-wide.

    Each hashing thread reads 1 MiB at a time; forty at once (trio's default
    thread limit) kept ~30 MiB of RSS after a burst of first downloads (bench W5).
    """
    session.server_busy += 1
    try:
        return await trio.to_thread.run_sync(function, *args, limiter=session.shared.hash_limiter)
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


def _check_right(session: StreamSession, request: Message) -> None:
    right = RIGHT_OF_REQUEST.get(type(request))
    if right is not None and not session.user.may(right):
        raise Refusal(ErrorCode.PERMISSION_DENIED, f"user {session.user.name!r} has no {right.value!r} right")


def _name_of(request: Message) -> str:
    if isinstance(request, Rename):
        return f"{request.old} -> {request.new}"
    if isinstance(request, List):
        return request.folder
    return getattr(request, "name", "")


# ---------------------------------------------------------------------- GET


async def _get(session: StreamSession, request: Get, inbox: StreamInbox, record: TransferRecord) -> None:
    storage, channel, stream_id = session.storage, session.channel, request.stream_id
    handle = await _store_work(session, storage.open_read, request.name)
    try:
        facts = handle.facts
        size = facts.size
        if request.offset > size:
            raise Refusal(ErrorCode.BAD_REQUEST, f"offset {request.offset} is past the end ({size})")
        end = size if request.length is None else min(size, request.offset + request.length)
        algorithm = channel.machine.digest
        digest = handle.cached_digest(algorithm)
        if digest is None and size <= INLINE_HASH_LIMIT:
            digest = await _store_work(session, handle.digest, algorithm)
        info = file_info(stream_id, facts, digest)
        if digest is not None and end - request.offset <= min(SMALL_FILE_LIMIT, _initial_credit(session)):
            await channel.wait_for_room()  # read nothing into memory that could not be sent now
            budget, need = session.shared.send_budget, end - request.offset
            granted = session.take_send_ticket()  # what the runner waited for, if it did
            if granted >= need:
                budget.release(granted - need, group=session.address)
                granted = need
            else:
                budget.release(granted, group=session.address)
                granted = await _reserve(session, budget, need, "to send")
            # From here the reservation is the channel's to give back, once the bytes are written:
            # the task ends as soon as its answer is buffered (see Channel.send_detached).
            release = functools.partial(budget.release, granted, group=session.address)
            try:
                # Kept past the next read, which a view need not be: bytes() copies a view
                # (64 KiB at most) and returns bytes as they are.
                payload = bytes(await _store_work(session, handle.read, request.offset, end - request.offset))
            except BaseException:
                release()
                raise
            handle.close()  # the task writing this answer to a slow peer holds no file
            end_message = End(size=size, digest=digest, stream_id=stream_id)
            # FILE_INFO, DATA and END in one write: one syscall and no Nagle stall
            # between a header and its body.
            data = Data(payload=payload, stream_id=stream_id)
            await channel.send_detached(info, data, end_message, on_written=release)
            record.bytes = len(payload)
            record.digest = digest
            return
        if not await channel.send_if_open(info):
            return
        if digest is None:
            # Hash on a worker thread while sendfile moves the same pages: the
            # digest costs no extra wall time on a second core.
            _, digest = await both(
                lambda: _send_body(session, inbox, handle, request.offset, end, record),
                lambda: _hashing_work(session, handle.digest, algorithm),
            )
        else:
            await _send_body(session, inbox, handle, request.offset, end, record)
        if inbox.cancelled:
            return
        if not await _store_work(session, handle.unchanged):
            raise Refusal(ErrorCode.BUSY, "the file changed while being sent; try again")
        await channel.send_if_open(End(size=size, digest=digest, stream_id=stream_id))
        record.digest = digest
    finally:
        handle.close()


async def _read_piece(
    session: StreamSession, handle: ReadHandle, position: int, count: int
) -> bytes | memoryview:
    """Read inline what the store says it holds in memory already (`ready`, S3's read-ahead)."""
    if handle.ready(position, count):
        return handle.read(position, count)
    return await _server_work(session, handle.read, position, count)


def _initial_credit(session: StreamSession) -> int:
    hello = session.channel.machine.peer_hello
    assert hello is not None
    return min(hello.initial_window, hello.max_frame_size)


async def _send_body(
    session: StreamSession,
    inbox: StreamInbox,
    handle: ReadHandle,
    start: int,
    end: int,
    record: TransferRecord,
) -> int:
    channel, stream_id = session.channel, inbox.stream_id
    fd = handle.fileno()
    position = start
    while position < end and not inbox.cancelled:
        credit = channel.machine.send_credit(stream_id)
        if credit == 0:
            await inbox.wait_change()
            continue
        count = min(credit, end - position)
        if fd is not None:
            try:
                sent = await channel.send_file_data(stream_id, fd, position, count)
            except FileChanged:
                raise Refusal(ErrorCode.BUSY, "the file shrank while being sent; try again") from None
        else:
            count = min(count, READ_PIECE)
            async with _reserved(session, session.shared.send_budget, count, "to send"):
                piece = await _read_piece(session, handle, position, count)
                sent = await channel.send_data(stream_id, piece)
        if not sent:
            break
        position += count
        record.bytes = position - start  # as it goes, so a cut transfer logs what it sent
    return position - start


# ---------------------------------------------------------------------- PUT


async def _put(session: StreamSession, request: Put, inbox: StreamInbox, record: TransferRecord) -> None:
    channel, stream_id = session.channel, request.stream_id
    algorithm = channel.machine.digest
    # The short-cut answers whether the file holds the bytes of the given digest:
    # a user who may not read the file must not learn that by guessing.
    if request.digest is not None and session.user.may(Right.READ) and _may_be_there(session, request):
        existing = await _hashing_work(session, _identical_facts, session, request, algorithm)
        if existing is not None:
            record.result = "identical file already there"
            record.digest = existing.digest
            await channel.send_if_open(file_info(stream_id, existing))
            return
    window = channel.machine.settings.initial_window
    # The client gets more credit only once half our window is written: with
    # a window under two blocks, waiting for a whole block would stall both.
    block = min(WRITE_BLOCK, max(1, window // 2))
    # The sink holds at most the window (flow control) plus the block being filled.
    need = min(window + block, request.size)
    if session.upload_share is None:
        total = session.shared.config.upload_memory
        session.upload_share = ByteBudget(max(window + block, total // CONNECTION_SHARE))
    # First this connection's share: a wait behind its own uploads, which the peer
    # moves (or the rate checks end), so it is not counted as the server's slowness.
    async with (
        session.upload_share.reserve(need),
        _reserved(session, session.shared.upload_budget, need, "for uploads"),
    ):
        await _receive_upload(session, request, inbox, record, block)


@asynccontextmanager
async def _reserved(session: StreamSession, budget: ByteBudget, amount: int, use: str) -> AsyncIterator[None]:
    """Reserve buffer memory from a server-wide budget, waiting in turn; BUSY if none comes in time.

    The wait is the server's slowness, not the peer's, so the rate check skips it;
    and it ends after `min_rate_window`: by then every holder has either moved
    bytes at `min_rate` or been dropped, so a longer wait is the server at capacity.
    """
    amount = await _reserve(session, budget, amount, use)
    try:
        yield
    finally:
        budget.release(amount, group=session.address)


async def _reserve(session: StreamSession, budget: ByteBudget, amount: int, use: str) -> int:
    """What _reserved does on entry: returns the amount granted, for the caller to release."""
    patience = session.shared.config.min_rate_window
    granted = budget.acquire_now(amount, group=session.address)  # no scheduler pass when there is room
    if granted is None:
        session.server_busy += 1
        try:
            granted = await budget.acquire(amount, group=session.address, patience=patience)
        except BudgetTimeout:
            message = f"the server has no memory free {use} (waited {patience:g} s); try again later"
            raise Refusal(ErrorCode.BUSY, message) from None
        finally:
            session.server_busy -= 1
    return granted


async def _receive_upload(
    session: StreamSession, request: Put, inbox: StreamInbox, record: TransferRecord, block: int
) -> None:
    storage, channel, stream_id = session.storage, session.channel, request.stream_id

    def begin() -> Upload:
        return storage.begin_upload(
            request.name, request.size, algorithm=channel.machine.digest, digest=request.digest,
            resume=request.resume,
        )  # fmt: skip

    # On a quick store an upload starts with a few opens, inline; a resume also hashes the
    # prefix it holds, on a thread unless it is small (as a GET hashes a small file).
    inline = storage.quick and (not request.resume or request.size <= INLINE_HASH_LIMIT)
    upload = begin() if inline else await _server_work(session, begin)
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
        config = session.shared.config
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
                    raise Refusal(ErrorCode.BUSY, f"upload {slow}: its memory is given back; resume it later")
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
                    raise Refusal(ErrorCode.BAD_REQUEST, f"more than the announced {upload.size} bytes")
                if payload:
                    writer.submit(memoryview(payload))  # acknowledged once written
                record.bytes += len(payload)
            elif isinstance(piece, End):
                keep = False
                await writer.finish()
                facts = await _server_work(session, upload.commit, piece.size, piece.digest, request.mtime_ns)
                record.digest = facts.digest
                await channel.send_if_open(file_info(stream_id, facts))
                return
            elif isinstance(piece, Cancel):
                return
    except StorageError as exc:
        keep = keep and exc.problem not in (Problem.NO_SPACE, Problem.CHECKSUM_MISMATCH, Problem.BAD_REQUEST)
        raise
    except Refusal as exc:
        keep = keep and exc.code is not ErrorCode.BAD_REQUEST
        raise
    finally:
        if keep:
            # A cut upload is kept for its resume: with what it received and queued too, as
            # when every block was written before the next (at most a window, on the disk).
            # A failed write raises here: what was written stays.
            with trio.CancelScope(shield=True), trio.move_on_after(KEEP_QUEUED_PATIENCE), suppress(Exception):
                await writer.finish()
        await writer.stop()  # the thread no longer touches the file
        channel.remove_sink(stream_id)
        upload.abort(keep=keep)


def _count_busy(session: StreamSession, change: int) -> None:
    session.server_busy += change  # blocks waiting for our disk: the rate watchdog's time is ours


def _may_be_there(session: StreamSession, request: Put) -> bool:
    """False if a quick store's stat shows no file of that size (most PUTs): no thread hop to hash."""
    if not session.storage.quick:
        return True  # a stat is a round trip there: `identical` makes it on its thread
    try:
        facts = session.storage.stat(request.name)
    except StorageError:
        return False  # missing, or not reachable: `identical` would find nothing either
    return facts.kind is Kind.FILE and facts.size == request.size


def _identical_facts(session: StreamSession, request: Put, algorithm: str) -> FileFacts | None:
    """The facts of the target if it already holds exactly these bytes."""
    assert request.digest is not None
    try:
        return session.storage.identical(
            request.name, request.size, request.digest, algorithm, request.mtime_ns
        )
    except StorageError:
        return None


# --------------------------------------------------------------- the others


async def _list(session: StreamSession, request: List) -> None:
    hello = session.channel.machine.peer_hello
    assert hello is not None
    kinds = FEATURE_ENTRY_KINDS in hello.features  # else the kinds an older client knows (spec 11.3)
    listed = await _server_work(session, session.storage.list, request.folder)
    entries = [line for line in (entry(item, kinds=kinds) for item in listed) if line is not None]
    stream_id = request.stream_id
    # Each frame must fit the client's max_frame_size, which may be as low as 16 KiB.
    per_frame = max(1, min(LISTING_CHUNK, (hello.max_frame_size - 64) // ENTRY_MAX_BYTES))
    chunks = [entries[i : i + per_frame] for i in range(0, len(entries), per_frame)] or [[]]
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        if not await session.channel.send_if_open(Listing(entries=chunk, last=last, stream_id=stream_id)):
            return


async def _stat(session: StreamSession, request: Stat) -> None:
    storage, algorithm = session.storage, session.channel.machine.digest
    facts = await _server_work(session, storage.stat, request.name, algorithm)
    # The digest is content information: `list` alone gives only name, kind, size and time.
    if facts.kind is Kind.FILE and session.user.may(Right.READ):
        if facts.digest is None:
            facts = attrs.evolve(
                facts, digest=await _hashing_work(session, _digest_by_name, session, request.name, algorithm)
            )
    else:
        facts = attrs.evolve(facts, digest=None)
    await session.channel.send_if_open(file_info(request.stream_id, facts))


def _digest_by_name(session: StreamSession, name: str, algorithm: str) -> bytes:
    handle = session.storage.open_read(name)
    try:
        return handle.digest(algorithm)
    finally:
        handle.close()


async def _status(session: StreamSession, request: Status) -> None:
    shared = session.shared
    if shared.users is not None and not session.user.admin:
        raise Refusal(ErrorCode.PERMISSION_DENIED, "STATUS is for administrators")
    metrics = shared.metrics
    uptime, connections = shared.status()
    info = StatusInfo(
        agent=shared.agent, uptime_ms=int(uptime * 1000), connections=connections,
        transfers=metrics.running, bytes_received=metrics.received, bytes_sent=metrics.sent,
        stream_id=request.stream_id,
    )  # fmt: skip
    await session.channel.send_if_open(info)


async def _change(session: StreamSession, request: Delete | Rename | Mkdir) -> None:
    storage = session.storage
    if isinstance(request, Delete):
        await _server_work(session, storage.delete, request.name)
    elif isinstance(request, Rename):
        await _server_work(session, lambda: storage.rename(request.old, request.new, replace=request.replace))
    else:
        await _server_work(session, storage.mkdir, request.name)
    await session.channel.send_if_open(Done(stream_id=request.stream_id))
