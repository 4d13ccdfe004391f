"""trioftp.transport.concurrency: failures come out as themselves, not wrapped in exception groups."""

from __future__ import annotations

import pytest
import trio

from trioftp.transport.concurrency import both


async def test_both_raises_a_failure_itself_when_a_cancel_from_outside_lands_with_it() -> None:
    # The server saw this when a peer vanished mid-GET as its session was being
    # cancelled: the hashing task's Cancelled came out beside the send's
    # failure, and the group escaped the stream's handler as 'connection failed'.
    with trio.CancelScope() as outer:

        async def main() -> None:
            await trio.sleep(0.01)
            outer.cancel()
            raise ValueError("the send failed")

        with pytest.raises(ValueError, match="the send failed"):
            await both(main, trio.sleep_forever)
        await trio.lowlevel.checkpoint()  # the cancel comes again here
        raise AssertionError("the cancel was lost")  # pragma: no cover
    assert outer.cancelled_caught


async def test_both_lets_a_cancel_from_outside_through() -> None:
    with trio.move_on_after(0.01) as scope:
        await both(trio.sleep_forever, trio.sleep_forever)
    assert scope.cancelled_caught
