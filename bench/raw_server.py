"""The raw baseline server: what the machine does with no protocol to speak of.

One blocking thread per connection, one transfer per connection:
  `G name\\n`        -> 8-byte big-endian size (all ones: missing), then the file by os.sendfile.
  `P name size\\n`   -> the server recv_into()s a 1 MiB buffer, writes to the file, and
                       answers `OK` once the file is written and closed.

With --fsync (the `raw-fsync` system, issue 13) the file is fsynced before `OK`:
the limit for anything durable, as a trioftp upload is.

With --durable (the `raw-durable` system) an upload does the work a durable,
atomic, verified upload does, and no more: `P name size digest\n` (the
client's BLAKE3, hex); the bytes go to a new file beside the target
(O_EXCL, in the target's folder opened once for this file) and are hashed as
they arrive; then the digest is checked (`NO` if it differs, the file
dropped), the file fsynced, renamed over the target and the folder fsynced
before `OK`. `--skip hash,rename,dirsync` leaves steps out, to measure what
each costs (bench/RESULTS.md, branch perf5d): without `rename` the file is
written in place, as raw-fsync does.

With --digests (the `raw-verify` system, issue 13) a `G` answer is the size, then the file's
32-byte BLAKE3 digest, then the file: the digests are taken before the server listens (and
kept for a file first asked for later), as trioftp's server keeps digests in its digest cache,
so the client can check what it got the way a trioftp client does.

Run: python bench/raw_server.py --root DIR --port P [--fsync | --durable [--skip STEPS] | --digests]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import sys
import threading
from collections.abc import Collection

import blake3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import COPY_BUFFER, raise_nofile, set_parent_death_signal, write_all

MISSING = (1 << 64) - 1
NO_DIGEST = bytes(32)  # sent with MISSING


class Digests:
    """BLAKE3 digests of the files under a root, keyed by identity and version (one thread each)."""

    def __init__(self, root: str) -> None:
        self._known: dict[tuple[int, int, int, int], bytes] = {}
        self._lock = threading.Lock()
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                fd = os.open(path, os.O_RDONLY)
                try:
                    self.of(fd)
                finally:
                    os.close(fd)

    def of(self, fd: int) -> bytes:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        hasher = blake3.blake3()  # one thread, as trioftp's
        buf = bytearray(COPY_BUFFER)
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            hasher.update(view[:n])
            offset += n
        digest = hasher.digest()
        with self._lock:
            self._known[key] = digest
        return digest


def handle(
    conn: socket.socket,
    root: str,
    fsync: bool = False,
    durable: bool = False,
    skip: Collection[str] = (),
    digests: Digests | None = None,
) -> None:
    with conn:
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        line, _, rest = data.partition(b"\n")
        parts = line.split()
        if parts[0] == b"G":
            path = os.path.join(root, parts[1].decode())
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                conn.sendall(MISSING.to_bytes(8, "big") + (NO_DIGEST if digests else b""))
                return
            try:
                size = os.fstat(fd).st_size
                conn.sendall(size.to_bytes(8, "big") + (digests.of(fd) if digests else b""))
                offset = 0
                out = conn.fileno()
                while offset < size:
                    sent = os.sendfile(out, fd, offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            finally:
                os.close(fd)
        elif parts[0] == b"P" and durable:
            ok = put_durable(
                conn, root, parts[1].decode(), int(parts[2]), bytes.fromhex(parts[3].decode()), rest, skip
            )
            conn.sendall(b"OK" if ok else b"NO")
        elif parts[0] == b"P":
            path = os.path.join(root, parts[1].decode())
            size = int(parts[2])
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                got = len(rest)
                write_all(fd, memoryview(rest))
                buf = bytearray(COPY_BUFFER)
                view = memoryview(buf)
                while got < size:
                    n = conn.recv_into(buf, min(len(buf), size - got))
                    if not n:
                        return
                    write_all(fd, view[:n])
                    got += n
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            conn.sendall(b"OK")


def put_durable(
    conn: socket.socket, root: str, name: str, size: int, digest: bytes, rest: bytes, skip: Collection[str]
) -> bool:
    """Receive one file beside its target, check its digest, fsync, rename in, fsync the folder."""
    import blake3  # the package trioftp hashes with; only this mode needs it

    parent, _, last = name.rpartition("/")
    folder = os.open(os.path.join(root, parent), os.O_RDONLY | os.O_DIRECTORY)
    try:
        beside = "rename" not in skip
        temp = f".{last}.{secrets.token_hex(8)}.part" if beside else last
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if beside else os.O_TRUNC)
        fd = os.open(temp, flags, 0o644, dir_fd=folder)
        hasher = blake3.blake3() if "hash" not in skip else None
        try:
            got = len(rest)
            write_all(fd, memoryview(rest))
            if hasher is not None:
                hasher.update(rest)
            buf = bytearray(COPY_BUFFER)
            view = memoryview(buf)
            while got < size:
                n = conn.recv_into(buf, min(len(buf), size - got))
                if not n:
                    return False
                write_all(fd, view[:n])
                if hasher is not None:
                    hasher.update(view[:n])
                got += n
            if hasher is not None and hasher.digest() != digest:
                if beside:
                    os.unlink(temp, dir_fd=folder)
                return False
            os.fsync(fd)
        finally:
            os.close(fd)
        if beside:
            os.replace(temp, last, src_dir_fd=folder, dst_dir_fd=folder)
        if "dirsync" not in skip:
            os.fsync(folder)
    finally:
        os.close(folder)
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fsync", action="store_true", help="fsync each uploaded file before OK")
    parser.add_argument(
        "--durable", action="store_true", help="uploads beside, verified, fsynced, renamed in"
    )
    parser.add_argument("--skip", default="", help="with --durable: steps to leave out (hash,rename,dirsync)")
    parser.add_argument("--digests", action="store_true", help="send each file's BLAKE3 digest before it")
    args = parser.parse_args()
    skip = frozenset(step for step in args.skip.split(",") if step)
    if skip - {"hash", "rename", "dirsync"}:
        parser.error(f"--skip: unknown steps {sorted(skip - {'hash', 'rename', 'dirsync'})}")
    set_parent_death_signal()
    raise_nofile()
    digests = Digests(args.root) if args.digests else None
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(4096)
    while True:
        conn, _ = listener.accept()
        threading.Thread(
            target=handle, args=(conn, args.root, args.fsync, args.durable, skip, digests), daemon=True
        ).start()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
