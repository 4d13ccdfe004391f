"""One transfer's received blocks, written to disk in order by one worker thread that stays.

Writing each block with its own `trio.to_thread.run_sync` put a thread hop
(thread start, GIL hand-over, wake-up of the loop, task switch) between every
two writes: the task waited for a block's write before taking the next one,
so blocks piled up unwritten, the credit the peer needs came back late, and
the peer sat idle with the socket empty (bench/RESULTS.md, issue 13: the
reader waited for data half the time). Here the thread takes blocks from a
queue as they are handed over and writes them back to back; each written
block is reported to the Trio thread (`on_written`), which gives it back to
the sink and acknowledges it, while the next one is already being written.

Memory stays bounded as before: a block is acknowledged (its credit returned)
only once written, so the blocks queued here never exceed the flow-control window.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import outcome
import trio

from trioftp.transport.inbox import StreamInbox
from trioftp.transport.sink import BlockSink

_STOP = None
# A transfer this small is written in the Trio thread: a page-cache write of a few KiB
# takes microseconds, less than starting the writer thread and hearing back from it.
INLINE_LIMIT = 64 * 1024


class BlockWriter:
    """Write blocks in order on one worker thread; report each to the Trio thread once written.

    Args:
        write: the blocking work for one block (write it, hash it); runs on the thread.
        on_written: called in the Trio thread with each block once `write` returned.
        on_stopped: called in the Trio thread when the thread has ended (done or failed),
            to wake the task that waits on the transfer.

    Example:
        writer = BlockWriter(write_block, on_written=done, on_stopped=inbox.notify)
        try:
            for block in blocks:
                writer.submit(block)
            await writer.finish()  # raises what `write` raised
        finally:
            await writer.stop()
    """

    def __init__(
        self,
        write: Callable[[memoryview], object],
        *,
        on_written: Callable[[memoryview], None],
        on_stopped: Callable[[], None],
    ) -> None:
        self._write = write
        self._on_written = on_written
        self._on_stopped = on_stopped
        self._queue: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stopped: trio.Event | None = None
        self._abandon = False  # read by the thread before each block: drop the rest
        self.error: BaseException | None = None  # what `write` raised; the thread stopped there

    @property
    def running(self) -> bool:
        """The thread was started and has not ended yet."""
        return self._stopped is not None and not self._stopped.is_set()

    def submit(self, block: memoryview) -> None:
        """Queue a block to be written after those queued before it (starts the thread at first)."""
        if self._stopped is None:
            self._token = trio.lowlevel.current_trio_token()
            self._stopped = trio.Event()
            trio.lowlevel.start_thread_soon(self._run, self._deliver, name="trioftp block writer")
        self._queue.put(block)

    async def finish(self) -> None:
        """Wait until every queued block is written; raise what the write raised, if it failed."""
        if self._stopped is not None:
            self._queue.put(_STOP)
            await self._stopped.wait()
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        """Drop the blocks not written yet, and wait, even if cancelled, until the thread has ended.

        For a `finally`: the file may be closed only once the thread no longer
        touches it, and that is at most one block's write away. A transfer that
        stops early stops at once (its CANCEL is not held up behind the queue);
        what was written (and reported) stays.
        """
        if self._stopped is None or self._stopped.is_set():
            return
        self._abandon = True
        self._queue.put(_STOP)
        with trio.CancelScope(shield=True):
            await self._stopped.wait()

    # In the worker thread.

    def _run(self) -> None:
        assert self._token is not None
        while True:
            block = self._queue.get()
            if block is _STOP or self._abandon:
                return
            self._write(block)
            self._token.run_sync_soon(self._written, block)

    def _deliver(self, result: outcome.Outcome[None]) -> None:
        assert self._token is not None
        self._token.run_sync_soon(self._ended, result)

    # Back in the Trio thread.

    def _written(self, block: memoryview) -> None:
        if not self._abandon:
            self._on_written(block)

    def _ended(self, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error):
            self.error = result.error
        assert self._stopped is not None
        self._stopped.set()
        self._on_stopped()


class SinkWriter:
    """A BlockWriter for one transfer's BlockSink: each block written goes back to the sink,
    and its bytes wait in `unacknowledged` for the task to return their credit.

    Args:
        sink: where the blocks came from (and go back to, once written).
        inbox: the stream's inbox, notified when there is something to acknowledge
            or the writer failed.
        write: the blocking work for one block, on the writer thread.
        busy: called with +1 when blocks start waiting for the disk and -1 when none
            wait any more: the time between is the server's, not the peer's (rate checks).
        size: the bytes the transfer will bring, if known: up to `inline_limit`, `write`
            runs at once in the Trio thread, and no thread is started.
        inline_limit: see `size` (INLINE_LIMIT unless the caller knows better).

    The task loop: `if w.unacknowledged: acknowledge(w.take())`, then
    `next_piece_or_news(inbox, sink, w.news)`, `w.submit(block)` for each block,
    `await w.finish()` after the last, and `await w.stop()` in a finally.
    """

    def __init__(
        self,
        sink: BlockSink,
        inbox: StreamInbox,
        write: Callable[[memoryview], object],
        *,
        busy: Callable[[int], None] | None = None,
        size: int | None = None,
        inline_limit: int = INLINE_LIMIT,
    ) -> None:
        self.unacknowledged = 0
        self._inline = write if size is not None and size <= inline_limit else None
        self.pending = 0  # blocks handed over and not written yet
        self._sink, self._inbox, self._busy = sink, inbox, busy
        self._writer = BlockWriter(write, on_written=self._written, on_stopped=inbox.notify)

    def submit(self, block: memoryview) -> None:
        """Hand a block over to be written (inline: write it now, raising what the write raises)."""
        if self._inline is not None:
            self._inline(block)
            self.unacknowledged += len(block)
            self._sink.release(block)
            return
        self.pending += 1
        if self.pending == 1 and self._busy is not None:
            self._busy(1)
        self._writer.submit(block)

    def news(self) -> bool:
        """Something for the task: bytes to acknowledge, or a failed write (raised here)."""
        if self._writer.error is not None:
            raise self._writer.error
        return self.unacknowledged > 0

    def take(self) -> int:
        """The bytes written since the last take: acknowledge them."""
        n, self.unacknowledged = self.unacknowledged, 0
        return n

    async def finish(self) -> None:
        await self._writer.finish()

    async def stop(self) -> None:
        await self._writer.stop()
        if self.pending and self._busy is not None:  # the thread failed with blocks still queued
            self._busy(-1)
        self.pending = 0

    def _written(self, block: memoryview) -> None:
        self.pending -= 1
        if self.pending == 0 and self._busy is not None:
            self._busy(-1)
        self.unacknowledged += len(block)
        self._sink.release(block)
        self._inbox.notify()
