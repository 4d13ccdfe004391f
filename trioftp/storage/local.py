"""The served folder: the only code that touches it.

Every name is opened relative to an open descriptor of the root (or of a
user's home), never by path string, so nothing a client or a local user
swaps between a check and a use can lead outside: see `trioftp.disk.beneath`.
Symlinks that stay inside are followed; those that lead out are refused.
Uploads go to a partial file under `.trioftp/partial/` and become visible only
by an atomic rename, on descriptors, after their size and digest check out, so
a reader sees the old file or the new one, never a mix. All methods are
synchronous; the Trio layer decides which run on a worker thread.
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
from collections.abc import Iterator, Sequence
from pathlib import Path

from trioftp.disk.beneath import MAX_LINKS, LeadsOutside, beneath_path, open_beneath, path_of_fd
from trioftp.disk.digests import hash_file, hash_range, new_hasher
from trioftp.disk.syscalls import rename_no_replace
from trioftp.disk.writeback import EarlyWriteback
from trioftp.protocol.names import BadName, check_path, check_segment
from trioftp.storage.interface import FileFacts, Kind, Listed, Problem, StorageError

log = logging.getLogger("trioftp.storage")

STATE_DIR = ".trioftp"
COPY_PREFIX, COPY_SUFFIX = ".trioftp-", ".part"  # an upload being copied onto another mount
COPY_NAME = re.compile(rf"{re.escape(COPY_PREFIX)}[0-9a-f]{{16}}{re.escape(COPY_SUFFIX)}")
COPY_NOTE_SUFFIX = ".copy"  # in the partial folder: names a named copy, for the sweep after a crash


def _os_error(exc: OSError, name: str) -> StorageError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return StorageError(Problem.NOT_FOUND, f"{name!r} does not exist")
    if isinstance(exc, PermissionError):
        return StorageError(Problem.DENIED, f"{name!r}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return StorageError(Problem.WRONG_KIND, f"{name!r} is a folder")
    if isinstance(exc, FileExistsError):
        return StorageError(Problem.EXISTS, f"{name!r} already exists")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(Problem.NO_SPACE, "no space left on the server")
    if exc.errno == errno.ENOTEMPTY:
        return StorageError(Problem.NOT_EMPTY, f"folder {name!r} is not empty")
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(Problem.BAD_NAME, f"{name!r} is too long for the server's file system")
    if exc.errno == errno.EXDEV:
        return StorageError(Problem.BAD_REQUEST, f"{name!r}: cannot move between file systems of the server")
    return StorageError(Problem.INTERNAL, f"{name!r}: {exc.strerror or exc}")


def _parent_is_a_file(name: str) -> StorageError:
    return StorageError(Problem.WRONG_KIND, f"a parent of {name!r} is a file, not a folder")


def _outside(name: str) -> StorageError:
    return StorageError(Problem.DENIED, f"{name!r} leads outside the served folder")


def _reserved(name: str = STATE_DIR) -> StorageError:
    return StorageError(Problem.DENIED, f"{STATE_DIR!r} is reserved for the server")


def _rename_no_replace(old_dir: int, old: str, new_dir: int, new: str) -> None:
    """Rename on descriptors, failing with FileExistsError if `new` exists, atomically where the OS can."""
    try:
        rename_no_replace(old, new, old_dir_fd=old_dir, new_dir_fd=new_dir)
    except NotImplementedError:
        if _lstat_at(new_dir, new) is not None:  # the check-then-rename race stays where renameat2 is missing
            raise FileExistsError(errno.EEXIST, "exists", new) from None
        os.rename(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir)


def _lstat_at(folder: int, name: str) -> os.stat_result | None:
    """The entry `name` in `folder` itself (a link is not followed); None if there is none."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


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


