"""A server-wide budget of bytes, taken by transfers in turn: what bounds upload and send buffer memory.

Each upload's buffers can hold up to its flow-control window (the bytes the
client may send before the server writes them). Per upload that is bounded,
but a thousand connections with a hundred uploads each are not. Every upload
reserves its share from one budget before the server answers READY, and
gives it back when it ends; when the budget is spent, new uploads wait their
turn (first come, first served) and the clients see only a later READY.

A budget is shared fairly: a group of holders (the connections from one
address) holds at most `group_limit` of it, so one address cannot take
everything, and a wait has a `patience`: whoever waits longer is told no
(`BudgetTimeout`) instead of waiting for ever behind holders that do not let go.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager

import attrs
import trio


class BudgetTimeout(Exception):
    """The budget had no room for the request within its patience."""


@attrs.define(eq=False)
class _Waiter:
    amount: int
    group: Hashable | None
    granted: trio.Event = attrs.field(factory=trio.Event)


class ByteBudget:
    """`total` bytes, reserved with `acquire(n)` and given back with `release(n)`.

    A request larger than the whole budget is cut to the whole budget (it
    then runs alone), so no request waits forever for lack of room.

    Args:
        total: the bytes in the budget.
        group_limit: what the requests of one group (see `acquire`) may hold
            together at most; a single request may always have its own amount.
            None: no limit per group.

    Example:
        budget = ByteBudget(256 * 1024 * 1024)
        async with budget.reserve(9 * 1024 * 1024, group="10.0.0.7", patience=30) as amount:
            ...  # receive into at most `amount` bytes of buffers
    """

    def __init__(self, total: int, *, group_limit: int | None = None) -> None:
        if total <= 0:
            raise ValueError("a budget needs at least one byte")
        self.total = total
        self.available = total
        self.group_limit = total if group_limit is None else max(1, min(group_limit, total))
        self.peak = 0  # the most ever reserved at once
        self._held: Counter[Hashable] = Counter()  # by group
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn."""
        return len(self._waiters)

    def held_by(self, group: Hashable) -> int:
        """What the requests of `group` hold now."""
        return self._held[group]

    async def acquire(self, amount: int, *, group: Hashable | None = None, patience: float = math.inf) -> int:
        """Reserve `amount` bytes (at most the whole budget), waiting for them in turn; returns the amount.

        Args:
            amount: bytes wanted.
            group: who asks (an address): its requests together hold at most
                `group_limit`, and a request over it waits for the group's own
                releases without holding up the requests of other groups.
            patience: seconds to wait at most.

        Raises:
            BudgetTimeout: no room within `patience` seconds; nothing is reserved.

        Cancelled while waiting, it reserves nothing.
        """
        amount = max(0, min(amount, self.total))
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.acquire_now(amount, group=group) is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return amount
        # Queued where acquire_now's request stood (last), to wait for its turn.
        waiter = _Waiter(amount, group)
        self._waiters.append(waiter)
        try:
            with trio.move_on_after(patience):
                await waiter.granted.wait()
        except BaseException:
            self._give_up(waiter)
            raise
        if not waiter.granted.is_set():
            self._give_up(waiter)
            raise BudgetTimeout(f"no room for {amount} bytes within {patience:g} s")
        return amount

    def acquire_now(self, amount: int, *, group: Hashable | None = None) -> int | None:
        """`acquire` if it would be granted at once, with no checkpoint; None (nothing reserved) if not.

        For a caller that checkpoints soon anyway (a small file's send): it spares
        a scheduler pass per request, and grants exactly what `acquire` would.
        """
        amount = max(0, min(amount, self.total))
        waiter = _Waiter(amount, group)
        self._waiters.append(waiter)
        self._grant()
        if waiter.granted.is_set():
            return amount
        self._waiters.remove(waiter)
        self._grant()  # requests behind it may fit now (as after a cancelled wait)
        return None

    def would_grant(self, amount: int, *, group: Hashable | None = None) -> bool:
        """Whether `acquire_now(amount, group=group)` would be granted now (nothing is reserved)."""
        amount = max(0, min(amount, self.total))
        held = self._held[group] if group is not None else 0  # a Counter: no key is added
        if (held > 0 and held + amount > self.group_limit) or self.available < amount:
            return False
        # As _grant would see it last in line: only waiters over their group's limit let it pass.
        return all(self._over_group_limit(waiter) for waiter in self._waiters)

    def release(self, amount: int, *, group: Hashable | None = None) -> None:
        """Give back what `acquire` returned (with the same group)."""
        self.available += amount
        assert self.available <= self.total
        if group is not None:
            self._held[group] -= amount
            if not self._held[group]:
                del self._held[group]
        self._grant()

    @asynccontextmanager
    async def reserve(
        self, amount: int, *, group: Hashable | None = None, patience: float = math.inf
    ) -> AsyncIterator[int]:
        """`acquire`, and `release` when the block ends; yields the amount reserved."""
        amount = await self.acquire(amount, group=group, patience=patience)
        try:
            yield amount
        finally:
            self.release(amount, group=group)

    def _give_up(self, waiter: _Waiter) -> None:
        if waiter.granted.is_set():  # granted just as we stopped waiting
            self.release(waiter.amount, group=waiter.group)
        else:
            self._waiters.remove(waiter)
            self._grant()  # requests behind it may fit now

    def _over_group_limit(self, waiter: _Waiter) -> bool:
        if waiter.group is None:
            return False
        held = self._held[waiter.group]
        return held > 0 and held + waiter.amount > self.group_limit

    def _grant(self) -> None:
        """Grant waiters in order; one over its group's limit waits for its group, not in everyone's way."""
        for waiter in list(self._waiters):
            if self._over_group_limit(waiter):
                continue
            if self.available < waiter.amount:
                return  # first come, first served: later requests must not overtake it
            self._waiters.remove(waiter)
            self.available -= waiter.amount
            self.peak = max(self.peak, self.total - self.available)
            if waiter.group is not None:
                self._held[waiter.group] += waiter.amount
            waiter.granted.set()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc
        return None
    return trim


def give_memory_back() -> bool:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim); False where there is none.

    glibc keeps what a burst of transfers freed in its arenas, so a server's
    RSS stays at its high-water mark; the server calls this once it goes idle.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
