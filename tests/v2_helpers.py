"""Helpers for the v2 end-to-end tests: files, a hand-driven raw peer, proxies that cut or corrupt."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import blake3
import msgpack
import trio

from trioftp.client import open_connection
from trioftp.protocol import PREFACE, FrameType, Hello, Message
from trioftp.protocol.codec import decode_message, encode_message
from trioftp.protocol.frames import HEADER, HEADER_SIZE, FrameDecoder, encode_frame
from trioftp.server import Server

HOST = "127.0.0.1"
MiB = 1024 * 1024


def connect(server: Server | int, **kwargs: Any) -> Any:
    """`async with connect(server) as conn:` a real client connection to a test server."""
    port = server if isinstance(server, int) else server.port
    return open_connection(HOST, port, **kwargs)


def blake3_hex(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def write_random(path: Path, size: int, *, seed: int = 0) -> bytes:
    """Write `size` pseudo-random bytes to `path` 1 MiB at a time; return their BLAKE3 digest."""
    rng = random.Random(seed)
    hasher = blake3.blake3()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(MiB, left))
            hasher.update(block)
            f.write(block)
            left -= len(block)
    return hasher.digest()


def file_digest(path: Path) -> bytes:
    hasher = blake3.blake3()
    with path.open("rb") as f:
        while block := f.read(MiB):
            hasher.update(block)
    return hasher.digest()


def names(folder: Path) -> set[str]:
    """The names directly in `folder`."""
    return {p.name for p in folder.iterdir()}


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative, as strings."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------ raw peer


def raw_request(frame_type: FrameType, stream_id: int, **fields: Any) -> bytes:
    """A request frame built by hand, so it can carry what the message classes refuse (bad names)."""
    return encode_frame(frame_type, stream_id, msgpack.packb(fields, use_bin_type=True))


class RawPeer:
    """A v2 client driven frame by frame over a plain Trio socket.

    It keeps no protocol state: the tests use it to send what the real client
    never would and to read the server's exact answer.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(16 * MiB)
        self._buffer = bytearray()
        self._preface_seen = False
        self.closed = False

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, server: Server | int, *, handshake: bool = True, **hello: Any
    ) -> AsyncIterator[RawPeer]:
        port = server if isinstance(server, int) else server.port
        stream = await trio.open_tcp_stream(HOST, port)
        peer = cls(stream)
        try:
            if handshake:
                await peer.handshake(**hello)
            yield peer
        finally:
            await stream.aclose()

    async def handshake(self, **overrides: Any) -> Hello:
        fields: dict[str, Any] = {
            "max_frame_size": MiB, "max_streams": 128, "initial_window": 8 * MiB,
            "digests": ("blake3",), "agent": "raw-test-peer",
        }  # fmt: skip
        fields.update(overrides)
        await self.send_raw(PREFACE + encode_message(Hello(**fields)))
        answer = await self.receive()
        assert isinstance(answer, Hello), answer
        return answer

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, *messages: Message) -> None:
        await self.send_raw(b"".join(encode_message(m) for m in messages))

    async def receive(self) -> Message | None:
        """The next message from the server, or None once it has closed the connection."""
        while True:
            if not self._preface_seen and len(self._buffer) >= len(PREFACE):
                assert bytes(self._buffer[: len(PREFACE)]) == PREFACE, bytes(self._buffer[:16])
                self._decoder.feed(self._buffer[len(PREFACE) :])
                self._buffer.clear()
                self._preface_seen = True
            if self._preface_seen:
                frame = self._decoder.next_frame()
                if frame is not None:
                    return decode_message(frame)
            try:
                data = await self.stream.receive_some(256 * 1024)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.closed = True
                return None
            if self._preface_seen:
                self._decoder.feed(data)
            else:
                self._buffer += data

    async def receive_until_closed(self) -> list[Message]:
        """Everything the server still sends, until it closes the connection."""
        messages = []
        while (message := await self.receive()) is not None:
            messages.append(message)
        return messages


# ------------------------------------------------------------------- proxies


