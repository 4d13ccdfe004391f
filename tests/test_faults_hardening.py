"""Faults against the real server that test_v2_faults/test_v2_limits do not cover.

A peer that stops reading, hundreds of connections from one address, a full
disk, a server killed mid-upload, a peer that closes while its upload is being
written. Each time: the client gets a clear answer (or a closed connection),
nothing half-written shows, and everyone else is served.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioftp.storage.local.uploads as uploads_module
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.test_cli import read_rest, start_serve
from tests.v2_helpers import (
    HOST,
    MiB,
    RawPeer,
    connect,
    file_digest,
    partials,
    raw_request,
    tree,
    wait_until,
    write_random,
)
from trioftp.errors import RemoteError
from trioftp.protocol import (
    PREFACE,
    Connection,
    Data,
    End,
    Error,
    ErrorCode,
    FileInfo,
    FrameType,
    Hello,
    Put,
    Ready,
    Role,
    Settings,
)
from trioftp.protocol.codec import encode_message
from trioftp.protocol.connection import NEED_DATA, PEER_CLOSED
from trioftp.transport.channel import Channel
from trioftp.transport.streams import ChannelClosed


def put_request(stream_id: int, name: str, size: int, *, resume: bool = False) -> bytes:
    return raw_request(
        FrameType.PUT, stream_id, name=name, size=size, digest=None, resume=resume, mtime_ns=None
    )


# ------------------------------------------------------- a peer that stops reading


async def test_a_peer_that_stops_reading_a_download_is_dropped_and_others_are_served(
    make_server: MakeServer, server_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Real clock: the bystander's commit and the server's hashing run on threads.
    server = await make_server(min_rate=1_000_000, min_rate_window=1.5)
    size = 256 * MiB  # sparse: far more than the socket buffers between the two can hold
    with (server_root / "big.bin").open("wb") as f:
        f.truncate(size)
    sent_at_stall = 0
    with trio.fail_after(NETWORK_TIMEOUT):
        # The window is as large as allowed: what stops the server is the socket, not WINDOW.
        async with RawPeer.connect(server, initial_window=2**31 - 1) as stuck:
            await stuck.send_raw(raw_request(FrameType.GET, 1, name="big.bin", offset=0, length=None))
            assert isinstance(await stuck.receive(), FileInfo)
            assert isinstance(await stuck.receive(), Data)  # the file is on its way...
            # ...and then the peer reads nothing more. The server stops sending once the
            # kernel's buffers are full; it does not read the file ahead into its memory.
            while True:
                before = server.metrics.sent
                await trio.sleep(0.2)
                if server.metrics.sent == before:
                    break
            sent_at_stall = server.metrics.sent
            assert 0 < sent_at_stall < 64 * MiB
            # Meanwhile everyone else is served at full speed.
            data = os.urandom(2 * MiB)
            async with connect(server) as bystander:
                await bystander.put("other.bin", data)
                assert await bystander.get("other.bin") == data
                assert [e.name for e in await bystander.list()] == ["big.bin", "other.bin"]
                assert server.connection_count == 2  # the stuck one is still there
                # Below min_rate for min_rate_window: the stuck connection is dropped.
                await wait_until(lambda: server.connection_count == 1)
                assert await bystander.get("other.bin") == data
            received = await stuck.receive_until_closed()
    # Nothing more went to the stuck peer (the rest of the count is the bystander's two GETs).
    assert server.metrics.sent - 2 * len(data) == sent_at_stall
    assert MiB + sum(len(m.payload) for m in received if isinstance(m, Data)) <= sent_at_stall
    assert not any(isinstance(m, End) for m in received)
    assert any("TIMEOUT" in r.getMessage() and "slower than" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------- many connections, one address


async def _hello(stream: trio.SocketStream) -> Any:
    """Say HELLO on a raw connection; return the server's first answer (HELLO or ERROR)."""
    peer = RawPeer(stream)
    await peer.send_raw(PREFACE + encode_message(
        Hello(max_frame_size=MiB, max_streams=128, initial_window=MiB, digests=("blake3",))
    ))  # fmt: skip
    return await peer.receive()


