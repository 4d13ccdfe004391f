"""Issue 13: client downloads are verified and atomic, and fsynced only when asked (--fsync)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import trioftp.client.download as client_download
import trioftp.client.folders as client_folders
import trioftp.disk.syscalls as syscalls
from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import MiB, connect, write_random
from trioftp import ChecksumMismatch
from trioftp.cli import main
from trioftp.server import Server


class _FsyncSpy:
    """Records the paths of the files os.fsync is called on (by the fd's /proc link)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = os.fsync

        def spy(fd: int) -> None:
            self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)

    def of(self, folder: Path) -> list[str]:
        return [p for p in self.paths if p.startswith(str(folder))]


@pytest.mark.parametrize("size", [100, 5 * MiB])
async def test_a_download_is_not_visible_until_its_digest_checks(
    server: Server, server_root: Path, tmp_path: Path, size: int
) -> None:
    write_random(server_root / "f.bin", size)
    target = tmp_path / "f.bin"
    seen_while_receiving: list[bool] = []

    def progress(_done: int, _total: int) -> None:
        seen_while_receiving.append(target.exists())

    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("f.bin", target, progress=progress)
    assert seen_while_receiving and not any(seen_while_receiving)
    assert target.read_bytes() == (server_root / "f.bin").read_bytes()


async def test_a_download_whose_digest_fails_never_appears(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_random(server_root / "f.bin", 3 * MiB)
    real = client_download.new_hasher

    class Wrong:
        def __init__(self, algorithm: str) -> None:
            self._hasher = real(algorithm)

        def update(self, data: bytes | bytearray | memoryview) -> None:
            self._hasher.update(data)

        def digest(self) -> bytes:
            return bytes(b ^ 1 for b in self._hasher.digest())  # as if a byte had been flipped

    monkeypatch.setattr(client_download, "new_hasher", Wrong)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "f.bin"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(ChecksumMismatch):
                await conn.download("f.bin", target)
    assert list(out.iterdir()) == []  # neither the file nor a partial


async def test_downloads_are_not_fsynced_unless_asked(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_random(server_root / "f.bin", 2 * MiB)
    fsyncs = _FsyncSpy(monkeypatch)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("f.bin", tmp_path / "plain.bin")
            assert fsyncs.of(tmp_path) == []
            await conn.download("f.bin", tmp_path / "durable.bin", fsync=True)
    # fsynced as the partial, before it was renamed into place
    assert fsyncs.of(tmp_path) == [str(tmp_path / "durable.bin.trioftp-part")]
    assert (tmp_path / "durable.bin").read_bytes() == (server_root / "f.bin").read_bytes()


async def test_cli_get_fsync_syncs_the_file_and_a_tree_once(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server_root / "tree" / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        write_random(server_root / "tree" / name, 10_000)
    write_random(server_root / "one.bin", 10_000)
    fsyncs = _FsyncSpy(monkeypatch)
    synced: list[str] = []
    real_sync = syscalls.sync_filesystem

    def sync_spy(path: str | os.PathLike[str], missing_ok: bool = False) -> None:
        synced.append(os.fspath(path))
        real_sync(path, missing_ok)

    monkeypatch.setattr(client_folders, "sync_filesystem", sync_spy)
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        argv = ["get", address, "one.bin", str(tmp_path / "plain.bin")]
        assert await trio.to_thread.run_sync(main, argv) == 0
        assert fsyncs.of(tmp_path) == [] and synced == []
        argv = ["get", "--fsync", address, "one.bin", str(tmp_path / "one.bin")]
        assert await trio.to_thread.run_sync(main, argv) == 0
        assert fsyncs.of(tmp_path) == [str(tmp_path / "one.bin.trioftp-part")]
        argv = ["get", "-r", "--fsync", address, "tree", str(tmp_path / "tree")]
        assert await trio.to_thread.run_sync(main, argv) == 0
    assert synced == [str(tmp_path / "tree")]  # one syncfs for the whole tree
    assert fsyncs.of(tmp_path / "tree") == []  # and no fsync per file
    assert (tmp_path / "tree" / "sub" / "c").read_bytes() == (server_root / "tree" / "sub" / "c").read_bytes()


def test_sync_filesystem_syncs_an_existing_folder_and_may_skip_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    syscalls.sync_filesystem(tmp_path)
    syscalls.sync_filesystem(tmp_path / "missing", missing_ok=True)
    with pytest.raises(FileNotFoundError):
        syscalls.sync_filesystem(tmp_path / "missing")


@pytest.mark.parametrize(("size", "threads"), [(64 * 1024 + 1, 0), (MiB, 0), (MiB + 1, 1)])
async def test_a_download_of_up_to_a_block_is_written_without_a_thread(
    server: Server,
    server_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    threads: int,
) -> None:
    """Up to one WRITE_BLOCK the client writes in its Trio thread (a thread hop cost more, W4);
    larger downloads get their writer thread. Either way the file is whole and checked."""
    import trioftp.transport.writer as writer_module

    started: list[str] = []
    real = writer_module.trio.lowlevel.start_thread_soon

    def counting(fn: object, deliver: object, name: str | None = None) -> None:
        started.append(name or "")
        real(fn, deliver, name=name)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module.trio.lowlevel, "start_thread_soon", counting)
    digest = write_random(server_root / "f.bin", size, seed=size)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.download("f.bin", tmp_path / "f.bin")
    assert info.digest == digest and (tmp_path / "f.bin").read_bytes() == (server_root / "f.bin").read_bytes()
    assert started.count("trioftp block writer") == threads
