"""trioftp servers on one bucket (Ceph): what one receives the others serve, resume across them,
uploads of one name at once, a server gone mid-upload, the engine gone and back."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

import trioftp.storage.s3.store as s3_store
from compat import legacy_client
from tests.ceph import Ceph
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.test_cli import start_serve
from tests.test_legacy_server import in_thread
from tests.v2_helpers import connect, start_proxy, wait_until, write_random
from trioftp.errors import ConnectionClosed, RemoteError
from trioftp.server import Server

pytestmark = pytest.mark.s3

MiB = 2**20
PART = 5 * MiB


@pytest.fixture
def make_s3_server(
    make_server: MakeServer, rgw: Ceph, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> MakeServer:
    """`await make_s3_server()`: one more server on the test's bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
    monkeypatch.setattr(s3_store, "PART_SIZE", PART)  # multipart with small files

    async def start(**overrides: Any) -> Server:
        return await make_server(store=f"s3://{bucket_name}/srv", s3_endpoint=rgw.endpoint, **overrides)  # type: ignore[no-any-return]

    return start


async def test_upload_through_one_download_through_another(
    make_s3_server: MakeServer, tmp_path: Path
) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"hello")
    digest = write_random(big, 2 * PART + 12345)
    with trio.fail_after(NETWORK_TIMEOUT):
        a, b = await make_s3_server(), await make_s3_server()
        async with connect(a) as conn:
            await conn.upload(small, "d/small")
            info = await conn.upload(big, "d/big")
            await conn.mkdir("empty")
        assert info.digest == digest
        async with connect(b) as conn:
            assert await conn.get("d/small") == b"hello"
            got = await conn.download("d/big", tmp_path / "copy")
            assert got.digest == digest and (tmp_path / "copy").read_bytes() == big.read_bytes()
            assert [(e.name, e.kind.value) for e in await conn.list()] == [("d", "dir"), ("empty", "dir")]
            assert (await conn.stat("d/big")).digest == digest
            await conn.rename("d/small", "moved", replace=False)
            await conn.delete("empty")
        async with connect(a) as conn:
            assert [e.name for e in await conn.list()] == ["d", "moved"]


async def test_upload_cut_on_one_server_resumes_on_another(
    make_s3_server: MakeServer, tmp_path: Path
) -> None:
    source = tmp_path / "big"
    digest = write_random(source, 3 * PART + 100, seed=3)
    with trio.fail_after(NETWORK_TIMEOUT):
        a, b = await make_s3_server(), await make_s3_server()
        async with trio.open_nursery() as nursery:
            proxy = await start_proxy(nursery, a, cut_after=2 * PART + MiB)
            with pytest.raises(ConnectionClosed):
                async with connect(proxy.port) as conn:
                    await conn.upload(source, "r.bin")
            nursery.cancel_scope.cancel()
        await wait_until(lambda: a.connection_count == 0)
        await trio.to_thread.run_sync(a.storage.settle)  # type: ignore[attr-defined]  # set aside
        seen: list[int] = []
        async with connect(b) as conn:
            info = await conn.upload(source, "r.bin", progress=lambda n, t: seen.append(n))
            assert info.digest == digest
            assert [e.name for e in await conn.list()] == ["r.bin"]
    assert seen[0] >= 2 * PART  # B went on from what A had received


async def test_uploads_of_one_name_through_two_servers_end_with_one_whole_file(
    make_s3_server: MakeServer, tmp_path: Path
) -> None:
    paths = [tmp_path / "one", tmp_path / "two"]
    digests = [write_random(path, 2 * PART + 99, seed=i) for i, path in enumerate(paths)]
    with trio.fail_after(NETWORK_TIMEOUT):
        servers = [await make_s3_server(), await make_s3_server()]

        async def send(i: int) -> None:
            async with connect(servers[i]) as conn:
                await conn.upload(paths[i], "same.bin")

        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(send, i)
        async with connect(servers[0]) as conn:
            got = await conn.download("same.bin", tmp_path / "got")
    assert got.digest in digests
    assert (tmp_path / "got").read_bytes() == paths[digests.index(got.digest)].read_bytes()


