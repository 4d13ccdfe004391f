"""A server-wide budget of bytes, taken by transfers in turn: what bounds upload buffer memory.

Each upload's buffers can hold up to its flow-control window (the bytes the
client may send before the server writes them). Per upload that is bounded,
but a thousand connections with a hundred uploads each are not. Every upload
reserves its share from one budget before the server answers READY, and
gives it back when it ends; when the budget is spent, new uploads wait their
turn (first come, first served) and the clients see only a later READY.
"""

from __future__ import annotations

from collections import deque

import attrs
import trio


@attrs.define(eq=False)
class _Waiter:
    amount: int
    granted: trio.Event = attrs.field(factory=trio.Event)


class ByteBudget:
    """`total` bytes, reserved with `acquire(n)` and given back with `release(n)`.

    A request larger than the whole budget is cut to the whole budget (it
    then runs alone), so no request waits forever.

    Example:
        budget = ByteBudget(256 * 1024 * 1024)
        amount = await budget.acquire(9 * 1024 * 1024)
        try:
            ...  # receive into at most `amount` bytes of buffers
        finally:
            budget.release(amount)
    """

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("a budget needs at least one byte")
        self.total = total
        self.available = total
        self.peak = 0  # the most ever reserved at once
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn."""
        return len(self._waiters)

    async def acquire(self, amount: int) -> int:
        """Reserve `amount` bytes (at most the whole budget), waiting for them in turn; returns the amount.

        Cancelled while waiting, it reserves nothing.
        """
        amount = max(0, min(amount, self.total))
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._waiters and self.available >= amount:
            self._take(amount)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return amount
        waiter = _Waiter(amount)
        self._waiters.append(waiter)
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():  # granted just as we were cancelled
                self.release(amount)
            else:
                self._waiters.remove(waiter)
                self._grant()  # smaller requests behind it may fit now
            raise
        return amount

    def release(self, amount: int) -> None:
        """Give back what `acquire` returned."""
        self.available += amount
        assert self.available <= self.total
        self._grant()

    def _take(self, amount: int) -> None:
        self.available -= amount
        self.peak = max(self.peak, self.total - self.available)

    def _grant(self) -> None:
        while self._waiters and self.available >= self._waiters[0].amount:
            waiter = self._waiters.popleft()
            self._take(waiter.amount)
            waiter.granted.set()
