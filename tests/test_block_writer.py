"""BlockWriter: blocks written in order on one thread, each reported back once written."""

from __future__ import annotations

import threading

import pytest
import trio

from trioftp.transport.writer import BlockWriter


async def test_blocks_are_written_in_order_on_one_thread_and_reported() -> None:
    written: list[bytes] = []
    threads: set[int] = set()
    reported: list[bytes] = []
    stopped = trio.Event()

    def write(block: memoryview) -> None:
        threads.add(threading.get_ident())
        written.append(bytes(block))

    writer = BlockWriter(write, on_written=lambda b: reported.append(bytes(b)), on_stopped=stopped.set)
    blocks = [bytes([i]) * 1000 for i in range(20)]
    for block in blocks:
        writer.submit(memoryview(block))
    await writer.finish()
    assert written == blocks
    assert reported == blocks  # every block is reported before the end
    assert stopped.is_set()
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_a_failed_write_stops_the_thread_and_is_raised() -> None:
    woken = trio.Event()

    def write(block: memoryview) -> None:
        if block[0] == 2:
            raise OSError(28, "No space left on device")

    writer = BlockWriter(write, on_written=lambda _b: None, on_stopped=woken.set)
    for i in range(5):
        writer.submit(memoryview(bytes([i])))
    await woken.wait()
    assert isinstance(writer.error, OSError)
    with pytest.raises(OSError, match="No space"):
        await writer.finish()


async def test_stop_drops_what_is_queued_and_waits_for_the_thread_even_when_cancelled() -> None:
    written: list[int] = []
    started, release = threading.Event(), threading.Event()

    def write(block: memoryview) -> None:
        started.set()
        release.wait(5)
        written.append(block[0])

    writer = BlockWriter(write, on_written=lambda _b: None, on_stopped=lambda: None)
    for i in range(3):
        writer.submit(memoryview(bytes([i])))
    await trio.to_thread.run_sync(started.wait, 5)
    with trio.CancelScope() as scope:
        scope.cancel()
        release.set()
        await writer.stop()  # shielded: returns only once the thread has ended
    assert written == [0]  # the block being written is finished; the rest are dropped
    assert not writer.running


async def test_a_writer_given_nothing_starts_no_thread() -> None:
    writer = BlockWriter(lambda _b: None, on_written=lambda _b: None, on_stopped=lambda: None)
    await writer.finish()
    await writer.stop()
    assert not writer.running


async def test_a_small_transfer_is_written_inline_without_a_thread() -> None:
    from trioftp.transport.inbox import StreamInbox
    from trioftp.transport.sink import BlockSink
    from trioftp.transport.writer import INLINE_LIMIT, SinkWriter

    threads: list[int] = []
    inbox = StreamInbox(1)
    sink = BlockSink(4096, inbox.notify)
    writer = SinkWriter(sink, inbox, lambda _b: threads.append(threading.get_ident()), size=INLINE_LIMIT)
    writer.submit(memoryview(b"x" * 100))
    assert threads == [threading.get_ident()]  # written at once, in this thread
    assert writer.unacknowledged == 100 and writer.take() == 100 and not writer.news()
    await writer.finish()
