"""The stream plumbing under a client connection: a stream per operation, one reader for all.

Each operation opens its own stream (`_stream`), sends its request, and reads
what the server says on that stream from an inbox; the connection's one reader
task (`_reader`) fills the inboxes. Sending (`_send`), answers (`_expect`),
flow-control credit (`_wait_credit`), the cancel of a stream the caller left,
and the end of the connection are dealt with here once, for the job modules
(download, upload, operations). Opening, the handshake and closing are in
`trioftp.client.connection`.

Error handling: a connection that ended fails every inbox with the same
TrioftpError (ConnectionClosed or ProtocolViolation), and each later
operation raises it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from trioftp.errors import (
    BadName,
    ConnectionClosed,
    ProtocolViolation,
    TrioftpError,
    remote_error,
)
from trioftp.protocol import (
    NEED_DATA,
    PEER_CLOSED,
    ConnectionState,
    LocalProtocolError,
    RemoteProtocolError,
    names,
)
from trioftp.protocol.connection import Settings
from trioftp.protocol.messages import (
    Cancel,
    Error,
    Goodbye,
    Message,
    Window,
)
from trioftp.protocol.state import StreamState
from trioftp.transport.channel import Channel
from trioftp.transport.inbox import StreamInbox
from trioftp.transport.streams import ChannelClosed

Progress = Callable[[int, int], None]
"""Called as progress(bytes_done, bytes_total) while a transfer runs."""

# A download's disk writes come in blocks of this; `put` hashes more than this off the event loop.
WRITE_BLOCK = 1024 * 1024

# A large download's blocks, and what this client lets a server send at once: DATA frames of
# up to DOWNLOAD_FRAME, DOWNLOAD_WINDOW bytes ahead of what is written. Each frame, block and
# acknowledgment costs the event loop a few wake-ups and the writer thread a GIL hand-over;
# with 1 MiB frames and blocks and an 8 MiB window the writer thread waited for the GIL a third
# of its time and bounded the download (bench/RESULTS.md, issue 13: 1,133 -> 1,368 MB/s).
# The window bounds a download's blocks in memory: DOWNLOAD_WINDOW plus one block.
DOWNLOAD_BLOCK = 4 * 1024 * 1024
DOWNLOAD_FRAME = 4 * 1024 * 1024
DOWNLOAD_WINDOW = 16 * 1024 * 1024


def client_settings(**fields: Any) -> Settings:
    """The HELLO settings of a client that was given none: the protocol's, with the download limits above."""
    return Settings(max_frame_size=DOWNLOAD_FRAME, initial_window=DOWNLOAD_WINDOW, **fields)


class Streams:
    """A v2 channel's streams, as the job modules use them; `ClientConnection` is built on it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._inboxes: dict[int, StreamInbox] = {}
        self._failure: TrioftpError | None = None
        self._server_goodbye = False
        self._slots = trio.Semaphore(1)  # the handshake sets it to the server's max_streams

    @property
    def digest_algorithm(self) -> str:
        """The digest algorithm agreed with the server (e.g. "blake3").

        Example:
            print(conn.digest_algorithm)  # "blake3", or "sha256" if only that is common
        """
        return self.channel.machine.digest

    async def _reader(self) -> None:
        failure: TrioftpError
        try:
            while True:
                for event in await self.channel.receive_events():
                    if event is PEER_CLOSED:
                        raise ChannelClosed("the server closed the connection", broken=True)
                    assert event is not NEED_DATA
                    self._dispatch(event)
        except RemoteProtocolError as exc:
            if self.channel.eof_received:  # cut mid-frame: the transport ended, not the protocol
                failure = ConnectionClosed(f"the connection was cut: {exc}")
            else:
                failure = ProtocolViolation(f"the server broke the protocol: {exc}")
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    with suppress(Exception):
                        await self.channel.send(Error(code=exc.error_code, message=str(exc)[:1000]))
        except ChannelClosed as exc:
            failure = ConnectionClosed(str(exc))
        except _ServerClosed as exc:
            failure = ConnectionClosed(str(exc))
        self._failure = failure
        for inbox in list(self._inboxes.values()):
            inbox.fail(failure)

    def _dispatch(self, message: Message) -> None:
        if message.stream_id == 0:
            if isinstance(message, Error):
                raise _ServerClosed(
                    f"the server closed the connection: {message.code.name}: {message.message}"
                )
            if isinstance(message, Goodbye):
                self._server_goodbye = True
            return
        inbox = self._inboxes.get(message.stream_id)
        if inbox is None:
            return
        if isinstance(message, Window):
            inbox.notify()
        else:
            inbox.deliver(message)

    @asynccontextmanager
    async def _stream(self, make: Callable[[int], Message]) -> AsyncIterator[StreamInbox]:
        if self._failure is not None:
            raise self._failure
        if self._server_goodbye:
            raise ConnectionClosed("the server is shutting down and accepts no new operations")
        async with self._slots:
            inboxes = self._inboxes
            request = await self._send(
                self.channel.send_request(_checking_names(make), lambda sid: _register(inboxes, sid))
            )
            inbox = self._inboxes[request.stream_id]
            try:
                yield inbox
            finally:
                del self._inboxes[request.stream_id]
                if self.channel.machine.stream_state(request.stream_id) is not StreamState.CLOSED:
                    with trio.move_on_after(1.0) as scope:
                        scope.shield = True
                        # LocalProtocolError: the machine already failed with the connection.
                        with suppress(ChannelClosed, TrioftpError, LocalProtocolError):
                            await self.channel.send_if_open(
                                Cancel(message="client gave up", stream_id=request.stream_id)
                            )

    async def _send(self, sending: Awaitable[Any]) -> Any:
        try:
            return await sending
        except ChannelClosed as exc:
            raise self._failure or ConnectionClosed(str(exc)) from None
        except LocalProtocolError as exc:
            if self.channel.machine.state not in (ConnectionState.CLOSED, ConnectionState.ERROR):
                raise  # a bug of ours, not a connection that ended
            raise self._failure or ConnectionClosed(str(exc)) from None

    @staticmethod
    async def _expect(inbox: StreamInbox, *types: type[Any]) -> Any:
        message = await inbox.get()
        if isinstance(message, Error):
            raise remote_error(message.code, message.message)
        if not isinstance(message, types):
            raise ProtocolViolation(
                f"expected {' or '.join(t.__name__ for t in types)}, got {type(message).__name__}"
            )
        return message

    async def _wait_credit(self, inbox: StreamInbox) -> int:
        """Wait until the server lets us send on this stream; raise if it answered ERROR."""
        while True:
            if inbox.pending:
                # While we send, the server speaks on this stream only to refuse.
                unexpected = await inbox.get()
                if isinstance(unexpected, Error):
                    raise remote_error(unexpected.code, unexpected.message)
                raise ProtocolViolation(f"unexpected {type(unexpected).__name__} during an upload")
            credit = self.channel.machine.send_credit(inbox.stream_id)
            if credit:
                return credit
            await inbox.wait_change()


class _ServerClosed(Exception):
    pass


def _checking_names(make: Callable[[int], Message]) -> Callable[[int], Message]:
    """`make`, raising trioftp.BadName (not the codec's ValueError) for a name the protocol refuses."""

    def checked(stream_id: int) -> Message:
        try:
            return make(stream_id)
        except names.BadName as exc:
            raise BadName(f"bad name: {exc}") from None

    return checked


def _register(inboxes: dict[int, StreamInbox], stream_id: int) -> None:
    inboxes[stream_id] = StreamInbox(stream_id)
