"""Transfers under load and interruption: many at once, resume both ways, flow control, transfer logs."""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import trioftp.storage.local.store as store_module
import trioftp.storage.local.uploads as uploads_module
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import (
    MiB,
    connect,
    file_digest,
    partials,
    start_proxy,
    transfer_lines,
    wait_until,
    write_random,
)
from trioftp.errors import ConnectionClosed, NotFound, PermissionDenied, RemoteError
from trioftp.protocol import Settings
from trioftp.server import Server
from trioftp.storage.local import Storage


@pytest.fixture
def transfer_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="trioftp")
    return caplog


# --------------------------------------------------------------- concurrency


async def test_100_operations_at_once_on_one_connection(server: Server, server_root: Path) -> None:
    rng = random.Random(7)
    originals = {f"pre/{i:02d}.bin": rng.randbytes(rng.randrange(0, 300_000)) for i in range(50)}
    for name, data in originals.items():
        (server_root / name).parent.mkdir(exist_ok=True)
        (server_root / name).write_bytes(data)
    uploads = {f"new/{i:02d}.bin": rng.randbytes(rng.randrange(0, 300_000)) for i in range(50)}
    jobs = [("get", n, d) for n, d in originals.items()] + [("put", n, d) for n, d in uploads.items()]
    rng.shuffle(jobs)
    results: dict[str, bytes] = {}
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:

            async def worker(share: list[tuple[str, str, bytes]]) -> None:
                async with trio.open_nursery() as inner:  # each worker runs its share at once
                    for kind, name, data in share:
                        if kind == "get":
                            inner.start_soon(fetch, name)
                        else:
                            inner.start_soon(conn.put, name, data)

            async def fetch(name: str) -> None:
                results[name] = await conn.get(name)

            async with trio.open_nursery() as nursery:
                for w in range(5):
                    nursery.start_soon(worker, jobs[w::5])
            assert len(conn._inboxes) == 0
            listed = {e.name for e in await conn.list("new")}
    assert results == originals
    assert listed == {n.split("/")[1] for n in uploads}
    for name, data in uploads.items():
        assert (server_root / name).read_bytes() == data


