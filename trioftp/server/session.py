"""One v2 connection on the server: handshake, the reader, one task per stream, timeouts.

Resource handling: the reader runs in the session's own task, under a cancel
scope (the watchdog's and shutdown's handle). At the first request it opens the
session's nursery and starts one task per request in it, so when the connection
ends every stream task ends with it; an idle connection that never asked for
anything holds no nursery. GETs are the exception: up to READ_HANDLES runner
tasks take them in turn, and a GET's task is done once its answer is in the
channel's output buffer; while that buffer is full, one runner waits for room
and the other GETs wait as their request bytes alone (QueuedGets). A peer that
reads nothing so holds one or two tasks, not one per request.

Error handling: a stream error (bad name, not found, ...) is answered on its
stream and the connection goes on; a connection error is answered with ERROR on
stream 0 and the connection is closed. Nothing raised here reaches the server's
accept loop: the caller logs and closes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Final

import trio

from trioftp.disk.digests import SUPPORTED
from trioftp.protocol import (
    NEED_DATA,
    PEER_CLOSED,
    Connection,
    ErrorCode,
    RemoteProtocolError,
    Role,
    Settings,
)
from trioftp.protocol.connection import Event
from trioftp.protocol.messages import (
    FEATURE_ANONYMOUS,
    FEATURE_AUTH,
    FEATURE_V2_1,
    REQUEST_TYPES,
    Auth,
    Authorized,
    Cancel,
    Data,
    End,
    Error,
    Get,
    Goodbye,
    Hello,
    Message,
    Window,
)
from trioftp.server.auth import NOBODY, Failure, User, Users
from trioftp.server.budget import BudgetTimeout, ByteBudget
from trioftp.server.operations import (
    READ_HANDLES,
    SMALL_FILE_LIMIT,
    never_started,
    run_request,
    why_cancelled,
)
from trioftp.server.queued import QueuedGets
from trioftp.server.rate import RateFloor
from trioftp.server.shared import Shared
from trioftp.transport.channel import Channel
from trioftp.transport.inbox import StreamInbox
from trioftp.transport.streams import ChannelClosed

if TYPE_CHECKING:
    from trioftp.config import ServerConfig

# Seconds a connection closed with an ERROR keeps reading (and dropping) what the
# peer still sends, so the peer reads the ERROR instead of a reset.
CLOSE_LINGER = 1.0
# Frames that do no work (WINDOW, CANCEL, END or ERROR for a stream already
# closed, empty DATA) cost the server as much as useful ones. A few are normal
# (one sent before the peer saw the stream end), a flood is not (RFC 9113
# section 10.5): a connection starts with NO_OP_ALLOWANCE of them, each request
# earns NO_OP_PER_REQUEST more (up to NO_OP_MOST), and a connection that sends
# more is closed with PROTOCOL_ERROR.
NO_OP_ALLOWANCE = 256
NO_OP_PER_REQUEST = 2
NO_OP_MOST = 1024

log = logging.getLogger("trioftp.server")
# What every idle connection would otherwise hold a copy of (W6: memory per idle connection).
_NO_QUEUED_GETS: Final = QueuedGets()  # never written to: replaced by a queue of its own at the first one


@functools.cache
def _settings(
    max_frame_size: int, max_streams: int, initial_window: int, features: tuple[str, ...], agent: str
) -> Settings:
    """The server's settings, one frozen object for every connection with the same ones."""
    return Settings(
        max_frame_size=max_frame_size, max_streams=max_streams, initial_window=initial_window,
        digests=SUPPORTED, features=features, agent=agent,
    )  # fmt: skip


@functools.cache
def _server_hello(settings: Settings, digest: str) -> Hello:
    """The HELLO answered with `settings` and the digest chosen (frozen: shared by connections)."""
    return settings.hello(digests=(digest,))


