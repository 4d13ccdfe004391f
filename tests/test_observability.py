"""What the server tells operators: Prometheus metrics, JSON log lines, STATUS. Real server, loopback."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import trioftp
from compat import legacy_client
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.test_cli import read_rest, run_cli, start_serve
from tests.test_legacy_server import in_thread, receive_exactly, receive_until_closed, wait_until_idle
from tests.v2_helpers import HOST, RawPeer, connect, write_random
from trioftp.cli import main
from trioftp.logs import JsonFormatter
from trioftp.protocol import PREFACE, Data, Error, ErrorCode, FileInfo, Get, Goodbye, Hello, Put, Ready
from trioftp.protocol.codec import encode_message
from trioftp.protocol.frames import HEADER, FrameType
from trioftp.server import Server, operations
from trioftp.server.auth import hash_password
from trioftp.transport.streams import ChannelClosed

GARBAGE_FRAME = HEADER.pack(0, FrameType.DONE, 0x01, 1)  # flags set: PROTOCOL_ERROR, connection closed


class Scrape:
    """One scrape of /metrics: `scrape("trioftp_transfers_total", operation="GET", outcome="ok")`."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def http_get(port: int, path: str = "/metrics") -> tuple[bytes, bytes]:
    """(status line, body) of a GET over a plain socket."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        data = await receive_until_closed(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


async def scrape(port: int) -> Scrape:
    status, body = await http_get(port)
    assert status == b"HTTP/1.0 200 OK", status
    return Scrape(body.decode())


@asynccontextmanager
async def held_put(server: Server) -> AsyncIterator[RawPeer]:
    """A raw peer with a PUT started (READY received) and no byte sent: a transfer in flight."""
    async with RawPeer.connect(server) as peer:
        await peer.send(Put(name="held.bin", size=1000, stream_id=1))
        assert isinstance(await peer.receive(), Ready)
        yield peer


# ------------------------------------------------------------------ metrics


async def test_metrics_count_connections_transfers_bytes_and_errors(make_server: MakeServer) -> None:
    server = await make_server(metrics="127.0.0.1:0")
    assert server.metrics_port
    with trio.fail_after(NETWORK_TIMEOUT):
        first = await scrape(server.metrics_port)
        assert first("trioftp_connections_open") == 0
        assert first("trioftp_transfers_total", operation="GET", outcome="ok") == 0

        async with connect(server) as conn:
            await conn.put("a.bin", b"a" * 1000)
            assert await conn.get("a.bin") == b"a" * 1000
            with pytest.raises(trioftp.NotFound):
                await conn.get("missing.bin")
            assert (await scrape(server.metrics_port))("trioftp_connections_open") == 1
        await in_thread(legacy_client.put, HOST, server.port, "l.bin", b"l" * 300)
        assert await in_thread(legacy_client.get, HOST, server.port, "l.bin") == b"l" * 300
        with pytest.raises(legacy_client.NotFound):
            await in_thread(legacy_client.get, HOST, server.port, "nope.bin")
        async with RawPeer.connect(server) as peer:  # a v2 client that sends a garbage frame
            await peer.send_raw(GARBAGE_FRAME)
            answer = await peer.receive_until_closed()
            assert isinstance(answer[-1], Error) and answer[-1].code is ErrorCode.PROTOCOL_ERROR
        stream = await trio.open_tcp_stream(HOST, server.port)  # neither v2 nor legacy
        async with stream:
            await stream.send_all(b"\x00\x01garbage")
            assert await receive_until_closed(stream) == b""
        await wait_until_idle(server)
        m = await scrape(server.metrics_port)

    assert m("trioftp_connections_total", dialect="v2") == 2
    assert m("trioftp_connections_total", dialect="legacy") == 3
    assert m("trioftp_legacy_sessions_total") == 3
    assert m("trioftp_connections_refused_total", reason="garbage") == 1
    assert m("trioftp_connections_open") == 0
    assert m("trioftp_transfers_total", operation="PUT", outcome="ok") == 1
    assert m("trioftp_transfers_total", operation="GET", outcome="ok") == 1
    assert m("trioftp_transfers_total", operation="GET", outcome="NOT_FOUND") == 1
    assert m("trioftp_transfers_total", operation="LEGACY-PUT", outcome="ok") == 1
    assert m("trioftp_transfers_total", operation="LEGACY-GET", outcome="ok") == 1
    assert m("trioftp_transfers_total", operation="LEGACY-GET", outcome="NOT_FOUND") == 1
    assert m("trioftp_transfers_in_flight") == 0
    assert m("trioftp_bytes_received_total") == 1000 + 300
    assert m("trioftp_bytes_sent_total") == 1000 + 300
    assert m("trioftp_transfer_duration_seconds_count", operation="GET") == 2
    assert m("trioftp_transfer_duration_seconds_count", operation="LEGACY-PUT") == 1
    assert m("trioftp_protocol_errors_total", code="NOT_FOUND") == 1  # legacy NO|0 is no ERROR frame
    assert m("trioftp_protocol_errors_total", code="PROTOCOL_ERROR") == 1


async def test_metrics_show_a_transfer_in_flight_and_count_it_lost(make_server: MakeServer) -> None:
    server = await make_server(metrics="127.0.0.1:0")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with held_put(server):
            during = await scrape(server.metrics_port)
        await wait_until_idle(server)
        after = await scrape(server.metrics_port)
    assert during("trioftp_transfers_in_flight") == 1
    assert during("trioftp_connections_open") == 1
    assert after("trioftp_transfers_in_flight") == 0
    assert after("trioftp_transfers_total", operation="PUT", outcome="connection_lost") == 1


async def test_metrics_count_refused_connections(make_server: MakeServer) -> None:
    server = await make_server(metrics="127.0.0.1:0", legacy=False, max_connections_per_ip=1)
    with trio.fail_after(NETWORK_TIMEOUT):
        # The second connection from 127.0.0.1 is one too many.
        async with connect(server), RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(PREFACE)
            answer = await peer.receive_until_closed()
            assert isinstance(answer[0], Error) and answer[0].code is ErrorCode.CONNECTION_LIMIT
        with pytest.raises(legacy_client.Refused):
            await in_thread(legacy_client.get, HOST, server.port, "any.bin", timeout=5)
        await wait_until_idle(server)
        m = await scrape(server.metrics_port)
    assert m("trioftp_connections_refused_total", reason="per_ip_limit") == 1
    assert m("trioftp_connections_refused_total", reason="legacy_off") == 1
    assert m("trioftp_protocol_errors_total", code="CONNECTION_LIMIT") == 1
    assert m("trioftp_connections_total", dialect="v2") == 1
    assert m("trioftp_connections_total", dialect="legacy") == 0


async def test_metrics_endpoint_answers_404_elsewhere_and_is_off_by_default(
    make_server: MakeServer, server: Server
) -> None:
    assert server.metrics_port == 0  # no metrics setting: nothing listens
    with_metrics = await make_server(metrics="127.0.0.1:0")
    with trio.fail_after(NETWORK_TIMEOUT):
        status, _ = await http_get(with_metrics.metrics_port, "/")
    assert status == b"HTTP/1.0 404 Not Found"


@pytest.mark.parametrize(
    ("flag", "value"), [("--metrics", "nowhere"), ("--metrics", "host:99999"), ("--log-format", "xml")]
)
def test_bad_observability_settings_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assert main(["serve", "--root", str(tmp_path), flag, value]) == 2
    assert flag[2:].replace("-", "_") in capsys.readouterr().err


# --------------------------------------------------------------------- logs


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as JSON: a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_serve_log_format_json_writes_one_object_per_line_and_serves_metrics(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, log = await start_serve(root, "--log-format", "json", "--metrics", "127.0.0.1:0")
        try:
            assert process.stderr is not None
            while '"metrics on http' not in "".join(log):
                chunk = await process.stderr.receive_some(4096)
                assert chunk, "".join(log)
                log.append(chunk.decode())
            started = {line["message"]: line for line in json_lines("".join(log))}
            url = next(message for message in started if message.startswith("metrics on http"))
            metrics_port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with connect(port) as conn:
                info = await conn.put("docs/a.txt", b"hello json")
                with pytest.raises(trioftp.NotFound):
                    await conn.get("docs/missing.txt")
            m = await scrape(metrics_port)
            assert m("trioftp_transfers_total", operation="PUT", outcome="ok") == 1
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
            await read_rest(process, log)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    lines = json_lines("".join(log))
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    transfers = {line["operation"]: line for line in lines if line.get("event") == "transfer"}
    put, get = transfers["PUT"], transfers["GET"]
    assert put["peer"].startswith("127.0.0.1:") and put["user"] == "anonymous"
    assert put["file"] == "docs/a.txt" and put["bytes"] == len(b"hello json")
    assert put["outcome"] == "ok" and put["reason"] is None
    assert info.digest is not None and put["digest"] == info.digest.hex()
    assert isinstance(put["duration"], float) and put["duration"] >= 0
    assert "PUT 'docs/a.txt' 10 bytes in" in put["message"]  # the text line is the message
    assert get["file"] == "docs/missing.txt" and get["outcome"] == "NOT_FOUND" and get["bytes"] == 0
    assert "docs/missing.txt" in get["reason"] and get["digest"] is None
    opened = [line for line in lines if line.get("event") == "connection_opened"]
    closed = [line for line in lines if line.get("event") == "connection_closed"]
    assert [(line["dialect"], line["peer"]) for line in opened] == [("v2", put["peer"])]
    assert [(line["dialect"], line["peer"]) for line in closed] == [("v2", put["peer"])]
    assert closed[0]["duration"] > 0 and closed[0]["bytes_received"] > len(b"hello json")
    assert closed[0]["bytes_sent"] > 0


async def test_a_v2_connection_counts_every_byte_it_received(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # The first read (the dialect sniff, up to 4 KiB) holds the HELLO and what was pipelined
    # behind it: those bytes are the connection's too.
    caplog.set_level(logging.INFO)
    hello = PREFACE + encode_message(
        Hello(max_frame_size=1 << 20, max_streams=8, initial_window=1 << 20, digests=("blake3",), agent="t")
    )
    goodbye = encode_message(Goodbye(message="done"))
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(hello + goodbye)
            await peer.receive_until_closed()
        await wait_until_idle(server)
    lines = json_lines("\n".join(JsonFormatter().format(record) for record in caplog.records))
    closed = [line for line in lines if line.get("event") == "connection_closed"]
    assert [line["bytes_received"] for line in closed] == [len(hello) + len(goodbye)]


async def test_legacy_transfers_log_their_fields(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(NETWORK_TIMEOUT):
        await in_thread(legacy_client.put, HOST, server.port, "old.txt", b"from an old client")
        with pytest.raises(legacy_client.NotFound):
            await in_thread(legacy_client.get, HOST, server.port, "absent.txt")
        await wait_until_idle(server)
    lines = json_lines("\n".join(JsonFormatter().format(record) for record in caplog.records))
    transfers = [line for line in lines if line.get("event") == "transfer"]
    assert [(t["operation"], t["file"], t["outcome"], t["bytes"]) for t in transfers] == [
        ("LEGACY-PUT", "old.txt", "ok", 18),
        ("LEGACY-GET", "absent.txt", "NOT_FOUND", 0),
    ]
    assert all(t["user"] == "anonymous" for t in transfers)
    assert len(transfers[0]["digest"]) == 64  # the server hashes legacy puts too
    assert transfers[1]["reason"].startswith("NOT_FOUND")
    closed = [line for line in lines if line.get("event") == "connection_closed"]
    assert sorted(line["dialect"] for line in closed) == ["legacy", "legacy"]
    assert max(line["bytes_received"] for line in closed) == len(b"put|old.txt|18") + 18


# ------------------------------------------------- why a transfer was cut


def transfer_fields(caplog: pytest.LogCaptureFixture, operation: str) -> list[dict[str, Any]]:
    """The JSON fields of the server's transfer lines for `operation`."""
    lines = json_lines("\n".join(JsonFormatter().format(record) for record in caplog.records))
    return [line for line in lines if line.get("event") == "transfer" and line["operation"] == operation]


