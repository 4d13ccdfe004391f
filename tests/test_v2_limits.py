"""Server limits, timeouts and graceful shutdown, seen from real and hand-driven clients."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import trio
import trio.testing

import trioftp.storage.local.reading as reading_module
import trioftp.storage.local.uploads as uploads_module
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import (
    HOST,
    MiB,
    RawPeer,
    connect,
    file_digest,
    names,
    partials,
    raw_request,
    wait_until,
    write_random,
)
from trioftp.config import ServerConfig
from trioftp.errors import ConnectionClosed, RemoteError, TransferTimeout
from trioftp.protocol import (
    Cancel,
    Data,
    End,
    Error,
    ErrorCode,
    FileInfo,
    FrameType,
    Goodbye,
    Hello,
    Ready,
    Stat,
    Window,
)
from trioftp.protocol.codec import encode_message
from trioftp.protocol.frames import PREFACE
from trioftp.server import Server


@pytest.fixture
def patient_autojump_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 10 ms of real idleness.

    The server hops to worker threads (opening an upload, committing it); with
    a threshold of 0 the clock would leap to the next deadline while a thread
    runs, as if the disk took ages.
    """
    return trio.testing.MockClock(autojump_threshold=0.01)


def put_request(stream_id: int, name: str, size: int, *, resume: bool = False) -> bytes:
    return raw_request(
        FrameType.PUT, stream_id, name=name, size=size, digest=None, resume=resume, mtime_ns=None
    )


# ------------------------------------------------------------------ streams


async def test_max_streams_refuses_the_request_over_the_limit(make_server: MakeServer) -> None:
    server = await make_server(max_streams=2)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(put_request(1, "a", 10) + put_request(3, "b", 10))
            assert {(type(m), m.stream_id) for m in [await peer.receive(), await peer.receive()]} == {
                (Ready, 1), (Ready, 3),
            }  # fmt: skip
            await peer.send_raw(put_request(5, "c", 10))
            refused = await peer.receive()
            assert isinstance(refused, Error) and (refused.stream_id, refused.code) == (
                5,
                ErrorCode.LIMIT_REACHED,
            )
            # A CANCEL frees a slot before the next request is read.
            await peer.send(Cancel(stream_id=1), Stat(name="c", stream_id=7))
            answer = await peer.receive()
            assert isinstance(answer, Error) and (answer.stream_id, answer.code) == (7, ErrorCode.NOT_FOUND)
            # The connection is fine: finish the upload still open.
            await peer.send(Data(payload=b"0123456789", stream_id=3))
            await peer.send(End(size=10, digest=blake3.blake3(b"0123456789").digest(), stream_id=3))
            done = await peer.receive()
            while isinstance(done, Window):
                done = await peer.receive()
            assert isinstance(done, FileInfo) and (done.stream_id, done.name, done.size) == (3, "b", 10)
    server.shutdown()


async def test_the_client_queues_operations_over_max_streams(
    make_server: MakeServer, server_root: Path
) -> None:
    server = await make_server(max_streams=2)
    for i in range(20):
        (server_root / f"{i}.txt").write_bytes(b"%d" % i)
    most_open = 0
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            results: dict[int, bytes] = {}

            async def fetch(i: int) -> None:
                nonlocal most_open
                results[i] = await conn.get(f"{i}.txt")
                most_open = max(most_open, len(conn._inboxes) + 1)

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(fetch, i)
    assert results == {i: b"%d" % i for i in range(20)}
    assert most_open <= 2
    server.shutdown()


async def test_max_file_size(make_server: MakeServer, server_root: Path, tmp_path: Path) -> None:
    server = await make_server(max_file_size=1000)
    (tmp_path / "big").write_bytes(b"x" * 1001)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as from_memory:
                await conn.put("big", b"x" * 1001)
            with pytest.raises(RemoteError) as from_file:
                await conn.upload(tmp_path / "big")
            await conn.put("fits", b"x" * 1000)
    assert from_memory.value.code is ErrorCode.TOO_LARGE
    assert from_file.value.code is ErrorCode.TOO_LARGE
    assert (server_root / "fits").stat().st_size == 1000
    assert not (server_root / "big").exists()
    assert partials(server_root) == []
    server.shutdown()


