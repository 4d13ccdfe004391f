"""The served folder: the only code that touches it.

Every name is resolved inside the root, with symlinks that lead out refused.
Uploads go to a partial file under `.trioftp/partial/` and become visible only
by an atomic rename after their size and digest check out, so a reader sees the
old file or the new one, never a mix. All methods are synchronous; the Trio
layer decides which run on a worker thread.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import logging
import os
import re
import secrets
import stat as stat_module
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import attrs

from trioftp.digests import hash_file, hash_range, new_hasher
from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.messages import Entry, Kind
from trioftp.protocol.names import BadName, check_path, check_segment
from trioftp.syscalls import rename_no_replace
from trioftp.writeback import EarlyWriteback

log = logging.getLogger("trioftp.storage")

STATE_DIR = ".trioftp"
COPY_PREFIX, COPY_SUFFIX = ".trioftp-", ".part"  # an upload being copied onto another mount
COPY_NAME = re.compile(rf"{re.escape(COPY_PREFIX)}[0-9a-f]{{16}}{re.escape(COPY_SUFFIX)}")
COPY_NOTE_SUFFIX = ".copy"  # in the partial folder: names a named copy, for the sweep after a crash


class StorageError(Exception):
    """A refused or failed storage operation, with the wire code to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class FileFacts:
    name: str
    kind: Kind
    size: int
    mtime_ns: int
    digest: bytes | None = None


def _os_error(exc: OSError, name: str) -> StorageError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return StorageError(ErrorCode.NOT_FOUND, f"{name!r} does not exist")
    if isinstance(exc, PermissionError):
        return StorageError(ErrorCode.PERMISSION_DENIED, f"{name!r}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return StorageError(ErrorCode.WRONG_KIND, f"{name!r} is a folder")
    if isinstance(exc, FileExistsError):
        return StorageError(ErrorCode.ALREADY_EXISTS, f"{name!r} already exists")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(ErrorCode.NO_SPACE, "no space left on the server")
    if exc.errno == errno.ENOTEMPTY:
        return StorageError(ErrorCode.BAD_REQUEST, f"folder {name!r} is not empty")
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(ErrorCode.BAD_NAME, f"{name!r} is too long for the server's file system")
    if exc.errno == errno.EXDEV:
        return StorageError(
            ErrorCode.BAD_REQUEST, f"{name!r}: cannot move between file systems of the server"
        )
    return StorageError(ErrorCode.INTERNAL, f"{name!r}: {exc.strerror or exc}")


def _parent_is_a_file(name: str) -> StorageError:
    return StorageError(ErrorCode.WRONG_KIND, f"a parent of {name!r} is a file, not a folder")


def _no_symlink_below(base: str, relative: str) -> bool:
    """True if no segment of `relative` under the real folder `base` is a symlink.

    Like os.path.realpath (not strict), a segment that cannot be looked at
    (missing, under a file, no permission) counts as no link; nothing below it
    can be looked at either.
    """
    current = base
    for segment in relative.split("/"):
        current = f"{current}/{segment}"
        try:
            st = os.lstat(current)
        except OSError:
            return True
        if stat_module.S_ISLNK(st.st_mode):
            return False
    return True


def _rename_no_replace(old: Path, new: Path) -> None:
    """Rename, failing with FileExistsError if `new` exists, atomically where the OS can."""
    try:
        rename_no_replace(old, new)
    except NotImplementedError:
        if os.path.lexists(new):  # the check-then-rename race stays where renameat2 is missing
            raise FileExistsError(errno.EEXIST, "exists", os.fspath(new)) from None
        os.rename(old, new)


def _make_parents(path: Path, name: str) -> None:
    """Create the missing folders above `path` (blocking)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _parent_is_a_file(name) from None


class DigestCache:
    """Digests of stored files, keyed by what changes when the file does.

    (device, inode, size, mtime, ctime): a rewrite in place changes mtime and
    ctime, a replacement changes the inode, so a stale digest is never served.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, int, int, int, int, str], bytes] = OrderedDict()
        self._lock = threading.Lock()  # filled from worker threads

    @staticmethod
    def key(st: os.stat_result, algorithm: str) -> tuple[int, int, int, int, int, str]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, algorithm)

    def get(self, st: os.stat_result, algorithm: str) -> bytes | None:
        with self._lock:
            return self._entries.get(self.key(st, algorithm))

    def put(self, st: os.stat_result, algorithm: str, digest: bytes) -> None:
        with self._lock:
            self._entries[self.key(st, algorithm)] = digest
            self._entries.move_to_end(self.key(st, algorithm))
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


