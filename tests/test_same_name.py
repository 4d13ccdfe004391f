"""Several clients on one name at once: one whole file at the end, and a reader keeps what it started."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import (
    MiB,
    RawPeer,
    connect,
    file_digest,
    names,
    partials,
    raw_request,
    write_random,
)
from trioftp.client import ClientConnection
from trioftp.protocol import Data, End, FileInfo, FrameType, Window
from trioftp.server import Server


async def _send(conn: ClientConnection, source: Path, data: bytes | None, answers: list[FileInfo]) -> None:
    """Upload to "same.bin": `data` from memory (the PUT carries its digest), else the file."""
    if data is not None:
        answers.append(await conn.put("same.bin", data))
    else:
        answers.append(await conn.upload(source, "same.bin"))


@pytest.mark.parametrize(
    ("size_a", "size_b", "how"),
    [
        (1000, 70_000, "put"),  # in memory, each with its digest: two partials
        (3 * MiB, 3 * MiB, "upload"),  # one size, no digest: one partial key, the second writes a temp file
        (5 * MiB, 2 * MiB + 1, "mixed"),
        (0, 4 * MiB, "upload"),
    ],
)
async def test_two_uploads_of_one_name_end_with_one_whole_file(
    server: Server, server_root: Path, tmp_path: Path, size_a: int, size_b: int, how: str
) -> None:
    for round_ in range(3):
        a, b = tmp_path / f"a{round_}.bin", tmp_path / f"b{round_}.bin"
        digests = {write_random(a, size_a, seed=2 * round_), write_random(b, size_b, seed=2 * round_ + 1)}
        data_a = a.read_bytes() if how in ("put", "mixed") else None
        data_b = b.read_bytes() if how == "put" else None
        answers: list[FileInfo] = []
        with trio.fail_after(NETWORK_TIMEOUT):
            async with connect(server) as one, connect(server) as two, trio.open_nursery() as nursery:
                nursery.start_soon(_send, one, a, data_a, answers)
                nursery.start_soon(_send, two, b, data_b, answers)
        # Both were accepted whole; the file is one of them, whole (the last to commit).
        assert {info.digest for info in answers} == digests
        assert file_digest(server_root / "same.bin") in digests
        assert partials(server_root) == []
        assert names(server_root) == {".trioftp", "same.bin"}


@pytest.mark.parametrize("change", ["overwrite", "rename over it", "delete"])
async def test_a_download_started_before_a_change_gets_the_old_file_whole(
    server: Server, server_root: Path, change: str
) -> None:
    size = 4 * MiB
    old_digest = write_random(server_root / "f.bin", size, seed=1)
    new = os.urandom(size)
    window = 64 * 1024
    with trio.fail_after(NETWORK_TIMEOUT):
        # A slow reader: it grants 64 KiB at a time, so the server has to wait for it.
        async with RawPeer.connect(server, initial_window=window) as reader:
            await reader.send_raw(raw_request(FrameType.GET, 1, name="f.bin", offset=0, length=None))
            info = await reader.receive()
            assert isinstance(info, FileInfo) and info.size == size
            first = await reader.receive()
            assert isinstance(first, Data) and len(first.payload) == window
            body = [first.payload]
            async with connect(server) as writer:
                if change == "overwrite":
                    await writer.put("f.bin", new)
                elif change == "rename over it":
                    await writer.put("g.bin", new)
                    await writer.rename("g.bin", "f.bin", replace=True)
                else:
                    await writer.delete("f.bin")
            while True:
                await reader.send(Window(increment=window, stream_id=1))
                message = await reader.receive()
                if isinstance(message, End):
                    break
                assert isinstance(message, Data), message
                body.append(message.payload)
    data = b"".join(body)
    assert len(data) == size and blake3.blake3(data).digest() == old_digest
    assert message.digest == old_digest and message.size == size
    if change == "delete":
        assert not (server_root / "f.bin").exists()
    else:
        assert (server_root / "f.bin").read_bytes() == new
