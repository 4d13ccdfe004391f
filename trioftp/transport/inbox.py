"""Per-stream mailbox between a connection's reader task and the task running the stream."""

from __future__ import annotations

from collections import deque

import trio

from trioftp.protocol.messages import Message


class StreamInbox:
    """Messages for one stream, plus a wake-up for flow-control credit and cancel.

    Unbounded on purpose: the peer can only queue DATA up to the window we
    granted, which is what bounds the memory.
    """

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.cancelled = False
        self._failure: BaseException | None = None
        self._messages: deque[Message] = deque()
        self._changed = trio.Event()

    @property
    def pending(self) -> bool:
        return bool(self._messages)

    @property
    def failure(self) -> BaseException | None:
        """What the inbox was failed with (the connection is gone), or None."""
        return self._failure

    def peek(self) -> Message | None:
        """The next message, left in place; None if there is none."""
        return self._messages[0] if self._messages else None

    def deliver(self, message: Message) -> None:
        self._messages.append(message)
        self._changed.set()

    def notify(self) -> None:
        """Wake the stream's task: credit arrived, or the stream was cancelled."""
        self._changed.set()

    def cancel(self) -> None:
        self.cancelled = True
        self._changed.set()

    def fail(self, failure: BaseException) -> None:
        """The connection is gone: every waiter raises `failure`."""
        self._failure = failure
        self._changed.set()

    async def get(self) -> Message:
        while not self._messages:
            await self.wait_change()
        return self._messages.popleft()

    async def wait_change(self) -> None:
        """Wait for a message, a credit notice or a cancel; raise if the connection failed."""
        if self._failure is None:
            await self._changed.wait()
            self._changed = trio.Event()
        if self._failure is not None:
            raise self._failure
