"""Where a download's bytes go on this machine: a file replaced atomically, or a stream written in place.

A download normally goes to `PATH.trioftp-part` and is renamed over `PATH`
once verified. That is right for a file, and wrong for everything else a user
may name: renaming over `/dev/stdout`, a FIFO or `/dev/null` would replace
the device or pipe with a plain file (and, as root, break the machine). So
those are written in place, in order, as the bytes arrive; and a symlink is
followed, so the file it points to is the one replaced, not the link.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path

import trio

# A process's own descriptors (/dev/stdout, /dev/fd/1, /proc/self/fd/1) are
# written in place even when they lead to a regular file: the shell opened
# that file (maybe for appending) and reads what arrives there. Other paths
# under /dev (such as /dev/shm) are what stat says they are.
_DESCRIPTOR = re.compile(r"/dev/(?:(stdout)|(stderr)|fd/(\d+))|/proc/(self|\d+)/fd/(\d+)")


def writes_in_place(target: Path) -> bool:
    """True if `target` is not a file to replace: a pipe, a terminal, a device, /dev/stdout."""
    if _DESCRIPTOR.fullmatch(os.path.abspath(target)):  # ours or another process's
        return True
    try:
        mode = os.stat(target).st_mode
    except OSError:  # missing (a new file), or unreachable: the partial's open says why
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def file_and_partial(target: Path) -> tuple[Path, Path]:
    """The file a download to `target` replaces (the end of its symlinks, if it is
    one) and the partial file beside it that the bytes go to first.

    Raises:
        IsADirectoryError: that is a folder; found before any byte arrives.
    """
    file = Path(os.path.realpath(target)) if target.is_symlink() else target
    if file.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(file))
    return file, partial_of(file)


NAME_MAX = 255  # bytes in one file name, on Linux and most file systems
PARTIAL_SUFFIX = ".trioftp-part"  # a download in progress, beside its file


def partial_of(target: Path) -> Path:
    """The partial file beside `target`: its name plus PARTIAL_SUFFIX, or, where
    that would be too long a name, a digest of its name (the same on every try,
    so a cut download of a long name still resumes)."""
    name = target.name + PARTIAL_SUFFIX
    if len(os.fsencode(name)) <= NAME_MAX:
        return target.with_name(name)
    digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:32]
    return target.with_name(f".{digest}{PARTIAL_SUFFIX}")


def open_partial(partial: Path, target: Path) -> int:
    """Open (or create) the partial file; errors name `target`, the path the user gave."""
    try:
        return os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _naming(exc, target) from None


def _naming(exc: OSError, target: Path) -> OSError:
    """`exc` again, naming `target` (the path the user gave) rather than whatever was opened."""
    return type(exc)(exc.errno, exc.strerror, str(target))


class InPlaceWriter:
    """Writes a download's bytes, in order, to a pipe, terminal or device.

    Pipes and sockets are written through Trio (non-blocking, so a reader that
    stops reading does not pin a thread, and cancellation works); devices
    such as /dev/null or a terminal cannot be polled and take plain writes on
    a worker thread.
    """

    def __init__(self, fd: int, target: Path, *, shared: bool = False) -> None:
        self.target = target
        mode = os.fstat(fd).st_mode
        self._stream: trio.lowlevel.FdStream | None = None
        self._fd = fd
        # A shared open file (our stdout) must keep its flags: O_NONBLOCK on it
        # would reach the shell and whatever else writes there.
        if not shared and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            self._stream = trio.lowlevel.FdStream(fd)

    @classmethod
    async def open(cls, target: Path) -> InPlaceWriter:
        """Open `target` for writing; a FIFO is waited on until something reads it.

        One of this process's own descriptors (/dev/stdout, /dev/fd/N) is not
        opened again but duplicated: a new open file would have its own offset,
        so the shell's next write to a redirected stdout would land over ours.
        """
        own = _own_descriptor(target)
        if own is not None:
            try:
                fd = os.dup(own)
            except OSError as exc:
                raise _naming(exc, target) from None
            mode = os.fstat(fd).st_mode
            if stat.S_IFMT(mode) == 0 or stat.S_ISSOCK(mode):
                # Not something a shell hands over: the client's own socket or
                # trio's epoll, which now hold a number that was closed at start.
                os.close(fd)
                raise OSError(errno.EBADF, "not an output this process was given", str(target))
            return cls(fd, target, shared=True)
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK
        while True:
            try:
                # O_APPEND: a file reached through /dev/stdout may have been
                # opened by the shell with `>>`; writing from 0 would overwrite it.
                fd = os.open(target, flags | (os.O_APPEND if _is_regular(target) else 0))
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads yet
                    raise _naming(exc, target) from None
                await trio.sleep(0.05)
        writer = cls(fd, target)
        if writer._stream is None:
            os.set_blocking(fd, True)
        return writer

    async def write(self, block: bytes | memoryview) -> None:
        try:
            if self._stream is not None:
                await self._stream.send_all(block)
            else:
                await trio.to_thread.run_sync(_write_all, self._fd, block)
        except trio.BrokenResourceError as exc:  # the reader went away
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
            code = cause.errno if cause is not None and cause.errno else errno.EPIPE
            raise OSError(code, os.strerror(code), str(self.target)) from None
        except OSError as exc:
            raise _naming(exc, self.target) from None

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
        else:
            os.close(self._fd)


def _own_descriptor(target: Path) -> int | None:
    """N if `target` names this process's descriptor N (/dev/stdout, /dev/fd/N, /proc/self/fd/N)."""
    found = _DESCRIPTOR.fullmatch(os.path.abspath(target))
    if found is None:
        return None
    stdout, stderr, dev_fd, process, proc_fd = found.groups()
    if stdout or stderr:
        return 1 if stdout else 2
    if dev_fd is not None:
        return int(dev_fd)
    if process != "self" and int(process) != os.getpid():
        return None  # another process's: opened like any path
    return int(proc_fd)


def _is_regular(target: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        return False


def _write_all(fd: int, block: bytes | memoryview) -> None:
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view) :]