async def test_an_upload_sending_more_than_announced_is_refused(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(put_request(1, "liar.bin", 4))
            assert isinstance(await peer.receive(), Ready)
            await peer.send(
                Data(payload=b"12345", stream_id=1), End(size=5, digest=b"\x00" * 32, stream_id=1)
            )
            answer = await peer.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.BAD_REQUEST
    assert not (server_root / "liar.bin").exists()
    assert partials(server_root) == []


# -------------------------------------------------------------- connections


async def test_max_connections_per_ip(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_ip=2)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as first, connect(server):
            with pytest.raises(ConnectionClosed, match="CONNECTION_LIMIT"):
                async with connect(server):
                    pass
            assert server.connections_refused == 1
            assert await first.list() == []
        async with connect(server) as again:  # slots free once connections close
            assert await again.list() == []
    server.shutdown()


async def _refusal_of(stream: trio.SocketStream) -> list[Any]:
    """What the server sends a raw connection before closing it, saying nothing itself."""
    return await RawPeer(stream).receive_until_closed()


async def test_silent_connections_over_the_per_ip_limit_are_refused_at_accept(
    make_server: MakeServer,
) -> None:
    """Not after a wait for their first bytes: that wait held a server-wide slot each."""
    server = await make_server(max_connections_per_ip=2, handshake_timeout=60)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with (
            await trio.open_tcp_stream(HOST, server.port),
            await trio.open_tcp_stream(HOST, server.port),
        ):
            await wait_until(lambda: server.connection_count == 2)
            started = trio.current_time()
            async with await trio.open_tcp_stream(HOST, server.port) as silent:
                refusal = await _refusal_of(silent)
            waited = trio.current_time() - started
            # Told in v2 without having said anything, and closed at once (the old
            # server waited 1 s for the first bytes, then closed without a word).
            assert [(type(m), getattr(m, "code", None)) for m in refusal] == [
                (Error, ErrorCode.CONNECTION_LIMIT)
            ]
            assert waited < 0.5
            assert server.connections_refused == 1
            assert server.connection_count == 2
            async with await trio.open_tcp_stream(HOST, server.port, local_address="127.0.0.2") as other:
                await trio.sleep(1.2)  # another address keeps its full handshake time
                other_peer = RawPeer(other)
                await other_peer.send_raw(PREFACE + encode_message(
                    Hello(max_frame_size=MiB, max_streams=8, initial_window=MiB, digests=("blake3",))
                ))  # fmt: skip
                assert isinstance(await other_peer.receive(), Hello)
    server.shutdown()


async def test_refused_connections_take_no_slot(make_server: MakeServer) -> None:
    """One address reopening connections over its limit cannot keep another address waiting.

    The old server gave each refused connection a slot for up to 1 s: with 30
    of them and one slot to spare, another address waited about 30 s.
    """
    server = await make_server(max_connections=3, max_connections_per_ip=2, handshake_timeout=60)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            held = [await trio.open_tcp_stream(HOST, server.port) for _ in range(2)]
            await wait_until(lambda: server.connection_count == 2)
            refusals: list[list[Any]] = []

            async def over_the_limit() -> None:
                # The client keeps its end open: only the server's close ends it.
                async with await trio.open_tcp_stream(HOST, server.port) as stream:
                    refusals.append(await _refusal_of(stream))

            for _ in range(30):
                nursery.start_soon(over_the_limit)
            with trio.fail_after(3):  # the old server: about 30 s
                await wait_until(lambda: len(refusals) == 30)
                async with await trio.open_tcp_stream(HOST, server.port, local_address="127.0.0.2") as other:
                    other_peer = RawPeer(other)
                    await other_peer.send_raw(PREFACE + encode_message(
                        Hello(max_frame_size=MiB, max_streams=8, initial_window=MiB, digests=("blake3",))
                    ))  # fmt: skip
                    assert isinstance(await other_peer.receive(), Hello)
            assert all(
                [(type(m), getattr(m, "code", None)) for m in refusal]
                == [(Error, ErrorCode.CONNECTION_LIMIT)]
                for refusal in refusals
            )
            assert server.connections_refused == 30
            for stream in held:
                await stream.aclose()
    server.shutdown()


async def test_max_connections_keeps_the_excess_waiting(make_server: MakeServer) -> None:
    server = await make_server(max_connections=2)
    third_served = trio.Event()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server), trio.open_nursery() as nursery:
            release_second = trio.Event()

            async def second() -> None:
                async with connect(server):
                    await release_second.wait()

            async def third() -> None:
                async with connect(server) as conn:
                    assert await conn.list() == []
                    third_served.set()

            nursery.start_soon(second)
            await wait_until(lambda: server.connection_count == 2)
            nursery.start_soon(third)
            with trio.move_on_after(0.5):
                await third_served.wait()
            assert not third_served.is_set()  # waiting in the backlog, not refused
            assert server.connection_count == 2
            release_second.set()
            await third_served.wait()
    server.shutdown()


