"""Symbolic links on the server: listed as links, never walked by rm -r, sync or get -r."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import RawPeer, connect
from trioftp.client import tree
from trioftp.protocol import Kind
from trioftp.protocol.messages import List, Listing
from trioftp.server import Server
from trioftp.storage.interface import Kind as StoreKind
from trioftp.storage.local import Storage


def precious(root: Path) -> Path:
    (root / "precious").mkdir()
    (root / "precious" / "keep.txt").write_bytes(b"the only copy")
    return root / "precious" / "keep.txt"


async def test_a_link_is_listed_as_a_link_and_stat_says_what_it_leads_to(
    server: Server, server_root: Path
) -> None:
    precious(server_root)
    (server_root / "alias").symlink_to("precious")
    (server_root / "latest.txt").symlink_to("precious/keep.txt")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            kinds = {entry.name: entry.kind for entry in await conn.list()}
            assert (await conn.stat("alias")).kind is Kind.DIR
            assert (await conn.stat("latest.txt")).kind is Kind.FILE
            assert await conn.get("latest.txt") == b"the only copy"
    assert kinds == {"alias": Kind.LINK, "latest.txt": Kind.LINK, "precious": Kind.DIR}


async def test_rm_r_of_a_link_removes_the_link_only(server: Server, server_root: Path) -> None:
    keep = precious(server_root)
    (server_root / "alias").symlink_to("precious")
    (server_root / "scratch").mkdir()
    (server_root / "scratch" / "junk.txt").write_bytes(b"junk")
    (server_root / "scratch" / "link").symlink_to("../precious")
    (server_root / "scratch" / "file-link").symlink_to("../precious/keep.txt")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            top = await conn.remove_tree("alias")
            inside = await conn.remove_tree("scratch")
    assert top.delete == ("",)
    assert sorted(inside.delete) == ["file-link", "junk.txt", "link"]
    assert keep.read_bytes() == b"the only copy"
    assert sorted(os.listdir(server_root)) == [".trioftp", "precious"]


async def test_sync_delete_never_deletes_through_a_remote_link(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    keep = precious(server_root)
    (server_root / "mirror").mkdir()
    (server_root / "mirror" / "shared").symlink_to("../precious")
    (server_root / "mirror" / "old.txt").write_bytes(b"gone after the sync")
    local = tmp_path / "site"
    local.mkdir()
    (local / "index.html").write_bytes(b"<html>")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            plan = await conn.sync(local, "mirror", delete=True)
    assert plan.delete == ("old.txt",) and plan.rmdir == ()  # the link is the target's own: kept
    assert keep.read_bytes() == b"the only copy"
    assert (server_root / "mirror" / "shared").is_symlink()
    assert not (server_root / "mirror" / "old.txt").exists()
    assert (server_root / "mirror" / "index.html").read_bytes() == b"<html>"


async def test_link_loops_end(server: Server, server_root: Path, tmp_path: Path) -> None:
    (server_root / "m").mkdir()
    (server_root / "m" / "a.txt").write_bytes(b"a")
    (server_root / "m" / "l0").symlink_to(".")
    (server_root / "m" / "l1").symlink_to(".")
    with trio.fail_after(10):  # it used to list 2^n paths until a name passed 1024 bytes
        async with connect(server) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.download_tree("m", tmp_path / "copy")
            assert sorted(entry.path for entry in caught.value.skipped) == ["l0", "l1"]
            removed = await conn.remove_tree("m")
    assert (tmp_path / "copy" / "a.txt").read_bytes() == b"a"
    assert sorted(removed.delete) == ["a.txt", "l0", "l1"]
    assert not (server_root / "m").exists()


async def test_get_r_copies_a_link_to_a_file_as_that_file(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    precious(server_root)
    (server_root / "precious" / "latest.txt").symlink_to("keep.txt")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection("127.0.0.1", server.port) as conn:
            plan = await conn.download_tree("precious", tmp_path / "copy")
    assert sorted(plan.copy) == ["keep.txt", "latest.txt"]
    assert (tmp_path / "copy" / "latest.txt").read_bytes() == b"the only copy"
    assert not (tmp_path / "copy" / "latest.txt").is_symlink()


async def test_an_upload_never_writes_through_a_remote_link(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    keep = precious(server_root)
    (server_root / "mirror").mkdir()
    (server_root / "mirror" / "shared").symlink_to("../precious")
    local = tmp_path / "site"
    (local / "shared").mkdir(parents=True)
    (local / "shared" / "keep.txt").write_bytes(b"would overwrite the only copy")
    (local / "index.html").write_bytes(b"<html>")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "mirror", delete=True)
    assert [entry.path for entry in caught.value.skipped] == ["shared"]
    assert keep.read_bytes() == b"the only copy"
    assert (server_root / "mirror" / "index.html").read_bytes() == b"<html>"


async def test_a_put_to_a_link_replaces_the_link_not_the_file_it_leads_to(
    server: Server, server_root: Path
) -> None:
    keep = precious(server_root)
    (server_root / "latest.txt").symlink_to("precious/keep.txt")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put("latest.txt", b"new")
            kinds = {entry.name: entry.kind for entry in await conn.list()}
    assert keep.read_bytes() == b"the only copy"
    assert (server_root / "latest.txt").read_bytes() == b"new" and kinds["latest.txt"] is Kind.FILE


async def test_a_folder_kept_by_entries_listings_hide_says_so(server: Server, server_root: Path) -> None:
    (server_root / "gone").mkdir()
    (server_root / "gone" / "out").symlink_to("/etc")
    os.mkfifo(server_root / "gone" / "pipe")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            listed = {(entry.name, entry.kind) for entry in await conn.list("gone")}
            with pytest.raises(trioftp.RemoteError, match="holds 2 entries the server does not serve"):
                await conn.delete("gone")
    assert listed == {("out", Kind.OTHER), ("pipe", Kind.OTHER)}  # there, though not served


async def test_what_the_server_does_not_serve_is_never_read_as_absent(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    """A sync DOWN --delete used to delete the local copies of names the server left out."""
    (server_root / "m").mkdir()
    (server_root / "m" / "a").symlink_to("nowhere")
    (server_root / "m" / "b").symlink_to("/etc/hostname")  # out of the root
    os.mkfifo(server_root / "m" / "c")
    (server_root / "m" / "d.txt").write_bytes(b"served")
    local = tmp_path / "copy"
    (local / "a").mkdir(parents=True)
    (local / "a" / "mine").write_bytes(b"mine")
    (local / "b").write_bytes(b"b")
    (local / "c").write_bytes(b"c")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "m", direction=tree.Direction.DOWN, delete=True)
            with pytest.raises(tree.TreeTransferError) as up:  # and the other way: not replaced
                await conn.sync(local, "m", direction=tree.Direction.UP, delete=True)
    assert sorted(entry.path for entry in caught.value.skipped) == ["a", "b", "c"]
    assert sorted(entry.path for entry in up.value.skipped) == ["a", "b", "c"]
    assert (local / "a" / "mine").read_bytes() == b"mine"
    assert (local / "b").read_bytes() == b"b" and (local / "c").read_bytes() == b"c"
    assert (local / "d.txt").read_bytes() == b"served"
    assert (server_root / "m" / "a").is_symlink() and stat.S_ISFIFO(os.lstat(server_root / "m" / "c").st_mode)


class _Unexaminable:
    """A folder entry whose stat fails, as in a folder the server may read but not search (r--)."""

    def __init__(self, path: Path) -> None:
        self.name, self.path = path.name, str(path)

    def is_symlink(self) -> bool:
        raise PermissionError(13, "Permission denied", self.path)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        raise PermissionError(13, "Permission denied", self.path)


def test_an_item_the_server_cannot_examine_is_listed_as_other(server_root: Path) -> None:
    storage = Storage(server_root)
    entry = storage._entry(server_root, _Unexaminable(server_root / "photo.jpg"))  # type: ignore[arg-type]
    assert entry is not None and (entry.name, entry.kind, entry.size) == ("photo.jpg", StoreKind.OTHER, 0)


async def test_a_file_replacing_a_folder_is_copied_beside_it_first(
    make_server: MakeServer, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the file cannot be copied, the folder it would replace is still whole (both ways)."""
    server = await make_server(max_file_size=1000)
    (server_root / "m" / "a").mkdir(parents=True)
    (server_root / "m" / "a" / "theirs").write_bytes(b"the server's only copy")
    local = tmp_path / "site"
    local.mkdir()
    (local / "a").write_bytes(b"x" * 5000)  # over the server's max_file_size
    (server_root / "n").mkdir()
    (server_root / "n" / "a").write_bytes(b"a file on the server now")
    down = tmp_path / "down"
    (down / "a").mkdir(parents=True)
    (down / "a" / "mine").write_bytes(b"the local only copy")

    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(tree.TreeTransferError) as up:
                await conn.sync(local, "m", delete=True)
            monkeypatch.setattr(tree.run, "_make_room", full_disk)
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(down, "n", direction=tree.Direction.DOWN, delete=True)
            (server_root / "m" / "b.txt").write_bytes(b"b")
    assert list(up.value.failures) == ["a"] and "TOO_LARGE" in str(up.value.failures["a"])
    assert (server_root / "m" / "a" / "theirs").read_bytes() == b"the server's only copy"
    assert list(caught.value.failures) == ["a"]
    assert (down / "a" / "mine").read_bytes() == b"the local only copy"
    assert sorted(os.listdir(server_root / "m")) == ["a", "b.txt"]  # no copy left beside
    assert sorted(os.listdir(down)) == ["a"]


