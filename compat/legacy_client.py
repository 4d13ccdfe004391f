#!/usr/bin/env python3
"""A legacy text-protocol client, in the blocking-socket style of the old clients.

Standard library only: copy this file to a machine that has nothing else.
Where trioftp is installed, `trioftp.legacy` (implemented in
trioftp/client/legacy_servers.py) is the legacy client to use: Trio, with
timeouts and resumable downloads. trioftp never imports this file; the tests
and bench/worker.py (the benchmark's `legacy` system) do.

    python compat/legacy_client.py put HOST PORT PATH [NAME]
    python compat/legacy_client.py get HOST PORT NAME [OUTPUT]
    python compat/legacy_client.py replay HOST PORT TRANSCRIPT...

As a module:

    import legacy_client
    legacy_client.put("127.0.0.1", 8885, "notes.txt", b"hello")
    data = legacy_client.get("127.0.0.1", 8885, "notes.txt")
    with legacy_client.connect("127.0.0.1", 8885) as sock:   # several commands, one connection
        legacy_client.put_on(sock, "a.txt", b"one")
        assert legacy_client.get_on(sock, "a.txt") == b"one"

Large files without holding them in memory (as bench/worker.py drives it):
`put_file_on` sends an open file by os.sendfile, `get_into` hands the bytes to
a callback as they arrive, through one reused buffer.

The protocol (see protocol_spec.md, "Legacy"): the client sends `cmd|name|size`
in one write and waits. put: the server answers `OK`, the client sends exactly
size bytes, nothing is answered after them. get: the server answers `YES|size`
or `NO|0`; after YES the client sends `second_active` and the server sends
exactly size bytes. There is no error reply: a server that refuses closes.

`replay` plays recorded transcripts (compat/transcripts/, format in
compat/README.md) against a server and checks every byte it answers.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_PORT = 8885
SECOND_ACTIVE = b"second_active"
SETTLE = 0.05  # quiet time that ends a `YES|size` answer, which has no terminator
PAUSE = 0.01  # a transcript's "C~": long enough for the next write to be its own segment


class LegacyClientError(Exception):
    """The server refused, broke the protocol or went silent."""


class NotFound(LegacyClientError):
    """The server answered NO|0."""


class Refused(LegacyClientError):
    """The server closed the connection instead of answering (its only way to refuse)."""


# ------------------------------------------------------------------ commands


def connect(host: str, port: int = DEFAULT_PORT, timeout: float = 10.0) -> socket.socket:
    """A connected blocking socket; every read and write gives up after `timeout` seconds."""
    sock = socket.create_connection((host, port), timeout=timeout)
    # Headers are small writes: without this, Nagle's algorithm can hold one back.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def put_on(sock: socket.socket, name: str, data: bytes) -> None:
    """Upload `data` as `name` on an open connection. The server confirms nothing."""
    _ask_put(sock, name, len(data))
    sock.sendall(data)


def get_on(sock: socket.socket, name: str, settle: float = SETTLE) -> bytes:
    """Download `name` on an open connection.

    Raises:
        NotFound: the server answered NO|0 (the connection stays usable).
    """
    size = _ask_get(sock, name, settle)
    return _recv_exactly(sock, size, f"file {name!r}")


def put_file_on(sock: socket.socket, name: str, fd: int, size: int) -> None:
    """Upload the first `size` bytes of the open file `fd` as `name`, by os.sendfile.

    The socket must be blocking (a timeout, as `connect` sets, is fine). The
    server confirms nothing.
    """
    _ask_put(sock, name, size)
    offset = 0
    while offset < size:
        sent = os.sendfile(sock.fileno(), fd, offset, size - offset)
        if sent == 0:
            raise LegacyClientError(f"the local file shrank while {name!r} was sent")
        offset += sent


def get_into(
    sock: socket.socket,
    name: str,
    buffer: bytearray,
    sink: Callable[[memoryview], object],
    settle: float = SETTLE,
) -> int:
    """Download `name`, handing each piece to `sink` as it arrives; return the size.

    Every piece is a view of `buffer`, reused for the next one: `sink` must
    copy or write it before it returns. `settle=0` takes the answer as soon
    as its digits are there, without waiting for a quiet moment: quicker, and
    right for a server that sends `YES|size` in one write (trioftp does).

    Raises:
        NotFound: the server answered NO|0 (the connection stays usable).
    """
    size = _ask_get(sock, name, settle)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(buffer, min(len(buffer), size - got))
        except TimeoutError:
            raise LegacyClientError(
                f"server sent nothing for {sock.gettimeout()} s (waiting for the file {name!r})"
            ) from None
        except ConnectionResetError:
            n = 0
        if not n:
            raise LegacyClientError(
                f"server closed the connection after {got} of {size} bytes of the file {name!r}"
            )
        sink(view[:n])
        got += n
    return size


def put(host: str, port: int, name: str, data: bytes, *, timeout: float = 10.0, linger: float = 1.0) -> None:
    """Upload one file on its own connection.

    After the bytes, the sending side is shut down and the server gets up to
    `linger` seconds to close: a trioftp server closes once the file is
    stored, an old server never does.
    """
    with connect(host, port, timeout) as sock:
        put_on(sock, name, data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(linger)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            pass


def get(host: str, port: int, name: str, *, timeout: float = 10.0) -> bytes:
    """Download one file on its own connection."""
    with connect(host, port, timeout) as sock:
        return get_on(sock, name)


def _ask_put(sock: socket.socket, name: str, size: int) -> None:
    """Send `put|name|size` and wait for `OK`: then the server takes exactly size bytes."""
    sock.sendall(f"put|{name}|{size}".encode())
    answer = _recv_exactly(sock, 2, f"answer to put {name!r}")
    if answer != b"OK":
        raise LegacyClientError(f"server answered put {name!r} with {answer!r}")


def _ask_get(sock: socket.socket, name: str, settle: float) -> int:
    """Send `get|name|0`, read `YES|size` and say `second_active`: the file's size follows."""
    sock.sendall(f"get|{name}|0".encode())
    answer = _recv_answer(sock, settle, name)
    word, _, size_text = answer.partition(b"|")
    if word == b"NO":
        raise NotFound(f"server has no file {name!r}")
    if word != b"YES" or not size_text.isdigit():
        raise LegacyClientError(f"server answered get {name!r} with {answer!r}")
    sock.sendall(SECOND_ACTIVE)
    return int(size_text)