class CloseConnection(Exception):
    """End this connection, telling the peer `code` (if it can still hear it)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class V2Session:
    def __init__(
        self,
        shared: Shared,
        stream: trio.abc.Stream,
        initial: bytes,
        peer: str,
        *,
        handshake_deadline: float | None = None,
        address: str | None = None,
    ) -> None:
        config = shared.config
        self.shared = shared
        self.storage = shared.storage
        self.peer = peer
        # Who shares the server's budgets with this connection: the peer without its port
        # (the server passes the string it already made, one object less per connection).
        self.address = peer.rpartition(":")[0] if address is None else address
        # Who the client is: with no users file, everyone may do everything (read_only: read);
        # with one, the anonymous user (if enabled) until AUTH proves otherwise.
        users = shared.users
        self.user: User = shared.open_user if users is None else (users.anonymous or NOBODY)
        self._must_log_in = users is not None and users.anonymous is None
        if self.user.home:
            self.storage = shared.storage.scoped(self.user.home)
        features: tuple[str, ...] = (FEATURE_V2_1,)
        if users is not None:
            features += (FEATURE_AUTH, FEATURE_ANONYMOUS) if users.anonymous else (FEATURE_AUTH,)
        settings = _settings(
            config.max_frame_size, config.max_streams, config.initial_window, features, shared.agent
        )
        self.channel = Channel(stream, Connection(Role.SERVER, settings))
        self.channel.machine.receive_data(initial)
        self.channel.bytes_received += len(initial)  # read by the sniffer, counted as the legacy dialect does
        self._inboxes: dict[int, StreamInbox] = {}
        self._draining = False
        self._last_activity = trio.current_time()
        self._ending: tuple[ErrorCode, str] | None = None
        self._lost: str | None = None
        self.server_busy = 0  # streams waiting on our own work (disk, memory), not on the peer
        # This connection's part of upload_memory, made at first use.
        self.upload_share: ByteBudget | None = None
        # GETs run in at most READ_HANDLES runner tasks (each holds its file open); those
        # waiting for a runner are kept here as their frame bytes (no task, inbox or record).
        self._gets_running = 0  # runner tasks
        self._waiting_for_room = False  # a runner waits for room in the output buffer or send_memory
        self._send_ticket = 0  # send_memory that runner got, for the next small GET (see _run_gets)
        self._queued_gets = _NO_QUEUED_GETS  # a queue of its own at the first one
        self._no_op_allowance = NO_OP_ALLOWANCE
        self._ignored_seen = 0  # the machine's count of unknown frames, as last charged
        self._payload_delivered = 0  # DATA payload bytes handed to streams as messages
        self._scope: trio.CancelScope | None = None  # set while the reader runs (the watchdog looks then)
        self._nursery: trio.Nursery | None = None  # the stream tasks', opened at the first request
        # The min-rate window being measured (None: not measuring: no streams, or our own work).
        self._rate: RateFloor | None = None
        # Counted from the connect, not from the first byte the sniffer saw.
        if handshake_deadline is None:
            handshake_deadline = trio.current_time() + config.handshake_timeout
        self._handshake_deadline = handshake_deadline

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # However it ended: what was never written gives back what it held.
            self.channel.abandon_output()
            self._give_back_send_ticket()

    async def _run(self) -> None:
        try:
            with trio.fail_at(self._handshake_deadline):
                await self._handshake()
        except trio.TooSlowError:
            self._ending = (ErrorCode.TIMEOUT, "no HELLO within the handshake timeout")
        except Exception as exc:
            self._note_ending(exc)
        else:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    pending = await self._read_loop(await self._after_hello())
                except Exception as exc:
                    self._note_ending(exc)
                    pending = None
                if pending is not None:  # a request: from now on, with stream tasks
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        try:
                            await self._read_loop(pending)
                        except Exception as exc:
                            self._note_ending(exc)
                        nursery.cancel_scope.cancel()
                    self._drop_queued_gets()
            self._scope = self._nursery = None
        if self._ending is not None:
            await self._close_with(*self._ending)

    @property
    def ending(self) -> tuple[ErrorCode, str] | None:
        """Why the connection is ending (code and message), once that is decided."""
        return self._ending

    @property
    def open_streams(self) -> int:
        """Streams whose tasks are running."""
        return len(self._inboxes)

    @property
    def queued_gets(self) -> int:
        """GETs waiting for one of the connection's runners, with no task yet."""
        return len(self._queued_gets)

    @property
    def get_runners(self) -> int:
        """Tasks running (or waiting to run) this connection's GETs: READ_HANDLES at most."""
        return self._gets_running

    @property
    def lost(self) -> str | None:
        """How the connection went away under us without an ERROR of ours (the peer left), if it did."""
        return self._lost

    def _note_ending(self, exc: Exception) -> None:
        """Record why the connection ends; anything unexpected propagates to be logged."""
        if isinstance(exc, CloseConnection):
            self._ending = (exc.code, str(exc))
        elif isinstance(exc, RemoteProtocolError):
            self._ending = (exc.error_code, str(exc))
        elif isinstance(exc, ChannelClosed):
            self._lost = str(exc)
            if exc.broken:
                log.info("%s connection lost: %s", self.peer, exc)
        else:
            raise exc

    async def _close_with(self, code: ErrorCode, message: str) -> None:
        log.warning("%s closing connection: %s: %s", self.peer, code.name, message)
        self.shared.metrics.error_sent(code)
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            with contextlib.suppress(Exception):  # the peer may be gone: the close is what matters
                await self.channel.send(Error(code=code, message=message[:1000]))
        # Not shielded: a shutdown's deadline may cut it.
        await self.channel.linger(CLOSE_LINGER)

    # -------------------------------------------------------------- handshake

    async def _handshake(self) -> None:
        while True:
            for event in await self.channel.receive_events():
                if event is PEER_CLOSED:
                    raise ChannelClosed("closed during the handshake", broken=True)
                if isinstance(event, Hello):
                    await self._answer_hello(event)
                    return
                if isinstance(event, Error):
                    raise ChannelClosed(f"peer failed the handshake: {event.code.name}", broken=True)

    async def _answer_hello(self, hello: Hello) -> None:
        common = [name for name in hello.digests if name in SUPPORTED]
        if not common:
            raise CloseConnection(
                ErrorCode.PROTOCOL_ERROR,
                f"no common digest: client offers {list(hello.digests)}, server has {list(SUPPORTED)}",
            )
        # Buffered, not written: if a request was pipelined behind the client's HELLO
        # (spec 7), our HELLO leaves in the same write as its answer (see _after_hello).
        self.channel.queue(_server_hello(self.channel.machine.settings, common[0]))

    async def _after_hello(self) -> list[Event]:
        """What the client pipelined behind its HELLO; our HELLO is written now unless that
        holds a request with no AUTH before it, whose answer (or refusal) will carry it.

        Behind an AUTH it goes at once: the check takes a while (scrypt, and a delay
        after a failure), and the client need not wait that long for our HELLO.
        """
        pending = self.channel.buffered_events()
        if not pending or not isinstance(pending[0], REQUEST_TYPES):
            await self.channel.flush()
        return pending

    # ----------------------------------------------------------------- reader

    async def _read_loop(self, pending: list[Event]) -> list[Event] | None:
        """Handle `pending`, then read and handle events until the connection ends (None).

        With no nursery open yet, it returns instead at the first request that
        needs a task: that event and those after it, for the caller to open the
        nursery and call again.
        """
        machine = self.channel.machine
        while True:
            for index, event in enumerate(pending):
                if event is PEER_CLOSED:
                    self._lost = "the peer closed the connection"
                    return None
                assert event is not NEED_DATA
                if isinstance(event, Auth):
                    # Answered before any later frame is looked at: requests
                    # pipelined behind AUTH run as the user it proves.
                    await self._authenticate(event)
                    continue
                if self._nursery is None and isinstance(event, REQUEST_TYPES) and not self._must_log_in:
                    return pending[index:]
                self._dispatch(event)
            # Let go of the handled events before waiting: a peer that sent max_streams GETs
            # and waits would otherwise keep them all alive as messages (the queue holds bytes).
            pending.clear()
            event = NEED_DATA
            if (machine.goodbye_received or self._draining) and not self._inboxes and not self._queued_gets:
                return None
            try:
                pending = await self.channel.receive_events()
            except RemoteProtocolError as exc:
                if exc.ends_connection:
                    raise
                pending = []
                await self._refuse(exc.stream_id, exc.error_code, str(exc))
                continue
            self._count_ignored_frames()
            self._last_activity = trio.current_time()

    def _dispatch(self, message: Message) -> None:
        stream_id = message.stream_id
        if isinstance(message, REQUEST_TYPES):
            if self._must_log_in:
                raise CloseConnection(ErrorCode.AUTH_FAILED, "this server needs a user and password (AUTH)")
            nursery = self._nursery
            assert nursery is not None
            if self._draining:
                nursery.start_soon(self._refuse, stream_id, ErrorCode.REFUSED, "the server is shutting down")
                return
            self._no_op_allowance = min(NO_OP_MOST, self._no_op_allowance + NO_OP_PER_REQUEST)
            if isinstance(message, Get):
                if self._gets_running < READ_HANDLES and not self._waiting_for_room:
                    self._gets_running += 1
                    nursery.start_soon(self._run_gets, message)
                else:
                    self._queue_get(message)  # a runner takes it when it is done with its own
                return
            self._start(message)
            return
        if isinstance(message, Error):  # on stream 0: the client gives up on us
            raise ChannelClosed(f"client sent {message.code.name}: {message.message}", broken=True)
        if isinstance(message, Goodbye | Hello):
            return
        inbox = self._inboxes.get(stream_id)
        if inbox is None and stream_id in self._queued_gets:
            self._to_queued_get(message)
            return
        if inbox is None:  # the stream's task already finished; a late frame
            if not isinstance(message, Data) or not message.payload:  # payload is the peer's own cost
                self._count_no_op(message)
            return
        if isinstance(message, Data):
            if not message.payload:
                self._count_no_op(message)
            self._payload_delivered += len(message.payload)
            inbox.deliver(message)
        elif isinstance(message, End):
            inbox.deliver(message)
        elif isinstance(message, Cancel):
            inbox.cancel()
            inbox.deliver(message)
        elif isinstance(message, Window):
            inbox.notify()

    def _start(self, request: Message) -> None:
        """Give a request (not a GET) its inbox and task."""
        assert self._nursery is not None
        new_inbox = self._inboxes[request.stream_id] = StreamInbox(request.stream_id)
        self._nursery.start_soon(self._run_one, request, new_inbox)

    def _queue_get(self, request: Get, *, front: bool = False) -> None:
        if self._queued_gets is _NO_QUEUED_GETS:
            self._queued_gets = QueuedGets()
        self._queued_gets.push(request, front=front)

    def _add_runners(self) -> None:
        """Room again in the output: runners for the queued GETs, up to READ_HANDLES."""
        nursery = self._nursery
        if nursery is None or nursery.cancel_scope.cancel_called:
            return
        for _ in range(min(READ_HANDLES - self._gets_running, len(self._queued_gets))):
            self._gets_running += 1
            nursery.start_soon(self._run_gets, None)

    def _to_queued_get(self, message: Message) -> None:
        """A frame for a GET not started yet: CANCEL drops it; the rest, as a running GET would."""
        if isinstance(message, Cancel):
            request = self._queued_gets.remove(message.stream_id)
            assert request is not None
            never_started(self, request, "cancelled", "cancelled by the client")
        elif isinstance(message, Data):  # a GET reads no DATA: dropped, as its inbox would keep it unread
            if not message.payload:
                self._count_no_op(message)
            self._payload_delivered += len(message.payload)
        # END, WINDOW: nothing for the GET to do before it starts (the machine keeps the credit)

    def _drop_queued_gets(self) -> None:
        """The connection ended: the GETs never started end as a started one would have."""
        queued, self._queued_gets = self._queued_gets, _NO_QUEUED_GETS
        for request in queued.take_all():
            never_started(self, request, *why_cancelled(self))

    def _count_ignored_frames(self) -> None:
        """Frames of unknown types (GREASE among them) do no work either: they share the allowance."""
        ignored = self.channel.machine.ignored_frames
        new, self._ignored_seen = ignored - self._ignored_seen, ignored
        self._no_op_allowance -= new
        if self._no_op_allowance < 0:
            raise CloseConnection(
                ErrorCode.PROTOCOL_ERROR, "too many frames that do nothing (of unknown types)"
            )

    def _count_no_op(self, message: Message) -> None:
        self._no_op_allowance -= 1
        if self._no_op_allowance < 0:
            raise CloseConnection(
                ErrorCode.PROTOCOL_ERROR,
                f"too many frames that do nothing (the last: {type(message).__name__.upper()} "
                f"on stream {message.stream_id})",
            )

    async def _authenticate(self, auth: Auth) -> None:
        """Check AUTH; on success answer AUTHORIZED, else wait out a delay and close.

        Failures and lockouts are per address (FailureTracker). A locked-out
        address gets the same answer after the same wait whatever it sends, its
        password unchecked: telling it the password was right would undo the lockout.
        """
        users = self.shared.users
        if users is None:
            raise CloseConnection(ErrorCode.AUTH_FAILED, "no users on this server: connect without AUTH")
        tracker = self.shared.auth_failures
        address = self.peer.rpartition(":")[0]
        async with tracker.one_check_at_a_time(address):
            user, delay = await self._check_login(users, auth, address)
        if user is None:
            await trio.sleep(delay)  # outside the address's turn: the next check need not wait for it
            # The same answer for an unknown user, a wrong password and a locked-out address.
            raise CloseConnection(ErrorCode.AUTH_FAILED, "wrong user or password")
        self.user = user
        self.storage = self.shared.storage.scoped(user.home)
        self._must_log_in = False
        log.info("%s logged in as %r (home %r)", self.peer, user.name, user.home or "/")
        rights = tuple(sorted(right.value for right in user.rights))
        await self.channel.send(Authorized(user=user.name, rights=rights, admin=user.admin))

    async def _check_login(self, users: Users, auth: Auth, address: str) -> tuple[User | None, float]:
        """The user, or None and how long to wait before saying no; counts the outcome."""
        tracker = self.shared.auth_failures
        now = trio.current_time()
        locked_until = tracker.locked_until(address, now)
        if locked_until is not None:
            log.warning(
                "%s login refused for user %r, password not checked: %s is locked out until %s "
                "(%.0f s more); answering in %g s",
                self.peer, auth.user, address, _wall_clock(locked_until), locked_until - now,
                tracker.max_delay,
            )  # fmt: skip
            return None, tracker.max_delay
        user = await trio.to_thread.run_sync(users.authenticate, auth.user, auth.password)
        if user is None:
            failure = tracker.record_failure(address, auth.user, trio.current_time())
            self._log_failure(auth.user, address, failure)
            return None, failure.delay
        tracker.record_success(address, user.name)
        return user, 0.0

    def _log_failure(self, user: str, address: str, failure: Failure) -> None:
        if failure.locked_until is None:
            log.warning(
                "%s login failed for user %r (failure %d of %d before a lockout); answering in %g s",
                self.peer, user, failure.count, self.shared.auth_failures.lockout_after, failure.delay,
            )  # fmt: skip
        else:
            log.warning(
                "%s login failed for user %r: %d failures, %s is locked out for %g s, until %s; "
                "answering in %g s",
                self.peer, user, failure.count, address, self.shared.auth_failures.lockout,
                _wall_clock(failure.locked_until), failure.delay,
            )  # fmt: skip

    async def _refuse(self, stream_id: int, code: ErrorCode, message: str) -> None:
        log.info("%s stream %d refused: %s: %s", self.peer, stream_id, code.name, message)
        self.shared.metrics.error_sent(code)
        with contextlib.suppress(ChannelClosed):
            await self.channel.send_if_open(Error(code=code, message=message[:1000], stream_id=stream_id))

    async def _run_gets(self, request: Get | None) -> None:
        """One GET runner: `request` (if any), then the oldest queued GET, until none is left.

        A GET is done once its answer is in the output buffer, so a runner is free
        again while the peer has yet to read it. While the buffer is full, or
        send_memory has no room for a small file's answer, one runner waits (with
        no GET started, no file open) and the others end, their GETs queued: a peer
        that reads nothing holds that runner and the one writing, no more.
        """
        budget = self.shared.send_budget
        try:
            while True:
                room = self.channel.has_room
                if not room or not (
                    self._send_ticket or budget.would_grant(SMALL_FILE_LIMIT, group=self.address)
                ):
                    if request is not None:
                        self._queue_get(request, front=True)
                        request = None
                    if self._waiting_for_room:
                        return
                    self._waiting_for_room = True
                    try:
                        if room and not await self._wait_for_send_memory(budget):
                            self._memory_out_of_patience()
                        elif not room:
                            await self.channel.wait_for_room()
                    finally:
                        self._waiting_for_room = False
                    self._add_runners()
                    continue
                if request is None:
                    request = self._queued_gets.pop()
                    if request is None:
                        self._give_back_send_ticket()
                        return
                inbox = self._inboxes[request.stream_id] = StreamInbox(request.stream_id)
                if not await self._run_one(request, inbox):
                    return
                request = None
        except ChannelClosed:
            return  # the connection is over: the session ends the queued GETs
        finally:
            self._gets_running -= 1

    async def _wait_for_send_memory(self, budget: ByteBudget) -> bool:
        """Wait for room in send_memory for a small file's answer; False if out of patience.

        The server's slowness, not the peer's: the rate check skips it, as a GET's own wait.
        """
        self.server_busy += 1
        try:
            # Kept, not given back: a runner that gave it back would lose it to the next in
            # line each time, and no GET would run (the waiting runners passing it round).
            self._send_ticket = await budget.acquire(
                SMALL_FILE_LIMIT, group=self.address, patience=self.shared.config.min_rate_window
            )
        except BudgetTimeout:
            return False
        finally:
            self.server_busy -= 1
        return True

    def _memory_out_of_patience(self) -> None:
        """The oldest queued GET waited min_rate_window for send_memory: BUSY, as a GET's own
        wait would end (the others wait on, in a fresh turn)."""
        request = self._queued_gets.pop()
        if request is not None and self._nursery is not None:
            patience = self.shared.config.min_rate_window
            message = f"the server has no memory free to send (waited {patience:g} s); try again later"
            never_started(self, request, ErrorCode.BUSY.name, f"{ErrorCode.BUSY.name}: {message}")
            self._nursery.start_soon(self._refuse, request.stream_id, ErrorCode.BUSY, message)

    def take_send_ticket(self) -> int:
        """send_memory reserved for the next small GET (0 if none), now the caller's to release."""
        ticket, self._send_ticket = self._send_ticket, 0
        return ticket

    def _give_back_send_ticket(self) -> None:
        if self._send_ticket:
            self.shared.send_budget.release(self.take_send_ticket(), group=self.address)

    async def _run_one(self, request: Message, inbox: StreamInbox) -> bool:
        """Run one request in this task; True if the connection goes on."""
        try:
            await run_request(self, request, inbox)
        except ChannelClosed:
            pass
        except Exception:
            log.exception("%s stream %d failed", self.peer, request.stream_id)
            await self._refuse(request.stream_id, ErrorCode.INTERNAL, "internal error")
        finally:
            del self._inboxes[request.stream_id]
            nursery = self._nursery
            assert nursery is not None
            if self.channel.broken:
                # A frame was cut short (the file shrank under sendfile, say): the
                # peer would wait forever for its end, so the connection is over.
                self._lost = self._lost or "the connection broke while sending"
                nursery.cancel_scope.cancel()
            if (
                not self._inboxes
                and not self._queued_gets
                and (self._draining or self.channel.machine.goodbye_received)
            ):
                # After a GOODBYE no stream can start: the last one done ends the
                # connection, instead of leaving it open until the drain deadline.
                nursery.cancel_scope.cancel()
        return not nursery.cancel_scope.cancel_called

    # ------------------------------------------------------- drain and timers

    async def drain(self) -> None:
        """Shutdown: accept no new streams, let those in flight finish within drain_timeout."""
        deadline = trio.current_time() + self.shared.config.drain_timeout
        self._draining = True
        try:
            await self.channel.send(Goodbye(message="server shutting down"))
        except (ChannelClosed, Exception):
            return
        if not self._inboxes and not self._queued_gets:
            await self.channel.aclose()
        elif self._nursery is not None:
            # In the session's nursery, so it ends with the session, not at the deadline.
            self._nursery.start_soon(self._stop_at, deadline)

    async def _stop_at(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
        self._end(ErrorCode.SHUTTING_DOWN, "the server is stopping and will not wait for streams in flight")

    def check_timers(self, now: float) -> None:
        """Drop the connection when it idles too long or a transfer trickles.

        Called by the server's one watchdog task for every session, every
        `watch_interval(config)` seconds. The rate is measured over windows of
        at least `min_rate_window` seconds, each starting where the last ended
        (or where streams were last busy with our own work or absent).
        """
        if self._scope is None:
            return  # handshaking (its own deadline) or ending
        config = self.shared.config
        streams = len(self._inboxes) + len(self._queued_gets)  # a queued GET waits on the others
        if streams and self.server_busy >= streams:
            # Every stream waits for hashing, writing, fsync, memory: our slowness, not the
            # peer's. Measure afresh after. While any stream waits for the peer, it is measured.
            self._rate = None
            self._last_activity = now
            return
        if not self._inboxes and not self._queued_gets and not self.channel.unwritten:
            self._rate = None
            if now - self._last_activity > config.idle_timeout:
                self._end(ErrorCode.TIMEOUT, f"idle for {config.idle_timeout:g} s")
            return
        self._last_activity = now
        # What the peer took (written to its socket) and the payload it sent: frames
        # that do no work (a CANCEL for a closed stream, say) keep nothing alive.
        channel = self.channel
        moved = channel.payload_received + self._payload_delivered + channel.bytes_sent
        if self._rate is None:
            self._rate = RateFloor(config.min_rate, config.min_rate_window, now, moved)
            return
        slow = self._rate.too_slow(now, moved)
        if slow is not None:
            self._end(ErrorCode.TIMEOUT, f"transfer {slow}")

    def _end(self, code: ErrorCode, message: str) -> None:
        self._ending = (code, message)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        else:
            assert self._scope is not None
            self._scope.cancel()


def _wall_clock(at: float) -> str:
    """A trio.current_time() instant as UTC wall-clock time, for log lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + at - trio.current_time()))


def watch_interval(config: ServerConfig) -> float:
    """How often the server's watchdog checks every session's idle and min-rate timers."""
    return min(1.0, config.idle_timeout / 4, config.min_rate_window / 4)
