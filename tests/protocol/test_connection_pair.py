"""Whole sessions between a client and a server Connection, with bytes moved by hand.

In the style of h11's test ConnectionPair: no sockets, no trio; each side's
bytes are handed to the other and the events it reports are checked. Also
the sniffer and the legacy codec.
"""

from __future__ import annotations

from typing import Any

import blake3
import msgpack
import pytest

from trioftp.protocol import legacy_codec as legacy
from trioftp.protocol.codec import encode_message
from trioftp.protocol.connection import NEED_DATA, PEER_CLOSED, Connection, ConnectionState, Settings
from trioftp.protocol.errors import ErrorCode, FrameTooLarge, LocalProtocolError, RemoteProtocolError
from trioftp.protocol.frames import HEADER, PREFACE, FrameType, encode_frame
from trioftp.protocol.messages import (
    FEATURE_ANONYMOUS,
    FEATURE_AUTH,
    Auth,
    Authorized,
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Entry,
    Error,
    FileInfo,
    Get,
    Goodbye,
    Hello,
    Kind,
    List,
    Listing,
    Mkdir,
    Put,
    Ready,
    Rename,
    Stat,
    Status,
    StatusInfo,
    Window,
)
from trioftp.protocol.sniff import Dialect, sniff
from trioftp.protocol.state import Role, StreamState

CLIENT, SERVER = Role.CLIENT, Role.SERVER
CONNECTION_CODES = [code for code in ErrorCode if code.ends_connection]
STREAM_CODES = [code for code in ErrorCode if not code.ends_connection]


class ConnectionPair:
    """A client and a server machine joined back to back."""

    def __init__(
        self,
        client_settings: Settings | None = None,
        server_settings: Settings | None = None,
        *,
        digest: str = "blake3",
    ) -> None:
        self.client = Connection(CLIENT, client_settings)
        self.server = Connection(SERVER, server_settings)
        self.digest = digest

    def side(self, role: Role) -> Connection:
        return self.client if role is CLIENT else self.server

    def deliver(self, to: Role, data: bytes) -> list[Any]:
        """Hand `data` to one side; return what it reports until it needs more."""
        machine = self.side(to)
        machine.receive_data(data)
        events = []
        while (event := machine.next_event()) is not NEED_DATA:
            events.append(event)
            if event is PEER_CLOSED:
                break
        return events

    def send(self, sender: Role, *messages: Any) -> list[Any]:
        data = b"".join(self.side(sender).send(m) for m in messages)
        return self.deliver(sender.peer, data)

    def send_data(self, sender: Role, stream_id: int, payload: bytes) -> list[Any]:
        return self.deliver(sender.peer, self.side(sender).send_data(stream_id, payload))

    def handshake(self) -> None:
        hello = self.deliver(SERVER, self.client.initiate())
        assert hello == [self.client.settings.hello()]
        answer = self.send(SERVER, self.server.settings.hello(digests=(self.digest,)))
        assert len(answer) == 1 and isinstance(answer[0], Hello)
        assert self.client.state is self.server.state is ConnectionState.OPEN

    def states(self, stream_id: int) -> tuple[StreamState, StreamState]:
        return self.client.stream_state(stream_id), self.server.stream_state(stream_id)


@pytest.fixture
def pair() -> ConnectionPair:
    p = ConnectionPair()
    p.handshake()
    return p


FILE = b"hello world\n" * 1000
FILE_DIGEST = blake3.blake3(FILE).digest()
MTIME = 1_700_000_000_000_000_000


def info(stream_id: int, name: str = "f.txt", digest: bytes | None = FILE_DIGEST) -> FileInfo:
    return FileInfo(
        name=name, kind=Kind.FILE, size=len(FILE), mtime_ns=MTIME, digest=digest, stream_id=stream_id
    )


def expect_remote(machine: Connection, code: ErrorCode, stream_id: int | None = None) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        machine.next_event()
    assert caught.value.error_code is code, caught.value
    if stream_id is None:
        assert caught.value.ends_connection
    else:
        assert not caught.value.ends_connection and caught.value.stream_id == stream_id
    return caught.value


# ---------------------------------------------------------------- handshake


def test_hello_exchange_agrees_limits_and_digest() -> None:
    p = ConnectionPair(Settings(initial_window=1000), Settings(max_streams=3, max_frame_size=32768))
    assert p.client.state is p.server.state is ConnectionState.HANDSHAKE
    with pytest.raises(LocalProtocolError):
        p.client.digest  # noqa: B018 - not agreed yet
    p.handshake()
    assert p.client.digest == p.server.digest == "blake3"
    assert p.client.peer_hello is not None and p.client.peer_hello.max_streams == 3
    assert p.server.peer_hello is not None and p.server.peer_hello.initial_window == 1000


def test_server_may_choose_any_offered_digest() -> None:
    p = ConnectionPair(digest="sha256")
    p.handshake()
    assert p.client.digest == p.server.digest == "sha256"


def test_server_must_choose_exactly_one_offered_digest() -> None:
    p = ConnectionPair()
    p.deliver(SERVER, p.client.initiate())
    for digests in [("md5",), ("blake3", "sha256")]:
        with pytest.raises(LocalProtocolError):
            p.server.send(Hello(max_frame_size=2**20, max_streams=1, initial_window=1, digests=digests))
    assert p.server.state is ConnectionState.HANDSHAKE


def test_only_the_client_initiates_and_the_server_answers() -> None:
    server = Connection(SERVER)
    with pytest.raises(LocalProtocolError):
        server.initiate()
    with pytest.raises(LocalProtocolError, match="answer"):
        server.send(Settings().hello(digests=("blake3",)))


def test_preface_goes_out_once_before_the_first_frame() -> None:
    p = ConnectionPair()
    first = p.client.initiate()
    assert first.startswith(PREFACE) and first.count(PREFACE) == 1
    p.deliver(SERVER, first)
    reply = p.server.send(p.server.settings.hello(digests=("blake3",)))
    assert reply.startswith(PREFACE)
    p.deliver(CLIENT, reply)
    assert not p.client.send(Stat(name="a", stream_id=1)).startswith(PREFACE)


def test_advertised_frame_size_out_of_range_is_refused() -> None:
    for size in (16383, 16 * 1024 * 1024 + 1):
        p = ConnectionPair(Settings(max_frame_size=size))
        with pytest.raises(LocalProtocolError):
            p.client.initiate()
        server = Connection(SERVER)
        server.receive_data(PREFACE + encode_message(Settings(max_frame_size=size).hello()))
        expect_remote(server, ErrorCode.PROTOCOL_ERROR)


def test_receive_limit_is_16k_until_our_hello_then_our_max_frame_size() -> None:
    p = ConnectionPair(server_settings=Settings(max_frame_size=20000))
    p.deliver(SERVER, p.client.initiate())
    assert p.server._decoder.max_payload == 16384
    p.deliver(CLIENT, p.server.send(p.server.settings.hello(digests=("blake3",))))
    assert p.server._decoder.max_payload == 20000
    p.server.receive_data(HEADER.pack(20001, FrameType.DATA, 0, 1))
    with pytest.raises(FrameTooLarge):
        p.server.next_event()


# --------------------------------------------------------------- operations


