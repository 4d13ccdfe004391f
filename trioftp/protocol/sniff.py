"""Tell a v2 client from a legacy one by the first byte on the connection.

v2 starts with the preface, whose first byte 0x89 is not ASCII; a legacy header
starts with its command word ("put", "get"), ASCII letters. One byte decides, so
a legacy client that sends its header and waits is never kept waiting.
"""

from __future__ import annotations

import enum

from trioftp.protocol.frames import PREFACE


class Dialect(enum.Enum):
    V2 = "v2"
    LEGACY = "legacy"
    UNKNOWN = "unknown"


def sniff(head: bytes) -> Dialect | None:
    """Return the dialect the first bytes belong to, or None if there are none yet."""
    if not head:
        return None
    first = head[0]
    if first == PREFACE[0]:
        return Dialect.V2
    if (0x41 <= first <= 0x5A) or (0x61 <= first <= 0x7A):
        return Dialect.LEGACY
    return Dialect.UNKNOWN
