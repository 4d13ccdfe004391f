"""What v2 and legacy transfers share: the record of one transfer, how an interruption reads.

A transfer's record is its log line (one per GET or PUT, JSON fields for log
shippers) and its part of the metrics (in flight, bytes, outcome).
"""

from __future__ import annotations

import builtins
import logging
import time

import attrs
import trio

from trioftp.protocol import ErrorCode
from trioftp.server.mapping import Refusal, error_code
from trioftp.server.metrics import Metrics
from trioftp.storage.interface import StorageError
from trioftp.transport.streams import ChannelClosed

log = logging.getLogger("trioftp.transfer")

WRITE_BLOCK = 1024 * 1024  # uploads reach the disk in blocks of about this much


@attrs.define
class TransferRecord:
    """One transfer (GET, PUT, LEGACY-GET, LEGACY-PUT): its log line, and its part of the metrics.

    With `metrics`, the transfer counts as in flight from its creation until
    `log()`, and its bytes count as they are set. `outcome` is a metrics label
    (ok, cancelled, connection_lost, interrupted or an error code's name);
    `result` is the text the log line ends with.
    """

    peer: str
    operation: str
    name: str
    metrics: Metrics | None = None
    user: str = "anonymous"
    started: float = attrs.field(factory=time.monotonic)
    # A property, not an on_setattr hook: attrs would route every attribute's
    # assignment, in __init__ too, through a Python __setattr__ (3.7 % of a server's
    # CPU on small GETs).
    _bytes: int = attrs.field(default=0, alias="bytes")
    result: str = "ok"
    outcome: str = "ok"
    digest: builtins.bytes | None = None  # builtins: the `bytes` field above shadows the type
    _logged: bool = False

    def __attrs_post_init__(self) -> None:
        if self.metrics is not None:
            self.metrics.transfer_started()

    @property
    def bytes(self) -> int:
        """Bytes moved so far; setting it adds those new since the last time to the server's counters."""
        return self._bytes

    @bytes.setter
    def bytes(self, value: int) -> None:
        if self.metrics is not None:
            moved = value - self._bytes
            if self.operation.endswith("PUT"):
                self.metrics.transfer_moved(received=moved)
            else:
                self.metrics.transfer_moved(sent=moved)
        self._bytes = value

    def fail(self, outcome: str, result: str) -> None:
        self.outcome, self.result = outcome, result

    def log(self) -> None:
        """Write the transfer's line and count it as finished; only the first call does anything."""
        if self._logged:
            return
        self._logged = True
        elapsed = time.monotonic() - self.started
        if log.isEnabledFor(logging.INFO):  # a busy server logging at WARNING builds no line per file
            rate = self.bytes / elapsed / 1e6 if elapsed > 0 else 0.0
            fields = {
                "event": "transfer", "peer": self.peer, "user": self.user, "operation": self.operation,
                "file": self.name, "bytes": self.bytes, "duration": round(elapsed, 6),
                "digest": self.digest.hex() if self.digest is not None else None,
                "outcome": self.outcome, "reason": None if self.outcome == "ok" else self.result,
            }  # fmt: skip
            log.info(
                "%s %s %r %d bytes in %.3f s (%.1f MB/s): %s",
                self.peer, self.operation, self.name, self.bytes, elapsed, rate, self.result, extra=fields,
            )  # fmt: skip
        if self.metrics is not None:
            self.metrics.transfer_finished(self.operation, self.outcome, elapsed)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc`'s exception groups, however nested; `[exc]` if it is no group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def interruption(exc: BaseException, *, cancelled: tuple[str, str]) -> tuple[str, str]:
    """The (outcome, reason) of a transfer that `exc` ended, for its record.

    Exception groups (a nursery's, around a cancelled send and hash) are looked
    into: the first leaf that is not a Cancelled is what went wrong, the
    Cancelled beside it only its consequence. If every leaf is a Cancelled,
    the task was cancelled, and `cancelled` says why: only the caller knows.
    """
    causes = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if not causes:
        return cancelled
    cause = causes[0]
    if isinstance(cause, StorageError | Refusal):
        code = error_code(cause)
        return code.name, f"{code.name}: {cause}"
    if isinstance(cause, ChannelClosed):
        return "connection_lost", f"interrupted: {cause}"
    detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return ErrorCode.INTERNAL.name, f"failed: internal error: {detail}"
