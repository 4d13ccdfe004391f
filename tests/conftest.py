"""Shared fixtures: a real server on 127.0.0.1, port 0, in the test's nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trioftp.config import ServerConfig
from trioftp.server import Server

NETWORK_TIMEOUT = 30.0  # every network test body runs under trio.fail_after(NETWORK_TIMEOUT)


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def make_server(
    nursery: trio.Nursery, server_root: Path
) -> Callable[..., Any]:
    """Start a server with settings overridden: `server = await make_server(idle_timeout=1)`."""

    async def start(**overrides: Any) -> Server:
        config = ServerConfig(root=overrides.pop("root", server_root), host="127.0.0.1", port=0, **overrides)
        server: Server = await nursery.start(Server(config).serve)
        return server

    return start


@pytest.fixture
async def server(make_server: Callable[..., Any]) -> AsyncIterator[Server]:
    """A server with default settings serving `server_root`."""
    server = await make_server()
    yield server
    server.shutdown()
