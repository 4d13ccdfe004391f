"""The bytearrays an upload fills its parts in, used again, and the memory they count against.

A new bytearray of a part's size costs more than its bytes: the server maps
blocks this large fresh from the OS (a page fault per page as it is first
written) and unmaps them when freed. An upload therefore keeps a few buffers
whose parts were sent and fills them again.

Accounting: a part's buffer counts against the store's `Memory` from the
moment it is sent; once its part is done, it either goes back (as before), or
stays counted while it waits as a spare to be filled again. A spare is kept
only while nobody waits for room, so under pressure buffers are given back
as soon as their parts are done, and one busy upload never starves another.
"""

from __future__ import annotations

import threading

from trioftp.storage.s3.memory import Memory


class PartBuffers:
    """Buffers of `size` bytes for one upload's parts.

    Args:
        memory: the store's budget.
        size: the part size.
        spares: the most kept at once (parts in flight finish in bursts: as many as may be in flight).
    """

    def __init__(self, memory: Memory, size: int, spares: int) -> None:
        self._memory = memory
        self._size = size
        self._most = spares
        self._spares: list[bytearray] = []  # each one counted in `memory`
        self._lock = threading.Lock()
        self._closed = False

    def fresh(self) -> tuple[bytearray, bool]:
        """A buffer to fill, and whether it is counted already (a spare) or not (a new one)."""
        with self._lock:
            if self._spares:
                return self._spares.pop(), True
        return bytearray(self._size), False

    def sending(self, buffer: bytearray, counted: bool) -> None:
        """Count a part about to be sent (waiting for room), unless its buffer is counted already.

        Raises:
            StorageError: UNAVAILABLE if no room came in time (trioftp.storage.s3.memory).
        """
        if not counted:
            self._memory.take(len(buffer), what="an upload's parts")

    def done(self, buffer: bytearray) -> None:
        """A part is over (sent or failed): keep its buffer as a spare, or give its memory back."""
        with self._lock:
            keep = (
                not self._closed
                and len(buffer) == self._size
                and len(self._spares) < self._most
                and not self._memory.waiting
            )
            if keep:
                self._spares.append(buffer)
                return
        self._memory.give(len(buffer))

    def put_back(self, buffer: bytearray, counted: bool) -> None:
        """A buffer taken by `fresh` and not sent: back as a spare if counted, else dropped."""
        if counted:
            self.done(buffer)

    def close(self) -> None:
        """Give the spares' memory back; buffers of parts still in flight go back when `done`."""
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for buffer in spares:
            self._memory.give(len(buffer))