class DataFlipper:
    """One direction of a v2 byte stream, with one byte flipped in the first DATA of each stream."""

    def __init__(self) -> None:
        self._skip = len(PREFACE)
        self._header = bytearray()
        self._remaining = 0
        self._flip_at: int | None = None
        self.flipped: set[int] = set()

    def __call__(self, data: bytes) -> bytes:
        out = bytearray(data)
        i = 0
        while i < len(out):
            if self._skip:
                n = min(self._skip, len(out) - i)
                self._skip -= n
                i += n
            elif self._remaining:
                n = min(self._remaining, len(out) - i)
                if self._flip_at is not None:
                    if self._flip_at < n:
                        out[i + self._flip_at] ^= 0x01
                        self._flip_at = None
                    else:
                        self._flip_at -= n
                self._remaining -= n
                i += n
            else:
                take = out[i : i + HEADER_SIZE - len(self._header)]
                self._header += take
                i += len(take)
                if len(self._header) == HEADER_SIZE:
                    length, frame_type, _flags, stream_id = HEADER.unpack(self._header)
                    self._header.clear()
                    self._remaining = length
                    if frame_type == FrameType.DATA and length and stream_id not in self.flipped:
                        self.flipped.add(stream_id)
                        self._flip_at = length // 2
        return bytes(out)


def identity(data: bytes) -> bytes:
    return data


class Proxy:
    """A TCP proxy between a test client and the server that can rewrite or cut the bytes.

    Args:
        to_server / to_client: factories of per-connection rewriters (bytes -> bytes).
        cut_after: close both sides once this many client-to-server bytes went through.
        cut_to_client_after: the same, counting server-to-client bytes.
    """

    def __init__(
        self,
        server_port: int,
        *,
        to_server: Callable[[], Callable[[bytes], bytes]] = lambda: identity,
        to_client: Callable[[], Callable[[bytes], bytes]] = lambda: identity,
        cut_after: int | None = None,
        cut_to_client_after: int | None = None,
    ) -> None:
        self.server_port = server_port
        self.to_server = to_server
        self.to_client = to_client
        self.cut_after = cut_after
        self.cut_to_client_after = cut_to_client_after
        self.port = 0
        self.cuts = 0

    async def run(self, *, task_status: trio.TaskStatus[Proxy] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(HOST, self.server_port)
        async with client, server, trio.open_nursery() as nursery:

            async def pump(
                source: trio.SocketStream, sink: trio.SocketStream, rewrite: Any, limit: int | None
            ) -> None:
                moved = 0
                try:
                    while data := await source.receive_some(64 * 1024):
                        if limit is not None and moved + len(data) >= limit:
                            await sink.send_all(rewrite(data[: limit - moved]))
                            self.cuts += 1
                            break
                        moved += len(data)
                        await sink.send_all(rewrite(data))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, server, self.to_server(), self.cut_after)
            nursery.start_soon(pump, server, client, self.to_client(), self.cut_to_client_after)


async def start_proxy(nursery: trio.Nursery, server: Server, **kwargs: Any) -> Proxy:
    proxy: Proxy = await nursery.start(Proxy(server.port, **kwargs).run)
    return proxy


def partials(root: Path) -> list[Path]:
    """The server's kept partial uploads."""
    folder = root / ".trioftp" / "partial"
    return sorted(folder.iterdir()) if folder.exists() else []


async def wait_until(predicate: Callable[[], bool], *, interval: float = 0.01) -> None:
    """Poll a condition that no event announces (a file appearing, a counter moving)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(interval)


def transfer_lines(caplog: Any, operation: str, name: str) -> list[str]:
    """The server's one-line transfer records for `operation` on `name`."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "trioftp.transfer" and f" {operation} {name!r} " in r.getMessage()
    ]  # fmt: skip


@contextlib.contextmanager
def writer_after(path: Path, seconds: float) -> Iterator[None]:
    """Open the FIFO for writing after `seconds`, unless the block ended by then.

    An open() that waits for a FIFO's writer on the event loop blocks where no
    deadline can fire: this ends such a wait, so a regression fails, late.
    """
    rescue = threading.Timer(seconds, lambda: os.close(os.open(path, os.O_WRONLY)))
    rescue.start()
    try:
        yield
    finally:
        rescue.cancel()
        rescue.join()  # else it may still be alive when the session's leak check looks
