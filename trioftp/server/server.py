"""The trioftp server: listeners, one task per connection, limits, graceful shutdown.

    server = Server(ServerConfig(root=Path("files"), port=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        ...                       # server.port is bound now
        server.shutdown()         # stop accepting, drain, return

Resource handling: a connection slot (a semaphore) is taken *before* accept(),
so connections over `max_connections` wait in the kernel's listen backlog
rather than in our memory. A connection from an address already at
`max_connections_per_ip` is closed by the accept loop itself, with the slot
kept for the next accept: it never gets a task, a slot or a wait. Each
connection runs in the connection nursery and closes its socket in `finally`.

Error handling: nothing a client does can end the server. A connection's
failure is logged in one line and ends that connection only; accept() running
out of file descriptors is logged and retried after 100 ms.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import resource
import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from trioftp._version import __version__
from trioftp.config import ServerConfig, parse_address
from trioftp.protocol import PREFACE, ErrorCode
from trioftp.protocol.codec import encode_message
from trioftp.protocol.messages import Error
from trioftp.protocol.sniff import Dialect, sniff
from trioftp.server.auth import ANONYMOUS_FULL, READ_ONLY_RIGHTS, FailureTracker, User, Users, load_users
from trioftp.server.budget import ByteBudget, give_memory_back
from trioftp.server.metrics import Metrics, serve_metrics
from trioftp.server.session import V2Session, watch_interval
from trioftp.server.shared import Shared
from trioftp.server.stores import open_store
from trioftp.storage.interface import StorageError, Store
from trioftp.transport.streams import close_stream, peer_of

if TYPE_CHECKING:  # imported by the first legacy connection: many servers never see one (bench W5)
    from trioftp.server.legacy_session import LegacySession

log = logging.getLogger("trioftp.server")

CLOSE_PATIENCE_FLOOR = 1.0  # seconds the store gets to close even with drain_timeout 0
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
CLEANUP_INTERVAL = 3600.0
CLOSE_GRACE = 1.0  # seconds past drain_timeout for sessions to send their last ERROR
# One address reconnecting as fast as it can is refused thousands of times a
# second: one log line per this many seconds, with the count of those not logged.
REFUSAL_LOG_INTERVAL = 1.0
# The first read, which the dialect is told by: a client's HELLO (~110 bytes) and the request
# it pipelined behind it fit, so the session starts with both and reads the socket once less.
FIRST_READ = 4096
# Preface and ERROR CONNECTION_LIMIT, sent to a refused connection without waiting.
_V2_REFUSAL = PREFACE + encode_message(
    Error(code=ErrorCode.CONNECTION_LIMIT, message="too many connections from your address")
)
HASH_THREADS = 2  # whole-file hashing threads at once (GET of an uncached file, STAT, identical PUT)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one: each transfer holds two fds.

    Returns:
        The soft limit now in force. `Server.serve` calls this itself.

    Example:
        print("open-file limit:", raise_open_file_limit())
    """
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
    """A trioftp server for one root folder. Run `serve()` in a nursery.

    Args:
        config: every setting; `ServerConfig()` serves ./trioftp-files on 127.0.0.1:8885.

    Raises:
        ValueError, OSError: the users file or the TLS files are unusable (raised here, before
            listening).

    Attributes:
        port: the first bound port, once `serve()` has started (useful with port=0).
        ports: every bound port (one per address family).
        storage: the served folder.
        metrics: the Prometheus counters, also served at `config.metrics` if set.

    Example:
        server = Server(ServerConfig(root=Path("files"), port=0))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            print("listening on", server.port)
            ...
            server.shutdown()  # stop accepting, let transfers finish, return
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.storage: Store = open_store(config)
        self.agent = f"trioftp/{__version__}"
        self.port = 0
        self.ports: list[int] = []
        self._per_ip: Counter[str] = Counter()
        self._refusals_unlogged = 0
        self._next_refusal_log = 0.0
        self._sessions: set[V2Session | LegacySession] = set()
        self._shutdown = trio.Event()
        self.connections_refused = 0
        self.metrics = Metrics()
        self.metrics.open_connections = lambda: self.connection_count
        self.metrics_port = 0  # bound once serving, if config.metrics is set
        self._started = time.monotonic()
        self.users: Users | None = load_users(Path(config.users_file)) if config.users_file else None
        # Who a client is without a users file; read_only caps every user's rights as well.
        self.open_user: User = ANONYMOUS_FULL
        if config.read_only:
            self.open_user = _read_only(ANONYMOUS_FULL)
            if self.users is not None:
                self.users = Users(
                    users={name: _read_only(user) for name, user in self.users.users.items()},
                    anonymous=None if self.users.anonymous is None else _read_only(self.users.anonymous),
                )
        self._make_homes()
        self.hash_limiter = trio.CapacityLimiter(HASH_THREADS)  # threads hashing whole files at once
        # Buffers of uploads (v2 and legacy) and of file bytes read for sending, server-wide;
        # the connections from one address hold at most half of each.
        self.upload_budget = ByteBudget(config.upload_memory, group_limit=config.upload_memory // 2)
        self.send_budget = ByteBudget(config.send_memory, group_limit=config.send_memory // 2)
        self.ssl_context = _server_ssl_context(config)
        self.shared = Shared(
            config=config, storage=self.storage, metrics=self.metrics, users=self.users,
            open_user=self.open_user, auth_failures=FailureTracker(), hash_limiter=self.hash_limiter,
            upload_budget=self.upload_budget, send_budget=self.send_budget, agent=self.agent,
            status=lambda: (self.uptime, self.connection_count),
        )  # fmt: skip

    @property
    def auth_failures(self) -> FailureTracker:
        """Failed logins per user and address: back-off and lock-out.

        Example:
            server.auth_failures = FailureTracker(base_delay=1.0, lockout_after=5)
        """
        return self.shared.auth_failures

    @auth_failures.setter
    def auth_failures(self, tracker: FailureTracker) -> None:
        self.shared.auth_failures = tracker

    @property
    def connection_count(self) -> int:
        """Connections being served now (v2 and legacy).

        Example:
            print(server.connection_count, "clients connected")
        """
        return sum(self._per_ip.values())

    @property
    def uptime(self) -> float:
        """Seconds since the server was made.

        Example:
            print(f"up for {server.uptime:.0f} s")
        """
        return time.monotonic() - self._started

    def _make_homes(self) -> None:
        if self.users is None:
            return
        everyone = [*self.users.users.values(), *([self.users.anonymous] if self.users.anonymous else [])]
        for user in everyone:
            try:
                self.storage.scoped(user.home)
            except StorageError as exc:
                raise ValueError(f"user {user.name!r}: home {user.home!r}: {exc}") from None

    def _legacy_refusal(self) -> str | None:
        """Why legacy clients are refused now, or None if they are served."""
        if not self.config.legacy:
            return "legacy mode is off"
        if self.ssl_context is not None:
            return "legacy clients cannot speak TLS"
        if self.users is not None:
            if not self.config.legacy_with_users:
                return "the server has users and legacy clients cannot log in (see legacy_with_users)"
            if self.users.anonymous is None:
                return "legacy clients get the anonymous rights, and anonymous access is off"
        return None

    def shutdown(self) -> None:
        """Stop accepting at once; transfers in flight get `drain_timeout` to finish.

        `serve()` returns once they have finished or been cancelled. Safe to call
        more than once, and from a signal handler's task.

        Example:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    server.shutdown()
        """
        self._shutdown.set()

    async def serve(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until `shutdown()`; `task_status.started(self)` once listening.

        Args:
            task_status: for `nursery.start`, which then returns this server, bound.

        Raises:
            OSError: the address cannot be bound.

        Example:
            server = await nursery.start(Server(ServerConfig(port=0)).serve)
            print(server.port)
        """
        try:
            await self._serve(task_status)
        finally:
            await self._close_storage()  # every session that used the store has ended
        log.info("server stopped")

    async def _close_storage(self) -> None:
        # Closing may wait on the engine (an S3 store writes the ledgers of aborted
        # uploads first): on a thread, so the loop still takes signals, and bounded as
        # the drain is, so an engine that hangs cannot hold the shutdown for ever.
        patience = max(self.config.drain_timeout, CLOSE_PATIENCE_FLOOR)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + patience) as scope:
            await trio.to_thread.run_sync(self.storage.close, abandon_on_cancel=True)
        if scope.cancelled_caught:
            log.warning("the store did not close within %g s; stopping without it", patience)

    async def _serve(self, task_status: trio.TaskStatus[Server]) -> None:
        config = self.config
        fd_limit = raise_open_file_limit()
        removed = await trio.to_thread.run_sync(lambda: self.storage.clean_partials(at_start=True))
        listeners = await trio.open_tcp_listeners(config.port, host=config.host, backlog=config.backlog)
        self.ports = [listener.socket.getsockname()[1] for listener in listeners]
        self.port = self.ports[0]
        started = functools.partial(self._log_serving, fd_limit=fd_limit, removed=removed)
        slots = trio.Semaphore(config.max_connections)
        async with trio.open_nursery() as watching:
            watching.start_soon(self._watch_sessions)
            await self._serve_until_shutdown(listeners, slots, task_status, started)
            watching.cancel_scope.cancel()

    def _log_serving(self, *, fd_limit: int, removed: int) -> None:
        config = self.config
        log.info(
            "serving %s on %s:%d (%s; %s%s; legacy clients %s; open-file limit %d; "
            "%d stale partial uploads removed)",
            self.storage.describe(), config.host, self.port,
            "TLS" if self.ssl_context is not None else "no TLS",
            "read-only; " if config.read_only else "",
            "no login" if self.users is None else
            f"{len(self.users.users)} users, anonymous {'on' if self.users.anonymous else 'off'}",
            "accepted" if self._legacy_refusal() is None else f"refused: {self._legacy_refusal()}",
            fd_limit, removed,
        )  # fmt: skip

    async def _serve_until_shutdown(
        self,
        listeners: list[trio.SocketListener],
        slots: trio.Semaphore,
        task_status: trio.TaskStatus[Server],
        started: Callable[[], None],
    ) -> None:
        config = self.config
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept_loop, listener, connections, slots)
                accepting.start_soon(self._clean_partials_periodically)
                if config.metrics:
                    host, port = parse_address(config.metrics)
                    self.metrics_port = await accepting.start(serve_metrics, self.metrics, host, port)
                started()  # only now: a metrics port in use would otherwise fail after "serving"
                # What importing and starting left freed in the heap goes back before the
                # first connection (~0.8 MiB of a fresh server's RSS, bench W5).
                give_memory_back()
                task_status.started(self)
                await self._shutdown.wait()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            log.info(
                "shutting down: %d connection%s draining for up to %g s",
                len(self._sessions),
                "" if len(self._sessions) == 1 else "s",
                config.drain_timeout,
            )
            for session in list(self._sessions):
                connections.start_soon(session.drain)
            # Each v2 session ends its streams at drain_timeout with ERROR SHUTTING_DOWN;
            # this deadline, a moment later, cuts whatever is left.
            connections.cancel_scope.deadline = trio.current_time() + config.drain_timeout + CLOSE_GRACE

    async def _watch_sessions(self) -> None:
        """The one watchdog of every v2 connection: idle timeout and minimum transfer rate."""
        interval = watch_interval(self.config)
        trimmed_at = 0  # bytes moved by transfers when the heap was last trimmed
        while True:
            await trio.sleep(interval)
            self._check_timers(trio.current_time())
            # After a burst, glibc would keep the freed buffers: give them back once idle.
            moved = self.metrics.received + self.metrics.sent
            if not self.metrics.running and moved != trimmed_at:
                trimmed_at = moved
                self.storage.shed()  # the store's spare buffers first, so the trim frees them too
                give_memory_back()

    def _check_timers(self, now: float) -> None:
        # A function of its own: a loop variable left in the watchdog's frame would keep the
        # last session (its streams and queued requests) alive after it ends, pinning the
        # allocator arenas a burst spread them over.
        for session in list(self._sessions):
            if isinstance(session, V2Session):
                session.check_timers(now)

    def _count_opened(self, session: V2Session | LegacySession, peer: str) -> float:
        """Count a connection that got a session, with a log line; returns when it opened.

        Not a context manager: a suspended generator per idle connection costs ~500 B.
        """
        dialect = "v2" if isinstance(session, V2Session) else "legacy"
        self.metrics.connection_accepted(dialect)
        if log.isEnabledFor(logging.INFO):  # no dict per connection for a line nobody keeps
            log.info("%s connection opened (%s)", peer, dialect,
                     extra={"event": "connection_opened", "peer": peer, "dialect": dialect})  # fmt: skip
        return time.monotonic()

    def _count_closed(self, session: V2Session | LegacySession, peer: str, opened: float) -> None:
        """The log line of a connection's end (see _count_opened)."""
        if not log.isEnabledFor(logging.INFO):
            return
        dialect = "v2" if isinstance(session, V2Session) else "legacy"
        moved = session.channel if isinstance(session, V2Session) else session
        duration = time.monotonic() - opened
        log.info(
            "%s connection closed after %.3f s (%d bytes in, %d bytes out)",
            peer, duration, moved.bytes_received, moved.bytes_sent,
            extra={
                "event": "connection_closed", "peer": peer, "dialect": dialect,
                "duration": round(duration, 6), "bytes_received": moved.bytes_received,
                "bytes_sent": moved.bytes_sent,
            },
        )  # fmt: skip

    async def _accept_loop(
        self, listener: trio.SocketListener, connections: trio.Nursery, slots: trio.Semaphore
    ) -> None:
        while True:
            await slots.acquire()
            try:
                stream, peer, ip = await self._accept_within_limit(listener)
            except BaseException:
                slots.release()
                raise
            connections.start_soon(self._handle_connection, stream, peer, ip, slots)

    async def _accept_within_limit(self, listener: trio.SocketListener) -> tuple[trio.SocketStream, str, str]:
        """The next connection whose address is under its limit, counted; the others are refused here.

        Counting here rather than in the connection's task keeps a burst of
        accepts from all passing the check before any task has run.
        """
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept() failed (%s); retrying in 100 ms", errno.errorcode[exc.errno])
                    await trio.sleep(0.1)
                    continue
                raise
            peer = peer_of(stream)
            ip = peer.rpartition(":")[0]
            if self._per_ip[ip] >= self.config.max_connections_per_ip:
                self._refuse_at_accept(stream, peer)
                continue
            self._per_ip[ip] += 1
            return stream, peer, ip

    def _refuse_at_accept(self, stream: trio.SocketStream, peer: str) -> None:
        """Close a connection over its address's limit at once, telling a v2 client why if that costs no wait.

        Nothing here awaits: a refused connection holds no slot, task or
        timer, so however fast one address reconnects, the accept loop keeps
        reaching other addresses' connections in the backlog.
        """
        self.connections_refused += 1
        self.metrics.connection_refused("per_ip_limit")
        self._log_refusal(peer)
        fd = stream.socket.fileno()
        # Under TLS the client expects a handshake: bytes in clear would be garbage to it.
        if self.ssl_context is None:
            try:
                # Whatever already arrived, read without waiting: a legacy client gets
                # a plain close (as any legacy refusal), and an empty receive queue
                # lets the close send FIN rather than a reset that could discard the
                # refusal before the client reads it.
                head = os.read(fd, 4096)
            except OSError:  # BlockingIOError: nothing yet; a v2 client is then told anyway
                head = b""
            if sniff(head) in (None, Dialect.V2):
                with contextlib.suppress(OSError):  # a full or reset socket: the close says enough
                    if os.write(fd, _V2_REFUSAL) == len(_V2_REFUSAL):
                        self.metrics.error_sent(ErrorCode.CONNECTION_LIMIT)
        with contextlib.suppress(OSError):
            stream.socket.close()

    def _log_refusal(self, peer: str) -> None:
        now = time.monotonic()
        if now < self._next_refusal_log:
            self._refusals_unlogged += 1
            return
        unlogged, self._refusals_unlogged = self._refusals_unlogged, 0
        self._next_refusal_log = now + REFUSAL_LOG_INTERVAL
        log.warning(
            "%s refused: over %d connections from one address%s",
            peer,
            self.config.max_connections_per_ip,
            f" ({unlogged} more refusals since the last line)" if unlogged else "",
        )

    async def _clean_partials_periodically(self) -> None:
        while True:
            await trio.sleep(CLEANUP_INTERVAL)
            removed = await trio.to_thread.run_sync(self.storage.clean_partials)
            if removed:
                log.info("removed %d expired partial uploads", removed)

    async def _handle_connection(
        self, stream: trio.SocketStream, peer: str, ip: str, slots: trio.Semaphore
    ) -> None:
        """Serve one connection, already counted against its address by the accept loop."""
        served: trio.abc.Stream = stream
        try:
            # Sessions run here, not in a helper: a coroutine frame per connection is ~300 B.
            served, session = await self._open_session(stream, peer, ip)
            if session is not None:
                self._sessions.add(session)
                opened = self._count_opened(session, peer)
                try:
                    await session.run()
                finally:
                    self._sessions.discard(session)
                    self._count_closed(session, peer, opened)
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
            if served is not stream:
                await close_stream(served)
            await close_stream(stream)
            slots.release()

    async def _open_session(
        self, stream: trio.SocketStream, peer: str, ip: str
    ) -> tuple[trio.abc.Stream, V2Session | LegacySession | None]:
        """TLS (if on), sniff the dialect: the stream to serve, and its session (None: refused or gone)."""
        head = b""
        handshake_deadline = trio.current_time() + self.config.handshake_timeout
        served: trio.abc.Stream = stream
        with trio.move_on_at(handshake_deadline):
            try:
                if self.ssl_context is not None:
                    # A peer that stalls its TLS handshake costs no CPU: it waits
                    # here until the handshake deadline, then is dropped.
                    served = trio.SSLStream(stream, self.ssl_context, server_side=True)
                    await served.do_handshake()
                head = bytes(await served.receive_some(FIRST_READ))
            except trio.BrokenResourceError as exc:
                if self.ssl_context is not None:
                    log.info("%s TLS handshake failed: %s", peer, exc.__cause__ or exc)
                return stream, None  # as before: only the socket is closed
        try:
            session = self._session_for(served, head, peer, ip, deadline=handshake_deadline)
        except BaseException:
            if served is not stream:
                await close_stream(served)
            raise
        return served, session

    def _session_for(
        self, stream: trio.abc.Stream, head: bytes, peer: str, ip: str, *, deadline: float
    ) -> V2Session | LegacySession | None:
        """The session for the dialect `head` shows, or None if the connection is refused.

        It returns rather than runs the session: one coroutine frame less per idle connection.
        """
        handshake_deadline = deadline
        if not head:
            log.info("%s closed or stayed silent before saying anything", peer)
            return None
        dialect = sniff(head)
        if dialect is Dialect.V2:
            session: V2Session | LegacySession = V2Session(
                self.shared, stream, head, peer, handshake_deadline=handshake_deadline, address=ip
            )
        elif dialect is Dialect.LEGACY and self._legacy_refusal() is None:
            assert isinstance(stream, trio.SocketStream)
            from trioftp.server.legacy_session import LegacySession

            session = LegacySession(self.shared, stream, head, peer)
        elif dialect is Dialect.LEGACY:
            self.metrics.connection_refused("legacy_off")
            log.warning("%s legacy client refused: %s", peer, self._legacy_refusal())
            return None
        else:
            self.metrics.connection_refused("garbage")
            log.warning("%s closed: first bytes %r are neither v2 nor legacy", peer, head[:16])
            return None
        if self._shutdown.is_set():
            self.metrics.connection_refused("shutdown")
            return None
        return session


def _server_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if not config.tls_cert and not config.tls_key:
        return None
    if not (config.tls_cert and config.tls_key):
        raise ValueError("TLS needs both tls_cert and tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `config.root` until cancelled. `task_status.started(server)` once listening.

    Args:
        config: every setting (root, address, limits, timeouts, users, TLS).
        task_status: for `nursery.start`, which then returns the bound `Server`.

    Raises:
        OSError: the address cannot be bound, or a users or TLS file cannot be read.
        ValueError: the users file or the TLS settings are unusable.

    Example:
        trio.run(trioftp.serve, trioftp.ServerConfig(root=Path("/srv/files"), host="0.0.0.0"))
    """
    await Server(config).serve(task_status=task_status)


def _read_only(user: User) -> User:
    return attrs.evolve(user, rights=user.rights & READ_ONLY_RIGHTS)
