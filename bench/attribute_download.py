"""What a trioftp download's time goes to on the client: receive path, write, hash, fsync.

    python bench/attribute_download.py [--size-mib 512] [--runs 3]

Starts `trioftp serve` in its own process with one file, then downloads it with
the trioftp client in this process, in turn with parts of the client's work
stubbed out (diagnostic only: it patches trioftp.client.download internals):

  full         the real client: receive, write + hash on a worker thread, fsync, rename
  no-fsync     as full, without the final fsync
  no-hash      write only (the digest check then fails, which is expected and ignored)
  receive-only neither write nor hash nor fsync: the receive path alone (socket -> frames -> inbox)

Modes are interleaved run by run; the medians are printed. If this script breaks
because those internals were renamed, update the two names in `patch()`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MiB, free_port, wait_listening

MODES = ("full", "no-fsync", "no-hash", "receive-only")


def patch(mode: str) -> None:
    import trioftp.client.download as cc

    if not hasattr(cc, "_original_write_and_hash"):
        cc._original_write_and_hash = cc._write_and_hash  # type: ignore[attr-defined]
        cc._original_fsync = cc.os.fsync  # type: ignore[attr-defined]
    original = cc._original_write_and_hash  # type: ignore[attr-defined]

    class NoHash:
        def update(self, _data: object) -> None:
            pass

    # The real writer (early writeback included), only without the hashing.
    def write_only(
        fd: int, block: bytes | memoryview, position: int, _hasher: object, writeback: object
    ) -> int:
        return int(original(fd, block, position, NoHash(), writeback))

    def nothing(
        _fd: int, block: bytes | memoryview, position: int, _hasher: object, _writeback: object
    ) -> int:
        return position + len(block)

    cc._write_and_hash = {
        "full": original,
        "no-fsync": original,
        "no-hash": write_only,
        "receive-only": nothing,
    }[mode]
    # os.fsync is looked up on the module's `os` at call time: patch it there, for this process only.
    cc.os.fsync = cc._original_fsync if mode == "full" else (lambda _fd: None)  # type: ignore[attr-defined]


async def download_once(port: int, dest: str) -> float:
    import trioftp

    start = time.monotonic()
    async with trioftp.open_connection("127.0.0.1", port) as conn:
        with contextlib.suppress(trioftp.ChecksumMismatch):  # expected when the hash is stubbed out
            await conn.download("big.bin", dest, resume=False)
        seconds = time.monotonic() - start
    for path in (dest, dest + ".trioftp-part"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    os.sync()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import trio

    work = tempfile.mkdtemp(prefix="trioftp-attrib-")
    root = os.path.join(work, "root")
    os.makedirs(root)
    size = args.size_mib * MiB
    with open(os.path.join(root, "big.bin"), "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    port = free_port()
    server = subprocess.Popen(  # in the temp dir: `-m trioftp` must not pick up a ./trioftp
        [
            sys.executable,
            "-m",
            "trioftp",
            "serve",
            "--root",
            root,
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ]
    )
    try:
        wait_listening(port)
        dest = os.path.join(work, "out.bin")
        patch("full")
        trio.run(download_once, port, dest)  # warm-up: the server caches the file's digest
        seconds: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                patch(mode)
                seconds[mode].append(trio.run(download_once, port, dest))
        print(f"{args.size_mib} MiB download, trioftp client, median of {args.runs} runs:")
        for mode in MODES:
            med = statistics.median(seconds[mode])
            runs = " ".join(f"{size / 1e6 / s:.0f}" for s in seconds[mode])
            print(f"  {mode:<13} {size / 1e6 / med:7.0f} MB/s   (runs: {runs})")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
