"""Helpers shared by the benchmark's orchestrator, servers and client workers.

Nothing here imports trioftp or pyftpdlib: every process of the benchmark can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import sys
import time
from typing import Any

KiB = 1024
MiB = 1024 * 1024
COPY_BUFFER = 1 * MiB  # clients drain sockets with recv_into a buffer of this size
READ_BLOCK = 4 * MiB


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file (the benchmark's own check, independent of trioftp's digest)."""
    h = hashlib.sha256()
    buf = bytearray(READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[key] = int(parts[0])
    return fields


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (the peak RSS) of a process: `echo 5 > /proc/PID/clear_refs`."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def set_parent_death_signal() -> None:
    """Linux: have the kernel SIGTERM this process if its parent dies (no orphans on a crash)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def emit(tag: str, payload: Any = None) -> None:
    """One protocol line from a worker to the orchestrator, on stdout."""
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_go() -> float:
    """Block until the orchestrator writes `GO <t0>`; return t0 (time.monotonic() of the release)."""
    line = sys.stdin.readline()
    parts = line.split()
    if not parts or parts[0] != "GO":
        raise SystemExit(f"worker: expected GO, got {line!r}")
    return float(parts[1]) if len(parts) > 1 else time.monotonic()


# Bytes per write into the page cache, as trioftp writes (trioftp.disk.syscalls.write_at):
# a 1 MiB write lands in a large folio whose memory this VM's free page reporting has
# handed back to the host, and costs up to 10x the CPU. The baselines write the same
# way, so none of them wins or loses on that (bench/RESULTS.md, issue 13).
WRITE_PIECE = 32 * KiB


def write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view[:WRITE_PIECE])
        view = view[n:]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, seconds: float = 20) -> None:
    """Wait until something accepts connections on 127.0.0.1:port (a server just started)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
