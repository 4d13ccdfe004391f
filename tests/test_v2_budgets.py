"""Peers that try to starve others of memory and descriptors (issue 11, items 2, 3 and 5).

Each test drives the real server over loopback with a hand-driven peer doing
what an attacker did, and checks that a well-behaved client is still served
and that what the attacker holds stays bounded.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest
import trio

import trioftp.server.server as server_module
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.test_v2_limits import put_request
from tests.v2_helpers import MiB, RawPeer, connect, raw_request, wait_until
from trioftp.protocol import (
    Cancel,
    Data,
    End,
    Error,
    ErrorCode,
    FileInfo,
    FrameType,
    Get,
    Listing,
    Message,
    Ready,
    Window,
)
from trioftp.protocol.codec import encode_message
from trioftp.server import Server


def open_fds() -> int:
    """Descriptors open in this process: the server runs in it."""
    return len(os.listdir("/proc/self/fd"))


async def most_fds_opened_within(seconds: float, before: int) -> int:
    """The most descriptors open above `before`, sampled every 10 ms for `seconds`."""
    most = 0
    with trio.move_on_after(seconds):
        while True:
            most = max(most, open_fds() - before)
            await trio.sleep(0.01)
    return most


def get_request(stream_id: int, name: str) -> bytes:
    return raw_request(FrameType.GET, stream_id, name=name, offset=0, length=None)


async def answers_within(peer: RawPeer, seconds: float) -> list[Message]:
    """What the server sends in `seconds` (or until it closes)."""
    received: list[Message] = []
    with trio.move_on_after(seconds):
        while (message := await peer.receive()) is not None:
            received.append(message)
    return received


# ----------------------------------------------------------------- uploads


async def test_a_silent_connection_with_many_puts_does_not_stop_another_clients_put(
    make_server: MakeServer, server_root: Path
) -> None:
    """The attack of item 2: 30 PUTs of 1 GiB on one connection, then silence."""
    server: Server = await make_server(min_rate_window=2, idle_timeout=1000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as attacker:
            await attacker.send_raw(b"".join(put_request(1 + 2 * i, f"big{i}", 1 << 30) for i in range(30)))
            await wait_until(lambda: server.upload_budget.waiting or server.upload_budget.peak >= 63 * MiB)
            with trio.fail_after(5):  # hung until the attacker left, before
                async with connect(server) as victim:
                    await victim.put("small.txt", b"hello!")
            answers = await attacker.receive_until_closed()
    assert (server_root / "small.txt").read_bytes() == b"hello!"
    # One connection held at most a quarter of upload_memory (7 uploads of 8 + 1 MiB) at once.
    assert any(isinstance(m, Ready) for m in answers)
    assert server.upload_budget.peak <= 7 * 9 * MiB + len(b"hello!")
    # Its streams ended with an error, and the memory went back.
    assert isinstance(answers[-1], Error) and answers[-1].code in (ErrorCode.TIMEOUT, ErrorCode.BUSY)
    await wait_until(lambda: server.upload_budget.available == server.upload_budget.total)
    server.shutdown()


async def test_one_connection_holds_at_most_its_share(make_server: MakeServer, server_root: Path) -> None:
    window = 256 * 1024  # each upload reserves window + window / 2
    server: Server = await make_server(initial_window=window, upload_memory=4 * MiB)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as greedy:
            await greedy.send_raw(b"".join(put_request(1 + 2 * i, f"g{i}", MiB) for i in range(6)))
            answers = await answers_within(greedy, 1.0)
            # A quarter of 4 MiB: two reservations of 384 KiB; the rest wait for these.
            assert [type(m) for m in answers] == [Ready, Ready]
            assert server.upload_budget.total - server.upload_budget.available == 2 * (window + window // 2)
            async with connect(server) as other:  # another connection is not held up
                await other.put("other.bin", b"x" * MiB)
    assert (server_root / "other.bin").stat().st_size == MiB
    server.shutdown()


async def test_a_waiting_upload_gets_busy_within_a_bound(make_server: MakeServer) -> None:
    window = 256 * 1024
    # Room for one upload; min_rate 0: the holder is never dropped.
    server: Server = await make_server(
        initial_window=window, upload_memory=window + window // 2, min_rate=0, min_rate_window=1
    )
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as holder, RawPeer.connect(server) as waiter:
            await holder.send_raw(put_request(1, "held", MiB))
            assert isinstance(await holder.receive(), Ready)
            start = trio.current_time()
            await waiter.send_raw(put_request(1, "waiting", MiB))
            with trio.fail_after(5):  # waited for ever, before
                answer = await waiter.receive()
            assert trio.current_time() - start >= 0.9
            assert isinstance(answer, Error) and answer.code is ErrorCode.BUSY and answer.stream_id == 1
            assert "memory" in answer.message
            # A stream error: the connection goes on.
            await waiter.send_raw(raw_request(FrameType.LIST, 3, folder=""))
            assert isinstance(await waiter.receive(), Listing)
    server.shutdown()


async def test_an_upload_that_stalls_beside_a_busy_one_gives_its_memory_back(
    make_server: MakeServer, server_root: Path
) -> None:
    """A reservation is held only while its own stream moves: one busy stream shields no other."""
    server: Server = await make_server(min_rate=10_000, min_rate_window=1, idle_timeout=1000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(put_request(1, "parked", MiB) + put_request(3, "moving", 10 * MiB))
            assert {type(await peer.receive()) for _ in range(2)} == {Ready}
            answers: list[Message] = []

            async def feed_stream_3() -> None:
                for _ in range(40):  # 100 kB/s on stream 3 only
                    await peer.send_raw(
                        encode_message(_data(3, 10_000))  # keeps the connection above min_rate
                    )
                    await trio.sleep(0.1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed_stream_3)
                with trio.fail_after(5):
                    while not answers:
                        message = await peer.receive()
                        assert message is not None
                        answers.append(message)
                nursery.cancel_scope.cancel()
    error = answers[0]
    assert isinstance(error, Error) and error.stream_id == 1 and error.code is ErrorCode.BUSY
    assert "memory is given back" in error.message
    server.shutdown()


def _data(stream_id: int, size: int) -> Message:
    return Data(payload=b"x" * size, stream_id=stream_id)


# --------------------------------------------------------------- downloads


async def test_unread_downloads_hold_few_files(make_server: MakeServer, server_root: Path) -> None:
    """Item 3: 128 GETs that are never read; each used to hold its file open."""
    (server_root / "f.bin").write_bytes(os.urandom(MiB))
    server: Server = await make_server()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            peer.stream.setsockopt(*_SMALL_RECEIVE_BUFFER)
            before = open_fds()
            await peer.send_raw(b"".join(get_request(1 + 2 * i, "f.bin") for i in range(128)))
            most = await most_fds_opened_within(1.0, before)
    assert most <= 8 + 2  # the connection's read handles (and a moment's slack)
    server.shutdown()


async def test_unread_small_downloads_keep_memory_and_files_bounded(
    make_server: MakeServer, server_root: Path
) -> None:
    (server_root / "s.bin").write_bytes(os.urandom(60_000))
    server: Server = await make_server(send_memory=MiB)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as a, RawPeer.connect(server) as b, RawPeer.connect(server) as c:
            before = open_fds()
            for peer in (a, b, c):
                peer.stream.setsockopt(*_SMALL_RECEIVE_BUFFER)
                await peer.send_raw(b"".join(get_request(1 + 2 * i, "s.bin") for i in range(128)))
            most = await most_fds_opened_within(1.0, before)
    assert most <= 3 * 8 + 2
    # Bytes read for sending: never more than send_memory, and per connection its handles' worth.
    assert 0 < server.send_budget.peak <= min(MiB, 3 * 8 * 60_000)
    await wait_until(lambda: server.send_budget.available == server.send_budget.total)
    server.shutdown()


_SMALL_RECEIVE_BUFFER = (trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)


async def read_answers(peer: RawPeer, count: int, received: dict[int, int]) -> list[int]:
    """Read until `count` streams have ended, adding each DATA payload's size to `received`;
    returns the streams in the order they ended. An ERROR fails the test."""
    ended: list[int] = []
    while len(ended) < count:
        message = await peer.receive()
        assert message is not None and not isinstance(message, Error), message
        if isinstance(message, Data):
            received[message.stream_id] = received.get(message.stream_id, 0) + len(message.payload)
        elif isinstance(message, End):
            ended.append(message.stream_id)
    return ended


def v2_sessions(server: Server) -> list[Any]:
    return [session for session in server._sessions if isinstance(session, server_module.V2Session)]


def _get_messages() -> int:
    return sum(isinstance(o, Get) for o in gc.get_objects())


async def test_unread_downloads_hold_a_few_tasks_not_one_per_request(
    make_server: MakeServer, server_root: Path
) -> None:
    """A peer that reads nothing holds one GET task writing and one waiting for room, whatever
    it asked: the other GETs wait as request bytes alone, and a GET whose answer is buffered
    holds no task. Once the peer reads, every answer comes, whole."""
    data = os.urandom(60_000)
    (server_root / "s.bin").write_bytes(data)
    server: Server = await make_server()
    streams = [1 + 2 * i for i in range(128)]
    with trio.fail_after(NETWORK_TIMEOUT):
        # The default receive buffer: kept small, the peer could not read fast enough later.
        async with RawPeer.connect(server) as peer:
            gets_before = _get_messages()  # any other module's (tests build some at import)
            await peer.send_raw(b"".join(get_request(stream, "s.bin") for stream in streams))
            await trio.sleep(0.2)
            for _ in range(20):  # and it stays so while the peer reads nothing
                [session] = v2_sessions(server)
                assert session.open_streams <= 1  # the GET whose task writes to the socket
                assert session.get_runners <= 2  # that one, and one waiting for room
                assert server.metrics.running <= 1
                assert session.queued_gets >= 128 - 16  # the rest: the buffers hold a few answers
                await trio.sleep(0.01)
            # Those wait as bytes: no GET message is kept for them (each small object of a
            # burst can keep an arena of CPython's allocator mapped after it).
            assert _get_messages() - gets_before <= 2
            received: dict[int, int] = {}
            ended = await read_answers(peer, len(streams), received)
            assert sorted(ended) == streams and all(received[s] == len(data) for s in streams)
    await wait_until(lambda: server.metrics.running == 0)
    # The queued GETs end as the started ones do: counted and logged as transfers.
    assert sum(n for (op, _), n in server.metrics.finished.items() if op == "GET") == 128
    server.shutdown()


async def test_gets_waiting_for_send_memory_wait_as_requests(
    make_server: MakeServer, server_root: Path
) -> None:
    """With send_memory spent by peers that read nothing, each connection's GETs wait for it
    as requests (one runner waits, with no file open), not as tasks holding files."""
    (server_root / "s.bin").write_bytes(os.urandom(60_000))
    server: Server = await make_server(send_memory=256 * 1024)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as a, RawPeer.connect(server) as b, RawPeer.connect(server) as c:
            before = open_fds()
            for peer in (a, b, c):
                await peer.send_raw(b"".join(get_request(1 + 2 * i, "s.bin") for i in range(128)))
            await trio.sleep(0.3)
            for _ in range(20):
                sessions = v2_sessions(server)
                assert len(sessions) == 3
                for session in sessions:
                    assert session.open_streams <= 1 and session.get_runners <= 2
                assert open_fds() - before <= 3  # the files of the three GETs writing, at most
                await trio.sleep(0.01)
            # Spent (the peers read nothing): the address holds its share, less than one more answer.
            budget = server.send_budget
            assert budget.held_by(sessions[0].address) + 64 * 1024 > budget.group_limit
    await wait_until(lambda: server.send_budget.available == server.send_budget.total)
    server.shutdown()


async def test_a_get_waiting_for_send_memory_gets_busy_within_a_bound(
    make_server: MakeServer, server_root: Path
) -> None:
    """Queued GETs wait for send_memory at most min_rate_window each: the oldest then gets BUSY."""
    (server_root / "s.bin").write_bytes(os.urandom(60_000))
    server: Server = await make_server(send_memory=128 * 1024, min_rate=0, min_rate_window=0.5)
    streams = [1 + 2 * i for i in range(128)]
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(b"".join(get_request(stream, "s.bin") for stream in streams))
            await trio.sleep(1.6)  # the answers it holds keep its share of send_memory spent
            ended: dict[int, Message] = {}
            while len(ended) < len(streams):
                message = await peer.receive()
                assert message is not None
                if isinstance(message, End | Error):
                    ended[message.stream_id] = message
    busy = [m for m in ended.values() if isinstance(m, Error)]
    assert sorted(ended) == streams and busy
    assert all(m.code is ErrorCode.BUSY and "no memory free" in m.message for m in busy)
    assert server.metrics.finished["GET", "BUSY"] == len(busy)
    server.shutdown()


async def test_a_queued_get_can_be_cancelled_and_the_rest_are_served(
    make_server: MakeServer, server_root: Path
) -> None:
    data = os.urandom(60_000)
    (server_root / "s.bin").write_bytes(data)
    server: Server = await make_server()
    streams = [1 + 2 * i for i in range(40)]
    with trio.fail_after(NETWORK_TIMEOUT):
        # A 16 KiB window: each running GET sends that much, then waits for WINDOW.
        async with RawPeer.connect(server, initial_window=16384, max_frame_size=16384) as peer:
            await peer.send_raw(b"".join(get_request(stream, "s.bin") for stream in streams))
            received: dict[int, int] = {}
            while len(received) < 8:  # the 8 running GETs send their first 16 KiB and wait
                message = await peer.receive()
                if isinstance(message, Data):
                    received[message.stream_id] = received.get(message.stream_id, 0) + len(message.payload)
            # Stream 61 is the 31st GET: queued. A WINDOW for it is no frame that does nothing.
            await peer.send(Window(increment=1024, stream_id=61), Cancel(stream_id=61))
            # Credit for every other stream, queued or not: the machine keeps it for those not started.
            await peer.send(*(Window(increment=MiB, stream_id=s) for s in streams if s != 61))
            ended = set(await read_answers(peer, 39, received))
            assert ended == set(streams) - {61} and all(received[s] == len(data) for s in ended)
    await wait_until(lambda: server.metrics.running == 0)
    assert server.metrics.finished["GET", "cancelled"] == 1
    assert server.metrics.finished["GET", "ok"] == 39
    server.shutdown()


async def test_a_download_kept_alive_by_useless_frames_is_dropped(
    make_server: MakeServer, server_root: Path
) -> None:
    """A peer reads nothing, sends a trickle of CANCELs for closed streams: min_rate counts what it takes."""
    with (server_root / "big.bin").open("wb") as f:
        f.truncate(64 * MiB)
    server: Server = await make_server(min_rate=20, min_rate_window=1, idle_timeout=1000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(raw_request(FrameType.LIST, 1, folder=""))
            assert isinstance(await peer.receive(), Listing)  # stream 1 is closed now
            await peer.send_raw(get_request(3, "big.bin"))
            assert isinstance(await peer.receive(), FileInfo)
            start = trio.current_time()
            cancel = encode_message(Cancel(stream_id=1))
            # 50 B/s of CANCEL frames: above min_rate, under the flood allowance.
            while trio.current_time() - start < 8:
                try:
                    await peer.send_raw(cancel * 5)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                await trio.sleep(1.0)
                if server.connection_count == 0:
                    break
            assert trio.current_time() - start < 8, "never dropped"
    server.shutdown()


async def test_a_flood_of_frames_that_do_nothing_ends_the_connection(make_server: MakeServer) -> None:
    server: Server = await make_server()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(raw_request(FrameType.LIST, 1, folder=""))
            assert isinstance(await peer.receive(), Listing)
            await peer.send_raw(encode_message(Cancel(stream_id=1)) * 2000)
            answers = await peer.receive_until_closed()
        async with connect(server) as other:  # everyone else is served
            assert await other.list() == []
    assert [(type(m), m.code) for m in answers] == [(Error, ErrorCode.PROTOCOL_ERROR)]  # type: ignore[union-attr]
    assert "do nothing" in answers[0].message  # type: ignore[union-attr]
    server.shutdown()


async def test_a_few_late_frames_are_normal(make_server: MakeServer) -> None:
    """A CANCEL and a WINDOW for each stream that just ended are not a flood."""
    server: Server = await make_server()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            for i in range(600):
                stream_id = 1 + 2 * i
                await peer.send_raw(raw_request(FrameType.LIST, stream_id, folder=""))
                assert isinstance(await peer.receive(), Listing)
                await peer.send(Cancel(stream_id=stream_id), Window(increment=1, stream_id=stream_id))
            await peer.send_raw(raw_request(FrameType.LIST, 5001, folder=""))
            assert isinstance(await peer.receive(), Listing)
    server.shutdown()


# ------------------------------------------------------------------ legacy


async def test_legacy_puts_count_against_upload_memory(make_server: MakeServer, server_root: Path) -> None:
    """Item 5: each legacy put buffered up to 1 MiB outside the budget."""
    budget = 3 * MiB
    server: Server = await make_server(upload_memory=budget)
    bodies = {f"l{i}.bin": os.urandom(2 * MiB + i) for i in range(6)}
    most_waiting = 0

    async def legacy_put(name: str, body: bytes) -> None:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"put|%s|%d" % (name.encode(), len(body)))
            assert await stream.receive_some(2) == b"OK"
            await stream.send_all(body)
            await stream.send_eof()
            assert await stream.receive_some(10) == b""

    async def watch() -> None:
        nonlocal most_waiting
        while True:
            most_waiting = max(most_waiting, server.upload_budget.waiting)
            await trio.sleep(0.001)

    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as puts:
                for name, body in bodies.items():
                    puts.start_soon(legacy_put, name, body)
            nursery.cancel_scope.cancel()
    for name, body in bodies.items():
        assert (server_root / name).read_bytes() == body
    assert 0 < server.upload_budget.peak <= budget
    assert most_waiting >= 1
    assert server.upload_budget.available == budget
    server.shutdown()


class _HandleWithoutDescriptor:
    """A local read handle posing as one of a store without descriptors (S3)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def fileno(self) -> None:
        return None