async def test_hundreds_of_connections_from_one_address(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_ip=50)
    answers: list[Any] = []
    everyone_answered = trio.Event()
    release = trio.Event()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def one() -> None:
                async with await trio.open_tcp_stream(HOST, server.port) as stream:
                    answers.append(await _hello(stream))
                    if len(answers) == 300:
                        everyone_answered.set()
                    await release.wait()  # hold the connection

            for _ in range(300):
                nursery.start_soon(one)
            await everyone_answered.wait()
            # With 50 connections from 127.0.0.1 held, another address is still served...
            async with await trio.open_tcp_stream(HOST, server.port, local_address="127.0.0.2") as other:
                assert isinstance(await _hello(other), Hello)
                peer = RawPeer(other)
                peer._preface_seen = True
                await peer.send_raw(raw_request(FrameType.LIST, 1, folder=""))
                assert (await peer.receive()).entries == ()  # type: ignore[union-attr]
            # ...and 127.0.0.1 is not.
            async with await trio.open_tcp_stream(HOST, server.port) as extra:
                late = await _hello(extra)
            release.set()
        accepted = [a for a in answers if isinstance(a, Hello)]
        refused = [a for a in answers if isinstance(a, Error)]
        assert (len(accepted), len(refused)) == (50, 250)
        assert {a.code for a in refused} == {ErrorCode.CONNECTION_LIMIT}
        assert isinstance(late, Error) and late.code is ErrorCode.CONNECTION_LIMIT
        assert server.connections_refused == 251
        await wait_until(lambda: server.connection_count == 0)
        async with connect(server) as conn:  # every slot came back
            await conn.put("after.txt", b"served")
            assert await conn.get("after.txt") == b"served"


# ---------------------------------------------------------------------- a full disk


