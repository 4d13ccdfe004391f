"""The v2 connection state machine, for either role, with per-stream flow control.

Shape of h11: feed bytes with `receive_data()` (b"" means the peer closed),
take messages with `next_event()` until it returns NEED_DATA, and turn messages
into bytes with `send()`. It never touches a socket. A local mistake raises
LocalProtocolError; the peer's raises RemoteProtocolError carrying the wire code
to answer with. A connection error is sticky; a stream error ends one stream.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Container
from typing import Any, Final

import attrs

from trioftp.protocol.codec import decode_message, encode_message
from trioftp.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from trioftp.protocol.frames import (
    GREASE_FRAME_TYPES,
    HANDSHAKE_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PREFACE,
    PREFACE_MAGIC,
    FrameDecoder,
    FrameType,
    encode_header,
)
from trioftp.protocol.messages import (
    BY_FRAME_TYPE,
    FEATURE_AUTH,
    FEATURE_V2_1,
    REQUEST_TYPES,
    U31,
    Auth,
    Authorized,
    Data,
    Error,
    Goodbye,
    Hello,
    Message,
    Window,
)
from trioftp.protocol.state import (
    OPERATION_OF_REQUEST,
    Operation,
    Role,
    StreamState,
    next_stream_state,
)


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    PEER_CLOSED = "PEER_CLOSED"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""next_event(): no complete frame is buffered; feed more bytes. Also, server side, while the
client's HELLO waits for ours: what the client pipelined behind it (spec 7) stays buffered
until our HELLO is sent, as h11 holds a pipelined request until the response is out."""
PEER_CLOSED: Final = _Sentinel.PEER_CLOSED
"""next_event(): the peer closed its side cleanly, between frames."""

EARLY_REQUESTS = 1  # requests a client may send before the server's HELLO arrives (spec 7)

Event = Message | _Sentinel


@attrs.frozen
class DataHeader:
    """next_event_or_data(): a DATA frame passed every check; its payload is the caller's to take.

    `length` payload bytes follow: take them with `read_body()` (bytes already
    buffered, always first) and `data_received()` (bytes read from the socket
    directly) before asking for the next event.
    """

    stream_id: int
    length: int


REQUEST_FRAME_TYPES = frozenset(cls.FRAME_TYPE for cls in REQUEST_TYPES)


class ConnectionState(enum.Enum):
    HANDSHAKE = "handshake"  # prefaces and HELLOs are being exchanged
    OPEN = "open"
    CLOSED = "closed"  # a connection error was sent or received, or the peer closed
    ERROR = "error"  # this machine detected a connection error: nothing more is read


@attrs.frozen
class Settings:
    """What this side advertises in its HELLO."""

    max_frame_size: int = 1024 * 1024
    max_streams: int = 128
    initial_window: int = 8 * 1024 * 1024
    digests: tuple[str, ...] = ("blake3", "sha256")
    features: tuple[str, ...] = ()
    agent: str = "trioftp"

    def hello(self, *, digests: tuple[str, ...] | None = None) -> Hello:
        return Hello(
            max_frame_size=self.max_frame_size,
            max_streams=self.max_streams,
            initial_window=self.initial_window,
            digests=digests if digests is not None else self.digests,
            features=self.features,
            agent=self.agent,
        )


@attrs.define
class _Stream:
    operation: Operation
    state: StreamState
    send_credit: int  # DATA bytes we may still send
    receive_window: int  # DATA bytes the peer may still send us
    unacknowledged: int = 0  # bytes consumed by our app, not yet granted back
    # One object stands for every stream just opened with the same operation and windows,
    # on every connection (see _fresh_stream): never changed; Connection._own copies it first.
    shared: bool = False


@functools.lru_cache(maxsize=64)
def _fresh_stream(operation: Operation, send_credit: int, receive_window: int) -> _Stream:
    """A just-opened stream's state, shared: a peer that opens max_streams streams and waits
    costs no object per stream (each small object of a burst can keep a 1 MiB arena mapped)."""
    return _Stream(operation, StreamState.REQUESTED, send_credit, receive_window, shared=True)


