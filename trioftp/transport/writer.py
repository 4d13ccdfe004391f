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

_STOP = None


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
        """Wait, even if cancelled, until the thread has written what is queued and ended.

        For a `finally`: the file may be closed only once the thread no longer
        touches it. What was received is written rather than dropped (a partial
        download keeps it for a resume); the flow-control window bounds it.
        """
        if self._stopped is None or self._stopped.is_set():
            return
        self._queue.put(_STOP)
        with trio.CancelScope(shield=True):
            await self._stopped.wait()

    # In the worker thread.

    def _run(self) -> None:
        assert self._token is not None
        while True:
            block = self._queue.get()
            if block is _STOP:
                return
            self._write(block)
            self._token.run_sync_soon(self._written, block)

    def _deliver(self, result: outcome.Outcome[None]) -> None:
        assert self._token is not None
        self._token.run_sync_soon(self._ended, result)

    # Back in the Trio thread.

    def _written(self, block: memoryview) -> None:
        self._on_written(block)

    def _ended(self, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error):
            self.error = result.error
        assert self._stopped is not None
        self._stopped.set()
        self._on_stopped()
