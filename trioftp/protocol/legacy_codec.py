"""The legacy text protocol: header parser and reply builder (no I/O).

An old client sends `cmd|filename|filesize` in one write and waits. The header
has no terminator: the old server took one read of up to 1024 bytes and split it
on "|". Here the header ends at the first byte that cannot belong to it, or when
the caller says the line has *settled* (no byte came for a short while, or the
peer closed), and never later than 1024 bytes. See protocol_spec.md, "Legacy".
"""

from __future__ import annotations

import enum

import attrs

from trioftp.protocol.names import BadName, check_path

MAX_HEADER_BYTES = 1024
MAX_SIZE_DIGITS = 19  # 2**63 - 1 has 19 digits
SECOND_ACTIVE = b"second_active"
OK = b"OK"
NOT_FOUND_REPLY = b"NO|0"


class LegacyError(Exception):
    """A legacy header or reply that cannot be understood; the connection is closed."""


class Command(enum.Enum):
    PUT = "put"
    GET = "get"


@attrs.frozen
class Header:
    command: Command
    name: str
    size: int | None  # the upload size for PUT; GET's third field is ignored


def found_reply(size: int) -> bytes:
    """The answer to a GET of an existing file."""
    return b"YES|%d" % size


def parse_header(buffer: bytes, *, settled: bool) -> tuple[Header, int] | None:
    """Parse a legacy header at the start of `buffer`.

    Args:
        buffer: the bytes received so far on the connection (or since the last command).
        settled: True when no more bytes will come before we answer (a quiet
            period passed, or the peer closed its side).

    Returns:
        (header, number of bytes it used), or None if more bytes are needed.
        Bytes after the header belong to what follows (upload data, `second_active`).

    Raises:
        LegacyError: the bytes cannot be a legacy header.
    """
    # The window reaches past the limit so that the byte ending a put's size, or
    # a `second_active` right after a get header, can be seen.
    header = _parse(buffer[: MAX_HEADER_BYTES + len(SECOND_ACTIVE)], settled=settled)
    if (header is None and len(buffer) > MAX_HEADER_BYTES) or (
        header is not None and header[1] > MAX_HEADER_BYTES
    ):
        raise LegacyError(f"no complete header within {MAX_HEADER_BYTES} bytes")
    return header


def _parse(buffer: bytes, *, settled: bool) -> tuple[Header, int] | None:
    first_bar = buffer.find(b"|")
    if first_bar < 0:
        if not any(word.startswith(buffer) for word in (b"put", b"get")):
            raise LegacyError(f"unknown legacy command {_show(buffer)}")
        _need_more(settled, "header ends before its first '|'")
        return None
    try:
        command = Command(buffer[:first_bar].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise LegacyError(f"unknown legacy command {_show(buffer[:first_bar])}") from None
    second_bar = buffer.find(b"|", first_bar + 1)
    if second_bar < 0:
        _need_more(settled, "header ends before its second '|'")
        return None
    name = _decode_name(buffer[first_bar + 1 : second_bar])
    rest_start = second_bar + 1
    if command is Command.PUT:
        end = _digits_end(buffer, rest_start)
        digits = buffer[rest_start:end]
        if end == len(buffer) and not settled:
            return None  # the size may still be growing
        if not digits:
            raise LegacyError(f"put size is not a number: {_show(buffer[rest_start : rest_start + 20])}")
        if len(digits) > MAX_SIZE_DIGITS:
            raise LegacyError("put size has too many digits")
        return Header(command, name, int(digits)), end
    # GET: the third field is ignored by every server; it runs to `second_active`
    # when the client sent that along, else to where the line settles.
    marker = buffer.find(SECOND_ACTIVE, rest_start)
    end = marker if marker >= 0 else len(buffer)
    if marker < 0 and not settled:
        return None
    if b"|" in buffer[rest_start:end]:
        raise LegacyError("get header has more than three fields")
    return Header(command, name, None), end


def complete_if_settled(buffer: bytes) -> bool:
    """Whether `buffer` holds a whole header if no more bytes come.

    The caller waits a short quiet period only then; a header still missing a
    field is waited for without one.
    """
    first_bar = buffer.find(b"|")
    second_bar = buffer.find(b"|", first_bar + 1) if first_bar >= 0 else -1
    if second_bar < 0:
        return False
    if buffer[:first_bar] == b"put":
        return _digits_end(buffer, second_bar + 1) > second_bar + 1
    return True


def _need_more(settled: bool, reason: str) -> None:
    if settled:
        raise LegacyError(reason)
    return None


def _digits_end(buffer: bytes, start: int) -> int:
    end = start
    while end < len(buffer) and 0x30 <= buffer[end] <= 0x39:
        end += 1
    return end


def _decode_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LegacyError("file name is not UTF-8") from None
    try:
        return check_path(name)
    except BadName as exc:
        raise LegacyError(f"bad file name: {exc}") from None


def parse_get_reply(buffer: bytes, *, settled: bool) -> tuple[int | None, int] | None:
    """Parse a server's answer to GET: `YES|size` or `NO|0` (client side).

    Returns:
        (size, bytes used), size None for "not found"; or None if more bytes are needed.
    """
    if buffer.startswith(b"NO|"):
        end = _digits_end(buffer, 3)
        if end == len(buffer) and not settled:
            return None
        return None if end == 3 and not settled else (None, end)
    if not buffer.startswith(b"YES|"):
        if any(word.startswith(buffer) for word in (b"YES|", b"NO|")) and not settled:
            return None
        raise LegacyError(f"unexpected answer to get: {_show(buffer[:40])}")
    end = _digits_end(buffer, 4)
    if end == len(buffer) and not settled:
        return None
    if end == 4:
        raise LegacyError("YES without a size")
    return int(buffer[4:end]), end


def encode_header(command: Command, name: str, size: int) -> bytes:
    """A legacy header as old clients send it (client side)."""
    return f"{command.value}|{name}|{size}".encode()


def _show(raw: bytes) -> str:
    return repr(raw[:40])
