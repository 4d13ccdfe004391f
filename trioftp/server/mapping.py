"""The store's terms in the wire's: error codes, kinds, listing entries, FILE_INFO.

The store (trioftp.storage) knows nothing of the protocol; this is the one
place that translates, so a new store or a new wire feature changes one table.
"""

from __future__ import annotations

from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import Entry, FileInfo
from trioftp.protocol.messages import Kind as WireKind
from trioftp.storage.interface import FileFacts, Kind, Listed, Problem, StorageError


class Refusal(Exception):
    """The server refuses a request for a reason of its own (rights, limits): answered with `code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


CODES: dict[Problem, ErrorCode] = {
    Problem.NOT_FOUND: ErrorCode.NOT_FOUND,
    Problem.EXISTS: ErrorCode.ALREADY_EXISTS,
    Problem.DENIED: ErrorCode.PERMISSION_DENIED,
    Problem.BAD_NAME: ErrorCode.BAD_NAME,
    Problem.TOO_LARGE: ErrorCode.TOO_LARGE,
    Problem.CHECKSUM_MISMATCH: ErrorCode.CHECKSUM_MISMATCH,
    Problem.CHANGED: ErrorCode.BUSY,
    Problem.WRONG_KIND: ErrorCode.WRONG_KIND,
    Problem.NOT_EMPTY: ErrorCode.BAD_REQUEST,  # v2 has no code of its own for it; the message says
    Problem.NO_SPACE: ErrorCode.NO_SPACE,
    Problem.BAD_REQUEST: ErrorCode.BAD_REQUEST,
    Problem.UNAVAILABLE: ErrorCode.BUSY,  # the engine may come back: "try again" is the right advice
    Problem.INTERNAL: ErrorCode.INTERNAL,
}

KINDS: dict[Kind, WireKind] = {
    Kind.FILE: WireKind.FILE,
    Kind.FOLDER: WireKind.DIR,
    Kind.LINK: WireKind.LINK,
    Kind.OTHER: WireKind.OTHER,
}


def error_code(exc: StorageError | Refusal) -> ErrorCode:
    return exc.code if isinstance(exc, Refusal) else CODES[exc.problem]


def file_info(stream_id: int, facts: FileFacts, digest: bytes | None = None) -> FileInfo:
    return FileInfo(
        name=facts.name, kind=KINDS[facts.kind], size=facts.size, mtime_ns=facts.mtime_ns,
        digest=digest if digest is not None else facts.digest, stream_id=stream_id,
    )  # fmt: skip


def entry(listed: Listed, *, kinds: bool) -> Entry | None:
    """A listing line for the wire; None for what this client must not see.

    Without `kinds` (a client that does not read kinds "link" and "other",
    spec 11.3), a link is listed as what it leads to and what is not served
    is left out.
    """
    kind = listed.kind
    if not kinds:
        if kind is Kind.OTHER:
            return None
        if kind is Kind.LINK and listed.leads_to is not None:
            kind = listed.leads_to
    return Entry(name=listed.name, kind=KINDS[kind], size=listed.size, mtime_ns=listed.mtime_ns)
