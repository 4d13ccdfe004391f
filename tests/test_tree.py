"""Folders and sync over one connection: upload_tree, download_tree, sync."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from trioftp.client import tree
from trioftp.server import Server


def make_tree(top: Path, count: int = 12) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i in range(count):
        relative = f"d{i % 3}/sub{i % 2}/f{i}.bin" if i % 4 else f"top{i}.txt"
        data = os.urandom(i * 777)
        (top / relative).parent.mkdir(parents=True, exist_ok=True)
        (top / relative).write_bytes(data)
        files[relative] = data
    (top / "ünïcode ñame.txt").write_bytes(b"unicode")
    files["ünïcode ñame.txt"] = b"unicode"
    return files


def read_tree(top: Path) -> dict[str, bytes]:
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in top.rglob("*")
        if p.is_file() and ".trioftp" not in p.parts
    }


async def test_upload_tree_copies_everything_then_nothing(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "local"
    files = make_tree(local)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            first = await tree.upload_tree(conn, local, "backup")
            second = await tree.upload_tree(conn, local, "backup")
    assert sorted(first.copy) == sorted(files)
    assert second.copy == () and second.unchanged == len(files)
    assert read_tree(server.storage.root / "backup") == files


async def test_download_tree_round_trip(server: Server, tmp_path: Path) -> None:
    files = make_tree(server.storage.root / "remote")
    target = tmp_path / "copy"
    progress: list[tree.TreeProgress] = []
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await tree.download_tree(conn, "remote", target, progress=progress.append)
    assert read_tree(target) == files
    assert plan.bytes_to_copy == sum(len(d) for d in files.values())
    assert progress[-1].files_done == len(files) and progress[-1].bytes_done == plan.bytes_to_copy


async def test_sync_sends_only_changed_files_and_deletes_with_flag(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "local"
    files = make_tree(local)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            await tree.sync(conn, local, "mirror")
            changed = next(name for name, data in files.items() if len(data) > 100)
            same_size = bytearray(files[changed])
            same_size[0] ^= 0xFF  # same size, different digest
            (local / changed).write_bytes(bytes(same_size))
            gone = next(name for name in files if name != changed)
            (local / gone).unlink()
            dry = await tree.sync(conn, local, "mirror", delete=True, dry_run=True)
            assert dry.copy == (changed,) and dry.delete == (gone,)
            assert (server.storage.root / "mirror" / gone).exists()  # dry run touched nothing
            plan = await tree.sync(conn, local, "mirror", delete=True)
    assert plan.copy == (changed,) and plan.delete == (gone,)
    assert read_tree(server.storage.root / "mirror") == read_tree(local)


async def test_a_missing_source_is_an_error_not_an_empty_tree(server: Server, tmp_path: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(trioftp.NotFound):
                await tree.sync(conn, tmp_path / "nowhere", "no/such/folder", direction=tree.Direction.DOWN)
            with pytest.raises(FileNotFoundError):
                await conn.upload_tree(tmp_path / "nowhere", "up")
            with pytest.raises(trioftp.NotFound):
                await conn.download_tree("no/such/folder", tmp_path / "nowhere")
            plan = await conn.download_tree("", tmp_path / "nowhere")  # the root always exists
    assert plan.copy == () and plan.delete == ()
    assert not (server.storage.root / "up").exists()


async def test_failed_files_are_reported_and_others_still_copied(
    make_server: object, tmp_path: Path, server_root: Path
) -> None:
    server = await make_server(max_file_size=1000)  # type: ignore[operator]
    local = tmp_path / "local"
    (local / "small.txt").parent.mkdir(parents=True)
    (local / "small.txt").write_bytes(b"x" * 10)
    (local / "big.bin").write_bytes(b"y" * 5000)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.upload_tree(conn, local, "up")
    assert set(caught.value.failures) == {"big.bin"}
    assert (server_root / "up" / "small.txt").read_bytes() == b"x" * 10
    assert not (server_root / "up" / "big.bin").exists()


async def test_connection_methods_upload_download_and_sync(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "local"
    files = make_tree(local, count=6)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            sent = await conn.upload_tree(local, "up")
            received = await conn.download_tree("up", tmp_path / "back")
            (local / "extra.txt").write_bytes(b"new")
            dry = await conn.sync(local, "up", dry_run=True)
            assert not (server.storage.root / "up" / "extra.txt").exists()
            (tmp_path / "back" / "stray.txt").write_bytes(b"stray")
            down = await conn.sync(tmp_path / "back", "up", direction=trioftp.Direction.DOWN, delete=True)
    assert sorted(sent.copy) == sorted(received.copy) == sorted(files)
    assert read_tree(tmp_path / "back") == files
    assert dry.copy == ("extra.txt",)
    assert down.copy == () and down.delete == ("stray.txt",)
    assert isinstance(down, trioftp.Plan)


async def test_delete_refuses_a_missing_source_instead_of_emptying_the_target(
    server: Server, tmp_path: Path
) -> None:
    remote_files = make_tree(server.storage.root / "www", count=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_bytes(b"keep me")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(FileNotFoundError):
                await conn.sync(tmp_path / "typo", "www", delete=True)
            with pytest.raises(trioftp.NotFound):
                await conn.sync(tmp_path / "mine", "wwww", direction=trioftp.Direction.DOWN, delete=True)
            with pytest.raises(FileNotFoundError):
                await conn.sync(tmp_path / "typo", "www", delete=True, dry_run=True)
    assert read_tree(server.storage.root / "www") == remote_files
    assert read_tree(tmp_path / "mine") == {"precious.txt": b"keep me"}


# ------------------------------------------------- entries that are not files


@contextlib.contextmanager
def fifo_must_stay_closed(fifo: Path, after: float = 5.0) -> Iterator[None]:
    """Fail, instead of hanging the suite, if the code under test opens `fifo`.

    Opening a FIFO to read blocks until a writer comes (on trio's own thread,
    which no fail_after can interrupt); after `after` seconds a writer comes,
    and the test fails on the flag it sets.
    """
    opened = threading.Event()

    def unblock() -> None:
        try:  # succeeds only if a reader is waiting
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return
        opened.set()

    timer = threading.Timer(after, unblock)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
    assert not opened.is_set(), f"{fifo} was opened"


def test_the_walk_takes_files_and_folders_and_never_opens_the_rest(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ok.txt").write_bytes(b"ok")
    os.mkfifo(tmp_path / "sub" / "fifo")
    (tmp_path / "link.txt").symlink_to(tmp_path / "sub" / "ok.txt")  # a file, as rsync -L
    with fifo_must_stay_closed(tmp_path / "sub" / "fifo", after=1.0):
        scan = tree.scan_local(tmp_path)
        files = tree.walk_local(tmp_path)
    assert sorted(files) == sorted(scan.files) == ["link.txt", "sub/ok.txt"]
    assert files["link.txt"].size == 2
    assert scan.folders == {"sub"}
    assert scan.skipped == {"sub/fifo": "not a regular file or folder (a FIFO)"}


async def test_a_fifo_in_the_tree_is_skipped_and_the_rest_uploaded(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "odd"
    local.mkdir()
    (local / "ok.txt").write_bytes(b"ok")
    os.mkfifo(local / "fifo")
    with fifo_must_stay_closed(local / "fifo"), trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.upload_tree(conn, local, "odd2")
    assert caught.value.skipped == (tree.Skipped("fifo", "not a regular file or folder (a FIFO)"),)
    assert caught.value.done is not None and caught.value.done.copy == ("ok.txt",)
    assert read_tree(server.storage.root / "odd2") == {"ok.txt": b"ok"}


def make_odd_tree(top: Path) -> dict[str, str]:
    """Two good files, a symlink to one (copied as the file), and entries that cannot be copied.

    Returns what should be skipped: path -> reason.
    """
    (top / "sub").mkdir(parents=True)
    (top / "ok.txt").write_bytes(b"ok")
    (top / "sub" / "a.txt").write_bytes(b"a")
    (top / "link.txt").symlink_to(top / "sub" / "a.txt")
    (top / "dangle").symlink_to(top / "nowhere")
    (top / "dirlink").symlink_to(top / "sub")
    (top / "back\\slash.txt").write_bytes(b"refused")
    (top / "bad\\dir").mkdir()
    (top / "bad\\dir" / "inner.txt").write_bytes(b"under a refused folder")
    (top / "mine.trioftp-part").write_bytes(b"a user's file, or a partial download")
    return {
        "back\\slash.txt": "bad name: control character or backslash in 'back\\\\slash.txt'",
        "bad\\dir": "bad name: control character or backslash in 'bad\\\\dir'",
        "dangle": tree.NOWHERE_REASON,
        "dirlink": tree.FOLDER_LINK_REASON,
        "mine.trioftp-part": tree.PARTIAL_REASON,
    }


async def test_entries_that_cannot_be_copied_are_skipped_reported_and_the_rest_copied(
    server: Server, tmp_path: Path
) -> None:
    local = tmp_path / "site"
    expected = make_odd_tree(local)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            dry = await tree.sync(conn, local, "www", dry_run=True)  # a dry run reports, raises nothing
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.sync(conn, local, "www")
    error = caught.value
    assert {entry.path: entry.reason for entry in error.skipped} == expected
    assert dry.skipped == error.skipped
    assert error.failures == {}
    assert error.done is not None and error.done.copy == dry.copy == ("link.txt", "ok.txt", "sub/a.txt")
    assert str(error).startswith("5 skipped, not copied:\n  back\\slash.txt: bad name")
    assert "\n  dangle: a symlink that leads nowhere\n" in str(error)  # one line each
    assert read_tree(server.storage.root / "www") == {"ok.txt": b"ok", "sub/a.txt": b"a", "link.txt": b"a"}


async def test_delete_keeps_the_targets_copies_of_skipped_entries(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "site"
    make_odd_tree(local)
    remote = server.storage.root / "www"
    for name in ("dangle", "dirlink/x.txt", "bad\\dir/inner.txt", "gone.txt", "mine.trioftp-part"):
        (remote / name).parent.mkdir(parents=True, exist_ok=True)
        (remote / name).write_bytes(b"older")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.sync(conn, local, "www", delete=True)
    assert caught.value.done is not None and caught.value.done.delete == ("gone.txt",)
    kept = ["bad\\dir/inner.txt", "dangle", "dirlink/x.txt", "mine.trioftp-part"]
    assert sorted(read_tree(remote)) == sorted([*kept, "link.txt", "ok.txt", "sub/a.txt"])


async def test_a_remote_partial_name_is_skipped_and_a_local_partial_kept(
    server: Server, tmp_path: Path
) -> None:
    (server.storage.root / "www").mkdir()
    (server.storage.root / "www" / "a.txt").write_bytes(b"a")
    (server.storage.root / "www" / "b.txt.trioftp-part").write_bytes(b"would overwrite b.txt's partial")
    local = tmp_path / "mirror"
    local.mkdir()
    (local / "c.txt.trioftp-part").write_bytes(b"resume data of a download")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "www", direction=trioftp.Direction.DOWN, delete=True)
    assert caught.value.skipped == (tree.Skipped("b.txt.trioftp-part", tree.PARTIAL_REASON),)
    assert sorted(p.name for p in local.iterdir()) == ["a.txt", "c.txt.trioftp-part"]


async def test_a_path_too_long_for_the_protocol_is_skipped(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "deep"
    long_file = "/".join(["d" * 200] * 6) + "/f.txt"  # each name is fine, the whole is over 1024 bytes
    (local / long_file).parent.mkdir(parents=True)
    (local / long_file).write_bytes(b"deep")
    (local / "ok.txt").write_bytes(b"ok")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.upload_tree(local, "up")
    [entry] = caught.value.skipped  # the folder that is too long, not again each file in it
    assert entry.path == long_file.rpartition("/")[0] and entry.reason.startswith("bad name: name is 1")
    assert read_tree(server.storage.root / "up") == {"ok.txt": b"ok"}


async def test_a_local_error_fails_one_file_not_the_run(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "site"
    files = make_tree(local, count=6)
    vanishing = sorted(files)[0]
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await tree.plan_sync(conn, local, "www", direction=tree.Direction.UP)
            (local / vanishing).unlink()  # gone between the plan and the copy
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.carry_out(conn, plan, local, "www", direction=tree.Direction.UP)
    assert list(caught.value.failures) == [vanishing]
    assert isinstance(caught.value.failures[vanishing], FileNotFoundError)
    del files[vanishing]
    assert read_tree(server.storage.root / "www") == files


@pytest.mark.parametrize("direction", list(tree.Direction))
async def test_a_fifo_that_replaced_a_file_after_the_walk_is_not_read(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direction: tree.Direction
) -> None:
    local = tmp_path / "site"
    local.mkdir()
    os.mkfifo(local / "x")
    (server.storage.root / "www").mkdir()
    (server.storage.root / "www" / "x").write_bytes(b"")
    # What the walk saw a moment before: a 0-byte file, the same size as the remote one.
    seen = tree.TreeScan(files={"x": tree.FileState(path="x", size=0, mtime_ns=0)})
    monkeypatch.setattr(tree.plan, "scan_local", lambda top, **_: seen)  # where plan_sync finds it
    with fifo_must_stay_closed(local / "x"), trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await tree.plan_sync(conn, local, "www", direction=direction)
    if direction is tree.Direction.UP:
        assert plan.skipped == (tree.Skipped("x", "cannot read: not a regular file"),)
        assert plan.copy == ()
    else:
        assert plan.copy == ("x",)  # the download looks again before it writes (test at the end)


# ------------------------------------------------------------------- folders


def folders_under(top: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_dir() and ".trioftp" not in p.parts}


async def test_empty_folders_go_both_ways_and_an_empty_top_is_created(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "photos"
    (local / "empty").mkdir(parents=True)
    (local / "a" / "empty too").mkdir(parents=True)
    (local / "a" / "f.txt").write_bytes(b"f")
    (tmp_path / "nothing").mkdir()
    remote = server.storage.root
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            up = await conn.upload_tree(local, "up")
            down = await conn.download_tree("up", tmp_path / "back")
            again = await conn.upload_tree(local, "up")
            await conn.upload_tree(tmp_path / "nothing", "emptyremote")
            await conn.download_tree("emptyremote", tmp_path / "empty-back")
    assert up.mkdir == down.mkdir == ("", "a", "a/empty too", "empty")  # "": the top, parents first
    assert again.mkdir == ()
    assert folders_under(remote / "up") == folders_under(tmp_path / "back") == {"a", "a/empty too", "empty"}
    assert read_tree(tmp_path / "back") == {"a/f.txt": b"f"}
    assert (remote / "emptyremote").is_dir() and (tmp_path / "empty-back").is_dir()


@pytest.mark.parametrize("direction", list(tree.Direction))
async def test_delete_removes_folders_the_source_lost_deepest_first(
    server: Server, tmp_path: Path, direction: tree.Direction
) -> None:
    source = tmp_path / "site" if direction is tree.Direction.UP else server.storage.root / "www"
    target = server.storage.root / "www" if direction is tree.Direction.UP else tmp_path / "site"
    for top in (source, target):
        (top / "keep" / "empty").mkdir(parents=True)
        (top / "keep" / "k.txt").write_bytes(b"k")
    (target / "old" / "sub").mkdir(parents=True)
    (target / "old" / "sub" / "x.txt").write_bytes(b"x")
    (target / "old" / "emptied").mkdir()
    (target / "keep" / "stray").mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            dry = await conn.sync(tmp_path / "site", "www", direction=direction, delete=True, dry_run=True)
            assert folders_under(target) == {
                "keep",
                "keep/empty",
                "keep/stray",
                "old",
                "old/emptied",
                "old/sub",
            }
            plan = await conn.sync(tmp_path / "site", "www", direction=direction, delete=True)
    assert dry == plan
    assert plan.delete == ("old/sub/x.txt",)
    assert plan.rmdir == ("old/sub", "old/emptied", "old", "keep/stray")  # each before its parent
    assert folders_under(target) == {"keep", "keep/empty"}
    assert read_tree(target) == {"keep/k.txt": b"k"}


async def test_a_local_folder_holding_what_the_walk_leaves_alone_is_kept(
    server: Server, tmp_path: Path
) -> None:
    (server.storage.root / "www").mkdir()
    local = tmp_path / "site"
    (local / "old").mkdir(parents=True)
    (local / "old" / "a.txt").write_bytes(b"a")
    (local / "old" / "b.txt.trioftp-part").write_bytes(b"a download's resume data")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await conn.sync(local, "www", direction=trioftp.Direction.DOWN, delete=True)
    assert plan.delete == ("old/a.txt",) and plan.rmdir == ()
    assert [p.name for p in (local / "old").iterdir()] == ["b.txt.trioftp-part"]


async def test_a_failed_folder_creation_is_reported_and_the_files_still_copied(
    server: Server, tmp_path: Path
) -> None:
    local = tmp_path / "site"
    (local / "taken").mkdir(parents=True)
    (local / "f.txt").write_bytes(b"f")
    (server.storage.root / "www").mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await tree.plan_sync(conn, local, "www", direction=tree.Direction.UP)
            # After the walk: one seen at plan time is skipped (a file in the way, see below).
            (server.storage.root / "www" / "taken").write_bytes(b"a file where the folder goes")
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.carry_out(conn, plan, local, "www", direction=tree.Direction.UP)
    assert list(caught.value.failures) == ["taken"]
    assert isinstance(caught.value.failures["taken"], trioftp.AlreadyExists)
    assert caught.value.done is not None and caught.value.done.copy == ("f.txt",)
    assert (server.storage.root / "www" / "f.txt").read_bytes() == b"f"


# --------------------------------------------------------------------- rm -r


async def test_remove_tree_deletes_files_then_folders(server: Server, tmp_path: Path) -> None:
    files = make_tree(server.storage.root / "backup" / "old")
    (server.storage.root / "backup" / "old" / "empty").mkdir()
    (server.storage.root / "backup" / "keep.txt").write_bytes(b"keep")
    (server.storage.root / "lone.txt").write_bytes(b"a file goes too, as with rm -r")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await conn.remove_tree("backup/old")  # the method is the same function
            lone = await tree.remove_tree(conn, "lone.txt")
            with pytest.raises(trioftp.NotFound):
                await tree.remove_tree(conn, "backup/old")
            for root in ("", "/", "//"):
                with pytest.raises(ValueError, match="refusing to remove the root"):
                    await tree.remove_tree(conn, root)
    assert sorted(plan.delete) == sorted(files)
    assert plan.rmdir[-1] == "" and "empty" in plan.rmdir
    assert lone.delete == ("",)
    assert sorted(p.name for p in server.storage.root.iterdir()) == [".trioftp", "backup"]
    assert [p.name for p in (server.storage.root / "backup").iterdir()] == ["keep.txt"]


async def test_remove_tree_keeps_the_folders_holding_what_it_could_not_delete(
    server: Server, tmp_path: Path
) -> None:
    gone = server.storage.root / "gone"
    (gone / "stuck").mkdir(parents=True)
    (gone / "stuck" / ".trioftp-0123456789abcdef.part").write_bytes(b"hidden from listings")
    (gone / "stuck" / "a.txt").write_bytes(b"a")
    (gone / "free").mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.remove_tree(conn, "gone")
    assert list(caught.value.failures) == ["stuck"]  # not "" as well: its failure is this one
    assert caught.value.done is not None
    assert caught.value.done.delete == ("stuck/a.txt",) and caught.value.done.rmdir == ("free",)
    assert sorted(p.name for p in gone.iterdir()) == ["stuck"]


# ------------------------------------- a download and what the local side holds


@contextlib.contextmanager
def fifo_must_stay_unwritten(fifo: Path, after: float = 3.0) -> Iterator[None]:
    """Fail, instead of waiting out the test's deadline, if the code under test writes to `fifo`.

    A download writes a FIFO in place and waits for a reader as long as it
    takes; after `after` seconds a reader comes and drains it, so such a
    download finishes, and the test fails on the bytes it got.
    """
    received = bytearray()
    finished = threading.Event()

    def drain() -> None:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # never waits, even with no writer
        try:
            while not finished.wait(0.02):
                with contextlib.suppress(BlockingIOError):
                    received.extend(os.read(fd, 1 << 16))
        finally:
            os.close(fd)

    timer = threading.Timer(after, drain)
    timer.start()
    try:
        yield
    finally:
        finished.set()
        timer.cancel()
        timer.join()
    assert not received, f"{len(received)} bytes were written to {fifo}"


def remote_files(top: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(data)


async def test_a_download_leaves_a_local_fifo_alone_and_does_the_rest(server: Server, tmp_path: Path) -> None:
    remote_files(server.storage.root / "www", {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c", "d/e.txt": b"e"})
    local = tmp_path / "mirror"
    local.mkdir()
    os.mkfifo(local / "a.txt")
    os.mkfifo(tmp_path / "pipe")
    (local / "c.txt").symlink_to(tmp_path / "pipe")
    os.mkfifo(local / "d")  # where a folder goes
    os.mkfifo(local / "lone")  # the source lacks it: delete keeps it
    expected = (
        tree.Skipped("a.txt", "a FIFO here; not replaced"),
        tree.Skipped("c.txt", "a symlink here; not replaced"),
        tree.Skipped("d", "a FIFO here; not replaced"),
        tree.Skipped("lone", "a FIFO; kept, not deleted"),
    )
    with (
        fifo_must_stay_unwritten(local / "a.txt"),
        fifo_must_stay_unwritten(tmp_path / "pipe"),
        fifo_must_stay_unwritten(local / "d"),
        trio.fail_after(NETWORK_TIMEOUT),
    ):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            dry = await conn.sync(local, "www", direction=trioftp.Direction.DOWN, delete=True, dry_run=True)
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "www", direction=trioftp.Direction.DOWN, delete=True)
    assert dry.skipped == caught.value.skipped == expected
    assert caught.value.failures == {}
    assert caught.value.done == dry and dry.copy == ("b.txt",) and dry.mkdir == () and dry.delete == ()
    assert (local / "b.txt").read_bytes() == b"b"
    assert (local / "a.txt").is_fifo() and (local / "d").is_fifo() and (local / "lone").is_fifo()
    assert (local / "c.txt").is_symlink()
    assert sorted(os.listdir(local)) == ["a.txt", "b.txt", "c.txt", "d", "lone"]


async def test_sync_down_with_delete_keeps_a_local_name_that_is_not_utf8(
    server: Server, tmp_path: Path
) -> None:
    remote_files(server.storage.root / "www", {"a.txt": b"a"})
    local = tmp_path / "mirror"
    local.mkdir()
    (local / "a.txt").write_bytes(b"a")
    name = os.fsdecode(b"caf\xe9.txt")  # as the walk sees it: a lone surrogate for the bad byte
    (local / name).write_bytes(b"my only copy")
    reason = "bad name: name is not valid UTF-8 (lone surrogate)"
    assert tree.scan_local(local).skipped == {name: reason}
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            dry = await conn.sync(local, "www", direction=trioftp.Direction.DOWN, delete=True, dry_run=True)
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "www", direction=trioftp.Direction.DOWN, delete=True)
            with pytest.raises(tree.TreeTransferError) as up:  # going up it is skipped, as before
                await conn.sync(local, "www", delete=True)
    assert dry.delete == () and dry.skipped == caught.value.skipped
    assert caught.value.skipped == (tree.Skipped(name, f"{reason}; kept, not deleted"),)
    assert up.value.skipped == (tree.Skipped(name, reason),)
    assert (local / name).read_bytes() == b"my only copy"


async def test_a_download_never_writes_through_a_local_symlink(server: Server, tmp_path: Path) -> None:
    remote_files(
        server.storage.root / "m",
        {"docs/notes.txt": b"server version", "docs/sub/n.txt": b"n", "x": b"remote x", "ok.txt": b"ok"},
    )
    local = tmp_path / "local"
    local.mkdir()
    (tmp_path / "home-docs").mkdir()
    (tmp_path / "home-docs" / "notes.txt").write_bytes(b"my only copy")
    (local / "docs").symlink_to(tmp_path / "home-docs")  # a link to a folder
    (tmp_path / "outside").mkdir()
    (local / "x").symlink_to(tmp_path / "outside" / "created-by-sync")  # dangling
    expected = (
        tree.Skipped("docs", "a symlink here; not replaced"),
        tree.Skipped("x", "a symlink here; not replaced"),
    )
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            dry = await tree.sync(conn, local, "m", direction=tree.Direction.DOWN, delete=True, dry_run=True)
            for _ in range(2):
                with pytest.raises(tree.TreeTransferError) as caught:
                    await tree.sync(conn, local, "m", direction=tree.Direction.DOWN, delete=True)
                assert caught.value.skipped == dry.skipped == expected
                assert caught.value.failures == {}
    assert dry.copy == ("ok.txt",) and dry.mkdir == () and dry.delete == () and dry.rmdir == ()
    assert read_tree(tmp_path / "home-docs") == {"notes.txt": b"my only copy"}
    assert os.listdir(tmp_path / "outside") == []
    assert (local / "docs").is_symlink() and (local / "x").is_symlink()
    assert (local / "ok.txt").read_bytes() == b"ok"


async def test_a_download_does_not_write_two_paths_into_one_file(server: Server, tmp_path: Path) -> None:
    big_x, big_y = os.urandom(3 << 20), os.urandom(3 << 20)  # both in flight at once
    remote_files(server.storage.root / "src", {"x": big_x, "y": big_y})
    local = tmp_path / "local"
    local.mkdir()
    (local / "y").write_bytes(b"old")
    (local / "x").symlink_to("y")
    (local / "z").symlink_to("y")  # the source lacks it: delete keeps it, as all the walk skips
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await tree.sync(conn, local, "src", direction=tree.Direction.DOWN, delete=True)
            up = await conn.sync(local, "up")  # going up a link to a file is still that file
    assert caught.value.failures == {}
    assert caught.value.skipped == (
        tree.Skipped("x", "a symlink here; not replaced"),
        tree.Skipped("z", "a symlink; kept, not deleted"),
    )
    assert caught.value.done is not None and caught.value.done.copy == ("y",)
    assert (local / "y").read_bytes() == big_y
    assert os.readlink(local / "x") == os.readlink(local / "z") == "y"
    assert up.copy == ("x", "y", "z") and read_tree(server.storage.root / "up")["x"] == big_y


async def test_a_download_looks_again_before_it_writes(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote_files(
        server.storage.root / "www", {"x": b"remote x", "docs/notes.txt": b"server", "ok.txt": b"ok"}
    )
    local = tmp_path / "site"
    (local / "docs").mkdir(parents=True)
    (tmp_path / "home-docs").mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await tree.plan_sync(conn, local, "www", direction=tree.Direction.DOWN)
            assert plan.copy == ("docs/notes.txt", "ok.txt", "x")
            # Between the walk and the copy, a FIFO and a link to a folder take their places.
            os.mkfifo(local / "x")
            (local / "docs").rmdir()
            (local / "docs").symlink_to(tmp_path / "home-docs")
            with fifo_must_stay_unwritten(local / "x"), pytest.raises(tree.TreeTransferError) as caught:
                await tree.carry_out(conn, plan, local, "www", direction=tree.Direction.DOWN)
    failures = caught.value.failures
    assert sorted(failures) == ["docs/notes.txt", "x"]
    assert "not a folder here; not written into" in str(failures["docs/notes.txt"])
    assert "a FIFO here; not replaced" in str(failures["x"])
    assert caught.value.done is not None and caught.value.done.copy == ("ok.txt",)
    assert os.listdir(tmp_path / "home-docs") == []


# ------------------------------------- a path that is a file on one side and a folder on the other


def changed_kinds(source: Path, target: Path) -> None:
    """`x` was a file and is now a folder, `big` the other way round; `same.txt` is in neither's way."""
    remote_files(source, {"x/y": b"in", "big": b"now a file", "same.txt": b"same"})
    remote_files(target, {"x": b"data", "big/a": b"a", "big/sub/b": b"b", "same.txt": b"same"})
    (target / "big" / "empty").mkdir()


