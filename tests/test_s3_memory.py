"""The S3 store's in-flight memory budget, without an engine: waits, room, refusal, the peak."""

from __future__ import annotations

import threading
import time

import pytest

from trioftp.storage.interface import Problem, StorageError
from trioftp.storage.s3.memory import Memory


def test_a_taker_waits_for_room_and_gets_it_when_given_back() -> None:
    memory = Memory(10)
    memory.take(8, what="test")
    assert not memory.try_take(3)
    took = threading.Event()

    def taker() -> None:
        memory.take(3, what="test", patience=5)
        took.set()

    thread = threading.Thread(target=taker)
    thread.start()
    time.sleep(0.05)
    assert not took.is_set()
    memory.give(8)
    thread.join(5)
    assert took.is_set() and memory.held == 3 and memory.peak == 8


def test_no_room_within_patience_is_unavailable_and_holds_nothing() -> None:
    memory = Memory(10)
    memory.take(10, what="test")
    with pytest.raises(StorageError) as caught:
        memory.take(1, what="a download", patience=0.05)
    assert caught.value.problem is Problem.UNAVAILABLE and "a download" in str(caught.value)
    assert memory.held == 10


def test_one_request_larger_than_the_limit_takes_all_of_it() -> None:
    memory = Memory(10)
    memory.take(25, what="test")
    assert memory.held == 10
    memory.give(25)
    assert memory.held == 0


def test_memory_kept_idle_after_the_first_reclaim_is_reclaimed_before_waiting() -> None:
    """A pool that keeps a spare between a taker's first reclaim and its wait (it saw nobody
    waiting yet) is asked again once the taker counts as waiting: the taker gets the room
    at once instead of waiting out its patience."""
    memory = Memory(10)
    memory.take(10, what="test")  # the pool's spare, counted
    calls = 0

    def reclaim() -> None:
        nonlocal calls
        calls += 1
        if calls > 1 and memory.held:  # the first call finds the spare not yet kept
            memory.give(10)

    memory.reclaim_with(reclaim)
    started = time.monotonic()
    memory.take(4, what="test", patience=5)
    assert time.monotonic() - started < 1
    assert memory.held == 4 and calls >= 2
