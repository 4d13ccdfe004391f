"""Issue 11.1 over the wire: no sequence of requests, and no race between them, reaches outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import RawPeer, connect
from trioftp.errors import RemoteError
from trioftp.protocol import Data, Done, End, Error, ErrorCode, FileInfo, Put, Ready, Rename
from trioftp.protocol.messages import Message
from trioftp.server import Server


@pytest.fixture
def outside(tmp_path: Path, server_root: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "f.txt").write_bytes(b"SECRET")
    (server_root / "evil").symlink_to(folder)  # the server refuses to follow it; it may be moved
    return folder


async def _answer(peer: RawPeer, stream_id: int) -> Message:
    while True:
        message = await peer.receive()
        assert message is not None, "the server closed the connection"
        if getattr(message, "stream_id", None) == stream_id:
            return message


@pytest.mark.parametrize("folder", ["exists", "missing"])
async def test_a_put_whose_folder_becomes_a_link_out_never_lands_outside(
    server: Server, server_root: Path, outside: Path, folder: str
) -> None:
    """PUT d/pwned, then RENAME a link out onto the name d, then the bytes: the file lands in the
    folder the PUT named (wherever a rename moved it), or nowhere, never outside."""
    if folder == "exists":
        (server_root / "d").mkdir()
    data = b"pwned!"
    digest = blake3.blake3(data).digest()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send(Put(name="d/pwned", size=len(data), digest=digest, stream_id=1))
            assert isinstance(await _answer(peer, 1), Ready)
            if folder == "exists":
                await peer.send(Rename(old="d", new="d-before", stream_id=3))
                assert isinstance(await _answer(peer, 3), Done)
            await peer.send(Rename(old="evil", new="d", stream_id=5))
            assert isinstance(await _answer(peer, 5), Done)
            await peer.send(Data(payload=data, stream_id=1), End(size=len(data), digest=digest, stream_id=1))
            answer = await _answer(peer, 1)
    assert sorted(os.listdir(outside)) == ["f.txt"]
    if folder == "exists":
        assert isinstance(answer, FileInfo)
        assert (server_root / "d-before" / "pwned").read_bytes() == data
    else:
        assert isinstance(answer, Error) and answer.code is ErrorCode.WRONG_KIND


async def test_racing_renames_of_a_link_out_never_serve_outside_bytes(
    server: Server, server_root: Path, outside: Path
) -> None:
    """One client swaps a folder and a link out under one name by RENAMEs as fast as it can,
    another GETs a file through that name: it only ever gets the file inside, or an error."""
    (server_root / "d").mkdir()
    (server_root / "d" / "f.txt").write_bytes(b"inside")
    got: dict[bytes, int] = {}
    swaps = 0

    async def swap(done: trio.Event) -> None:
        nonlocal swaps
        async with connect(server) as conn:
            while not done.is_set():
                for old, new in (("d", "d-held"), ("evil", "d"), ("d", "evil"), ("d-held", "d")):
                    await conn.rename(old, new)
                swaps += 1

    async def read(done: trio.Event) -> None:
        async with connect(server) as conn:
            while not done.is_set():
                try:
                    data = await conn.get("d/f.txt")
                except RemoteError as exc:
                    data = exc.code.name.encode()
                got[data] = got.get(data, 0) + 1

    with trio.fail_after(NETWORK_TIMEOUT):
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(swap, done)
            for _ in range(3):
                nursery.start_soon(read, done)
            await trio.sleep(2.5)
            done.set()
    assert swaps > 10
    assert got.get(b"inside", 0) > 0
    assert b"SECRET" not in got, got


async def test_the_state_folder_cannot_be_renamed_away_through_a_link_to_the_root(
    server: Server, server_root: Path
) -> None:
    """A link to the root inside it (here `sub/up` -> `..`) reaches `.trioftp` under another
    name: RENAME must refuse it as it refuses `.trioftp` itself."""
    (server_root / "sub").mkdir()
    (server_root / "sub" / "up").symlink_to("..")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as caught:
                await conn.rename("sub/up/.trioftp", "stolen")
            assert caught.value.code is ErrorCode.PERMISSION_DENIED
            with pytest.raises(RemoteError) as caught:
                await conn.delete("sub/up/.trioftp")
            assert caught.value.code is ErrorCode.PERMISSION_DENIED
    assert (server_root / ".trioftp" / "partial").is_dir()
    assert "stolen" not in os.listdir(server_root)