async def test_a_file_replacing_a_folder_swaps_in_once_copied(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    local = file_where_a_folder_was(server_root, tmp_path, "a", b"now a file")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.sync(local, "m", delete=True)
            await conn.sync(tmp_path / "back", "m", direction=tree.Direction.DOWN, delete=True)
            again = await conn.sync(local, "m", delete=True)
    assert (server_root / "m" / "a").read_bytes() == b"now a file"
    assert os.listdir(server_root / "m") == ["a"] and os.listdir(tmp_path / "back") == ["a"]
    assert again.copy == () and again.delete == ()


async def test_a_folder_replacing_a_file_is_built_beside_it_first(
    make_server: MakeServer, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server(max_file_size=1000)
    (server_root / "m").mkdir()
    (server_root / "m" / "x").write_bytes(b"the server's file")
    local = tmp_path / "site"
    (local / "x" / "deep").mkdir(parents=True)
    (local / "x" / "small.txt").write_bytes(b"fits")
    (local / "x" / "deep" / "big.bin").write_bytes(b"x" * 5000)  # over max_file_size
    (server_root / "n" / "x").mkdir(parents=True)
    (server_root / "n" / "x" / "y.txt").write_bytes(b"y")
    down = tmp_path / "down"
    down.mkdir()
    (down / "x").write_bytes(b"the local file")

    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(tree.TreeTransferError) as up:
                await conn.sync(local, "m", delete=True)
            after_failure = contents(server_root / "m")
            monkeypatch.setattr(tree.run, "_make_room", full_disk)
            with pytest.raises(tree.TreeTransferError):
                await conn.sync(down, "n", direction=tree.Direction.DOWN, delete=True)
            monkeypatch.undo()
            (local / "x" / "deep" / "big.bin").write_bytes(b"fits now")
            await conn.sync(local, "m", delete=True)
    assert "x/deep/big.bin" in up.value.failures
    assert after_failure == {"x": b"the server's file"}  # still the file: nothing built beside is left
    assert (down / "x").read_bytes() == b"the local file" and os.listdir(down) == ["x"]
    assert sorted(os.listdir(server_root / "m")) == ["x"]  # nothing left beside
    assert (server_root / "m" / "x" / "deep" / "big.bin").read_bytes() == b"fits now"
    assert (server_root / "m" / "x" / "small.txt").read_bytes() == b"fits"


def contents(folder: Path) -> dict[str, bytes]:
    """The files directly in `folder`, with their bytes; a folder as b"<folder>"."""
    return {p.name: b"<folder>" if p.is_dir() else p.read_bytes() for p in folder.iterdir()}


async def test_a_replacement_that_cannot_be_renamed_in_stays_where_it_was_built(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder in the way is gone by then: what was built beside is the only copy, so it stays."""
    local = file_where_a_folder_was(server_root, tmp_path, "X", b"the new file")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:

            async def no_rename(*_args: object, **_kwargs: object) -> None:
                raise trioftp.PermissionDenied("PERMISSION_DENIED: no 'rename' right")

            monkeypatch.setattr(conn, "rename", no_rename)
            with pytest.raises(tree.TreeTransferError) as caught:
                await conn.sync(local, "m", delete=True)
    [left] = os.listdir(server_root / "m")
    assert left.startswith(".trioftp-replace-") and (server_root / "m" / left).read_bytes() == b"the new file"
    assert f"it is at '{left}'" in str(caught.value.failures["X"])  # relative, as reports are


async def test_names_like_the_staging_ones_are_ordinary_files(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    """One a user has on both sides stays; one a crash left on the target goes with --delete."""
    (server_root / "m" / "X").mkdir(parents=True)
    (server_root / "m" / "X" / "old").write_bytes(b"old")
    (server_root / "m" / ".trioftp-replace-4b68ab3847feda7d").write_bytes(b"mine")
    (server_root / "m" / ".trioftp-replace-0123456789abcdef").write_bytes(b"left by a crash")
    local = tmp_path / "site"
    local.mkdir()
    (local / "X").write_bytes(b"the new file")
    (local / ".trioftp-replace-4b68ab3847feda7d").write_bytes(b"mine")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            plan = await conn.sync(local, "m", delete=True)
    assert ".trioftp-replace-0123456789abcdef" in plan.delete
    assert contents(server_root / "m") == {"X": b"the new file", ".trioftp-replace-4b68ab3847feda7d": b"mine"}


@pytest.mark.parametrize("reads_kinds", [False, True], ids=["older-client", "entry-kinds"])
async def test_kinds_link_and_other_go_only_to_clients_that_read_them(
    server: Server, server_root: Path, reads_kinds: bool
) -> None:
    """A client from before these kinds would take one for a broken server and drop the connection."""
    precious(server_root)
    (server_root / "alias").symlink_to("precious")
    os.mkfifo(server_root / "pipe")
    features = ("entry-kinds",) if reads_kinds else ()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server, features=features) as peer:
            await peer.send(List(folder="", stream_id=1))
            listing = await peer.receive()
    assert isinstance(listing, Listing) and listing.last
    kinds = {entry.name: entry.kind.value for entry in listing.entries}
    if reads_kinds:
        assert kinds == {"alias": "link", "pipe": "other", "precious": "dir"}
    else:
        assert kinds == {"alias": "dir", "precious": "dir"}


def file_where_a_folder_was(server_root: Path, tmp_path: Path, name: str, body: bytes) -> Path:
    """The server's m/NAME is a folder (holding "old"); the local site/NAME is now a file."""
    (server_root / "m" / name).mkdir(parents=True)
    (server_root / "m" / name / "old").write_bytes(b"old")
    local = tmp_path / "site"
    local.mkdir()
    (local / name).write_bytes(body)
    return local


def full_disk(top: Path, path: str) -> None:
    """In place of the download side's _make_room: the disk is full."""
    raise OSError(28, "No space left on device", str(top / path))
