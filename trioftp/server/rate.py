"""The minimum transfer rate, measured the same way for v2 and legacy transfers.

Over back-to-back windows of at least `window` seconds, each starting where
the last ended: a peer must move `rate` bytes per second on average in every
window, so a burst cannot buy an hour of trickling. A rate of 0 turns it off.
"""

from __future__ import annotations


class RateFloor:
    """Bytes moved against time, from `since`; `pause()` takes out time that was the server's own."""

    __slots__ = ("base", "rate", "since", "window")  # one per v2 connection while it transfers

    def __init__(self, rate: float, window: float, now: float, moved: int = 0) -> None:
        self.rate = rate
        self.window = window
        self.since = now
        self.base = moved

    def pause(self, seconds: float) -> None:
        """`seconds` of the window were spent on the server's work (disk, hashing), not the peer's."""
        self.since += seconds

    def too_slow(self, now: float, moved: int) -> str | None:
        """Why the transfer is too slow (a full window below the rate), or None; starts the next window."""
        span = now - self.since
        if not self.rate or span < self.window:
            return None
        if moved - self.base < self.rate * span:
            return f"slower than {self.rate:g} B/s over {span:.0f} s"
        self.since, self.base = now, moved
        return None
