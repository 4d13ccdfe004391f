"""The root folder, opened once, and every name resolved beneath its descriptor.

Every name is opened relative to an open descriptor of the root (or of a
user's home), never by path string, so nothing a client or a local user
swaps between a check and a use can lead outside: see `trioftp.disk.beneath`.
Symlinks that stay inside are followed; those that lead out are refused.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
import stat as stat_module
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from trioftp.disk.beneath import MAX_LINKS, LeadsOutside, beneath_path, open_beneath, path_of_fd
from trioftp.disk.syscalls import rename_no_replace
from trioftp.protocol.names import BadName, check_path
from trioftp.storage.interface import FileFacts, Kind, Problem, StorageError
from trioftp.storage.local.digest_cache import DigestCache
from trioftp.storage.local.layout import STATE_DIR
from trioftp.storage.local.problems import os_problem, outside, parent_is_a_file, reserved

log = logging.getLogger("trioftp.storage")

log = logging.getLogger("trioftp.storage")


class RootFolder:
    """The root (or a home) and the names beneath it; the stores' base."""

    def __init__(self, root: Path, *, partial_ttl: float = 86400.0, max_file_size: int = 2**40) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        # Absolute links inside may name the root by its real path or by the path it was
        # configured as (through a link, e.g. /srv -> /data/srv): both count as inside.
        self._top_paths = tuple(dict.fromkeys((str(self.root), os.path.abspath(root))))
        self._root_paths = self._top_paths  # the same for this view's own root (its home)
        self.partial_dir = self.root / STATE_DIR / "partial"  # made, beneath the root, by HeldFolders
        self.partial_ttl = partial_ttl
        self.max_file_size = max_file_size
        self.digests = DigestCache()
        self._active_partials: set[str] = set()
        self._active_lock = threading.Lock()
        self.top = self.root  # the served root, also for views scoped to a home folder
        self.home = ""  # this view's folder under the top ("" for the top itself)
        self._folders = HeldFolders(self.root)  # shared with the views, closed with the last of them
        self._top_fd = self._folders.top
        self._partial_fd = self._folders.partial
        self._reserved_folders = frozenset(
            identity(os.stat(path, dir_fd=self._top_fd)) for path in (STATE_DIR, f"{STATE_DIR}/partial")
        )

    def close(self) -> None:
        """Close the descriptors of the root and the partial folder, for this storage and its views."""
        self._folders.close()

    def scoped(self, home: str) -> Self:
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

    def describe(self) -> str:
        return str(self.root)

    def shed(self) -> None:
        """Nothing to give back: the local store keeps no buffers between transfers."""

    @staticmethod
    def _check_name(name: str, *, allow_root: bool = False) -> None:
        """Refuse names the protocol refuses (BAD_NAME) and the reserved state folder."""
        try:
            check_path(name, allow_root=allow_root)
        except BadName as exc:
            raise StorageError(Problem.BAD_NAME, str(exc)) from None
        if name.split("/", 1)[0] == STATE_DIR:
            raise reserved()

    @contextlib.contextmanager
    def _base(self) -> Iterator[int]:
        """The descriptor every name of this view is resolved beneath: the root, or the home in it."""
        if not self.home:
            yield self._top_fd
            return
        try:
            fd = open_beneath(self._top_fd, self.home, os.O_PATH | os.O_DIRECTORY, base_path=self._top_paths)
        except LeadsOutside:
            raise outside(self.home) from None
        except OSError as exc:
            raise os_problem(exc, self.home) from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _open(self, base: int, relative: str, flags: int, name: str, *, follow: bool = True) -> int:
        """`relative` opened beneath `base`, with errors in the wire's words about `name`."""
        try:
            return open_beneath(base, relative, flags, follow=follow, base_path=self._root_paths)
        except LeadsOutside:
            raise outside(name) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(Problem.BAD_REQUEST, f"{name!r}: too many levels of symlinks") from None
            raise os_problem(exc, name) from None

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
            # A name at the top is looked up in the base itself: no duplicate of it to make and close.
            folder = base if not parent else self._folder_fd(base, parent, name)
            if not follow:
                break
            try:
                text = os.readlink(last, dir_fd=folder)
            except OSError:  # not a link (EINVAL), or not there: the caller says which
                break
            if folder != base:
                os.close(folder)
            if text.startswith("/"):
                rest = beneath_path(text, self._root_paths)
                if rest is None:
                    raise outside(name)
                relative = rest
            else:
                relative = f"{parent}/{text}" if parent else text
        else:
            raise StorageError(Problem.BAD_REQUEST, f"{name!r}: too many levels of symlinks")
        try:
            yield folder, last
        finally:
            if folder != base:
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
                    raise os_problem(exc, name) from None
                fd = -1
        try:
            st = os.fstat(fd) if fd >= 0 else None
        except OSError as exc:
            os.close(fd)
            raise os_problem(exc, name) from None
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

    def facts(self, name: str, st: os.stat_result, digest: bytes | None = None) -> FileFacts:
        """What a stat says of `name`, in storage terms."""
        kind = Kind.FOLDER if stat_module.S_ISDIR(st.st_mode) else Kind.FILE
        size = 0 if kind is Kind.FOLDER else st.st_size
        return FileFacts(name=name, kind=kind, size=size, mtime_ns=max(st.st_mtime_ns, 0), digest=digest)

    def _link_target(self, base: int | None, name: str) -> os.stat_result:
        """What the link `name` leads to, beneath the base; reserved folders count as out."""
        if base is None:
            with self._base() as opened:
                return self._link_target(opened, name)
        with self._located(base, name, follow=True) as (folder, last):
            st = os.stat(last, dir_fd=folder, follow_symlinks=False)
        self._refuse_reserved(st)
        return st

    def _refuse_reserved(self, st: os.stat_result) -> None:
        """PERMISSION_DENIED for the state folders themselves, reached by a link to the root
        (`me/.trioftp` with `me` -> `.`): the first segment's name alone does not catch that."""
        if stat_module.S_ISDIR(st.st_mode) and identity(st) in self._reserved_folders:
            raise reserved()

    def _make_folders(self, base: int, name: str) -> None:
        """Create the folder `name` and its parents below `base` (links inside followed), like mkdir -p."""
        with self._landing(base, name, name) as landing:
            landing.make(name, last_is_target=True)

    @contextlib.contextmanager
    def _landing(self, base: int, folder: str, name: str) -> Iterator[Landing]:
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
        landing = Landing(fd, segments[depth:])
        try:
            yield landing
        finally:
            landing.close()


