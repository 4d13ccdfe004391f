"""Digests of files the store has hashed, keyed by what changes when the bytes change."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict


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
