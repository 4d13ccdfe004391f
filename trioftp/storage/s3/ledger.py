"""An upload's ledger written behind its parts, on a thread of its own.

A part thread records its finished part and goes on to the next one; this
writer PUTs the ledger at most every `every` seconds, one PUT at a time, each
time with the whole list as it is then. Written under a lock by each part
thread, the ledger serialised the parts (one small PUT per part, ~30 ms on
Ceph here, while the other parts waited for the lock).

What that changes for a resume: the ledger lags the parts by up to about
`every` plus one PUT, and never lists a part that is not in (a part is
recorded only once its UploadPart answered). A server that dies loses the
parts received since the last write; the resume starts from the ledger's last
whole part and the client sends the rest again. A cut upload on a live server
loses nothing: its clean-up closes this writer and writes the full ledger.

What it does not do: decide what goes into the ledger (`write` does), or
retry a failed PUT (the error is kept for the upload to raise).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from trioftp.storage.interface import StorageError


class LedgerWriter:
    """Writes a ledger after changes, coalesced.

    Args:
        write: builds the ledger from the upload's state and PUTs it (blocking).
        every: the least seconds between two writes.
        name: the thread's name.
    """

    def __init__(self, write: Callable[[], None], every: float, name: str) -> None:
        self._write = write
        self._every = every
        self._name = name
        self._state = threading.Condition()
        self._dirty = False  # a change not written yet
        self._writing = False
        self._closed = False
        self._last = -math.inf  # time.monotonic() of the last write's start
        self._thread: threading.Thread | None = None
        self.error: StorageError | None = None  # the last failed write's, for the upload to raise

    def changed(self) -> None:
        """Note a change: it is written within about `every` seconds, without waiting here."""
        with self._state:
            if self._closed:
                return
            self._dirty = True
            if self._thread is None:
                # A daemon: an upload dropped without abort or commit must not hold the process.
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._state.notify_all()

    def flush(self) -> None:
        """Wait until every change noted so far is written (or its write failed)."""
        with self._state:
            while (self._dirty or self._writing) and not self._closed:
                self._state.notify_all()  # a writer waiting out `every` writes now
                self._last = -math.inf
                self._state.wait()

    def close(self, *, wait: bool = True) -> None:
        """No more writes; with `wait`, until the write under way (if any) is over."""
        with self._state:
            self._closed = True
            self._state.notify_all()
            thread = self._thread
        if wait and thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._state:
                while not self._closed:
                    due = self._last + self._every - time.monotonic()
                    if self._dirty and due <= 0:
                        break
                    self._state.wait(due if self._dirty else None)
                if self._closed:
                    return
                self._dirty = False
                self._writing = True
                self._last = time.monotonic()
            try:
                self._write()
            except StorageError as exc:
                self.error = exc
            finally:
                with self._state:
                    self._writing = False
                    self._state.notify_all()
