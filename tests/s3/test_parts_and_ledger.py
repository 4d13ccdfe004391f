"""An upload's part buffers, a download's range buffers and the ledger writer, alone: no engine needed."""

from __future__ import annotations

import threading
import time

import pytest

from trioftp.storage.interface import Problem, StorageError
from trioftp.storage.s3.ledger import LedgerWriter
from trioftp.storage.s3.memory import Memory
from trioftp.storage.s3.parts import PartBuffers
from trioftp.storage.s3.ranges import RangeBuffers

SIZE = 1000


def test_spares_are_filled_again_and_stay_counted() -> None:
    memory = Memory(10 * SIZE)
    buffers = PartBuffers(memory, SIZE, spares=2)
    first, counted = buffers.fresh()
    assert not counted and memory.held == 0  # counted once it is sent
    buffers.sending(first, counted)
    assert memory.held == SIZE
    buffers.done(first)
    assert memory.held == SIZE  # kept as a spare, so still counted
    again, counted = buffers.fresh()
    assert again is first and counted
    buffers.sending(again, counted)  # not counted twice
    assert memory.held == SIZE
    buffers.done(again)
    buffers.close()
    assert memory.held == 0


def test_no_more_spares_than_allowed_and_none_once_closed() -> None:
    memory = Memory(10 * SIZE)
    buffers = PartBuffers(memory, SIZE, spares=1)
    parts = [buffers.fresh()[0] for _ in range(3)]
    for part in parts:
        buffers.sending(part, False)
    for part in parts:
        buffers.done(part)
    assert memory.held == SIZE  # one spare
    buffers.close()
    late = bytearray(SIZE)
    buffers.sending(late, False)
    buffers.done(late)  # a part that ends after the close gives its memory back
    assert memory.held == 0


def test_no_spares_while_another_transfer_waits_for_room() -> None:
    memory = Memory(2 * SIZE)
    buffers = PartBuffers(memory, SIZE, spares=4)
    parts = [buffers.fresh()[0] for _ in range(2)]
    for part in parts:
        buffers.sending(part, False)
    waiter = threading.Thread(target=lambda: memory.take(SIZE, what="a download"))
    waiter.start()
    while not memory.waiting:
        time.sleep(0.001)
    buffers.done(parts[0])  # given back at once: the waiter gets its room
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert memory.held == 2 * SIZE
    buffers.done(parts[1])
    assert memory.held == 2 * SIZE  # the second part's buffer is a spare: nobody waits now
    buffers.close()
    assert memory.held == SIZE  # the waiter's
    memory.give(SIZE)
    assert memory.peak <= 2 * SIZE


def test_a_spare_given_back_when_its_part_is_not_sent() -> None:
    memory = Memory(10 * SIZE)
    buffers = PartBuffers(memory, SIZE, spares=1)
    part, _ = buffers.fresh()
    buffers.sending(part, False)
    buffers.done(part)
    spare, counted = buffers.fresh()
    buffers.put_back(spare, counted)  # an upload cut while it filled it
    buffers.close()
    assert memory.held == 0


class Recorder:
    def __init__(self, *, fail: bool = False, pause: float = 0.0) -> None:
        self.writes: list[int] = []
        self.state = 0
        self.fail, self.pause = fail, pause

    def __call__(self) -> None:
        seen = self.state
        time.sleep(self.pause)
        if self.fail:
            raise StorageError(Problem.UNAVAILABLE, "engine away")
        self.writes.append(seen)


def test_range_buffers_are_filled_again_and_stay_counted_until_close() -> None:
    memory = Memory(10 * SIZE)
    ranges = RangeBuffers(memory, SIZE, most=4)
    first = ranges.take(4 * SIZE - 10, wait=True)
    assert first is not None and len(first.made()) == 4 and memory.held == 4 * SIZE - 10
    ranges.give(first)
    assert memory.held == 4 * SIZE - 10  # kept for the next range
    again = ranges.take(2 * SIZE, wait=False)
    assert again is not None and all(any(b is a for a in first.buffers) for b in again.made())
    assert memory.held == 4 * SIZE - 10  # counted from what was kept
    bigger = ranges.take(4 * SIZE, wait=True)  # 2 * SIZE - 10 kept, the rest taken
    assert bigger is not None and memory.held == 6 * SIZE
    assert ranges.take(5 * SIZE, wait=False) is None  # no room: nothing taken
    assert memory.held == 6 * SIZE
    ranges.give(again)
    ranges.close()
    assert memory.held == 4 * SIZE  # the range still being read
    ranges.give(bigger)  # its read ends after the close
    assert memory.held == 0


def test_range_buffers_given_back_while_another_transfer_waits() -> None:
    memory = Memory(2 * SIZE)
    ranges = RangeBuffers(memory, SIZE, most=4)
    taken = ranges.take(2 * SIZE, wait=True)
    assert taken is not None
    waiter = threading.Thread(target=lambda: memory.take(SIZE, what="a download"))
    waiter.start()
    while not memory.waiting:
        time.sleep(0.001)
    ranges.give(taken)  # not kept: somebody waits
    waiter.join()
    assert memory.held == SIZE
    ranges.close()
    assert memory.held == SIZE


def test_idle_range_buffers_are_given_back_to_a_taker_without_room() -> None:
    memory = Memory(4 * SIZE)
    ranges = RangeBuffers(memory, SIZE, most=4)
    taken = ranges.take(4 * SIZE, wait=True)
    assert taken is not None
    ranges.give(taken)
    assert memory.held == 4 * SIZE  # kept for the next download
    memory.take(2 * SIZE, what="an upload's parts", patience=0.1)  # no wait: the spares go back
    assert memory.held == 2 * SIZE and ranges.counted == 0


def test_ledger_changes_are_coalesced_and_flushed() -> None:
    record = Recorder(pause=0.05)
    writer = LedgerWriter(record, every=0.2, name="test ledger")
    for state in range(1, 20):
        record.state = state
        writer.changed()
    writer.flush()
    assert record.writes[-1] == 19  # the last state is written
    assert len(record.writes) < 5  # not one write per change
    writer.close()
    record.state = 20
    writer.changed()  # closed: no more writes
    time.sleep(0.05)
    assert record.writes[-1] == 19


def test_ledger_close_waits_for_the_write_under_way() -> None:
    record = Recorder(pause=0.2)
    writer = LedgerWriter(record, every=0.0, name="test ledger")
    record.state = 1
    writer.changed()
    time.sleep(0.05)  # the write started
    writer.close()
    assert record.writes == [1]


def test_a_failed_ledger_write_is_kept_for_the_upload() -> None:
    writer = LedgerWriter(Recorder(fail=True), every=0.0, name="test ledger")
    writer.changed()
    writer.flush()
    assert isinstance(writer.error, StorageError)
    writer.close()


@pytest.mark.parametrize("every", [0.0, 0.1])
def test_ledger_flush_without_changes_returns(every: float) -> None:
    writer = LedgerWriter(Recorder(), every=every, name="test ledger")
    writer.flush()
    writer.close()