@pytest.fixture
def interruptions(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """What ended each v2 transfer that did not finish (seen on its way to the record)."""
    seen: list[BaseException] = []
    describe = operations.interruption

    def spy(exc: BaseException, *, cancelled: tuple[str, str]) -> tuple[str, str]:
        seen.append(exc)
        return describe(exc, cancelled=cancelled)

    monkeypatch.setattr(operations, "interruption", spy)
    return seen


@pytest.mark.parametrize(
    ("cut", "outcome", "reason"),
    [
        (
            "shutdown",
            "SHUTTING_DOWN",
            "interrupted: SHUTTING_DOWN: the server is stopping and will not wait for streams in flight",
        ),
        ("peer_closes", "connection_lost", "interrupted: the peer closed the connection"),
    ],
)
async def test_a_cut_download_logs_why_not_the_exception_group(
    make_server: MakeServer,
    server_root: Path,
    caplog: pytest.LogCaptureFixture,
    interruptions: list[BaseException],
    cut: str,
    outcome: str,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trioftp")
    # Large and never hashed before: sent while a thread hashes it, in a
    # nursery, so the cancellation reaches the record inside an exception group.
    write_random(server_root / "big.bin", 4 * 1024 * 1024)
    server = await make_server(drain_timeout=0.3)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, initial_window=65536) as peer:  # grants no more than that
            await peer.send(Get(name="big.bin", stream_id=1))
            assert isinstance(await peer.receive(), FileInfo)
            received = 0
            while received < 65536:  # then the server waits for credit, sending nothing
                data = await peer.receive()
                assert isinstance(data, Data)
                received += len(data.payload)
            if cut == "shutdown":
                server.shutdown()
                await peer.receive_until_closed()
            else:
                await peer.stream.aclose()
        await wait_until_idle(server)
    assert [type(exc) for exc in interruptions] == [BaseExceptionGroup]
    (record,) = transfer_fields(caplog, "GET")
    assert (record["outcome"], record["reason"]) == (outcome, reason)
    assert record["message"].endswith(f": {reason}")


def test_an_interruption_is_named_by_what_is_inside_its_groups() -> None:
    lost = ChannelClosed("connection lost while sending: [Errno 32] Broken pipe", broken=True)
    nested = BaseExceptionGroup("", [ExceptionGroup("", [lost]), KeyboardInterrupt()])
    why = ("SHUTTING_DOWN", "interrupted: SHUTTING_DOWN: bye")
    assert operations.interruption(nested, cancelled=why) == (
        "connection_lost",
        "interrupted: connection lost while sending: [Errno 32] Broken pipe",
    )
    broken = ExceptionGroup("", [ValueError("bad")])
    assert operations.interruption(broken, cancelled=why) == (
        "INTERNAL",
        "failed: internal error: ValueError: bad",
    )
    assert operations.interruption(ExceptionGroup("", [RuntimeError()]), cancelled=why)[1] == (
        "failed: internal error: RuntimeError"
    )


async def test_a_legacy_get_cut_by_shutdown_says_so(
    make_server: MakeServer, server_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioftp")
    size = 64 * 1024 * 1024  # far more than the socket buffers hold
    with (server_root / "big.bin").open("wb") as f:
        f.truncate(size)
    server = await make_server(drain_timeout=0.2)
    with trio.fail_after(NETWORK_TIMEOUT):
        stream = await trio.open_tcp_stream(HOST, server.port)
        async with stream:
            await stream.send_all(b"get|big.bin|0")
            assert await receive_exactly(stream, len(b"YES|%d" % size)) == b"YES|%d" % size
            await stream.send_all(b"second_active")  # and reads no more
            server.shutdown()
            await wait_until_idle(server)
    (record,) = transfer_fields(caplog, "LEGACY-GET")
    assert record["outcome"] == "interrupted"
    assert record["reason"] == "interrupted: server shutting down (drain timeout passed)"


# ------------------------------------------------------------------- STATUS


async def test_status_reports_the_whole_server(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put("s.bin", b"s" * 4000)
            await conn.get("s.bin")
            idle = await conn.status()
            async with held_put(server):
                busy = await conn.status()
    assert idle.agent == server.agent and idle.agent.endswith(trioftp.__version__)
    assert 0 < idle.uptime_ms < NETWORK_TIMEOUT * 1000 + 60_000
    assert (idle.connections, idle.transfers) == (1, 0)
    assert (idle.bytes_received, idle.bytes_sent) == (4000, 4000)
    assert (busy.connections, busy.transfers) == (2, 1)
    assert busy.uptime_ms >= idle.uptime_ms


async def test_status_is_for_administrators_on_a_server_with_users(
    make_server: MakeServer, tmp_path: Path
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(
        f'[users.root]\npassword = "{hash_password("rootpw")}"\nadmin = true\n'
        f'[users.joe]\npassword = "{hash_password("joepw")}"\n'
        '[anonymous]\nenabled = true\nrights = ["read", "list"]\n'
    )
    server = await make_server(users_file=str(users))
    with trio.fail_after(NETWORK_TIMEOUT):
        for who in ({}, {"user": "joe", "password": "joepw"}):
            async with connect(server, **who) as conn:
                with pytest.raises(trioftp.PermissionDenied):
                    await conn.status()
                assert await conn.list() == []  # a stream error: the connection goes on
        async with connect(server, user="root", password="rootpw") as conn:
            assert (await conn.status()).connections == 1


async def test_status_command(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put("c.bin", os.urandom(2048))
        await wait_until_idle(server)
        capsys.readouterr()
        assert await run_cli("status", f"127.0.0.1:{server.port}") == 0
    out = capsys.readouterr().out.splitlines()
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out}
    assert fields["server"] == server.agent
    assert fields["connections"] == "1"  # the status command's own
    assert fields["transfers"] == "0 in flight"
    assert fields["received"] == "2.0KiB (2048 bytes)"
    assert fields["sent"] == "0B (0 bytes)"
    assert fields["uptime"].count(":") == 2


def test_duration_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    from trioftp.server.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.001, 0.002, 0.5, 4000.0):
        metrics.transfer_started()
        metrics.transfer_finished("GET", "ok", seconds)
    m = Scrape(metrics.render().decode())
    assert m("trioftp_transfer_duration_seconds_bucket", operation="GET", le="0.001") == 1
    assert m("trioftp_transfer_duration_seconds_bucket", operation="GET", le="0.005") == 2
    assert m("trioftp_transfer_duration_seconds_bucket", operation="GET", le="0.5") == 3
    assert m("trioftp_transfer_duration_seconds_bucket", operation="GET", le="3600.0") == 3
    assert m("trioftp_transfer_duration_seconds_bucket", operation="GET", le="+Inf") == 4
    assert m("trioftp_transfer_duration_seconds_count", operation="GET") == 4
    assert m("trioftp_transfer_duration_seconds_sum", operation="GET") == pytest.approx(4000.503)
    assert m("trioftp_transfers_total", operation="GET", outcome="ok") == 4
    assert m("trioftp_transfers_in_flight") == 0