async def test_many_small_gets_answered_in_one_pass_are_written_early(
    server: Server, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 answers built in one scheduler pass go out every few frames, not in one
    # write at the end of the pass; every sender must still learn its bytes left.
    from trioftp.transport.channel import Channel

    originals = {f"s{i:03d}": os.urandom(4096 + i) for i in range(200)}
    for name, data in originals.items():
        (server_root / name).write_bytes(data)
    early: list[int] = []
    write_eagerly = Channel._write_eagerly

    def counting(channel: Channel) -> None:
        early.append(len(channel._out))
        write_eagerly(channel)

    monkeypatch.setattr(Channel, "_write_eagerly", counting)
    got: dict[str, bytes] = {}
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.get("s000")  # the digests are cached from here on: answers come inline
            names = iter(originals)

            async def getter() -> None:
                for name in names:
                    got[name] = await conn.get(name)

            async with trio.open_nursery() as nursery:
                for _ in range(64):
                    nursery.start_soon(getter)
    assert got == originals
    assert early  # answers went out before their scheduler pass ended


async def test_small_get_is_not_stuck_behind_a_large_download(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    write_random(server_root / "large.bin", 64 * MiB)
    (server_root / "small.txt").write_bytes(b"quick")
    progress_when_small_done: list[int] = []
    seen: list[int] = [0]
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn, trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: conn.download(
                    "large.bin", tmp_path / "large.bin", progress=lambda n, t: seen.append(n)
                )
            )
            await wait_until(lambda: seen[-1] > 0)
            assert await conn.get("small.txt") == b"quick"
            progress_when_small_done.append(seen[-1])
    assert progress_when_small_done[0] < 64 * MiB


async def test_over_200_connections_at_once(make_server, server_root: Path) -> None:  # type: ignore[no-untyped-def]
    count = 210
    server: Server = await make_server()
    everyone_connected = trio.Event()
    connected = 0
    peak = 0
    verified: set[int] = set()

    async def one(i: int) -> None:
        nonlocal connected, peak
        data = f"connection {i} ".encode() * (i + 1)
        async with connect(server) as conn:
            connected += 1
            if connected == count:
                peak = server.connection_count
                everyone_connected.set()
            await everyone_connected.wait()
            await conn.put(f"c/{i}.txt", data)
            assert await conn.get(f"c/{i}.txt") == data
            assert (await conn.stat(f"c/{i}.txt")).size == len(data)
            verified.add(i)

    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
    assert peak == count
    assert verified == set(range(count))
    for i in range(count):
        assert (server_root / "c" / f"{i}.txt").read_bytes() == f"connection {i} ".encode() * (i + 1)
    server.shutdown()


async def test_readers_see_the_old_file_or_the_new_one_never_a_mix(server: Server, server_root: Path) -> None:
    versions = [bytes([v]) * (3 * MiB) for v in range(6)]
    (server_root / "f.bin").write_bytes(versions[0])
    seen: set[bytes] = set()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as writer, connect(server) as reader, trio.open_nursery() as nursery:
            done = trio.Event()

            async def write_versions() -> None:
                for version in versions[1:]:
                    await writer.put("f.bin", version)
                done.set()

            nursery.start_soon(write_versions)
            while not done.is_set():
                data = await reader.get("f.bin")
                assert data in versions, "a reader saw a mix of two versions"
                seen.add(data[:1])
            seen.add((await reader.get("f.bin"))[:1])
    assert len(seen) >= 2  # reads did overlap the replacements
    assert (server_root / "f.bin").read_bytes() == versions[-1]
    assert partials(server_root) == []


async def test_two_uploads_of_one_name_at_once(server: Server, server_root: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    digests = {write_random(a, 6 * MiB, seed=10), write_random(b, 6 * MiB, seed=11)}
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as one, connect(server) as two, trio.open_nursery() as nursery:
            nursery.start_soon(one.upload, a, "same.bin")
            nursery.start_soon(two.upload, b, "same.bin")
    assert file_digest(server_root / "same.bin") in digests
    assert partials(server_root) == []


# -------------------------------------------------------------------- resume


async def test_download_resumes_after_a_cut(
    server: Server, server_root: Path, tmp_path: Path, transfer_log: pytest.LogCaptureFixture
) -> None:
    # Well past the client's window (16 MiB) and blocks (4 MiB): the server cannot
    # have sent it all by the time the first block is written and reported.
    size = 48 * MiB
    digest = write_random(server_root / "big.bin", size)
    target = tmp_path / "big.bin"
    partial = tmp_path / "big.bin.trioftp-part"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with trio.CancelScope() as cut:

                def cancel_midway(done: int, total: int) -> None:
                    if done >= 3 * MiB:
                        cut.cancel()

                await conn.download("big.bin", target, progress=cancel_midway)
            # Connected until the server has read the CANCEL: a close right after it races
            # the server's next send, which may then see the reset first (a lost connection).
            await wait_until(lambda: bool(transfer_lines(transfer_log, "GET", "big.bin")))
        assert cut.cancelled_caught
        held = partial.stat().st_size
        assert 3 * MiB <= held < size
        assert not target.exists()
        (first,) = transfer_lines(transfer_log, "GET", "big.bin")
        assert "cancelled by the client" in first

        transfer_log.clear()
        seen: list[int] = []
        async with connect(server) as conn:
            info = await conn.download("big.bin", target, progress=lambda n, t: seen.append(n))
        await wait_until(lambda: bool(transfer_lines(transfer_log, "GET", "big.bin")))
    assert info.digest == digest
    assert file_digest(target) == digest
    assert not partial.exists()
    assert seen[0] > held and seen[-1] == size
    # The server was asked for the rest only.
    (second,) = transfer_lines(transfer_log, "GET", "big.bin")
    assert f"'big.bin' {size - held} bytes" in second and second.endswith(": ok")


async def test_download_resumes_after_the_connection_drops(
    server: Server, server_root: Path, tmp_path: Path, transfer_log: pytest.LogCaptureFixture
) -> None:
    size = 12 * MiB
    digest = write_random(server_root / "big.bin", size, seed=9)
    target = tmp_path / "big.bin"
    partial = tmp_path / "big.bin.trioftp-part"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await start_proxy(nursery, server, cut_to_client_after=5 * MiB)
            with pytest.raises(ConnectionClosed):
                async with connect(proxy.port) as conn:
                    await conn.download("big.bin", target)
            nursery.cancel_scope.cancel()
        held = partial.stat().st_size
        assert MiB <= held < 5 * MiB and not target.exists()
        await wait_until(lambda: bool(transfer_lines(transfer_log, "GET", "big.bin")))
        (cut,) = transfer_lines(transfer_log, "GET", "big.bin")
        assert "interrupted" in cut
        assert int(re.search(r"'big.bin' (\d+) bytes", cut).group(1)) >= held  # type: ignore[union-attr]
        transfer_log.clear()
        async with connect(server) as conn:
            await conn.download("big.bin", target)
        await wait_until(lambda: bool(transfer_lines(transfer_log, "GET", "big.bin")))
    assert file_digest(target) == digest and not partial.exists()
    (resumed,) = transfer_lines(transfer_log, "GET", "big.bin")
    assert f"'big.bin' {size - held} bytes" in resumed


async def test_download_with_a_wrong_partial_starts_over(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    digest = write_random(server_root / "f.bin", 3 * MiB, seed=1)
    target = tmp_path / "f.bin"
    (tmp_path / "f.bin.trioftp-part").write_bytes(b"not the same bytes" * 1000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("f.bin", target)
    assert file_digest(target) == digest
    assert not (tmp_path / "f.bin.trioftp-part").exists()


async def test_download_with_a_partial_longer_than_the_file_starts_over(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "short.txt").write_bytes(b"now short")
    (tmp_path / "short.txt.trioftp-part").write_bytes(b"x" * 100_000)  # left by an older, longer version
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("short.txt", tmp_path / "short.txt")
    assert (tmp_path / "short.txt").read_bytes() == b"now short"
    assert not (tmp_path / "short.txt.trioftp-part").exists()


async def test_download_without_resume_ignores_a_partial(
    server: Server, server_root: Path, tmp_path: Path, transfer_log: pytest.LogCaptureFixture
) -> None:
    (server_root / "f.txt").write_bytes(b"fresh")
    (tmp_path / "f.txt.trioftp-part").write_bytes(b"fre")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("f.txt", tmp_path / "f.txt", resume=False)
        await wait_until(lambda: bool(transfer_lines(transfer_log, "GET", "f.txt")))
    assert (tmp_path / "f.txt").read_bytes() == b"fresh"
    (line,) = transfer_lines(transfer_log, "GET", "f.txt")
    assert "'f.txt' 5 bytes" in line  # all of it, not the 2 bytes after the partial


async def test_failed_download_leaves_nothing_behind(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(NotFound):
                await conn.download("missing.bin", out / "missing.bin")
    assert list(out.iterdir()) == []


async def test_upload_resumes_after_a_cut_and_the_old_file_stays_meanwhile(
    server: Server, server_root: Path, tmp_path: Path, transfer_log: pytest.LogCaptureFixture
) -> None:
    size = 12 * MiB
    source = tmp_path / "new.bin"
    digest = write_random(source, size, seed=2)
    (server_root / "target.bin").write_bytes(b"the old content")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await start_proxy(nursery, server, cut_after=6 * MiB)
            with pytest.raises(ConnectionClosed):
                async with connect(proxy.port) as conn:
                    await conn.upload(source, "target.bin")
            assert proxy.cuts == 1
            nursery.cancel_scope.cancel()
        await wait_until(lambda: server.connection_count == 0)
        await wait_until(lambda: bool(transfer_lines(transfer_log, "PUT", "target.bin")))
        (cut_line,) = transfer_lines(transfer_log, "PUT", "target.bin")
        assert not cut_line.endswith(": ok"), cut_line  # a cut transfer is not logged as a success

        # Meanwhile the old file is what everyone sees, and the partial is nowhere to be seen.
        (kept,) = partials(server_root)
        held = kept.stat().st_size
        assert 0 < held < size
        async with connect(server) as conn:
            assert await conn.get("target.bin") == b"the old content"
            assert [(e.name, e.size) for e in await conn.list()] == [("target.bin", 15)]
            with pytest.raises(PermissionDenied):
                await conn.list(".trioftp/partial")
            with pytest.raises(PermissionDenied):
                await conn.get(f".trioftp/partial/{kept.name}")

            transfer_log.clear()
            seen: list[int] = []
            info = await conn.upload(source, "target.bin", progress=lambda n, t: seen.append(n))
        await wait_until(lambda: bool(transfer_lines(transfer_log, "PUT", "target.bin")))
    assert info.digest == digest
    assert file_digest(server_root / "target.bin") == digest
    assert partials(server_root) == []
    # READY said where to go on: the first progress report is past the 1 MiB a fresh upload could have sent.
    assert seen[0] > MiB and seen[-1] == size
    (resumed,) = transfer_lines(transfer_log, "PUT", "target.bin")
    assert f"'target.bin' {size - held} bytes" in resumed and resumed.endswith(": ok")


async def test_upload_onto_a_stale_partial_of_another_file_starts_over(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    size = 12 * MiB
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    write_random(old, size, seed=5)
    digest = write_random(new, size, seed=6)  # same name and size, other bytes
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with trio.CancelScope() as cut:
                await conn.upload(old, "f.bin", progress=lambda n, t: cut.cancel() if n > 9 * MiB else None)
        await wait_until(lambda: server.connection_count == 0)
        assert partials(server_root)
        async with connect(server) as conn:
            info = await conn.upload(new, "f.bin")
    assert info.digest == digest
    assert file_digest(server_root / "f.bin") == digest
    assert partials(server_root) == []


async def test_upload_cancelled_by_the_client_keeps_the_partial(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    size = 12 * MiB
    source = tmp_path / "f.bin"
    digest = write_random(source, size, seed=3)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with trio.CancelScope() as cut:
                await conn.upload(
                    source, "f.bin", progress=lambda n, t: cut.cancel() if n > 9 * MiB else None
                )
            assert cut.cancelled_caught
        await wait_until(lambda: server.connection_count == 0)
        assert not (server_root / "f.bin").exists()
        (kept,) = partials(server_root)
        assert kept.stat().st_size >= 4 * MiB  # the server granted more credit only after writing 4 MiB
        async with connect(server) as conn:
            seen: list[int] = []
            await conn.upload(source, "f.bin", progress=lambda n, t: seen.append(n))
    assert seen[0] > 4 * MiB
    assert file_digest(server_root / "f.bin") == digest
    assert partials(server_root) == []


async def test_upload_without_resume_starts_over(
    server: Server, server_root: Path, tmp_path: Path, transfer_log: pytest.LogCaptureFixture
) -> None:
    size = 12 * MiB
    source = tmp_path / "f.bin"
    digest = write_random(source, size, seed=4)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with trio.CancelScope() as cut:
                await conn.upload(
                    source, "f.bin", progress=lambda n, t: cut.cancel() if n > 9 * MiB else None
                )
        await wait_until(lambda: server.connection_count == 0)
        assert partials(server_root)
        transfer_log.clear()
        async with connect(server) as conn:
            await conn.upload(source, "f.bin", resume=False)
        await wait_until(lambda: bool(transfer_lines(transfer_log, "PUT", "f.bin")))
    (line,) = transfer_lines(transfer_log, "PUT", "f.bin")
    assert f"'f.bin' {size} bytes" in line
    assert file_digest(server_root / "f.bin") == digest


@pytest.mark.parametrize(("ttl", "kept"), [(3600.0, True), (0.0, False)])
async def test_partials_older_than_partial_ttl_are_removed_at_start(
    make_server,
    server_root: Path,
    ttl: float,
    kept: bool,  # type: ignore[no-untyped-def]
) -> None:
    folder = server_root / ".trioftp" / "partial"
    folder.mkdir(parents=True)
    (folder / ("0" * 40 + ".part")).write_bytes(b"old partial")
    (folder / ("1" * 40 + ".0123456789abcdef.tmp")).write_bytes(b"a private temp file")
    server: Server = await make_server(partial_ttl=ttl)
    assert [p.name for p in partials(server_root)] == (["0" * 40 + ".part"] if kept else [])
    server.shutdown()


# -------------------------------------------------------------- flow control


async def test_upload_with_a_small_server_window(make_server, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = await make_server(initial_window=64 * 1024)
    source = tmp_path / "f.bin"
    digest = write_random(source, 3 * MiB)
    data = os.urandom(3 * MiB)
    with trio.fail_after(10):
        async with connect(server) as conn:
            await conn.upload(source, "f.bin")
            await conn.put("g.bin", data)
    assert file_digest(server_root / "f.bin") == digest
    assert (server_root / "g.bin").read_bytes() == data
    server.shutdown()


async def test_download_with_a_small_client_window(server: Server, server_root: Path, tmp_path: Path) -> None:
    digest = write_random(server_root / "f.bin", 3 * MiB)
    settings = Settings(initial_window=64 * 1024, max_frame_size=16 * 1024)
    with trio.fail_after(10):
        async with connect(server, settings=settings) as conn:
            await conn.download("f.bin", tmp_path / "f.bin")
            data = await conn.get("f.bin")
    assert file_digest(tmp_path / "f.bin") == digest
    assert len(data) == 3 * MiB


# ----------------------------------------------------------------------- logs


async def test_one_log_line_per_transfer(
    server: Server, server_root: Path, tmp_path: Path, transfer_log: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            local = conn.channel.stream.socket.getsockname()
            await conn.put("logged.txt", b"12345")
            await conn.get("logged.txt")
            with pytest.raises(NotFound):
                await conn.get("absent.txt")
            await conn.list()
            await conn.stat("logged.txt")
        await wait_until(
            lambda: len(transfer_log.records) > 0 and bool(transfer_lines(transfer_log, "GET", "absent.txt"))
        )
    peer = f"{local[0]}:{local[1]}"
    (put,) = transfer_lines(transfer_log, "PUT", "logged.txt")
    (get,) = transfer_lines(transfer_log, "GET", "logged.txt")
    (missing,) = transfer_lines(transfer_log, "GET", "absent.txt")
    for line in (put, get):
        assert line.startswith(f"{peer} ")
        assert " 5 bytes in " in line and " s (" in line and line.endswith(": ok")
    assert missing.startswith(f"{peer} GET 'absent.txt' 0 bytes in ")
    assert "NOT_FOUND" in missing
    transfer_records = [
        r for r in transfer_log.records if r.name == "trioftp.transfer" and r.levelno >= logging.INFO
    ]
    assert len(transfer_records) == 3  # list and stat are not transfers


# ------------------------------------------------- a folder on another mount


def _rename_fails_across_mounts(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make the server's rename out of its partial folder fail as it does into another mount."""
    real_replace = uploads_module.replace_at

    def replace(old_dir: int, old: str, new_dir: int, new: str) -> None:
        if os.readlink(f"/proc/self/fd/{old_dir}").endswith("/.trioftp/partial"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(old_dir, old, new_dir, new)

    monkeypatch.setattr(uploads_module, "replace_at", replace)


@pytest.mark.parametrize("copy", ["unnamed", "named", "read-write"])
async def test_upload_into_another_mount_is_copied_into_place(
    server: Server, server_root: Path, monkeypatch: pytest.MonkeyPatch, copy: str
) -> None:
    _rename_fails_across_mounts(monkeypatch, server_root)
    if copy != "unnamed":  # no O_TMPFILE here: the copy is a hidden named file until renamed
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    if copy == "read-write":  # no file-to-file sendfile (as off Linux)
        monkeypatch.setattr(os, "sendfile", _refuse_sendfile)
    (server_root / "mnt").mkdir()
    (server_root / "mnt" / "f.bin").write_bytes(b"old")
    data = os.urandom(3 * MiB + 5)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.put("mnt/f.bin", data)
            await conn.put("mnt/new/g.bin", b"small")
            again = await conn.get("mnt/f.bin")
    assert info.size == len(data)
    assert (server_root / "mnt" / "f.bin").read_bytes() == data == again
    assert (server_root / "mnt" / "new" / "g.bin").read_bytes() == b"small"
    assert sorted(p.name for p in (server_root / "mnt").iterdir()) == ["f.bin", "new"]  # no copy left over
    assert partials(server_root) == []


_real_sendfile = os.sendfile


def _refuse_sendfile(out: int, source: int, offset: int | None, count: int) -> int:
    """os.sendfile as off Linux: into sockets only."""
    if not stat.S_ISSOCK(os.fstat(out).st_mode):
        raise OSError(errno.ENOTSOCK, "Socket operation on non-socket")
    return _real_sendfile(out, source, offset, count)


async def test_failed_copy_into_another_mount_keeps_the_old_file(
    server: Server, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rename_fails_across_mounts(monkeypatch, server_root)
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)  # a named copy, so one could be left behind
    (server_root / "mnt").mkdir()
    (server_root / "mnt" / "f.bin").write_bytes(b"old")

    def full_disk(*_args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", full_disk)  # the server's copy; put() of bytes does not use it
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as caught:
                await conn.put("mnt/f.bin", os.urandom(100_000))
    assert caught.value.code.name == "NO_SPACE"
    assert (server_root / "mnt" / "f.bin").read_bytes() == b"old"
    assert sorted(p.name for p in (server_root / "mnt").iterdir()) == ["f.bin"]
    assert partials(server_root) == []  # a full disk keeps nothing to resume


async def test_a_copy_in_progress_is_not_listed(server: Server, server_root: Path) -> None:
    (server_root / "mnt").mkdir()
    (server_root / "mnt" / ".trioftp-0123456789abcdef.part").write_bytes(b"half")
    (server_root / "mnt" / ".trioftp-notes.txt").write_bytes(b"a user's own file")
    (server_root / "mnt" / ".trioftp-mine.part").write_bytes(b"another of theirs")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            names = [entry.name for entry in await conn.list("mnt")]
    assert names == [".trioftp-mine.part", ".trioftp-notes.txt"]


async def test_a_copy_a_crash_left_is_removed_at_the_next_start(
    make_server: MakeServer, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rename_fails_across_mounts(monkeypatch, server_root)
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)  # a named copy
    (server_root / "mnt").mkdir()
    (server_root / "mnt" / "f.bin").write_bytes(b"old")
    (server_root / "mnt" / ".trioftp-mine.part").write_bytes(b"a user's own file")
    real_unlink = os.unlink

    def crash_mid_copy(source: int, out: int, size: int) -> None:
        os.write(out, b"half a copy")
        # The process dies here: nothing it would have cleaned up goes.
        monkeypatch.setattr(os, "unlink", lambda *_args, **_kwargs: None)
        raise OSError(errno.EIO, "the machine went down")

    monkeypatch.setattr("trioftp.storage.local.uploads._copy_bytes", crash_mid_copy)
    with trio.fail_after(NETWORK_TIMEOUT):
        first = await make_server()
        async with connect(first) as conn:
            with pytest.raises(RemoteError):
                await conn.put("mnt/f.bin", b"new content")
        first.shutdown()
        left = sorted(p.name for p in (server_root / "mnt").iterdir())
        assert len(left) == 3 and re.fullmatch(r"\.trioftp-[0-9a-f]{16}\.part", left[0]), left
        assert ".copy" in [p.suffix for p in partials(server_root)]  # the note naming it

        monkeypatch.setattr(os, "unlink", real_unlink)
        await make_server()  # the restart
    assert sorted(p.name for p in (server_root / "mnt").iterdir()) == [".trioftp-mine.part", "f.bin"]
    assert (server_root / "mnt" / "f.bin").read_bytes() == b"old"
    assert [p.suffix for p in partials(server_root)] == [".part"]  # the upload's own, kept to resume


@pytest.mark.parametrize(
    "named",
    ["../outside/.trioftp-0123456789abcdef.part", "mnt/precious.txt", "/etc/passwd", "\udcff"],
)
def test_the_sweep_removes_only_copies_inside_the_root(tmp_path: Path, named: str) -> None:
    root = tmp_path / "root"
    (root / "mnt").mkdir(parents=True)
    (root / "mnt" / "precious.txt").write_bytes(b"keep")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / ".trioftp-0123456789abcdef.part").write_bytes(b"keep")
    storage = Storage(root)
    note = storage.partial_dir / "0123456789abcdef.copy"
    note.write_text(str(root / named), encoding="utf-8", errors="surrogateescape")
    assert storage.clean_partials(at_start=True) == 0
    assert (root / "mnt" / "precious.txt").read_bytes() == b"keep"
    assert (tmp_path / "outside" / ".trioftp-0123456789abcdef.part").read_bytes() == b"keep"
    assert not note.exists()


async def test_rename_across_mounts_is_a_clear_bad_request(
    server: Server, server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server_root / "a.txt").write_bytes(b"a")
    (server_root / "mnt").mkdir()

    def across(real: Callable[[int, str, int, str], None]) -> Callable[[int, str, int, str], None]:
        def rename(old_dir: int, old: str, new_dir: int, new: str) -> None:
            if os.readlink(f"/proc/self/fd/{new_dir}").endswith("/mnt"):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            real(old_dir, old, new_dir, new)

        return rename

    monkeypatch.setattr(store_module, "replace_at", across(store_module.replace_at))
    monkeypatch.setattr(store_module, "rename_at_no_replace", across(store_module.rename_at_no_replace))
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as caught:
                await conn.rename("a.txt", "mnt/a.txt")
    assert caught.value.code.name == "BAD_REQUEST"
    assert "file systems" in str(caught.value)
    assert (server_root / "a.txt").exists()