IN_THE_WAY_DRY = {
    "copy": ("big", "x/y"),
    "delete": ("big/a", "big/sub/b", "x"),
    "rmdir": ("big/sub", "big/empty", "big"),
    "mkdir": ("x",),
    "replace": ("big", "x"),
}


@pytest.mark.parametrize("direction", [tree.Direction.UP, tree.Direction.DOWN])
async def test_a_path_that_changed_kind_is_replaced_only_with_delete(
    server: Server, tmp_path: Path, direction: tree.Direction
) -> None:
    local, remote = tmp_path / "s", server.storage.root / "tc"
    source, target = (local, remote) if direction is tree.Direction.UP else (remote, local)
    changed_kinds(source, target)
    where = "on the server" if direction is tree.Direction.UP else "here"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            kept = await conn.sync(local, "tc", direction=direction, dry_run=True)
            for _ in range(2):  # the same every run, not a failure that a rerun cannot mend
                with pytest.raises(tree.TreeTransferError) as caught:
                    await conn.sync(local, "tc", direction=direction)
                assert caught.value.failures == {}
            assert read_tree(target)["x"] == b"data" and (target / "big" / "sub" / "b").exists()
            dry = await conn.sync(local, "tc", direction=direction, delete=True, dry_run=True)
            done = await conn.sync(local, "tc", direction=direction, delete=True)
            again = await conn.sync(local, "tc", direction=direction, delete=True)
    assert (
        caught.value.skipped
        == kept.skipped
        == (
            tree.Skipped("big", f"a folder is in the way {where}; --delete replaces it"),
            tree.Skipped("x", f"a file is in the way {where}; --delete replaces it"),
        )
    )
    assert kept.copy == () and kept.mkdir == () and kept.replace == () and kept.unchanged == 1
    got = {field: getattr(dry, field) for field in IN_THE_WAY_DRY}
    assert got == IN_THE_WAY_DRY and dry.skipped == () and dry == done
    assert read_tree(target) == read_tree(source) == {"x/y": b"in", "big": b"now a file", "same.txt": b"same"}
    assert sorted(os.listdir(target)) == ["big", "same.txt", "x"]
    assert again.copy == again.delete == again.replace == () and again.unchanged == 3


