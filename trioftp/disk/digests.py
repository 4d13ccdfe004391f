"""Digest algorithms by wire name. BLAKE3 is the default; SHA-256 is always there."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Protocol

import blake3

SUPPORTED = ("blake3", "sha256")
DEFAULT = "blake3"


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def new_hasher(algorithm: str) -> Hasher:
    """Return a fresh hasher for a wire algorithm name.

    Raises:
        ValueError: the name is not one of SUPPORTED.
    """
    if algorithm == "blake3":
        # One thread: the event loop, the writer and the peer already share the
        # cores, and single-threaded BLAKE3 (~4.7 GB/s here) outruns the disk path.
        # bench/RESULTS.md measured W2 at 0.23x raw with it, 0.17x with AUTO threads.
        return blake3.blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unsupported digest algorithm {algorithm!r}; supported: {', '.join(SUPPORTED)}")


READ_BLOCK = 1024 * 1024


def hash_file(fd: int, size: int, algorithm: str) -> bytes:
    """Digest of the first `size` bytes of an open file (blocking: run it off the loop if large)."""
    hasher = new_hasher(algorithm)
    hash_range(fd, 0, size, hasher)
    return hasher.digest()


def hash_range(fd: int, start: int, end: int, hasher: Hasher) -> None:
    """Feed bytes [start, end) of an open file to `hasher`, reading 1 MiB at a time.

    Raises:
        EOFError: the file is shorter than `end`.
    """
    pooled = end - start > SMALL_READ
    buffer = _take_buffer() if pooled else bytearray(max(end - start, 1))
    try:
        with memoryview(buffer) as view:
            offset = start
            while offset < end:
                n = os.preadv(fd, [view[: min(len(buffer), end - offset)]], offset)
                if n == 0:
                    raise EOFError("file shrank while being hashed")
                hasher.update(view[:n])
                offset += n
    finally:
        if pooled:
            _give_back(buffer)


# Read buffers of READ_BLOCK bytes, reused across calls and threads: a fresh
# 1 MiB buffer per call, on up to 40 worker threads, left glibc's per-thread
# arenas holding tens of MiB after a burst of downloads (bench W5).
SMALL_READ = 64 * 1024  # ranges up to this size get a buffer of their own size
_POOL_KEEP = 4
_pool: list[bytearray] = []
_pool_lock = threading.Lock()


def _take_buffer() -> bytearray:
    with _pool_lock:
        if _pool:
            return _pool.pop()
    return bytearray(READ_BLOCK)


def _give_back(buffer: bytearray) -> None:
    with _pool_lock:
        if len(_pool) < _POOL_KEEP:
            _pool.append(buffer)
