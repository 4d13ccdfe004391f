"""compat/legacy_client.py's streaming pair, which bench/worker.py drives: put_file_on and get_into."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from compat import legacy_client
from tests.conftest import NETWORK_TIMEOUT
from trioftp.server import Server

HOST = "127.0.0.1"
BODY = os.urandom(3 * 1024 * 1024 + 11)


def round_trip(port: int, path: Path, name: str, settle: float) -> tuple[int, bytes, int]:
    """put_file_on then get_into on one connection: (size, bytes, pieces)."""
    received = bytearray()
    pieces = 0

    def sink(piece: memoryview) -> None:
        nonlocal pieces
        pieces += 1
        received.extend(piece)

    with legacy_client.connect(HOST, port) as sock:
        fd = os.open(path, os.O_RDONLY)
        try:
            legacy_client.put_file_on(sock, name, fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        size = legacy_client.get_into(sock, name, bytearray(64 * 1024), sink, settle=settle)
    return size, bytes(received), pieces


@pytest.mark.parametrize("settle", [0, legacy_client.SETTLE])
@pytest.mark.parametrize("body", [b"", b"x", BODY], ids=["empty", "one-byte", "3MiB"])
async def test_a_file_goes_up_by_sendfile_and_comes_back_in_pieces(
    server: Server, server_root: Path, tmp_path: Path, body: bytes, settle: float
) -> None:
    (tmp_path / "local.bin").write_bytes(body)
    with trio.fail_after(NETWORK_TIMEOUT):
        size, received, pieces = await trio.to_thread.run_sync(
            round_trip, server.port, tmp_path / "local.bin", "up/file.bin", settle
        )
    assert size == len(body)
    assert received == body
    assert (server_root / "up" / "file.bin").read_bytes() == body
    if len(body) > 64 * 1024:
        assert pieces >= len(body) // (64 * 1024)  # never more than the buffer at once


async def test_get_into_a_missing_file_raises_not_found_and_the_connection_goes_on(
    server: Server, server_root: Path
) -> None:
    (server_root / "here.txt").write_bytes(b"still here")

    def run() -> bytes:
        got = bytearray()
        with legacy_client.connect(HOST, server.port) as sock:
            with pytest.raises(legacy_client.NotFound):
                legacy_client.get_into(sock, "nope.txt", bytearray(16), got.extend, settle=0)
            legacy_client.get_into(sock, "here.txt", bytearray(4), got.extend, settle=0)
        return bytes(got)

    with trio.fail_after(NETWORK_TIMEOUT):
        assert await trio.to_thread.run_sync(run) == b"still here"


async def test_put_file_on_refuses_a_file_shorter_than_announced(server: Server, tmp_path: Path) -> None:
    (tmp_path / "short.bin").write_bytes(b"12345")

    def run() -> None:
        with legacy_client.connect(HOST, server.port) as sock:
            fd = os.open(tmp_path / "short.bin", os.O_RDONLY)
            try:
                legacy_client.put_file_on(sock, "short.bin", fd, 10)
            finally:
                os.close(fd)

    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(legacy_client.LegacyClientError, match="shrank"):
        await trio.to_thread.run_sync(run)


def test_settle_zero_takes_the_answer_without_waiting() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"YES|3")
        ours.settimeout(5)
        # With settle 0 the answer is taken at once; the 3 bytes are sent only after second_active.
        assert legacy_client._recv_answer(ours, 0, "f") == b"YES|3"
