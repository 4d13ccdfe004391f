"""The receive-side DATA fast path: next_event_or_data(), read_body(), data_received().

The caller takes a checked DATA frame's payload itself (the channel reads it
from the socket into a transfer's block); the machine still checks the frame
and stays in step with the byte stream.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocol.test_connection_pair import CLIENT, SERVER, ConnectionPair, expect_remote
from trioftp.protocol.codec import encode_message
from trioftp.protocol.connection import (
    NEED_DATA,
    PEER_CLOSED,
    Connection,
    ConnectionState,
    DataHeader,
    Settings,
)
from trioftp.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from trioftp.protocol.messages import Cancel, Data, End, Get, Put, Ready, Window


def upload_pair(window: int = 8 * 1024 * 1024) -> ConnectionPair:
    p = ConnectionPair(server_settings=Settings(initial_window=window))
    p.handshake()
    p.send(CLIENT, Put(name="f", size=1000, stream_id=1))
    p.send(SERVER, Ready(offset=0, stream_id=1))
    return p


def take_all(
    machine: Connection, chunks: list[bytes], split: set[int], *, direct: bool
) -> tuple[list[Any], bytes]:
    """Feed `chunks` one by one; return the events and the payload bytes taken by the caller.

    With `direct`, payload bytes the machine has not buffered are "read from the
    socket" by the caller (data_received) instead of being fed to the machine.
    """
    events: list[Any] = []
    body = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        while True:
            if machine.body_remaining:
                into = bytearray(machine.body_remaining)
                n = machine.read_body(memoryview(into))
                body += into[:n]
                if machine.body_remaining:
                    if not view:
                        break
                    if direct:
                        n = min(len(view), machine.body_remaining)
                        machine.data_received(n)
                        body += view[:n]
                        view = view[n:]
                    else:
                        machine.receive_data(view)
                        view = memoryview(b"")
                    continue
            if view:
                machine.receive_data(view)
                view = memoryview(b"")
            event = machine.next_event_or_data(split)
            if event is NEED_DATA:
                break
            events.append(event)
    return events, bytes(body)


def wire(p: ConnectionPair, payloads: list[bytes]) -> bytes:
    data = b"".join(p.client.send_data(1, payload) for payload in payloads)
    return data + p.client.send(End(size=sum(map(len, payloads)), digest=b"\0" * 32, stream_id=1))


@pytest.mark.parametrize("direct", [False, True])
def test_split_at_every_byte_boundary(direct: bool) -> None:
    payloads = [b"abcdefghij" * 3, b"K", b"0123456789" * 5]
    data = wire(upload_pair(), payloads)
    for cut in range(len(data) + 1):
        p = upload_pair()
        assert p.server.next_event_or_data({1}) is NEED_DATA
        events, body = take_all(p.server, [data[:cut], data[cut:]], {1}, direct=direct)
        assert body == b"".join(payloads), cut
        assert events[:-1] == [DataHeader(stream_id=1, length=len(x)) for x in payloads], cut
        assert isinstance(events[-1], End)
        assert p.server.body_remaining == 0


def test_byte_by_byte() -> None:
    payloads = [b"x" * 100, b"y" * 3]
    data = wire(upload_pair(), payloads)
    p = upload_pair()
    events, body = take_all(p.server, [data[i : i + 1] for i in range(len(data))], {1}, direct=False)
    assert body == b"x" * 100 + b"y" * 3
    assert len(events) == 3 and isinstance(events[2], End)


def test_streams_not_asked_for_and_empty_data_come_as_messages() -> None:
    p = upload_pair()
    data = p.client.send_data(1, b"abc") + p.client.send_data(1, b"")
    p.server.receive_data(data)
    assert p.server.next_event_or_data({2}) == Data(payload=b"abc", stream_id=1)
    assert p.server.next_event_or_data({1}) == Data(payload=b"", stream_id=1)
    assert p.server.next_event_or_data({1}) is NEED_DATA


def test_window_is_charged_and_granted_as_usual() -> None:
    p = upload_pair(window=10)
    data = p.client.send_data(1, b"0123456789")
    p.server.receive_data(data[:10])  # the header only
    assert p.server.next_event_or_data({1}) == DataHeader(stream_id=1, length=10)
    p.server.data_received(10)
    assert p.server.next_event_or_data({1}) is NEED_DATA
    grant = p.server.acknowledge(1, 10)
    assert p.deliver(CLIENT, grant) == [Window(increment=10, stream_id=1)]


def test_flow_control_violation_is_still_detected() -> None:
    p = upload_pair(window=10)
    frame = encode_message(Data(payload=b"0123456789!", stream_id=1))
    p.server.receive_data(frame[:10])
    # Not reported as a header: the frame goes the usual way, and fails once whole.
    assert p.server.next_event_or_data({1}) is NEED_DATA
    p.server.receive_data(frame[10:])
    with pytest.raises(RemoteProtocolError) as caught:
        p.server.next_event_or_data({1})
    assert caught.value.error_code is ErrorCode.FLOW_CONTROL_ERROR and caught.value.ends_connection
    assert p.server.state is ConnectionState.ERROR


def test_flow_control_violation_after_split_frames() -> None:
    p = upload_pair(window=10)
    p.server.receive_data(encode_message(Data(payload=b"01234567", stream_id=1)))
    assert p.server.next_event_or_data({1}) == DataHeader(stream_id=1, length=8)
    assert p.server.read_body(memoryview(bytearray(8))) == 8
    p.server.receive_data(encode_message(Data(payload=b"abc", stream_id=1)))
    expect_remote(p.server, ErrorCode.FLOW_CONTROL_ERROR)


def test_data_on_a_closed_stream_is_still_skipped() -> None:
    p = ConnectionPair()
    p.handshake()
    p.send(CLIENT, Get(name="f", stream_id=1))
    p.deliver(SERVER, p.client.send(Cancel(stream_id=1)))
    # Stream 1 is closed on the client; the server's DATA in flight is passed over
    # the usual way (a whole Data message, for the app to drop), not split.
    late = encode_message(Data(payload=b"late bytes", stream_id=1))
    p.client.receive_data(late[:12])
    assert p.client.next_event_or_data({1}) is NEED_DATA
    p.client.receive_data(late[12:])
    assert p.client.next_event_or_data({1}) == Data(payload=b"late bytes", stream_id=1)
    assert p.client.body_remaining == 0
    assert p.client.next_event_or_data({1}) is NEED_DATA


def test_data_on_a_never_opened_stream_is_still_an_error() -> None:
    p = upload_pair()
    p.server.receive_data(encode_message(Data(payload=b"x", stream_id=3)))
    with pytest.raises(RemoteProtocolError):
        p.server.next_event_or_data({3})


def test_next_event_before_the_payload_is_taken_is_a_local_error() -> None:
    p = upload_pair()
    p.server.receive_data(encode_message(Data(payload=b"abc", stream_id=1)))
    assert p.server.next_event_or_data({1}) == DataHeader(stream_id=1, length=3)
    with pytest.raises(LocalProtocolError):
        p.server.next_event()
    with pytest.raises(LocalProtocolError):
        p.server.data_received(1)  # buffered bytes come first
    into = bytearray(2)
    assert p.server.read_body(memoryview(into)) == 2 and into == b"ab"
    assert p.server.body_remaining == 1
    with pytest.raises(LocalProtocolError):
        p.server.data_received(2)  # more than the frame holds
    assert p.server.read_body(memoryview(into)) == 1 and into[:1] == b"c"
    assert p.server.next_event() is NEED_DATA


def test_peer_closing_inside_a_payload_is_a_remote_error() -> None:
    p = upload_pair()
    frame = encode_message(Data(payload=b"abcdef", stream_id=1))
    p.server.receive_data(frame[:12])
    assert p.server.next_event_or_data({1}) == DataHeader(stream_id=1, length=6)
    assert p.server.read_body(memoryview(bytearray(6))) == 2
    p.server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        p.server.next_event_or_data({1})


def test_peer_closing_after_a_payload_is_clean() -> None:
    p = upload_pair()
    p.server.receive_data(encode_message(Data(payload=b"abcdef", stream_id=1)))
    assert p.server.next_event_or_data({1}) == DataHeader(stream_id=1, length=6)
    assert p.server.read_body(memoryview(bytearray(6))) == 6
    p.server.receive_data(b"")
    assert p.server.next_event_or_data({1}) is PEER_CLOSED
