"""The bytes an S3 store holds in flight (parts being sent, ranges read ahead), bounded store-wide.

A multipart upload sends parts while the next fills, and a download reads
ranges ahead of the client: both hold whole parts in memory, outside the
server's `upload_memory` and `send_memory`. Without a bound, every upload and
download at once multiplies that; with one, a part waits for room (the client
then waits for flow-control credit), and a read-ahead that finds no room is
simply not made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from trioftp.storage.interface import Problem, StorageError

DEFAULT_MEMORY = 256 * 2**20
PATIENCE = 60.0  # seconds a part waits for room before the upload ends with BUSY


class Memory:
    """A byte budget shared by the threads of one store (and its views)."""

    def __init__(self, limit: int = DEFAULT_MEMORY) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most held at once, for tests and logs
        self.waiting = 0  # takers waiting for room now
        self._room = threading.Condition()
        # Called (with no room for a taker) to give back memory held only to be used again.
        self._reclaimers: list[Callable[[], None]] = []

    def reclaim_with(self, reclaim: Callable[[], None]) -> None:
        """Have `reclaim()` give back memory held idle whenever a taker finds no room."""
        self._reclaimers.append(reclaim)

    def _reclaim(self) -> None:
        for reclaim in self._reclaimers:
            reclaim()

    def take(self, amount: int, *, what: str, patience: float = PATIENCE) -> None:
        """Hold `amount` bytes, waiting for room; one request larger than the limit gets all of it.

        Raises:
            StorageError: UNAVAILABLE (the client hears BUSY) if no room came within `patience`.
        """
        amount = min(amount, self.limit)
        deadline = time.monotonic() + patience
        if self.held + amount > self.limit:
            self._reclaim()
        with self._room:
            while self.held + amount > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageError(
                        Problem.UNAVAILABLE,
                        f"the server's memory for the object store is in use ({what}); try again later",
                    )
                self.waiting += 1
                try:
                    # Again once counted as waiting: memory kept idle after the first reclaim
                    # (a spare kept while nobody waited yet) would otherwise stay kept.
                    self._reclaim()
                    if self.held + amount <= self.limit:
                        break
                    self._room.wait(left)
                finally:
                    self.waiting -= 1
            self._hold(amount)

    def try_take(self, amount: int) -> bool:
        """Hold `amount` bytes if there is room now, else nothing."""
        amount = min(amount, self.limit)
        if self.held + amount > self.limit:
            self._reclaim()
        with self._room:
            if self.held + amount > self.limit:
                return False
            self._hold(amount)
            return True

    def give(self, amount: int) -> None:
        amount = min(amount, self.limit)
        with self._room:
            self.held -= amount
            self._room.notify_all()

    def _hold(self, amount: int) -> None:
        self.held += amount
        self.peak = max(self.peak, self.held)
