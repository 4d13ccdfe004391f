"""A real server over real sockets, fed random sequences of valid and hostile frames (hypothesis).

The server runs in a thread of its own, in its own `trio.run`; the state
machine drives plain blocking sockets, one `Peer` per connection, and keeps a
model of the files it stored. What must hold whatever the sequence:

* every byte the server sends decodes; a stream error names its stream, and a
  connection error (a code below 32, on stream 0) is followed by the close of
  that connection only;
* a request with a bad name gets BAD_NAME and the connection goes on; a name
  under `.trioftp` gets PERMISSION_DENIED;
* the files on disk are exactly those the model stored: nothing half-written,
  cut or mismatched ever shows;
* after each run: no open connection, no task, no fd and no private `.tmp`
  file left over, `.part` files only for uploads that were cut (kept for resume), no
  error logged by the server, and a fresh client can still put and get.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.v2_helpers import HOST, MiB, connect, raw_request
from trioftp.config import ServerConfig
from trioftp.protocol import (
    PREFACE,
    Data,
    Done,
    End,
    Error,
    ErrorCode,
    FileInfo,
    FrameType,
    Hello,
    Listing,
    Message,
    Ready,
    Window,
)
from trioftp.protocol.codec import decode_message, encode_message
from trioftp.protocol.frames import FrameDecoder, encode_frame, encode_header
from trioftp.server import Server

ANSWER_TIMEOUT = 5.0  # a blocking read that waits this long means the server hangs: a failure
SERVER_WINDOW = 32 * 1024  # small, so uploads reach the disk (and get WINDOWs) in 16 KiB blocks
SERVER_FRAME = 16 * 1024  # the smallest allowed, so oversize frames are cheap
SERVER_STREAMS = 3

FILE_NAMES = ["a.txt", "b.txt", "sub/c.txt", "sub/d/e.bin", "ü n i.txt"]
FOLDER_NAMES = ["sub", "sub/d", "new"]
GOOD_NAMES = FILE_NAMES + FOLDER_NAMES
RESERVED_NAMES = [".trioftp", ".trioftp/partial", ".trioftp/partial/x.part"]
BAD_NAMES = ["../x", "/abs", "a/../../x", "a\x00b", "a\\b", "a//b", "a/", ".", "x/./y", "a\nb", "x" * 300]


# ------------------------------------------------------------------ the server


class ServerThread:
    """A Server in a thread's own trio.run, so synchronous code (hypothesis) can use it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server: Server | None = None
        self.crashed: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trioftp-test-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        assert self.crashed is None, self.crashed
        self.idle_tasks = self.call(count_tasks)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            assert self.server is not None
            self.call(self.server.shutdown)
            self._thread.join(10)
        assert not self._thread.is_alive(), "the server did not stop"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.crashed is None

    def wait_idle(self, *, fds: int | None = None) -> None:
        """Wait until no connection and no task is left (and `fds` fds are open); fail after 5 s."""
        assert self.server is not None
        server = self.server
        deadline = time.monotonic() + 5
        while True:
            connections, tasks = self.call(lambda: (server.connection_count, count_tasks()))
            now_open = len(open_fds())
            if connections == 0 and tasks == self.idle_tasks and fds in (None, now_open):
                return
            assert time.monotonic() < deadline, (
                f"left over: {connections} connections, {tasks - self.idle_tasks} tasks, "
                f"{now_open - (fds or now_open)} fds"
            )
            time.sleep(0.005)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function(*args)` in the server's Trio thread and return its result."""
        return trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # kept for the test to report
            self.crashed = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.server = await nursery.start(Server(self.config).serve)
            self._ready.set()


def count_tasks() -> int:
    """Every task of the calling Trio run (call it in the run's thread)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return count(trio.lowlevel.current_root_task())


def open_fds() -> list[str]:
    """What this process has open, by fd (the server runs in it too)."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd listdir() itself used
            fds.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    return sorted(fds)


class ErrorLog(logging.Handler):
    """Collects what the server logs at ERROR: each one is a bug (a crash of a task or connection)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.messages.append(f"{record.name}: {record.getMessage()}\n{trace}")


@contextlib.contextmanager
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("trioftp")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -------------------------------------------------------------------- the peer


class Closed(Exception):
    """The server closed the connection."""


class Peer:
    """One raw v2 connection over a blocking socket: sends what it is told, decodes every answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=ANSWER_TIMEOUT)
        self._decoder = FrameDecoder(16 * MiB)
        self._head = b""
        self.next_id = 1
        self.highest = 0  # the highest stream id used
        self.credit: dict[int, int] = {}  # open uploads: how much DATA the server allows now
        self.late: list[Message] = []  # answers read while waiting for another stream's
        self.sock.sendall(PREFACE + encode_message(
            Hello(max_frame_size=MiB, max_streams=128, initial_window=8 * MiB, digests=("blake3",))
        ))  # fmt: skip
        hello = self.receive()
        assert isinstance(hello, Hello), hello
        self.server_hello = hello

    def new_id(self) -> int:
        self.highest = self.next_id
        self.next_id += 2  # gaps are allowed
        return self.highest

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)  # if the server closed first, what it said is still to be read

    def close(self, *, reset: bool = False) -> None:
        if reset:  # RST instead of FIN, as a crashed peer does
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def receive(self) -> Message:
        """The next message; raises Closed once the server has closed the connection."""
        while True:
            if len(self._head) < len(PREFACE):
                data = self._read()
                self._head += data
                if len(self._head) >= len(PREFACE):
                    assert self._head[: len(PREFACE)] == PREFACE, self._head
                    self._decoder.feed(self._head[len(PREFACE) :])
                continue
            frame = self._decoder.next_frame()
            if frame is not None:
                message = decode_message(frame)  # the server never sends what does not decode
                if isinstance(message, Window):
                    self.credit[message.stream_id] = self.credit.get(message.stream_id, 0) + message.increment
                return message
            self._decoder.feed(self._read())

    def _read(self) -> bytes:
        try:
            data = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            data = b""
        if not data:
            assert self._decoder.buffered == 0, "the server closed in the middle of a frame"
            raise Closed
        return data

    def answer(self, stream_id: int, final: tuple[type[Any], ...]) -> list[Message]:
        """Messages on `stream_id` up to its final one (an ERROR, or one of `final`)."""
        got: list[Message] = []
        while True:
            message = self.receive()
            if message.stream_id == 0:
                raise AssertionError(f"connection ended while waiting for stream {stream_id}: {message}")
            if message.stream_id != stream_id:
                self.late.append(message)
                continue
            got.append(message)
            if isinstance(message, Error):
                assert not message.code.ends_connection, message
                return got
            if isinstance(message, final) and not (isinstance(message, Listing) and not message.last):
                return got

    def expect_connection_error(self, *codes: ErrorCode) -> None:
        """Read until the server closes; its last word must be a connection ERROR on stream 0."""
        last: Message | None = None
        while True:
            try:
                message = self.receive()
            except Closed:
                break
            if message.stream_id == 0:
                last = message
            else:
                assert last is None, f"{message} after the connection error {last}"
        assert isinstance(last, Error) and last.code in codes, last

    def drain_until_closed(self) -> None:
        """After we stopped sending: read until the server closes, whatever it says."""
        with contextlib.suppress(Closed):
            while True:
                message = self.receive()
                if message.stream_id == 0:
                    assert isinstance(message, Error) and message.code.ends_connection, message


# --------------------------------------------------------------------- machine


@dataclass
class Upload:
    name: str
    data: bytes
    resume: bool
    sent: int = 0  # bytes the server has (Ready's offset), then the DATA sent


def content(name: str, size: int, version: int) -> bytes:
    return random.Random(f"{name}/{size}/{version}").randbytes(size)


class ServerMachine(RuleBasedStateMachine):
    def __init__(self, served: ServerThread, root: Path, errors: ErrorLog) -> None:
        super().__init__()
        self.served = served
        self.root = root
        self.partial_dir = root / ".trioftp" / "partial"
        self.errors = errors
        self.peers: list[Peer] = []  # the connections in use
        self.opened: list[Peer] = []  # every connection made, closed at the end whatever happened
        self.uploads: dict[tuple[Peer, int], Upload] = {}  # (peer, stream id) -> open upload
        self.files: dict[str, bytes] = {}  # the model: what the server stored
        self.cut = 0  # uploads cut or cancelled: each may keep its .part for a later resume

    # ------------------------------------------------------------ plumbing

    def peer(self, index: int) -> Peer:
        return self.peers[index % len(self.peers)]

    def drop(self, peer: Peer) -> None:
        """Forget a connection: its open uploads are cut."""
        for key in [k for k in self.uploads if k[0] is peer]:
            del self.uploads[key]
            self.cut += 1
        self.peers.remove(peer)

    def open_streams(self, peer: Peer) -> int:
        return sum(1 for k in self.uploads if k[0] is peer)

    def handle_late(self, peer: Peer) -> None:
        """Answers that came on other streams: only an open upload's ERROR may come unasked."""
        for message in peer.late:
            key = (peer, message.stream_id)
            if isinstance(message, Error) and key in self.uploads:
                self.uploads.pop(key)
                peer.credit.pop(message.stream_id, None)
        peer.late.clear()

    def request(
        self, peer: Peer, frame_type: FrameType, final: tuple[type[Any], ...], **fields: Any
    ) -> list[Message]:
        stream_id = peer.new_id()
        peer.send(raw_request(frame_type, stream_id, **fields))
        answers = peer.answer(stream_id, final)
        self.handle_late(peer)
        return answers

    def check_request_answer(self, peer: Peer, answers: list[Message], names: list[str]) -> Error | None:
        """The common part of every answer; returns the stream ERROR, if that was the answer."""
        last = answers[-1]
        if not isinstance(last, Error):
            return None
        if any(n in BAD_NAMES for n in names):
            assert last.code in (ErrorCode.BAD_NAME, ErrorCode.LIMIT_REACHED), last
        elif any(n.split("/")[0] == ".trioftp" for n in names):
            assert last.code in (ErrorCode.PERMISSION_DENIED, ErrorCode.LIMIT_REACHED), last
        if last.code is ErrorCode.LIMIT_REACHED:
            assert self.open_streams(peer) >= SERVER_STREAMS, last
        return last

    def store(self, name: str, data: bytes) -> None:
        self.files[name] = data
        assert (self.root / name).read_bytes() == data

    # ---------------------------------------------------------------- rules

    @initialize()
    def start(self) -> None:
        for item in self.root.iterdir():  # each run starts from an empty root
            if item.is_dir() and item.name != ".trioftp":
                shutil.rmtree(item)
            elif item.name != ".trioftp":
                item.unlink()
        for item in self.partial_dir.iterdir():
            item.unlink()
        self.served.wait_idle()  # the last run's connections may still be closing
        self.fds = open_fds()
        self.errors.messages.clear()
        self.connect()

    @precondition(lambda self: len(self.peers) < 4)
    @rule()
    def connect(self) -> None:
        self.opened.append(Peer(self.served.port))
        self.peers.append(self.opened[-1])

    @precondition(lambda self: self.peers)
    @rule(
        index=st.integers(0, 3),
        operation=st.sampled_from(["GET", "STAT", "LIST", "DELETE", "MKDIR", "RENAME"]),
        names=st.lists(
            st.sampled_from(GOOD_NAMES + RESERVED_NAMES + BAD_NAMES + [""]), min_size=2, max_size=2
        ),
        replace=st.booleans(),
    )
    def request_a_name(self, index: int, operation: str, names: list[str], replace: bool) -> None:
        peer = self.peer(index)
        name, new = names
        if name == "" and operation != "LIST":
            name = "a.txt"  # "" is a bad name elsewhere; keep the cases apart
        if operation == "GET":
            answers = self.request(peer, FrameType.GET, (End,), name=name, offset=0, length=None)
        elif operation == "STAT":
            answers = self.request(peer, FrameType.STAT, (FileInfo,), name=name)
        elif operation == "LIST":
            answers = self.request(peer, FrameType.LIST, (Listing,), folder=name)
        elif operation == "RENAME":
            new = new or "b.txt"
            answers = self.request(peer, FrameType.RENAME, (Done,), old=name, new=new, replace=replace)
        else:
            answers = self.request(peer, FrameType[operation], (Done,), name=name)
        names = [name, new] if operation == "RENAME" else [name]
        error = self.check_request_answer(peer, answers, names)
        if operation == "GET":
            if error is None:
                info, *body, end = answers
                assert isinstance(info, FileInfo) and isinstance(end, End)
                data = b"".join(m.payload for m in body if isinstance(m, Data))
                assert name in self.files, f"{name!r} is on the server but was never stored"
                assert data == self.files[name] and end.digest == blake3.blake3(data).digest()
            elif name in self.files:
                assert error.code is ErrorCode.LIMIT_REACHED, error
        elif operation == "STAT" and name in self.files:
            (info,) = answers
            assert (isinstance(info, FileInfo) and info.size == len(self.files[name])) or (
                isinstance(info, Error) and info.code is ErrorCode.LIMIT_REACHED
            ), info
        elif error is None and operation == "DELETE":
            assert not any(k.startswith(name + "/") for k in self.files), "deleted a folder not empty"
            self.files.pop(name, None)
        elif error is None and operation == "MKDIR":
            assert name not in self.files, "MKDIR over a file"
        elif error is None and operation == "RENAME" and name != new:
            moved = {k: v for k, v in self.files.items() if k == name or k.startswith(name + "/")}
            for k in [k for k in self.files if k == new or k.startswith(new + "/")]:
                del self.files[k]  # replaced
            for k in moved:
                del self.files[k]
            self.files.update({new + k[len(name) :]: v for k, v in moved.items()})

    @precondition(lambda self: self.peers)
    @rule(
        index=st.integers(0, 3),
        name=st.sampled_from(FILE_NAMES + FILE_NAMES + ["sub", ".trioftp/x", "../x", "a\\b"]),
        size=st.one_of(st.integers(0, 300), st.integers(0, 3 * SERVER_WINDOW)),
        version=st.integers(0, 1),
        resume=st.booleans(),
        with_digest=st.booleans(),
        then=st.sampled_from(["stay open", "send half", "end", "end with a bad digest", "cancel"]),
    )
    def put(
        self, index: int, name: str, size: int, version: int, resume: bool, with_digest: bool, then: str
    ) -> None:
        peer = self.peer(index)
        data = content(name, size, version)
        digest = blake3.blake3(data).digest() if with_digest else None
        stream_id = peer.new_id()
        peer.send(raw_request(
            FrameType.PUT, stream_id, name=name, size=size, digest=digest, resume=resume, mtime_ns=None
        ))  # fmt: skip
        answers = peer.answer(stream_id, (Ready, FileInfo))
        self.handle_late(peer)
        error = self.check_request_answer(peer, answers, [name])
        if error is not None:
            assert error.code is not ErrorCode.INTERNAL, error
            return
        (answer,) = answers
        if isinstance(answer, FileInfo):  # the very same bytes are already there
            assert digest is not None and self.files.get(name) == data
            return
        assert isinstance(answer, Ready) and answer.offset <= size
        upload = Upload(name, data, resume, sent=answer.offset)
        self.uploads[(peer, stream_id)] = upload
        peer.credit[stream_id] = peer.server_hello.initial_window
        if then == "send half":
            while upload.sent < size // 2 and (peer, stream_id) in self.uploads:
                self.send_data(peer, stream_id, upload, size // 2 - upload.sent)
        elif then.startswith("end"):
            self.end_upload(peer, stream_id, upload, good_digest=then == "end", finish=True)
        elif then == "cancel":
            self.cancel_upload(peer, stream_id, upload)

    def pick_upload(self, which: int) -> tuple[Peer, int, Upload]:
        peer, stream_id = sorted(self.uploads, key=lambda k: (self.peers.index(k[0]), k[1]))[
            which % len(self.uploads)
        ]
        return peer, stream_id, self.uploads[(peer, stream_id)]

    def send_data(self, peer: Peer, stream_id: int, upload: Upload, count: int) -> None:
        """DATA within the credit the server gave; wait for its WINDOW when there is none."""
        count = min(count, len(upload.data) - upload.sent, SERVER_FRAME)
        while count and not peer.credit.get(stream_id) and (peer, stream_id) in self.uploads:
            # The server grants more once it has written what it got: it must, or the upload hangs.
            message = peer.receive()
            assert message.stream_id != 0, message
            if not isinstance(message, Window):
                peer.late.append(message)
                self.handle_late(peer)
        if not count or (peer, stream_id) not in self.uploads:
            return  # nothing left to send, or it failed meanwhile
        count = min(count, peer.credit[stream_id])
        peer.send(encode_frame(FrameType.DATA, stream_id, upload.data[upload.sent : upload.sent + count]))
        upload.sent += count
        peer.credit[stream_id] -= count

    @precondition(lambda self: self.uploads)
    @rule(which=st.integers(0, 7), count=st.integers(1, 20_000))
    def put_data(self, which: int, count: int) -> None:
        self.send_data(*self.pick_upload(which), count)

    @precondition(lambda self: self.uploads)
    @rule(which=st.integers(0, 7), good_digest=st.booleans(), finish=st.booleans())
    def put_end(self, which: int, good_digest: bool, finish: bool) -> None:
        self.end_upload(*self.pick_upload(which), good_digest=good_digest, finish=finish)

    def end_upload(
        self, peer: Peer, stream_id: int, upload: Upload, *, good_digest: bool, finish: bool
    ) -> None:
        """END, after the rest of the bytes if `finish`: stored, or refused with the right code."""
        while finish and upload.sent < len(upload.data) and (peer, stream_id) in self.uploads:
            self.send_data(peer, stream_id, upload, SERVER_FRAME)
        if (peer, stream_id) not in self.uploads:
            return
        del self.uploads[(peer, stream_id)]
        digest = blake3.blake3(upload.data).digest() if good_digest else b"\x00" * 32
        peer.send(encode_message(End(size=len(upload.data), digest=digest, stream_id=stream_id)))
        answers = peer.answer(stream_id, (FileInfo,))
        self.handle_late(peer)
        peer.credit.pop(stream_id, None)
        last = answers[-1]
        if upload.sent < len(upload.data):
            assert isinstance(last, Error) and last.code is ErrorCode.BAD_REQUEST, last
        elif not good_digest:
            assert isinstance(last, Error) and last.code is ErrorCode.CHECKSUM_MISMATCH, last
        elif isinstance(last, Error) and last.code is ErrorCode.WRONG_KIND:
            # A MKDIR (or a rename) made the name a folder while the bytes were on their way.
            assert (self.root / upload.name).is_dir(), last
        elif isinstance(last, Error):
            # Resumed onto another version's partial of the same name and size: a mismatch, nothing stored.
            assert last.code is ErrorCode.CHECKSUM_MISMATCH and upload.resume, last
        else:
            assert isinstance(last, FileInfo) and last.size == len(upload.data)
            self.store(upload.name, upload.data)

    @precondition(lambda self: self.uploads)
    @rule(which=st.integers(0, 7))
    def put_more_than_announced(self, which: int) -> None:
        peer, stream_id, upload = self.pick_upload(which)
        extra = len(upload.data) - upload.sent + 1
        if peer.credit.get(stream_id, 0) < extra or extra > SERVER_FRAME:
            return
        peer.send(encode_frame(FrameType.DATA, stream_id, b"x" * extra))
        del self.uploads[(peer, stream_id)]
        answers = peer.answer(stream_id, ())
        self.handle_late(peer)
        peer.credit.pop(stream_id, None)
        assert isinstance(answers[-1], Error) and answers[-1].code is ErrorCode.BAD_REQUEST, answers

    @precondition(lambda self: self.uploads)
    @rule(which=st.integers(0, 7))
    def put_cancel(self, which: int) -> None:
        self.cancel_upload(*self.pick_upload(which))

    def cancel_upload(self, peer: Peer, stream_id: int, upload: Upload) -> None:
        peer.send(raw_request(FrameType.CANCEL, stream_id, message="changed my mind"))
        del self.uploads[(peer, stream_id)]
        peer.credit.pop(stream_id, None)
        self.cut += 1

    @precondition(lambda self: self.peers)
    @rule(
        index=st.integers(0, 3),
        at=st.sampled_from(["upload", "closed", "unknown", "zero"]),
        increment=st.sampled_from([1, 65536, 2**31 - 1, 2**31, 2**40]),
    )
    def window(self, index: int, at: str, increment: int) -> None:
        peer = self.peer(index)
        open_ids = [k[1] for k in self.uploads if k[0] is peer]
        closed_ids = [s for s in range(1, peer.highest + 1) if s not in open_ids and s not in peer.credit]
        if at == "upload" and open_ids:
            stream_id = open_ids[0]  # WINDOW is the receiver's: the server's, on an upload
        elif at == "closed" and closed_ids:
            stream_id = closed_ids[-1]
        elif at == "zero":
            stream_id = 0
        else:
            stream_id = peer.next_id + 100
        peer.send(raw_request(FrameType.WINDOW, stream_id, increment=increment))
        if stream_id in closed_ids and 1 <= increment < 2**31:
            self.still_serves(peer)  # silently ignored, as the spec says
        else:
            peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR, ErrorCode.FLOW_CONTROL_ERROR)
            peer.close()
            self.drop(peer)

    def still_serves(self, peer: Peer) -> None:
        answers = self.request(peer, FrameType.STAT, (FileInfo,), name="no-such-name")
        assert isinstance(answers[-1], Error) and answers[-1].code in (
            ErrorCode.NOT_FOUND, ErrorCode.LIMIT_REACHED
        ), answers  # fmt: skip

    @precondition(lambda self: self.peers)
    @rule(
        index=st.integers(0, 3),
        kind=st.sampled_from(["never opened", "used id", "oversize", "garbage", "cut mid-frame", "vanish"]),
        data=st.data(),
    )
    def hostile(self, index: int, kind: str, data: st.DataObject) -> None:
        """Something that ends the connection: an answer and a close, or just a close."""
        peer = self.peer(index)
        self.drop(peer)
        if kind == "never opened":  # a frame other than a request on a stream never opened
            frame = data.draw(st.sampled_from([
                encode_frame(FrameType.DATA, peer.next_id + 10, b"abc"),
                encode_message(End(size=3, digest=b"\x01" * 32, stream_id=peer.next_id + 10)),
                raw_request(FrameType.CANCEL, peer.next_id + 10, message=""),
            ]))  # fmt: skip
            peer.send(frame)
            peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)
        elif kind == "used id":
            if peer.next_id == 1:
                peer.send(raw_request(FrameType.STAT, peer.new_id(), name="a.txt"))
                peer.answer(1, (FileInfo,))
            peer.send(raw_request(FrameType.STAT, 1, name="a.txt"))
            peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)
        elif kind == "oversize":  # the header alone: the server must not wait for the body
            over = data.draw(st.sampled_from([1, 1000, 2**32 - 1 - SERVER_FRAME]))
            peer.send(encode_header(FrameType.DATA, peer.next_id, SERVER_FRAME + over))
            peer.expect_connection_error(ErrorCode.FRAME_TOO_LARGE)
        elif kind == "garbage":
            peer.send(data.draw(st.binary(min_size=1, max_size=64)))
            if data.draw(st.booleans()):
                peer.sock.shutdown(socket.SHUT_WR)  # whatever the bytes meant, the server must end it
                peer.drain_until_closed()
        elif kind == "cut mid-frame":
            frame = raw_request(FrameType.STAT, peer.new_id(), name="sub/c.txt")
            peer.send(frame[: data.draw(st.integers(1, len(frame) - 1))])
        peer.close(reset=data.draw(st.booleans()))

    @invariant()
    def server_runs(self) -> None:
        assert self.served.alive, self.served.crashed

    # ------------------------------------------------------------ teardown

    def teardown(self) -> None:
        for peer in list(self.peers):
            self.drop(peer)
        for peer in self.opened:
            peer.close()
        server = self.served.server
        assert server is not None
        self.served.wait_idle(fds=len(self.fds))
        assert self.served.alive, self.served.crashed
        assert self.served.call(lambda: set(server.storage._active_partials)) == set(), "upload keys leaked"
        fds = open_fds()
        assert len(fds) == len(self.fds), ("fds leaked", sorted(set(fds) - set(self.fds)))
        left = sorted(p.name for p in self.partial_dir.iterdir())
        assert not [n for n in left if n.endswith(".tmp")], left
        assert len(left) <= self.cut, (left, self.cut)
        on_disk = {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in self.root.rglob("*") if p.is_file() and p.relative_to(self.root).parts[0] != ".trioftp"
        }  # fmt: skip
        assert on_disk == self.files, "the files on disk are not those the server said it stored"
        assert self.errors.messages == [], self.errors.messages
        trio.run(put_and_get, self.served.port)
        self.errors.messages.clear()


async def put_and_get(port: int) -> None:
    with trio.fail_after(ANSWER_TIMEOUT):
        async with connect(port) as conn:
            await conn.put("probe/fresh.bin", b"still serving")
            assert await conn.get("probe/fresh.bin") == b"still serving"
            await conn.delete("probe/fresh.bin")
            await conn.delete("probe")


def test_random_frame_sequences_never_hurt_the_server(server_root: Path) -> None:
    config = ServerConfig(
        root=server_root, host=HOST, port=0, initial_window=SERVER_WINDOW, max_frame_size=SERVER_FRAME,
        max_streams=SERVER_STREAMS, drain_timeout=1,
    )  # fmt: skip
    with error_log() as errors, ServerThread(config) as served:
        run_state_machine_as_test(
            lambda: ServerMachine(served, server_root, errors),
            settings=settings(
                max_examples=30, stateful_step_count=20, deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )  # fmt: skip
    assert served.crashed is None