class _StoreWithoutDescriptors:
    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def open_read(self, name: str) -> _HandleWithoutDescriptor:
        return _HandleWithoutDescriptor(self._store.open_read(name))

    def scoped(self, home: str) -> _StoreWithoutDescriptors:
        return _StoreWithoutDescriptors(self._store.scoped(home))


async def test_legacy_gets_from_a_store_without_descriptors_count_against_send_memory(
    make_server: MakeServer, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each such get read 1 MiB pieces into memory outside every budget."""
    real_open_store = server_module.open_store
    monkeypatch.setattr(
        server_module, "open_store", lambda config: _StoreWithoutDescriptors(real_open_store(config))
    )
    budget = 2 * MiB
    server: Server = await make_server(send_memory=budget)
    bodies = {f"g{i}.bin": os.urandom(3 * MiB + i) for i in range(4)}
    for name, body in bodies.items():
        (server_root / name).write_bytes(body)

    async def legacy_get(name: str, body: bytes) -> None:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"get|%s|0" % name.encode())
            assert await stream.receive_some(64) == b"YES|%d" % len(body)
            await stream.send_all(b"second_active")
            received = bytearray()
            while len(received) < len(body) and (chunk := await stream.receive_some(MiB)):
                received += chunk
            assert received == body

    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as gets:
            for name, body in bodies.items():
                gets.start_soon(legacy_get, name, body)
    assert 0 < server.send_budget.peak <= budget
    assert server.send_budget.available == budget
    server.shutdown()


# ------------------------------------------------------------------ memory


async def test_the_heap_is_trimmed_once_transfers_end(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[Any] = []
    monkeypatch.setattr(server_module, "give_memory_back", lambda: trims.append(1) or True)
    server: Server = await make_server(min_rate_window=0.2)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put("a.bin", os.urandom(MiB))
            await wait_until(lambda: bool(trims))
    server.shutdown()


async def test_a_finished_connection_leaves_nothing_behind(
    make_server: MakeServer, server_root: Path
) -> None:
    """Once a connection ends, nothing of it stays reachable: its state would pin the
    allocator's arenas that a burst spread it over (issue 11, attack 2's settle)."""
    (server_root / "s.bin").write_bytes(os.urandom(60_000))
    server: Server = await make_server(min_rate_window=0.2)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(b"".join(get_request(1 + 2 * i, "s.bin") for i in range(16)))
            await wait_until(lambda: len(v2_sessions(server)) == 1)
            await trio.sleep(0.3)  # the watchdog (every 0.05 s here) checks the session
        await wait_until(lambda: not server._sessions)
        await trio.sleep(0.3)  # and passes again with no session left
        gc.collect()
        assert [type(o).__name__ for o in gc.get_objects() if isinstance(o, server_module.V2Session)] == []
    server.shutdown()