async def test_connect_timeout_while_waiting_in_the_backlog(make_server: MakeServer) -> None:
    server = await make_server(max_connections=1)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server):
            with pytest.raises(TransferTimeout):
                async with connect(server, connect_timeout=0.3):
                    pass
    server.shutdown()


# ------------------------------------------------------------------ timeouts


async def test_a_peer_that_never_speaks_is_dropped(
    make_server: MakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await make_server(handshake_timeout=5)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            start = trio.current_time()
            assert await peer.stream.receive_some(100) == b""
            assert 5 <= trio.current_time() - start < 5.1
    server.shutdown()


@pytest.mark.parametrize("sent", [b"\x89", b"\x89TFTP\r\n\x02\x00\x00"], ids=["one-byte", "preface"])
async def test_a_peer_that_starts_but_never_says_hello_is_dropped_on_time(
    make_server: MakeServer, autojump_clock: trio.testing.MockClock, sent: bytes
) -> None:
    server = await make_server(handshake_timeout=5)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            start = trio.current_time()
            await trio.sleep(1)
            await peer.send_raw(sent)
            answers = await peer.receive_until_closed()
            assert 5 <= trio.current_time() - start < 5.1  # counted from the connect, not the first byte
    assert [(type(m), m.code) for m in answers] == [(Error, ErrorCode.TIMEOUT)]  # type: ignore[union-attr]
    server.shutdown()


async def test_idle_connections_are_dropped(
    make_server: MakeServer, patient_autojump_clock: trio.testing.MockClock
) -> None:
    server = await make_server(idle_timeout=10)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await trio.sleep(8)
            assert await conn.list() == []  # activity resets the clock
            await trio.sleep(8)
            assert await conn.list() == []
            await trio.sleep(12)
            with pytest.raises(ConnectionClosed, match="TIMEOUT"):
                await conn.list()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            start = trio.current_time()
            answers = await peer.receive_until_closed()
            assert 10 <= trio.current_time() - start <= 11
    assert [(type(m), m.code) for m in answers] == [(Error, ErrorCode.TIMEOUT)]  # type: ignore[union-attr]
    server.shutdown()


async def test_a_trickling_upload_is_dropped(
    make_server: MakeServer, server_root: Path, patient_autojump_clock: trio.testing.MockClock
) -> None:
    server = await make_server(min_rate=1000, min_rate_window=10, idle_timeout=1000)
    (server_root / "t.bin").write_bytes(b"old")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(put_request(1, "t.bin", MiB, resume=True))
            assert isinstance(await peer.receive(), Ready)
            start = trio.current_time()
            answer: list[Any] = []

            async def listen() -> None:
                answer.extend(await peer.receive_until_closed())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                while not peer.closed:
                    with trio.move_on_after(1):  # 100 B/s: a tenth of the minimum
                        await peer.send(Data(payload=b"x" * 100, stream_id=1))
                        await trio.sleep(1)
            elapsed = trio.current_time() - start
    assert [(type(m), m.code) for m in answer] == [(Error, ErrorCode.TIMEOUT)]
    assert 10 <= elapsed <= 12
    assert (server_root / "t.bin").read_bytes() == b"old"
    server.shutdown()


async def test_a_steady_slow_upload_is_not_dropped(make_server: MakeServer, server_root: Path) -> None:
    # Real clock, scaled down: a thread hop (the commit's fsync) would let an
    # autojump clock leap past every deadline.
    server = await make_server(min_rate=100_000, min_rate_window=0.3)
    data = os.urandom(300_000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(put_request(1, "slow.bin", len(data)))
            assert isinstance(await peer.receive(), Ready)
            start = trio.current_time()
            for offset in range(0, len(data), 10_000):  # 200 kB/s for 1.5 s: twice the minimum
                await peer.send(Data(payload=data[offset : offset + 10_000], stream_id=1))
                await trio.sleep(0.05)
            await peer.send(End(size=len(data), digest=blake3.blake3(data).digest(), stream_id=1))
            answer = await peer.receive()
            assert trio.current_time() - start >= 1.5
    assert isinstance(answer, FileInfo) and answer.size == len(data)
    assert (server_root / "slow.bin").read_bytes() == data
    server.shutdown()


def _slowly(function: Callable[..., Any], seconds: float = 0.5) -> Callable[..., Any]:
    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)  # a slow disk, on the worker thread
        return function(*args, **kwargs)

    return slow


@pytest.mark.parametrize("work", ["commit", "stat", "resume", "identical"])
async def test_slow_work_of_the_server_is_not_held_against_the_peer(
    make_server: MakeServer, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, work: str
) -> None:
    server = await make_server(min_rate=1_000_000, min_rate_window=0.15)
    data = os.urandom(2 * MiB)
    (server_root / "there.bin").write_bytes(data)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    if work == "resume":  # a partial the server kept from a cut upload of the same name and size
        key = hashlib.sha256(f"up.bin\0{len(data)}\0blake3\0".encode()).hexdigest()[:40]
        (server_root / ".trioftp" / "partial" / f"{key}.part").write_bytes(data[:MiB])
    for module, name in [
        (uploads_module, "fsync_dir"),  # commit
        (reading_module, "hash_file"),  # stat, and the file already there for an identical-file answer
        (uploads_module, "hash_range"),  # the prefix of a resumed upload
    ]:
        monkeypatch.setattr(module, name, _slowly(getattr(module, name)))
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            if work == "commit":
                info = await conn.put("up.bin", data)
            elif work == "stat":
                info = await conn.stat("there.bin")
            elif work == "resume":
                sent: list[int] = []
                info = await conn.upload(source, "up.bin", progress=lambda n, t: sent.append(n))
                assert sent[0] > MiB  # it did resume from the partial
            else:
                info = await conn.put("there.bin", data)  # the server hashes its copy to compare
    assert info.digest == blake3.blake3(data).digest()
    server.shutdown()


async def test_a_download_the_client_stops_reading_is_dropped(
    make_server: MakeServer, server_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = await make_server(min_rate=1000, min_rate_window=10)
    digest = write_random(server_root / "big.bin", 4 * MiB)
    # Known digest, so the GET hops to no hashing thread (an autojump clock leaps while one runs).
    server.storage.digests.put((server_root / "big.bin").stat(), "blake3", digest)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, initial_window=65536) as peer:
            await peer.send_raw(raw_request(FrameType.GET, 1, name="big.bin", offset=0, length=None))
            start = trio.current_time()
            messages = await peer.receive_until_closed()  # never grants more than the first 64 KiB
            elapsed = trio.current_time() - start
    assert isinstance(messages[0], FileInfo)
    assert sum(len(m.payload) for m in messages if isinstance(m, Data)) == 65536
    assert (type(messages[-1]), messages[-1].code) == (Error, ErrorCode.TIMEOUT)  # type: ignore[union-attr]
    assert 10 <= elapsed <= 12
    server.shutdown()


# ------------------------------------------------------------------ shutdown


async def serve_in(nursery: trio.Nursery, config: ServerConfig) -> tuple[Server, trio.Event]:
    """Start a server whose end the test can watch."""
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[Server]) -> None:
        try:
            await Server(config).serve(task_status=task_status)
        finally:
            stopped.set()

    server: Server = await nursery.start(run)
    return server, stopped