def test_get(pair: ConnectionPair) -> None:
    assert pair.send(CLIENT, Get(name="f.txt", stream_id=1)) == [Get(name="f.txt", stream_id=1)]
    assert pair.states(1) == (StreamState.REQUESTED, StreamState.REQUESTED)
    assert pair.send(SERVER, info(1)) == [info(1)]
    assert pair.states(1) == (StreamState.TRANSFERRING, StreamState.TRANSFERRING)
    received = b""
    for start in range(0, len(FILE), 5000):
        for event in pair.send_data(SERVER, 1, FILE[start : start + 5000]):
            assert isinstance(event, Data) and event.stream_id == 1
            received += event.payload
    assert pair.send(SERVER, End(size=len(FILE), digest=FILE_DIGEST, stream_id=1)) == [
        End(size=len(FILE), digest=FILE_DIGEST, stream_id=1)
    ]
    assert received == FILE and blake3.blake3(received).digest() == FILE_DIGEST
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)
    assert pair.client.open_stream_ids == pair.server.open_stream_ids == []


def test_get_resume_digest_covers_the_whole_file(pair: ConnectionPair) -> None:
    offset = 4321
    pair.send(CLIENT, Get(name="f.txt", offset=offset, stream_id=1))
    pair.send(SERVER, info(1, digest=None))
    (data,) = pair.send_data(SERVER, 1, FILE[offset:])
    (end,) = pair.send(SERVER, End(size=len(FILE), digest=FILE_DIGEST, stream_id=1))
    local_prefix = FILE[:offset]
    assert blake3.blake3(local_prefix + data.payload).digest() == end.digest
    assert blake3.blake3(data.payload).digest() != end.digest


def test_put(pair: ConnectionPair) -> None:
    put = Put(name="f.txt", size=len(FILE), mtime_ns=MTIME, stream_id=1)
    assert pair.send(CLIENT, put) == [put]
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(1, b"too early")  # no DATA before READY
    assert pair.send(SERVER, Ready(offset=0, stream_id=1)) == [Ready(offset=0, stream_id=1)]
    assert pair.states(1) == (StreamState.TRANSFERRING, StreamState.TRANSFERRING)
    events = pair.send_data(CLIENT, 1, FILE)
    assert events == [Data(payload=FILE, stream_id=1)]
    pair.send(CLIENT, End(size=len(FILE), digest=FILE_DIGEST, stream_id=1))
    assert pair.states(1) == (StreamState.COMMITTING, StreamState.COMMITTING)
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(1, b"x")  # nothing after END
    assert pair.send(SERVER, info(1)) == [info(1)]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)


def test_put_resume_sends_from_the_ready_offset(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Put(name="f.txt", size=len(FILE), digest=FILE_DIGEST, resume=True, stream_id=1))
    (ready,) = pair.send(SERVER, Ready(offset=6000, stream_id=1))
    pair.send_data(CLIENT, 1, FILE[ready.offset :])
    pair.send(CLIENT, End(size=len(FILE), digest=FILE_DIGEST, stream_id=1))
    assert pair.send(SERVER, info(1)) == [info(1)]


def test_put_answered_at_once_when_identical(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Put(name="f.txt", size=len(FILE), digest=FILE_DIGEST, stream_id=1))
    assert pair.send(SERVER, info(1)) == [info(1)]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(1, FILE)


def test_list_in_several_parts(pair: ConnectionPair) -> None:
    entries = [Entry(name=f"n{i}", kind=Kind.FILE, size=i, mtime_ns=MTIME) for i in range(7)]
    pair.send(CLIENT, List(folder="", stream_id=1))
    got: list[Entry] = []
    for part in (entries[:3], entries[3:6]):
        (listing,) = pair.send(SERVER, Listing(entries=part, last=False, stream_id=1))
        got += listing.entries
        assert pair.states(1) == (StreamState.REQUESTED, StreamState.REQUESTED)
    (listing,) = pair.send(SERVER, Listing(entries=entries[6:], last=True, stream_id=1))
    got += listing.entries
    assert got == entries
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)


def test_a_listing_too_big_for_one_frame_is_refused_before_sending() -> None:
    client_limit = ConnectionPair(Settings(max_frame_size=16384))
    client_limit.handshake()
    client_limit.send(CLIENT, List(stream_id=1))
    many = [Entry(name="x" * 200 + str(i), kind=Kind.FILE, size=0, mtime_ns=0) for i in range(100)]
    with pytest.raises(LocalProtocolError, match="frame limit"):
        client_limit.server.send(Listing(entries=many, last=True, stream_id=1))
    assert client_limit.server.stream_state(1) is StreamState.REQUESTED  # nothing was changed
    for start in range(0, 100, 25):
        client_limit.send(SERVER, Listing(entries=many[start : start + 25], last=start == 75, stream_id=1))
    assert client_limit.states(1) == (StreamState.CLOSED, StreamState.CLOSED)


@pytest.mark.parametrize(
    "request_",
    [
        Delete(name="old.txt", stream_id=1),
        Rename(old="a", new="b", stream_id=1),
        Rename(old="a", new="b", replace=True, stream_id=1),
        Mkdir(name="a/b/c", stream_id=1),
    ],
)
def test_delete_rename_mkdir_end_with_done(pair: ConnectionPair, request_: Any) -> None:
    assert pair.send(CLIENT, request_) == [request_]
    with pytest.raises(LocalProtocolError):
        pair.server.send(info(1))  # the answer to these is DONE
    assert pair.send(SERVER, Done(stream_id=1)) == [Done(stream_id=1)]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)


def test_stat(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="f.txt", stream_id=1))
    with pytest.raises(LocalProtocolError):
        pair.server.send(Done(stream_id=1))
    assert pair.send(SERVER, info(1)) == [info(1)]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)


def test_interleaved_streams(pair: ConnectionPair) -> None:
    """Two gets and a put, their DATA frames mixed on the wire."""
    a, b = b"A" * 30000, b"B" * 20000
    pair.send(
        CLIENT, Get(name="a", stream_id=1), Get(name="b", stream_id=3), Put(name="c", size=25000, stream_id=4)
    )
    pair.send(SERVER, FileInfo(name="a", kind=Kind.FILE, size=len(a), mtime_ns=0, stream_id=1))
    pair.send(SERVER, Ready(offset=0, stream_id=4))
    pair.send(SERVER, FileInfo(name="b", kind=Kind.FILE, size=len(b), mtime_ns=0, stream_id=3))
    to_client = b"".join(
        [
            pair.server.send_data(1, a[:10000]),
            pair.server.send_data(3, b[:10000]),
            pair.server.send_data(1, a[10000:]),
            pair.server.send(End(size=len(a), digest=blake3.blake3(a).digest(), stream_id=1)),
            pair.server.send_data(3, b[10000:]),
        ]
    )
    to_server = pair.client.send_data(4, b"C" * 12500) + pair.client.send_data(4, b"C" * 12500)
    server_events = pair.deliver(SERVER, to_server)
    client_events = pair.deliver(CLIENT, to_client)
    by_stream: dict[int, bytes] = {}
    for event in client_events:
        if isinstance(event, Data):
            by_stream[event.stream_id] = by_stream.get(event.stream_id, b"") + event.payload
    assert by_stream == {1: a, 3: b}
    assert [e.stream_id for e in client_events] == [1, 3, 1, 1, 3]
    assert b"".join(e.payload for e in server_events) == b"C" * 25000
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)
    assert pair.states(3) == (StreamState.TRANSFERRING, StreamState.TRANSFERRING)
    assert pair.states(4) == (StreamState.TRANSFERRING, StreamState.TRANSFERRING)
    pair.send(SERVER, End(size=len(b), digest=blake3.blake3(b).digest(), stream_id=3))
    pair.send(CLIENT, End(size=25000, digest=blake3.blake3(b"C" * 25000).digest(), stream_id=4))
    pair.send(SERVER, FileInfo(name="c", kind=Kind.FILE, size=25000, mtime_ns=0, stream_id=4))
    assert pair.client.open_stream_ids == pair.server.open_stream_ids == []


