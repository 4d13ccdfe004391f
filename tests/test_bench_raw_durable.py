"""bench/raw_server.py --durable, the raw-durable baseline: the work a durable upload does, done right."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

RAW_SERVER = Path(__file__).resolve().parent.parent / "bench" / "raw_server.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def durable_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "root"
    (root / "up").mkdir(parents=True)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RAW_SERVER), "--root", str(root), "--port", str(port), "--durable"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield root, port
    finally:
        proc.terminate()
        proc.wait(10)


def _put(port: int, name: str, data: bytes, digest: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"P {name} {len(data)} {digest.hex()}\n".encode() + data)
        return sock.recv(2, socket.MSG_WAITALL)


def test_a_verified_upload_replaces_the_file_and_leaves_nothing_beside(
    durable_server: tuple[Path, int],
) -> None:
    root, port = durable_server
    (root / "up" / "f.bin").write_bytes(b"old")
    data = os.urandom(5000)
    assert _put(port, "up/f.bin", data, blake3.blake3(data).digest()) == b"OK"
    assert (root / "up" / "f.bin").read_bytes() == data
    assert os.listdir(root / "up") == ["f.bin"]


def test_a_wrong_digest_is_refused_and_the_old_file_stays(durable_server: tuple[Path, int]) -> None:
    root, port = durable_server
    (root / "up" / "f.bin").write_bytes(b"old")
    assert _put(port, "up/f.bin", b"new bytes", blake3.blake3(b"other").digest()) == b"NO"
    assert (root / "up" / "f.bin").read_bytes() == b"old"
    assert os.listdir(root / "up") == ["f.bin"]
