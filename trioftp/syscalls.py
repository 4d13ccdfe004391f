"""Linux system calls that Python's os module lacks, each with a portable fallback.

Reached through ctypes. Where a call is missing (another OS, an old libc, not
glibc), `sync_file_range` and `mallopt` do nothing (they are only hints) and
`rename_no_replace` says so with NotImplementedError, so the caller can fall
back to a check.
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


def rename_no_replace(old: str | os.PathLike[str], new: str | os.PathLike[str]) -> None:
    """Rename `old` to `new` in one step that fails if `new` exists (renameat2 RENAME_NOREPLACE).

    Raises:
        FileExistsError: `new` exists (even if it appeared a moment ago).
        NotImplementedError: no renameat2 here, or the file system does not support the flag.
        OSError: as os.rename.
    """
    if _renameat2 is None:
        raise NotImplementedError("renameat2 is not available")
    result = _renameat2(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), _RENAME_NOREPLACE)
    if result == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL) and os.path.lexists(old) and not os.path.lexists(new):
        raise NotImplementedError(f"renameat2 RENAME_NOREPLACE: {os.strerror(code)}")
    raise OSError(code, os.strerror(code), os.fspath(old), None, os.fspath(new))