def test_stream_ids_may_skip_but_never_go_back(pair: ConnectionPair) -> None:
    assert pair.client.next_stream_id() == 1
    pair.send(CLIENT, Stat(name="a", stream_id=7))
    assert pair.client.next_stream_id() == 8
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stat(name="a", stream_id=7))
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stat(name="a", stream_id=5))


# ------------------------------------------------------------- flow control


def test_flow_control_stall_and_window() -> None:
    p = ConnectionPair(Settings(initial_window=100))
    p.handshake()
    p.send(CLIENT, Get(name="f", stream_id=1))
    p.send(SERVER, info(1, digest=None))
    assert p.server.send_credit(1) == 100
    p.send_data(SERVER, 1, b"x" * 60)
    p.send_data(SERVER, 1, b"y" * 40)
    assert p.server.send_credit(1) == 0
    with pytest.raises(LocalProtocolError, match="credit"):
        p.server.send_data(1, b"z")
    with pytest.raises(LocalProtocolError, match="credit"):
        p.server.send_data_header(1, 1)
    with pytest.raises(LocalProtocolError, match="credit"):
        p.server.send(Data(payload=b"z", stream_id=1))  # send() charges DATA too
    assert p.client.acknowledge(1, 49) == b""  # under half the window: no WINDOW yet
    window = p.client.acknowledge(1, 1)
    assert p.deliver(SERVER, window) == [Window(increment=50, stream_id=1)]
    assert p.server.send_credit(1) == 50
    p.send_data(SERVER, 1, b"z" * 50)
    assert p.server.send_credit(1) == 0


def test_send_credit_is_capped_by_the_peer_frame_size() -> None:
    p = ConnectionPair(Settings(max_frame_size=16384))
    p.handshake()
    p.send(CLIENT, Get(name="f", stream_id=1))
    p.send(SERVER, info(1))
    assert p.server.send_credit(1) == 16384
    with pytest.raises(LocalProtocolError, match="frame limit"):
        p.server.send_data(1, b"x" * 16385)
    assert p.server.send_credit(99) == 0  # not open


def test_put_credit_comes_from_the_server_window() -> None:
    p = ConnectionPair(server_settings=Settings(initial_window=10))
    p.handshake()
    p.send(CLIENT, Put(name="f", size=30, stream_id=1))
    p.send(SERVER, Ready(offset=0, stream_id=1))
    assert p.client.send_credit(1) == 10
    p.send_data(CLIENT, 1, b"0123456789")
    with pytest.raises(LocalProtocolError):
        p.client.send_data(1, b"!")
    assert p.deliver(CLIENT, p.server.acknowledge(1, 10)) == [Window(increment=10, stream_id=1)]
    assert p.client.send_credit(1) == 10


def test_peer_exceeding_the_window_is_a_flow_control_error() -> None:
    p = ConnectionPair(server_settings=Settings(initial_window=10))
    p.handshake()
    p.send(CLIENT, Put(name="f", size=30, stream_id=1))
    p.send(SERVER, Ready(offset=0, stream_id=1))
    p.server.receive_data(encode_message(Data(payload=b"0123456789!", stream_id=1)))
    expect_remote(p.server, ErrorCode.FLOW_CONTROL_ERROR)
    assert p.server.state is ConnectionState.ERROR


def test_window_overflowing_the_credit_is_a_flow_control_error(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Put(name="f", size=30, stream_id=1))
    pair.send(SERVER, Ready(offset=0, stream_id=1))
    # The client's credit is the server's initial window, 8 MiB; this takes it to exactly 2**31 - 1.
    pair.client.receive_data(encode_message(Window(increment=2**31 - 1 - 8 * 2**20, stream_id=1)))
    assert pair.client.next_event() == Window(increment=2**31 - 1 - 8 * 2**20, stream_id=1)
    pair.client.receive_data(encode_message(Window(increment=1, stream_id=1)))
    expect_remote(pair.client, ErrorCode.FLOW_CONTROL_ERROR)


def test_acknowledge_on_a_closed_stream_sends_nothing(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Get(name="f", stream_id=1))
    pair.send(SERVER, info(1))
    pair.send_data(SERVER, 1, FILE)
    pair.send(SERVER, End(size=len(FILE), digest=FILE_DIGEST, stream_id=1))
    assert pair.client.acknowledge(1, 10**6) == b""


# ------------------------------------------------------------------- cancel


def test_cancel_one_stream_while_another_goes_on(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1), Get(name="b", stream_id=2))
    pair.send(SERVER, info(1, "a"), info(2, "b"))
    pair.send_data(SERVER, 1, b"a1")
    pair.send_data(SERVER, 2, b"b1")
    # The client cancels stream 1; the server sends more before it hears of it.
    cancel = pair.client.send(Cancel(message="enough", stream_id=1))
    assert pair.client.stream_state(1) is StreamState.CLOSED
    in_flight = pair.server.send_data(1, b"a2") + pair.server.send_data(2, b"b2")
    in_flight += pair.server.send(End(size=4, digest=b"\x01" * 32, stream_id=1))
    # Frames for the cancelled stream are passed on, cause no error, change nothing.
    events = pair.deliver(CLIENT, in_flight)
    assert [type(e).__name__ for e in events] == ["Data", "Data", "End"]
    assert pair.client.stream_state(1) is StreamState.CLOSED
    assert pair.client.stream_state(2) is StreamState.TRANSFERRING
    with pytest.raises(LocalProtocolError):
        pair.client.send(Window(increment=2, stream_id=1))  # not on a stream we closed
    # The server's stream 1 already closed with its END; the CANCEL is a late frame to it.
    assert pair.deliver(SERVER, cancel) == [Cancel(message="enough", stream_id=1)]
    assert pair.server.open_stream_ids == [2]
    pair.send(SERVER, End(size=4, digest=b"\x02" * 32, stream_id=2))
    assert pair.client.open_stream_ids == pair.server.open_stream_ids == []


def test_server_cancels_a_put(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Put(name="f", size=100, stream_id=1))
    pair.send(SERVER, Ready(offset=0, stream_id=1))
    in_flight = pair.client.send_data(1, b"x" * 10)
    assert pair.send(SERVER, Cancel(stream_id=1)) == [Cancel(stream_id=1)]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)
    assert pair.deliver(SERVER, in_flight) == [Data(payload=b"x" * 10, stream_id=1)]
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(1, b"y")


# ------------------------------------------------------------ stream errors


@pytest.mark.parametrize("code", STREAM_CODES, ids=[c.name for c in STREAM_CODES])
def test_each_stream_error_closes_only_its_stream(pair: ConnectionPair, code: ErrorCode) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1), Put(name="b", size=1, stream_id=2))
    error = Error(code=code, message=code.name, stream_id=2)
    assert pair.send(SERVER, error) == [error]
    assert pair.states(2) == (StreamState.CLOSED, StreamState.CLOSED)
    assert pair.states(1) == (StreamState.REQUESTED, StreamState.REQUESTED)
    assert pair.client.state is pair.server.state is ConnectionState.OPEN
    assert pair.send(CLIENT, Stat(name="c", stream_id=3)) == [Stat(name="c", stream_id=3)]


