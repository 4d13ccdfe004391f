"""The server's legacy shim against old-style clients, over loopback.

The peer is compat/legacy_client.py (blocking sockets, run in a thread), or a
raw Trio stream where a test needs byte-level control or a mock clock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trioftp
from compat import legacy_client
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from trioftp.server import Server

TRANSCRIPTS = sorted((Path(__file__).parent.parent / "compat" / "transcripts").glob("*.txt"))


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


@asynccontextmanager
async def raw(server: Server) -> AsyncIterator[trio.SocketStream]:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    try:
        yield stream
    finally:
        await stream.aclose()


async def receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        assert chunk, f"server closed after {data!r}, expected {count} bytes"
        data += chunk
    return data


async def receive_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    data = b""
    try:
        while chunk := await stream.receive_some(1 << 20):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def wait_until_idle(server: Server) -> None:
    """Until the server has finished with every connection (the log lines are written)."""
    while server.connection_count:  # noqa: ASYNC110 (the server offers no event for this)
        await trio.sleep(0.005)


def visible(root: Path) -> dict[str, bytes]:
    """Files under the root a client can see, with their contents."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == root and d == ".trioftp")]
        for filename in filenames:
            path = Path(dirpath, filename)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def partials(root: Path) -> list[str]:
    return os.listdir(root / ".trioftp" / "partial")


def warnings_from_legacy(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "trioftp.legacy" and r.levelno >= logging.WARNING
    ]


# ---------------------------------------------------------------- transcripts


def _settings(transcript: legacy_client.Transcript) -> dict[str, Any]:
    kinds = {"legacy_settle": float, "legacy_timeout": float, "legacy_layout": lambda v: v == "true"}
    return {key: kinds[key](value) for key, value in transcript.settings.items()}


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
async def test_transcript_replays_byte_for_byte(
    make_server: MakeServer, server_root: Path, path: Path
) -> None:
    transcript = legacy_client.load_transcript(str(path))
    with trio.fail_after(NETWORK_TIMEOUT):
        server = await make_server(**_settings(transcript))
        await in_thread(legacy_client.replay, "127.0.0.1", server.port, transcript)
        await wait_until_idle(server)
    expected = {name: data for name, data in transcript.files.items() if data is not None}
    assert visible(server_root) == expected
    for name, data in transcript.files.items():
        if data is None:
            assert not (server_root / name).exists()
    assert partials(server_root) == []
    assert os.listdir(server_root.parent) == ["root"]  # nothing created beside the root


def test_trioftp_never_imports_compat() -> None:
    package = Path(trioftp.__file__).parent
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "import compat" not in text and "from compat" not in text, source


def test_transcripts_cover_the_issue() -> None:
    names = {p.stem for p in TRANSCRIPTS}
    assert {
        "multi_command",
        "missing_file",
        "split_header",
        "zero_size",
        "path_traversal",
        "garbage",
    } <= names


async def test_replay_notices_a_wrong_answer(server: Server) -> None:
    transcript = legacy_client.Transcript(name="wrong", steps=[("C>", b"get|nope.txt|0"), ("S<", b"YES|3")])
    with (
        trio.fail_after(NETWORK_TIMEOUT),
        pytest.raises(legacy_client.TranscriptMismatch, match=re.escape("NO|0")),
    ):
        await in_thread(legacy_client.replay, "127.0.0.1", server.port, transcript)