async def test_shutdown_lets_a_transfer_in_flight_finish(server_root: Path, tmp_path: Path) -> None:
    digest = write_random(server_root / "big.bin", 48 * MiB)
    config = ServerConfig(root=server_root, port=0, drain_timeout=20)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, stopped = await serve_in(nursery, config)
            async with connect(server) as conn, connect(server) as idle:
                shut_at: list[int] = []

                def shut_down_midway(done: int, total: int) -> None:
                    if not shut_at:
                        shut_at.append(done)
                        server.shutdown()

                await conn.download("big.bin", tmp_path / "big.bin", progress=shut_down_midway)
                assert shut_at[0] < 48 * MiB
                assert file_digest(tmp_path / "big.bin") == digest
                # New connections are refused, and the server said GOODBYE on the open ones.
                with pytest.raises(ConnectionClosed):
                    async with connect(server, connect_timeout=5):
                        pass
                with pytest.raises(ConnectionClosed):
                    await conn.stat("big.bin")
                # With nothing left in flight the server stops at once, though both clients stay connected.
                with trio.fail_after(5):
                    await stopped.wait()
                with pytest.raises(ConnectionClosed):
                    await idle.list()


async def test_requests_crossing_the_goodbye_are_refused(server_root: Path) -> None:
    config = ServerConfig(root=server_root, port=0, drain_timeout=20)
    data = b"finished after the goodbye"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, stopped = await serve_in(nursery, config)
            async with RawPeer.connect(server) as peer:
                await peer.send_raw(put_request(1, "late.txt", len(data)))
                assert isinstance(await peer.receive(), Ready)
                server.shutdown()
                assert isinstance(await peer.receive(), Goodbye)
                await peer.send(Stat(name="late.txt", stream_id=3))
                refused = await peer.receive()
                assert isinstance(refused, Error) and (refused.stream_id, refused.code) == (
                    3,
                    ErrorCode.REFUSED,
                )
                await peer.send(
                    Data(payload=data, stream_id=1),
                    End(size=len(data), digest=blake3.blake3(data).digest(), stream_id=1),
                )
                done = await peer.receive()
                assert isinstance(done, FileInfo) and done.name == "late.txt"
                assert await peer.receive_until_closed() == []  # then the server closes
                with trio.fail_after(5):
                    await stopped.wait()
    assert (server_root / "late.txt").read_bytes() == data


