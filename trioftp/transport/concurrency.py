"""Run two things at once and get plain exceptions back, not exception groups."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


async def both(main: Callable[[], Awaitable[T]], beside: Callable[[], Awaitable[Any]]) -> tuple[T, Any]:
    """Run `main` and `beside` concurrently; return both results.

    If one fails, the other is cancelled and the failure is raised as itself
    (a nursery would wrap it in an ExceptionGroup, which callers that catch
    e.g. StorageError would miss). Cancellation from outside passes through.
    """
    results: list[Any] = [None, None]

    async def run_beside() -> None:
        results[1] = await beside()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_beside)
            results[0] = await main()
    except BaseExceptionGroup as group:
        # A Cancelled beside the failure is a cancel from outside that landed at
        # the same moment: the failure is raised, and the cancel comes again at
        # the caller's next checkpoint.
        causes = [leaf for leaf in group.exceptions if not isinstance(leaf, trio.Cancelled)]
        if len(causes) == 1 and not isinstance(causes[0], BaseExceptionGroup):
            raise causes[0] from None
        raise
    return results[0], results[1]


async def run_all(jobs: Iterable[Callable[[], Awaitable[Any]]], *, limit: int) -> None:
    """Run jobs concurrently, at most `limit` at a time.

    The first failure cancels the others and is raised as itself, not wrapped.
    """
    limiter = trio.CapacityLimiter(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> None:
        async with limiter:
            await job()

    try:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(run, job)
    except BaseExceptionGroup as group:
        leaves = [leaf for leaf in group.exceptions if not isinstance(leaf, trio.Cancelled)]
        if len(leaves) >= 1 and not isinstance(leaves[0], BaseExceptionGroup):
            raise leaves[0] from None
        raise
