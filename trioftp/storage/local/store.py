"""The local folder store: the served folder, and the only code that touches it.

All methods are synchronous; the Trio layer decides which run on a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module

from trioftp.storage.interface import FileFacts, Problem, StorageError
from trioftp.storage.local.listing import Listing
from trioftp.storage.local.problems import os_problem
from trioftp.storage.local.reading import LocalReadHandle
from trioftp.storage.local.root import identity, lstat_at, rename_at_no_replace, replace_at
from trioftp.storage.local.uploads import Uploads

log = logging.getLogger("trioftp.storage")


class LocalStore(Listing, Uploads):
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
            raise os_problem(exc, name) from None
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
            st = handle.stat
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
                raise os_problem(exc, name) from None

    def rename(self, old: str, new: str, *, replace: bool) -> None:
        self._check_name(old)
        self._check_name(new)
        with self._base() as base, self._located(base, old, follow=False) as (old_folder, old_last):
            try:
                moving = os.stat(old_last, dir_fd=old_folder, follow_symlinks=False)
            except OSError as exc:
                raise os_problem(exc, old) from None
            self._refuse_reserved(moving)
            parent, _, last = new.rpartition("/")
            with self._landing(base, parent, new) as landing:
                landing.make(new)
                there = lstat_at(landing.fd, last)
                if there is not None:
                    self._refuse_reserved(there)
                if there is not None and not replace:
                    raise StorageError(Problem.EXISTS, f"{new!r} already exists")
                if there is not None and identity(there) != identity(moving):
                    _check_kinds(moving, there, old, new)
                try:
                    if replace:
                        replace_at(old_folder, old_last, landing.fd, last)
                    else:
                        rename_at_no_replace(old_folder, old_last, landing.fd, last)
                except FileExistsError:  # appeared since the check above
                    raise StorageError(Problem.EXISTS, f"{new!r} already exists") from None
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        raise StorageError(Problem.BAD_REQUEST, f"cannot move {old!r} into itself") from None
                    raise os_problem(exc, new) from None

    def mkdir(self, name: str) -> None:
        self._check_name(name)
        with self._base() as base:
            self._make_folders(base, name)


def _check_kinds(moving: os.stat_result, there: os.stat_result, old: str, new: str) -> None:
    """A file never replaces a folder, nor a folder a file (spec: WRONG_KIND, both ways)."""
    moving_folder, there_folder = stat_module.S_ISDIR(moving.st_mode), stat_module.S_ISDIR(there.st_mode)
    if moving_folder and not there_folder:
        raise StorageError(Problem.WRONG_KIND, f"{new!r} is a file; the folder {old!r} cannot replace it")
    if there_folder and not moving_folder:
        raise StorageError(Problem.WRONG_KIND, f"{new!r} is a folder; {old!r} cannot replace it")
