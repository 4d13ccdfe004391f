"""A small file's upload: read into memory and hashed on the event loop, sent with its END."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import connect
from trioftp.client import upload as client_upload
from trioftp.server import Server


@pytest.mark.parametrize("size", [0, 1, 4096, client_upload.SMALL_UPLOAD])
async def test_a_small_file_is_stored_whole(
    server: Server, server_root: Path, tmp_path: Path, size: int
) -> None:
    local = tmp_path / "small.bin"
    data = os.urandom(size)
    local.write_bytes(data)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.upload(local, "small.bin")
    assert (server_root / "small.bin").read_bytes() == data
    assert info.size == size


async def test_a_small_file_larger_than_the_servers_window(
    make_server: MakeServer, server_root: Path, tmp_path: Path
) -> None:
    server = await make_server(initial_window=16 * 1024)
    local = tmp_path / "small.bin"
    data = os.urandom(client_upload.SMALL_UPLOAD)  # four windows: DATA waits for credit, then END
    local.write_bytes(data)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.upload(local, "small.bin")
            await conn.put("put.bin", data)
    assert (server_root / "small.bin").read_bytes() == data
    assert (server_root / "put.bin").read_bytes() == data
    server.shutdown()


async def test_a_small_file_written_to_while_read_is_not_stored(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "small.log"
    local.write_bytes(b"first line\n")
    real_pread = os.pread

    def pread_then_append(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        with open(local, "ab") as more:  # another program appends, after we read
            more.write(b"one more line\n")
        return data

    monkeypatch.setattr(client_upload.os, "pread", pread_then_append)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(trioftp.LocalFileChanged, match="changed while being uploaded"):
                await conn.upload(local, "small.log")
    assert not (server_root / "small.log").exists()