async def test_a_server_gone_mid_upload_while_another_carries_on(
    make_s3_server: MakeServer, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_random(first, 4 * PART, seed=5)
    digest = write_random(second, 2 * PART + 1, seed=6)
    with trio.fail_after(NETWORK_TIMEOUT):
        b = await make_s3_server()
        async with trio.open_nursery() as dying:
            a: Server = await dying.start(Server(b.config).serve)
            progress: list[int] = []

            async def doomed() -> None:
                async with connect(a) as conn:
                    await conn.upload(first, "first.bin", progress=lambda n, t: progress.append(n))

            dying.start_soon(doomed)
            await wait_until(lambda: bool(progress) and progress[-1] > PART)
            dying.cancel_scope.cancel()  # server A and its client gone at once, mid-upload
        async with connect(b) as conn:
            assert (await conn.upload(second, "second.bin")).digest == digest
            assert [e.name for e in await conn.list()] == ["second.bin"]  # nothing half-visible
            await conn.upload(first, "first.bin")
            assert await conn.get("second.bin") == second.read_bytes()


async def test_engine_stopped_and_started_again(
    make_s3_server: MakeServer, rgw: Ceph, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(os.urandom(1000))
    with trio.fail_after(NETWORK_TIMEOUT * 2):
        server = await make_s3_server()
        async with connect(server) as conn:
            await conn.upload(source, "f")
            await trio.to_thread.run_sync(rgw.stop_rgw)
            try:
                with pytest.raises(RemoteError) as refused:
                    await conn.get("f")
                assert "unavailable" in str(refused.value)
                with pytest.raises(RemoteError):
                    await conn.upload(source, "g")
                assert (await conn.status()) is not None  # the server goes on serving what it can
            finally:
                await trio.to_thread.run_sync(rgw.start_rgw)
            assert await conn.get("f") == source.read_bytes()
            await conn.upload(source, "g")
            assert [e.name for e in await conn.list()] == ["f", "g"]


async def test_cli_serves_a_bucket_named_in_the_config_file(
    rgw: Ceph, bucket_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)  # as boto3 finds them: the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
    config = tmp_path / "serve.toml"
    config.write_text(f'[server]\nstore = "s3://{bucket_name}/cli"\n')
    source = tmp_path / "f"
    source.write_bytes(b"through the command line")
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, log = await start_serve(None, "--config", str(config), "--s3-endpoint", rgw.endpoint)
        try:
            assert f"s3://{bucket_name}/cli/" in log[0]
            async with connect(port) as conn:
                await conn.upload(source, "f")
                assert await conn.get("f") == source.read_bytes()
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
    assert process.returncode == 0


async def test_legacy_clients_put_and_get_through_a_bucket(make_s3_server: MakeServer) -> None:
    """Old clients keep working when the files live in S3: put through one server, get through
    another, a missing name answered NO|0 (the legacy "not found") as on a local folder."""
    data = os.urandom(2 * PART + 777)  # a multipart upload behind a legacy put
    with trio.fail_after(NETWORK_TIMEOUT):
        a, b = await make_s3_server(), await make_s3_server()
        await in_thread(legacy_client.put, "127.0.0.1", a.port, "old.bin", data)
        await wait_until_listed(b, "old.bin")
        assert await in_thread(legacy_client.get, "127.0.0.1", b.port, "old.bin") == data
        with pytest.raises(legacy_client.NotFound):
            await in_thread(legacy_client.get, "127.0.0.1", b.port, "missing.bin")
        async with connect(a) as conn:
            assert (await conn.stat("old.bin")).size == len(data)


async def wait_until_listed(server: Server, name: str) -> None:
    """A legacy put has no answer: it is done once its file appears."""
    async with connect(server) as conn:
        for _ in range(200):
            if name in [entry.name for entry in await conn.list()]:
                return
            await trio.sleep(0.05)
    raise AssertionError(f"{name} never appeared")


async def test_an_idle_server_gives_back_the_download_buffers_it_kept(
    make_s3_server: MakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Range buffers kept for the next download go back once no transfer runs (issue 11's
    "memory goes back after a burst"), not at the next memory shortage only."""
    monkeypatch.setattr(s3_store, "READ_AHEAD_CHUNK", 2 * MiB)  # a 5 MiB file reads ranges ahead
    source = tmp_path / "big"
    write_random(source, 5 * MiB + 7)
    server = await make_s3_server(min_rate_window=0.2)  # the watchdog passes every 0.05 s
    ranges = server.storage._shared.ranges  # type: ignore[attr-defined]
    kept_when_shed: list[int] = []
    shed = server.storage.shed
    monkeypatch.setattr(server.storage, "shed", lambda: kept_when_shed.append(ranges.counted) or shed())
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.upload(source, "big")
            await conn.download("big", tmp_path / "copy")
        assert (tmp_path / "copy").read_bytes() == source.read_bytes()
        await wait_until(lambda: any(kept_when_shed) and ranges.counted == 0)
    assert server.storage._shared.memory.held == 0  # type: ignore[attr-defined]
