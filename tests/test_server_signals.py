"""trioftp.server.signals in a program of its own: the graceful stop `trioftp serve` has.

The signals go to this very process (pytest runs trio in the main thread); the
receiver that run_server holds open takes them, so none reaches pytest.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

import trioftp.server.server as server_module
from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import MiB, connect, write_random
from trioftp.config import ServerConfig
from trioftp.errors import TrioftpError
from trioftp.server import Server
from trioftp.server.signals import run_server


async def run_in(nursery: trio.Nursery, server: Server, statuses: list[int]) -> Server:
    async def run(*, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        statuses.append(await run_server(server, task_status=task_status))

    started: Server = await nursery.start(run)
    return started


async def test_sigterm_drains_and_returns_0(tmp_path: Path) -> None:
    statuses: list[int] = []
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await run_in(nursery, Server(ServerConfig(root=tmp_path, port=0)), statuses)
            assert server.port  # started: listening
            async with connect(server) as conn:
                assert await conn.list() == []
            os.kill(os.getpid(), signal.SIGTERM)
    assert statuses == [0]


async def test_a_second_sigint_cuts_the_drain_and_returns_130(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_random(tmp_path / "root" / "big.bin", 64 * MiB)
    config = ServerConfig(root=tmp_path / "root", port=0, drain_timeout=60)
    statuses: list[int] = []
    sent: list[int] = []

    def interrupt_twice(done: int, total: int) -> None:
        # trio merges a signal that comes again before it is received: the second
        # goes once the first is seen, while the download is still in flight.
        if not sent or (len(sent) == 1 and "received SIGINT: stopping" in caplog.text):
            sent.append(done)
            os.kill(os.getpid(), signal.SIGINT)

    with trio.fail_after(NETWORK_TIMEOUT), caplog.at_level(logging.INFO, logger="trioftp"):
        async with trio.open_nursery() as nursery:
            server = await run_in(nursery, Server(config), statuses)
            async with connect(server) as conn:
                with pytest.raises(TrioftpError):
                    await conn.download("big.bin", tmp_path / "big.bin", progress=interrupt_twice)
    assert len(sent) == 2 and sent[1] < 64 * MiB
    assert statuses == [130]  # 128 + SIGINT, without waiting the 60 s drain_timeout
    assert "received SIGINT again" in caplog.text


async def test_a_store_that_hangs_on_close_does_not_hold_the_shutdown(
    server_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An S3 store writes ledgers when it closes: an engine that hangs must not stop the server stopping."""
    release, closed = threading.Event(), threading.Event()
    real_open_store = server_module.open_store

    class HangingOnClose:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        def close(self) -> None:
            release.wait(NETWORK_TIMEOUT)
            self._store.close()
            closed.set()

    monkeypatch.setattr(server_module, "open_store", lambda config: HangingOnClose(real_open_store(config)))
    config = ServerConfig(root=server_root, host="127.0.0.1", port=0, drain_timeout=0.2)
    try:
        with trio.fail_after(NETWORK_TIMEOUT / 2):
            async with trio.open_nursery() as nursery:
                server: Server = await nursery.start(Server(config).serve)
                server.shutdown()
                started = trio.current_time()
            assert trio.current_time() - started < server_module.CLOSE_PATIENCE_FLOOR + 1
    finally:
        release.set()
        await trio.to_thread.run_sync(closed.wait, NETWORK_TIMEOUT)  # its descriptor, before the leak check
    assert "did not close within 1 s" in caplog.text
