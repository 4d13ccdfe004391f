"""Linux system calls that Python's os module lacks, each with a portable fallback.

Reached through ctypes. Where a call is missing (another OS, an old libc, not
glibc), `sync_file_range` and `mallopt` do nothing (they are only hints) and
`rename_no_replace` and `openat2` say so with NotImplementedError, so the
caller can fall back to a check or a walk.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any

_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait
_RENAME_NOREPLACE = 1  # <linux/fs.h>
_AT_FDCWD = -100
_M_MMAP_THRESHOLD = -3  # <malloc.h>
LARGE_ALLOCATION = 512 * 1024  # this size and up: own mappings (1 MiB blocks), returned to the OS when freed


# Bytes per write into the page cache (see `write_at`).
PAGE_CACHE_PIECE = 32 * 1024


def write_at(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """Write all of `data` at `offset`, in pieces of PAGE_CACHE_PIECE; return the end offset.

    The kernel sizes a new page-cache folio by the write (ext4 large folios): an
    aligned 1 MiB write takes an order-8 folio from the buddy allocator, and a VM
    with free page reporting (virtio-balloon) has handed that memory back to its
    host, so the copy into it pays a host fault per page: 1.2-1.5 s of CPU per
    512 MiB instead of 0.1-0.3 s on this project's machine. Pieces up to 32 KiB
    (order 3) come from the per-CPU lists of recently freed pages, which are still
    backed (bench/RESULTS.md, issue 13). Elsewhere the extra syscalls cost ~1 %.
    """
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view[:PAGE_CACHE_PIECE], offset)
        offset += n
        view = view[n:]
    return offset


def _libc_function(name: str, argtypes: list[Any]) -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_sync_file_range = _libc_function(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
)
_renameat2 = _libc_function(
    "renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
)
_mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
_syncfs = _libc_function("syncfs", [ctypes.c_int])


def sync_filesystem(path: str | os.PathLike[str], missing_ok: bool = False) -> None:
    """Make everything written to the file system holding `path` durable (Linux syncfs).

    One call for a whole tree of new files: the journal commits them together,
    where an fsync per file would wait for a commit each. Without syncfs (not
    Linux), os.sync: every file system, which is more, never less.

    With `missing_ok`, a `path` that does not exist is nothing to sync.

    Raises:
        OSError: `path` cannot be opened, or the file system reports a write error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fspath(path))
    finally:
        os.close(fd)


def return_freed_buffers() -> bool:
    """Make glibc give transfer buffers back to the OS when they are freed (best effort).

    glibc raises its mmap threshold each time a mapped block is freed, so after
    the first upload the 1 MiB blocks come from the heap, and a heap fragmented
    by many transfers keeps its peak size: a server that once took a big upload
    held ~9 MiB more for good. A fixed threshold keeps blocks this large in
    their own mappings. Returns whether the setting took.
    """
    return _mallopt is not None and _mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION) == 1


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of `fd` to disk, without waiting (best effort)."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def can_start_writeback() -> bool:
    """Whether start_writeback does anything here."""
    return _sync_file_range is not None


def rename_no_replace(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    *,
    old_dir_fd: int = _AT_FDCWD,
    new_dir_fd: int = _AT_FDCWD,
) -> None:
    """Rename `old` to `new` in one step that fails if `new` exists (renameat2 RENAME_NOREPLACE).

    Relative names are taken from `old_dir_fd` and `new_dir_fd`, as renameat2 does.

    Raises:
        FileExistsError: `new` exists (even if it appeared a moment ago).
        NotImplementedError: no renameat2 here, or the file system does not support the flag.
        OSError: as os.rename.
    """
    if _renameat2 is None:
        raise NotImplementedError("renameat2 is not available")
    result = _renameat2(old_dir_fd, os.fsencode(old), new_dir_fd, os.fsencode(new), _RENAME_NOREPLACE)
    if result == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL) and _lexists(old, old_dir_fd) and not _lexists(new, new_dir_fd):
        raise NotImplementedError(f"renameat2 RENAME_NOREPLACE: {os.strerror(code)}")
    raise OSError(code, os.strerror(code), os.fspath(old), None, os.fspath(new))


def _lexists(path: str | os.PathLike[str], dir_fd: int) -> bool:
    try:
        os.stat(path, dir_fd=None if dir_fd == _AT_FDCWD else dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


# openat2(2) and its `struct open_how`; the syscall number is the same on every architecture.
_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _syscall_function() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_long
    return function


_syscall = _syscall_function()
_openat2_missing = _syscall is None


def openat2(dir_fd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """openat2(2): open `path` relative to `dir_fd` under the `resolve` rules; returns the fd.

    Raises:
        NotImplementedError: the kernel (or a sandbox's filter) has no openat2.
        OSError: as open(2), and EXDEV for a path that RESOLVE_BENEATH refuses.
    """
    global _openat2_missing
    if _openat2_missing or _syscall is None:
        raise NotImplementedError("openat2 is not available")
    tmpfile = getattr(os, "O_TMPFILE", 0)  # includes O_DIRECTORY's bit: test it whole
    creates = bool(flags & os.O_CREAT) or (tmpfile != 0 and flags & tmpfile == tmpfile)
    how = _OpenHow(flags, mode if creates else 0, resolve)  # openat2 refuses a mode it would not use
    fd = _syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_long(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        _openat2_missing = True
        raise NotImplementedError("openat2 is not available")
    raise OSError(code, os.strerror(code), path)
