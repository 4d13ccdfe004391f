"""Uploads into partial files under `.trioftp/partial/`, their commit by rename on descriptors, and the sweep.

A file becomes visible only by an atomic rename, on descriptors, after its
size and digest check out, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat as stat_module
import time
from collections.abc import Sequence

from trioftp.disk.digests import hash_range, new_hasher
from trioftp.disk.syscalls import write_at
from trioftp.disk.writeback import EarlyWriteback
from trioftp.storage.interface import FileFacts, Problem, StorageError
from trioftp.storage.local.layout import COPY_NAME, COPY_NOTE_SUFFIX, COPY_PREFIX, COPY_SUFFIX
from trioftp.storage.local.problems import os_problem
from trioftp.storage.local.root import (
    Landing,
    RootFolder,
    fsync_dir,
    lstat_at,
    replace_at,
)

log = logging.getLogger("trioftp.storage")


class Uploads(RootFolder):
    """Uploads and their partial files."""

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
            raise os_problem(exc, name) from None
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
            raise os_problem(exc, name) from None
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


class Upload:
    """One upload in progress. `write()` and `commit()` block: run them off the event loop."""

    def __init__(
        self,
        *,
        storage: Uploads,
        name: str,
        landing: Landing,
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
            raise os_problem(exc, self.name) from None
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
            there = lstat_at(folder, self._last)
            if there is not None and stat_module.S_ISDIR(there.st_mode):
                raise StorageError(Problem.WRONG_KIND, f"{self.name!r} is a folder")
            copied = False
            try:
                replace_at(storage._partial_fd, self.partial, folder, self._last)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                st = _copy_into_place(self._fd, self.size, folder, self._last, storage, self.name)
                copied = True
            else:
                st = os.fstat(self._fd)
            fsync_dir(folder)
        except OSError as exc:
            raise os_problem(exc, self.name) from None
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


def _write_all(fd: int, blocks: Sequence[bytes | memoryview], offset: int) -> None:
    # Not one pwritev: small writes keep the page cache off large folios (see write_at).
    for block in blocks:
        offset = write_at(fd, block, offset)


def _copy_into_place(
    fd: int, size: int, folder: int, last: str, storage: Uploads, name: str
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
        replace_at(folder, temp, folder, last)
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
    folder: int, temp: str, mode: int, storage: Uploads, note: str, named_as: str
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
