"""50 legacy and 50 v2 clients at once against one server; each reads what the other protocol wrote."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import trio

import trioftp
from compat import legacy_client as compat_client
from tests.conftest import NETWORK_TIMEOUT
from trioftp.server import Server

CLIENTS = 50


def make_bodies(prefix: str, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 1023, 1024, 65_536, 65_537] + [rng.randint(0, 200_000) for _ in range(CLIENTS - 6)]
    return {f"{prefix}/{i:02d}.bin": rng.randbytes(size) for i, size in enumerate(sizes)}


async def test_legacy_and_v2_clients_at_once(server: Server, server_root: Path) -> None:
    by_legacy = make_bodies("legacy", 1)
    by_v2 = make_bodies("v2", 2)
    got: dict[str, bytes] = {}
    threads = trio.CapacityLimiter(CLIENTS)  # every stdlib client gets its thread at once
    all_put = trio.Event()
    puts_done = 0

    def put_done() -> None:
        nonlocal puts_done
        puts_done += 1
        if puts_done == 2 * CLIENTS:
            all_put.set()

    async def legacy_client(index: int, put_name: str, get_name: str) -> None:
        # Half are trioftp's own legacy client, half the stdlib one of the old clients' style.
        if index % 2:
            put = functools.partial(
                compat_client.put, "127.0.0.1", server.port, put_name, by_legacy[put_name]
            )
            await trio.to_thread.run_sync(put, limiter=threads)
        else:
            await trioftp.legacy.put("127.0.0.1", put_name, by_legacy[put_name], port=server.port)
        put_done()
        await all_put.wait()
        if index % 2:
            get = functools.partial(compat_client.get, "127.0.0.1", server.port, get_name)
            got[get_name] = await trio.to_thread.run_sync(get, limiter=threads)
        else:
            got[get_name] = await trioftp.legacy.get("127.0.0.1", get_name, port=server.port)

    async def v2_client(put_name: str, get_name: str) -> None:
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            await conn.put(put_name, by_v2[put_name])
            put_done()
            await all_put.wait()
            got[get_name] = await conn.get(get_name)

    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for index, (legacy_name, v2_name) in enumerate(zip(by_legacy, by_v2, strict=True)):
                nursery.start_soon(legacy_client, index, legacy_name, v2_name)
                nursery.start_soon(v2_client, v2_name, legacy_name)
    # Each protocol read, byte for byte, what the other one wrote.
    assert got == {**by_legacy, **by_v2}
    for name, body in {**by_legacy, **by_v2}.items():
        assert (server_root / name).read_bytes() == body
    assert len(got) == 2 * CLIENTS
