"""The buffers downloads read their ranges into, filled again range after range, and their memory.

A download reads ranges ahead of the client, each into pieces the server then
sends as they are. New pieces for every range cost more than their bytes: the
server maps blocks this large fresh from the OS (a page fault per page as the
socket fills them) and unmaps them when freed; a quarter of the server's CPU
in a download went there. So the buffers of ranges done with are read into
again, by the same download or the next one (one pool per store).

Accounting: a range counts min(its size, the limit) against the store's
`Memory` from when it is taken; once done with, its buffers and its count stay
in the pool for the next range, as `PartBuffers` keeps an upload's spare parts,
unless somebody waits for room: then the count goes back at once. Whenever a
taker finds no room, the pool gives back all it keeps (`Memory.reclaim_with`),
so idle spares never keep an upload or another download waiting.
"""

from __future__ import annotations

import threading

import attrs

from trioftp.storage.s3.memory import Memory


@attrs.define
class Range:
    """The buffers one range is read into, and the bytes it counts against the store's memory."""

    buffers: list[bytearray]
    counted: int
    missing: int = 0  # buffers still to make, of `piece` bytes
    piece: int = 0

    def made(self) -> list[bytearray]:
        """The buffers, the missing ones made now: by the thread that fills them, not the event loop."""
        self.buffers += [bytearray(self.piece) for _ in range(self.missing)]
        self.missing = 0
        return self.buffers


class RangeBuffers:
    """Buffers of `piece` bytes for the ranges of a store's downloads.

    Args:
        memory: the store's budget.
        piece: the size of each buffer.
        most: the most spare buffers kept (the buffers of one download's ranges read ahead at once).
    """

    def __init__(self, memory: Memory, piece: int, most: int) -> None:
        self._memory = memory
        self._piece = piece
        self._most = most
        self._spares: list[bytearray] = []
        self._counted = 0  # of the store's memory, held for the spares
        self._lock = threading.Lock()
        self._closed = False
        memory.reclaim_with(self.release)

    def take(self, size: int, *, wait: bool) -> Range | None:
        """Buffers for a range of `size` bytes, counted; None if there is no room now and not `wait`.

        Raises:
            StorageError: UNAVAILABLE if `wait` and no room came in time (trioftp.storage.s3.memory).
        """
        need = min(size, self._memory.limit)
        with self._lock:
            kept = min(need, self._counted)
            self._counted -= kept
        more = need - kept
        try:
            if more and not wait and not self._memory.try_take(more):
                with self._lock:
                    self._counted += kept
                return None
            if more and wait:
                self._memory.take(more, what="a download")
        except BaseException:
            self._give_count(kept)
            raise
        count = -(-size // self._piece)
        with self._lock:
            buffers = self._spares[len(self._spares) - min(count, len(self._spares)) :]
            del self._spares[len(self._spares) - len(buffers) :]
        return Range(buffers, need, missing=count - len(buffers), piece=self._piece)

    def give(self, done: Range) -> None:
        """A range is done with (its read over): keep its buffers and count for the next, or give back."""
        with self._lock:
            if not self._closed and not self._memory.waiting:
                self._spares += done.buffers
                del self._spares[self._most :]
                self._counted += done.counted
                return
        self._memory.give(done.counted)

    def _give_count(self, amount: int) -> None:
        with self._lock:
            if not self._closed:
                self._counted += amount
                return
        self._memory.give(amount)

    @property
    def counted(self) -> int:
        """The bytes of the store's memory the spares hold now."""
        with self._lock:
            return self._counted

    def release(self) -> None:
        """Give back what the spares hold (and drop them)."""
        with self._lock:
            counted, self._counted = self._counted, 0
            self._spares = []
        if counted:
            self._memory.give(counted)

    def close(self) -> None:
        """Give back what the spares hold; ranges still being read give theirs back when done."""
        with self._lock:
            self._closed = True
        self.release()