def rename_at_no_replace(old_dir: int, old: str, new_dir: int, new: str) -> None:
    """Rename on descriptors, failing with FileExistsError if `new` exists, atomically where the OS can."""
    try:
        rename_no_replace(old, new, old_dir_fd=old_dir, new_dir_fd=new_dir)
    except NotImplementedError:
        if lstat_at(new_dir, new) is not None:  # the check-then-rename race stays where renameat2 is missing
            raise FileExistsError(errno.EEXIST, "exists", new) from None
        os.rename(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir)


def lstat_at(folder: int, name: str) -> os.stat_result | None:
    """The entry `name` in `folder` itself (a link is not followed); None if there is none."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def make_and_enter(folder: int, name: str) -> int:
    """The folder `name` in `folder`, made if missing, opened never through a link (ELOOP/ENOTDIR)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=folder)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)


class HeldFolders:
    """The open root and partial folder: closed by `close()`, or when no storage holds them."""

    def __init__(self, root: Path) -> None:
        self.top = self.partial = -1
        self.top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            state = make_and_enter(self.top, STATE_DIR)
            try:
                self.partial = make_and_enter(state, "partial")
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


class Landing:
    """An open folder on the way to where an entry goes, and the folders still to make below it."""

    def __init__(self, fd: int, missing: list[str]) -> None:
        self.fd = fd
        self.missing = missing

    def refuse_a_file_on_the_way(self, name: str) -> None:
        """WRONG_KIND now, not after the whole upload, if the first missing folder is a file's name."""
        if self.missing:
            there = lstat_at(self.fd, self.missing[0])
            if there is not None and not stat_module.S_ISDIR(there.st_mode):
                raise parent_is_a_file(name)

    def make(self, name: str, *, last_is_target: bool = False) -> None:
        """Create the missing folders, one at a time and never through a link, and enter them."""
        while self.missing:
            segment = self.missing.pop(0)
            try:
                os.mkdir(segment, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise os_problem(exc, name) from None
            try:
                fd = os.open(
                    segment, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd
                )
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    if last_is_target and not self.missing:
                        raise StorageError(Problem.EXISTS, f"{name!r} exists and is not a folder") from None
                    raise parent_is_a_file(name) from None
                raise os_problem(exc, name) from None
            os.close(self.fd)
            self.fd = fd

    def detach(self) -> Landing:
        """Hand the open folder over to a new owner (this one then closes nothing)."""
        held = Landing(self.fd, list(self.missing))
        self.fd = -1
        return held

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def replace_at(old_dir: int, old: str, new_dir: int, new: str) -> None:
    """rename(2) on descriptors: `new` is replaced atomically."""
    os.replace(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir)


def fsync_dir(folder: int) -> None:
    os.fsync(folder)