@pytest.mark.parametrize("code", CONNECTION_CODES, ids=[c.name for c in CONNECTION_CODES])
def test_each_connection_error_ends_the_connection(pair: ConnectionPair, code: ErrorCode) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1))
    error = Error(code=code, message=code.name)
    assert pair.send(SERVER, error) == [error]
    assert pair.client.state is ConnectionState.CLOSED and pair.server.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stat(name="c", stream_id=2))
    with pytest.raises(LocalProtocolError):
        pair.server.send(info(1))


@pytest.mark.parametrize("code", CONNECTION_CODES, ids=[c.name for c in CONNECTION_CODES])
def test_a_connection_code_on_a_stream_is_a_protocol_error(pair: ConnectionPair, code: ErrorCode) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1))
    with pytest.raises(LocalProtocolError):
        pair.server.send(Error(code=code, stream_id=1))
    pair.client.receive_data(encode_message(Error(code=code, stream_id=1)))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("code", STREAM_CODES[:3], ids=[c.name for c in STREAM_CODES[:3]])
def test_a_stream_code_on_stream_0_is_a_protocol_error(pair: ConnectionPair, code: ErrorCode) -> None:
    with pytest.raises(LocalProtocolError):
        pair.server.send(Error(code=code))
    pair.client.receive_data(encode_message(Error(code=code)))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


def test_the_client_cancels_rather_than_errors(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1))
    with pytest.raises(LocalProtocolError):
        pair.client.send(Error(code=ErrorCode.INTERNAL, stream_id=1))
    pair.server.receive_data(encode_message(Error(code=ErrorCode.INTERNAL, stream_id=1)))
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)


def _bad_name_request(stream_id: int) -> bytes:
    fields = {"name": "../etc/passwd", "offset": 0, "length": None}
    return encode_frame(FrameType.GET, stream_id, msgpack.packb(fields))


def test_bad_name_is_a_stream_error_and_the_connection_goes_on(pair: ConnectionPair) -> None:
    pair.client.send(Get(name="x", stream_id=1))  # the client thinks it asked for "x" ...
    pair.server.receive_data(_bad_name_request(1))  # ... but a foreign client sent "../etc/passwd"
    expect_remote(pair.server, ErrorCode.BAD_NAME, stream_id=1)
    assert pair.server.state is ConnectionState.OPEN
    assert pair.server.stream_state(1) is StreamState.REQUESTED  # open until the ERROR answers it
    answer = Error(code=ErrorCode.BAD_NAME, message="'..' refused", stream_id=1)
    assert pair.send(SERVER, answer) == [answer]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)
    assert pair.send(CLIENT, Stat(name="ok", stream_id=2)) == [Stat(name="ok", stream_id=2)]
    # The refused request used up its id.
    pair.server.receive_data(encode_message(Stat(name="again", stream_id=1)))
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)


def test_bad_name_on_a_reused_id_is_a_connection_error(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="a", stream_id=3))
    pair.server.receive_data(_bad_name_request(2))
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)


def test_bad_name_from_the_server_is_a_connection_error(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="a", stream_id=1))
    fields = {"name": "/abs", "kind": "file", "size": 1, "mtime_ns": 1, "digest": None}
    pair.client.receive_data(encode_frame(FrameType.FILE_INFO, 1, msgpack.packb(fields)))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


def test_max_streams_exceeded_is_a_stream_error() -> None:
    p = ConnectionPair(server_settings=Settings(max_streams=2))
    p.handshake()
    p.send(CLIENT, Get(name="a", stream_id=1), Get(name="b", stream_id=2))
    p.server.receive_data(p.client.send(Get(name="c", stream_id=3)))
    expect_remote(p.server, ErrorCode.LIMIT_REACHED, stream_id=3)
    assert p.server.state is ConnectionState.OPEN
    limit = Error(code=ErrorCode.LIMIT_REACHED, stream_id=3)
    assert p.send(SERVER, limit) == [limit]
    assert p.states(3) == (StreamState.CLOSED, StreamState.CLOSED)
    p.send(SERVER, Error(code=ErrorCode.NOT_FOUND, stream_id=1))
    assert p.send(CLIENT, Get(name="d", stream_id=4)) == [Get(name="d", stream_id=4)]
    assert sorted(p.server.open_stream_ids) == [2, 4]


def test_streams_opened_and_waiting_share_one_state_until_they_move() -> None:
    """128 requests that wait cost no state object each (a burst of them pins memory),
    and what one stream does (credit, state, window) changes that stream alone."""
    p = ConnectionPair(client_settings=Settings(initial_window=65536))
    p.handshake()
    p.send(CLIENT, *(Get(name="a", stream_id=i) for i in range(1, 129)))
    states = {id(p.server._streams[i]) for i in range(1, 129)}
    assert len(states) == 1
    p.send(CLIENT, Window(increment=1000, stream_id=5))
    assert p.server.send_credit(5) == 65536 + 1000 and p.server.send_credit(7) == 65536
    p.send(SERVER, info(3))
    assert p.states(3) == (StreamState.TRANSFERRING, StreamState.TRANSFERRING)
    assert p.server.stream_state(9) is StreamState.REQUESTED
    p.send_data(SERVER, 3, b"x" * 1000)
    assert p.server.send_credit(3) == 65536 - 1000 and p.server.send_credit(11) == 65536
    p.send(CLIENT, Cancel(stream_id=13))
    assert p.server.stream_state(13) is StreamState.CLOSED
    assert p.server.stream_state(15) is StreamState.REQUESTED
    assert len({id(p.server._streams[i]) for i in range(17, 129)}) == 1


def test_a_cancelled_refusal_is_not_answered(pair: ConnectionPair) -> None:
    pair.client.send(Get(name="x", stream_id=1))
    pair.server.receive_data(_bad_name_request(1))
    expect_remote(pair.server, ErrorCode.BAD_NAME, stream_id=1)
    pair.deliver(SERVER, pair.client.send(Cancel(stream_id=1)))
    assert pair.server.stream_state(1) is StreamState.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.server.send(Error(code=ErrorCode.BAD_NAME, stream_id=1))


# -------------------------------------------------------- connection errors


def test_one_request_may_follow_the_client_hello_before_the_server_answers() -> None:
    """v2.1 pipelining (spec 7): the client may send one request behind its HELLO; the server
    reads it only once its own HELLO is sent, and the client's credit comes with that HELLO."""
    p = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        p.client.send(Get(name="a", stream_id=1))  # before its own HELLO: never
    early = p.client.initiate() + p.client.send(Get(name="a", stream_id=1))
    with pytest.raises(LocalProtocolError):
        p.client.send(Get(name="b", stream_id=3))  # a second one waits for the server's HELLO
    with pytest.raises(LocalProtocolError):
        p.client.send_data(1, b"x")
    assert p.deliver(SERVER, early) == [p.client.settings.hello()]  # the GET waits behind it
    assert p.server.next_event() is NEED_DATA
    answer = p.server.send(p.server.settings.hello(digests=(p.digest,)))
    assert p.server.next_event() == Get(name="a", stream_id=1)
    assert p.deliver(CLIENT, answer) == [p.server.settings.hello(digests=(p.digest,))]
    assert p.client.send_credit(1) == min(p.server.settings.initial_window, p.server.settings.max_frame_size)
    p.send(CLIENT, Get(name="b", stream_id=3))  # open now: as many as max_streams


