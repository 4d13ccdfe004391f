"""The S3 store: the `Store` interface on a bucket, shared by any number of servers.

Layout under the store's prefix:

    NAME                    a file: one object; its digest and mtime in its metadata
    FOLDER/                 an empty object marking a folder, so empty folders stay
    .trioftp/uploads/ID/T/  one attempt T of an upload ID: `ledger` (JSON: the
                            multipart upload's id and the parts received, with
                            their ETags) and, once completed, `data`
    .trioftp/digests/ETAG.ALG  digests computed later of objects that lack one

Every server can read what another wrote there: uploads resume on any server,
digests computed by one are found by the others. Nothing is kept only in a
process except caches keyed by ETag. All methods block (network): the server
runs them on worker threads.

What it does not do: make rename atomic (S3 has no rename: copy, then delete;
a failure may leave both names, never neither), rename a folder that holds
anything, or resume an upload no larger than one part (it restarts).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from trioftp.disk.digests import new_hasher
from trioftp.protocol.names import BadName, check_path, check_segment
from trioftp.storage.interface import (
    FileFacts,
    Kind,
    Listed,
    Problem,
    ReadHandle,
    StorageError,
    Store,
    Upload,
)
from trioftp.storage.s3.bucket import Bucket, BucketError, Head, Reason, forget_frames
from trioftp.storage.s3.ledger import LedgerWriter
from trioftp.storage.s3.memory import DEFAULT_MEMORY, Memory
from trioftp.storage.s3.parts import PartBuffers
from trioftp.storage.s3.ranges import Range, RangeBuffers

log = logging.getLogger("trioftp.storage.s3")

STATE_DIR = ".trioftp"
PART_SIZE = 8 * 2**20  # S3 wants parts of 5 MiB or more (the last excepted)
# Per upload: parts sent at once while the next one fills, so an upload holds up to
# (1 + PARTS_IN_FLIGHT) * PART_SIZE = 72 MiB (and the store's `memory` bounds them all).
# Through a server on Ceph here, 256 MiB, same minutes: 4 / 8 / 10 gave 143 / 154 / 156 MB/s.
PARTS_IN_FLIGHT = 8
MAX_COPY = 5 * 2**30  # the largest object CopyObject copies in one call
COPY_CHUNK = 2**30  # part size when a larger object is copied part by part
READ_CHUNK = 2**20  # also the pieces a range read ahead is kept in: what the server asks for at once
# A download reads ranges of READ_AHEAD_CHUNK, READ_AHEAD_DEPTH at once: 64 MiB in memory at most.
# Each GET waits ~40 ms before its body on an engine with Nagle's algorithm on (Ceph's beast by
# default; see docs/s3.md), so fewer, larger ranges. Through a server on Ceph here, 256 MiB, same
# minutes (medians of 4 rounds, noisy): 8 MiB x 4 / 8 MiB x 8 / 16 MiB x 4 gave 253 / 293 / 307 MB/s.
READ_AHEAD_CHUNK = 16 * 2**20
READ_AHEAD_DEPTH = 4
READ_AHEAD_THREADS = 32  # per store, shared by its downloads
IDLE_AFTER = 120.0  # an open upload's ledger untouched this long: its server is gone
LEDGER_EVERY = 1.0  # seconds between two writes of an upload's ledger (what a dead server loses)
META_MTIME = "trioftp-mtime-ns"
T = TypeVar("T")

_PROBLEMS = {
    Reason.NOT_FOUND: Problem.NOT_FOUND,
    Reason.CHANGED: Problem.CHANGED,
    Reason.EXISTS: Problem.EXISTS,
    Reason.UNAVAILABLE: Problem.UNAVAILABLE,
    Reason.DENIED: Problem.DENIED,
    Reason.OTHER: Problem.INTERNAL,
}


def _meta_digest(algorithm: str) -> str:
    return f"trioftp-{algorithm}"


def _error(exc: BucketError, name: str) -> StorageError:
    """The store's words for a bucket's failure; an engine that is down is also logged."""
    if exc.reason is Reason.UNAVAILABLE:
        # The text only: the exception would keep its traceback, and with it sockets, alive.
        log.warning("object store unavailable (%s): %s", name or "/", str(exc))
        return StorageError(Problem.UNAVAILABLE, f"the object store is unavailable; try again later ({exc})")
    if exc.reason is Reason.NOT_FOUND:
        return StorageError(Problem.NOT_FOUND, f"{name!r} does not exist")
    if exc.reason is Reason.CHANGED:
        return StorageError(Problem.CHANGED, f"{name!r} changed meanwhile; try again")
    if exc.reason is Reason.EXISTS:
        return StorageError(Problem.EXISTS, f"{name!r} already exists")
    return StorageError(_PROBLEMS[exc.reason], str(exc))


def _cut(exc: BaseException, name: str) -> StorageError:
    """UNAVAILABLE for a body cut short (the engine went away mid-read)."""
    forget_frames(exc)
    return _error(BucketError(Reason.UNAVAILABLE, str(exc)), name)


def _call(name: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except BucketError as exc:
        raise _error(exc, name) from None


def parse_store_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` -> (bucket, prefix without slashes at its ends).

    Raises:
        ValueError: not an s3:// address, or no bucket in it.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an s3://BUCKET/PREFIX address")
    return parts.netloc, parts.path.strip("/")


class _Shared:
    """What a store and its views share: the bucket, the digest cache, the settings."""

    def __init__(
        self,
        bucket: Bucket,
        top: str,
        partial_ttl: float,
        max_file_size: int,
        part_size: int,
        idle_after: float,
        memory: Memory,
    ) -> None:
        self.bucket = bucket
        self.memory = memory  # parts in flight and ranges read ahead, all uploads and downloads
        # The buffers downloads read ranges into, used again by the next ranges and downloads.
        self.ranges = RangeBuffers(memory, READ_CHUNK, most=READ_AHEAD_DEPTH * READ_AHEAD_CHUNK // READ_CHUNK)
        self.idle_after = idle_after
        self.top = top  # "" or "prefix/"
        self.state = f"{top}{STATE_DIR}/"
        self.partial_ttl = partial_ttl
        self.max_file_size = max_file_size
        self.part_size = part_size
        self.digests: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (etag, algorithm)
        self._readers: ThreadPoolExecutor | None = None
        self.background: set[threading.Thread] = set()  # clean-ups of aborted uploads
        self.lock = threading.Lock()

    def cached(self, etag: str, algorithm: str) -> bytes | None:
        with self.lock:
            return self.digests.get((etag, algorithm))

    def remember(self, etag: str, algorithm: str, digest: bytes) -> None:
        with self.lock:
            self.digests[(etag, algorithm)] = digest
            self.digests.move_to_end((etag, algorithm))
            while len(self.digests) > 100_000:
                self.digests.popitem(last=False)

    def reader_pool(self) -> ThreadPoolExecutor:
        with self.lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(READ_AHEAD_THREADS, thread_name_prefix="trioftp-s3-read")
            return self._readers

    def in_background(self, work: Callable[[bool], None], arg: bool, name: str) -> None:
        def run() -> None:
            try:
                work(arg)
            finally:
                with self.lock:
                    self.background.discard(thread)

        thread = threading.Thread(target=run, name=name)
        with self.lock:
            self.background.add(thread)
        thread.start()

    def settle(self) -> None:
        """Wait for the clean-ups of aborted uploads still going on."""
        while True:
            with self.lock:
                threads = list(self.background)
            if not threads:
                return
            for thread in threads:
                thread.join()

    def close(self) -> None:
        self.settle()
        with self.lock:
            readers, self._readers = self._readers, None
        if readers is not None:
            readers.shutdown(wait=True, cancel_futures=True)
        self.ranges.close()
        self.bucket.close()

    def digest_key(self, etag: str, algorithm: str) -> str:
        return f"{self.state}digests/{etag.strip(chr(34))}.{algorithm}"


class S3Store:
    """Files in a bucket, under a prefix.

    Every call is a network round trip (`quick` False: the server makes them on worker threads).

    Args:
        bucket: the bucket (its client is closed by `close()`).
        prefix: where under the bucket the served root is ("" for all of it).
        partial_ttl: seconds an interrupted upload is kept for resume.
        max_file_size: largest upload accepted.
        part_size: bytes per part of a multipart upload (5 MiB at least; files
            no larger go as one PUT at commit); None: PART_SIZE.
        memory: bytes of parts in flight and ranges read ahead, for all uploads
            and downloads together (trioftp.storage.s3.memory).
    """

    def __init__(
        self,
        bucket: Bucket,
        prefix: str = "",
        *,
        partial_ttl: float = 86400.0,
        max_file_size: int = 2**40,
        part_size: int | None = None,
        idle_after: float = IDLE_AFTER,
        memory: int = DEFAULT_MEMORY,
    ) -> None:
        self.quick = False
        top = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        part_size = PART_SIZE if part_size is None else part_size
        self._shared = _Shared(bucket, top, partial_ttl, max_file_size, part_size, idle_after, Memory(memory))
        self._bucket = bucket
        self.home = ""
        self._root = top  # this view's root: the top, or a home under it

    # ------------------------------------------------------------------ names

    def describe(self) -> str:
        where = f"s3://{self._bucket.name}/{self._root}"
        return f"{where} at {self._bucket.endpoint}" if self._bucket.endpoint else where

    def close(self) -> None:
        self._shared.close()

    def shed(self) -> None:
        self._shared.ranges.release()

    def settle(self) -> None:
        """Wait until aborted uploads are set aside (their ledgers written, for a resume anywhere)."""
        self._shared.settle()

    def scoped(self, home: str) -> S3Store:
        if not home:
            return self
        self._check(home)
        # No call to the engine: the server scopes on its event loop at each login, and a
        # home needs no marker (an empty prefix lists as an empty folder).
        view = S3Store.__new__(S3Store)
        view._shared, view._bucket, view.quick = self._shared, self._bucket, False
        view.home = f"{self.home}/{home}" if self.home else home
        view._root = f"{self._root}{home}/"
        return view

    @staticmethod
    def _check(name: str, *, allow_root: bool = False) -> None:
        try:
            check_path(name, allow_root=allow_root)
        except BadName as exc:
            raise StorageError(Problem.BAD_NAME, str(exc)) from None
        if name.split("/", 1)[0] == STATE_DIR:
            raise StorageError(Problem.DENIED, f"{STATE_DIR!r} is reserved for the server")

    def _key(self, name: str) -> str:
        return f"{self._root}{name}"

    def _head(self, name: str) -> Head | None:
        try:
            return self._bucket.head(self._key(name))
        except BucketError as exc:
            if exc.reason is Reason.NOT_FOUND:
                return None
            raise _error(exc, name) from None

    def _is_folder(self, name: str) -> bool:
        """Whether `name` is a folder: its marker, or anything under it, is there."""
        if not name:
            return True
        level = _call(name, lambda: self._bucket.list_level(self._key(name) + "/", limit=1))
        return bool(level.objects or level.prefixes)

    def _refuse_file_parents(self, name: str) -> None:
        """WRONG_KIND if a folder on the way to `name` is a file's name."""
        segments = name.split("/")[:-1]
        for depth in range(1, len(segments) + 1):
            parent = "/".join(segments[:depth])
            if self._head(parent) is not None:
                raise StorageError(Problem.WRONG_KIND, f"a parent of {name!r} is a file, not a folder")

    def _facts(self, name: str, head: Head, digest: bytes | None = None) -> FileFacts:
        mtime = head.metadata.get(META_MTIME, "")
        mtime_ns = int(mtime) if mtime.isdigit() else head.mtime_ns
        return FileFacts(name=name, kind=Kind.FILE, size=head.size, mtime_ns=mtime_ns, digest=digest)

    def _known_digest(self, head: Head, algorithm: str) -> bytes | None:
        """The digest of this version if the object, this process or another server has it."""
        stored = head.metadata.get(_meta_digest(algorithm))
        if stored:
            try:
                return bytes.fromhex(stored)
            except ValueError:
                pass
        digest = self._shared.cached(head.etag, algorithm)
        if digest is None:
            try:
                digest = self._bucket.read(self._shared.digest_key(head.etag, algorithm))
            except BucketError:
                return None
            self._shared.remember(head.etag, algorithm, digest)
        return digest

    # ------------------------------------------------------------------ reads

    def open_read(self, name: str) -> S3ReadHandle:
        self._check(name)
        head = self._head(name)
        if head is None:
            if self._is_folder(name):
                raise StorageError(Problem.WRONG_KIND, f"{name!r} is not a file")
            raise StorageError(Problem.NOT_FOUND, f"{name!r} does not exist")
        return S3ReadHandle(self, name, self._key(name), head)

    def stat(self, name: str, algorithm: str | None = None) -> FileFacts:
        self._check(name, allow_root=True)
        head = self._head(name) if name else None
        if head is None:
            if self._is_folder(name):
                marker = self._head(name + "/") if name else None
                mtime_ns = marker.mtime_ns if marker else 0
                return FileFacts(name=name, kind=Kind.FOLDER, size=0, mtime_ns=mtime_ns)
            raise StorageError(Problem.NOT_FOUND, f"{name!r} does not exist")
        digest = self._known_digest(head, algorithm) if algorithm else None
        return self._facts(name, head, digest)

    def list(self, folder: str) -> list[Listed]:
        self._check(folder, allow_root=True)
        prefix = self._key(folder + "/") if folder else self._root
        level = _call(folder, lambda: self._bucket.list_level(prefix))
        if folder and not (level.objects or level.prefixes):
            if self._head(folder) is not None:
                raise StorageError(Problem.WRONG_KIND, f"{folder!r} is not a folder")
            raise StorageError(Problem.NOT_FOUND, f"{folder!r} does not exist")
        entries: dict[str, Listed] = {}
        for sub in level.prefixes:
            entry = sub[len(prefix) : -1]
            if self._nameable(entry) and not (prefix == self._shared.top and entry == STATE_DIR):
                entries[entry] = Listed(name=entry, kind=Kind.FOLDER, size=0, mtime_ns=0)
        for key, size, mtime_ns, _ in level.objects:
            entry = key[len(prefix) :]
            if entry and self._nameable(entry) and entry not in entries:  # "" is the folder's own marker
                entries[entry] = Listed(name=entry, kind=Kind.FILE, size=size, mtime_ns=mtime_ns)
        return sorted(entries.values(), key=lambda e: e.name)

    @staticmethod
    def _nameable(segment: str) -> bool:
        try:
            check_segment(segment)
        except BadName:
            return False
        return True

    # ------------------------------------------------------------------ changes

    def delete(self, name: str) -> None:
        self._check(name)
        if self._head(name) is not None:
            _call(name, lambda: self._bucket.delete(self._key(name)))
            return
        level = _call(name, lambda: self._bucket.list_level(self._key(name) + "/", limit=2))
        inside = [k for k, *_ in level.objects if k != self._key(name) + "/"] + level.prefixes
        if inside:
            raise StorageError(Problem.NOT_EMPTY, f"folder {name!r} is not empty")
        if not level.objects:
            raise StorageError(Problem.NOT_FOUND, f"{name!r} does not exist")
        _call(name, lambda: self._bucket.delete(self._key(name) + "/"))

    def mkdir(self, name: str) -> None:
        """Like `mkdir -p`, as the local store: a folder already there is no error, a file is EXISTS."""
        self._check(name)
        if self._head(name) is not None:
            raise StorageError(Problem.EXISTS, f"{name!r} exists and is not a folder")
        if self._is_folder(name):
            return
        self._refuse_file_parents(name)
        segments = name.split("/")
        for depth in range(1, len(segments) + 1):
            marker = self._key("/".join(segments[:depth])) + "/"
            try:
                self._bucket.put(marker, b"", create_only=True)
            except BucketError as exc:
                if exc.reason is not Reason.EXISTS:
                    raise _error(exc, name) from None

    def rename(self, old: str, new: str, *, replace: bool) -> None:
        """Copy, then delete the old name: not atomic; a failure may leave both names, never neither.

        Refused: a folder that holds anything (BAD_REQUEST); a file onto a
        folder or a folder onto a file (WRONG_KIND).
        """
        self._check(old)
        self._check(new)
        moving = self._head(old)
        there = self._head(new)
        new_is_folder = there is None and self._is_folder(new)
        if moving is None:
            if not self._is_folder(old):
                raise StorageError(Problem.NOT_FOUND, f"{old!r} does not exist")
            self._rename_folder(old, new, there is not None or new_is_folder, replace)
            return
        if old == new:
            return
        if there is not None and not replace:
            raise StorageError(Problem.EXISTS, f"{new!r} already exists")
        if new_is_folder:
            raise StorageError(Problem.WRONG_KIND, f"{new!r} is a folder; {old!r} cannot replace it")
        self._refuse_file_parents(new)
        # CopyObject's If-None-Match is ignored by some engines (Ceph): without `replace`
        # a name made between the check above and this copy is replaced.
        _copy(self._bucket, self._key(old), self._key(new), moving, None)
        _call(old, lambda: self._bucket.delete(self._key(old)))

    def _rename_folder(self, old: str, new: str, new_taken: bool, replace: bool) -> None:
        level = _call(old, lambda: self._bucket.list_level(self._key(old) + "/", limit=2))
        if [k for k, *_ in level.objects if k != self._key(old) + "/"] or level.prefixes:
            raise StorageError(
                Problem.BAD_REQUEST,
                f"folder {old!r} is not empty: this server keeps files in an object store, "
                "which cannot rename a folder with its contents at once; move the files one by one",
            )
        if new_taken:
            if self._head(new) is not None:
                raise StorageError(
                    Problem.WRONG_KIND, f"{new!r} is a file; the folder {old!r} cannot replace it"
                )
            if not replace:
                raise StorageError(Problem.EXISTS, f"{new!r} already exists")
            self.delete(new)  # NOT_EMPTY if it holds anything, as rename(2) says
        if (new + "/").startswith(old + "/"):
            raise StorageError(Problem.BAD_REQUEST, f"cannot move {old!r} into itself")
        self._refuse_file_parents(new)
        _call(new, lambda: self._bucket.put(self._key(new) + "/", b""))
        _call(old, lambda: self._bucket.delete(self._key(old) + "/"))

    # ------------------------------------------------------------------ uploads

    def begin_upload(
        self, name: str, size: int, *, algorithm: str, digest: bytes | None = None, resume: bool = False
    ) -> S3Upload:
        self._check(name)
        if size > self._shared.max_file_size:
            raise StorageError(
                Problem.TOO_LARGE, f"{size} bytes is over the limit of {self._shared.max_file_size}"
            )
        new_hasher(algorithm)  # ValueError for an unknown algorithm, before anything is made
        if self._is_folder(name):
            raise StorageError(Problem.WRONG_KIND, f"{name!r} is a folder")
        self._refuse_file_parents(name)
        where = f"{self.home}/{name}" if self.home else name
        upload_id = hashlib.sha256(
            f"{where}\0{size}\0{algorithm}\0{digest.hex() if digest else ''}".encode()
        ).hexdigest()[:40]
        upload = S3Upload(self, name, size, algorithm, digest, f"{self._shared.state}uploads/{upload_id}/")
        try:
            upload.start(resume=resume)
        except BaseException:
            upload.abort(keep=True)
            raise
        return upload

    def identical(
        self, name: str, size: int, digest: bytes, algorithm: str, mtime_ns: int | None
    ) -> FileFacts | None:
        handle = self.open_read(name)
        try:
            head = handle._head
            if head.size != size or handle.digest(algorithm) != digest:
                return None
        finally:
            handle.close()
        if mtime_ns is not None and self._facts(name, head).mtime_ns != mtime_ns:
            # The bytes are there, the client's time is not: a copy onto itself with new
            # metadata sets it (no bytes move on Ceph), keeping the digest with the object.
            metadata = {**head.metadata, _meta_digest(algorithm): digest.hex(), META_MTIME: str(mtime_ns)}
            _copy(self._bucket, self._key(name), self._key(name), head, metadata)
            head = _call(name, lambda: self._bucket.head(self._key(name)))
            self._shared.remember(head.etag, algorithm, digest)
        return self._facts(name, head, digest)

    def clean_partials(self, *, at_start: bool = False) -> int:
        """Remove uploads not touched for `partial_ttl` (any server's): their staged data and ledgers.

        With the engine away it removes nothing and says so in the log: the next sweep tries again.
        """
        try:
            return self._clean_partials()
        except StorageError as exc:
            log.warning("expired uploads not swept: %s", str(exc))
            return 0

    def _clean_partials(self) -> int:
        shared, bucket = self._shared, self._bucket
        newest: dict[str, int] = {}
        keys: dict[str, list[str]] = {}
        uploads = f"{shared.state}uploads/"
        for key, mtime_ns in _call("", lambda: list(bucket.list_all(uploads))):
            upload = key[len(uploads) :].split("/", 1)[0]
            newest[upload] = max(newest.get(upload, 0), mtime_ns)
            keys.setdefault(upload, []).append(key)
        expired = [u for u, mtime_ns in newest.items() if time.time() - mtime_ns / 1e9 > shared.partial_ttl]
        for upload in expired:
            for key in keys[upload]:
                if key.endswith("/ledger"):
                    ledger = _read_ledger(bucket, key)
                    if ledger and ledger.get("multipart"):
                        _quietly(partial(bucket.abort_multipart, ledger["data"], ledger["multipart"]))
            _call("", partial(bucket.delete_many, keys[upload]))
        return len(expired)


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except BucketError as exc:
        log.info("object store cleanup left for later: %s", str(exc))


