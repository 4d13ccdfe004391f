"""Socket helpers both protocols use: closing, naming the peer, sending a file range.

The v2 channel and both legacy sides (server and client) send file bytes
with `send_file_range`: os.sendfile on a plain socket, read-and-send under TLS.
Transport failures come out as ChannelClosed, a file that ended early as
FileChanged, whichever protocol runs on top.
"""

from __future__ import annotations

import contextlib
import os

import trio

SENDFILE_CHUNK = 1024 * 1024  # larger calls stall the loop on a cold page cache
TLS_FILE_CHUNK = 256 * 1024  # file bytes read per send when they must be encrypted


class ChannelClosed(Exception):
    """The connection can no longer be used.

    `broken` says which "closed": True when the peer or the network broke it,
    False when this side closed it.
    """

    def __init__(self, message: str, *, broken: bool) -> None:
        super().__init__(message)
        self.broken = broken


class FileChanged(Exception):
    """The file ended before the bytes we announced were sent.

    Attributes:
        missing: how many announced bytes could not be read from the file.
    """

    def __init__(self, message: str, *, missing: int = 0) -> None:
        super().__init__(message)
        self.missing = missing


def socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The TCP socket under a stream (through TLS), or None."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def peer_of(stream: trio.abc.Stream) -> str:
    """ "host:port" of the peer, for logs."""
    sock = socket_of(stream)
    try:
        host, port, *_ = sock.getpeername() if sock is not None else ("?", 0)
    except OSError:
        return "?:0"
    return f"{host}:{port}"


async def close_stream(stream: trio.abc.Stream, grace: float = 1.0) -> None:
    """Close a stream; a TLS close that the peer stalls is cut after `grace` seconds."""
    if isinstance(stream, trio.SocketStream):
        with contextlib.suppress(OSError):
            stream.socket.close()  # never blocks, and a cancelled caller cannot interrupt it
        return
    with trio.CancelScope(shield=True):
        with trio.move_on_after(grace):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.aclose()
            return
        await trio.aclose_forcefully(stream)


async def send_file_range(stream: trio.abc.Stream, fd: int, offset: int, count: int) -> None:
    """Send `count` bytes of `fd` from `offset` to the stream: by os.sendfile on a plain socket.

    Driven the way trio drives its own socket calls: check for cancellation,
    try, wait for writability on EAGAIN, and yield after each success without
    letting a completed send turn into Cancelled.

    Raises:
        FileChanged: the file ended early.
        ChannelClosed: the connection broke or was closed.
    """
    if not isinstance(stream, trio.SocketStream):
        await _send_file_through(stream, fd, offset, count)
        return
    sock = stream.socket
    out_fd = sock.fileno()
    await trio.lowlevel.checkpoint_if_cancelled()
    while count:
        try:
            sent = os.sendfile(out_fd, fd, offset, min(count, SENDFILE_CHUNK))
        except BlockingIOError:
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                raise ChannelClosed("connection closed", broken=False) from None
            continue
        except OSError as exc:
            raise ChannelClosed(f"connection lost while sending: {exc}", broken=True) from None
        if sent == 0:
            raise FileChanged("file ended before the announced size", missing=count)
        offset += sent
        count -= sent
        await trio.lowlevel.cancel_shielded_checkpoint()


async def _send_file_through(stream: trio.abc.Stream, fd: int, offset: int, count: int) -> None:
    # TLS must see the bytes: read them into one buffer, reused for the whole range.
    buffer = bytearray(min(count, TLS_FILE_CHUNK))
    view = memoryview(buffer)
    while count:
        n = os.preadv(fd, [view[: min(count, len(buffer))]], offset)
        if n == 0:
            raise FileChanged("file ended before the announced size", missing=count)
        try:
            await stream.send_all(view[:n])
        except trio.BrokenResourceError as exc:
            raise ChannelClosed(f"connection lost while sending: {exc}", broken=True) from None
        except trio.ClosedResourceError:
            raise ChannelClosed("connection closed", broken=False) from None
        offset += n
        count -= n