def test_a_request_before_the_client_hello_is_refused() -> None:
    p = ConnectionPair()
    p.server.receive_data(PREFACE + encode_message(Get(name="a", stream_id=1)))
    expect_remote(p.server, ErrorCode.PROTOCOL_ERROR)


def test_window_may_come_with_a_get(pair: ConnectionPair) -> None:
    """v2.1: credit for a GET may be granted from the request on (spec 9)."""
    assert pair.send(CLIENT, Get(name="a", stream_id=1), Window(increment=1000, stream_id=1)) == [
        Get(name="a", stream_id=1),
        Window(increment=1000, stream_id=1),
    ]
    pair.send(SERVER, info(1))
    assert pair.server.send_credit(1) == min(
        pair.client.settings.initial_window + 1000, pair.client.settings.max_frame_size
    )


def test_request_on_a_reused_stream_id(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="a", stream_id=1))
    pair.send(SERVER, info(1))
    pair.server.receive_data(encode_message(Stat(name="a", stream_id=1)))
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("type_byte", [0x00, 0x0A, 0x0F, 0x18, 0x1F, 0x25, 0x7F, 0xFF])
def test_an_unknown_frame_type_is_stepped_over(pair: ConnectionPair, type_byte: int) -> None:
    """v2.1 (spec 4.1): unknown types, GREASE among them, are ignored whatever their flags or
    stream, even when their payload comes in pieces; the frames around them are read."""
    unknown = HEADER.pack(5, type_byte, 0xFF, 0xFFFFFFFF) + b"\x80abcd"
    stat = encode_message(Stat(name="a", stream_id=1))
    assert pair.deliver(SERVER, unknown[:12]) == []
    assert pair.deliver(SERVER, unknown[12:] + stat) == [Stat(name="a", stream_id=1)]
    assert pair.server.ignored_frames == 1
    assert pair.server.state is ConnectionState.OPEN


def test_an_unknown_frame_over_the_size_limit_is_still_refused(pair: ConnectionPair) -> None:
    pair.server.receive_data(HEADER.pack(pair.server.settings.max_frame_size + 1, 0x0F, 0, 0))
    expect_remote(pair.server, ErrorCode.FRAME_TOO_LARGE)


@pytest.mark.parametrize(("code", "ends_connection"), [(31, True), (9, True), (45, False), (0x2A2A, False)])
def test_an_unknown_error_code_is_read_by_its_range(
    pair: ConnectionPair, code: int, ends_connection: bool
) -> None:
    """v2.1 (spec 12.1): below 32 it ends the connection, from 32 up the stream it names."""
    pair.send(CLIENT, Stat(name="a", stream_id=1))
    payload = msgpack.packb({"code": code, "message": "from a newer peer"})
    stream_id = 0 if ends_connection else 1
    [error] = pair.deliver(CLIENT, HEADER.pack(len(payload), FrameType.ERROR, 0, stream_id) + payload)
    assert isinstance(error, Error) and error.code == code and error.code.ends_connection is ends_connection
    assert error.code.name == f"UNKNOWN_{code}"
    if ends_connection:
        assert pair.client.state is ConnectionState.CLOSED
    else:
        assert pair.client.stream_state(1) is StreamState.CLOSED
        assert pair.client.state is ConnectionState.OPEN


def test_connection_errors_are_sticky(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1))
    pair.server.receive_data(HEADER.pack(1, FrameType.GET, 0, 1) + b"\x80")  # a GET that is not a map
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)
    assert pair.server.state is ConnectionState.ERROR
    # Good frames after the bad one are not read ...
    pair.server.receive_data(encode_message(Stat(name="b", stream_id=2)))
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()
    # ... not even once the error has been answered with ERROR.
    assert pair.deliver(CLIENT, pair.server.send(Error(code=ErrorCode.PROTOCOL_ERROR))) == [
        Error(code=ErrorCode.PROTOCOL_ERROR)
    ]
    assert pair.server.state is ConnectionState.ERROR
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()
    with pytest.raises(LocalProtocolError):
        pair.server.send(info(1))


def test_sticky_after_an_undecodable_payload(pair: ConnectionPair) -> None:
    pair.server.receive_data(
        encode_frame(FrameType.STAT, 1, b"\xc1") + encode_message(Stat(name="b", stream_id=2))
    )
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)
    pair.server.send(Error(code=ErrorCode.PROTOCOL_ERROR))
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()


def test_frame_on_a_never_opened_stream(pair: ConnectionPair) -> None:
    pair.client.receive_data(encode_message(Data(payload=b"x", stream_id=1)))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


def test_the_server_cannot_open_streams(pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError):
        pair.server.send(Get(name="a", stream_id=1))
    pair.client.receive_data(encode_message(Get(name="a", stream_id=1)))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


def test_message_not_in_the_state_table(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Get(name="a", stream_id=1))
    pair.client.receive_data(encode_message(Ready(offset=0, stream_id=1)))
    error = expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)
    assert (
        "Ready" in str(error) and "server" in str(error) and "get" in str(error) and "requested" in str(error)
    )


def test_eof_in_the_middle_of_a_frame(pair: ConnectionPair) -> None:
    pair.client.receive_data(encode_message(Goodbye())[:5])
    assert pair.client.next_event() is NEED_DATA
    pair.client.receive_data(b"")
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


def test_eof_between_frames(pair: ConnectionPair) -> None:
    assert pair.deliver(CLIENT, b"") == [PEER_CLOSED]
    assert pair.client.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.client.receive_data(b"more")


def test_eof_before_the_preface() -> None:
    server = Connection(SERVER)
    server.receive_data(PREFACE[:3])
    server.receive_data(b"")
    expect_remote(server, ErrorCode.PROTOCOL_ERROR)


def test_wrong_preface_magic_and_version() -> None:
    for data, code in [
        (b"\x89TFTP\n", ErrorCode.PROTOCOL_ERROR),
        (b"GET / HTTP/1.1\r\n", ErrorCode.PROTOCOL_ERROR),
        (b"\x89TFTP\r\n\x01", ErrorCode.UNSUPPORTED_VERSION),
        (b"\x89TFTP\r\n\x03", ErrorCode.UNSUPPORTED_VERSION),
    ]:
        server = Connection(SERVER)
        server.receive_data(data)
        expect_remote(server, code)
        # The answer carries our own preface, so the peer learns what we speak.
        assert server.send(Error(code=code)).startswith(PREFACE)


def test_wrong_magic_is_seen_at_the_first_wrong_byte() -> None:
    server = Connection(SERVER)
    server.receive_data(b"\x89TF")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"X")
    expect_remote(server, ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------ goodbye


def test_client_goodbye_then_a_request(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="a", stream_id=1))
    assert pair.send(CLIENT, Goodbye(message="done")) == [Goodbye(message="done")]
    assert pair.client.goodbye_sent and pair.server.goodbye_received
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stat(name="b", stream_id=2))
    # Streams in flight finish.
    assert pair.send(SERVER, info(1)) == [info(1)]
    pair.server.receive_data(encode_message(Stat(name="b", stream_id=2)))
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)