class Connection:
    """One side of one v2 connection.

    Args:
        role: Role.CLIENT or Role.SERVER.
        settings: the limits this side advertises.
    """

    def __init__(self, role: Role, settings: Settings | None = None) -> None:
        self.role = role
        self.settings = settings or Settings()
        self.state = ConnectionState.HANDSHAKE
        self.our_hello: Hello | None = None
        self.peer_hello: Hello | None = None
        self.goodbye_sent = False
        self.goodbye_received = False
        self.auth_requested = False  # the client has sent AUTH
        self.authorized: Authorized | None = None  # the server's answer to it
        self._decoder = FrameDecoder(HANDSHAKE_MAX_PAYLOAD)
        self._preface_received = False
        self._preface_sent = False
        self._eof = False
        self._streams: dict[int, _Stream] = {}
        self._highest_stream_id = 0

    # ----------------------------------------------------------------- queries

    @property
    def digest(self) -> str:
        """The digest algorithm agreed in the HELLO exchange."""
        hello = self.our_hello if self.role is Role.SERVER else self.peer_hello
        if hello is None or self.state is ConnectionState.HANDSHAKE:
            raise LocalProtocolError("no digest is agreed before the HELLO exchange")
        return hello.digests[0]

    @property
    def ignored_frames(self) -> int:
        """Frames of unknown types received and stepped over (spec 4.1); a flood of them is the
        application's to count against the peer."""
        return self._decoder.ignored_frames

    @property
    def open_stream_ids(self) -> list[int]:
        return list(self._streams)

    def stream_state(self, stream_id: int) -> StreamState:
        stream = self._streams.get(stream_id)
        return stream.state if stream is not None else StreamState.CLOSED

    def send_credit(self, stream_id: int) -> int:
        """How many DATA payload bytes may be sent on the stream now (0 if closed)."""
        stream = self._streams.get(stream_id)
        if stream is None or self.peer_hello is None:
            return 0
        return min(stream.send_credit, self.peer_hello.max_frame_size)

    @property
    def auth_pending(self) -> bool:
        """AUTH is sent and not answered yet: the server may send nothing on a stream."""
        return self.auth_requested and self.authorized is None

    def next_stream_id(self) -> int:
        """The id for the client's next request."""
        return self._highest_stream_id + 1

    # ----------------------------------------------------------------- sending

    def initiate(self) -> bytes:
        """Client only: the preface and our HELLO, to send first."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only the client initiates; the server answers HELLO")
        return self.send(self.settings.hello())

    def send(self, message: Message) -> bytes:
        """Return the bytes for `message`, after checking it is allowed now.

        Raises:
            LocalProtocolError: the message is not allowed in this state.
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.ERROR) and not (
            isinstance(message, Error) and message.stream_id == 0
        ):
            raise LocalProtocolError(
                f"cannot send {type(message).__name__}: connection is {self.state.value}"
            )
        if isinstance(message, Data):
            return self.send_data(message.stream_id, message.payload)
        frame = encode_message(message)
        limit = self.peer_hello.max_frame_size if self.peer_hello is not None else HANDSHAKE_MAX_PAYLOAD
        if len(frame) - HEADER_SIZE > limit:
            raise LocalProtocolError(
                f"{type(message).__name__} payload of {len(frame) - HEADER_SIZE} bytes is over the "
                f"peer's frame limit {limit}"
            )
        if message.stream_id == 0:
            self._on_connection_message(message, sent=True)
        else:
            self._on_stream_message(message, self.role, sent=True)
        return self._with_preface(frame)

    def send_grease(self, frame_type: int, payload: bytes) -> bytes:
        """Return a frame of a reserved GREASE type (spec 4.1), which the peer must step over.

        Sent now and then, it finds peers that choke on unknown frame types
        before a real new type does. Only once the HELLO exchange is done, and
        only to a peer whose HELLO lists "v2.1" (a v2.0 peer refuses unknown types).

        Raises:
            LocalProtocolError: not a GREASE type, not open, the peer is not v2.1, or too large.
        """
        if frame_type not in GREASE_FRAME_TYPES:
            raise LocalProtocolError(f"0x{frame_type:02x} is not a GREASE frame type")
        if self.state is not ConnectionState.OPEN or self.peer_hello is None:
            raise LocalProtocolError(f"cannot send GREASE: connection is {self.state.value}")
        if FEATURE_V2_1 not in self.peer_hello.features:
            raise LocalProtocolError("the peer's HELLO does not list v2.1: it would refuse GREASE")
        if len(payload) > self.peer_hello.max_frame_size:
            raise LocalProtocolError("GREASE payload over the peer's frame limit")
        return self._with_preface(_grease(frame_type, payload))

    def send_data_header(self, stream_id: int, length: int) -> bytes:
        """Return a DATA frame header alone; the caller sends `length` body bytes after it.

        This is how a file body goes from disk to socket by os.sendfile without
        passing through Python. Flow control is charged here.
        """
        self._charge_data(stream_id, length)
        return self._with_preface(encode_header(FrameType.DATA, stream_id, length))

    def send_data(self, stream_id: int, payload: bytes) -> bytes:
        self._charge_data(stream_id, len(payload))
        return self._with_preface(encode_message(Data(payload=payload, stream_id=stream_id)))

    def acknowledge(self, stream_id: int, consumed: int) -> bytes:
        """Say our app has consumed `consumed` DATA bytes of a stream.

        Returns a WINDOW frame to send once half the initial window is used up,
        else b"": batching the grants keeps WINDOW traffic small.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is StreamState.CLOSED:
            return b""
        stream = self._own(stream_id, stream)
        stream.unacknowledged += consumed
        if stream.unacknowledged < self.settings.initial_window // 2:
            return b""
        increment, stream.unacknowledged = stream.unacknowledged, 0
        return self.send(Window(increment=increment, stream_id=stream_id))

    def _with_preface(self, data: bytes) -> bytes:
        if self._preface_sent:
            return data
        self._preface_sent = True
        return PREFACE + data

    def _charge_data(self, stream_id: int, length: int) -> None:
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot send DATA: connection is {self.state.value}")
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"cannot send DATA on stream {stream_id}: it is not open")
        assert self.peer_hello is not None
        if length > self.peer_hello.max_frame_size:
            raise LocalProtocolError(
                f"DATA of {length} bytes is over the peer's frame limit {self.peer_hello.max_frame_size}"
            )
        if length > stream.send_credit:
            raise LocalProtocolError(
                f"DATA of {length} bytes is over stream {stream_id}'s credit of {stream.send_credit}"
            )
        stream = self._own(stream_id, stream)
        self._move(stream_id, stream, Data(payload=b"", stream_id=stream_id), self.role, sent=True)
        stream.send_credit -= length

    def _own(self, stream_id: int, stream: _Stream) -> _Stream:
        """The stream's state, made its own before a change (a shared fresh one is copied)."""
        if not stream.shared:
            return stream
        own = self._streams[stream_id] = _Stream(
            stream.operation, stream.state, stream.send_credit, stream.receive_window, stream.unacknowledged
        )
        return own

    # --------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after end of input")
            self._decoder.feed(data)
        else:
            self._eof = True

    @property
    def body_remaining(self) -> int:
        """Payload bytes of the DATA frame last reported as DataHeader that are still to be taken."""
        return self._decoder.body_remaining

    def read_body(self, into: memoryview) -> int:
        """Move DATA payload bytes already buffered here into `into`; return how many."""
        return self._decoder.read_body(into)

    def data_received(self, n: int) -> None:
        """The caller read `n` DATA payload bytes from the transport itself (after `read_body()`).

        Raises:
            LocalProtocolError: more than the frame holds, or buffered bytes were skipped.
        """
        try:
            self._decoder.body_received(n)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None

    def next_event(self) -> Event:
        """Return the next message, NEED_DATA or PEER_CLOSED.

        Raises:
            RemoteProtocolError: the peer broke the protocol. If
                `exc.ends_connection`, answer Error(exc.error_code) on stream 0
                and close; otherwise answer Error on exc.stream_id and go on.
        """
        event = self._checked_next_event(())
        assert not isinstance(event, DataHeader)
        return event

    def next_event_or_data(self, split_streams: Container[int]) -> Event | DataHeader:
        """Like next_event(), but a DATA frame on a stream in `split_streams` comes as a DataHeader.

        The frame is checked exactly as next_event() would (state, stream,
        flow-control window) as soon as its header is here; the caller then
        takes the payload bytes itself. A DATA frame that fails a check, or is
        for a closed stream, or is empty, goes the usual way (an error once it
        is whole, a skip, or a Data message).

        Raises:
            LocalProtocolError: the payload of the last DataHeader is not all taken yet.
            RemoteProtocolError: as next_event().
        """
        return self._checked_next_event(split_streams)

    def _checked_next_event(self, split_streams: Container[int]) -> Event | DataHeader:
        if self.state is ConnectionState.ERROR:
            raise RemoteProtocolError("the connection already failed")
        if self._decoder.body_remaining and not (self._eof and not self._decoder.buffered):
            raise LocalProtocolError(
                f"{self._decoder.body_remaining} payload bytes of a DATA frame are still to be taken"
            )
        try:
            if self._decoder.body_remaining:  # the peer closed in the middle of the payload
                raise RemoteProtocolError("connection closed in the middle of a frame")
            return self._next_event(split_streams)
        except ProtocolError as exc:
            remote = (
                exc
                if isinstance(exc, RemoteProtocolError)
                else RemoteProtocolError(str(exc), error_code=exc.error_code, stream_id=exc.stream_id)
            )
            if remote.ends_connection:
                self.state = ConnectionState.ERROR
            raise remote from None

    def _next_event(self, split_streams: Container[int]) -> Event | DataHeader:
        if not self._preface_received and not self._take_preface():
            return self._need_data()
        if self.role is Role.SERVER and self.peer_hello is not None and self.our_hello is None:
            return NEED_DATA  # our HELLO answers the client's before anything behind it is read
        if split_streams:
            header = self._decoder.next_header()
            if header is None:
                return self._need_data()
            length, frame_type, _flags, stream_id = header
            if frame_type is FrameType.DATA and length and stream_id in split_streams:
                data_header = self._take_data_header(stream_id, length)
                if data_header is not None:
                    return data_header
        frame = self._decoder.next_frame()
        if frame is None:
            return self._need_data()
        try:
            message = decode_message(frame)
        except RemoteProtocolError as exc:
            raise self._refused_request(frame.type, frame.stream_id, exc) from None
        if frame.stream_id == 0:
            self._on_connection_message(message, sent=False)
        else:
            self._on_stream_message(message, self.role.peer, sent=False)
        return message

    def _take_data_header(self, stream_id: int, length: int) -> DataHeader | None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return None  # closed (skipped) or never opened (an error): the usual way
        window = stream.receive_window
        try:
            self._on_stream_message(
                Data(payload=b"", stream_id=stream_id), self.role.peer, sent=False, data_length=length
            )
        except ProtocolError:
            # The whole frame goes the usual way, which raises the same error once it is here.
            now = self._streams.get(stream_id)
            if now is not None and not now.shared:
                now.receive_window = window
            return None
        self._decoder.start_body()
        return DataHeader(stream_id=stream_id, length=length)

    def _need_data(self) -> Event:
        if not self._eof:
            return NEED_DATA
        if self._decoder.buffered:
            raise RemoteProtocolError("connection closed in the middle of a frame")
        if self.state is ConnectionState.HANDSHAKE and not self._preface_received:
            raise RemoteProtocolError("connection closed before the preface")
        self.state = ConnectionState.CLOSED
        return PEER_CLOSED

    def _take_preface(self) -> bool:
        buffered = self._decoder._buffer
        size = len(PREFACE)
        head = bytes(buffered[:size])
        if head != PREFACE_MAGIC[: len(head)] and head[: len(PREFACE_MAGIC)] != PREFACE_MAGIC:
            raise RemoteProtocolError("not a trioftp v2 preface")
        if len(head) < size:
            return False
        if head != PREFACE:
            raise RemoteProtocolError(
                f"protocol version {head[-1]} is not supported (this side speaks {PREFACE[-1]})",
                error_code=ErrorCode.UNSUPPORTED_VERSION,
            )
        del buffered[:size]
        self._preface_received = True
        return True

    # ------------------------------------------------------------ the machines

    def _on_connection_message(self, message: Message, *, sent: bool) -> None:
        error = LocalProtocolError if sent else RemoteProtocolError
        sender = self.role if sent else self.role.peer
        name = type(message).__name__
        if isinstance(message, Error):
            if not message.code.ends_connection:
                raise error(f"ERROR on stream 0 must carry a connection code, not {message.code.name}")
            if self.state is not ConnectionState.ERROR:  # answering our own error keeps it sticky
                self.state = ConnectionState.CLOSED
            return
        if isinstance(message, Hello):
            self._on_hello(message, sender, sent=sent)
            return
        if isinstance(message, Auth | Authorized):
            self._on_auth(message, sender, sent=sent)
            return
        if isinstance(message, Goodbye):
            if self.state is not ConnectionState.OPEN:
                raise error(f"GOODBYE from {sender.value} in state {self.state.value}")
            if sent:
                self.goodbye_sent = True
            else:
                self.goodbye_received = True
            return
        raise error(f"{name} is not allowed on stream 0 (sent by {sender.value})")

    def _on_auth(self, message: Auth | Authorized, sender: Role, *, sent: bool) -> None:
        error = LocalProtocolError if sent else RemoteProtocolError
        name = type(message).__name__.upper()
        # v2.1: a client may pipeline its AUTH behind its HELLO, as it may one request.
        early = sent and isinstance(message, Auth) and self.role is Role.CLIENT and self.our_hello is not None
        if self.state is ConnectionState.HANDSHAKE and not early:
            raise error(f"{name} before the HELLO exchange is complete")
        if self.state not in (ConnectionState.OPEN, ConnectionState.HANDSHAKE):
            raise error(f"{name} on a connection in state {self.state.value}")
        if isinstance(message, Auth):
            if sender is not Role.CLIENT:
                raise error("only the client sends AUTH; the server answers AUTHORIZED")
            if self.auth_requested:
                raise error("a second AUTH")
            if self._highest_stream_id:
                raise error("AUTH after the first request")
            self.auth_requested = True
            return
        if sender is not Role.SERVER:
            raise error("only the client sends AUTH; the server answers AUTHORIZED")
        if not self.auth_requested or self.authorized is not None:
            raise error("AUTHORIZED without an AUTH to answer")
        server_hello = self.our_hello if sent else self.peer_hello
        assert server_hello is not None
        if FEATURE_AUTH not in server_hello.features:
            raise error(f"AUTHORIZED from a server whose HELLO does not list {FEATURE_AUTH!r}")
        self.authorized = message

    def _on_hello(self, hello: Hello, sender: Role, *, sent: bool) -> None:
        error = LocalProtocolError if sent else RemoteProtocolError
        already = self.our_hello if sent else self.peer_hello
        if self.state is not ConnectionState.HANDSHAKE or already is not None:
            raise error(f"a second HELLO from {sender.value}")
        if sender is Role.SERVER and (self.our_hello if not sent else self.peer_hello) is None:
            raise error("the server's HELLO must answer the client's")
        if not MIN_MAX_FRAME_SIZE <= hello.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise error(
                f"max_frame_size {hello.max_frame_size} is outside {MIN_MAX_FRAME_SIZE}..{MAX_MAX_FRAME_SIZE}"
            )
        if sender is Role.SERVER:
            client_hello = self.peer_hello if sent else self.our_hello
            assert client_hello is not None
            if len(hello.digests) != 1 or hello.digests[0] not in client_hello.digests:
                raise error(
                    f"the server must choose one of {list(client_hello.digests)}, not {list(hello.digests)}"
                )
        if sent:
            self.our_hello = hello
            self._decoder.max_payload = max(HANDSHAKE_MAX_PAYLOAD, hello.max_frame_size)
        else:
            self.peer_hello = hello
            for stream_id, stream in list(self._streams.items()):  # pipelined before this HELLO (client only)
                self._own(stream_id, stream).send_credit = hello.initial_window
        if self.our_hello is not None and self.peer_hello is not None:
            self.state = ConnectionState.OPEN

    def _on_stream_message(
        self, message: Message, sender: Role, *, sent: bool, data_length: int | None = None
    ) -> None:
        error = LocalProtocolError if sent else RemoteProtocolError
        stream_id = message.stream_id
        name = type(message).__name__
        if self.state is not ConnectionState.OPEN and not (sent and self._may_send_early(message)):
            raise error(f"{name} before the HELLO exchange is complete")
        if isinstance(message, Error) and message.code.ends_connection:
            raise error(f"ERROR on stream {stream_id} must carry a stream code, not {message.code.name}")
        if sender is Role.SERVER and self.auth_pending:
            # The server handles AUTH before any later frame, so its answer comes first.
            raise error(f"{name} on stream {stream_id} before the server answered AUTH")
        operation = OPERATION_OF_REQUEST.get(type(message))
        if operation is not None:
            self._open_stream(operation, message, sender, sent=sent)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id <= self._highest_stream_id:
                # The stream was closed (by CANCEL or an ERROR): frames that
                # were in flight when it closed are ignored, as HTTP/2 does.
                if sent:
                    raise error(f"cannot send {name} on stream {stream_id}: it is closed")
                return
            raise error(f"{name} on stream {stream_id}, which was never opened", stream_id=0)
        if isinstance(message, Data | Window):
            stream = self._own(stream_id, stream)
        if isinstance(message, Data) and not sent:
            length = len(message.payload) if data_length is None else data_length
            if length > stream.receive_window:
                raise RemoteProtocolError(
                    f"DATA of {length} bytes on stream {stream_id} exceeds the window "
                    f"of {stream.receive_window}",
                    error_code=ErrorCode.FLOW_CONTROL_ERROR,
                )
            stream.receive_window -= length
        if isinstance(message, Window):
            if sent:
                stream.receive_window += message.increment
            else:
                if stream.send_credit + message.increment > U31:
                    raise RemoteProtocolError(
                        f"WINDOW on stream {stream_id} overflows the credit",
                        error_code=ErrorCode.FLOW_CONTROL_ERROR,
                    )
                stream.send_credit += message.increment
        self._move(stream_id, stream, message, sender, sent=sent)

    def _move(self, stream_id: int, stream: _Stream, message: Any, sender: Role, *, sent: bool) -> None:
        new_state = next_stream_state(stream.operation, stream.state, sender, message)
        if new_state is None:
            error = LocalProtocolError if sent else RemoteProtocolError
            raise error(
                f"{type(message).__name__} from the {sender.value} is not allowed on a "
                f"{stream.operation.value} stream in state {stream.state.value} (stream {stream_id})",
                stream_id=0,
            )
        if new_state is StreamState.CLOSED:
            del self._streams[stream_id]
        elif new_state is not stream.state:
            self._own(stream_id, stream).state = new_state

    def _may_send_early(self, message: Message) -> bool:
        """A client's request pipelined behind its HELLO, within what the protocol's minimum limits allow."""
        return (
            self.role is Role.CLIENT
            and self.state is ConnectionState.HANDSHAKE
            and self.our_hello is not None
            and type(message) in OPERATION_OF_REQUEST
            and len(self._streams) < EARLY_REQUESTS
        )

    def _open_stream(self, operation: Operation, message: Any, sender: Role, *, sent: bool) -> None:
        error = LocalProtocolError if sent else RemoteProtocolError
        stream_id = message.stream_id
        if sender is not Role.CLIENT:
            raise error(f"only the client opens streams; the server sent {type(message).__name__}")
        if stream_id <= self._highest_stream_id:
            raise error(f"stream id {stream_id} is not above the last one used ({self._highest_stream_id})")
        client_goodbye = self.goodbye_sent if sent else self.goodbye_received
        if client_goodbye:
            raise error("the client opened a stream after its GOODBYE")
        self._highest_stream_id = stream_id
        # A request we send before the server's HELLO is held to EARLY_REQUESTS instead.
        limit = self.our_hello.max_streams if not sent and self.our_hello is not None else None
        over_limit = limit is not None and len(self._streams) >= limit
        self._add_stream(stream_id, operation)
        if over_limit:
            # The stream stays open until the server's ERROR answers it.
            raise RemoteProtocolError(
                f"stream {stream_id} is over the limit of {limit} open streams",
                error_code=ErrorCode.LIMIT_REACHED,
                stream_id=stream_id,
            )

    def _add_stream(self, stream_id: int, operation: Operation) -> None:
        assert self.our_hello is not None
        self._streams[stream_id] = _fresh_stream(
            operation,
            # A request sent before the server's HELLO gets its credit when that HELLO comes.
            self.peer_hello.initial_window if self.peer_hello is not None else 0,
            self.our_hello.initial_window,
        )

    def _refused_request(
        self, frame_type: FrameType, stream_id: int, exc: RemoteProtocolError
    ) -> RemoteProtocolError:
        """Keep a bad name in a fresh request a stream error; anything else ends the connection.

        A request refused for its name still uses up its stream id, so the
        peer's next request is checked against it, and its stream stays open
        until the server's ERROR answers it.
        """
        is_fresh_request = (
            self.role is Role.SERVER
            and self.state is ConnectionState.OPEN
            and frame_type in REQUEST_FRAME_TYPES
            and stream_id > self._highest_stream_id
            and not self.goodbye_received
        )
        if exc.error_code is ErrorCode.BAD_NAME and is_fresh_request:
            self._highest_stream_id = stream_id
            self._add_stream(stream_id, OPERATION_OF_REQUEST[BY_FRAME_TYPE[frame_type]])
            return exc
        code = exc.error_code if exc.error_code.ends_connection else ErrorCode.PROTOCOL_ERROR
        return RemoteProtocolError(str(exc), error_code=code, stream_id=0)


def _grease(frame_type: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), frame_type, 0, 0) + payload