async def test_after_the_clients_goodbye_streams_finish_then_the_server_closes(
    server: Server, server_root: Path
) -> None:
    data = b"sent after goodbye"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(put_request(1, "g.txt", len(data)))
            assert isinstance(await peer.receive(), Ready)
            await peer.send(Goodbye())
            await peer.send(
                Data(payload=data, stream_id=1),
                End(size=len(data), digest=blake3.blake3(data).digest(), stream_id=1),
            )
            assert isinstance(await peer.receive(), FileInfo)
            with trio.fail_after(10):
                assert await peer.receive_until_closed() == []
    assert (server_root / "g.txt").read_bytes() == data


async def test_a_too_short_drain_cancels_the_transfer_cleanly(server_root: Path) -> None:
    (server_root / "target.bin").write_bytes(b"old content")
    write_random(server_root / "big.bin", 4 * MiB)
    config = ServerConfig(root=server_root, port=0, drain_timeout=0.3)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, stopped = await serve_in(nursery, config)
            async with (
                RawPeer.connect(server) as uploader,
                RawPeer.connect(server, initial_window=65536) as downloader,
            ):
                await uploader.send_raw(put_request(1, "target.bin", 2 * MiB, resume=True))
                assert isinstance(await uploader.receive(), Ready)
                await uploader.send(Data(payload=b"n" * 300_000, stream_id=1))  # and then stalls
                await downloader.send_raw(
                    raw_request(FrameType.GET, 1, name="big.bin", offset=0, length=None)
                )
                assert isinstance(await downloader.receive(), FileInfo)  # gets 64 KiB, grants no more
                start = trio.current_time()
                server.shutdown()
                up = await uploader.receive_until_closed()
                down = await downloader.receive_until_closed()
                with trio.fail_after(10):  # without the 0.3 s drain timeout: never
                    await stopped.wait()
                assert trio.current_time() - start < 10
    assert (type(up[0]), type(up[-1])) == (Goodbye, Error) and up[-1].code is ErrorCode.SHUTTING_DOWN  # type: ignore[union-attr]
    assert isinstance(down[-1], Error) and down[-1].code is ErrorCode.SHUTTING_DOWN
    assert (server_root / "target.bin").read_bytes() == b"old content"
    assert names(server_root) == {".trioftp", "big.bin", "target.bin"}


async def test_shutdown_with_a_real_client_mid_upload(server_root: Path, tmp_path: Path) -> None:
    (server_root / "target.bin").write_bytes(b"old content")
    source = tmp_path / "new.bin"
    write_random(source, 64 * MiB)
    config = ServerConfig(root=server_root, port=0, drain_timeout=0)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, stopped = await serve_in(nursery, config)
            async with connect(server) as conn:
                # The server lingers after its ERROR, so the reason arrives rather than a reset.
                with pytest.raises(ConnectionClosed, match="SHUTTING_DOWN"):
                    await conn.upload(source, "target.bin", progress=lambda n, t: server.shutdown())
            await stopped.wait()
    assert (server_root / "target.bin").read_bytes() == b"old content"
    assert names(server_root) == {".trioftp", "target.bin"}


async def test_upload_memory_is_bounded_server_wide(make_server: MakeServer, server_root: Path) -> None:
    """With room for one upload's buffers, concurrent uploads take turns; every file arrives whole."""
    window = 256 * 1024
    server = await make_server(initial_window=window, upload_memory=window + window // 2)
    files = {f"u{i}.bin": os.urandom(1 * MiB + i) for i in range(4)}
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as first, connect(server) as second:
            most_waiting = 0

            async def watch() -> None:
                nonlocal most_waiting
                while True:
                    most_waiting = max(most_waiting, server.upload_budget.waiting)
                    await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                async with trio.open_nursery() as uploads:
                    for i, (name, data) in enumerate(files.items()):
                        uploads.start_soon((first if i % 2 else second).put, name, data)
                nursery.cancel_scope.cancel()
            assert most_waiting >= 1  # they did take turns
            assert server.upload_budget.peak <= window + window // 2
            assert server.upload_budget.available == server.upload_budget.total
    for name, data in files.items():
        assert (server_root / name).read_bytes() == data
    server.shutdown()
