"""What a corrupting path, a hostile name or a broken peer gets from the server, and what it leaves."""

from __future__ import annotations

import os
import struct
from functools import partial
from pathlib import Path

import blake3
import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import (
    DataFlipper,
    MiB,
    RawPeer,
    connect,
    file_digest,
    partials,
    raw_request,
    start_proxy,
    tree,
    wait_until,
    write_random,
)
from trioftp.errors import (
    ChecksumMismatch,
    LocalFileChanged,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    RemoteChecksumMismatch,
    TrioftpError,
)
from trioftp.protocol import (
    NEED_DATA,
    PREFACE,
    Cancel,
    Connection,
    Data,
    Done,
    End,
    Error,
    ErrorCode,
    FileInfo,
    FrameType,
    Hello,
    Listing,
    Put,
    Ready,
    Role,
    Settings,
    Stat,
    Window,
)
from trioftp.protocol.frames import encode_header
from trioftp.server import Server

# ------------------------------------------------------------------ checksum


@pytest.mark.parametrize("size", [1, 5 * MiB])
async def test_a_flipped_byte_on_download_is_caught(
    server: Server, server_root: Path, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    (server_root / "f.bin").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "f.bin"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await start_proxy(nursery, server, to_client=DataFlipper)
            async with connect(proxy.port) as conn:
                with pytest.raises(ChecksumMismatch) as in_memory:
                    await conn.get("f.bin")
                with pytest.raises(ChecksumMismatch) as to_file:
                    await conn.download("f.bin", target)
                assert await conn.list() != []  # only the streams failed
            nursery.cancel_scope.cancel()
    assert not isinstance(in_memory.value, RemoteChecksumMismatch)
    assert not isinstance(to_file.value, RemoteChecksumMismatch)
    assert list(out.iterdir()) == []  # neither the file nor a partial is left
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:  # without the proxy it is fine
            await conn.download("f.bin", target)
    assert target.read_bytes() == data


async def test_download_resumed_onto_a_corrupt_partial_starts_over(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    digest = write_random(server_root / "f.bin", 2 * MiB)
    good = (server_root / "f.bin").read_bytes()
    corrupt = bytearray(good[:MiB])
    corrupt[1000] ^= 0xFF
    (tmp_path / "f.bin.trioftp-part").write_bytes(corrupt)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("f.bin", tmp_path / "f.bin")
    assert file_digest(tmp_path / "f.bin") == digest


@pytest.mark.parametrize("size", [1, 5 * MiB])
async def test_a_flipped_byte_on_upload_is_caught(
    server: Server, server_root: Path, tmp_path: Path, size: int
) -> None:
    (server_root / "f.bin").write_bytes(b"the old content")
    source = tmp_path / "source.bin"
    write_random(source, size)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await start_proxy(nursery, server, to_server=DataFlipper)
            async with connect(proxy.port) as conn:
                with pytest.raises(RemoteChecksumMismatch) as from_memory:
                    await conn.put("f.bin", source.read_bytes())
                with pytest.raises(RemoteChecksumMismatch) as from_file:
                    await conn.upload(source, "f.bin")
                assert await conn.get("f.bin") == b"the old content"
            nursery.cancel_scope.cancel()
    assert from_memory.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert from_file.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert (server_root / "f.bin").read_bytes() == b"the old content"
    assert partials(server_root) == []  # a mismatched upload is not kept for resume
    assert tree(server_root) == {".trioftp", ".trioftp/partial", "f.bin"}


# -------------------------------------------------------------- path tricks


BAD_NAMES = ["../x", "/abs", "a/../../x", "a\x00b", "a\\b", "", "a//b", "a/", ".", "x/./y", "a\nb"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_the_client_refuses_bad_names_before_sending(server: Server, name: str) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(trioftp.BadName):  # a TrioftpError, as the README says
                await conn.get(name)
            with pytest.raises(trioftp.BadName):
                await conn.put(name, b"x")
            assert await conn.list() == []


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_the_server_answers_bad_name_and_goes_on(server: Server, tmp_path: Path, name: str) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(raw_request(FrameType.GET, 1, name=name, offset=0, length=None))
            answer = await peer.receive()
            assert isinstance(answer, Error) and answer.stream_id == 1
            assert answer.code is ErrorCode.BAD_NAME
            await peer.send_raw(
                raw_request(FrameType.PUT, 3, name=name, size=1, digest=None, resume=False, mtime_ns=None)
            )
            answer = await peer.receive()
            assert isinstance(answer, Error) and (answer.stream_id, answer.code) == (3, ErrorCode.BAD_NAME)
            await peer.send_raw(raw_request(FrameType.MKDIR, 5, name=name))
            answer = await peer.receive()
            assert isinstance(answer, Error) and (answer.stream_id, answer.code) == (5, ErrorCode.BAD_NAME)
            if name:  # "" is the root, for LIST
                await peer.send_raw(raw_request(FrameType.LIST, 7, folder=name))
                answer = await peer.receive()
                assert isinstance(answer, Error) and (answer.stream_id, answer.code) == (
                    7,
                    ErrorCode.BAD_NAME,
                )
            await peer.send(Stat(name="still-here", stream_id=9))
            answer = await peer.receive()
            assert isinstance(answer, Error) and (answer.stream_id, answer.code) == (9, ErrorCode.NOT_FOUND)
    # Nothing was made, inside the root or next to it.
    assert tree(tmp_path) == {"root", "root/.trioftp", "root/.trioftp/partial"}


async def test_bad_name_and_good_requests_in_one_write_are_all_answered(
    server: Server, server_root: Path
) -> None:
    (server_root / "here.txt").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(
                raw_request(FrameType.STAT, 1, name="here.txt")
                + raw_request(FrameType.STAT, 3, name="../escape")
                + raw_request(FrameType.STAT, 5, name="here.txt")
            )
            answers = {}
            while len(answers) < 3:
                message = await peer.receive()
                assert message is not None, f"connection closed with only {answers} answered"
                answers[message.stream_id] = message
    assert isinstance(answers[1], FileInfo) and answers[1].size == 1
    assert isinstance(answers[3], Error) and answers[3].code is ErrorCode.BAD_NAME
    assert isinstance(answers[5], FileInfo)


async def test_the_state_folder_is_reserved(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            for attempt in (
                lambda: conn.put(".trioftp/x", b"x"),
                lambda: conn.put(".trioftp", b"x"),
                lambda: conn.get(".trioftp/partial"),
                lambda: conn.list(".trioftp"),
                lambda: conn.stat(".trioftp"),
                lambda: conn.mkdir(".trioftp/partial/evil"),
                lambda: conn.delete(".trioftp/partial"),
                lambda: conn.rename(".trioftp", "moved"),
            ):
                with pytest.raises(PermissionDenied):
                    await attempt()
            (server_root / "a.txt").write_bytes(b"a")
            with pytest.raises(PermissionDenied):
                await conn.rename("a.txt", ".trioftp/partial/a.txt")
            assert [e.name for e in await conn.list()] == ["a.txt"]
            await conn.put("sub/.trioftp", b"only the root's is reserved")
    assert (server_root / ".trioftp" / "partial").is_dir()
    assert tree(server_root / ".trioftp") == {"partial"}


@pytest.fixture
def outside(tmp_path: Path, server_root: Path) -> Path:
    """A folder next to the root, reachable from inside only through symlinks."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"secret")
    (server_root / "link-dir").symlink_to(folder)
    (server_root / "link-file").symlink_to(folder / "secret.txt")
    (server_root / "dangling").symlink_to(folder / "not-yet.txt")
    (server_root / "inside.txt").write_bytes(b"fine")
    (server_root / "link-inside").symlink_to(server_root / "inside.txt")
    return folder


async def test_symlinks_leading_out_of_the_root_are_refused(
    server: Server, server_root: Path, outside: Path
) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            for attempt in (
                lambda: conn.get("link-file"),
                lambda: conn.get("link-dir/secret.txt"),
                lambda: conn.put("link-dir/new.txt", b"escape"),
                lambda: conn.put("link-file", b"overwrite"),
                lambda: conn.put("dangling", b"create outside"),
                lambda: conn.list("link-dir"),
                lambda: conn.stat("link-dir/secret.txt"),
                lambda: conn.mkdir("link-dir/new-folder"),
                lambda: conn.rename("inside.txt", "link-dir/moved.txt"),
                lambda: conn.delete("link-dir/secret.txt"),
            ):
                with pytest.raises(PermissionDenied):
                    await attempt()
            # A link that stays inside works; the links out are listed as taken names
            # the server does not serve (kind "other"), saying nothing of what they lead to.
            assert await conn.get("link-inside") == b"fine"
            listed = {e.name: (e.kind.value, e.size) for e in await conn.list()}
    assert listed == {
        "inside.txt": ("file", 4),
        "link-inside": ("link", 4),
        "link-file": ("other", 0),
        "link-dir": ("other", 0),
        "dangling": ("other", 0),
    }
    assert tree(outside) == {"secret.txt"}
    assert (outside / "secret.txt").read_bytes() == b"secret"


async def test_symlinks_out_are_refused_on_the_wire_too(server: Server, outside: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(raw_request(FrameType.GET, 1, name="link-file", offset=0, length=None))
            answer = await peer.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.PERMISSION_DENIED
    assert b"secret" not in answer.message.encode()


# ------------------------------------------------------------- broken peers


@pytest.mark.parametrize(
    "first_bytes",
    [b"\x00\x01\x02\x03", b"\x16\x03\x01\x02\x00", b"\xff" * 64, b"12345"],
    ids=["nul", "tls-hello", "ff", "digits"],
)
async def test_garbage_first_bytes_close_the_connection(server: Server, first_bytes: bytes) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(first_bytes)
            assert await peer.stream.receive_some(1024) == b""
        async with connect(server) as conn:  # others are still served
            assert await conn.list() == []


async def test_a_bad_preface_gets_protocol_error(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(b"\x89TFTX\r\n\x02" + b"\x00" * 30)
            answers = await peer.receive_until_closed()
    assert [(type(m), m.code) for m in answers] == [(Error, ErrorCode.PROTOCOL_ERROR)]  # type: ignore[union-attr]


async def test_another_version_gets_unsupported_version(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(PREFACE[:-1] + b"\x03")
            answers = await peer.receive_until_closed()
    assert [(type(m), m.code) for m in answers] == [(Error, ErrorCode.UNSUPPORTED_VERSION)]  # type: ignore[union-attr]


@pytest.mark.parametrize("after_hello", [True, False], ids=["open", "handshake"])
async def test_an_oversize_frame_length_ends_that_connection_only(server: Server, after_hello: bool) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as bystander:
            async with RawPeer.connect(server, handshake=after_hello) as peer:
                limit = server.config.max_frame_size if after_hello else 16 * 1024
                head = b"" if after_hello else PREFACE
                # The header alone: the server must not wait for (or buffer) the body.
                await peer.send_raw(head + encode_header(FrameType.GET, 1, limit + 1))
                answers = await peer.receive_until_closed()
            assert [(type(m), m.code) for m in answers] == [(Error, ErrorCode.FRAME_TOO_LARGE)]  # type: ignore[union-attr]
            with pytest.raises(NotFound):
                await bystander.get("x")
            async with connect(server) as newcomer:
                assert await newcomer.list() == []


async def test_a_frame_of_exactly_the_limit_is_accepted(server: Server, server_root: Path) -> None:
    size = server.config.max_frame_size
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            data = os.urandom(size)
            await conn.put("exact.bin", data)  # DATA frames of max_frame_size bytes
    assert (server_root / "exact.bin").read_bytes() == data


async def test_a_protocol_violation_gets_protocol_error_and_a_close(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            # DATA on a stream that was never opened.
            await peer.send_raw(encode_header(FrameType.DATA, 9, 3) + b"abc")
            answers = await peer.receive_until_closed()
    assert [(type(m), m.code, m.stream_id) for m in answers] == [(Error, ErrorCode.PROTOCOL_ERROR, 0)]  # type: ignore[union-attr]


async def test_unknown_frame_types_are_stepped_over(server: Server, server_root: Path) -> None:
    """v2.1 (spec 4.1): a frame of an unknown type (GREASE among them) is ignored, whatever its
    flags and stream, and the requests around it are answered."""
    (server_root / "a.txt").write_bytes(b"a")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(
                struct.pack("!IBBI", 3, 0x7E, 0xFF, 1)
                + b"abc"
                + struct.pack("!IBBI", 0, 0x1F, 0, 0)
                + raw_request(FrameType.STAT, 1, name="a.txt")
            )
            answer = await peer.receive()
    assert isinstance(answer, FileInfo) and answer.size == 1


async def test_a_peer_vanishing_mid_upload_leaves_no_trace(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(
                raw_request(FrameType.PUT, 1, name="v.bin", size=10, digest=None, resume=True, mtime_ns=None)
            )
            ready = await peer.receive()
            assert ready is not None and type(ready).__name__ == "Ready"
            await peer.send_raw(
                encode_header(FrameType.DATA, 1, 4) + b"abcd" + encode_header(FrameType.DATA, 1, 6) + b"ef"
            )
        with trio.move_on_after(5):
            await wait_until(lambda: server.connection_count == 0)
        assert server.connection_count == 0
        async with connect(server) as conn:
            with pytest.raises(NotFound):
                await conn.get("v.bin")
            assert await conn.list() == []
            await conn.mkdir("after")  # the server is fine
    assert tree(server_root) - {".trioftp", ".trioftp/partial"} == {"after"}


async def test_listing_and_done_for_raw_requests(server: Server) -> None:
    # The raw peer itself is checked against answers the real client gets.
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(raw_request(FrameType.MKDIR, 1, name="made"))
            done = await peer.receive()
            await peer.send_raw(raw_request(FrameType.LIST, 2, folder=""))
            listing = await peer.receive()
    assert done == Done(stream_id=1)
    assert isinstance(listing, Listing) and [e.name for e in listing.entries] == ["made"] and listing.last


# ------------------------------------------------------- files changing underfoot


async def test_a_file_truncated_while_sent_ends_only_its_stream_with_busy(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    """Spec 11.1 (v2.1): the DATA frame already announced is filled up, so the framing stays
    whole; the stream ends with BUSY and the connection serves the next request."""
    digest = write_random(server_root / "shrinks.bin", 2 * MiB)
    server.storage.digests.put((server_root / "shrinks.bin").stat(), "blake3", digest)
    (server_root / "other.txt").write_bytes(b"still served")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, initial_window=65536) as peer:
            await peer.send_raw(raw_request(FrameType.GET, 1, name="shrinks.bin", offset=0, length=None))
            assert isinstance(await peer.receive(), FileInfo)
            first = await peer.receive()
            assert isinstance(first, Data) and len(first.payload) == 65536
            os.truncate(server_root / "shrinks.bin", 100_000)  # shorter than the next frame will announce
            await peer.send(Window(increment=MiB, stream_id=1))
            answers = []
            while not (answers and isinstance(answers[-1], Error)):
                answer = await peer.receive()
                assert answer is not None, "the connection closed"
                answers.append(answer)
            assert sum(len(m.payload) for m in answers if isinstance(m, Data)) == MiB  # as announced
            assert answers[-1] == Error(code=ErrorCode.BUSY, message=answers[-1].message, stream_id=1)
            assert not any(isinstance(m, End) for m in answers)
            await peer.send_raw(raw_request(FrameType.GET, 3, name="other.txt", offset=0, length=None))
            assert isinstance(await peer.receive(), FileInfo)
            data = await peer.receive()
            assert isinstance(data, Data) and data.payload == b"still served"


async def test_a_local_file_shrinking_during_upload_is_a_trioftp_error(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f.bin").write_bytes(b"old content")
    source = tmp_path / "f.bin"
    write_random(source, 8 * MiB)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(LocalFileChanged) as caught:
                await conn.upload(source, "f.bin", progress=lambda n, t: os.truncate(source, MiB))
    assert isinstance(caught.value, TrioftpError)
    assert (server_root / "f.bin").read_bytes() == b"old content"


async def test_a_ranged_get(server: Server, server_root: Path) -> None:
    data = bytes(range(256)) * 4
    (server_root / "r.bin").write_bytes(data)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(raw_request(FrameType.GET, 1, name="r.bin", offset=10, length=5))
            info, body, end = await peer.receive(), await peer.receive(), await peer.receive()
            await peer.send_raw(
                raw_request(FrameType.GET, 3, name="r.bin", offset=len(data) + 1, length=None)
            )
            past_the_end = await peer.receive()
    assert isinstance(info, FileInfo) and info.size == len(data)
    assert isinstance(body, Data) and body.payload == data[10:15]
    assert isinstance(end, End) and end.size == len(data) and end.digest == blake3.blake3(data).digest()
    assert isinstance(past_the_end, Error) and past_the_end.code is ErrorCode.BAD_REQUEST


async def test_a_server_cancel_during_an_upload_is_a_protocol_violation(nursery: trio.Nursery) -> None:
    """A peer that answers PUT with READY then CANCEL gets a TrioftpError, not an AttributeError."""

    async def ready_then_cancel(stream: trio.SocketStream) -> None:
        machine = Connection(Role.SERVER, Settings(initial_window=16))
        while data := await stream.receive_some(64 * 1024):
            machine.receive_data(data)
            while (event := machine.next_event()) is not NEED_DATA:
                if isinstance(event, Hello):
                    await stream.send_all(machine.send(machine.settings.hello(digests=("blake3",))))
                elif isinstance(event, Put):
                    await stream.send_all(
                        machine.send(Ready(offset=0, stream_id=event.stream_id))
                        + machine.send(Cancel(message="no", stream_id=event.stream_id))
                    )

    listeners = await nursery.start(partial(trio.serve_tcp, ready_then_cancel, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(port) as conn:
            with pytest.raises(ProtocolViolation, match="unexpected Cancel during an upload"):
                await conn.put("f.bin", b"x" * 100)
    nursery.cancel_scope.cancel()
