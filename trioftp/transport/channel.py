"""One v2 connection over a Trio socket: the protocol machine, one send path, one reader.

Both the server and the client use this; it is where transport errors are mapped
(once) and where file bytes go from disk to socket by os.sendfile.

Sending: the machine is told about a message and its bytes are appended to one
output buffer with no await in between, so the order the machine sees is the
order on the wire. The first sender to find the wire free becomes the writer:
it yields one scheduler pass (so the other streams' frames of that pass join
the buffer), then writes the buffer with as few send() calls as it takes, and
keeps writing until the buffer is empty before it lets go of the wire. When
many frames join in one pass, every EAGER_WRITE_FRAMES of them are written at
once, so the peer works on the first while the rest are built. Every
sender returns once its own bytes are written (errors reach it), and waits
before appending while the buffer holds OUTPUT_BUFFER_LIMIT bytes, so a slow
peer still blocks senders. `send_detached` is the exception: it returns once
its bytes are buffered (if another task holds the wire), so a task need not
stay alive behind a peer that does not read; what it held for those bytes (a
send-budget reservation) is given back through a callback once they are
written, or once they never will be. A sendfile DATA body takes the wire for itself: the
buffer (ending with the body's header) is flushed first, then the body goes
zero-copy. A write interrupted midway (cancelled, or the peer vanished) leaves
a frame half-written, so the channel is then marked broken and nothing more is
sent.

Receiving: a single reader task calls `receive_events()`. It reads with
`os.readv` into one buffer shared by every connection of the process: the bytes
are handed to the machine before the next await, so an idle connection holds no
receive buffer at all. A transfer that adds a sink (`add_sink`, trioftp.transport.sink)
gets its DATA payload another way: the machine checks each DATA header as usual
and hands the payload over, and the reader reads it from the socket straight
into the sink's block (one copy, no Data message).

Under TLS (any stream that is not a plain SocketStream) neither shortcut is
possible: file bytes are read into a buffer and encrypted, and receiving uses
the stream's own receive_some.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

import trio

from trioftp.protocol import (
    NEED_DATA,
    PEER_CLOSED,
    Connection,
    ConnectionState,
    LocalProtocolError,
    RemoteProtocolError,
)
from trioftp.protocol.connection import DataHeader, Event
from trioftp.protocol.messages import Message
from trioftp.protocol.state import StreamState
from trioftp.transport.sink import BlockSink
from trioftp.transport.streams import (
    ChannelClosed,
    FileChanged,
    close_stream,
    peer_of,
    send_file_range,
)

RECEIVE_BUFFER_SIZE = 256 * 1024
BODY_READ_AHEAD = 16 * 1024  # read past a sink's payload (the next header, a small frame) in the same call
TLS_RECEIVE_SIZE = 64 * 1024  # receive_some allocates this much per call
OUTPUT_BUFFER_LIMIT = 256 * 1024  # senders wait before appending to a fuller buffer
LINGER_READ_SIZE = 64 * 1024  # bytes dropped per read while lingering before a close
DIRECT_SEND_SIZE = 64 * 1024  # payloads this large skip the buffer (no copy into it)
EAGER_WRITE_FRAMES = 8  # frames gathered in one scheduler pass before they are written early
_local = threading.local()  # one buffer per thread that runs a Trio loop


def _receive_buffer() -> memoryview:
    buffer: memoryview | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = memoryview(bytearray(RECEIVE_BUFFER_SIZE))
    return buffer


class Channel:
    """A v2 connection: `machine` is the sans-I/O state, `stream` the socket (or TLS over it)."""

    def __init__(self, stream: trio.abc.Stream, machine: Connection) -> None:
        self.stream = stream
        self.machine = machine
        # The fast paths (readv, sendfile) need the bare socket; under TLS there is none.
        self._plain_socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        # The wire: held by whoever writes to the socket; it empties _out before letting go.
        # A flag, and a parking lot made on first contention (a trio.Lock per idle connection is ~330 B).
        self._wire_held = False
        self._wire_waiters: trio.lowlevel.ParkingLot | None = None
        self._out = bytearray()  # frames told to the machine, not yet written
        self._queued = 0  # bytes ever appended to _out
        self._gathering = 0  # frames appended while the wire's holder waits out its scheduler pass
        self._written = 0  # bytes of those written to the socket
        self._flushed: trio.Event | None = None  # set (and dropped) after each write, for waiters
        # send_detached's callbacks, oldest first: (the _written count that means done, callback).
        self._when_written: deque[tuple[int, Callable[[], None]]] | None = None
        self._broken: str | None = None
        self._deferred_error: RemoteProtocolError | None = None
        self._sinks: dict[int, BlockSink] = {}
        self._body_sink: BlockSink | None = None  # where the payload of the current DATA frame goes
        self.bytes_received = 0
        self.payload_received = 0  # DATA payload read into sinks: bytes that did a transfer's work
        self.eof_received = False  # the peer closed (or the network cut) its side
        self.bytes_sent = 0

    @property
    def peer(self) -> str:
        return peer_of(self.stream)

    @property
    def broken(self) -> bool:
        """True once a send stopped midway or the channel was closed: nothing more can be sent."""
        return self._broken is not None

    # ----------------------------------------------------------------- sending

    async def send(self, *messages: Message) -> None:
        """Send messages as one write (so a header and a small body share a segment)."""
        await self._before_append()
        with self._telling():
            data = b"".join([self.machine.send(m) for m in messages])
        await self._emit(data)

    def queue(self, *messages: Message) -> None:
        """Tell the machine about messages and buffer them, unwritten: the next send or flush writes them.

        For a client's HELLO pipelined with its first request (spec 7): one write for both.
        """
        self._check_usable()
        with self._telling():
            self._append(b"".join([self.machine.send(m) for m in messages]))

    async def flush(self) -> None:
        """Write what queue() buffered, together with what else is sent in this scheduler pass."""
        if self._out and not self._wire_held:  # else its holder writes it before letting go
            await self._before_append()
            await self._emit(b"")

    async def send_grease(self, frame_type: int, payload: bytes) -> None:
        """Send a frame of a reserved GREASE type (see Connection.send_grease)."""
        await self._before_append()
        with self._telling():
            data = self.machine.send_grease(frame_type, payload)
        await self._emit(data)

    async def send_if_open(self, *messages: Message) -> bool:
        """Send a stream's messages unless the stream has closed (the peer cancelled it)."""
        await self._before_append()
        with self._telling():
            if self.machine.stream_state(messages[0].stream_id) is StreamState.CLOSED:
                return False
            data = b"".join([self.machine.send(m) for m in messages])
        await self._emit(data)
        return True

    async def send_detached(self, *messages: Message, on_written: Callable[[], None]) -> bool:
        """Like send_if_open, but return once the bytes are buffered, not once they are written.

        The task that finds the wire free still writes (and waits) as every sender
        does; one that finds it held leaves its bytes to the holder and returns.
        `on_written` is called exactly once: when the bytes are written, or when
        they never will be (the stream closed first, the connection broke, an error).
        Returns False if the stream had closed (nothing sent).
        """
        handed = False
        try:
            await self._before_append()
            with self._telling():
                if self.machine.stream_state(messages[0].stream_id) is StreamState.CLOSED:
                    return False
                data = b"".join([self.machine.send(m) for m in messages])
            self._append(data)
            if self._when_written is None:
                self._when_written = deque()
            self._when_written.append((self._queued, on_written))
            handed = True
            await self._write_or_leave(self._queued, wait=False)
            return True
        finally:
            if not handed:
                on_written()

    @property
    def has_room(self) -> bool:
        """True if a sender would append to the output buffer now, without waiting."""
        return len(self._out) < OUTPUT_BUFFER_LIMIT

    @property
    def unwritten(self) -> int:
        """Bytes given to the channel and not written to the socket yet."""
        return self._queued - self._written

    def abandon_output(self) -> None:
        """The connection is over: what was never written never will be; give back what it held."""
        pending, self._when_written = self._when_written, None
        for _, callback in pending or ():
            callback()

    async def wait_for_room(self) -> None:
        """Wait until the output buffer has room: before reading what is to be sent into memory."""
        await self._before_append()

    async def acknowledge(self, stream_id: int, consumed: int) -> None:
        """Tell the machine DATA was consumed; send the WINDOW it asks for, if any."""
        await self._before_append()
        with self._telling():
            data = self.machine.acknowledge(stream_id, consumed)
        if data:
            await self._emit(data)

    async def send_request(self, make: Callable[[int], Message], register: Callable[[int], None]) -> Message:
        """Open a stream: build the request with the next stream id and send it.

        `register(stream_id)` runs before the bytes leave, so the reader can
        route the answer however fast it comes.
        """
        await self._before_append()
        with self._telling():
            message = make(self.machine.next_stream_id())
            data = self.machine.send(message)
        register(message.stream_id)
        await self._emit(data)
        return message

    async def send_data(self, stream_id: int, payload: bytes | memoryview) -> bool:
        """Send one DATA frame; False if the stream closed meanwhile (the peer cancelled or failed it)."""
        if len(payload) < DIRECT_SEND_SIZE:
            await self._before_append()
            with self._telling():
                if self.machine.stream_state(stream_id) is StreamState.CLOSED:
                    return False
                header = self.machine.send_data_header(stream_id, len(payload))
            await self._emit(header + payload)
            return True
        async with self._holding_wire():
            with self._telling():
                if self.machine.stream_state(stream_id) is StreamState.CLOSED:
                    return False
                self._append(self.machine.send_data_header(stream_id, len(payload)))
            await self._write_buffered()
            await self._write(payload)
            return True

    async def send_file_data(self, stream_id: int, fd: int, offset: int, count: int) -> bool:
        """Send one DATA frame whose body goes from `fd` to the socket by os.sendfile.

        Returns False if the stream closed meanwhile.

        Raises:
            FileChanged: the file is shorter than offset + count; the frame was
                filled up with zeros, so the connection goes on and the caller
                ends this stream (BUSY).
        """
        async with self._holding_wire():
            with self._telling():
                if self.machine.stream_state(stream_id) is StreamState.CLOSED:
                    return False
                self._append(self.machine.send_data_header(stream_id, count))
            await self._write_buffered()  # the buffer ends with this body's header
            await self._sendfile(fd, offset, count)
            return True

    # The output buffer. Invariant: whoever holds _wire writes _out until it is
    # empty before releasing it, so bytes appended while the wire is held need
    # nobody else to write them.

    async def _before_append(self) -> None:
        """Like taking a lock: a checkpoint (cancellation comes before the machine is told), then room."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_usable()
        while len(self._out) >= OUTPUT_BUFFER_LIMIT:
            await self._wait_written(self._queued)

    @contextlib.contextmanager
    def _telling(self) -> Iterator[None]:
        """Map the machine refusing a send after the peer closed to ChannelClosed.

        The peer may close (EOF, or its ERROR) while a stream task is busy with
        disk work; the machine then refuses to send, and that is a closed
        connection for the task, not a bug of ours.
        """
        self._check_usable()
        try:
            yield
        except LocalProtocolError:
            if self.machine.state is not ConnectionState.CLOSED:
                raise
            raise ChannelClosed("the peer closed the connection", broken=True) from None

    def _append(self, data: bytes | bytearray) -> None:
        self._out += data
        self._queued += len(data)

    async def _emit(self, data: bytes | bytearray) -> None:
        """Append bytes the machine was just told about (no await since); return once written."""
        self._append(data)
        await self._write_or_leave(self._queued, wait=True)

    async def _write_or_leave(self, target: int, *, wait: bool) -> None:
        """Get the buffer up to `target` written: by the wire's holder, or by this task if it is free."""
        if self._wire_held:
            if self._gathering:
                self._gathering += 1
                if self._gathering > EAGER_WRITE_FRAMES:
                    self._write_eagerly()
            if wait:
                await self._wait_written(target)  # the holder writes them before letting go
            return
        self._wire_held = True
        try:
            # One scheduler pass: the frames other streams send in this pass join the buffer.
            self._gathering = 1
            try:
                await trio.lowlevel.cancel_shielded_checkpoint()
            finally:
                self._gathering = 0
            await self._write_out()
        finally:
            self._release_wire()

    def _write_eagerly(self) -> None:
        """Write the gathered frames now, without waiting for the scheduler pass to end.

        With many streams answering in one pass, writing every few frames lets
        the peer start on the first answers while the rest are built, instead
        of the two sides taking turns with whole batches.
        """
        sock = self._plain_socket
        if sock is None:
            return
        try:
            n = os.write(sock.fileno(), self._out)
        except OSError:  # full (the holder waits for room) or broken (the holder's write says so)
            self._gathering = 1  # not again for the next few frames
            return
        del self._out[:n]
        self._written += n
        self.bytes_sent += n
        self._gathering = 1
        self._wake_writers()
        if self._when_written:
            self._call_written()

    async def _wait_written(self, target: int) -> None:
        while self._written < target:
            self._check_usable()
            if not self._wire_held:  # cannot happen while the invariant holds
                raise ChannelClosed("connection unusable: output left unwritten", broken=True)
            if self._flushed is None:
                self._flushed = trio.Event()
            await self._flushed.wait()

    def _wake_writers(self) -> None:
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    async def _acquire_wire(self) -> None:
        """Like trio.Lock.acquire: a checkpoint, then the wire, handed over in arrival order."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._wire_held:
            self._wire_held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._wire_waiters is None:
            self._wire_waiters = trio.lowlevel.ParkingLot()
        await self._wire_waiters.park()  # unparked by _release_wire, which keeps the wire held for us

    def _release_wire(self) -> None:
        if self._wire_waiters:
            self._wire_waiters.unpark(count=1)  # the wire passes straight to the next waiter
        else:
            self._wire_held = False

    @contextlib.asynccontextmanager
    async def _holding_wire(self) -> AsyncIterator[None]:
        """Take the wire for an exclusive write; write out what others appended meanwhile."""
        self._check_usable()
        await self._acquire_wire()
        try:
            self._check_usable()
            yield
        finally:
            try:
                if self._broken is None:
                    await self._write_out()
            finally:
                self._release_wire()

    async def _write_out(self) -> None:
        """Write the whole buffer (with _wire held), including what is appended while writing."""
        while self._out:
            await self._write_buffered()

    async def _write_buffered(self) -> None:
        """Write what the buffer holds now (with _wire held); what others append meanwhile waits.

        Before a DATA body this writes up to the body's header and no further.
        """
        data, self._out = self._out, bytearray()
        await self._write(data)
        self._written += len(data)
        self._wake_writers()
        if self._when_written:
            self._call_written()

    def _call_written(self) -> None:
        pending = self._when_written
        assert pending is not None
        while pending and pending[0][0] <= self._written:
            pending.popleft()[1]()

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            sock = self._plain_socket
            if sock is None:
                await self.stream.send_all(data)
            else:
                await self._write_socket(sock, data)
        except BaseException as exc:
            self._broken = f"send interrupted: {type(exc).__name__}"
            self._wake_writers()
            self.abandon_output()
            if isinstance(exc, trio.BrokenResourceError | OSError):
                raise ChannelClosed(f"connection lost while sending: {exc}", broken=True) from None
            if isinstance(exc, trio.ClosedResourceError):
                raise ChannelClosed("connection closed", broken=False) from None
            raise
        self.bytes_sent += len(data)

    async def _write_socket(self, sock: trio.socket.SocketType, data: bytes | bytearray | memoryview) -> None:
        # Try first, wait only when the socket is full: a writer cancelled meanwhile
        # still writes what the kernel takes at once.
        with memoryview(data) as view:
            total = 0
            while total < len(view):
                try:
                    total += os.write(sock.fileno(), view[total:])
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)

    async def _sendfile(self, fd: int, offset: int, count: int) -> None:
        try:
            await send_file_range(self.stream, fd, offset, count)
        except FileChanged as exc:
            # The DATA header announced `count` bytes: fill the frame up, so the
            # framing stays whole and only this stream ends (spec 11.1).
            await self._write(bytes(exc.missing))
            self.bytes_sent += count - exc.missing
            raise
        except BaseException as exc:
            self._broken = f"sendfile interrupted: {type(exc).__name__}"
            self._wake_writers()
            self.abandon_output()
            raise
        self.bytes_sent += count

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise ChannelClosed(f"connection unusable: {self._broken}", broken=True)

    # --------------------------------------------------------------- receiving

    def add_sink(self, stream_id: int, sink: BlockSink) -> None:
        """From now on, the stream's DATA payload goes into `sink` instead of Data messages."""
        self._sinks[stream_id] = sink

    def remove_sink(self, stream_id: int) -> None:
        """Stop filling the stream's sink, and close it."""
        sink = self._sinks.pop(stream_id, None)
        if sink is not None:
            sink.close()

    async def receive_events(self) -> list[Event]:
        """Wait for the peer and return the events it sent (ending with PEER_CLOSED at EOF).

        Raises:
            RemoteProtocolError: from the machine.
            ChannelClosed: the connection broke.
        """
        while True:
            ignored = self.machine.ignored_frames
            events = self._drain()
            # Frames of unknown types return too (with no events), so the caller can
            # count them against a peer that sends nothing else (spec 4.1).
            if events or self.machine.ignored_frames != ignored:
                return events
            await self._receive_once()

    def buffered_events(self) -> list[Event]:
        """The events already received and buffered, without waiting for more (maybe none)."""
        return self._drain()

    def _drain(self) -> list[Event]:
        if self._deferred_error is not None:
            error, self._deferred_error = self._deferred_error, None
            raise error
        events: list[Event] = []
        machine = self.machine
        while True:
            if machine.body_remaining:
                self._take_buffered_body()
                if machine.body_remaining and not self.eof_received:
                    return events  # the rest of the payload is still in the socket
            try:
                event = machine.next_event_or_data(self._sinks) if self._sinks else machine.next_event()
            except RemoteProtocolError as exc:
                if not events:
                    raise
                # The frames before the bad one are valid: hand them over first.
                self._deferred_error = exc
                return events
            if isinstance(event, DataHeader):
                self._body_sink = self._sinks[event.stream_id]
                continue
            if event is NEED_DATA:
                return events
            events.append(event)
            if event is PEER_CLOSED:
                return events

    def _body_space(self) -> memoryview:
        sink = self._body_sink
        assert sink is not None
        # A sink closed meanwhile (its transfer ended): the payload is read and dropped.
        return _receive_buffer() if sink.closed else sink.space()

    def _take_buffered_body(self) -> None:
        """Move payload bytes the machine already holds into the sink."""
        sink = self._body_sink
        assert sink is not None
        while self.machine.body_remaining:
            n = self.machine.read_body(self._body_space())
            if not n:
                return
            sink.filled(n)
            self.payload_received += n

    async def _receive_once(self) -> None:
        sock = self._plain_socket
        if sock is None:
            await self._receive_through()
            return
        buffer = _receive_buffer()
        remaining = self.machine.body_remaining
        # Inside a sink's payload: read it straight into the sink's block, and a
        # little past it (the next frame's header) into the shared buffer.
        buffers = [self._body_space()[:remaining], buffer[:BODY_READ_AHEAD]] if remaining else [buffer]
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            # Asked afresh after each wait: another task may have closed the socket while
            # this one was woken but not yet run, and its number may be another socket's now.
            fd = sock.fileno()
            if fd < 0:
                raise ChannelClosed("connection closed", broken=False)
            try:
                n = os.readv(fd, buffers)
                break
            except BlockingIOError:
                pass  # wait outside the except block: it would keep the exception alive while idle
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise ChannelClosed("connection closed", broken=False) from None
                raise ChannelClosed(f"connection lost while receiving: {exc}", broken=True) from None
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                raise ChannelClosed("connection closed", broken=False) from None
        self.bytes_received += n
        self.eof_received = self.eof_received or n == 0
        if remaining and n:
            taken = min(n, len(buffers[0]))
            self.payload_received += taken
            self.machine.data_received(taken)
            assert self._body_sink is not None
            self._body_sink.filled(taken)
            if n > taken:
                self.machine.receive_data(buffers[1][: n - taken])
        else:
            self.machine.receive_data(buffer[:n])  # copied by the machine; empty means EOF
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _receive_through(self) -> None:
        try:
            data = await self.stream.receive_some(TLS_RECEIVE_SIZE)
        except trio.BrokenResourceError as exc:
            raise ChannelClosed(f"connection lost while receiving: {exc}", broken=True) from None
        except trio.ClosedResourceError:
            raise ChannelClosed("connection closed", broken=False) from None
        self.bytes_received += len(data)
        self.eof_received = self.eof_received or not data
        self.machine.receive_data(data)

    async def linger(self, seconds: float) -> None:
        """After our last frame: stop sending, then read and drop what the peer still sends.

        Closing a socket with unread bytes in it sends a reset, and a peer that
        gets a reset may lose our last frames unread (the ERROR that says why).
        So, like an HTTP server's lingering close, half-close first and let the
        peer see our end; then read until it closes too, for at most `seconds`.
        TLS has no half-close: there the close happens at once.
        """
        stream = self.stream
        if not isinstance(stream, trio.SocketStream) or self._broken:
            return
        with trio.move_on_after(seconds):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.send_eof()
                while await stream.receive_some(LINGER_READ_SIZE):
                    pass

    async def aclose(self) -> None:
        self._broken = self._broken or "closed"
        self.abandon_output()
        await close_stream(self.stream)
