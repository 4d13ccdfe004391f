"""Protocol v2.1 against the real server: what an outside implementer of the spec relies on (issue 14)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import blake3
import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import MiB, RawPeer, connect, raw_request
from trioftp.client.connection import ClientConnection
from trioftp.protocol import (
    PREFACE,
    Data,
    End,
    Error,
    ErrorCode,
    FileInfo,
    Get,
    Goodbye,
    Hello,
    Put,
    Rename,
    Stat,
    Window,
)
from trioftp.protocol.codec import encode_message
from trioftp.protocol.frames import GREASE_FRAME_TYPES, FrameType
from trioftp.protocol.messages import FEATURE_V2_1
from trioftp.server import Server

CLIENT_HELLO = Hello(
    max_frame_size=MiB, max_streams=128, initial_window=8 * MiB, digests=("blake3",), agent="v2.1-test"
)


async def test_a_request_pipelined_behind_hello_is_answered_after_the_servers_hello(
    server: Server, server_root: Path
) -> None:
    (server_root / "a.txt").write_bytes(b"pipelined")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(
                PREFACE + encode_message(CLIENT_HELLO) + encode_message(Get(name="a.txt", stream_id=1))
            )
            hello = await peer.receive()
            assert isinstance(hello, Hello) and FEATURE_V2_1 in hello.features
            info = await peer.receive()
            data = await peer.receive()
            end = await peer.receive()
    assert isinstance(info, FileInfo) and info.size == 9
    assert isinstance(data, Data) and data.payload == b"pipelined"
    assert isinstance(end, End) and end.digest == blake3.blake3(b"pipelined").digest()


async def test_window_may_come_with_the_get(server: Server, server_root: Path) -> None:
    """GET and WINDOW in one write: the credit counts from the request on."""
    data = os.urandom(MiB)
    (server_root / "w.bin").write_bytes(data)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, initial_window=1024) as peer:
            await peer.send(Get(name="w.bin", stream_id=1), Window(increment=MiB, stream_id=1))
            got = b""
            while True:
                message = await peer.receive()
                assert message is not None and not isinstance(message, Error), message
                if isinstance(message, Data):
                    got += message.payload
                if isinstance(message, End):
                    break
    assert got == data


@pytest.mark.parametrize(("old", "new"), [("folder", "file"), ("file", "folder")])
async def test_rename_between_kinds_is_wrong_kind_both_ways(
    server: Server, server_root: Path, old: str, new: str
) -> None:
    (server_root / "folder").mkdir()
    (server_root / "file").write_bytes(b"f")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send(Rename(old=old, new=new, replace=True, stream_id=1))
            answer = await peer.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.WRONG_KIND, answer
    assert (server_root / "folder").is_dir() and (server_root / "file").read_bytes() == b"f"


async def test_an_identical_put_with_a_new_time_updates_the_stored_time(
    server: Server, server_root: Path
) -> None:
    (server_root / "same.txt").write_bytes(b"same bytes")
    when = 1_600_000_000_123_456_789
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            digest = blake3.blake3(b"same bytes").digest()
            await peer.send(Put(name="same.txt", size=10, digest=digest, mtime_ns=when, stream_id=1))
            answer = await peer.receive()
    assert isinstance(answer, FileInfo) and answer.mtime_ns == when  # the short-cut, with the new time
    assert (server_root / "same.txt").stat().st_mtime_ns == when


@pytest.mark.parametrize("in_flight", [False, True])
async def test_a_request_after_goodbye_is_never_run(
    server: Server, server_root: Path, in_flight: bool
) -> None:
    """Spec 15 (v2.1): the server closes (GOODBYE left nothing open) or answers PROTOCOL_ERROR
    (it read the request while a stream was still open); it never runs the request."""
    (server_root / "a.txt").write_bytes(b"a")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            first = [Get(name="a.txt", stream_id=1)] if in_flight else []
            await peer.send(*first, Goodbye(), Get(name="a.txt", stream_id=3))
            answers = await peer.receive_until_closed()
    assert not any(getattr(m, "stream_id", 0) == 3 for m in answers)
    errors = [m.code for m in answers if isinstance(m, Error)]
    assert errors in ([], [ErrorCode.PROTOCOL_ERROR])


async def test_the_reference_client_sends_grease_and_the_server_steps_over_it(
    server: Server, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trioftp.client.connection.GREASE_CHANCE", 1.0)
    sent: list[int] = []
    real = ClientConnection.__init__

    def spying(self: ClientConnection, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        send = self.channel.send_grease

        async def send_grease(frame_type: int, payload: bytes) -> None:
            sent.append(frame_type)
            await send(frame_type, payload)

        self.channel.send_grease = send_grease  # type: ignore[method-assign]

    monkeypatch.setattr(ClientConnection, "__init__", spying)
    (server_root / "g.txt").write_bytes(b"grease")
    with trio.fail_after(NETWORK_TIMEOUT):
        for _ in range(3):
            async with connect(server) as conn:
                assert await conn.get("g.txt") == b"grease"
    assert len(sent) == 3 and all(t in GREASE_FRAME_TYPES for t in sent)


async def test_no_grease_to_a_server_that_is_not_v2_1(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v2.0 server refuses unknown frame types: the client sends GREASE only to a v2.1 one."""
    monkeypatch.setattr("trioftp.client.connection.GREASE_CHANCE", 1.0)
    monkeypatch.setattr("trioftp.server.session.FEATURE_V2_1", "not-v2.1")  # as a v2.0 server's HELLO
    server = await make_server()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            assert await conn.list() == []


async def test_a_stream_refused_for_its_name_counts_toward_max_streams(make_server: MakeServer) -> None:
    """Spec 8 (v2.1): a request refused with BAD_NAME holds its stream until the ERROR answers it."""
    server = await make_server(max_streams=1)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            bad = raw_request(FrameType.GET, 1, name="..", offset=0, length=None)
            await peer.send_raw(bad + encode_message(Rename(old="a", new="b", stream_id=3)))
            first, second = await peer.receive(), await peer.receive()
    # The ERROR for stream 1 goes out before the next frame is read, so stream 3 fits.
    assert first == Error(code=ErrorCode.BAD_NAME, message=first.message, stream_id=1)  # type: ignore[union-attr]
    assert isinstance(second, Error) and second.code is ErrorCode.NOT_FOUND and second.stream_id == 3


async def test_a_flood_of_unknown_frames_ends_the_connection(server: Server, server_root: Path) -> None:
    """Unknown frames are stepped over, but they do no work: a flood counts against the peer
    as other no-op frames do (RFC 9113 section 10.5)."""
    grease = struct.pack("!IBBI", 0, 0x2F, 0, 0)
    (server_root / "a.txt").write_bytes(b"a")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(grease * 100 + encode_message(Stat(name="a.txt", stream_id=1)))
            assert isinstance(await peer.receive(), FileInfo)  # a few are fine
            await peer.send_raw(grease * 5000)
            answers = await peer.receive_until_closed()
    assert [(type(m), getattr(m, "code", None)) for m in answers] == [(Error, ErrorCode.PROTOCOL_ERROR)]