async def test_what_is_in_the_way_stays_while_other_entries_fail(
    make_server: MakeServer, tmp_path: Path, server_root: Path
) -> None:
    server = await make_server(max_file_size=1000)
    local = tmp_path / "s"
    remote_files(local, {"x/y": b"in", "huge.bin": b"h" * 5000})
    remote_files(server_root / "tc", {"x": b"maybe the only copy of something the failed file holds"})
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "tc", delete=True)
    failures = caught.value.failures
    assert sorted(failures) == ["huge.bin", "x"]
    assert (
        str(failures["x"]) == "not copied: the file in the way is removed only in a run where all else worked"
    )
    assert caught.value.done is not None and caught.value.done.delete == caught.value.done.replace == ()
    assert read_tree(server_root / "tc") == {"x": b"maybe the only copy of something the failed file holds"}


async def test_a_folder_in_the_way_that_cannot_be_emptied_fails_its_path_alone(
    server: Server, tmp_path: Path, server_root: Path
) -> None:
    local = tmp_path / "s"
    remote_files(local, {"big": b"now a file", "ok.txt": b"ok"})
    remote_files(server_root / "tc", {"big/a": b"a", "gone.txt": b"the source lost it"})
    (server_root / "tc" / "big" / ".trioftp-0123456789abcdef.part").write_bytes(b"hidden from listings")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "tc", delete=True)
    assert list(caught.value.failures) == ["big"]  # the folder's own error, not the copy's as well
    assert str(caught.value).startswith("1 entry failed: big: BAD_REQUEST: ")
    done = caught.value.done
    assert done is not None and done.copy == ("ok.txt",) and done.delete == ("big/a",) and done.replace == ()
    assert (server_root / "tc" / "big").is_dir() and (server_root / "tc" / "gone.txt").exists()


