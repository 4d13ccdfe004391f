"""What the server asks of a store: the one seam between serving and keeping files.

Two stores implement it: `trioftp.storage.local.LocalStore` (a folder) and
`trioftp.storage.s3.S3Store` (an S3-compatible bucket). The server never
knows which one it has.

Every method blocks (disk or network): the server calls them on worker
threads. Names are the protocol's paths ("a/b.txt", "" for the root), already
checked against the name rules by the store itself, which refuses the rest
with `Problem.BAD_NAME`.

The store speaks its own terms, not the wire's: `Problem` for what went
wrong, `Kind` for what a name is; `trioftp.server.mapping` turns them into
error codes and listing entries.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import attrs


class Problem(enum.Enum):
    """Why a store refused or failed an operation."""

    NOT_FOUND = "not found"
    EXISTS = "exists"
    DENIED = "denied"  # the store refuses it: outside the root, reserved, no permission
    BAD_NAME = "bad name"
    TOO_LARGE = "too large"
    CHECKSUM_MISMATCH = "checksum mismatch"
    CHANGED = "changed"  # the file changed under a read or hash; trying again may work
    WRONG_KIND = "wrong kind"  # a file where a folder must be, or the reverse
    NOT_EMPTY = "not empty"
    NO_SPACE = "no space"
    BAD_REQUEST = "bad request"  # the request cannot be done as asked (sizes, moves across mounts)
    UNAVAILABLE = "unavailable"  # the engine behind the store is down or too slow
    INTERNAL = "internal"


class StorageError(Exception):
    """A refused or failed store operation: `problem` says why, the message says it to a person."""

    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


class Kind(enum.Enum):
    FILE = "file"
    FOLDER = "folder"
    LINK = "link"  # a link inside the root; `Listed.leads_to` says to what
    OTHER = "other"  # there, but not served: a FIFO, a device, a link out of the root


@attrs.frozen
class FileFacts:
    """A file or folder as the store sees it (a folder's size is 0)."""

    name: str
    kind: Kind
    size: int
    mtime_ns: int
    digest: bytes | None = None


@attrs.frozen
class Listed:
    """One line of a folder's listing; a link's size and mtime are its target's."""

    name: str
    kind: Kind
    size: int
    mtime_ns: int
    leads_to: Kind | None = None  # for a LINK: FILE or FOLDER


class ReadHandle(Protocol):
    """One file opened for reading: a fixed version of it, until `close()`."""

    @property
    def facts(self) -> FileFacts:
        """The file as opened (digest None: see `cached_digest` and `digest`)."""
        ...

    def read(self, offset: int, count: int) -> bytes | memoryview:
        """`count` bytes from `offset` of the opened version.

        A memoryview stays valid until the next `read` of this handle (the S3
        store reads the next ranges into the same buffers): send it or copy it first.

        Raises:
            StorageError: CHANGED if that version is gone or shorter now.
        """
        ...

    def ready(self, offset: int, count: int) -> bool:
        """Whether `read(offset, count)` would return at once, its bytes already in memory:
        the server then reads on its event loop instead of a thread."""
        ...

    def fileno(self) -> int | None:
        """A descriptor the server may sendfile from, or None (then it uses `read`)."""
        ...

    def cached_digest(self, algorithm: str) -> bytes | None:
        """The digest of the opened version if the store already knows it (no reading)."""
        ...

    def digest(self, algorithm: str) -> bytes:
        """The digest of the whole opened version, from the store's cache or by reading it.

        Raises:
            StorageError: CHANGED if the file changed while it was read.
        """
        ...

    def remember_digest(self, algorithm: str, digest: bytes) -> None:
        """Keep a digest the server computed of this version, for later STATs and GETs."""
        ...

    def unchanged(self) -> bool:
        """Whether everything read so far is still the file's content (checked at the end of a GET)."""
        ...

    def close(self) -> None: ...


class Upload(Protocol):
    """One upload into a store: invisible until `commit`, gone after `abort(keep=False)`."""

    name: str
    size: int
    offset: int  # where the client starts sending (above 0 when resumed)
    written: int  # bytes held so far, the resumed prefix included

    def write(self, blocks: Sequence[bytes | memoryview]) -> None:
        """Append blocks at the end of what was received.

        Raises:
            StorageError: BAD_REQUEST past the announced size; NO_SPACE; UNAVAILABLE.
        """
        ...

    def commit(self, size: int, digest: bytes | None, mtime_ns: int | None = None) -> FileFacts:
        """Check size and digest (None for the legacy protocol), then make the file visible at once.

        Readers see the old file or the new one, never a mix.

        Raises:
            StorageError: CHECKSUM_MISMATCH or BAD_REQUEST; the upload is then
                discarded and an old file of that name stays as it was.
        """
        ...

    def abort(self, *, keep: bool) -> None:
        """Give up; with `keep`, what was received stays for a resume (until it expires).

        The one call the server makes on its event loop (from a `finally`): it must
        return at once; a store that must wait on a network cleans up in the background.
        """
        ...


class Store(Protocol):
    """Where the server keeps files."""

    # Whether opening and stat-ing are quick local calls (the server then makes them on
    # its event loop) rather than network round trips (then on worker threads).
    quick: bool

    def scoped(self, home: str) -> Store:
        """The store seen from `home` (a home folder, made if missing); nothing above it is reachable."""
        ...

    def open_read(self, name: str) -> ReadHandle:
        """Open a file (not a folder) for reading; the caller closes the handle."""
        ...

    def stat(self, name: str, algorithm: str | None = None) -> FileFacts:
        """What `name` is; with `algorithm`, a file's digest too if the store already knows it."""
        ...

    def list(self, folder: str) -> list[Listed]:
        """The entries of a folder, sorted by name, leaving out what the protocol cannot name."""
        ...

    def identical(
        self, name: str, size: int, digest: bytes, algorithm: str, mtime_ns: int | None
    ) -> FileFacts | None:
        """If `name` holds exactly these bytes, its facts (and its mtime set to `mtime_ns`), else None.

        The short-cut of a PUT whose bytes are there already: blocking, it may hash the file.
        """
        ...

    def delete(self, name: str) -> None:
        """Delete a file or an empty folder."""
        ...

    def rename(self, old: str, new: str, *, replace: bool) -> None: ...

    def mkdir(self, name: str) -> None:
        """Make a folder and the missing ones above it; EXISTS if it is there already."""
        ...

    def begin_upload(
        self, name: str, size: int, *, algorithm: str, digest: bytes | None = None, resume: bool = False
    ) -> Upload:
        """Start an upload of `size` bytes; with `resume`, go on from what an earlier attempt left."""
        ...

    def clean_partials(self, *, at_start: bool = False) -> int:
        """Remove expired leftovers of interrupted uploads; returns how many went."""
        ...

    def describe(self) -> str:
        """Where the files are, for the server's start-up line (a path or an s3:// address)."""
        ...

    def shed(self) -> None:
        """Give back memory kept for the next transfers (buffers of finished ones).

        The server calls it, on its event loop, once no transfer runs: after a burst the
        memory goes back to the OS instead of staying with an idle server.
        """
        ...

    def close(self) -> None:
        """Give back what the store holds open (descriptors, connections); its views too."""
        ...