def test_bad_name_after_goodbye_is_a_connection_error(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Goodbye())
    pair.server.receive_data(_bad_name_request(1))
    expect_remote(pair.server, ErrorCode.PROTOCOL_ERROR)


def test_server_goodbye_leaves_crossing_requests_to_the_application(pair: ConnectionPair) -> None:
    """A request may cross the server's GOODBYE: the machine lets it through to be REFUSED."""
    goodbye = pair.server.send(Goodbye(message="shutting down"))
    crossing = pair.client.send(Stat(name="a", stream_id=1))
    assert pair.deliver(SERVER, crossing) == [Stat(name="a", stream_id=1)]
    assert pair.deliver(CLIENT, goodbye) == [Goodbye(message="shutting down")]
    refused = Error(code=ErrorCode.REFUSED, stream_id=1)
    assert pair.send(SERVER, refused) == [refused]
    assert pair.deliver(CLIENT, b"") == [PEER_CLOSED]


def test_goodbye_only_when_open() -> None:
    p = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        p.client.send(Goodbye())
    p.deliver(SERVER, p.client.initiate())
    with pytest.raises(LocalProtocolError):
        p.client.send(Goodbye())
    # A server reads what follows the client's HELLO only after its own HELLO, so a GOODBYE
    # there is one on an open connection.
    p.server.receive_data(encode_message(Goodbye()))
    assert p.server.next_event() is NEED_DATA
    p.server.send(p.server.settings.hello(digests=(p.digest,)))
    assert p.server.next_event() == Goodbye()


def test_a_goodbye_before_the_client_hello_is_refused() -> None:
    p = ConnectionPair()
    p.server.receive_data(PREFACE + encode_message(Goodbye()))
    expect_remote(p.server, ErrorCode.PROTOCOL_ERROR)


def test_hello_and_goodbye_belong_on_stream_0(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="a", stream_id=1))
    pair.send(SERVER, info(1))
    fields = msgpack.packb({"message": ""})
    pair.client.receive_data(encode_frame(FrameType.GOODBYE, 1, fields))  # stream 1 is closed, still an error
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)
    with pytest.raises(ValueError, match="stream 0"):
        Goodbye(stream_id=1)


# --------------------------------------------------------------------- auth

ALICE = Auth(user="alice", password="correct horse battery staple")
ALICE_OK = Authorized(user="alice", rights=("read", "list", "future-right"), admin=False)


@pytest.fixture
def auth_pair() -> ConnectionPair:
    """A client that supports AUTH and a server with users (and no anonymous access)."""
    p = ConnectionPair(Settings(features=(FEATURE_AUTH,)), Settings(features=(FEATURE_AUTH,)))
    p.handshake()
    return p


def test_auth_exchange(auth_pair: ConnectionPair) -> None:
    assert auth_pair.client.peer_hello is not None
    assert FEATURE_AUTH in auth_pair.client.peer_hello.features
    assert auth_pair.send(CLIENT, ALICE) == [ALICE]
    assert auth_pair.client.auth_requested and auth_pair.server.auth_requested
    assert auth_pair.client.auth_pending and auth_pair.server.auth_pending
    assert auth_pair.send(SERVER, ALICE_OK) == [ALICE_OK]
    assert auth_pair.client.authorized == auth_pair.server.authorized == ALICE_OK
    assert not auth_pair.client.auth_pending and not auth_pair.server.auth_pending
    # Nothing changes in the connection itself.
    assert auth_pair.client.state is auth_pair.server.state is ConnectionState.OPEN
    assert auth_pair.send(CLIENT, Stat(name="f.txt", stream_id=1)) == [Stat(name="f.txt", stream_id=1)]
    assert auth_pair.send(SERVER, info(1)) == [info(1)]


def test_password_is_not_in_repr() -> None:
    assert "staple" not in repr(ALICE) and "password" not in repr(ALICE)


def test_request_pipelined_behind_auth(auth_pair: ConnectionPair) -> None:
    """AUTH and a request in one write; the server answers AUTH first, then the request."""
    wire = auth_pair.client.send(ALICE) + auth_pair.client.send(Get(name="f.txt", stream_id=1))
    assert auth_pair.deliver(SERVER, wire) == [ALICE, Get(name="f.txt", stream_id=1)]
    with pytest.raises(LocalProtocolError, match="before the server answered AUTH"):
        auth_pair.server.send(info(1))
    with pytest.raises(LocalProtocolError, match="before the server answered AUTH"):
        auth_pair.server.send(Error(code=ErrorCode.PERMISSION_DENIED, stream_id=1))
    assert auth_pair.server.stream_state(1) is StreamState.REQUESTED  # the refusals changed nothing
    to_client = auth_pair.server.send(ALICE_OK) + auth_pair.server.send(info(1))
    assert auth_pair.deliver(CLIENT, to_client) == [ALICE_OK, info(1)]
    assert auth_pair.states(1) == (StreamState.TRANSFERRING, StreamState.TRANSFERRING)


def test_the_client_may_cancel_and_the_server_say_goodbye_while_auth_is_pending(
    auth_pair: ConnectionPair,
) -> None:
    auth_pair.send(CLIENT, ALICE, Get(name="f.txt", stream_id=1))
    assert auth_pair.send(CLIENT, Cancel(stream_id=1)) == [Cancel(stream_id=1)]
    assert auth_pair.send(SERVER, Goodbye(message="stopping")) == [Goodbye(message="stopping")]
    assert auth_pair.send(SERVER, ALICE_OK) == [ALICE_OK]


def test_an_answer_before_authorized_is_a_connection_error(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, ALICE, Stat(name="f.txt", stream_id=1))
    auth_pair.client.receive_data(encode_message(info(1)))
    error = expect_remote(auth_pair.client, ErrorCode.PROTOCOL_ERROR)
    assert "before the server answered AUTH" in str(error)


def test_wrong_credentials_end_the_connection(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, Auth(user="alice", password="guess"), Get(name="f.txt", stream_id=1))
    failed = Error(code=ErrorCode.AUTH_FAILED, message="wrong user name or password")
    assert auth_pair.send(SERVER, failed) == [failed]
    assert auth_pair.client.state is auth_pair.server.state is ConnectionState.CLOSED
    assert auth_pair.client.authorized is None
    with pytest.raises(LocalProtocolError):
        auth_pair.client.send(Get(name="f.txt", stream_id=2))
    with pytest.raises(LocalProtocolError):
        auth_pair.server.send(ALICE_OK)


def test_auth_to_a_server_without_users_is_refused(pair: ConnectionPair) -> None:
    """The machine lets AUTH through to a server without "auth"; the server answers AUTH_FAILED."""
    assert pair.send(CLIENT, ALICE) == [ALICE]
    with pytest.raises(LocalProtocolError, match="does not list 'auth'"):
        pair.server.send(ALICE_OK)
    pair.client.receive_data(encode_message(ALICE_OK))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)
    refused = Error(code=ErrorCode.AUTH_FAILED, message="no users on this server")
    assert pair.server.send(refused)  # still allowed: a connection error goes out in any state