def _recv_exactly(sock: socket.socket, count: int, what: str) -> bytes:
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        chunk = _recv(sock, min(remaining, 1024 * 1024), what)
        if not chunk:
            got = count - remaining
            if not got:
                raise Refused(f"server closed the connection instead of sending the {what}")
            raise LegacyClientError(
                f"server closed the connection after {got} of {count} bytes of the {what}"
            )
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _recv_answer(sock: socket.socket, settle: float, name: str) -> bytes:
    """`YES|size` or `NO|0`: read until the digits are followed by a quiet `settle` (0: none)."""
    answer = b""
    while True:
        _, bar, digits = answer.partition(b"|")
        if bar and digits.isdigit():
            if settle <= 0:
                return answer
            timeout = sock.gettimeout()
            sock.settimeout(settle)
            try:
                more = sock.recv(64)
            except TimeoutError:
                return answer
            finally:
                sock.settimeout(timeout)
        else:
            more = _recv(sock, 64, f"answer to get {name!r}")
        if not more:
            if not answer:
                raise Refused(f"server closed the connection instead of answering get {name!r}")
            return answer
        answer += more
        if len(answer) > 64:
            raise LegacyClientError(f"server answered get {name!r} with {answer[:40]!r}...")


def _recv(sock: socket.socket, size: int, what: str) -> bytes:
    try:
        return sock.recv(size)
    except TimeoutError:
        raise LegacyClientError(
            f"server sent nothing for {sock.gettimeout()} s (waiting for the {what})"
        ) from None
    except ConnectionResetError:
        return b""


# --------------------------------------------------------------- transcripts


@dataclass
class Transcript:
    """A recorded legacy session: what the client sends, what the server must answer."""

    name: str
    steps: list[tuple[str, bytes]] = field(default_factory=list)  # ("C>", b"...") ...
    settings: dict[str, str] = field(default_factory=dict)  # "= key value" lines
    files: dict[str, bytes | None] = field(default_factory=dict)  # "F= name|bytes", "F- name"