async def test_a_folder_in_the_way_holding_what_sync_keeps_is_not_replaced(
    server: Server, tmp_path: Path, server_root: Path
) -> None:
    remote_files(server_root / "src", {"big": b"a file", "pipe": b"a file", "ok.txt": b"ok"})
    remote_files(server_root / "elsewhere", {"keep.txt": b"the only copy"})
    local = tmp_path / "dst"
    (local / "pipe").mkdir(parents=True)
    os.mkfifo(local / "pipe" / "fifo")
    remote_files(tmp_path / "s", {"big": b"a file"})
    (server_root / "tc" / "big").mkdir(parents=True)
    (server_root / "tc" / "big" / "link").symlink_to("../../elsewhere")
    (server_root / "tc" / "big" / "x.txt").write_bytes(b"x")
    with fifo_must_stay_unwritten(local / "pipe" / "fifo"), trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as down:
                await conn.sync(local, "src", direction=tree.Direction.DOWN, delete=True)
            with pytest.raises(tree.TreeTransferError) as up:
                await conn.sync(tmp_path / "s", "tc", delete=True)
    assert down.value.skipped == (
        tree.Skipped(
            "pipe", "a folder is in the way here, holding an entry sync never deletes; not replaced"
        ),
        tree.Skipped("pipe/fifo", "a FIFO; kept, not deleted"),
    )
    assert up.value.skipped == (
        tree.Skipped(
            "big", "a folder is in the way on the server, holding an entry sync never deletes; not replaced"
        ),
    )
    assert down.value.failures == up.value.failures == {}
    assert (local / "pipe" / "fifo").is_fifo() and (local / "big").read_bytes() == b"a file"
    assert (server_root / "tc" / "big" / "x.txt").exists() and (
        server_root / "tc" / "big" / "link"
    ).is_symlink()
    assert (server_root / "elsewhere" / "keep.txt").read_bytes() == b"the only copy"


