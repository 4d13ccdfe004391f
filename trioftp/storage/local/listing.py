"""Listing a folder: what the protocol can name, links and unserved items said as such."""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module

from trioftp.protocol.names import BadName, check_segment
from trioftp.storage.interface import Kind, Listed, Problem, StorageError
from trioftp.storage.local.layout import COPY_NAME, STATE_DIR
from trioftp.storage.local.problems import os_problem
from trioftp.storage.local.root import RootFolder

log = logging.getLogger("trioftp.storage")


class Listing(RootFolder):
    """Listing folders."""

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
            raise os_problem(exc, folder) from None
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
            return os_problem(OSError(errno.ENOTEMPTY, "not empty"), name)
        if not hidden:
            return StorageError(Problem.NOT_EMPTY, f"folder {name!r} is not empty")
        return StorageError(
            Problem.NOT_EMPTY,
            f"folder {name!r} holds {hidden} entr{'y' if hidden == 1 else 'ies'} the server does not serve"
            " (FIFOs or devices, links out of the root or to nothing, unreadable items, names the"
            " protocol cannot carry); remove them on the server",
        )


def _other(item: os.DirEntry[str]) -> Listed:
    """A listing's line for an item that is there but not served: the name is taken (spec 11.3)."""
    try:
        mtime_ns = max(item.stat(follow_symlinks=False).st_mtime_ns, 0)
    except OSError:
        mtime_ns = 0
    return Listed(name=item.name, kind=Kind.OTHER, size=0, mtime_ns=mtime_ns)


def _unserved(entry: Listed | None) -> bool:
    return entry is None or entry.kind is Kind.OTHER
