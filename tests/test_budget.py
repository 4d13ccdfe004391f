"""ByteBudget: in turn; a cancelled wait reserves nothing; oversize runs alone; group limits; patience."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioftp.server.budget import BudgetTimeout, ByteBudget


async def test_requests_that_fit_are_granted_at_once() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(60) == 60
    assert await budget.acquire(40) == 40
    assert budget.available == 0 and budget.peak == 100
    budget.release(60)
    budget.release(40)
    assert budget.available == 100


async def test_acquire_now_grants_what_acquire_would_and_never_jumps_the_queue() -> None:
    budget = ByteBudget(100, group_limit=60)
    assert budget.acquire_now(50, group="a") == 50
    assert budget.acquire_now(20, group="a") is None  # over the group's limit: nothing reserved
    assert budget.held_by("a") == 50 and budget.waiting == 0
    assert budget.acquire_now(40, group="b") == 40
    async with trio.open_nursery() as nursery:
        nursery.start_soon(budget.acquire, 30)  # waits: 10 free
        await trio.testing.wait_all_tasks_blocked()
        assert budget.acquire_now(5) is None  # fits, but must not overtake the waiter
        assert budget.waiting == 1
        budget.release(40, group="b")
    assert budget.available == 100 - 50 - 30


async def test_would_grant_says_what_acquire_now_would_do_and_reserves_nothing() -> None:
    budget = ByteBudget(100, group_limit=50)
    await budget.acquire(40, group="a")
    assert budget.would_grant(10, group="a") and not budget.would_grant(20, group="a")
    assert budget.would_grant(60, group="b") and not budget.would_grant(61, group="b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_acquire_grouped, budget, 20, "a", [])  # over "a"'s limit: waits for "a"
        await trio.testing.wait_all_tasks_blocked()
        assert budget.would_grant(30, group="b")  # a waiter over its group's limit holds up no one
        assert budget.acquire_now(30, group="b") == 30
        nursery.start_soon(budget.acquire, 40)  # waits: 30 free
        await trio.testing.wait_all_tasks_blocked()
        assert not budget.would_grant(5, group="c")  # fits, but must not overtake the waiter
        assert budget.available == 30 and budget.waiting == 2
        budget.release(40, group="a")
        budget.release(30, group="b")


async def test_waiters_are_served_in_order() -> None:
    budget = ByteBudget(100)
    await budget.acquire(90)
    granted: list[int] = []
    with trio.fail_after(5):
        await _both_in_turn(budget, granted)
    assert sorted(granted) == [5, 50]
    assert budget.available == 0 and budget.peak == 100


async def _both_in_turn(budget: ByteBudget, granted: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_acquire_into, budget, 50, granted)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_acquire_into, budget, 5, granted)  # fits now, but must not overtake 50
        await trio.testing.wait_all_tasks_blocked()
        assert granted == [] and budget.waiting == 2 and budget.available == 10
        budget.release(45)  # 55 free: 50, then 5, in turn


async def test_a_cancelled_waiter_reserves_nothing_and_lets_others_through() -> None:
    budget = ByteBudget(100)
    await budget.acquire(80)
    granted: list[int] = []
    blocked = trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_acquire_into, budget, 50, granted, blocked)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_acquire_into, budget, 10, granted)
            await trio.testing.wait_all_tasks_blocked()
            assert granted == [] and budget.waiting == 2  # 10 would fit, but waits behind 50
            blocked.cancel()
    assert granted == [10] and budget.waiting == 0 and budget.available == 10


async def _acquire_into(
    budget: ByteBudget, amount: int, granted: list[int], scope: trio.CancelScope | None = None
) -> None:
    with scope or trio.CancelScope():
        granted.append(await budget.acquire(amount))


async def test_a_request_over_the_whole_budget_gets_all_of_it() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(1000) == 100
    budget.release(100)
    assert budget.available == 100


def test_an_empty_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)


async def test_a_group_over_its_limit_waits_for_its_own_releases_without_holding_up_others() -> None:
    budget = ByteBudget(100, group_limit=50)
    await budget.acquire(40, group="a")
    granted: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_acquire_grouped, budget, 20, "a", granted)  # 60 > 50 for "a": waits
            await trio.testing.wait_all_tasks_blocked()
            assert granted == [] and budget.waiting == 1
            assert await budget.acquire(30, group="b") == 30  # another group is not held up
            budget.release(40, group="a")
    assert granted == [20] and budget.held_by("a") == 20 and budget.held_by("b") == 30


async def test_a_group_may_always_take_one_request() -> None:
    budget = ByteBudget(100, group_limit=10)
    assert await budget.acquire(60, group="a") == 60  # over the group limit, but all it holds
    budget.release(60, group="a")
    assert budget.held_by("a") == 0 and budget.available == 100


async def test_a_wait_past_its_patience_is_refused_and_reserves_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = ByteBudget(100)
    await budget.acquire(90)
    start = trio.current_time()
    with pytest.raises(BudgetTimeout):
        await budget.acquire(50, patience=3)
    assert trio.current_time() - start == pytest.approx(3)
    assert budget.waiting == 0 and budget.available == 10
    assert await budget.acquire(10, patience=3) == 10  # nothing left behind in the queue


async def _acquire_grouped(budget: ByteBudget, amount: int, group: str, granted: list[int]) -> None:
    granted.append(await budget.acquire(amount, group=group))