def _read_ledger(bucket: Bucket, key: str) -> dict[str, Any] | None:
    try:
        ledger = json.loads(bucket.read(key))
    except (BucketError, ValueError):
        return None
    return ledger if isinstance(ledger, dict) else None


def _copy(bucket: Bucket, source: str, key: str, head: Head, metadata: dict[str, str] | None) -> None:
    """Copy an object of any size; readers of `key` see the old object or the whole new one."""
    if head.size <= MAX_COPY:
        _call(key, lambda: bucket.copy(source, key, source_etag=head.etag, metadata=metadata))
        return
    multipart = _call(key, lambda: bucket.create_multipart(key, metadata=metadata or dict(head.metadata)))
    try:
        parts = []
        for number, start in enumerate(range(0, head.size, COPY_CHUNK), 1):
            end = min(start + COPY_CHUNK, head.size)
            copied = partial(bucket.upload_part_copy, key, multipart, number, source, start, end)
            parts.append((number, _call(key, copied)))
        _call(key, lambda: bucket.complete_multipart(key, multipart, parts))
    except BaseException:
        _quietly(lambda: bucket.abort_multipart(key, multipart))
        raise


class S3ReadHandle:
    """One version (ETag) of an object: every byte read is of that version, or CHANGED."""

    def __init__(self, store: S3Store, name: str, key: str, head: Head) -> None:
        self._store = store
        self._name = name
        self._key = key
        self._head = head
        self._body: Any = None
        self._at = -1  # where the open body's next byte is
        # Read ahead, by chunk number, in pieces, with the buffers they are read into.
        self._chunks: dict[int, tuple[Future[list[memoryview]], Range]] = {}
        self._buffers = store._shared.ranges
        self.facts = store._facts(name, head)

    def read(self, offset: int, count: int) -> bytes | memoryview:
        count = max(0, min(count, self._head.size - offset))
        if count == 0:
            return b""
        if self._head.size <= READ_AHEAD_CHUNK:
            return self._read_streaming(offset, count)
        pieces: list[bytes | memoryview] = []
        while count:
            index = offset // READ_AHEAD_CHUNK
            start = offset - index * READ_AHEAD_CHUNK
            # Ranges before this one are done with (what the last read returned was sent
            # before this read came), and their buffers take the next ranges: what this
            # read took from them is copied out first.
            if passed := [i for i in self._chunks if i < index]:
                pieces = [b"".join(pieces)] if pieces else []
                for number in passed:
                    self._drop(number)
            chunk = self._chunk(index)
            number, at = divmod(start, READ_CHUNK)
            whole = chunk[number]
            # The server reads READ_CHUNK at a time, so this is mostly a whole piece: no copy.
            piece = whole if at == 0 and count >= len(whole) else whole[at : at + count]
            pieces.append(piece)
            offset += len(piece)
            count -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def ready(self, offset: int, count: int) -> bool:
        """Whether read(offset, count) would return at once: its bytes are all read ahead already.

        The server then reads on its event loop: a thread hop per piece cost more
        than such a read.
        """
        if self._head.size <= READ_AHEAD_CHUNK:
            return False
        end = min(offset + count, self._head.size)
        for index in range(offset // READ_AHEAD_CHUNK, (max(end, offset + 1) - 1) // READ_AHEAD_CHUNK + 1):
            chunk = self._chunks.get(index)
            if chunk is None or not chunk[0].done() or chunk[0].exception() is not None:
                return False
        return True

    def _chunk(self, index: int) -> list[memoryview]:
        """Chunk `index` of the object, and the next few fetched meanwhile on the store's threads.

        A download then keeps several ranged GETs in flight, as boto3's own
        download_file does: one GET at a time left the engine idle between reads.
        """
        last = (self._head.size - 1) // READ_AHEAD_CHUNK
        pool = self._store._shared.reader_pool()
        for ahead in range(index, min(index + READ_AHEAD_DEPTH, last + 1)):
            if ahead in self._chunks:
                continue
            taken = self._buffers.take(self._chunk_size(ahead), wait=ahead == index)
            if taken is None:
                break  # no room to read ahead now: this download goes one range at a time
            self._chunks[ahead] = (pool.submit(self._fetch, ahead, taken), taken)
        try:
            return self._chunks[index][0].result()
        except BucketError as exc:
            self._drop(index)
            raise _error(exc, self._name) from None

    def _chunk_size(self, index: int) -> int:
        return min(READ_AHEAD_CHUNK, self._head.size - index * READ_AHEAD_CHUNK)

    def _drop(self, index: int) -> None:
        """Forget a range read ahead; its buffers are free once its fetch is over, not before."""
        future, taken = self._chunks.pop(index)
        future.cancel()
        future.add_done_callback(lambda _done: self._buffers.give(taken))

    def _fetch(self, index: int, taken: Range) -> list[memoryview]:
        """Chunk `index`, read into the buffers taken for it: views of READ_CHUNK (the last may be shorter).

        Pieces, not one bytes object: `read` then hands each piece on as it is,
        where slicing a whole chunk allocated and copied every byte once more.
        """
        start = index * READ_AHEAD_CHUNK
        end = min(start + READ_AHEAD_CHUNK, self._head.size)
        views = [memoryview(buffer)[: min(READ_CHUNK, end - start - i * READ_CHUNK)]
                 for i, buffer in enumerate(taken.made())]  # fmt: skip
        self._store._bucket.read_into(self._key, start, end, views, etag=self._head.etag)
        return views

    def _read_streaming(self, offset: int, count: int) -> bytes:
        if self._body is None or self._at != offset:
            self._close_body()
            self._body = _call(self._name, lambda: self._open_body(offset))
            self._at = offset
        chunks, got = [], 0
        try:
            while got < count:
                chunk = self._body.read(count - got)
                if not chunk:
                    raise StorageError(Problem.CHANGED, f"{self._name!r} shrank while it was read; try again")
                chunks.append(chunk)
                got += len(chunk)
        except (OSError, ValueError) as exc:
            self._close_body()
            raise _cut(exc, self._name) from None
        except Exception as exc:  # botocore's own errors for a body cut short
            self._close_body()
            if isinstance(exc, StorageError):
                raise
            raise _cut(exc, self._name) from None
        self._at += got
        return b"".join(chunks)

    def _open_body(self, offset: int) -> Any:
        return self._store._bucket.get(self._key, offset, etag=self._head.etag)

    def fileno(self) -> int | None:
        return None

    def cached_digest(self, algorithm: str) -> bytes | None:
        return self._store._known_digest(self._head, algorithm)

    def digest(self, algorithm: str) -> bytes:
        known = self.cached_digest(algorithm)
        if known is not None:
            return known
        hasher = new_hasher(algorithm)
        body = _call(self._name, lambda: self._store._bucket.get(self._key, etag=self._head.etag))
        try:
            got = 0
            while chunk := body.read(READ_CHUNK):
                hasher.update(chunk)
                got += len(chunk)
        except Exception as exc:
            raise _cut(exc, self._name) from None
        finally:
            body.close()
        if got != self._head.size:
            raise StorageError(Problem.CHANGED, f"{self._name!r} changed while it was hashed; try again")
        digest = hasher.digest()
        self.remember_digest(algorithm, digest)
        return digest

    def remember_digest(self, algorithm: str, digest: bytes) -> None:
        shared = self._store._shared
        if shared.cached(self._head.etag, algorithm) == digest:
            return
        shared.remember(self._head.etag, algorithm, digest)
        # For the other servers: keyed by ETag, so a later version never finds it.
        _quietly(lambda: shared.bucket.put(shared.digest_key(self._head.etag, algorithm), digest))

    def unchanged(self) -> bool:
        return True  # every read was pinned to the version opened (If-Match)

    def _close_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._close_body()
        for index in list(self._chunks):
            self._drop(index)


class S3Upload:
    """One upload: one PUT at commit if it fits a part, else a multipart upload staged under the
    reserved prefix, its parts listed in a ledger object that any server can resume from.

    The bytes go into a multipart upload at a staging key, `.../ID/T/data`, never at the
    file's own name. The ledger (`.../ID/T/ledger`) is rewritten behind the parts (at most
    every LEDGER_EVERY seconds, trioftp.storage.s3.ledger) with the part numbers and ETags
    received, and in full when an upload is cut: a server resuming it, even after this one died,
    completes that multipart upload with the parts of the ledger (never by ListParts),
    reads the result back to re-hash it, and copies it in as its own first part. The
    commit completes the staging object and copies it to the file's name with the digest
    in its metadata (a server-side copy, shallow on Ceph), then deletes the staging.
    """

    def __init__(
        self, store: S3Store, name: str, size: int, algorithm: str, digest: bytes | None, folder: str
    ) -> None:
        self.name = name
        self.size = size
        self.offset = 0
        self._store = store
        self._bucket = store._bucket
        self._algorithm = algorithm
        self._expected = digest
        self._folder = folder  # .../uploads/ID/
        self._attempt = f"{folder}{secrets.token_hex(8)}/"
        self._data = f"{self._attempt}data"
        self._hasher = new_hasher(algorithm)
        self._buffer = bytearray()  # the one file of an upload of one part, else the part filling
        self._filled = 0  # bytes in the part filling (its bytearray is made whole, then filled)
        self._counted = False  # whether the part filling is counted in the store's memory (a spare)
        self._buffers = PartBuffers(store._shared.memory, store._shared.part_size, PARTS_IN_FLIGHT)
        self.written = 0  # bytes received, the resumed prefix included
        self._part_size = store._shared.part_size
        self._single = size <= self._part_size
        self._multipart: str | None = None
        self._parts: dict[int, tuple[str, int]] = {}  # number -> (ETag, size), finished parts
        self._next_part = 1
        self._pending: list[Future[None]] = []
        self._setup: Future[None] | None = None  # making the multipart upload, if it is made behind
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the parts and the multipart id, between part threads
        self._ledger = LedgerWriter(self._write_ledger, LEDGER_EVERY, f"trioftp-s3-ledger {name[:30]}")
        self._done = False

    # ---------------------------------------------------------------- start

    def start(self, *, resume: bool) -> None:
        if self._single:
            return
        prefix = self._resumable() if resume else None
        self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="trioftp-s3-part")
        if prefix is None:
            # The multipart upload and its first ledger are made while the first part fills:
            # two round trips fewer before the client may send. Parts wait for it.
            self._setup = self._pool.submit(self._create)
            self._pending.append(self._setup)  # its failure is raised as a part's is
            return
        self._create()
        key, head = prefix
        self._rehash(key, head)
        # The received prefix becomes this attempt's first parts: a server-side copy.
        for start in range(0, head.size, MAX_COPY):
            end = min(start + MAX_COPY, head.size)
            number = self._next_part
            copied = partial(
                self._bucket.upload_part_copy,
                self._data, self._multipart or "", number, key, start, end, source_etag=head.etag,
            )  # fmt: skip
            etag = _call(self.name, copied)
            self._parts[number] = (etag, end - start)
            self._next_part += 1
        self.offset = self.written = head.size
        self._write_ledger()
        _quietly(lambda: self._bucket.delete_many([key, key.rsplit("/", 1)[0] + "/ledger"]))

    def _create(self) -> None:
        """The multipart upload at the staging key, and the ledger that names it (before any part)."""
        multipart = _call(self.name, lambda: self._bucket.create_multipart(self._data))
        with self._lock:
            self._multipart = multipart
        self._write_ledger()

    def _resumable(self) -> tuple[str, Head] | None:
        """The longest prefix an earlier attempt left (completed into its data object), or None."""
        mtimes = _call(self.name, lambda: dict(self._bucket.list_all(self._folder)))
        best: tuple[str, Head] | None = None
        for ledger_key in (k for k in mtimes if k.endswith("/ledger")):
            ledger = _read_ledger(self._bucket, ledger_key)
            if not ledger:
                continue
            data = ledger.get("data", "")
            if ledger.get("open") and time.time() - mtimes[ledger_key] / 1e9 < self._store._shared.idle_after:
                continue  # another server is still receiving it: leave it alone
            parts = _leading(ledger.get("parts", []), self._part_size)
            if ledger.get("multipart") and parts:
                # A server that died left it open; one cut off completed it already (then this fails).
                with contextlib.suppress(BucketError):
                    self._bucket.complete_multipart(data, ledger["multipart"], parts)
            try:
                head = self._bucket.head(data)
            except BucketError:
                continue
            whole_parts = 0 < head.size <= self.size and head.size % self._part_size == 0
            if whole_parts and (best is None or head.size > best[1].size):
                best = (data, head)
        return best

    def _rehash(self, key: str, head: Head) -> None:
        body = _call(self.name, lambda: self._bucket.get(key, etag=head.etag))
        try:
            got = 0
            while chunk := body.read(READ_CHUNK):
                self._hasher.update(chunk)
                got += len(chunk)
        except Exception as exc:
            raise _cut(exc, self.name) from None
        finally:
            body.close()
        if got != head.size:
            raise StorageError(Problem.CHANGED, f"the received part of {self.name!r} changed; try again")

    # ---------------------------------------------------------------- write

    def write(self, blocks: Sequence[bytes | memoryview]) -> None:
        total = sum(len(b) for b in blocks)
        if self.written + total > self.size:
            raise StorageError(Problem.BAD_REQUEST, f"more than the announced {self.size} bytes")
        self._raise_failed_part()
        for block in blocks:
            self._hasher.update(block)
            if self._single:
                self._buffer += block
            else:
                self._fill(block)
        self.written += total

    def _fill(self, block: bytes | memoryview) -> None:
        """Copy `block` into the parts, sending each part once full.

        One copy per byte: each part is its own bytearray, filled in place and
        handed to botocore as it is (a bytes body would be copied again, into a
        BytesIO, and read back in pieces for the payload hash and the send).
        """
        with memoryview(block) as view:
            taken = 0
            while taken < len(view):
                if not self._buffer:
                    self._buffer, self._counted = self._buffers.fresh()
                count = min(self._part_size - self._filled, len(view) - taken)
                # Through a view: `bytearray[a:b] = memoryview` first copies the view into a
                # temporary bytearray (a fresh mapping per block, with its page faults).
                with memoryview(self._buffer) as into:
                    into[self._filled : self._filled + count] = view[taken : taken + count]
                self._filled += count
                taken += count
                if self._filled == self._part_size:
                    part, counted = self._buffer, self._counted
                    self._buffer, self._filled, self._counted = bytearray(), 0, False
                    self._send_part(part, counted)

    def _send_part(self, data: bytearray, counted: bool) -> None:
        """Send a part on the pool; `counted`: its buffer is counted in the store's memory already."""
        assert self._pool is not None
        try:
            # Bounded: at most PARTS_IN_FLIGHT parts in memory besides the one filling.
            while len(running := [f for f in self._pending if not f.done()]) >= PARTS_IN_FLIGHT:
                wait(running, return_when=FIRST_COMPLETED)
            self._raise_failed_part()
            self._buffers.sending(data, counted)
        except BaseException:
            self._buffers.put_back(data, counted)
            raise
        self._pending = [f for f in self._pending if not f.done()]
        number = self._next_part
        self._next_part += 1
        future = self._pool.submit(self._put_part, number, data)
        future.add_done_callback(lambda _done: self._buffers.done(data))
        self._pending.append(future)

    def _put_part(self, number: int, data: bytearray) -> None:
        if self._setup is not None:
            self._setup.result()  # raises what the setup raised: this part fails with it
        assert self._multipart is not None
        etag = self._bucket.upload_part(self._data, self._multipart, number, data)
        with self._lock:
            self._parts[number] = (etag, len(data))
        self._ledger.changed()  # written behind, so the next part goes at once

    def _write_ledger(self, *, open_: bool = True) -> None:
        """The parts received so far, for a resume on any server (never two writes at once).

        `open` says a server is still receiving it: another leaves it alone until it
        has not changed for `idle_after` seconds (its server died, say).
        """
        with self._lock:
            ledger = {
                "open": open_,
                "name": self.name,
                "size": self.size,
                "data": self._data,
                "multipart": self._multipart,
                "parts": sorted([n, etag, size] for n, (etag, size) in self._parts.items()),
            }
        body = json.dumps(ledger).encode()
        _call(self.name, lambda: self._bucket.put(f"{self._attempt}ledger", body))

    def _raise_failed_part(self) -> None:
        if self._ledger.error is not None:
            raise self._ledger.error
        for future in self._pending:
            if future.done() and (exc := future.exception()) is not None:
                if isinstance(exc, BucketError):
                    raise _error(exc, self.name)
                if isinstance(exc, StorageError):
                    raise exc
                raise StorageError(Problem.INTERNAL, f"{self.name!r}: {exc}")

    def _wait_parts(self) -> None:
        wait(self._pending)
        self._raise_failed_part()
        self._pending = []

    # ---------------------------------------------------------------- end

    def commit(self, size: int, digest: bytes | None, mtime_ns: int | None = None) -> FileFacts:
        try:
            return self._commit(size, digest, mtime_ns)
        except StorageError as exc:
            # A failed check discards the upload; an engine that is away keeps it for a resume.
            self.abort(keep=exc.problem is Problem.UNAVAILABLE)
            raise

    def _commit(self, size: int, digest: bytes | None, mtime_ns: int | None) -> FileFacts:
        if size != self.size or self.written != self.size:
            said = f"END says {size} bytes, PUT announced {self.size}, {self.written} arrived"
            raise StorageError(Problem.BAD_REQUEST, said)
        actual = self._hasher.digest()
        if actual != (digest or actual) or actual != (self._expected or actual):
            raise StorageError(Problem.CHECKSUM_MISMATCH, f"digest of {self.name!r} does not match")
        store = self._store
        if store._is_folder(self.name):
            raise StorageError(Problem.WRONG_KIND, f"{self.name!r} is a folder")
        metadata = {_meta_digest(self._algorithm): actual.hex()}
        if mtime_ns is not None:
            metadata[META_MTIME] = str(mtime_ns)
        key = store._key(self.name)
        if self._single:
            _call(self.name, lambda: self._bucket.put(key, self._buffer, metadata=metadata))
        else:
            # Every part left is the last: the spares go back first. Kept while the last
            # part waits for room, they could hold the very room it waits for (two uploads
            # committing at once, each holding the other's room, until PATIENCE ran out).
            self._buffers.close()
            if self._filled:
                part, counted = self._buffer, self._counted
                if counted:  # a spare: it stays whole, the last part goes in a copy of its own size
                    with memoryview(self._buffer) as view:
                        part, counted = bytearray(view[: self._filled]), False
                    self._buffers.put_back(self._buffer, True)
                else:
                    del part[self._filled :]
                self._buffer, self._filled, self._counted = bytearray(), 0, False
                self._send_part(part, counted)
            self._wait_parts()
            self._ledger.close(wait=False)  # no ledger now: this upload completes
            assert self._multipart is not None
            parts = sorted((n, etag) for n, (etag, _) in self._parts.items())
            multipart = self._multipart
            _call(self.name, lambda: self._bucket.complete_multipart(self._data, multipart, parts))
            with self._lock:
                self._multipart = None
            staged = _call(self.name, lambda: self._bucket.head(self._data))
            _copy(self._bucket, self._data, key, staged, metadata)
        head = _call(self.name, lambda: self._bucket.head(key))
        store._shared.remember(head.etag, self._algorithm, actual)
        self._done = True
        if self._single:
            self._finish(keep=False)
        else:
            # The file is in: deleting the staging object and the ledger need not delay the answer.
            store._shared.in_background(self._finish_quietly, False, f"trioftp-s3-clean {self.name[:40]}")
        return store._facts(self.name, head, actual)

    def abort(self, *, keep: bool) -> None:
        """Give up, at once: the clean-up (waiting for parts in flight, completing or aborting
        the multipart upload) goes on in a thread of its own.

        The server calls this on its event loop, as the local store's abort is a
        close(); here it may wait on the engine for a minute when the engine is slow.
        `S3Store.settle()` waits for such clean-ups; `close()` does too.
        """
        if self._done:
            return
        self._done = True
        if self._single:
            return
        self._store._shared.in_background(self._finish_quietly, keep, f"trioftp-s3-abort {self.name[:40]}")

    def _finish_quietly(self, keep: bool) -> None:
        try:
            self._finish(keep=keep)
        except StorageError as exc:
            log.warning("upload of %r not cleaned up (%s); the sweep will", self.name, str(exc))

    def _finish(self, *, keep: bool) -> None:
        self._done = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._ledger.close()  # before the last ledger or the deletes: no stale write after them
        if not self._single:
            self._buffers.put_back(self._buffer, self._counted)
            self._buffer, self._filled, self._counted = bytearray(), 0, False
        self._buffers.close()  # every part is done: the pool is shut down
        self._pending = []  # failed parts' errors: nothing to raise any more
        if self._single:
            return
        if keep and self._multipart is not None and self._parts:
            parts = _leading(sorted([n, e, s] for n, (e, s) in self._parts.items()), self._part_size)
            # Completed now (cheap: no bytes move), so the resume has an object to read back.
            try:
                if parts:
                    self._write_ledger(open_=False)
                    self._bucket.complete_multipart(self._data, self._multipart, parts)
                    return
            except (BucketError, StorageError) as exc:
                log.info("interrupted upload of %r left to its ledger: %s", self.name, str(exc))
                return
        if self._multipart is not None:
            _quietly(lambda: self._bucket.abort_multipart(self._data, self._multipart or ""))
        if not keep:
            _quietly(lambda: self._bucket.delete_many([self._data, f"{self._attempt}ledger"]))


def _leading(parts: Sequence[Sequence[Any]], part_size: int) -> list[tuple[int, str]]:
    """The parts 1..n received without a gap, each a whole part: what a resume can build on."""
    leading: list[tuple[int, str]] = []
    for expected, (number, etag, size) in enumerate(sorted(parts, key=lambda part: int(part[0])), 1):
        if number != expected or size % part_size:
            break
        leading.append((number, etag))
    return leading


def _conforms(store: S3Store, handle: S3ReadHandle, upload: S3Upload) -> tuple[Store, ReadHandle, Upload]:
    """Never called: mypy checks here that the three implement the interface."""
    return store, handle, upload
