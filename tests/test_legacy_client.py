"""trioftp's legacy client (trioftp.legacy, `trioftp get/put --legacy`) against an OLD server.

`OldServer` below behaves like the old text-protocol server, as far as a client
can tell: one read of up to 1024 bytes is the header, split on "|"; it answers
`OK` to a put and nothing after the bytes (which it appends to its upload
folder); it answers a get with `YES|size` or `NO|0` and after `second_active`
sends the file in pieces of any size, with pauses; anything it cannot handle
closes the connection. Unlike the old one it closes when the client does.
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from trioftp import cli
from trioftp.client import legacy_servers as legacy_client
from trioftp.server import Server


class OldServer:
    """A test double of the old server. Start with `port = await nursery.start(old.serve)`."""

    def __init__(
        self,
        download: dict[str, bytes] | None = None,
        *,
        seed: int = 0,
        split_reply: bool = False,
        close_after_put: bool = True,
        cut_get_after: int | None = None,
        reply_to_get: bytes | None = None,
        silent: bool = False,
        extra_after_get: bytes = b"",
    ) -> None:
        self.download = dict(download or {})  # what a get serves
        self.upload: dict[str, bytes] = {}  # what puts appended
        self.rng = random.Random(seed)
        self.split_reply = split_reply
        self.close_after_put = close_after_put
        self.cut_get_after = cut_get_after
        self.reply_to_get = reply_to_get
        self.silent = silent
        self.extra_after_get = extra_after_get
        self.headers: list[bytes] = []
        self.pieces = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._commands(stream)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async def _commands(self, stream: trio.SocketStream) -> None:
        while True:
            data = await stream.receive_some(1024)
            if not data:
                if not self.close_after_put:
                    await trio.sleep_forever()  # the old server never noticed the close
                return
            if self.silent:
                continue
            self.headers.append(data)
            try:
                command, name, size_text = data.decode("utf-8").split("|")
                size = int(size_text)
            except ValueError:
                return  # the old server's answer to anything odd: close
            if name.startswith("no-such-dir/"):
                return  # open() failed in the old server: close
            if command == "put":
                await stream.send_all(b"OK")
                received = 0
                while received < size:
                    chunk = await stream.receive_some(1024)
                    if not chunk:
                        return
                    self.upload[name] = self.upload.get(name, b"") + chunk
                    received += len(chunk)
            elif command == "get":
                if not await self._get(stream, name):
                    return
            else:
                return

    async def _get(self, stream: trio.SocketStream, name: str) -> bool:
        """Serve one get; False when the connection is to close."""
        if self.reply_to_get is not None:
            await stream.send_all(self.reply_to_get)
            return False
        if name not in self.download:
            await stream.send_all(b"NO|0")
            return True
        body = self.download[name]
        reply = b"YES|%d" % len(body)
        if self.split_reply:  # the answer arrives in two segments, split inside the size
            await stream.send_all(reply[:5])
            await trio.sleep(0.01)
            await stream.send_all(reply[5:])
        else:
            await stream.send_all(reply)
        if await stream.receive_some(1024) != b"second_active":
            return False
        if self.extra_after_get:  # a broken server: more than it announced, in one write
            await stream.send_all(body + self.extra_after_get)
            return False
        end = len(body) if self.cut_get_after is None else self.cut_get_after
        position = 0
        while position < end:
            piece = self.rng.randint(1, 70_000)
            await stream.send_all(body[position : min(position + piece, end)])
            self.pieces += 1
            position += piece
            if self.rng.random() < 0.3:
                await trio.sleep(self.rng.random() * 0.002)
        return self.cut_get_after is None  # a cut get is the old server failing: it closes


async def start(nursery: trio.Nursery, old: OldServer) -> int:
    port: int = await nursery.start(old.serve)
    return port


def bodies() -> dict[str, bytes]:
    rng = random.Random(7)
    return {f"f{size}.bin": rng.randbytes(size) for size in (0, 1, 1000, 70_001, 1_500_000)}


# --------------------------------------------------------------------- get


async def test_get_reassembles_a_file_sent_in_random_pieces(nursery: trio.Nursery) -> None:
    files = bodies()
    old = OldServer(files)
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, old)
        for name, body in files.items():
            assert await trioftp.legacy.get("127.0.0.1", name, port=port) == body
    assert old.pieces > 20
    assert all(header.startswith(b"get|") for header in old.headers)


async def test_get_answer_split_inside_the_size(nursery: trio.Nursery) -> None:
    body = random.Random(3).randbytes(123_456)
    old = OldServer({"split.bin": body}, split_reply=True)
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, old)
        assert await trioftp.legacy.get("127.0.0.1", "split.bin", port=port, settle=0.1) == body


async def test_get_of_missing_file_raises_not_found(nursery: trio.Nursery) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, OldServer())
        with pytest.raises(trioftp.NotFound, match=re.escape("NO|0")):
            await trioftp.legacy.get("127.0.0.1", "absent.txt", port=port)


async def test_get_cut_short_raises_connection_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, OldServer({"big.bin": b"x" * 100_000}, cut_get_after=60_000))
        with pytest.raises(trioftp.ConnectionClosed, match="of 100000 bytes"):
            await trioftp.legacy.get("127.0.0.1", "big.bin", port=port)


@pytest.mark.parametrize("reply", [b"HELLO", b"YES|12abc", b"YES|x", b"YES|3second_active"])
async def test_get_with_a_reply_that_is_not_legacy(nursery: trio.Nursery, reply: bytes) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, OldServer(reply_to_get=reply))
        with pytest.raises(trioftp.ProtocolViolation):
            await trioftp.legacy.get("127.0.0.1", "x", port=port)


async def test_get_of_more_bytes_than_announced(nursery: trio.Nursery) -> None:
    old = OldServer({"short.txt": b"abc"}, extra_after_get=b"surplus")
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, old)
        with pytest.raises(trioftp.ProtocolViolation, match="more than the 3 bytes"):
            await trioftp.legacy.get("127.0.0.1", "short.txt", port=port)


async def test_get_refused_by_a_close(nursery: trio.Nursery) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, OldServer())
        with pytest.raises(trioftp.ConnectionClosed, match="instead of answering"):
            await trioftp.legacy.get("127.0.0.1", "no-such-dir/x", port=port)


async def test_silent_server_times_out(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    port = await start(nursery, OldServer(silent=True))
    with trio.fail_after(NETWORK_TIMEOUT):
        started = trio.current_time()
        with pytest.raises(trioftp.TransferTimeout, match="2 s"):
            await trioftp.legacy.get("127.0.0.1", "x", port=port, timeout=2.0)
        assert trio.current_time() - started == pytest.approx(2.0, abs=0.1)
        with pytest.raises(trioftp.TransferTimeout):
            await trioftp.legacy.put("127.0.0.1", "x", b"data", port=port, timeout=2.0)


async def test_download_writes_the_file_only_when_complete(nursery: trio.Nursery, tmp_path: Path) -> None:
    files = bodies()
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, OldServer(files))
        target = tmp_path / "out.bin"
        assert await trioftp.legacy.download("127.0.0.1", "f1500000.bin", target, port=port) == 1_500_000
        assert target.read_bytes() == files["f1500000.bin"]
        with pytest.raises(trioftp.NotFound):
            await trioftp.legacy.download("127.0.0.1", "absent", tmp_path / "absent.bin", port=port)
        port = await start(nursery, OldServer({"cut.bin": b"y" * 100_000}, cut_get_after=10))
        with pytest.raises(trioftp.ConnectionClosed):
            await trioftp.legacy.download("127.0.0.1", "cut.bin", target, port=port)
    assert target.read_bytes() == files["f1500000.bin"]  # untouched by the failed download
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # noqa: ASYNC240


# --------------------------------------------------------------------- put


async def test_put_sends_exactly_the_bytes(nursery: trio.Nursery) -> None:
    files = bodies()
    old = OldServer()
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, old)
        for name, body in files.items():
            await trioftp.legacy.put("127.0.0.1", name, body, port=port)
    assert old.upload == {name: body for name, body in files.items() if body}
    assert old.headers == [f"put|{name}|{len(body)}".encode() for name, body in files.items()]


async def test_put_returns_after_linger_when_the_server_never_closes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    old = OldServer(close_after_put=False)
    port = await start(nursery, old)
    with trio.fail_after(NETWORK_TIMEOUT):
        started = trio.current_time()
        await trioftp.legacy.put("127.0.0.1", "a.txt", b"abc", port=port, linger=3.0)
        assert trio.current_time() - started == pytest.approx(3.0, abs=0.1)
    assert old.upload == {"a.txt": b"abc"}


async def test_put_refused_by_a_close(nursery: trio.Nursery) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, OldServer())
        with pytest.raises(trioftp.ConnectionClosed, match="instead of accepting"):
            await trioftp.legacy.put("127.0.0.1", "no-such-dir/x", b"data", port=port)


@pytest.mark.parametrize("name", ["a|b", "../up.txt", "/etc/passwd", "", "nul\x00", "x" * 1100])
async def test_names_that_cannot_be_sent_are_refused_locally(name: str) -> None:
    with pytest.raises(trioftp.BadName):
        await trioftp.legacy.put("127.0.0.1", name, b"data", port=1)
    with pytest.raises(trioftp.BadName):
        await trioftp.legacy.get("127.0.0.1", name, port=1)


async def test_connect_refused_raises_connection_closed() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(trioftp.ConnectionClosed, match="cannot connect"):
        await trioftp.legacy.get("127.0.0.1", "x", port=port)


async def test_upload_from_a_path(nursery: trio.Nursery, tmp_path: Path) -> None:
    body = random.Random(4).randbytes(2_500_000)
    local = tmp_path / "local.bin"
    local.write_bytes(body)
    old = OldServer()
    seen: list[tuple[int, int]] = []
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, old)
        size = await trioftp.legacy.upload(
            "127.0.0.1", local, port=port, progress=lambda done, total: seen.append((done, total))
        )
    assert size == len(body)
    assert old.upload == {"local.bin": body}
    assert seen[-1] == (len(body), len(body))


# ------------------------------------------------------ facade, CLI, trioftp


def test_facade_is_the_client_module() -> None:
    assert "legacy" in trioftp.__all__
    for name in ("get", "put", "download", "upload"):
        assert getattr(trioftp.legacy, name) is getattr(legacy_client, name)


async def run_cli(*argv: str) -> int:
    # main() calls trio.run, so it runs on a thread of its own.
    result: int = await trio.to_thread.run_sync(functools.partial(cli.main, list(argv)))
    return result


async def test_cli_get_and_put_legacy(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = OldServer({"report.csv": b"a,b\n1,2\n"})
    local = tmp_path / "notes.txt"
    local.write_bytes(b"hello old server")
    with trio.fail_after(NETWORK_TIMEOUT):
        port = await start(nursery, old)
        address = f"127.0.0.1:{port}"
        assert await run_cli("put", "--legacy", address, str(local), "remote.txt") == 0
        assert await run_cli("put", "--legacy", address, str(local)) == 0
        assert await run_cli("get", "--legacy", address, "report.csv", "-o", str(tmp_path / "r.csv")) == 0
        assert await run_cli("get", "--legacy", address, "absent.csv", "-o", str(tmp_path / "a.csv")) == 1
    assert old.upload == {"remote.txt": b"hello old server", "notes.txt": b"hello old server"}
    assert (tmp_path / "r.csv").read_bytes() == b"a,b\n1,2\n"
    assert not (tmp_path / "a.csv").exists()
    assert "NO|0" in capsys.readouterr().err


async def test_against_a_trioftp_server(server: Server, server_root: Path) -> None:
    # A trioftp server closes only after it stored the file: a v2 get right after sees it.
    body = random.Random(5).randbytes(300_000)
    with trio.fail_after(NETWORK_TIMEOUT):
        started = trio.current_time()
        await trioftp.legacy.put("127.0.0.1", "via-legacy.bin", body, port=server.port, linger=15.0)
        assert trio.current_time() - started < 7.5  # the server closed: it did not wait out the linger
        assert (server_root / "via-legacy.bin").read_bytes() == body
        assert await trioftp.get("127.0.0.1", "via-legacy.bin", port=server.port) == body
        assert await trioftp.legacy.get("127.0.0.1", "via-legacy.bin", port=server.port) == body
        with pytest.raises(trioftp.NotFound):
            await trioftp.legacy.get("127.0.0.1", "absent", port=server.port)
        with pytest.raises(trioftp.ConnectionClosed):  # refused: the reserved folder
            await trioftp.legacy.put("127.0.0.1", ".trioftp/x", b"x", port=server.port)