def test_anonymous_server_serves_without_auth() -> None:
    p = ConnectionPair(server_settings=Settings(features=(FEATURE_AUTH, FEATURE_ANONYMOUS)))
    p.handshake()
    assert p.send(CLIENT, Stat(name="f.txt", stream_id=1)) == [Stat(name="f.txt", stream_id=1)]
    denied = Error(code=ErrorCode.PERMISSION_DENIED, message="no 'list' right", stream_id=1)
    assert p.send(SERVER, denied) == [denied]
    assert p.client.state is p.server.state is ConnectionState.OPEN
    assert p.client.authorized is None and not p.client.auth_pending


def _raw(frame_type: FrameType, stream_id: int, fields: dict[str, Any]) -> bytes:
    return encode_frame(frame_type, stream_id, msgpack.packb(fields))


def test_auth_before_the_hello_exchange() -> None:
    p = ConnectionPair(Settings(features=(FEATURE_AUTH,)), Settings(features=(FEATURE_AUTH,)))
    with pytest.raises(LocalProtocolError):
        p.client.send(ALICE)  # not even the preface is out
    # v2.1: AUTH may be pipelined behind the client's HELLO; the server reads it after its own.
    opening = p.client.initiate() + p.client.send(ALICE)
    p.server.receive_data(opening)
    assert isinstance(p.server.next_event(), Hello)
    assert p.server.next_event() is NEED_DATA
    p.server.send(p.server.settings.hello(digests=(p.digest,)))
    assert p.server.next_event() == ALICE


def test_auth_before_the_client_hello_is_refused() -> None:
    p = ConnectionPair(Settings(features=(FEATURE_AUTH,)), Settings(features=(FEATURE_AUTH,)))
    p.server.receive_data(PREFACE + encode_message(ALICE))
    expect_remote(p.server, ErrorCode.PROTOCOL_ERROR)


def test_auth_on_a_stream(auth_pair: ConnectionPair) -> None:
    with pytest.raises(ValueError, match="stream 0"):
        Auth(user="alice", password="x", stream_id=1)
    auth_pair.server.receive_data(_raw(FrameType.AUTH, 1, {"user": "alice", "password": "x"}))
    expect_remote(auth_pair.server, ErrorCode.PROTOCOL_ERROR)


def test_authorized_on_a_stream(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, ALICE)
    auth_pair.client.receive_data(_raw(FrameType.AUTHORIZED, 1, {"user": "a", "rights": [], "admin": False}))
    expect_remote(auth_pair.client, ErrorCode.PROTOCOL_ERROR)


def test_auth_from_the_server(auth_pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError, match="only the client sends AUTH"):
        auth_pair.server.send(ALICE)
    auth_pair.client.receive_data(encode_message(ALICE))
    expect_remote(auth_pair.client, ErrorCode.PROTOCOL_ERROR)


def test_authorized_from_the_client(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, ALICE)
    with pytest.raises(LocalProtocolError):
        auth_pair.client.send(ALICE_OK)
    auth_pair.server.receive_data(encode_message(ALICE_OK))
    expect_remote(auth_pair.server, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("answered", [False, True])
def test_a_second_auth(auth_pair: ConnectionPair, answered: bool) -> None:
    auth_pair.send(CLIENT, ALICE)
    if answered:
        auth_pair.send(SERVER, ALICE_OK)
    second = Auth(user="root", password="toor")
    with pytest.raises(LocalProtocolError, match="second AUTH"):
        auth_pair.client.send(second)
    auth_pair.server.receive_data(encode_message(second))
    expect_remote(auth_pair.server, ErrorCode.PROTOCOL_ERROR)


def test_auth_after_a_request(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, Stat(name="f.txt", stream_id=1))
    auth_pair.send(SERVER, info(1))  # even once that stream is closed again
    with pytest.raises(LocalProtocolError, match="after the first request"):
        auth_pair.client.send(ALICE)
    auth_pair.server.receive_data(encode_message(ALICE))
    expect_remote(auth_pair.server, ErrorCode.PROTOCOL_ERROR)


def test_auth_after_a_refused_bad_name_request(auth_pair: ConnectionPair) -> None:
    """A request refused for its name still counts as the client's first request."""
    auth_pair.server.receive_data(_bad_name_request(1) + encode_message(ALICE))
    expect_remote(auth_pair.server, ErrorCode.BAD_NAME, stream_id=1)
    expect_remote(auth_pair.server, ErrorCode.PROTOCOL_ERROR)


def test_authorized_without_auth(auth_pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError, match="without an AUTH"):
        auth_pair.server.send(ALICE_OK)
    auth_pair.client.receive_data(encode_message(ALICE_OK))
    expect_remote(auth_pair.client, ErrorCode.PROTOCOL_ERROR)


def test_a_second_authorized(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, ALICE)
    auth_pair.send(SERVER, ALICE_OK)
    with pytest.raises(LocalProtocolError, match="without an AUTH"):
        auth_pair.server.send(ALICE_OK)
    auth_pair.client.receive_data(encode_message(ALICE_OK))
    expect_remote(auth_pair.client, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("user", ["", "u" * 256, "ali\nce", "a\x00b", "tab\there", "del\x7f"])
def test_bad_user_names(auth_pair: ConnectionPair, user: str) -> None:
    with pytest.raises(ValueError, match="user"):
        Auth(user=user, password="x")
    with pytest.raises(ValueError, match="user"):
        Authorized(user=user, rights=())
    auth_pair.server.receive_data(_raw(FrameType.AUTH, 0, {"user": user, "password": "x"}))
    expect_remote(auth_pair.server, ErrorCode.PROTOCOL_ERROR)  # a connection error, not BAD_NAME


def test_user_name_limits() -> None:
    assert Auth(user="u" * 255, password="p" * 1024).user == "u" * 255
    assert Auth(user="José Müller / ops", password="").password == ""
    with pytest.raises(ValueError):
        Auth(user="alice", password="p" * 1025)
    assert len(Authorized(user="a", rights=["r" * 32] * 16).rights) == 16
    for rights in (["r"] * 17, [""], ["r" * 33]):
        with pytest.raises(ValueError, match="rights"):
            Authorized(user="a", rights=rights)


# ------------------------------------------------------------------- status


def test_status_round_trip(pair: ConnectionPair) -> None:
    assert pair.send(CLIENT, Status(stream_id=1)) == [Status(stream_id=1)]
    assert pair.states(1) == (StreamState.REQUESTED, StreamState.REQUESTED)
    with pytest.raises(LocalProtocolError):
        pair.server.send(Done(stream_id=1))  # the answer to STATUS is STATUS_INFO
    answer = StatusInfo(
        agent="trioftp 0.3.0",
        uptime_ms=12_345,
        connections=1,
        transfers=0,
        bytes_received=2**40,
        bytes_sent=0,
        stream_id=1,
    )
    assert pair.send(SERVER, answer) == [answer]
    assert pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)


def test_status_denied_is_a_stream_error(auth_pair: ConnectionPair) -> None:
    auth_pair.send(CLIENT, ALICE, Status(stream_id=1), Stat(name="f.txt", stream_id=2))
    auth_pair.send(SERVER, ALICE_OK)
    denied = Error(code=ErrorCode.PERMISSION_DENIED, message="STATUS is for admins", stream_id=1)
    assert auth_pair.send(SERVER, denied) == [denied]
    assert auth_pair.states(1) == (StreamState.CLOSED, StreamState.CLOSED)
    assert auth_pair.send(SERVER, info(2)) == [info(2)]


def test_status_info_only_answers_status(pair: ConnectionPair) -> None:
    pair.send(CLIENT, Stat(name="f.txt", stream_id=1))
    answer = StatusInfo(
        agent="", uptime_ms=0, connections=0, transfers=0, bytes_received=0, bytes_sent=0, stream_id=1
    )
    with pytest.raises(LocalProtocolError):
        pair.server.send(answer)
    pair.client.receive_data(encode_message(answer))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)
    with pytest.raises(LocalProtocolError):
        Connection(SERVER).send(Status(stream_id=1))


