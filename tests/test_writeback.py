"""EarlyWriteback (every `every` bytes, from where it left off) and the syscalls it stands on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trioftp.disk import syscalls
from trioftp.disk.syscalls import PAGE_CACHE_PIECE, write_at
from trioftp.disk.writeback import EarlyWriteback


def test_writeback_is_requested_per_gathered_range(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((fd, offset, length, flags))
        return 0

    monkeypatch.setattr(syscalls, "_sync_file_range", record)
    tracker = EarlyWriteback(7, start=100, every=1000)
    for end in (600, 1099, 1100, 1500, 2200, 3500):
        tracker.wrote_up_to(end)
    assert calls == [(7, 100, 1000, 2), (7, 1100, 1100, 2), (7, 2200, 1300, 2)]
    assert tracker.start == 3500


def test_without_sync_file_range_it_only_keeps_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscalls, "_sync_file_range", None)
    tracker = EarlyWriteback(-1, every=10)
    tracker.wrote_up_to(25)  # a bad fd is never used
    assert tracker.start == 25


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux only")
def test_the_real_call_works_on_a_file(tmp_path: Path) -> None:
    assert syscalls.can_start_writeback()
    data = os.urandom(3 << 20)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        tracker = EarlyWriteback(fd, every=1 << 20)
        for offset in range(0, len(data), 1 << 19):
            os.pwrite(fd, data[offset : offset + (1 << 19)], offset)
            tracker.wrote_up_to(offset + (1 << 19))
        os.fsync(fd)
    finally:
        os.close(fd)
    assert tracker.start == len(data)
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_rename_no_replace_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        syscalls.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"b"
    syscalls.rename_no_replace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_bytes() == b"a" and not (tmp_path / "a").exists()
    with pytest.raises(FileNotFoundError):
        syscalls.rename_no_replace(tmp_path / "a", tmp_path / "d")


def test_rename_no_replace_says_when_it_cannot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(syscalls, "_renameat2", None)
    with pytest.raises(NotImplementedError):
        syscalls.rename_no_replace(tmp_path / "a", tmp_path / "b")


def test_freed_transfer_buffers_go_back_to_the_os() -> None:
    # In fresh processes (the setting is process-wide): after a larger buffer
    # was freed, glibc by default puts 1 MiB blocks in its heap, where small
    # live objects between them keep their memory after they are freed.
    code = """
import sys
from trioftp.disk.syscalls import return_freed_buffers
if sys.argv[1] == "fixed" and not return_freed_buffers():
    print("unsupported")
    sys.exit()
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
big = bytearray(4 << 20)
del big
before = rss()
keep, blocks = [], []
for _ in range(64):
    block = bytearray(1 << 20)
    block[::4096] = b"x" * 256  # touched, as received bytes touch it
    blocks.append(block)
    keep.append(bytearray(4096))
del blocks
print(rss() - before)
"""
    if not sys.platform.startswith("linux") or not syscalls._mallopt:
        pytest.skip("glibc only")
    # glibc's own defaults, whatever this environment tunes
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_")}
    out = {
        mode: subprocess.run([sys.executable, "-c", code, mode], check=True, capture_output=True,
                             text=True, cwd=Path(__file__).parent.parent, env=env).stdout.strip()
        for mode in ("fixed", "default")
    }  # fmt: skip
    if out["fixed"] == "unsupported":
        pytest.skip("this allocator does not take M_MMAP_THRESHOLD")
    kept = {mode: int(value) for mode, value in out.items()}
    assert kept["fixed"] < 8 * 1024, kept  # KiB: the 64 MiB went back
    assert kept["default"] > 32 * 1024, kept  # what the server kept before


def test_write_at_writes_everything_in_pieces(tmp_path: Path) -> None:
    # More than one piece and not a multiple of it, at an offset past a prefix.
    data = os.urandom(3 * PAGE_CACHE_PIECE + 123)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"head")
        assert write_at(fd, memoryview(data), 4) == 4 + len(data)
        assert write_at(fd, b"", 4 + len(data)) == 4 + len(data)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"head" + data