def _make_and_enter(folder: int, name: str) -> int:
    """The folder `name` in `folder`, made if missing, opened never through a link (ELOOP/ENOTDIR)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=folder)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)


class _HeldFolders:
    """The open root and partial folder: closed by `close()`, or when no storage holds them."""

    def __init__(self, root: Path) -> None:
        self.top = self.partial = -1
        self.top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            state = _make_and_enter(self.top, STATE_DIR)
            try:
                self.partial = _make_and_enter(state, "partial")
            finally:
                os.close(state)
        except BaseException:
            os.close(self.top)
            raise

    def close(self) -> None:
        for fd in (self.top, self.partial):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.top = self.partial = -1

    def __del__(self) -> None:
        self.close()


class LocalStore:
    """The served root folder.

    Args:
        root: the folder; created if missing.
        partial_ttl: seconds an interrupted upload is kept for resume.
        max_file_size: largest upload accepted.

    The root is opened once: the server goes on serving that folder even if
    it is renamed or a symlink takes its name meanwhile, as a process keeps
    its working folder. `close()` gives the descriptors back.
    """

    quick = True  # opens and stats are local syscalls: cheaper inline than on a thread

    def __init__(self, root: Path, *, partial_ttl: float = 86400.0, max_file_size: int = 2**40) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        # Absolute links inside may name the root by its real path or by the path it was
        # configured as (through a link, e.g. /srv -> /data/srv): both count as inside.
        self._top_paths = tuple(dict.fromkeys((str(self.root), os.path.abspath(root))))
        self._root_paths = self._top_paths  # the same for this view's own root (its home)
        self.partial_dir = self.root / STATE_DIR / "partial"  # made, beneath the root, by _HeldFolders
        self.partial_ttl = partial_ttl
        self.max_file_size = max_file_size
        self.digests = DigestCache()
        self._active_partials: set[str] = set()
        self._active_lock = threading.Lock()
        self.top = self.root  # the served root, also for views scoped to a home folder
        self.home = ""  # this view's folder under the top ("" for the top itself)
        self._folders = _HeldFolders(self.root)  # shared with the views, closed with the last of them
        self._top_fd = self._folders.top
        self._partial_fd = self._folders.partial
        self._reserved_folders = frozenset(
            _identity(os.stat(path, dir_fd=self._top_fd)) for path in (STATE_DIR, f"{STATE_DIR}/partial")
        )

    def close(self) -> None:
        """Close the descriptors of the root and the partial folder, for this storage and its views."""
        self._folders.close()

    def scoped(self, home: str) -> LocalStore:
        """A view of this storage whose root is `home` (a user's home folder), created if missing.

        The view shares the partial folder, the digest cache and the upload
        bookkeeping, so two users' uploads still never share a partial file.
        Every name resolved through it stays inside `home`.

        Raises:
            StorageError: the home folder leads outside the root or is reserved.
        """
        if not home:
            return self
        self._check_name(home)
        with self._base() as base:
            self._make_folders(base, home)
            with self._opened_folder(base, home) as folder:
                real = path_of_fd(folder)
        view = copy.copy(self)
        view.home = f"{self.home}/{home}" if self.home else home
        view.root = Path(real) if real else self.root / home
        view._root_paths = tuple(
            dict.fromkeys((str(view.root), *(f"{path.rstrip('/')}/{home}" for path in self._root_paths)))
        )
        return view

    # ------------------------------------------------------------------ names

    @staticmethod
    def _check_name(name: str, *, allow_root: bool = False) -> None:
        """Refuse names the protocol refuses (BAD_NAME) and the reserved state folder."""
        try:
            check_path(name, allow_root=allow_root)
        except BadName as exc:
            raise StorageError(Problem.BAD_NAME, str(exc)) from None
        if name.split("/", 1)[0] == STATE_DIR:
            raise _reserved()

    @contextlib.contextmanager
    def _base(self) -> Iterator[int]:
        """The descriptor every name of this view is resolved beneath: the root, or the home in it."""
        if not self.home:
            yield self._top_fd
            return
        try:
            fd = open_beneath(self._top_fd, self.home, os.O_PATH | os.O_DIRECTORY, base_path=self._top_paths)
        except LeadsOutside:
            raise _outside(self.home) from None
        except OSError as exc:
            raise _os_error(exc, self.home) from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _open(self, base: int, relative: str, flags: int, name: str, *, follow: bool = True) -> int:
        """`relative` opened beneath `base`, with errors in the wire's words about `name`."""
        try:
            return open_beneath(base, relative, flags, follow=follow, base_path=self._root_paths)
        except LeadsOutside:
            raise _outside(name) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(Problem.BAD_REQUEST, f"{name!r}: too many levels of symlinks") from None
            raise _os_error(exc, name) from None

    def _folder_fd(self, base: int, relative: str, name: str, flags: int = os.O_PATH) -> int:
        """A folder beneath `base` (links that stay inside followed), refused if it is reserved."""
        if not relative and flags == os.O_PATH:
            return os.dup(base)
        fd = self._open(base, relative, flags | os.O_DIRECTORY, name)
        try:
            self._refuse_reserved(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _opened_folder(self, base: int, relative: str, name: str | None = None) -> Iterator[int]:
        fd = self._folder_fd(base, relative, relative if name is None else name)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _located(self, base: int, name: str, *, follow: bool) -> Iterator[tuple[int, str]]:
        """The folder that holds the entry `name` (open) and the entry's own name in it.

        With `follow`, a symlink in the last segment is followed (beneath the
        base, as many times as the kernel would) until the entry is not one, so
        what the caller opens with O_NOFOLLOW in that folder is what the name
        leads to, and its folder has been checked like any other.
        """
        relative = name
        for _ in range(MAX_LINKS + 1):
            parent, _, last = relative.rpartition("/")
            if last in ("", ".", ".."):  # a link's text ends in a folder: resolve it all, beneath
                parent, last = relative, "."
            folder = self._folder_fd(base, parent, name)
            if not follow:
                break
            try:
                text = os.readlink(last, dir_fd=folder)
            except OSError:  # not a link (EINVAL), or not there: the caller says which
                break
            os.close(folder)
            if text.startswith("/"):
                rest = beneath_path(text, self._root_paths)
                if rest is None:
                    raise _outside(name)
                relative = rest
            else:
                relative = f"{parent}/{text}" if parent else text
        else:
            raise StorageError(Problem.BAD_REQUEST, f"{name!r}: too many levels of symlinks")
        try:
            yield folder, last
        finally:
            os.close(folder)

    def _open_entry(self, name: str, flags: int, *, again: bool = True) -> int:
        """Open what `name` leads to, a link in its last segment followed (beneath the base).

        The entry is located, then opened with O_NOFOLLOW: if it became a link in
        between, it is located once more, and a second change is BUSY.
        """
        with self._base() as base, self._located(base, name, follow=True) as (folder, last):
            try:
                fd = os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise _os_error(exc, name) from None
                fd = -1
        try:
            st = os.fstat(fd) if fd >= 0 else None
        except OSError as exc:
            os.close(fd)
            raise _os_error(exc, name) from None
        if st is None or stat_module.S_ISLNK(st.st_mode):  # a link appeared since it was located
            if fd >= 0:
                os.close(fd)
            if again:
                return self._open_entry(name, flags, again=False)
            raise StorageError(Problem.CHANGED, f"{name!r} is changing; try again")
        try:
            self._refuse_reserved(st)
        except StorageError:
            os.close(fd)
            raise
        return fd

    # ------------------------------------------------------------------ reads

    def open_read(self, name: str) -> LocalReadHandle:
        """Open a file for reading; the caller closes the handle."""
        self._check_name(name)
        # O_NONBLOCK: a FIFO in the root would otherwise hold this thread
        # until some local process writes to it; it is refused just below.
        fd = self._open_entry(name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise _os_error(exc, name) from None
        if not stat_module.S_ISREG(st.st_mode):
            os.close(fd)
            raise StorageError(Problem.WRONG_KIND, f"{name!r} is not a file")
        os.set_blocking(fd, True)
        return LocalReadHandle(self, name, fd, st)

    def stat(self, name: str, algorithm: str | None = None) -> FileFacts:
        self._check_name(name)
        fd = self._open_entry(name, os.O_PATH)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        digest = None
        if algorithm is not None and stat_module.S_ISREG(st.st_mode):
            digest = self.digests.get(st, algorithm)
        return self.facts(name, st, digest)

    def identical(
        self, name: str, size: int, digest: bytes, algorithm: str, mtime_ns: int | None
    ) -> FileFacts | None:
        handle = self.open_read(name)
        try:
            st = handle._st
            if st.st_size != size or handle.digest(algorithm) != digest:
                return None
            if mtime_ns is not None and st.st_mtime_ns != mtime_ns:
                # The bytes are there; the time the client brings is not, and a sync tool
                # comparing times would send the file again on every run (spec 11.2).
                os.utime(handle.fileno(), ns=(st.st_atime_ns, mtime_ns))
                st = os.fstat(handle.fileno())
                self.digests.put(st, algorithm, digest)
            return self.facts(name, st, digest)
        finally:
            handle.close()

    def describe(self) -> str:
        return str(self.root)

    def facts(self, name: str, st: os.stat_result, digest: bytes | None = None) -> FileFacts:
        """What a stat says of `name`, in storage terms."""
        kind = Kind.FOLDER if stat_module.S_ISDIR(st.st_mode) else Kind.FILE
        size = 0 if kind is Kind.FOLDER else st.st_size
        return FileFacts(name=name, kind=kind, size=size, mtime_ns=max(st.st_mtime_ns, 0), digest=digest)

    def list(self, folder: str) -> list[Listed]:
        """Entries of a folder, sorted by name; what cannot be named on the wire is left out."""
        self._check_name(folder, allow_root=True)
        try:
            fd = self._open_entry(folder, os.O_RDONLY | os.O_DIRECTORY) if folder else self._base_listing()
        except StorageError as exc:
            if exc.problem is Problem.NOT_FOUND and self._is_a_file(folder):
                raise StorageError(Problem.WRONG_KIND, f"{folder!r} is not a folder") from None
            raise
        entries: list[Listed] = []
        try:
            with self._base() as base, os.scandir(fd) as scan:
                for item in scan:
                    entry = self._entry(folder, item, base=base)
                    if entry is not None:
                        entries.append(entry)
        except OSError as exc:
            raise _os_error(exc, folder) from None
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.name)
        return entries

    def _base_listing(self) -> int:
        with self._base() as base:
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=base)

    def _is_a_file(self, name: str) -> bool:
        try:
            fd = self._open_entry(name, os.O_PATH)
        except StorageError:
            return False
        try:
            return not stat_module.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def _entry(self, folder: str, item: os.DirEntry[str], *, base: int | None = None) -> Listed | None:
        """The listing's line for `item` of `folder`; None for what listings leave out (spec 11.3)."""
        if folder == "" and item.name == STATE_DIR:
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
            st = (
                self._link_target(base, f"{folder}/{item.name}" if folder else item.name)
                if link
                else item.stat()
            )
        except FileNotFoundError:
            return _other(item) if link else None  # a link to nothing; else gone since the scan
        except (OSError, StorageError):  # a link out of the root, or an item we may not examine
            return _other(item)
        if not (stat_module.S_ISREG(st.st_mode) or stat_module.S_ISDIR(st.st_mode)):
            return _other(item)
        facts = self.facts(item.name, st)
        # A link says so (spec 11.3): a client walking the tree must not follow it.
        if link:
            return Listed(
                name=item.name, kind=Kind.LINK, size=facts.size, mtime_ns=facts.mtime_ns, leads_to=facts.kind
            )
        return Listed(name=item.name, kind=facts.kind, size=facts.size, mtime_ns=facts.mtime_ns)

    def _link_target(self, base: int | None, name: str) -> os.stat_result:
        """What the link `name` leads to, beneath the base; reserved folders count as out."""
        if base is None:
            with self._base() as opened:
                return self._link_target(opened, name)
        with self._located(base, name, follow=True) as (folder, last):
            st = os.stat(last, dir_fd=folder, follow_symlinks=False)
        self._refuse_reserved(st)
        return st

    # ---------------------------------------------------------------- changes

    def delete(self, name: str) -> None:
        self._check_name(name)
        with self._base() as base, self._located(base, name, follow=False) as (folder, last):
            try:
                st = os.stat(last, dir_fd=folder, follow_symlinks=False)
                self._refuse_reserved(st)
                if stat_module.S_ISDIR(st.st_mode):
                    os.rmdir(last, dir_fd=folder)
                else:
                    os.unlink(last, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise self._not_empty(folder, last, name) from None
                raise _os_error(exc, name) from None

    def _refuse_reserved(self, st: os.stat_result) -> None:
        """PERMISSION_DENIED for the state folders themselves, reached by a link to the root
        (`me/.trioftp` with `me` -> `.`): the first segment's name alone does not catch that."""
        if stat_module.S_ISDIR(st.st_mode) and _identity(st) in self._reserved_folders:
            raise _reserved()

    def _not_empty(self, parent: int, last: str, name: str) -> StorageError:
        """Say what keeps a folder: a client that listed it empty cannot see why otherwise."""
        try:
            fd = os.open(last, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                with os.scandir(fd) as scan:
                    # While `fd` is open: a DirEntry's stat() is an fstatat on it.
                    hidden = sum(1 for item in scan if _unserved(self._entry(name, item)))
            finally:
                os.close(fd)
        except OSError:
            return _os_error(OSError(errno.ENOTEMPTY, "not empty"), name)
        if not hidden:
            return StorageError(Problem.NOT_EMPTY, f"folder {name!r} is not empty")
        return StorageError(
            Problem.NOT_EMPTY,
            f"folder {name!r} holds {hidden} entr{'y' if hidden == 1 else 'ies'} the server does not serve"
            " (FIFOs or devices, links out of the root or to nothing, unreadable items, names the"
            " protocol cannot carry); remove them on the server",
        )

    def rename(self, old: str, new: str, *, replace: bool) -> None:
        self._check_name(old)
        self._check_name(new)
        with self._base() as base, self._located(base, old, follow=False) as (old_folder, old_last):
            try:
                moving = os.stat(old_last, dir_fd=old_folder, follow_symlinks=False)
            except OSError as exc:
                raise _os_error(exc, old) from None
            self._refuse_reserved(moving)
            parent, _, last = new.rpartition("/")
            with self._landing(base, parent, new) as landing:
                landing.make(new)
                there = _lstat_at(landing.fd, last)
                if there is not None:
                    self._refuse_reserved(there)
                if there is not None and not replace:
                    raise StorageError(Problem.EXISTS, f"{new!r} already exists")
                if there is not None and _identity(there) != _identity(moving):
                    _check_kinds(moving, there, old, new)
                try:
                    if replace:
                        _replace_at(old_folder, old_last, landing.fd, last)
                    else:
                        _rename_no_replace(old_folder, old_last, landing.fd, last)
                except FileExistsError:  # appeared since the check above
                    raise StorageError(Problem.EXISTS, f"{new!r} already exists") from None
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        raise StorageError(Problem.BAD_REQUEST, f"cannot move {old!r} into itself") from None
                    raise _os_error(exc, new) from None

    def mkdir(self, name: str) -> None:
        self._check_name(name)
        with self._base() as base:
            self._make_folders(base, name)

    def _make_folders(self, base: int, name: str) -> None:
        """Create the folder `name` and its parents below `base` (links inside followed), like mkdir -p."""
        with self._landing(base, name, name) as landing:
            landing.make(name, last_is_target=True)

    @contextlib.contextmanager
    def _landing(self, base: int, folder: str, name: str) -> Iterator[_Landing]:
        """The deepest existing folder on the way to `folder` (open), and the segments still missing."""
        segments = folder.split("/") if folder else []
        for depth in range(len(segments), -1, -1):
            try:
                fd = self._folder_fd(base, "/".join(segments[:depth]), name, os.O_RDONLY)
            except StorageError as exc:
                if exc.problem is Problem.NOT_FOUND:
                    continue  # missing, or below a file: a shorter prefix tells which
                raise
            break
        else:  # the base itself was not found (a home removed meanwhile)
            raise StorageError(Problem.NOT_FOUND, f"{name!r}: the folder it is in is gone")
        landing = _Landing(fd, segments[depth:])
        try:
            yield landing
        finally:
            landing.close()

    # ---------------------------------------------------------------- uploads

    def begin_upload(
        self, name: str, size: int, *, algorithm: str, digest: bytes | None = None, resume: bool = False
    ) -> Upload:
        """Start an upload into a partial file (blocking: may hash a resumed prefix).

        The folder the file will land in is opened now and held until the
        commit, which renames the partial into it by descriptor: nothing done
        to names meanwhile can make the file land anywhere else.

        A partial is keyed by name, size, algorithm and digest. Only one upload
        at a time may own a key; a second concurrent upload of the same key gets
        a private temporary file, so two uploads never write into one file.
        """
        self._check_name(name)
        if size > self.max_file_size:
            raise StorageError(Problem.TOO_LARGE, f"{size} bytes is over the limit of {self.max_file_size}")
        parent, _, last = name.rpartition("/")
        with self._base() as base, self._landing(base, parent, name) as landing:
            landing.refuse_a_file_on_the_way(name)
            if not landing.missing:
                self._refuse_a_folder(base, name)
            held = landing.detach()
        where = f"{self.home}/{name}" if self.home else name  # not `name` alone: users' homes differ
        key = hashlib.sha256(
            f"{where}\0{size}\0{algorithm}\0{digest.hex() if digest else ''}".encode()
        ).hexdigest()[:40]
        with self._active_lock:
            owns_key = key not in self._active_partials
            if owns_key:
                self._active_partials.add(key)
        partial = f"{key}.part" if owns_key else f"{key}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(
                partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self._partial_fd
            )
        except OSError as exc:
            held.close()
            self._release(key if owns_key else None)
            raise _os_error(exc, name) from None
        try:
            upload = Upload(
                storage=self, name=name, landing=held, last=last, partial=partial, fd=fd, size=size,
                algorithm=algorithm, expected_digest=digest, key=key if owns_key else None,
            )  # fmt: skip
        except BaseException:  # an unknown algorithm: give back what was taken above
            os.close(fd)
            held.close()
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=self._partial_fd)
            self._release(key if owns_key else None)
            raise
        try:
            upload.start(resume=resume and owns_key)
        except BaseException:
            upload.abort(keep=False)
            raise
        return upload

    def _refuse_a_folder(self, base: int, name: str) -> None:
        """WRONG_KIND if `name` is a folder, or a link to one (an upload would not replace it)."""
        try:
            st = self._link_target(base, name)
        except FileNotFoundError:
            return
        except StorageError as exc:
            if exc.problem is Problem.NOT_FOUND:
                return
            raise
        except OSError as exc:
            raise _os_error(exc, name) from None
        if stat_module.S_ISDIR(st.st_mode):
            raise StorageError(Problem.WRONG_KIND, f"{name!r} is a folder")

    def _release(self, key: str | None) -> None:
        if key is not None:
            with self._active_lock:
                self._active_partials.discard(key)

    def clean_partials(self, *, at_start: bool = False) -> int:
        """Remove expired partial uploads (and, at start, every private temp file and
        every named copy a crash left behind)."""
        removed = 0
        now = time.time()
        with os.scandir(self._partial_fd) as scan:
            items = list(scan)
        for item in items:
            if item.name.endswith(COPY_NOTE_SUFFIX):
                if at_start:
                    removed += self._sweep_copy(item.name)
                continue
            stale = item.name.endswith(".tmp") and at_start
            try:
                expired = now - item.stat(follow_symlinks=False).st_mtime > self.partial_ttl
            except FileNotFoundError:
                continue
            key = item.name.split(".", 1)[0]
            with self._active_lock:
                busy = key in self._active_partials and item.name.endswith(".part")
            if (stale or expired) and not busy:
                try:
                    os.unlink(item.name, dir_fd=self._partial_fd)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _sweep_copy(self, note: str) -> int:
        """Remove the copy a note names (if a crash left it) and the note; 1 if a copy went.

        The note holds the copy's name under the root (an absolute path in
        notes from before); only a copy's name, only beneath the root, goes.
        """
        removed = 0
        try:
            with open(note, encoding="utf-8", opener=self._partial_opener) as file:
                named = file.read()
        except (OSError, UnicodeDecodeError):
            named = ""
        top = str(self.top).rstrip("/") + "/"
        relative = named[len(top) :] if named.startswith(top) else "" if named.startswith("/") else named
        parent, _, last = relative.rpartition("/")
        if relative and COPY_NAME.fullmatch(last):
            try:
                with self._opened_folder(self._top_fd, parent, relative) as folder:
                    os.unlink(last, dir_fd=folder)
                removed = 1
                log.info("removed %s, a copy left by an interrupted upload", relative)
            except (FileNotFoundError, StorageError):
                pass
            except OSError as exc:
                log.warning("could not remove %s, a copy left by an interrupted upload: %s", relative, exc)
                return 0  # keep the note: the next start tries again
        with contextlib.suppress(FileNotFoundError):
            os.unlink(note, dir_fd=self._partial_fd)
        return removed

    def _partial_opener(self, name: str, flags: int) -> int:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self._partial_fd)


