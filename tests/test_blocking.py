"""trioftp.blocking: the client for code that is not async, against a real server over real sockets.

The server runs in the test's Trio loop; each blocking call runs on a worker
thread, as a script's would run outside any loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from tests.test_cli_everyday_more import silent_port  # noqa: F401 (a fixture)
from trioftp.blocking import Client
from trioftp.server import Server

T = TypeVar("T")


async def blocking(call: Callable[[], T]) -> T:
    with trio.fail_after(NETWORK_TIMEOUT):
        return await trio.to_thread.run_sync(call)


async def test_get_and_put_in_one_call_each(server: Server, server_root: Path) -> None:
    await blocking(lambda: trioftp.blocking.put("127.0.0.1", "a/notes.txt", b"hello", port=server.port))
    assert (server_root / "a" / "notes.txt").read_bytes() == b"hello"
    assert (
        await blocking(lambda: trioftp.blocking.get("127.0.0.1", "a/notes.txt", port=server.port)) == b"hello"
    )


async def test_errors_are_the_async_api_s_classes(server: Server) -> None:
    with pytest.raises(trioftp.NotFound):
        await blocking(lambda: trioftp.blocking.get("127.0.0.1", "missing.txt", port=server.port))

    def with_client() -> None:
        with Client("127.0.0.1", server.port) as client:
            client.stat("missing.txt")

    with pytest.raises(trioftp.NotFound):
        await blocking(with_client)


async def test_a_client_does_the_common_operations_on_one_connection(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 3_000_000)
    seen: list[int] = []

    def script() -> Client:
        with Client("127.0.0.1", server.port) as client:
            client.mkdir("docs/2026")
            info = client.put("docs/2026/a.txt", b"alpha")
            assert info.size == 5
            assert client.get("docs/2026/a.txt") == b"alpha"
            client.upload(tmp_path / "big.bin", "big.bin", progress=lambda done, total: seen.append(done))
            client.download("big.bin", tmp_path / "copy.bin")
            client.rename("docs/2026/a.txt", "docs/b.txt")
            assert [entry.name for entry in client.list("docs")] == ["2026", "b.txt"]
            assert client.stat("docs/b.txt").digest is not None
            client.delete("docs/2026")
            assert client.status().agent
            return client

    client = await blocking(script)
    assert (tmp_path / "copy.bin").read_bytes() == b"x" * 3_000_000
    assert seen[-1] == 3_000_000
    assert sorted(path.name for path in (server_root / "docs").iterdir()) == ["b.txt"]
    assert not client._thread.is_alive()  # closing joined its thread
    with pytest.raises(trioftp.ConnectionClosed, match="closed"):
        client.get("docs/b.txt")
    client.close()  # a second close does nothing


async def test_threads_may_share_a_client(server: Server, server_root: Path) -> None:
    for number in range(8):
        (server_root / f"f{number}.txt").write_bytes(str(number).encode())

    def script() -> dict[int, bytes]:
        got: dict[int, bytes] = {}
        with Client("127.0.0.1", server.port) as client:

            def fetch(number: int) -> None:
                got[number] = client.get(f"f{number}.txt")

            threads = [threading.Thread(target=fetch, args=(number,)) for number in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return got

    assert await blocking(script) == {number: str(number).encode() for number in range(8)}


async def test_a_failed_connect_raises_from_the_constructor_and_leaves_no_thread(
    silent_port: int,  # noqa: F811
) -> None:
    with pytest.raises(trioftp.TransferTimeout, match=r"within 0\.3 s"):
        await blocking(lambda: Client("127.0.0.1", silent_port, timeout=0.3))
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("trioftp-client-")]
