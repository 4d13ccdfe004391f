"""What request handlers see: the server's shared state, and the session they run in.

Sessions and operations take these instead of the Server object, so they use
only what is written here and import neither the server nor each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from trioftp.config import ServerConfig
from trioftp.protocol import ErrorCode
from trioftp.server.auth import FailureTracker, User, Users
from trioftp.server.budget import ByteBudget
from trioftp.server.metrics import Metrics
from trioftp.storage.interface import Store
from trioftp.transport.channel import Channel


@attrs.define(eq=False)
class Shared:
    """What every session of one server shares."""

    config: ServerConfig
    storage: Store
    metrics: Metrics
    users: Users | None  # None: no users file, everyone is `open_user`
    open_user: User
    auth_failures: FailureTracker
    hash_limiter: trio.CapacityLimiter  # threads hashing whole files at once, server-wide
    upload_budget: ByteBudget  # buffers of uploads, v2 and legacy
    send_budget: ByteBudget  # file bytes read into memory for sending
    agent: str
    # (uptime in seconds, connections now), for STATUS
    status: Callable[[], tuple[float, int]] = lambda: (0.0, 0)


class StreamSession(Protocol):
    """The v2 session as one request's handler sees it."""

    shared: Shared
    storage: Store  # the store as this user sees it (their home)
    channel: Channel
    user: User
    peer: str
    address: str  # the peer's address without the port: who shares a budget group
    server_busy: int  # above 0 while the server, not the peer, is the one being slow
    upload_share: ByteBudget | None  # this connection's share of upload_budget, made on first PUT

    @property
    def open_streams(self) -> int: ...

    @property
    def ending(self) -> tuple[ErrorCode, str] | None: ...

    @property
    def lost(self) -> str | None: ...

    def take_send_ticket(self) -> int:
        """send_memory the session reserved for its next small GET (0 if none), now the caller's."""
        ...