class LocalReadHandle:
    """A file of the local store, open for reading: `fileno()` lets the server sendfile it."""

    def __init__(self, store: LocalStore, name: str, fd: int, st: os.stat_result) -> None:
        self._store = store
        self._fd = fd
        self._st = st
        self.facts = store.facts(name, st)

    def fileno(self) -> int:
        return self._fd

    def read(self, offset: int, count: int) -> bytes:
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise StorageError(Problem.CHANGED, f"{self.facts.name!r} shrank while being read; try again")
        return data

    def cached_digest(self, algorithm: str) -> bytes | None:
        return self._store.digests.get(self._st, algorithm)

    def digest(self, algorithm: str) -> bytes:
        digest = self._store.digests.get(self._st, algorithm)
        if digest is None:
            try:
                digest = hash_file(self._fd, self._st.st_size, algorithm)
            except EOFError:
                raise StorageError(
                    Problem.CHANGED, "the file shrank while it was being hashed; try again"
                ) from None
            if not self.unchanged():
                raise StorageError(Problem.CHANGED, "the file changed while it was being hashed; try again")
            self._store.digests.put(self._st, algorithm, digest)
        return digest

    def remember_digest(self, algorithm: str, digest: bytes) -> None:
        if self.unchanged():
            self._store.digests.put(self._st, algorithm, digest)

    def unchanged(self) -> bool:
        now, then = os.fstat(self._fd), self._st
        if now.st_nlink != then.st_nlink:
            # Replaced by an upload's rename, or deleted: that moves ctime, not the
            # bytes still open here, so a reader finishes with the old file.
            return (now.st_ino, now.st_size, now.st_mtime_ns) == (then.st_ino, then.st_size, then.st_mtime_ns)
        return DigestCache.key(now, "") == DigestCache.key(then, "")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Landing:
    """An open folder on the way to where an entry goes, and the folders still to make below it."""

    def __init__(self, fd: int, missing: list[str]) -> None:
        self.fd = fd
        self.missing = missing

    def refuse_a_file_on_the_way(self, name: str) -> None:
        """WRONG_KIND now, not after the whole upload, if the first missing folder is a file's name."""
        if self.missing:
            there = _lstat_at(self.fd, self.missing[0])
            if there is not None and not stat_module.S_ISDIR(there.st_mode):
                raise _parent_is_a_file(name)

    def make(self, name: str, *, last_is_target: bool = False) -> None:
        """Create the missing folders, one at a time and never through a link, and enter them."""
        while self.missing:
            segment = self.missing.pop(0)
            try:
                os.mkdir(segment, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise _os_error(exc, name) from None
            try:
                fd = os.open(
                    segment, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd
                )
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    if last_is_target and not self.missing:
                        raise StorageError(Problem.EXISTS, f"{name!r} exists and is not a folder") from None
                    raise _parent_is_a_file(name) from None
                raise _os_error(exc, name) from None
            os.close(self.fd)
            self.fd = fd

    def detach(self) -> _Landing:
        """Hand the open folder over to a new owner (this one then closes nothing)."""
        held = _Landing(self.fd, list(self.missing))
        self.fd = -1
        return held

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _check_kinds(moving: os.stat_result, there: os.stat_result, old: str, new: str) -> None:
    """A file never replaces a folder, nor a folder a file (spec: WRONG_KIND, both ways)."""
    moving_folder, there_folder = stat_module.S_ISDIR(moving.st_mode), stat_module.S_ISDIR(there.st_mode)
    if moving_folder and not there_folder:
        raise StorageError(Problem.WRONG_KIND, f"{new!r} is a file; the folder {old!r} cannot replace it")
    if there_folder and not moving_folder:
        raise StorageError(Problem.WRONG_KIND, f"{new!r} is a folder; {old!r} cannot replace it")


class Upload:
    """One upload in progress. `write()` and `commit()` block: run them off the event loop."""

    def __init__(
        self,
        *,
        storage: LocalStore,
        name: str,
        landing: _Landing,
        last: str,
        partial: str,
        fd: int,
        size: int,
        algorithm: str,
        expected_digest: bytes | None,
        key: str | None,
    ) -> None:
        self.storage = storage
        self.name = name
        self.partial = partial  # its name in the partial folder
        self.size = size
        self.algorithm = algorithm
        self.expected_digest = expected_digest
        self.offset = 0  # where the client starts sending
        self.written = 0  # bytes in the partial file so far
        self._landing = landing
        self._last = last
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
            raise StorageError(Problem.BAD_REQUEST, f"more than the announced {self.size} bytes")
        try:
            _write_all(self._fd, blocks, self.written)
        except OSError as exc:
            raise _os_error(exc, self.name) from None
        for block in blocks:
            self._hasher.update(block)
        self.written += total
        self._writeback.wrote_up_to(self.written)

    def commit(self, size: int, digest: bytes | None, mtime_ns: int | None = None) -> FileFacts:
        """Check size and digest, then make the file visible atomically, in the folder held since PUT.

        `digest` None is for the legacy protocol, which sends none: only the
        size is checked then.

        Raises:
            StorageError: CHECKSUM_MISMATCH or BAD_REQUEST; the partial is then
                discarded and the old file, if any, stays as it was.
        """
        assert self._fd is not None
        if size != self.size or self.written != self.size:
            raise StorageError(
                Problem.BAD_REQUEST,
                f"END says {size} bytes, PUT announced {self.size}, {self.written} arrived",
            )
        actual = self._hasher.digest()
        if (digest is not None and actual != digest) or (
            self.expected_digest is not None and actual != self.expected_digest
        ):
            raise StorageError(Problem.CHECKSUM_MISMATCH, f"digest of {self.name!r} does not match")
        storage = self.storage
        try:
            os.fsync(self._fd)
            if mtime_ns is not None:
                os.utime(self._fd, ns=(mtime_ns, mtime_ns))
            self._landing.make(self.name)
            folder = self._landing.fd
            there = _lstat_at(folder, self._last)
            if there is not None and stat_module.S_ISDIR(there.st_mode):
                raise StorageError(Problem.WRONG_KIND, f"{self.name!r} is a folder")
            copied = False
            try:
                _replace_at(storage._partial_fd, self.partial, folder, self._last)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                st = _copy_into_place(self._fd, self.size, folder, self._last, storage, self.name)
                copied = True
            else:
                st = os.fstat(self._fd)
            _fsync_dir(folder)
        except OSError as exc:
            raise _os_error(exc, self.name) from None
        storage.digests.put(st, self.algorithm, actual)
        self._close(unlink=copied)
        return storage.facts(self.name, st, actual)

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
        self._landing.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial, dir_fd=self.storage._partial_fd)
        self.storage._release(self._key)


