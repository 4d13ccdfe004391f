"""A local file open for reading: the server sendfiles from its descriptor."""

from __future__ import annotations

import os

from trioftp.disk.digests import hash_file
from trioftp.storage.interface import Problem, StorageError
from trioftp.storage.local.digest_cache import DigestCache
from trioftp.storage.local.root import RootFolder


class LocalReadHandle:
    """A file of the local store, open for reading: `fileno()` lets the server sendfile it."""

    def __init__(self, store: RootFolder, name: str, fd: int, st: os.stat_result) -> None:
        self._store = store
        self._fd = fd
        self.stat = st  # the version opened: digests are cached under it
        self.facts = store.facts(name, st)

    def fileno(self) -> int:
        return self._fd

    def read(self, offset: int, count: int) -> bytes:
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise StorageError(Problem.CHANGED, f"{self.facts.name!r} shrank while being read; try again")
        return data

    def ready(self, offset: int, count: int) -> bool:
        return False  # a pread may wait for the disk: never on the event loop

    def cached_digest(self, algorithm: str) -> bytes | None:
        return self._store.digests.get(self.stat, algorithm)

    def digest(self, algorithm: str) -> bytes:
        digest = self._store.digests.get(self.stat, algorithm)
        if digest is None:
            try:
                digest = hash_file(self._fd, self.stat.st_size, algorithm)
            except EOFError:
                raise StorageError(
                    Problem.CHANGED, "the file shrank while it was being hashed; try again"
                ) from None
            if not self.unchanged():
                raise StorageError(Problem.CHANGED, "the file changed while it was being hashed; try again")
            self._store.digests.put(self.stat, algorithm, digest)
        return digest

    def remember_digest(self, algorithm: str, digest: bytes) -> None:
        if self.unchanged():
            self._store.digests.put(self.stat, algorithm, digest)

    def unchanged(self) -> bool:
        now, then = os.fstat(self._fd), self.stat
        if now.st_nlink != then.st_nlink:
            # Replaced by an upload's rename, or deleted: that moves ctime, not the
            # bytes still open here, so a reader finishes with the old file.
            return (now.st_ino, now.st_size, now.st_mtime_ns) == (then.st_ino, then.st_size, then.st_mtime_ns)
        return DigestCache.key(now, "") == DigestCache.key(then, "")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