# ------------------------------------------------------------------ how failures and skips read


def test_the_report_names_the_top_and_counts_in_words() -> None:
    refused = trioftp.RemoteError("BAD_REQUEST: folder 'sd/gone' is not empty")
    assert str(tree.TreeTransferError({"": refused}, folders={""})) == (
        "1 entry failed: .: BAD_REQUEST: folder 'sd/gone' is not empty"
    )
    lost = OSError(5, "Input/output error")
    assert str(tree.TreeTransferError({"a": lost})) == "1 file failed: a: [Errno 5] Input/output error"
    assert str(tree.TreeTransferError({"a": lost, "b": lost})).startswith("2 files failed:\n  a: ")
    assert str(tree.TreeTransferError({"a": lost, "big": lost}, folders={"big"})).startswith(
        "2 entries failed:\n  a: "
    )


def test_the_report_escapes_what_could_drive_a_terminal() -> None:
    hostile = "\x1b]0;owned\x07\x1b[2J"
    not_utf8 = os.fsdecode(b"\xe9")  # as the walk reads such a byte: a lone surrogate
    error = tree.TreeTransferError(
        {f"dir/{hostile}": OSError(5, "Input/output error"), "ok": trioftp.RemoteError("INTERNAL: \x9b31m")},
        (tree.Skipped(f"a\x01\nb{not_utf8}", "bad name: control character"),),
    )
    text = str(error)
    assert all(line.isprintable() for line in text.split("\n"))
    assert "\x1b" not in text and "\x01" not in text and "\x9b" not in text and "\x07" not in text
    assert "dir/\\x1b]0;owned\\x07\\x1b[2J: [Errno 5]" in text
    assert "ok: INTERNAL: \\x9b31m" in text
    assert text.endswith("\n  a\\x01\\nb\\udce9: bad name: control character")
    assert tree.shown("") == "." and tree.shown("café/back\\slash") == "café/back\\slash"


async def test_symlinks_to_folders_are_skipped_in_the_same_words_on_both_sides(
    server: Server, tmp_path: Path, server_root: Path
) -> None:
    for top in (tmp_path / "s", server_root / "src"):
        (top / "real").mkdir(parents=True)
        (top / "real" / "a.txt").write_bytes(b"a")
        (top / "folder").symlink_to("real")
    (tmp_path / "s" / "nowhere").symlink_to("missing")  # the server does not list such a link
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            with pytest.raises(tree.TreeTransferError) as up:
                await conn.sync(tmp_path / "s", "dst")
            with pytest.raises(tree.TreeTransferError) as down:
                await conn.sync(tmp_path / "d", "src", direction=tree.Direction.DOWN)
    folder_link = tree.Skipped("folder", "a symlink to a folder; not followed")
    assert up.value.skipped == (folder_link, tree.Skipped("nowhere", "a symlink that leads nowhere"))
    assert down.value.skipped == (folder_link,)