def _replace_at(old_dir: int, old: str, new_dir: int, new: str) -> None:
    """rename(2) on descriptors: `new` is replaced atomically."""
    os.replace(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir)


def _other(item: os.DirEntry[str]) -> Listed:
    """A listing's line for an item that is there but not served: the name is taken (spec 11.3)."""
    try:
        mtime_ns = max(item.stat(follow_symlinks=False).st_mtime_ns, 0)
    except OSError:
        mtime_ns = 0
    return Listed(name=item.name, kind=Kind.OTHER, size=0, mtime_ns=mtime_ns)


def _unserved(entry: Listed | None) -> bool:
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


def _copy_into_place(
    fd: int, size: int, folder: int, last: str, storage: LocalStore, name: str
) -> os.stat_result:
    """Put a copy of the file `fd` at `last` in `folder` atomically; return the copy's stat.

    For a target on another file system than the partial (a folder of the root
    that is a mount point), where rename fails with EXDEV: the bytes go to a
    new file beside the target, are synced, and that file is renamed over the
    target, so readers still see the old file or the whole new one. Where the
    file system can, the copy has no name until it is whole (O_TMPFILE), so a
    crash mid-copy leaves nothing behind; elsewhere it is a hidden
    `.trioftp-*.part`, which listings leave out, and a note in the partial
    folder names it (by its name under the root) until it is renamed or
    removed, so that the next start removes what a crash left.
    """
    source = os.fstat(fd)
    mode = stat_module.S_IMODE(source.st_mode)
    token = secrets.token_hex(8)
    temp = f"{COPY_PREFIX}{token}{COPY_SUFFIX}"
    note = f"{token}{COPY_NOTE_SUFFIX}"
    parent = name.rpartition("/")[0]
    home = f"{storage.home}/" if storage.home else ""
    named_as = f"{home}{parent}/{temp}" if parent else f"{home}{temp}"
    out, unnamed = _open_copy(folder, temp, mode, storage, note, named_as)
    try:
        _copy_bytes(fd, out, size)
        os.utime(out, ns=(source.st_atime_ns, source.st_mtime_ns))
        os.fsync(out)
        if unnamed:
            _name_unnamed(out, folder, temp)
        _replace_at(folder, temp, folder, last)
        return os.fstat(out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise
    finally:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(note, dir_fd=storage._partial_fd)


def _open_copy(
    folder: int, temp: str, mode: int, storage: LocalStore, note: str, named_as: str
) -> tuple[int, bool]:
    """An fd to copy into: unnamed in `folder` if the OS and file system allow, else `temp`,
    which `note` names first (a crash may come between the two)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(".", tmpfile | os.O_WRONLY | os.O_CLOEXEC, mode, dir_fd=folder), True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    with open(note, "w", encoding="utf-8", opener=storage._partial_opener) as file:
        file.write(named_as)
    try:
        return os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=folder
        ), False
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(note, dir_fd=storage._partial_fd)
        raise


def _name_unnamed(fd: int, folder: int, name: str) -> None:
    """Give an O_TMPFILE file a name: linkat(/proc/self/fd/N, AT_SYMLINK_FOLLOW)."""
    # With a dir_fd, os.link calls linkat with the flag; without one it calls
    # link(), which would try to link the /proc symlink itself (EXDEV).
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder, follow_symlinks=True)


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


def _fsync_dir(folder: int) -> None:
    os.fsync(folder)


Storage = LocalStore  # the name before the S3 store came
