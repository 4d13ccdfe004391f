"""Frame layout: the preface, the 10-byte frame header, and the frame decoder.

    +-----------------+--------+--------+------------------+------------...
    | length (u32 BE) | type u8| flags u8| stream id (u32 BE)| payload (length bytes)
    +-----------------+--------+--------+------------------+------------...

The decoder refuses an oversize length from the header alone, before it waits
for (or buffers) a single byte of the body.
"""

from __future__ import annotations

import enum
import struct

import attrs

from trioftp.protocol.errors import FrameTooLarge, RemoteProtocolError

VERSION = 2
# 0x89 is not ASCII, so the first byte can never start a legacy text header;
# CR LF catches a transport that rewrites line endings (as PNG's signature does).
PREFACE = b"\x89TFTP\r\n" + bytes([VERSION])
PREFACE_MAGIC = PREFACE[:-1]

HEADER = struct.Struct("!IBBI")
HEADER_SIZE = HEADER.size
MAX_STREAM_ID = 2**31 - 1
# Until the HELLO exchange has agreed a limit, no frame may be larger than this.
HANDSHAKE_MAX_PAYLOAD = 16 * 1024
# Senders must respect the peer's advertised maximum, which may not go lower
# than this (so every control message always fits) nor higher than 16 MiB.
MIN_MAX_FRAME_SIZE = 16 * 1024
MAX_MAX_FRAME_SIZE = 16 * 1024 * 1024


class FrameType(enum.IntEnum):
    HELLO = 0x01
    GOODBYE = 0x02
    ERROR = 0x03
    CANCEL = 0x04
    WINDOW = 0x05
    DATA = 0x06
    END = 0x07
    AUTH = 0x08
    AUTHORIZED = 0x09
    GET = 0x10
    PUT = 0x11
    LIST = 0x12
    STAT = 0x13
    DELETE = 0x14
    RENAME = 0x15
    MKDIR = 0x16
    STATUS = 0x17
    READY = 0x20
    FILE_INFO = 0x21
    LISTING = 0x22
    DONE = 0x23
    STATUS_INFO = 0x24


# Frame types never assigned (spec 4.1): every type whose low four bits are all set.
# A peer sends them now and then so that receivers that choke on unknown types are
# found early (the idea of RFC 8701's GREASE).
GREASE_FRAME_TYPES = tuple(range(0x0F, 0x100, 0x10))


@attrs.frozen
class Frame:
    type: FrameType
    stream_id: int
    payload: bytes
    flags: int = 0


def encode_header(frame_type: FrameType, stream_id: int, length: int, flags: int = 0) -> bytes:
    """Return the 10-byte header of a frame whose payload is `length` bytes.

    Used alone when the payload is sent by other means (os.sendfile).
    """
    return HEADER.pack(length, frame_type, flags, stream_id)


def encode_frame(frame_type: FrameType, stream_id: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), frame_type, 0, stream_id) + payload


class FrameDecoder:
    """Turns a byte stream into frames.

    Feed bytes with `feed()`; `next_frame()` returns a Frame, or None when more
    bytes are needed. `max_payload` may be raised once limits are agreed.
    """

    def __init__(self, max_payload: int = HANDSHAKE_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._header: tuple[int, FrameType, int, int] | None = None
        self.body_remaining = 0  # payload bytes of a frame the caller takes itself (`start_body`)
        self._skipping = 0  # payload bytes of an unknown frame still to drop
        self.ignored_frames = 0  # frames of unknown types dropped so far (spec 4.1)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next_header(self) -> tuple[int, FrameType, int, int] | None:
        """Parse the next frame's header if it is buffered; return (length, type, flags, stream id).

        The payload stays where it is: follow with `next_frame()` (the whole
        frame) or `start_body()` (the caller takes the payload itself).
        """
        while self._header is None:
            if self._skipping:
                dropped = min(self._skipping, len(self._buffer))
                del self._buffer[:dropped]
                self._skipping -= dropped
                if self._skipping:
                    return None
            if len(self._buffer) < HEADER_SIZE:
                return None
            header = self._parse_header()
            del self._buffer[:HEADER_SIZE]
            if header is None:  # an unknown type: its payload is dropped, whatever its flags
                self.ignored_frames += 1
                continue
            self._header = header
        return self._header

    def start_body(self) -> int:
        """Hand the payload of the header `next_header()` returned to the caller; return its length.

        Until `body_remaining` is 0 the caller moves the bytes: `read_body()`
        for bytes already buffered here (always first), `body_received()` for
        bytes it read from the transport itself.
        """
        assert self._header is not None and not self.body_remaining
        self.body_remaining = self._header[0]
        self._header = None
        return self.body_remaining

    def read_body(self, into: memoryview) -> int:
        """Move buffered payload bytes into `into`; return how many (0 when none is buffered)."""
        n = min(len(into), self.body_remaining, len(self._buffer))
        if n:
            with memoryview(self._buffer) as view:
                into[:n] = view[:n]
            del self._buffer[:n]
            self.body_remaining -= n
        return n

    def body_received(self, n: int) -> None:
        """The caller read `n` payload bytes from the transport, past everything buffered here."""
        if self._buffer and n:
            raise ValueError("buffered payload bytes must be taken (read_body) before the transport's")
        if not 0 <= n <= self.body_remaining:
            raise ValueError(f"{n} payload bytes taken, {self.body_remaining} remain in the frame")
        self.body_remaining -= n

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def next_frame(self) -> Frame | None:
        assert not self.body_remaining, "the caller is still taking a payload"
        header = self.next_header()
        if header is None:
            return None
        length, frame_type, flags, stream_id = header
        if len(self._buffer) < length:
            return None
        payload = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._header = None
        return Frame(type=frame_type, stream_id=stream_id, payload=payload, flags=flags)

    def _parse_header(self) -> tuple[int, FrameType, int, int] | None:
        """The header's fields, or None for a frame of a type this side does not know."""
        length, type_byte, flags, stream_id = HEADER.unpack_from(self._buffer)
        if length > self.max_payload:
            raise FrameTooLarge(
                f"frame declares {length} payload bytes, over the limit of {self.max_payload}"
            )
        try:
            frame_type = FrameType(type_byte)
        except ValueError:
            # Ignored, as HTTP/2 (RFC 9113 section 5.5) and QUIC do, so a later
            # version can add frame types that older peers step over.
            self._skipping = length
            return None
        if flags != 0:
            raise RemoteProtocolError(f"flags must be 0 in v2, got 0x{flags:02x}")
        if stream_id > MAX_STREAM_ID:
            raise RemoteProtocolError(f"stream id {stream_id} has the reserved high bit set")
        return length, frame_type, flags, stream_id
