"""Shared fixtures: a real server on 127.0.0.1, port 0, in the test's nursery."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioftp.config import ServerConfig
from trioftp.server import Server

NETWORK_TIMEOUT = 30.0  # every network test body runs under trio.fail_after(NETWORK_TIMEOUT)
MakeServer = Callable[..., Any]  # the make_server fixture's type


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def make_server(nursery: trio.Nursery, server_root: Path) -> MakeServer:
    """Start a server with settings overridden: `server = await make_server(idle_timeout=1)`."""

    async def start(**overrides: Any) -> Server:
        config = ServerConfig(root=overrides.pop("root", server_root), host="127.0.0.1", port=0, **overrides)
        server: Server = await nursery.start(Server(config).serve)
        return server

    return start


@pytest.fixture
async def server(make_server: MakeServer) -> AsyncIterator[Server]:
    """A server with default settings serving `server_root`."""
    server = await make_server()
    yield server
    server.shutdown()


# ------------------------------------------------------------------ leak checks
#
# Cheap checks around every test. Trio tasks cannot outlive a test: pytest-trio
# runs each one in its own trio.run and the `nursery` fixture cancels what is
# left in it. What can outlive a test is checked here: private temp files of an
# upload in a served root (after each test), file descriptors and threads
# (over the session, with each test's growth reported if they leak).

FD_TOLERANCE = 4  # pytest and hypothesis may keep a few open (caches, capture)
_fds_at_start: int | None = None
_fd_growth: list[tuple[str, int]] = []


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # no /proc: not Linux, nothing to count
        return 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _fds_at_start
    before = _open_fds()
    if _fds_at_start is None:
        _fds_at_start = before
    try:
        return (yield)
    finally:
        if (grown := _open_fds() - before) > 0:
            _fd_growth.append((item.nodeid, grown))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = []
    if _fds_at_start is not None and (leaked := _open_fds() - _fds_at_start) > FD_TOLERANCE:
        growth = "".join(f"\n  +{n} {nodeid}" for nodeid, n in _fd_growth)
        problems.append(f"{leaked} file descriptors leaked over the session; tests that grew it:{growth}")
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if threads:
        problems.append(f"threads left running: {threads}")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            for problem in problems:
                reporter.write_line(f"LEAK: {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _no_private_temp_file_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test (its servers stopped): no upload's private `.tmp` left in a served root."""
    yield
    tmp_path = request.node.funcargs.get("tmp_path")
    if tmp_path is None:
        return
    left = [
        os.path.join(folder, name)
        for folder, _, files in os.walk(tmp_path)
        if folder.endswith(os.path.join(".trioftp", "partial"))
        for name in files
        if name.endswith(".tmp")
    ]
    assert not left, f"private temp files of uploads left behind: {left}"


@pytest.fixture(autouse=True)
def _no_pipelining_learnt_by_earlier_tests() -> None:
    """Each test starts with a client that knows no server: ports are reused by other servers."""
    from trioftp.client import connection

    connection._PIPELINING.clear()