class Storage:
    """The served root folder.

    Args:
        root: the folder; created if missing.
        partial_ttl: seconds an interrupted upload is kept for resume.
        max_file_size: largest upload accepted.
    """

    def __init__(self, root: Path, *, partial_ttl: float = 86400.0, max_file_size: int = 2**40) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.partial_dir = self.root / STATE_DIR / "partial"
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.partial_ttl = partial_ttl
        self.max_file_size = max_file_size
        self.digests = DigestCache()
        self._active_partials: set[str] = set()
        self._active_lock = threading.Lock()
        self.top = self.root  # the served root, also for views scoped to a home folder
        self._root_identity: tuple[str, int, int] | None = None  # (root, st_dev, st_ino), see path_of

    def scoped(self, home: str) -> Storage:
        """A view of this storage whose root is `home` (a user's home folder).

        The view shares the partial folder, the digest cache and the upload
        bookkeeping, so two users' uploads still never share a partial file.
        Every name resolved through it stays inside `home`.

        Raises:
            StorageError: the home folder leads outside the root or is reserved.
        """
        if not home:
            return self
        real = Path(os.path.realpath(self.path_of(home)))
        real.mkdir(parents=True, exist_ok=True)
        view = copy.copy(self)
        view.root = real
        view._root_identity = None
        return view

    # ------------------------------------------------------------------ names

    def path_of(self, name: str, *, allow_root: bool = False, follow: bool = True) -> Path:
        """The real path for a wire name, checked to stay inside the root.

        Args:
            follow: resolve a symlink in the last segment too (reads); False
                for operations on the entry itself (delete, rename).

        Raises:
            StorageError: BAD_NAME for names the protocol refuses,
                PERMISSION_DENIED for the reserved state folder or a path that
                leads outside the root.
        """
        try:
            check_path(name, allow_root=allow_root)
        except BadName as exc:
            raise StorageError(ErrorCode.BAD_NAME, str(exc)) from None
        if name == "":
            return self.root
        if name.split("/", 1)[0] == STATE_DIR:
            raise StorageError(ErrorCode.PERMISSION_DENIED, f"{STATE_DIR!r} is reserved for the server")
        parent, _, last = name.rpartition("/")
        # What os.path.realpath would give, by one lstat per segment below the
        # root instead of one per segment of the whole path, twice: when no
        # segment is a symlink (and the root is still the folder it was) the
        # real path is the name itself under the root. A symlink anywhere
        # takes the full realpath and check.
        root = str(self.root)
        plain = self._root_unchanged(root)
        if plain and (not parent or _no_symlink_below(root, parent)):
            real_parent = Path(f"{root.rstrip('/')}/{parent}") if parent else self.root
        else:
            real_parent = Path(os.path.realpath(self.root / parent))
            self._check_inside(real_parent, name)
            plain = False
        path = real_parent / last
        if follow and not (plain and _no_symlink_below(str(real_parent).rstrip("/"), last)):
            self._check_inside(Path(os.path.realpath(path)), name)
        return path

    def _root_unchanged(self, root: str) -> bool:
        """True if `root` is still the folder (device and inode) first seen there: one lstat."""
        try:
            st = os.lstat(root)
        except OSError:
            return False
        if not stat_module.S_ISDIR(st.st_mode):
            return False
        identity = (root, st.st_dev, st.st_ino)
        known = self._root_identity
        if known is None or known[0] != root:
            # First look at this root (it was just resolved: the constructor, scoped()).
            self._root_identity = identity if os.path.realpath(root) == root else None
            return self._root_identity is not None
        return known == identity

    def _check_inside(self, real: Path, name: str) -> None:
        real_s, root = str(real), str(self.root)
        if real_s != root and not real_s.startswith(root.rstrip("/") + "/"):
            raise StorageError(ErrorCode.PERMISSION_DENIED, f"{name!r} leads outside the served folder")

    # ------------------------------------------------------------------ reads

    def open_read(self, name: str) -> tuple[int, os.stat_result]:
        """Open a file for reading; the caller closes the fd."""
        path = self.path_of(name)
        try:
            # O_NONBLOCK: a FIFO in the root would otherwise hold this thread
            # until some local process writes to it; it is refused just below.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise _os_error(exc, name) from None
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise _os_error(exc, name) from None
        if not stat_module.S_ISREG(st.st_mode):
            os.close(fd)
            raise StorageError(ErrorCode.WRONG_KIND, f"{name!r} is not a file")
        os.set_blocking(fd, True)
        return fd, st

    def cached_digest(self, st: os.stat_result, algorithm: str) -> bytes | None:
        return self.digests.get(st, algorithm)

    def digest_of_open(self, fd: int, st: os.stat_result, algorithm: str) -> bytes:
        """The digest of an open file, from the cache or by reading it (blocking)."""
        digest = self.digests.get(st, algorithm)
        if digest is None:
            try:
                digest = hash_file(fd, st.st_size, algorithm)
            except EOFError:
                raise StorageError(
                    ErrorCode.BUSY, "the file shrank while it was being hashed; try again"
                ) from None
            if self.unchanged(fd, st):
                self.digests.put(st, algorithm, digest)
            else:
                raise StorageError(ErrorCode.BUSY, "the file changed while it was being hashed; try again")
        return digest

    @staticmethod
    def unchanged(fd: int, st: os.stat_result) -> bool:
        now = os.fstat(fd)
        if now.st_nlink != st.st_nlink:
            # Replaced by an upload's rename, or deleted: that moves ctime, not the
            # bytes still open here, so a reader finishes with the old file.
            return (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
        return DigestCache.key(now, "") == DigestCache.key(st, "")

    def stat(self, name: str) -> tuple[FileFacts, os.stat_result]:
        path = self.path_of(name)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _os_error(exc, name) from None
        return self._facts(name, st), st

    def _facts(self, name: str, st: os.stat_result, digest: bytes | None = None) -> FileFacts:
        kind = Kind.DIR if stat_module.S_ISDIR(st.st_mode) else Kind.FILE
        size = 0 if kind is Kind.DIR else st.st_size
        return FileFacts(name=name, kind=kind, size=size, mtime_ns=max(st.st_mtime_ns, 0), digest=digest)

    def list(self, folder: str, kinds: bool = True) -> list[Entry]:
        """Entries of a folder, sorted by name; what cannot be named on the wire is left out.

        Without `kinds` (a client that does not read kinds "link" and "other"),
        a link is listed as what it leads to and what is not served is left out.
        """
        path = self.path_of(folder, allow_root=True)
        entries: list[Entry] = []
        try:
            scan = os.scandir(path)
        except OSError as exc:
            if isinstance(exc, NotADirectoryError):
                raise StorageError(ErrorCode.WRONG_KIND, f"{folder!r} is not a folder") from None
            raise _os_error(exc, folder) from None
        with scan:
            for item in scan:
                entry = self._entry(path, item, kinds)
                if entry is not None and (kinds or entry.kind is not Kind.OTHER):
                    entries.append(entry)
        entries.sort(key=lambda e: e.name)
        return entries

    def _entry(self, folder_path: Path, item: os.DirEntry[str], kinds: bool = True) -> Entry | None:
        """The listing's line for `item`; None for what listings leave out (spec 11.3)."""
        if folder_path == self.root and item.name == STATE_DIR:
            return None
        if COPY_NAME.fullmatch(item.name):
            return None  # an upload being copied into place (see _copy_into_place)
        try:
            check_segment(item.name)
            item.name.encode("utf-8")
        except (BadName, UnicodeEncodeError):
            return None  # a local name the protocol cannot carry (control chars, bad bytes)
        link = False
        try:
            link = item.is_symlink()
            if link:
                self._check_inside(Path(os.path.realpath(item.path)), item.name)
            st = item.stat()
        except FileNotFoundError:
            return _other(item) if link else None  # a link to nothing; else gone since the scan
        except (OSError, StorageError):  # a link out of the root, or an item we may not examine
            return _other(item)
        if not (stat_module.S_ISREG(st.st_mode) or stat_module.S_ISDIR(st.st_mode)):
            return _other(item)
        facts = self._facts(item.name, st)
        # A link says so (spec 11.3): a client walking the tree must not follow it.
        kind = Kind.LINK if link and kinds else facts.kind
        return Entry(name=item.name, kind=kind, size=facts.size, mtime_ns=facts.mtime_ns)

    # ---------------------------------------------------------------- changes

    def delete(self, name: str) -> None:
        path = self.path_of(name, follow=False)
        try:
            if path.is_dir() and not path.is_symlink():
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise self._not_empty(path, name) from None
            raise _os_error(exc, name) from None

    def _not_empty(self, path: Path, name: str) -> StorageError:
        """Say what keeps a folder: a client that listed it empty cannot see why otherwise."""
        try:
            with os.scandir(path) as scan:
                items = list(scan)
            hidden = sum(1 for item in items if _unserved(self._entry(path, item)))
        except OSError:
            return _os_error(OSError(errno.ENOTEMPTY, "not empty"), name)
        if not hidden:
            return StorageError(ErrorCode.BAD_REQUEST, f"folder {name!r} is not empty")
        return StorageError(
            ErrorCode.BAD_REQUEST,
            f"folder {name!r} holds {hidden} entr{'y' if hidden == 1 else 'ies'} the server does not serve"
            " (FIFOs or devices, links out of the root or to nothing, unreadable items, names the"
            " protocol cannot carry); remove them on the server",
        )

    def rename(self, old: str, new: str, *, replace: bool) -> None:
        old_path = self.path_of(old, follow=False)
        new_path = self.path_of(new, follow=False)
        if not os.path.lexists(old_path):
            raise StorageError(ErrorCode.NOT_FOUND, f"{old!r} does not exist")
        if os.path.lexists(new_path) and not replace:
            raise StorageError(ErrorCode.ALREADY_EXISTS, f"{new!r} already exists")
        try:
            _make_parents(new_path, new)
            if replace:
                os.replace(old_path, new_path)
            else:
                _rename_no_replace(old_path, new_path)
        except FileExistsError:  # appeared since the check above
            raise StorageError(ErrorCode.ALREADY_EXISTS, f"{new!r} already exists") from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise StorageError(ErrorCode.BAD_REQUEST, f"cannot move {old!r} into itself") from None
            raise _os_error(exc, new) from None

    def mkdir(self, name: str) -> None:
        path = self.path_of(name)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StorageError(ErrorCode.ALREADY_EXISTS, f"{name!r} exists and is not a folder") from None
        except NotADirectoryError:
            raise _parent_is_a_file(name) from None
        except OSError as exc:
            raise _os_error(exc, name) from None

    # ---------------------------------------------------------------- uploads

    def begin_upload(
        self, name: str, size: int, *, algorithm: str, digest: bytes | None = None, resume: bool = False
    ) -> Upload:
        """Start an upload into a partial file (blocking: may hash a resumed prefix).

        A partial is keyed by name, size, algorithm and digest. Only one upload
        at a time may own a key; a second concurrent upload of the same key gets
        a private temporary file, so two uploads never write into one file.
        """
        target = self.path_of(name)
        if size > self.max_file_size:
            raise StorageError(ErrorCode.TOO_LARGE, f"{size} bytes is over the limit of {self.max_file_size}")
        if target.is_dir():
            raise StorageError(ErrorCode.WRONG_KIND, f"{name!r} is a folder")
        for parent in target.parents:  # refuse now, not after the whole file came
            # One stat per parent: is_dir() then lexists() would race with a
            # concurrent upload creating that very folder in between.
            try:
                is_folder = stat_module.S_ISDIR(os.stat(parent).st_mode)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                raise _parent_is_a_file(name) from None
            if is_folder:
                break
            raise _parent_is_a_file(name)
        where = os.fspath(target.relative_to(self.top))  # not `name`: users' homes differ
        key = hashlib.sha256(
            f"{where}\0{size}\0{algorithm}\0{digest.hex() if digest else ''}".encode()
        ).hexdigest()[:40]
        with self._active_lock:
            owns_key = key not in self._active_partials
            if owns_key:
                self._active_partials.add(key)
        partial = self.partial_dir / (f"{key}.part" if owns_key else f"{key}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._release(key if owns_key else None)
            raise _os_error(exc, name) from None
        upload = Upload(
            storage=self, name=name, target=target, partial=partial, fd=fd, size=size,
            algorithm=algorithm, expected_digest=digest, key=key if owns_key else None,
        )  # fmt: skip
        try:
            upload.start(resume=resume and owns_key)
        except BaseException:
            upload.abort(keep=False)
            raise
        return upload

    def _release(self, key: str | None) -> None:
        if key is not None:
            with self._active_lock:
                self._active_partials.discard(key)

    def clean_partials(self, *, at_start: bool = False) -> int:
        """Remove expired partial uploads (and, at start, every private temp file and
        every named copy a crash left behind)."""
        removed = 0
        now = time.time()
        for item in os.scandir(self.partial_dir):
            if item.name.endswith(COPY_NOTE_SUFFIX):
                if at_start:
                    removed += self._sweep_copy(Path(item.path))
                continue
            stale = item.name.endswith(".tmp") and at_start
            try:
                expired = now - item.stat().st_mtime > self.partial_ttl
            except FileNotFoundError:
                continue
            key = item.name.split(".", 1)[0]
            with self._active_lock:
                busy = key in self._active_partials and item.name.endswith(".part")
            if (stale or expired) and not busy:
                try:
                    os.unlink(item.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _sweep_copy(self, note: Path) -> int:
        """Remove the copy a note names (if a crash left it) and the note; 1 if a copy went."""
        removed = 0
        try:
            copy = Path(note.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            copy = None
        # The note is ours, but check anyway: only a copy's name, only inside the root.
        if (
            copy is not None
            and COPY_NAME.fullmatch(copy.name)
            and Path(os.path.realpath(copy.parent)).is_relative_to(self.top)
        ):
            try:
                copy.unlink()
                removed = 1
                log.info("removed %s, a copy left by an interrupted upload", copy)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove %s, a copy left by an interrupted upload: %s", copy, exc)
                return 0  # keep the note: the next start tries again
        note.unlink(missing_ok=True)
        return removed


class Upload:
    """One upload in progress. `write()` and `commit()` block: run them off the event loop."""

    def __init__(
        self,
        *,
        storage: Storage,
        name: str,
        target: Path,
        partial: Path,
        fd: int,
        size: int,
        algorithm: str,
        expected_digest: bytes | None,
        key: str | None,
    ) -> None:
        self.storage = storage
        self.name = name
        self.target = target
        self.partial = partial
        self.size = size
        self.algorithm = algorithm
        self.expected_digest = expected_digest
        self.offset = 0  # where the client starts sending
        self.written = 0  # bytes in the partial file so far
        self._fd: int | None = fd
        self._key = key
        self._hasher = new_hasher(algorithm)
        self._writeback = EarlyWriteback(fd)

    def start(self, *, resume: bool) -> None:
        assert self._fd is not None
        held = os.fstat(self._fd).st_size
        if resume and 0 < held <= self.size:
            hash_range(self._fd, 0, held, self._hasher)
            self.offset = self.written = held
            self._writeback.start = held
        elif held:
            os.ftruncate(self._fd, 0)

    def write(self, blocks: Sequence[bytes | memoryview]) -> None:
        """Append blocks (bytes, or views of reused block buffers) to the partial file and hash them."""
        assert self._fd is not None
        total = sum(len(b) for b in blocks)
        if self.written + total > self.size:
            raise StorageError(ErrorCode.BAD_REQUEST, f"more than the announced {self.size} bytes")
        try:
            _write_all(self._fd, blocks, self.written)
        except OSError as exc:
            raise _os_error(exc, self.name) from None
        for block in blocks:
            self._hasher.update(block)
        self.written += total
        self._writeback.wrote_up_to(self.written)

    def commit(self, size: int, digest: bytes | None, mtime_ns: int | None = None) -> FileFacts:
        """Check size and digest, then make the file visible atomically.

        `digest` None is for the legacy protocol, which sends none: only the
        size is checked then.

        Raises:
            StorageError: CHECKSUM_MISMATCH or BAD_REQUEST; the partial is then
                discarded and the old file, if any, stays as it was.
        """
        assert self._fd is not None
        if size != self.size or self.written != self.size:
            raise StorageError(
                ErrorCode.BAD_REQUEST,
                f"END says {size} bytes, PUT announced {self.size}, {self.written} arrived",
            )
        actual = self._hasher.digest()
        if (digest is not None and actual != digest) or (
            self.expected_digest is not None and actual != self.expected_digest
        ):
            raise StorageError(ErrorCode.CHECKSUM_MISMATCH, f"digest of {self.name!r} does not match")
        try:
            os.fsync(self._fd)
            if mtime_ns is not None:
                os.utime(self._fd, ns=(mtime_ns, mtime_ns))
            _make_parents(self.target, self.name)
            if self.target.is_dir():
                raise StorageError(ErrorCode.WRONG_KIND, f"{self.name!r} is a folder")
            copied = False
            try:
                os.replace(self.partial, self.target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                st = _copy_into_place(self._fd, self.size, self.target, self.storage.partial_dir)
                copied = True
            else:
                st = os.fstat(self._fd)
            _fsync_dir(self.target.parent)
        except OSError as exc:
            raise _os_error(exc, self.name) from None
        self.storage.digests.put(st, self.algorithm, actual)
        self._close(unlink=copied)
        return self.storage._facts(self.name, st, actual)

    def abort(self, *, keep: bool) -> None:
        """Give up. With `keep`, a resumable partial stays for a later resume."""
        if self._fd is None:
            return
        keep = keep and self._key is not None and self.written > 0
        self._close(unlink=not keep)

    def _close(self, *, unlink: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)
        self.storage._release(self._key)


def _other(item: os.DirEntry[str]) -> Entry:
    """A listing's line for an item that is there but not served: the name is taken (spec 11.3)."""
    try:
        mtime_ns = max(item.stat(follow_symlinks=False).st_mtime_ns, 0)
    except OSError:
        mtime_ns = 0
    return Entry(name=item.name, kind=Kind.OTHER, size=0, mtime_ns=mtime_ns)


def _unserved(entry: Entry | None) -> bool:
    return entry is None or entry.kind is Kind.OTHER


def _write_all(fd: int, blocks: Sequence[bytes | memoryview], offset: int) -> None:
    views = [memoryview(b) for b in blocks if b]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _copy_into_place(fd: int, size: int, target: Path, notes: Path) -> os.stat_result:
    """Put a copy of the file `fd` at `target` atomically; return the copy's stat.

    For a target on another file system than the partial (a folder of the root
    that is a mount point), where rename fails with EXDEV: the bytes go to a
    new file beside the target, are synced, and that file is renamed over the
    target, so readers still see the old file or the whole new one. Where the
    file system can, the copy has no name until it is whole (O_TMPFILE), so a
    crash mid-copy leaves nothing behind; elsewhere it is a hidden
    `.trioftp-*.part`, which listings leave out, and a note in `notes` (the
    partial folder) names it until it is renamed or removed, so that the next
    start removes what a crash left.
    """
    source = os.fstat(fd)
    mode = stat_module.S_IMODE(source.st_mode)
    token = secrets.token_hex(8)
    temp = target.parent / f"{COPY_PREFIX}{token}{COPY_SUFFIX}"
    note = notes / f"{token}{COPY_NOTE_SUFFIX}"
    out, unnamed = _open_copy(target.parent, temp, mode, note)
    try:
        _copy_bytes(fd, out, size)
        os.utime(out, ns=(source.st_atime_ns, source.st_mtime_ns))
        os.fsync(out)
        if unnamed:
            _name_unnamed(out, temp)
        os.replace(temp, target)
        return os.fstat(out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    finally:
        os.close(out)
        with contextlib.suppress(OSError):
            note.unlink(missing_ok=True)


def _open_copy(folder: Path, temp: Path, mode: int, note: Path) -> tuple[int, bool]:
    """An fd to copy into: unnamed in `folder` if the OS and file system allow, else `temp`,
    which `note` names first (a crash may come between the two)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(folder, tmpfile | os.O_WRONLY | os.O_CLOEXEC, mode), True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    note.write_text(str(temp), encoding="utf-8")
    try:
        return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), False
    except BaseException:
        note.unlink(missing_ok=True)
        raise


def _name_unnamed(fd: int, path: Path) -> None:
    """Give an O_TMPFILE file a name: linkat(/proc/self/fd/N, AT_SYMLINK_FOLLOW)."""
    # With a dir_fd, os.link calls linkat with the flag; without one it calls
    # link(), which would try to link the /proc symlink itself (EXDEV).
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _copy_bytes(source: int, out: int, size: int) -> None:
    """Copy `size` bytes of `source` from its start to `out` (sendfile, else reads and writes)."""
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(out, source, offset, min(size - offset, 1 << 30))
            if sent == 0:
                raise OSError(errno.EIO, "the partial file shrank while it was being copied")
            offset += sent
        return
    except OSError as exc:
        # No file-to-file sendfile here (not Linux; a file system without splice).
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP) or offset:
            raise
    while offset < size:
        chunk = os.pread(source, min(size - offset, 1 << 20), offset)
        if not chunk:
            raise OSError(errno.EIO, "the partial file shrank while it was being copied")
        _write_all(out, [chunk], offset)
        offset += len(chunk)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