class TranscriptMismatch(LegacyClientError):
    """The server did not answer as the transcript says."""


def unescape(text: str) -> bytes:
    r"""Transcript bytes: UTF-8 text with \\ \n \r \t \0 and \xHH escapes."""
    out = bytearray()
    i = 0
    simple = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0"}
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code in simple:
            out += simple[code]
            i += 2
        elif code == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{code} in {text!r}")
    return bytes(out)


def load_transcript(path: str) -> Transcript:
    """Read a transcript file (format in compat/README.md)."""
    transcript = Transcript(name=os.path.basename(path))
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            tag, _, rest = line.partition(" ")
            if tag in ("C>", "S<"):
                transcript.steps.append((tag, unescape(rest)))
            elif tag.startswith("C*") and tag.endswith(">"):
                transcript.steps.append(("C>", unescape(rest) * int(tag[2:-1])))
            elif tag in ("C~", "C.", "S."):
                transcript.steps.append((tag, b""))
            elif tag == "=":
                key, _, value = rest.partition(" ")
                transcript.settings[key] = value
            elif tag == "F=":
                name, _, content = rest.partition("|")
                transcript.files[name] = unescape(content)
            elif tag == "F-":
                transcript.files[rest] = None
            else:
                raise ValueError(f"{path}:{number}: unknown line {line!r}")
    return transcript


def replay(
    host: str, port: int, transcript: Transcript, *, timeout: float = 5.0, pause: float = PAUSE
) -> None:
    """Play the client's side of `transcript` and check the server's side byte for byte.

    Raises:
        TranscriptMismatch: at the first difference, saying which step.
    """
    with connect(host, port, timeout) as sock:
        for index, (tag, data) in enumerate(transcript.steps, 1):
            where = f"{transcript.name} step {index} ({tag} {data[:40]!r})"
            if tag == "C>":
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise TranscriptMismatch(f"{where}: server closed before it: {exc}") from None
            elif tag == "C~":
                time.sleep(pause)
            elif tag == "C.":
                sock.shutdown(socket.SHUT_WR)
            elif tag == "S<":
                got = _recv_up_to(sock, len(data), where, expected=data)
                if got != data:
                    raise TranscriptMismatch(f"{where}: server sent {got!r}, expected {data!r}")
            elif tag == "S.":
                rest = _recv_up_to(sock, 1 << 20, where)
                if rest:
                    raise TranscriptMismatch(f"{where}: server sent {rest[:40]!r} instead of closing")


def _recv_up_to(sock: socket.socket, count: int, where: str, expected: bytes | None = None) -> bytes:
    """Up to `count` bytes, fewer if the server closes first or strays from `expected`."""
    got = b""
    while len(got) < count:
        try:
            chunk = sock.recv(min(count - len(got), 65536))
        except TimeoutError:
            raise TranscriptMismatch(
                f"{where}: server sent {got!r}, then nothing for {sock.gettimeout()} s"
            ) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        got += chunk
        if expected is not None and not expected.startswith(got):
            break
    return got


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    usage = (
        "usage: legacy_client.py put HOST PORT PATH [NAME]\n"
        "       legacy_client.py get HOST PORT NAME [OUTPUT]\n"
        "       legacy_client.py replay HOST PORT TRANSCRIPT..."
    )
    if len(args) < 4 or args[0] not in ("put", "get", "replay") or not args[2].isdigit():
        print(usage, file=sys.stderr)
        return 2
    command, host, port, rest = args[0], args[1], int(args[2]), args[3:]
    try:
        if command == "put":
            with open(rest[0], "rb") as f:
                data = f.read()
            name = rest[1] if len(rest) > 1 else os.path.basename(rest[0])
            put(host, port, name, data)
            print(f"sent {len(data)} bytes as {name!r} (the legacy protocol confirms nothing)")
        elif command == "get":
            data = get(host, port, rest[0])
            output = rest[1] if len(rest) > 1 else os.path.basename(rest[0])
            with open(output, "wb") as f:
                f.write(data)
            print(f"received {len(data)} bytes into {output}")
        else:
            for path in rest:
                replay(host, port, load_transcript(path))
                print(f"{path}: ok")
    except (LegacyClientError, OSError) as exc:
        print(f"legacy_client: {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
