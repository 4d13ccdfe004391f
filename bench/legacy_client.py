"""A minimal client for trioftp's legacy text protocol (benchmark use only).

    get: -> `get|name|0`   <- `YES|size` or `NO|0`   -> `second_active`   <- size raw bytes
    put: -> `put|name|size` <- `OK`                  -> size raw bytes    (no answer after)

The protocol has no terminators; like the old clients, a reply is read with one
recv() (a few more if it is visibly cut short).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable


class LegacyError(Exception):
    pass


def _reply(sock: socket.socket) -> bytes:
    data = sock.recv(1024)
    # YES| with no digits yet, or a reply cut mid-word: read on.
    while data in (b"Y", b"YE", b"YES", b"YES|", b"N", b"NO", b"NO|", b"O"):
        more = sock.recv(1024)
        if not more:
            break
        data += more
    return data


def get(sock: socket.socket, name: str, buf: bytearray, sink: Callable[[memoryview], None]) -> int:
    """Download `name`, handing each received chunk to `sink`; return the size."""
    sock.sendall(f"get|{name}|0".encode())
    reply = _reply(sock)
    if reply.startswith(b"NO|"):
        raise FileNotFoundError(name)
    if not reply.startswith(b"YES|") or not reply[4:].isdigit():
        raise LegacyError(f"unexpected reply to get: {reply[:40]!r}")
    size = int(reply[4:])
    sock.sendall(b"second_active")
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(buf, min(len(buf), size - got))
        if not n:
            raise LegacyError(f"connection closed after {got} of {size} bytes")
        sink(view[:n])
        got += n
    return size


def put_file(sock: socket.socket, fd: int, size: int, name: str) -> None:
    """Upload `size` bytes of an open file by os.sendfile. The server does not answer."""
    sock.sendall(f"put|{name}|{size}".encode())
    reply = b""
    while len(reply) < 2:
        chunk = sock.recv(2 - len(reply))
        if not chunk:
            raise LegacyError("connection closed before OK")
        reply += chunk
    if reply != b"OK":
        raise LegacyError(f"unexpected reply to put: {reply!r}")
    offset = 0
    out = sock.fileno()
    while offset < size:
        sent = os.sendfile(out, fd, offset, size - offset)
        if sent == 0:
            raise LegacyError("local file shrank")
        offset += sent