async def test_compat_client_runs_as_a_script(server: Server, server_root: Path, tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "compat" / "legacy_client.py"
    local = tmp_path / "local.txt"
    local.write_bytes(b"sent by the script")
    address = ["127.0.0.1", str(server.port)]
    with trio.fail_after(NETWORK_TIMEOUT):
        await trio.run_process([sys.executable, str(script), "put", *address, str(local), "s.txt"])
        await trio.run_process(
            [sys.executable, str(script), "get", *address, "s.txt", str(tmp_path / "back.txt")]
        )
        missing = await trio.run_process(
            [sys.executable, str(script), "get", *address, "absent.txt", str(tmp_path / "absent.txt")],
            check=False,
            capture_stderr=True,
        )
    assert (server_root / "s.txt").read_bytes() == b"sent by the script"
    assert (tmp_path / "back.txt").read_bytes() == b"sent by the script"
    assert missing.returncode == 1 and b"no file" in missing.stderr


# ------------------------------------------------------------ storage & v2


async def test_legacy_put_replaces_atomically_and_v2_sees_it(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        await in_thread(legacy_client.put, "127.0.0.1", server.port, "shared.txt", b"first version, long")
        await in_thread(legacy_client.put, "127.0.0.1", server.port, "shared.txt", b"second")
        assert (server_root / "shared.txt").read_bytes() == b"second"  # replaced, not appended
        assert await trioftp.get("127.0.0.1", "shared.txt", port=server.port) == b"second"
        await trioftp.put("127.0.0.1", "shared.txt", b"from v2", port=server.port)
        assert await in_thread(legacy_client.get, "127.0.0.1", server.port, "shared.txt") == b"from v2"
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            info = await conn.stat("shared.txt")
            assert info.size == 7


async def test_reader_sees_old_or_new_never_a_mix(server: Server, server_root: Path) -> None:
    old, new = b"o" * 300_000, b"n" * 300_000
    (server_root / "f.bin").write_bytes(old)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream:
            await stream.send_all(b"put|f.bin|%d" % len(new))
            assert await receive_exactly(stream, 2) == b"OK"
            await stream.send_all(new[:200_000])
            # Mid-upload: the visible file is still the old one, whole.
            assert await in_thread(legacy_client.get, "127.0.0.1", server.port, "f.bin") == old
            await stream.send_all(new[200_000:])
            await stream.send_eof()
            assert await receive_until_closed(stream) == b""
        assert (server_root / "f.bin").read_bytes() == new


async def test_concurrent_uploads_interleaved_never_mix(server: Server, server_root: Path) -> None:
    # The old server counted bytes with one counter for every connection.
    rng = random.Random(1)
    bodies = [rng.randbytes(100_000) for _ in range(3)]
    with trio.fail_after(NETWORK_TIMEOUT):
        streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in bodies]
        try:
            for i, (stream, body) in enumerate(zip(streams, bodies, strict=True)):
                await stream.send_all(b"put|mix%d.bin|%d" % (i, len(body)))
            for stream in streams:
                assert await receive_exactly(stream, 2) == b"OK"
            for offset in range(0, 100_000, 7_000):
                for stream, body in zip(streams, bodies, strict=True):
                    await stream.send_all(body[offset : offset + 7_000])
            for stream in streams:
                await stream.send_eof()
                assert await receive_until_closed(stream) == b""
        finally:
            for stream in streams:
                await stream.aclose()
    assert visible(server_root) == {f"mix{i}.bin": body for i, body in enumerate(bodies)}


async def test_many_concurrent_puts_of_one_name_leave_one_whole_file(
    server: Server, server_root: Path
) -> None:
    bodies = [bytes([65 + i]) * 150_000 for i in range(8)]
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for body in bodies:
                nursery.start_soon(in_thread, legacy_client.put, "127.0.0.1", server.port, "same.bin", body)
    assert (server_root / "same.bin").read_bytes() in bodies
    assert partials(server_root) == []


async def test_zero_size_put_replaces_with_empty_file(server: Server, server_root: Path) -> None:
    (server_root / "was-full.txt").write_bytes(b"content")
    with trio.fail_after(NETWORK_TIMEOUT):
        await in_thread(legacy_client.put, "127.0.0.1", server.port, "was-full.txt", b"")
        assert await in_thread(legacy_client.get, "127.0.0.1", server.port, "was-full.txt") == b""
    assert (server_root / "was-full.txt").read_bytes() == b""


async def test_long_name_header_beyond_the_first_read(server: Server, server_root: Path) -> None:
    # The server sniffs the first 64 bytes; the header goes on past them.
    name = "d" * 200 + "/" + "n" * 200 + ".txt"
    with trio.fail_after(NETWORK_TIMEOUT):
        await in_thread(legacy_client.put, "127.0.0.1", server.port, name, b"long")
        assert await in_thread(legacy_client.get, "127.0.0.1", server.port, name) == b"long"
    assert (server_root / name).read_bytes() == b"long"


# ------------------------------------------------------------ split headers


async def test_header_split_inside_size_digits(make_server: MakeServer, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        server = await make_server(legacy_settle=0.2)
        async with raw(server) as stream:
            await stream.send_all(b"put|digits.txt|1")
            await trio.sleep(0.02)
            await stream.send_all(b"2")
            assert await receive_exactly(stream, 2) == b"OK"
            await stream.send_all(b"hello world!")
            await stream.send_eof()
            assert await receive_until_closed(stream) == b""
    assert visible(server_root) == {"digits.txt": b"hello world!"}


async def test_header_with_data_in_the_same_segment(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream:
            await stream.send_all(b"put|one.txt|3abcput|two.txt|2xy")
            assert await receive_exactly(stream, 4) == b"OKOK"
            await stream.send_eof()
            assert await receive_until_closed(stream) == b""
    assert visible(server_root) == {"one.txt": b"abc", "two.txt": b"xy"}


# ---------------------------------------------------------------- failures


async def test_disconnect_mid_upload_leaves_nothing(
    server: Server, server_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (server_root / "keep.txt").write_bytes(b"the old content")
    with trio.fail_after(NETWORK_TIMEOUT):
        for name in ("keep.txt", "new.txt"):
            async with raw(server) as stream:
                await stream.send_all(f"put|{name}|100000".encode())
                assert await receive_exactly(stream, 2) == b"OK"
                await stream.send_all(b"x" * 40_000)
            await wait_until_idle(server)
    assert visible(server_root) == {"keep.txt": b"the old content"}
    assert partials(server_root) == []
    assert os.listdir(server_root.parent) == ["root"]
    closed = [m for m in warnings_from_legacy(caplog) if "mid-upload" in m]
    assert len(closed) == 2 and "40000 of 100000" in closed[0]


async def test_missing_file_answers_no_and_connection_stays_usable(server: Server, server_root: Path) -> None:
    (server_root / "here.txt").write_bytes(b"here")
    with trio.fail_after(NETWORK_TIMEOUT):

        def session() -> bytes:
            with legacy_client.connect("127.0.0.1", server.port) as sock:
                with pytest.raises(legacy_client.NotFound):
                    legacy_client.get_on(sock, "absent.txt")
                return legacy_client.get_on(sock, "here.txt")

        assert await in_thread(session) == b"here"


async def test_second_active_never_sent_times_out(
    make_server: MakeServer,
    server_root: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (server_root / "wait.txt").write_bytes(b"data")
    # Started outside the deadline: its thread hop would let the mock clock jump.
    server = await make_server(legacy_timeout=5.0)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream:
            await stream.send_all(b"get|wait.txt|0")
            assert await receive_exactly(stream, 5) == b"YES|4"
            started = trio.current_time()
            assert await receive_until_closed(stream) == b""
            assert trio.current_time() - started == pytest.approx(5.0, abs=0.1)
        await wait_until_idle(server)
    assert any("second_active" in m and "5 s" in m for m in warnings_from_legacy(caplog))


async def test_silence_mid_header_times_out(
    make_server: MakeServer, server_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = await make_server(legacy_timeout=3.0)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream:
            await stream.send_all(b"put|half")
            started = trio.current_time()
            assert await receive_until_closed(stream) == b""
            assert trio.current_time() - started == pytest.approx(3.0, abs=0.1)


async def test_header_dribbled_byte_by_byte_gets_one_deadline(
    make_server: MakeServer, server_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = await make_server(legacy_timeout=3.0)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream, trio.open_nursery() as nursery:

            async def dribble() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    for byte in b"put|" + b"n" * 500:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(1.0)  # each byte well within legacy_timeout

            started = trio.current_time()
            nursery.start_soon(dribble)
            assert await receive_until_closed(stream) == b""
            assert trio.current_time() - started == pytest.approx(3.0, abs=0.1)
            nursery.cancel_scope.cancel()


async def test_silence_mid_upload_times_out(
    make_server: MakeServer, server_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real clock: the upload starts with a thread hop, which a mock clock would jump over.
    with trio.fail_after(5):
        server = await make_server(legacy_timeout=0.2)
        async with raw(server) as stream:
            await stream.send_all(b"put|slow.txt|10")
            assert await receive_exactly(stream, 2) == b"OK"
            await stream.send_all(b"12345")
            assert await receive_until_closed(stream) == b""
        await wait_until_idle(server)
    assert visible(server_root) == {}
    assert partials(server_root) == []
    assert any("silent for 0.2 s mid-upload after 5 of 10 bytes" in m for m in warnings_from_legacy(caplog))


async def test_trickling_upload_is_dropped_by_min_rate(
    make_server: MakeServer, server_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Never silent for legacy_timeout, yet far below min_rate: dropped, nothing stored."""
    (server_root / "slow.txt").write_bytes(b"old")
    with trio.fail_after(NETWORK_TIMEOUT):
        server = await make_server(min_rate=1000, min_rate_window=0.5, legacy_timeout=5)
        async with raw(server) as stream:
            await stream.send_all(b"put|slow.txt|100000")
            assert await receive_exactly(stream, 2) == b"OK"
            started = trio.current_time()
            with contextlib.suppress(trio.BrokenResourceError):
                while trio.current_time() - started < 5:
                    await stream.send_all(b"x" * 10)
                    await trio.sleep(0.05)
            assert trio.current_time() - started < 3
        await wait_until_idle(server)
    assert visible(server_root) == {"slow.txt": b"old"}
    assert partials(server_root) == []
    assert any(re.search(r"upload slower than 1000 B/s over \d+ s", m) for m in warnings_from_legacy(caplog))


async def test_client_that_stops_reading_a_get_is_dropped(
    make_server: MakeServer, server_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = 64 * 1024 * 1024  # far more than the socket buffers hold
    with (server_root / "big.bin").open("wb") as f:
        f.truncate(size)
    with trio.fail_after(5):  # well under NETWORK_TIMEOUT: a server without the stall timeout fails here
        server = await make_server(legacy_timeout=0.3)
        async with raw(server) as stream:
            await stream.send_all(b"get|big.bin|0")
            assert await receive_exactly(stream, len(b"YES|%d" % size)) == b"YES|%d" % size
            await stream.send_all(b"second_active")
            await wait_until_idle(server)
            assert len(await receive_until_closed(stream)) < size
    assert any("read nothing for 0.3 s" in m for m in warnings_from_legacy(caplog))


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"put|../x.txt|3", "bad file name"),
        (b"put|/etc/passwd|3", "absolute"),
        (b"get|/etc/passwd|0", "absolute"),
        (b"put|a\x00b|3", "control character"),
        (b"put|..\\x.txt|3", "backslash"),
        (b"put|caf\xe9|3", "not UTF-8"),
        (b"put|" + b"a" * 1100 + b"|3", "1024 bytes"),
        (b"get|.trioftp/partial/x|0", None),  # reserved: answered like a missing file
        (b"put|.trioftp/partial/x|3", "reserved"),
        (b"hello there", "unknown legacy command"),
        (b"put|x|abc", "not a number"),
    ],
)
async def test_bad_requests_are_refused_with_one_clear_line(
    server: Server,
    server_root: Path,
    caplog: pytest.LogCaptureFixture,
    request_bytes: bytes,
    reason: str | None,
) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream:
            await stream.send_all(request_bytes)
            answer = await receive_until_closed(stream) if reason else await receive_exactly(stream, 4)
        await wait_until_idle(server)
    if reason is None:
        assert answer == b"NO|0"
        return
    assert answer == b""
    lines = warnings_from_legacy(caplog)
    assert len(lines) == 1 and reason in lines[0], lines
    assert visible(server_root) == {}
    assert partials(server_root) == []
    assert os.listdir(server_root.parent) == ["root"]


async def test_symlink_out_of_the_root_is_refused(server: Server, server_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (server_root / "out").symlink_to(outside)
    with trio.fail_after(NETWORK_TIMEOUT):
        with pytest.raises(legacy_client.NotFound):
            await in_thread(legacy_client.get, "127.0.0.1", server.port, "out/secret.txt")
        async with raw(server) as stream:
            await stream.send_all(b"put|out/evil.txt|4")
            assert await receive_until_closed(stream) == b""
    assert os.listdir(outside) == ["secret.txt"]


async def test_bad_clients_do_not_disturb_a_good_one(server: Server, server_root: Path) -> None:
    body = random.Random(2).randbytes(200_000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as good:
            await good.send_all(b"put|good.bin|%d" % len(body))
            assert await receive_exactly(good, 2) == b"OK"
            await good.send_all(body[:100_000])
            for junk in (b"\x00\x01\x02\x03", b"GET / HTTP/1.1\r\n\r\n", b"put|../../x|1", b"get|a|b|c|d"):
                async with raw(server) as bad:
                    await bad.send_all(junk)
                    assert await receive_until_closed(bad) == b""
            await good.send_all(body[100_000:])
            await good.send_all(b"get|good.bin|0")
            assert await receive_exactly(good, 10) == b"YES|200000"
            await good.send_all(b"second_active")
            assert await receive_exactly(good, len(body)) == body


# ------------------------------------------------------------------ settings


async def test_no_legacy_refuses_legacy_clients(
    make_server: MakeServer, server_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        server = await make_server(legacy=False)
        async with raw(server) as stream:
            await stream.send_all(b"put|x.txt|1")
            assert await receive_until_closed(stream) == b""
        await trioftp.put("127.0.0.1", "v2.txt", b"v2 still works", port=server.port)
        await wait_until_idle(server)
    assert visible(server_root) == {"v2.txt": b"v2 still works"}
    assert any("legacy client refused" in r.getMessage() for r in caplog.records)


async def test_legacy_layout_uses_upload_and_download(make_server: MakeServer, server_root: Path) -> None:
    (server_root / "download").mkdir()
    (server_root / "download" / "served.txt").write_bytes(b"from download/")
    with trio.fail_after(NETWORK_TIMEOUT):
        server = await make_server(legacy_layout=True)
        await in_thread(legacy_client.put, "127.0.0.1", server.port, "sent.txt", b"to upload/")
        assert await in_thread(legacy_client.get, "127.0.0.1", server.port, "served.txt") == b"from download/"
        with pytest.raises(legacy_client.NotFound):  # a legacy get does not look in upload/
            await in_thread(legacy_client.get, "127.0.0.1", server.port, "sent.txt")
        assert await trioftp.get("127.0.0.1", "upload/sent.txt", port=server.port) == b"to upload/"
    assert visible(server_root) == {
        "upload/sent.txt": b"to upload/",
        "download/served.txt": b"from download/",
    }


async def test_shutdown_closes_an_idle_legacy_connection(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with raw(server) as stream:
            await stream.send_all(b"put|a.txt|1a")
            assert await receive_exactly(stream, 2) == b"OK"
            # Shut down only once the put is stored: a commit's fsync can take over a second
            # on a loaded machine, and the drain rightly waits for it.
            while not (server_root / "a.txt").exists():  # noqa: ASYNC110 (no event to wait on)
                await trio.sleep(0.01)
            await trio.sleep(0.05)  # the session is now waiting for its next header
            started = trio.current_time()
            server.shutdown()
            assert await receive_until_closed(stream) == b""
            assert trio.current_time() - started < 5.0  # not the 10 s drain timeout