def test_the_server_cannot_send_status(pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError, match="only the client opens streams"):
        pair.server.send(Status(stream_id=1))
    pair.client.receive_data(encode_message(Status(stream_id=1)))
    expect_remote(pair.client, ErrorCode.PROTOCOL_ERROR)


# -------------------------------------------------------------------- sniff


def test_sniff() -> None:
    assert sniff(b"") is None
    assert sniff(PREFACE) is Dialect.V2
    assert sniff(PREFACE[:1]) is Dialect.V2
    for head in (b"put|a|1", b"get", b"G", b"z", b"A"):
        assert sniff(head) is Dialect.LEGACY
    for head in (b"0", b"\x00", b"|", b"\x16\x03\x01", b"\xff", b" ", b"@", b"[", b"`", b"{"):
        assert sniff(head) is Dialect.UNKNOWN, head


# ------------------------------------------------------------------- legacy


def _prefixes_wait(data: bytes) -> None:
    for cut in range(len(data)):
        assert legacy.parse_header(data[:cut], settled=False) is None, data[:cut]


@pytest.mark.parametrize(
    ("header", "command", "name", "size"),
    [
        (b"put|hello.txt|12", legacy.Command.PUT, "hello.txt", 12),
        (b"put|a/b/c.bin|0", legacy.Command.PUT, "a/b/c.bin", 0),
        ("put|café.txt|123456".encode(), legacy.Command.PUT, "café.txt", 123456),
        (b"get|hello.txt|0", legacy.Command.GET, "hello.txt", None),
        (b"get|x|anything at all", legacy.Command.GET, "x", None),
    ],
)
def test_legacy_header_split_at_every_byte(
    header: bytes, command: legacy.Command, name: str, size: int | None
) -> None:
    expected = (legacy.Header(command, name, size), len(header))
    # Byte by byte, nothing is decided until the line settles ...
    _prefixes_wait(header)
    assert legacy.parse_header(header, settled=False) is None
    # ... and once it has, the whole header is read.
    assert legacy.parse_header(header, settled=True) == expected
    if command is legacy.Command.PUT:
        # Upload bytes behind the header end it without waiting (when not a digit).
        assert legacy.parse_header(header + b"xyz", settled=False) == expected
        assert legacy.encode_header(command, name, size or 0) == header
    else:
        with_marker = header + legacy.SECOND_ACTIVE
        _prefixes_wait(with_marker[: len(header)])
        assert legacy.parse_header(with_marker, settled=False) == expected


def test_legacy_settled_prefixes_are_whole_headers_or_errors() -> None:
    header = b"put|hello.txt|12"
    for cut in range(len(header)):
        try:
            parsed = legacy.parse_header(header[:cut], settled=True)
        except legacy.LegacyError:
            continue
        assert parsed is not None and cut == len(header) - 1  # "put|hello.txt|1": size 1
        assert parsed == (legacy.Header(legacy.Command.PUT, "hello.txt", 1), cut)


def test_legacy_get_with_second_active_appended() -> None:
    data = b"get|report.pdf|0second_active"
    parsed = legacy.parse_header(data, settled=False)
    assert parsed == (legacy.Header(legacy.Command.GET, "report.pdf", None), 16)
    assert data[16:] == legacy.SECOND_ACTIVE


def test_legacy_several_commands_on_one_connection() -> None:
    stream = b"put|a|3abcget|a|0"
    header, used = legacy.parse_header(stream, settled=False)  # type: ignore[misc]
    assert header == legacy.Header(legacy.Command.PUT, "a", 3)
    rest = stream[used + 3 :]
    assert legacy.parse_header(rest, settled=True) == (
        legacy.Header(legacy.Command.GET, "a", None),
        len(rest),
    )


@pytest.mark.parametrize(
    "data",
    [
        b"del|a|0",
        b"PUT|a|1",
        b"pux",
        b"\x16\x03\x01\x02\x00",
        b"GET / HTTP/1.1\r\n",
        b"put|../x|1",
        b"put|/abs|1",
        b"put|a\\b|1",
        b"put|a\x00b|1",
        b"put|\xff\xfe|1",
        b"get|\xc3\x28|0",
        b"put|a|x",
        b"put|a|-1",
        b"put|a|12345678901234567890",
        b"get|a|0|1",
    ],
)
def test_legacy_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(legacy.LegacyError):
        legacy.parse_header(data, settled=True)


@pytest.mark.parametrize("data", [b"put", b"get|a", b"put|a|", b""])
def test_legacy_incomplete_headers_wait_then_fail_when_settled(data: bytes) -> None:
    assert legacy.parse_header(data, settled=False) is None
    with pytest.raises(legacy.LegacyError):
        legacy.parse_header(data, settled=True)


def test_legacy_1024_byte_limit() -> None:
    name = "/".join(["n" * 250] * 4)  # 1003 bytes
    fits = f"put|{name}|{'1' * 16}".encode()  # 1024 bytes
    assert len(fits) == 1024
    assert legacy.parse_header(fits + b"data", settled=False) == (
        legacy.Header(legacy.Command.PUT, name, int("1" * 16)),
        1024,
    )
    assert legacy.parse_header(fits, settled=True) is not None
    too_long = f"put|{name}|{'1' * 17}".encode()  # 1025 bytes
    for settled in (False, True):
        with pytest.raises(legacy.LegacyError, match="1024"):
            legacy.parse_header(too_long + b"data", settled=settled)
    with pytest.raises(legacy.LegacyError, match="1024"):
        legacy.parse_header(too_long, settled=True)
    get_fits = f"get|{name}|{'0' * 16}".encode()
    assert legacy.parse_header(get_fits + legacy.SECOND_ACTIVE, settled=False) == (
        legacy.Header(legacy.Command.GET, name, None),
        1024,
    )
    with pytest.raises(legacy.LegacyError, match="1024"):
        legacy.parse_header(f"get|{name}|{'0' * 17}".encode(), settled=True)
    # Never more than 1024 bytes are waited for without a header.
    with pytest.raises(legacy.LegacyError):
        legacy.parse_header(b"get|" + b"x" * 1100, settled=False)


def test_legacy_get_reply() -> None:
    assert legacy.parse_get_reply(b"YES|1234", settled=True) == (1234, 8)
    assert legacy.parse_get_reply(b"YES|1234", settled=False) is None
    assert legacy.parse_get_reply(b"YES|12\x89PNG", settled=False) == (12, 6)
    assert legacy.parse_get_reply(b"NO|0", settled=True) == (None, 4)
    for cut in range(len(b"YES|1")):
        assert legacy.parse_get_reply(b"YES|1"[:cut], settled=False) is None
    for bad in (b"YES|", b"OK", b"MAYBE|1", b""):
        with pytest.raises(legacy.LegacyError):
            legacy.parse_get_reply(bad, settled=True)
    assert legacy.found_reply(1234) == b"YES|1234"
    assert legacy.NOT_FOUND_REPLY == b"NO|0" and legacy.OK == b"OK"
