"""Protocol error codes and the exceptions that carry them.

Every exception here knows its wire code, so the I/O layer answers a failure
with `Error(code=exc.error_code)` without a lookup table of its own. Codes
below 32 end the whole connection; codes from 32 up end one stream only.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Error codes carried by ERROR frames (see protocol_spec.md, "Error codes")."""

    # Connection errors: the sender closes the connection after the ERROR frame.
    PROTOCOL_ERROR = 1
    FRAME_TOO_LARGE = 2
    UNSUPPORTED_VERSION = 3
    FLOW_CONTROL_ERROR = 4
    TIMEOUT = 5
    AUTH_FAILED = 6
    SHUTTING_DOWN = 7
    CONNECTION_LIMIT = 8
    # Stream errors: only the stream named by the frame ends.
    NOT_FOUND = 32
    ALREADY_EXISTS = 33
    PERMISSION_DENIED = 34
    BAD_NAME = 35
    TOO_LARGE = 36
    CHECKSUM_MISMATCH = 37
    BUSY = 38
    LIMIT_REACHED = 39
    WRONG_KIND = 40
    NO_SPACE = 41
    INTERNAL = 42
    REFUSED = 43
    BAD_REQUEST = 44

    @property
    def ends_connection(self) -> bool:
        return self < 32

    @classmethod
    def _missing_(cls, value: object) -> ErrorCode | None:
        """A code this side does not know (a newer peer's, or GREASE) is read by its range.

        It becomes a pseudo-member named UNKNOWN_<n>: below 32 it ends the
        connection, from 32 up one stream, as HTTP/2 and QUIC treat unknown codes.
        """
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ERROR_CODE:
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return member


MAX_ERROR_CODE = 2**32 - 1  # codes are unsigned 32-bit numbers (spec 12.1)
GREASE_ERROR_CODES = (0x2A2A, 0x4A4A)  # never assigned: a peer must read them by range (spec 12.1)


class ProtocolError(Exception):
    """A violation of the protocol, by us or by the peer.

    Attributes:
        error_code: the code to put on the wire for this failure.
        stream_id: the stream it concerns; 0 means the whole connection.
    """

    error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, message: str, *, error_code: ErrorCode | None = None, stream_id: int = 0) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code
        self.stream_id = stream_id

    @property
    def ends_connection(self) -> bool:
        return self.error_code.ends_connection or self.stream_id == 0


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class FrameTooLarge(RemoteProtocolError):
    """A frame header declared a payload over the agreed maximum."""

    error_code = ErrorCode.FRAME_TOO_LARGE
