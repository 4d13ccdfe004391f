"""The trioftp server: listeners, one task per connection, limits, graceful shutdown.

    server = Server(ServerConfig(root=Path("files"), port=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        ...                       # server.port is bound now
        server.shutdown()         # stop accepting, drain, return

Resource handling: a connection slot (a semaphore) is taken *before* accept(),
so connections over `max_connections` wait in the kernel's listen backlog
rather than in our memory. Each connection runs in the connection nursery and
closes its socket in `finally`.

Error handling: nothing a client does can end the server. A connection's
failure is logged in one line and ends that connection only; accept() running
out of file descriptors is logged and retried after 100 ms.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
from collections import Counter

import trio

from trioftp._version import __version__
from trioftp.config import ServerConfig
from trioftp.protocol import PREFACE, ErrorCode
from trioftp.protocol.codec import encode_message
from trioftp.protocol.messages import Error
from trioftp.protocol.sniff import Dialect, sniff
from trioftp.server.legacy import LegacySession
from trioftp.server.session import V2Session
from trioftp.storage import Storage

log = logging.getLogger("trioftp.server")

_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
CLEANUP_INTERVAL = 3600.0
CLOSE_GRACE = 1.0  # seconds past drain_timeout for sessions to send their last ERROR


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one: each transfer holds two fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class Server:
    """A trioftp server for one root folder. Run `serve()` in a nursery."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.storage = Storage(
            config.root, partial_ttl=config.partial_ttl, max_file_size=config.max_file_size
        )
        self.agent = f"trioftp/{__version__}"
        self.port = 0
        self.ports: list[int] = []
        self._per_ip: Counter[str] = Counter()
        self._sessions: set[V2Session | LegacySession] = set()
        self._shutdown = trio.Event()
        self.connections_refused = 0

    @property
    def connection_count(self) -> int:
        return sum(self._per_ip.values())

    def shutdown(self) -> None:
        """Stop accepting at once; transfers in flight get `drain_timeout` to finish."""
        self._shutdown.set()

    async def serve(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until `shutdown()`; `task_status.started(self)` once listening."""
        config = self.config
        fd_limit = raise_open_file_limit()
        removed = await trio.to_thread.run_sync(lambda: self.storage.clean_partials(at_start=True))
        listeners = await trio.open_tcp_listeners(config.port, host=config.host, backlog=config.backlog)
        self.ports = [listener.socket.getsockname()[1] for listener in listeners]
        self.port = self.ports[0]
        log.info(
            "serving %s on %s:%d (legacy clients %s; open-file limit %d; %d stale partial uploads removed)",
            self.storage.root, config.host, self.port, "accepted" if config.legacy else "refused",
            fd_limit, removed,
        )  # fmt: skip
        slots = trio.Semaphore(config.max_connections)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept_loop, listener, connections, slots)
                accepting.start_soon(self._clean_partials_periodically)
                task_status.started(self)
                await self._shutdown.wait()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            log.info(
                "shutting down: %d connections draining for up to %g s",
                len(self._sessions),
                config.drain_timeout,
            )
            for session in list(self._sessions):
                connections.start_soon(session.drain)
            # Each v2 session ends its streams at drain_timeout with ERROR SHUTTING_DOWN;
            # this deadline, a moment later, cuts whatever is left.
            connections.cancel_scope.deadline = trio.current_time() + config.drain_timeout + CLOSE_GRACE
        log.info("server stopped")

    async def _accept_loop(
        self, listener: trio.SocketListener, connections: trio.Nursery, slots: trio.Semaphore
    ) -> None:
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                slots.release()
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept() failed (%s); retrying in 100 ms", errno.errorcode[exc.errno])
                    await trio.sleep(0.1)
                    continue
                raise
            connections.start_soon(self._handle_connection, stream, slots)

    async def _clean_partials_periodically(self) -> None:
        while True:
            await trio.sleep(CLEANUP_INTERVAL)
            removed = await trio.to_thread.run_sync(self.storage.clean_partials)
            if removed:
                log.info("removed %d expired partial uploads", removed)

    async def _handle_connection(self, stream: trio.SocketStream, slots: trio.Semaphore) -> None:
        peer = _peer_of(stream)
        ip = peer.rpartition(":")[0]
        self._per_ip[ip] += 1
        try:
            await self._serve_connection(
                stream, peer, over_limit=self._per_ip[ip] > self.config.max_connections_per_ip
            )
        except Exception as exc:
            log.error(
                "%s connection failed: %s: %s",
                peer,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
        finally:
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]
            with trio.CancelScope(shield=True):
                await stream.aclose()
            slots.release()

    async def _serve_connection(self, stream: trio.SocketStream, peer: str, *, over_limit: bool) -> None:
        head = b""
        handshake_deadline = trio.current_time() + self.config.handshake_timeout
        with trio.move_on_at(handshake_deadline):
            try:
                head = await stream.receive_some(64)
            except trio.BrokenResourceError:
                return
        if not head:
            log.info("%s closed or stayed silent before saying anything", peer)
            return
        dialect = sniff(head)
        if over_limit:
            self.connections_refused += 1
            log.warning(
                "%s refused: over %d connections from one address", peer, self.config.max_connections_per_ip
            )
            if dialect is Dialect.V2:
                await _send_quietly(stream, PREFACE + encode_message(
                    Error(code=ErrorCode.CONNECTION_LIMIT, message="too many connections from your address")
                ))  # fmt: skip
            return
        if dialect is Dialect.V2:
            session: V2Session | LegacySession = V2Session(
                self, stream, head, peer, handshake_deadline=handshake_deadline
            )
        elif dialect is Dialect.LEGACY and self.config.legacy:
            session = LegacySession(self, stream, head, peer)
        elif dialect is Dialect.LEGACY:
            log.warning("%s legacy client refused (legacy mode is off)", peer)
            return
        else:
            log.warning("%s closed: first bytes %r are neither v2 nor legacy", peer, head[:16])
            return
        if self._shutdown.is_set():
            return
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


def _peer_of(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "?:0"
    return f"{host}:{port}"


async def _send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    with trio.move_on_after(1.0):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `config.root` until cancelled. `task_status.started(server)` once listening."""
    await Server(config).serve(task_status=task_status)