async def test_a_full_disk_answers_no_space_and_keeps_the_old_file(
    make_server: MakeServer, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    left_on_disk = MiB + 12345
    write = uploads_module._write_all

    def fill_up(fd: int, blocks: Any, offset: int) -> None:
        end = offset + sum(len(b) for b in blocks)
        if end > left_on_disk:
            os.pwrite(fd, b"\0" * max(0, left_on_disk - offset), offset)  # what fits, as a disk does
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(fd, blocks, offset)

    monkeypatch.setattr(uploads_module, "_write_all", fill_up)
    server = await make_server()
    (server_root / "f.bin").write_bytes(b"old content")
    source = tmp_path / "big.bin"
    write_random(source, 8 * MiB)
    small = os.urandom(100_000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn, connect(server) as other:
            with pytest.raises(RemoteError) as from_memory:
                await conn.put("f.bin", source.read_bytes())
            with pytest.raises(RemoteError) as from_file:
                await conn.upload(source, "f.bin")
            assert partials(server_root) == []  # removed, not kept for a resume that cannot fit
            assert await conn.get("f.bin") == b"old content"
            await conn.put("small.bin", small)  # the connection goes on, and what fits is stored
            assert await other.get("small.bin") == small
    assert from_memory.value.code is ErrorCode.NO_SPACE and "no space" in str(from_memory.value)
    assert from_file.value.code is ErrorCode.NO_SPACE
    assert (server_root / "f.bin").read_bytes() == b"old content"
    assert tree(server_root) == {".trioftp", ".trioftp/partial", "f.bin", "small.bin"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test (skipped where mounting is not allowed)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


async def test_a_really_full_disk_frees_the_partial(make_server: MakeServer, small_disk: Path) -> None:
    server = await make_server(root=small_disk)
    old = os.urandom(100_000)
    (small_disk / "f.bin").write_bytes(old)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as caught:
                await conn.put("f.bin", os.urandom(3 * MiB))
            assert caught.value.code is ErrorCode.NO_SPACE
            assert await conn.get("f.bin") == old
            # The partial is gone from the disk, so its space is free again.
            fits = os.urandom(MiB + MiB // 2)
            await conn.put("fits.bin", fits)
    assert (small_disk / "f.bin").read_bytes() == old
    assert (small_disk / "fits.bin").read_bytes() == fits
    assert partials(small_disk) == []
    server.shutdown()


# --------------------------------------------------------- a server killed mid-upload


async def test_a_server_killed_mid_upload_restarts_clean_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "target.bin").write_bytes(b"old content")
    source = tmp_path / "new.bin"
    digest = write_random(source, 8 * MiB, seed=7)
    data = source.read_bytes()
    partial_dir = root / ".trioftp" / "partial"
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, log = await start_serve(root)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_rest, process, log)
                async with RawPeer.connect(port) as first, RawPeer.connect(port) as second:
                    # Two uploads of one name and size: the first owns the resumable .part,
                    # the second writes a private .tmp. Both stall midway, then the server dies.
                    await first.send_raw(put_request(1, "target.bin", len(data), resume=True))
                    assert isinstance(await first.receive(), Ready)
                    for offset in range(0, 3 * MiB, MiB):
                        await first.send(Data(payload=data[offset : offset + MiB], stream_id=1))
                    await wait_until(lambda: _sizes(partial_dir, ".part") >= 2 * MiB)
                    await second.send_raw(put_request(1, "target.bin", len(data), resume=True))
                    assert isinstance(await second.receive(), Ready)
                    await second.send(Data(payload=os.urandom(MiB), stream_id=1))
                    await wait_until(lambda: any(partial_dir.glob("*.tmp")))
                    process.kill()
                    assert await process.wait() == -signal.SIGKILL
                    assert await first.receive_until_closed() == []
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        # Nothing the killed server did is visible; what it left is only in its own folder.
        assert (root / "target.bin").read_bytes() == b"old content"
        assert tree(root) - {str(p.relative_to(root)) for p in partials(root)} == {
            ".trioftp", ".trioftp/partial", "target.bin"
        }  # fmt: skip
        (kept,) = partial_dir.glob("*.part")
        held = kept.stat().st_size
        assert held >= 2 * MiB and kept.read_bytes() == data[:held]
        assert len(list(partial_dir.glob("*.tmp"))) == 1

        # Restarted: the private temp file is removed at start, the resumable part is kept.
        process, port, log = await start_serve(root)
        try:
            assert "1 stale partial uploads removed" in log[0]
            assert [p.name for p in partials(root)] == [kept.name]
            async with connect(port) as conn:
                progress: list[int] = []
                await conn.upload(source, "target.bin", progress=lambda done, total: progress.append(done))
            assert progress[0] > held  # it started from the bytes the killed server had written
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await process.wait()
    assert file_digest(root / "target.bin") == digest
    assert partials(root) == []


def _sizes(folder: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"*{suffix}"))


# ------------------------------------------------ a peer gone during our work


def _server_machine_after_eof() -> Connection:
    """A server machine with an upload open whose peer sent some DATA, then closed."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, Settings(initial_window=32 * 1024))
    server.receive_data(client.initiate())
    assert server.next_event().__class__.__name__ == "Hello"
    client.receive_data(server.send(server.settings.hello(digests=("blake3",))))
    client.next_event()
    server.receive_data(client.send(Put(name="f.bin", size=100_000, stream_id=1)))
    assert isinstance(server.next_event(), Put)
    client.receive_data(server.send(Ready(offset=0, stream_id=1)))
    client.next_event()
    server.receive_data(client.send(Data(payload=b"x" * 20_000, stream_id=1)))
    assert isinstance(server.next_event(), Data)
    server.receive_data(b"")
    assert server.next_event() is PEER_CLOSED
    assert server.next_event() in (NEED_DATA, PEER_CLOSED)
    return server


async def test_sending_after_the_peer_closed_is_channel_closed() -> None:
    # The server's writer thread finishes a block just as the reader sees EOF: granting
    # more credit must end the stream quietly, not fail it with LocalProtocolError
    # (which the session logged as "stream failed" and answered INTERNAL).
    left, right = trio.testing.memory_stream_pair()
    channel = Channel(left, _server_machine_after_eof())
    with pytest.raises(ChannelClosed):
        await channel.acknowledge(1, 20_000)
    with pytest.raises(ChannelClosed):
        await channel.send_if_open(Ready(offset=0, stream_id=1))
    await right.aclose()
