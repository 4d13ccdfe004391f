"""One transfer's DATA payload, received straight into reusable block buffers.

The connection's reader (`Channel`) reads a DATA frame's payload from the socket
into the sink's current block (`space()`, then `filled()`): one copy, kernel to
block. The transfer's task takes each full block (`next_piece()`), writes and
hashes it on a worker thread, then gives it back (`release()`), so two blocks
alternate: one is filled while the other is written. A slow disk makes the sink
allocate more, up to the flow-control window the task grants, which bounds
them (as it bounded the queued Data messages before). The blocks belong to the
transfer: an idle connection holds none.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from trioftp.protocol.messages import Data, End, Message
from trioftp.transport.inbox import StreamInbox


class BlockPool:
    """Written blocks of one size kept for the process's next transfers, up to `max_blocks`.

    A new 1 MiB block is paged in again by the first bytes read into it; a
    client that downloads many files spends a tenth of its CPU on that. Only
    blocks that nothing else can still touch come here (see BlockSink.close),
    and only of `block_size`: blocks cut to a small file's size would fill the
    pool and never serve a full-size transfer.
    """

    def __init__(self, block_size: int, max_blocks: int) -> None:
        self.block_size = block_size
        self.max_blocks = max_blocks
        self._blocks: list[bytearray] = []
        self._lock = threading.Lock()  # Trio loops in several threads may share one pool

    @property
    def held(self) -> int:
        """Bytes kept now."""
        return len(self._blocks) * self.block_size

    def take(self, size: int) -> bytearray | None:
        if size != self.block_size:
            return None
        with self._lock:
            return self._blocks.pop() if self._blocks else None

    def give(self, block: bytearray) -> None:
        if len(block) != self.block_size:
            return
        with self._lock:
            if len(self._blocks) < self.max_blocks:
                self._blocks.append(block)


class BlockSink:
    """Blocks of one stream's DATA payload, filled by the reader, taken by the stream's task.

    Args:
        block_size: bytes per block.
        wake: called when a block is full (the stream task's inbox.notify).
        limit: the payload bytes the transfer expects; once more arrive, the
            task is woken at once (its next piece holds the excess), so it
            refuses the transfer without waiting for a full block or END.
        pool: where blocks come from and go back to when the transfer ends;
            None: fresh blocks, dropped at the end (memory goes back at once).
    """

    def __init__(
        self,
        block_size: int,
        wake: Callable[[], None],
        *,
        limit: int | None = None,
        pool: BlockPool | None = None,
    ) -> None:
        self.block_size = block_size
        self.limit = limit
        self.pool = pool
        self.received = 0  # payload bytes filled in so far
        self.closed = False
        self._wake = wake
        self._block: bytearray | None = None  # being filled
        self._fill = 0
        self._full: deque[memoryview] = deque()
        # Written blocks, to fill again: all of them, not one, so a reader that ran
        # ahead of the writer does not page in fresh blocks (bounded by the window).
        self._spares: list[bytearray] = []
        # A block cut short while more payload than expected was arriving: the
        # reader may still hold a view of it (its read waits for the socket), so
        # it is never filled again, here or through the pool.
        self._cut: bytearray | None = None

    def space(self) -> memoryview:
        """Where the next payload bytes go (never empty). Only for an open sink."""
        block = self._block
        if block is None:
            block = (
                (self._spares and self._spares.pop())
                or (self.pool and self.pool.take(self.block_size))
                or bytearray(self.block_size)
            )
            self._block, self._fill = block, 0
        return memoryview(block)[self._fill :]

    def filled(self, n: int) -> None:
        """`n` bytes were written at the start of the last `space()`."""
        if self.closed or not n:
            return
        assert self._block is not None and self._fill + n <= len(self._block)
        self._fill += n
        self.received += n
        if self._fill == len(self._block):
            self._complete()
            self._wake()
        elif self.over_limit:
            self._wake()

    @property
    def over_limit(self) -> bool:
        """More payload arrived than the transfer expects."""
        return self.limit is not None and self.received > self.limit

    def take(self) -> memoryview | None:
        """The oldest full block, or None."""
        return self._full.popleft() if self._full else None

    def take_rest(self) -> memoryview | None:
        """The oldest full block, else the one being filled (the payload has ended), or None."""
        if not self._full and self._fill:
            self._complete()
        return self.take()

    def release(self, block: memoryview) -> None:
        """The task is done with a block from `take()`: it may be filled again."""
        if not isinstance(block.obj, bytearray) or block.obj is self._cut:
            return
        if self.closed:
            if self.pool is not None:
                self.pool.give(block.obj)
        else:
            self._spares.append(block.obj)

    def close(self) -> None:
        """Drop the blocks; the reader fills nothing more.

        Only the spares go back to the pool now: the reader may still hold a
        view of the block being filled (across its wait for the socket), so it
        is dropped; a full block in the task's hands goes back when the task
        releases it.
        """
        self.closed = True
        if self.pool is not None:
            for spare in self._spares:
                self.pool.give(spare)
        self._block = None
        self._spares.clear()
        self._full.clear()

    def _complete(self) -> None:
        assert self._block is not None
        if self.over_limit and self._fill < len(self._block):
            self._cut = self._block
        self._full.append(memoryview(self._block)[: self._fill])
        self._block, self._fill = None, 0


async def next_piece(inbox: StreamInbox, sink: BlockSink) -> memoryview | Message:
    """The stream's next piece in wire order: a block of payload from the sink, or a message.

    Data messages still in the inbox (they arrived before the sink was added, or
    were empty) precede every byte in the sink; every other message follows
    them. An END, or more payload than the sink's limit, first takes the block
    being filled. Release a block with `sink.release()` once it is written.

    Raises:
        whatever the inbox was failed with (the connection is gone).
    """
    piece = await next_piece_or_news(inbox, sink, lambda: False)
    assert piece is not None
    return piece


async def next_piece_or_news(
    inbox: StreamInbox, sink: BlockSink, news: Callable[[], bool]
) -> memoryview | Message | None:
    """Like next_piece, but returns None when the inbox is woken and `news()` is true.

    For a task that also waits on other work reported through `inbox.notify()`
    (blocks written by a BlockWriter, to be acknowledged).
    """
    while True:
        if news():
            return None
        head = inbox.peek()
        if isinstance(head, Data):
            return await inbox.get()
        block = sink.take_rest() if isinstance(head, End) or sink.over_limit else sink.take()
        if block is not None:
            return block
        if head is not None:
            return await inbox.get()
        try:
            await inbox.wait_change()
        except Exception as exc:
            # The peer's last frames (END, then its close) can come in one read: what
            # came before the connection ended is still this stream's, in order.
            if exc is inbox.failure and inbox.pending:
                continue
            raise
