"""The reference client pipelines its first request to a server it knows takes it (spec 7, item 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.test_access import ALICE_PW, users_file
from tests.v2_helpers import MiB, RawPeer, connect, wait_until
from trioftp.client import connection as client_connection
from trioftp.client.connection import ClientConnection
from trioftp.errors import AuthenticationFailed, ConnectionClosed
from trioftp.protocol import PREFACE, Auth, Error, ErrorCode, Get, Hello
from trioftp.protocol.codec import encode_message
from trioftp.server import Server
from trioftp.server.auth import hash_password


def _writes_of(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """Every client connection's socket writes, one list per connection, in order."""
    per_connection: list[list[bytes]] = []
    real = ClientConnection.__init__

    def spying(self: ClientConnection, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        writes: list[bytes] = []
        per_connection.append(writes)
        write = self.channel._write

        async def recording(data: Any) -> None:
            writes.append(bytes(data))
            await write(data)

        self.channel._write = recording  # type: ignore[method-assign]

    monkeypatch.setattr(ClientConnection, "__init__", spying)
    return per_connection


async def test_the_second_connection_sends_hello_and_request_in_one_write(
    server: Server, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server_root / "a.txt").write_bytes(b"pipelined")
    monkeypatch.setattr("trioftp.client.connection.GREASE_CHANCE", 0.0)  # no GREASE write between
    writes = _writes_of(monkeypatch)
    with trio.fail_after(NETWORK_TIMEOUT):
        for _ in range(2):
            async with connect(server) as conn:
                assert await conn.get("a.txt") == b"pipelined"
    first, second = writes
    assert len(first) == 2  # HELLO, then (after the server's HELLO) the GET; no GOODBYE
    assert len(second) == 1 and second[0] == first[0] + first[1]  # the same bytes, in one write
    assert conn.server_hello.max_streams == server.config.max_streams


async def test_server_hello_is_there_at_once_on_a_pipelined_connection(server: Server) -> None:
    """Before the server's HELLO arrives, a pipelined connection shows the one it sent last time."""
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as first:
            known = first.server_hello
        async with connect(server) as conn:
            assert conn._where is not None  # pipelined
            assert conn.server_hello == known  # asked before any operation: no error
            assert conn.digest_algorithm == known.digests[0]
            await conn.list()
            assert conn.channel.machine.peer_hello == known  # the server's own, once it came


async def test_a_pipelined_connection_opens_the_servers_streams_once_its_hello_comes(
    server: Server, server_root: Path
) -> None:
    for i in range(20):
        (server_root / f"{i}.txt").write_bytes(b"x" * i)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server):
            pass
        async with connect(server) as conn:
            assert conn._where is not None  # pipelined
            got: dict[int, bytes] = {}

            async def one(i: int) -> None:
                got[i] = await conn.get(f"{i}.txt")

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
    assert got == {i: b"x" * i for i in range(20)}


async def test_a_put_pipelined_carries_the_digest_the_server_chose_last_time(
    server: Server, server_root: Path
) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            assert await conn.list() == []
        async with connect(server) as conn:
            assert conn._where is not None
            await conn.put("p.txt", b"put first")
            assert conn.digest_algorithm == "blake3"
    assert (server_root / "p.txt").read_bytes() == b"put first"


async def test_a_pipelined_connection_that_asks_nothing_still_sends_its_hello(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server):
            pass
        async with connect(server) as conn:
            assert conn._where is not None
            await wait_until(lambda: conn.channel.machine.peer_hello is not None)  # HELLO went alone
            assert conn.server_hello.digests == ("blake3",)


async def test_a_server_that_changed_fails_the_pipelined_connection_and_is_forgotten(
    make_server: MakeServer, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same port, now without "v2.1": the HELLO does not match, the next connection waits for it."""
    (server_root / "a.txt").write_bytes(b"a")
    server = await make_server()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            assert await conn.get("a.txt") == b"a"
        monkeypatch.setattr("trioftp.server.session.FEATURE_V2_1", "not-v2.1")  # as a v2.0 server's HELLO
        with pytest.raises(ConnectionClosed, match="not what it said"):
            async with connect(server) as conn:
                await conn.get("a.txt")
        assert not client_connection._PIPELINING
        async with connect(server) as conn:  # not pipelined: as to any v2.0 server
            assert conn._where is None
            assert await conn.get("a.txt") == b"a"


async def test_no_pipelining_to_a_server_that_needs_a_login(make_server: MakeServer, tmp_path: Path) -> None:
    hashes = {"alice": hash_password(ALICE_PW), "bob": hash_password("unused")}
    server = await make_server(users_file=str(users_file(tmp_path, hashes)))
    with trio.fail_after(NETWORK_TIMEOUT):
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                async with connect(server):
                    pass
            async with connect(server, user="alice", password=ALICE_PW) as conn:
                assert conn._where is None  # AUTH is never pipelined
                assert conn.authorized is not None and conn.authorized.user == "alice"
    assert not client_connection._PIPELINING


async def test_the_servers_hello_does_not_wait_for_a_pipelined_auth_to_be_checked(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """A failed AUTH is answered after a delay (0.5 s the first time): the HELLO comes before it."""
    hashes = {"alice": hash_password(ALICE_PW), "bob": hash_password("unused")}
    server = await make_server(users_file=str(users_file(tmp_path, hashes)))
    hello = Hello(max_frame_size=MiB, max_streams=128, initial_window=MiB, digests=("blake3",))
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, handshake=False) as peer:
            await peer.send_raw(
                PREFACE
                + encode_message(hello)
                + encode_message(Auth(user="alice", password="wrong"))
                + encode_message(Get(name="a.txt", stream_id=1))
            )
            with trio.fail_after(0.4):
                assert isinstance(await peer.receive(), Hello)
            answers = await peer.receive_until_closed()
    assert [(type(m), getattr(m, "code", None)) for m in answers] == [(Error, ErrorCode.AUTH_FAILED)]
